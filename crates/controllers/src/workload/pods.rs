//! Pod helpers every workload controller shares: readiness and availability (upstream `pkg/api/v1/pod`
//! `IsPodReady`, `IsPodAvailable`), active pods (`controller.IsPodActive`), the pod built from a template
//! (`controller.GetPodFromTemplate`) and the order in which surplus pods are deleted
//! (`controller.ActivePodsWithRanks`).

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use std::collections::HashMap;
use std::time::Duration;

/// `controller.kubernetes.io/pod-deletion-cost`: a pod with a lower cost is deleted first.
pub const DELETION_COST_ANNOTATION: &str = "controller.kubernetes.io/pod-deletion-cost";

/// The pod's phase (`""` when it has no status yet).
pub fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

/// Whether the pod has a deletion timestamp.
pub fn is_terminating(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_some()
}

/// Not Succeeded, not Failed and not being deleted (upstream `controller.IsPodActive`).
pub fn is_active(p: &Pod) -> bool {
    !matches!(phase(p), "Succeeded" | "Failed") && !is_terminating(p)
}

/// Its `Ready` condition is `True` (upstream `podutil.IsPodReady`).
pub fn is_ready(p: &Pod) -> bool {
    ready_condition(p).is_some()
}

/// When the pod became Ready (the `Ready=True` condition's `lastTransitionTime`); `None` when it is not
/// Ready or the time is missing.
pub fn ready_since(p: &Pod) -> Option<jiff::Timestamp> {
    ready_condition(p)?
}

fn ready_condition(p: &Pod) -> Option<Option<jiff::Timestamp>> {
    let conds = p.status.as_ref()?.conditions.as_ref()?;
    let c = conds.iter().find(|c| c.type_ == "Ready" && c.status == "True")?;
    Some(c.last_transition_time.as_ref().map(|t| t.0))
}

/// Phase `Running` and Ready (upstream StatefulSet `isRunningAndReady`).
pub fn is_running_and_ready(p: &Pod) -> bool {
    phase(p) == "Running" && is_ready(p)
}

/// Whether a pod counts as available, and if not yet, when it will.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    /// Ready for more than `minReadySeconds`.
    Available,
    /// Ready, but not for long enough: available after this long (unless it stops being Ready).
    In(Duration),
    /// Not Ready.
    NotReady,
}

/// Upstream `podutil.IsPodAvailable(pod, minReadySeconds, now)`: Ready, and either `min_ready_seconds`
/// is 0 or the Ready condition's transition time plus `min_ready_seconds` is before `now`. A Ready pod
/// without a transition time is never available with `min_ready_seconds > 0` (upstream's zero time);
/// it is reported as available in `min_ready_seconds`, so a caller looks again.
pub fn availability(p: &Pod, min_ready_seconds: i32, now: jiff::Timestamp) -> Availability {
    let Some(since) = ready_condition(p) else {
        return Availability::NotReady;
    };
    if min_ready_seconds <= 0 {
        return Availability::Available;
    }
    let min = i128::from(min_ready_seconds) * 1_000_000_000;
    match since {
        Some(t) => {
            let due = t.as_nanosecond() + min;
            let now = now.as_nanosecond();
            if due < now {
                Availability::Available
            } else {
                // Strictly after `due`: one nanosecond past it, rounded up to whole milliseconds.
                let wait = u64::try_from((due - now) / 1_000_000 + 1).unwrap_or(u64::MAX);
                Availability::In(Duration::from_millis(wait))
            }
        }
        None => Availability::In(Duration::from_secs(min_ready_seconds.unsigned_abs().into())),
    }
}

/// [`availability`] is [`Availability::Available`].
pub fn is_available(p: &Pod, min_ready_seconds: i32, now: jiff::Timestamp) -> bool {
    availability(p, min_ready_seconds, now) == Availability::Available
}

/// The `generateName` of a controller's pods (upstream `getPodsPrefix`): `<name>-`, or `<name>` when the
/// dash would make the prefix too long for a pod name.
pub fn pods_prefix(controller_name: &str) -> String {
    if controller_name.len() < 253 {
        format!("{controller_name}-")
    } else {
        controller_name.to_string()
    }
}

/// The pod a controller creates from `template` (upstream `GetPodFromTemplate`): the template's labels,
/// annotations and finalizers, `generateName` from the parent's name ([`pods_prefix`]), the parent's
/// namespace, `controller_ref` as its only owner, and the template's spec.
pub fn pod_from_template(
    template: &PodTemplateSpec,
    parent: &ObjectMeta,
    controller_ref: Option<OwnerReference>,
) -> Pod {
    let tmeta = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(pods_prefix(parent.name.as_deref().unwrap_or_default())),
            namespace: parent.namespace.clone(),
            labels: tmeta.labels,
            annotations: tmeta.annotations,
            finalizers: tmeta.finalizers,
            owner_references: controller_ref.map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        spec: Some(template.spec.clone().unwrap_or_default()),
        status: None,
    }
}

fn node_name(p: &Pod) -> &str {
    p.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or("")
}

fn phase_ordinal(p: &Pod) -> u8 {
    match phase(p) {
        "Unknown" => 1,
        "Running" => 2,
        _ => 0,
    }
}

fn deletion_cost(p: &Pod) -> i32 {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DELETION_COST_ANNOTATION))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// (max restarts of regular containers, max restarts of restartable init containers).
fn max_restarts(p: &Pod) -> (i32, i32) {
    let Some(st) = p.status.as_ref() else {
        return (0, 0);
    };
    let regular = st
        .container_statuses
        .iter()
        .flatten()
        .map(|c| c.restart_count)
        .max()
        .unwrap_or(0);
    let sidecars: Vec<&str> = p
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"))
        .map(|c| c.name.as_str())
        .collect();
    let sidecar = st
        .init_container_statuses
        .iter()
        .flatten()
        .filter(|c| sidecars.contains(&c.name.as_str()))
        .map(|c| c.restart_count)
        .max()
        .unwrap_or(0);
    (regular, sidecar)
}

/// Upstream `logarithmicRankDiff`'s rank of a time: ⌊log2(age in ns)⌋, `-1` for an age ≤ 0.
fn log_rank(t: jiff::Timestamp, now: jiff::Timestamp) -> i64 {
    let d = now.as_nanosecond() - t.as_nanosecond();
    if d > 0 {
        i64::from(127 - d.leading_zeros() as i32)
    } else {
        -1
    }
}

/// A time as a sort key with `LogarithmicScaleDown` on (upstream's default since 1.22): a missing time
/// first, then the more recent (lower ⌊log2(age)⌋) first.
fn time_key(t: Option<jiff::Timestamp>, now: jiff::Timestamp) -> (u8, i64) {
    match t {
        None => (0, 0),
        Some(t) => (1, log_rank(t, now)),
    }
}

/// The deletion key of a pod, ascending = deleted first (upstream `ActivePodsWithRanks.Less`), `rank` being
/// the number of related active pods on its node. In order: unassigned before assigned; Pending before
/// Unknown before Running; not Ready before Ready; lower `pod-deletion-cost` first; more related pods on its
/// node (doubled up) first; Ready for a shorter time first (log scale); more container restarts, then more
/// sidecar restarts first; created more recently first (log scale); then by uid.
///
/// Upstream compares pairs and breaks a tie of equal log-scale ready times by uid at once; that pairwise
/// rule is not a total order (Go's sort tolerates it, Rust's refuses it), so here the uid breaks ties only
/// after every other criterion: the same pods go first except among pods Ready within the same power of
/// two of nanoseconds.
pub fn deletion_key(p: &Pod, rank: usize, now: jiff::Timestamp) -> impl Ord + use<> {
    let ready = is_ready(p);
    let restarts = max_restarts(p);
    let created = p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    (
        !node_name(p).is_empty(),
        phase_ordinal(p),
        ready,
        deletion_cost(p),
        std::cmp::Reverse(rank),
        if ready {
            time_key(ready_since(p), now)
        } else {
            (0, 0)
        },
        std::cmp::Reverse(restarts.0),
        std::cmp::Reverse(restarts.1),
        time_key(created, now),
        p.metadata.uid.clone().unwrap_or_default(),
    )
}

/// Whether `a` is deleted before `b` ([`deletion_key`]).
pub fn delete_before(a: &Pod, rank_a: usize, b: &Pod, rank_b: usize, now: jiff::Timestamp) -> bool {
    deletion_key(a, rank_a, now) < deletion_key(b, rank_b, now)
}

/// `pods` in the order they should be deleted (upstream `getPodsToDelete` with
/// `getPodsRankedByRelatedPodsOnSameNode`): each ranked by how many active pods of `related` (the
/// controller's own pods, or every pod of a Deployment's ReplicaSets) share its node, then sorted by
/// [`deletion_key`].
pub fn ordered_for_deletion<'a>(pods: &[&'a Pod], related: &[&Pod], now: jiff::Timestamp) -> Vec<&'a Pod> {
    let mut on_node: HashMap<&str, usize> = HashMap::new();
    for p in related.iter().filter(|p| is_active(p)) {
        *on_node.entry(node_name(p)).or_insert(0) += 1;
    }
    let mut ranked: Vec<&'a Pod> = pods.to_vec();
    ranked.sort_by_cached_key(|p| deletion_key(p, on_node.get(node_name(p)).copied().unwrap_or(0), now));
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(s).expect("ts")
    }

    fn pod(name: &str, node: &str, phase: &str, ready_at: Option<i64>, created: i64) -> Pod {
        let mut conds = Vec::new();
        if let Some(t) = ready_at {
            conds.push(json!({"type": "Ready", "status": "True", "lastTransitionTime": ts(t).to_string()}));
        }
        serde_json::from_value(json!({
            "metadata": {"name": name, "uid": name, "creationTimestamp": ts(created).to_string()},
            "spec": {"nodeName": node, "containers": [{"name": "c"}]},
            "status": {"phase": phase, "conditions": conds}
        }))
        .expect("pod")
    }

    #[test]
    fn availability_waits_for_min_ready_seconds_strictly() {
        let p = pod("a", "n", "Running", Some(1000), 900);
        assert_eq!(availability(&p, 0, ts(1000)), Availability::Available);
        assert_eq!(availability(&p, 10, ts(1011)), Availability::Available);
        assert_eq!(
            availability(&p, 10, ts(1010)),
            Availability::In(Duration::from_millis(1))
        );
        assert_eq!(
            availability(&p, 10, ts(1004)),
            Availability::In(Duration::from_millis(6001))
        );
        let not_ready = pod("b", "n", "Running", None, 900);
        assert_eq!(availability(&not_ready, 0, ts(1000)), Availability::NotReady);
    }

    #[test]
    fn deletion_order_is_upstream_ranking() {
        let now = ts(100_000);
        let unassigned = pod("unassigned", "", "Pending", None, 10);
        let pending = pod("pending", "n1", "Pending", None, 10);
        let running_not_ready = pod("not-ready", "n1", "Running", None, 10);
        let ready_new = pod("ready-new", "n2", "Running", Some(99_990), 10);
        let ready_old = pod("ready-old", "n2", "Running", Some(10), 10);
        let all = [&ready_old, &ready_new, &running_not_ready, &pending, &unassigned];
        let order: Vec<&str> = ordered_for_deletion(&all, &all, now)
            .iter()
            .map(|p| p.metadata.name.as_deref().unwrap_or(""))
            .collect();
        assert_eq!(
            order,
            ["unassigned", "pending", "not-ready", "ready-new", "ready-old"]
        );

        // Doubled up first: two ready pods of equal age, one sharing its node with another pod.
        let a = pod("a", "crowded", "Running", Some(10), 10);
        let b = pod("b", "alone", "Running", Some(10), 10);
        let c = pod("c", "crowded", "Running", Some(10), 10);
        let order: Vec<&str> = ordered_for_deletion(&[&b, &a], &[&a, &b, &c], now)
            .iter()
            .map(|p| p.metadata.name.as_deref().unwrap_or(""))
            .collect();
        assert_eq!(order, ["a", "b"]);

        // Deletion cost beats everything after readiness.
        let mut cheap = pod("cheap", "x", "Running", Some(10), 10);
        cheap.metadata.annotations = Some([(DELETION_COST_ANNOTATION.to_string(), "-5".to_string())].into());
        let order: Vec<&str> = ordered_for_deletion(&[&ready_new, &cheap], &[], now)
            .iter()
            .map(|p| p.metadata.name.as_deref().unwrap_or(""))
            .collect();
        assert_eq!(order, ["cheap", "ready-new"]);
    }

    proptest::proptest! {
        /// The deletion order is a total order: sorting any mix of pods never panics (Rust's sort checks
        /// the comparison) and gives the same order whatever the input order.
        #[test]
        fn deletion_order_is_total(specs in proptest::collection::vec(
            (0u8..3, 0u8..3, proptest::option::of(0i64..100_000), 0i64..100_000, 0u8..3), 0..300
        )) {
            let pods: Vec<Pod> = specs
                .iter()
                .enumerate()
                .map(|(i, (node, phase, ready, created, _))| {
                    let node = ["", "n1", "n2"][*node as usize];
                    let phase = ["Pending", "Running", "Unknown"][*phase as usize];
                    pod(&format!("p{i}"), node, phase, *ready, *created)
                })
                .collect();
            let refs: Vec<&Pod> = pods.iter().collect();
            let now = ts(100_000);
            let a: Vec<String> = ordered_for_deletion(&refs, &refs, now).iter().map(|p| p.metadata.name.clone().unwrap_or_default()).collect();
            let reversed: Vec<&Pod> = refs.iter().rev().copied().collect();
            let b: Vec<String> = ordered_for_deletion(&reversed, &refs, now).iter().map(|p| p.metadata.name.clone().unwrap_or_default()).collect();
            proptest::prop_assert_eq!(a, b);
        }
    }

    #[test]
    fn pod_from_template_carries_template_metadata_and_owner() {
        let t: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"labels": {"app": "web"}, "annotations": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}
        }))
        .expect("template");
        let parent = ObjectMeta {
            name: Some("web-abc".into()),
            namespace: Some("default".into()),
            uid: Some("u".into()),
            ..ObjectMeta::default()
        };
        let r = super::super::controller_ref::new_controller_ref(&parent, "apps/v1", "ReplicaSet");
        let p = pod_from_template(&t, &parent, Some(r.clone()));
        assert_eq!(p.metadata.generate_name.as_deref(), Some("web-abc-"));
        assert_eq!(p.metadata.name, None);
        assert_eq!(p.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(p.metadata.owner_references, Some(vec![r]));
        assert_eq!(
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("app"))
                .map(String::as_str),
            Some("web")
        );
        assert_eq!(
            p.spec.expect("spec").containers[0].image.as_deref(),
            Some("nginx")
        );
    }
}
