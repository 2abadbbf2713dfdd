//! The scheduler: binds each pending pod to a node that fits it (upstream `kube-scheduler` with its default
//! filter plugins reduced to what Berth's nodes need, `pkg/scheduler/framework/plugins`).
//!
//! Filters, as upstream names them: `NodeUnschedulable`, `TaintToleration` (NoSchedule/NoExecute),
//! `NodeName`, `NodeAffinity` (nodeSelector and required node affinity), `NodeResourcesFit` (cpu, memory
//! and pod count against allocatable), `VolumeBinding` (a bound claim's volume node affinity; an unbound
//! claim of a `WaitForFirstConsumer` class is fine and gets the chosen node as its
//! `volume.kubernetes.io/selected-node`; an unbound `Immediate` claim makes the pod wait).
//! Score: the feasible node with the fewest requested resources (`LeastAllocated`), ties by name.
//! A pod whose claims are not all bound yet is not bound to its node (upstream's `PreBind` waits for the
//! volume binder), so no pod starts on a volume that does not exist yet.

use crate::volume::{self, HOSTNAME_LABEL, SELECTED_NODE};
use controller_runtime::{Informers, Settings, SharedInformers};
use k8s_openapi::api::core::v1::{
    Binding, Node, NodeSelectorRequirement, NodeSelectorTerm, ObjectReference, PersistentVolume,
    PersistentVolumeClaim, Pod,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;
use std::borrow::Borrow;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

/// The scheduler's name in `spec.schedulerName` (pods naming another scheduler are left alone).
pub const SCHEDULER_NAME: &str = "default-scheduler";

/// Everything the decision needs (all namespaces). Pods are any borrow of a `Pod` (the informer cache's
/// `Arc<Pod>`s are planned over in place, not copied).
pub struct Observed<'a, P: Borrow<Pod> = Pod> {
    /// Pods.
    pub pods: &'a [P],
    /// Nodes.
    pub nodes: &'a [Node],
    /// PersistentVolumeClaims.
    pub claims: &'a [PersistentVolumeClaim],
    /// PersistentVolumes.
    pub volumes: &'a [PersistentVolume],
    /// StorageClasses.
    pub classes: &'a [StorageClass],
}

/// One action on the API.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Set a WaitForFirstConsumer claim's selected node.
    SelectNode {
        /// Namespace.
        namespace: String,
        /// Claim name.
        claim: String,
        /// Node name.
        node: String,
    },
    /// Bind the pod to the node (`pods/binding`).
    Bind {
        /// Namespace.
        namespace: String,
        /// Pod name.
        pod: String,
        /// Pod uid.
        uid: String,
        /// Node name.
        node: String,
    },
    /// The pod fits no node: `PodScheduled=False/Unschedulable` and a `FailedScheduling` event.
    Unschedulable {
        /// Namespace.
        namespace: String,
        /// Pod name.
        pod: String,
        /// Pod uid.
        uid: String,
        /// Upstream-style message (`0/1 nodes are available: …`).
        message: String,
    },
}

fn quantity(q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>) -> f64 {
    q.and_then(|q| api::quantity::parse(&q.0)).unwrap_or(0.0)
}

/// A pod's (cpu cores, memory bytes) requests: the larger of the sum over containers and the largest init
/// container, as upstream's `resource.PodRequests` (without overhead and sidecars).
pub fn pod_requests(p: &Pod) -> (f64, f64) {
    let Some(spec) = p.spec.as_ref() else {
        return (0.0, 0.0);
    };
    let req = |c: &k8s_openapi::api::core::v1::Container, r: &str| {
        quantity(
            c.resources
                .as_ref()
                .and_then(|x| x.requests.as_ref())
                .and_then(|m| m.get(r)),
        )
    };
    let sum = |r: &str| spec.containers.iter().map(|c| req(c, r)).sum::<f64>();
    let init = |r: &str| {
        spec.init_containers
            .iter()
            .flatten()
            .map(|c| req(c, r))
            .fold(0.0, f64::max)
    };
    (sum("cpu").max(init("cpu")), sum("memory").max(init("memory")))
}

fn allocatable(n: &Node, r: &str) -> Option<f64> {
    let s = n.status.as_ref()?;
    s.allocatable
        .as_ref()
        .or(s.capacity.as_ref())
        .and_then(|m| m.get(r))
        .and_then(|q| api::quantity::parse(&q.0))
}

fn requirement_matches(req: &NodeSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let values = req.values.clone().unwrap_or_default();
    let v = labels.get(&req.key);
    match req.operator.as_str() {
        "In" => v.is_some_and(|v| values.contains(v)),
        "NotIn" => v.is_none_or(|v| !values.contains(v)),
        "Exists" => v.is_some(),
        "DoesNotExist" => v.is_none(),
        "Gt" | "Lt" => {
            let (Some(have), Some(want)) = (
                v.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|w| w.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if req.operator == "Gt" {
                have > want
            } else {
                have < want
            }
        }
        _ => false,
    }
}

/// Whether `node` satisfies node selector terms (ORed; each term's expressions ANDed; `matchFields` on
/// `metadata.name`), as upstream `nodeaffinity.NodeSelector`.
pub fn terms_match(terms: &[NodeSelectorTerm], node: &Node) -> bool {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let name = node.metadata.name.clone().unwrap_or_default();
    let fields: BTreeMap<String, String> = [("metadata.name".to_string(), name)].into();
    terms.iter().any(|t| {
        let exprs = t.match_expressions.iter().flatten();
        let field_exprs = t.match_fields.iter().flatten();
        let nonempty = t.match_expressions.as_ref().is_some_and(|e| !e.is_empty())
            || t.match_fields.as_ref().is_some_and(|e| !e.is_empty());
        nonempty
            && exprs.clone().all(|r| requirement_matches(r, &labels))
            && field_exprs.clone().all(|r| requirement_matches(r, &fields))
    })
}

/// Whether the pod tolerates every `NoSchedule` and `NoExecute` taint of the node (upstream
/// `TaintToleration` filter).
pub fn tolerated(p: &Pod, n: &Node) -> bool {
    let tolerations = p
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    n.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|t| {
            tolerations.iter().any(|tol| {
                let key_ok = tol.key.as_deref().is_none_or(|k| k.is_empty() || k == t.key);
                let effect_ok = tol
                    .effect
                    .as_deref()
                    .is_none_or(|e| e.is_empty() || e == t.effect);
                let value_ok = match tol.operator.as_deref() {
                    Some("Exists") => true,
                    _ => tol.value.as_deref().unwrap_or("") == t.value.as_deref().unwrap_or(""),
                };
                // An empty key with operator Exists tolerates everything.
                key_ok && effect_ok && value_ok
            })
        })
}

fn claim_names(p: &Pod) -> Vec<String> {
    p.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|v| v.persistent_volume_claim.as_ref().map(|c| c.claim_name.clone()))
        .collect()
}

fn is_unscheduled(p: &Pod) -> bool {
    let spec = p.spec.as_ref();
    spec.and_then(|s| s.node_name.as_deref())
        .is_none_or(str::is_empty)
        && p.metadata.deletion_timestamp.is_none()
        && spec
            .and_then(|s| s.scheduler_name.as_deref())
            .is_none_or(|n| n == SCHEDULER_NAME)
        && !matches!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

/// Decide bindings for every pending pod, oldest first, accounting each decision against the next.
pub fn plan<P: Borrow<Pod>>(o: &Observed<'_, P>) -> Vec<Step> {
    let mut steps = Vec::new();
    // Requested resources and pod counts per node.
    let mut used: BTreeMap<String, (f64, f64, usize)> = BTreeMap::new();
    // Host ports in use per node (upstream's NodePorts plugin).
    let mut ports: BTreeMap<String, Vec<api::hostports::HostPort>> = BTreeMap::new();
    for p in o.pods.iter().map(Borrow::borrow) {
        let node = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        let terminal = matches!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        if node.is_empty() || terminal {
            continue;
        }
        ports
            .entry(node.clone())
            .or_default()
            .extend(api::hostports::of(p));
        let (cpu, mem) = pod_requests(p);
        let e = used.entry(node).or_default();
        e.0 += cpu;
        e.1 += mem;
        e.2 += 1;
    }
    let mut pending: Vec<&Pod> = o
        .pods
        .iter()
        .map(Borrow::borrow)
        .filter(|p| is_unscheduled(p))
        .collect();
    pending.sort_by_key(|p| {
        (
            p.metadata.creation_timestamp.as_ref().map(|t| t.0),
            p.metadata.namespace.clone(),
            p.metadata.name.clone(),
        )
    });
    let claim = |ns: &str, name: &str| {
        o.claims
            .iter()
            .find(|c| c.metadata.namespace.as_deref() == Some(ns) && c.metadata.name.as_deref() == Some(name))
    };
    let volume_by_name = |n: &str| o.volumes.iter().find(|v| v.metadata.name.as_deref() == Some(n));
    for p in pending {
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        let name = p.metadata.name.clone().unwrap_or_default();
        let uid = p.metadata.uid.clone().unwrap_or_default();
        let spec = p.spec.clone().unwrap_or_default();
        let (cpu, mem) = pod_requests(p);
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        let mut wait_volumes = false;
        let mut missing_claim = None;
        let mut feasible: Vec<&Node> = Vec::new();
        for n in o.nodes {
            let nname = n.metadata.name.clone().unwrap_or_default();
            let labels = n.metadata.labels.clone().unwrap_or_default();
            let reject = |reasons: &mut BTreeMap<String, usize>, why: &str| {
                *reasons.entry(why.to_string()).or_default() += 1;
            };
            if !volume::node_ready(n) {
                reject(&mut reasons, "node(s) were not ready");
                continue;
            }
            if n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
                reject(&mut reasons, "node(s) were unschedulable");
                continue;
            }
            if !tolerated(p, n) {
                reject(&mut reasons, "node(s) had untolerated taint(s)");
                continue;
            }
            let selector_ok = spec
                .node_selector
                .iter()
                .flatten()
                .all(|(k, v)| labels.get(k) == Some(v));
            let affinity_ok = spec
                .affinity
                .as_ref()
                .and_then(|a| a.node_affinity.as_ref())
                .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())
                .is_none_or(|sel| terms_match(&sel.node_selector_terms, n));
            if !selector_ok || !affinity_ok {
                reject(&mut reasons, "node(s) didn't match Pod's node affinity/selector");
                continue;
            }
            if api::hostports::collide(p, ports.get(&nname).map_or(&[], Vec::as_slice)) {
                reject(
                    &mut reasons,
                    "node(s) didn't have free ports for the requested pod ports",
                );
                continue;
            }
            let (ucpu, umem, upods) = used.get(&nname).copied().unwrap_or_default();
            if allocatable(n, "pods").is_some_and(|max| (upods + 1) as f64 > max) {
                reject(&mut reasons, "Too many pods");
                continue;
            }
            if cpu > 0.0 && allocatable(n, "cpu").is_some_and(|max| ucpu + cpu > max) {
                reject(&mut reasons, "Insufficient cpu");
                continue;
            }
            if mem > 0.0 && allocatable(n, "memory").is_some_and(|max| umem + mem > max) {
                reject(&mut reasons, "Insufficient memory");
                continue;
            }
            let mut volumes_ok = true;
            for cname in claim_names(p) {
                let Some(c) = claim(&ns, &cname) else {
                    missing_claim = Some(cname.clone());
                    volumes_ok = false;
                    break;
                };
                match c
                    .spec
                    .as_ref()
                    .and_then(|s| s.volume_name.as_deref())
                    .filter(|v| !v.is_empty())
                {
                    Some(vname) => {
                        let pinned = volume_by_name(vname)
                            .and_then(|v| v.spec.as_ref()?.node_affinity.as_ref()?.required.as_ref())
                            .is_none_or(|sel| terms_match(&sel.node_selector_terms, n));
                        if !pinned {
                            reject(&mut reasons, "node(s) had volume node affinity conflict");
                            volumes_ok = false;
                            break;
                        }
                    }
                    None => {
                        let wffc = volume::class_of(c, o.classes).ok().flatten().is_some_and(|cl| {
                            cl.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer")
                        });
                        let selected = c.metadata.annotations.as_ref().and_then(|a| a.get(SELECTED_NODE));
                        if !wffc {
                            wait_volumes = true;
                            volumes_ok = false;
                            break;
                        }
                        if selected.is_some_and(|s| s != &nname) {
                            reject(&mut reasons, "node(s) didn't match the claim's selected node");
                            volumes_ok = false;
                            break;
                        }
                        let _ = labels.get(HOSTNAME_LABEL);
                    }
                }
            }
            if !volumes_ok {
                continue;
            }
            feasible.push(n);
        }
        if let Some(c) = missing_claim {
            steps.push(Step::Unschedulable {
                namespace: ns,
                pod: name,
                uid,
                message: format!(
                    "0/{} nodes are available: persistentvolumeclaim \"{c}\" not found.",
                    o.nodes.len()
                ),
            });
            continue;
        }
        if wait_volumes {
            steps.push(Step::Unschedulable {
                namespace: ns,
                pod: name,
                uid,
                message: "0/{} nodes are available: pod has unbound immediate PersistentVolumeClaims."
                    .replace("{}", &o.nodes.len().to_string()),
            });
            continue;
        }
        // LeastAllocated, ties by name.
        let score = |n: &Node| {
            let nname = n.metadata.name.clone().unwrap_or_default();
            let (ucpu, umem, _) = used.get(&nname).copied().unwrap_or_default();
            let frac = |u: f64, r: &str| allocatable(n, r).filter(|a| *a > 0.0).map_or(0.0, |a| u / a);
            (frac(ucpu + cpu, "cpu") + frac(umem + mem, "memory"), nname)
        };
        let best = feasible
            .iter()
            .map(|n| (score(n), *n))
            .min_by(|a, b| a.0.0.total_cmp(&b.0.0).then_with(|| a.0.1.cmp(&b.0.1)));
        let Some((_, node)) = best else {
            let detail: Vec<String> = reasons.iter().map(|(why, n)| format!("{n} {why}")).collect();
            steps.push(Step::Unschedulable {
                namespace: ns,
                pod: name,
                uid,
                message: format!(
                    "0/{} nodes are available: {}.",
                    o.nodes.len(),
                    if detail.is_empty() {
                        "no nodes".to_string()
                    } else {
                        detail.join(", ")
                    }
                ),
            });
            continue;
        };
        let nname = node.metadata.name.clone().unwrap_or_default();
        // Unbound WaitForFirstConsumer claims learn the node; the pod binds once all its claims are bound.
        let mut all_bound = true;
        for cname in claim_names(p) {
            let Some(c) = claim(&ns, &cname) else { continue };
            if c.spec
                .as_ref()
                .and_then(|s| s.volume_name.as_deref())
                .is_none_or(str::is_empty)
            {
                all_bound = false;
                let selected = c.metadata.annotations.as_ref().and_then(|a| a.get(SELECTED_NODE));
                if selected.is_none() {
                    steps.push(Step::SelectNode {
                        namespace: ns.clone(),
                        claim: cname.clone(),
                        node: nname.clone(),
                    });
                }
            }
        }
        if !all_bound {
            continue;
        }
        ports
            .entry(nname.clone())
            .or_default()
            .extend(api::hostports::of(p));
        let e = used.entry(nname.clone()).or_default();
        e.0 += cpu;
        e.1 += mem;
        e.2 += 1;
        steps.push(Step::Bind {
            namespace: ns,
            pod: name,
            uid,
            node: nname,
        });
    }
    steps
}

/// Run the scheduler until the process ends: caches of pods, nodes, claims, volumes and classes; once
/// all have listed (controller-runtime), plan after each burst of changes.
pub async fn run(client: kube::Client, shared: SharedInformers) {
    let cfg = watcher::Config::default().any_semantic();
    let mut informers = Informers::new();
    let pods = informers.watch_shared(&shared, Api::<Pod>::all(client.clone()), cfg.clone());
    let nodes = informers.watch_shared(&shared, Api::<Node>::all(client.clone()), cfg.clone());
    let claims = informers.watch_shared(
        &shared,
        Api::<PersistentVolumeClaim>::all(client.clone()),
        cfg.clone(),
    );
    let volumes = informers.watch_shared(&shared, Api::<PersistentVolume>::all(client.clone()), cfg.clone());
    let classes = informers.watch_shared(&shared, Api::<StorageClass>::all(client.clone()), cfg);
    let settings = Settings {
        debounce: Duration::from_millis(10),
        ..Settings::default()
    };
    let mut passes = informers.into_loop("scheduler", settings);
    let mut reported: HashSet<(String, String)> = HashSet::new();
    while let Some(mut pass) = passes.next_pass().await {
        let p = pods.state();
        let n: Vec<Node> = nodes.state().iter().map(|o| (**o).clone()).collect();
        let c: Vec<PersistentVolumeClaim> = claims.state().iter().map(|o| (**o).clone()).collect();
        let v: Vec<PersistentVolume> = volumes.state().iter().map(|o| (**o).clone()).collect();
        let s: Vec<StorageClass> = classes.state().iter().map(|o| (**o).clone()).collect();
        for step in plan(&Observed {
            pods: &p,
            nodes: &n,
            claims: &c,
            volumes: &v,
            classes: &s,
        }) {
            if let Step::Unschedulable { uid, message, .. } = &step
                && !reported.insert((uid.clone(), message.clone()))
            {
                continue;
            }
            pass.step(&step_key(&step), execute(&client, step.clone())).await;
        }
    }
}

/// The object a step acts on, for back-off and logs.
fn step_key(step: &Step) -> String {
    match step {
        Step::SelectNode { namespace, claim, .. } => format!("PersistentVolumeClaim {namespace}/{claim}"),
        Step::Bind { namespace, pod, .. } | Step::Unschedulable { namespace, pod, .. } => {
            format!("Pod {namespace}/{pod}")
        }
    }
}

async fn execute(client: &kube::Client, step: Step) -> Result<(), kube::Error> {
    match step {
        Step::SelectNode {
            namespace,
            claim,
            node,
        } => {
            let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &namespace);
            let patch = json!({"metadata": {"annotations": {SELECTED_NODE: node}}});
            api.patch(&claim, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .map(|_| ())
        }
        Step::Bind {
            namespace,
            pod,
            uid,
            node,
        } => {
            let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
            let binding = Binding {
                metadata: ObjectMeta {
                    name: Some(pod.clone()),
                    namespace: Some(namespace.clone()),
                    uid: Some(uid.clone()),
                    ..ObjectMeta::default()
                },
                target: ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Node".into()),
                    name: Some(node.clone()),
                    ..ObjectReference::default()
                },
            };
            api.create_subresource::<Binding, serde_json::Value>(
                "binding",
                &pod,
                &PostParams::default(),
                &binding,
            )
            .await?;
            let object = pod_ref(&namespace, &pod, &uid);
            crate::events::record(
                client,
                &namespace,
                object,
                "Normal",
                "Scheduled",
                &format!("Successfully assigned {namespace}/{pod} to {node}"),
                "default-scheduler",
            )
            .await
        }
        Step::Unschedulable {
            namespace,
            pod,
            uid,
            message,
        } => {
            let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
            let now = jiff::Timestamp::now().to_string();
            let status = json!({"status": {"conditions": [{"type": "PodScheduled", "status": "False",
                "reason": "Unschedulable", "message": message, "lastTransitionTime": now}]}});
            api.patch_status(&pod, &PatchParams::default(), &Patch::Strategic(status))
                .await?;
            crate::events::record(
                client,
                &namespace,
                pod_ref(&namespace, &pod, &uid),
                "Warning",
                "FailedScheduling",
                &message,
                "default-scheduler",
            )
            .await
        }
    }
}

fn pod_ref(ns: &str, name: &str, uid: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: Some(ns.into()),
        name: Some(name.into()),
        uid: Some(uid.into()),
        ..ObjectReference::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, cpu: &str, labels: Value, taints: Value) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"taints": taints},
            "status": {"allocatable": {"cpu": cpu, "memory": "1Gi", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .expect("node")
    }

    fn pod(name: &str, cpu: &str, extra: Value) -> Pod {
        let mut spec =
            json!({"containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": cpu}}}]});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        serde_json::from_value(
            json!({"metadata": {"name": name, "namespace": "default", "uid": format!("u-{name}")},
            "spec": spec}),
        )
        .expect("pod")
    }

    use serde_json::Value;

    fn run(
        pods: &[Pod],
        nodes: &[Node],
        claims: &[PersistentVolumeClaim],
        classes: &[StorageClass],
    ) -> Vec<Step> {
        plan(&Observed {
            pods,
            nodes,
            claims,
            volumes: &[],
            classes,
        })
    }

    fn bound_to(steps: &[Step]) -> Vec<(String, String)> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Bind { pod, node, .. } => Some((pod.clone(), node.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn least_allocated_node_that_fits_selector_taints_and_resources() {
        let nodes = vec![
            node("a", "1", json!({"disk": "ssd"}), json!([])),
            node("b", "4", json!({"disk": "ssd"}), json!([])),
            node(
                "c",
                "8",
                json!({}),
                json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]),
            ),
        ];
        let pods = vec![pod("p", "500m", json!({"nodeSelector": {"disk": "ssd"}}))];
        assert_eq!(
            bound_to(&run(&pods, &nodes, &[], &[])),
            [("p".into(), "b".into())]
        );
        // Toleration opens node c (the least allocated).
        let tolerant = vec![pod(
            "t",
            "500m",
            json!({"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]}),
        )];
        assert_eq!(
            bound_to(&run(&tolerant, &nodes, &[], &[])),
            [("t".into(), "c".into())]
        );
        // Too big for every node: Unschedulable with upstream's message shape.
        let huge = vec![pod("h", "16", json!({}))];
        let steps = run(&huge, &nodes, &[], &[]);
        match &steps[..] {
            [Step::Unschedulable { message, .. }] => {
                assert!(message.starts_with("0/3 nodes are available:"), "{message}");
                assert!(
                    message.contains("2 Insufficient cpu")
                        && message.contains("1 node(s) had untolerated taint(s)"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_host_port_in_use_on_a_node_filters_it_out_as_upstreams_node_ports() {
        let nodes = vec![
            node("a", "4", json!({}), json!([])),
            node("b", "4", json!({}), json!([])),
        ];
        let with_port = |name: &str, port: Value| {
            pod(
                name,
                "100m",
                json!({"containers": [{"name": "c", "image": "x", "ports": [port]}]}),
            )
        };
        let mut running = with_port("r", json!({"containerPort": 80, "hostPort": 8080}));
        running.spec.as_mut().expect("spec").node_name = Some("a".into());
        // The same port: only b fits. Another protocol, or two distinct host IPs: a fits too.
        let same = with_port("s", json!({"containerPort": 80, "hostPort": 8080}));
        let steps = run(&[running.clone(), same], &nodes, &[], &[]);
        assert_eq!(bound_to(&steps), [("s".into(), "b".into())]);
        let mut only_a = nodes.clone();
        only_a.truncate(1);
        let steps = run(
            &[
                running.clone(),
                with_port("s", json!({"containerPort": 80, "hostPort": 8080})),
            ],
            &only_a,
            &[],
            &[],
        );
        match &steps[..] {
            [Step::Unschedulable { message, .. }] => assert!(
                message.contains("1 node(s) didn't have free ports for the requested pod ports"),
                "{message}"
            ),
            other => panic!("{other:?}"),
        }
        let udp = with_port(
            "u",
            json!({"containerPort": 80, "hostPort": 8080, "protocol": "UDP"}),
        );
        assert_eq!(
            bound_to(&run(&[running.clone(), udp], &only_a, &[], &[])).len(),
            1
        );
        // Two pending pods wanting the same port in one pass never land on the same node.
        let steps = run(
            &[
                with_port("x", json!({"containerPort": 80, "hostPort": 9090})),
                with_port("y", json!({"containerPort": 80, "hostPort": 9090})),
            ],
            &only_a,
            &[],
            &[],
        );
        assert_eq!(bound_to(&steps).len(), 1, "{steps:?}");
    }

    #[test]
    fn decisions_in_one_pass_account_for_each_other() {
        let nodes = vec![node("a", "1", json!({}), json!([]))];
        let pods = vec![pod("p1", "600m", json!({})), pod("p2", "600m", json!({}))];
        let steps = run(&pods, &nodes, &[], &[]);
        assert_eq!(bound_to(&steps).len(), 1, "the second no longer fits: {steps:?}");
    }

    #[test]
    fn wait_for_first_consumer_claims_get_the_node_and_the_pod_waits_for_binding() {
        let nodes = vec![node("a", "4", json!({}), json!([]))];
        let class: StorageClass = serde_json::from_value(json!({"metadata": {"name": "local"},
            "provisioner": "berth.dev/local-path", "volumeBindingMode": "WaitForFirstConsumer"}))
        .expect("class");
        let immediate: StorageClass = serde_json::from_value(json!({"metadata": {"name": "now"},
            "provisioner": "berth.dev/local-path", "volumeBindingMode": "Immediate"}))
        .expect("class");
        let claim = |name: &str, class: &str, volume: Option<&str>| -> PersistentVolumeClaim {
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default"},
                "spec": {"storageClassName": class, "volumeName": volume}}))
            .expect("claim")
        };
        let with_claim = |c: &str| {
            pod(
                "p",
                "100m",
                json!({"volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": c}}]}),
            )
        };
        let classes = [class, immediate];
        let steps = run(
            &[with_claim("data")],
            &nodes,
            &[claim("data", "local", None)],
            &classes,
        );
        assert_eq!(
            steps,
            [Step::SelectNode {
                namespace: "default".into(),
                claim: "data".into(),
                node: "a".into()
            }],
            "no binding before the claim is bound"
        );
        let steps = run(
            &[with_claim("data")],
            &nodes,
            &[claim("data", "local", Some("pv-1"))],
            &classes,
        );
        assert_eq!(bound_to(&steps), [("p".into(), "a".into())]);
        let steps = run(&[with_claim("x")], &nodes, &[claim("x", "now", None)], &classes);
        assert!(
            matches!(&steps[..], [Step::Unschedulable { message, .. }] if message.contains("unbound immediate PersistentVolumeClaims")),
            "{steps:?}"
        );
        let steps = run(&[with_claim("missing")], &nodes, &[], &classes);
        assert!(
            matches!(&steps[..], [Step::Unschedulable { message, .. }] if message.contains("persistentvolumeclaim \"missing\" not found")),
            "{steps:?}"
        );
    }
}
