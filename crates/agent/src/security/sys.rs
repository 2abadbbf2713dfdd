//! The one system call without a safe wrapper in nix or rustix: installing a seccomp filter.
//! seccompiler's own `apply_filter` always sets no_new_privs first, which upstream sets only for
//! `allowPrivilegeEscalation: false`; runc installs the filter without it while the process still has
//! `CAP_SYS_ADMIN`, and so does this.
#![allow(unsafe_code)]

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
