//! The image store's unpacked rootfs equals what `umoci unpack` (the OCI reference unpacker, Debian
//! `umoci`) makes of the same OCI image: three layers (gzip and plain) with nested directories, file
//! modes including setuid, symlinks, a hard link, a file replaced by a directory, whiteouts of a file and a
//! directory, and an opaque directory. Compared entry by entry: type, permission bits, contents, link
//! targets, and hard links sharing an inode. Skipped without `/usr/bin/umoci`, unless `BERTH_TEST_ROOT`.

use sha2::Digest;
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

enum E<'a> {
    Dir(&'a str, u32),
    File(&'a str, u32, &'a str),
    Link(&'a str, &'a str),
    Hard(&'a str, &'a str),
}

fn layer(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        let (path, data): (&str, &[u8]) = match e {
            E::Dir(p, mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                (p, b"")
            }
            E::File(p, mode, d) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                (p, d.as_bytes())
            }
            E::Link(p, to) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_link_name(to).expect("link");
                (p, b"")
            }
            E::Hard(p, to) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                h.set_link_name(to).expect("link");
                (p, b"")
            }
        };
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, data).expect("append");
    }
    b.into_inner().expect("tar")
}

fn sha(d: &[u8]) -> String {
    format!("sha256:{:x}", sha2::Sha256::digest(d))
}

/// Write an OCI image layout into `dir` (tagged `latest`).
fn write_layout(dir: &Path) {
    let l1 = layer(&[
        E::Dir("bin", 0o755),
        E::File("bin/tool", 0o4755, "setuid tool"),
        E::Link("bin/t", "tool"),
        E::Dir("etc", 0o755),
        E::File("etc/secret", 0o600, "s"),
        E::File("etc/old", 0o644, "gone later"),
        E::Hard("etc/old-link", "etc/secret"),
        E::Dir("var", 0o755),
        E::Dir("var/cache", 0o700),
        E::File("var/cache/a", 0o644, "a"),
        E::Dir("opt", 0o755),
        E::Dir("opt/gone", 0o755),
        E::File("opt/gone/x", 0o644, "x"),
        E::File("srv", 0o644, "a file, then a directory"),
    ]);
    let l2 = layer(&[
        E::File("etc/.wh.old", 0o644, ""),
        E::File("opt/.wh.gone", 0o644, ""),
        E::File("var/cache/.wh..wh..opq", 0o644, ""),
        E::File("var/cache/b", 0o640, "b"),
        E::Dir("srv", 0o750),
        E::File("srv/data", 0o644, "d"),
    ]);
    let l3 = layer(&[
        E::File("bin/tool", 0o755, "replaced"),
        E::Link("etc/abs", "/etc/secret"),
        E::Dir("empty", 0o1777),
    ]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&l1).expect("gz");
    let l1z = gz.finish().expect("gz");
    // (umoci 0.4.7, Debian's, has no zstd: that case is covered by the image module's own tests.)
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&l2).expect("gz");
    let l2z = gz.finish().expect("gz");
    let config = serde_json::to_vec(&serde_json::json!({"architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/tool"]},
        "rootfs": {"type": "layers", "diff_ids": [sha(&l1), sha(&l2), sha(&l3)]}}))
    .expect("config");
    let manifest = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(&config), "size": config.len()},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha(&l1z), "size": l1z.len()},
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha(&l2z), "size": l2z.len()},
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(&l3), "size": l3.len()}]}))
    .expect("manifest");
    let index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(&manifest), "size": manifest.len(),
         "annotations": {"org.opencontainers.image.ref.name": "latest", "io.containerd.image.name": "example.com/umoci-test:latest"}}]}))
    .expect("index");
    std::fs::create_dir_all(dir.join("blobs/sha256")).expect("mkdir");
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).expect("w");
    std::fs::write(dir.join("index.json"), index).expect("w");
    for blob in [&l1z, &l2z, &l3, &config, &manifest] {
        std::fs::write(dir.join("blobs/sha256").join(&sha(blob)[7..]), blob).expect("w");
    }
}

/// Every entry under `root`: relative path → (kind, mode bits, contents or link target).
fn tree(root: &Path) -> BTreeMap<String, (char, u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).expect("meta");
            let rel = p.strip_prefix(root).expect("rel").to_string_lossy().into_owned();
            let mode = m.permissions().mode() & 0o7777;
            let entry = if m.file_type().is_symlink() {
                (
                    'l',
                    0,
                    std::fs::read_link(&p)
                        .expect("link")
                        .into_os_string()
                        .into_encoded_bytes(),
                )
            } else if m.is_dir() {
                stack.push(p.clone());
                ('d', mode, Vec::new())
            } else {
                ('f', mode, std::fs::read(&p).expect("read"))
            };
            out.insert(rel, entry);
        }
    }
    out
}

#[test]
fn unpacked_rootfs_matches_umoci_unpack() {
    let umoci = Path::new("/usr/bin/umoci");
    if !umoci.exists() {
        assert!(
            std::env::var_os("BERTH_TEST_ROOT").is_none(),
            "BERTH_TEST_ROOT is set but /usr/bin/umoci (Debian umoci) is missing"
        );
        eprintln!("skipped: needs /usr/bin/umoci");
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let layout = dir.path().join("layout");
    write_layout(&layout);

    // umoci's rootfs (rootless keeps it runnable without root; modes and contents are what we compare).
    let bundle = dir.path().join("bundle");
    let out = std::process::Command::new(umoci)
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:latest", layout.display()))
        .arg(&bundle)
        .output()
        .expect("umoci");
    assert!(
        out.status.success(),
        "umoci: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs = tree(&bundle.join("rootfs"));

    // Ours, from an OCI-layout archive of the same directory.
    let archive = dir.path().join("image.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&archive).expect("archive"));
    b.append_dir_all(".", &layout).expect("tar layout");
    b.finish().expect("tar");
    drop(b);
    let data = dir.path().join("data");
    let store = agent::image::ImageStore::open(&data).expect("store");
    let named = store.import(&archive).expect("import");
    let digest = named[0].1.clone();
    let root = store.rootfs(&digest).expect("rootfs");
    let ours = tree(&root);

    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>(),
        "the same paths"
    );
    for (path, t) in &theirs {
        assert_eq!(&ours[path], t, "{path}");
    }
    // The hard link shares its target's inode in both.
    let ino = |r: &Path, p: &str| std::fs::metadata(r.join(p)).expect("meta").ino();
    assert_eq!(ino(&root, "etc/old-link"), ino(&root, "etc/secret"));
    let rootfs = bundle.join("rootfs");
    assert_eq!(ino(&rootfs, "etc/old-link"), ino(&rootfs, "etc/secret"));
}
