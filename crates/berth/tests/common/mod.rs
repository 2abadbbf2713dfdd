//! Test harness: runs the real `berth server` binary (one per test, own data dir, OS-chosen port) and the
//! real `kubectl` against it, with a fresh kubectl cache dir so the version dispatcher and discovery caches
//! never leak between tests (kubectl-compat.md §1).
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A running `berth server`.
pub struct Server {
    child: Option<Child>,
    /// The data dir (removed on drop).
    pub dir: tempfile::TempDir,
    cache: tempfile::TempDir,
    args: Vec<String>,
    /// Extra environment of the server process.
    env: Vec<(String, String)>,
    /// This server's cluster DNS address (each test server has its own, so parallel tests never answer
    /// each other's pods).
    pub dns: String,
}

impl Server {
    /// Start a server with the agent disabled (these tests play the kubelet themselves).
    pub fn start() -> Server {
        Self::start_with(&["--disable-agent"])
    }

    /// Start a server with extra flags.
    pub fn start_with(extra: &[&str]) -> Server {
        Self::start_on(tempfile::tempdir().expect("temp dir"), extra)
    }

    /// Start a server with extra flags on a data dir prepared beforehand (e.g. a restored snapshot).
    pub fn start_on(dir: tempfile::TempDir, extra: &[&str]) -> Server {
        Self::start_full(dir, extra, &[])
    }

    /// Start a server with extra flags and environment variables.
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Server {
        Self::start_full(tempfile::tempdir().expect("temp dir"), extra, env)
    }

    fn start_full(dir: tempfile::TempDir, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let cache = tempfile::tempdir().expect("temp dir");
        static SERVERS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SERVERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let slot = 2 + (std::process::id() * 13 + n) % 250;
        let dns = format!("10.43.255.{slot}");
        let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        args.extend(["--cluster-dns".to_string(), dns.clone()]);
        // Each server its own Service range too: agents proxy ClusterIPs on this host's loopback.
        args.extend(["--service-cidr".to_string(), format!("10.44.{slot}.0/24")]);
        let mut s = Server {
            child: None,
            dir,
            cache,
            args,
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            dns,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let kc = self.kubeconfig();
        let _ = std::fs::remove_file(&kc);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .arg("server")
            .arg("--data-dir")
            .arg(self.dir.path())
            .args(["--https-listen-port", "0"])
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn berth server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if kc.exists() && self.kubectl(&["get", "--raw", "/readyz"]).status.success() {
                return;
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("berth server exited early ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "server not ready in 30s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Play the kubelet: mark a pod Running and Ready through `pods/status`.
    pub fn mark_ready(&self, pod: &str) {
        let now = "2026-01-01T00:00:00Z";
        let patch = format!(
            r#"{{"status":{{"phase":"Running","podIP":"10.42.0.9","startTime":"{now}","conditions":[{{"type":"Ready","status":"True","lastTransitionTime":"{now}"}},{{"type":"ContainersReady","status":"True","lastTransitionTime":"{now}"}}],"containerStatuses":[{{"name":"nginx","ready":true,"restartCount":0,"image":"x","imageID":"","started":true,"state":{{"running":{{"startedAt":"{now}"}}}}}}]}}}}"#
        );
        self.ok(&[
            "patch",
            "pod",
            pod,
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch,
        ]);
    }

    /// Path of the admin kubeconfig.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig.yaml")
    }

    /// The API URL from the kubeconfig.
    pub fn url(&self) -> String {
        let kc = std::fs::read_to_string(self.kubeconfig()).expect("kubeconfig");
        kc.lines()
            .find_map(|l| l.trim().strip_prefix("server: "))
            .expect("server line")
            .to_string()
    }

    /// A kubectl command with this server's kubeconfig and cache.
    pub fn kubectl_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("kubectl");
        c.args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .env("KUBECACHEDIR", self.cache.path())
            .env_remove("KUBECTL_EXTERNAL_DIFF")
            .stdin(Stdio::null());
        c
    }

    /// Run kubectl.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_cmd(args).output().expect("run kubectl")
    }

    /// Run kubectl and return stdout; panics with stderr when it fails.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run kubectl expecting failure; returns stderr.
    #[track_caller]
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            !out.status.success(),
            "kubectl {args:?} unexpectedly succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Run kubectl with `input` on stdin (e.g. `apply -f -`).
    pub fn with_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .kubectl_cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("kubectl output")
    }

    /// Run kubectl with `input` on stdin expecting failure; returns stderr.
    #[track_caller]
    pub fn fails_with_stdin(&self, args: &[&str], input: &str) -> String {
        let out = self.with_stdin(args, input);
        assert!(
            !out.status.success(),
            "kubectl {args:?} unexpectedly succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Apply a manifest from a string; panics on failure; returns stdout.
    #[track_caller]
    pub fn apply(&self, manifest: &str) -> String {
        let out = self.with_stdin(&["apply", "-f", "-"], manifest);
        assert!(
            out.status.success(),
            "apply failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A JSON value from `kubectl get … -o json`.
    #[track_caller]
    pub fn get_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["get"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["-o", "json"]);
        serde_json::from_str(&self.ok(&a)).expect("json")
    }

    /// Kill the server with SIGKILL (no shutdown path runs).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stop the server with SIGTERM (its shutdown path runs) and start it again on the same data dir.
    pub fn restart_graceful(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(c.id()).unwrap_or(i32::MAX));
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(30);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        self.spawn();
    }

    /// Start the server again on the same data dir (a new port).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Wait up to `secs` seconds until `kubectl get pods` lists none.
    #[track_caller]
    pub fn wait_pods_gone(&self, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let left = self.ok(&["get", "pods", "-o", "wide"]);
            if left.trim().is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {secs}s waiting for every pod to be gone; left:\n{left}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        kill_containers(self.dir.path());
        // The cluster DNS address and the ClusterIPs the server put on the loopback interface.
        if nix::unistd::geteuid().is_root() {
            let slot = self.dns.rsplit('.').next().unwrap_or_default().to_string();
            let shown = Command::new("ip")
                .args(["-4", "-o", "addr", "show", "dev", "lo"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            let ours = shown
                .split_whitespace()
                .filter(|w| {
                    w.starts_with(&format!("10.44.{slot}.")) || w.starts_with(&format!("{}/", self.dns))
                })
                .map(str::to_string)
                .collect::<Vec<_>>();
            for a in ours {
                let _ = Command::new("ip").args(["addr", "del", &a, "dev", "lo"]).output();
            }
        }
    }
}

/// Kill every container shim started for `data_dir` (with its container: each shim leads its own process
/// group), so no test leaves a process behind, even when it fails. Container mounts live in the
/// containers' own mount namespaces and vanish with them.
pub fn kill_containers(data_dir: &Path) {
    let needle = data_dir.to_string_lossy().into_owned();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains("container-shim") && cmdline.contains(&needle) {
            let _ =
                nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
    // Capacity-enforced volumes are loop-mounted filesystems under the data dir (`agent::capacity`):
    // unmounted (deepest first; the loop devices go with them: autoclear).
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<&str> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| Path::new(m).starts_with(data_dir))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
    }
    // Pod addresses held by this server's pods (the netns pins were unmounted above, so their veths
    // are gone), then the bridge when no pod of any server uses it any more.
    for uid in std::fs::read_dir(data_dir.join("agent/pods"))
        .into_iter()
        .flatten()
        .flatten()
    {
        agent::network::release(&uid.file_name().to_string_lossy());
    }
    let ports = std::fs::read_dir("/sys/class/net/berth0/brif")
        .map(|d| d.count())
        .unwrap_or(1);
    if ports == 0 {
        let _ = Command::new("ip").args(["link", "del", "berth0"]).status();
    }
    // cgroups of killed shims (a shim removes its own when it ends normally), then the `berth` parents
    // when empty (another server's containers may still use them; a just-emptied cgroup may be busy).
    let uids: Vec<String> = std::fs::read_dir(data_dir.join("agent/pods"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    for root in [
        "/sys/fs/cgroup/memory/berth",
        "/sys/fs/cgroup/cpu/berth",
        "/sys/fs/cgroup/devices/berth",
        "/sys/fs/cgroup/berth",
    ] {
        for uid in &uids {
            let pod = Path::new(root).join(uid);
            // (Retried for a moment: a killed container's processes may still be exiting.)
            for _ in 0..20 {
                for e in std::fs::read_dir(&pod).into_iter().flatten().flatten() {
                    if e.path().is_dir() {
                        let _ = std::fs::remove_dir(e.path());
                    }
                }
                if !pod.exists() || std::fs::remove_dir(&pod).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        for _ in 0..20 {
            if !Path::new(root).exists() || std::fs::remove_dir(root).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Whether tests that run real containers can run here (root and `/usr/bin/busybox`). When not, they
/// skip with a message, unless `BERTH_TEST_ROOT` is set (`scripts/test` as root), which makes it a failure.
pub fn can_run_containers() -> bool {
    let ok = nix::unistd::geteuid().is_root() && Path::new("/usr/bin/busybox").exists();
    if !ok {
        assert!(
            std::env::var_os("BERTH_TEST_ROOT").is_none(),
            "BERTH_TEST_ROOT is set but this test needs root and /usr/bin/busybox"
        );
        eprintln!("skipped: needs root and /usr/bin/busybox (busybox-static)");
    }
    ok
}

/// Start a server with its agent and import the busybox test image into it (while it runs).
pub fn server_with_busybox(node: &str) -> Server {
    let s = Server::start_with(&["--node-name", node]);
    let archive = busybox_archive(s.data_dir()).expect("busybox archive");
    let out = import_image(s.data_dir(), &archive);
    assert!(out.contains("docker.io/library/busybox:test"), "{out}");
    s
}

/// `berth image import --data-dir DATA_DIR ARCHIVE` (the node's image store); its output.
pub fn import_image(data_dir: &Path, archive: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["image", "import", "--data-dir"])
        .arg(data_dir)
        .arg(archive)
        .output()
        .expect("berth image import");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Build `examples/<example>/build.sh`'s image archive and import it into the server's node. Builds
/// sharing the default .deb cache run one at a time; `cache` gives one its own.
pub fn build_and_import(s: &Server, example: &str, cache: Option<&Path>) {
    build_and_import_into(s.data_dir(), example, cache);
}

/// [`build_and_import`] into the image store of the data dir `dir` (a `berth agent`'s).
pub fn build_and_import_into(dir: &Path, example: &str, cache: Option<&Path>) {
    static BUILDS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let archive = dir.join(format!("{example}.tar"));
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut build = Command::new(root.join("examples").join(example).join("build.sh"));
    build.arg(&archive);
    let out = match cache {
        Some(c) => build.env("BERTH_DEB_CACHE", c).output(),
        None => {
            let _one = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
            build.output()
        }
    }
    .expect("build.sh");
    assert!(
        out.status.success(),
        "build {example}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    import_image(dir, &archive);
}

/// The busybox test image archive (`agent::image::busybox_archive`); `None` without `/usr/bin/busybox`.
pub fn busybox_archive(dir: &Path) -> Option<PathBuf> {
    agent::image::busybox_archive(dir).ok()
}

/// The pod as `kubectl get pod <name> -o json` shows it; `None` when kubectl fails (it does not exist).
pub fn pod(s: &Server, name: &str) -> Option<serde_json::Value> {
    let out = s.kubectl(&["get", "pod", name, "-o", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).expect("json"))
}

/// Wait up to `secs` for the pod to be Ready (and not being deleted); its `status.podIP`.
pub fn ready_ip(s: &Server, name: &str, secs: u64) -> String {
    eventually(secs, &format!("{name} Running and Ready"), || {
        let p = pod(s, name)?;
        let ready = p["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        (ready && p["metadata"]["deletionTimestamp"].is_null())
            .then(|| p["status"]["podIP"].as_str().map(str::to_string))?
    })
}

/// Run `berth <args> --data-dir <data_dir>` (the CLI beside a server: snapshots, secrets-encrypt) and
/// return its stdout; panics with its stderr when it fails.
pub fn berth(data_dir: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .expect("run berth");
    assert!(
        out.status.success(),
        "berth {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Poll `f` every 50 ms until it returns Some, or panic after `secs` seconds with `what`.
#[track_caller]
pub fn eventually<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs}s waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The seed examples shared beside the repository (`../shared/examples`), or the copies under `examples/`.
pub fn seed(name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let ours = root.join("examples/seed").join(name);
    if ours.exists() {
        ours
    } else {
        root.join("../shared/examples").join(name)
    }
}

/// `examples/etcd`'s members `etcd-0..2`: `etcdctl endpoint health --cluster` through etcd-0 finds every
/// member healthy by its stable DNS name (etcdctl 3.4 writes the results to stderr). An unhealthy answer
/// is printed when it differs from the one before, for the log of a test that times out.
pub fn etcd_example_healthy(s: &Server) -> Option<String> {
    static LAST: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());
    let out = s.kubectl(&[
        "exec",
        "etcd-0",
        "--",
        "etcdctl",
        "endpoint",
        "health",
        "--cluster",
    ]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let healthy = out.status.success()
        && ["etcd-0", "etcd-1", "etcd-2"]
            .iter()
            .all(|m| text.contains(&format!("http://{m}.etcd:2379 is healthy")));
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    if !healthy && *last != text {
        eprintln!("etcd: not healthy yet: {text}");
        last.clone_from(&text);
    }
    healthy.then_some(text)
}
