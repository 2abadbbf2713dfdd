//! The workload family beside StatefulSets (issue 12): Deployments, ReplicaSets and ReplicationControllers
//! driven by the real kubectl. The ReplicaSet/RC test plays the kubelet itself; the Deployment tests run
//! real pods (root and `/usr/bin/busybox`, skipped otherwise unless `BERTH_TEST_ROOT=1`), including a
//! `kill -9` of the server in the middle of a rollout.

mod common;

use common::{Server, eventually};
use serde_json::Value;
use std::collections::BTreeSet;
use std::process::Command;

fn items(s: &Server, what: &str) -> Vec<Value> {
    s.get_json(&[what])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn name(v: &Value) -> String {
    v["metadata"]["name"].as_str().unwrap_or_default().to_string()
}

fn live_pods(s: &Server) -> Vec<Value> {
    items(s, "pods")
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect()
}

fn ready(p: &Value) -> bool {
    p["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// `<prefix><5 chars of upstream's random alphabet>`.
fn generated(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .is_some_and(|r| r.len() == 5 && r.bytes().all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b)))
}

#[test]
fn replica_sets_and_replication_controllers_adopt_create_scale_and_report() {
    let s = Server::start();
    // An orphan pod with the labels is adopted, so only two more are created.
    s.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: stray, labels: {app: front}}
spec: {containers: [{name: c, image: nginx}]}
"#,
    );
    s.apply(
        r#"
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: front}
spec:
  replicas: 3
  selector: {matchLabels: {app: front}}
  template:
    metadata: {labels: {app: front}}
    spec: {containers: [{name: c, image: nginx}]}
"#,
    );
    let pods = eventually(20, "three pods of front", || {
        let p = live_pods(&s);
        (p.len() == 3).then_some(p)
    });
    let rs_uid = s.get_json(&["rs", "front"])["metadata"]["uid"].clone();
    for p in &pods {
        assert_eq!(p["metadata"]["ownerReferences"][0]["uid"], rs_uid, "{p}");
        let n = name(p);
        assert!(n == "stray" || generated(&n, "front-"), "{n}");
    }
    for p in &pods {
        s.mark_ready(&name(p));
    }
    eventually(20, "status readyReplicas 3", || {
        (s.get_json(&["rs", "front"])["status"]["readyReplicas"] == 3).then_some(())
    });
    let wide = s.ok(&["get", "rs", "-o", "wide"]);
    assert!(wide.contains("DESIRED   CURRENT   READY"), "{wide}");
    assert!(wide.contains("app=front"), "{wide}");
    // Scale down removes the pods upstream's ranking picks: the not-Ready one first.
    s.ok(&["scale", "rs", "front", "--replicas=5"]);
    let fresh = eventually(20, "two more pods", || {
        let p = live_pods(&s);
        (p.len() == 5).then_some(p)
    });
    let unready: BTreeSet<String> = fresh.iter().filter(|p| !ready(p)).map(name).collect();
    assert_eq!(unready.len(), 2);
    s.ok(&["scale", "rs", "front", "--replicas=3"]);
    eventually(20, "the two not-Ready pods deleted first", || {
        let left: BTreeSet<String> = live_pods(&s).iter().map(name).collect();
        (left.len() == 3 && left.is_disjoint(&unready)).then_some(())
    });

    // The legacy kind on the same code.
    s.apply(
        r#"
apiVersion: v1
kind: ReplicationController
metadata: {name: legacy}
spec:
  replicas: 2
  template:
    metadata: {labels: {app: legacy}}
    spec: {containers: [{name: c, image: nginx}]}
"#,
    );
    eventually(20, "two legacy pods", || {
        let p: Vec<String> = live_pods(&s)
            .iter()
            .map(name)
            .filter(|n| n.starts_with("legacy-"))
            .collect();
        (p.len() == 2 && p.iter().all(|n| generated(n, "legacy-"))).then_some(())
    });
    s.ok(&["scale", "rc", "legacy", "--replicas=1"]);
    eventually(20, "rc scaled to one", || {
        let rc = s.get_json(&["rc", "legacy"]);
        (rc["status"]["replicas"] == 1 && rc["status"]["observedGeneration"] == 2).then_some(())
    });
    let out = s.ok(&["get", "rc"]);
    assert!(out.contains("legacy") && out.contains("DESIRED"), "{out}");
}

/// Import the busybox test image again under `busybox:<tag>` (a second image for `kubectl set image`).
fn import_tagged(s: &Server, tag: &str) {
    let archive = common::busybox_archive(s.data_dir()).expect("busybox archive");
    let dir = tempfile::tempdir().expect("tmp");
    let ok = |c: &mut Command| assert!(c.status().expect("tar").success());
    ok(Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(dir.path()));
    let manifest = std::fs::read_to_string(dir.path().join("manifest.json")).expect("manifest");
    std::fs::write(
        dir.path().join("manifest.json"),
        manifest.replace("busybox:test", &format!("busybox:{tag}")),
    )
    .expect("manifest");
    let out = s.data_dir().join(format!("busybox-{tag}.tar"));
    ok(Command::new("tar")
        .arg("-cf")
        .arg(&out)
        .arg("-C")
        .arg(dir.path())
        .args(["manifest.json", "config.json", "layer.tar"]));
    let shown = common::import_image(s.data_dir(), &out);
    assert!(shown.contains(&format!("busybox:{tag}")), "{shown}");
}

fn images(s: &Server) -> BTreeSet<String> {
    live_pods(s)
        .iter()
        .filter_map(|p| p["spec"]["containers"][0]["image"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn a_deployment_runs_real_pods_rolls_out_rolls_back_and_scales_as_kubectl_expects() {
    if !common::can_run_containers() {
        return;
    }
    let s = common::server_with_busybox("deploy-node");
    import_tagged(&s, "v2");
    // What the seeds have a new user type.
    s.ok(&[
        "create",
        "deployment",
        "web",
        "--image=busybox:test",
        "--replicas=3",
        "--",
        "sh",
        "-c",
        "trap 'exit 0' TERM; while true; do sleep 1; done",
    ]);
    s.ok(&[
        "wait",
        "--for=condition=Available",
        "deployment/web",
        "--timeout=90s",
    ]);
    eventually(60, "three Running and Ready pods", || {
        let p = live_pods(&s);
        (p.len() == 3 && p.iter().all(|p| p["status"]["phase"] == "Running" && ready(p))).then_some(())
    });
    let rs = items(&s, "rs");
    assert_eq!(rs.len(), 1);
    let rs_name = name(&rs[0]);
    let hash = rs[0]["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .expect("hash")
        .to_string();
    assert_eq!(rs_name, format!("web-{hash}"));
    for p in live_pods(&s) {
        assert!(generated(&name(&p), &format!("{rs_name}-")), "{}", name(&p));
        assert_eq!(p["metadata"]["labels"]["pod-template-hash"], hash.as_str());
    }
    let out = s.ok(&["get", "deploy,rs", "-o", "wide"]);
    assert!(
        out.contains("deployment.apps/web   3/3     3            3"),
        "{out}"
    );
    assert!(
        out.contains(&format!("app=web,pod-template-hash={hash}")),
        "{out}"
    );

    // A deleted pod is replaced by one with a new name.
    let before: BTreeSet<String> = live_pods(&s).iter().map(name).collect();
    let victim = before.iter().next().expect("a pod").clone();
    s.ok(&["delete", "pod", &victim, "--wait=false"]);
    eventually(60, "a replacement with a new name", || {
        let now: BTreeSet<String> = live_pods(&s).iter().filter(|p| ready(p)).map(name).collect();
        (now.len() == 3 && !now.contains(&victim)).then_some(())
    });

    // A rollout to a new image, followed by kubectl, then the history and an undo.
    s.ok(&["set", "image", "deployment/web", "busybox=busybox:v2"]);
    let status = s.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    assert!(status.contains("successfully rolled out"), "{status}");
    eventually(60, "only v2 pods", || {
        (images(&s) == BTreeSet::from(["busybox:v2".to_string()]) && live_pods(&s).len() == 3).then_some(())
    });
    let history = s.ok(&["rollout", "history", "deployment/web"]);
    assert!(history.contains("1 ") && history.contains("2 "), "{history}");
    s.ok(&["rollout", "undo", "deployment/web"]);
    s.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    let d = s.get_json(&["deploy", "web"]);
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "busybox:test"
    );
    let old = s.get_json(&["rs", &rs_name]);
    assert_eq!(
        old["spec"]["replicas"], 3,
        "the undo re-uses the first ReplicaSet"
    );
    assert_eq!(
        old["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"],
        "1"
    );

    // Scale, then the Available condition.
    s.ok(&["scale", "deployment/web", "--replicas=1"]);
    eventually(60, "one pod left", || (live_pods(&s).len() == 1).then_some(()));
    s.ok(&[
        "wait",
        "--for=condition=Available",
        "deployment/web",
        "--timeout=60s",
    ]);
    s.ok(&["delete", "deployment", "web"]);
    s.wait_pods_gone(90);
}

const ROLL: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: roll}
spec:
  replicas: 6
  minReadySeconds: 1
  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 1}}
  selector: {matchLabels: {app: roll}}
  template:
    metadata: {labels: {app: roll}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: main
        image: busybox:test
        command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 1; done"]
"#;

/// `(sum of the ReplicaSets' spec.replicas, pods not terminating, Ready pods not terminating)`.
fn counts(s: &Server) -> Option<(i64, usize, usize)> {
    let out = s.kubectl(&["get", "rs,pods", "-o", "json"]);
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    let all = v["items"].as_array()?;
    let spec = all
        .iter()
        .filter(|o| o["kind"] == "ReplicaSet")
        .map(|r| r["spec"]["replicas"].as_i64().unwrap_or(0))
        .sum();
    let pods: Vec<&Value> = all
        .iter()
        .filter(|o| o["kind"] == "Pod" && o["metadata"]["deletionTimestamp"].is_null())
        .collect();
    Some((spec, pods.len(), pods.iter().filter(|p| ready(p)).count()))
}

#[test]
fn kill_9_in_the_middle_of_a_rollout_finishes_it_without_surge_violations() {
    if !common::can_run_containers() {
        return;
    }
    let mut s = common::server_with_busybox("roll-node");
    import_tagged(&s, "v2");
    s.apply(ROLL);
    s.ok(&["rollout", "status", "deployment/roll", "--timeout=120s"]);
    s.ok(&["set", "image", "deployment/roll", "main=busybox:v2"]);
    // Bounds: ReplicaSets ask for at most replicas + maxSurge = 7; once started, at least
    // replicas − maxUnavailable = 5 pods stay Ready.
    let check = |s: &Server| {
        if let Some((spec, live, ready)) = counts(s) {
            assert!(spec <= 7, "ReplicaSets ask for {spec} pods > 7");
            assert!(live <= 7 + 1, "{live} live pods");
            assert!(ready >= 5, "only {ready} Ready pods < 5");
        }
    };
    eventually(60, "the rollout under way", || {
        check(&s);
        let d = s.get_json(&["deploy", "roll"]);
        let updated = d["status"]["updatedReplicas"].as_i64().unwrap_or(0);
        (2..6).contains(&updated).then_some(())
    });
    s.kill9();
    std::thread::sleep(std::time::Duration::from_millis(500));
    s.restart();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        check(&s);
        let d = s.get_json(&["deploy", "roll"]);
        if d["status"]["updatedReplicas"] == 6
            && d["status"]["availableReplicas"] == 6
            && d["status"]["replicas"] == 6
            && d["status"]["observedGeneration"] == d["metadata"]["generation"]
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "rollout did not finish: {}",
            d["status"]
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let status = s.ok(&["rollout", "status", "deployment/roll", "--timeout=60s"]);
    assert!(status.contains("successfully rolled out"), "{status}");
    eventually(60, "only v2 pods", || {
        (images(&s) == BTreeSet::from(["busybox:v2".to_string()]) && live_pods(&s).len() == 6).then_some(())
    });
    s.ok(&["delete", "deployment", "roll"]);
    s.wait_pods_gone(90);
}

const DRAINED: &str = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  serviceName: web
  replicas: 2
  podManagementPolicy: Parallel
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: main
        image: busybox:test
        command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 1; done"]
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web}
spec:
  maxUnavailable: 1
  selector: {matchLabels: {app: web}}
"#;

/// Issue 15 item 14: the real `kubectl drain` cordons the node and evicts its pods through `pods/eviction`,
/// which honours the PodDisruptionBudget the disruption controller keeps: with one node the evicted pod
/// cannot come back Ready, so the second eviction is refused with 429 until the budget allows it. Every
/// drain has a `--timeout`, so the test cannot hang.
#[test]
fn kubectl_drain_evicts_within_the_disruption_budget() {
    if !common::can_run_containers() {
        return;
    }
    let s = common::server_with_busybox("drain-node");
    s.apply(DRAINED);
    eventually(90, "two Ready pods and a budget allowing one disruption", || {
        let b = s.get_json(&["pdb", "web"]);
        let st = &b["status"];
        (live_pods(&s).iter().filter(|p| ready(p)).count() == 2
            && st["disruptionsAllowed"] == 1
            && st["currentHealthy"] == 2
            && st["desiredHealthy"] == 1
            && st["expectedPods"] == 2)
            .then_some(())
    });
    let table = s.ok(&["get", "pdb", "web"]);
    assert!(
        table.contains("MIN AVAILABLE") && table.contains("ALLOWED DISRUPTIONS"),
        "{table}"
    );
    let uids = |s: &Server| -> BTreeSet<String> {
        items(s, "pods")
            .iter()
            .map(|p| p["metadata"]["uid"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let before = uids(&s);
    let out = s.kubectl(&[
        "drain",
        "drain-node",
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--timeout=25s",
    ]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "the budget lets only one pod go: {text}");
    assert!(text.contains("node/drain-node cordoned"), "{text}");
    assert!(
        text.contains("Cannot evict pod as it would violate the pod's disruption budget."),
        "{text}"
    );
    assert!(text.contains("evicted"), "one pod was evicted: {text}");
    assert_eq!(s.get_json(&["node", "drain-node"])["spec"]["unschedulable"], true);
    let after = uids(&s);
    assert_eq!(
        before.intersection(&after).count(),
        1,
        "exactly one pod was evicted (and recreated, unschedulable): {before:?} {after:?}"
    );
    assert_eq!(s.get_json(&["pdb", "web"])["status"]["disruptionsAllowed"], 0);
    // The budget allows two now: the second eviction goes through and the drain finishes.
    s.ok(&[
        "patch",
        "pdb",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"maxUnavailable":2}}"#,
    ]);
    eventually(30, "the budget recomputed", || {
        let b = s.get_json(&["pdb", "web"]);
        (b["status"]["observedGeneration"] == b["metadata"]["generation"]
            && b["status"]["disruptionsAllowed"].as_i64().unwrap_or(0) >= 1)
            .then_some(())
    });
    let out = s.ok(&[
        "drain",
        "drain-node",
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--timeout=60s",
    ]);
    assert!(out.contains("drained"), "{out}");
    assert!(
        before.intersection(&uids(&s)).next().is_none(),
        "every original pod evicted"
    );
    s.ok(&["delete", "statefulset", "web"]);
    s.ok(&["delete", "pods", "--all", "--grace-period=0", "--force"]);
    s.wait_pods_gone(60);
}
