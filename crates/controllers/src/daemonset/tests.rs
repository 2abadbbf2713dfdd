//! Table tests of the DaemonSet plan and a property test over a fake cluster: nodes join, leave and
//! change labels and taints, pods become ready or fail, the template changes; after every step no node
//! has two running daemon pods, and once quiet every eligible node has exactly one updated pod.

use super::plan::{Observed, Plan, REVISION_LABEL, plan, should_run};
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use proptest::prelude::*;
use serde_json::json;
use std::collections::BTreeMap;

fn t(s: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(1_800_000_000 + s).expect("time")
}

fn ds(image: &str, extra: serde_json::Value) -> DaemonSet {
    let mut v = json!({"metadata": {"name": "agent", "namespace": "default", "uid": "ds-uid", "generation": 1},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {"metadata": {"labels": {"app": "agent"}},
                "spec": {"containers": [{"name": "c", "image": image}]}}}});
    json_patch::merge(&mut v, &extra);
    serde_json::from_value(v).expect("ds")
}

fn node(name: &str, labels: serde_json::Value, taints: serde_json::Value) -> Node {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "spec": {"taints": taints}}))
        .expect("node")
}

fn run(d: &DaemonSet, nodes: &[Node], pods: &[Pod], revs: &[ControllerRevision]) -> Plan {
    plan(&Observed {
        ds: d,
        nodes: nodes.iter().collect(),
        pods: pods.iter().collect(),
        revisions: revs.iter().collect(),
        settled: true,
        now: t(100),
    })
}

fn target(p: &Pod) -> String {
    p.spec
        .as_ref()
        .expect("spec")
        .affinity
        .as_ref()
        .expect("affinity")
        .node_affinity
        .as_ref()
        .expect("na")
        .required_during_scheduling_ignored_during_execution
        .as_ref()
        .expect("req")
        .node_selector_terms[0]
        .match_fields
        .as_ref()
        .expect("fields")[0]
        .values
        .as_ref()
        .expect("values")[0]
        .clone()
}

#[test]
fn one_pod_per_eligible_node_pinned_by_affinity_with_daemon_tolerations() {
    let d = ds(
        "agent:1",
        json!({"spec": {"template": {"spec": {"nodeSelector": {"disk": "ssd"}}}}}),
    );
    let nodes = [
        node("a", json!({"disk": "ssd"}), json!([])),
        node("b", json!({"disk": "hdd"}), json!([])),
        node(
            "c",
            json!({"disk": "ssd"}),
            json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]),
        ),
        node(
            "d",
            json!({"disk": "ssd"}),
            json!([{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]),
        ),
    ];
    let p = run(&d, &nodes, &[], &[]);
    let mut targets: Vec<String> = p.create.iter().map(target).collect();
    targets.sort();
    assert_eq!(
        targets,
        ["a", "d"],
        "not b (selector) nor c (untolerated taint); d's cordon is tolerated"
    );
    let pod = &p.create[0];
    let tols = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .expect("tolerations");
    assert!(
        tols.iter()
            .any(|t| t.key.as_deref() == Some("node.kubernetes.io/not-ready"))
    );
    assert!(
        pod.metadata
            .labels
            .as_ref()
            .expect("labels")
            .contains_key(REVISION_LABEL)
    );
    assert!(p.create_revision.is_some());
    let st = p.status.expect("status");
    assert_eq!(st.desired_number_scheduled, 2);
    assert_eq!(st.current_number_scheduled, 0);
}

fn pod_on(name: &str, node: &str, hash: &str, ready: bool) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default", "uid": format!("u-{name}"),
        "creationTimestamp": t(0).to_string(),
        "labels": {"app": "agent", REVISION_LABEL: hash},
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "uid": "ds-uid", "controller": true}]},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"},
            "lastTransitionTime": t(0).to_string()}]}}))
    .expect("pod")
}

#[test]
fn misscheduled_pods_go_and_a_rolling_update_respects_max_unavailable() {
    let d = ds("agent:2", json!({}));
    let nodes = [
        node("a", json!({}), json!([])),
        node("b", json!({}), json!([])),
        node("c", json!({}), json!([])),
    ];
    let pods = [
        pod_on("agent-a", "a", "old", true),
        pod_on("agent-b", "b", "old", true),
        pod_on("agent-c", "c", "old", true),
        pod_on("agent-gone", "zz", "old", true),
    ];
    let p = run(&d, &nodes, &pods, &[]);
    let deleted: Vec<&str> = p.delete.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        deleted,
        ["agent-a", "agent-gone"],
        "one old pod at a time (maxUnavailable 1), and the orphaned node's"
    );
    // OnDelete: nothing old is deleted.
    let d = ds(
        "agent:2",
        json!({"spec": {"updateStrategy": {"type": "OnDelete", "rollingUpdate": null}}}),
    );
    let p = run(&d, &nodes, &pods[..3], &[]);
    assert!(p.delete.is_empty());
    assert_eq!(p.status.expect("status").updated_number_scheduled, None);
}

/// `maxSurge` (upstream `rollingUpdate` when surging): a new pod starts beside an available old one,
/// at most maxSurge at a time, and the old one goes only once the new one is available; never a node
/// without an available pod.
#[test]
fn a_surging_rolling_update_starts_the_new_pod_before_deleting_the_old() {
    let d = ds(
        "agent:2",
        json!({"spec": {"updateStrategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}}}),
    );
    let nodes = [
        node("a", json!({}), json!([])),
        node("b", json!({}), json!([])),
        node("c", json!({}), json!([])),
    ];
    let old = [
        pod_on("agent-a", "a", "old", true),
        pod_on("agent-b", "b", "old", true),
        pod_on("agent-c", "c", "old", true),
    ];
    let p = run(&d, &nodes, &old, &[]);
    assert!(p.delete.is_empty(), "{:?}", p.delete);
    assert_eq!(p.create.iter().map(target).collect::<Vec<_>>(), ["a"]);
    let hash = p.create[0].metadata.labels.as_ref().expect("labels")[REVISION_LABEL].clone();
    // The new pod on a is starting: nothing else moves (the surge is used up).
    let mut pods = old.to_vec();
    pods.push(pod_on("agent-a2", "a", &hash, false));
    let p = run(&d, &nodes, &pods, &[]);
    assert!(p.delete.is_empty() && p.create.is_empty(), "{p:?}");
    // It is available: a's old pod goes and b gets its new pod.
    pods[3] = pod_on("agent-a2", "a", &hash, true);
    let p = run(&d, &nodes, &pods, &[]);
    let deleted: Vec<&str> = p.delete.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(deleted, ["agent-a"]);
    assert_eq!(p.create.iter().map(target).collect::<Vec<_>>(), ["b"]);
}

#[test]
fn taints_with_no_execute_evict_and_the_template_can_tolerate_them() {
    let tainted = node(
        "a",
        json!({}),
        json!([{"key": "gpu", "value": "yes", "effect": "NoExecute"}]),
    );
    assert!(!should_run(&ds("x", json!({})), &tainted));
    let tolerant = ds(
        "x",
        json!({"spec": {"template": {"spec": {"tolerations": [{"key": "gpu", "operator": "Exists"}]}}}}),
    );
    assert!(should_run(&tolerant, &tainted));
}

/// The fake cluster: nodes, pods by uid, revisions; the fake scheduler binds pinned pods at once.
struct Cluster {
    nodes: BTreeMap<String, Node>,
    pods: BTreeMap<String, Pod>,
    revs: BTreeMap<String, ControllerRevision>,
    ds: DaemonSet,
    next: u32,
}

fn apply(c: &mut Cluster, p: Plan) {
    if let Some(r) = p.create_revision {
        c.revs.insert(r.metadata.name.clone().unwrap_or_default(), r);
    }
    if let Some((n, rev)) = p.renumber_revision
        && let Some(r) = c.revs.get_mut(&n)
    {
        r.revision = rev;
    }
    for n in p.delete_revisions {
        c.revs.remove(&n);
    }
    for r in p.delete {
        c.pods.remove(&r.uid);
    }
    for mut pod in p.create {
        c.next += 1;
        let name = format!("agent-{}", c.next);
        let node = target(&pod);
        pod.metadata.name = Some(name.clone());
        pod.metadata.uid = Some(format!("u-{name}"));
        pod.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t(
            i64::from(c.next),
        )));
        if let Some(s) = pod.spec.as_mut() {
            s.node_name = Some(node);
        }
        c.pods.insert(format!("u-{name}"), pod);
    }
    if let Some(st) = p.status {
        c.ds.status = Some(st);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]
    #[test]
    fn never_two_daemon_pods_on_a_node_and_every_eligible_node_gets_one(
        ops in proptest::collection::vec((0u8..6, 0usize..5), 1..80),
    ) {
        let mut c = Cluster { nodes: BTreeMap::new(), pods: BTreeMap::new(), revs: BTreeMap::new(),
            ds: ds("agent:1", json!({"spec": {"template": {"spec": {"nodeSelector": {"run": "yes"}}}}})), next: 0 };
        let mut image = 1;
        for (op, i) in ops {
            let name = format!("n{i}");
            match op {
                0 => { c.nodes.insert(name.clone(), node(&name, json!({"run": "yes"}), json!([]))); }
                1 => { c.nodes.remove(&name); }
                2 => { c.nodes.insert(name.clone(), node(&name, json!({"run": "no"}), json!([]))); }
                3 => {
                    // A pod becomes Ready (or fails, for odd i).
                    if let Some(p) = c.pods.values_mut().nth(i) {
                        let phase = if i % 2 == 0 { "Running" } else { "Failed" };
                        p.status = Some(serde_json::from_value(json!({"phase": phase, "conditions": [{"type": "Ready",
                            "status": "True", "lastTransitionTime": t(0).to_string()}]})).expect("status"));
                    }
                }
                4 => {
                    image += 1;
                    let mut d = ds(&format!("agent:{image}"), json!({"spec": {"template": {"spec": {"nodeSelector": {"run": "yes"}}}}}));
                    d.status = c.ds.status.clone();
                    c.ds = d;
                }
                _ => {
                    let nodes: Vec<Node> = c.nodes.values().cloned().collect();
                    let pods: Vec<Pod> = c.pods.values().cloned().collect();
                    let revs: Vec<ControllerRevision> = c.revs.values().cloned().collect();
                    let p = run(&c.ds, &nodes, &pods, &revs);
                    apply(&mut c, p);
                }
            }
            let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
            for p in c.pods.values() {
                let ph = p.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
                if ph != "Failed" {
                    *per_node.entry(p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default()).or_default() += 1;
                }
            }
            prop_assert!(per_node.values().all(|n| *n <= 1), "{per_node:?}");
        }
        // Quiet: pods get ready and the plan runs until nothing changes.
        for _ in 0..60 {
            for p in c.pods.values_mut() {
                p.status = Some(serde_json::from_value(json!({"phase": "Running", "conditions": [{"type": "Ready",
                    "status": "True", "lastTransitionTime": t(0).to_string()}]})).expect("status"));
            }
            let nodes: Vec<Node> = c.nodes.values().cloned().collect();
            let pods: Vec<Pod> = c.pods.values().cloned().collect();
            let revs: Vec<ControllerRevision> = c.revs.values().cloned().collect();
            let p = run(&c.ds, &nodes, &pods, &revs);
            apply(&mut c, p);
        }
        let eligible = c.nodes.values().filter(|n| should_run(&c.ds, n)).count();
        let st = c.ds.status.clone().unwrap_or_default();
        prop_assert_eq!(usize::try_from(st.desired_number_scheduled).unwrap_or(0), eligible);
        prop_assert_eq!(c.pods.len(), eligible);
        prop_assert_eq!(usize::try_from(st.updated_number_scheduled.unwrap_or(0)).unwrap_or(0), eligible);
        prop_assert_eq!(st.number_misscheduled, 0);
    }
}
