//! The pod garbage collector, as upstream's (`pkg/controller/podgc`):
//!
//! - `gcOrphaned`: a pod bound to a node that does not exist (the Node was deleted, or never registered)
//!   is marked `Failed` with a `DisruptionTarget` condition (`DeletionByPodGC`) and force-deleted once the
//!   node has been missing from the cache for the quarantine ([`QUARANTINE`], upstream's
//!   `quarantineTime`, measured on this controller's clock) and a live read confirms it is gone: no
//!   kubelet is left to finish such a pod, whether it was running or already terminating;
//! - `gcTerminated`: when more than `--terminated-pod-gc-threshold` pods have finished (phase `Succeeded`
//!   or `Failed`), the excess is deleted, evicted pods first, then the oldest (upstream's
//!   `byEvictionAndCreationTimestamp`); a threshold of 0 turns this off, as upstream.
//!
//! Upstream's `gcTerminating` (terminating pods on an out-of-service node) is in [`crate::nodelifecycle`],
//! beside the taints it reads; `gcUnscheduledTerminating` is not needed: the registry deletes a pod that
//! was never scheduled at once (no grace period), as upstream's pod strategy does.
//!
//! Decisions are made on complete caches (the loop runs only once every cache has listed); every delete
//! carries the pod's uid as a precondition.

use crate::nodelifecycle::delete_pod;
use controller_runtime::{Informers, Settings, SharedInformers};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;
use serde_json::{Value, json};
use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a node its pods name must be missing before they are collected (upstream's
/// `quarantineTime`): time for a node that is (re-)registering to show up.
pub const QUARANTINE: Duration = Duration::from_secs(40);

/// kube-controller-manager's default `--terminated-pod-gc-threshold`.
pub const DEFAULT_TERMINATED_THRESHOLD: usize = 12_500;

/// What one pass does.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Mark the pod `Failed` and delete it now (grace 0): its node no longer exists.
    DeleteOrphan {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// uid (the delete's precondition).
        uid: String,
        /// The missing node.
        node: String,
    },
    /// Delete the finished pod now (grace 0): more pods have finished than the threshold allows.
    DeleteTerminated {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// uid (the delete's precondition).
        uid: String,
    },
}

fn node_of(p: &Pod) -> Option<&str> {
    p.spec.as_ref()?.node_name.as_deref().filter(|n| !n.is_empty())
}

fn ids(p: &Pod) -> (String, String, String) {
    (
        p.metadata.namespace.clone().unwrap_or_default(),
        p.metadata.name.clone().unwrap_or_default(),
        p.metadata.uid.clone().unwrap_or_default(),
    )
}

/// The node names `pods` are bound to that `nodes` lacks.
pub fn missing_nodes<P: Borrow<Pod>>(nodes: &[Node], pods: &[P]) -> HashSet<String> {
    let known: HashSet<&str> = nodes.iter().filter_map(|n| n.metadata.name.as_deref()).collect();
    pods.iter()
        .filter_map(|p| node_of(p.borrow()))
        .filter(|n| !known.contains(n))
        .map(str::to_string)
        .collect()
}

/// The pods to collect because their node is gone (upstream `gcOrphaned`): those bound to a node that
/// has been missing for at least `quarantine`, by `missing` (how long each missing node name has been
/// seen missing; a name not there counts as just missed). Terminating pods too: no kubelet will finish
/// them.
pub fn orphans<P: Borrow<Pod>>(
    pods: &[P],
    missing: &HashMap<String, Duration>,
    quarantine: Duration,
) -> Vec<Step> {
    pods.iter()
        .map(Borrow::borrow)
        .filter_map(|p: &Pod| {
            let node = node_of(p)?;
            if missing.get(node).is_none_or(|m| *m < quarantine) {
                return None;
            }
            let (namespace, name, uid) = ids(p);
            Some(Step::DeleteOrphan {
                namespace,
                name,
                uid,
                node: node.to_string(),
            })
        })
        .collect()
}

fn finished(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn evicted(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.reason.as_deref()) == Some("Evicted")
}

/// The finished pods beyond `threshold` (upstream `gcTerminated`): evicted ones first, then by creation
/// time, names breaking ties. Nothing when `threshold` is 0 (off).
pub fn terminated<P: Borrow<Pod>>(pods: &[P], threshold: usize) -> Vec<Step> {
    if threshold == 0 {
        return Vec::new();
    }
    let mut done: Vec<&Pod> = pods.iter().map(Borrow::borrow).filter(|p| finished(p)).collect();
    let Some(excess) = done.len().checked_sub(threshold).filter(|e| *e > 0) else {
        return Vec::new();
    };
    done.sort_by(|a, b| {
        evicted(b)
            .cmp(&evicted(a))
            .then_with(|| {
                let t = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
                t(a).cmp(&t(b))
            })
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
    done.into_iter()
        .take(excess)
        .map(|p| {
            let (namespace, name, uid) = ids(p);
            Step::DeleteTerminated { namespace, name, uid }
        })
        .collect()
}

/// Run until the process ends, keeping at most `threshold` finished pods (0: no limit).
pub async fn run(client: kube::Client, shared: SharedInformers, threshold: usize) {
    let nodes_api: Api<Node> = Api::all(client.clone());
    let mut informers = Informers::new();
    let nodes = informers.watch_shared(&shared, nodes_api.clone(), watcher::Config::default());
    let pods = informers.watch_shared(
        &shared,
        Api::<Pod>::all(client.clone()),
        watcher::Config::default(),
    );
    // The quarantine is time-based: a pass at least every 5 s (upstream checks every 20 s).
    let mut passes = informers.into_loop("podgc", Settings::default());
    let mut gone: HashMap<String, Instant> = HashMap::new();
    while let Some(mut pass) = passes.next_pass().await {
        let node_list: Vec<Node> = nodes.state().iter().map(|n| (**n).clone()).collect();
        let pod_list = pods.state();
        // How long each node that pods name has been missing, on our clock (upstream's quarantine queue).
        let now = Instant::now();
        let absent = missing_nodes(&node_list, &pod_list);
        gone.retain(|k, _| absent.contains(k));
        let missing: HashMap<String, Duration> = absent
            .into_iter()
            .map(|n| {
                let since = *gone.entry(n.clone()).or_insert(now);
                (n, now.duration_since(since))
            })
            .collect();
        let mut steps = orphans(&pod_list, &missing, QUARANTINE);
        steps.extend(terminated(&pod_list, threshold));
        for step in steps {
            let key = format!("{step:?}");
            let c = client.clone();
            let nodes_api = nodes_api.clone();
            let pod_list = &pod_list;
            pass.step(&key, async move { execute(&c, &nodes_api, pod_list, step).await })
                .await;
        }
    }
}

async fn execute(
    client: &kube::Client,
    nodes_api: &Api<Node>,
    pods: &[Arc<Pod>],
    step: Step,
) -> Result<(), String> {
    match step {
        Step::DeleteOrphan {
            namespace,
            name,
            uid,
            node,
        } => {
            // Confirmed live: the node is still gone (upstream `checkIfNodeExists`).
            let live = controller_runtime::live::get(nodes_api, &node)
                .await
                .map_err(|u| u.0)?;
            if live.is_some() {
                return Ok(());
            }
            let Some(p) = pods
                .iter()
                .find(|p| p.metadata.uid.as_deref() == Some(uid.as_str()))
            else {
                return Ok(());
            };
            if !finished(p) && !mark_failed(client, p).await? {
                return Ok(());
            }
            if delete_pod(client, &namespace, &name, uid, Some(0)).await? {
                tracing::warn!(pod = %name, %namespace, node = %node, "force-deleted: node no longer exists");
            }
        }
        Step::DeleteTerminated { namespace, name, uid } => {
            if delete_pod(client, &namespace, &name, uid, Some(0)).await? {
                tracing::info!(pod = %name, %namespace, "finished pod collected: over the threshold");
            }
        }
    }
    Ok(())
}

/// Mark `p` `Failed` with the `DisruptionTarget` condition, as upstream's
/// `markFailedAndDeletePodWithCondition` does before it deletes: owners (a Job) see how it ended, and no
/// kubelet is left to say so. The cached resourceVersion is the precondition (a 409 when the pod changed:
/// the next pass starts from it). `false` when the pod is gone.
async fn mark_failed(client: &kube::Client, p: &Pod) -> Result<bool, String> {
    let (namespace, name, _) = ids(p);
    let mut conditions: Vec<Value> = p
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.type_ != "DisruptionTarget")
        .map(|c| serde_json::to_value(&c).unwrap_or_default())
        .collect();
    conditions.push(
        json!({"type": "DisruptionTarget", "status": "True", "reason": "DeletionByPodGC",
        "message": "PodGC: node no longer exists", "lastTransitionTime": jiff::Timestamp::now().to_string()}),
    );
    let patch = json!({"metadata": {"resourceVersion": p.metadata.resource_version},
                       "status": {"phase": "Failed", "conditions": conditions}});
    let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    match api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(err) => Err(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
    }

    fn pod(name: &str, node: &str, phase: &str, created: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("u-{name}"),
                         "creationTimestamp": created},
            "spec": {"nodeName": node, "containers": []},
            "status": {"phase": phase}}))
        .unwrap()
    }

    fn names(steps: &[Step]) -> Vec<&str> {
        steps
            .iter()
            .map(|s| match s {
                Step::DeleteOrphan { name, uid, .. } | Step::DeleteTerminated { name, uid, .. } => {
                    assert_eq!(uid, &format!("u-{name}"));
                    name.as_str()
                }
            })
            .collect()
    }

    #[test]
    fn pods_of_a_gone_node_are_collected_after_the_quarantine_only() {
        let t = "2026-12-04T00:00:00Z";
        let nodes = [node("a")];
        let mut terminating = pod("on-b-terminating", "b", "Running", t);
        terminating.metadata.deletion_timestamp = terminating.metadata.creation_timestamp.clone();
        let pods = [
            pod("on-a", "a", "Running", t),
            pod("on-b", "b", "Running", t),
            terminating,
            pod("on-c", "c", "Running", t),
        ];
        let absent = missing_nodes(&nodes, &pods);
        assert_eq!(absent, ["b".to_string(), "c".to_string()].into_iter().collect());
        let missing = HashMap::from([
            ("b".to_string(), QUARANTINE),
            ("c".to_string(), QUARANTINE - Duration::from_secs(1)),
        ]);
        let steps = orphans(&pods, &missing, QUARANTINE);
        // Terminating ones too (no kubelet finishes them); c is still in quarantine; a exists.
        assert_eq!(names(&steps), ["on-b", "on-b-terminating"]);
        assert!(
            steps
                .iter()
                .all(|s| matches!(s, Step::DeleteOrphan { node, .. } if node == "b"))
        );
        // A name never seen missing counts as just missed.
        assert!(orphans(&pods, &HashMap::new(), QUARANTINE).is_empty());
        // An unbound pod has no node to miss.
        let mut unbound = pod("pending", "", "Pending", t);
        unbound.spec.as_mut().unwrap().node_name = None;
        assert!(missing_nodes(&nodes, &[unbound]).is_empty());
    }

    #[test]
    fn finished_pods_over_the_threshold_go_evicted_first_then_oldest() {
        let mut evicted = pod("evicted", "a", "Failed", "2026-12-04T03:00:00Z");
        evicted.status.as_mut().unwrap().reason = Some("Evicted".into());
        let pods = [
            pod("running", "a", "Running", "2026-12-04T00:00:00Z"),
            pod("new", "a", "Succeeded", "2026-12-04T02:00:00Z"),
            pod("old-b", "a", "Failed", "2026-12-04T01:00:00Z"),
            pod("old-a", "a", "Succeeded", "2026-12-04T01:00:00Z"),
            evicted,
        ];
        // Four finished, two allowed: the evicted one, then the oldest (names break the tie).
        assert_eq!(names(&terminated(&pods, 2)), ["evicted", "old-a"]);
        assert_eq!(names(&terminated(&pods, 3)), ["evicted"]);
        assert!(terminated(&pods, 4).is_empty());
        // 0 is off, as upstream.
        assert!(terminated(&pods, 0).is_empty());
    }
}
