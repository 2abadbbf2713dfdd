//! The volume provisioner and binder for Berth's local-path StorageClasses (upstream's PersistentVolume
//! controller, `pkg/controller/volume/persistentvolume`, with an in-tree provisioner like Rancher's
//! local-path-provisioner that k3s ships).
//!
//! Division of labour: this controller decides (which claim gets a volume, on which node, from which clone
//! source, when a claim is bound, released or expanded) and writes API objects only; the agent on the chosen
//! node does the filesystem work (`agent::volumes`): it creates or clones the directory of a `Pending`
//! volume and reports it `Available`, and removes a `Released` volume whose reclaim policy is `Delete`.
//!
//! Rules, as upstream:
//! - a claim of a class whose provisioner is [`PROVISIONER`] gets one PersistentVolume `pvc-<claim uid>`
//!   with the claim's request, access modes and volume mode, the class's reclaim policy (default `Delete`),
//!   a `claimRef`, and node affinity to one node: the claim's `volume.kubernetes.io/selected-node` (set by
//!   the scheduler) for `WaitForFirstConsumer`, any Ready node for `Immediate`;
//! - a claim without `storageClassName` uses the class annotated `storageclass.kubernetes.io/is-default-class`;
//!   a claim naming a class that does not exist stays Pending with a `ProvisioningFailed` event;
//! - a claim with `spec.dataSource` naming another claim is provisioned as a copy of that claim's volume
//!   (volume cloning), once the source is bound; the agent copies before the volume becomes Available;
//! - the claim is bound (`spec.volumeName`, `status.phase: Bound`, `status.capacity`) only once its volume is
//!   Available, so no pod can start on a half-made volume;
//! - a bound volume whose claim is gone becomes `Released`; a raised claim request raises the volume's
//!   capacity, then the claim's `status.capacity` (upstream's expansion flow without a resizer sidecar).

use controller_runtime::live::{self, Presence};
use controller_runtime::{Informers, Settings, SharedInformers};
use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, Node, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectReference,
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec, VolumeNodeAffinity,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{reflector, watcher};
use serde_json::json;
use std::collections::{BTreeMap, HashSet};

pub use api::wellknown::{
    CLONE_FROM, DEFAULT_CLASS, HOSTNAME_LABEL, LOCAL_PATH_PROVISIONER as PROVISIONER, PROVISIONED_BY,
    SELECTED_NODE, VOLUMES_DIR,
};
/// Claim annotations upstream's PV controller sets.
const STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
const BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
const BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";

/// Everything the decision needs (all namespaces).
pub struct Observed<'a> {
    /// StorageClasses.
    pub classes: &'a [StorageClass],
    /// PersistentVolumeClaims.
    pub claims: &'a [PersistentVolumeClaim],
    /// PersistentVolumes.
    pub volumes: &'a [PersistentVolume],
    /// Nodes.
    pub nodes: &'a [Node],
}

/// One action on the API.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Record the provisioner on a claim (upstream's storage-provisioner annotations).
    AnnotateClaim {
        /// Namespace.
        namespace: String,
        /// Claim name.
        name: String,
        /// Annotations to merge.
        annotations: BTreeMap<String, String>,
    },
    /// Create a volume (status phase Pending until the agent has made its directory).
    CreateVolume(Box<PersistentVolume>),
    /// Bind a claim to its Available volume: claim `spec.volumeName` and status, volume status Bound.
    Bind {
        /// Namespace.
        namespace: String,
        /// Claim name.
        claim: String,
        /// Volume name.
        volume: String,
        /// The volume's capacity.
        capacity: String,
        /// The volume's access modes.
        access_modes: Vec<String>,
    },
    /// Set a volume's `status.phase`.
    SetVolumePhase {
        /// Volume name.
        name: String,
        /// Phase.
        phase: &'static str,
    },
    /// Release a Bound volume whose claim the caches no longer hold: `status.phase: Released`, after a
    /// live read confirms the claim is gone (absent, or its name taken by another uid), as upstream's PV
    /// controller re-reads the claim before releasing (`syncVolume`). Nothing is released on a lagging or
    /// incomplete cache.
    Release {
        /// Volume name.
        name: String,
        /// The claim's namespace.
        claim_namespace: String,
        /// The claim's name.
        claim_name: String,
        /// The claim's uid in the volume's `claimRef`.
        claim_uid: String,
    },
    /// Raise a volume's `spec.capacity.storage`.
    ExpandVolume {
        /// Volume name.
        name: String,
        /// New capacity.
        storage: String,
    },
    /// Set a bound claim's `status.capacity.storage` (after its volume grew).
    SetClaimCapacity {
        /// Namespace.
        namespace: String,
        /// Claim name.
        name: String,
        /// Capacity.
        storage: String,
    },
    /// An Event on a claim.
    Event {
        /// Namespace.
        namespace: String,
        /// Claim name.
        claim: String,
        /// Claim uid.
        uid: String,
        /// `Normal` or `Warning`.
        type_: &'static str,
        /// Reason.
        reason: &'static str,
        /// Message.
        message: String,
    },
}

fn storage_of(q: Option<&BTreeMap<String, Quantity>>) -> Option<&str> {
    q.and_then(|m| m.get("storage")).map(|q| q.0.as_str())
}

fn claim_request(c: &PersistentVolumeClaim) -> Option<&str> {
    storage_of(
        c.spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref()),
    )
}

fn volume_capacity(v: &PersistentVolume) -> Option<&str> {
    storage_of(v.spec.as_ref().and_then(|s| s.capacity.as_ref()))
}

fn phase_of_volume(v: &PersistentVolume) -> &str {
    v.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn less(a: Option<&str>, b: Option<&str>) -> bool {
    match (a.and_then(api::quantity::parse), b.and_then(api::quantity::parse)) {
        (Some(a), Some(b)) => a < b,
        _ => false,
    }
}

/// Whether a node is Ready (its `Ready` condition is `True`).
pub fn node_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The node a volume is pinned to by its node affinity (`kubernetes.io/hostname In [node]`).
pub fn volume_node(v: &PersistentVolume) -> Option<&str> {
    v.spec
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_expressions.iter().flatten())
        .find(|e| e.key == HOSTNAME_LABEL && e.operator == "In")
        .and_then(|e| e.values.as_ref()?.first().map(String::as_str))
}

/// The class a claim uses: its `storageClassName`, else the default class. `Err(name)` when it names a
/// class that does not exist; `Ok(None)` when it names none and there is no default.
pub fn class_of<'a>(
    claim: &PersistentVolumeClaim,
    classes: &'a [StorageClass],
) -> Result<Option<&'a StorageClass>, String> {
    match claim.spec.as_ref().and_then(|s| s.storage_class_name.as_deref()) {
        Some("") => Ok(None),
        Some(name) => classes
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(name))
            .map(Some)
            .ok_or_else(|| name.to_string()),
        None => Ok(classes.iter().find(|c| {
            c.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_CLASS))
                .is_some_and(|v| v == "true")
        })),
    }
}

fn key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

/// Decide the next steps.
pub fn plan(o: &Observed) -> Vec<Step> {
    let mut steps = Vec::new();
    let claims_by_key: BTreeMap<String, &PersistentVolumeClaim> = o
        .claims
        .iter()
        .map(|c| {
            (
                key(
                    c.metadata.namespace.as_deref().unwrap_or(""),
                    c.metadata.name.as_deref().unwrap_or(""),
                ),
                c,
            )
        })
        .collect();
    let volume_by_name = |n: &str| o.volumes.iter().find(|v| v.metadata.name.as_deref() == Some(n));

    for claim in o.claims {
        let ns = claim.metadata.namespace.clone().unwrap_or_default();
        let name = claim.metadata.name.clone().unwrap_or_default();
        let uid = claim.metadata.uid.clone().unwrap_or_default();
        if claim.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let event = |type_, reason, message: String| Step::Event {
            namespace: ns.clone(),
            claim: name.clone(),
            uid: uid.clone(),
            type_,
            reason,
            message,
        };
        let spec = claim.spec.clone().unwrap_or_default();
        // Bound (or pre-bound by the user to a named volume).
        if let Some(vname) = spec.volume_name.as_deref().filter(|v| !v.is_empty()) {
            let Some(v) = volume_by_name(vname) else {
                continue;
            };
            let claim_phase = claim.status.as_ref().and_then(|s| s.phase.as_deref());
            let ours = v
                .spec
                .as_ref()
                .and_then(|s| s.claim_ref.as_ref())
                .is_some_and(|r| r.uid.as_deref() == Some(uid.as_str()));
            if ours && claim_phase != Some("Bound") && phase_of_volume(v) != "Pending" {
                steps.push(bind_step(&ns, &name, v));
                continue;
            }
            if ours && claim_phase == Some("Bound") {
                // A bound pair whose volume still says `Available` (its phase write was lost, or a stale
                // writer won) is repaired, as upstream's `syncVolume` sets `Bound` on a volume whose
                // claim is bound to it.
                if phase_of_volume(v) == "Available" {
                    steps.push(Step::SetVolumePhase {
                        name: vname.to_string(),
                        phase: "Bound",
                    });
                }
                let request = claim_request(claim);
                let capacity = volume_capacity(v);
                if less(capacity, request) {
                    steps.push(Step::ExpandVolume {
                        name: vname.to_string(),
                        storage: request.unwrap_or_default().to_string(),
                    });
                } else {
                    let status_capacity = storage_of(claim.status.as_ref().and_then(|s| s.capacity.as_ref()));
                    if capacity.is_some() && status_capacity != capacity {
                        steps.push(Step::SetClaimCapacity {
                            namespace: ns.clone(),
                            name: name.clone(),
                            storage: capacity.unwrap_or_default().to_string(),
                        });
                    }
                }
            }
            continue;
        }
        // A volume already provisioned for this claim: bind once the agent made it Available.
        if let Some(v) = o.volumes.iter().find(|v| {
            v.spec
                .as_ref()
                .and_then(|s| s.claim_ref.as_ref())
                .is_some_and(|r| r.uid.as_deref() == Some(uid.as_str()))
        }) {
            // Available: the agent made it. Bound already: an earlier bind wrote the volume but not the claim.
            if matches!(phase_of_volume(v), "Available" | "Bound") {
                steps.push(bind_step(&ns, &name, v));
                if phase_of_volume(v) == "Available" {
                    steps.push(Step::SetVolumePhase {
                        name: v.metadata.name.clone().unwrap_or_default(),
                        phase: "Bound",
                    });
                }
            }
            continue;
        }
        let class = match class_of(claim, o.classes) {
            Ok(Some(c)) => c,
            Ok(None) => continue,
            Err(missing) => {
                steps.push(event(
                    "Warning",
                    "ProvisioningFailed",
                    format!("storageclass.storage.k8s.io \"{missing}\" not found"),
                ));
                continue;
            }
        };
        if class.provisioner != PROVISIONER {
            continue;
        }
        let annotations = claim.metadata.annotations.clone().unwrap_or_default();
        if annotations.get(STORAGE_PROVISIONER).map(String::as_str) != Some(PROVISIONER) {
            steps.push(Step::AnnotateClaim {
                namespace: ns.clone(),
                name: name.clone(),
                annotations: [
                    (STORAGE_PROVISIONER.to_string(), PROVISIONER.to_string()),
                    (BETA_STORAGE_PROVISIONER.to_string(), PROVISIONER.to_string()),
                ]
                .into(),
            });
        }
        let wait_for_consumer = class.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer");
        let node = if wait_for_consumer {
            match annotations.get(SELECTED_NODE) {
                Some(n) => o
                    .nodes
                    .iter()
                    .find(|x| x.metadata.name.as_deref() == Some(n.as_str())),
                None => {
                    continue;
                }
            }
        } else {
            let mut ready: Vec<&Node> = o
                .nodes
                .iter()
                .filter(|n| node_ready(n) && volumes_dir(n).is_some())
                .collect();
            ready.sort_by_key(|n| n.metadata.name.clone());
            ready.first().copied()
        };
        let Some(node) = node else { continue };
        let Some(dir) = volumes_dir(node) else { continue };
        let node_name = node.metadata.name.clone().unwrap_or_default();
        // Cloning: the source claim must be bound to a volume on the same node.
        let mut clone_from = None;
        if let Some(ds) = spec
            .data_source
            .as_ref()
            .filter(|d| d.kind == "PersistentVolumeClaim")
        {
            let source = claims_by_key
                .get(&key(&ns, &ds.name))
                .and_then(|c| c.spec.as_ref()?.volume_name.as_deref())
                .and_then(volume_by_name);
            match source {
                Some(v) if volume_node(v) == Some(node_name.as_str()) => {
                    clone_from = v.metadata.name.clone();
                }
                Some(_) => {
                    steps.push(event(
                        "Warning",
                        "ProvisioningFailed",
                        format!(
                            "clone source claim \"{}\" is on another node than {node_name}",
                            ds.name
                        ),
                    ));
                    continue;
                }
                None => continue,
            }
        }
        let pv = new_volume(claim, class, &node_name, dir, clone_from.as_deref());
        steps.push(event(
            "Normal",
            "ProvisioningSucceeded",
            format!(
                "Successfully provisioned volume {} on node {node_name}",
                pv.metadata.name.clone().unwrap_or_default()
            ),
        ));
        steps.push(Step::CreateVolume(Box::new(pv)));
    }

    // Volumes whose claim is gone are Released (the agent then deletes those with reclaim policy Delete).
    for v in o.volumes {
        if phase_of_volume(v) != "Bound" {
            continue;
        }
        let Some(r) = v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
            continue;
        };
        let claim = claims_by_key.get(&key(
            r.namespace.as_deref().unwrap_or(""),
            r.name.as_deref().unwrap_or(""),
        ));
        if claim.is_none_or(|c| c.metadata.uid != r.uid) {
            steps.push(Step::Release {
                name: v.metadata.name.clone().unwrap_or_default(),
                claim_namespace: r.namespace.clone().unwrap_or_default(),
                claim_name: r.name.clone().unwrap_or_default(),
                claim_uid: r.uid.clone().unwrap_or_default(),
            });
        }
    }
    steps
}

fn volumes_dir(n: &Node) -> Option<&str> {
    n.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(VOLUMES_DIR))
        .map(String::as_str)
}

fn bind_step(ns: &str, claim: &str, v: &PersistentVolume) -> Step {
    Step::Bind {
        namespace: ns.to_string(),
        claim: claim.to_string(),
        volume: v.metadata.name.clone().unwrap_or_default(),
        capacity: volume_capacity(v).unwrap_or_default().to_string(),
        access_modes: v
            .spec
            .as_ref()
            .and_then(|s| s.access_modes.clone())
            .unwrap_or_default(),
    }
}

/// The volume for `claim` on `node`, its directory under the node's `volumes_dir`.
pub fn new_volume(
    claim: &PersistentVolumeClaim,
    class: &StorageClass,
    node: &str,
    volumes_dir: &str,
    clone_from: Option<&str>,
) -> PersistentVolume {
    let ns = claim.metadata.namespace.clone().unwrap_or_default();
    let name = claim.metadata.name.clone().unwrap_or_default();
    let uid = claim.metadata.uid.clone().unwrap_or_default();
    let pv_name = format!("pvc-{uid}");
    let spec = claim.spec.clone().unwrap_or_default();
    let mut annotations: BTreeMap<String, String> =
        [(PROVISIONED_BY.to_string(), PROVISIONER.to_string())].into();
    if let Some(src) = clone_from {
        annotations.insert(CLONE_FROM.into(), src.into());
    }
    let request = claim_request(claim).unwrap_or("0").to_string();
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(pv_name.clone()),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: Some([("storage".to_string(), Quantity(request))].into()),
            access_modes: spec.access_modes.clone(),
            persistent_volume_reclaim_policy: Some(
                class.reclaim_policy.clone().unwrap_or_else(|| "Delete".into()),
            ),
            storage_class_name: class.metadata.name.clone(),
            volume_mode: Some(spec.volume_mode.clone().unwrap_or_else(|| "Filesystem".into())),
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                namespace: Some(ns.clone()),
                name: Some(name.clone()),
                uid: Some(uid),
                ..ObjectReference::default()
            }),
            host_path: Some(HostPathVolumeSource {
                path: format!("{}/{pv_name}_{ns}_{name}", volumes_dir.trim_end_matches('/')),
                type_: Some("DirectoryOrCreate".into()),
            }),
            node_affinity: Some(VolumeNodeAffinity {
                required: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: HOSTNAME_LABEL.into(),
                            operator: "In".into(),
                            values: Some(vec![node.to_string()]),
                        }]),
                        match_fields: None,
                    }],
                }),
            }),
            ..PersistentVolumeSpec::default()
        }),
        status: None,
    }
}

/// Run the provisioner and binder until the process ends: caches of classes, claims, volumes and nodes;
/// once all four have listed (controller-runtime), plan over them after each burst of changes (and every
/// few seconds) and execute.
pub async fn run(client: kube::Client, shared: SharedInformers) {
    let cfg = watcher::Config::default().any_semantic();
    let mut informers = Informers::new();
    let classes = informers.watch_shared(&shared, Api::<StorageClass>::all(client.clone()), cfg.clone());
    let claims = informers.watch_shared(
        &shared,
        Api::<PersistentVolumeClaim>::all(client.clone()),
        cfg.clone(),
    );
    let volumes = informers.watch_shared(&shared, Api::<PersistentVolume>::all(client.clone()), cfg.clone());
    let nodes = informers.watch_shared(&shared, Api::<Node>::all(client.clone()), cfg);
    let mut passes = informers.into_loop("persistentvolume", Settings::default());
    let mut recorded: HashSet<(String, String)> = HashSet::new();
    while let Some(mut pass) = passes.next_pass().await {
        let (c, cl, v, n) = (
            snapshot_of(&classes),
            snapshot_of(&claims),
            snapshot_of(&volumes),
            snapshot_of(&nodes),
        );
        for step in plan(&Observed {
            classes: &c,
            claims: &cl,
            volumes: &v,
            nodes: &n,
        }) {
            if let Step::Event { uid, message, .. } = &step
                && !recorded.insert((uid.clone(), message.clone()))
            {
                continue;
            }
            pass.step(&step_key(&step), execute(&client, step.clone())).await;
        }
    }
}

/// The object a step acts on, for back-off and logs.
fn step_key(step: &Step) -> String {
    match step {
        Step::AnnotateClaim { namespace, name, .. }
        | Step::SetClaimCapacity { namespace, name, .. }
        | Step::Bind {
            namespace,
            claim: name,
            ..
        }
        | Step::Event {
            namespace,
            claim: name,
            ..
        } => format!("PersistentVolumeClaim {namespace}/{name}"),
        Step::CreateVolume(pv) => format!("PersistentVolume {}", pv.metadata.name.as_deref().unwrap_or("")),
        Step::SetVolumePhase { name, .. } | Step::Release { name, .. } | Step::ExpandVolume { name, .. } => {
            format!("PersistentVolume {name}")
        }
    }
}

fn snapshot_of<K>(s: &reflector::Store<K>) -> Vec<K>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    s.state().iter().map(|o| (**o).clone()).collect()
}

type StepError = Box<dyn std::error::Error + Send + Sync>;

async fn execute(client: &kube::Client, step: Step) -> Result<(), StepError> {
    let pp = PatchParams::default();
    match step {
        Step::AnnotateClaim {
            namespace,
            name,
            annotations,
        } => {
            let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &namespace);
            let patch = json!({"metadata": {"annotations": annotations}});
            api.patch(&name, &pp, &Patch::Merge(patch)).await?;
            Ok(())
        }
        Step::CreateVolume(pv) => {
            let api: Api<PersistentVolume> = Api::all(client.clone());
            match api.create(&PostParams::default(), &pv).await {
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
                other => other.map(|_| ()).map_err(Into::into),
            }
        }
        Step::Bind {
            namespace,
            claim,
            volume,
            capacity,
            access_modes,
        } => {
            let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &namespace);
            let patch = json!({"metadata": {"annotations": {BIND_COMPLETED: "yes", BOUND_BY_CONTROLLER: "yes"}},
                               "spec": {"volumeName": volume}});
            api.patch(&claim, &pp, &Patch::Merge(patch)).await?;
            let status = json!({"status": {"phase": "Bound", "accessModes": access_modes,
                                           "capacity": {"storage": capacity}}});
            api.patch_status(&claim, &pp, &Patch::Merge(status)).await?;
            Ok(())
        }
        Step::Release {
            name,
            claim_namespace,
            claim_name,
            claim_uid,
        } => {
            let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &claim_namespace);
            if live::presence(&claims, &claim_name, &claim_uid).await? == Presence::Present {
                tracing::info!(volume = %name, claim = %claim_name, "claim still exists (cache behind); not releasing");
                return Ok(());
            }
            let api: Api<PersistentVolume> = Api::all(client.clone());
            let status = json!({"status": {"phase": "Released"}});
            api.patch_status(&name, &pp, &Patch::Merge(status)).await?;
            tracing::info!(volume = %name, claim = %claim_name, "claim gone: volume released");
            Ok(())
        }
        Step::SetVolumePhase { name, phase } => {
            let api: Api<PersistentVolume> = Api::all(client.clone());
            let status = json!({"status": {"phase": phase}});
            api.patch_status(&name, &pp, &Patch::Merge(status)).await?;
            Ok(())
        }
        Step::ExpandVolume { name, storage } => {
            let api: Api<PersistentVolume> = Api::all(client.clone());
            let patch = json!({"spec": {"capacity": {"storage": storage}}});
            api.patch(&name, &pp, &Patch::Merge(patch)).await?;
            Ok(())
        }
        Step::SetClaimCapacity {
            namespace,
            name,
            storage,
        } => {
            let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &namespace);
            let status = json!({"status": {"capacity": {"storage": storage}}});
            api.patch_status(&name, &pp, &Patch::Merge(status)).await?;
            Ok(())
        }
        Step::Event {
            namespace,
            claim,
            uid,
            type_,
            reason,
            message,
        } => {
            let object = ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                namespace: Some(namespace.clone()),
                name: Some(claim),
                uid: Some(uid),
                ..ObjectReference::default()
            };
            crate::events::record(
                client,
                &namespace,
                object,
                type_,
                reason,
                &message,
                "persistentvolume-controller",
            )
            .await?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn class(name: &str, mode: &str, default: bool) -> StorageClass {
        let ann = if default {
            json!({DEFAULT_CLASS: "true"})
        } else {
            json!({})
        };
        serde_json::from_value(json!({"metadata": {"name": name, "annotations": ann},
            "provisioner": PROVISIONER, "volumeBindingMode": mode, "reclaimPolicy": "Retain"}))
        .expect("class")
    }

    fn node(name: &str) -> Node {
        serde_json::from_value(
            json!({"metadata": {"name": name, "annotations": {VOLUMES_DIR: "/data/volumes"}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
        )
        .expect("node")
    }

    fn claim(name: &str, extra: Value) -> PersistentVolumeClaim {
        let mut v = json!({"metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}")},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
            "status": {"phase": "Pending"}});
        json_patch::merge(&mut v, &extra);
        serde_json::from_value(v).expect("claim")
    }

    fn created(steps: &[Step]) -> Vec<&PersistentVolume> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::CreateVolume(v) => Some(v.as_ref()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn wait_for_first_consumer_provisions_on_the_selected_node_only() {
        let classes = [class("local", "WaitForFirstConsumer", true)];
        let nodes = [node("a"), node("b")];
        let waiting = [claim("c", json!({}))];
        let steps = plan(&Observed {
            classes: &classes,
            claims: &waiting,
            volumes: &[],
            nodes: &nodes,
        });
        assert!(
            created(&steps).is_empty(),
            "default class, no selected node yet: {steps:?}"
        );
        let selected = [claim(
            "c",
            json!({"metadata": {"annotations": {SELECTED_NODE: "b"}}}),
        )];
        let steps = plan(&Observed {
            classes: &classes,
            claims: &selected,
            volumes: &[],
            nodes: &nodes,
        });
        let pv = created(&steps)[0].clone();
        assert_eq!(pv.metadata.name.as_deref(), Some("pvc-uid-c"));
        assert_eq!(volume_node(&pv), Some("b"));
        let spec = pv.spec.clone().expect("spec");
        assert_eq!(spec.persistent_volume_reclaim_policy.as_deref(), Some("Retain"));
        assert_eq!(spec.capacity.expect("cap")["storage"].0, "1Gi");
        assert_eq!(
            spec.host_path.expect("hostPath").path,
            "/data/volumes/pvc-uid-c_ns_c"
        );
        assert_eq!(spec.claim_ref.expect("ref").uid.as_deref(), Some("uid-c"));
        // Not bound until the agent reports the volume Available.
        let mut pending = pv.clone();
        pending.status = serde_json::from_value(json!({"phase": "Pending"})).expect("status");
        let steps = plan(&Observed {
            classes: &classes,
            claims: &selected,
            volumes: &[pending.clone()],
            nodes: &nodes,
        });
        assert!(steps.is_empty(), "{steps:?}");
        let mut available = pending;
        available.status = serde_json::from_value(json!({"phase": "Available"})).expect("status");
        let steps = plan(&Observed {
            classes: &classes,
            claims: &selected,
            volumes: &[available],
            nodes: &nodes,
        });
        assert!(
            matches!(&steps[0], Step::Bind { volume, capacity, .. } if volume == "pvc-uid-c" && capacity == "1Gi"),
            "{steps:?}"
        );
        assert!(matches!(&steps[1], Step::SetVolumePhase { phase: "Bound", .. }));
    }

    #[test]
    fn missing_class_is_reported_and_other_provisioners_are_left_alone() {
        let nodes = [node("a")];
        let claims = [claim("c", json!({"spec": {"storageClassName": "nope"}}))];
        let steps = plan(&Observed {
            classes: &[],
            claims: &claims,
            volumes: &[],
            nodes: &nodes,
        });
        assert!(
            matches!(&steps[..], [Step::Event { reason: "ProvisioningFailed", message, .. }]
            if message == "storageclass.storage.k8s.io \"nope\" not found"),
            "{steps:?}"
        );
        let mut other = class("ebs", "Immediate", false);
        other.provisioner = "ebs.csi.aws.com".into();
        let claims = [claim("c", json!({"spec": {"storageClassName": "ebs"}}))];
        let steps = plan(&Observed {
            classes: &[other],
            claims: &claims,
            volumes: &[],
            nodes: &nodes,
        });
        assert!(steps.is_empty(), "{steps:?}");
    }

    #[test]
    fn clone_waits_for_a_bound_source_and_names_its_volume() {
        let classes = [class("now", "Immediate", true)];
        let nodes = [node("a")];
        let src = claim("src", json!({}));
        let dst = claim(
            "dst",
            json!({"spec": {"dataSource": {"kind": "PersistentVolumeClaim", "name": "src"}}}),
        );
        let steps = plan(&Observed {
            classes: &classes,
            claims: &[src.clone(), dst.clone()],
            volumes: &[],
            nodes: &nodes,
        });
        let made: Vec<_> = created(&steps)
            .iter()
            .map(|v| v.metadata.name.clone().unwrap_or_default())
            .collect();
        assert_eq!(made, ["pvc-uid-src"], "the clone waits for its source");
        let src_pv = new_volume(&src, &classes[0], "a", "/data/volumes", None);
        let mut src_bound = src.clone();
        src_bound.spec.as_mut().expect("spec").volume_name = Some("pvc-uid-src".into());
        let steps = plan(&Observed {
            classes: &classes,
            claims: &[src_bound, dst],
            volumes: &[src_pv],
            nodes: &nodes,
        });
        let clone = created(&steps)[0];
        assert_eq!(
            clone.metadata.annotations.as_ref().expect("ann")[CLONE_FROM],
            "pvc-uid-src"
        );
    }

    #[test]
    fn a_bound_claims_volume_left_available_is_set_bound() {
        let classes = [class("now", "Immediate", true)];
        let nodes = [node("a")];
        let c = claim(
            "c",
            json!({"spec": {"volumeName": "pvc-uid-c"}, "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}}}),
        );
        let mut pv = new_volume(&c, &classes[0], "a", "/data/volumes", None);
        pv.status = serde_json::from_value(json!({"phase": "Available"})).expect("status");
        let steps = plan(&Observed {
            classes: &classes,
            claims: std::slice::from_ref(&c),
            volumes: std::slice::from_ref(&pv),
            nodes: &nodes,
        });
        assert_eq!(
            steps,
            [Step::SetVolumePhase {
                name: "pvc-uid-c".into(),
                phase: "Bound"
            }]
        );
        pv.status = serde_json::from_value(json!({"phase": "Bound"})).expect("status");
        let steps = plan(&Observed {
            classes: &classes,
            claims: &[c],
            volumes: &[pv],
            nodes: &nodes,
        });
        assert_eq!(steps, [], "a consistent pair needs nothing");
    }

    #[test]
    fn bound_volume_of_a_deleted_claim_is_released_and_raised_requests_expand() {
        let classes = [class("now", "Immediate", true)];
        let nodes = [node("a")];
        let c = claim(
            "c",
            json!({"spec": {"volumeName": "pvc-uid-c"}, "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}}}),
        );
        let mut pv = new_volume(&c, &classes[0], "a", "/data/volumes", None);
        pv.status = serde_json::from_value(json!({"phase": "Bound"})).expect("status");
        let steps = plan(&Observed {
            classes: &classes,
            claims: &[],
            volumes: &[pv.clone()],
            nodes: &nodes,
        });
        assert_eq!(
            steps,
            [Step::Release {
                name: "pvc-uid-c".into(),
                claim_namespace: c.metadata.namespace.clone().unwrap_or_default(),
                claim_name: "c".into(),
                claim_uid: "uid-c".into(),
            }]
        );
        let mut grown = c.clone();
        grown
            .spec
            .as_mut()
            .and_then(|s| s.resources.as_mut())
            .and_then(|r| r.requests.as_mut())
            .expect("req")
            .insert("storage".into(), Quantity("2Gi".into()));
        let steps = plan(&Observed {
            classes: &classes,
            claims: &[grown.clone()],
            volumes: &[pv.clone()],
            nodes: &nodes,
        });
        assert_eq!(
            steps,
            [Step::ExpandVolume {
                name: "pvc-uid-c".into(),
                storage: "2Gi".into()
            }]
        );
        pv.spec
            .as_mut()
            .and_then(|s| s.capacity.as_mut())
            .expect("cap")
            .insert("storage".into(), Quantity("2Gi".into()));
        let steps = plan(&Observed {
            classes: &classes,
            claims: &[grown],
            volumes: &[pv],
            nodes: &nodes,
        });
        assert_eq!(
            steps,
            [Step::SetClaimCapacity {
                namespace: "ns".into(),
                name: "c".into(),
                storage: "2Gi".into()
            }]
        );
    }
}
