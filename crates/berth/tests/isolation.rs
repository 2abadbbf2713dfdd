//! Pod isolation as containerd + runc give it (issue 14): an escape suite run from inside real pods
//! through `kubectl exec` (which gets the container's capabilities, seccomp filter, groups and cgroups,
//! as `runc exec`). Each check runs in a default pod, where it must fail, and in a `privileged: true`
//! pod, where it must succeed when the host allows it. Needs root and `/usr/bin/busybox`, as
//! `tests/pods.rs`.

mod common;

use common::{Server, eventually};
use serde_json::Value;

const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: plain}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: busybox:test, command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 1; done"]}
---
apiVersion: v1
kind: Pod
metadata: {name: priv}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox:test
    command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 1; done"]
    securityContext: {privileged: true}
---
apiVersion: v1
kind: Pod
metadata: {name: dropall}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox:test
    command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 1; done"]
    securityContext: {capabilities: {drop: [ALL]}}
---
apiVersion: v1
kind: Pod
metadata: {name: sysadmin}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox:test
    command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 1; done"]
    securityContext: {capabilities: {add: [SYS_ADMIN]}}
---
apiVersion: v1
kind: Pod
metadata: {name: restricted}
spec:
  terminationGracePeriodSeconds: 1
  securityContext:
    runAsNonRoot: true
    runAsUser: 1000
    runAsGroup: 3000
    fsGroup: 2000
    supplementalGroups: [4000]
    seccompProfile: {type: RuntimeDefault}
  volumes: [{name: scratch, emptyDir: {}}]
  containers:
  - name: c
    image: busybox:test
    command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 1; done"]
    volumeMounts: [{name: scratch, mountPath: /scratch}]
    securityContext:
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true
      capabilities: {drop: [ALL]}
---
apiVersion: v1
kind: Pod
metadata: {name: seccomp}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox:test
    command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 1; done"]
    securityContext: {seccompProfile: {type: RuntimeDefault}}
---
apiVersion: v1
kind: Pod
metadata: {name: localhost}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox:test
    command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 1; done"]
    securityContext: {seccompProfile: {type: Localhost, localhostProfile: profiles/deny-mkdir.json}}
---
apiVersion: v1
kind: Pod
metadata: {name: sysctl}
spec:
  terminationGracePeriodSeconds: 1
  securityContext:
    sysctls: [{name: net.ipv4.ip_unprivileged_port_start, value: "0"}]
  containers:
  - name: c
    image: busybox:test
    command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 1; done"]
    securityContext: {capabilities: {drop: [ALL]}}
---
apiVersion: v1
kind: Pod
metadata: {name: unsafe-sysctl}
spec:
  terminationGracePeriodSeconds: 1
  securityContext:
    sysctls: [{name: kernel.msgmax, value: "65536"}]
  containers: [{name: c, image: busybox:test, command: [sleep, "3600"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: nonroot}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox:test
    command: [sleep, "3600"]
    securityContext: {runAsNonRoot: true}
"#;

fn running(s: &Server, name: &str) -> Option<Value> {
    let out = s.kubectl(&["get", "pod", name, "-o", "json"]);
    let p: Value = serde_json::from_slice(&out.stdout).ok()?;
    (p["status"]["phase"] == "Running").then_some(p)
}

/// `sh -c script` in the pod: (success, stdout + stderr).
fn sh(s: &Server, pod: &str, script: &str) -> (bool, String) {
    let out = s.kubectl(&["exec", pod, "--", "sh", "-c", script]);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Every container's shim log (what an init that failed said), for failure messages.
fn shim_logs(s: &Server) -> String {
    let mut out = String::new();
    for pod in std::fs::read_dir(s.data_dir().join("agent/pods"))
        .into_iter()
        .flatten()
        .flatten()
    {
        for c in std::fs::read_dir(pod.path().join("containers"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let mut log = std::fs::read_to_string(c.path().join("shim.log")).unwrap_or_default();
            for f in ["previous.log", "log"] {
                log.push_str(&std::fs::read_to_string(c.path().join(f)).unwrap_or_default());
            }
            if !log.is_empty() {
                out.push_str(&format!("{}: {log}\n", c.path().display()));
            }
        }
    }
    out
}

/// An address on `lo` for the test's node, deleted on drop.
struct NodeAddress(String);

impl NodeAddress {
    fn new(ip: &str) -> NodeAddress {
        let _ = std::process::Command::new("ip")
            .args(["addr", "add", &format!("{ip}/32"), "dev", "lo"])
            .status();
        NodeAddress(ip.to_string())
    }
}

impl Drop for NodeAddress {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["addr", "del", &format!("{}/32", self.0), "dev", "lo"])
            .status();
    }
}

/// A loop device over a file of known bytes, detached on drop: a host block device whose content the
/// test knows (the machine's own disks may be unreadable even to the host's root, as in a sandbox).
struct Loop {
    dev: String,
    major: String,
    minor: String,
}

impl Loop {
    fn new(dir: &std::path::Path) -> Option<Loop> {
        let file = dir.join("disk.img");
        std::fs::write(&file, b"BERTH-HOST-DISK!".repeat(4096)).ok()?;
        let out = std::process::Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&file)
            .output()
            .ok()?;
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() || dev.is_empty() {
            return None;
        }
        let name = dev.rsplit('/').next()?.to_string();
        let nums = std::fs::read_to_string(format!("/sys/class/block/{name}/dev")).ok()?;
        let (major, minor) = nums.trim().split_once(':')?;
        Some(Loop {
            dev: dev.clone(),
            major: major.to_string(),
            minor: minor.to_string(),
        })
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .args(["-d", &self.dev])
            .status();
    }
}

#[test]
fn pods_get_the_walls_a_containerd_cluster_gives_and_privileged_pods_do_not() {
    if !common::can_run_containers() {
        return;
    }
    // The node's address must be one a pod can route to (a machine without a default route would
    // make it 127.0.0.1): an address of its own on the loopback interface, removed on drop.
    let node_ip = NodeAddress::new("10.47.0.1");
    let s = Server::start_with(&["--node-name", "node-iso", "--node-ip", &node_ip.0]);
    let archive = common::busybox_archive(s.data_dir()).expect("busybox archive");
    common::import_image(s.data_dir(), &archive);
    // A Localhost seccomp profile, in the node's seccomp directory (the kubelet's
    // `<root-dir>/seccomp`): mkdir fails with EACCES, everything else is allowed.
    let profiles = s.data_dir().join("agent/seccomp/profiles");
    std::fs::create_dir_all(&profiles).expect("profiles dir");
    std::fs::write(
        profiles.join("deny-mkdir.json"),
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}"#,
    )
    .expect("profile");
    s.apply(PODS);
    for p in [
        "plain",
        "priv",
        "dropall",
        "sysadmin",
        "restricted",
        "seccomp",
        "localhost",
        "sysctl",
    ] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while running(&s, p).is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "{p} not Running: {}\n{}",
                s.get_json(&["pod", p])["status"],
                shim_logs(&s)
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    // The capability sets: containerd's 14 defaults (the well-known a80425fb), every one when
    // privileged, none after drop ALL; for the workload (PID 1) and for an exec'd process alike.
    let host_caps = std::fs::read_to_string("/proc/self/status")
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:\t").map(str::to_string))
        .expect("CapEff");
    for (pod, eff) in [
        ("plain", "00000000a80425fb"),
        ("priv", host_caps.as_str()),
        ("dropall", "0000000000000000"),
    ] {
        for who in ["1", "self"] {
            let (ok, out) = sh(
                &s,
                pod,
                &format!("grep -E '^Cap(Eff|Bnd|Amb)' /proc/{who}/status"),
            );
            assert!(
                ok,
                "{pod}: {out}\n{}\n{}",
                s.get_json(&["pod", pod])["status"],
                shim_logs(&s)
            );
            assert!(out.contains(&format!("CapEff:\t{eff}")), "{pod} {who}: {out}");
            assert!(out.contains(&format!("CapBnd:\t{eff}")), "{pod} {who}: {out}");
            assert!(out.contains("CapAmb:\t0000000000000000"), "{pod} {who}: {out}");
        }
    }

    // 1. A device node of a host block device, made with mknod, cannot be opened (device cgroup,
    // nodev mounts); a privileged pod reads it.
    let disk = Loop::new(s.data_dir()).expect("a loop device");
    let script = format!(
        "mknod /tmp/disk b {} {} && head -c 16 /tmp/disk",
        disk.major, disk.minor
    );
    let (ok, out) = sh(&s, "plain", &script);
    assert!(
        !ok && !out.contains("BERTH-HOST-DISK"),
        "default pod read a host disk: {out}"
    );
    let (ok, out) = sh(&s, "priv", &script);
    assert!(ok && out.contains("BERTH-HOST-DISK"), "privileged pod: {out}");
    // An unprivileged pod given CAP_SYS_ADMIN can mount a filesystem without `nodev`; on a cgroup v1
    // host its device cgroup still keeps the node closed (on v2 that case is documented as weaker).
    if std::path::Path::new("/sys/fs/cgroup/devices/devices.allow").exists() {
        let script = format!(
            "mkdir -p /tmp/d && mount -t tmpfs none /tmp/d && mknod /tmp/d/disk b {} {} && echo MADE && head -c 16 /tmp/d/disk",
            disk.major, disk.minor
        );
        let (ok, out) = sh(&s, "sysadmin", &script);
        assert!(
            !ok && !out.contains("BERTH-HOST-DISK") && out.contains("MADE"),
            "a CAP_SYS_ADMIN pod read a host disk through a fresh mount: {out}"
        );
    }
    // 2. /proc/sys is read-only.
    let drop_caches = "echo 4 > /proc/sys/vm/drop_caches";
    assert!(!sh(&s, "plain", drop_caches).0, "default pod wrote /proc/sys");
    let (ok, out) = sh(&s, "priv", drop_caches);
    assert!(ok, "privileged pod: {out}");
    // 3. Masked paths read as empty (/proc/kcore where the kernel has it).
    for path in ["/proc/kcore", "/proc/timer_list", "/proc/keys"] {
        let host = std::fs::read(path).map(|b| !b.is_empty()).unwrap_or(false);
        let script = format!("head -c 16 {path} 2>/dev/null | wc -c");
        let (_, out) = sh(&s, "plain", &script);
        assert_eq!(out.trim(), "0", "default pod read {path}");
        if host {
            let (_, out) = sh(&s, "priv", &script);
            assert_ne!(out.trim(), "0", "privileged pod could not read {path}");
        }
    }
    // 4. Mounting a filesystem.
    let mnt = "mkdir -p /tmp/m && mount -t tmpfs none /tmp/m";
    assert!(!sh(&s, "plain", mnt).0, "default pod mounted a filesystem");
    let (ok, out) = sh(&s, "priv", mnt);
    assert!(ok, "privileged pod: {out}");
    // 5. A nested user namespace: refused by RuntimeDefault seccomp (an Unconfined pod may, as on a
    // containerd node, where an unset seccompProfile is Unconfined).
    for pod in ["seccomp", "restricted"] {
        let (ok, out) = sh(&s, pod, "unshare -U true");
        assert!(!ok, "{pod} made a user namespace: {out}");
    }
    let (ok, out) = sh(&s, "priv", "unshare -U true");
    assert!(ok, "privileged pod: {out}");
    // 6. Changing the clock. Only ever a write-back of the kernel's current tick (no change at all):
    // busybox `date -s` exits 0 even when the kernel refuses, and a test must never move the host's
    // clock.
    let tick = "t=$(adjtimex | awk '/tick:/ {print $3}') && test -n \"$t\" && adjtimex -t $t";
    let (ok, out) = sh(&s, "plain", tick);
    assert!(!ok, "default pod set the clock: {out}");
    let (ok, out) = sh(&s, "priv", tick);
    assert!(ok, "privileged pod: {out}");
    // 7. Another pod's processes and the host's are out of sight (PID namespace; no hostPID), so they
    // cannot be signalled or traced, privileged or not.
    let shim_pids: Vec<String> = std::fs::read_dir("/proc")
        .expect("proc")
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_string_lossy().into_owned();
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            (pid.parse::<u32>().is_ok() && String::from_utf8_lossy(&cmd).contains("container-shim"))
                .then_some(pid)
        })
        .collect();
    assert!(!shim_pids.is_empty());
    for pod in ["plain", "priv"] {
        let (_, out) = sh(&s, pod, "cat /proc/1/cmdline; echo; ls /proc | grep -c '^[0-9]'");
        assert!(
            !out.contains("init") && !out.contains("berth"),
            "{pod} sees the host's init: {out}"
        );
        for pid in &shim_pids {
            let (ok, out) = sh(&s, pod, &format!("kill -0 {pid} && cat /proc/{pid}/cmdline"));
            assert!(
                !ok || !out.contains("container-shim"),
                "{pod} sees host process {pid}: {out}"
            );
        }
    }
    // 8. The node's kubelet API refuses a caller without its token.
    let node = s.get_json(&["node", "node-iso"]);
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .expect("kubelet port");
    let gw = &node_ip.0;
    for pod in ["plain", "priv"] {
        let (ok, out) = sh(
            &s,
            pod,
            &format!("wget -q -O- http://{gw}:{port}/containerLogs/default/plain/c 2>&1"),
        );
        assert!(
            !ok,
            "{pod} read logs through the kubelet API without a token: {out}"
        );
        assert!(out.contains("401") || out.contains("403"), "{pod}: {out}");
    }
    // 9. Ports below 1024 need CAP_NET_BIND_SERVICE.
    let bind = "timeout 1 nc -l -p 80 2>&1; echo rc=$?";
    let (_, out) = sh(&s, "dropall", bind);
    assert!(out.contains("ermission denied"), "drop ALL bound port 80: {out}");
    let (_, out) = sh(&s, "priv", bind);
    assert!(!out.contains("ermission denied"), "privileged pod: {out}");
    // ... unless the pod lowers net.ipv4.ip_unprivileged_port_start (a safe, namespaced sysctl), which
    // then reads back in its network namespace only.
    let (_, out) = sh(
        &s,
        "sysctl",
        &format!("cat /proc/sys/net/ipv4/ip_unprivileged_port_start; {bind}"),
    );
    assert!(
        out.starts_with("0\n") && !out.contains("ermission denied"),
        "sysctl pod: {out}"
    );
    assert_ne!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").expect("host sysctl"),
        "0\n",
        "the host's own value changed"
    );
    // A sysctl outside the safe set is refused with the kubelet's message.
    let w = eventually(30, "unsafe-sysctl refused", || {
        let w = s.get_json(&["pod", "unsafe-sysctl"])["status"]["containerStatuses"][0]["state"]["waiting"]
            .clone();
        (w["reason"] == "CreateContainerConfigError").then_some(w)
    });
    assert_eq!(
        w["message"], "forbidden sysctl: \"kernel.msgmax\" not allowlisted",
        "{w}"
    );

    // The restricted pod: its ids and groups (fsGroup, supplementalGroups), no_new_privs, the seccomp
    // filter, a read-only root and a volume given to the fsGroup.
    let (ok, out) = sh(
        &s,
        "restricted",
        "id; grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status; touch /x 2>&1; stat -c '%g %a' /scratch; touch /scratch/f && stat -c '%g' /scratch/f",
    );
    assert!(ok, "{out}");
    assert!(out.contains("uid=1000 gid=3000"), "{out}");
    assert!(out.contains("2000") && out.contains("4000"), "groups: {out}");
    assert!(
        out.contains("NoNewPrivs:\t1") && out.contains("Seccomp:\t2"),
        "{out}"
    );
    assert!(out.contains("Read-only file system"), "{out}");
    assert!(
        out.contains("2000 2777") || out.contains("2000 2775") || out.contains("2000 2770"),
        "{out}"
    );
    assert!(out.trim().ends_with("2000"), "new files get the fsGroup: {out}");
    let (_, out) = sh(&s, "plain", "grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status");
    assert!(
        out.contains("NoNewPrivs:\t0") && out.contains("Seccomp:\t0"),
        "{out}"
    );

    let (ok, out) = sh(&s, "localhost", "touch /tmp/f && mkdir /tmp/d");
    assert!(
        !ok && out.contains("Permission denied"),
        "Localhost profile: {out}"
    );
    let (_, out) = sh(&s, "localhost", "grep '^Seccomp:' /proc/1/status");
    assert!(out.contains("Seccomp:\t2"), "{out}");

    // runAsNonRoot refuses an image that runs as root, with the kubelet's message.
    let p = eventually(30, "nonroot refused", || {
        let p = s.get_json(&["pod", "nonroot"]);
        (p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "CreateContainerConfigError")
            .then_some(p)
    });
    let msg = p["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let uid = p["metadata"]["uid"].as_str().expect("uid");
    assert_eq!(
        msg,
        format!(
            "container has runAsNonRoot and image will run as root (pod: \"nonroot_default({uid})\", container: c)"
        )
    );

    s.ok(&["delete", "pods", "--all", "--wait=false"]);
    s.wait_pods_gone(60);
    drop(disk);
}

/// The cgroup v2 device program (issue 14 item 1, `agent::devicefilter`), forced on this host with
/// `BERTH_DEVICE_CGROUP=v2` where a v1 devices controller would otherwise be used: a pod given
/// `CAP_SYS_ADMIN` mounts a tmpfs without `nodev` and makes a node of a host disk there, and still
/// cannot open it; `/dev/null` still works, for the workload and for `kubectl exec` alike.
#[test]
fn a_cap_sys_admin_pod_behind_the_v2_device_program_cannot_open_host_devices() {
    if !common::can_run_containers() {
        return;
    }
    if agent::cgroup::unified_root().is_none() {
        eprintln!("skipped: no cgroup v2 hierarchy on this host");
        return;
    }
    let s = Server::start_with_env(&["--node-name", "node-bpf"], &[("BERTH_DEVICE_CGROUP", "v2")]);
    let archive = common::busybox_archive(s.data_dir()).expect("busybox archive");
    common::import_image(s.data_dir(), &archive);
    let disk = Loop::new(s.data_dir()).expect("a loop device");
    s.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: sysadmin}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox:test
    command: [sh, -c, "echo hi > /dev/null && trap 'exit 0' TERM; while true; do sleep 1; done"]
    securityContext: {capabilities: {add: [SYS_ADMIN]}}
"#,
    );
    eventually(60, "sysadmin Running", || running(&s, "sysadmin"));
    let script = format!(
        "mkdir -p /tmp/d && mount -t tmpfs none /tmp/d && mknod /tmp/d/disk b {} {} && echo MADE && \
         echo ok > /dev/null && echo NULL-OK && head -c 16 /tmp/d/disk",
        disk.major, disk.minor
    );
    let (ok, out) = sh(&s, "sysadmin", &script);
    assert!(
        !ok && out.contains("MADE") && out.contains("NULL-OK") && !out.contains("BERTH-HOST-DISK"),
        "a CAP_SYS_ADMIN pod behind the device program: {out}\n{}",
        shim_logs(&s)
    );
    assert!(out.contains("not permitted"), "{out}");
    let uid = s.get_json(&["pod", "sysadmin"])["metadata"]["uid"]
        .as_str()
        .expect("uid")
        .to_string();
    let cgroup = agent::cgroup::unified_root()
        .expect("unified")
        .join("berth")
        .join(&uid);
    assert!(cgroup.exists(), "{} made", cgroup.display());
    s.ok(&["delete", "pods", "--all", "--wait=false"]);
    s.wait_pods_gone(60);
    // The container's cgroup (and with it the program) goes with the container.
    eventually(10, "the pod's v2 cgroup removed", || {
        (!cgroup.exists()).then_some(())
    });
    drop(disk);
}

/// `--seccomp-default` (the kubelet's flag): a pod without `seccompProfile` gets `RuntimeDefault`; one
/// that asks for `Unconfined` keeps it.
#[test]
fn seccomp_default_makes_runtime_default_the_default() {
    if !common::can_run_containers() {
        return;
    }
    let s = Server::start_with(&["--node-name", "node-sd", "--seccomp-default"]);
    let archive = common::busybox_archive(s.data_dir()).expect("busybox archive");
    common::import_image(s.data_dir(), &archive);
    s.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: unset}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: c, image: busybox:test, command: [sleep, "3600"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: unconfined}
spec:
  terminationGracePeriodSeconds: 1
  securityContext: {seccompProfile: {type: Unconfined}}
  containers: [{name: c, image: busybox:test, command: [sleep, "3600"]}]
"#,
    );
    for (pod, mode) in [("unset", "2"), ("unconfined", "0")] {
        eventually(60, &format!("{pod} Running"), || running(&s, pod));
        let (ok, out) = sh(&s, pod, "grep '^Seccomp:' /proc/1/status");
        assert!(ok && out.contains(&format!("Seccomp:\t{mode}")), "{pod}: {out}");
    }
    s.ok(&["delete", "pods", "--all", "--wait=false"]);
    s.wait_pods_gone(60);
}

/// `hostUsers: false` (issue 14 item 3): root inside is an unprivileged range of host ids, 64 Ki of its
/// own; the image and the volumes are id-mapped, so a file the pod writes to a volume is stored with
/// the ids it sees, and one it writes to its root layer belongs to its range on the host; `kubectl
/// exec` joins the namespace; the walls still hold (no mount, no device). Fails before the change: such
/// a pod was refused with `CreateContainerConfigError`.
#[test]
fn a_pod_with_host_users_false_runs_in_a_user_namespace_of_its_own() {
    if !common::can_run_containers() {
        return;
    }
    let s = Server::start_with(&["--node-name", "node-userns"]);
    let archive = common::busybox_archive(s.data_dir()).expect("busybox archive");
    common::import_image(s.data_dir(), &archive);
    s.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: userns}
spec:
  terminationGracePeriodSeconds: 1
  hostUsers: false
  containers:
  - name: c
    image: busybox:test
    command: [sh, -c, "echo from-root-layer > /tmp/layer-file; trap 'exit 0' TERM; while true; do sleep 1; done"]
    volumeMounts: [{name: data, mountPath: /data}]
  volumes: [{name: data, emptyDir: {}}]
---
apiVersion: v1
kind: Pod
metadata: {name: userns-hostnet}
spec:
  terminationGracePeriodSeconds: 1
  hostUsers: false
  hostNetwork: true
  containers: [{name: c, image: busybox:test, command: [sleep, "3600"]}]
"#,
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let pod = loop {
        if let Some(p) = running(&s, "userns") {
            break p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "userns not Running: {}\n{}",
            s.get_json(&["pod", "userns"])["status"],
            shim_logs(&s)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    // The mapping: root inside is the first of 65,536 host ids of its own, above the host's first 64 Ki.
    let (ok, out) = sh(&s, "userns", "cat /proc/self/uid_map; id -u; id -g");
    assert!(ok, "exec into the user namespace: {out}");
    let fields: Vec<u64> = out.split_whitespace().filter_map(|f| f.parse().ok()).collect();
    assert_eq!(fields.len(), 5, "uid_map and ids: {out}");
    let (inside, host, size) = (fields[0], fields[1], fields[2]);
    assert_eq!((inside, size), (0, 65_536), "{out}");
    assert!(host >= 65_536 && host % 65_536 == 0, "host range {host}: {out}");
    assert_eq!((fields[3], fields[4]), (0, 0), "root inside: {out}");
    // A file written to the volume is root's inside and stored as root's on disk (id-mapped mount).
    let (ok, out) = sh(
        &s,
        "userns",
        "echo v > /data/f && stat -c %u:%g /data/f && stat -c %u /",
    );
    assert!(
        ok && out.starts_with("0:0\n0"),
        "volume and root owned by the pod's root: {out}"
    );
    let uid = pod["metadata"]["uid"].as_str().expect("uid");
    let pod_dir = s.data_dir().join("agent/pods").join(uid);
    let on_disk = std::fs::metadata(pod_dir.join("volumes/empty-dir/data/f")).expect("volume file");
    use std::os::unix::fs::MetadataExt;
    assert_eq!((on_disk.uid(), on_disk.gid()), (0, 0), "volume file on disk");
    // The root layer's file belongs to the pod's range on the host.
    let layer = pod_dir.join("containers/c/upper/tmp/layer-file");
    let meta = std::fs::metadata(&layer).expect("upper layer file");
    assert_eq!(u64::from(meta.uid()), host, "root layer file owner on the host");
    // Root of its own namespace only: no mount, no device, no host-wide sysctl.
    let (ok, out) = sh(&s, "userns", "mknod /tmp/disk b 7 0 && head -c 1 /tmp/disk");
    assert!(!ok, "made and opened a device node: {out}");
    let (ok, out) = sh(&s, "userns", "echo 4 > /proc/sys/vm/drop_caches");
    assert!(!ok, "wrote a host-wide sysctl: {out}");
    // A host namespace with it is refused, with the reason.
    let msg = eventually(60, "userns-hostnet refused", || {
        let p = s.get_json(&["pod", "userns-hostnet"]);
        let w = &p["status"]["containerStatuses"][0]["state"]["waiting"];
        (w["reason"] == "CreateContainerConfigError").then(|| w["message"].to_string())
    });
    assert!(msg.contains("hostNetwork"), "{msg}");
    s.ok(&["delete", "pods", "--all", "--wait=false"]);
    s.wait_pods_gone(60);
}
