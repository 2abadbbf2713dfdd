//! The system calls without a safe wrapper in nix or rustix, and the one adoption of an inherited file
//! descriptor:
//! - installing a seccomp filter: seccompiler's own `apply_filter` always sets no_new_privs first, which
//!   upstream sets only for `allowPrivilegeEscalation: false`; runc installs the filter without it while
//!   the process still has `CAP_SYS_ADMIN`, and so does this;
//! - `mount_setattr(2)` with `MOUNT_ATTR_IDMAP`, for the id-mapped mounts of a pod in a user namespace;
//! - taking ownership of a descriptor number a parent passed through `exec` (the shim to the
//!   container's init);
//! - `fork(2)` without `exec` in the single-threaded shim and init of a pod in a user namespace (the
//!   namespace holder and the container's PID 1), as runc's `nsexec` clones its children: a fresh
//!   `exec` of the 220 MB `berth` costs milliseconds per start;
//! - `bpf(2)`, to load and attach the cgroup v2 device program (`crate::devicefilter`).
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `struct mount_attr` (`linux/mount.h`).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `MOUNT_ATTR_RDONLY`.
pub(crate) const MOUNT_ATTR_RDONLY: u64 = 0x1;
/// `MOUNT_ATTR_NODEV`.
pub(crate) const MOUNT_ATTR_NODEV: u64 = 0x4;
/// `MOUNT_ATTR_IDMAP`.
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// `mount_setattr(tree, "", AT_EMPTY_PATH | AT_RECURSIVE, {attr_set: IDMAP | extra, userns_fd})`: make the
/// detached mount tree `tree` (from `open_tree(OPEN_TREE_CLONE)`) id-mapped through the user namespace
/// `userns` (files owned by id `k` on disk show as the namespace's mapping of `k`), plus the `extra`
/// `MOUNT_ATTR_*` flags.
///
/// # Errors
/// The kernel's error: `EINVAL` where the filesystem cannot be id-mapped (or on kernels before 5.12),
/// `EPERM` without `CAP_SYS_ADMIN`.
pub(crate) fn idmap_tree(tree: BorrowedFd<'_>, userns: BorrowedFd<'_>, extra: u64) -> std::io::Result<()> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP | extra,
        attr_clr: 0,
        propagation: 0,
        userns_fd: u64::try_from(userns.as_raw_fd()).map_err(|_| std::io::Error::other("bad fd"))?,
    };
    let empty = c"";
    // SAFETY: `tree` and `userns` are open descriptors borrowed for the call; `empty` is a valid C
    // string and `attr` a valid `struct mount_attr` of the size passed, both outliving the call, which
    // only reads them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Own the descriptor `n` that this process inherited through `exec`, as its parent said in the
/// environment; `None` if `n` is not an open descriptor.
pub(crate) fn inherited(n: i32) -> Option<OwnedFd> {
    if n < 3
        || nix::fcntl::fcntl(
            // SAFETY: only used for this F_GETFD probe, which reads no memory.
            unsafe { BorrowedFd::borrow_raw(n) },
            nix::fcntl::FcntlArg::F_GETFD,
        )
        .is_err()
    {
        return None;
    }
    // SAFETY: `n` is open (checked above) and was passed to this process by its parent for it alone:
    // nothing else in this single-threaded process owns or closes it.
    Some(unsafe { OwnedFd::from_raw_fd(n) })
}

/// `struct sock_fprog` (`linux/filter.h`).
#[repr(C)]
struct SockFprog {
    len: libc::c_ushort,
    filter: *const seccompiler::sock_filter,
}

/// `seccomp(SECCOMP_SET_MODE_FILTER, 0, prog)` for the calling thread.
///
/// # Errors
/// The kernel's error: `EACCES` without `CAP_SYS_ADMIN` and without no_new_privs, `EINVAL` for a bad
/// or empty program.
pub(super) fn install(program: &[seccompiler::sock_filter]) -> std::io::Result<()> {
    let len = libc::c_ushort::try_from(program.len())
        .map_err(|_| std::io::Error::other("seccomp program too long"))?;
    if len == 0 {
        return Err(std::io::Error::other("empty seccomp program"));
    }
    let prog = SockFprog {
        len,
        filter: program.as_ptr(),
    };
    // SAFETY: `prog` points at `len` initialised `sock_filter`s that outlive the call; the kernel only
    // copies them (copy_from_user) and keeps no reference to this memory.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0 as libc::c_ulong,
            &prog as *const SockFprog,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `fork(2)` of this process, which must have exactly one thread (the container shim and init: no
/// runtime, no helper threads); refused otherwise, since a forked child of a multi-threaded process may
/// find a lock (the allocator's, stdio's) held forever by a thread that no longer exists.
///
/// # Errors
/// `Other` when the process has more than one thread; the kernel's error from `fork`.
pub(crate) fn fork_single_threaded() -> std::io::Result<nix::unistd::ForkResult> {
    let threads = std::fs::read_dir("/proc/self/task")?.count();
    if threads != 1 {
        return Err(std::io::Error::other(format!(
            "fork refused: this process has {threads} threads"
        )));
    }
    // SAFETY: the process has one thread (checked just above, and nothing between the check and the
    // call starts one), so the child's copy of every lock and of the heap is consistent; callers run
    // ordinary Rust in the child and leave it through `exec` or `_exit`.
    unsafe { nix::unistd::fork() }.map_err(std::io::Error::from)
}

/// `_exit(2)`: end a forked child at once, without running the parent's `atexit` handlers or flushing
/// stdio buffers it copied from the parent.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` takes no pointers and never returns; it is async-signal-safe and valid in any state.
    unsafe { libc::_exit(code) }
}

/// `bpf(2)` with `attr` as a zero-padded `union bpf_attr` (the kernel takes a shorter attr when the rest
/// would be zero); the commands used read the attr and write nothing back. Returns the call's result.
fn bpf(cmd: libc::c_long, attr: &[u64]) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, initialised buffer of the size given for the duration of the call, and
    // any pointers inside it (program, license) are the caller's borrowed, live buffers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_ptr(),
            std::mem::size_of_val(attr) as libc::c_uint,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `BPF_PROG_LOAD` of a program of `prog_type`; `insns` (`struct bpf_insn` array) and `license` stay
/// borrowed for the call. Returns the program's descriptor.
pub(crate) fn bpf_prog_load(
    prog_type: u32,
    insns: &[u8],
    license: &std::ffi::CStr,
) -> std::io::Result<OwnedFd> {
    const BPF_PROG_LOAD: libc::c_long = 5;
    // prog_type | insn_cnt, insns, license, log_level | log_size, log_buf, kern_version | prog_flags.
    let attr = [
        u64::from(prog_type) | (((insns.len() / 8) as u64) << 32),
        insns.as_ptr() as u64,
        license.as_ptr() as u64,
        0,
        0,
        0,
    ];
    let fd = bpf(BPF_PROG_LOAD, &attr)?;
    // SAFETY: a successful BPF_PROG_LOAD returns a new descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `BPF_PROG_ATTACH` of `prog` to `target` (a cgroup directory) as `attach_type` with `flags`.
pub(crate) fn bpf_prog_attach(
    target: BorrowedFd<'_>,
    prog: BorrowedFd<'_>,
    attach_type: u32,
    flags: u32,
) -> std::io::Result<()> {
    const BPF_PROG_ATTACH: libc::c_long = 8;
    // target_fd | attach_bpf_fd, attach_type | attach_flags, replace_bpf_fd.
    let attr = [
        u64::from(target.as_raw_fd() as u32) | (u64::from(prog.as_raw_fd() as u32) << 32),
        u64::from(attach_type) | (u64::from(flags) << 32),
        0,
    ];
    bpf(BPF_PROG_ATTACH, &attr).map(drop)
}
