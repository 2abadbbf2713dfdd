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
    s.ok(&["label", "node", "ds-node", "disk=ssd"]);
    s.ok(&["rollout", "status", "ds/tailer", "--timeout=60s"]);
    assert_eq!(pods(&s).len(), 1);
    s.ok(&["delete", "ds", "tailer"]);
    s.wait_pods_gone(60);
}
