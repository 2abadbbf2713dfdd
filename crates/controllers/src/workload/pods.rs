//! Pod helpers every workload controller shares: readiness and availability (upstream `pkg/api/v1/pod`
//! `IsPodReady`, `IsPodAvailable`), active pods (`controller.IsPodActive`), the pod built from a template
//! (`controller.GetPodFromTemplate`) and the order in which surplus pods are deleted
//! (`controller.ActivePodsWithRanks`).

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use std::cmp::Ordering;
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

/// Upstream `logarithmicRankDiff`: the difference of ⌊log2(age in ns)⌋ of two times (`-1` for an age ≤ 0).
fn log_rank_diff(t1: jiff::Timestamp, t2: jiff::Timestamp, now: jiff::Timestamp) -> i64 {
    let rank = |t: jiff::Timestamp| {
        let d = now.as_nanosecond() - t.as_nanosecond();
        if d > 0 {
            i64::from(127 - d.leading_zeros() as i32)
        } else {
            -1
        }
    };
    rank(t1) - rank(t2)
}

/// Upstream `afterOrZero`: a zero (missing) time first, else the later one first.
fn after_or_zero(a: Option<jiff::Timestamp>, b: Option<jiff::Timestamp>) -> bool {
    match (a, b) {
        (None, _) | (_, None) => a.is_none(),
        (Some(a), Some(b)) => a > b,
    }
}

/// Compare two times as upstream's `ActivePodsWithRanks.Less` does with `LogarithmicScaleDown` on (its
/// default since 1.22): by the logarithm of their age, newer first, uid breaking ties; a missing time
/// or clock compares as [`after_or_zero`].
fn newer_first(
    a: Option<jiff::Timestamp>,
    b: Option<jiff::Timestamp>,
    now: jiff::Timestamp,
    ua: &str,
    ub: &str,
) -> Option<bool> {
    if a == b {
        return None;
    }
    let (Some(ta), Some(tb)) = (a, b) else {
        return Some(after_or_zero(a, b));
    };
    let diff = log_rank_diff(ta, tb, now);
    Some(if diff == 0 { ua < ub } else { diff < 0 })
}

/// Whether `a` is deleted before `b` (upstream `ActivePodsWithRanks.Less`), `rank_*` being the number of
/// related active pods on each one's node. In order: unassigned before assigned; Pending before Unknown
/// before Running; not Ready before Ready; lower `pod-deletion-cost` first; more related pods on its node
/// (doubled up) first; Ready for a shorter time first (log scale); more container restarts first;
/// created more recently first (log scale).
pub fn delete_before(a: &Pod, rank_a: usize, b: &Pod, rank_b: usize, now: jiff::Timestamp) -> bool {
    let (na, nb) = (node_name(a), node_name(b));
    if na != nb && (na.is_empty() || nb.is_empty()) {
        return na.is_empty();
    }
    if phase_ordinal(a) != phase_ordinal(b) {
        return phase_ordinal(a) < phase_ordinal(b);
    }
    if is_ready(a) != is_ready(b) {
        return !is_ready(a);
    }
    if deletion_cost(a) != deletion_cost(b) {
        return deletion_cost(a) < deletion_cost(b);
    }
    if rank_a != rank_b {
        return rank_a > rank_b;
    }
    let (ua, ub) = (
        a.metadata.uid.as_deref().unwrap_or(""),
        b.metadata.uid.as_deref().unwrap_or(""),
    );
    if is_ready(a)
        && is_ready(b)
        && let Some(r) = newer_first(ready_since(a), ready_since(b), now, ua, ub)
    {
        return r;
    }
    let (ra, rb) = (max_restarts(a), max_restarts(b));
    if ra.0 != rb.0 {
        return ra.0 > rb.0;
    }
    if ra.1 != rb.1 {
        return ra.1 > rb.1;
    }
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    newer_first(created(a), created(b), now, ua, ub).unwrap_or(false)
}

/// `pods` in the order they should be deleted (upstream `getPodsToDelete` with
/// `getPodsRankedByRelatedPodsOnSameNode`): each ranked by how many active pods of `related` (the
/// controller's own pods, or every pod of a Deployment's ReplicaSets) share its node, then sorted by
/// [`delete_before`]. The sort is stable.
pub fn ordered_for_deletion<'a>(pods: &[&'a Pod], related: &[&Pod], now: jiff::Timestamp) -> Vec<&'a Pod> {
    let mut on_node: HashMap<&str, usize> = HashMap::new();
    for p in related.iter().filter(|p| is_active(p)) {
        *on_node.entry(node_name(p)).or_insert(0) += 1;
    }
    let mut ranked: Vec<(&'a Pod, usize)> = pods
        .iter()
        .map(|p| (*p, on_node.get(node_name(p)).copied().unwrap_or(0)))
        .collect();
    ranked.sort_by(|(a, ra), (b, rb)| {
        if delete_before(a, *ra, b, *rb, now) {
            Ordering::Less
        } else if delete_before(b, *rb, a, *ra, now) {
            Ordering::Greater
        } else {
            Ordering::Equal
        }
    });
    ranked.into_iter().map(|(p, _)| p).collect()
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
