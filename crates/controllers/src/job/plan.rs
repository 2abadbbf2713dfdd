//! The Job controller's whole decision for one Job, pure: which pods to create and delete, which
//! finalizers to remove, and the status to write (upstream `pkg/controller/job/job_controller.go`
//! `syncJob`, `manageJob`, `trackJobStatusAndRemoveFinalizers`; `indexed_job_utils.go`;
//! `pod_failure_policy.go`; `backoff_utils.go`).
//!
//! Counting is upstream's finalizer protocol, so a restart at any point counts every finished pod once:
//! 1. a finished pod that still has the `batch.kubernetes.io/job-tracking` finalizer is recorded in
//!    `status.uncountedTerminatedPods` (an Indexed Job's success is recorded in `completedIndexes`);
//! 2. only once that status is stored (it is in the Job this plan reads) is the pod's finalizer removed;
//! 3. a recorded uid whose pod no longer has the finalizer (or is gone) moves into `succeeded`/`failed`.
//!
//! The executor writes the status with the Job's resourceVersion, so a plan made from a stale Job
//! never writes.

use api::wellknown::{JOB_COMPLETION_INDEX, JOB_TRACKING_FINALIZER};
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// First delay before a pod replacing a failed one (upstream `DefaultJobPodFailureBackOff`).
pub const BACKOFF_BASE: Duration = Duration::from_secs(10);
/// Longest such delay (upstream `MaxJobPodFailureBackOff`).
pub const BACKOFF_MAX: Duration = Duration::from_secs(360);

/// What the plan reads: the Job, the pods it controls (by ControllerRef) and the time.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    /// The Job as cached.
    pub job: &'a Job,
    /// Its pods (controllerRef uid = the Job's uid).
    pub pods: Vec<&'a Pod>,
    /// Whether the pod cache reflects this controller's own earlier creates and deletes (upstream's
    /// expectations); when false, no pod is created or deleted.
    pub settled: bool,
    /// Now.
    pub now: Timestamp,
}

/// A pod named in a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    /// Name.
    pub name: String,
    /// Uid (a precondition of deletes).
    pub uid: String,
}

/// One Event to record on the Job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `Normal` or `Warning`.
    pub type_: &'static str,
    /// Reason.
    pub reason: &'static str,
    /// Message.
    pub message: String,
}

/// The steps for one Job, carried out in this order: status, finalizers, deletes, creates, Job deletion.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The status to write, when it differs from the stored one.
    pub status: Option<JobStatus>,
    /// Pods whose finalizer may be removed now (their outcome is already stored).
    pub remove_finalizers: Vec<PodRef>,
    /// Active pods to delete.
    pub delete: Vec<PodRef>,
    /// Pods to create.
    pub create: Vec<Pod>,
    /// Events.
    pub events: Vec<Event>,
    /// Delete the Job (`ttlSecondsAfterFinished` passed; upstream's TTL-after-finished controller).
    pub delete_job: bool,
    /// Plan again after this long even without changes (back-off, deadlines, TTL).
    pub requeue_after: Option<Duration>,
}

/// The annotation of a pod of a Job with `backoffLimitPerIndex`: how many pods of its index failed
/// before it (upstream `batch.kubernetes.io/job-index-failure-count`).
pub const JOB_INDEX_FAILURE_COUNT: &str = "batch.kubernetes.io/job-index-failure-count";

/// A pod's [`JOB_INDEX_FAILURE_COUNT`] (0 when absent, upstream `getIndexFailureCount`).
fn index_failure_count(p: &Pod) -> i32 {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(JOB_INDEX_FAILURE_COUNT))
        .and_then(|v| v.parse().ok())
        .filter(|n: &i32| *n >= 0)
        .unwrap_or(0)
}

/// The first `successPolicy` rule the completed indexes satisfy (upstream `matchSuccessPolicy`): its
/// index. A rule with `succeededIndexes` needs them all, or `succeededCount` of them; one with only
/// `succeededCount` needs that many completed indexes.
fn match_success_policy(job: &Job, completed: &BTreeSet<i32>, completions: i32) -> Option<usize> {
    let rules = &job.spec.as_ref()?.success_policy.as_ref()?.rules;
    rules.iter().position(|r| {
        let count = r.succeeded_count.map(i64::from);
        match r.succeeded_indexes.as_deref() {
            Some(ix) => {
                let wanted = parse_indexes(ix, completions);
                let done = wanted.intersection(completed).count() as i64;
                match count {
                    Some(c) => done >= c,
                    None => !wanted.is_empty() && done == wanted.len() as i64,
                }
            }
            None => count.is_some_and(|c| completed.len() as i64 >= c),
        }
    })
}

fn has_finalizer(p: &Pod) -> bool {
    p.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|f| f == JOB_TRACKING_FINALIZER))
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

fn pod_ref(p: &Pod) -> PodRef {
    PodRef {
        name: p.metadata.name.clone().unwrap_or_default(),
        uid: p.metadata.uid.clone().unwrap_or_default(),
    }
}

fn uid(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

/// The pod's completion index from its annotation (upstream `getCompletionIndex`).
pub fn completion_index(p: &Pod) -> Option<i32> {
    p.metadata
        .annotations
        .as_ref()?
        .get(JOB_COMPLETION_INDEX)?
        .parse()
        .ok()
        .filter(|i| *i >= 0)
}

/// Whether a Job condition of `type_` is True.
pub fn has_condition(job: &Job, type_: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

/// Whether the Job is finished: a `Complete` or `Failed` condition is True (upstream `IsJobFinished`).
pub fn is_finished(job: &Job) -> bool {
    has_condition(job, "Complete") || has_condition(job, "Failed")
}

/// Parse `completedIndexes` (`"1,3-5"`) into a set (upstream `parseIndexesFromString`).
pub fn parse_indexes(s: &str, completions: i32) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
            out.extend((a..=b).filter(|i| *i < completions));
        }
    }
    out
}

/// Format indexes as upstream's compressed interval list (`"1,3-5"`).
pub fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut it = set.iter().copied().peekable();
    while let Some(start) = it.next() {
        let mut end = start;
        while it.peek() == Some(&(end + 1)) {
            end += 1;
            it.next();
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

/// When a pod finished: the latest container `finishedAt`, else its deletion or creation time.
fn finish_time(p: &Pod) -> Option<Timestamp> {
    let st = p.status.as_ref();
    let containers = st
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .chain(
            st.and_then(|s| s.init_container_statuses.as_ref())
                .into_iter()
                .flatten(),
        );
    containers
        .filter_map(|c| {
            c.state
                .as_ref()?
                .terminated
                .as_ref()?
                .finished_at
                .as_ref()
                .map(|t| t.0)
        })
        .max()
        .or_else(|| p.metadata.deletion_timestamp.as_ref().map(|t| t.0))
        .or_else(|| p.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// What a failed pod means under `podFailurePolicy` (upstream `matchPodFailurePolicy`): `None` when no
/// rule matches (it counts), else the first matching rule's action with a message for `FailJob`.
fn match_failure_policy(job: &Job, p: &Pod) -> Option<(String, String)> {
    let rules = job.spec.as_ref()?.pod_failure_policy.as_ref()?.rules.clone();
    let ns = p.metadata.namespace.as_deref().unwrap_or("");
    let name = p.metadata.name.as_deref().unwrap_or("");
    let st = p.status.as_ref()?;
    for (i, r) in rules.iter().enumerate() {
        if let Some(req) = &r.on_exit_codes {
            let values = &req.values;
            let statuses = st
                .init_container_statuses
                .iter()
                .flatten()
                .chain(st.container_statuses.iter().flatten());
            for cs in statuses {
                if req.container_name.as_ref().is_some_and(|n| *n != cs.name) {
                    continue;
                }
                let Some(code) = cs
                    .state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .map(|t| t.exit_code)
                else {
                    continue;
                };
                if code == 0 {
                    continue;
                }
                let hit = match req.operator.as_str() {
                    "In" => values.contains(&code),
                    "NotIn" => !values.contains(&code),
                    _ => false,
                };
                if hit {
                    let msg = format!(
                        "Container {} for pod {ns}/{name} failed with exit code {code} matching {} rule at index {i}",
                        cs.name, r.action
                    );
                    return Some((r.action.clone(), msg));
                }
            }
        }
        if let Some(reqs) = &r.on_pod_conditions {
            for req in reqs {
                let want = req.status.as_str();
                let hit = st
                    .conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == req.type_ && c.status == want);
                if hit {
                    let msg = format!(
                        "Pod {ns}/{name} has condition {} matching {} rule at index {i}",
                        req.type_, r.action
                    );
                    return Some((r.action.clone(), msg));
                }
            }
        }
    }
    None
}

fn condition(type_: &str, reason: &str, message: &str, now: Timestamp) -> JobCondition {
    JobCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Set condition `type_` to True (keeping the one there if already True), or to False when `on` is false
/// and it exists (upstream `ensureJobConditionStatus`).
fn set_condition(
    conds: &mut Vec<JobCondition>,
    type_: &str,
    on: bool,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> bool {
    let status = if on { "True" } else { "False" };
    match conds.iter_mut().find(|c| c.type_ == type_) {
        Some(c) if c.status == status => false,
        Some(c) => {
            *c = condition(type_, reason, message, now);
            c.status = status.into();
            true
        }
        None if on => {
            conds.push(condition(type_, reason, message, now));
            true
        }
        None => false,
    }
}

/// The back-off before the next pod may be created after failures (upstream `backoffRecord`): the
/// failures since the last success, `BACKOFF_BASE` doubling per failure up to `BACKOFF_MAX`, from the
/// last failure's time.
fn backoff_remaining(pods: &[&Pod], now: Timestamp) -> Option<Duration> {
    let last_success = pods
        .iter()
        .filter(|p| phase(p) == "Succeeded")
        .filter_map(|p| finish_time(p))
        .max();
    let failures: Vec<Timestamp> = pods
        .iter()
        .filter(|p| phase(p) == "Failed")
        .filter_map(|p| finish_time(p))
        .filter(|t| last_success.is_none_or(|s| *t > s))
        .collect();
    let last = *failures.iter().max()?;
    let n = u32::try_from(failures.len()).unwrap_or(u32::MAX);
    let delay = BACKOFF_BASE
        .saturating_mul(1u32 << n.saturating_sub(1).min(10))
        .min(BACKOFF_MAX);
    let due = last + jiff::SignedDuration::try_from(delay).ok()?;
    let left = due.duration_since(now);
    (left.is_positive()).then(|| left.unsigned_abs())
}

/// The pod for a new replica (upstream `GetPodFromTemplate` plus the Job's additions): `<job>-` as
/// generateName (`<job>-<index>-` for Indexed), the template's labels and annotations, a controller
/// ownerReference, the tracking finalizer; for Indexed, the completion index annotation and label, the
/// hostname `<job>-<index>` and `JOB_COMPLETION_INDEX` from the annotation in every container.
pub fn new_pod(job: &Job, index: Option<i32>) -> Pod {
    new_pod_with_failures(job, index, None)
}

/// [`new_pod`] for a Job with `backoffLimitPerIndex`: the pod records how many pods of its index failed
/// before it ([`JOB_INDEX_FAILURE_COUNT`], upstream `addIndexFailureCountAnnotation`).
pub fn new_pod_with_failures(job: &Job, index: Option<i32>, failures: Option<i32>) -> Pod {
    let name = job.metadata.name.clone().unwrap_or_default();
    let template: PodTemplateSpec = job.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    let mut labels = tmeta.labels.unwrap_or_default();
    let mut annotations = tmeta.annotations.unwrap_or_default();
    let mut spec = template.spec.unwrap_or_default();
    let generate_name = match index {
        Some(i) => {
            labels.insert(JOB_COMPLETION_INDEX.into(), i.to_string());
            annotations.insert(JOB_COMPLETION_INDEX.into(), i.to_string());
            if let Some(n) = failures {
                annotations.insert(JOB_INDEX_FAILURE_COUNT.into(), n.to_string());
            }
            if spec.hostname.as_deref().is_none_or(str::is_empty) {
                spec.hostname = Some(format!("{name}-{i}"));
            }
            let env = EnvVar {
                name: "JOB_COMPLETION_INDEX".into(),
                value: None,
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        api_version: Some("v1".into()),
                        field_path: format!("metadata.annotations['{JOB_COMPLETION_INDEX}']"),
                    }),
                    ..EnvVarSource::default()
                }),
            };
            for c in spec
                .init_containers
                .iter_mut()
                .flatten()
                .chain(spec.containers.iter_mut())
            {
                let envs = c.env.get_or_insert_with(Vec::new);
                if !envs.iter().any(|e| e.name == env.name) {
                    envs.push(env.clone());
                }
            }
            format!("{name}-{i}-")
        }
        None => format!("{name}-"),
    };
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name),
            namespace: job.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            finalizers: Some(vec![JOB_TRACKING_FINALIZER.into()]),
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".into(),
                kind: "Job".into(),
                name,
                uid: job.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn restarts(p: &Pod) -> i32 {
    let st = p.status.as_ref();
    st.and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .chain(
            st.and_then(|s| s.init_container_statuses.as_ref())
                .into_iter()
                .flatten(),
        )
        .map(|c| c.restart_count)
        .sum()
}

/// The whole decision for one Job.
#[must_use]
#[allow(clippy::too_many_lines)]
pub fn plan(o: &Observed) -> Plan {
    let job = o.job;
    let now = o.now;
    let mut out = Plan::default();
    let spec = job.spec.clone().unwrap_or_default();
    let old = job.status.clone().unwrap_or_default();

    // A Job being deleted, or finished: only let go of its pods (upstream removes the finalizers of a
    // finished Job's pods), and delete a finished Job once its TTL has passed.
    let deleting = job.metadata.deletion_timestamp.is_some();
    if deleting || is_finished(job) {
        out.remove_finalizers = o
            .pods
            .iter()
            .filter(|p| has_finalizer(p))
            .map(|p| pod_ref(p))
            .collect();
        if !deleting && let Some(ttl) = spec.ttl_seconds_after_finished {
            let finished_at = old
                .conditions
                .iter()
                .flatten()
                .filter(|c| matches!(c.type_.as_str(), "Complete" | "Failed") && c.status == "True")
                .filter_map(|c| c.last_transition_time.as_ref().map(|t| t.0))
                .max()
                .or(old.completion_time.as_ref().map(|t| t.0));
            if let Some(at) = finished_at {
                let due = at + jiff::SignedDuration::from_secs(i64::from(ttl));
                if due <= now {
                    out.delete_job = true;
                } else {
                    out.requeue_after = Some(due.duration_since(now).unsigned_abs());
                }
            }
        }
        return out;
    }

    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let completions = spec.completions;
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let has_policy = spec.pod_failure_policy.is_some();
    // `backoffLimitPerIndex` (Indexed only): each index fails on its own after that many retries
    // (upstream `pkg/controller/job/indexed_job_utils.go`, `isIndexFailed`).
    let per_index = spec.backoff_limit_per_index.filter(|_| indexed);
    let replace_terminating = spec.pod_replacement_policy.as_deref() != Some("Failed") && !has_policy;
    let on_failure = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        == Some("OnFailure");

    let uncounted = old.uncounted_terminated_pods.clone().unwrap_or_default();
    let mut unc_succeeded: BTreeSet<String> = uncounted
        .succeeded
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let mut unc_failed: BTreeSet<String> = uncounted.failed.clone().unwrap_or_default().into_iter().collect();
    let stored_unc: BTreeSet<String> = unc_succeeded.union(&unc_failed).cloned().collect();
    let mut succeeded = old.succeeded.unwrap_or(0);
    let mut failed = old.failed.unwrap_or(0);
    let mut completed = parse_indexes(
        old.completed_indexes.as_deref().unwrap_or(""),
        completions.unwrap_or(0),
    );
    let stored_completed = completed.clone();
    let mut failed_indexes = parse_indexes(
        old.failed_indexes.as_deref().unwrap_or(""),
        completions.unwrap_or(0),
    );

    let by_uid: BTreeMap<String, &Pod> = o.pods.iter().map(|p| (uid(p), *p)).collect();

    // 3. Count the recorded pods that no longer hold the finalizer (or are gone).
    for u in unc_succeeded.clone() {
        if by_uid.get(&u).is_none_or(|p| !has_finalizer(p)) {
            unc_succeeded.remove(&u);
            if completions.is_none_or(|c| succeeded < c) {
                succeeded += 1;
            }
        }
    }
    for u in unc_failed.clone() {
        if by_uid.get(&u).is_none_or(|p| !has_finalizer(p)) {
            unc_failed.remove(&u);
            failed += 1;
        }
    }

    // 1. Record newly finished pods; 2. release the ones whose outcome is stored.
    let mut failure: Option<(&'static str, String)> = None;
    for p in &o.pods {
        if !has_finalizer(p) {
            // An Indexed Job's success is its index: a set, so reading it again counts nothing twice.
            if indexed
                && phase(p) == "Succeeded"
                && let Some(i) = completion_index(p).filter(|i| completions.is_some_and(|c| *i < c))
            {
                completed.insert(i);
            }
            continue;
        }
        let u = uid(p);
        let ph = phase(p);
        let succeeded_pod = ph == "Succeeded";
        // Without a podFailurePolicy a pod being deleted counts as failed (upstream `isPodFailed`).
        let failed_pod =
            ph == "Failed" || (!has_policy && ph != "Succeeded" && p.metadata.deletion_timestamp.is_some());
        if !succeeded_pod && !failed_pod {
            continue;
        }
        let index = completion_index(p).filter(|i| completions.is_some_and(|c| *i < c));
        if succeeded_pod && indexed {
            if let Some(i) = index {
                completed.insert(i);
            }
            if index.is_none_or(|i| stored_completed.contains(&i)) {
                out.remove_finalizers.push(pod_ref(p));
            }
            continue;
        }
        if stored_unc.contains(&u) {
            out.remove_finalizers.push(pod_ref(p));
            continue;
        }
        if succeeded_pod {
            unc_succeeded.insert(u);
            continue;
        }
        match match_failure_policy(job, p) {
            Some((action, _)) if action == "Ignore" => {
                // Not counted: let it go at once (idempotent, so it needs no record).
                out.remove_finalizers.push(pod_ref(p));
            }
            Some((action, msg)) if action == "FailJob" => {
                unc_failed.insert(u);
                failure.get_or_insert(("PodFailurePolicy", msg));
            }
            Some((action, _)) if action == "FailIndex" && per_index.is_some() => {
                // The index fails at once (recorded with the pod, in the same status write).
                unc_failed.insert(u);
                if let Some(i) = index {
                    failed_indexes.insert(i);
                }
            }
            _ => {
                unc_failed.insert(u);
                if let (Some(limit), Some(i)) = (per_index, index)
                    && index_failure_count(p) >= limit
                {
                    failed_indexes.insert(i);
                }
            }
        }
    }
    let new_succeeded = if indexed {
        i32::try_from(completed.len()).unwrap_or(i32::MAX)
    } else {
        succeeded + i32::try_from(unc_succeeded.len()).unwrap_or(0)
    };
    if indexed {
        succeeded = i32::try_from(completed.len()).unwrap_or(i32::MAX);
    }
    let total_failed = failed + i32::try_from(unc_failed.len()).unwrap_or(0);

    let active: Vec<&Pod> = o
        .pods
        .iter()
        .copied()
        .filter(|p| !matches!(phase(p), "Succeeded" | "Failed") && p.metadata.deletion_timestamp.is_none())
        .collect();
    let terminating = o
        .pods
        .iter()
        .filter(|p| !matches!(phase(p), "Succeeded" | "Failed") && p.metadata.deletion_timestamp.is_some())
        .count();
    let terminating = i32::try_from(terminating).unwrap_or(i32::MAX);

    let mut conds = old.conditions.clone().unwrap_or_default();
    let mut status = old.clone();
    let suspended = spec.suspend == Some(true);
    let already_failing = has_condition(job, "FailureTarget");
    let already_succeeding = has_condition(job, "SuccessCriteriaMet");

    // `maxFailedIndexes` exceeded (upstream: checked before the backoff limit).
    if failure.is_none()
        && !already_succeeding
        && let Some(max) = spec.max_failed_indexes.filter(|_| per_index.is_some())
        && i32::try_from(failed_indexes.len()).unwrap_or(i32::MAX) > max
    {
        failure = Some((
            "MaxFailedIndexesExceeded",
            "Job has exceeded the specified maximal number of failed indexes".into(),
        ));
    }
    // Failure decisions (upstream order: pod failure policy, backoff limit, active deadline).
    if failure.is_none() && !already_succeeding {
        let backoff_limit = spec
            .backoff_limit
            .unwrap_or(if per_index.is_some() { i32::MAX } else { 6 });
        let over = if on_failure {
            let r: i32 = active.iter().map(|p| restarts(p)).sum();
            if backoff_limit == 0 {
                r > 0
            } else {
                r >= backoff_limit
            }
        } else {
            false
        };
        if total_failed > backoff_limit || over {
            failure = Some((
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit".into(),
            ));
        } else if let (Some(ads), Some(start)) = (spec.active_deadline_seconds, old.start_time.as_ref())
            && !suspended
        {
            let due = start.0 + jiff::SignedDuration::from_secs(ads);
            if due <= now {
                failure = Some((
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline".into(),
                ));
            } else {
                out.requeue_after = Some(due.duration_since(now).unsigned_abs());
            }
        }
    }
    // Every index finished, some of them failed (upstream `JobReasonFailedIndexes`).
    if failure.is_none()
        && !already_succeeding
        && per_index.is_some()
        && !failed_indexes.is_empty()
        && completions.is_some_and(|c| {
            i64::try_from(completed.len() + failed_indexes.len()).unwrap_or(i64::MAX) >= i64::from(c)
        })
    {
        failure = Some(("FailedIndexes", "Job has failed indexes".into()));
    }
    // Success (upstream: a `successPolicy` rule met; completions reached; without completions, a
    // success and no pod still running).
    let policy_rule = if indexed && !already_failing && failure.is_none() {
        match_success_policy(job, &completed, completions.unwrap_or(0))
    } else {
        None
    };
    let complete = !already_failing
        && failure.is_none()
        && (policy_rule.is_some()
            || match completions {
                Some(c) => new_succeeded >= c,
                None => new_succeeded > 0 && active.is_empty(),
            });
    let (success_reason, success_message) = match policy_rule {
        Some(i) => ("SuccessPolicy", format!("Matched rules at index {i}")),
        None => (
            "CompletionsReached",
            "Reached expected number of succeeded pods".to_string(),
        ),
    };

    let mut failing = already_failing;
    if let Some((reason, msg)) = &failure
        && !already_failing
    {
        set_condition(&mut conds, "FailureTarget", true, reason, msg, now);
        failing = true;
    }
    let succeeding = already_succeeding || complete;
    if complete && !already_succeeding {
        set_condition(
            &mut conds,
            "SuccessCriteriaMet",
            true,
            success_reason,
            &success_message,
            now,
        );
    }

    let mut want_create: Vec<Option<i32>> = Vec::new();
    if failing || succeeding {
        // Stop every pod still running; the terminal condition waits until none is left.
        out.delete = active.iter().map(|p| pod_ref(p)).collect();
    } else if suspended {
        out.delete = active.iter().map(|p| pod_ref(p)).collect();
        if set_condition(
            &mut conds,
            "Suspended",
            true,
            "JobSuspended",
            "Job suspended",
            now,
        ) {
            out.events.push(Event {
                type_: "Normal",
                reason: "Suspended",
                message: "Job suspended".into(),
            });
        }
    } else {
        if set_condition(&mut conds, "Suspended", false, "JobResumed", "Job resumed", now) {
            status.start_time = Some(Time(now));
            out.events.push(Event {
                type_: "Normal",
                reason: "Resumed",
                message: "Job resumed".into(),
            });
        }
        if status.start_time.is_none() {
            status.start_time = Some(Time(now));
        }
        let blocked = if replace_terminating { 0 } else { terminating };
        if indexed {
            let c = completions.unwrap_or(0);
            let mut active_ix: BTreeMap<i32, Vec<&Pod>> = BTreeMap::new();
            for p in &active {
                match completion_index(p)
                    .filter(|i| *i < c && !completed.contains(i) && !failed_indexes.contains(i))
                {
                    Some(i) => active_ix.entry(i).or_default().push(p),
                    // An index out of range, already completed, or unreadable: delete.
                    None => out.delete.push(pod_ref(p)),
                }
            }
            for ps in active_ix.values() {
                // Duplicates of one index: keep the oldest.
                let mut ps = ps.clone();
                ps.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
                out.delete.extend(ps.iter().skip(1).map(|p| pod_ref(p)));
            }
            let running = i32::try_from(active_ix.len()).unwrap_or(i32::MAX);
            let finished = i32::try_from(completed.len() + failed_indexes.len()).unwrap_or(i32::MAX);
            let want = parallelism.min(c - finished) - blocked;
            if running > want.max(0) {
                // Too many (parallelism lowered): delete the highest indexes.
                let excess = usize::try_from(running - want.max(0)).unwrap_or(0);
                let mut ixs: Vec<i32> = active_ix.keys().copied().collect();
                ixs.reverse();
                for i in ixs.into_iter().take(excess) {
                    out.delete.push(pod_ref(active_ix[&i][0]));
                }
            }
            let terminating_ix: BTreeSet<i32> = if replace_terminating {
                BTreeSet::new()
            } else {
                o.pods
                    .iter()
                    .filter(|p| {
                        p.metadata.deletion_timestamp.is_some() && !matches!(phase(p), "Succeeded" | "Failed")
                    })
                    .filter_map(|p| completion_index(p))
                    .collect()
            };
            let mut room = want - running;
            for i in 0..c {
                if room <= 0 {
                    break;
                }
                if !completed.contains(&i)
                    && !failed_indexes.contains(&i)
                    && !active_ix.contains_key(&i)
                    && !terminating_ix.contains(&i)
                {
                    want_create.push(Some(i));
                    room -= 1;
                }
            }
        } else {
            let running = i32::try_from(active.len()).unwrap_or(i32::MAX);
            let want = match completions {
                Some(c) => parallelism.min(c - new_succeeded),
                // A work queue: once one pod succeeded no new pod starts.
                None if new_succeeded > 0 => running.min(parallelism),
                None => parallelism,
            } - blocked;
            let want = want.max(0);
            if running > want {
                // Upstream deletes the pods ranked first by `ActivePodsWithRanks`: not yet running
                // before running, then not ready before ready, then the newest.
                let mut ps = active.clone();
                ps.sort_by_key(|p| {
                    (
                        phase(p) == "Running",
                        is_ready(p),
                        std::cmp::Reverse(p.metadata.creation_timestamp.as_ref().map(|t| t.0)),
                    )
                });
                let excess = usize::try_from(running - want).unwrap_or(0);
                out.delete.extend(ps.iter().take(excess).map(|p| pod_ref(p)));
            }
            for _ in running..want {
                want_create.push(None);
            }
        }
    }
    if !want_create.is_empty() && per_index.is_some() {
        // Each index backs off on its own failures, and its new pod carries their count.
        for i in want_create.into_iter().flatten() {
            let of_index: Vec<&Pod> = o
                .pods
                .iter()
                .copied()
                .filter(|p| completion_index(p) == Some(i))
                .collect();
            let failures = of_index
                .iter()
                .filter(|p| phase(p) == "Failed")
                .map(|p| index_failure_count(p) + 1)
                .max()
                .unwrap_or(0);
            match backoff_remaining(&of_index, now) {
                Some(left) => {
                    out.requeue_after = Some(out.requeue_after.map_or(left, |r| r.min(left)));
                }
                None => out
                    .create
                    .push(new_pod_with_failures(job, Some(i), Some(failures))),
            }
        }
    } else if !want_create.is_empty() {
        match backoff_remaining(&o.pods, now) {
            Some(left) => {
                out.requeue_after = Some(out.requeue_after.map_or(left, |r| r.min(left)));
            }
            None => out.create = want_create.into_iter().map(|i| new_pod(job, i)).collect(),
        }
    }
    if !o.settled {
        out.create.clear();
        out.delete.clear();
    }

    // The terminal condition once nothing runs and every finished pod is counted (upstream's delayed
    // terminal condition, on by default from 1.31).
    let all_counted =
        unc_succeeded.is_empty() && unc_failed.is_empty() && o.pods.iter().all(|p| !has_finalizer(p));
    let nothing_runs = active.is_empty() && terminating == 0;
    if failing && nothing_runs && all_counted {
        let (reason, msg) = conds
            .iter()
            .find(|c| c.type_ == "FailureTarget")
            .map(|c| {
                (
                    c.reason.clone().unwrap_or_default(),
                    c.message.clone().unwrap_or_default(),
                )
            })
            .unwrap_or_default();
        if set_condition(&mut conds, "Failed", true, &reason, &msg, now) {
            out.events.push(Event {
                type_: "Warning",
                reason: match reason.as_str() {
                    "BackoffLimitExceeded" => "BackoffLimitExceeded",
                    "DeadlineExceeded" => "DeadlineExceeded",
                    "PodFailurePolicy" => "PodFailurePolicy",
                    "FailedIndexes" => "FailedIndexes",
                    "MaxFailedIndexesExceeded" => "MaxFailedIndexesExceeded",
                    _ => "Failed",
                },
                message: msg,
            });
        }
    } else if succeeding && nothing_runs && all_counted && {
        // The Complete condition repeats SuccessCriteriaMet's reason (upstream).
        let (reason, msg) = conds
            .iter()
            .find(|c| c.type_ == "SuccessCriteriaMet")
            .map(|c| {
                (
                    c.reason.clone().unwrap_or_default(),
                    c.message.clone().unwrap_or_default(),
                )
            })
            .unwrap_or_else(|| (success_reason.to_string(), success_message.clone()));
        set_condition(&mut conds, "Complete", true, &reason, &msg, now)
    } {
        status.completion_time = Some(Time(now));
        out.events.push(Event {
            type_: "Normal",
            reason: "Completed",
            message: "Job completed".into(),
        });
    }

    let active_n = (active.len() + out.create.len()).saturating_sub(out.delete.len());
    status.active = (active_n > 0).then(|| i32::try_from(active_n).unwrap_or(i32::MAX));
    status.ready = Some(i32::try_from(active.iter().filter(|p| is_ready(p)).count()).unwrap_or(0));
    status.terminating = Some(terminating);
    status.succeeded = (succeeded > 0).then_some(succeeded);
    status.failed = (failed > 0).then_some(failed);
    status.completed_indexes = indexed
        .then(|| format_indexes(&completed))
        .filter(|s| !s.is_empty());
    // Upstream writes `failedIndexes` (possibly empty) for every Job with `backoffLimitPerIndex`.
    status.failed_indexes = per_index.map(|_| format_indexes(&failed_indexes));
    status.uncounted_terminated_pods = Some(UncountedTerminatedPods {
        succeeded: (!unc_succeeded.is_empty()).then(|| unc_succeeded.into_iter().collect()),
        failed: (!unc_failed.is_empty()).then(|| unc_failed.into_iter().collect()),
    });
    status.conditions = (!conds.is_empty()).then_some(conds);
    if !same_status(&status, &old) {
        out.status = Some(status);
    }
    out
}

/// Equality of two statuses, an empty `uncountedTerminatedPods` being the same as none.
fn same_status(a: &JobStatus, b: &JobStatus) -> bool {
    let norm = |s: &JobStatus| {
        let mut s = s.clone();
        if s.uncounted_terminated_pods.as_ref().is_some_and(|u| {
            u.succeeded.as_ref().is_none_or(Vec::is_empty) && u.failed.as_ref().is_none_or(Vec::is_empty)
        }) {
            s.uncounted_terminated_pods = None;
        }
        if s.terminating == Some(0) {
            s.terminating = None;
        }
        if s.ready == Some(0) {
            s.ready = None;
        }
        s
    };
    norm(a) == norm(b)
}
