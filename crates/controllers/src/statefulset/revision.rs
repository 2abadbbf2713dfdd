//! ControllerRevisions of a StatefulSet (upstream `pkg/controller/history` and `newRevision` in
//! `stateful_set_utils.go`): the revision data is `{"spec":{"template":{…,"$patch":"replace"}}}` with
//! sorted keys (what `kubectl rollout undo` sends back), named `<set>-<hash>`, numbered increasingly.
//!
//! The hash is FNV-32a over the data bytes and the collision count, encoded with upstream's
//! `rand.SafeEncodeString` alphabet; upstream hashes a `spew` dump of the same bytes, so names are stable
//! and well-formed but not byte-identical to a real cluster's.

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use serde_json::{Map, Value, json};

/// `controller.kubernetes.io/hash`.
pub const HASH_LABEL: &str = "controller.kubernetes.io/hash";

fn sorted(v: &Value) -> Value {
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

/// The revision data of the set's current template.
pub fn data_of(set: &StatefulSet) -> Value {
    let template = set
        .spec
        .as_ref()
        .map(|s| serde_json::to_value(&s.template).unwrap_or(json!({})))
        .unwrap_or(json!({}));
    let mut t = match template {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    t.insert("$patch".into(), json!("replace"));
    sorted(&json!({"spec": {"template": Value::Object(t)}}))
}

/// The template stored in a revision.
pub fn template_of(rev: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = rev.data.as_ref()?.0.pointer("/spec/template")?.clone();
    if let Some(m) = t.as_object_mut() {
        m.remove("$patch");
    }
    serde_json::from_value(t).ok()
}

/// Upstream `rand.SafeEncodeString`.
fn safe_encode(s: &str) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    s.bytes()
        .map(|b| ALPHANUMS[(b as usize) % ALPHANUMS.len()] as char)
        .collect()
}

/// The hash of revision data and collision count.
pub fn hash(data: &Value, collision_count: i32) -> String {
    let bytes = data.to_string();
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |b: u8| {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    };
    bytes.bytes().for_each(&mut feed);
    if collision_count > 0 {
        collision_count.to_le_bytes().into_iter().for_each(&mut feed);
    }
    safe_encode(&h.to_string())
}

/// A new revision object for the set at `revision` number.
pub fn new_revision(set: &StatefulSet, revision: i64, collision_count: i32) -> ControllerRevision {
    let data = data_of(set);
    let h = hash(&data, collision_count);
    let name = format!("{}-{h}", crate::statefulset::identity::set_name(set));
    let mut labels = set
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(HASH_LABEL.into(), h);
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: set.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: set.metadata.annotations.clone(),
            owner_references: Some(vec![crate::statefulset::identity::controller_ref(set)]),
            ..ObjectMeta::default()
        },
        data: Some(RawExtension(data)),
        revision,
    }
}

/// Whether two revisions hold the same template (upstream `history.EqualRevision`).
pub fn equal_data(a: &Value, b: &Value) -> bool {
    sorted(a) == sorted(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(image: &str) -> StatefulSet {
        serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "default", "uid": "u"},
            "spec": {"serviceName": "nginx", "selector": {"matchLabels": {"app": "nginx"}},
                "template": {"metadata": {"labels": {"app": "nginx"}}, "spec": {"containers": [{"name": "nginx", "image": image}]}}}}))
        .expect("set")
    }

    #[test]
    fn revision_data_is_a_replace_patch_of_the_template_and_names_are_stable() {
        let a = new_revision(&set("nginx:1"), 1, 0);
        let b = new_revision(&set("nginx:1"), 1, 0);
        let c = new_revision(&set("nginx:2"), 2, 0);
        assert_eq!(a.metadata.name, b.metadata.name);
        assert_ne!(a.metadata.name, c.metadata.name);
        let data = &a.data.as_ref().expect("data").0;
        assert_eq!(data["spec"]["template"]["$patch"], "replace");
        assert_eq!(
            template_of(&a)
                .and_then(|t| t.spec)
                .map(|s| s.containers[0].image.clone()),
            Some(Some("nginx:1".into()))
        );
        assert!(a.metadata.name.as_deref().is_some_and(|n| n.starts_with("web-")));
        assert_eq!(
            a.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("app"))
                .map(String::as_str),
            Some("nginx")
        );
        assert_ne!(hash(data, 0), hash(data, 1), "collision count changes the name");
    }
}
