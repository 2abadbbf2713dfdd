//! Pod and claim identity of a StatefulSet (upstream `pkg/controller/statefulset/stateful_set_utils.go`):
//! names, ordinals, the pod built for an ordinal from a revision's template, the claims of an ordinal,
//! and the ownerReferences the PersistentVolumeClaim retention policy asks for.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use std::collections::BTreeMap;

/// `statefulset.kubernetes.io/pod-name`.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// `apps.kubernetes.io/pod-index`.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
/// `controller-revision-hash`.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// The set's name.
pub fn set_name(set: &StatefulSet) -> &str {
    set.metadata.name.as_deref().unwrap_or("")
}

/// `spec.ordinals.start` (0 when unset).
pub fn start_ordinal(set: &StatefulSet) -> i32 {
    set.spec
        .as_ref()
        .and_then(|s| s.ordinals.as_ref())
        .and_then(|o| o.start)
        .unwrap_or(0)
}

/// `spec.replicas` (1 when unset, as defaulting does).
pub fn replicas(set: &StatefulSet) -> i32 {
    set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// `<set>-<ordinal>`.
pub fn pod_name(set: &StatefulSet, ordinal: i32) -> String {
    format!("{}-{ordinal}", set_name(set))
}

/// The ordinal of a pod named `<set>-<n>`, if it is one of this set's names.
pub fn ordinal_of(set: &StatefulSet, pod_name: &str) -> Option<i32> {
    let rest = pod_name.strip_prefix(set_name(set))?.strip_prefix('-')?;
    if rest.is_empty()
        || !rest.bytes().all(|b| b.is_ascii_digit())
        || (rest.len() > 1 && rest.starts_with('0'))
    {
        return None;
    }
    rest.parse().ok()
}

/// `<template>-<set>-<ordinal>`.
pub fn claim_name(template: &str, set: &StatefulSet, ordinal: i32) -> String {
    format!("{template}-{}-{ordinal}", set_name(set))
}

/// The controller reference every pod of the set carries.
pub fn controller_ref(set: &StatefulSet) -> OwnerReference {
    crate::workload::controller_ref::new_controller_ref(&set.metadata, "apps/v1", "StatefulSet")
}

/// Whether `pod` is controlled by `set` (by uid).
pub fn is_controlled_by(pod_meta: &ObjectMeta, set: &StatefulSet) -> bool {
    crate::workload::controller_ref::is_controlled_by(
        pod_meta,
        set.metadata.uid.as_deref().unwrap_or_default(),
    )
}

fn vct_names(set: &StatefulSet) -> Vec<String> {
    set.spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.as_ref())
        .map(|v| v.iter().filter_map(|c| c.metadata.name.clone()).collect())
        .unwrap_or_default()
}

/// The pod of `ordinal` built from `template` at `revision` (upstream `newVersionedStatefulSetPod`):
/// template labels plus identity labels, hostname = pod name, subdomain = serviceName, a controller
/// reference, `generateName: <set>-` (the shared [`crate::workload::pods::pod_from_template`], upstream
/// `GetPodFromTemplate`, besides the name), and one volume per claim template bound to the ordinal's claim.
pub fn new_pod(set: &StatefulSet, template: &PodTemplateSpec, revision: &str, ordinal: i32) -> Pod {
    let name = pod_name(set, ordinal);
    let mut pod =
        crate::workload::pods::pod_from_template(template, &set.metadata, Some(controller_ref(set)));
    let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(REVISION_LABEL.into(), revision.into());
    pod.metadata.name = Some(name.clone());
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.hostname = Some(name);
    let service = set
        .spec
        .as_ref()
        .map(|s| s.service_name.clone())
        .unwrap_or_default();
    spec.subdomain = service.filter(|s| !s.is_empty());
    let templates = vct_names(set);
    let mut volumes: Vec<Volume> = spec
        .volumes
        .take()
        .unwrap_or_default()
        .into_iter()
        .filter(|v| !templates.contains(&v.name))
        .collect();
    for t in &templates {
        volumes.push(Volume {
            name: t.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim_name(t, set, ordinal),
                read_only: None,
            }),
            ..Volume::default()
        });
    }
    spec.volumes = if volumes.is_empty() { None } else { Some(volumes) };
    pod
}

/// The claims of `ordinal`, one per `volumeClaimTemplates` entry (upstream `getPersistentVolumeClaims`):
/// labels are the template's with the set's `matchLabels` on top (a template label of the same key is
/// overridden), so `kubectl get pvc -l app=…` finds them.
pub fn new_claims(set: &StatefulSet, ordinal: i32) -> Vec<PersistentVolumeClaim> {
    let Some(spec) = set.spec.as_ref() else {
        return Vec::new();
    };
    let match_labels = spec.selector.match_labels.clone().unwrap_or_default();
    spec.volume_claim_templates
        .iter()
        .flatten()
        .map(|t| {
            let tname = t.metadata.name.clone().unwrap_or_default();
            let mut labels = t.metadata.labels.clone().unwrap_or_default();
            labels.extend(match_labels.clone());
            let mut claim_spec = t.spec.clone().unwrap_or_default();
            if claim_spec.volume_mode.is_none() {
                claim_spec.volume_mode = Some("Filesystem".into());
            }
            PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(claim_name(&tname, set, ordinal)),
                    namespace: set.metadata.namespace.clone(),
                    labels: Some(labels),
                    annotations: t.metadata.annotations.clone(),
                    ..ObjectMeta::default()
                },
                spec: Some(claim_spec),
                status: None,
            }
        })
        .collect()
}

/// `persistentVolumeClaimRetentionPolicy` as (whenDeleted is Delete, whenScaled is Delete).
pub fn retention(set: &StatefulSet) -> (bool, bool) {
    let p = set
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_claim_retention_policy.as_ref());
    let is_delete = |v: Option<&String>| v.is_some_and(|v| v == "Delete");
    (
        is_delete(p.and_then(|p| p.when_deleted.as_ref())),
        is_delete(p.and_then(|p| p.when_scaled.as_ref())),
    )
}

/// The ownerReferences a claim should carry (upstream `updateClaimOwnerRefForSetAndPod`,
/// `isClaimOwnerUpToDate`, `hasUnexpectedController`). References to this set and to this pod are
/// scrubbed and re-added from the policy on every sync, so flipping it converges on existing claims:
///
/// | whenScaled | whenDeleted | ordinal in range | ordinal scaled down |
/// | --- | --- | --- | --- |
/// | Retain | Retain | — | — |
/// | Retain | Delete | controller ref to the set | controller ref to the set |
/// | Delete | Retain | — | controller ref to the pod |
/// | Delete | Delete | controller ref to the set | controller ref to the pod |
///
/// (a controller ref: `controller: true`, `blockOwnerDeletion: true`). A claim controlled by something
/// else is left to it: only our references are removed. Other owners are kept as they are.
pub fn desired_claim_owners(
    set: &StatefulSet,
    claim: &PersistentVolumeClaim,
    pod: Option<&Pod>,
    condemned: bool,
) -> Vec<OwnerReference> {
    let (when_deleted, when_scaled) = retention(set);
    let set_uid = set.metadata.uid.clone().unwrap_or_default();
    let pod_uid = pod.and_then(|p| p.metadata.uid.clone());
    let mut out: Vec<OwnerReference> = claim
        .metadata
        .owner_references
        .iter()
        .flatten()
        .filter(|r| !(r.kind == "StatefulSet" && r.uid == set_uid))
        .filter(|r| !(r.kind == "Pod" && pod_uid.as_ref() == Some(&r.uid)))
        .cloned()
        .collect();
    if out.iter().any(|r| r.controller == Some(true)) {
        return out;
    }
    let set_ref = OwnerReference {
        controller: Some(true),
        block_owner_deletion: Some(true),
        ..controller_ref(set)
    };
    let pod_ref = pod.map(|p| OwnerReference {
        api_version: "v1".into(),
        kind: "Pod".into(),
        name: p.metadata.name.clone().unwrap_or_default(),
        uid: p.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    });
    match (when_scaled, when_deleted, condemned) {
        (true, _, true) => out.extend(pod_ref),
        (_, true, _) => out.push(set_ref),
        _ => {}
    }
    out
}
