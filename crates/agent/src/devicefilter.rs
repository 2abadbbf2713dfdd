//! Device rules on cgroup v2: a `BPF_PROG_TYPE_CGROUP_DEVICE` program attached to the container's
//! cgroup in the unified hierarchy, as runc's `libcontainer/cgroups/devices` (`devicefilter`) builds it
//! where there is no v1 `devices` controller. The kernel runs it on every `open`/`mknod` of a device
//! node by a process of that cgroup (`devcgroup_check_permission`: the program first, then any v1
//! rules), so on a hybrid host both apply.
//!
//! The program allows exactly [`crate::cgroup::DEVICE_RULES`] (one allow-list for v1 and v2) and denies
//! everything else. It is assembled with `rbpf`'s instruction builder. The unit tests run it in `rbpf`'s
//! interpreter against the kernel's context layout and, as root, attach it to a real cgroup;
//! `tests/isolation.rs` runs a `CAP_SYS_ADMIN` pod behind it.

use rbpf::insn_builder::{Arch, BpfCode, Cond, Instruction, IntoBytes, MemSize, Source};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

/// `BPF_DEVCG_DEV_BLOCK` / `BPF_DEVCG_DEV_CHAR` (`include/uapi/linux/bpf.h`), the low 16 bits of
/// `bpf_cgroup_dev_ctx.access_type`.
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
/// `BPF_DEVCG_ACC_MKNOD | READ | WRITE`, the high 16 bits of `access_type`.
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;
const ACC_ALL: i32 = ACC_MKNOD | ACC_READ | ACC_WRITE;

/// One allow rule in the v1 syntax `type major:minor access` (`c 1:3 rwm`, `b *:* m`, `a`).
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// [`DEV_CHAR`], [`DEV_BLOCK`], or `None` for any (`a`).
    kind: Option<i32>,
    /// `None` for `*`.
    major: Option<u32>,
    /// `None` for `*`.
    minor: Option<u32>,
    /// `ACC_*` bits.
    access: i32,
}

impl Rule {
    /// Parse one v1 rule (`devices.allow` syntax, `Documentation/admin-guide/cgroup-v1/devices.rst`).
    ///
    /// # Errors
    /// A rule that is not `a` or `<c|b> <major|*>:<minor|*> <r|w|m>+`.
    pub fn parse(s: &str) -> Result<Rule, String> {
        let bad = || format!("device rule {s:?}: want `a` or `<c|b> <major|*>:<minor|*> <rwm>`");
        let mut parts = s.split_whitespace();
        let kind = match parts.next() {
            Some("a") => {
                return Ok(Rule {
                    kind: None,
                    major: None,
                    minor: None,
                    access: ACC_ALL,
                });
            }
            Some("c") => DEV_CHAR,
            Some("b") => DEV_BLOCK,
            _ => return Err(bad()),
        };
        let (maj, min) = parts.next().and_then(|n| n.split_once(':')).ok_or_else(bad)?;
        let num = |n: &str| -> Result<Option<u32>, String> {
            if n == "*" {
                Ok(None)
            } else {
                n.parse().map(Some).map_err(|_| bad())
            }
        };
        let mut access = 0;
        for c in parts.next().ok_or_else(bad)?.chars() {
            access |= match c {
                'r' => ACC_READ,
                'w' => ACC_WRITE,
                'm' => ACC_MKNOD,
                _ => return Err(bad()),
            };
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Rule {
            kind: Some(kind),
            major: num(maj)?,
            minor: num(min)?,
            access,
        })
    }
}

/// The program's bytes (`struct bpf_insn` array) for `rules`: a device is allowed when one rule
/// matches its type, major and minor and grants every access asked for; anything else is denied.
///
/// Registers as runc's filter: r2 = type, r3 = access, r4 = major, r5 = minor (all from the
/// `bpf_cgroup_dev_ctx` in r1: `access_type` at 0, `major` at 4, `minor` at 8); r1 is then scratch.
pub fn program(rules: &[Rule]) -> Vec<u8> {
    let mut p = BpfCode::new();
    p.load_x(MemSize::Word).set_dst(2).set_src(1).set_off(0).push();
    p.bit_and(Source::Imm, Arch::X32)
        .set_dst(2)
        .set_imm(0xffff)
        .push();
    p.load_x(MemSize::Word).set_dst(3).set_src(1).set_off(0).push();
    p.right_shift(Source::Imm, Arch::X32)
        .set_dst(3)
        .set_imm(16)
        .push();
    p.load_x(MemSize::Word).set_dst(4).set_src(1).set_off(4).push();
    p.load_x(MemSize::Word).set_dst(5).set_src(1).set_off(8).push();
    for r in rules {
        // The block's length, so every failed check jumps past its own "allow".
        let checks = [
            r.kind.is_some(),
            r.access != ACC_ALL,
            r.major.is_some(),
            r.minor.is_some(),
        ];
        let len: i16 = checks
            .iter()
            .zip([1, 3, 1, 1])
            .filter(|(on, _)| **on)
            .map(|(_, n)| n)
            .sum::<i16>()
            + 2;
        // Instructions emitted so far in this block; a jump at position `at` skips to `len`.
        let mut at: i16 = 0;
        let skip = |at: i16| len - at - 1;
        if let Some(k) = r.kind {
            p.jump_conditional(Cond::NotEquals, Source::Imm)
                .set_dst(2)
                .set_imm(k)
                .set_off(skip(at))
                .push();
            at += 1;
        }
        if r.access != ACC_ALL {
            // Every access asked for must be granted: (access & granted) == access.
            p.mov(Source::Reg, Arch::X32).set_dst(1).set_src(3).push();
            p.bit_and(Source::Imm, Arch::X32)
                .set_dst(1)
                .set_imm(r.access)
                .push();
            at += 2;
            p.jump_conditional(Cond::NotEquals, Source::Reg)
                .set_dst(1)
                .set_src(3)
                .set_off(skip(at))
                .push();
            at += 1;
        }
        for (reg, want) in [(4, r.major), (5, r.minor)] {
            if let Some(n) = want {
                p.jump_conditional(Cond::NotEquals, Source::Imm)
                    .set_dst(reg)
                    .set_imm(n as i32)
                    .set_off(skip(at))
                    .push();
                at += 1;
            }
        }
        debug_assert_eq!(at + 2, len);
        p.mov(Source::Imm, Arch::X64).set_dst(0).set_imm(1).push();
        p.exit().push();
    }
    p.mov(Source::Imm, Arch::X64).set_dst(0).set_imm(0).push();
    p.exit().push();
    p.into_bytes().to_vec()
}

/// `BERTH_DEVICE_CGROUP=v2` in the agent's environment: use the device program even where a v1
/// `devices` controller exists (hybrid hosts), so the v2 path can be exercised there
/// (`tests/isolation.rs`). Otherwise v1 rules are preferred where they exist, as runc's v1 manager.
pub fn forced() -> bool {
    std::env::var_os("BERTH_DEVICE_CGROUP").is_some_and(|v| v == "v2")
}

/// Load [`program`] of [`crate::cgroup::DEVICE_RULES`] and attach it to the cgroup v2 directory `dir`
/// (`BPF_CGROUP_DEVICE`, `BPF_F_ALLOW_MULTI` as runc, so programs of ancestors still apply too).
/// The attachment lives as long as the cgroup: the returned descriptor may be dropped.
///
/// # Errors
/// When the kernel refuses the program (no `CONFIG_CGROUP_BPF`, not allowed) or the attach; the
/// caller must then not run the container (fail closed).
pub fn attach(dir: &Path) -> std::io::Result<OwnedFd> {
    const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
    const BPF_CGROUP_DEVICE: u32 = 6;
    const BPF_F_ALLOW_MULTI: u32 = 2;
    let rules: Vec<Rule> = crate::cgroup::DEVICE_RULES
        .iter()
        .map(|r| Rule::parse(r).map_err(std::io::Error::other))
        .collect::<Result<_, _>>()?;
    let insns = program(&rules);
    let prog = crate::security::sys::bpf_prog_load(BPF_PROG_TYPE_CGROUP_DEVICE, &insns, c"Apache-2.0")
        .map_err(|e| std::io::Error::new(e.kind(), format!("loading the device program: {e}")))?;
    let cgroup = std::fs::File::open(dir)?;
    crate::security::sys::bpf_prog_attach(cgroup.as_fd(), prog.as_fd(), BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI)
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("attaching the device program to {}: {e}", dir.display()),
            )
        })?;
    Ok(prog)
}

/// This process's cgroup in the unified hierarchy (the `0::` line of `/proc/self/cgroup`).
fn own_cgroup(root: &Path) -> Option<PathBuf> {
    let list = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = list.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(root.join(path.trim_start_matches('/')))
}

/// A container's v2 device cgroup, made by [`enter`].
#[derive(Debug)]
pub struct Entered {
    /// `<unified>/berth/<pod uid>/<container>`, to remove when the container is gone.
    pub dir: PathBuf,
    /// Where this process was.
    back: Option<PathBuf>,
}

impl Entered {
    /// Move this process back to the cgroup it was in before [`enter`] (after the container's init is
    /// spawned: the init and everything it starts stay behind the program).
    pub fn leave(&self) {
        if let Some(back) = &self.back {
            let _ = std::fs::write(back.join("cgroup.procs"), std::process::id().to_string());
        }
    }
}

impl Drop for Entered {
    /// Never leave the shim behind the program (an early error between [`enter`] and the spawn).
    fn drop(&mut self) {
        self.leave();
    }
}

/// Make `<unified>/berth/<rel>`, attach the device program and move this process into it, so the
/// container's init, spawned next, starts behind it. `None` on a host without a unified hierarchy.
///
/// # Errors
/// When the cgroup cannot be made, the program not attached or the process not moved.
pub fn enter(rel: &str) -> std::io::Result<Option<Entered>> {
    let Some(root) = crate::cgroup::unified_root() else {
        return Ok(None);
    };
    let dir = root.join("berth").join(rel);
    std::fs::create_dir_all(&dir).map_err(|e| std::io::Error::other(format!("{}: {e}", dir.display())))?;
    let entered = Entered {
        back: own_cgroup(&root),
        dir,
    };
    let undo = |e: std::io::Error| {
        let _ = std::fs::remove_dir(&entered.dir);
        e
    };
    drop(attach(&entered.dir).map_err(undo)?);
    std::fs::write(entered.dir.join("cgroup.procs"), std::process::id().to_string())
        .map_err(|e| undo(std::io::Error::other(format!("{}: {e}", entered.dir.display()))))?;
    Ok(Some(entered))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run the program in rbpf's interpreter on a `bpf_cgroup_dev_ctx`.
    fn allowed(prog: &[u8], kind: i32, major: u32, minor: u32, access: i32) -> bool {
        let vm = rbpf::EbpfVmRaw::new(Some(prog)).expect("valid program");
        let mut ctx = Vec::new();
        ctx.extend_from_slice(&((access as u32) << 16 | kind as u32).to_le_bytes());
        ctx.extend_from_slice(&major.to_le_bytes());
        ctx.extend_from_slice(&minor.to_le_bytes());
        vm.execute_program(&mut ctx).expect("runs") == 1
    }

    #[test]
    fn the_default_program_allows_runcs_list_and_nothing_else() {
        let rules: Vec<Rule> = crate::cgroup::DEVICE_RULES
            .iter()
            .map(|r| Rule::parse(r).unwrap())
            .collect();
        let p = program(&rules);
        let rw = ACC_READ | ACC_WRITE;
        // The standard devices: null, zero, full, random, urandom, tty, console, ptmx, pts.
        for (maj, min) in [
            (1, 3),
            (1, 5),
            (1, 7),
            (1, 8),
            (1, 9),
            (5, 0),
            (5, 1),
            (5, 2),
            (136, 7),
        ] {
            assert!(allowed(&p, DEV_CHAR, maj, min, rw), "c {maj}:{min}");
            assert!(allowed(&p, DEV_CHAR, maj, min, ACC_ALL), "c {maj}:{min}");
        }
        // Any node may be made, but not opened: the host's disk, /dev/mem, /dev/kmsg, loop-control.
        assert!(allowed(&p, DEV_BLOCK, 8, 0, ACC_MKNOD));
        assert!(allowed(&p, DEV_CHAR, 1, 1, ACC_MKNOD));
        for (kind, maj, min) in [
            (DEV_BLOCK, 8, 0),
            (DEV_BLOCK, 253, 0),
            (DEV_BLOCK, 7, 0),
            (DEV_CHAR, 1, 1),
            (DEV_CHAR, 1, 11),
            (DEV_CHAR, 10, 237),
            (DEV_CHAR, 4, 0),
        ] {
            assert!(!allowed(&p, kind, maj, min, ACC_READ), "{kind} {maj}:{min}");
            assert!(!allowed(&p, kind, maj, min, ACC_WRITE), "{kind} {maj}:{min}");
            assert!(!allowed(&p, kind, maj, min, ACC_MKNOD | ACC_READ));
        }
        // A block device with a standard char device's numbers is still refused.
        assert!(!allowed(&p, DEV_BLOCK, 1, 3, ACC_READ));
    }

    #[test]
    fn rules_parse_as_v1_writes_them_and_bad_ones_are_named() {
        assert_eq!(
            Rule::parse("c 136:* rw").unwrap(),
            Rule {
                kind: Some(DEV_CHAR),
                major: Some(136),
                minor: None,
                access: ACC_READ | ACC_WRITE
            }
        );
        let all = program(&[Rule::parse("a").unwrap()]);
        assert!(allowed(&all, DEV_BLOCK, 8, 0, ACC_ALL));
        let none = program(&[]);
        assert!(!allowed(&none, DEV_CHAR, 1, 3, ACC_READ));
        for bad in ["x 1:3 r", "c 1 r", "c 1:3 q", "c a:3 r", "c 1:3", "c 1:3 r extra"] {
            assert!(Rule::parse(bad).unwrap_err().contains(bad), "{bad}");
        }
    }

    /// The program attached to a real cgroup of the unified hierarchy: a process moved into it opens
    /// `/dev/null` and cannot open a node of the host's first block device (root, unified hierarchy).
    #[test]
    fn the_attached_program_keeps_a_process_from_opening_other_devices() {
        if !nix::unistd::Uid::effective().is_root() || crate::cgroup::unified_root().is_none() {
            eprintln!("skipped: needs root and a unified cgroup hierarchy");
            return;
        }
        let root = crate::cgroup::unified_root().unwrap();
        let dir = root.join(format!("berth-devtest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        struct Rm(PathBuf);
        impl Drop for Rm {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir(&self.0);
            }
        }
        let _rm = Rm(dir.clone());
        attach(&dir).expect("the kernel takes the program");
        let tmp = tempfile::tempdir().unwrap();
        let disk = tmp.path().join("disk");
        let null = tmp.path().join("null");
        // b 7:0 (loop0) and c 1:3 (null): made here, outside the cgroup.
        for (path, kind, maj, min) in [
            (&disk, nix::sys::stat::SFlag::S_IFBLK, 7, 0),
            (&null, nix::sys::stat::SFlag::S_IFCHR, 1, 3),
        ] {
            nix::sys::stat::mknod(
                path.as_path(),
                kind,
                nix::sys::stat::Mode::from_bits_truncate(0o600),
                nix::sys::stat::makedev(maj, min),
            )
            .unwrap();
        }
        let run = |target: &Path| {
            std::process::Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "echo $$ > {}/cgroup.procs && exec dd if={} of=/dev/null count=0 2>&1",
                    dir.display(),
                    target.display()
                ))
                .output()
                .unwrap()
        };
        let ok = run(&null);
        assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stdout));
        let denied = run(&disk);
        let out = String::from_utf8_lossy(&denied.stdout);
        assert!(!denied.status.success() && out.contains("not permitted"), "{out}");
    }
}
