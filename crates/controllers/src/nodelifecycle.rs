//! Node lifecycle: what happens to a node that stops reporting and to its pods, as upstream's node
//! lifecycle controller (`pkg/controller/nodelifecycle`), its taint-based eviction
//! (`pkg/controller/tainteviction`) and the pod garbage collector's out-of-service rule
//! (`pkg/controller/podgc`, non-graceful node shutdown) do it:
//!
//! - a node whose heartbeat (its Lease in `kube-node-lease` or its Ready condition's
//!   `lastHeartbeatTime`) has not changed for the grace period (`--node-monitor-grace-period`, upstream's
//!   40 s) gets every condition set to `Unknown` (`NodeStatusUnknown`, "Kubelet stopped posting node
//!   status."), and its pods' `Ready` condition set to `False` (upstream `MarkPodsNotReady`), so Services
//!   stop sending them traffic. The age is measured on this controller's clock from the moment it saw the
//!   heartbeat change, as upstream's `probeTimestamp`, so clock skew between machines does not matter;
//! - a node whose Ready condition is `False` carries `node.kubernetes.io/not-ready`, one whose Ready is
//!   `Unknown` carries `node.kubernetes.io/unreachable`, each as `NoSchedule` and `NoExecute` (upstream's
//!   `TaintNodesByCondition` and `doNoExecuteTaintingPass`); a Ready node carries neither;
//! - a pod on a node with a `NoExecute` taint it does not tolerate is deleted (gracefully) at once, one
//!   whose tolerations all have `tolerationSeconds` when the shortest has passed since the taint was
//!   added (every pod tolerates not-ready and unreachable for 300 s by default: the
//!   DefaultTolerationSeconds admission plugin). Nothing more: on an unreachable node such a pod stays
//!   `Terminating`, because no kubelet confirms it stopped, so a StatefulSet never gets a second pod of
//!   the same ordinal while the first may still run, and a ReplicaSet replaces it elsewhere;
//! - a terminating pod on a node that is not Ready and carries `node.kubernetes.io/out-of-service`
//!   (which the administrator adds once the machine is known to be off) is force-deleted, so its
//!   StatefulSet ordinal can start on another node. (Pods of deleted nodes are [`crate::podgc`]'s.)
//!
//! Deletions are decided on complete caches and confirmed by a live read of the node first (the taint
//! and readiness they rest on must still be there).

use controller_runtime::{Informers, Settings, SharedInformers};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::watcher;
use serde_json::{Value, json};
use std::borrow::Borrow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The taint of a node whose Ready condition is `False`.
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
/// The taint of a node whose Ready condition is `Unknown`.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The taint an administrator adds to a node known to be shut down (non-graceful node shutdown).
pub const OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";
/// Upstream's default `--node-monitor-grace-period`.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(40);

/// What one pass does.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Set every condition of the node to `Unknown` (its status is stale).
    MarkUnknown {
        /// Node name.
        node: String,
    },
    /// Give the node these taints (the others kept, ours added or removed).
    SetTaints {
        /// Node name.
        node: String,
        /// The whole new list.
        taints: Vec<Taint>,
    },
    /// Set the pod's `Ready` (and `ContainersReady`) condition to `False`.
    MarkPodNotReady {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// Delete the pod gracefully: its node's `NoExecute` taint `taint` is not tolerated (any more).
    Evict {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// uid (the delete's precondition).
        uid: String,
        /// Its node.
        node: String,
        /// The taint's key.
        taint: String,
    },
    /// Delete the terminating pod now (grace 0): its node is out of service.
    ForceDelete {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// uid (the delete's precondition).
        uid: String,
        /// Its node.
        node: String,
    },
}

fn ready_status(n: &Node) -> &str {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map_or("Unknown", |c| c.status.as_str())
}

fn taints(n: &Node) -> Vec<Taint> {
    n.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default()
}

/// Whether `t` tolerates `taint` (upstream `Toleration.ToleratesTaint`).
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if t.effect
        .as_deref()
        .is_some_and(|e| !e.is_empty() && e != taint.effect)
    {
        return false;
    }
    let key = t.key.as_deref().unwrap_or("");
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => key.is_empty() || key == taint.key,
        _ => key == taint.key && t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
    }
}

/// When a pod with `tolerations` must leave a node with `NoExecute` taints `no_execute`: `Some(None)`
/// now (a taint is not tolerated), `Some(Some(t))` at `t`, `None` never (upstream `getMinTolerationTime`
/// from the latest taint's `timeAdded`).
fn eviction_time(
    tolerations: &[Toleration],
    no_execute: &[&Taint],
    now: jiff::Timestamp,
) -> Option<Option<(jiff::Timestamp, String)>> {
    let mut at: Option<(jiff::Timestamp, String)> = None;
    for taint in no_execute {
        let matching: Vec<&Toleration> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if matching.is_empty() {
            return Some(None);
        }
        // Upstream `getMinTolerationTime`: the shortest `tolerationSeconds` among the matching
        // tolerations; only when none has one is the taint tolerated for ever.
        let Some(secs) = matching.iter().filter_map(|t| t.toleration_seconds).min() else {
            continue;
        };
        let added = taint.time_added.as_ref().map_or(now, |t| t.0);
        let due = added + jiff::SignedDuration::from_secs(secs.max(0));
        if at.as_ref().is_none_or(|(a, _)| due < *a) {
            at = Some((due, taint.key.clone()));
        }
    }
    at.map(Some)
}

/// The steps for `nodes` and `pods`, given how long ago each node's heartbeat was last seen to change
/// (`ages`, by node name; a node missing there counts as just seen), the grace period and the time.
pub fn plan<P: Borrow<Pod>>(
    nodes: &[Node],
    pods: &[P],
    ages: &HashMap<String, Duration>,
    grace: Duration,
    now: jiff::Timestamp,
) -> Vec<Step> {
    let mut steps = Vec::new();
    for n in nodes {
        let name = n.metadata.name.clone().unwrap_or_default();
        let mut ready = ready_status(n).to_string();
        let stale = ages.get(&name).is_some_and(|a| *a > grace);
        if stale && ready != "Unknown" {
            steps.push(Step::MarkUnknown { node: name.clone() });
            ready = "Unknown".into();
        }
        // Our taints from the Ready condition; the others as they are.
        let current = taints(n);
        let want: &[&str] = match ready.as_str() {
            "True" => &[],
            "False" => &[NOT_READY],
            _ => &[UNREACHABLE],
        };
        let mut next: Vec<Taint> = current
            .iter()
            .filter(|t| !(t.key == NOT_READY || t.key == UNREACHABLE) || want.contains(&t.key.as_str()))
            .cloned()
            .collect();
        for key in want {
            for effect in ["NoSchedule", "NoExecute"] {
                if !next.iter().any(|t| t.key == *key && t.effect == effect) {
                    next.push(Taint {
                        key: (*key).to_string(),
                        effect: effect.to_string(),
                        value: None,
                        time_added: (effect == "NoExecute").then_some(Time(now)),
                    });
                }
            }
        }
        if next != current {
            steps.push(Step::SetTaints {
                node: name.clone(),
                taints: next.clone(),
            });
        }
        let no_execute: Vec<&Taint> = next.iter().filter(|t| t.effect == "NoExecute").collect();
        let out_of_service = next
            .iter()
            .any(|t| t.key == OUT_OF_SERVICE && t.effect == "NoExecute");
        for p in pods
            .iter()
            .map(Borrow::borrow)
            .filter(|p: &&Pod| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name.as_str()))
        {
            let (namespace, pod, uid) = (
                p.metadata.namespace.clone().unwrap_or_default(),
                p.metadata.name.clone().unwrap_or_default(),
                p.metadata.uid.clone().unwrap_or_default(),
            );
            let pod_ready = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
                .is_some_and(|c| c.status == "True");
            if ready == "Unknown" && pod_ready {
                steps.push(Step::MarkPodNotReady {
                    namespace: namespace.clone(),
                    name: pod.clone(),
                });
            }
            if p.metadata.deletion_timestamp.is_some() {
                if out_of_service && ready != "True" {
                    steps.push(Step::ForceDelete {
                        namespace,
                        name: pod,
                        uid,
                        node: name.clone(),
                    });
                }
                continue;
            }
            let tolerations = p
                .spec
                .as_ref()
                .and_then(|s| s.tolerations.clone())
                .unwrap_or_default();
            let evict = match eviction_time(&tolerations, &no_execute, now) {
                Some(None) => no_execute
                    .iter()
                    .find(|t| !tolerations.iter().any(|tol| tolerates(tol, t)))
                    .map(|t| t.key.clone()),
                Some(Some((at, key))) if at <= now => Some(key),
                _ => None,
            };
            if let Some(taint) = evict {
                steps.push(Step::Evict {
                    namespace,
                    name: pod,
                    uid,
                    node: name.clone(),
                    taint,
                });
            }
        }
    }
    steps
}

/// The heartbeat a node last gave: its Lease's renew time and its Ready condition's heartbeat.
fn heartbeat(n: &Node, leases: &HashMap<String, String>) -> String {
    let name = n.metadata.name.as_deref().unwrap_or("");
    let cond = n
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_heartbeat_time.as_ref())
        .map(|t| t.0.to_string())
        .unwrap_or_default();
    format!("{} {cond}", leases.get(name).map_or("", String::as_str))
}

/// Run until the process ends, with `grace` as the node monitor grace period.
pub async fn run(client: kube::Client, shared: SharedInformers, grace: Duration) {
    let nodes_api: Api<Node> = Api::all(client.clone());
    let pods_all: Api<Pod> = Api::all(client.clone());
    let leases_api: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let mut informers = Informers::new();
    let nodes = informers.watch_shared(&shared, nodes_api.clone(), watcher::Config::default());
    let pods = informers.watch_shared(&shared, pods_all, watcher::Config::default());
    let leases = informers.watch_shared(&shared, leases_api, watcher::Config::default());
    // Time-based decisions: a pass at least every second (upstream monitors every 5 s).
    let settings = Settings {
        resync: Duration::from_secs(1),
        ..Settings::default()
    };
    let mut seen: HashMap<String, (String, Instant)> = HashMap::new();
    let mut passes = informers.into_loop("nodelifecycle", settings);
    while let Some(mut pass) = passes.next_pass().await {
        let node_list: Vec<Node> = nodes.state().iter().map(|n| (**n).clone()).collect();
        let pod_list = pods.state();
        let renewals: HashMap<String, String> = leases
            .state()
            .iter()
            .filter_map(|l| {
                let renew = l.spec.as_ref()?.renew_time.as_ref()?.0.to_string();
                Some((l.metadata.name.clone()?, renew))
            })
            .collect();
        // The age of each heartbeat on our own clock (a node seen for the first time starts now).
        let now = Instant::now();
        let mut ages = HashMap::new();
        for n in &node_list {
            let name = n.metadata.name.clone().unwrap_or_default();
            let beat = heartbeat(n, &renewals);
            let entry = seen.entry(name.clone()).or_insert_with(|| (beat.clone(), now));
            if entry.0 != beat {
                *entry = (beat, now);
            }
            ages.insert(name, now.duration_since(entry.1));
        }
        seen.retain(|k, _| ages.contains_key(k));
        let steps = plan(&node_list, &pod_list, &ages, grace, jiff::Timestamp::now());
        for step in steps {
            let key = format!("{step:?}");
            let c = client.clone();
            let nodes_api = nodes_api.clone();
            let node_list = &node_list;
            let pod_list = &pod_list;
            pass.step(&key, async move {
                execute(&c, &nodes_api, node_list, pod_list, step).await
            })
            .await;
        }
    }
}

async fn execute(
    client: &kube::Client,
    nodes_api: &Api<Node>,
    nodes: &[Node],
    pods: &[Arc<Pod>],
    step: Step,
) -> Result<(), String> {
    let e = |e: kube::Error| e.to_string();
    match step {
        Step::MarkUnknown { node } => {
            let Some(n) = nodes
                .iter()
                .find(|n| n.metadata.name.as_deref() == Some(node.as_str()))
            else {
                return Ok(());
            };
            let now = jiff::Timestamp::now().to_string();
            let conditions: Vec<Value> = n
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default()
                .into_iter()
                .map(|c| {
                    let mut v = serde_json::to_value(&c).unwrap_or_default();
                    if c.status != "Unknown" {
                        v["status"] = json!("Unknown");
                        v["reason"] = json!("NodeStatusUnknown");
                        v["message"] = json!("Kubelet stopped posting node status.");
                        v["lastTransitionTime"] = json!(now);
                    }
                    v
                })
                .collect();
            let patch = json!({"metadata": {"resourceVersion": n.metadata.resource_version},
                               "status": {"conditions": conditions}});
            nodes_api
                .patch_status(&node, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .map_err(e)?;
            tracing::warn!(node = %node, "node stopped posting status: conditions Unknown");
        }
        Step::SetTaints { node, taints } => {
            let Some(mut n) = nodes
                .iter()
                .find(|n| n.metadata.name.as_deref() == Some(node.as_str()))
                .cloned()
            else {
                return Ok(());
            };
            n.spec.get_or_insert_with(Default::default).taints = (!taints.is_empty()).then_some(taints);
            // A replace carries the cached resourceVersion: a concurrent `kubectl taint` wins (409) and
            // the next pass starts from it.
            nodes_api
                .replace(&node, &PostParams::default(), &n)
                .await
                .map_err(e)?;
        }
        Step::MarkPodNotReady { namespace, name } => {
            let Some(p) = pods.iter().find(|p| {
                p.metadata.namespace.as_deref() == Some(namespace.as_str())
                    && p.metadata.name.as_deref() == Some(name.as_str())
            }) else {
                return Ok(());
            };
            let now = jiff::Timestamp::now().to_string();
            let conditions: Vec<Value> = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default()
                .into_iter()
                .map(|c| {
                    let mut v = serde_json::to_value(&c).unwrap_or_default();
                    if (c.type_ == "Ready" || c.type_ == "ContainersReady") && c.status == "True" {
                        v["status"] = json!("False");
                        v["reason"] = json!("NodeNotReady");
                        v["lastTransitionTime"] = json!(now);
                    }
                    v
                })
                .collect();
            let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
            let patch = json!({"metadata": {"resourceVersion": p.metadata.resource_version},
                               "status": {"conditions": conditions}});
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .map_err(e)?;
        }
        Step::Evict {
            namespace,
            name,
            uid,
            node,
            taint,
        } => {
            // Confirmed live: the node still carries the NoExecute taint the decision rests on.
            let live = live_node(nodes_api, &node).await?;
            if !live.as_ref().is_some_and(|n| {
                taints(n)
                    .iter()
                    .any(|t| t.key == taint && t.effect == "NoExecute")
            }) {
                return Ok(());
            }
            if delete_pod(client, &namespace, &name, uid, None).await? {
                tracing::warn!(pod = %name, %namespace, node = %node, %taint, "evicted: NoExecute taint");
            }
        }
        Step::ForceDelete {
            namespace,
            name,
            uid,
            node,
        } => {
            // Confirmed live: the node is still out of service and not Ready.
            let live = live_node(nodes_api, &node).await?;
            if !live.as_ref().is_some_and(|n| {
                ready_status(n) != "True"
                    && taints(n)
                        .iter()
                        .any(|t| t.key == OUT_OF_SERVICE && t.effect == "NoExecute")
            }) {
                return Ok(());
            }
            if delete_pod(client, &namespace, &name, uid, Some(0)).await? {
                tracing::warn!(pod = %name, %namespace, node = %node, "force-deleted: node out of service");
            }
        }
    }
    Ok(())
}

/// The node `name` as the API server has it now (`None`: gone), for decisions that delete.
async fn live_node(nodes_api: &Api<Node>, name: &str) -> Result<Option<Node>, String> {
    controller_runtime::live::get(nodes_api, name)
        .await
        .map_err(|u| u.0)
}

/// Delete the pod `namespace/name` if it is still the one with `uid` (`grace`: `None` for its own
/// grace period, `Some(0)` to force). `false` when it was already gone or replaced.
pub(crate) async fn delete_pod(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    uid: String,
    grace: Option<u32>,
) -> Result<bool, String> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let dp = DeleteParams {
        grace_period_seconds: grace,
        preconditions: Some(Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(false),
        Err(err) => Err(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ready: &str, taints: Value) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"taints": taints},
            "status": {"conditions": [{"type": "Ready", "status": ready}]}}))
        .unwrap()
    }

    fn pod(name: &str, node: &str, tolerations: Value, ready: bool, deleting: bool) -> Pod {
        let mut p = json!({"metadata": {"name": name, "namespace": "default", "uid": format!("u-{name}")},
            "spec": {"nodeName": node, "containers": [], "tolerations": tolerations},
            "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}});
        if deleting {
            p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        serde_json::from_value(p).unwrap()
    }

    fn now() -> jiff::Timestamp {
        "2026-12-02T12:00:00Z".parse().unwrap()
    }

    fn default_tolerations() -> Value {
        json!([{"key": NOT_READY, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
               {"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}])
    }

    #[test]
    fn a_stale_node_turns_unknown_is_tainted_and_its_pods_not_ready() {
        let nodes = [node("a", "True", json!([])), node("b", "True", json!([]))];
        let pods = [pod("p", "a", default_tolerations(), true, false)];
        let ages = HashMap::from([
            ("a".to_string(), Duration::from_secs(41)),
            ("b".to_string(), Duration::from_secs(39)),
        ]);
        let steps = plan(&nodes, &pods, &ages, DEFAULT_GRACE, now());
        assert_eq!(steps[0], Step::MarkUnknown { node: "a".into() });
        let Step::SetTaints { node, taints } = &steps[1] else {
            panic!("{steps:?}")
        };
        assert_eq!(node, "a");
        let keys: Vec<(&str, &str)> = taints
            .iter()
            .map(|t| (t.key.as_str(), t.effect.as_str()))
            .collect();
        assert_eq!(keys, [(UNREACHABLE, "NoSchedule"), (UNREACHABLE, "NoExecute")]);
        assert!(taints[1].time_added.is_some() && taints[0].time_added.is_none());
        assert_eq!(
            steps[2],
            Step::MarkPodNotReady {
                namespace: "default".into(),
                name: "p".into()
            }
        );
        // Tolerated for 300 s from now: not evicted yet; node b (within grace) untouched.
        assert_eq!(steps.len(), 3, "{steps:?}");
    }

    #[test]
    fn eviction_waits_for_the_shortest_toleration_and_is_immediate_without_one() {
        let added = now() - jiff::SignedDuration::from_secs(301);
        let tainted = json!([{"key": UNREACHABLE, "effect": "NoSchedule"},
                             {"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": added.to_string()}]);
        let nodes = [node("a", "Unknown", tainted)];
        let pods = [
            pod("late", "a", default_tolerations(), false, false),
            pod("none", "a", json!([]), false, false),
            pod("forever", "a", json!([{"operator": "Exists"}]), false, false),
            pod("gone", "a", json!([]), false, true),
        ];
        let steps = plan(&nodes, &pods, &HashMap::new(), DEFAULT_GRACE, now());
        let evicted: Vec<&str> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Evict { name, .. } => Some(name.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(evicted, ["late", "none"], "{steps:?}");
        // 299 s after the taint: only the pod without a toleration goes.
        let steps = plan(
            &nodes,
            &pods,
            &HashMap::new(),
            DEFAULT_GRACE,
            added + jiff::SignedDuration::from_secs(299),
        );
        assert!(
            steps
                .iter()
                .all(|s| !matches!(s, Step::Evict { name, .. } if name == "late")),
            "{steps:?}"
        );
    }

    #[test]
    fn a_terminating_pod_is_force_deleted_only_on_an_out_of_service_node_that_is_not_ready() {
        let oos = json!([{"key": OUT_OF_SERVICE, "value": "nodeshutdown", "effect": "NoExecute"},
                         {"key": UNREACHABLE, "effect": "NoSchedule"},
                         {"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": now().to_string()}]);
        let pods = [pod("web-0", "a", default_tolerations(), false, true)];
        let steps = plan(
            &[node("a", "Unknown", oos.clone())],
            &pods,
            &HashMap::new(),
            DEFAULT_GRACE,
            now(),
        );
        assert!(
            steps
                .iter()
                .any(|s| matches!(s, Step::ForceDelete { name, .. } if name == "web-0"))
        );
        // Without the taint it stays Terminating: at most one pod per ordinal.
        let unreachable = json!([{"key": UNREACHABLE, "effect": "NoSchedule"},
                                 {"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": now().to_string()}]);
        let steps = plan(
            &[node("a", "Unknown", unreachable)],
            &pods,
            &HashMap::new(),
            DEFAULT_GRACE,
            now(),
        );
        assert!(steps.is_empty(), "{steps:?}");
        // A Ready node with the taint (the machine is back): not forced.
        let steps = plan(
            &[node("a", "True", oos)],
            &pods,
            &HashMap::new(),
            DEFAULT_GRACE,
            now(),
        );
        assert!(
            !steps.iter().any(|s| matches!(s, Step::ForceDelete { .. })),
            "{steps:?}"
        );
    }

    #[test]
    fn a_node_that_reports_again_loses_our_taints_and_keeps_others() {
        let t = json!([{"key": UNREACHABLE, "effect": "NoExecute"}, {"key": "dedicated", "value": "db", "effect": "NoSchedule"}]);
        let steps = plan::<Pod>(
            &[node("a", "True", t)],
            &[],
            &HashMap::new(),
            DEFAULT_GRACE,
            now(),
        );
        let Step::SetTaints { taints, .. } = &steps[0] else {
            panic!("{steps:?}")
        };
        assert_eq!(taints.len(), 1);
        assert_eq!(taints[0].key, "dedicated");
        // Ready False: not-ready, not unreachable.
        let steps = plan::<Pod>(
            &[node("b", "False", json!([]))],
            &[],
            &HashMap::new(),
            DEFAULT_GRACE,
            now(),
        );
        let Step::SetTaints { taints, .. } = &steps[0] else {
            panic!("{steps:?}")
        };
        assert!(taints.iter().all(|t| t.key == NOT_READY));
    }
}
