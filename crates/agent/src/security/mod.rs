//! Container isolation as containerd + runc give it to a Kubernetes pod: the pure decision
//! ([`decide`]: a Pod's `securityContext` → a [`Security`] value the init applies) and its application
//! inside `berth container-init` / `berth container-exec` ([`apply`]).
//!
//! What mirrors what:
//! - the merge of pod- and container-level fields, `runAsNonRoot` and no_new_privs: the kubelet's
//!   `pkg/securitycontext` (`DetermineEffectiveSecurityContext`, `AddNoNewPrivileges`) and
//!   `pkg/kubelet/kuberuntime/security_context*.go` (`verifyRunAsNonRoot`, supplemental groups with
//!   `fsGroup`);
//! - capabilities, masked and read-only paths, devices: containerd's default spec (`pkg/oci/spec.go`,
//!   `defaultUnixCaps`) and its CRI plugin (`WithCapabilities`: `ALL` first, then single names;
//!   `privileged`: every capability, no masking, host devices, no seccomp);
//! - `RuntimeDefault` seccomp: containerd's `contrib/seccomp/seccomp_default.go` (an allow-list whose
//!   default is `EPERM`, widened by the container's capabilities); `Localhost` profiles are OCI/Docker
//!   JSON files under `<data-dir>/agent/seccomp`, the kubelet's `<root-dir>/seccomp`;
//! - sysctls: the kubelet's safe set (`pkg/kubelet/sysctl`), namespaced ones only.
//!
//! An unset `seccompProfile` is `Unconfined`, as upstream with the kubelet's `--seccomp-default=false`
//! (its default); [`Defaults::seccomp_runtime_default`] (`--seccomp-default`) turns the other choice on.

pub mod apply;
mod default_syscalls;
pub(crate) mod sys;

use k8s_openapi::api::core::v1::{Container, Pod};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// containerd's `defaultUnixCaps`: what an unprivileged container gets in its bounding, effective and
/// permitted sets (none inheritable or ambient).
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability by number (`linux/capability.h`, 0 to `CAP_LAST_CAP` = 40).
pub const ALL_CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Paths hidden from an unprivileged container (containerd's `MaskedPaths`; the kubelet's
/// `DefaultProcMount`): a directory gets an empty read-only tmpfs over it, a file `/dev/null`.
pub const MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/proc/scsi",
];

/// Paths an unprivileged container sees read-only (containerd's `ReadonlyPaths`).
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The sysctls a pod may set without the node allowing unsafe ones (the kubelet's `SafeSysctlAllowlist`,
/// all namespaced: IPC or network namespace).
pub const SAFE_SYSCTLS: [&str; 12] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
];

/// What the init applies to a container (and `container-exec` to every process started in it, as
/// `runc exec` does), written into its `spec.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Security {
    /// `privileged: true`: every capability, the host's devices, `/sys` writable, no masking, no seccomp.
    pub privileged: bool,
    /// Capability names (`CAP_…`) of the bounding, permitted and effective sets (a non-root user loses
    /// permitted and effective at exec, as under runc: there are no ambient capabilities).
    pub capabilities: Vec<String>,
    /// `prctl(PR_SET_NO_NEW_PRIVS)` (`allowPrivilegeEscalation: false`).
    pub no_new_privs: bool,
    /// The seccomp filter; `None` is `Unconfined`.
    pub seccomp: Option<Profile>,
    /// Paths to mask ([`MASKED_PATHS`] unless privileged or `procMount: Unmasked`).
    pub masked_paths: Vec<String>,
    /// Paths made read-only ([`READONLY_PATHS`] unless privileged or `procMount: Unmasked`).
    pub readonly_paths: Vec<String>,
    /// `readOnlyRootFilesystem`.
    pub readonly_rootfs: bool,
    /// Supplementary groups (`setgroups`): the primary group, the user's groups in the image's
    /// `/etc/group`, `fsGroup`, `supplementalGroups`.
    pub groups: Vec<u32>,
    /// Namespaced sysctls, `(name, value)`.
    pub sysctls: Vec<(String, String)>,
}

impl Security {
    /// Whether the container needs the v1 device cgroup on top of `nodev`: only an unprivileged
    /// container that holds `CAP_SYS_ADMIN` could mount a filesystem without `nodev` (and open a device
    /// node made on it); without that capability it can neither mount nor remount, and every filesystem
    /// it can write is already `nodev`, so a device node it makes can never be opened. Moving a process
    /// into a v1 cgroup costs an RCU grace period (about 10 ms, measured on every start), so the cgroup is
    /// kept for the one case that needs it. Upstream's runc applies its device rules to every container.
    #[must_use]
    pub fn needs_device_cgroup(&self) -> bool {
        !self.privileged && self.capabilities.iter().any(|c| c == "CAP_SYS_ADMIN")
    }
}

impl Default for Security {
    /// An unprivileged container as containerd makes it: the default capabilities, masked and read-only
    /// paths, no seccomp filter.
    fn default() -> Self {
        Security {
            privileged: false,
            capabilities: DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect(),
            no_new_privs: false,
            seccomp: None,
            masked_paths: MASKED_PATHS.iter().map(|c| c.to_string()).collect(),
            readonly_paths: READONLY_PATHS.iter().map(|c| c.to_string()).collect(),
            readonly_rootfs: false,
            groups: Vec::new(),
            sysctls: Vec::new(),
        }
    }
}

/// A seccomp profile in the OCI runtime spec's shape (`LinuxSeccomp`): a default action and rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Action for a syscall no rule matches.
    pub default_action: Action,
    /// Rules, in order.
    pub syscalls: Vec<Rule>,
}

/// One OCI `LinuxSyscall`: these names, when every argument condition holds, get `action`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// Syscall names (unknown ones on this architecture are skipped, as libseccomp does).
    pub names: Vec<String>,
    /// What happens.
    pub action: Action,
    /// Conditions on the arguments, all of which must hold.
    #[serde(default)]
    pub args: Vec<Arg>,
}

/// An OCI seccomp action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// `SCMP_ACT_ALLOW`.
    Allow,
    /// `SCMP_ACT_ERRNO` with this errno (`EPERM` when the profile gives none, as runc).
    Errno(u32),
    /// `SCMP_ACT_KILL` / `SCMP_ACT_KILL_THREAD`.
    KillThread,
    /// `SCMP_ACT_KILL_PROCESS`.
    KillProcess,
    /// `SCMP_ACT_TRAP`.
    Trap,
    /// `SCMP_ACT_LOG`.
    Log,
}

/// An OCI `LinuxSeccompArg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arg {
    /// Argument index (0-5).
    pub index: u8,
    /// Compared value.
    pub value: u64,
    /// Second value (`SCMP_CMP_MASKED_EQ`: the argument masked by `value` must equal this).
    #[serde(default)]
    pub value_two: u64,
    /// Comparison.
    pub op: Op,
}

/// An OCI seccomp comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// `SCMP_CMP_NE`.
    NotEqual,
    /// `SCMP_CMP_LT`.
    LessThan,
    /// `SCMP_CMP_LE`.
    LessEqual,
    /// `SCMP_CMP_EQ`.
    EqualTo,
    /// `SCMP_CMP_GE`.
    GreaterEqual,
    /// `SCMP_CMP_GT`.
    GreaterThan,
    /// `SCMP_CMP_MASKED_EQ`.
    MaskedEqual,
}

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;
const CLONE_NAMESPACES: u64 = 0x0002_0000 // CLONE_NEWNS
    | 0x0400_0000 // CLONE_NEWUTS
    | 0x0800_0000 // CLONE_NEWIPC
    | 0x1000_0000 // CLONE_NEWUSER
    | 0x2000_0000 // CLONE_NEWPID
    | 0x4000_0000 // CLONE_NEWNET
    | 0x0200_0000; // CLONE_NEWCGROUP

fn allow(names: &[&str]) -> Rule {
    Rule {
        names: names.iter().map(|n| n.to_string()).collect(),
        action: Action::Allow,
        args: Vec::new(),
    }
}

fn allow_if(name: &str, index: u8, op: Op, value: u64, value_two: u64) -> Rule {
    Rule {
        names: vec![name.to_string()],
        action: Action::Allow,
        args: vec![Arg {
            index,
            value,
            value_two,
            op,
        }],
    }
}

/// containerd's default profile (`RuntimeDefault`) for a container with these capabilities (its bounding
/// set): the base allow-list, `socket` for every family but `AF_ALG` and `AF_VSOCK`, the query forms of
/// `personality`, the syscalls each capability needs, `clone` without namespace flags unless
/// `CAP_SYS_ADMIN`, and `clone3` failing with `ENOSYS` (so libc falls back to `clone`) unless
/// `CAP_SYS_ADMIN`; everything else fails with `EPERM`.
pub fn runtime_default(capabilities: &[String]) -> Profile {
    let base: Vec<&str> = default_syscalls::ALLOWED.split_whitespace().collect();
    let mut syscalls = vec![allow(&base)];
    // AF_ALG = 38, AF_VSOCK = 40.
    syscalls.push(allow_if("socket", 0, Op::LessThan, 38, 0));
    syscalls.push(allow_if("socket", 0, Op::EqualTo, 39, 0));
    syscalls.push(allow_if("socket", 0, Op::GreaterThan, 40, 0));
    for p in [0x0, 0x0008, 0x20000, 0x20008, 0xffff_ffff] {
        syscalls.push(allow_if("personality", 0, Op::EqualTo, p, 0));
    }
    // Kernels from 4.8 on check ptrace against seccomp, so containerd allows it (and process_vm_*).
    syscalls.push(allow(&["process_vm_readv", "process_vm_writev", "ptrace"]));
    // Per architecture.
    syscalls.push(allow(&[
        "arch_prctl",
        "modify_ldt",
        "riscv_flush_icache",
        "riscv_hwprobe",
    ]));
    let has = |c: &str| capabilities.iter().any(|x| x == c);
    let by_cap: [(&str, &[&str]); 14] = [
        ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
        (
            "CAP_SYS_ADMIN",
            &[
                "bpf",
                "clone",
                "clone3",
                "fanotify_init",
                "fsconfig",
                "fsmount",
                "fsopen",
                "fspick",
                "lookup_dcookie",
                "mount",
                "mount_setattr",
                "move_mount",
                "open_tree",
                "perf_event_open",
                "quotactl",
                "quotactl_fd",
                "setdomainname",
                "sethostname",
                "setns",
                "syslog",
                "umount",
                "umount2",
                "unshare",
            ],
        ),
        ("CAP_SYS_BOOT", &["reboot"]),
        ("CAP_SYS_CHROOT", &["chroot"]),
        (
            "CAP_SYS_MODULE",
            &["delete_module", "init_module", "finit_module"],
        ),
        ("CAP_SYS_PACCT", &["acct"]),
        (
            "CAP_SYS_PTRACE",
            &[
                "kcmp",
                "pidfd_getfd",
                "process_madvise",
                "process_vm_readv",
                "process_vm_writev",
                "ptrace",
            ],
        ),
        ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
        (
            "CAP_SYS_TIME",
            &["settimeofday", "stime", "clock_settime", "clock_settime64"],
        ),
        ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
        (
            "CAP_SYS_NICE",
            &[
                "get_mempolicy",
                "mbind",
                "set_mempolicy",
                "set_mempolicy_home_node",
            ],
        ),
        ("CAP_SYSLOG", &["syslog"]),
        ("CAP_BPF", &["bpf"]),
        ("CAP_PERFMON", &["perf_event_open"]),
    ];
    for (cap, names) in by_cap {
        if has(cap) {
            syscalls.push(allow(names));
        }
    }
    if !has("CAP_SYS_ADMIN") {
        syscalls.push(allow_if("clone", 0, Op::MaskedEqual, CLONE_NAMESPACES, 0));
        syscalls.push(Rule {
            names: vec!["clone3".into()],
            action: Action::Errno(ENOSYS),
            args: Vec::new(),
        });
    }
    Profile {
        default_action: Action::Errno(EPERM),
        syscalls,
    }
}

impl Profile {
    /// Parse an OCI/Docker seccomp profile (`defaultAction`, `defaultErrnoRet`, `syscalls[].names`,
    /// `.action`, `.errnoRet`, `.args[].index/value/valueTwo/op`), as a `Localhost` profile file is
    /// written for containerd. `architectures` and `flags` are ignored (the filter is for the running
    /// architecture).
    ///
    /// # Errors
    /// A message naming what is malformed (unknown action or operator, bad JSON).
    pub fn from_oci_json(data: &[u8]) -> Result<Profile, String> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct OciArg {
            index: u8,
            #[serde(default)]
            value: u64,
            #[serde(default)]
            value_two: u64,
            op: String,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct OciSyscall {
            #[serde(default)]
            names: Vec<String>,
            #[serde(default)]
            name: Option<String>,
            action: String,
            #[serde(default)]
            errno_ret: Option<u32>,
            #[serde(default)]
            args: Option<Vec<OciArg>>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Oci {
            default_action: String,
            #[serde(default)]
            default_errno_ret: Option<u32>,
            #[serde(default)]
            syscalls: Option<Vec<OciSyscall>>,
        }
        let oci: Oci = serde_json::from_slice(data).map_err(|e| format!("decoding seccomp profile: {e}"))?;
        let action = |a: &str, errno: Option<u32>| -> Result<Action, String> {
            Ok(match a {
                "SCMP_ACT_ALLOW" => Action::Allow,
                "SCMP_ACT_ERRNO" => Action::Errno(errno.unwrap_or(EPERM)),
                "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => Action::KillThread,
                "SCMP_ACT_KILL_PROCESS" => Action::KillProcess,
                "SCMP_ACT_TRAP" => Action::Trap,
                "SCMP_ACT_LOG" => Action::Log,
                other => return Err(format!("unsupported seccomp action {other:?}")),
            })
        };
        let op = |o: &str| -> Result<Op, String> {
            Ok(match o {
                "SCMP_CMP_NE" => Op::NotEqual,
                "SCMP_CMP_LT" => Op::LessThan,
                "SCMP_CMP_LE" => Op::LessEqual,
                "SCMP_CMP_EQ" => Op::EqualTo,
                "SCMP_CMP_GE" => Op::GreaterEqual,
                "SCMP_CMP_GT" => Op::GreaterThan,
                "SCMP_CMP_MASKED_EQ" => Op::MaskedEqual,
                other => return Err(format!("unsupported seccomp operator {other:?}")),
            })
        };
        let mut syscalls = Vec::new();
        for s in oci.syscalls.into_iter().flatten() {
            let mut names = s.names;
            names.extend(s.name);
            let mut args = Vec::new();
            for a in s.args.into_iter().flatten() {
                args.push(Arg {
                    index: a.index,
                    value: a.value,
                    value_two: a.value_two,
                    op: op(&a.op)?,
                });
            }
            syscalls.push(Rule {
                names,
                action: action(&s.action, s.errno_ret)?,
                args,
            });
        }
        Ok(Profile {
            default_action: action(&oci.default_action, oci.default_errno_ret)?,
            syscalls,
        })
    }

    /// Compile to BPF programs for the running architecture, to be installed in order: one program per
    /// distinct action (the kernel runs every installed filter and takes the most restrictive answer;
    /// among equals the last installed wins, so the default action's program goes first).
    ///
    /// # Errors
    /// When the architecture has no seccomp support in seccompiler or a condition is invalid.
    pub fn compile(&self) -> Result<Vec<seccompiler::BpfProgram>, String> {
        use seccompiler::{
            SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
        };
        use std::str::FromStr;
        let arch = seccompiler::TargetArch::try_from(std::env::consts::ARCH).map_err(|e| e.to_string())?;
        let to_action = |a: Action| match a {
            Action::Allow => SeccompAction::Allow,
            Action::Errno(e) => SeccompAction::Errno(e),
            Action::KillThread => SeccompAction::KillThread,
            Action::KillProcess => SeccompAction::KillProcess,
            Action::Trap => SeccompAction::Trap,
            Action::Log => SeccompAction::Log,
        };
        /// Syscall number → `None` (unconditional) or the alternative condition sets.
        type Rules = BTreeMap<i64, Option<Vec<SeccompRule>>>;
        let mut by_action: Vec<(Action, Rules)> = Vec::new();
        for r in &self.syscalls {
            if r.action == self.default_action {
                continue;
            }
            let idx = match by_action.iter().position(|(a, _)| *a == r.action) {
                Some(i) => i,
                None => {
                    by_action.push((r.action, BTreeMap::new()));
                    by_action.len() - 1
                }
            };
            let rule = if r.args.is_empty() {
                None
            } else {
                let mut conds = Vec::new();
                for a in &r.args {
                    let (op, value) = match a.op {
                        Op::NotEqual => (SeccompCmpOp::Ne, a.value),
                        Op::LessThan => (SeccompCmpOp::Lt, a.value),
                        Op::LessEqual => (SeccompCmpOp::Le, a.value),
                        Op::EqualTo => (SeccompCmpOp::Eq, a.value),
                        Op::GreaterEqual => (SeccompCmpOp::Ge, a.value),
                        Op::GreaterThan => (SeccompCmpOp::Gt, a.value),
                        Op::MaskedEqual => (SeccompCmpOp::MaskedEq(a.value), a.value_two),
                    };
                    conds.push(
                        SeccompCondition::new(a.index, SeccompCmpArgLen::Qword, op, value)
                            .map_err(|e| e.to_string())?,
                    );
                }
                Some(SeccompRule::new(conds).map_err(|e| e.to_string())?)
            };
            for name in &r.names {
                let Ok(nr) = syscalls::Sysno::from_str(name) else {
                    continue;
                };
                let entry = by_action[idx]
                    .1
                    .entry(i64::from(nr.id()))
                    .or_insert_with(|| Some(Vec::new()));
                match (&rule, entry) {
                    (None, e) => *e = None,
                    (Some(_), None) => {}
                    (Some(rl), Some(v)) => v.push(rl.clone()),
                }
            }
        }
        let mut programs = Vec::new();
        // The default action's program: matches of the allow rules answer Allow; then one program per
        // other action, answering Allow when its rules do not match.
        let mut allow_rules = BTreeMap::new();
        let mut others = Vec::new();
        for (a, rules) in by_action {
            let rules: BTreeMap<i64, Vec<SeccompRule>> = rules
                .into_iter()
                .map(|(k, v)| (k, v.unwrap_or_default()))
                .collect();
            if a == Action::Allow {
                allow_rules = rules;
            } else {
                others.push((a, rules));
            }
        }
        if self.default_action != Action::Allow {
            let f = SeccompFilter::new(
                allow_rules,
                to_action(self.default_action),
                SeccompAction::Allow,
                arch,
            )
            .map_err(|e| e.to_string())?;
            programs.push(
                f.try_into()
                    .map_err(|e: seccompiler::BackendError| e.to_string())?,
            );
        }
        for (a, rules) in others {
            let f = SeccompFilter::new(rules, SeccompAction::Allow, to_action(a), arch)
                .map_err(|e| e.to_string())?;
            programs.push(
                f.try_into()
                    .map_err(|e: seccompiler::BackendError| e.to_string())?,
            );
        }
        Ok(programs)
    }
}

/// The agent-wide choices a pod does not make itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Defaults {
    /// An unset `seccompProfile` means `RuntimeDefault` (the kubelet's `--seccomp-default`); off by
    /// default, as upstream.
    pub seccomp_runtime_default: bool,
}

/// The user an image runs as, as the kubelet reads it (`getImageUser`): a numeric uid, or a name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageUser {
    /// Numeric uid (`"1000"`, `"1000:1000"`); `Some(0)` for an image without `User`.
    pub uid: Option<u32>,
    /// The name, when not numeric.
    pub name: String,
}

impl ImageUser {
    /// From the image config's `User` (`user`, `uid`, `user:group` or `uid:gid`; the group part is
    /// ignored, as the kubelet passes only the user to the runtime).
    pub fn parse(user: Option<&str>) -> ImageUser {
        let u = user.unwrap_or("").split(':').next().unwrap_or("");
        if u.is_empty() {
            return ImageUser {
                uid: Some(0),
                name: String::new(),
            };
        }
        match u.parse::<u32>() {
            Ok(n) => ImageUser {
                uid: Some(n),
                name: String::new(),
            },
            Err(_) => ImageUser {
                uid: None,
                name: u.to_string(),
            },
        }
    }
}

/// The image's `/etc/passwd` and `/etc/group` (empty when absent).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserDb {
    /// `/etc/passwd` contents.
    pub passwd: String,
    /// `/etc/group` contents.
    pub group: String,
}

impl UserDb {
    /// Read them from an image's root filesystem.
    pub fn read(rootfs: &std::path::Path) -> UserDb {
        UserDb {
            passwd: std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap_or_default(),
            group: std::fs::read_to_string(rootfs.join("etc/group")).unwrap_or_default(),
        }
    }

    fn users(&self) -> impl Iterator<Item = (&str, u32, u32)> {
        self.passwd.lines().filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some((*f.first()?, f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?))
        })
    }

    /// The groups listing `user` as a member.
    fn member_of(&self, user: &str) -> Vec<u32> {
        self.group
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                let gid = f.get(2)?.parse().ok()?;
                f.get(3)?.split(',').any(|m| m == user).then_some(gid)
            })
            .collect()
    }
}

/// A container's identity and walls.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// uid the workload runs as.
    pub uid: u32,
    /// Primary gid.
    pub gid: u32,
    /// Everything else.
    pub security: Security,
}

/// The kubelet's `format.Pod`: `name_namespace(uid)`.
fn format_pod(p: &Pod) -> String {
    format!(
        "{}_{}({})",
        p.metadata.name.as_deref().unwrap_or(""),
        p.metadata.namespace.as_deref().unwrap_or(""),
        p.metadata.uid.as_deref().unwrap_or("")
    )
}

/// Decide a container's identity and walls from its pod's and its own `securityContext`, the image's
/// user and user database. `localhost_profile` reads a `Localhost` seccomp profile by its
/// `localhostProfile` path (relative to the node's seccomp directory).
///
/// # Errors
/// The message for the container's `CreateContainerConfigError`: `runAsNonRoot` with a root user
/// (upstream's `verifyRunAsNonRoot` wording), an image user missing from its `/etc/passwd`, an unknown
/// capability, `hostUsers: false` with a host namespace or `privileged`, a sysctl outside the safe set (`forbidden sysctl: "…" not allowlisted`, the kubelet's
/// admission message), a `Localhost` profile that cannot be read or parsed.
pub fn decide(
    pod: &Pod,
    c: &Container,
    image: &ImageUser,
    db: &UserDb,
    defaults: &Defaults,
    localhost_profile: &dyn Fn(&str) -> Result<Vec<u8>, String>,
) -> Result<Decision, String> {
    let spec = pod.spec.clone().unwrap_or_default();
    let psc = spec.security_context.unwrap_or_default();
    let sc = c.security_context.clone().unwrap_or_default();
    let run_as_user = sc.run_as_user.or(psc.run_as_user);
    let run_as_group = sc.run_as_group.or(psc.run_as_group);
    let run_as_non_root = sc.run_as_non_root.or(psc.run_as_non_root);
    // verifyRunAsNonRoot.
    if run_as_non_root == Some(true) {
        let who = format!("(pod: {:?}, container: {})", format_pod(pod), c.name);
        match (run_as_user, image.uid) {
            (Some(0), _) => return Err(format!("container's runAsUser breaks non-root policy {who}")),
            (Some(_), _) => {}
            (None, None) if !image.name.is_empty() => {
                return Err(format!(
                    "container has runAsNonRoot and image has non-numeric user ({}), cannot verify user is non-root {who}",
                    image.name
                ));
            }
            (None, Some(0)) => {
                return Err(format!(
                    "container has runAsNonRoot and image will run as root {who}"
                ));
            }
            (None, _) => {}
        }
    }
    // The user and its primary group, as containerd resolves them against the image's /etc/passwd.
    let (uid, name, passwd_gid) = match run_as_user.or(image.uid.map(i64::from)) {
        Some(u) => {
            let u = u32::try_from(u).map_err(|_| format!("runAsUser {u} is out of range"))?;
            match db.users().find(|(_, id, _)| *id == u) {
                Some((n, _, g)) => (u, n.to_string(), g),
                None => (u, String::new(), 0),
            }
        }
        None => match db.users().find(|(n, _, _)| *n == image.name) {
            Some((n, u, g)) => (u, n.to_string(), g),
            None => {
                return Err(format!(
                    "unable to find user {}: no matching entries in passwd file",
                    image.name
                ));
            }
        },
    };
    let gid = match run_as_group {
        Some(g) => u32::try_from(g).map_err(|_| format!("runAsGroup {g} is out of range"))?,
        None => passwd_gid,
    };
    let mut groups = vec![gid];
    if !name.is_empty() {
        groups.extend(db.member_of(&name));
    }
    groups.extend(psc.fs_group.and_then(|g| u32::try_from(g).ok()));
    groups.extend(
        psc.supplemental_groups
            .iter()
            .flatten()
            .filter_map(|g| u32::try_from(*g).ok()),
    );
    let mut seen = std::collections::HashSet::new();
    groups.retain(|g| seen.insert(*g));

    let privileged = sc.privileged == Some(true);
    // A pod in a user namespace (`hostUsers: false`, `crate::userns`) shares none of the host's
    // namespaces (upstream's validation refuses hostNetwork, hostPID and hostIPC with it) and is never
    // privileged on the host.
    if spec.host_users == Some(false) {
        let shared = [
            ("hostNetwork", spec.host_network),
            ("hostPID", spec.host_pid),
            ("hostIPC", spec.host_ipc),
        ];
        if let Some((field, _)) = shared.iter().find(|(_, v)| *v == Some(true)) {
            return Err(format!("hostUsers: false cannot be combined with {field}: true"));
        }
        if privileged {
            return Err("hostUsers: false cannot be combined with a privileged container".into());
        }
    }
    let capabilities = capabilities(privileged, sc.capabilities.as_ref())?;
    let unmasked = privileged || sc.proc_mount.as_deref() == Some("Unmasked");
    let seccomp = if privileged {
        None
    } else {
        let profile = sc.seccomp_profile.or(psc.seccomp_profile);
        match profile.as_ref().map(|p| p.type_.as_str()) {
            Some("RuntimeDefault") => Some(runtime_default(&capabilities)),
            Some("Localhost") => {
                let path = profile
                    .as_ref()
                    .and_then(|p| p.localhost_profile.clone())
                    .unwrap_or_default();
                if path.is_empty() || path.split('/').any(|c| c == "..") || path.starts_with('/') {
                    return Err(format!("invalid localhostProfile {path:?}"));
                }
                let data = localhost_profile(&path)?;
                let p = Profile::from_oci_json(&data)
                    .map_err(|e| format!("failed to load seccomp profile {path:?}: {e}"))?;
                p.compile()
                    .map_err(|e| format!("failed to load seccomp profile {path:?}: {e}"))?;
                Some(p)
            }
            Some("Unconfined") => None,
            Some(other) => return Err(format!("unsupported seccomp profile type {other:?}")),
            None if defaults.seccomp_runtime_default => Some(runtime_default(&capabilities)),
            None => None,
        }
    };
    let mut sysctls = Vec::new();
    for s in psc.sysctls.iter().flatten() {
        // The kubelet accepts `/` as the separator too.
        let name = s.name.replace('/', ".");
        if !SAFE_SYSCTLS.contains(&name.as_str()) {
            return Err(format!("forbidden sysctl: {:?} not allowlisted", s.name));
        }
        sysctls.push((name, s.value.clone()));
    }
    Ok(Decision {
        uid,
        gid,
        security: Security {
            privileged,
            capabilities,
            no_new_privs: sc.allow_privilege_escalation == Some(false),
            seccomp,
            masked_paths: if unmasked {
                Vec::new()
            } else {
                MASKED_PATHS.iter().map(|c| c.to_string()).collect()
            },
            readonly_paths: if unmasked {
                Vec::new()
            } else {
                READONLY_PATHS.iter().map(|c| c.to_string()).collect()
            },
            readonly_rootfs: sc.read_only_root_filesystem == Some(true),
            groups,
            sysctls,
        },
    })
}

/// The capability set: every one when privileged; else the defaults, then `ALL` added, then `ALL`
/// dropped, then single names added, then dropped (containerd CRI's `WithCapabilities` order). Names
/// are taken with or without `CAP_`, in any case.
fn capabilities(
    privileged: bool,
    caps: Option<&k8s_openapi::api::core::v1::Capabilities>,
) -> Result<Vec<String>, String> {
    if privileged {
        return Ok(ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect());
    }
    let mut set: Vec<String> = DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect();
    let Some(caps) = caps else {
        return Ok(set);
    };
    let norm = |c: &String| -> Result<Option<String>, String> {
        let up = c.to_uppercase();
        if up == "ALL" {
            return Ok(None);
        }
        let full = if up.starts_with("CAP_") {
            up
        } else {
            format!("CAP_{up}")
        };
        if !ALL_CAPABILITIES.contains(&full.as_str()) {
            return Err(format!("unknown capability {c:?}"));
        }
        Ok(Some(full))
    };
    let add = caps.add.clone().unwrap_or_default();
    let drop = caps.drop.clone().unwrap_or_default();
    if add.iter().any(|c| c.eq_ignore_ascii_case("ALL")) {
        set = ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect();
    }
    if drop.iter().any(|c| c.eq_ignore_ascii_case("ALL")) {
        set.clear();
    }
    for c in &add {
        if let Some(n) = norm(c)?
            && !set.contains(&n)
        {
            set.push(n);
        }
    }
    for c in &drop {
        if let Some(n) = norm(c)? {
            set.retain(|x| *x != n);
        }
    }
    Ok(set)
}

/// The capability number of a `CAP_…` name.
pub fn capability_number(name: &str) -> Option<u32> {
    ALL_CAPABILITIES
        .iter()
        .position(|c| *c == name)
        .and_then(|n| u32::try_from(n).ok())
}

#[cfg(test)]
mod tests;
