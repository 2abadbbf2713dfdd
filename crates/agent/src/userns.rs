//! Pods in user namespaces (`spec.hostUsers: false`), as the kubelet and containerd run them:
//!
//! - **Allocation** ([`allocate`], upstream `pkg/kubelet/userns/userns_manager.go`): each such pod gets
//!   65,536 host ids of its own, root inside mapped to the first. Ranges are 65,536-aligned above the
//!   host's own first 65,536 ids (slot `n` is host ids `65536·n … 65536·n + 65535`, `n ≥ 1`); the slot is
//!   recorded in the pod's directory (`userns`), so a restart of the agent keeps every running pod's
//!   mapping, and is free again when the pod's directory is removed.
//! - **The namespace and id-mapped mounts** ([`prepare`], run by the shim as host root, as containerd does
//!   before runc starts): a short-lived holder (a forked child of the shim, no `exec`) unshares a user namespace, the shim writes its
//!   `uid_map`/`gid_map` and keeps a descriptor of it, then clones the image's root filesystem and every
//!   volume as detached mount trees, id-mapped through that namespace (`open_tree(OPEN_TREE_CLONE)` +
//!   `mount_setattr(MOUNT_ATTR_IDMAP)`), so files owned by root on disk show as the pod's root inside,
//!   and files the pod writes to a volume are stored with the ids it sees. The descriptors pass to the
//!   container's init across `exec` ([`Handoff`]).
//! - The init (see `crate::runtime`) builds the container's mounts as host root, then joins the user
//!   namespace, makes the UTS, IPC, PID and mount namespaces inside it and starts the workload's
//!   process there.

use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

/// Host ids per pod (upstream's `userNsLength`).
pub const IDS_PER_POD: u32 = 65_536;
/// The highest slot: host ids stay below 2³².
const MAX_SLOT: u32 = u32::MAX / IDS_PER_POD - 1;

/// One pod's mapping: ids `0 … size-1` inside are host ids `host … host+size-1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    /// The first host id (root inside).
    pub host: u32,
    /// How many ids.
    pub size: u32,
}

impl IdMap {
    /// The host id of id `inside`.
    #[must_use]
    pub fn to_host(&self, inside: u32) -> u32 {
        self.host + inside.min(self.size - 1)
    }
}

/// Whether this kernel can run a pod in a user namespace (user namespaces enabled); the filesystem
/// checks happen at the mounts, with their own errors.
///
/// # Errors
/// A message for the pod's `CreateContainerConfigError`.
pub fn supported() -> Result<(), String> {
    let max = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    match max {
        Some(0) => Err(
            "hostUsers: false: user namespaces are disabled on this node (user.max_user_namespaces = 0)"
                .into(),
        ),
        None if !Path::new("/proc/self/ns/user").exists() => {
            Err("hostUsers: false: this node's kernel has no user namespaces".into())
        }
        _ => Ok(()),
    }
}

/// The mapping of the pod whose directory is `pod_dir`, below `pods_root` (every pod's directory):
/// the one recorded there, else the lowest slot no other pod directory records, recorded now.
///
/// # Errors
/// When the record cannot be written, or every slot is taken.
pub fn allocate(pods_root: &Path, pod_dir: &Path) -> std::io::Result<IdMap> {
    let record = pod_dir.join("userns");
    if let Some(m) = read(&record) {
        return Ok(m);
    }
    let mut taken = std::collections::HashSet::new();
    if let Ok(rd) = std::fs::read_dir(pods_root) {
        for e in rd.flatten() {
            if let Some(m) = read(&e.path().join("userns")) {
                taken.insert(m.host / IDS_PER_POD);
            }
        }
    }
    let slot = (1..=MAX_SLOT)
        .find(|s| !taken.contains(s))
        .ok_or_else(|| std::io::Error::other("no free user namespace range on this node"))?;
    let m = IdMap {
        host: slot * IDS_PER_POD,
        size: IDS_PER_POD,
    };
    std::fs::create_dir_all(pod_dir)?;
    let tmp = record.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(&m).unwrap_or_default())?;
    std::fs::rename(tmp, &record)?;
    Ok(m)
}

fn read(record: &Path) -> Option<IdMap> {
    serde_json::from_slice(&std::fs::read(record).ok()?).ok()
}

/// The environment variable naming the descriptors a shim hands to the container's init.
pub const HANDOFF_ENV: &str = "BERTH_USERNS_HANDOFF";

/// What the shim hands to the init across `exec`: the user namespace, the id-mapped root filesystem and
/// one id-mapped tree per bind of the spec (in its order), and the pipe on which the init reports the
/// workload's host pid.
pub struct Handoff {
    /// The user namespace.
    pub userns: OwnedFd,
    /// The image's root filesystem, id-mapped (the overlay's lower layer).
    pub rootfs: OwnedFd,
    /// Each bind's source, id-mapped.
    pub binds: Vec<OwnedFd>,
    /// Where the init writes the workload's pid.
    pub pid_pipe: OwnedFd,
}

impl Handoff {
    /// The value of [`HANDOFF_ENV`]: descriptor numbers, `userns,rootfs,pid_pipe[,bind…]`.
    #[must_use]
    pub fn env_value(&self) -> String {
        let mut v = vec![
            self.userns.as_raw_fd(),
            self.rootfs.as_raw_fd(),
            self.pid_pipe.as_raw_fd(),
        ];
        v.extend(self.binds.iter().map(AsRawFd::as_raw_fd));
        v.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
    }

    /// The handoff this process inherited, if its environment names one.
    #[must_use]
    pub fn inherited() -> Option<Handoff> {
        let v = std::env::var(HANDOFF_ENV).ok()?;
        let mut fds = v
            .split(',')
            .map(|n| n.parse::<i32>().ok().and_then(crate::security::sys::inherited));
        let (userns, rootfs, pid_pipe) = (fds.next()??, fds.next()??, fds.next()??);
        let binds = fds.collect::<Option<Vec<_>>>()?;
        Some(Handoff {
            userns,
            rootfs,
            binds,
            pid_pipe,
        })
    }
}

/// Keep `fd` open across `exec` (clear `FD_CLOEXEC`).
///
/// # Errors
/// From `fcntl`.
pub(crate) fn keep_across_exec(fd: &OwnedFd) -> std::io::Result<()> {
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()))
        .map(|_| ())
        .map_err(std::io::Error::from)
}

/// Close `fd` on `exec` again (the init's own descriptors must not reach the workload).
///
/// # Errors
/// From `fcntl`.
pub fn close_on_exec(fd: &impl AsFd) -> std::io::Result<()> {
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))
        .map(|_| ())
        .map_err(std::io::Error::from)
}

/// A child that holds a new user namespace while the shim maps it: forked without `exec` (the shim is
/// single-threaded), it unshares the namespace, says so on `ready`, and `_exit`s when `done` reaches
/// end of file (the shim dropped its end, or died). runc's `nsexec` makes its user namespace with a
/// forked child and a sync pipe in the same way.
struct Holder {
    pid: nix::unistd::Pid,
    done: Option<OwnedFd>,
}

impl Holder {
    fn spawn() -> std::io::Result<Holder> {
        use std::io::Read;
        let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from);
        let (ready_r, ready_w) = pipe()?;
        let (done_r, done_w) = pipe()?;
        match crate::security::sys::fork_single_threaded()? {
            nix::unistd::ForkResult::Child => {
                drop((ready_r, done_w));
                let ok = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER).is_ok();
                let _ = std::fs::File::from(ready_w).write_all(if ok { b"1" } else { b"0" });
                let mut sink = [0u8; 1];
                let _ = std::fs::File::from(done_r).read(&mut sink);
                crate::security::sys::exit_now(0)
            }
            nix::unistd::ForkResult::Parent { child } => {
                drop((ready_w, done_r));
                let holder = Holder {
                    pid: child,
                    done: Some(done_w),
                };
                let mut answer = [0u8; 1];
                let n = std::fs::File::from(ready_r).read(&mut answer)?;
                if n != 1 || answer[0] != b'1' {
                    return Err(std::io::Error::other(
                        "unshare(CLONE_NEWUSER) failed in the user namespace holder",
                    ));
                }
                Ok(holder)
            }
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        drop(self.done.take());
        let _ = nix::sys::wait::waitpid(self.pid, None);
    }
}

/// Make the pod's user namespace with `map` and the id-mapped trees of `rootfs` and of `binds`
/// (sources, with their read-only flags); run by the shim as host root. Returns the handoff (its
/// descriptors kept across `exec`) and the read end of the pid pipe.
///
/// # Errors
/// When the namespace cannot be made or mapped, or a tree cannot be id-mapped (a filesystem without
/// id-mapped mount support, a kernel before 5.12): the message names which.
pub fn prepare(map: &IdMap, rootfs: &Path, binds: &[(&Path, bool)]) -> std::io::Result<(Handoff, OwnedFd)> {
    let holder = Holder::spawn()?;
    let result = (|| {
        let proc = format!("/proc/{}", holder.pid);
        let m = format!("0 {} {}\n", map.host, map.size);
        std::fs::write(format!("{proc}/uid_map"), &m)
            .map_err(|e| std::io::Error::other(format!("writing uid_map: {e}")))?;
        std::fs::write(format!("{proc}/gid_map"), &m)
            .map_err(|e| std::io::Error::other(format!("writing gid_map: {e}")))?;
        let userns: OwnedFd = std::fs::File::open(format!("{proc}/ns/user"))?.into();
        let tree = |path: &Path, extra: u64| -> std::io::Result<OwnedFd> {
            let fd = rustix::mount::open_tree(
                rustix::fs::CWD,
                path,
                rustix::mount::OpenTreeFlags::OPEN_TREE_CLONE
                    | rustix::mount::OpenTreeFlags::OPEN_TREE_CLOEXEC
                    | rustix::mount::OpenTreeFlags::AT_RECURSIVE,
            )
            .map_err(|e| std::io::Error::other(format!("open_tree {}: {e}", path.display())))?;
            crate::security::sys::idmap_tree(fd.as_fd(), userns.as_fd(), extra).map_err(|e| {
                std::io::Error::other(format!(
                    "id-mapped mount of {}: {e} (the filesystem or kernel cannot id-map mounts)",
                    path.display()
                ))
            })?;
            keep_across_exec(&fd)?;
            Ok(fd)
        };
        let rootfs = tree(rootfs, 0)?;
        let mut trees = Vec::new();
        for (source, read_only) in binds {
            let mut extra = crate::security::sys::MOUNT_ATTR_NODEV;
            if *read_only {
                extra |= crate::security::sys::MOUNT_ATTR_RDONLY;
            }
            trees.push(tree(source, extra)?);
        }
        keep_across_exec(&userns)?;
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
        keep_across_exec(&w)?;
        Ok((
            Handoff {
                userns,
                rootfs,
                binds: trees,
                pid_pipe: w,
            },
            r,
        ))
    })();
    drop(holder);
    result
}

/// Give the container's writable layer to the pod's root (the overlay's upper and work directories),
/// as containerd chowns a snapshot for a user namespace; already-owned directories are left as they
/// are.
///
/// # Errors
/// From `chown`.
pub fn own_layer(dir: &Path, map: &IdMap) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    for d in ["upper", "work"] {
        let p = dir.join(d);
        if std::fs::metadata(&p).is_ok_and(|m| m.uid() != map.host) {
            std::os::unix::fs::chown(&p, Some(map.host), Some(map.host))?;
        }
    }
    Ok(())
}

/// Report the workload's pid on the pipe.
///
/// # Errors
/// From the write.
pub fn report_pid(pipe: OwnedFd, pid: u32) -> std::io::Result<()> {
    let mut f = std::fs::File::from(pipe);
    f.write_all(format!("{pid}\n").as_bytes())
}

/// Read the workload's pid from the pipe (`None` if the init ended first).
#[must_use]
pub fn read_pid(pipe: OwnedFd) -> Option<u32> {
    let mut line = String::new();
    std::io::BufReader::new(std::fs::File::from(pipe))
        .read_line(&mut line)
        .ok()?;
    line.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_the_lowest_free_and_stay_with_their_pod() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let a = allocate(root, &root.join("a")).unwrap();
        let b = allocate(root, &root.join("b")).unwrap();
        assert_eq!(
            a,
            IdMap {
                host: 65_536,
                size: 65_536
            }
        );
        assert_eq!(b.host, 131_072);
        assert_eq!(
            allocate(root, &root.join("a")).unwrap(),
            a,
            "kept across calls (restarts)"
        );
        std::fs::remove_dir_all(root.join("a")).unwrap();
        let c = allocate(root, &root.join("c")).unwrap();
        assert_eq!(c, a, "a removed pod's slot is free again");
        assert_eq!(c.to_host(0), 65_536);
        assert_eq!(c.to_host(1000), 66_536);
    }
}
