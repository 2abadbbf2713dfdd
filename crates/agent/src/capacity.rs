//! Capacity enforcement for local-path volumes: a volume with a requested capacity is an ext4 filesystem
//! in a sparse file `<path>.ext4` beside its directory, loop-mounted at `<path>`, so a writer past the
//! capacity gets ENOSPC inside the pod, as on a cloud disk of that size. Raising the claim's request
//! grows the file and the filesystem (`losetup --set-capacity`, `resize2fs`), as CSI node expansion does
//! (`NodeExpandVolume`): online where the kernel permits, else offline while no container uses it.
//!
//! The filesystem work is done with util-linux and e2fsprogs (`mount -o loop`, `mkfs.ext4`, `resize2fs`),
//! which every Linux node has; [`available`] says whether this node can (root, `/dev/loop-control`, the
//! tools). Without them volumes stay plain directories, unlimited, as Rancher's local-path provisioner's
//! are. ext4 keeps its journal, so a kill -9 loses no acknowledged write inside the volume. The capacity
//! counts the filesystem's own metadata (about 10 % of a 10 MiB volume, under 2 % from 1 GiB), as a disk
//! of that size would.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The smallest filesystem made: ext4 with a journal needs a few MiB; smaller requests get this much.
pub const MIN_BYTES: u64 = 8 << 20;

/// The backing file of the volume at `path`.
pub fn image_of(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".ext4");
    PathBuf::from(s)
}

fn tool(name: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

/// Whether this node can enforce capacities (root, loop devices, `mkfs.ext4`, `resize2fs`, `mount`).
pub fn available() -> bool {
    nix::unistd::geteuid().is_root()
        && Path::new("/dev/loop-control").exists()
        && ["mkfs.ext4", "resize2fs", "mount", "umount", "losetup"]
            .iter()
            .all(|t| tool(t).is_some())
}

fn run(name: &str, args: &[&std::ffi::OsStr]) -> std::io::Result<()> {
    let bin = tool(name).ok_or_else(|| std::io::Error::other(format!("{name} not found")))?;
    let out = Command::new(&bin).args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// The filesystem source mounted at `path` (e.g. `/dev/loop3`), from `/proc/self/mountinfo`.
pub fn mounted_source(path: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = path.to_string_lossy();
    // Fields: id parent major:minor root mountpoint options … - fstype source superoptions.
    info.lines().rev().find_map(|l| {
        let mut f = l.split(' ');
        let mountpoint = f.nth(4)?;
        if unescape(mountpoint) != want {
            return None;
        }
        let rest = l.split(" - ").nth(1)?;
        rest.split(' ').nth(1).map(str::to_string)
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Make a filesystem of `bytes` (at least [`MIN_BYTES`]) in a new sparse file `image` (replacing a
/// leftover one).
fn make_image(image: &Path, bytes: u64) -> std::io::Result<()> {
    let f = std::fs::File::create(image)?;
    f.set_len(bytes.max(MIN_BYTES))?;
    f.sync_all()?;
    drop(f);
    // No reserved blocks (the whole capacity is the claim's), root directory as a plain `mkdir` makes it.
    run(
        "mkfs.ext4",
        &["-q", "-F", "-m", "0", "-E", "root_owner=0:0"]
            .map(std::ffi::OsStr::new)
            .iter()
            .copied()
            .chain([image.as_os_str()])
            .collect::<Vec<_>>(),
    )
}

fn mount_image(image: &Path, at: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(at)?;
    run(
        "mount",
        &[
            "-t".as_ref(),
            "ext4".as_ref(),
            "-o".as_ref(),
            "loop".as_ref(),
            image.as_os_str(),
            at.as_os_str(),
        ],
    )
}

/// Create the volume at `path` as a filesystem of `bytes`, a copy of the directory `clone_from` when set,
/// and mount it. Idempotent: an existing volume is (re)mounted and kept as it is. The filesystem is
/// made (and a clone filled) under a temporary name and renamed into place, so a crash never leaves a
/// half-made volume that looks finished.
///
/// # Errors
/// The failing tool's message, or an I/O error.
pub fn create(path: &Path, bytes: u64, clone_from: Option<&Path>) -> std::io::Result<()> {
    let image = image_of(path);
    if image.exists() {
        return ensure_mounted(path);
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension("making.ext4");
    let staging = path.with_extension("making");
    let _ = unmount(&staging);
    make_image(&tmp, bytes)?;
    mount_image(&tmp, &staging)?;
    // mkfs's lost+found would show up in the pod's volume (and trouble software that wants an empty data
    // directory); e2fsck re-creates it when it needs it.
    let _ = std::fs::remove_dir(staging.join("lost+found"));
    let filled = match clone_from {
        Some(src) => copy_contents(src, &staging),
        None => Ok(()),
    };
    let synced = filled.and_then(|()| std::fs::File::open(&staging)?.sync_all());
    unmount(&staging)?;
    let _ = std::fs::remove_dir(&staging);
    if let Err(e) = synced {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::write(size_file(path), bytes.max(MIN_BYTES).to_string())?;
    std::fs::rename(&tmp, &image)?;
    ensure_mounted(path)
}

/// Copy what is in `from` into the existing directory `to` (see [`crate::volumes::copy_tree`]).
fn copy_contents(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::set_permissions(to, std::fs::metadata(from)?.permissions())?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (ty, dest) = (entry.file_type()?, to.join(entry.file_name()));
        if ty.is_dir() {
            crate::volumes::copy_tree(&entry.path(), &dest)?;
        } else if ty.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &dest)?;
        } else if ty.is_file() {
            std::fs::copy(entry.path(), &dest)?;
        }
    }
    Ok(())
}

/// Mount the volume at `path` if it has a backing file and is not mounted (after a reboot, or a crash
/// between making and mounting). A volume without a backing file is a plain directory: nothing to do.
///
/// # Errors
/// When `mount` fails.
pub fn ensure_mounted(path: &Path) -> std::io::Result<()> {
    let image = image_of(path);
    if !image.exists() || mounted_source(path).is_some() {
        return Ok(());
    }
    mount_image(&image, path)
}

/// The size the volume's filesystem was made or last grown to, kept beside its backing file.
fn size_file(path: &Path) -> PathBuf {
    let mut s = image_of(path).into_os_string();
    s.push(".size");
    PathBuf::from(s)
}

fn recorded_size(path: &Path) -> u64 {
    std::fs::read_to_string(size_file(path))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Grow the volume at `path` to `bytes` (returns whether it grew). Online (`resize2fs` on the mounted
/// loop device) where the kernel lets us, which needs CAP_SYS_RESOURCE; otherwise offline, as upstream's
/// offline expansion does (the claim's `FileSystemResizePending` until a pod restarts): only while no
/// container's mount namespace holds the filesystem, unmounted, checked (`e2fsck -f`), grown, remounted.
///
/// # Errors
/// When a tool fails, or offline growth is needed while a container uses the volume (it is retried on
/// the next pass, and done before the next container using the volume starts).
pub fn grow(path: &Path, bytes: u64) -> std::io::Result<bool> {
    let image = image_of(path);
    let Ok(meta) = std::fs::metadata(&image) else {
        return Ok(false);
    };
    let target = bytes.max(MIN_BYTES);
    let done = recorded_size(path).max(if size_file(path).exists() { 0 } else { meta.len() });
    if done >= target {
        return Ok(false);
    }
    ensure_mounted(path)?;
    let dev = mounted_source(path).ok_or_else(|| std::io::Error::other("volume is not mounted"))?;
    if meta.len() < target {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&image)?
            .set_len(target)?;
        run("losetup", &["--set-capacity".as_ref(), dev.as_ref()])?;
    }
    if run("resize2fs", &[dev.as_ref()]).is_err() {
        if in_use_elsewhere(&dev) {
            return Err(std::io::Error::other(
                "online resize is not permitted here (no CAP_SYS_RESOURCE); the volume grows offline when no container uses it",
            ));
        }
        unmount(path)?;
        // e2fsck exits 1 when it fixed something, which is fine before a resize.
        let fsck = Command::new(tool("e2fsck").unwrap_or_else(|| "e2fsck".into()))
            .args(["-f", "-p"])
            .arg(&image)
            .output()?;
        if fsck.status.code().is_none_or(|c| c > 1) {
            return Err(std::io::Error::other(format!(
                "e2fsck: {}",
                String::from_utf8_lossy(&fsck.stderr).trim()
            )));
        }
        let resized = run("resize2fs", &[image.as_os_str()]);
        mount_image(&image, path)?;
        resized?;
    }
    std::fs::write(size_file(path), target.to_string())?;
    Ok(true)
}

/// Whether a mount namespace other than ours has `dev` mounted (a container using the volume).
fn in_use_elsewhere(dev: &str) -> bool {
    let ours = std::fs::read_link("/proc/self/ns/mnt").ok();
    let mut seen = std::collections::HashSet::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return true;
    };
    for e in rd.flatten() {
        if !e
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        let Ok(ns) = std::fs::read_link(e.path().join("ns/mnt")) else {
            continue;
        };
        if Some(&ns) == ours.as_ref() || !seen.insert(ns) {
            continue;
        }
        let info = std::fs::read_to_string(e.path().join("mountinfo")).unwrap_or_default();
        if info
            .lines()
            .any(|l| l.split(" - ").nth(1).and_then(|r| r.split(' ').nth(1)) == Some(dev))
        {
            return true;
        }
    }
    false
}

/// Unmount whatever is mounted at `path` (nothing when nothing is).
///
/// # Errors
/// When `umount` fails.
pub fn unmount(path: &Path) -> std::io::Result<()> {
    while mounted_source(path).is_some() {
        run("umount", &[path.as_os_str()])?;
    }
    Ok(())
}

/// Remove the volume at `path`: unmount it, then delete its backing file (and the directory, left to the
/// caller).
///
/// # Errors
/// When it cannot be unmounted or the file removed.
pub fn remove(path: &Path) -> std::io::Result<()> {
    unmount(path)?;
    let _ = std::fs::remove_file(size_file(path));
    match std::fs::remove_file(image_of(path)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_path_and_mountinfo_escapes() {
        assert_eq!(
            image_of(Path::new("/d/volumes/pvc-1")),
            PathBuf::from("/d/volumes/pvc-1.ext4")
        );
        assert_eq!(unescape("/a\\040b"), "/a b");
    }

    /// Real filesystem work: root and the tools, else skipped (with `BERTH_TEST_ROOT` set, a failure).
    #[test]
    fn a_volume_is_full_at_its_capacity_grows_online_and_clones() {
        if !available() {
            assert!(
                std::env::var_os("BERTH_TEST_ROOT").is_none(),
                "BERTH_TEST_ROOT is set but loop devices or e2fsprogs are missing"
            );
            eprintln!("skipped: needs root, loop devices and e2fsprogs");
            return;
        }
        let dir = tempfile::tempdir().expect("dir");
        let vol = dir.path().join("pvc-a");
        let cleanup = scopeguard(vol.clone());
        create(&vol, 10 << 20, None).expect("create");
        create(&vol, 10 << 20, None).expect("create again is a no-op");
        assert!(mounted_source(&vol).is_some_and(|s| s.starts_with("/dev/loop")));
        assert!(!vol.join("lost+found").exists());
        // Writing 16 MiB into a 10 MiB volume fails with ENOSPC.
        let mut f = std::fs::File::create(vol.join("big")).expect("file");
        let chunk = vec![7u8; 1 << 20];
        let err = (0..16)
            .try_for_each(|_| std::io::Write::write_all(&mut f, &chunk).and_then(|()| f.sync_data()))
            .expect_err("ENOSPC");
        assert_eq!(err.raw_os_error(), Some(nix::libc::ENOSPC), "{err}");
        drop(f);
        std::fs::remove_file(vol.join("big")).expect("rm");
        std::fs::write(vol.join("keep"), b"data").expect("write");
        // Grown online to 24 MiB: 16 MiB now fit, and the data is still there.
        assert!(grow(&vol, 24 << 20).expect("grow"));
        assert!(!grow(&vol, 24 << 20).expect("grow again"));
        std::fs::write(vol.join("big"), vec![1u8; 16 << 20]).expect("16 MiB fit after growing");
        // A clone is a new filesystem with the source's files.
        let copy = dir.path().join("pvc-b");
        let cleanup_b = scopeguard(copy.clone());
        create(&copy, 30 << 20, Some(&vol)).expect("clone");
        assert_eq!(std::fs::read(copy.join("keep")).expect("cloned"), b"data");
        // Unmounted (as after a reboot), it is mounted again with its data.
        unmount(&vol).expect("umount");
        assert!(!vol.join("keep").exists());
        ensure_mounted(&vol).expect("remount");
        assert_eq!(std::fs::read(vol.join("keep")).expect("kept"), b"data");
        drop((cleanup, cleanup_b));
        assert!(mounted_source(&vol).is_none() && !image_of(&vol).exists());
    }

    struct Guard(PathBuf);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = remove(&self.0);
        }
    }
    fn scopeguard(p: PathBuf) -> Guard {
        Guard(p)
    }
}
