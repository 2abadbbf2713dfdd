//! ControllerRevisions and template hashes (upstream `pkg/controller/history` and
//! `controller.ComputeHash`), shared by the StatefulSet, DaemonSet and Deployment controllers.
//!
//! Revision data is `{"spec":{"template":{…,"$patch":"replace"}}}` with sorted keys (what `kubectl rollout
//! undo` sends back as a patch), named `<owner>-<hash>` and labelled with [`HASH_LABEL`]. Hashes are FNV
//! over canonical JSON encoded with upstream's `rand.SafeEncodeString` alphabet; upstream hashes a `spew`
//! dump of its Go structs, so names are stable and well-formed but not byte-identical to a real
//! cluster's.

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// `controller.kubernetes.io/hash`: a revision's hash, as a label on it.
pub const HASH_LABEL: &str = "controller.kubernetes.io/hash";
/// `pod-template-hash`: the label a Deployment puts on its ReplicaSets, their selectors and pods.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

/// `v` with every object's keys in sorted order (canonical JSON).
pub fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&m[k])))
                    .collect::<Map<String, Value>>(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// Upstream `rand.SafeEncodeString`: each byte mapped onto an alphabet without vowels or look-alikes.
pub fn safe_encode(s: &str) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    s.bytes()
        .map(|b| ALPHANUMS[(b as usize) % ALPHANUMS.len()] as char)
        .collect()
}

fn fnv32a(chunks: &[&[u8]]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in chunks.iter().flat_map(|c| c.iter()) {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The hash of revision data and collision count (upstream `history.HashControllerRevision`; the count,
/// when positive, is fed as 4 little-endian bytes). Kept byte-for-byte as Berth has always computed it, so
/// existing StatefulSets keep their revision names across upgrades.
pub fn hash(data: &Value, collision_count: i32) -> String {
    let bytes = data.to_string();
    let count = collision_count.to_le_bytes();
    let h = if collision_count > 0 {
        fnv32a(&[bytes.as_bytes(), &count])
    } else {
        fnv32a(&[bytes.as_bytes()])
    };
    safe_encode(&h.to_string())
}

/// The `pod-template-hash` of a template (upstream `controller.ComputeHash`): FNV-32a over its canonical
/// JSON, then, when a collision count is given, the count as a little-endian `uint32` in 8 bytes.
pub fn compute_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let bytes = sorted(&serde_json::to_value(template).unwrap_or(Value::Null)).to_string();
    let h = match collision_count {
        Some(c) => {
            let mut count = [0u8; 8];
            count[..4].copy_from_slice(&c.cast_unsigned().to_le_bytes());
            fnv32a(&[bytes.as_bytes(), &count])
        }
        None => fnv32a(&[bytes.as_bytes()]),
    };
    safe_encode(&h.to_string())
}

/// Revision data for a pod template: `{"spec":{"template":{…,"$patch":"replace"}}}`, keys sorted.
pub fn template_patch(template: &PodTemplateSpec) -> Value {
    let mut t = match serde_json::to_value(template).unwrap_or(json!({})) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    t.insert("$patch".into(), json!("replace"));
    sorted(&json!({"spec": {"template": Value::Object(t)}}))
}

/// The template stored in a revision made by [`template_patch`].
pub fn template_of(rev: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = rev.data.as_ref()?.0.pointer("/spec/template")?.clone();
    if let Some(m) = t.as_object_mut() {
        m.remove("$patch");
    }
    serde_json::from_value(t).ok()
}

/// Whether two revisions hold the same data (upstream `history.EqualRevision`).
pub fn equal_data(a: &Value, b: &Value) -> bool {
    sorted(a) == sorted(b)
}

/// A new ControllerRevision of the owner `parent` (upstream `history.NewControllerRevision`): named
/// `<parent>-<hash of data and collision count>`, in the parent's namespace, labelled with
/// `template_labels` plus [`HASH_LABEL`], carrying the parent's annotations and `controller_ref`.
pub fn new_revision(
    parent: &ObjectMeta,
    controller_ref: OwnerReference,
    template_labels: Option<&BTreeMap<String, String>>,
    data: Value,
    revision: i64,
    collision_count: i32,
) -> ControllerRevision {
    let h = hash(&data, collision_count);
    let name = format!("{}-{h}", parent.name.as_deref().unwrap_or_default());
    let mut labels = template_labels.cloned().unwrap_or_default();
    labels.insert(HASH_LABEL.into(), h);
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: parent.namespace.clone(),
            labels: Some(labels),
            annotations: parent.annotations.clone(),
            owner_references: Some(vec![controller_ref]),
            ..ObjectMeta::default()
        },
        data: Some(RawExtension(data)),
        revision,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(image: &str) -> PodTemplateSpec {
        serde_json::from_value(json!({"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": image}]}}))
        .expect("template")
    }

    #[test]
    fn template_hash_is_stable_and_changes_with_template_and_collisions() {
        let a = compute_hash(&template("nginx:1"), None);
        assert_eq!(a, compute_hash(&template("nginx:1"), None));
        assert_ne!(a, compute_hash(&template("nginx:2"), None));
        assert_ne!(
            compute_hash(&template("nginx:1"), Some(1)),
            compute_hash(&template("nginx:1"), Some(2))
        );
        assert!(a.bytes().all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b)));
    }

    #[test]
    fn revision_round_trips_its_template() {
        let parent = ObjectMeta {
            name: Some("ds".into()),
            namespace: Some("default".into()),
            uid: Some("u".into()),
            ..ObjectMeta::default()
        };
        let r = crate::workload::controller_ref::new_controller_ref(&parent, "apps/v1", "DaemonSet");
        let t = template("nginx:1");
        let rev = new_revision(&parent, r, None, template_patch(&t), 3, 0);
        assert_eq!(rev.revision, 3);
        assert_eq!(template_of(&rev), Some(t));
        assert!(rev.metadata.name.as_deref().is_some_and(|n| n.starts_with("ds-")));
        assert!(
            rev.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(HASH_LABEL))
        );
    }
}
