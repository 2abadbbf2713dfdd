//! DaemonSets end to end with the real kubectl and real pods (busybox) on one node: a pod on the node,
//! `kubectl get ds` and `rollout status`, a new template rolled out (`set image`, `rollout history`),
//! `rollout undo`, a nodeSelector that no longer matches removing the pod. Needs root and busybox like
//! `pods.rs`.

mod common;

use common::{Server, eventually};
use serde_json::Value;

const DS: &str = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: tailer}
spec:
  selector: {matchLabels: {app: tailer}}
  template:
    metadata: {labels: {app: tailer}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: tail
        image: busybox:test
        env: [{name: ROUND, value: "1"}]
        command: ["/bin/sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
"#;

fn pods(s: &Server) -> Vec<Value> {
    s.get_json(&["pods", "-l", "app=tailer"])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect()
}

#[test]
fn a_daemonset_runs_one_pod_per_node_rolls_out_and_back() {
    if !common::can_run_containers() {
        return;
    }
    let s = common::server_with_busybox("ds-node");
    s.apply(DS);
    let out = s.ok(&["rollout", "status", "ds/tailer", "--timeout=60s"]);
    assert!(
        out.contains("daemon set \"tailer\" successfully rolled out"),
        "{out}"
    );
    let p = pods(&s);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0]["spec"]["nodeName"], "ds-node");
    assert!(
        p[0]["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .starts_with("tailer-")
    );
    let table = s.ok(&["get", "ds"]);
    assert!(
        table.contains("tailer   1         1         1       1            1           <none>"),
        "{table}"
    );

    // A new template: the pod is replaced with one of the new revision.
    let first = p[0]["metadata"]["name"].as_str().unwrap_or("").to_string();
    s.ok(&["set", "env", "ds/tailer", "ROUND=2"]);
    s.ok(&["rollout", "status", "ds/tailer", "--timeout=60s"]);
    let p = pods(&s);
    assert_eq!(p.len(), 1);
    assert_ne!(p[0]["metadata"]["name"], first.as_str());
    let history = s.ok(&["rollout", "history", "ds/tailer"]);
    assert!(history.contains("1 ") && history.contains("2 "), "{history}");
    s.ok(&["rollout", "undo", "ds/tailer"]);
    s.ok(&["rollout", "status", "ds/tailer", "--timeout=60s"]);
    let env = eventually(30, "the first template back", || {
        let p = pods(&s);
        let e = p.first()?["spec"]["containers"][0]["env"][0]["value"]
            .as_str()?
            .to_string();
        (p.len() == 1 && e == "1").then_some(e)
    });
    assert_eq!(env, "1");
    let history = s.ok(&["rollout", "history", "ds/tailer"]);
    assert!(
        history.contains("3 "),
        "the undone revision renumbered: {history}"
    );

    // A nodeSelector the node lacks: the pod goes.
    s.ok(&[
        "patch",
        "ds",
        "tailer",
        "-p",
        r#"{"spec":{"template":{"spec":{"nodeSelector":{"disk":"ssd"}}}}}"#,
    ]);
    eventually(60, "no daemon pod", || pods(&s).is_empty().then_some(()));
    let ds = s.get_json(&["ds", "tailer"]);
    assert_eq!(ds["status"]["desiredNumberScheduled"], 0, "{ds}");
    // The node gets the label: its pod comes back (rollout status could answer before the controller
    // saw the label, when 0 of 0 pods are still "rolled out").
    s.ok(&["label", "node", "ds-node", "disk=ssd"]);
    eventually(60, "the daemon pod back", || (pods(&s).len() == 1).then_some(()));
    s.ok(&["delete", "ds", "tailer"]);
    s.wait_pods_gone(60);
}

/// A `berth agent` joining the server as another node (both on 127.0.0.1, each with its own data dir, as
/// `agents.rs` does); killed with its containers on drop.
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
fn the_daemonset_example_follows_a_second_node_when_it_joins() {
    if !common::can_run_containers() {
        return;
    }
    let s = Server::start_with(&["--node-name", "node-a", "--token", "s3cret"]);
    common::build_and_import(&s, "daemonset", None);
    let manifest =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/daemonset/daemonset.yaml");
    s.ok(&["apply", "-f", &manifest.to_string_lossy()]);
    s.ok(&["rollout", "status", "ds/log-tailer", "--timeout=60s"]);
    let first = s.get_json(&["pods", "-l", "app=log-tailer"]);
    assert_eq!(first["items"].as_array().map(Vec::len), Some(1));
    let name = first["items"][0]["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    eventually(20, "the tailer says where it runs", || {
        s.ok(&["logs", &name])
            .contains("tailing /var/log on node-a")
            .then_some(())
    });

    // node-b joins: it gets its own tailer.
    let token = std::fs::read_to_string(s.data_dir().join("token")).expect("token");
    let dir = tempfile::tempdir().expect("dir");
    common::import_image(dir.path(), &s.data_dir().join("daemonset.tar"));
    let log = std::fs::File::create(dir.path().join("agent.log")).expect("log");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args([
            "agent",
            "--server",
            &s.url(),
            "--token",
            token.trim(),
            "--node-name",
            "node-b",
            "--node-ip",
            "127.0.0.1",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("berth agent");
    let agent = Agent { child, dir };
    let joined = std::time::Instant::now();
    let on_b = eventually(90, "a Running tailer on node-b", || {
        let pods = s.get_json(&["pods", "-l", "app=log-tailer"]);
        pods["items"].as_array()?.iter().find_map(|p| {
            (p["spec"]["nodeName"] == "node-b" && p["status"]["phase"] == "Running")
                .then(|| p["metadata"]["name"].as_str().unwrap_or("").to_string())
        })
    });
    eprintln!(
        "node-b joined → its tailer Running in {:.1} s",
        joined.elapsed().as_secs_f64()
    );
    eventually(20, "node-b's tailer logs through node-b", || {
        s.ok(&["logs", &on_b])
            .contains("tailing /var/log on node-b")
            .then_some(())
    });
    s.ok(&["rollout", "status", "ds/log-tailer", "--timeout=60s"]);
    let ds = s.get_json(&["ds", "log-tailer"]);
    assert_eq!(ds["status"]["desiredNumberScheduled"], 2, "{ds}");
    assert_eq!(ds["status"]["numberReady"], 2, "{ds}");

    // node-b's machine goes away with its pod still running, and the administrator deletes its Node.
    drop(agent);
    let deleted = std::time::Instant::now();
    s.ok(&["delete", "node", "node-b"]);
    eventually(60, "one tailer left", || {
        let ds = s.get_json(&["ds", "log-tailer"]);
        (ds["status"]["desiredNumberScheduled"] == 1 && ds["status"]["currentNumberScheduled"] == 1)
            .then_some(())
    });
    // The set deleted node-b's tailer, but no kubelet is left to finish it: the pod garbage collector
    // removes it once node-b has been gone for its quarantine (upstream `gcOrphaned`, 40 s).
    eventually(90, "no pod left on node-b", || {
        let pods = s.get_json(&["pods", "-l", "app=log-tailer"]);
        (!pods["items"]
            .as_array()?
            .iter()
            .any(|p| p["spec"]["nodeName"] == "node-b"))
        .then_some(())
    });
    let collected = deleted.elapsed();
    eprintln!(
        "node-b deleted → its tailer collected in {:.1} s",
        collected.as_secs_f64()
    );
    assert!(
        collected >= std::time::Duration::from_secs(39),
        "collected before the quarantine: {collected:?}"
    );
    s.ok(&["delete", "ds", "log-tailer"]);
    s.wait_pods_gone(60);
}
