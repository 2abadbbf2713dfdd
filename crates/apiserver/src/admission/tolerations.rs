//! DefaultTolerationSeconds (upstream `plugin/pkg/admission/defaulttolerationseconds`): a new pod that
//! does not tolerate the `node.kubernetes.io/not-ready` or `node.kubernetes.io/unreachable` `NoExecute`
//! taints gets a toleration of each for 300 s, so a pod on a node that stops reporting is evicted (by
//! the node lifecycle controller) five minutes after its node is tainted, not at once.

use super::{Attributes, Operation};
use serde_json::{Value, json};

/// The taint on a node whose Ready condition is `False` (upstream `v1.TaintNodeNotReady`).
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
/// The taint on a node whose Ready condition is `Unknown` (upstream `v1.TaintNodeUnreachable`).
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// Upstream's `--default-not-ready-toleration-seconds` and `--default-unreachable-toleration-seconds`.
pub const DEFAULT_SECONDS: i64 = 300;

/// Add the default tolerations to a new pod (upstream: only on create, never on update).
pub fn admit(attrs: &Attributes<'_>, obj: &mut Value) {
    if attrs.operation != Operation::Create || !attrs.is_core("Pod") || attrs.subresource.is_some() {
        return;
    }
    let existing: Vec<Value> = obj
        .pointer("/spec/tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    // Upstream: a toleration "covers" the taint when it tolerates `key:NoExecute` (an empty key with
    // operator Exists tolerates everything; an empty effect matches every effect).
    let tolerates = |key: &str| {
        existing.iter().any(|t| {
            let k = t["key"].as_str().unwrap_or("");
            let op = t["operator"].as_str().unwrap_or("Equal");
            let effect = t["effect"].as_str().unwrap_or("");
            (k == key || (k.is_empty() && op == "Exists")) && (effect.is_empty() || effect == "NoExecute")
        })
    };
    let mut added = existing.clone();
    for key in [NOT_READY, UNREACHABLE] {
        if !tolerates(key) {
            added.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute",
                              "tolerationSeconds": DEFAULT_SECONDS}));
        }
    }
    if added.len() != existing.len() {
        api::value::set_in(obj, &["spec", "tolerations"], Value::Array(added));
    }
}
