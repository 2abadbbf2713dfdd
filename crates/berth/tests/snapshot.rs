//! `berth snapshot` (issue 16 item 5, k3s's `etcd-snapshot`): a snapshot saved through the running server
//! while writes go on is one revision of the store; restored into a fresh data dir (and, with etcd
//! installed, into an empty etcd), a server started on it has every object acknowledged before the save.
//! A scheduled snapshot (`--snapshot-schedule-cron`) lands in `<data-dir>/snapshots`.

mod common;

use common::{Server, berth, eventually};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

#[test]
fn a_snapshot_taken_during_writes_restores_every_acknowledged_object() {
    let s = Arc::new(Server::start_with(&[
        "--disable-agent",
        "--snapshot-schedule-cron",
        "* * * * *",
        "--snapshot-retention",
        "1",
    ]));
    // A writer acknowledges ConfigMaps one after another while the snapshot is taken.
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (s, acked, stop) = (s.clone(), acked.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let name = format!("cm-{i:04}");
                let out = s.kubectl(&["create", "configmap", &name, "--from-literal=k=v"]);
                if out.status.success() {
                    acked.lock().expect("lock").push(name);
                }
                i += 1;
            }
        })
    };
    eventually(60, "some writes", || {
        (acked.lock().expect("lock").len() >= 5).then_some(())
    });
    let before: Vec<String> = acked.lock().expect("lock").clone();
    let out = berth(s.data_dir(), &["snapshot", "save", "--name", "test"]);
    assert!(out.contains("saved"), "{out}");
    eventually(60, "writes after the save", || {
        (acked.lock().expect("lock").len() >= before.len() + 5).then_some(())
    });
    stop.store(true, Ordering::SeqCst);
    writer.join().expect("writer");
    let ls = berth(s.data_dir(), &["snapshot", "ls"]);
    let file = ls
        .lines()
        .find_map(|l| l.split_whitespace().next().filter(|n| n.starts_with("test-")))
        .unwrap_or_else(|| panic!("no snapshot listed: {ls}"))
        .to_string();
    let path = s.data_dir().join("snapshots").join(&file);

    // Restore into a fresh data dir; a server there has every object acknowledged before the save.
    let fresh = tempfile::tempdir().expect("dir");
    let out = berth(
        fresh.path(),
        &["snapshot", "restore", path.to_str().expect("path")],
    );
    assert!(out.contains("Restored"), "{out}");
    // A second restore into the same dir is refused: the store exists.
    let again = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["snapshot", "restore", path.to_str().expect("path"), "--data-dir"])
        .arg(fresh.path())
        .output()
        .expect("berth");
    assert!(!again.status.success());
    let restored = Server::start_on(fresh, &["--disable-agent"]);
    let names = restored.ok(&["get", "configmaps", "-o", "name"]);
    for n in &before {
        assert!(
            names.contains(&format!("configmap/{n}\n")),
            "{n} missing: {names}"
        );
    }
    // Only what the snapshot's revision saw: a prefix of the writer's sequence.
    let count = names.lines().filter(|l| l.starts_with("configmap/cm-")).count();
    let all = acked.lock().expect("lock").clone();
    for n in &all[..count] {
        assert!(names.contains(&format!("configmap/{n}\n")), "{n}: not a prefix");
    }
    // The restored cluster takes writes.
    restored.ok(&["create", "configmap", "after-restore"]);

    if store::local_etcd::available() {
        let etcd = store::local_etcd::LocalEtcd::start().expect("etcd");
        let endpoint = etcd.endpoint();
        let dir = tempfile::tempdir().expect("dir");
        let out = berth(
            dir.path(),
            &[
                "snapshot",
                "restore",
                path.to_str().expect("path"),
                "--datastore-endpoint",
                &endpoint,
            ],
        );
        assert!(out.contains("Restored"), "{out}");
        let on_etcd = Server::start_on(dir, &["--disable-agent", "--datastore-endpoint", &endpoint]);
        let names = on_etcd.ok(&["get", "configmaps", "-o", "name"]);
        for n in &before {
            assert!(
                names.contains(&format!("configmap/{n}\n")),
                "{n} missing on etcd: {names}"
            );
        }
        // On etcd the server also takes etcd's own database snapshot (k3s's format).
        let out = berth(on_etcd.data_dir(), &["snapshot", "save", "--format", "etcd"]);
        assert!(out.contains("saved"), "{out}");
        drop(on_etcd);
        drop(etcd);
    }

    // The schedule (every minute here) takes its own snapshots, keeping one.
    eventually(75, "a scheduled snapshot", || {
        std::fs::read_dir(s.data_dir().join("snapshots"))
            .ok()?
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("etcd-snapshot-"))
            .then_some(())
    });
    drop(restored);
}
