//! The ReplicaSet decision (upstream `pkg/controller/replicaset/replica_set.go` `syncReplicaSet`,
//! `manageReplicas`, `getPodsToDelete` and `replica_set_utils.go` `calculateStatus`): a pure function from
//! the set, the pods of its namespace and its expectations to the pods to adopt, release, create and
//! delete, and the status to write. No I/O, no clock: `now` is passed in.

use crate::workload::controller_ref::{self, Claim};
use crate::workload::pods::{self, Availability};
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::time::Duration;

/// Upstream `burstReplicas`: at most this many pods are created or deleted in one sync.
pub const BURST_REPLICAS: usize = 500;

/// Everything one sync of one set needs.
pub struct Observed<'a> {
    /// The set (a ReplicationController is converted to one first, as upstream's RC controller does).
    pub rs: &'a ReplicaSet,
    /// The pods of the set's namespace (from the pod cache).
    pub pods: &'a [&'a Pod],
    /// Pods of the sets that share this set's controller (a Deployment's other ReplicaSets), for the
    /// "doubled up on a node" ranking of victims (upstream `getIndirectlyRelatedPods`). Empty for a set
    /// without a controller (then its own pods are used).
    pub related: &'a [&'a Pod],
    /// Whether the creations and deletions of earlier syncs have all been seen in the cache (upstream
    /// `expectations.SatisfiedExpectations`); only then are replicas managed.
    pub expectations_satisfied: bool,
    /// The current time.
    pub now: jiff::Timestamp,
}

/// A pod by name and uid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    /// Name.
    pub name: String,
    /// Uid (precondition of every write).
    pub uid: String,
}

impl PodRef {
    fn of(p: &Pod) -> Self {
        PodRef {
            name: p.metadata.name.clone().unwrap_or_default(),
            uid: p.metadata.uid.clone().unwrap_or_default(),
        }
    }
}

/// What one sync does, in order: adopt and release, then create `create` pods or delete `delete`, then
/// write the status ([`status`], computed after the writes because `ReplicaFailure` reports them).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    /// Orphans that match: add the set's controller reference.
    pub adopt: Vec<PodRef>,
    /// Pods the set controls that no longer match: drop its reference.
    pub release: Vec<PodRef>,
    /// How many pods to create (at most [`BURST_REPLICAS`]).
    pub create: usize,
    /// Pods to delete, in upstream's victim order.
    pub delete: Vec<PodRef>,
    /// The active pods the set owns after adoption (for the status).
    pub active: Vec<PodRef>,
}

fn replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0)
}

fn matches(rs: &ReplicaSet, p: &Pod) -> bool {
    rs.spec
        .as_ref()
        .is_some_and(|s| crate::workload::meta_matches(&s.selector, &p.metadata))
}

/// The pods the set owns once its claims are made (upstream `claimPods`), and the claims to make.
fn claimed<'a>(o: &Observed<'a>) -> (Vec<&'a Pod>, Vec<PodRef>, Vec<PodRef>) {
    let mut owned = Vec::new();
    let (mut adopt, mut release) = (Vec::new(), Vec::new());
    for p in o.pods {
        if p.metadata.namespace != o.rs.metadata.namespace {
            continue;
        }
        match controller_ref::claim(&o.rs.metadata, &p.metadata, matches(o.rs, p)) {
            Claim::Owned => owned.push(*p),
            Claim::Adopt => {
                adopt.push(PodRef::of(p));
                owned.push(*p);
            }
            Claim::Release => release.push(PodRef::of(p)),
            Claim::Ignore => {}
        }
    }
    (owned, adopt, release)
}

/// The active pods (not terminal, not terminating: upstream `FilterActivePods`) the set owns once its
/// claims are made.
pub fn active_pods<'a>(o: &Observed<'a>) -> Vec<&'a Pod> {
    claimed(o).0.into_iter().filter(|p| pods::is_active(p)).collect()
}

/// Decide one sync of `o.rs`.
pub fn plan(o: &Observed) -> Plan {
    let (owned, adopt, release) = claimed(o);
    // Upstream `FilterActivePods` before claiming: terminal and terminating pods never count.
    let active: Vec<&Pod> = owned.into_iter().filter(|p| pods::is_active(p)).collect();
    let mut plan = Plan {
        adopt,
        release,
        active: active.iter().map(|p| PodRef::of(p)).collect(),
        ..Plan::default()
    };
    if !o.expectations_satisfied || o.rs.metadata.deletion_timestamp.is_some() {
        return plan;
    }
    let want = usize::try_from(replicas(o.rs)).unwrap_or(0);
    if active.len() < want {
        plan.create = (want - active.len()).min(BURST_REPLICAS);
    } else if active.len() > want {
        let diff = (active.len() - want).min(BURST_REPLICAS);
        let related: Vec<&Pod> = if o.related.is_empty() {
            active.clone()
        } else {
            o.related.to_vec()
        };
        plan.delete = pods::ordered_for_deletion(&active, &related, o.now)
            .into_iter()
            .take(diff)
            .map(PodRef::of)
            .collect();
    }
    plan
}

/// Upstream `slowStartBatch` sizes: 1, 2, 4, … (each batch double the last, the last one what remains),
/// summing to `n`. A batch that has a failure ends the creations of the sync.
pub fn slow_start_batches(n: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let (mut left, mut size) = (n, 1usize);
    while left > 0 {
        let b = size.min(left);
        out.push(b);
        left -= b;
        size *= 2;
    }
    out
}

/// `ReplicaFailure`.
pub const REPLICA_FAILURE: &str = "ReplicaFailure";

/// The status after a sync (upstream `calculateStatus` plus `observedGeneration`): counts over `active`
/// (the pods the set owns that are not terminal or terminating): `replicas`, `fullyLabeledReplicas` (those
/// carrying every label of the template), `readyReplicas`, `availableReplicas` (Ready for more than
/// `minReadySeconds`). `manage_error` is the first failure of this sync's creations or deletions: it sets
/// `ReplicaFailure` (reason `FailedCreate` when short of pods, `FailedDelete` when over) if absent; a sync
/// without one removes it. Returns the status and, when some Ready pod is not yet available, when to
/// look again.
pub fn status(
    rs: &ReplicaSet,
    active: &[&Pod],
    manage_error: Option<&str>,
    now: jiff::Timestamp,
) -> (ReplicaSetStatus, Option<Duration>) {
    let spec = rs.spec.clone().unwrap_or_default();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let template_labels = spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let mut st = rs.status.clone().unwrap_or_default();
    let (mut fully, mut ready, mut available) = (0, 0, 0);
    let mut requeue: Option<Duration> = None;
    for p in active {
        let labels = p.metadata.labels.clone().unwrap_or_default();
        if template_labels.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            fully += 1;
        }
        match pods::availability(p, min_ready, now) {
            Availability::Available => {
                ready += 1;
                available += 1;
            }
            Availability::In(d) => {
                ready += 1;
                requeue = Some(requeue.map_or(d, |r| r.min(d)));
            }
            Availability::NotReady => {}
        }
    }
    let has_failure = st
        .conditions
        .as_ref()
        .is_some_and(|c| c.iter().any(|c| c.type_ == REPLICA_FAILURE));
    match manage_error {
        Some(message) if !has_failure => {
            let diff = active.len() as i64 - i64::from(replicas(rs));
            let reason = if diff < 0 {
                "FailedCreate"
            } else if diff > 0 {
                "FailedDelete"
            } else {
                ""
            };
            st.conditions
                .get_or_insert_with(Vec::new)
                .push(ReplicaSetCondition {
                    type_: REPLICA_FAILURE.into(),
                    status: "True".into(),
                    reason: Some(reason.into()),
                    message: Some(message.into()),
                    last_transition_time: Some(Time(now)),
                });
        }
        None if has_failure => {
            if let Some(c) = st.conditions.as_mut() {
                c.retain(|c| c.type_ != REPLICA_FAILURE);
            }
            if st.conditions.as_ref().is_some_and(Vec::is_empty) {
                st.conditions = None;
            }
        }
        _ => {}
    }
    st.replicas = i32::try_from(active.len()).unwrap_or(i32::MAX);
    st.fully_labeled_replicas = Some(fully);
    st.ready_replicas = Some(ready);
    st.available_replicas = Some(available);
    st.observed_generation = rs.metadata.generation;
    (st, requeue)
}

/// Whether two statuses differ in what upstream's `updateReplicaSetStatus` compares (counts, generation,
/// conditions).
pub fn status_changed(old: Option<&ReplicaSetStatus>, new: &ReplicaSetStatus) -> bool {
    let old = old.cloned().unwrap_or_default();
    old.replicas != new.replicas
        || old.fully_labeled_replicas.unwrap_or(0) != new.fully_labeled_replicas.unwrap_or(0)
        || old.ready_replicas.unwrap_or(0) != new.ready_replicas.unwrap_or(0)
        || old.available_replicas.unwrap_or(0) != new.available_replicas.unwrap_or(0)
        || old.observed_generation != new.observed_generation
        || old.conditions.as_deref().unwrap_or_default() != new.conditions.as_deref().unwrap_or_default()
}

/// The pod the set creates (upstream `GetPodFromTemplate` with the set's controller reference).
pub fn new_pod(rs: &ReplicaSet, api_version: &str, kind: &str) -> Pod {
    let template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    crate::workload::pods::pod_from_template(
        &template,
        &rs.metadata,
        Some(controller_ref::new_controller_ref(
            &rs.metadata,
            api_version,
            kind,
        )),
    )
}
