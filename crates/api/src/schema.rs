//! Typed decoding checks over the wire form: does an object decode as its kind, and which fields of it
//! are unknown to the kind's schema (upstream's strict decoding for `fieldValidation=Strict|Warn`).
//!
//! The schema is k8s-openapi's generated types: an object is decoded into the typed struct and encoded
//! again; a key present in the input but absent after the round trip is a field the type does not have.

use k8s_openapi::api::{
    apps, autoscaling, batch, coordination, core, discovery, events, networking, policy, scheduling, storage,
};
use serde_json::Value;

/// Why an object does not decode as its kind.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{kind} in version \"{version}\" cannot be handled as a {kind}: {detail}")]
pub struct DecodeError {
    /// The kind.
    pub kind: String,
    /// The version.
    pub version: String,
    /// The decoder's message.
    pub detail: String,
}

fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(obj: &Value) -> Result<Value, String> {
    let typed: T = serde_json::from_value(obj.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(typed).map_err(|e| e.to_string())
}

/// Decode `obj` as `(group, kind)` and encode it back; `None` for kinds without a typed schema here.
fn typed_round_trip(group: &str, kind: &str, obj: &Value) -> Option<Result<Value, String>> {
    let r = match (group, kind) {
        ("", "Namespace") => round_trip::<core::v1::Namespace>(obj),
        ("", "Pod") => round_trip::<core::v1::Pod>(obj),
        ("", "Service") => round_trip::<core::v1::Service>(obj),
        ("", "Endpoints") => round_trip::<core::v1::Endpoints>(obj),
        ("", "PersistentVolumeClaim") => round_trip::<core::v1::PersistentVolumeClaim>(obj),
        ("", "PersistentVolume") => round_trip::<core::v1::PersistentVolume>(obj),
        ("", "ConfigMap") => round_trip::<core::v1::ConfigMap>(obj),
        ("", "Secret") => round_trip::<core::v1::Secret>(obj),
        ("", "Event") => round_trip::<core::v1::Event>(obj),
        ("", "Node") => round_trip::<core::v1::Node>(obj),
        ("", "ServiceAccount") => round_trip::<core::v1::ServiceAccount>(obj),
        ("", "ReplicationController") => round_trip::<core::v1::ReplicationController>(obj),
        ("", "Binding") => round_trip::<core::v1::Binding>(obj),
        ("apps", "StatefulSet") => round_trip::<apps::v1::StatefulSet>(obj),
        ("apps", "ControllerRevision") => round_trip::<apps::v1::ControllerRevision>(obj),
        ("apps", "Deployment") => round_trip::<apps::v1::Deployment>(obj),
        ("apps", "ReplicaSet") => round_trip::<apps::v1::ReplicaSet>(obj),
        ("apps", "DaemonSet") => round_trip::<apps::v1::DaemonSet>(obj),
        ("batch", "Job") => round_trip::<batch::v1::Job>(obj),
        ("batch", "CronJob") => round_trip::<batch::v1::CronJob>(obj),
        ("storage.k8s.io", "StorageClass") => round_trip::<storage::v1::StorageClass>(obj),
        ("discovery.k8s.io", "EndpointSlice") => round_trip::<discovery::v1::EndpointSlice>(obj),
        ("coordination.k8s.io", "Lease") => round_trip::<coordination::v1::Lease>(obj),
        ("events.k8s.io", "Event") => round_trip::<events::v1::Event>(obj),
        ("autoscaling", "Scale") => round_trip::<autoscaling::v1::Scale>(obj),
        ("", "ResourceQuota") => round_trip::<core::v1::ResourceQuota>(obj),
        ("", "LimitRange") => round_trip::<core::v1::LimitRange>(obj),
        ("autoscaling", "HorizontalPodAutoscaler") => {
            round_trip::<autoscaling::v2::HorizontalPodAutoscaler>(obj)
        }
        ("policy", "PodDisruptionBudget") => round_trip::<policy::v1::PodDisruptionBudget>(obj),
        ("policy", "Eviction") => round_trip::<policy::v1::Eviction>(obj),
        ("networking.k8s.io", "NetworkPolicy") => round_trip::<networking::v1::NetworkPolicy>(obj),
        ("networking.k8s.io", "Ingress") => round_trip::<networking::v1::Ingress>(obj),
        ("networking.k8s.io", "IngressClass") => round_trip::<networking::v1::IngressClass>(obj),
        ("scheduling.k8s.io", "PriorityClass") => round_trip::<scheduling::v1::PriorityClass>(obj),
        _ => return None,
    };
    Some(r)
}

/// Check that `obj` decodes as `(group, version, kind)` and return the paths of fields unknown to the kind
/// (`spec.foo`, `spec.template.spec.containers[0].imagee`), in document order.
///
/// # Errors
/// [`DecodeError`] when a known field has the wrong type (upstream answers 400 BadRequest with this text).
pub fn unknown_fields(
    group: &str,
    version: &str,
    kind: &str,
    obj: &Value,
) -> Result<Vec<String>, DecodeError> {
    // kind/apiVersion are set by the server from the path, so they are never "unknown".
    let Some(r) = typed_round_trip(group, kind, obj) else {
        return Ok(Vec::new());
    };
    let back = r.map_err(|detail| DecodeError {
        kind: kind.to_string(),
        version: version.to_string(),
        detail,
    })?;
    let mut out = Vec::new();
    diff_keys(obj, &back, "", &mut out);
    Ok(out)
}

fn diff_keys(input: &Value, back: &Value, path: &str, out: &mut Vec<String>) {
    match (input, back) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let child = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get(k) {
                    Some(bv) => diff_keys(v, bv, &child, out),
                    // A null or empty value may legitimately vanish in the round trip.
                    None if v.is_null() => {}
                    None if is_empty_container(v) => {}
                    None => out.push(child),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
                diff_keys(x, y, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn is_empty_container(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_are_reported_with_their_paths() {
        let sts = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "web"},
            "spec": {"foo": 1, "selector": {}, "template": {"spec": {"containers": [{"name": "c", "imagee": "x"}]}}}});
        let unknown = unknown_fields("apps", "v1", "StatefulSet", &sts).expect("decodes");
        assert_eq!(
            unknown,
            vec!["spec.foo", "spec.template.spec.containers[0].imagee"]
        );
    }

    #[test]
    fn wrongly_typed_field_is_a_decode_error() {
        let sts = json!({"spec": {"replicas": "two", "selector": {}, "template": {}}});
        let err = unknown_fields("apps", "v1", "StatefulSet", &sts).expect_err("bad type");
        assert!(
            err.to_string()
                .starts_with("StatefulSet in version \"v1\" cannot be handled as a StatefulSet")
        );
    }

    #[test]
    fn a_clean_pod_has_no_unknown_fields() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 80}]}]}});
        assert_eq!(
            unknown_fields("", "v1", "Pod", &pod).expect("decodes"),
            Vec::<String>::new()
        );
    }
}
