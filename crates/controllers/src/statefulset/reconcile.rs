//! The StatefulSet controller's loop: a kube-runtime `Controller` over StatefulSets (woken by their
//! pods and ControllerRevisions), which reads the set's pods, claims and revisions, calls [`plan`] and
//! hands its steps to [`execute`] with the kube-backed [`Objects`]. Conflicts and "already exists" mean
//! the world moved: re-plan.

use super::execute::{Objects, Outcome, execute, transient};
use super::plan::{Observed, plan};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("statefulset {namespace}/{name}: {source}")]
    Api {
        /// Namespace.
        namespace: String,
        /// Set name.
        name: String,
        /// The failure.
        #[source]
        source: kube::Error,
    },
}

struct Ctx {
    client: kube::Client,
    /// Consecutive failures per set (`namespace/name`), for the error policy's back-off.
    failures: std::sync::Mutex<std::collections::HashMap<String, u32>>,
}

fn set_key(set: &StatefulSet) -> String {
    format!(
        "{}/{}",
        set.metadata.namespace.as_deref().unwrap_or(""),
        set.metadata.name.as_deref().unwrap_or("")
    )
}

/// Run the controller until the process ends. It is kube-runtime's `Controller` rather than a
/// controller-runtime loop because its reconcile reads the set's pods, claims and revisions live through
/// the API each time (never from a cache), so an incomplete cache can only delay a reconcile, never
/// mislead one; failures back off per set as controller-runtime's steps do.
pub async fn run(client: kube::Client) {
    let sets: Api<StatefulSet> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let revisions: Api<ControllerRevision> = Api::all(client.clone());
    let cfg = watcher::Config::default().any_semantic();
    Controller::new(sets, cfg.clone())
        .owns(pods, cfg.clone())
        .owns(revisions, cfg)
        .run(
            reconcile,
            error_policy,
            Arc::new(Ctx {
                client,
                failures: Default::default(),
            }),
        )
        .for_each(|_| async {})
        .await;
}

/// Conflicts and "not found" mean the world moved: re-plan soon, quietly. Anything else is logged at
/// warn and retried with a per-set exponential back-off (controller-runtime's).
fn error_policy(set: Arc<StatefulSet>, err: &Error, ctx: Arc<Ctx>) -> Action {
    let Error::Api { source, .. } = err;
    if transient(source) {
        return Action::requeue(Duration::from_millis(200));
    }
    let key = set_key(&set);
    let failures = {
        let mut f = ctx
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = f.entry(key.clone()).or_insert(0);
        *n += 1;
        *n
    };
    let delay = controller_runtime::Settings::default().backoff(failures);
    tracing::warn!(object = %format!("StatefulSet {key}"), error = %err, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

async fn reconcile(set: Arc<StatefulSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let namespace = set.metadata.namespace.clone().unwrap_or_default();
    let name = set.metadata.name.clone().unwrap_or_default();
    let wrap = |source: kube::Error| Error::Api {
        namespace: namespace.clone(),
        name: name.clone(),
        source,
    };
    let client = ctx.client.clone();
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let claims_api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &namespace);
    let revs_api: Api<ControllerRevision> = Api::namespaced(client.clone(), &namespace);
    let sets_api: Api<StatefulSet> = Api::namespaced(client.clone(), &namespace);
    // Read the set again so status and generation are current (the cache may lag our own writes).
    let set = match sets_api.get_opt(&name).await.map_err(wrap)? {
        Some(s) => s,
        None => return Ok(Action::await_change()),
    };
    // Pods matching the selector (candidates and adoptees) plus those we control that stopped matching.
    let selector = set
        .spec
        .as_ref()
        .and_then(|s| serde_json::to_value(&s.selector).ok())
        .and_then(|v| api::selector::LabelSelector::from_json(&v).ok())
        .map(|s| s.to_string())
        .unwrap_or_default();
    let mut pods = pods_api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(wrap)?
        .items;
    if !selector.is_empty() {
        // Controlled pods whose labels were changed by hand still need releasing (upstream ControllerRefManager).
        let all = pods_api
            .list(&ListParams::default().labels(super::identity::POD_INDEX_LABEL))
            .await
            .map_err(wrap)?
            .items;
        for p in all {
            if super::identity::is_controlled_by(&p.metadata, &set)
                && !pods.iter().any(|q| q.metadata.uid == p.metadata.uid)
            {
                pods.push(p);
            }
        }
    }
    let claims = claims_api.list(&ListParams::default()).await.map_err(wrap)?.items;
    // Every revision of the namespace: the plan keeps ours, adopts orphans matching the selector and
    // releases ours that stopped matching (upstream `ClaimControllerRevisions`).
    let revisions: Vec<ControllerRevision> = revs_api.list(&ListParams::default()).await.map_err(wrap)?.items;
    let observed = Observed {
        set: &set,
        pods: &pods,
        claims: &claims,
        revisions: &revisions,
        now: jiff::Timestamp::now(),
    };
    let p = plan(&observed);
    let mut objects = Kube {
        client,
        pods: pods_api,
        claims: claims_api,
        revisions: revs_api,
        sets: sets_api,
    };
    let outcome = execute(&mut objects, &set, &pods, p.steps).await.map_err(wrap)?;
    ctx.failures
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(&set_key(&set));
    Ok(match (outcome, p.requeue_after) {
        (Outcome::Replan, _) => Action::requeue(Duration::from_millis(100)),
        (Outcome::Done, Some(d)) => Action::requeue(d),
        (Outcome::Done, None) => Action::requeue(Duration::from_secs(30)),
    })
}

/// The controller's writes through the API, in the set's namespace.
struct Kube {
    client: kube::Client,
    pods: Api<Pod>,
    claims: Api<PersistentVolumeClaim>,
    revisions: Api<ControllerRevision>,
    sets: Api<StatefulSet>,
}

impl Objects for Kube {
    async fn create_revision(&mut self, revision: &ControllerRevision) -> Result<(), kube::Error> {
        self.revisions
            .create(&PostParams::default(), revision)
            .await
            .map(|_| ())
    }

    async fn renumber_revision(&mut self, name: &str, revision: i64) -> Result<(), kube::Error> {
        self.revisions
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"revision": revision})),
            )
            .await
            .map(|_| ())
    }

    async fn delete_revision(&mut self, name: &str) -> Result<(), kube::Error> {
        self.revisions
            .delete(name, &DeleteParams::default())
            .await
            .map(|_| ())
    }

    async fn patch_revision_owners(
        &mut self,
        name: &str,
        uid: &str,
        owner_references: Vec<OwnerReference>,
    ) -> Result<(), kube::Error> {
        patch_owners(&self.revisions, name, uid, owner_references).await
    }

    async fn patch_pod_owners(
        &mut self,
        name: &str,
        uid: &str,
        owner_references: Vec<OwnerReference>,
    ) -> Result<(), kube::Error> {
        patch_owners(&self.pods, name, uid, owner_references).await
    }

    async fn create_claim(&mut self, claim: &PersistentVolumeClaim) -> Result<(), kube::Error> {
        self.claims
            .create(&PostParams::default(), claim)
            .await
            .map(|_| ())
    }

    async fn patch_claim_owners(
        &mut self,
        name: &str,
        owner_references: Vec<OwnerReference>,
    ) -> Result<(), kube::Error> {
        let patch = json!({"metadata": {"ownerReferences": owner_references}});
        self.claims
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map(|_| ())
    }

    async fn expand_claim(&mut self, name: &str, storage: &str) -> Result<(), kube::Error> {
        let patch = json!({"spec": {"resources": {"requests": {"storage": storage}}}});
        self.claims
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map(|_| ())
    }

    async fn create_pod(&mut self, pod: &Pod) -> Result<(), kube::Error> {
        self.pods.create(&PostParams::default(), pod).await.map(|_| ())
    }

    async fn delete_pod(&mut self, name: &str, uid: &str) -> Result<(), kube::Error> {
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        self.pods.delete(name, &dp).await.map(|_| ())
    }

    async fn update_status(&mut self, set: &str, status: &StatefulSetStatus) -> Result<(), kube::Error> {
        self.sets
            .patch_status(
                set,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await
            .map(|_| ())
    }

    async fn event(
        &mut self,
        set: &StatefulSet,
        type_: &str,
        reason: &str,
        message: &str,
    ) -> Result<(), kube::Error> {
        record_event(&self.client, set, type_, reason, message).await
    }
}

/// Set an object's ownerReferences; `metadata.uid` in the patch is upstream's precondition
/// (ControllerRefManager's adopt and release).
async fn patch_owners<K>(
    api: &Api<K>,
    name: &str,
    uid: &str,
    owner_references: Vec<OwnerReference>,
) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = json!({"metadata": {"uid": uid, "ownerReferences": owner_references}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map(|_| ())
}

/// A core/v1 Event on the set, as upstream's recorder writes it (source `statefulset-controller`).
async fn record_event(
    client: &kube::Client,
    set: &StatefulSet,
    type_: &str,
    reason: &str,
    message: &str,
) -> Result<(), kube::Error> {
    let namespace = set.metadata.namespace.clone().unwrap_or_default();
    let object = ObjectReference {
        api_version: Some("apps/v1".into()),
        kind: Some("StatefulSet".into()),
        name: set.metadata.name.clone(),
        namespace: Some(namespace.clone()),
        uid: set.metadata.uid.clone(),
        resource_version: set.metadata.resource_version.clone(),
        field_path: None,
    };
    crate::events::record(
        client,
        &namespace,
        object,
        type_,
        reason,
        message,
        "statefulset-controller",
    )
    .await
}
