//! The StatefulSet decision (upstream `stateful_set_control.go` `updateStatefulSet` and `getStatefulSetRevisions`):
//! a pure function from what is observed to the next safe steps. No I/O, no clock: `now` is passed in.
//!
//! Like upstream, a plan carries only the next steps that are safe now; the watch events those steps cause
//! trigger the next plan. In `OrderedReady` mode it stops at the first pod that is missing, terminating
//! or not Running and Ready; it never creates a pod for an ordinal whose previous pod object still exists.

use super::identity::{self, REVISION_LABEL};
use super::revision;
use crate::workload::controller_ref::{self, Claim};
use crate::workload::pods::{self, Availability, is_terminating, phase};
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, PodTemplateSpec, TypedLocalObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::time::Duration;

/// Opt-in: replace a pod that is not Ready and on an old revision during a RollingUpdate instead of waiting
/// for it forever (upstream k/k#67250). Value `"true"`.
pub const HEAL_STUCK_ROLLOUT: &str = "berth.dev/heal-stuck-rollout";

/// Opt-in: a new ordinal's claims are created with `spec.dataSource` naming the same template's claim of the
/// ordinal before it (when that claim exists), so a provisioner that clones volumes (CSI volume cloning, Berth's
/// local-path provisioner) starts the new replica from a copy of its predecessor's data. Value `"true"`.
pub const CLONE_PREVIOUS_ORDINAL: &str = "berth.dev/clone-previous-ordinal";

/// Everything the decision needs.
pub struct Observed<'a> {
    /// The set.
    pub set: &'a StatefulSet,
    /// Pods of the namespace that match the set's selector or are controlled by it.
    pub pods: &'a [Pod],
    /// Claims of the namespace.
    pub claims: &'a [PersistentVolumeClaim],
    /// ControllerRevisions controlled by the set.
    pub revisions: &'a [ControllerRevision],
    /// The current time.
    pub now: jiff::Timestamp,
}

/// One side effect, in order. Steps are short-lived, so the object-carrying variants are not boxed.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Step {
    /// Create a ControllerRevision.
    CreateRevision(ControllerRevision),
    /// Renumber an existing revision (rollback to an earlier template).
    RenumberRevision {
        /// Revision name.
        name: String,
        /// New number.
        revision: i64,
    },
    /// Adopt an orphan revision whose labels match the selector: add the set as its controller (upstream
    /// `ClaimControllerRevisions`).
    AdoptRevision {
        /// Revision name.
        name: String,
        /// Revision uid.
        uid: String,
        /// Its ownerReferences after adoption (its others kept, the set's controller reference added).
        owner_references: Vec<OwnerReference>,
    },
    /// Release a revision the set controls whose labels no longer match: drop the set's reference.
    ReleaseRevision {
        /// Revision name.
        name: String,
        /// Revision uid.
        uid: String,
        /// Its ownerReferences after release (its others kept).
        owner_references: Vec<OwnerReference>,
    },
    /// Delete a revision beyond `revisionHistoryLimit`.
    DeleteRevision {
        /// Revision name.
        name: String,
    },
    /// Adopt an orphan pod that matches the selector (add the controller reference).
    AdoptPod {
        /// Pod name.
        name: String,
        /// Pod uid (precondition).
        uid: String,
    },
    /// Release a controlled pod that no longer matches the selector.
    ReleasePod {
        /// Pod name.
        name: String,
        /// Pod uid.
        uid: String,
    },
    /// Create a claim.
    CreateClaim(PersistentVolumeClaim),
    /// Set a claim's ownerReferences (retention policy).
    SetClaimOwners {
        /// Claim name.
        name: String,
        /// The full new list.
        owner_references: Vec<OwnerReference>,
    },
    /// Raise a claim's storage request to its template's (opt-in [`api::strategy::EXPAND_VOLUME_CLAIMS`]).
    ExpandClaim {
        /// Claim name.
        name: String,
        /// The new `spec.resources.requests.storage`, as the template writes it.
        storage: String,
    },
    /// Create a pod.
    CreatePod(Pod),
    /// Delete a pod (with a uid precondition).
    DeletePod {
        /// Pod name.
        name: String,
        /// Pod uid.
        uid: String,
    },
    /// Write `status` through `/status`.
    UpdateStatus(StatefulSetStatus),
    /// Record an Event on the set.
    Event {
        /// `Normal` or `Warning`.
        type_: &'static str,
        /// Reason, e.g. `SuccessfulCreate`.
        reason: &'static str,
        /// Message, upstream's wording.
        message: String,
    },
}

/// The steps and when to look again without a watch event.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Steps in order.
    pub steps: Vec<Step>,
    /// Re-plan after this long even without events (minReadySeconds).
    pub requeue_after: Option<Duration>,
}

/// Running and Ready (upstream `isRunningAndReady`).
pub fn is_running_and_ready(p: &Pod) -> bool {
    pods::is_running_and_ready(p)
}

fn is_failed_or_succeeded(p: &Pod) -> bool {
    matches!(phase(p), "Failed" | "Succeeded")
}

/// Running, Ready and not terminating (upstream `isHealthy`).
fn is_healthy(p: &Pod) -> bool {
    is_running_and_ready(p) && !is_terminating(p)
}

/// Running, Ready and available for `min_ready` seconds (upstream `isRunningAndAvailable`, the shared
/// [`pods::availability`]); else how long until it is, if it is Ready.
fn availability(p: &Pod, min_ready: i32, now: jiff::Timestamp) -> Result<(), Option<Duration>> {
    if !is_running_and_ready(p) {
        return Err(None);
    }
    match pods::availability(p, min_ready, now) {
        Availability::Available => Ok(()),
        Availability::In(d) => Err(Some(d)),
        Availability::NotReady => Err(None),
    }
}

/// `rollingUpdate.maxUnavailable` as a pod count for `replicas` (upstream `getStatefulSetMaxUnavailable`:
/// a percentage is rounded up, and the result is never below 1). Absent means 1.
pub fn resolve_max_unavailable(v: Option<&IntOrString>, replicas: usize) -> usize {
    let replicas = i32::try_from(replicas).unwrap_or(i32::MAX);
    crate::workload::intstr::statefulset_max_unavailable(v, replicas).max(1) as usize
}

fn revision_of(p: &Pod) -> &str {
    p.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(REVISION_LABEL))
        .map(String::as_str)
        .unwrap_or("")
}

fn name(p: &Pod) -> String {
    p.metadata.name.clone().unwrap_or_default()
}

fn uid(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

pub(crate) fn selector_matches(set: &StatefulSet, p: &Pod) -> bool {
    labels_match(set, &p.metadata)
}

/// Whether an object's labels match the set's selector (an empty selector matches nothing).
fn labels_match(
    set: &StatefulSet,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> bool {
    set.spec
        .as_ref()
        .is_some_and(|s| crate::workload::meta_matches(&s.selector, meta))
}

/// Decide the next steps for `o.set`.
pub fn plan(o: &Observed) -> Plan {
    if o.set.metadata.deletion_timestamp.is_some() {
        // A set being deleted (a finalizer holds it) gets its status computed and written, nothing else
        // (upstream `updateStatefulSet`: "don't do anything other than updating status"); the garbage
        // collector removes its pods.
        let mut p = plan_active(o);
        p.steps.retain(|s| matches!(s, Step::UpdateStatus(_)));
        return p;
    }
    plan_active(o)
}

fn plan_active(o: &Observed) -> Plan {
    let set = o.set;
    let mut plan = Plan::default();
    let Some(spec) = set.spec.as_ref() else {
        return plan;
    };
    let set_name = identity::set_name(set).to_string();
    let status = set.status.clone().unwrap_or_default();

    // Adoption and release (upstream ControllerRefManager).
    let mut owned: Vec<&Pod> = Vec::new();
    for p in o.pods {
        // Upstream `getPodsForStatefulSet`: claimed only when the selector matches and the pod is a
        // member (`isMemberOf`: named `<set>-<ordinal>`); the shared `ClaimObject` decides the rest.
        let matches = selector_matches(set, p) && identity::ordinal_of(set, &name(p)).is_some();
        match controller_ref::claim(&set.metadata, &p.metadata, matches) {
            Claim::Owned => owned.push(p),
            Claim::Release => plan.steps.push(Step::ReleasePod {
                name: name(p),
                uid: uid(p),
            }),
            Claim::Adopt => {
                plan.steps.push(Step::AdoptPod {
                    name: name(p),
                    uid: uid(p),
                });
                owned.push(p);
            }
            Claim::Ignore => {}
        }
    }

    // Revisions: ours, orphans matching the selector adopted, ours that stopped matching released
    // (upstream `ClaimControllerRevisions`); revisions another controller owns are not ours to see.
    let set_uid = set.metadata.uid.as_deref().unwrap_or("");
    let mut revisions: Vec<&ControllerRevision> = Vec::new();
    for r in o.revisions {
        let (name, uid) = (
            r.metadata.name.clone().unwrap_or_default(),
            r.metadata.uid.clone().unwrap_or_default(),
        );
        match controller_ref::claim(&set.metadata, &r.metadata, labels_match(set, &r.metadata)) {
            Claim::Owned => revisions.push(r),
            Claim::Release => plan.steps.push(Step::ReleaseRevision {
                name,
                uid,
                owner_references: controller_ref::released_owners(&r.metadata, set_uid),
            }),
            Claim::Adopt => {
                plan.steps.push(Step::AdoptRevision {
                    name,
                    uid,
                    owner_references: controller_ref::adopted_owners(
                        &r.metadata,
                        &identity::controller_ref(set),
                    ),
                });
                revisions.push(r);
            }
            Claim::Ignore => {}
        }
    }
    revisions.sort_by_key(|r| r.revision);
    let max_revision = revisions.last().map(|r| r.revision).unwrap_or(0);
    let data = revision::data_of(set);
    let mut collision_count = status.collision_count.unwrap_or(0);
    let update_revision: ControllerRevision = match revisions
        .iter()
        .find(|r| r.data.as_ref().is_some_and(|d| revision::equal_data(&d.0, &data)))
    {
        Some(existing) => {
            let mut r = (*existing).clone();
            if r.revision < max_revision {
                r.revision = max_revision + 1;
                plan.steps.push(Step::RenumberRevision {
                    name: r.metadata.name.clone().unwrap_or_default(),
                    revision: r.revision,
                });
            }
            r
        }
        None => {
            let mut r = revision::new_revision(set, max_revision + 1, collision_count);
            // A name taken by another revision (with other data, or one we do not own, e.g. just released)
            // is a hash collision: bump the count and rename. (Upstream's `CreateControllerRevision`
            // would return a taken one whose bytes are equal; Berth never re-uses a revision it does not own.)
            while o.revisions.iter().any(|x| x.metadata.name == r.metadata.name) {
                collision_count += 1;
                r = revision::new_revision(set, max_revision + 1, collision_count);
            }
            plan.steps.push(Step::CreateRevision(r.clone()));
            r
        }
    };
    let update_name = update_revision.metadata.name.clone().unwrap_or_default();
    let current_revision = status
        .current_revision
        .as_ref()
        .and_then(|c| {
            revisions
                .iter()
                .find(|r| r.metadata.name.as_ref() == Some(c))
                .map(|r| (*r).clone())
        })
        .unwrap_or_else(|| update_revision.clone());
    let current_name = current_revision.metadata.name.clone().unwrap_or_default();
    let update_template: PodTemplateSpec = spec.template.clone();
    let current_template =
        revision::template_of(&current_revision).unwrap_or_else(|| update_template.clone());

    // Split pods into replicas (in range) and condemned (out of range).
    let start = identity::start_ordinal(set);
    let n = identity::replicas(set).max(0) as usize;
    let mut slots: Vec<Option<&Pod>> = vec![None; n];
    let mut condemned: Vec<(i32, &Pod)> = Vec::new();
    for p in &owned {
        let Some(ord) = identity::ordinal_of(set, &name(p)) else {
            continue;
        };
        if ord >= start && ((ord - start) as usize) < n {
            slots[(ord - start) as usize] = Some(p);
        } else {
            condemned.push((ord, p));
        }
    }
    condemned.sort_by_key(|(ord, _)| *ord);

    // Status from what is observed (upstream computes it over the same pods).
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let mut st = StatefulSetStatus {
        observed_generation: set.metadata.generation,
        replicas: 0,
        ready_replicas: Some(0),
        available_replicas: Some(0),
        current_replicas: Some(0),
        updated_replicas: Some(0),
        current_revision: Some(current_name.clone()),
        update_revision: Some(update_name.clone()),
        collision_count: Some(collision_count),
        conditions: status.conditions.clone(),
    };
    for p in &owned {
        if identity::ordinal_of(set, &name(p)).is_none() {
            continue;
        }
        st.replicas += 1;
        if is_running_and_ready(p) {
            *st.ready_replicas.get_or_insert(0) += 1;
            if availability(p, min_ready, o.now).is_ok() {
                *st.available_replicas.get_or_insert(0) += 1;
            }
        }
        if !is_terminating(p) {
            if revision_of(p) == current_name {
                *st.current_replicas.get_or_insert(0) += 1;
            }
            if revision_of(p) == update_name {
                *st.updated_replicas.get_or_insert(0) += 1;
            }
        }
    }

    let monotonic = spec.pod_management_policy.as_deref() != Some("Parallel");
    let rolling = spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate";
    let rolling_update = spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.rolling_update.as_ref());
    let partition = rolling_update.and_then(|r| r.partition).unwrap_or(0).max(0) as usize;
    let heal = set
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(HEAL_STUCK_ROLLOUT))
        .is_some_and(|v| v == "true");
    let status_current_replicas = status.current_replicas.unwrap_or(0).max(0) as usize;

    // Claims' ownerReferences follow the retention policy for every pod that exists.
    let claim_by_name = |n: &str| o.claims.iter().find(|c| c.metadata.name.as_deref() == Some(n));
    let templates: Vec<String> = spec
        .volume_claim_templates
        .iter()
        .flatten()
        .filter_map(|t| t.metadata.name.clone())
        .collect();
    let mut owner_fixes = Vec::new();
    for (pod, is_condemned) in slots
        .iter()
        .flatten()
        .map(|p| (*p, false))
        .chain(condemned.iter().map(|(_, p)| (*p, true)))
    {
        let Some(ord) = identity::ordinal_of(set, &name(pod)) else {
            continue;
        };
        for t in &templates {
            let cname = identity::claim_name(t, set, ord);
            if let Some(c) = claim_by_name(&cname) {
                if c.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                let want = identity::desired_claim_owners(set, c, Some(pod), is_condemned);
                if want != c.metadata.owner_references.clone().unwrap_or_default() {
                    owner_fixes.push(Step::SetClaimOwners {
                        name: cname,
                        owner_references: want,
                    });
                }
            }
        }
    }
    plan.steps.extend(owner_fixes);

    // Opt-in claim expansion: every existing claim of the set (any ordinal, with or without its pod) whose
    // request is below its template's is raised; the provisioner grows the volume (k/k#68737).
    let expand = set
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(api::strategy::EXPAND_VOLUME_CLAIMS))
        .is_some_and(|v| v == "true");
    if expand {
        for t in spec.volume_claim_templates.iter().flatten() {
            let (Some(tname), Some(want)) = (
                t.metadata.name.as_deref(),
                t.spec
                    .as_ref()
                    .and_then(|s| s.resources.as_ref())
                    .and_then(|r| r.requests.as_ref())
                    .and_then(|r| r.get("storage")),
            ) else {
                continue;
            };
            let Some(want_value) = api::quantity::parse(&want.0) else {
                continue;
            };
            let prefix = format!("{tname}-");
            for c in o.claims {
                let cname = c.metadata.name.as_deref().unwrap_or("");
                let is_ours = cname
                    .strip_prefix(&prefix)
                    .and_then(|rest| identity::ordinal_of(set, rest))
                    .is_some();
                if !is_ours || c.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                let have = c
                    .spec
                    .as_ref()
                    .and_then(|s| s.resources.as_ref())
                    .and_then(|r| r.requests.as_ref())
                    .and_then(|r| r.get("storage"))
                    .and_then(|q| api::quantity::parse(&q.0));
                if have.is_some_and(|h| h < want_value) {
                    plan.steps.push(Step::ExpandClaim {
                        name: cname.to_string(),
                        storage: want.0.clone(),
                    });
                    plan.steps.push(Step::Event {
                        type_: "Normal",
                        reason: "ExpandingClaim",
                        message: format!("expand Claim {cname} to {} in StatefulSet {set_name}", want.0),
                    });
                }
            }
        }
    }

    let first_unhealthy: Option<String> = slots
        .iter()
        .flatten()
        .chain(condemned.iter().map(|(_, p)| p))
        .find(|p| !is_healthy(p))
        .map(|p| name(p));
    let event_create = |p: &str| Step::Event {
        type_: "Normal",
        reason: "SuccessfulCreate",
        message: format!("create Pod {p} in StatefulSet {set_name} successful"),
    };
    let event_delete = |p: &str| Step::Event {
        type_: "Normal",
        reason: "SuccessfulDelete",
        message: format!("delete Pod {p} in StatefulSet {set_name} successful"),
    };

    let clone_previous = set
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CLONE_PREVIOUS_ORDINAL))
        .is_some_and(|v| v == "true");
    let mut blocked = false;
    // Replicas in ascending ordinal order.
    for (i, slot) in slots.iter().enumerate() {
        let ord = start + i as i32;
        match slot {
            None => {
                // Claims first; a claim still being deleted, or owned by a pod that is gone, blocks the pod
                // (upstream waits for the garbage collector rather than re-using it).
                let mut claim_blocked = false;
                for mut claim in identity::new_claims(set, ord) {
                    let cname = claim.metadata.name.clone().unwrap_or_default();
                    if clone_previous && ord > start {
                        let tname = cname
                            .strip_suffix(&format!("-{}-{ord}", set_name))
                            .unwrap_or_default()
                            .to_string();
                        let source = identity::claim_name(&tname, set, ord - 1);
                        let source_ok =
                            claim_by_name(&source).is_some_and(|c| c.metadata.deletion_timestamp.is_none());
                        if let (true, Some(spec)) = (source_ok, claim.spec.as_mut()) {
                            spec.data_source = Some(TypedLocalObjectReference {
                                api_group: None,
                                kind: "PersistentVolumeClaim".into(),
                                name: source,
                            });
                        }
                    }
                    match claim_by_name(&cname) {
                        Some(existing) => {
                            let stale_pod_owner = existing
                                .metadata
                                .owner_references
                                .iter()
                                .flatten()
                                .any(|r| r.kind == "Pod");
                            if existing.metadata.deletion_timestamp.is_some() {
                                // Upstream `createPersistentVolumeClaims` → `recordPodEvent`.
                                let pod_name = identity::pod_name(set, ord);
                                plan.steps.push(Step::Event {
                                    type_: "Warning",
                                    reason: "FailedCreate",
                                    message: format!(
                                        "create Pod {pod_name} in StatefulSet {set_name} failed error: pvc {cname} is being deleted"
                                    ),
                                });
                            }
                            if existing.metadata.deletion_timestamp.is_some() || stale_pod_owner {
                                claim_blocked = true;
                            }
                        }
                        None => {
                            let pod_name = identity::pod_name(set, ord);
                            plan.steps.push(Step::CreateClaim(claim));
                            plan.steps.push(Step::Event {
                                type_: "Normal",
                                reason: "SuccessfulCreate",
                                message: format!(
                                    "create Claim {cname} Pod {pod_name} in StatefulSet {set_name} success"
                                ),
                            });
                        }
                    }
                }
                if claim_blocked {
                    blocked = true;
                    if monotonic {
                        break;
                    }
                    continue;
                }
                let use_current = rolling
                    && match rolling_update {
                        None => i < status_current_replicas,
                        Some(_) => i < partition,
                    }
                    && current_name != update_name;
                let (template, rev) = if use_current {
                    (&current_template, current_name.as_str())
                } else {
                    (&update_template, update_name.as_str())
                };
                let pod = identity::new_pod(set, template, rev, ord);
                plan.steps
                    .push(event_create(&pod.metadata.name.clone().unwrap_or_default()));
                plan.steps.push(Step::CreatePod(pod));
                blocked = true;
                if monotonic {
                    break;
                }
            }
            Some(p) => {
                if is_terminating(p) {
                    blocked = true;
                    if monotonic {
                        break;
                    }
                    continue;
                }
                // A Pending pod whose claim is missing (deleted by hand) gets it again (upstream
                // `createMissingPersistentVolumeClaims`), so it can be scheduled.
                if phase(p) == "Pending" {
                    for claim in identity::new_claims(set, ord) {
                        let cname = claim.metadata.name.clone().unwrap_or_default();
                        if claim_by_name(&cname).is_none() {
                            plan.steps.push(Step::CreateClaim(claim));
                            plan.steps.push(Step::Event {
                                type_: "Normal",
                                reason: "SuccessfulCreate",
                                message: format!(
                                    "create Claim {cname} Pod {} in StatefulSet {set_name} success",
                                    name(p)
                                ),
                            });
                        }
                    }
                }
                if is_failed_or_succeeded(p) {
                    plan.steps.push(Step::DeletePod {
                        name: name(p),
                        uid: uid(p),
                    });
                    plan.steps.push(event_delete(&name(p)));
                    blocked = true;
                    if monotonic {
                        break;
                    }
                    continue;
                }
                if heal
                    && rolling
                    && !is_running_and_ready(p)
                    && revision_of(p) != update_name
                    && i >= partition
                {
                    plan.steps.push(Step::DeletePod {
                        name: name(p),
                        uid: uid(p),
                    });
                    plan.steps.push(event_delete(&name(p)));
                    blocked = true;
                    if monotonic {
                        break;
                    }
                    continue;
                }
                if let Err(wait) = availability(p, min_ready, o.now) {
                    blocked = true;
                    if let Some(d) = wait {
                        plan.requeue_after = Some(plan.requeue_after.map_or(d, |x| x.min(d)));
                    }
                    if monotonic {
                        break;
                    }
                }
            }
        }
    }

    // Scale down: condemned pods from the highest ordinal (skipped while OrderedReady waits above).
    if !(monotonic && blocked) {
        for (_, p) in condemned.iter().rev() {
            if is_terminating(p) {
                if monotonic {
                    break;
                }
                continue;
            }
            if monotonic && !is_healthy(p) && first_unhealthy.as_deref() != Some(name(p).as_str()) {
                break;
            }
            plan.steps.push(Step::DeletePod {
                name: name(p),
                uid: uid(p),
            });
            plan.steps.push(event_delete(&name(p)));
            if monotonic {
                blocked = true;
                break;
            }
        }
    }

    // RollingUpdate: reverse ordinal order down to the partition.
    let max_unavailable = rolling_update.and_then(|r| r.max_unavailable.as_ref());
    if rolling && !(monotonic && blocked) && max_unavailable.is_some() {
        // With `maxUnavailable` set, as upstream with the MaxUnavailableStatefulSet gate on
        // (`updateStatefulSetAfterInvariantEstablished`, stateful_set_control.go): every pod of the set that is
        // missing, terminating or not available for minReadySeconds uses the budget; the rest of the budget
        // deletes old-revision pods from the highest ordinal down to the partition, healthy or not.
        let budget = resolve_max_unavailable(max_unavailable, n);
        let unavailable = slots
            .iter()
            .filter(|s| s.is_none_or(|p| is_terminating(p) || availability(p, min_ready, o.now).is_err()))
            .count();
        let mut to_delete = budget.saturating_sub(unavailable);
        for i in (partition..n).rev() {
            if to_delete == 0 {
                break;
            }
            if let Some(p) = slots[i]
                && revision_of(p) != update_name
                && !is_terminating(p)
            {
                plan.steps.push(Step::DeletePod {
                    name: name(p),
                    uid: uid(p),
                });
                plan.steps.push(event_delete(&name(p)));
                to_delete -= 1;
            }
        }
    } else if rolling && !(monotonic && blocked) {
        // Without it, upstream's default path: one pod at a time, waiting for each to be healthy again.
        for i in (partition..n).rev() {
            let Some(p) = slots[i] else { break };
            if revision_of(p) != update_name && !is_terminating(p) {
                plan.steps.push(Step::DeletePod {
                    name: name(p),
                    uid: uid(p),
                });
                plan.steps.push(event_delete(&name(p)));
                break;
            }
            if !is_healthy(p) {
                break;
            }
        }
    }

    // A finished rolling update makes the update revision current (upstream `completeRollingUpdate`).
    if rolling
        && st.updated_replicas == Some(st.replicas)
        && st.ready_replicas == Some(st.replicas)
        && st.replicas == n as i32
    {
        st.current_replicas = st.updated_replicas;
        st.current_revision = st.update_revision.clone();
    }

    // History beyond revisionHistoryLimit, never a revision in use.
    let limit = spec.revision_history_limit.unwrap_or(10);
    if limit >= 0 {
        let live: Vec<&str> = owned
            .iter()
            .map(|p| revision_of(p))
            .chain([
                current_name.as_str(),
                update_name.as_str(),
                st.current_revision.as_deref().unwrap_or(""),
            ])
            .collect();
        let prunable: Vec<&&ControllerRevision> = revisions
            .iter()
            .filter(|r| !live.contains(&r.metadata.name.as_deref().unwrap_or("")))
            .collect();
        let excess = prunable.len().saturating_sub(limit as usize);
        for r in prunable.into_iter().take(excess) {
            plan.steps.push(Step::DeleteRevision {
                name: r.metadata.name.clone().unwrap_or_default(),
            });
        }
    }

    if set.status.as_ref() != Some(&st) {
        plan.steps.push(Step::UpdateStatus(st));
    }
    plan
}
