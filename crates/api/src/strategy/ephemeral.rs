//! The `pods/ephemeralcontainers` subresource's update rules (upstream
//! `registry/core/pod/strategy.go` `podEphemeralContainersStrategy` and `validation.go`
//! `ValidatePodEphemeralContainersUpdate`/`validateEphemeralContainers`).

use crate::field::{ErrorType, FieldError};
use serde_json::Value;

/// The pod a write to `pods/ephemeralcontainers` stores: the stored pod with only
/// `spec.ephemeralContainers` taken from `new` (upstream `dropNonEphemeralContainerUpdates`); the caller
/// keeps the stored metadata as for any update.
#[must_use]
pub fn prepare_for_update(new: &Value, old: &Value) -> Value {
    let mut out = old.clone();
    let list = new.pointer("/spec/ephemeralContainers").cloned();
    if let Some(spec) = out.get_mut("spec").and_then(Value::as_object_mut) {
        match list {
            Some(l) if !l.is_null() => {
                spec.insert("ephemeralContainers".into(), l);
            }
            _ => {
                spec.remove("ephemeralContainers");
            }
        }
    }
    out
}

/// Fields an ephemeral container may not set (upstream `allowedEphemeralContainerFields` is the
/// complement), with their zero values left out.
const FORBIDDEN_FIELDS: [&str; 7] = [
    "ports",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "lifecycle",
    "resources",
    "resizePolicy",
];

fn set(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(Value::String(s)) => !s.is_empty(),
        Some(_) => true,
    }
}

/// Errors of an update through `pods/ephemeralcontainers`: existing ephemeral containers may be neither
/// removed nor changed; each one needs a unique DNS-label name (unique among all the pod's containers)
/// and an image, may not set ports, probes, lifecycle, resources or resizePolicy, and its
/// `targetContainerName` must name one of the pod's containers.
#[must_use]
pub fn validate_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let path = "spec.ephemeralContainers";
    let list = |v: &Value| {
        v.pointer("/spec/ephemeralContainers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let (new_list, old_list) = (list(new), list(old));
    let mut names: std::collections::BTreeSet<String> = ["containers", "initContainers"]
        .iter()
        .flat_map(|l| {
            new.pointer(&format!("/spec/{l}"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect();
    let others = names.clone();
    for (i, c) in new_list.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let name = c["name"].as_str().unwrap_or("");
        if name.is_empty() {
            errs.push(FieldError::required(format!("{p}.name"), ""));
        } else if !crate::strategy::is_dns1123_label(name) {
            errs.push(FieldError::invalid(format!("{p}.name"), name, "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"));
        } else if !names.insert(name.to_string()) {
            errs.push(FieldError::duplicate(format!("{p}.name"), name));
        }
        if c["image"].as_str().is_none_or(|i| i.trim().is_empty()) {
            errs.push(FieldError::required(format!("{p}.image"), ""));
        }
        if let Some(t) = c["targetContainerName"].as_str().filter(|t| !t.is_empty())
            && !others.contains(t)
        {
            errs.push(FieldError {
                error_type: ErrorType::NotFound,
                field: format!("{p}.targetContainerName"),
                value: Some(Value::String(t.to_string())),
                detail: String::new(),
            });
        }
        for f in FORBIDDEN_FIELDS {
            if set(c.get(f)) {
                errs.push(FieldError::forbidden(
                    format!("{p}.{f}"),
                    "cannot be set for an Ephemeral Container",
                ));
            }
        }
    }
    for o in &old_list {
        let name = o["name"].as_str().unwrap_or("");
        match new_list.iter().find(|n| n["name"].as_str() == Some(name)) {
            None => errs.push(FieldError::forbidden(
                path,
                format!("existing ephemeral containers \"{name}\" may not be removed\n"),
            )),
            Some(n) if n != o => errs.push(FieldError::forbidden(
                path,
                format!("existing ephemeral containers \"{name}\" may not be changed\n"),
            )),
            Some(_) => {}
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(ephemeral: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "app", "image": "x"}],
               "ephemeralContainers": ephemeral}, "status": {"phase": "Running"}})
    }

    #[test]
    fn only_ephemeral_containers_change_and_only_by_adding_valid_ones() {
        let old = pod(json!([]));
        let mut new = pod(json!([{"name": "dbg", "image": "busybox", "targetContainerName": "app"}]));
        new["spec"]["containers"][0]["image"] = json!("changed");
        new["status"] = json!({});
        let next = prepare_for_update(&new, &old);
        assert_eq!(
            next["spec"]["containers"][0]["image"], "x",
            "only ephemeralContainers taken"
        );
        assert_eq!(next["status"]["phase"], "Running");
        assert_eq!(next["spec"]["ephemeralContainers"][0]["name"], "dbg");
        assert!(validate_update(&next, &old).is_empty());

        let bad = pod(json!([
            {"name": "app", "image": "busybox"},
            {"name": "d2", "image": "", "ports": [{"containerPort": 80}], "resources": {"limits": {"cpu": "1"}},
             "readinessProbe": {"exec": {"command": ["true"]}}, "targetContainerName": "nope"}
        ]));
        let errs: Vec<String> = validate_update(&bad, &old)
            .iter()
            .map(|e| format!("{}: {}", e.field, e.body()))
            .collect();
        assert_eq!(
            errs,
            [
                "spec.ephemeralContainers[0].name: Duplicate value: \"app\"",
                "spec.ephemeralContainers[1].image: Required value",
                "spec.ephemeralContainers[1].targetContainerName: Not found: \"nope\"",
                "spec.ephemeralContainers[1].ports: Forbidden: cannot be set for an Ephemeral Container",
                "spec.ephemeralContainers[1].readinessProbe: Forbidden: cannot be set for an Ephemeral Container",
                "spec.ephemeralContainers[1].resources: Forbidden: cannot be set for an Ephemeral Container",
            ]
        );

        let removed = validate_update(&old, &next);
        assert_eq!(removed.len(), 1);
        assert_eq!(
            removed[0].detail,
            "existing ephemeral containers \"dbg\" may not be removed\n"
        );
        let changed = pod(json!([{"name": "dbg", "image": "other", "targetContainerName": "app"}]));
        assert!(
            validate_update(&changed, &next)[0]
                .detail
                .contains("may not be changed")
        );
    }
}
