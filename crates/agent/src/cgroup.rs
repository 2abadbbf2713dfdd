//! Container resource limits through cgroups, v1 (per-controller hierarchies, as on hybrid hosts without
//! systemd) or v2 (the unified hierarchy), as the kubelet's cgroupfs driver sets them
//! (`pkg/kubelet/cm`, `ResourceConfigForPod`): `resources.limits.memory` → memory limit,
//! `resources.limits.cpu` → CFS quota over a 100 ms period, `resources.requests.cpu` → shares (v1) or
//! weight (v2). Each container gets `berth/<pod uid>/<container>` under every controller it uses.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// CFS period (upstream `QuotaPeriod`, 100 ms).
pub const CFS_PERIOD_US: u64 = 100_000;

/// What to limit (absent = unlimited).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// Memory limit in bytes.
    #[serde(default)]
    pub memory_limit: Option<u64>,
    /// CPU limit in millicores.
    #[serde(default)]
    pub cpu_limit_millis: Option<u64>,
    /// CPU request in millicores.
    #[serde(default)]
    pub cpu_request_millis: Option<u64>,
}

impl Resources {
    /// Whether any limit is set.
    pub fn is_empty(&self) -> bool {
        *self == Resources::default()
    }
}

/// The host's cgroup layout.
#[derive(Debug, Clone, PartialEq)]
pub enum Layout {
    /// Unified hierarchy mounted here.
    V2(PathBuf),
    /// Per-controller hierarchies under this directory (`memory/`, `cpu/`).
    V1(PathBuf),
}

/// Detect the layout under `/sys/fs/cgroup`.
pub fn detect() -> Option<Layout> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        Some(Layout::V2(root.to_path_buf()))
    } else if root.join("memory").is_dir() {
        Some(Layout::V1(root.to_path_buf()))
    } else {
        None
    }
}

/// v1 `cpu.shares` for a request (upstream `MilliCPUToShares`: min 2, max 262144).
pub fn shares(request_millis: u64) -> u64 {
    (request_millis * 1024 / 1000).clamp(2, 262_144)
}

/// v2 `cpu.weight` for v1 shares (upstream `CpuSharesToCpuWeight`).
pub fn weight(shares: u64) -> u64 {
    1 + ((shares.saturating_sub(2)) * 9999) / 262_142
}

/// The files to write, per controller directory relative to the layout root, for `rel`
/// (`<pod uid>/<container>`).
pub fn plan(layout: &Layout, rel: &str, r: &Resources) -> Vec<(PathBuf, &'static str, String)> {
    let mut out = Vec::new();
    match layout {
        Layout::V1(root) => {
            if let Some(m) = r.memory_limit {
                out.push((
                    root.join("memory/berth").join(rel),
                    "memory.limit_in_bytes",
                    m.to_string(),
                ));
            }
            let cpu = root.join("cpu/berth").join(rel);
            if let Some(l) = r.cpu_limit_millis {
                out.push((cpu.clone(), "cpu.cfs_period_us", CFS_PERIOD_US.to_string()));
                out.push((
                    cpu.clone(),
                    "cpu.cfs_quota_us",
                    (l * CFS_PERIOD_US / 1000).max(1000).to_string(),
                ));
            }
            if let Some(q) = r.cpu_request_millis {
                out.push((cpu, "cpu.shares", shares(q).to_string()));
            }
        }
        Layout::V2(root) => {
            let dir = root.join("berth").join(rel);
            if let Some(m) = r.memory_limit {
                out.push((dir.clone(), "memory.max", m.to_string()));
            }
            if let Some(l) = r.cpu_limit_millis {
                out.push((
                    dir.clone(),
                    "cpu.max",
                    format!("{} {CFS_PERIOD_US}", (l * CFS_PERIOD_US / 1000).max(1000)),
                ));
            }
            if let Some(q) = r.cpu_request_millis {
                out.push((dir, "cpu.weight", weight(shares(q)).to_string()));
            }
        }
    }
    out
}

/// Create the container's cgroups, write its limits and move `pid` in; returns the leaf directories
/// (to [`remove`] when the container is gone).
///
/// # Errors
/// When a directory or file cannot be written.
pub fn apply(layout: &Layout, rel: &str, r: &Resources, pid: u32) -> std::io::Result<Vec<PathBuf>> {
    let writes = plan(layout, rel, r);
    let mut dirs: Vec<PathBuf> = Vec::new();
    for (dir, _, _) in &writes {
        if !dirs.contains(dir) {
            dirs.push(dir.clone());
        }
    }
    if let Layout::V2(root) = layout {
        // Controllers must be enabled in every ancestor's subtree_control.
        let mut cur = root.clone();
        for part in std::iter::once("berth").chain(rel.split('/')) {
            std::fs::create_dir_all(cur.join(part))?;
            let _ = std::fs::write(cur.join("cgroup.subtree_control"), "+memory +cpu");
            cur = cur.join(part);
        }
    }
    for d in &dirs {
        std::fs::create_dir_all(d)?;
    }
    for (dir, file, value) in &writes {
        std::fs::write(dir.join(file), value)
            .map_err(|e| std::io::Error::other(format!("{}: {e}", dir.join(file).display())))?;
    }
    for d in &dirs {
        std::fs::write(d.join("cgroup.procs"), pid.to_string())?;
    }
    Ok(dirs)
}

/// Remove the container's cgroup directories and their pod directory when it is empty (both retried
/// briefly: the kernel frees a cgroup only after its last process is reaped).
pub fn remove(dirs: &[PathBuf]) {
    for d in dirs {
        for _ in 0..50 {
            if std::fs::remove_dir(d).is_ok() || !d.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if let Some(pod) = d.parent() {
            let _ = std::fs::remove_dir(pod);
        }
    }
}

/// The device rules of an unprivileged container on cgroup v1 (`devices.allow` after `a` in
/// `devices.deny`): runc's default allow-list (`libcontainer/specconv` `AllowedDevices`): any device
/// node may be made (`m`), only these may be opened: null, zero, full, random, urandom, tty, console,
/// ptmx and the pseudo-terminals.
pub const DEVICE_RULES: [&str; 11] = [
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:1 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
];

/// The v1 `devices` hierarchy, when the host has one.
pub fn devices_v1() -> Option<PathBuf> {
    let d = Path::new("/sys/fs/cgroup/devices");
    d.join("devices.allow").exists().then(|| d.to_path_buf())
}

/// Put `pid` into `devices/berth/<rel>` with [`DEVICE_RULES`] (v1); returns the directory to
/// [`remove`] later, `None` on a host without the v1 devices controller.
///
/// # Errors
/// When the cgroup cannot be made or its rules written.
pub fn restrict_devices(rel: &str, pid: u32) -> std::io::Result<Option<PathBuf>> {
    let Some(root) = devices_v1() else {
        return Ok(None);
    };
    let dir = root.join("berth").join(rel);
    std::fs::create_dir_all(&dir)?;
    let w = |file: &str, v: &str| {
        std::fs::write(dir.join(file), v)
            .map_err(|e| std::io::Error::other(format!("{}: {v}: {e}", dir.join(file).display())))
    };
    w("devices.deny", "a")?;
    for r in DEVICE_RULES {
        w("devices.allow", r)?;
    }
    w("cgroup.procs", &pid.to_string())?;
    Ok(Some(dir))
}

/// Move `pid` back to the root of the v1 devices hierarchy (so its container's cgroup can go).
pub fn leave_devices(pid: u32) {
    if let Some(root) = devices_v1() {
        let _ = std::fs::write(root.join("cgroup.procs"), pid.to_string());
    }
}

/// The unified (v2) hierarchy: `/sys/fs/cgroup` on a v2 host, `/sys/fs/cgroup/unified` on a hybrid one.
pub fn unified_root() -> Option<PathBuf> {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.join("cgroup.controllers").exists())
        .map(Path::to_path_buf)
}

/// Put `me` into every `berth/…` cgroup that process `pid` is in (v1 controllers and v2), as runc exec
/// joins an exec'd process to its container's cgroups. Best effort.
pub fn join(pid: &str, me: u32) {
    let Ok(list) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
        return;
    };
    let root = Path::new("/sys/fs/cgroup");
    for line in list.lines() {
        let mut f = line.splitn(3, ':');
        let (_, controllers, path) = (f.next(), f.next().unwrap_or(""), f.next().unwrap_or(""));
        if !path.starts_with("/berth/") {
            continue;
        }
        let base = if controllers.is_empty() {
            // v2: the unified hierarchy, alone or beside v1 (hybrid).
            let Some(unified) = unified_root() else {
                continue;
            };
            unified
        } else if controllers.starts_with("name=") {
            continue;
        } else {
            root.join(controllers)
        };
        let _ = std::fs::write(
            base.join(path.trim_start_matches('/')).join("cgroup.procs"),
            me.to_string(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_map_to_files_as_the_kubelet_writes_them() {
        let r = Resources {
            memory_limit: Some(64 << 20),
            cpu_limit_millis: Some(500),
            cpu_request_millis: Some(250),
        };
        let v1 = plan(&Layout::V1("/cg".into()), "u/c", &r);
        assert!(v1.contains(&(
            "/cg/memory/berth/u/c".into(),
            "memory.limit_in_bytes",
            "67108864".into()
        )));
        assert!(v1.contains(&("/cg/cpu/berth/u/c".into(), "cpu.cfs_quota_us", "50000".into())));
        assert!(v1.contains(&("/cg/cpu/berth/u/c".into(), "cpu.shares", "256".into())));
        let v2 = plan(&Layout::V2("/cg".into()), "u/c", &r);
        assert!(v2.contains(&("/cg/berth/u/c".into(), "memory.max", "67108864".into())));
        assert!(v2.contains(&("/cg/berth/u/c".into(), "cpu.max", "50000 100000".into())));
        assert_eq!(shares(0), 2);
        assert_eq!(weight(2), 1);
        assert_eq!(weight(262_144), 10_000);
        assert!(plan(&Layout::V1("/cg".into()), "u/c", &Resources::default()).is_empty());
    }
}
