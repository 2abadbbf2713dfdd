//! The node's content-addressed image store under `<data-dir>/agent/images`:
//!
//! ```text
//! blobs/sha256/<hex>     every manifest, config and layer, checked against its digest
//! refs.json              {"docker.io/library/busybox:latest": "sha256:<manifest digest>", …}
//! rootfs/<hex>/          an image's layers applied in order (whiteouts honoured), made on first use
//! ```
//!
//! [`ImageStore::import`] takes an OCI image-layout archive (`index.json` + `blobs/`, names from
//! `io.containerd.image.name` or a full `org.opencontainers.image.ref.name`) or a `docker save` archive
//! (`manifest.json` with `RepoTags`), as k3s's air-gap import does. Names are normalised as Docker does
//! ([`normalize`]). Imports may run while the agent runs: `refs.json` is replaced atomically under a lock.

use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Image store errors (all carry the path or name they are about).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// The archive or a blob is not what it claims to be.
    #[error("{0}")]
    Invalid(String),
    /// No image of that name.
    #[error("image {0:?} not found")]
    NotFound(String),
}

fn io(what: impl AsRef<Path>) -> impl FnOnce(std::io::Error) -> Error {
    let w = what.as_ref().display().to_string();
    move |e| Error::Io(w, e)
}

/// Docker's reference normalisation: `busybox` → `docker.io/library/busybox:latest`,
/// `me/app:1` → `docker.io/me/app:1`, `registry:5000/x` → `registry:5000/x:latest`; digests are kept.
pub fn normalize(name: &str) -> String {
    let name = name.trim();
    let (first, rest) = match name.split_once('/') {
        Some((f, r)) => (f, Some(r)),
        None => (name, None),
    };
    let domain_like = |s: &str| s.contains('.') || s.contains(':') || s == "localhost";
    let full = match rest {
        None => format!("docker.io/library/{name}"),
        Some(_) if domain_like(first) => name.to_string(),
        Some(_) => format!("docker.io/{name}"),
    };
    let full = full.replacen("index.docker.io/", "docker.io/", 1);
    if full.contains('@') {
        return full;
    }
    let last = full.rsplit('/').next().unwrap_or("");
    if last.contains(':') {
        full
    } else {
        format!("{full}:latest")
    }
}

/// What a container needs from an image's config.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageConfig {
    /// `Entrypoint`.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// `Cmd`.
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    /// `Env` (`K=V`).
    #[serde(default)]
    pub env: Option<Vec<String>>,
    /// `WorkingDir`.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// `User`.
    #[serde(default)]
    pub user: Option<String>,
}

/// One stored image name.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageEntry {
    /// Normalised name.
    pub name: String,
    /// Manifest digest (`sha256:…`).
    pub digest: String,
    /// Sum of the layer sizes in bytes (compressed, as stored).
    pub size: u64,
}

/// The store at `<data-dir>/agent/images`.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
}

fn sha256_file(p: &Path) -> Result<String, Error> {
    let mut f = std::fs::File::open(p).map_err(io(p))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(io(p))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("sha256:{:x}", h.finalize()))
}

fn hex_of(digest: &str) -> Result<&str, Error> {
    digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| Error::Invalid(format!("unsupported digest {digest:?}")))
}

impl ImageStore {
    /// Open (creating) the store under `data_dir`.
    ///
    /// # Errors
    /// [`Error::Io`] when the directories cannot be made.
    pub fn open(data_dir: &Path) -> Result<Self, Error> {
        let root = data_dir.join("agent/images");
        for d in ["blobs/sha256", "rootfs", "tmp"] {
            std::fs::create_dir_all(root.join(d)).map_err(io(root.join(d)))?;
        }
        Ok(ImageStore { root })
    }

    fn blob(&self, digest: &str) -> Result<PathBuf, Error> {
        Ok(self.root.join("blobs/sha256").join(hex_of(digest)?))
    }

    fn read_json(&self, digest: &str) -> Result<Value, Error> {
        let p = self.blob(digest)?;
        let bytes = std::fs::read(&p).map_err(io(&p))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Invalid(format!("{digest}: {e}")))
    }

    /// Move a file into the blob store after checking (or computing) its digest; returns the digest.
    fn put_blob(&self, file: &Path, expected: Option<&str>) -> Result<String, Error> {
        let digest = sha256_file(file)?;
        if let Some(e) = expected
            && e != digest
        {
            return Err(Error::Invalid(format!(
                "blob {} has digest {digest}, expected {e}",
                file.display()
            )));
        }
        let dest = self.blob(&digest)?;
        if !dest.exists() {
            std::fs::rename(file, &dest)
                .or_else(|_| std::fs::copy(file, &dest).map(|_| ()))
                .map_err(io(&dest))?;
        }
        Ok(digest)
    }

    fn with_refs<T>(&self, f: impl FnOnce(&mut BTreeMap<String, String>) -> T) -> Result<T, Error> {
        let lock_path = self.root.join("refs.lock");
        let lock = std::fs::File::create(&lock_path).map_err(io(&lock_path))?;
        lock.lock().map_err(io(&lock_path))?;
        let path = self.root.join("refs.json");
        let mut refs: BTreeMap<String, String> = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| Error::Invalid(format!("refs.json: {e}")))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(Error::Io(path.display().to_string(), e)),
        };
        let before = refs.clone();
        let out = f(&mut refs);
        // A lookup changes nothing: only a change is written (a start reads the refs several times).
        if refs == before {
            return Ok(out);
        }
        let tmp = self.root.join("refs.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&refs).unwrap_or_default()).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        Ok(out)
    }

    /// Import an OCI image-layout or `docker save` archive (plain tar, or gzip-compressed); returns the
    /// (name, manifest digest) pairs it stored.
    ///
    /// # Errors
    /// [`Error::Invalid`] for an archive that is neither format, a blob whose digest does not match, or
    /// an archive without any named image; [`Error::Io`] for file errors.
    pub fn import(&self, archive: &Path) -> Result<Vec<(String, String)>, Error> {
        let tmp = self.root.join("tmp").join(format!(
            "import-{}-{}",
            std::process::id(),
            jiff::Timestamp::now().as_nanosecond()
        ));
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        let result = (|| {
            let f = std::fs::File::open(archive).map_err(io(archive))?;
            let mut ar = tar::Archive::new(decompress(std::io::BufReader::new(f)).map_err(io(archive))?);
            ar.set_preserve_permissions(false);
            ar.unpack(&tmp).map_err(io(archive))?;
            if tmp.join("index.json").exists() {
                self.import_oci(&tmp)
            } else if tmp.join("manifest.json").exists() {
                self.import_docker(&tmp)
            } else {
                Err(Error::Invalid(format!(
                    "{}: neither an OCI image layout (index.json) nor a docker save archive (manifest.json)",
                    archive.display()
                )))
            }
        })();
        let _ = std::fs::remove_dir_all(&tmp);
        let named = result?;
        if named.is_empty() {
            return Err(Error::Invalid(format!(
                "{}: no named image in the archive",
                archive.display()
            )));
        }
        self.with_refs(|refs| {
            for (n, d) in &named {
                refs.insert(n.clone(), d.clone());
            }
        })?;
        Ok(named)
    }

    fn import_oci(&self, dir: &Path) -> Result<Vec<(String, String)>, Error> {
        let index: Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).map_err(io(dir))?)
            .map_err(|e| Error::Invalid(format!("index.json: {e}")))?;
        // Every blob first (digest-checked), then the names.
        let blobs = dir.join("blobs/sha256");
        if let Ok(rd) = std::fs::read_dir(&blobs) {
            for e in rd.flatten() {
                let expected = format!("sha256:{}", e.file_name().to_string_lossy());
                self.put_blob(&e.path(), Some(&expected))?;
            }
        }
        let mut named = Vec::new();
        for m in index["manifests"].as_array().into_iter().flatten() {
            let ann = &m["annotations"];
            let name = ann["io.containerd.image.name"]
                .as_str()
                .or_else(|| {
                    ann["org.opencontainers.image.ref.name"]
                        .as_str()
                        .filter(|n| n.contains('/') || n.contains(':'))
                })
                .map(normalize);
            let Some(name) = name else { continue };
            let digest = m["digest"].as_str().unwrap_or_default().to_string();
            let digest = self.platform_manifest(&digest)?;
            named.push((name, digest));
        }
        Ok(named)
    }

    /// For an index (multi-platform), the linux/<this arch> manifest; else the manifest itself.
    fn platform_manifest(&self, digest: &str) -> Result<String, Error> {
        let doc = self.read_json(digest)?;
        let Some(list) = doc["manifests"].as_array() else {
            return Ok(digest.to_string());
        };
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            a => a,
        };
        let pick = list
            .iter()
            .find(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == arch)
            .or_else(|| list.first())
            .and_then(|m| m["digest"].as_str())
            .ok_or_else(|| Error::Invalid(format!("{digest}: empty image index")))?;
        self.platform_manifest(pick)
    }

    fn import_docker(&self, dir: &Path) -> Result<Vec<(String, String)>, Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Entry {
            config: String,
            #[serde(default)]
            repo_tags: Option<Vec<String>>,
            layers: Vec<String>,
        }
        let entries: Vec<Entry> =
            serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).map_err(io(dir))?)
                .map_err(|e| Error::Invalid(format!("manifest.json: {e}")))?;
        let mut named = Vec::new();
        for e in entries {
            let clean = |p: &str| -> Result<PathBuf, Error> {
                if p.split('/').any(|c| c == "..") || p.starts_with('/') {
                    return Err(Error::Invalid(format!("manifest.json: bad path {p:?}")));
                }
                Ok(dir.join(p))
            };
            let config_path = clean(&e.config)?;
            let config_size = std::fs::metadata(&config_path).map_err(io(&config_path))?.len();
            let config = self.put_blob(&config_path, None)?;
            let mut layers = Vec::new();
            for l in &e.layers {
                let p = clean(l)?;
                let size = std::fs::metadata(&p).map_err(io(&p))?.len();
                // A layer listed twice is stored once; its path is gone after the first move.
                let digest = if p.exists() {
                    self.put_blob(&p, None)?
                } else {
                    continue;
                };
                layers.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": size}));
            }
            let manifest = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_size},
                "layers": layers});
            let mpath = dir.join("berth-manifest.json");
            std::fs::write(&mpath, serde_json::to_vec(&manifest).unwrap_or_default()).map_err(io(&mpath))?;
            let digest = self.put_blob(&mpath, None)?;
            for t in e.repo_tags.into_iter().flatten() {
                named.push((normalize(&t), digest.clone()));
            }
        }
        Ok(named)
    }

    /// Store an image pulled from a registry (config bytes, and `(mediaType, bytes)` per layer as served)
    /// under `name`; returns the digest of the OCI manifest written for it (the registry's own manifest
    /// may have been a Docker v2 one or an index, so the digests differ).
    ///
    /// # Errors
    /// [`Error::Io`] when a blob cannot be written.
    pub fn store_pulled(
        &self,
        name: &str,
        config: &[u8],
        layers: &[(String, Vec<u8>)],
    ) -> Result<String, Error> {
        let tmp = self.root.join("tmp").join(format!(
            "pull-{}-{}",
            std::process::id(),
            jiff::Timestamp::now().as_nanosecond()
        ));
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        let put = |data: &[u8], n: usize| -> Result<(String, u64), Error> {
            let p = tmp.join(n.to_string());
            std::fs::write(&p, data).map_err(io(&p))?;
            Ok((self.put_blob(&p, None)?, data.len() as u64))
        };
        let result = (|| {
            let (config_digest, config_size) = put(config, 0)?;
            let mut descs = Vec::new();
            for (i, (media_type, l)) in layers.iter().enumerate() {
                let (d, size) = put(l, i + 1)?;
                descs.push(json!({"mediaType": media_type, "digest": d, "size": size}));
            }
            let manifest = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
                "layers": descs});
            let (digest, _) = put(&serde_json::to_vec(&manifest).unwrap_or_default(), usize::MAX)?;
            Ok::<_, Error>(digest)
        })();
        let _ = std::fs::remove_dir_all(&tmp);
        let digest = result?;
        let n = normalize(name);
        self.with_refs(|r| {
            r.insert(n, digest.clone());
        })?;
        Ok(digest)
    }

    /// Every stored name.
    ///
    /// # Errors
    /// [`Error`] when `refs.json` or a manifest cannot be read.
    pub fn list(&self) -> Result<Vec<ImageEntry>, Error> {
        let refs = self.with_refs(|r| r.clone())?;
        let mut out = Vec::new();
        for (name, digest) in refs {
            let m = self.read_json(&digest)?;
            let size = m["layers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|l| l["size"].as_u64())
                .sum();
            out.push(ImageEntry { name, digest, size });
        }
        Ok(out)
    }

    /// Remove a name (the blobs stay until no name uses them; they are then removed too).
    ///
    /// # Errors
    /// [`Error::NotFound`] when no such name is stored.
    pub fn remove(&self, name: &str) -> Result<(), Error> {
        let name = normalize(name);
        let removed = self.with_refs(|r| r.remove(&name))?;
        let Some(digest) = removed else {
            return Err(Error::NotFound(name));
        };
        let still_used = self.with_refs(|r| r.values().any(|d| d == &digest))?;
        if !still_used {
            let _ = std::fs::remove_dir_all(self.root.join("rootfs").join(hex_of(&digest)?));
        }
        Ok(())
    }

    /// The manifest digest of `image` (any spelling Docker accepts), if stored.
    pub fn resolve(&self, image: &str) -> Option<String> {
        let name = normalize(image);
        self.with_refs(|r| r.get(&name).cloned()).ok().flatten()
    }

    /// The container-relevant part of an image's config.
    ///
    /// # Errors
    /// [`Error`] when the manifest or config blob is missing or malformed.
    pub fn config(&self, digest: &str) -> Result<ImageConfig, Error> {
        let m = self.read_json(digest)?;
        let cfg_digest = m["config"]["digest"]
            .as_str()
            .ok_or_else(|| Error::Invalid(format!("{digest}: manifest without config")))?;
        let cfg = self.read_json(cfg_digest)?;
        serde_json::from_value(cfg["config"].clone())
            .or_else(|_| Ok(ImageConfig::default()))
            .map_err(|e: serde_json::Error| Error::Invalid(e.to_string()))
    }

    /// The image's root filesystem, its layers applied in order; made once, then shared read-only by every
    /// container of the image (each gets its own overlay upper directory).
    ///
    /// # Errors
    /// [`Error`] when a layer is missing, corrupt or not a tar stream.
    pub fn rootfs(&self, digest: &str) -> Result<PathBuf, Error> {
        let dest = self.root.join("rootfs").join(hex_of(digest)?);
        if dest.is_dir() {
            return Ok(dest);
        }
        let m = self.read_json(digest)?;
        let tmp = self.root.join("tmp").join(format!(
            "rootfs-{}-{}",
            std::process::id(),
            jiff::Timestamp::now().as_nanosecond()
        ));
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        let result = (|| {
            for l in m["layers"].as_array().into_iter().flatten() {
                let ld = l["digest"].as_str().unwrap_or_default();
                apply_layer(&self.blob(ld)?, &tmp)?;
            }
            Ok::<_, Error>(())
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        match std::fs::rename(&tmp, &dest) {
            Ok(()) => Ok(dest),
            // Another agent pass made it first.
            Err(_) if dest.is_dir() => {
                let _ = std::fs::remove_dir_all(&tmp);
                Ok(dest)
            }
            Err(e) => Err(Error::Io(dest.display().to_string(), e)),
        }
    }
}

/// Write a minimal `docker save` archive named `busybox:test` into `dir`: the host's static busybox
/// (Debian `busybox-static`, `/usr/bin/busybox`) with its common applets as symlinks. Used by
/// `berth bench` and the end-to-end tests to run real containers without a registry.
///
/// # Errors
/// [`Error::Io`] when `/usr/bin/busybox` is missing or the archive cannot be written.
pub fn busybox_archive(dir: &Path) -> Result<PathBuf, Error> {
    let out = dir.join("busybox-test.tar");
    let w = |e: std::io::Error| Error::Io(out.display().to_string(), e);
    let (layer, config) = busybox_layer()?;
    let manifest = br#"[{"Config":"config.json","RepoTags":["busybox:test"],"Layers":["layer.tar"]}]"#;
    let mut ar = tar::Builder::new(Vec::new());
    for (p, d) in [
        ("manifest.json", &manifest[..]),
        ("config.json", config),
        ("layer.tar", &layer[..]),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(d.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        ar.append_data(&mut h, p, d).map_err(w)?;
    }
    std::fs::write(&out, ar.into_inner().map_err(w)?).map_err(w)?;
    Ok(out)
}

/// The busybox test image's single layer (an uncompressed tar) and its image config JSON; see
/// [`busybox_archive`].
///
/// # Errors
/// [`Error::Io`] when `/usr/bin/busybox` is missing.
pub fn busybox_layer() -> Result<(Vec<u8>, &'static [u8]), Error> {
    let busybox = std::fs::read("/usr/bin/busybox").map_err(io("/usr/bin/busybox"))?;
    let add = |b: &mut tar::Builder<Vec<u8>>,
               path: &str,
               ty: tar::EntryType,
               data: &[u8],
               mode: u32,
               link: Option<&str>| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(ty);
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        if let Some(l) = link {
            let _ = h.set_link_name(l);
        }
        b.append_data(&mut h, path, data)
    };
    let mut layer = tar::Builder::new(Vec::new());
    let w = |e: std::io::Error| Error::Io("busybox layer".into(), e);
    for d in ["bin/", "etc/", "tmp/", "data/"] {
        add(&mut layer, d, tar::EntryType::Directory, &[], 0o755, None).map_err(w)?;
    }
    add(
        &mut layer,
        "bin/busybox",
        tar::EntryType::Regular,
        &busybox,
        0o755,
        None,
    )
    .map_err(w)?;
    for applet in [
        "sh",
        "sleep",
        "hostname",
        "cat",
        "echo",
        "ls",
        "id",
        "date",
        "kill",
        "true",
        "false",
        "nc",
        "httpd",
        "wget",
        "tar",
        "mkdir",
        "rm",
        "test",
        "stty",
        "env",
        "dd",
        "df",
        "mknod",
        "head",
        "wc",
        "grep",
        "mount",
        "unshare",
        "adjtimex",
        "ssl_client",
        "timeout",
        "touch",
        "stat",
        "awk",
    ] {
        add(
            &mut layer,
            &format!("bin/{applet}"),
            tar::EntryType::Symlink,
            &[],
            0o777,
            Some("busybox"),
        )
        .map_err(w)?;
    }
    let layer = layer.into_inner().map_err(w)?;
    let config = br#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["/bin/sh"]}}"#;
    Ok((layer, config))
}

/// A reader that undoes gzip or zstd compression, detected by magic bytes.
fn decompress<R: std::io::BufRead + 'static>(mut r: R) -> std::io::Result<Box<dyn Read>> {
    let head = r.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(r)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Box::new(zstd::stream::read::Decoder::with_buffer(r)?))
    } else {
        Ok(Box::new(r))
    }
}

fn open_layer(layer: &Path) -> Result<tar::Archive<Box<dyn Read>>, Error> {
    let f = std::fs::File::open(layer).map_err(io(layer))?;
    let mut ar = tar::Archive::new(decompress(std::io::BufReader::new(f)).map_err(io(layer))?);
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(true);
    ar.set_unpack_xattrs(false);
    ar.set_overwrite(true);
    Ok(ar)
}

/// Apply one layer onto `root` as the OCI image spec says ("Applying changesets"): first its whiteouts
/// (`.wh.<name>` removes `<name>` from lower layers, `.wh..wh..opq` empties its directory), then its entries.
/// Paths that would leave `root` are refused by `tar`'s `unpack_in`; device nodes are skipped (containers
/// get their `/dev` from the agent).
///
/// # Errors
/// [`Error::Io`] naming the layer.
pub fn apply_layer(layer: &Path, root: &Path) -> Result<(), Error> {
    let bad = |e: std::io::Error| Error::Io(layer.display().to_string(), e);
    // Pass 1: whiteouts.
    let mut ar = open_layer(layer)?;
    for entry in ar.entries().map_err(bad)? {
        let entry = entry.map_err(bad)?;
        let path = entry.path().map_err(bad)?.into_owned();
        let Some(file) = path.file_name().and_then(|f| f.to_str()) else {
            continue;
        };
        let parent = path.parent().unwrap_or(Path::new(""));
        if parent
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir))
        {
            continue;
        }
        if file == ".wh..wh..opq" {
            if let Ok(rd) = std::fs::read_dir(root.join(parent)) {
                for e in rd.flatten() {
                    remove_any(&e.path());
                }
            }
        } else if let Some(target) = file.strip_prefix(".wh.") {
            remove_any(&root.join(parent).join(target));
        }
    }
    // Pass 2: everything else.
    let mut ar = open_layer(layer)?;
    for entry in ar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let path = entry.path().map_err(bad)?.into_owned();
        let is_whiteout = path
            .file_name()
            .and_then(|f| f.to_str())
            .is_some_and(|f| f.starts_with(".wh."));
        let ty = entry.header().entry_type();
        if is_whiteout || ty.is_character_special() || ty.is_block_special() || ty.is_fifo() {
            continue;
        }
        // A file replacing a directory (or the reverse) replaces it.
        let target = root.join(&path);
        if let Ok(meta) = std::fs::symlink_metadata(&target)
            && (meta.is_dir() != ty.is_dir())
        {
            remove_any(&target);
        }
        entry.unpack_in(root).map_err(bad)?;
    }
    Ok(())
}

fn remove_any(p: &Path) {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => {
            let _ = std::fs::remove_dir_all(p);
        }
        Ok(_) => {
            let _ = std::fs::remove_file(p);
        }
        Err(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised_as_docker_does() {
        assert_eq!(normalize("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(normalize("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(normalize("me/app"), "docker.io/me/app:latest");
        assert_eq!(
            normalize("k8s.gcr.io/nginx-slim:0.8"),
            "k8s.gcr.io/nginx-slim:0.8"
        );
        assert_eq!(normalize("localhost/x"), "localhost/x:latest");
        assert_eq!(normalize("registry:5000/x"), "registry:5000/x:latest");
        assert_eq!(
            normalize("index.docker.io/library/nginx"),
            "docker.io/library/nginx:latest"
        );
        assert_eq!(
            normalize("busybox@sha256:abc"),
            "docker.io/library/busybox@sha256:abc"
        );
    }

    /// A tar with the given (path, contents) regular files; `None` contents make a directory.
    fn tar_of(entries: &[(&str, Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            match data {
                Some(d) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(d.len() as u64);
                    h.set_mode(0o644);
                    b.append_data(&mut h, path, d.as_bytes()).expect("append");
                }
                None => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    h.set_mode(0o755);
                    b.append_data(&mut h, path, std::io::empty()).expect("append");
                }
            }
        }
        b.into_inner().expect("tar")
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).expect("gz");
        e.finish().expect("gz")
    }

    fn sha(data: &[u8]) -> String {
        format!("sha256:{:x}", Sha256::digest(data))
    }

    /// An OCI layout archive of two layers (the second with a whiteout and an opaque directory).
    fn oci_archive(dir: &Path, name: &str) -> PathBuf {
        let l1 = gzip(&tar_of(&[
            ("bin/", None),
            ("bin/sh", Some("shell")),
            ("etc/", None),
            ("etc/old", Some("gone")),
            ("var/", None),
            ("var/cache/", None),
            ("var/cache/a", Some("a")),
        ]));
        let l2 = zstd::encode_all(
            &tar_of(&[
                ("etc/.wh.old", Some("")),
                ("var/cache/.wh..wh..opq", Some("")),
                ("var/cache/b", Some("b")),
            ])[..],
            0,
        )
        .expect("zstd");
        let config = serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux",
            "config": {"Entrypoint": ["/bin/sh"], "Cmd": ["-c", "true"], "Env": ["PATH=/bin"], "WorkingDir": "/"}}))
        .expect("config");
        let manifest = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(&config), "size": config.len()},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha(&l1), "size": l1.len()},
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": sha(&l2), "size": l2.len()}]}))
        .expect("manifest");
        let index = serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(&manifest), "size": manifest.len(),
             "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": "latest"}}]}))
        .expect("index");
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |path: &str, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, path, data).expect("append");
        };
        add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
        add("index.json", &index);
        for blob in [&l1, &l2, &config, &manifest] {
            add(&format!("blobs/sha256/{}", &sha(blob)[7..]), blob);
        }
        let path = dir.join("image.tar");
        std::fs::write(&path, b.into_inner().expect("tar")).expect("write archive");
        path
    }

    #[test]
    fn oci_archive_imports_and_its_rootfs_honours_whiteouts_gzip_and_zstd() {
        let dir = tempfile::tempdir().expect("dir");
        let store = ImageStore::open(dir.path()).expect("open");
        let archive = oci_archive(dir.path(), "docker.io/library/tiny:1");
        let named = store.import(&archive).expect("import");
        assert_eq!(named[0].0, "docker.io/library/tiny:1");
        let digest = store.resolve("tiny:1").expect("resolvable by its short name");
        let cfg = store.config(&digest).expect("config");
        assert_eq!(cfg.entrypoint, Some(vec!["/bin/sh".to_string()]));
        let root = store.rootfs(&digest).expect("rootfs");
        assert_eq!(std::fs::read_to_string(root.join("bin/sh")).expect("sh"), "shell");
        assert!(!root.join("etc/old").exists(), "whiteout removed it");
        assert!(
            !root.join("var/cache/a").exists(),
            "opaque dir hid the lower layer"
        );
        assert!(root.join("var/cache/b").exists());
        assert!(!root.join("etc/.wh.old").exists());
        assert_eq!(store.list().expect("ls").len(), 1);
        store.remove("tiny:1").expect("rm");
        assert!(store.resolve("tiny:1").is_none());
        assert!(matches!(store.remove("tiny:1"), Err(Error::NotFound(_))));
    }

    #[test]
    fn docker_save_archive_imports_by_repo_tag_and_bad_archives_are_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let store = ImageStore::open(dir.path()).expect("open");
        let layer = tar_of(&[("hello", Some("world"))]);
        let config = br#"{"config":{"Cmd":["/hello"]}}"#;
        let manifest = serde_json::to_vec(
            &json!([{"Config": "cfg.json", "RepoTags": ["hello:2"], "Layers": ["l1/layer.tar"]}]),
        )
        .expect("manifest");
        let mut b = tar::Builder::new(Vec::new());
        for (p, d) in [
            ("manifest.json", &manifest[..]),
            ("cfg.json", &config[..]),
            ("l1/layer.tar", &layer[..]),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_size(d.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, p, d).expect("append");
        }
        let path = dir.path().join("save.tar");
        std::fs::write(&path, b.into_inner().expect("tar")).expect("write");
        let named = store.import(&path).expect("import");
        assert_eq!(named[0].0, "docker.io/library/hello:2");
        let root = store.rootfs(&named[0].1).expect("rootfs");
        assert_eq!(
            std::fs::read_to_string(root.join("hello")).expect("file"),
            "world"
        );
        let junk = dir.path().join("junk.tar");
        std::fs::write(&junk, tar_of(&[("x", Some("y"))])).expect("write");
        assert!(matches!(store.import(&junk), Err(Error::Invalid(_))));
    }
}
