//! Snapshots of the whole store at one revision, for `berth snapshot save|restore|ls` and the server's
//! scheduled snapshots (k3s's `etcd-snapshot`).
//!
//! A snapshot is every key under `/` (the cluster's objects and bootstrap data; etcd's compactor
//! bookkeeping key is left out) read at **one revision** — one redb read transaction on the embedded
//! backend, one etcd range at a fixed revision on etcd — so it is a consistent state of the cluster
//! that some reader could have seen. The same file restores into either backend:
//! - into a fresh embedded store ([`restore_embedded`]): every key keeps its create and mod revisions and
//!   the store's revision is the snapshot's (its history starts there: a watch from before gets 410);
//! - into an empty etcd ([`restore_into`]): every key is written again (etcd's revisions are its own,
//!   so resourceVersions change, as they do after etcd's own `snapshot restore` of another member).
//!
//! k3s saves etcd's own database (the maintenance `Snapshot` stream) and restores it with
//! `--cluster-reset-restore-path`, which rebuilds the member's bbolt file. Berth's default is the
//! key-level file above, which restores into both of its backends alike (Berth has no bbolt writer);
//! on etcd, [`save_etcd`] also takes etcd's own snapshot, for `etcdctl snapshot restore`.
//!
//! File layout (version 1): the line `berth-snapshot v1`, a JSON header line (`revision`, `backend`,
//! `keys`, `created`), then per key the length-prefixed key, create_revision, mod_revision and value
//! (little-endian), then the SHA-256 of everything before it. Files are written 0600 (they hold Secrets)
//! to a temporary name and renamed into place.

use crate::{Error, KeyValue, Result, Revision, Store, backend};
use sha2::Digest;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8] = b"berth-snapshot v1\n";

/// A snapshot's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The revision every key was read at.
    pub revision: Revision,
    /// Which backend it was taken from (`embedded`, `etcd`).
    pub backend: String,
    /// Every key under `/`, ascending.
    pub kvs: Vec<KeyValue>,
}

/// Read every key under `/` at one revision.
///
/// # Errors
/// Store errors.
pub async fn take(store: &Store) -> Result<Snapshot> {
    let list = store.list("/", None, 0).await?;
    Ok(Snapshot {
        revision: list.revision,
        backend: store.backend_name().to_string(),
        kvs: list.kvs,
    })
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u64).to_le_bytes());
    out.extend_from_slice(b);
}

impl Snapshot {
    /// The file's bytes.
    pub fn encode(&self, created: &str) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        let header = serde_json::json!({
            "revision": self.revision, "backend": self.backend, "keys": self.kvs.len(), "created": created,
        });
        out.extend_from_slice(header.to_string().as_bytes());
        out.push(b'\n');
        for kv in &self.kvs {
            put_bytes(&mut out, kv.key.as_bytes());
            out.extend_from_slice(&kv.create_revision.to_le_bytes());
            out.extend_from_slice(&kv.mod_revision.to_le_bytes());
            put_bytes(&mut out, &kv.value);
        }
        let sum = sha2::Sha256::digest(&out);
        out.extend_from_slice(&sum);
        out
    }

    /// Parse a file's bytes.
    ///
    /// # Errors
    /// [`Error::Backend`] when the bytes are not a whole, intact snapshot.
    pub fn decode(bytes: &[u8]) -> Result<Snapshot> {
        let bad = |what: &str| Error::Backend(format!("not a Berth snapshot: {what}"));
        if bytes.len() < MAGIC.len() + 32 || !bytes.starts_with(MAGIC) {
            return Err(bad(
                "no header (an etcd snapshot, `berth snapshot save --format etcd`, is restored with \
                 `etcdctl snapshot restore`, then etcd started on the restored data dir)",
            ));
        }
        let (body, sum) = bytes.split_at(bytes.len() - 32);
        if sha2::Sha256::digest(body).as_slice() != sum {
            return Err(bad("checksum mismatch (truncated or damaged)"));
        }
        let rest = &body[MAGIC.len()..];
        let nl = rest
            .iter()
            .position(|b| *b == b'\n')
            .ok_or_else(|| bad("header"))?;
        let header: serde_json::Value = serde_json::from_slice(&rest[..nl]).map_err(|_| bad("header"))?;
        let mut r = &rest[nl + 1..];
        let mut take = |n: usize| -> Result<&[u8]> {
            if r.len() < n {
                return Err(bad("truncated record"));
            }
            let (a, b) = r.split_at(n);
            r = b;
            Ok(a)
        };
        let n = header["keys"].as_u64().ok_or_else(|| bad("header"))?;
        let mut kvs = Vec::new();
        for _ in 0..n {
            let len = u64::from_le_bytes(take(8)?.try_into().map_err(|_| bad("record"))?);
            let key = String::from_utf8(take(usize::try_from(len).map_err(|_| bad("record"))?)?.to_vec())
                .map_err(|_| bad("key"))?;
            let create_revision = i64::from_le_bytes(take(8)?.try_into().map_err(|_| bad("record"))?);
            let mod_revision = i64::from_le_bytes(take(8)?.try_into().map_err(|_| bad("record"))?);
            let len = u64::from_le_bytes(take(8)?.try_into().map_err(|_| bad("record"))?);
            let value = take(usize::try_from(len).map_err(|_| bad("record"))?)?.to_vec();
            kvs.push(KeyValue {
                key,
                value,
                create_revision,
                mod_revision,
            });
        }
        Ok(Snapshot {
            revision: header["revision"].as_i64().ok_or_else(|| bad("header"))?,
            backend: header["backend"].as_str().unwrap_or("").to_string(),
            kvs,
        })
    }

    /// Read a snapshot file.
    ///
    /// # Errors
    /// I/O errors and [`Snapshot::decode`]'s.
    pub fn read(path: &Path) -> Result<Snapshot> {
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| Error::Backend(format!("{}: {e}", path.display())))?;
        Snapshot::decode(&bytes)
    }
}

/// What [`save`] wrote.
#[derive(Debug, Clone)]
pub struct Saved {
    /// The file.
    pub path: PathBuf,
    /// Its revision.
    pub revision: Revision,
    /// How many keys.
    pub keys: usize,
    /// Its size in bytes.
    pub size: u64,
}

/// Take a snapshot of `store` and write it to `dir/name` (0600, whole or not at all: a temporary file,
/// fsync'd, renamed).
///
/// # Errors
/// Store and I/O errors.
pub async fn save(store: &Store, dir: &Path, name: &str) -> Result<Saved> {
    let snap = take(store).await?;
    let bytes = snap.encode(&jiff::Timestamp::now().to_string());
    let path = dir.join(name);
    write_private(&path, &bytes).map_err(|e| Error::Backend(format!("{}: {e}", path.display())))?;
    Ok(Saved {
        path,
        revision: snap.revision,
        keys: snap.kvs.len(),
        size: bytes.len() as u64,
    })
}

/// etcd's own database snapshot (k3s's format: what `etcdctl snapshot save` takes through the
/// maintenance API) into `dir/name`, written as [`save`] writes; restored with `etcdctl snapshot restore`
/// (`etcdutl` from etcd 3.5), not by `berth snapshot restore`. Its revision is etcd's (`revision` is the
/// store's revision read just before, a lower bound).
///
/// # Errors
/// [`Error::Backend`] on the embedded backend; store and I/O errors.
pub async fn save_etcd(store: &Store, dir: &Path, name: &str) -> Result<Saved> {
    let revision = store.revision().await?;
    let path = dir.join(name);
    let io = |e: std::io::Error| Error::Backend(format!("{}: {e}", path.display()));
    let (tmp, mut f) = create_private(&path).map_err(io)?;
    let size = store.etcd_snapshot(&mut f).await?;
    finish(f, &tmp, &path).map_err(io)?;
    Ok(Saved {
        path,
        revision,
        keys: 0,
        size,
    })
}

/// `<path>.partial`, created 0600 in a 0700 directory.
fn create_private(path: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let tmp = path.with_extension("partial");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    Ok((tmp, f))
}

/// fsync the file, rename it into place, fsync the directory.
fn finish(f: std::fs::File, tmp: &Path, path: &Path) -> std::io::Result<()> {
    f.sync_all()?;
    drop(f);
    std::fs::rename(tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let (tmp, mut f) = create_private(path)?;
    f.write_all(bytes)?;
    finish(f, &tmp, path)
}

/// One snapshot file in a directory.
#[derive(Debug, Clone)]
pub struct Listed {
    /// File name.
    pub name: String,
    /// Full path.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Modification time.
    pub modified: std::time::SystemTime,
}

/// The snapshot files in `dir`, oldest first (a missing directory has none).
///
/// # Errors
/// I/O errors other than a missing directory.
pub fn list(dir: &Path) -> Result<Vec<Listed>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(backend(e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(backend)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".partial") {
            continue;
        }
        let meta = entry.metadata().map_err(backend)?;
        if !meta.is_file() {
            continue;
        }
        out.push(Listed {
            name,
            path: entry.path(),
            size: meta.len(),
            modified: meta.modified().map_err(backend)?,
        });
    }
    out.sort_by(|a, b| a.modified.cmp(&b.modified).then(a.name.cmp(&b.name)));
    Ok(out)
}

/// Keep the newest `retention` files of `dir` whose names start with `prefix`, delete the older ones
/// (k3s's snapshot retention, per name prefix). Returns the deleted names.
///
/// # Errors
/// I/O errors.
pub fn prune(dir: &Path, prefix: &str, retention: usize) -> Result<Vec<String>> {
    let ours: Vec<Listed> = list(dir)?
        .into_iter()
        .filter(|l| l.name.starts_with(prefix))
        .collect();
    let excess = ours.len().saturating_sub(retention);
    let mut gone = Vec::new();
    for l in ours.into_iter().take(excess) {
        std::fs::remove_file(&l.path).map_err(backend)?;
        gone.push(l.name);
    }
    Ok(gone)
}

/// Restore into a new embedded store file at `path` (which must not exist): every key with its
/// revisions, the store's revision and compacted revision at the snapshot's.
///
/// # Errors
/// [`Error::AlreadyExists`] when `path` exists; store errors.
pub fn restore_embedded(path: &Path, snap: &Snapshot) -> Result<()> {
    if path.exists() {
        return Err(Error::AlreadyExists {
            key: path.display().to_string(),
        });
    }
    crate::embedded::restore(path, snap.revision, &snap.kvs)
}

/// Restore into `store`, which must hold no key under `/` (an empty etcd): every key is created again.
///
/// # Errors
/// [`Error::AlreadyExists`] when the store is not empty; store errors.
pub async fn restore_into(store: &Store, snap: &Snapshot) -> Result<()> {
    let existing = store.list("/", None, 1).await?;
    if let Some(kv) = existing.kvs.first() {
        return Err(Error::AlreadyExists { key: kv.key.clone() });
    }
    for kv in &snap.kvs {
        store.create(&kv.key, kv.value.clone()).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_snapshot_taken_during_writes_restores_every_acknowledged_key() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open_embedded(&dir.path().join("a"), crate::Options::default()).expect("store");
        let writer = {
            let store = store.clone();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..400 {
                    let k = format!("/registry/x/{i:04}");
                    if store.create(&k, vec![b'v'; i % 7]).await.is_ok() {
                        acked.push(k);
                    }
                }
                acked
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let saved = save(&store, &dir.path().join("snaps"), "s1").await.expect("save");
        let acked = writer.await.expect("writer");
        let snap = Snapshot::read(&saved.path).expect("read");
        assert_eq!(snap.kvs.len(), saved.keys);
        // One revision: exactly the keys written at or below it, and nothing newer.
        for kv in &snap.kvs {
            assert!(kv.mod_revision <= snap.revision);
        }
        let all = store.list("/", None, 0).await.expect("list");
        let expected: Vec<_> = all
            .kvs
            .iter()
            .filter(|kv| kv.mod_revision <= snap.revision)
            .cloned()
            .collect();
        assert_eq!(snap.kvs, expected);
        assert_eq!(acked.len(), 400);

        restore_embedded(&dir.path().join("b"), &snap).expect("restore");
        assert!(restore_embedded(&dir.path().join("b"), &snap).is_err());
        let b = Store::open_embedded(&dir.path().join("b"), crate::Options::default()).expect("b");
        assert_eq!(b.revision().await.expect("rev"), snap.revision);
        assert_eq!(b.list("/", None, 0).await.expect("list").kvs, snap.kvs);
        // Writes go on after the snapshot's revision.
        let kv = b.create("/registry/x/new", vec![]).await.expect("create");
        assert_eq!(kv.mod_revision, snap.revision + 1);

        // A damaged file is refused.
        let mut bytes = std::fs::read(&saved.path).expect("bytes");
        let n = bytes.len();
        bytes[n / 2] ^= 1;
        assert!(Snapshot::decode(&bytes).is_err());

        // Retention keeps the newest.
        for i in 0..4 {
            save(&store, &dir.path().join("snaps"), &format!("sched-{i}"))
                .await
                .expect("save");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let gone = prune(&dir.path().join("snaps"), "sched-", 2).expect("prune");
        assert_eq!(gone, vec!["sched-0", "sched-1"]);
        let names: Vec<_> = list(&dir.path().join("snaps"))
            .expect("ls")
            .into_iter()
            .map(|l| l.name)
            .collect();
        assert_eq!(names, vec!["s1", "sched-2", "sched-3"]);
    }
}
