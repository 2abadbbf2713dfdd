//! The Deployment controller (upstream `pkg/controller/deployment`): ReplicaSets named
//! `<deployment>-<pod-template-hash>` carrying the `pod-template-hash` label in their selector and
//! template, `RollingUpdate` within `maxSurge`/`maxUnavailable` (upstream's rounding) and `Recreate`,
//! proportional scaling when a Deployment is scaled during a rollout, the `deployment.kubernetes.io/revision`
//! annotation (and `revision-history` when a rollback re-uses a ReplicaSet), `revisionHistoryLimit`
//! clean-up, `spec.paused`, and the `Progressing` (`NewReplicaSetCreated`, `ReplicaSetUpdated`,
//! `NewReplicaSetAvailable`, `ProgressDeadlineExceeded`, `DeploymentPaused`/`DeploymentResumed`),
//! `Available` and `ReplicaFailure` conditions. `kubectl rollout undo` patches the template back from an
//! old ReplicaSet itself (as kubectl does against any cluster); the controller then finds that ReplicaSet
//! again and gives it the next revision.
//!
//! The decision is the pure [`plan`]; [`execute`] carries out its writes in order through [`Objects`].
//! It runs on `controller-runtime` with caches of Deployments, ReplicaSets and pods; every ReplicaSet and
//! status write carries the resourceVersion the plan saw, so a lagging cache costs a conflict and a
//! re-plan, never a wrong scale (the property the kill -9 test relies on).

pub mod plan;

#[cfg(test)]
mod tests;

pub use plan::{Observed, Plan, Step, plan};

use controller_runtime::{Informers, Settings, SharedInformers};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet};
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::watcher;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::Duration;

/// The Deployment controller's writes, in the Deployment's namespace (`&self`, one call each).
pub(crate) trait Objects: Sync {
    /// Upstream `RecheckDeletionTimestamp` of the Deployment before adopting.
    fn can_adopt(&self) -> impl Future<Output = Result<(), String>> + Send;
    /// Replace a ReplicaSet's ownerReferences, uid as precondition.
    fn set_owners(
        &self,
        name: &str,
        uid: &str,
        owner_references: &[OwnerReference],
    ) -> impl Future<Output = Result<(), kube::Error>> + Send;
    /// Create a ReplicaSet; returns its resourceVersion.
    fn create_replica_set(&self, rs: &ReplicaSet)
    -> impl Future<Output = Result<String, kube::Error>> + Send;
    /// Set a ReplicaSet's replicas, minReadySeconds and annotations, its resourceVersion as precondition;
    /// returns the new resourceVersion.
    fn update_replica_set(
        &self,
        name: &str,
        resource_version: &str,
        replicas: i32,
        min_ready_seconds: i32,
        annotations: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<String, kube::Error>> + Send;
    /// Delete a ReplicaSet, uid as precondition.
    fn delete_replica_set(
        &self,
        name: &str,
        uid: &str,
    ) -> impl Future<Output = Result<(), kube::Error>> + Send;
    /// Set the Deployment's revision annotation with `resource_version` as precondition; returns the new
    /// resourceVersion.
    fn set_revision(
        &self,
        resource_version: &str,
        revision: &str,
    ) -> impl Future<Output = Result<String, kube::Error>> + Send;
    /// Write the Deployment's status with `resource_version` as precondition; returns the new one.
    fn update_status(
        &self,
        resource_version: &str,
        status: &DeploymentStatus,
    ) -> impl Future<Output = Result<String, kube::Error>> + Send;
    /// Record an Event on the Deployment.
    fn event(&self, type_: &str, reason: &str, message: &str) -> impl Future<Output = ()> + Send;
}

/// How an execution ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Every write was made.
    Done,
    /// A write met a conflict or a missing object: the world moved; re-plan.
    Replan,
}

fn transient(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409 || s.code == 404)
}

fn message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

/// Carry out `steps` for `d` in order, stopping at the first failure. Adoptions re-check the Deployment
/// live first. A refused ReplicaSet create is reported as upstream does: a Warning `ReplicaSetCreateError`
/// Event and `Progressing=False` with that reason.
///
/// # Errors
/// The first failure that is neither a conflict nor a missing object, as a message.
pub(crate) async fn execute<O: Objects>(
    objects: &O,
    d: &Deployment,
    steps: Vec<Step>,
) -> Result<Outcome, String> {
    let mut rv = d.metadata.resource_version.clone().unwrap_or_default();
    // A ReplicaSet written twice in one sync: the second write's precondition is what the first returned
    // (upstream carries on with the object its `Update` returned).
    let mut written: HashMap<String, String> = HashMap::new();
    let mut checked = false;
    for step in steps {
        let r = match &step {
            Step::SetOwners {
                name,
                uid,
                owner_references,
                adopt,
            } => {
                if *adopt && !checked {
                    objects.can_adopt().await?;
                    checked = true;
                }
                objects.set_owners(name, uid, owner_references).await
            }
            Step::CreateReplicaSet(rs) => {
                let name = rs.metadata.name.clone().unwrap_or_default();
                let r = objects.create_replica_set(rs).await.map(|new| {
                    written.insert(name, new);
                });
                if let Err(e) = &r
                    && !transient(e)
                    && !message(e).contains("because it is being terminated")
                {
                    let msg = format!(
                        "Failed to create new replica set \"{}\": {}",
                        rs.metadata.name.as_deref().unwrap_or(""),
                        message(e)
                    );
                    let mut st = d.status.clone().unwrap_or_default();
                    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
                    if d.spec
                        .as_ref()
                        .and_then(|s| s.progress_deadline_seconds)
                        .is_some_and(|p| p != i32::MAX)
                    {
                        let conds = st.conditions.get_or_insert_with(Vec::new);
                        conds.retain(|c| c.type_ != "Progressing");
                        conds.push(k8s_openapi::api::apps::v1::DeploymentCondition {
                            type_: "Progressing".into(),
                            status: "False".into(),
                            reason: Some(plan::reason::FAILED_RS_CREATE.into()),
                            message: Some(msg.clone()),
                            last_update_time: Some(now.clone()),
                            last_transition_time: Some(now),
                        });
                        let _ = objects.update_status(&rv, &st).await;
                    }
                    objects
                        .event("Warning", plan::reason::FAILED_RS_CREATE, &msg)
                        .await;
                }
                r
            }
            Step::UpdateReplicaSet {
                name,
                resource_version,
                replicas,
                min_ready_seconds,
                annotations,
            } => {
                let precondition = written.get(name).unwrap_or(resource_version).clone();
                objects
                    .update_replica_set(name, &precondition, *replicas, *min_ready_seconds, annotations)
                    .await
                    .map(|new| {
                        written.insert(name.clone(), new);
                    })
            }
            Step::DeleteReplicaSet { name, uid } => objects.delete_replica_set(name, uid).await,
            Step::SetRevision(revision) => objects.set_revision(&rv, revision).await.map(|new| rv = new),
            Step::UpdateStatus(st) => objects.update_status(&rv, st).await.map(|new| rv = new),
            Step::Event {
                type_,
                reason,
                message,
            } => {
                objects.event(type_, reason, message).await;
                Ok(())
            }
        };
        if let Err(e) = r {
            if transient(&e) {
                return Ok(Outcome::Replan);
            }
            return Err(message(&e));
        }
    }
    Ok(Outcome::Done)
}

/// Run the Deployment controller until the process ends.
pub async fn run(client: kube::Client, shared: SharedInformers) {
    let cfg = watcher::Config::default().any_semantic();
    let mut informers = Informers::new();
    let deployments = informers.watch_shared(&shared, Api::<Deployment>::all(client.clone()), cfg.clone());
    let replica_sets = informers.watch_shared(&shared, Api::<ReplicaSet>::all(client.clone()), cfg.clone());
    let pods = informers.watch_shared(&shared, Api::<Pod>::all(client.clone()), cfg);
    let settings = Settings {
        resync: Duration::from_secs(1),
        ..Settings::default()
    };
    // A pass every second at least: as often as a progress deadline (`requeue_after`) needs looking at.
    let mut passes = informers.into_loop("deployment", settings);
    while let Some(mut pass) = passes.next_pass().await {
        let all_rs = replica_sets.state();
        let all_pods = pods.state();
        let mut rs_by_ns: HashMap<&str, Vec<&ReplicaSet>> = HashMap::new();
        for r in &all_rs {
            rs_by_ns
                .entry(r.metadata.namespace.as_deref().unwrap_or(""))
                .or_default()
                .push(r);
        }
        let mut pods_by_ns: HashMap<&str, Vec<&Pod>> = HashMap::new();
        for p in &all_pods {
            pods_by_ns
                .entry(p.metadata.namespace.as_deref().unwrap_or(""))
                .or_default()
                .push(p);
        }
        for d in deployments.state() {
            let namespace = d.metadata.namespace.clone().unwrap_or_default();
            let name = d.metadata.name.clone().unwrap_or_default();
            let key = format!("Deployment {namespace}/{name}");
            let p = plan(&Observed {
                deployment: &d,
                replica_sets: rs_by_ns
                    .get(namespace.as_str())
                    .map(Vec::as_slice)
                    .unwrap_or_default(),
                pods: pods_by_ns
                    .get(namespace.as_str())
                    .map(Vec::as_slice)
                    .unwrap_or_default(),
                now: jiff::Timestamp::now(),
            });
            if p.steps.is_empty() {
                continue;
            }
            let objects = Kube {
                client: client.clone(),
                deployments: Api::namespaced(client.clone(), &namespace),
                replica_sets: Api::namespaced(client.clone(), &namespace),
                d: (*d).clone(),
            };
            let d = (*d).clone();
            pass.step(&key, async move {
                match execute(&objects, &d, p.steps).await {
                    Ok(_) => Ok(()),
                    Err(e) => Err(e),
                }
            })
            .await;
        }
    }
}

/// The Deployment controller's writes through the API.
struct Kube {
    client: kube::Client,
    deployments: Api<Deployment>,
    replica_sets: Api<ReplicaSet>,
    d: Deployment,
}

impl Objects for Kube {
    async fn can_adopt(&self) -> Result<(), String> {
        crate::workload::controller_ref::can_adopt(
            &self.deployments,
            self.d.metadata.name.as_deref().unwrap_or(""),
            self.d.metadata.uid.as_deref().unwrap_or(""),
        )
        .await
        .map_err(|e| e.to_string())
    }

    async fn set_owners(
        &self,
        name: &str,
        uid: &str,
        owner_references: &[OwnerReference],
    ) -> Result<(), kube::Error> {
        let patch = json!({"metadata": {"uid": uid, "ownerReferences": owner_references}});
        self.replica_sets
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map(|_| ())
    }

    async fn create_replica_set(&self, rs: &ReplicaSet) -> Result<String, kube::Error> {
        let created = self.replica_sets.create(&PostParams::default(), rs).await?;
        Ok(created.metadata.resource_version.unwrap_or_default())
    }

    async fn update_replica_set(
        &self,
        name: &str,
        resource_version: &str,
        replicas: i32,
        min_ready_seconds: i32,
        annotations: &BTreeMap<String, String>,
    ) -> Result<String, kube::Error> {
        let patch = json!({
            "metadata": {"resourceVersion": resource_version, "annotations": annotations},
            "spec": {"replicas": replicas, "minReadySeconds": min_ready_seconds}
        });
        let rs = self
            .replica_sets
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        Ok(rs.metadata.resource_version.unwrap_or_default())
    }

    async fn delete_replica_set(&self, name: &str, uid: &str) -> Result<(), kube::Error> {
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(uid.into()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        self.replica_sets.delete(name, &dp).await.map(|_| ())
    }

    async fn set_revision(&self, resource_version: &str, revision: &str) -> Result<String, kube::Error> {
        let patch = json!({"metadata": {"resourceVersion": resource_version, "annotations": {plan::REVISION: revision}}});
        let d = self
            .deployments
            .patch(
                self.d.metadata.name.as_deref().unwrap_or(""),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await?;
        Ok(d.metadata.resource_version.unwrap_or_default())
    }

    async fn update_status(
        &self,
        resource_version: &str,
        status: &DeploymentStatus,
    ) -> Result<String, kube::Error> {
        let mut st = serde_json::to_value(status).unwrap_or_else(|_| json!({}));
        if status.conditions.as_ref().is_none_or(Vec::is_empty) {
            st["conditions"] = serde_json::Value::Null;
        }
        let patch = json!({"metadata": {"resourceVersion": resource_version}, "status": st});
        let d = self
            .deployments
            .patch_status(
                self.d.metadata.name.as_deref().unwrap_or(""),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await?;
        Ok(d.metadata.resource_version.unwrap_or_default())
    }

    async fn event(&self, type_: &str, reason: &str, message: &str) {
        let namespace = self.d.metadata.namespace.clone().unwrap_or_default();
        let object = ObjectReference {
            api_version: Some("apps/v1".into()),
            kind: Some("Deployment".into()),
            name: self.d.metadata.name.clone(),
            namespace: Some(namespace.clone()),
            uid: self.d.metadata.uid.clone(),
            resource_version: self.d.metadata.resource_version.clone(),
            field_path: None,
        };
        let _ = crate::events::record(
            &self.client,
            &namespace,
            object,
            type_,
            reason,
            message,
            "deployment-controller",
        )
        .await;
    }
}
