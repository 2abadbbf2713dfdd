//! Per-kind registry strategies (upstream `pkg/registry/<group>/<kind>/strategy.go`): what a create or an
//! update may change, when `metadata.generation` moves, defaulting (`pkg/apis/<group>/v1/defaults.go`) and
//! validation (`pkg/apis/<group>/validation`), over objects in their wire form.
//!
//! Every validation returns **all** field errors at once; the API server answers them as one 422.

mod batch;
mod defaults;
pub mod ephemeral;
mod kinds;
mod meta;
mod validate;

use crate::field::FieldError;
use serde_json::{Value, json};

pub use defaults::default;
pub use kinds::HIGHEST_USER_PRIORITY;

/// Opt-in annotation on a StatefulSet, value `"true"`: the storage request of its `volumeClaimTemplates`
/// may be raised (never lowered), and the StatefulSet controller raises the request of every existing
/// PersistentVolumeClaim of the set to match. Upstream forbids any template change (k/k#68737, KEP-4650).
pub const EXPAND_VOLUME_CLAIMS: &str = "berth.dev/expand-volume-claims";
pub use meta::{is_dns1123_label, is_dns1123_subdomain};

/// Kinds whose `metadata.generation` tracks `spec` (upstream strategies that set it in PrepareForCreate).
fn has_generation(group: &str, kind: &str) -> bool {
    matches!(
        (group, kind),
        ("apps", "StatefulSet" | "Deployment" | "ReplicaSet" | "DaemonSet")
            | ("batch", "Job" | "CronJob")
            | ("policy", "PodDisruptionBudget")
            | ("networking.k8s.io", "Ingress" | "NetworkPolicy")
            | (
                "",
                "Pod"
                    | "Service"
                    | "PersistentVolumeClaim"
                    | "PersistentVolume"
                    | "Namespace"
                    | "Node"
                    | "ReplicationController"
            )
    )
}

/// Kinds with a `/status` subresource, whose main writes keep the stored status.
fn has_status(group: &str, kind: &str) -> bool {
    matches!(
        (group, kind),
        ("apps", "StatefulSet" | "Deployment" | "ReplicaSet" | "DaemonSet")
            | ("batch", "Job" | "CronJob")
            | ("policy", "PodDisruptionBudget")
            | ("networking.k8s.io", "Ingress")
            | ("autoscaling", "HorizontalPodAutoscaler")
            | ("apiregistration.k8s.io", "APIService")
            | (
                "",
                "Pod"
                    | "Service"
                    | "PersistentVolumeClaim"
                    | "PersistentVolume"
                    | "Namespace"
                    | "Node"
                    | "ReplicationController"
                    | "ResourceQuota"
            )
    )
}

/// Status integers whose Go fields are not `omitempty`, so upstream always serializes them (as 0 when
/// unset): clients with strict models expect them.
fn status_integers(group: &str, kind: &str) -> &'static [&'static str] {
    match (group, kind) {
        ("apps", "DaemonSet") => &[
            "currentNumberScheduled",
            "numberMisscheduled",
            "desiredNumberScheduled",
            "numberReady",
        ],
        ("apps", "StatefulSet") => &["replicas", "availableReplicas"],
        ("apps", "ReplicaSet") | ("", "ReplicationController") => &["replicas"],
        ("autoscaling", "HorizontalPodAutoscaler") => &["currentReplicas", "desiredReplicas"],
        ("policy", "PodDisruptionBudget") => &[
            "disruptionsAllowed",
            "currentHealthy",
            "desiredHealthy",
            "expectedPods",
        ],
        _ => &[],
    }
}

/// Fill the status integers upstream always serializes with 0 where unset.
fn fill_status_integers(group: &str, kind: &str, obj: &mut Value) {
    let fields = status_integers(group, kind);
    if fields.is_empty() {
        return;
    }
    if !obj.get("status").is_some_and(Value::is_object) {
        obj["status"] = json!({});
    }
    if let Some(st) = obj.get_mut("status").and_then(Value::as_object_mut) {
        for f in fields {
            st.entry(f.to_string()).or_insert(json!(0));
        }
    }
}

/// Before create: reset status for kinds that have a status subresource (upstream `PrepareForCreate`),
/// set the initial status upstream sets, and `metadata.generation = 1`.
pub fn prepare_for_create(group: &str, kind: &str, obj: &mut Value) {
    if !obj.is_object() {
        return;
    }
    if has_generation(group, kind) {
        crate::value::set_in(obj, &["metadata", "generation"], json!(1));
    }
    if has_status(group, kind) {
        let status = match (group, kind) {
            ("", "Pod") => json!({"phase": "Pending", "qosClass": defaults::qos_class(obj)}),
            ("", "PersistentVolumeClaim") => json!({"phase": "Pending"}),
            ("", "PersistentVolume") => json!({"phase": "Pending"}),
            ("", "Namespace") => json!({"phase": "Active"}),
            ("", "Service") => json!({"loadBalancer": {}}),
            _ => json!({}),
        };
        obj["status"] = status;
    }
    fill_status_integers(group, kind, obj);
    if (group, kind) == ("batch", "Job") {
        batch::generate_selector(obj);
    }
    if (group, kind) == ("", "Namespace") {
        crate::value::set_in(obj, &["spec", "finalizers"], json!(["kubernetes"]));
    }
}

/// `metadata.finalizers` and `metadata.ownerReferences` emptied by a patch are dropped, as upstream's
/// `omitempty` fields never show an empty list (the Job controller's removal of the last finalizer).
fn drop_empty_meta_lists(obj: &mut Value) {
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in ["finalizers", "ownerReferences"] {
            if m.get(k)
                .is_some_and(|v| v.as_array().is_some_and(Vec::is_empty) || v.is_null())
            {
                m.remove(k);
            }
        }
    }
}

/// Before a main-resource update: keep the stored status (it is written only through `/status`) and bump
/// `metadata.generation` when `spec` changed (upstream: any spec change for apps kinds; for Pods only
/// changes that matter, approximated here by spec equality).
pub fn prepare_for_update(group: &str, kind: &str, new: &mut Value, old: &Value) {
    if !new.is_object() {
        return;
    }
    drop_empty_meta_lists(new);
    if has_status(group, kind) {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    if (group, kind) == ("", "Namespace") {
        // spec.finalizers changes only through /finalize.
        match old.pointer("/spec/finalizers") {
            Some(f) => crate::value::set_in(new, &["spec", "finalizers"], f.clone()),
            None => {
                if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.remove("finalizers");
                }
            }
        }
    }
    if has_generation(group, kind) {
        let old_gen = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let changed = new.get("spec") != old.get("spec");
        let deleting = new
            .pointer("/metadata/deletionTimestamp")
            .is_some_and(|v| !v.is_null());
        // Upstream also bumps generation when a deletion starts on an object with a generation.
        let starts_deleting = deleting
            && old
                .pointer("/metadata/deletionTimestamp")
                .is_none_or(Value::is_null);
        let generation = if changed || starts_deleting {
            old_gen + 1
        } else {
            old_gen
        };
        crate::value::set_in(new, &["metadata", "generation"], json!(generation));
    }
}

/// Before a `/status` update: only `status` comes from the request; spec and metadata stay as stored
/// (upstream `StatusStrategy.PrepareForUpdate`).
pub fn prepare_for_status_update(group: &str, kind: &str, new: &mut Value, old: &Value) {
    let status = new.get("status").cloned();
    let rv = new.pointer("/metadata/resourceVersion").cloned();
    let mut next = old.clone();
    match status {
        Some(s) => next["status"] = s,
        None => {
            if let Some(m) = next.as_object_mut() {
                m.remove("status");
            }
        }
    }
    if let Some(rv) = rv {
        crate::value::set_in(&mut next, &["metadata", "resourceVersion"], rv);
    }
    fill_status_integers(group, kind, &mut next);
    *new = next;
}

/// Full validation of an object about to be created.
pub fn validate(group: &str, kind: &str, obj: &Value) -> Vec<FieldError> {
    let mut errs = meta::validate_object_meta(group, kind, obj);
    validate::validate_kind(group, kind, obj, &mut errs);
    batch::validate(group, kind, obj, &mut errs);
    kinds::validate(group, kind, obj, &mut errs);
    errs
}

/// Validation of an update: the object itself, plus the fields upstream makes immutable.
pub fn validate_update(group: &str, kind: &str, new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = validate(group, kind, new);
    validate::validate_update_kind(group, kind, new, old, &mut errs);
    batch::validate_update(group, kind, new, old, &mut errs);
    kinds::validate_update(group, kind, new, old, &mut errs);
    errs
}

#[cfg(test)]
mod tests;
