//! The StatefulSet executor: carries out a [`Plan`](super::plan::Plan)'s steps in order through
//! [`Objects`], the controller's writes. As upstream's `StatefulPodControlObjectManager`
//! (`stateful_pod_control.go`: "Manipulation of objects is provided through objectMgr, which allows the
//! k8s API to be mocked out for testing"), the kube-backed implementation lives in
//! [`reconcile`](super::reconcile) and the tests' in-memory cluster implements the same trait, so the
//! property test drives this very code.
//!
//! Conflicts (409) and "not found" (404) mean the world moved since it was read: execution stops and the
//! set is re-planned soon. Any other error stops execution and is returned.

use super::identity;
use super::plan::Step;
use crate::workload::controller_ref;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use std::future::Future;

/// The StatefulSet controller's writes, all in the set's namespace. Each is one API call; the futures are
/// `Send` because kube-runtime's `Controller` runs reconciles on a multi-threaded runtime.
pub(crate) trait Objects {
    /// Create a ControllerRevision.
    fn create_revision(
        &mut self,
        revision: &ControllerRevision,
    ) -> impl Future<Output = Result<(), kube::Error>> + Send;
    /// Set a ControllerRevision's `revision` number.
    fn renumber_revision(
        &mut self,
        name: &str,
        revision: i64,
    ) -> impl Future<Output = Result<(), kube::Error>> + Send;
    /// Delete a ControllerRevision.
    fn delete_revision(&mut self, name: &str) -> impl Future<Output = Result<(), kube::Error>> + Send;
    /// Set the ControllerRevision `name` (expected to have `uid`)'s ownerReferences.
    fn patch_revision_owners(
        &mut self,
        name: &str,
        uid: &str,
        owner_references: Vec<OwnerReference>,
    ) -> impl Future<Output = Result<(), kube::Error>> + Send;
    /// Replace a pod's `metadata.ownerReferences` with `owner_references`; `uid` is the pod's, a
    /// precondition (a pod of that name with another uid is not patched).
    fn patch_pod_owners(
        &mut self,
        name: &str,
        uid: &str,
        owner_references: Vec<OwnerReference>,
    ) -> impl Future<Output = Result<(), kube::Error>> + Send;
    /// Create a claim.
    fn create_claim(
        &mut self,
        claim: &PersistentVolumeClaim,
    ) -> impl Future<Output = Result<(), kube::Error>> + Send;
    /// Replace a claim's `metadata.ownerReferences`.
    fn patch_claim_owners(
        &mut self,
        name: &str,
        owner_references: Vec<OwnerReference>,
    ) -> impl Future<Output = Result<(), kube::Error>> + Send;
    /// Set a claim's `spec.resources.requests.storage`.
    fn expand_claim(
        &mut self,
        name: &str,
        storage: &str,
    ) -> impl Future<Output = Result<(), kube::Error>> + Send;
    /// Create a pod.
    fn create_pod(&mut self, pod: &Pod) -> impl Future<Output = Result<(), kube::Error>> + Send;
    /// Delete a pod, with its uid as precondition.
    fn delete_pod(&mut self, name: &str, uid: &str) -> impl Future<Output = Result<(), kube::Error>> + Send;
    /// Write the set's `status` through `/status`.
    fn update_status(
        &mut self,
        set: &str,
        status: &StatefulSetStatus,
    ) -> impl Future<Output = Result<(), kube::Error>> + Send;
    /// Record an Event on the set.
    fn event(
        &mut self,
        set: &StatefulSet,
        type_: &str,
        reason: &str,
        message: &str,
    ) -> impl Future<Output = Result<(), kube::Error>> + Send;
}

/// How an execution ended without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Every step was carried out.
    Done,
    /// A step met a conflict or a missing object: the world moved, re-plan soon. Later steps were not tried.
    Replan,
}

/// A conflict (409: exists, uid precondition, resourceVersion) or a missing object (404).
pub(crate) fn transient(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409 || s.code == 404)
}

/// Carry out `steps` (planned for `set` over the observed `pods`) in order, stopping at the first error.
pub(crate) async fn execute<O: Objects>(
    objects: &mut O,
    set: &StatefulSet,
    pods: &[Pod],
    steps: Vec<Step>,
) -> Result<Outcome, kube::Error> {
    let mut steps = steps.into_iter();
    while let Some(step) = steps.next() {
        if let Err(e) = execute_one(objects, set, pods, step).await {
            // The status is written even when a step failed (upstream updates it after `performUpdate`
            // whatever its error): observedGeneration and the counts are those observed.
            if let Some(Step::UpdateStatus(st)) = steps.find(|s| matches!(s, Step::UpdateStatus(_))) {
                let _ = objects.update_status(identity::set_name(set), &st).await;
            }
            if transient(&e) {
                return Ok(Outcome::Replan);
            }
            return Err(e);
        }
    }
    Ok(Outcome::Done)
}

/// The pod with `uid` as observed.
fn observed(pods: &[Pod], uid: &str) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
    pods.iter()
        .find(|p| p.metadata.uid.as_deref() == Some(uid))
        .map(|p| p.metadata.clone())
        .unwrap_or_default()
}

async fn execute_one<O: Objects>(
    objects: &mut O,
    set: &StatefulSet,
    pods: &[Pod],
    step: Step,
) -> Result<(), kube::Error> {
    match step {
        Step::CreateRevision(r) => objects.create_revision(&r).await,
        Step::RenumberRevision { name, revision } => objects.renumber_revision(&name, revision).await,
        Step::DeleteRevision { name } => objects.delete_revision(&name).await,
        Step::AdoptRevision {
            name,
            uid,
            owner_references,
        }
        | Step::ReleaseRevision {
            name,
            uid,
            owner_references,
        } => objects.patch_revision_owners(&name, &uid, owner_references).await,
        Step::AdoptPod { name, uid } => {
            // Keep the pod's other references, add ours as its controller (upstream ControllerRefManager).
            let refs = controller_ref::adopted_owners(&observed(pods, &uid), &identity::controller_ref(set));
            objects.patch_pod_owners(&name, &uid, refs).await
        }
        Step::ReleasePod { name, uid } => {
            let set_uid = set.metadata.uid.as_deref().unwrap_or_default();
            let refs = controller_ref::released_owners(&observed(pods, &uid), set_uid);
            objects.patch_pod_owners(&name, &uid, refs).await
        }
        Step::CreateClaim(c) => objects.create_claim(&c).await,
        Step::SetClaimOwners {
            name,
            owner_references,
        } => objects.patch_claim_owners(&name, owner_references).await,
        Step::ExpandClaim { name, storage } => objects.expand_claim(&name, &storage).await,
        Step::CreatePod(pod) => {
            let created = objects.create_pod(&pod).await;
            // Upstream `recordPodEvent`: a refused create (admission, quota, validation) is a Warning
            // `FailedCreate` event on the set carrying the API server's message.
            if let Err(e @ kube::Error::Api(status)) = &created
                && !transient(e)
            {
                let message = format!(
                    "create Pod {} in StatefulSet {} failed error: {}",
                    pod.metadata.name.as_deref().unwrap_or_default(),
                    identity::set_name(set),
                    status.message
                );
                let _ = objects.event(set, "Warning", "FailedCreate", &message).await;
            }
            created
        }
        Step::DeletePod { name, uid } => objects.delete_pod(&name, &uid).await,
        Step::UpdateStatus(st) => objects.update_status(identity::set_name(set), &st).await,
        Step::Event {
            type_,
            reason,
            message,
        } => objects.event(set, type_, reason, &message).await,
    }
}
