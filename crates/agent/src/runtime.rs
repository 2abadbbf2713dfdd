//! Containers as Linux processes, without a container daemon (the patterns of runc's `init` and
//! containerd's shim, architecture.md "How the agent runs a pod"):
//!
//! - the agent writes a [`ContainerSpec`] to `<container dir>/spec.json` and starts `berth container-shim
//!   <dir>`: a re-executed, single-threaded `berth`, in its own process group, that outlives the server;
//! - the shim unshares UTS, IPC and PID namespaces and starts `berth container-init <dir>`, which is
//!   therefore PID 1 of a new PID namespace and makes its own mount namespace; the shim records the init's pid (`pid`), waits for it,
//!   and records its exit (`exit`), so exit codes survive a server crash and the agent re-adopts running
//!   containers from these files;
//! - the init makes the container's world: every mount private, an overlay root (the image's rootfs
//!   read-only below, the container's own upper directory), the pod's volumes bound at their mount paths,
//!   `/proc`, a tmpfs `/dev` with the standard devices (the host's when privileged), a sysfs of its own
//!   (read-only unless privileged), `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`; hostname and
//!   domain name; `pivot_root`; the container's walls (`crate::security::apply`: sysctls, masked and
//!   read-only paths, capabilities, seccomp, groups, user); the working directory and environment; then
//!   it `exec`s the workload, which becomes PID 1;
//! - unprivileged, everything the container can write is mounted `nodev`, and on cgroup v1 a container
//!   that holds `CAP_SYS_ADMIN` (so could mount a filesystem without `nodev`) also gets a device cgroup:
//!   the shim puts itself into it before starting the init.
//!
//! A pod with `hostUsers: false` runs in a user namespace of its own: the shim and a two-stage init
//! arrange it (see `crate::userns` and ARCHITECTURE.md).
//!
//! Every mount lives in the container's own mount namespace and disappears with its last process: a crash
//! anywhere leaves no mount behind on the host.

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A bind mount into the container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bind {
    /// Host path (directory or file).
    pub source: PathBuf,
    /// Absolute path inside the container.
    pub target: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// Everything the init needs, written by the agent as `spec.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// The image's root filesystem (the overlay's lower directory).
    pub rootfs: PathBuf,
    /// argv (argv[0] resolved through `PATH` of `env`).
    pub argv: Vec<String>,
    /// Environment, `K=V`.
    pub env: Vec<String>,
    /// Working directory inside the container.
    pub cwd: String,
    /// Hostname (UTS namespace).
    pub hostname: String,
    /// NIS domain name (UTS namespace), e.g. `nginx.default.svc.cluster.local` for a pod with a subdomain.
    pub domainname: String,
    /// uid and gid the workload runs as.
    pub uid: u32,
    /// gid.
    pub gid: u32,
    /// Volumes and other bind mounts, in order.
    pub binds: Vec<Bind>,
    /// Contents of `/etc/hosts`.
    pub hosts: String,
    /// Contents of `/etc/resolv.conf`.
    pub resolv_conf: String,
    /// cgroup limits.
    #[serde(default)]
    pub resources: crate::cgroup::Resources,
    /// The container's cgroup path below `berth/` (`<pod uid>/<container>`).
    #[serde(default)]
    pub cgroup: String,
    /// Keep stdin open for `kubectl attach` (`stdin`).
    #[serde(default)]
    pub stdin: bool,
    /// Close stdin when the first attached client that wrote to it detaches (`stdinOnce`).
    #[serde(default)]
    pub stdin_once: bool,
    /// Run on a terminal (`tty`).
    #[serde(default)]
    pub tty: bool,
    /// The pod's pinned network namespace to join; `None` shares the node's (`hostNetwork`).
    #[serde(default)]
    pub netns: Option<PathBuf>,
    /// Capabilities, seccomp, masked paths, groups… (`crate::security`); a spec written before it
    /// existed gets containerd's defaults for an unprivileged container.
    #[serde(default)]
    pub security: crate::security::Security,
    /// `hostUsers: false`: the pod's user namespace mapping (`crate::userns`); `None` runs in the
    /// host's.
    #[serde(default)]
    pub id_map: Option<crate::userns::IdMap>,
    /// An ephemeral container's `targetContainerName`: that container's directory, whose PID namespace
    /// this container joins instead of making its own (as upstream's kubelet asks the runtime to).
    #[serde(default)]
    pub pid_ns_of: Option<PathBuf>,
}

/// The PID namespace of the running container whose directory is `dir`.
fn pid_namespace_of(dir: &Path) -> std::io::Result<std::fs::File> {
    let pid = std::fs::read_to_string(dir.join("pid"))
        .map_err(|e| std::io::Error::other(format!("the target container is not running: {e}")))?;
    std::fs::File::open(format!("/proc/{}/ns/pid", pid.trim()))
        .map_err(|e| std::io::Error::other(format!("the target container's PID namespace: {e}")))
}

/// Where a container stands, read from its directory.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// Never started (no pid file).
    Absent,
    /// The shim was started moments ago and has not recorded the init's pid yet.
    Starting,
    /// The workload is gone and its shim is still recording the exit.
    Stopping,
    /// Its init (the workload) runs with this host pid.
    Running {
        /// Host pid of the workload.
        pid: i32,
        /// When it started (RFC 3339).
        started: String,
    },
    /// It exited.
    Exited {
        /// Exit code (128 + signal when killed by a signal).
        code: i32,
        /// When it started.
        started: String,
        /// When it finished.
        finished: String,
    },
}

fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data)?;
    std::fs::rename(tmp, path)
}

/// Start a container whose spec is in `dir` (a fresh start: the previous run's pid and exit files are
/// cleared; the upper directory, i.e. the container's writable layer, is kept as a restart keeps it).
///
/// # Errors
/// When the shim cannot be spawned.
pub fn start(berth: &Path, dir: &Path, spec: &ContainerSpec) -> std::io::Result<()> {
    for d in ["upper", "work", "merged"] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    if let Some(map) = &spec.id_map {
        std::fs::create_dir_all(dir.join("lower"))?;
        crate::userns::own_layer(dir, map)?;
    }
    write_atomic(
        &dir.join("spec.json"),
        &serde_json::to_vec_pretty(spec).unwrap_or_default(),
    )?;
    // The previous run's end is kept for `lastState` (upstream keeps the last terminated container).
    if let (Ok(exit), Ok(started)) = (
        std::fs::read_to_string(dir.join("exit")),
        std::fs::read_to_string(dir.join("started")),
    ) {
        write_atomic(
            &dir.join("last-exit"),
            format!("{} {}", exit.trim(), started.trim()).as_bytes(),
        )?;
    }
    for f in ["pid", "exit", "started", "prestop", "prestop-done"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    // Until the shim records a pid, the container is Starting (never started twice by a quick re-sync).
    write_atomic(
        &dir.join("starting"),
        jiff::Timestamp::now().to_string().as_bytes(),
    )?;
    // The previous run's log stays readable (`kubectl logs --previous`).
    if dir.join("log").exists() {
        std::fs::rename(dir.join("log"), dir.join("previous.log"))?;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("shim.log"))?;
    let shim = Command::new(berth)
        .arg("container-shim")
        .arg(dir)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()?;
    write_atomic(&dir.join("shim-pid"), shim.id().to_string().as_bytes())?;
    Ok(())
}

/// The container's state from its files (a pid whose process is gone without an exit file counts as
/// exited with code 255: the shim itself was killed).
pub fn state(dir: &Path) -> State {
    let read = |f: &str| {
        std::fs::read_to_string(dir.join(f))
            .ok()
            .map(|s| s.trim().to_string())
    };
    let started = read("started").unwrap_or_default();
    if let Some(exit) = read("exit") {
        let mut parts = exit.splitn(2, ' ');
        let code = parts.next().and_then(|c| c.parse().ok()).unwrap_or(255);
        let finished = parts.next().unwrap_or("").to_string();
        return State::Exited {
            code,
            started,
            finished,
        };
    }
    match read("pid").and_then(|p| p.parse::<i32>().ok()) {
        None => match read("starting").and_then(|t| t.parse::<jiff::Timestamp>().ok()) {
            // A shim that never recorded a pid within 30 s died before starting anything.
            Some(t) if jiff::Timestamp::now().duration_since(t) < jiff::SignedDuration::from_secs(30) => {
                State::Starting
            }
            Some(_) => State::Exited {
                code: 255,
                started: String::new(),
                finished: String::new(),
            },
            None => State::Absent,
        },
        Some(pid) if alive(pid) => State::Running { pid, started },
        Some(_)
            if read("shim-pid")
                .and_then(|p| p.parse::<i32>().ok())
                .is_some_and(alive) =>
        {
            State::Stopping
        }
        Some(_) => State::Exited {
            code: 255,
            started: started.clone(),
            finished: started,
        },
    }
}

/// The previous run's end: (exit code, started, finished), if the container was restarted.
pub fn last_exit(dir: &Path) -> Option<(i32, String, String)> {
    let s = std::fs::read_to_string(dir.join("last-exit")).ok()?;
    let mut p = s.split_whitespace();
    let code = p.next()?.parse().ok()?;
    let finished = p.next()?.to_string();
    let started = p.next().unwrap_or("").to_string();
    Some((code, started, finished))
}

fn alive(pid: i32) -> bool {
    // A zombie (exited, not yet reaped by its parent) counts as gone.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit(')').next().and_then(|r| r.split_whitespace().next());
    nix::sys::signal::kill(Pid::from_raw(pid), None).is_ok() && state != Some("Z")
}

/// Send `sig` to the container's workload (if it runs).
pub fn signal(dir: &Path, sig: nix::sys::signal::Signal) {
    if let State::Running { pid, .. } = state(dir) {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), sig);
    }
}

/// `berth container-shim <dir>`: new namespaces, start the init, record its pid and exit.
///
/// # Errors
/// When the namespaces cannot be made or the init cannot be started.
pub fn shim_main(dir: &Path) -> std::io::Result<()> {
    // The pod's network namespace first: the init and everything it starts are in it.
    let spec: Option<ContainerSpec> = std::fs::read(dir.join("spec.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    if let Some(ns) = spec.as_ref().and_then(|s| s.netns.as_ref()) {
        let f = std::fs::File::open(ns)?;
        nix::sched::setns(&f, CloneFlags::CLONE_NEWNET)
            .map_err(err("joining the pod's network namespace"))?;
    }
    let me = std::env::current_exe()?;
    // In a user namespace (`hostUsers: false`) the init makes the other namespaces itself, inside it;
    // the shim makes the namespace and the id-mapped trees as host root and hands them over.
    let mut handoff = None;
    if let Some(spec) = &spec
        && let Some(map) = &spec.id_map
    {
        let binds: Vec<(&Path, bool)> = spec
            .binds
            .iter()
            .map(|b| (b.source.as_path(), b.read_only))
            .collect();
        handoff = Some(crate::userns::prepare(map, &spec.rootfs, &binds)?);
    } else if let Some(target) = spec.as_ref().and_then(|s| s.pid_ns_of.as_ref()) {
        // An ephemeral container with a target: the init (and so the workload) joins the target's PID
        // namespace, so `ps` there shows the target's processes.
        nix::sched::setns(pid_namespace_of(target)?, CloneFlags::CLONE_NEWPID)
            .map_err(err("joining the target container's PID namespace"))?;
        unshare(CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC).map_err(std::io::Error::from)?;
    } else {
        // The mount namespace is the init's own (its pivot_root must not move the shim's root).
        unshare(CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWPID)
            .map_err(std::io::Error::from)?;
    }
    // One pipe (or terminal) for stdout and stderr: the log keeps the order in which the container wrote.
    let (stdin, stdin_once, tty) = spec
        .as_ref()
        .map_or((false, false, false), |s| (s.stdin, s.stdin_once, s.tty));
    let ends = crate::stdio::make(stdin, stdin_once, tty)?;
    // The device rules (cgroup v1) before the init exists, so it and everything it starts inherit
    // them: the shim joins the container's devices cgroup itself and leaves it when the container ends.
    // Only where `nodev` alone is not enough (see `Security::needs_device_cgroup`).
    let mut devices = None;
    let mut devices_v2 = None;
    if let Some(spec) = spec.as_ref().filter(|s| s.security.needs_device_cgroup()) {
        if !crate::devicefilter::forced() {
            devices = crate::cgroup::restrict_devices(&spec.cgroup, std::process::id())
                .map_err(|e| std::io::Error::other(format!("device cgroup: {e}")))?;
        }
        if devices.is_none() {
            // No v1 devices controller (cgroup v2): runc's BPF device program on the container's
            // cgroup of the unified hierarchy, with the same allow-list. The shim enters that cgroup
            // only to spawn the init, which stays behind the program.
            devices_v2 = crate::devicefilter::enter(&spec.cgroup)
                .map_err(|e| std::io::Error::other(format!("device program: {e}")))?;
        }
        if devices.is_none() && devices_v2.is_none() {
            // Fail closed: without device rules such a container could reach the host's devices.
            return Err(std::io::Error::other(
                "an unprivileged container with CAP_SYS_ADMIN needs device rules, and this host has \
                 neither a cgroup v1 devices controller nor a cgroup v2 hierarchy: drop CAP_SYS_ADMIN \
                 or run it privileged",
            ));
        }
    }
    let [child_in, child_out, child_err] = ends.child;
    // The exec fence: its write end goes to the init and closes when the workload is exec'd (or the
    // init dies), so the container is reported started only once its walls are up — runc reports a
    // container started only after its init's exec. Made after every fork of the shim's own (a holder
    // of a user namespace must not hold it).
    let (fence_r, fence_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
    // The init is a forked child of this single-threaded shim where nothing is handed over to a user
    // namespace (runc's nsexec clones its init likewise): a fresh `exec` of the 270 MB `berth` costs
    // milliseconds of every start. A pod in a user namespace, or a shim that has a thread, execs it.
    // `BERTH_INIT_EXEC` (any value) in the agent's environment keeps the exec path for every container:
    // to compare the two, or to rule the fork out when debugging.
    let forked = if handoff.is_none() && std::env::var_os("BERTH_INIT_EXEC").is_none() {
        match crate::security::sys::fork_single_threaded() {
            Ok(nix::unistd::ForkResult::Child) => {
                drop(fence_r);
                let code = match forked_init(dir, [child_in, child_out, child_err], fence_w) {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!("berth: container init: {e}");
                        1
                    }
                };
                crate::security::sys::exit_now(code)
            }
            Ok(nix::unistd::ForkResult::Parent { child }) => {
                // Our copies of the child's stdio ends (the log ends only once they are closed) and of
                // the fence's write end.
                drop([child_in, child_out, child_err]);
                drop(fence_w);
                Ok(Init::Forked(child))
            }
            Err(e) => Err((e, [child_in, child_out, child_err], fence_w)),
        }
    } else {
        Err((
            std::io::Error::other("user namespace, or BERTH_INIT_EXEC"),
            [child_in, child_out, child_err],
            fence_w,
        ))
    };
    let mut pid_pipe = None;
    let mut child = match forked {
        Ok(init) => init,
        Err((why, [child_in, child_out, child_err], fence_w)) => {
            tracing::debug!(reason = %why, "container init: exec instead of fork");
            crate::userns::keep_across_exec(&fence_w)?;
            let mut init = Command::new(me);
            init.env(EXEC_FENCE_ENV, fence_w.as_raw_fd().to_string());
            init.arg("container-init")
                .arg(dir)
                .stdin(std::process::Stdio::from(child_in))
                .stdout(std::process::Stdio::from(child_out))
                .stderr(std::process::Stdio::from(child_err));
            if let Some((h, r)) = handoff {
                init.env(crate::userns::HANDOFF_ENV, h.env_value());
                pid_pipe = Some((h, r));
            }
            // (A failed spawn leaves the device cgroup through `Entered`'s drop.)
            let child = init.spawn()?;
            // The builder holds our copies of the child's stdio ends: the log ends only once they are
            // closed.
            drop(init);
            drop(fence_w);
            Init::Spawned(child)
        }
    };
    // The init runs behind the device program; the shim itself need not.
    if let Some(d) = &devices_v2 {
        d.leave();
    }
    // The workload's pid: the init's own, or (user namespace) the one the init reports; the
    // descriptors handed over are closed here once the init has them.
    let workload = match pid_pipe {
        None => Some(child.id()),
        Some((h, r)) => {
            drop(h);
            crate::userns::read_pid(r)
        }
    };
    // Limits before anything else happens in the container (a failure fails the start, as upstream).
    let mut cgroups = Vec::new();
    if let Some(spec) = spec
        .as_ref()
        .filter(|s| !s.resources.is_empty() && !s.cgroup.is_empty())
        && let Some(layout) = crate::cgroup::detect()
    {
        let mut pids = vec![child.id()];
        pids.extend(workload.filter(|w| *w != child.id()));
        for pid in pids {
            match crate::cgroup::apply(&layout, &spec.cgroup, &spec.resources, pid) {
                Ok(dirs) => cgroups = dirs,
                Err(e) => {
                    eprintln!("berth: container shim: cgroup limits: {e}");
                    let _ = child.kill();
                }
            }
        }
    }
    // Until the workload's exec (or the init's end) closes the fence.
    {
        use std::io::Read;
        let mut sink = [0u8; 16];
        let mut fence = std::fs::File::from(fence_r);
        while matches!(fence.read(&mut sink), Ok(n) if n > 0) {}
    }
    let now = jiff::Timestamp::now().to_string();
    write_atomic(&dir.join("started"), now.as_bytes())?;
    write_atomic(
        &dir.join("pid"),
        workload.unwrap_or(child.id()).to_string().as_bytes(),
    )?;
    let _ = std::fs::remove_file(dir.join("starting"));
    // The container's output, as CRI log lines (`<RFC 3339 time> <stream> <F|P> <text>`), as containerd
    // writes them for the kubelet; it ends when every process of the container is gone.
    let mut log = crate::stdio::RotatingLog::open(
        &dir.join("log"),
        crate::stdio::LOG_MAX_BYTES,
        crate::stdio::LOG_MAX_FILES,
    )?;
    let listener = crate::stdio::listen(dir);
    crate::stdio::serve(ends.shim, listener, &mut log);
    let _ = std::fs::remove_file(dir.join("attach.sock"));
    let code = child.wait()?;
    crate::cgroup::remove(&cgroups);
    if let Some(d) = devices {
        crate::cgroup::leave_devices(std::process::id());
        crate::cgroup::remove(&[d]);
    }
    if let Some(d) = devices_v2 {
        d.leave();
        crate::cgroup::remove(std::slice::from_ref(&d.dir));
    }
    write_atomic(
        &dir.join("exit"),
        format!("{code} {}", jiff::Timestamp::now()).as_bytes(),
    )
}

fn err(what: &str) -> impl FnOnce(nix::Error) -> std::io::Error + '_ {
    move |e| std::io::Error::other(format!("{what}: {e}"))
}

/// Make `target` (inside the new root) exist as a directory or an empty file, matching `source`.
/// Make the terminal on fd 0 this process's controlling terminal, as runc does for a `terminal: true`
/// process: lead a new session, then reopen fd 0 through /proc (a session leader without a terminal
/// acquires the first it opens).
fn take_controlling_terminal() -> std::io::Result<()> {
    nix::unistd::setsid().map_err(err("setsid"))?;
    drop(
        std::fs::File::options()
            .read(true)
            .write(true)
            .open("/proc/self/fd/0")?,
    );
    Ok(())
}

fn mount_point(target: &Path, source: &Path) -> std::io::Result<()> {
    if source.is_dir() {
        std::fs::create_dir_all(target)
    } else {
        if let Some(p) = target.parent() {
            std::fs::create_dir_all(p)?;
        }
        if !target.exists() {
            std::fs::write(target, b"")?;
        }
        Ok(())
    }
}

fn bind(source: &Path, target: &Path, read_only: bool) -> std::io::Result<()> {
    bind_with(source, target, read_only, false)
}

/// A bind mount, read-only and/or without device nodes (`nodev`: a device node the container makes
/// there cannot be opened).
fn bind_with(source: &Path, target: &Path, read_only: bool, nodev: bool) -> std::io::Result<()> {
    mount_point(target, source)?;
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(err("bind mount"))?;
    if read_only || nodev {
        let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
        if read_only {
            flags |= MsFlags::MS_RDONLY;
        }
        if nodev {
            flags |= MsFlags::MS_NODEV;
        }
        mount(None::<&str>, target, None::<&str>, flags, None::<&str>).map_err(err("remount"))?;
    }
    Ok(())
}

/// Attach the detached mount tree `tree` (from `open_tree`) at `target`.
fn attach(tree: &std::os::fd::OwnedFd, target: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(target).or_else(|e| if target.exists() { Ok(()) } else { Err(e) })?;
    rustix::mount::move_mount(
        tree,
        "",
        rustix::fs::CWD,
        target,
        rustix::mount::MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| {
        std::io::Error::other(format!(
            "attaching an id-mapped mount at {}: {e}",
            target.display()
        ))
    })
}

/// Resolve a path inside the new root without following symlinks out of it (a volume's mountPath of an
/// image with a hostile symlink must not bind over a host path).
fn inside_root(root: &Path, path: &str) -> std::io::Result<PathBuf> {
    let mut out = root.to_path_buf();
    for c in Path::new(path).components() {
        match c {
            std::path::Component::Normal(n) => {
                out.push(n);
                if std::fs::symlink_metadata(&out).is_ok_and(|m| m.file_type().is_symlink()) {
                    return Err(std::io::Error::other(format!("{path}: a symlink in the image")));
                }
            }
            std::path::Component::RootDir | std::path::Component::CurDir => {}
            std::path::Component::ParentDir | std::path::Component::Prefix(_) => {
                return Err(std::io::Error::other(format!(
                    "{path}: not a plain absolute path"
                )));
            }
        }
    }
    Ok(out)
}

/// The container's init process as the shim started it.
enum Init {
    /// A forked child (no exec of `berth`).
    Forked(nix::unistd::Pid),
    /// `berth container-init`, exec'd.
    Spawned(std::process::Child),
}

impl Init {
    fn id(&self) -> u32 {
        match self {
            Init::Forked(pid) => u32::try_from(pid.as_raw()).unwrap_or_default(),
            Init::Spawned(c) => c.id(),
        }
    }

    fn kill(&mut self) -> std::io::Result<()> {
        match self {
            Init::Forked(pid) => {
                nix::sys::signal::kill(*pid, nix::sys::signal::Signal::SIGKILL).map_err(std::io::Error::from)
            }
            Init::Spawned(c) => c.kill(),
        }
    }

    /// Wait for it; its exit code, or 128 + the signal that ended it (as a shell reports it).
    fn wait(&mut self) -> std::io::Result<i32> {
        match self {
            Init::Forked(pid) => loop {
                match nix::sys::wait::waitpid(*pid, None) {
                    Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => return Ok(code),
                    Ok(nix::sys::wait::WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => return Err(e.into()),
                }
            },
            Init::Spawned(c) => {
                let status = c.wait()?;
                Ok(status.code().unwrap_or_else(|| {
                    use std::os::unix::process::ExitStatusExt;
                    128 + status.signal().unwrap_or(9)
                }))
            }
        }
    }
}

/// The environment variable naming the init's end of the shim's exec fence (see `shim_main`).
const EXEC_FENCE_ENV: &str = "BERTH_EXEC_FENCE";

/// `berth container-init <dir>`: PID 1 of the container; builds its root and execs the workload.
///
/// # Errors
/// Any failure before the exec (it then exits non-zero and the shim records it).
pub fn init_main(dir: &Path) -> std::io::Result<()> {
    // The shim's exec fence: held (close-on-exec) until the workload's exec closes it.
    let fence = std::env::var(EXEC_FENCE_ENV)
        .ok()
        .and_then(|n| n.parse().ok())
        .and_then(crate::security::sys::inherited);
    if let Some(f) = &fence {
        crate::userns::close_on_exec(f)?;
    }
    // A pod in a user namespace: the shim's handoff makes this the first stage (see `stage1_main`).
    let handoff = crate::userns::Handoff::inherited();
    init_run(dir, fence, handoff)
}

/// The init as a forked child of the shim (see `shim_main`): the container's stdio on 0-2, the fence
/// (close-on-exec, so the workload's exec closes it), then [`init_run`].
fn forked_init(
    dir: &Path,
    stdio: [std::os::fd::OwnedFd; 3],
    fence: std::os::fd::OwnedFd,
) -> std::io::Result<()> {
    let [stdin, stdout, stderr] = stdio;
    nix::unistd::dup2_stdin(&stdin).map_err(err("stdin"))?;
    nix::unistd::dup2_stdout(&stdout).map_err(err("stdout"))?;
    nix::unistd::dup2_stderr(&stderr).map_err(err("stderr"))?;
    drop((stdin, stdout, stderr));
    init_run(dir, Some(fence), None)
}

/// The container's init, PID 1 of its namespace, whether exec'd ([`init_main`]) or forked: builds its
/// root and execs the workload.
fn init_run(
    dir: &Path,
    fence: Option<std::os::fd::OwnedFd>,
    handoff: Option<crate::userns::Handoff>,
) -> std::io::Result<()> {
    let spec: ContainerSpec = serde_json::from_slice(&std::fs::read(dir.join("spec.json"))?)
        .map_err(|e| std::io::Error::other(format!("spec.json: {e}")))?;
    if let Some(h) = handoff {
        return stage1_main(dir, &spec, h, fence);
    }
    if spec.tty {
        // The terminal the shim made (on fds 0-2) becomes the workload's controlling terminal.
        take_controlling_terminal()?;
    }
    let root = build_root(dir, &spec, None)?;
    // pivot_root into the new root and drop the old one.
    nix::unistd::sethostname(&spec.hostname).map_err(err("hostname"))?;
    if !spec.domainname.is_empty() {
        std::fs::write("/proc/sys/kernel/domainname", &spec.domainname)?;
    }
    let old = root.join(".oldroot");
    std::fs::create_dir_all(&old)?;
    nix::unistd::pivot_root(&root, &old).map_err(err("pivot_root"))?;
    nix::unistd::chdir("/").map_err(err("chdir /"))?;
    umount2("/.oldroot", MntFlags::MNT_DETACH).map_err(err("detaching the old root"))?;
    let _ = std::fs::remove_dir("/.oldroot");
    let e = exec_workload(&spec);
    drop(fence);
    e
}

/// The first stage of a user-namespaced container's init, as host root: the container's mounts (with
/// the id-mapped root layer and volumes from the shim), then into the pod's user namespace as its root,
/// new UTS, IPC, PID and mount namespaces owned by it, and the second stage ([`stage2`]) as their first
/// process, whose host pid goes to the shim. The second stage is a forked child, not a new `exec` of
/// `berth` (runc's `nsexec` forks its stages the same way); this process stays as its parent and exits
/// as it does.
fn stage1_main(
    dir: &Path,
    spec: &ContainerSpec,
    h: crate::userns::Handoff,
    fence: Option<std::os::fd::OwnedFd>,
) -> std::io::Result<()> {
    let crate::userns::Handoff {
        userns,
        rootfs,
        binds,
        pid_pipe,
    } = h;
    let target_pidns = spec.pid_ns_of.as_deref().map(pid_namespace_of).transpose()?;
    let root = build_root(dir, spec, Some((rootfs, binds)))?;
    // The second stage starts in the root: inside the user namespace it may not traverse the agent's
    // private directories. (The working directory moves into the copy of the mount namespace made
    // below.)
    nix::unistd::chdir(&root).map_err(err("entering the root"))?;
    crate::userns::close_on_exec(&pid_pipe)?;
    nix::sched::setns(&userns, CloneFlags::CLONE_NEWUSER).map_err(err("joining the user namespace"))?;
    drop(userns);
    let zero = nix::unistd::Gid::from_raw(0);
    nix::unistd::setresgid(zero, zero, zero).map_err(err("setresgid 0"))?;
    nix::unistd::setgroups(&[]).map_err(err("setgroups"))?;
    let zero = nix::unistd::Uid::from_raw(0);
    nix::unistd::setresuid(zero, zero, zero).map_err(err("setresuid 0"))?;
    let mut namespaces = CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWNS;
    match target_pidns {
        // An ephemeral container with a target joins the target's PID namespace (owned by this user
        // namespace, where it is root).
        Some(ns) => nix::sched::setns(ns, CloneFlags::CLONE_NEWPID)
            .map_err(err("joining the target container's PID namespace"))?,
        None => namespaces |= CloneFlags::CLONE_NEWPID,
    }
    unshare(namespaces).map_err(err("namespaces inside the user namespace"))?;
    let child = match crate::security::sys::fork_single_threaded()? {
        nix::unistd::ForkResult::Child => {
            drop(pid_pipe);
            // The second stage keeps the fence until its exec.
            let e = stage2(spec);
            drop(fence);
            // Only an error comes back (success is the workload's exec); report it as the init would.
            let e = e.err().unwrap_or_else(|| std::io::Error::other("no exec"));
            eprintln!("berth: container init: {e}");
            crate::security::sys::exit_now(1)
        }
        nix::unistd::ForkResult::Parent { child } => {
            // Only the second stage may hold the fence open.
            drop(fence);
            child
        }
    };
    crate::userns::report_pid(pid_pipe, u32::try_from(child.as_raw()).unwrap_or_default())?;
    use nix::sys::wait::WaitStatus;
    let code = loop {
        match nix::sys::wait::waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => break code,
            Ok(WaitStatus::Signaled(_, sig, _)) => break 128 + sig as i32,
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(std::io::Error::other(format!("waiting for the workload: {e}"))),
        }
    };
    std::process::exit(code);
}

/// The second stage: PID 1 of the container's PID namespace, root of its user namespace, forked by the
/// first in the root it built (its working directory). `/proc`, the hostname, `pivot_root`, the walls,
/// and the workload; returns only on failure.
fn stage2(spec: &ContainerSpec) -> std::io::Result<()> {
    if spec.tty {
        take_controlling_terminal()?;
    }
    // The root the first stage built came into this namespace locked to its parent (it was made by a
    // more privileged one), and a locked mount cannot be pivoted to: bind it onto itself, as runc does,
    // and step into the new mount (through the parent directory: `.` stays on the one below).
    mount(
        Some("."),
        ".",
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(err("binding the root onto itself"))?;
    nix::unistd::chdir("../merged").map_err(err("entering the bound root"))?;
    // This PID namespace's /proc, mounted while the host's is still visible (the kernel lets a user
    // namespace mount proc only then).
    mount(
        Some("proc"),
        "proc",
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(err("/proc"))?;
    nix::unistd::sethostname(&spec.hostname).map_err(err("hostname"))?;
    nix::unistd::pivot_root(".", ".").map_err(err("pivot_root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(err("detaching the old root"))?;
    nix::unistd::chdir("/").map_err(err("chdir /"))?;
    if !spec.domainname.is_empty() {
        std::fs::write("/proc/sys/kernel/domainname", &spec.domainname)?;
    }
    exec_workload(spec)
}

/// Sysctls, masked and read-only paths, read-only root; then identity and privileges, then the
/// workload (in the new root).
fn exec_workload(spec: &ContainerSpec) -> std::io::Result<()> {
    crate::security::apply::filesystem(&spec.security)?;
    let programs = crate::security::apply::seccomp_programs(&spec.security)?;
    let (program, args) = spec.argv.split_first().ok_or_else(|| {
        std::io::Error::other("no command: the image has no Entrypoint/Cmd and the container no command")
    })?;
    let mut cmd = Command::new(resolve(program, &spec.env));
    cmd.args(args).env_clear().current_dir(&spec.cwd);
    // A terminal gets TERM=xterm unless the container sets TERM (containerd's default for tty processes).
    if spec.tty && !spec.env.iter().any(|kv| kv.starts_with("TERM=")) {
        cmd.env("TERM", "xterm");
    }
    for kv in &spec.env {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    crate::security::apply::privileges(&spec.security, spec.uid, spec.gid, &programs)?;
    let e = cmd.exec();
    Err(std::io::Error::other(format!("exec {program}: {e}")))
}

/// The container's mount namespace and its mounts below `<dir>/merged`, returned: every mount
/// private, the overlay root, `/proc` (not for a user namespace: its second stage mounts it), `/dev`,
/// `/sys`, the `/etc` files and the binds. `idmapped` carries a user-namespaced pod's id-mapped root
/// layer and bind sources (in the order of `spec.binds`), which replace the paths.
fn build_root(
    dir: &Path,
    spec: &ContainerSpec,
    idmapped: Option<(std::os::fd::OwnedFd, Vec<std::os::fd::OwnedFd>)>,
) -> std::io::Result<PathBuf> {
    unshare(CloneFlags::CLONE_NEWNS).map_err(err("mount namespace"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(err("making mounts private"))?;
    let privileged = spec.security.privileged;
    // Unprivileged, every filesystem the container can write is `nodev`: with the device cgroup (v1)
    // this keeps a device node made with mknod from being opened (see ARCHITECTURE.md).
    let nodev = if privileged {
        MsFlags::empty()
    } else {
        MsFlags::MS_NODEV
    };
    let root = dir.join("merged");
    let (mut lower, mut trees) = (spec.rootfs.clone(), Vec::new());
    if let Some((rootfs, binds)) = idmapped {
        // The image's layer, id-mapped to the pod's root, as the overlay's lower layer.
        lower = dir.join("lower");
        attach(&rootfs, &lower)?;
        trees = binds;
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        dir.join("upper").display(),
        dir.join("work").display()
    );
    mount(
        Some("overlay"),
        &root,
        Some("overlay"),
        nodev,
        Some(opts.as_str()),
    )
    .map_err(err("overlay root"))?;
    // Kernel filesystems.
    let proc_dir = root.join("proc");
    std::fs::create_dir_all(&proc_dir)?;
    if spec.id_map.is_none() {
        mount(
            Some("proc"),
            &proc_dir,
            Some("proc"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        )
        .map_err(err("/proc"))?;
    }
    let dev = root.join("dev");
    std::fs::create_dir_all(&dev)?;
    // In a user namespace /dev belongs to the pod's root.
    let dev_opts = match &spec.id_map {
        Some(m) => format!("mode=755,size=65536k,uid={0},gid={0}", m.host),
        None => "mode=755,size=65536k".to_string(),
    };
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | nodev,
        Some(dev_opts.as_str()),
    )
    .map_err(err("/dev"))?;
    if privileged {
        // The host's devices, as containerd gives a privileged container (nodes, not mounts).
        for (rel, mode, rdev, uid, gid) in crate::security::apply::host_devices() {
            let target = dev.join(&rel);
            if let Some(p) = target.parent() {
                std::fs::create_dir_all(p)?;
            }
            let kind = nix::sys::stat::SFlag::from_bits_truncate(mode & libc::S_IFMT);
            let perm = nix::sys::stat::Mode::from_bits_truncate(mode & 0o7777);
            if nix::sys::stat::mknod(&target, kind, perm, rdev).is_ok() {
                let _ = std::os::unix::fs::lchown(&target, Some(uid), Some(gid));
            }
        }
    } else {
        // The standard devices, bound from the host (each bind keeps the host mount's flags, so these
        // work on the `nodev` tmpfs).
        for d in ["null", "zero", "full", "random", "urandom", "tty"] {
            let host = Path::new("/dev").join(d);
            if host.exists() {
                bind(&host, &dev.join(d), false)?;
            }
        }
    }
    std::fs::create_dir_all(dev.join("shm"))?;
    mount(
        Some("shm"),
        &dev.join("shm"),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777,size=65536k"),
    )
    .map_err(err("/dev/shm"))?;
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let _ = std::os::unix::fs::symlink(to, dev.join(link));
    }
    // A sysfs of its own (its network namespace's view, no host submounts such as cgroups or
    // debugfs), read-only unless privileged, as runc mounts it.
    let sys = root.join("sys");
    std::fs::create_dir_all(&sys)?;
    let mut sys_flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if !privileged {
        sys_flags |= MsFlags::MS_RDONLY;
    }
    if mount(Some("sysfs"), &sys, Some("sysfs"), sys_flags, None::<&str>).is_err()
        && bind(Path::new("/sys"), &sys, true).is_err()
    {
        tracing::debug!("no /sys in the container");
    }
    // /etc files, then volumes.
    for (name, content) in [
        ("hosts", &spec.hosts),
        ("hostname", &format!("{}\n", spec.hostname)),
        ("resolv.conf", &spec.resolv_conf),
    ] {
        let src = dir.join(format!("etc-{name}"));
        std::fs::write(&src, content)?;
        let target = inside_root(&root, &format!("/etc/{name}"))?;
        bind(&src, &target, false)?;
    }
    for (i, b) in spec.binds.iter().enumerate() {
        let target = inside_root(&root, &b.target)?;
        match trees.get(i) {
            // Id-mapped (user namespace): read-only and nodev were set on the tree by the shim.
            Some(tree) => {
                mount_point(&target, &b.source)?;
                attach(tree, &target)?;
            }
            None => bind_with(&b.source, &target, b.read_only, !privileged)?,
        }
    }
    Ok(root)
}

/// `program` looked up in the container's `PATH` (as execvp would) when it has no slash.
fn resolve(program: &str, env: &[String]) -> PathBuf {
    if program.contains('/') {
        return PathBuf::from(program);
    }
    let path = env
        .iter()
        .find_map(|kv| kv.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    path.split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(program))
}

/// `berth container-exec [--tty] <dir> <argv…>`: run a command inside a running container (probes, and later
/// `kubectl exec`): join the workload's mount, UTS, IPC and PID namespaces (`setns`, as `nsenter` and
/// runc's exec do; joining the mount namespace moves root and cwd to the container's root), then run
/// `argv` with the container's environment, user and working directory, and exit with its status. With
/// `tty`, stdin must be a terminal, which becomes the command's controlling terminal.
///
/// # Errors
/// When the container does not run or a namespace cannot be joined.
pub fn exec_main(dir: &Path, argv: &[String], tty: bool) -> std::io::Result<i32> {
    let State::Running { pid, .. } = state(dir) else {
        return Err(std::io::Error::other("container is not running"));
    };
    // Into the container's cgroups first (limits, and the device rules), as runc exec joins them.
    crate::cgroup::join(&pid.to_string(), std::process::id());
    if tty {
        // stdin is a pseudo-terminal's slave (the kubelet API allocated it), before the container's /proc
        // replaces ours.
        take_controlling_terminal()?;
    }
    let spec: ContainerSpec = serde_json::from_slice(&std::fs::read(dir.join("spec.json"))?)
        .map_err(|e| std::io::Error::other(format!("spec.json: {e}")))?;
    // Open every namespace first (after joining the mount namespace /proc is the container's).
    let open = |ns: &str| std::fs::File::open(format!("/proc/{pid}/ns/{ns}"));
    let (ipc, uts, pidns, mnt) = (open("ipc")?, open("uts")?, open("pid")?, open("mnt")?);
    let net = open("net")?;
    nix::sched::setns(&net, CloneFlags::CLONE_NEWNET).map_err(err("joining net"))?;
    // A pod in a user namespace: into it first (the others belong to it), as its root until the
    // container's user is applied below.
    if spec.id_map.is_some() {
        let user = open("user")?;
        nix::sched::setns(&user, CloneFlags::CLONE_NEWUSER).map_err(err("joining user"))?;
        let zero = nix::unistd::Gid::from_raw(0);
        nix::unistd::setresgid(zero, zero, zero).map_err(err("setresgid 0"))?;
        let zero = nix::unistd::Uid::from_raw(0);
        nix::unistd::setresuid(zero, zero, zero).map_err(err("setresuid 0"))?;
    }
    nix::sched::setns(&ipc, CloneFlags::CLONE_NEWIPC).map_err(err("joining ipc"))?;
    nix::sched::setns(&uts, CloneFlags::CLONE_NEWUTS).map_err(err("joining uts"))?;
    nix::sched::setns(&pidns, CloneFlags::CLONE_NEWPID).map_err(err("joining pid"))?;
    nix::sched::setns(&mnt, CloneFlags::CLONE_NEWNS).map_err(err("joining mnt"))?;
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| std::io::Error::other("no command"))?;
    let mut cmd = Command::new(resolve(program, &spec.env));
    cmd.args(args).env_clear().current_dir(&spec.cwd);
    // A terminal gets TERM=xterm unless the container sets TERM (containerd's default for tty processes).
    if tty && !spec.env.iter().any(|kv| kv.starts_with("TERM=")) {
        cmd.env("TERM", "xterm");
    }
    for kv in &spec.env {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    // The container's user, capabilities, no_new_privs and seccomp filter, on this process (the
    // command inherits them), as runc exec gives an exec'd process the container's.
    let programs = crate::security::apply::seccomp_programs(&spec.security)?;
    crate::security::apply::privileges(&spec.security, spec.uid, spec.gid, &programs)?;
    let status = cmd.status()?;
    Ok(status.code().unwrap_or_else(|| {
        use std::os::unix::process::ExitStatusExt;
        128 + status.signal().unwrap_or(9)
    }))
}
