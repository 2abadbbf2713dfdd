//! The Deployment decision (upstream `pkg/controller/deployment`: `syncDeployment` in
//! `deployment_controller.go`, `sync.go`, `rolling.go`, `recreate.go`, `progress.go` and
//! `util/deployment_util.go`): a pure function from the Deployment, the ReplicaSets and pods of its
//! namespace and the time to the writes of one sync.
//!
//! Upstream interleaves its decisions with writes (create the new ReplicaSet, then scale it, then compute
//! the status from what the writes returned). The plan runs the same algorithm over an in-memory copy of
//! the ReplicaSets, applying each write to the copy as it records it, so later decisions and the status see
//! what upstream's would; the executor then carries the writes out in order and stops at the first that
//! fails (every ReplicaSet write carries the resourceVersion the plan saw, so a stale cache can only cause a
//! conflict and a re-plan, never a wrong scale).

use crate::workload::controller_ref::{self, Claim};
use crate::workload::intstr;
use crate::workload::revision::{POD_TEMPLATE_HASH_LABEL, compute_hash};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference, Time};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// `deployment.kubernetes.io/revision`.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// `deployment.kubernetes.io/revision-history`: earlier revisions of a ReplicaSet rolled back to.
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// `deployment.kubernetes.io/desired-replicas`.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// `deployment.kubernetes.io/max-replicas`.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
const ROLLBACK_TO: &str = "deprecated.deployment.rollback.to";
/// Upstream `maxRevHistoryLengthInChars`.
const MAX_REV_HISTORY_CHARS: usize = 2000;
/// `progressDeadlineSeconds` meaning "no deadline" (upstream's `math.MaxInt32`).
const NO_DEADLINE: i32 = i32::MAX;

/// Condition reasons (upstream `deploymentutil`).
pub mod reason {
    /// A new ReplicaSet was created.
    pub const NEW_RS: &str = "NewReplicaSetCreated";
    /// An existing ReplicaSet is the new one.
    pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
    /// The new ReplicaSet is available: the rollout is complete.
    pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
    /// Progress was made.
    pub const RS_UPDATED: &str = "ReplicaSetUpdated";
    /// No progress within `progressDeadlineSeconds`.
    pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
    /// `spec.paused`.
    pub const PAUSED: &str = "DeploymentPaused";
    /// Resumed.
    pub const RESUMED: &str = "DeploymentResumed";
    /// The new ReplicaSet could not be created.
    pub const FAILED_RS_CREATE: &str = "ReplicaSetCreateError";
    /// `Available=True`.
    pub const MIN_AVAILABLE: &str = "MinimumReplicasAvailable";
    /// `Available=False`.
    pub const MIN_UNAVAILABLE: &str = "MinimumReplicasUnavailable";
}

/// What one sync needs.
pub struct Observed<'a> {
    /// The Deployment.
    pub deployment: &'a Deployment,
    /// The ReplicaSets of its namespace (the plan claims its own).
    pub replica_sets: &'a [&'a ReplicaSet],
    /// The pods of its namespace (Recreate waits for old pods to be gone).
    pub pods: &'a [&'a Pod],
    /// The current time.
    pub now: jiff::Timestamp,
}

/// One write of a sync, in order.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Step {
    /// Set a ReplicaSet's ownerReferences (adoption or release), uid as precondition.
    SetOwners {
        /// Name.
        name: String,
        /// Uid.
        uid: String,
        /// The whole new list.
        owner_references: Vec<OwnerReference>,
        /// Adoption (which needs the live re-check of the Deployment first) or release.
        adopt: bool,
    },
    /// Create the new ReplicaSet.
    CreateReplicaSet(ReplicaSet),
    /// Update a ReplicaSet's replicas, `minReadySeconds` and annotations (upstream's `Update`), with its
    /// resourceVersion as precondition.
    UpdateReplicaSet {
        /// Name.
        name: String,
        /// The resourceVersion the plan saw.
        resource_version: String,
        /// `spec.replicas`.
        replicas: i32,
        /// `spec.minReadySeconds`.
        min_ready_seconds: i32,
        /// Every annotation it should carry.
        annotations: BTreeMap<String, String>,
    },
    /// Delete an old ReplicaSet beyond `revisionHistoryLimit`.
    DeleteReplicaSet {
        /// Name.
        name: String,
        /// Uid.
        uid: String,
    },
    /// Set the Deployment's `deployment.kubernetes.io/revision` annotation.
    SetRevision(String),
    /// Write the Deployment's status (resourceVersion as precondition).
    UpdateStatus(DeploymentStatus),
    /// Record an Event on the Deployment.
    Event {
        /// `Normal` or `Warning`.
        type_: &'static str,
        /// Reason.
        reason: &'static str,
        /// Message, upstream's wording.
        message: String,
    },
}

/// The writes and when to look again without an event (progress deadline, minReadySeconds).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    /// Writes in order.
    pub steps: Vec<Step>,
    /// Re-plan after this long even without events.
    pub requeue_after: Option<Duration>,
}

// ---- small accessors ----

fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn set_rs_replicas(rs: &mut ReplicaSet, n: i32) {
    rs.spec.get_or_insert_with(Default::default).replicas = Some(n);
}

fn rs_status(rs: &ReplicaSet) -> (i32, i32, i32) {
    let st = rs.status.clone().unwrap_or_default();
    (
        st.replicas,
        st.ready_replicas.unwrap_or(0),
        st.available_replicas.unwrap_or(0),
    )
}

fn rs_name(rs: &ReplicaSet) -> String {
    rs.metadata.name.clone().unwrap_or_default()
}

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

fn revision_of(rs: &ReplicaSet) -> i64 {
    annotation(&rs.metadata, REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn d_replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn is_rolling(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate"
}

fn fenceposts(d: &Deployment) -> (i32, i32) {
    let ru = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    intstr::resolve_fenceposts(
        ru.and_then(|r| r.max_surge.as_ref()),
        ru.and_then(|r| r.max_unavailable.as_ref()),
        d_replicas(d),
    )
    .unwrap_or((0, 1))
}

/// Upstream `deploymentutil.MaxSurge`: 0 unless RollingUpdate.
pub fn max_surge(d: &Deployment) -> i32 {
    if !is_rolling(d) {
        return 0;
    }
    fenceposts(d).0
}

/// Upstream `deploymentutil.MaxUnavailable`: 0 unless RollingUpdate with replicas, never above replicas.
pub fn max_unavailable(d: &Deployment) -> i32 {
    if !is_rolling(d) || d_replicas(d) == 0 {
        return 0;
    }
    fenceposts(d).1.min(d_replicas(d))
}

fn has_progress_deadline(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .is_some_and(|p| p != NO_DEADLINE)
}

fn created(rs: &ReplicaSet) -> (Option<jiff::Timestamp>, String) {
    (rs.metadata.creation_timestamp.as_ref().map(|t| t.0), rs_name(rs))
}

/// Remove nulls and empty maps/lists, so "unset" and "empty" compare equal (upstream's semantic
/// equality).
fn normalized(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (k, normalized(v)))
                .filter(|(_, v)| {
                    !(v.is_null()
                        || v.as_object().is_some_and(serde_json::Map::is_empty)
                        || v.as_array().is_some_and(Vec::is_empty))
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(normalized).collect()),
        other => other,
    }
}

fn template_without_hash(t: &PodTemplateSpec) -> Value {
    let mut t = t.clone();
    if let Some(l) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        l.remove(POD_TEMPLATE_HASH_LABEL);
    }
    normalized(serde_json::to_value(&t).unwrap_or(Value::Null))
}

/// Upstream `EqualIgnoreHash`: the templates are equal once the `pod-template-hash` label is removed.
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    template_without_hash(a) == template_without_hash(b)
}

fn rs_template(rs: &ReplicaSet) -> PodTemplateSpec {
    rs.spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default()
}

fn d_template(d: &Deployment) -> PodTemplateSpec {
    d.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default()
}

fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: jiff::Timestamp,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

fn get_condition<'a>(st: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    st.conditions.as_ref()?.iter().find(|c| c.type_ == type_)
}

/// Upstream `SetDeploymentCondition`: no change when status and reason are the same; the transition time
/// is kept when only the reason changes.
fn set_condition(st: &mut DeploymentStatus, mut c: DeploymentCondition) {
    if let Some(cur) = get_condition(st, &c.type_) {
        if cur.status == c.status && cur.reason == c.reason {
            return;
        }
        if cur.status == c.status {
            c.last_transition_time = cur.last_transition_time.clone();
        }
    }
    remove_condition(st, &c.type_);
    st.conditions.get_or_insert_with(Vec::new).push(c);
}

fn remove_condition(st: &mut DeploymentStatus, type_: &str) {
    if let Some(cs) = st.conditions.as_mut() {
        cs.retain(|c| c.type_ != type_);
    }
}

/// The working copy one sync runs over.
struct Sim<'a> {
    o: &'a Observed<'a>,
    d: Deployment,
    /// The Deployment's ReplicaSets (after claims), each with the resourceVersion last seen.
    rss: Vec<ReplicaSet>,
    steps: Vec<Step>,
    requeue: Option<Duration>,
    /// A sync ended early (hash collision): no more writes.
    stopped: bool,
}

impl Sim<'_> {
    fn event(&mut self, type_: &'static str, reason: &'static str, message: String) {
        self.steps.push(Step::Event {
            type_,
            reason,
            message,
        });
    }

    fn requeue(&mut self, d: Duration) {
        self.requeue = Some(self.requeue.map_or(d, |r| r.min(d)));
    }

    /// Indices of the ReplicaSets by creation time (then name).
    fn by_creation(&self, idx: &[usize]) -> Vec<usize> {
        let mut v = idx.to_vec();
        v.sort_by(|a, b| created(&self.rss[*a]).cmp(&created(&self.rss[*b])));
        v
    }

    /// Upstream `FindNewReplicaSet`: the oldest ReplicaSet whose template equals the Deployment's.
    fn find_new(&self) -> Option<usize> {
        let all: Vec<usize> = (0..self.rss.len()).collect();
        let t = d_template(&self.d);
        self.by_creation(&all)
            .into_iter()
            .find(|i| equal_ignore_hash(&rs_template(&self.rss[*i]), &t))
    }

    fn olds(&self, new: Option<usize>) -> Vec<usize> {
        (0..self.rss.len()).filter(|i| Some(*i) != new).collect()
    }

    fn active(&self, idx: &[usize]) -> Vec<usize> {
        idx.iter()
            .copied()
            .filter(|i| rs_replicas(&self.rss[*i]) > 0)
            .collect()
    }

    fn sum(&self, idx: &[usize], f: impl Fn(&ReplicaSet) -> i32) -> i32 {
        idx.iter().map(|i| f(&self.rss[*i])).sum()
    }

    /// Record an update of ReplicaSet `i` (its working copy already changed).
    fn write_rs(&mut self, i: usize) {
        let rs = &self.rss[i];
        self.steps.push(Step::UpdateReplicaSet {
            name: rs_name(rs),
            resource_version: rs.metadata.resource_version.clone().unwrap_or_default(),
            replicas: rs_replicas(rs),
            min_ready_seconds: rs.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0),
            annotations: rs.metadata.annotations.clone().unwrap_or_default(),
        });
    }

    /// Upstream `SetReplicasAnnotations`: whether they changed.
    fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
        let a = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
        let mut changed = false;
        for (k, v) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
            if a.get(k).map(String::as_str) != Some(v.to_string().as_str()) {
                a.insert(k.into(), v.to_string());
                changed = true;
            }
        }
        changed
    }

    /// Upstream `scaleReplicaSetAndRecordEvent` / `scaleReplicaSet`: whether it was scaled.
    fn scale(&mut self, i: usize, to: i32) -> bool {
        let from = rs_replicas(&self.rss[i]);
        if from == to {
            return false;
        }
        self.scale_always(i, to)
    }

    fn scale_always(&mut self, i: usize, to: i32) -> bool {
        let from = rs_replicas(&self.rss[i]);
        let (desired, max) = (d_replicas(&self.d), d_replicas(&self.d) + max_surge(&self.d));
        let mut copy = self.rss[i].clone();
        let annotations = Self::set_replicas_annotations(&mut copy, desired, max);
        if from == to && !annotations {
            return false;
        }
        set_rs_replicas(&mut copy, to);
        self.rss[i] = copy;
        self.write_rs(i);
        if from != to {
            let op = if from < to { "up" } else { "down" };
            let name = rs_name(&self.rss[i]);
            self.event(
                "Normal",
                "ScalingReplicaSet",
                format!("Scaled {op} replica set {name} from {from} to {to}"),
            );
        }
        from != to
    }

    /// Upstream `SetNewReplicaSetAnnotations`; whether anything changed.
    fn set_new_rs_annotations(d: &Deployment, rs: &mut ReplicaSet, new_revision: i64, exists: bool) -> bool {
        let mut changed = false;
        let a = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
        for (k, v) in d.metadata.annotations.iter().flatten() {
            let skip = matches!(
                k.as_str(),
                LAST_APPLIED | REVISION | REVISION_HISTORY | DESIRED_REPLICAS | MAX_REPLICAS | ROLLBACK_TO
            );
            if !skip && a.get(k) != Some(v) {
                a.insert(k.clone(), v.clone());
                changed = true;
            }
        }
        let old = a.get(REVISION).cloned();
        let old_int: i64 = match old.as_deref() {
            None | Some("") => 0,
            Some(s) => match s.parse() {
                Ok(n) => n,
                Err(_) => return false,
            },
        };
        if old_int < new_revision {
            a.insert(REVISION.into(), new_revision.to_string());
            changed = true;
            if let Some(old) = old.filter(|o| !o.is_empty()) {
                let history = a.get(REVISION_HISTORY).cloned().unwrap_or_default();
                if history.is_empty() {
                    a.insert(REVISION_HISTORY.into(), old);
                } else {
                    let mut revs: Vec<String> = history.split(',').map(str::to_string).collect();
                    let mut total = history.len() + old.len() + 1;
                    let mut start = 0;
                    while total > MAX_REV_HISTORY_CHARS && start < revs.len() {
                        total -= revs[start].len() + 1;
                        start += 1;
                    }
                    if total <= MAX_REV_HISTORY_CHARS {
                        revs = revs.split_off(start);
                        revs.push(old);
                        a.insert(REVISION_HISTORY.into(), revs.join(","));
                    }
                }
            }
        }
        if !exists && Self::set_replicas_annotations(rs, d_replicas(d), d_replicas(d) + max_surge(d)) {
            changed = true;
        }
        changed
    }

    /// Upstream `SetDeploymentRevision`.
    fn set_deployment_revision(&mut self, revision: &str) {
        if annotation(&self.d.metadata, REVISION) != Some(revision) {
            self.d
                .metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(REVISION.into(), revision.into());
            self.steps.push(Step::SetRevision(revision.into()));
        }
    }

    /// Upstream `getAllReplicaSetsAndSyncRevision` / `getNewReplicaSet`: the new ReplicaSet (created when
    /// `create` and missing) and the old ones.
    fn new_and_old(&mut self, create: bool) -> (Option<usize>, Vec<usize>) {
        let existing = self.find_new();
        let olds = self.olds(existing);
        let max_old = olds.iter().map(|i| revision_of(&self.rss[*i])).max().unwrap_or(0);
        let new_revision = max_old + 1;
        if let Some(i) = existing {
            let mut copy = self.rss[i].clone();
            let annotations = Self::set_new_rs_annotations(&self.d, &mut copy, new_revision, true);
            let min_ready = self
                .d
                .spec
                .as_ref()
                .and_then(|s| s.min_ready_seconds)
                .unwrap_or(0);
            let min_ready_changed =
                copy.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0) != min_ready;
            if annotations || min_ready_changed {
                copy.spec.get_or_insert_with(Default::default).min_ready_seconds = Some(min_ready);
                self.rss[i] = copy;
                self.write_rs(i);
                // Upstream returns here; the Deployment's revision follows on the next sync.
                return (Some(i), olds);
            }
            let rev = annotation(&self.rss[i].metadata, REVISION)
                .unwrap_or("")
                .to_string();
            self.set_deployment_revision(&rev);
            let mut st = self.d.status.clone().unwrap_or_default();
            if has_progress_deadline(&self.d) && get_condition(&st, "Progressing").is_none() {
                let name = rs_name(&self.rss[i]);
                set_condition(
                    &mut st,
                    new_condition(
                        "Progressing",
                        "True",
                        reason::FOUND_NEW_RS,
                        format!("Found new replica set \"{name}\""),
                        self.o.now,
                    ),
                );
                self.d.status = Some(st.clone());
                self.steps.push(Step::UpdateStatus(st));
            }
            return (Some(i), olds);
        }
        if !create {
            return (None, olds);
        }
        // A new ReplicaSet named `<deployment>-<pod-template-hash>`.
        let collision = self.d.status.as_ref().and_then(|s| s.collision_count);
        let template = d_template(&self.d);
        let hash = compute_hash(&template, collision);
        let mut new_template = template.clone();
        new_template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(POD_TEMPLATE_HASH_LABEL.into(), hash.clone());
        let mut selector: LabelSelector = self
            .d
            .spec
            .as_ref()
            .map(|s| s.selector.clone())
            .unwrap_or_default();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(POD_TEMPLATE_HASH_LABEL.into(), hash.clone());
        let name = format!("{}-{hash}", self.d.metadata.name.as_deref().unwrap_or(""));
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: self.d.metadata.namespace.clone(),
                owner_references: Some(vec![controller_ref::new_controller_ref(
                    &self.d.metadata,
                    "apps/v1",
                    "Deployment",
                )]),
                labels: new_template.metadata.as_ref().and_then(|m| m.labels.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: self.d.spec.as_ref().and_then(|s| s.min_ready_seconds),
                selector,
                template: Some(new_template),
            }),
            status: None,
        };
        // A ReplicaSet of that name already in the namespace that is not this template is a hash collision:
        // count it in the status and try again with another name on the next sync.
        if let Some(taken) = self
            .o
            .replica_sets
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(name.as_str()))
        {
            let ours = controller_ref::is_controlled_by(
                &taken.metadata,
                self.d.metadata.uid.as_deref().unwrap_or(""),
            );
            if !(ours && equal_ignore_hash(&rs_template(taken), &template)) {
                let mut st = self.d.status.clone().unwrap_or_default();
                st.collision_count = Some(st.collision_count.unwrap_or(0) + 1);
                self.d.status = Some(st.clone());
                self.steps.push(Step::UpdateStatus(st));
                self.stopped = true;
                self.requeue(Duration::from_millis(100));
                return (None, olds);
            }
        }
        self.rss.push(rs.clone());
        let i = self.rss.len() - 1;
        let all: Vec<usize> = (0..self.rss.len()).collect();
        let count = self.new_rs_new_replicas(&all, i);
        set_rs_replicas(&mut rs, count);
        Self::set_new_rs_annotations(&self.d, &mut rs, new_revision, false);
        self.rss[i] = rs.clone();
        self.steps.push(Step::CreateReplicaSet(rs));
        if count > 0 {
            self.event(
                "Normal",
                "ScalingReplicaSet",
                format!("Scaled up replica set {name} from 0 to {count}"),
            );
        }
        self.set_deployment_revision(&new_revision.to_string());
        if has_progress_deadline(&self.d) {
            let mut st = self.d.status.clone().unwrap_or_default();
            set_condition(
                &mut st,
                new_condition(
                    "Progressing",
                    "True",
                    reason::NEW_RS,
                    format!("Created new replica set \"{name}\""),
                    self.o.now,
                ),
            );
            self.d.status = Some(st.clone());
            self.steps.push(Step::UpdateStatus(st));
        }
        (Some(i), olds)
    }

    /// Upstream `NewRSNewReplicas`.
    fn new_rs_new_replicas(&self, all: &[usize], new: usize) -> i32 {
        let want = d_replicas(&self.d);
        if !is_rolling(&self.d) {
            return want;
        }
        let current = self.sum(all, rs_replicas);
        let max_total = want + max_surge(&self.d);
        let have = rs_replicas(&self.rss[new]);
        if current >= max_total {
            return have;
        }
        have + (max_total - current).min(want - have)
    }

    /// Upstream `isScalingEvent`.
    fn is_scaling_event(&mut self) -> bool {
        let (new, olds) = self.new_and_old(false);
        let all: Vec<usize> = olds.iter().copied().chain(new).collect();
        let want = d_replicas(&self.d);
        self.active(&all).into_iter().any(|i| {
            annotation(&self.rss[i].metadata, DESIRED_REPLICAS)
                .and_then(|v| v.parse::<i32>().ok())
                .is_some_and(|d| d != want)
        })
    }

    /// Upstream `sync` (a scaling event or a paused Deployment).
    fn sync(&mut self) {
        let (new, olds) = self.new_and_old(false);
        if self.stopped {
            return;
        }
        self.scale_deployment(new, &olds);
        let paused = self.d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
        if paused {
            self.cleanup(&olds);
        }
        let all: Vec<usize> = olds.iter().copied().chain(new).collect();
        let st = self.calculate_status(&all, new);
        self.write_status(st);
    }

    /// Upstream `FindActiveOrLatest`.
    fn active_or_latest(&self, new: Option<usize>, olds: &[usize]) -> Option<usize> {
        if new.is_none() && olds.is_empty() {
            return None;
        }
        let mut olds_newest_first = self.by_creation(olds);
        olds_newest_first.reverse();
        let all: Vec<usize> = olds_newest_first.iter().copied().chain(new).collect();
        let active = self.active(&all);
        match active.len() {
            0 => new.or_else(|| olds_newest_first.first().copied()),
            1 => Some(active[0]),
            _ => None,
        }
    }

    /// Upstream `IsSaturated`.
    fn is_saturated(&self, i: Option<usize>) -> bool {
        let Some(i) = i else { return false };
        let rs = &self.rss[i];
        let want = d_replicas(&self.d);
        annotation(&rs.metadata, DESIRED_REPLICAS)
            .and_then(|v| v.parse::<i32>().ok())
            .is_some_and(|d| d == want)
            && rs_replicas(rs) == want
            && rs_status(rs).2 == want
    }

    /// Upstream `scale`: one active set takes the whole count; a saturated new set scales the old ones to
    /// zero; otherwise (RollingUpdate) the difference is spread proportionally over the active sets.
    fn scale_deployment(&mut self, new: Option<usize>, olds: &[usize]) {
        let want = d_replicas(&self.d);
        if let Some(i) = self.active_or_latest(new, olds) {
            // Upstream returns without a write when the size is already right; its desired-replicas
            // annotation may still name the old size (a scale back to the count an old set was left with
            // mid-rollout), which would make every later sync a "scaling event" and stall the rollout.
            // Berth refreshes the annotations then (a write upstream skips).
            self.scale_always(i, want);
            return;
        }
        if self.is_saturated(new) {
            for i in self.active(olds) {
                self.scale(i, 0);
            }
            return;
        }
        if !is_rolling(&self.d) {
            return;
        }
        let all: Vec<usize> = olds.iter().copied().chain(new).collect();
        let mut active = self.active(&all);
        let total = self.sum(&active, rs_replicas);
        let allowed = if want > 0 { want + max_surge(&self.d) } else { 0 };
        let to_add = allowed - total;
        // Larger first; equal sizes: newer first when scaling up, older first when scaling down.
        active.sort_by(|a, b| {
            let (ra, rb) = (rs_replicas(&self.rss[*a]), rs_replicas(&self.rss[*b]));
            rb.cmp(&ra).then_with(|| {
                let (ca, cb) = (created(&self.rss[*a]), created(&self.rss[*b]));
                if to_add > 0 { cb.cmp(&ca) } else { ca.cmp(&cb) }
            })
        });
        let mut added = 0;
        let mut sizes: Vec<i32> = Vec::new();
        for i in &active {
            let r = rs_replicas(&self.rss[*i]);
            if to_add != 0 {
                let p = self.proportion(*i, to_add, added);
                sizes.push(r + p);
                added += p;
            } else {
                sizes.push(r);
            }
        }
        for (k, i) in active.iter().enumerate() {
            if k == 0 && to_add != 0 {
                sizes[0] = (sizes[0] + to_add - added).max(0);
            }
            self.scale_always(*i, sizes[k]);
        }
    }

    /// Upstream `GetProportion` / `getReplicaSetFraction`.
    fn proportion(&self, i: usize, to_add: i32, added: i32) -> i32 {
        let rs = &self.rss[i];
        let r = rs_replicas(rs);
        if r == 0 || to_add == 0 || to_add == added {
            return 0;
        }
        let want = d_replicas(&self.d);
        let fraction = if want == 0 {
            -r
        } else {
            let max = want + max_surge(&self.d);
            let before = annotation(&rs.metadata, MAX_REPLICAS)
                .and_then(|v| v.parse::<i32>().ok())
                .unwrap_or_else(|| self.d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0));
            if before == 0 {
                0
            } else {
                let size = f64::from(r) * f64::from(max) / f64::from(before);
                let rounded = if size < 0.0 {
                    (size - 0.5) as i32
                } else {
                    (size + 0.5) as i32
                };
                rounded - r
            }
        };
        let allowed = to_add - added;
        if to_add > 0 {
            fraction.min(allowed)
        } else {
            fraction.max(allowed)
        }
    }

    /// Upstream `cleanupDeployment`: old ReplicaSets beyond `revisionHistoryLimit`, oldest revision
    /// first, only those scaled to zero with no pods and an observed spec.
    fn cleanup(&mut self, olds: &[usize]) {
        let Some(limit) = self.d.spec.as_ref().and_then(|s| s.revision_history_limit) else {
            return;
        };
        let mut cleanable: Vec<usize> = olds
            .iter()
            .copied()
            .filter(|i| self.rss[*i].metadata.deletion_timestamp.is_none())
            .collect();
        let diff = cleanable.len() as i64 - i64::from(limit);
        if diff <= 0 {
            return;
        }
        cleanable.sort_by(|a, b| {
            revision_of(&self.rss[*a])
                .cmp(&revision_of(&self.rss[*b]))
                .then_with(|| created(&self.rss[*a]).cmp(&created(&self.rss[*b])))
        });
        for i in cleanable.into_iter().take(diff as usize) {
            let rs = &self.rss[i];
            let observed = rs
                .status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .unwrap_or(0);
            if rs_status(rs).0 != 0 || rs_replicas(rs) != 0 || rs.metadata.generation.unwrap_or(0) > observed
            {
                continue;
            }
            self.steps.push(Step::DeleteReplicaSet {
                name: rs_name(rs),
                uid: rs.metadata.uid.clone().unwrap_or_default(),
            });
        }
    }

    /// Upstream `calculateStatus`.
    fn calculate_status(&self, all: &[usize], new: Option<usize>) -> DeploymentStatus {
        let available = self.sum(all, |r| rs_status(r).2);
        let total = self.sum(all, rs_replicas);
        let old = self.d.status.clone().unwrap_or_default();
        let mut st = DeploymentStatus {
            observed_generation: self.d.metadata.generation,
            replicas: Some(self.sum(all, |r| rs_status(r).0)),
            updated_replicas: Some(new.map_or(0, |i| rs_status(&self.rss[i]).0)),
            ready_replicas: Some(self.sum(all, |r| rs_status(r).1)),
            available_replicas: Some(available),
            unavailable_replicas: Some((total - available).max(0)),
            collision_count: old.collision_count,
            conditions: old.conditions.clone(),
            terminating_replicas: None,
        };
        let want = d_replicas(&self.d);
        let c = if available >= want - max_unavailable(&self.d) {
            new_condition(
                "Available",
                "True",
                reason::MIN_AVAILABLE,
                "Deployment has minimum availability.".into(),
                self.o.now,
            )
        } else {
            new_condition(
                "Available",
                "False",
                reason::MIN_UNAVAILABLE,
                "Deployment does not have minimum availability.".into(),
                self.o.now,
            )
        };
        set_condition(&mut st, c);
        st
    }

    fn write_status(&mut self, st: DeploymentStatus) {
        if normalized_status(self.d.status.as_ref()) != normalized_status(Some(&st)) {
            self.d.status = Some(st.clone());
            self.steps.push(Step::UpdateStatus(st));
        }
    }

    /// Upstream `syncRolloutStatus`: the status plus the Progressing and ReplicaFailure conditions.
    fn sync_rollout_status(&mut self, all: &[usize], new: Option<usize>) {
        let d = &self.d;
        let now = self.o.now;
        let mut st = self.calculate_status(all, new);
        if !has_progress_deadline(d) {
            remove_condition(&mut st, "Progressing");
        }
        let old = d.status.clone().unwrap_or_default();
        let current = get_condition(&old, "Progressing").cloned();
        let complete_already = st.replicas == st.updated_replicas
            && current
                .as_ref()
                .is_some_and(|c| c.reason.as_deref() == Some(reason::NEW_RS_AVAILABLE));
        let name = d.metadata.name.clone().unwrap_or_default();
        let subject = match new {
            Some(i) => format!("ReplicaSet \"{}\"", rs_name(&self.rss[i])),
            None => format!("Deployment \"{name}\""),
        };
        if has_progress_deadline(d) && !complete_already {
            if deployment_complete(d, &st) {
                set_condition(
                    &mut st,
                    new_condition(
                        "Progressing",
                        "True",
                        reason::NEW_RS_AVAILABLE,
                        format!("{subject} has successfully progressed."),
                        now,
                    ),
                );
            } else if deployment_progressing(&old, &st) {
                let mut c = new_condition(
                    "Progressing",
                    "True",
                    reason::RS_UPDATED,
                    format!("{subject} is progressing."),
                    now,
                );
                if let Some(cur) = &current {
                    if cur.status == "True" {
                        c.last_transition_time = cur.last_transition_time.clone();
                    }
                    remove_condition(&mut st, "Progressing");
                }
                set_condition(&mut st, c);
            } else if let Some(left) = time_left(d, &st, now) {
                if left.is_zero() {
                    set_condition(
                        &mut st,
                        new_condition(
                            "Progressing",
                            "False",
                            reason::TIMED_OUT,
                            format!("{subject} has timed out progressing."),
                            now,
                        ),
                    );
                } else {
                    // Upstream `requeueStuckDeployment`.
                    self.requeue(left);
                }
            }
        }
        // The new ReplicaSet's ReplicaFailure first, else any old one's (upstream `getReplicaFailures`).
        let failure = new.into_iter().chain(all.iter().copied()).find_map(|i| {
            self.rss[i]
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == "ReplicaFailure"))
                .cloned()
        });
        match failure {
            Some(c) => set_condition(
                &mut st,
                DeploymentCondition {
                    type_: "ReplicaFailure".into(),
                    status: c.status,
                    reason: c.reason,
                    message: c.message,
                    last_update_time: c.last_transition_time.clone(),
                    last_transition_time: c.last_transition_time,
                },
            ),
            None => remove_condition(&mut st, "ReplicaFailure"),
        }
        self.write_status(st);
    }

    /// Upstream `rolloutRolling`.
    fn rollout_rolling(&mut self) {
        let (new, olds) = self.new_and_old(true);
        if self.stopped {
            return;
        }
        let Some(n) = new else { return };
        let all: Vec<usize> = olds.iter().copied().chain([n]).collect();
        // Scale up, if we can (upstream `reconcileNewReplicaSet`).
        let want = d_replicas(&self.d);
        let have = rs_replicas(&self.rss[n]);
        let scaled_up = if have == want {
            false
        } else if have > want {
            self.scale(n, want)
        } else {
            let to = self.new_rs_new_replicas(&all, n);
            self.scale(n, to)
        };
        if scaled_up {
            self.sync_rollout_status(&all, new);
            return;
        }
        // Scale down, if we can (upstream `reconcileOldReplicaSets`).
        let active_olds = self.active(&olds);
        if self.reconcile_old(&all, &active_olds, n) {
            self.sync_rollout_status(&all, new);
            return;
        }
        if deployment_complete(&self.d, &self.d.status.clone().unwrap_or_default()) {
            self.cleanup(&olds);
        }
        self.sync_rollout_status(&all, new);
    }

    /// Upstream `reconcileOldReplicaSets`, `cleanupUnhealthyReplicas` and
    /// `scaleDownOldReplicaSetsForRollingUpdate`.
    fn reconcile_old(&mut self, all: &[usize], olds: &[usize], new: usize) -> bool {
        if self.sum(olds, rs_replicas) == 0 {
            return false;
        }
        let all_pods = self.sum(all, rs_replicas);
        let min_available = d_replicas(&self.d) - max_unavailable(&self.d);
        let new_unavailable = rs_replicas(&self.rss[new]) - rs_status(&self.rss[new]).2;
        let max_scaled_down = all_pods - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return false;
        }
        // Unhealthy replicas first, oldest set first.
        let mut cleaned = 0;
        for i in self.by_creation(olds) {
            if cleaned >= max_scaled_down {
                break;
            }
            let r = rs_replicas(&self.rss[i]);
            let avail = rs_status(&self.rss[i]).2;
            if r == 0 || r == avail {
                continue;
            }
            let down = (max_scaled_down - cleaned).min(r - avail);
            self.scale(i, r - down);
            cleaned += down;
        }
        // Then healthy ones, down to minAvailable.
        let available = self.sum(all, |r| rs_status(r).2);
        let mut scaled = 0;
        if available > min_available {
            let total = available - min_available;
            for i in self.by_creation(olds) {
                if scaled >= total {
                    break;
                }
                let r = rs_replicas(&self.rss[i]);
                if r == 0 {
                    continue;
                }
                let down = r.min(total - scaled);
                self.scale(i, r - down);
                scaled += down;
            }
        }
        cleaned + scaled > 0
    }

    /// Upstream `rolloutRecreate`.
    fn rollout_recreate(&mut self) {
        let (mut new, mut olds) = self.new_and_old(false);
        if self.stopped {
            return;
        }
        let mut all: Vec<usize> = olds.iter().copied().chain(new).collect();
        let mut scaled_down = false;
        for i in self.active(&olds) {
            scaled_down |= self.scale(i, 0);
        }
        if scaled_down {
            self.sync_rollout_status(&all, new);
            return;
        }
        if self.old_pods_running(new, &olds) {
            self.sync_rollout_status(&all, new);
            return;
        }
        if new.is_none() {
            (new, olds) = self.new_and_old(true);
            if self.stopped {
                return;
            }
            all = olds.iter().copied().chain(new).collect();
        }
        if let Some(n) = new {
            let want = d_replicas(&self.d);
            self.scale(n, want);
        }
        if deployment_complete(&self.d, &self.d.status.clone().unwrap_or_default()) {
            self.cleanup(&olds);
        }
        self.sync_rollout_status(&all, new);
    }

    /// Upstream `oldPodsRunning`: old ReplicaSets report pods, or a non-terminal pod of the Deployment
    /// belongs to a ReplicaSet other than the new one.
    fn old_pods_running(&self, new: Option<usize>, olds: &[usize]) -> bool {
        if self.sum(olds, |r| rs_status(r).0) > 0 {
            return true;
        }
        let new_uid = new.and_then(|i| self.rss[i].metadata.uid.clone());
        let ours: Vec<&str> = self
            .rss
            .iter()
            .filter_map(|r| r.metadata.uid.as_deref())
            .collect();
        let selector = self
            .d
            .spec
            .as_ref()
            .map(|s| s.selector.clone())
            .unwrap_or_default();
        self.o.pods.iter().any(|p| {
            let Some(c) = controller_ref::controller_of(&p.metadata) else {
                return false;
            };
            ours.contains(&c.uid.as_str())
                && Some(&c.uid) != new_uid.as_ref()
                && crate::workload::meta_matches(&selector, &p.metadata)
                && !matches!(crate::workload::pods::phase(p), "Succeeded" | "Failed")
        })
    }

    /// Upstream `checkPausedConditions`.
    fn check_paused_conditions(&mut self) {
        if !has_progress_deadline(&self.d) {
            return;
        }
        let mut st = self.d.status.clone().unwrap_or_default();
        let cond = get_condition(&st, "Progressing");
        if cond.is_some_and(|c| c.reason.as_deref() == Some(reason::TIMED_OUT)) {
            return;
        }
        let paused_cond = cond.is_some_and(|c| c.reason.as_deref() == Some(reason::PAUSED));
        let paused = self.d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
        let c = if paused && !paused_cond {
            new_condition(
                "Progressing",
                "Unknown",
                reason::PAUSED,
                "Deployment is paused".into(),
                self.o.now,
            )
        } else if !paused && paused_cond {
            new_condition(
                "Progressing",
                "Unknown",
                reason::RESUMED,
                "Deployment is resumed".into(),
                self.o.now,
            )
        } else {
            return;
        };
        set_condition(&mut st, c);
        self.d.status = Some(st.clone());
        self.steps.push(Step::UpdateStatus(st));
    }
}

/// Compare statuses as upstream's `reflect.DeepEqual` would, treating unset and empty alike.
fn normalized_status(st: Option<&DeploymentStatus>) -> Value {
    normalized(serde_json::to_value(st.cloned().unwrap_or_default()).unwrap_or(Value::Null))
}

/// Upstream `DeploymentComplete`.
pub fn deployment_complete(d: &Deployment, st: &DeploymentStatus) -> bool {
    let want = d_replicas(d);
    st.updated_replicas.unwrap_or(0) == want
        && st.replicas.unwrap_or(0) == want
        && st.available_replicas.unwrap_or(0) == want
        && st.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

/// Upstream `DeploymentProgressing`.
fn deployment_progressing(old: &DeploymentStatus, new: &DeploymentStatus) -> bool {
    let g = |v: Option<i32>| v.unwrap_or(0);
    let old_old = g(old.replicas) - g(old.updated_replicas);
    let new_old = g(new.replicas) - g(new.updated_replicas);
    g(new.updated_replicas) > g(old.updated_replicas)
        || new_old < old_old
        || g(new.ready_replicas) > g(old.ready_replicas)
        || g(new.available_replicas) > g(old.available_replicas)
}

/// Upstream `DeploymentTimedOut`, as the time left before the deadline: `Some(ZERO)` when timed out,
/// `None` when there is no deadline to watch.
fn time_left(d: &Deployment, st: &DeploymentStatus, now: jiff::Timestamp) -> Option<Duration> {
    if !has_progress_deadline(d) {
        return None;
    }
    let c = get_condition(st, "Progressing")?;
    match c.reason.as_deref() {
        Some(reason::NEW_RS_AVAILABLE) => return None,
        Some(reason::TIMED_OUT) => return Some(Duration::ZERO),
        _ => {}
    }
    let from = c.last_update_time.as_ref()?.0;
    let deadline = i128::from(d.spec.as_ref()?.progress_deadline_seconds?) * 1_000_000_000;
    let left = from.as_nanosecond() + deadline - now.as_nanosecond();
    if left < 0 {
        Some(Duration::ZERO)
    } else {
        Some(Duration::from_nanos(u64::try_from(left).unwrap_or(u64::MAX)) + Duration::from_millis(1))
    }
}

/// The ReplicaSets `o.deployment` owns once claimed (upstream `getReplicaSetsForDeployment`), and the
/// claims to make.
fn claim(o: &Observed, steps: &mut Vec<Step>) -> Vec<ReplicaSet> {
    let d = o.deployment;
    let selector = d.spec.as_ref().map(|s| s.selector.clone()).unwrap_or_default();
    let uid = d.metadata.uid.clone().unwrap_or_default();
    let mut out = Vec::new();
    for rs in o.replica_sets {
        if rs.metadata.namespace != d.metadata.namespace {
            continue;
        }
        let matches = crate::workload::meta_matches(&selector, &rs.metadata);
        match controller_ref::claim(&d.metadata, &rs.metadata, matches) {
            Claim::Owned => out.push((*rs).clone()),
            Claim::Adopt => {
                let owner_references = controller_ref::adopted_owners(
                    &rs.metadata,
                    &controller_ref::new_controller_ref(&d.metadata, "apps/v1", "Deployment"),
                );
                steps.push(Step::SetOwners {
                    name: rs_name(rs),
                    uid: rs.metadata.uid.clone().unwrap_or_default(),
                    owner_references: owner_references.clone(),
                    adopt: true,
                });
                let mut copy = (*rs).clone();
                copy.metadata.owner_references = Some(owner_references);
                out.push(copy);
            }
            Claim::Release => steps.push(Step::SetOwners {
                name: rs_name(rs),
                uid: rs.metadata.uid.clone().unwrap_or_default(),
                owner_references: controller_ref::released_owners(&rs.metadata, &uid),
                adopt: false,
            }),
            Claim::Ignore => {}
        }
    }
    out
}

/// Decide one sync of `o.deployment` (upstream `syncDeployment`).
pub fn plan(o: &Observed) -> Plan {
    let d = o.deployment;
    let mut steps = Vec::new();
    let selector = d.spec.as_ref().map(|s| s.selector.clone()).unwrap_or_default();
    let selects_all = selector.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
        && selector.match_expressions.as_ref().is_none_or(Vec::is_empty);
    if selects_all {
        steps.push(Step::Event {
            type_: "Warning",
            reason: "SelectingAll",
            message: "This deployment is selecting all pods. A non-empty selector is required.".into(),
        });
        let mut st = d.status.clone().unwrap_or_default();
        if st.observed_generation.unwrap_or(0) < d.metadata.generation.unwrap_or(0) {
            st.observed_generation = d.metadata.generation;
            steps.push(Step::UpdateStatus(st));
        }
        return Plan {
            steps,
            requeue_after: None,
        };
    }
    let rss = claim(o, &mut steps);
    let mut sim = Sim {
        o,
        d: d.clone(),
        rss,
        steps,
        requeue: None,
        stopped: false,
    };
    if d.metadata.deletion_timestamp.is_some() {
        // Upstream `syncStatusOnly`.
        let (new, olds) = sim.new_and_old(false);
        let all: Vec<usize> = olds.iter().copied().chain(new).collect();
        let st = sim.calculate_status(&all, new);
        sim.write_status(st);
    } else {
        sim.check_paused_conditions();
        let paused = d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
        if paused || sim.is_scaling_event() {
            if !sim.stopped {
                sim.sync();
            }
        } else if !sim.stopped {
            if is_rolling(d) {
                sim.rollout_rolling();
            } else {
                sim.rollout_recreate();
            }
        }
    }
    // A Ready pod that is not yet available is counted by the ReplicaSet controller's status, which
    // wakes this one; nothing to watch here besides the progress deadline.
    Plan {
        steps: sim.steps,
        requeue_after: sim.requeue,
    }
}
