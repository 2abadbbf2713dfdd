//! The DaemonSet controller's whole decision for one DaemonSet, pure (upstream
//! `pkg/controller/daemon/daemon_controller.go` `manage`/`podsShouldBeOnNode`, `update.go`
//! `rollingUpdate` and `constructHistory`, `util/daemonset_util.go`).

use crate::scheduler::{terms_match, tolerated};
use crate::workload::controller_ref::new_controller_ref;
use crate::workload::intstr::scaled_value;
use crate::workload::pods::{is_available, is_ready, pod_from_template};
use crate::workload::revision::{HASH_LABEL, equal_data, new_revision, template_patch};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod, Toleration,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// The label naming a daemon pod's revision (upstream `apps.DefaultDaemonSetUniqueLabelKey`).
pub const REVISION_LABEL: &str = "controller-revision-hash";
/// The deprecated label with the DaemonSet's generation upstream still sets on its pods.
pub const TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";

/// What the plan reads.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    /// The DaemonSet.
    pub ds: &'a DaemonSet,
    /// Every Node.
    pub nodes: Vec<&'a Node>,
    /// The pods it controls.
    pub pods: Vec<&'a Pod>,
    /// The ControllerRevisions it controls.
    pub revisions: Vec<&'a ControllerRevision>,
    /// Whether the cache shows this controller's earlier creates and deletes (expectations).
    pub settled: bool,
    /// Now.
    pub now: Timestamp,
}

/// A pod named in a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    /// Name.
    pub name: String,
    /// Uid.
    pub uid: String,
}

/// The steps for one DaemonSet, carried out in order: revisions, deletes, creates, status.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The revision of the current template to create.
    pub create_revision: Option<ControllerRevision>,
    /// An existing revision equal to the current template to renumber as the newest (a rollback).
    pub renumber_revision: Option<(String, i64)>,
    /// Revisions beyond `revisionHistoryLimit` that no pod uses.
    pub delete_revisions: Vec<String>,
    /// Pods to delete.
    pub delete: Vec<PodRef>,
    /// Pods to create (each pinned to its node by node affinity).
    pub create: Vec<Pod>,
    /// The status, when it changed.
    pub status: Option<DaemonSetStatus>,
}

/// The tolerations upstream adds to every daemon pod (`AddOrUpdateDaemonPodTolerations`).
pub fn daemon_tolerations(host_network: bool) -> Vec<Toleration> {
    let t = |key: &str, effect: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Toleration::default()
    };
    let mut out = vec![
        t("node.kubernetes.io/not-ready", "NoExecute"),
        t("node.kubernetes.io/unreachable", "NoExecute"),
        t("node.kubernetes.io/disk-pressure", "NoSchedule"),
        t("node.kubernetes.io/memory-pressure", "NoSchedule"),
        t("node.kubernetes.io/pid-pressure", "NoSchedule"),
        t("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if host_network {
        out.push(t("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    out
}

/// The pod for `node`: the template's, with the revision labels, upstream's daemon tolerations and a
/// required node affinity on `metadata.name` (upstream `ReplaceDaemonSetPodNodeNameNodeAffinity`: every
/// term's `matchFields` becomes `metadata.name In [node]`; the scheduler binds it).
pub fn new_pod(ds: &DaemonSet, node: &str, hash: &str) -> Pod {
    let spec = ds.spec.clone().unwrap_or_default();
    let cref = new_controller_ref(&ds.metadata, "apps/v1", "DaemonSet");
    let mut pod = pod_from_template(&spec.template, &ds.metadata, Some(cref));
    let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(REVISION_LABEL.into(), hash.into());
    labels.insert(
        TEMPLATE_GENERATION_LABEL.into(),
        ds.metadata.generation.unwrap_or(1).to_string(),
    );
    let ps = pod.spec.get_or_insert_with(Default::default);
    let tols = ps.tolerations.get_or_insert_with(Vec::new);
    for t in daemon_tolerations(ps.host_network == Some(true)) {
        if !tols.iter().any(|o| o.key == t.key && o.effect == t.effect) {
            tols.push(t);
        }
    }
    let field = NodeSelectorRequirement {
        key: "metadata.name".into(),
        operator: "In".into(),
        values: Some(vec![node.into()]),
    };
    let affinity = ps.affinity.get_or_insert_with(Affinity::default);
    let na = affinity.node_affinity.get_or_insert_with(NodeAffinity::default);
    let required = na
        .required_during_scheduling_ignored_during_execution
        .get_or_insert_with(|| NodeSelector {
            node_selector_terms: Vec::new(),
        });
    if required.node_selector_terms.is_empty() {
        required.node_selector_terms.push(NodeSelectorTerm::default());
    }
    for term in &mut required.node_selector_terms {
        term.match_fields = Some(vec![field.clone()]);
    }
    pod
}

/// Whether a daemon pod should run on `node` (upstream `NodeShouldRunDaemonPod`: node name, the
/// template's nodeSelector and required node affinity, and taints against the pod's tolerations with
/// the daemon tolerations added). Taints with `NoExecute` also evict, so they decide both questions.
pub fn should_run(ds: &DaemonSet, node: &Node) -> bool {
    let pod = new_pod(ds, node.metadata.name.as_deref().unwrap_or(""), "");
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    if let Some(n) = spec.node_name.as_deref().filter(|n| !n.is_empty())
        && Some(n) != node.metadata.name.as_deref()
    {
        return false;
    }
    let labels = node.metadata.labels.clone().unwrap_or_default();
    if let Some(sel) = &spec.node_selector
        && !sel.iter().all(|(k, v)| labels.get(k) == Some(v))
    {
        return false;
    }
    let affinity_ok = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| n.required_during_scheduling_ignored_during_execution.as_ref())
        .is_none_or(|r| terms_match(&r.node_selector_terms, node));
    affinity_ok && tolerated(&pod, node)
}

/// The node a daemon pod is on, or is pinned to by its node affinity while unscheduled.
fn pod_node(p: &Pod) -> Option<String> {
    let spec = p.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        return Some(n.to_string());
    }
    spec.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == "metadata.name" && r.operator == "In")
        .and_then(|r| r.values.as_ref()?.first().cloned())
}

fn pod_ref(p: &Pod) -> PodRef {
    PodRef {
        name: p.metadata.name.clone().unwrap_or_default(),
        uid: p.metadata.uid.clone().unwrap_or_default(),
    }
}

fn revision_hash(p: &Pod) -> Option<&str> {
    p.metadata
        .labels
        .as_ref()?
        .get(REVISION_LABEL)
        .map(String::as_str)
}

/// The whole decision for one DaemonSet.
#[must_use]
#[allow(clippy::too_many_lines)]
pub fn plan(o: &Observed) -> Plan {
    let ds = o.ds;
    let spec = ds.spec.clone().unwrap_or_default();
    let old = ds.status.clone().unwrap_or_default();
    let mut out = Plan::default();
    if ds.metadata.deletion_timestamp.is_some() {
        return out;
    }

    // Revisions (upstream `constructHistory`): the one equal to the template is current, renumbered as
    // the newest when it is not; otherwise a new one.
    let data = template_patch(&spec.template);
    let max_rev = o.revisions.iter().map(|r| r.revision).max().unwrap_or(0);
    let hash = match o
        .revisions
        .iter()
        .find(|r| r.data.as_ref().is_some_and(|d| equal_data(&d.0, &data)))
    {
        Some(r) => {
            if r.revision < max_rev {
                out.renumber_revision = Some((r.metadata.name.clone().unwrap_or_default(), max_rev + 1));
            }
            r.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(HASH_LABEL).cloned())
                .unwrap_or_default()
        }
        None => {
            let rev = new_revision(
                &ds.metadata,
                new_controller_ref(&ds.metadata, "apps/v1", "DaemonSet"),
                spec.template.metadata.as_ref().and_then(|m| m.labels.as_ref()),
                data,
                max_rev + 1,
                old.collision_count.unwrap_or(0),
            );
            let h = rev
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(HASH_LABEL).cloned())
                .unwrap_or_default();
            out.create_revision = Some(rev);
            h
        }
    };
    let limit = usize::try_from(spec.revision_history_limit.unwrap_or(10).max(0)).unwrap_or(10);
    let in_use: Vec<&str> = o.pods.iter().filter_map(|p| revision_hash(p)).collect();
    let mut history: Vec<&&ControllerRevision> = o
        .revisions
        .iter()
        .filter(|r| {
            let h = r.metadata.labels.as_ref().and_then(|l| l.get(HASH_LABEL));
            h.is_none_or(|h| *h != hash && !in_use.contains(&h.as_str()))
        })
        .collect();
    history.sort_by_key(|r| r.revision);
    let excess = history.len().saturating_sub(limit);
    out.delete_revisions = history
        .iter()
        .take(excess)
        .filter_map(|r| r.metadata.name.clone())
        .collect();

    // Pods per node (upstream `getNodesToDaemonPods`), and what each node needs.
    let mut by_node: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    for p in &o.pods {
        if let Some(n) = pod_node(p) {
            by_node.entry(n).or_default().push(p);
        }
    }
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let rolling = spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.type_.as_deref())
        .is_none_or(|t| t == "RollingUpdate");
    let rolling_update = spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.rolling_update.as_ref());
    let max_surge = rolling_update
        .and_then(|r| r.max_surge.clone())
        .unwrap_or(IntOrString::Int(0));
    let max_unavailable = rolling_update
        .and_then(|r| r.max_unavailable.clone())
        .unwrap_or(IntOrString::Int(1));
    let eligible = o.nodes.iter().filter(|n| should_run(ds, n)).count();
    let eligible = i32::try_from(eligible).unwrap_or(i32::MAX);
    // Upstream `updatedDesiredNodeCounts`: surge rounds up, unavailability rounds up; with neither, one
    // pod at a time.
    let surge_budget = if rolling {
        scaled_value(&max_surge, eligible, true).unwrap_or(0).max(0)
    } else {
        0
    };
    let mut desired = 0;
    let mut current = 0;
    let mut misscheduled = 0;
    let mut ready = 0;
    let mut available = 0;
    let mut updated = 0;
    let mut need: Vec<String> = Vec::new();
    // Old pods a rolling update may replace, and the count already unavailable.
    let mut candidates: Vec<&Pod> = Vec::new();
    let mut unavailable = 0;
    // Surge (upstream `rollingUpdate` with maxSurge > 0): nodes whose available old pod may get its new
    // pod beside it, and the surge pods still starting.
    let mut surge_candidates: Vec<String> = Vec::new();
    let mut surging = 0;
    let node_names: Vec<String> = o.nodes.iter().filter_map(|n| n.metadata.name.clone()).collect();
    for node in &o.nodes {
        let name = node.metadata.name.clone().unwrap_or_default();
        let pods = by_node.remove(&name).unwrap_or_default();
        let run = should_run(ds, node);
        let mut running: Vec<&Pod> = Vec::new();
        for p in &pods {
            if p.metadata.deletion_timestamp.is_some() {
                continue;
            }
            match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
                // A failed or finished daemon pod is deleted and replaced (upstream).
                Some("Failed" | "Succeeded") => out.delete.push(pod_ref(p)),
                _ => running.push(p),
            }
        }
        if !run {
            if !running.is_empty() {
                misscheduled += 1;
                out.delete.extend(running.iter().map(|p| pod_ref(p)));
            }
            continue;
        }
        desired += 1;
        if running.is_empty() {
            // Replaced only once the terminating ones are gone (one daemon pod per node at a time).
            if !pods.iter().any(|p| p.metadata.deletion_timestamp.is_some()) {
                need.push(name);
            }
            unavailable += 1;
            continue;
        }
        current += 1;
        running.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
        // At most one new and one old pod per node (upstream `findUpdatedPodsOnNode`: the oldest of
        // each kind is kept, duplicates go).
        let (new, old): (Vec<&Pod>, Vec<&Pod>) = running
            .iter()
            .partition(|p| revision_hash(p) == Some(hash.as_str()));
        out.delete.extend(new.iter().skip(1).map(|p| pod_ref(p)));
        out.delete.extend(old.iter().skip(1).map(|p| pod_ref(p)));
        let (new, old) = (new.first().copied(), old.first().copied());
        // The pod the node's status counts: the new one once it is available, else the old one.
        let counted = match (new, old) {
            (Some(n), Some(o_)) if !is_available(n, min_ready, o.now) => o_,
            (Some(n), _) => n,
            (None, Some(o_)) => o_,
            (None, None) => continue,
        };
        let avail = is_available(counted, min_ready, o.now);
        if is_ready(counted) {
            ready += 1;
        }
        if avail {
            available += 1;
        } else {
            unavailable += 1;
        }
        match (new, old) {
            (Some(n), Some(old_pod)) => {
                // A surge in progress: the old pod goes once the new one is available.
                if is_available(n, min_ready, o.now) {
                    out.delete.push(pod_ref(old_pod));
                    updated += 1;
                } else {
                    surging += 1;
                }
            }
            (Some(_), None) => updated += 1,
            (None, Some(old_pod)) if surge_budget > 0 => {
                if is_available(old_pod, min_ready, o.now) {
                    surge_candidates.push(name);
                } else {
                    // An old pod that is not available anyway gets its replacement at once.
                    need.push(name);
                }
            }
            (None, Some(old_pod)) => {
                if is_available(old_pod, min_ready, o.now) {
                    candidates.push(old_pod);
                } else {
                    // An old pod that is not available anyway goes at once (upstream `rollingUpdate`).
                    out.delete.push(pod_ref(old_pod));
                }
            }
            (None, None) => {}
        }
    }
    // Pods pinned to nodes that no longer exist.
    for (n, pods) in &by_node {
        if !node_names.contains(n) {
            out.delete.extend(
                pods.iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .map(|p| pod_ref(p)),
            );
        }
    }
    if rolling && surge_budget > 0 {
        // New pods beside available old ones, at most maxSurge starting at once.
        let room = usize::try_from((surge_budget - surging).max(0)).unwrap_or(0);
        surge_candidates.sort();
        need.extend(surge_candidates.into_iter().take(room));
    } else if rolling {
        let budget = scaled_value(&max_unavailable, desired, true).unwrap_or(1).max(0);
        let room = usize::try_from((budget - unavailable).max(0)).unwrap_or(0);
        candidates.sort_by_key(|p| p.metadata.name.clone());
        out.delete
            .extend(candidates.iter().take(room).map(|p| pod_ref(p)));
    }
    out.delete.sort_by(|a, b| a.name.cmp(&b.name));
    out.delete.dedup();
    out.create = need.iter().map(|n| new_pod(ds, n, &hash)).collect();
    if !o.settled {
        out.create.clear();
        out.delete.clear();
    }
    let status = DaemonSetStatus {
        current_number_scheduled: current,
        desired_number_scheduled: desired,
        number_misscheduled: misscheduled,
        number_ready: ready,
        number_available: (available > 0).then_some(available),
        number_unavailable: (desired - available > 0).then_some(desired - available),
        updated_number_scheduled: (updated > 0).then_some(updated),
        observed_generation: ds.metadata.generation,
        collision_count: old.collision_count,
        conditions: old.conditions.clone(),
    };
    if status != old {
        out.status = Some(status);
    }
    out
}
