//! A second node joins with `berth agent --server URL --token T` (issue "Node agent": the k3s way), and
//! pods scheduled to it run there, with logs and exec through the API server. Both agents run on this
//! machine on 127.0.0.1 (each with its own data dir); runs real containers, so needs root like `pods.rs`.

mod common;

use common::eventually;
use serde_json::Value;
use std::process::{Command, Stdio};

struct Agent {
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        common::kill_containers(self.dir.path());
    }
}

#[test]
fn a_second_node_joins_with_the_token_and_runs_the_pods_scheduled_to_it() {
    if !common::can_run_containers() {
        return;
    }
    let s = common::Server::start_with(&["--node-name", "node-a", "--token", "s3cret"]);
    let token = std::fs::read_to_string(s.data_dir().join("token")).expect("join token file");
    assert!(
        token.starts_with("K10") && token.ends_with("::server:s3cret"),
        "{token}"
    );
    let url = s.url();
    let berth = env!("CARGO_BIN_EXE_berth");

    // A token whose CA hash does not match is refused before anything is sent with it.
    let bad = Command::new(berth)
        .args([
            "agent",
            "--server",
            &url,
            "--token",
            "K10deadbeef::server:s3cret",
            "--node-name",
            "evil",
        ])
        .arg("--data-dir")
        .arg(s.data_dir().join("evil"))
        .output()
        .expect("berth agent");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("does not match the token's hash"));

    let dir = tempfile::tempdir().expect("dir");
    let archive = common::busybox_archive(dir.path()).expect("archive");
    let out = Command::new(berth)
        .args(["image", "import", "--data-dir"])
        .arg(dir.path())
        .arg(&archive)
        .output()
        .expect("import");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let log = std::fs::File::create(dir.path().join("agent.log")).expect("log");
    let child = Command::new(berth)
        .args([
            "agent",
            "--server",
            &url,
            "--token",
            token.trim(),
            "--node-name",
            "node-b",
            "--node-ip",
            "127.0.0.1",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("berth agent");
    let agent = Agent { child, dir };
    eventually(30, "node-b Ready", || {
        let n = s.kubectl(&["get", "node", "node-b", "-o", "json"]);
        let n: Value = serde_json::from_slice(&n.stdout).ok()?;
        n["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
            .then_some(())
    });
    let nodes = s.ok(&["get", "nodes"]);
    assert!(nodes.contains("node-a") && nodes.contains("node-b"), "{nodes}");

    s.apply(r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"on-b"},"spec":{
        "nodeSelector":{"kubernetes.io/hostname":"node-b"},"terminationGracePeriodSeconds":1,
        "containers":[{"name":"c","image":"busybox:test","command":["/bin/sh","-c","echo running on $(hostname); sleep 3600"]}]}}"#);
    let p = eventually(60, "on-b Running on node-b", || {
        let p = s.get_json(&["pod", "on-b"]);
        (p["status"]["phase"] == "Running").then_some(p)
    });
    assert_eq!(p["spec"]["nodeName"], "node-b");
    let uid = p["metadata"]["uid"].as_str().expect("uid");
    assert!(
        agent.dir.path().join("agent/pods").join(uid).is_dir(),
        "the container runs under node-b's data dir"
    );
    assert!(!s.data_dir().join("agent/pods").join(uid).exists());
    eventually(20, "logs through node-b's kubelet API", || {
        (s.ok(&["logs", "on-b"]) == "running on on-b\n").then_some(())
    });
    assert_eq!(s.ok(&["exec", "on-b", "--", "hostname"]), "on-b\n");
    s.ok(&["delete", "pod", "on-b"]);
    drop(agent);
}
