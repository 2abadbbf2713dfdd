//! The ReplicaSet controller, and the ReplicationController controller on the same code (upstream
//! `pkg/controller/replicaset`; `pkg/controller/replication` is the same controller over converted
//! objects, which is what [`Kind::ReplicationController`] does here).
//!
//! A set keeps `spec.replicas` pods from its template, named `<set>-<5 random chars>` (`generateName`):
//! it adopts matching orphans and releases pods that stopped matching (the shared
//! [`crate::workload::controller_ref`]), creates missing pods in slow-start batches (1, 2, 4, …; a failed
//! batch ends the sync) and deletes surplus ones in upstream's victim order
//! ([`crate::workload::pods::ordered_for_deletion`]), at most 500 either way per sync. **Expectations**
//! (upstream `ControllerExpectations`): after a sync created or deleted pods, the set is not managed
//! again until the pod cache shows every pod it created and none it deleted (or 5 minutes pass), so a
//! burst of events or a lagging cache never creates extra pods; a created pod that never shows up (created
//! and deleted between two passes) is dropped from the expectations after a live read finds it gone, where
//! upstream counts watch events. Status: `replicas`, `fullyLabeledReplicas`, `readyReplicas`,
//! `availableReplicas` (with `minReadySeconds`), `observedGeneration` and the `ReplicaFailure` condition.
//!
//! It runs on `controller-runtime`: caches of the sets and of pods, a pass over every set on complete
//! caches only.

mod execute;
pub mod plan;

#[cfg(test)]
mod tests;

pub use plan::{Observed, Plan, plan};

use controller_runtime::{Informers, Settings, SharedInformers, live};
use execute::{Outcome, PodControl};
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::runtime::watcher;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
type FastSet<K> = HashSet<K, foldhash::fast::RandomState>;
use std::time::Duration;
use tokio::time::Instant;

/// How long unmet expectations hold a set back at most (upstream `ExpectationsTimeout`).
pub const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(300);
/// After this long, expected creations still missing from the cache are confirmed by a live read.
const CONFIRM_MISSING_AFTER: Duration = Duration::from_secs(2);

/// Which kind a controller instance manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `apps/v1` ReplicaSet.
    ReplicaSet,
    /// `v1` ReplicationController (`spec.selector` is a plain map, `spec.template` optional).
    ReplicationController,
}

impl Kind {
    /// `apiVersion` of the kind.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::ReplicaSet => "apps/v1",
            Kind::ReplicationController => "v1",
        }
    }

    /// The kind's name.
    pub fn kind(self) -> &'static str {
        match self {
            Kind::ReplicaSet => "ReplicaSet",
            Kind::ReplicationController => "ReplicationController",
        }
    }

    /// Upstream's controller (and Event source) name.
    pub fn component(self) -> &'static str {
        match self {
            Kind::ReplicaSet => "replicaset-controller",
            Kind::ReplicationController => "replication-controller",
        }
    }

    fn resource(self) -> ApiResource {
        match self {
            Kind::ReplicaSet => ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk("apps", "v1", "ReplicaSet"),
                "replicasets",
            ),
            Kind::ReplicationController => ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk("", "v1", "ReplicationController"),
                "replicationcontrollers",
            ),
        }
    }

    /// The object as a ReplicaSet (upstream's RC controller converts each RC the same way: the selector
    /// map becomes `matchLabels`).
    pub fn as_replica_set(self, obj: &Value) -> Option<ReplicaSet> {
        let mut v = obj.clone();
        if self == Kind::ReplicationController {
            v["apiVersion"] = json!("apps/v1");
            v["kind"] = json!("ReplicaSet");
            if let Some(spec) = v.get_mut("spec").and_then(Value::as_object_mut) {
                let sel = spec.remove("selector").unwrap_or(Value::Null);
                spec.insert("selector".into(), json!({"matchLabels": sel}));
            }
        }
        serde_json::from_value(v).ok()
    }
}

/// Expected creations (pod names) and deletions (pod uids) of one set.
#[derive(Debug, Default)]
struct Expectations {
    creates: HashSet<String>,
    deletes: HashSet<String>,
    since: Option<Instant>,
}

impl Expectations {
    fn record(&mut self, out: &Outcome) {
        if out.created.is_empty() && out.deleted.is_empty() {
            return;
        }
        self.creates.extend(out.created.iter().cloned());
        self.deletes.extend(out.deleted.iter().cloned());
        self.since = Some(Instant::now());
    }

    /// Expected creations still unseen (at most `n`), for a live read.
    fn missing_creates(&self, n: usize) -> Vec<String> {
        self.creates.iter().take(n).cloned().collect()
    }

    /// A live read found an expected pod gone: it was created and deleted between two passes.
    fn forget_create(&mut self, name: &str) {
        self.creates.remove(name);
    }

    /// Drop what the cache now shows; whether nothing is left (or the expectations expired).
    fn satisfied(&mut self, ns: &NsPods) -> bool {
        self.creates.retain(|n| !ns.names.contains(n.as_str()));
        self.deletes.retain(|u| ns.live_uids.contains(u.as_str()));
        if self.creates.is_empty() && self.deletes.is_empty() {
            self.since = None;
            return true;
        }
        self.since.is_some_and(|s| s.elapsed() > EXPECTATIONS_TIMEOUT)
    }
}

/// One namespace's pods, indexed.
#[derive(Default)]
struct NsPods<'a> {
    pods: Vec<&'a Pod>,
    names: FastSet<&'a str>,
    /// Uids of pods not being deleted.
    live_uids: FastSet<&'a str>,
}

/// Run the ReplicaSet controller until the process ends.
pub async fn run(client: kube::Client, shared: SharedInformers) {
    run_kind(client, shared, Kind::ReplicaSet).await;
}

/// Run the ReplicationController controller until the process ends.
pub async fn run_replication_controllers(client: kube::Client, shared: SharedInformers) {
    run_kind(client, shared, Kind::ReplicationController).await;
}

async fn run_kind(client: kube::Client, shared: SharedInformers, kind: Kind) {
    let cfg = watcher::Config::default().any_semantic();
    let ar = kind.resource();
    let mut informers = Informers::new();
    let sets = informers.watch_shared_with(
        &shared,
        Api::<DynamicObject>::all_with(client.clone(), &ar),
        cfg.clone(),
        ar.clone(),
    );
    let pods = informers.watch_shared(&shared, Api::<Pod>::all(client.clone()), cfg);
    let settings = Settings {
        resync: Duration::from_secs(1),
        ..Settings::default()
    };
    let name = match kind {
        Kind::ReplicaSet => "replicaset",
        Kind::ReplicationController => "replicationcontroller",
    };
    let mut passes = informers.into_loop(name, settings);
    let mut expectations: HashMap<String, Expectations> = HashMap::new();
    while let Some(mut pass) = passes.next_pass().await {
        let all_pods = pods.state();
        let sets: Vec<ReplicaSet> = sets
            .state()
            .iter()
            .filter_map(|o| serde_json::to_value(&**o).ok())
            .filter_map(|v| kind.as_replica_set(&v))
            .collect();
        // Pods are indexed only in namespaces that hold a set (a cluster whose 10,000 pods have no
        // ReplicaSet pays one pass over them, not three indices of them), with foldhash, as these maps
        // are rebuilt every pass.
        let mut by_ns: FastMap<&str, NsPods> = sets
            .iter()
            .map(|rs| (rs.metadata.namespace.as_deref().unwrap_or(""), NsPods::default()))
            .collect();
        for p in &all_pods {
            let Some(ns) = by_ns.get_mut(p.metadata.namespace.as_deref().unwrap_or("")) else {
                continue;
            };
            ns.pods.push(p);
            if let Some(n) = p.metadata.name.as_deref() {
                ns.names.insert(n);
            }
            if let Some(u) = p.metadata.uid.as_deref()
                && p.metadata.deletion_timestamp.is_none()
            {
                ns.live_uids.insert(u);
            }
        }
        // A Deployment's ReplicaSets rank victims by all of the Deployment's pods (upstream
        // `getIndirectlyRelatedPods`).
        let mut siblings: HashMap<&str, Vec<&str>> = HashMap::new();
        for rs in &sets {
            if let (Some(c), Some(u)) = (
                crate::workload::controller_ref::controller_of(&rs.metadata),
                rs.metadata.uid.as_deref(),
            ) {
                siblings.entry(c.uid.as_str()).or_default().push(u);
            }
        }
        let mut pods_of: FastMap<&str, Vec<&Pod>> = FastMap::default();
        for p in by_ns.values().flat_map(|ns| ns.pods.iter()) {
            if let Some(c) = crate::workload::controller_ref::controller_of(&p.metadata) {
                pods_of.entry(c.uid.as_str()).or_default().push(p);
            }
        }
        let empty = NsPods::default();
        let mut seen = HashSet::new();
        for rs in &sets {
            let uid = rs.metadata.uid.clone().unwrap_or_default();
            seen.insert(uid.clone());
            let namespace = rs.metadata.namespace.clone().unwrap_or_default();
            let ns = by_ns.get(namespace.as_str()).unwrap_or(&empty);
            let exp = expectations.entry(uid.clone()).or_default();
            let mut satisfied = exp.satisfied(ns);
            let pods_api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
            if !satisfied && exp.since.is_some_and(|s| s.elapsed() > CONFIRM_MISSING_AFTER) {
                // A pod created and deleted between two passes never shows up in the cache: confirm.
                for n in exp.missing_creates(50) {
                    if let Ok(live::Presence::Absent) = live::presence(&pods_api, &n, "").await {
                        exp.forget_create(&n);
                    }
                }
                satisfied = exp.satisfied(ns);
            }
            let related: Vec<&Pod> = crate::workload::controller_ref::controller_of(&rs.metadata)
                .and_then(|c| siblings.get(c.uid.as_str()))
                .map(|rss| {
                    rss.iter()
                        .flat_map(|u| pods_of.get(u).into_iter().flatten().copied())
                        .collect()
                })
                .unwrap_or_default();
            let now = jiff::Timestamp::now();
            let p = plan(&Observed {
                rs,
                pods: &ns.pods,
                related: &related,
                expectations_satisfied: satisfied,
                now,
            });
            let active = plan::active_pods(&Observed {
                rs,
                pods: &ns.pods,
                related: &[],
                expectations_satisfied: satisfied,
                now,
            });
            let nothing_to_do = p.adopt.is_empty()
                && p.release.is_empty()
                && p.create == 0
                && p.delete.is_empty()
                && !plan::status_changed(rs.status.as_ref(), &plan::status(rs, &active, None, now).0);
            if nothing_to_do {
                continue;
            }
            let control = Kube {
                client: client.clone(),
                kind,
                pods: pods_api,
                sets: Api::namespaced_with(client.clone(), &namespace, &kind.resource()),
                rs: rs.clone(),
            };
            let key = format!(
                "{} {namespace}/{}",
                kind.kind(),
                rs.metadata.name.as_deref().unwrap_or("")
            );
            pass.step(&key, async {
                let out = execute::sync(&control, rs, kind, p, &ns.pods, &active, now).await;
                exp.record(&out);
                out.error.map_or(Ok(()), Err)
            })
            .await;
        }
        expectations.retain(|uid, _| seen.contains(uid));
    }
}

/// The set's writes through the API.
struct Kube {
    client: kube::Client,
    kind: Kind,
    pods: Api<Pod>,
    sets: Api<DynamicObject>,
    rs: ReplicaSet,
}

impl PodControl for Kube {
    async fn create_pod(&self, pod: &Pod) -> Result<Pod, kube::Error> {
        self.pods.create(&PostParams::default(), pod).await
    }

    async fn delete_pod(&self, name: &str, uid: &str) -> Result<(), kube::Error> {
        let dp = DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        self.pods.delete(name, &dp).await.map(|_| ())
    }

    async fn patch_pod_owners(
        &self,
        name: &str,
        uid: &str,
        owner_references: Vec<OwnerReference>,
    ) -> Result<(), kube::Error> {
        let patch = json!({"metadata": {"uid": uid, "ownerReferences": owner_references}});
        self.pods
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map(|_| ())
    }

    async fn can_adopt(&self) -> Result<(), String> {
        crate::workload::controller_ref::can_adopt(
            &self.sets,
            self.rs.metadata.name.as_deref().unwrap_or(""),
            self.rs.metadata.uid.as_deref().unwrap_or(""),
        )
        .await
        .map_err(|e| e.to_string())
    }

    async fn confirm_release(&self, name: &str, uid: &str) -> Result<bool, String> {
        let selector: LabelSelector = self
            .rs
            .spec
            .as_ref()
            .map(|s| s.selector.clone())
            .unwrap_or_default();
        crate::workload::controller_ref::confirm_release(
            &self.pods,
            name,
            uid,
            self.rs.metadata.uid.as_deref().unwrap_or(""),
            &selector,
        )
        .await
        .map_err(|e| e.to_string())
    }

    async fn update_status(&self, status: &ReplicaSetStatus) -> Result<(), kube::Error> {
        self.sets
            .patch_status(
                self.rs.metadata.name.as_deref().unwrap_or(""),
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status_patch(status)})),
            )
            .await
            .map(|_| ())
    }

    async fn event(&self, type_: &str, reason: &str, message: &str) {
        let namespace = self.rs.metadata.namespace.clone().unwrap_or_default();
        let object = ObjectReference {
            api_version: Some(self.kind.api_version().into()),
            kind: Some(self.kind.kind().into()),
            name: self.rs.metadata.name.clone(),
            namespace: Some(namespace.clone()),
            uid: self.rs.metadata.uid.clone(),
            resource_version: self.rs.metadata.resource_version.clone(),
            field_path: None,
        };
        let _ = crate::events::record(
            &self.client,
            &namespace,
            object,
            type_,
            reason,
            message,
            self.kind.component(),
        )
        .await;
    }
}

/// The status as a merge patch: absent conditions are `null`, so a removed `ReplicaFailure` goes away.
fn status_patch(st: &ReplicaSetStatus) -> Value {
    let mut v = serde_json::to_value(st).unwrap_or_else(|_| json!({}));
    if st.conditions.as_ref().is_none_or(Vec::is_empty) {
        v["conditions"] = Value::Null;
    }
    v
}
