//! StatefulSet plan tests: table-driven rules, and a property test in the style of upstream's
//! `stateful_set_control_test.go`: a fake cluster, a fake kubelet that moves random pods through
//! Pending → Running → Ready (sometimes Failed), random scale/update/delete/partition events, and the
//! invariants checked after every step. Reference: StatefulSet docs, "Deployment and Scaling Guarantees".

use super::execute::{Objects, Outcome, execute};
use super::identity::{self, REVISION_LABEL};
use super::plan::{Observed, Step, plan};
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, PodCondition, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use proptest::prelude::*;
use serde_json::json;
use std::collections::BTreeMap;

fn set(replicas: i32, policy: &str, image: &str) -> StatefulSet {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "set-uid", "generation": 1},
        "spec": {"replicas": replicas, "serviceName": "nginx", "podManagementPolicy": policy,
            "selector": {"matchLabels": {"app": "nginx"}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
            "revisionHistoryLimit": 10,
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
            "template": {"metadata": {"labels": {"app": "nginx"}}, "spec": {"containers": [{"name": "nginx", "image": image}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "www"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}
    }))
    .expect("set")
}

/// An in-memory cluster that answers the controller's writes ([`Objects`]) as the API server would;
/// [`World::reconcile`] plans over it and runs the real executor.
struct World {
    set: StatefulSet,
    pods: BTreeMap<String, Pod>,
    claims: BTreeMap<String, PersistentVolumeClaim>,
    revisions: BTreeMap<String, ControllerRevision>,
    next_uid: u64,
    now: i64,
    claims_ever: usize,
    /// Writes answered so far.
    writes: usize,
    /// Fault injection: once `writes` reaches the count, the next write fails with the code.
    fail: Option<(usize, u16)>,
}

fn api_error(code: u16, reason: &str, message: String) -> kube::Error {
    kube::Error::Api(
        kube::core::Status::failure(&message, reason)
            .with_code(code)
            .boxed(),
    )
}

fn already_exists(kind: &str, name: &str) -> kube::Error {
    api_error(409, "AlreadyExists", format!("{kind} \"{name}\" already exists"))
}

fn not_found(kind: &str, name: &str) -> kube::Error {
    api_error(404, "NotFound", format!("{kind} \"{name}\" not found"))
}

fn uid_conflict(name: &str, want: &str, have: Option<&str>) -> kube::Error {
    api_error(
        409,
        "Conflict",
        format!(
            "{name}: Precondition failed: UID in precondition: {want}, UID in object meta: {}",
            have.unwrap_or("")
        ),
    )
}

/// A JSON merge patch (RFC 7386), as `Patch::Merge` asks of the API server.
fn merge<T: serde::Serialize + serde::de::DeserializeOwned>(object: &mut T, patch: serde_json::Value) {
    let mut v = serde_json::to_value(&*object).expect("serialize");
    json_patch::merge(&mut v, &patch);
    *object = serde_json::from_value(v).expect("patched object");
}

impl World {
    fn new(set: StatefulSet) -> Self {
        World {
            set,
            pods: BTreeMap::new(),
            claims: BTreeMap::new(),
            revisions: BTreeMap::new(),
            next_uid: 0,
            now: 1_700_000_000,
            claims_ever: 0,
            writes: 0,
            fail: None,
        }
    }

    fn uid(&mut self) -> String {
        self.next_uid += 1;
        format!("uid-{}", self.next_uid)
    }

    fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::from_second(self.now).expect("ts")
    }

    fn monotonic(&self) -> bool {
        self.set
            .spec
            .as_ref()
            .and_then(|s| s.pod_management_policy.as_deref())
            != Some("Parallel")
    }

    /// One controller pass (plan, then the real executor) that must carry out every step: the world does
    /// not move during a pass, so a conflict or a missing object would mean the plan misread it. Returns
    /// the planned steps.
    fn reconcile(&mut self) -> Vec<Step> {
        let (steps, outcome) = self.try_reconcile();
        match outcome {
            Ok(Outcome::Done) => {}
            other => panic!("a pass over a still world carries out every step: {other:?}, {steps:?}"),
        }
        self.check_controller_refs();
        steps
    }

    /// One controller pass, as `reconcile` in `reconcile.rs` runs it: plan over what is listed, then
    /// [`execute`] against this world.
    fn try_reconcile(&mut self) -> (Vec<Step>, Result<Outcome, kube::Error>) {
        let pods: Vec<Pod> = self.pods.values().cloned().collect();
        let claims: Vec<PersistentVolumeClaim> = self.claims.values().cloned().collect();
        let revisions: Vec<ControllerRevision> = self.revisions.values().cloned().collect();
        let set = self.set.clone();
        let p = plan(&Observed {
            set: &set,
            pods: &pods,
            claims: &claims,
            revisions: &revisions,
            now: self.now(),
        });
        let steps = p.steps.clone();
        let outcome = futures::executor::block_on(execute(self, &set, &pods, p.steps));
        (steps, outcome)
    }

    fn ready(p: &Pod) -> bool {
        super::plan::is_running_and_ready(p) && p.metadata.deletion_timestamp.is_none()
    }

    /// Count a write, failing it if [`World::fail`] says so.
    fn write(&mut self) -> Result<(), kube::Error> {
        if let Some((after, code)) = self.fail
            && self.writes == after
        {
            self.fail = None;
            return Err(api_error(code, "Injected", format!("injected {code}")));
        }
        self.writes += 1;
        Ok(())
    }

    /// Invariant: every pod of the set (matching its selector, named `<set>-<ordinal>`) carries exactly
    /// one controller reference, to the set. The one exception is an orphan that was already terminating,
    /// which is never adopted.
    fn check_controller_refs(&self) {
        let ours = identity::controller_ref(&self.set);
        for (name, p) in &self.pods {
            if !super::plan::selector_matches(&self.set, p) || identity::ordinal_of(&self.set, name).is_none()
            {
                continue;
            }
            let controllers: Vec<&OwnerReference> = p
                .metadata
                .owner_references
                .iter()
                .flatten()
                .filter(|r| r.controller == Some(true))
                .collect();
            if controllers.is_empty() && p.metadata.deletion_timestamp.is_some() {
                continue;
            }
            assert_eq!(
                controllers,
                [&ours],
                "invariant: {name} carries exactly one controller reference, to the set"
            );
        }
    }

    /// The kubelet: finish terminations, then move pod `i` one phase further (or fail it).
    fn kubelet(&mut self, i: usize, fail: bool) {
        let names: Vec<String> = self.pods.keys().cloned().collect();
        if names.is_empty() {
            return;
        }
        let name = &names[i % names.len()];
        let now = self.now();
        let pod = self.pods.get_mut(name).expect("pod");
        if pod.metadata.deletion_timestamp.is_some() {
            self.pods.remove(name);
            return;
        }
        let st = pod.status.get_or_insert_with(PodStatus::default);
        let ready_cond = |s: &str| PodCondition {
            type_: "Ready".into(),
            status: s.into(),
            last_transition_time: Some(Time(now)),
            ..PodCondition::default()
        };
        if fail {
            st.phase = Some("Failed".into());
            st.conditions = Some(vec![ready_cond("False")]);
            return;
        }
        match st.phase.as_deref() {
            Some("Pending") => st.phase = Some("Running".into()),
            Some("Running") if st.conditions.is_none() => st.conditions = Some(vec![ready_cond("True")]),
            _ => {}
        }
    }

    fn check_identity(&self) {
        for (name, p) in &self.pods {
            let ord = identity::ordinal_of(&self.set, name).expect("ordinal");
            let spec = p.spec.as_ref().expect("spec");
            assert_eq!(
                spec.hostname.as_deref(),
                Some(name.as_str()),
                "hostname is the pod name"
            );
            assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
            let labels = p.metadata.labels.as_ref().expect("labels");
            assert_eq!(labels.get(identity::POD_INDEX_LABEL), Some(&ord.to_string()));
            let claim = spec
                .volumes
                .iter()
                .flatten()
                .find(|v| v.name == "www")
                .and_then(|v| v.persistent_volume_claim.as_ref())
                .map(|c| c.claim_name.clone());
            assert_eq!(
                claim,
                Some(format!("www-web-{ord}")),
                "storage follows the ordinal"
            );
        }
    }

    /// Failed pods, not yet terminating, whose ordinal is above the replica count (name, uid).
    fn failed_above_replicas(&self) -> Vec<(String, String)> {
        let end = identity::start_ordinal(&self.set) + identity::replicas(&self.set);
        self.pods
            .iter()
            .filter(|(name, p)| {
                identity::ordinal_of(&self.set, name).is_some_and(|o| o >= end)
                    && p.metadata.deletion_timestamp.is_none()
                    && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed")
            })
            .map(|(name, p)| (name.clone(), p.metadata.uid.clone().expect("uid")))
            .collect()
    }

    fn revision_of(&self, name: &str) -> Option<String> {
        self.pods
            .get(name)
            .and_then(|p| p.metadata.labels.as_ref())
            .and_then(|l| l.get(REVISION_LABEL).cloned())
    }
}

impl Objects for World {
    async fn create_revision(&mut self, revision: &ControllerRevision) -> Result<(), kube::Error> {
        self.write()?;
        let name = revision.metadata.name.clone().expect("name");
        if self.revisions.contains_key(&name) {
            return Err(already_exists("controllerrevisions", &name));
        }
        let mut r = revision.clone();
        r.metadata.uid = Some(self.uid());
        self.revisions.insert(name, r);
        Ok(())
    }

    async fn renumber_revision(&mut self, name: &str, revision: i64) -> Result<(), kube::Error> {
        self.write()?;
        let r = self
            .revisions
            .get_mut(name)
            .ok_or_else(|| not_found("controllerrevisions", name))?;
        merge(r, json!({"revision": revision}));
        Ok(())
    }

    async fn delete_revision(&mut self, name: &str) -> Result<(), kube::Error> {
        self.write()?;
        self.revisions
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| not_found("controllerrevisions", name))
    }

    async fn patch_revision_owners(
        &mut self,
        name: &str,
        uid: &str,
        owner_references: Vec<OwnerReference>,
    ) -> Result<(), kube::Error> {
        self.write()?;
        let r = self
            .revisions
            .get_mut(name)
            .ok_or_else(|| not_found("controllerrevisions", name))?;
        if r.metadata.uid.as_deref().is_some_and(|u| u != uid) {
            return Err(uid_conflict(name, uid, r.metadata.uid.as_deref()));
        }
        merge(r, json!({"metadata": {"ownerReferences": owner_references}}));
        Ok(())
    }

    async fn patch_pod_owners(
        &mut self,
        name: &str,
        uid: &str,
        owner_references: Vec<OwnerReference>,
    ) -> Result<(), kube::Error> {
        self.write()?;
        let p = self.pods.get_mut(name).ok_or_else(|| not_found("pods", name))?;
        if p.metadata.uid.as_deref() != Some(uid) {
            return Err(uid_conflict(name, uid, p.metadata.uid.as_deref()));
        }
        merge(p, json!({"metadata": {"ownerReferences": owner_references}}));
        Ok(())
    }

    async fn create_claim(&mut self, claim: &PersistentVolumeClaim) -> Result<(), kube::Error> {
        self.write()?;
        let name = claim.metadata.name.clone().expect("name");
        if self.claims.contains_key(&name) {
            return Err(already_exists("persistentvolumeclaims", &name));
        }
        let mut c = claim.clone();
        c.metadata.uid = Some(self.uid());
        self.claims.insert(name, c);
        self.claims_ever += 1;
        Ok(())
    }

    async fn patch_claim_owners(
        &mut self,
        name: &str,
        owner_references: Vec<OwnerReference>,
    ) -> Result<(), kube::Error> {
        self.write()?;
        let c = self
            .claims
            .get_mut(name)
            .ok_or_else(|| not_found("persistentvolumeclaims", name))?;
        merge(c, json!({"metadata": {"ownerReferences": owner_references}}));
        Ok(())
    }

    async fn expand_claim(&mut self, name: &str, storage: &str) -> Result<(), kube::Error> {
        self.write()?;
        let c = self
            .claims
            .get_mut(name)
            .ok_or_else(|| not_found("persistentvolumeclaims", name))?;
        merge(
            c,
            json!({"spec": {"resources": {"requests": {"storage": storage}}}}),
        );
        Ok(())
    }

    async fn create_pod(&mut self, pod: &Pod) -> Result<(), kube::Error> {
        self.write()?;
        let name = pod.metadata.name.clone().expect("name");
        assert!(
            !self.pods.contains_key(&name),
            "invariant: a second pod for ordinal {name} while the old object exists"
        );
        let ord = identity::ordinal_of(&self.set, &name).expect("ordinal");
        if self.monotonic() {
            let start = identity::start_ordinal(&self.set);
            for pred in start..ord {
                let pn = identity::pod_name(&self.set, pred);
                assert!(
                    self.pods.get(&pn).is_some_and(Self::ready),
                    "invariant: {name} created while predecessor {pn} is not Running and Ready"
                );
            }
        }
        for v in pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .into_iter()
            .flatten()
        {
            if let Some(c) = &v.persistent_volume_claim {
                assert!(
                    self.claims.contains_key(&c.claim_name),
                    "invariant: {name} created before its claim {}",
                    c.claim_name
                );
            }
        }
        let mut pod = pod.clone();
        pod.metadata.uid = Some(self.uid());
        pod.status = Some(PodStatus {
            phase: Some("Pending".into()),
            ..PodStatus::default()
        });
        self.pods.insert(name, pod);
        Ok(())
    }

    async fn delete_pod(&mut self, name: &str, uid: &str) -> Result<(), kube::Error> {
        self.write()?;
        let now = self.now();
        let p = self.pods.get_mut(name).ok_or_else(|| not_found("pods", name))?;
        if p.metadata.uid.as_deref() != Some(uid) {
            return Err(uid_conflict(name, uid, p.metadata.uid.as_deref()));
        }
        // Graceful deletion: the kubelet removes the object once the pod has stopped.
        p.metadata.deletion_timestamp.get_or_insert(Time(now));
        Ok(())
    }

    async fn update_status(&mut self, set: &str, status: &StatefulSetStatus) -> Result<(), kube::Error> {
        self.write()?;
        if set != identity::set_name(&self.set) {
            return Err(not_found("statefulsets", set));
        }
        merge(&mut self.set, json!({"status": status}));
        Ok(())
    }

    async fn event(
        &mut self,
        _set: &StatefulSet,
        _type: &str,
        _reason: &str,
        _message: &str,
    ) -> Result<(), kube::Error> {
        self.write()
    }
}

fn names(w: &World) -> Vec<String> {
    w.pods.keys().cloned().collect()
}

fn ready_all(w: &mut World) {
    for _ in 0..4 {
        for i in 0..w.pods.len() {
            w.kubelet(i, false);
        }
    }
}

/// A Running and Ready pod of ordinal `ord` as an earlier set of the same name left it (deleted with
/// `--cascade=orphan`): the identity of `new_pod`, an old revision label, no controller reference, only
/// `other_refs`.
fn orphan(w: &World, ord: i32, other_refs: Vec<OwnerReference>) -> Pod {
    let spec = w.set.spec.as_ref().expect("spec");
    let mut p = identity::new_pod(&w.set, &spec.template, "web-orphaned", ord);
    p.metadata.uid = Some(format!("orphan-{ord}"));
    p.metadata.owner_references = Some(other_refs);
    p.status = Some(PodStatus {
        phase: Some("Running".into()),
        conditions: Some(vec![PodCondition {
            type_: "Ready".into(),
            status: "True".into(),
            last_transition_time: Some(Time(w.now())),
            ..PodCondition::default()
        }]),
        ..PodStatus::default()
    });
    p
}

/// A reference that is not a controller's (kept through adoption and release).
fn other_ref() -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: "keeper".into(),
        uid: "configmap-uid".into(),
        controller: None,
        block_owner_deletion: None,
    }
}

fn owners(w: &World, pod: &str) -> Vec<OwnerReference> {
    w.pods[pod].metadata.owner_references.clone().unwrap_or_default()
}

#[test]
fn orphans_are_adopted_through_the_executor_keeping_their_other_references() {
    let mut w = World::new(set(2, "OrderedReady", "v1"));
    let bare = orphan(&w, 0, vec![]);
    let kept = orphan(&w, 1, vec![other_ref()]);
    w.pods.insert("web-0".into(), bare);
    w.pods.insert("web-1".into(), kept);
    let steps = w.reconcile();
    let adopted: Vec<&str> = steps
        .iter()
        .filter_map(|s| match s {
            Step::AdoptPod { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(adopted, ["web-0", "web-1"]);
    let ours = identity::controller_ref(&w.set);
    assert_eq!(owners(&w, "web-0"), std::slice::from_ref(&ours));
    assert_eq!(owners(&w, "web-1"), [other_ref(), ours]);
    assert_eq!(
        w.pods["web-0"].metadata.uid.as_deref(),
        Some("orphan-0"),
        "adopted, not replaced"
    );
    let steps = w.reconcile();
    assert!(
        !steps.iter().any(|s| matches!(s, Step::AdoptPod { .. })),
        "adopted once: {steps:?}"
    );
}

#[test]
fn a_pod_that_stops_matching_is_released_keeping_its_other_references() {
    let mut w = World::new(set(0, "OrderedReady", "v1"));
    let mut p = orphan(&w, 0, vec![other_ref(), identity::controller_ref(&w.set)]);
    p.metadata
        .labels
        .as_mut()
        .expect("labels")
        .insert("app".into(), "moved".into());
    w.pods.insert("web-0".into(), p);
    let steps = w.reconcile();
    assert!(
        steps
            .iter()
            .any(|s| matches!(s, Step::ReleasePod { name, uid } if name == "web-0" && uid == "orphan-0")),
        "{steps:?}"
    );
    assert_eq!(owners(&w, "web-0"), [other_ref()]);
    assert!(
        w.pods["web-0"].metadata.deletion_timestamp.is_none(),
        "released, not deleted"
    );
}

#[test]
fn the_executor_stops_at_the_first_error_and_replans_only_after_a_conflict_or_not_found() {
    for (code, want) in [
        (409, Some(Outcome::Replan)),
        (404, Some(Outcome::Replan)),
        (500, None),
    ] {
        let mut w = World::new(set(2, "Parallel", "v1"));
        // The first write (the revision) succeeds, the second (the first claim) fails.
        w.fail = Some((1, code));
        let (steps, outcome) = w.try_reconcile();
        assert!(steps.len() > 2, "{steps:?}");
        match (outcome, want) {
            (Ok(o), Some(want)) => assert_eq!(o, want, "{code}"),
            (Err(kube::Error::Api(s)), None) => assert_eq!(s.code, code),
            (other, _) => panic!("{code}: {other:?}"),
        }
        assert_eq!(
            w.writes, 2,
            "{code}: nothing after the failed step but the status"
        );
        let st = w
            .set
            .status
            .clone()
            .expect("status written though a step failed (upstream)");
        assert_eq!((st.observed_generation, st.replicas), (Some(1), 0));
        assert_eq!(w.revisions.len(), 1);
        assert!(w.claims.is_empty() && w.pods.is_empty());
        // The next pass picks up where it stopped.
        w.reconcile();
        assert_eq!(names(&w), ["web-0", "web-1"]);
    }
}

#[test]
fn pod_is_not_created_while_predecessor_not_ready() {
    let mut w = World::new(set(3, "OrderedReady", "v1"));
    w.reconcile();
    assert_eq!(names(&w), ["web-0"]);
    assert!(w.claims.contains_key("www-web-0"));
    w.reconcile();
    assert_eq!(names(&w), ["web-0"], "web-1 waits for web-0");
    ready_all(&mut w);
    w.reconcile();
    assert_eq!(names(&w), ["web-0", "web-1"]);
}

#[test]
fn parallel_creates_every_pod_at_once() {
    let mut w = World::new(set(3, "Parallel", "v1"));
    w.reconcile();
    assert_eq!(names(&w), ["web-0", "web-1", "web-2"]);
}

#[test]
fn scale_down_deletes_highest_ordinal_first_one_at_a_time() {
    let mut w = World::new(set(3, "OrderedReady", "v1"));
    for _ in 0..6 {
        w.reconcile();
        ready_all(&mut w);
    }
    assert_eq!(names(&w), ["web-0", "web-1", "web-2"]);
    w.set.spec.as_mut().expect("spec").replicas = Some(1);
    let steps = w.reconcile();
    let deleted: Vec<&String> = steps
        .iter()
        .filter_map(|s| {
            if let Step::DeletePod { name, .. } = s {
                Some(name)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(deleted, ["web-2"], "only the highest ordinal, and only one");
    w.reconcile();
    assert!(
        w.pods.contains_key("web-1") && w.pods["web-1"].metadata.deletion_timestamp.is_none(),
        "web-1 waits for web-2 to be gone"
    );
    assert_eq!(w.claims.len(), 3, "claims are retained");
}

#[test]
fn failed_pod_is_deleted_and_recreated_with_the_same_identity() {
    let mut w = World::new(set(1, "OrderedReady", "v1"));
    w.reconcile();
    let first_uid = w.pods["web-0"].metadata.uid.clone();
    w.kubelet(0, true);
    w.reconcile();
    assert!(w.pods["web-0"].metadata.deletion_timestamp.is_some());
    w.reconcile();
    assert_eq!(
        w.pods["web-0"].metadata.uid, first_uid,
        "no replacement while the old object exists"
    );
    w.kubelet(0, false);
    w.reconcile();
    assert_ne!(w.pods["web-0"].metadata.uid, first_uid);
}

#[test]
fn rolling_update_goes_in_reverse_order_and_honours_partition() {
    let mut w = World::new(set(3, "OrderedReady", "v1"));
    for _ in 0..6 {
        w.reconcile();
        ready_all(&mut w);
    }
    let old = w.revision_of("web-0").expect("rev");
    let spec = w.set.spec.as_mut().expect("spec");
    spec.template.spec.as_mut().expect("pod spec").containers[0].image = Some("v2".into());
    spec.update_strategy
        .as_mut()
        .and_then(|u| u.rolling_update.as_mut())
        .expect("ru")
        .partition = Some(1);
    let steps = w.reconcile();
    assert!(
        steps
            .iter()
            .any(|s| matches!(s, Step::DeletePod { name, .. } if name == "web-2")),
        "{steps:?}"
    );
    for _ in 0..10 {
        ready_all(&mut w);
        w.reconcile();
    }
    assert_eq!(
        w.revision_of("web-0"),
        Some(old.clone()),
        "partition keeps ordinal 0"
    );
    assert_ne!(w.revision_of("web-1"), Some(old.clone()));
    assert_ne!(w.revision_of("web-2"), Some(old));
    let st = w.set.status.clone().expect("status");
    assert_eq!(st.updated_replicas, Some(2));
    assert_ne!(
        st.current_revision, st.update_revision,
        "not complete while partitioned"
    );
}

fn deleted_pods(steps: &[Step]) -> Vec<String> {
    steps
        .iter()
        .filter_map(|s| match s {
            Step::DeletePod { name, .. } => Some(name.clone()),
            _ => None,
        })
        .collect()
}

fn roll_to_v2(w: &mut World, max_unavailable: Option<serde_json::Value>, partition: i32) {
    let spec = w.set.spec.as_mut().expect("spec");
    spec.template.spec.as_mut().expect("pod spec").containers[0].image = Some("v2".into());
    let ru = spec
        .update_strategy
        .as_mut()
        .and_then(|u| u.rolling_update.as_mut())
        .expect("ru");
    ru.partition = Some(partition);
    ru.max_unavailable = max_unavailable.map(|v| serde_json::from_value(v).expect("intstr"));
}

#[test]
fn max_unavailable_resolves_like_upstream() {
    use super::plan::resolve_max_unavailable as r;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::{Int, String as Pct};
    assert_eq!(r(None, 10), 1);
    assert_eq!(r(Some(&Int(3)), 10), 3);
    assert_eq!(r(Some(&Pct("25%".into())), 10), 3, "percentages round up");
    assert_eq!(r(Some(&Pct("1%".into())), 10), 1);
    assert_eq!(r(Some(&Pct("100%".into())), 4), 4);
    assert_eq!(r(Some(&Int(0)), 10), 1, "never below one");
}

#[test]
fn max_unavailable_deletes_that_many_old_pods_from_the_top() {
    let mut w = World::new(set(5, "Parallel", "v1"));
    for _ in 0..3 {
        w.reconcile();
        ready_all(&mut w);
    }
    roll_to_v2(&mut w, Some(json!(2)), 0);
    let steps = w.reconcile();
    assert_eq!(
        deleted_pods(&steps),
        ["web-4", "web-3"],
        "two at once, highest ordinals first"
    );
    // While both are down the budget is spent: nothing else goes.
    let steps = w.reconcile();
    assert!(deleted_pods(&steps).is_empty(), "{steps:?}");
    for _ in 0..20 {
        ready_all(&mut w);
        w.reconcile();
    }
    for p in ["web-0", "web-1", "web-2", "web-3", "web-4"] {
        assert_eq!(
            w.revision_of(p),
            w.set.status.as_ref().and_then(|s| s.update_revision.clone()),
            "{p}"
        );
    }
}

#[test]
fn max_unavailable_counts_already_unavailable_pods_and_honours_partition() {
    let mut w = World::new(set(4, "Parallel", "v1"));
    for _ in 0..3 {
        w.reconcile();
        ready_all(&mut w);
    }
    // web-0 breaks (not Ready); budget 50% of 4 = 2, one of it already used.
    let pod = w.pods.get_mut("web-0").expect("web-0");
    for c in pod
        .status
        .as_mut()
        .and_then(|s| s.conditions.as_mut())
        .expect("conds")
    {
        if c.type_ == "Ready" {
            c.status = "False".into();
        }
    }
    roll_to_v2(&mut w, Some(json!("50%")), 2);
    let steps = w.reconcile();
    assert_eq!(deleted_pods(&steps), ["web-3"], "one left in the budget");
    for _ in 0..20 {
        ready_all(&mut w);
        w.reconcile();
    }
    let update = w.set.status.as_ref().and_then(|s| s.update_revision.clone());
    assert_eq!(w.revision_of("web-3"), update);
    assert_eq!(w.revision_of("web-2"), update);
    assert_ne!(w.revision_of("web-1"), update, "below the partition");
    assert_ne!(w.revision_of("web-0"), update, "below the partition");
}

fn claim_request(w: &World, name: &str) -> String {
    w.claims[name]
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .expect("requests")["storage"]
        .0
        .clone()
}

fn raise_template_storage(w: &mut World, storage: &str) {
    let t = &mut w
        .set
        .spec
        .as_mut()
        .expect("spec")
        .volume_claim_templates
        .as_mut()
        .expect("templates")[0];
    t.spec
        .as_mut()
        .and_then(|s| s.resources.as_mut())
        .and_then(|r| r.requests.as_mut())
        .expect("requests")
        .insert(
            "storage".into(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity(storage.into()),
        );
}

#[test]
fn raised_template_request_expands_every_claim_only_with_the_annotation() {
    let mut w = World::new(set(3, "Parallel", "v1"));
    for _ in 0..3 {
        w.reconcile();
        ready_all(&mut w);
    }
    // Scale down: www-web-2 stays (Retain) and must be expanded too.
    w.set.spec.as_mut().expect("spec").replicas = Some(2);
    for _ in 0..3 {
        w.reconcile();
        ready_all(&mut w);
    }
    assert_eq!(names(&w), ["web-0", "web-1"]);
    raise_template_storage(&mut w, "2Gi");
    let steps = w.reconcile();
    assert!(
        !steps.iter().any(|s| matches!(s, Step::ExpandClaim { .. })),
        "upstream default: no expansion"
    );
    w.set.metadata.annotations = Some(
        [(
            api::strategy::EXPAND_VOLUME_CLAIMS.to_string(),
            "true".to_string(),
        )]
        .into(),
    );
    let steps = w.reconcile();
    let expanded: Vec<&str> = steps
        .iter()
        .filter_map(|s| match s {
            Step::ExpandClaim { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(expanded, ["www-web-0", "www-web-1", "www-web-2"]);
    for c in ["www-web-0", "www-web-1", "www-web-2"] {
        assert_eq!(claim_request(&w, c), "2Gi");
    }
    assert!(deleted_pods(&steps).is_empty(), "expansion restarts no pod");
    let steps = w.reconcile();
    assert!(
        !steps.iter().any(|s| matches!(s, Step::ExpandClaim { .. })),
        "done once"
    );
    // Scaling back up re-uses the expanded claim; a brand-new ordinal's claim is created at the new size.
    w.set.spec.as_mut().expect("spec").replicas = Some(4);
    for _ in 0..3 {
        w.reconcile();
        ready_all(&mut w);
    }
    assert_eq!(claim_request(&w, "www-web-3"), "2Gi");
}

#[test]
fn clone_annotation_sources_each_new_claim_from_the_ordinal_before() {
    let data_source = |w: &World, c: &str| {
        w.claims[c]
            .spec
            .as_ref()
            .and_then(|s| s.data_source.as_ref())
            .map(|d| (d.kind.clone(), d.name.clone()))
    };
    let mut w = World::new(set(3, "OrderedReady", "v1"));
    w.set.metadata.annotations = Some(
        [(
            super::plan::CLONE_PREVIOUS_ORDINAL.to_string(),
            "true".to_string(),
        )]
        .into(),
    );
    for _ in 0..6 {
        w.reconcile();
        ready_all(&mut w);
    }
    assert_eq!(names(&w), ["web-0", "web-1", "web-2"]);
    assert_eq!(
        data_source(&w, "www-web-0"),
        None,
        "the first ordinal starts empty"
    );
    assert_eq!(
        data_source(&w, "www-web-1"),
        Some(("PersistentVolumeClaim".into(), "www-web-0".into()))
    );
    assert_eq!(
        data_source(&w, "www-web-2"),
        Some(("PersistentVolumeClaim".into(), "www-web-1".into()))
    );
    // Without the annotation: upstream's claims, no dataSource.
    let mut plain = World::new(set(2, "OrderedReady", "v1"));
    for _ in 0..4 {
        plain.reconcile();
        ready_all(&mut plain);
    }
    assert_eq!(data_source(&plain, "www-web-1"), None);
}

#[test]
fn rollback_reuses_the_old_revision_and_renumbers_it() {
    let mut w = World::new(set(1, "OrderedReady", "v1"));
    w.reconcile();
    let v1 = w.revisions.keys().next().cloned().expect("rev");
    w.set
        .spec
        .as_mut()
        .expect("spec")
        .template
        .spec
        .as_mut()
        .expect("ps")
        .containers[0]
        .image = Some("v2".into());
    w.reconcile();
    w.set
        .spec
        .as_mut()
        .expect("spec")
        .template
        .spec
        .as_mut()
        .expect("ps")
        .containers[0]
        .image = Some("v1".into());
    let steps = w.reconcile();
    assert!(
        steps
            .iter()
            .any(|s| matches!(s, Step::RenumberRevision { name, revision: 3 } if *name == v1)),
        "{steps:?}"
    );
    assert_eq!(w.revisions.len(), 2, "no duplicate revision");
}

#[test]
fn on_delete_waits_for_the_user() {
    let mut w = World::new(set(2, "OrderedReady", "v1"));
    w.set.spec.as_mut().expect("spec").update_strategy =
        serde_json::from_value(json!({"type": "OnDelete"})).expect("strategy");
    for _ in 0..6 {
        w.reconcile();
        ready_all(&mut w);
    }
    w.set
        .spec
        .as_mut()
        .expect("spec")
        .template
        .spec
        .as_mut()
        .expect("ps")
        .containers[0]
        .image = Some("v2".into());
    let steps = w.reconcile();
    assert!(
        !steps.iter().any(|s| matches!(s, Step::DeletePod { .. })),
        "{steps:?}"
    );
}

#[test]
fn heal_annotation_replaces_a_stuck_pod_on_an_old_revision() {
    let mut w = World::new(set(1, "OrderedReady", "broken"));
    w.reconcile();
    w.set
        .spec
        .as_mut()
        .expect("spec")
        .template
        .spec
        .as_mut()
        .expect("ps")
        .containers[0]
        .image = Some("fixed".into());
    let steps = w.reconcile();
    assert!(
        !steps.iter().any(|s| matches!(s, Step::DeletePod { .. })),
        "upstream waits for the never-ready pod"
    );
    w.set.metadata.annotations =
        Some([(super::plan::HEAL_STUCK_ROLLOUT.to_string(), "true".to_string())].into());
    let steps = w.reconcile();
    assert!(
        steps
            .iter()
            .any(|s| matches!(s, Step::DeletePod { name, .. } if name == "web-0")),
        "{steps:?}"
    );
}

#[test]
fn retention_delete_owns_claims_by_the_set_and_condemned_pods() {
    let mut w = World::new(set(2, "Parallel", "v1"));
    w.set
        .spec
        .as_mut()
        .expect("spec")
        .persistent_volume_claim_retention_policy =
        serde_json::from_value(json!({"whenDeleted": "Delete", "whenScaled": "Delete"})).expect("policy");
    w.reconcile();
    w.reconcile();
    let owners = |w: &World, c: &str| w.claims[c].metadata.owner_references.clone().unwrap_or_default();
    assert!(owners(&w, "www-web-0").iter().any(|r| r.kind == "StatefulSet"));
    w.set.spec.as_mut().expect("spec").replicas = Some(1);
    let pod1_uid = w.pods["web-1"].metadata.uid.clone().expect("uid");
    w.reconcile();
    assert!(
        owners(&w, "www-web-1")
            .iter()
            .any(|r| r.kind == "Pod" && r.uid == pod1_uid),
        "condemned claim owned by its pod"
    );
    assert!(!owners(&w, "www-web-0").iter().any(|r| r.kind == "Pod"));
}

#[test]
fn status_counts_and_observed_generation_follow_upstream() {
    let mut w = World::new(set(2, "Parallel", "v1"));
    w.reconcile();
    ready_all(&mut w);
    w.reconcile();
    let st = w.set.status.clone().expect("status");
    assert_eq!(
        (st.replicas, st.ready_replicas, st.observed_generation),
        (2, Some(2), Some(1))
    );
    assert_eq!(st.current_revision, st.update_revision);
    assert_eq!(st.updated_replicas, Some(2));
}

#[derive(Debug, Clone)]
enum Event {
    Kubelet(usize),
    Fail(usize),
    Scale(i32),
    Image(u8),
    DeletePod(usize),
    Partition(i32),
    MaxUnavailable(Option<i32>),
}

fn events() -> impl Strategy<Value = Vec<Event>> {
    prop::collection::vec(
        prop_oneof![
            8 => any::<usize>().prop_map(Event::Kubelet),
            1 => any::<usize>().prop_map(Event::Fail),
            2 => (0i32..5).prop_map(Event::Scale),
            2 => (0u8..3).prop_map(Event::Image),
            1 => any::<usize>().prop_map(Event::DeletePod),
            1 => (0i32..4).prop_map(Event::Partition),
            1 => prop::option::of(1i32..4).prop_map(Event::MaxUnavailable),
        ],
        1..60,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_worlds_keep_the_invariants_and_converge(evs in events(), parallel in any::<bool>()) {
        let policy = if parallel { "Parallel" } else { "OrderedReady" };
        let mut w = World::new(set(2, policy, "v0"));
        // Pods an earlier set of the same name left behind: one in range, one above it. The first pass
        // adopts them through the executor (they are not yet terminating), then they are rolled or removed.
        for (ord, refs) in [(0, vec![]), (3, vec![other_ref()])] {
            let p = orphan(&w, ord, refs);
            w.pods.insert(identity::pod_name(&w.set, ord), p);
        }
        let steps = w.reconcile();
        prop_assert_eq!(steps.iter().filter(|s| matches!(s, Step::AdoptPod { .. })).count(), 2);
        for ev in evs {
            match ev {
                Event::Kubelet(i) => w.kubelet(i, false),
                Event::Fail(i) => w.kubelet(i, true),
                Event::Scale(n) => w.set.spec.as_mut().expect("spec").replicas = Some(n),
                Event::Image(v) => w.set.spec.as_mut().expect("spec").template.spec.as_mut().expect("ps").containers[0].image = Some(format!("v{v}")),
                Event::DeletePod(i) => {
                    let names = names(&w);
                    if !names.is_empty() {
                        let n = &names[i % names.len()];
                        let uid = w.pods[n].metadata.uid.clone().expect("uid");
                        futures::executor::block_on(w.delete_pod(n, &uid)).expect("delete by its uid");
                    }
                }
                Event::Partition(p) => {
                    if let Some(ru) = w.set.spec.as_mut().expect("spec").update_strategy.as_mut().and_then(|u| u.rolling_update.as_mut()) {
                        ru.partition = Some(p);
                    }
                }
                Event::MaxUnavailable(m) => {
                    if let Some(ru) = w.set.spec.as_mut().expect("spec").update_strategy.as_mut().and_then(|u| u.rolling_update.as_mut()) {
                        ru.max_unavailable = m.map(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int);
                    }
                }
            }
            w.now += 1;
            let claims_before = w.claims.len();
            w.reconcile();
            w.check_identity();
            prop_assert!(w.claims.len() >= claims_before, "no claim deleted under Retain");
        }
        // Events stop: lift the partition and let the kubelet and controller run.
        if let Some(ru) = w.set.spec.as_mut().expect("spec").update_strategy.as_mut().and_then(|u| u.rolling_update.as_mut()) {
            ru.partition = Some(0);
        }
        for _ in 0..200 {
            w.reconcile();
            ready_all(&mut w);
            w.now += 1;
        }
        // OrderedReady's documented stall ("Deployment and Scaling Guarantees"; upstream's first-unhealthy rule):
        // a pod above the replica count is removed only once its predecessors are Running and Ready, and a
        // Failed pod never is one again, so two Failed pods above the count wait for a human. Play one.
        let stuck = w.failed_above_replicas();
        if !stuck.is_empty() {
            prop_assert!(w.monotonic() && stuck.len() >= 2, "only OrderedReady with two Failed pods stalls: {:?}", stuck);
            for (name, uid) in stuck {
                futures::executor::block_on(w.delete_pod(&name, &uid)).expect("delete by its uid");
            }
            for _ in 0..200 {
                w.reconcile();
                ready_all(&mut w);
                w.now += 1;
            }
        }
        w.reconcile();
        let want = identity::replicas(&w.set);
        let st = w.set.status.clone().expect("status");
        prop_assert_eq!(w.pods.len() as i32, want, "converged to the replica count");
        prop_assert!(w.pods.values().all(World::ready), "all Ready");
        prop_assert_eq!(st.ready_replicas, Some(want));
        prop_assert_eq!(st.updated_replicas, Some(want), "all on the update revision");
        prop_assert_eq!(st.current_revision, st.update_revision);
    }
}

#[test]
fn claims_carry_the_template_labels_with_the_selector_on_top_and_pods_a_generate_name() {
    // Upstream `getPersistentVolumeClaims`: the set's matchLabels override a template label of the same key.
    let mut s = set(1, "OrderedReady", "v1");
    let spec = s.spec.as_mut().expect("spec");
    spec.volume_claim_templates.as_mut().expect("templates")[0]
        .metadata
        .labels = Some(
        [
            ("app".to_string(), "template".to_string()),
            ("tier".to_string(), "db".to_string()),
        ]
        .into(),
    );
    let claims = identity::new_claims(&s, 0);
    let labels = claims[0].metadata.labels.clone().expect("labels");
    assert_eq!(
        labels.get("app").map(String::as_str),
        Some("nginx"),
        "selector wins"
    );
    assert_eq!(labels.get("tier").map(String::as_str), Some("db"));
    // Upstream `GetPodFromTemplate`: generateName `<set>-` besides the name.
    let template = s.spec.as_ref().expect("spec").template.clone();
    let pod = identity::new_pod(&s, &template, "web-1", 0);
    assert_eq!(pod.metadata.name.as_deref(), Some("web-0"));
    assert_eq!(pod.metadata.generate_name.as_deref(), Some("web-"));
}

#[test]
fn a_set_being_deleted_gets_its_status_and_nothing_else() {
    let mut w = World::new(set(3, "Parallel", "v1"));
    w.reconcile();
    ready_all(&mut w);
    w.set.metadata.deletion_timestamp = Some(Time(w.now()));
    w.set.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    w.set.spec.as_mut().expect("spec").replicas = Some(5);
    w.set.metadata.generation = Some(2);
    let steps = w.reconcile();
    assert!(
        steps.iter().all(|s| matches!(s, Step::UpdateStatus(_))),
        "only the status: {steps:?}"
    );
    let st = w.set.status.clone().expect("status");
    assert_eq!(
        (st.replicas, st.ready_replicas, st.observed_generation),
        (3, Some(3), Some(2))
    );
    assert_eq!(
        names(&w),
        ["web-0", "web-1", "web-2"],
        "no pod created for the new replica count"
    );
}

#[test]
fn a_pending_pods_missing_claim_is_recreated_and_a_claim_being_deleted_blocks_with_failed_create() {
    // Upstream `createMissingPersistentVolumeClaims`: the pod exists, Pending, its claim was deleted.
    let mut w = World::new(set(1, "Parallel", "v1"));
    w.reconcile();
    assert!(w.pods.contains_key("web-0"));
    w.claims.remove("www-web-0");
    let steps = w.reconcile();
    assert!(
        steps
            .iter()
            .any(|s| matches!(s, Step::CreateClaim(c) if c.metadata.name.as_deref() == Some("www-web-0"))),
        "{steps:?}"
    );
    assert!(w.claims.contains_key("www-web-0"));
    // A claim still being deleted blocks the ordinal's pod, with upstream's FailedCreate event.
    let mut w = World::new(set(1, "Parallel", "v1"));
    w.reconcile();
    let uid = w.pods["web-0"].metadata.uid.clone().expect("uid");
    futures::executor::block_on(w.delete_pod("web-0", &uid)).expect("delete");
    w.kubelet(0, false);
    assert!(w.pods.is_empty());
    w.claims
        .get_mut("www-web-0")
        .expect("claim")
        .metadata
        .deletion_timestamp = Some(Time(w.now()));
    let steps = w.reconcile();
    assert!(
        !steps.iter().any(|s| matches!(s, Step::CreatePod(_))),
        "{steps:?}"
    );
    assert!(
        steps.iter().any(
            |s| matches!(s, Step::Event { type_: "Warning", reason: "FailedCreate", message }
        if message == "create Pod web-0 in StatefulSet web failed error: pvc www-web-0 is being deleted")
        ),
        "{steps:?}"
    );
}

#[test]
fn orphan_revisions_matching_the_selector_are_adopted_and_ours_that_stop_matching_released() {
    // Upstream `ClaimControllerRevisions`, as for pods.
    let mut w = World::new(set(1, "Parallel", "v1"));
    w.reconcile();
    let ours: Vec<String> = w.revisions.keys().cloned().collect();
    assert_eq!(ours.len(), 1);
    // After `kubectl delete sts --cascade=orphan`, the revision lost its owner; the new set adopts it
    // (and re-uses it, since its data is the same template) instead of creating another.
    let name = ours[0].clone();
    w.revisions.get_mut(&name).expect("rev").metadata.owner_references = None;
    let steps = w.reconcile();
    assert!(
        steps
            .iter()
            .any(|s| matches!(s, Step::AdoptRevision { name: n, .. } if *n == name)),
        "{steps:?}"
    );
    assert!(
        !steps.iter().any(|s| matches!(s, Step::CreateRevision(_))),
        "{steps:?}"
    );
    let refs = w.revisions[&name]
        .metadata
        .owner_references
        .clone()
        .unwrap_or_default();
    assert!(
        refs.iter()
            .any(|r| r.controller == Some(true) && r.uid == "set-uid"),
        "{refs:?}"
    );
    // A revision of ours whose labels no longer match is released.
    w.revisions.get_mut(&name).expect("rev").metadata.labels = Some([("app".into(), "other".into())].into());
    let steps = w.reconcile();
    assert!(
        steps
            .iter()
            .any(|s| matches!(s, Step::ReleaseRevision { name: n, .. } if *n == name)),
        "{steps:?}"
    );
    let refs = w.revisions[&name]
        .metadata
        .owner_references
        .clone()
        .unwrap_or_default();
    assert!(!refs.iter().any(|r| r.uid == "set-uid"), "{refs:?}");
}

#[test]
fn a_controlled_pod_not_named_for_an_ordinal_is_released_and_never_adopted() {
    // Upstream `isMemberOf`: only `<set>-<ordinal>` pods belong to the set.
    let mut w = World::new(set(1, "Parallel", "v1"));
    w.reconcile();
    let mut stranger = orphan(&w, 0, vec![]);
    stranger.metadata.name = Some("web-canary".into());
    stranger.metadata.uid = Some("uid-stranger".into());
    stranger.metadata.owner_references = Some(vec![identity::controller_ref(&w.set)]);
    w.pods.insert("web-canary".into(), stranger.clone());
    let steps = w.reconcile();
    assert!(
        steps
            .iter()
            .any(|s| matches!(s, Step::ReleasePod { name, .. } if name == "web-canary")),
        "{steps:?}"
    );
    assert!(owners(&w, "web-canary").is_empty());
    let steps = w.reconcile();
    assert!(
        !steps.iter().any(|s| matches!(s, Step::AdoptPod { .. })),
        "not adopted again: {steps:?}"
    );
}

/// Issue 15 item 1 (upstream `updateClaimOwnerRefForSetAndPod`): one *controller* reference per claim,
/// to the set under `whenDeleted: Delete`, to the pod of a scaled-down ordinal under `whenScaled: Delete`;
/// flipping the policy converges; another controller's claim only loses our references.
#[test]
fn claim_owner_references_follow_the_retention_policy_as_upstream() {
    let with_policy = |when_deleted: &str, when_scaled: &str| {
        let mut s = set(2, "OrderedReady", "nginx:1");
        s.spec.as_mut().unwrap().persistent_volume_claim_retention_policy = Some(
            serde_json::from_value(json!({"whenDeleted": when_deleted, "whenScaled": when_scaled})).unwrap(),
        );
        s
    };
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "web-3", "uid": "pod-uid"}})).unwrap();
    let claim = |refs: serde_json::Value| -> PersistentVolumeClaim {
        serde_json::from_value(json!({"metadata": {"name": "www-web-3", "ownerReferences": refs}})).unwrap()
    };
    let owners = |refs: &[OwnerReference]| -> Vec<(String, Option<bool>, Option<bool>)> {
        refs.iter()
            .map(|r| (r.uid.clone(), r.controller, r.block_owner_deletion))
            .collect()
    };
    let ctl = |uid: &str| (uid.to_string(), Some(true), Some(true));
    let empty = claim(json!([]));
    let cases = [
        ("Retain", "Retain", false, vec![]),
        ("Retain", "Retain", true, vec![]),
        ("Delete", "Retain", false, vec![ctl("set-uid")]),
        ("Delete", "Retain", true, vec![ctl("set-uid")]),
        ("Retain", "Delete", false, vec![]),
        ("Retain", "Delete", true, vec![ctl("pod-uid")]),
        ("Delete", "Delete", false, vec![ctl("set-uid")]),
        ("Delete", "Delete", true, vec![ctl("pod-uid")]),
    ];
    for (when_deleted, when_scaled, condemned, want) in cases {
        let got = identity::desired_claim_owners(
            &with_policy(when_deleted, when_scaled),
            &empty,
            Some(&pod),
            condemned,
        );
        assert_eq!(
            owners(&got),
            want,
            "{when_deleted}/{when_scaled} condemned={condemned}"
        );
    }
    // Flipping Delete → Retain scrubs our (non-controller, as an older Berth wrote it) reference.
    let old = claim(
        json!([{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "uid": "set-uid"},
                           {"apiVersion": "v1", "kind": "ConfigMap", "name": "keep", "uid": "cm-uid"}]),
    );
    let got = identity::desired_claim_owners(&with_policy("Retain", "Retain"), &old, Some(&pod), false);
    assert_eq!(owners(&got), [("cm-uid".to_string(), None, None)]);
    // ... and Retain → Delete makes it the controller reference.
    let got = identity::desired_claim_owners(&with_policy("Delete", "Retain"), &old, Some(&pod), false);
    assert_eq!(owners(&got), [("cm-uid".to_string(), None, None), ctl("set-uid")]);
    // Another controller: left to it, our references removed.
    let foreign = claim(
        json!([{"apiVersion": "v1", "kind": "Pod", "name": "web-3", "uid": "pod-uid", "controller": true},
                               {"apiVersion": "apps/v1", "kind": "Other", "name": "o", "uid": "other", "controller": true}]),
    );
    let got = identity::desired_claim_owners(&with_policy("Delete", "Delete"), &foreign, Some(&pod), true);
    assert_eq!(owners(&got), [("other".to_string(), Some(true), None)]);
}
