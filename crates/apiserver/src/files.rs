//! Files only their owner may read (keys, certificates, kubeconfigs, the encryption configuration),
//! written whole or not at all.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Write `contents` to `path` with mode 0600: into `<path>.tmp`, fsync'd, then renamed into place, so a
/// crash leaves the old file or the new one, never a torn one.
///
/// # Errors
/// The first I/O error (creating, writing, syncing or renaming).
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
