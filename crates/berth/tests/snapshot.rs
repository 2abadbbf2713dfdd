//! `berth snapshot` (issue 16 item 5, k3s's `etcd-snapshot`): a snapshot saved through the running server
//! while writes go on is one revision of the store; restored into a fresh data dir (and, with etcd
//! installed, into an empty etcd), a server started on it has every object acknowledged before the save.
//! A scheduled snapshot (`--snapshot-schedule-cron`) lands in `<data-dir>/snapshots`. With root, a
//! snapshot saved while a StatefulSet scales and a Deployment rolls restores to a cluster whose
//! workloads converge with freshly started pods.

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

/// Issue 16 item 6: a snapshot saved while a StatefulSet scales up and a Deployment rolls out, with real
/// pods, restored as a machine's replacement would be (the old server and its containers gone, a fresh
/// data dir, the same node name): the restored cluster's set and Deployment converge, every pod running
/// a container started after the restore. Needs root (real containers).
#[test]
fn a_snapshot_taken_while_workloads_change_restores_to_a_cluster_whose_sets_converge() {
    if !common::can_run_containers() {
        return;
    }
    let mut old = Server::start_with(&["--node-name", "snap-node"]);
    let kept = tempfile::tempdir().expect("dir");
    let archive = common::busybox_archive(kept.path()).expect("busybox archive");
    common::import_image(old.data_dir(), &archive);
    let manifest = |replicas: u32, version: u32| {
        format!(
            r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: web}}
spec:
  replicas: {replicas}
  serviceName: web
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: busybox:test
        command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 1; done"]
        readinessProbe: {{exec: {{command: ["true"]}}, periodSeconds: 1}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: api}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: api}}}}
  template:
    metadata: {{labels: {{app: api}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: busybox:test
        command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 1; done"]
        env: [{{name: VERSION, value: "{version}"}}]
"#
        )
    };
    old.apply(&manifest(2, 1));
    let ready =
        |s: &Server, kind: &str, name: &str| s.get_json(&[kind, name])["status"]["readyReplicas"].as_i64();
    eventually(90, "the first workloads Ready", || {
        (ready(&old, "sts", "web") == Some(2) && ready(&old, "deploy", "api") == Some(3)).then_some(())
    });
    // Change both and save while the controllers are at work.
    old.apply(&manifest(4, 2));
    eventually(30, "the changes under way", || {
        let st = old.get_json(&["sts", "web"])["status"].clone();
        (st["replicas"].as_i64() > Some(2)).then_some(())
    });
    let out = berth(old.data_dir(), &["snapshot", "save", "--name", "busy"]);
    assert!(out.contains("saved"), "{out}");
    let path = std::fs::read_dir(old.data_dir().join("snapshots"))
        .expect("snapshots")
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("busy-"))
        .expect("the snapshot")
        .path();
    let snapshot = kept.path().join("busy.snapshot");
    std::fs::copy(&path, &snapshot).expect("copy");
    // The machine is lost: its server and every container gone.
    old.kill9();
    common::kill_containers(old.data_dir());
    drop(old);

    let fresh = tempfile::tempdir().expect("dir");
    let out = berth(
        fresh.path(),
        &["snapshot", "restore", snapshot.to_str().expect("path")],
    );
    assert!(out.contains("Restored"), "{out}");
    common::import_image(fresh.path(), &archive);
    let restored_at = jiff::Timestamp::now();
    let s = Server::start_on(fresh, &["--node-name", "snap-node"]);
    // Converged: the set at 4 and the Deployment at 3, all on the new template, each pod's container
    // started by this server (not a status left over from before the snapshot).
    let fresh_pods = |selector: &str| -> Option<usize> {
        let list = s.get_json(&["pods", "-l", selector]);
        let items = list["items"].as_array()?;
        let started_here = items.iter().all(|p| {
            p["metadata"]["deletionTimestamp"].is_null()
                && p["status"]["containerStatuses"][0]["ready"] == true
                && p["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
                    .as_str()
                    .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                    .is_some_and(|t| t.as_second() >= restored_at.as_second() - 1)
        });
        started_here.then_some(items.len())
    };
    eventually(120, "the restored cluster converges", || {
        let st = s.get_json(&["sts", "web"])["status"].clone();
        let dp = s.get_json(&["deploy", "api"])["status"].clone();
        (fresh_pods("app=web") == Some(4)
            && st["readyReplicas"] == 4
            && st["updatedReplicas"] == 4
            && fresh_pods("app=api") == Some(3)
            && dp["updatedReplicas"] == 3
            && dp["availableReplicas"] == 3)
            .then_some(())
    });
    // The pods are real: a command runs in each.
    for name in s.ok(&["get", "pods", "-o", "name"]).lines() {
        s.ok(&["exec", name, "--", "true"]);
    }
    s.ok(&["delete", "sts", "web"]);
    s.ok(&["delete", "deploy", "api"]);
    s.wait_pods_gone(60);
}
