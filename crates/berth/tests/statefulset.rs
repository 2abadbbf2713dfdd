//! The StatefulSet controller against the real `berth server` with the agent disabled; the test plays the
//! kubelet by patching pod status through `kubectl patch --subresource=status` (issue "The StatefulSet
//! controller", Tests). Reference: StatefulSet docs, "Pod Management Policies" and "Update strategies".

mod common;

use common::{Server, eventually, seed};
use serde_json::Value;

fn pods(s: &Server) -> Vec<Value> {
    s.get_json(&["pods", "-l", "app=nginx"])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn pod_names(s: &Server) -> Vec<String> {
    let mut n: Vec<String> = pods(s)
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    n.sort();
    n
}

fn pod(s: &Server, name: &str) -> Option<Value> {
    let out = s.kubectl(&["get", "pod", name, "-o", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).expect("json"))
}

/// Play the kubelet: the pod is Running and Ready.
fn mark_ready(s: &Server, name: &str) {
    let now = "2026-01-01T00:00:00Z";
    let patch = format!(
        r#"{{"status":{{"phase":"Running","podIP":"10.42.0.9","startTime":"{now}","conditions":[{{"type":"Ready","status":"True","lastTransitionTime":"{now}"}},{{"type":"ContainersReady","status":"True","lastTransitionTime":"{now}"}}],"containerStatuses":[{{"name":"nginx","ready":true,"restartCount":0,"image":"x","imageID":"","started":true,"state":{{"running":{{"startedAt":"{now}"}}}}}}]}}}}"#
    );
    s.ok(&[
        "patch",
        "pod",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch,
    ]);
}

fn start_web() -> Server {
    let s = Server::start();
    s.ok(&[
        "apply",
        "-f",
        &seed("seed-storage-local.yaml").to_string_lossy(),
        "-f",
        &seed("seed-web.yaml").to_string_lossy(),
    ]);
    s
}

fn revision_of(s: &Server, name: &str) -> String {
    pod(s, name)
        .and_then(|p| {
            p["metadata"]["labels"]["controller-revision-hash"]
                .as_str()
                .map(str::to_string)
        })
        .unwrap_or_default()
}

#[test]
fn ordered_ready_creates_web_1_only_after_web_0_is_ready_with_its_own_claim() {
    let s = start_web();
    let p0 = eventually(20, "web-0 created", || pod(&s, "web-0"));
    assert_eq!(p0["spec"]["hostname"], "web-0");
    assert_eq!(p0["spec"]["subdomain"], "nginx");
    assert_eq!(
        p0["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"],
        "web-0"
    );
    assert_eq!(p0["metadata"]["labels"]["apps.kubernetes.io/pod-index"], "0");
    assert_eq!(p0["metadata"]["ownerReferences"][0]["kind"], "StatefulSet");
    let claim = s.get_json(&["pvc", "www-web-0"]);
    assert_eq!(claim["spec"]["storageClassName"], "storage-local");
    let vols = p0["spec"]["volumes"].as_array().cloned().unwrap_or_default();
    assert!(
        vols.iter()
            .any(|v| v["persistentVolumeClaim"]["claimName"] == "www-web-0"),
        "{vols:?}"
    );
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(
        pod(&s, "web-1").is_none(),
        "web-1 must wait for web-0 to be Running and Ready"
    );
    mark_ready(&s, "web-0");
    eventually(20, "web-1 created after web-0 Ready", || pod(&s, "web-1"));
    mark_ready(&s, "web-1");
    eventually(20, "status counts ready replicas", || {
        let st = s.get_json(&["sts", "web"]);
        (st["status"]["readyReplicas"] == 2
            && st["status"]["observedGeneration"] == st["metadata"]["generation"])
            .then_some(())
    });
    let out = s.ok(&["rollout", "status", "sts/web", "--timeout=20s"]);
    assert!(
        out.contains("partitioned roll out complete: 2 new pods have been updated"),
        "{out}"
    );
}

#[test]
fn scale_down_deletes_highest_ordinal_first_and_keeps_claims() {
    let s = start_web();
    eventually(20, "web-0", || pod(&s, "web-0"));
    mark_ready(&s, "web-0");
    eventually(20, "web-1", || pod(&s, "web-1"));
    mark_ready(&s, "web-1");
    s.ok(&["scale", "sts", "web", "--replicas=0"]);
    eventually(30, "all pods gone", || {
        let names = pod_names(&s);
        assert!(names != ["web-1"], "web-0 was deleted before web-1");
        names.is_empty().then_some(())
    });
    // Claims are kept (persistentVolumeClaimRetentionPolicy whenScaled: Retain by default).
    s.ok(&["get", "pvc", "www-web-0", "www-web-1"]);
}

#[test]
fn deleted_pod_comes_back_with_the_same_name_and_claim() {
    let s = start_web();
    eventually(20, "web-0", || pod(&s, "web-0"));
    let claim_uid = s.get_json(&["pvc", "www-web-0"])["metadata"]["uid"].clone();
    let old_uid = pod(&s, "web-0").expect("pod")["metadata"]["uid"].clone();
    s.ok(&["delete", "pod", "web-0"]);
    let back = eventually(20, "web-0 recreated", || {
        pod(&s, "web-0").filter(|p| p["metadata"]["uid"] != old_uid)
    });
    assert!(back["spec"]["volumes"].as_array().is_some_and(|v| {
        v.iter()
            .any(|v| v["persistentVolumeClaim"]["claimName"] == "www-web-0")
    }));
    assert_eq!(
        s.get_json(&["pvc", "www-web-0"])["metadata"]["uid"],
        claim_uid,
        "the same claim is re-used"
    );
}

#[test]
fn rolling_update_goes_in_reverse_ordinal_order_honours_partition_and_undo() {
    let s = start_web();
    eventually(20, "web-0", || pod(&s, "web-0"));
    mark_ready(&s, "web-0");
    eventually(20, "web-1", || pod(&s, "web-1"));
    mark_ready(&s, "web-1");
    let rev1 = revision_of(&s, "web-0");
    // partition: 1 → only web-1 is updated.
    s.ok(&[
        "patch",
        "sts",
        "web",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":1}}}}"#,
    ]);
    s.ok(&["set", "image", "sts/web", "nginx=nginx:1.27"]);
    let p1 = eventually(30, "web-1 replaced at the new revision", || {
        pod(&s, "web-1")
            .filter(|p| p["metadata"]["labels"]["controller-revision-hash"].as_str() != Some(rev1.as_str()))
    });
    assert_eq!(p1["spec"]["containers"][0]["image"], "nginx:1.27");
    mark_ready(&s, "web-1");
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(
        revision_of(&s, "web-0"),
        rev1,
        "partition 1 keeps web-0 at the old revision"
    );
    // Lift the partition: web-0 follows.
    s.ok(&[
        "patch",
        "sts",
        "web",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":0}}}}"#,
    ]);
    eventually(30, "web-0 replaced", || {
        pod(&s, "web-0").filter(|p| p["spec"]["containers"][0]["image"] == "nginx:1.27")
    });
    mark_ready(&s, "web-0");
    let history = s.ok(&["rollout", "history", "sts/web"]);
    assert!(
        history.contains("REVISION") && history.contains('1') && history.contains('2'),
        "{history}"
    );
    s.ok(&["rollout", "undo", "sts/web"]);
    let sts = s.get_json(&["sts", "web"]);
    assert_eq!(
        sts["spec"]["template"]["spec"]["containers"][0]["image"],
        "k8s.gcr.io/nginx-slim:0.8"
    );
    // Reverse ordinal order: web-1 goes back first.
    eventually(30, "web-1 rolled back", || {
        pod(&s, "web-1").filter(|p| p["spec"]["containers"][0]["image"] == "k8s.gcr.io/nginx-slim:0.8")
    });
    assert_eq!(
        pod(&s, "web-0").expect("web-0")["spec"]["containers"][0]["image"],
        "nginx:1.27",
        "web-0 waits for web-1"
    );
}

#[test]
fn opt_in_claim_expansion_raises_every_claim_and_upstream_default_refuses() {
    let s = start_web();
    eventually(20, "web-0", || pod(&s, "web-0"));
    mark_ready(&s, "web-0");
    eventually(20, "web-1", || pod(&s, "web-1"));
    let raise = r#"[{"op":"replace","path":"/spec/volumeClaimTemplates/0/spec/resources/requests/storage","value":"2Gi"}]"#;
    // Upstream behaviour by default: the templates are immutable.
    let err = s.fails(&["patch", "sts", "web", "--type=json", "-p", raise]);
    assert!(
        err.contains("updates to statefulset spec for fields other than"),
        "{err}"
    );
    s.ok(&["annotate", "sts", "web", "berth.dev/expand-volume-claims=true"]);
    s.ok(&["patch", "sts", "web", "--type=json", "-p", raise]);
    for claim in ["www-web-0", "www-web-1"] {
        eventually(20, "claim expanded", || {
            (s.get_json(&["pvc", claim])["spec"]["resources"]["requests"]["storage"] == "2Gi").then_some(())
        });
    }
    // Lowering stays forbidden, on its own field.
    let lower = raise.replace("2Gi", "1Mi");
    let err = s.fails(&["patch", "sts", "web", "--type=json", "-p", &lower]);
    assert!(
        err.contains("spec.volumeClaimTemplates[0].spec.resources.requests.storage: Forbidden: field can not be less than previous value"),
        "{err}"
    );
    // Expansion restarted nothing.
    assert_eq!(pod_names(&s), ["web-0", "web-1"]);
}

#[test]
fn max_unavailable_rolls_two_pods_at_once_and_heal_replaces_a_stuck_pod() {
    let s = start_web();
    s.ok(&[
        "patch",
        "sts",
        "web",
        "-p",
        r#"{"spec":{"replicas":3,"podManagementPolicy":"OrderedReady"}}"#,
    ]);
    for p in ["web-0", "web-1", "web-2"] {
        eventually(20, "pod created", || pod(&s, p));
        mark_ready(&s, p);
    }
    let rev1 = revision_of(&s, "web-0");
    s.ok(&[
        "patch",
        "sts",
        "web",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"maxUnavailable":2}}}}"#,
    ]);
    s.ok(&["set", "image", "sts/web", "nginx=nginx:1.27"]);
    // web-2 and web-1 go together: web-1 is replaced before the new web-2 was ever Ready (with the
    // default budget of 1 it would wait for web-2). OrderedReady still recreates them in ascending order.
    eventually(20, "web-1 replaced while web-2 is not back", || {
        let r1 = revision_of(&s, "web-1");
        (!r1.is_empty() && r1 != rev1).then_some(())
    });
    assert_eq!(revision_of(&s, "web-0"), rev1, "web-0 waits: the budget is spent");
    mark_ready(&s, "web-1");
    eventually(20, "web-2 back at the new revision", || {
        let r2 = revision_of(&s, "web-2");
        (!r2.is_empty() && r2 != rev1).then_some(())
    });
    mark_ready(&s, "web-2");
    eventually(20, "web-0 updated", || {
        (pod(&s, "web-0").is_some_and(|p| p["spec"]["containers"][0]["image"] == "nginx:1.27")).then_some(())
    });
    mark_ready(&s, "web-0");
    s.ok(&[
        "patch",
        "sts",
        "web",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"maxUnavailable":1}}}}"#,
    ]);
    s.ok(&["set", "image", "sts/web", "nginx=broken:0"]);
    eventually(20, "web-2 on the broken template", || {
        pod(&s, "web-2").filter(|p| p["spec"]["containers"][0]["image"] == "broken:0")
    });
    s.ok(&["annotate", "sts", "web", "berth.dev/heal-stuck-rollout=true"]);
    s.ok(&["set", "image", "sts/web", "nginx=nginx:1.28"]);
    eventually(30, "stuck web-2 replaced without a manual delete", || {
        pod(&s, "web-2").filter(|p| p["spec"]["containers"][0]["image"] == "nginx:1.28")
    });
}

#[test]
fn a_name_too_long_for_the_revision_label_gets_failed_create_and_no_pods() {
    // `controller-revision-hash` is `<set>-<hash>` (the hash up to 10 characters): with a 58-character
    // name it is well over a label value's 63, so every pod create is refused and the set gets upstream's
    // FailedCreate event (`recordPodEvent` with the API server's validation message), not silence. The
    // pod name (60 characters) and hostname are still valid.
    let s = Server::start();
    let name = "a".repeat(58);
    let manifest = format!(
        r#"{{"apiVersion":"apps/v1","kind":"StatefulSet","metadata":{{"name":"{name}"}},
            "spec":{{"replicas":1,"serviceName":"x","selector":{{"matchLabels":{{"app":"long"}}}},
            "template":{{"metadata":{{"labels":{{"app":"long"}}}},"spec":{{"containers":[{{"name":"c","image":"busybox"}}]}}}}}}}}"#
    );
    s.apply(&manifest);
    let message = eventually(30, "a FailedCreate event on the set", || {
        let events = s.get_json(&[
            "events",
            "--field-selector",
            &format!("involvedObject.name={name}"),
        ]);
        events["items"]
            .as_array()?
            .iter()
            .find(|e| e["reason"] == "FailedCreate")
            .and_then(|e| e["message"].as_str().map(str::to_string))
    });
    assert_eq!(e_type(&s, &name), "Warning");
    assert!(
        message.starts_with(&format!(
            "create Pod {name}-0 in StatefulSet {name} failed error: "
        )),
        "{message}"
    );
    assert!(
        message.contains("must be no more than 63 characters"),
        "{message}"
    );
    assert!(
        s.get_json(&["pods"])["items"]
            .as_array()
            .is_some_and(Vec::is_empty)
    );
}

fn e_type(s: &Server, name: &str) -> String {
    let events = s.get_json(&[
        "events",
        "--field-selector",
        &format!("involvedObject.name={name}"),
    ]);
    events["items"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["reason"] == "FailedCreate"))
        .and_then(|e| e["type"].as_str())
        .unwrap_or("")
        .to_string()
}

#[test]
fn an_orphaned_set_recreated_adopts_its_running_pods_and_revision_without_replacing_them() {
    // `kubectl delete sts --cascade=orphan`, then the same manifest again: the new set adopts the pods
    // and the ControllerRevision the old one left (upstream ClaimPods / ClaimControllerRevisions) and
    // reaches readyReplicas with the same pods.
    let s = start_web();
    eventually(20, "web-0", || pod(&s, "web-0"));
    mark_ready(&s, "web-0");
    eventually(20, "web-1", || pod(&s, "web-1"));
    mark_ready(&s, "web-1");
    eventually(20, "2 ready", || {
        (s.get_json(&["sts", "web"])["status"]["readyReplicas"] == 2).then_some(())
    });
    let uids: Vec<Value> = ["web-0", "web-1"]
        .iter()
        .map(|n| pod(&s, n).expect("pod")["metadata"]["uid"].clone())
        .collect();
    s.ok(&["delete", "sts", "web", "--cascade=orphan"]);
    eventually(20, "pods orphaned", || {
        ["web-0", "web-1"]
            .iter()
            .all(|n| {
                pod(&s, n).is_some_and(|p| {
                    p["metadata"]["ownerReferences"]
                        .as_array()
                        .is_none_or(|r| r.is_empty())
                })
            })
            .then_some(())
    });
    s.ok(&["apply", "-f", &seed("seed-web.yaml").to_string_lossy()]);
    eventually(30, "the new set ready with the adopted pods", || {
        (s.get_json(&["sts", "web"])["status"]["readyReplicas"] == 2).then_some(())
    });
    let set_uid = s.get_json(&["sts", "web"])["metadata"]["uid"].clone();
    for (n, uid) in ["web-0", "web-1"].iter().zip(&uids) {
        let p = pod(&s, n).expect("pod");
        assert_eq!(&p["metadata"]["uid"], uid, "{n} kept, not replaced");
        assert!(
            p["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|r| r.iter().any(|o| o["uid"] == set_uid && o["controller"] == true)),
            "{n} adopted: {p}"
        );
    }
    let revisions = s.get_json(&["controllerrevisions"]);
    let items = revisions["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        items.len(),
        1,
        "the old revision adopted, no second one: {revisions}"
    );
    assert!(
        items[0]["metadata"]["ownerReferences"]
            .as_array()
            .is_some_and(|r| r.iter().any(|o| o["uid"] == set_uid))
    );
}

/// Node loss (issue 15 item 11, issue 16 item 4), upstream's node lifecycle controller, taint eviction
/// and non-graceful node shutdown: a node that stops posting status turns `Unknown` after the grace
/// period and is tainted unreachable; its StatefulSet pod is marked not ready and evicted once its
/// toleration runs out, but is *not* replaced while it is merely Terminating on the lost node (at most
/// one pod per ordinal); the administrator's `out-of-service` taint lets it go, and the ordinal is
/// created again. The lost node is a Node object with no kubelet behind it, so its heartbeat stops as
/// soon as the test stops writing it; the server runs its own agent (on another node) because only then
/// are pods deleted gracefully, as on a real cluster (with `--disable-agent` a pod on a node no agent
/// registered goes at once).
#[test]
fn a_lost_node_is_tainted_and_its_statefulset_pod_moves_only_after_out_of_service() {
    if !common::can_run_containers() {
        return;
    }
    let s = Server::start_with(&["--node-name", "node-loss", "--node-monitor-grace-period", "3s"]);
    s.apply("apiVersion: v1\nkind: Node\nmetadata: {name: n1, labels: {kubernetes.io/hostname: n1}}\n");
    let now = jiff::Timestamp::now().to_string();
    let status = format!(
        r#"{{"status":{{"capacity":{{"cpu":"4","memory":"8Gi","pods":"110"}},"allocatable":{{"cpu":"4","memory":"8Gi","pods":"110"}},"conditions":[{{"type":"Ready","status":"True","reason":"KubeletReady","lastHeartbeatTime":"{now}","lastTransitionTime":"{now}"}}]}}}}"#
    );
    s.ok(&[
        "patch",
        "node",
        "n1",
        "--subresource=status",
        "--type=merge",
        "-p",
        &status,
    ]);
    s.apply(
        r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 1
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      nodeSelector: {kubernetes.io/hostname: n1}
      tolerations:
      - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 2}
      containers: [{name: db, image: busybox:test}]
"#,
    );
    let first = eventually(30, "db-0 on n1", || {
        let p = pod(&s, "db-0")?;
        (p["spec"]["nodeName"] == "n1").then_some(p)
    });
    // DefaultTolerationSeconds: the not-ready toleration was added, the set's own unreachable one kept.
    let tolerations = first["spec"]["tolerations"].to_string();
    assert!(
        tolerations.contains("node.kubernetes.io/not-ready")
            && tolerations.contains("\"tolerationSeconds\":2"),
        "{tolerations}"
    );
    let uid = first["metadata"]["uid"].as_str().expect("uid").to_string();
    mark_ready(&s, "db-0");
    // The heartbeat stops: Unknown after the grace period, tainted, the pod not ready.
    let node = eventually(30, "n1 Unknown and tainted", || {
        let n = s.get_json(&["node", "n1"]);
        let ready = n["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Ready")?
            .clone();
        let tainted = n["spec"]["taints"]
            .to_string()
            .contains("node.kubernetes.io/unreachable");
        (ready["status"] == "Unknown" && tainted).then_some(n)
    });
    assert!(
        node.to_string().contains("Kubelet stopped posting node status."),
        "{node}"
    );
    let table = s.ok(&["get", "nodes"]);
    assert!(table.contains("NotReady"), "{table}");
    // Evicted after its 2 s toleration: Terminating, and not replaced while the node is merely lost.
    eventually(30, "db-0 evicted", || {
        let p = pod(&s, "db-0")?;
        (!p["metadata"]["deletionTimestamp"].is_null()).then_some(())
    });
    let p = s.get_json(&["pod", "db-0"]);
    let ready = p["status"]["conditions"].to_string();
    assert!(ready.contains("\"status\":\"False\""), "not ready: {ready}");
    std::thread::sleep(std::time::Duration::from_secs(4));
    let p = s.get_json(&["pod", "db-0"]);
    assert_eq!(
        p["metadata"]["uid"],
        uid.as_str(),
        "db-0 replaced while its node was merely lost"
    );
    assert_eq!(
        s.get_json(&["pods", "-l", "app=db"])["items"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    // The machine is known to be off: out-of-service lets the ordinal go and come back.
    s.ok(&[
        "taint",
        "node",
        "n1",
        "node.kubernetes.io/out-of-service=nodeshutdown:NoExecute",
    ]);
    eventually(30, "db-0 recreated", || {
        let p = s.get_json(&["pods", "-l", "app=db"]);
        let items = p["items"].as_array()?.clone();
        (items.len() == 1 && items[0]["metadata"]["uid"] != uid.as_str()).then_some(())
    });
}
