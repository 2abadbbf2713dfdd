//! Applying a [`Security`] inside the container's namespaces, in runc's order (`libcontainer`
//! `rootfs_linux.go` then `init_linux.go` `finalizeNamespace`): after `pivot_root`, [`filesystem`]
//! (sysctls, masked and read-only paths, read-only root); last before `exec`, [`privileges`] (bounding
//! set, seccomp while still privileged unless no_new_privs, groups and ids, capability sets,
//! no_new_privs, then seccomp when no_new_privs).

use super::{Security, capability_number, sys};
use nix::mount::{MsFlags, mount};
use nix::unistd::{Gid, Uid};
use rustix::thread::{CapabilitySet, CapabilitySets};
use std::path::Path;

fn err(what: &str) -> impl FnOnce(nix::Error) -> std::io::Error + '_ {
    move |e| std::io::Error::other(format!("{what}: {e}"))
}

/// Sysctls, masked paths, read-only paths and the read-only root, inside the new root (after
/// `pivot_root`, with the container's `/proc` and `/sys` mounted).
///
/// # Errors
/// A sysctl that cannot be written, a mount that fails.
pub fn filesystem(s: &Security) -> std::io::Result<()> {
    for (name, value) in &s.sysctls {
        let path = Path::new("/proc/sys").join(name.replace('.', "/"));
        std::fs::write(&path, value)
            .map_err(|e| std::io::Error::other(format!("sysctl {name}={value}: {e}")))?;
    }
    // runc's maskPath: a directory gets an empty read-only tmpfs, a file /dev/null bound over it.
    for p in &s.masked_paths {
        let path = Path::new(p);
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => mount(
                Some("tmpfs"),
                path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .map_err(err("masking a directory"))?,
            Ok(_) => mount(
                Some("/dev/null"),
                path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(err("masking a file"))?,
            Err(_) => {}
        }
    }
    // runc's readonlyPath: bound onto itself, then remounted read-only.
    for p in &s.readonly_paths {
        let path = Path::new(p);
        if std::fs::symlink_metadata(path).is_err() {
            continue;
        }
        mount(
            Some(path),
            path,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(err("read-only path"))?;
        mount(
            None::<&str>,
            path,
            None::<&str>,
            MsFlags::MS_BIND
                | MsFlags::MS_REMOUNT
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC,
            None::<&str>,
        )
        .map_err(err("read-only path"))?;
    }
    if s.readonly_rootfs {
        let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        if !s.privileged {
            flags |= MsFlags::MS_NODEV;
        }
        mount(None::<&str>, "/", None::<&str>, flags, None::<&str>).map_err(err("read-only root"))?;
    }
    Ok(())
}

/// Compiled seccomp programs of `s` (none when unconfined).
///
/// # Errors
/// When the profile does not compile.
pub fn seccomp_programs(s: &Security) -> std::io::Result<Vec<seccompiler::BpfProgram>> {
    match &s.seccomp {
        None => Ok(Vec::new()),
        Some(p) => p.compile().map_err(std::io::Error::other),
    }
}

fn install_all(programs: &[seccompiler::BpfProgram]) -> std::io::Result<()> {
    for p in programs {
        sys::install(p).map_err(|e| std::io::Error::other(format!("seccomp: {e}")))?;
    }
    Ok(())
}

/// Become the container's user with its capabilities, no_new_privs and seccomp filter; the caller
/// `exec`s next. `programs` are [`seccomp_programs`] (compiled before, so nothing allocates between
/// the filter and the exec).
///
/// # Errors
/// A step the kernel refused.
pub fn privileges(
    s: &Security,
    uid: u32,
    gid: u32,
    programs: &[seccompiler::BpfProgram],
) -> std::io::Result<()> {
    let mut keep = CapabilitySet::empty();
    for c in &s.capabilities {
        if let Some(n) = capability_number(c) {
            keep |= CapabilitySet::from_bits_retain(1 << n);
        }
    }
    // Never more than this process has (a host whose root lacks some capability gives a privileged
    // container the rest, as runc would fail to raise them).
    if let Ok(now) = rustix::thread::capabilities(None) {
        keep &= now.permitted;
    }
    // The bounding set first (needs CAP_SETPCAP, which we still have); capabilities this kernel does
    // not know are skipped.
    for n in 0..64u32 {
        let cap = CapabilitySet::from_bits_retain(1 << n);
        if keep.contains(cap) {
            continue;
        }
        match rustix::thread::capability_is_in_bounding_set(cap) {
            Ok(true) => rustix::thread::remove_capability_from_bounding_set(cap)
                .map_err(|e| std::io::Error::other(format!("dropping capability {n}: {e}")))?,
            Ok(false) => {}
            Err(_) => break,
        }
    }
    // Without no_new_privs the kernel wants CAP_SYS_ADMIN to install a filter: now, as runc does (the
    // steps below are allowed by the default profile).
    if !s.no_new_privs {
        install_all(programs)?;
    }
    let _ = rustix::thread::clear_ambient_capability_set();
    let mut groups: Vec<Gid> = s.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    if groups.is_empty() {
        groups.push(Gid::from_raw(gid));
    }
    nix::unistd::setgroups(&groups).map_err(err("setgroups"))?;
    nix::unistd::setgid(Gid::from_raw(gid)).map_err(err("setgid"))?;
    nix::unistd::setuid(Uid::from_raw(uid)).map_err(err("setuid"))?;
    // Root keeps the container's capabilities in its permitted and effective sets (and so after exec,
    // where the bounding set caps them); another user has lost them at setuid and gets none after exec,
    // as under runc without ambient capabilities.
    let sets = if uid == 0 {
        CapabilitySets {
            effective: keep,
            permitted: keep,
            inheritable: CapabilitySet::empty(),
        }
    } else {
        CapabilitySets {
            effective: CapabilitySet::empty(),
            permitted: CapabilitySet::empty(),
            inheritable: CapabilitySet::empty(),
        }
    };
    rustix::thread::set_capabilities(None, sets)
        .map_err(|e| std::io::Error::other(format!("capset: {e}")))?;
    if s.no_new_privs {
        rustix::thread::set_no_new_privs(true)
            .map_err(|e| std::io::Error::other(format!("no_new_privs: {e}")))?;
        install_all(programs)?;
    }
    Ok(())
}

/// The host's device nodes under `/dev` (what a privileged container gets, containerd's
/// `HostDevices`): path relative to `/dev`, mode (type and permissions), device number, owner.
pub fn host_devices() -> Vec<(std::path::PathBuf, u32, u64, u32, u32)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut out = Vec::new();
    let mut stack = vec![std::path::PathBuf::from("/dev")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = e.path();
            let Ok(m) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let ft = m.file_type();
            let rel = path.strip_prefix("/dev").unwrap_or(&path).to_path_buf();
            if ft.is_dir() {
                // The container has its own pts, shm and mqueue.
                if !matches!(
                    rel.to_str(),
                    Some("pts" | "shm" | "mqueue" | ".lxc" | ".lxd-mounts")
                ) {
                    stack.push(path);
                }
            } else if ft.is_char_device() || ft.is_block_device() {
                out.push((rel, m.mode(), m.rdev(), m.uid(), m.gid()));
            }
        }
    }
    out
}

/// Give a volume to `fs_group`, as the kubelet's `SetVolumeOwnership` (`pkg/volume/volume_linux.go`):
/// every file's group becomes `fs_group` and gains read-write (read-only volumes: read) for the group,
/// directories also group-execute and set-group-ID; symlinks only change group. With
/// `on_root_mismatch` (`fsGroupChangePolicy: OnRootMismatch`) nothing is done when the volume's root
/// already has that group and those bits.
///
/// # Errors
/// A file that cannot be changed.
pub fn volume_ownership(
    root: &Path,
    fs_group: u32,
    read_only: bool,
    on_root_mismatch: bool,
) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mask: u32 = if read_only { 0o440 } else { 0o660 };
    if on_root_mismatch
        && let Ok(m) = std::fs::metadata(root)
        && m.gid() == fs_group
        && m.mode() & mask == mask
        && m.mode() & 0o2000 != 0
    {
        return Ok(());
    }
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let m = std::fs::symlink_metadata(&path)?;
        std::os::unix::fs::lchown(&path, None, Some(fs_group))?;
        if m.file_type().is_symlink() {
            continue;
        }
        let mut mode = m.mode() & 0o7777 | mask;
        if m.is_dir() {
            mode |= 0o2000 | 0o110;
            for e in std::fs::read_dir(&path)? {
                stack.push(e?.path());
            }
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}
