//! Carries out one sync of a set (upstream `syncReplicaSet`): claims, then creations in slow-start
//! batches or deletions in parallel, then the status. Writes go through [`PodControl`] (upstream's
//! `controller.PodControlInterface`, mockable the same way): the API in [`super::Kube`], an in-memory
//! cluster in the tests.

use super::plan::{self, Plan, PodRef};
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use std::future::Future;
use std::time::Duration;

/// A set's writes, all in its namespace; `&self` so a batch of creations runs concurrently.
pub(crate) trait PodControl: Sync {
    /// Create a pod; returns it as created (with its generated name and uid).
    fn create_pod(&self, pod: &Pod) -> impl Future<Output = Result<Pod, kube::Error>> + Send;
    /// Delete a pod with its uid as precondition.
    fn delete_pod(&self, name: &str, uid: &str) -> impl Future<Output = Result<(), kube::Error>> + Send;
    /// Replace a pod's ownerReferences, `uid` as precondition.
    fn patch_pod_owners(
        &self,
        name: &str,
        uid: &str,
        owner_references: Vec<OwnerReference>,
    ) -> impl Future<Output = Result<(), kube::Error>> + Send;
    /// Upstream `RecheckDeletionTimestamp` of the set: `Err` with the reason when it may not adopt.
    fn can_adopt(&self) -> impl Future<Output = Result<(), String>> + Send;
    /// Whether a fresh read still shows pod `name`/`uid` ours and not matching.
    fn confirm_release(&self, name: &str, uid: &str) -> impl Future<Output = Result<bool, String>> + Send;
    /// Write the set's status.
    fn update_status(
        &self,
        status: &ReplicaSetStatus,
    ) -> impl Future<Output = Result<(), kube::Error>> + Send;
    /// Record an Event on the set.
    fn event(&self, type_: &str, reason: &str, message: &str) -> impl Future<Output = ()> + Send;
}

/// What a sync did, whatever its end: the caller records `created` and `deleted` as expectations even
/// when `error` is set.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Names of the pods created.
    pub created: Vec<String>,
    /// Uids of the pods deleted.
    pub deleted: Vec<String>,
    /// When to look again (a Ready pod becoming available).
    pub requeue: Option<Duration>,
    /// The first failure.
    pub error: Option<String>,
}

fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// A create refused because the namespace is being deleted (upstream ignores it: `NamespaceTerminatingCause`).
fn namespace_terminating(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.message.contains("because it is being terminated"))
}

fn observed(pods: &[&Pod], uid: &str) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
    pods.iter()
        .find(|p| p.metadata.uid.as_deref() == Some(uid))
        .map(|p| p.metadata.clone())
        .unwrap_or_default()
}

/// Run `plan` for `rs` (`kind` names the controller reference), then write the status
/// computed over `active` (the plan's active pods, as observed); `pods` are the namespace's pods as observed.
pub(crate) async fn sync<C: PodControl>(
    control: &C,
    rs: &ReplicaSet,
    kind: super::Kind,
    plan: Plan,
    pods: &[&Pod],
    active: &[&Pod],
    now: jiff::Timestamp,
) -> Outcome {
    let mut out = Outcome::default();
    let owner_uid = rs.metadata.uid.clone().unwrap_or_default();
    let (api_version, kind) = (kind.api_version(), kind.kind());
    let controller_ref = crate::workload::controller_ref::new_controller_ref(&rs.metadata, api_version, kind);
    // Claims (upstream `claimPods`): one live re-check of the set before the first adoption.
    if !plan.adopt.is_empty() {
        match control.can_adopt().await {
            Ok(()) => {
                for PodRef { name, uid } in &plan.adopt {
                    let observed = observed(pods, uid);
                    let refs = crate::workload::controller_ref::adopted_owners(&observed, &controller_ref);
                    if let Err(e) = control.patch_pod_owners(name, uid, refs).await
                        && !not_found(&e)
                    {
                        out.error.get_or_insert(api_message(&e));
                    }
                }
            }
            Err(e) => {
                out.error = Some(e);
                return out;
            }
        }
    }
    for PodRef { name, uid } in &plan.release {
        match control.confirm_release(name, uid).await {
            Ok(true) => {
                // Only the set's own reference is dropped (the patch replaces the list with the others).
                let refs = crate::workload::controller_ref::released_owners(&observed(pods, uid), &owner_uid);
                if let Err(e) = control.patch_pod_owners(name, uid, refs).await
                    && !not_found(&e)
                {
                    out.error.get_or_insert(api_message(&e));
                }
            }
            Ok(false) => {}
            Err(e) => {
                out.error.get_or_insert(e);
            }
        }
    }
    let mut manage_error: Option<String> = None;
    if plan.create > 0 {
        let pod = plan::new_pod(rs, api_version, kind);
        'batches: for size in plan::slow_start_batches(plan.create) {
            let results = futures::future::join_all((0..size).map(|_| control.create_pod(&pod))).await;
            let mut failed = false;
            for r in results {
                match r {
                    Ok(p) => {
                        let name = p.metadata.name.clone().unwrap_or_default();
                        control
                            .event("Normal", "SuccessfulCreate", &format!("Created pod: {name}"))
                            .await;
                        out.created.push(name);
                    }
                    Err(e) if namespace_terminating(&e) => failed = true,
                    Err(e) => {
                        let msg = api_message(&e);
                        control
                            .event("Warning", "FailedCreate", &format!("Error creating: {msg}"))
                            .await;
                        manage_error.get_or_insert(msg);
                        failed = true;
                    }
                }
            }
            if failed {
                break 'batches;
            }
        }
    } else if !plan.delete.is_empty() {
        let results = futures::future::join_all(
            plan.delete
                .iter()
                .map(|p| async move { (p, control.delete_pod(&p.name, &p.uid).await) }),
        )
        .await;
        for (p, r) in results {
            match r {
                Ok(()) => {
                    control
                        .event("Normal", "SuccessfulDelete", &format!("Deleted pod: {}", p.name))
                        .await;
                    out.deleted.push(p.uid.clone());
                }
                Err(e) if not_found(&e) => {}
                Err(e) => {
                    let msg = api_message(&e);
                    control
                        .event("Warning", "FailedDelete", &format!("Error deleting: {msg}"))
                        .await;
                    manage_error.get_or_insert(msg);
                }
            }
        }
    }
    let (st, requeue) = plan::status(rs, active, manage_error.as_deref(), now);
    out.requeue = requeue;
    if plan::status_changed(rs.status.as_ref(), &st)
        && let Err(e) = control.update_status(&st).await
        && !not_found(&e)
    {
        out.error.get_or_insert(api_message(&e));
    }
    if let Some(e) = manage_error {
        out.error.get_or_insert(e);
    }
    out
}
