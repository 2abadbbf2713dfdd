//! Small accessors over objects in their wire form (`serde_json::Value`), and the store key layout.

use api::resources::Resource;
use serde_json::{Map, Value};

/// `metadata` of an object, created if missing or not a map.
pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let map = obj.as_object_mut().expect("made an object above");
    let meta = map.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    meta.as_object_mut().expect("made an object above")
}

/// A string at a dotted path, e.g. `meta_str(obj, "metadata", "name")`.
pub fn str_at<'a>(obj: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = obj;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

/// `metadata.name` (empty if missing).
pub fn name(obj: &Value) -> &str {
    str_at(obj, &["metadata", "name"]).unwrap_or("")
}

/// `metadata.namespace` (empty if missing).
pub fn namespace(obj: &Value) -> &str {
    str_at(obj, &["metadata", "namespace"]).unwrap_or("")
}

/// `metadata.finalizers` as strings.
pub fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// Whether `metadata.deletionTimestamp` is set.
pub fn is_deleting(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
}

/// The store key of one object: `/registry/<group|core>/<plural>/[<namespace>/]<name>`.
pub fn key(resource: &Resource, namespace: Option<&str>, name: &str) -> String {
    let mut k = prefix(resource, namespace);
    k.push_str(name);
    k
}

/// The store prefix of a list: every object of a resource, or those of one namespace.
pub fn prefix(resource: &Resource, namespace: Option<&str>) -> String {
    let group = if resource.group.is_empty() {
        "core"
    } else {
        resource.group
    };
    match namespace {
        Some(ns) if resource.namespaced => format!("/registry/{group}/{}/{ns}/", resource.plural),
        _ => format!("/registry/{group}/{}/", resource.plural),
    }
}

/// RFC 3339 UTC with second precision, as Kubernetes writes `metav1.Time`.
pub fn timestamp(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// RFC 3339 UTC with microseconds, as `metav1.MicroTime`.
pub fn micro_timestamp(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string()
}
