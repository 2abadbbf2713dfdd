//! Kind validation (upstream `pkg/apis/core/validation/validation.go`, `pkg/apis/apps/validation`,
//! `pkg/apis/storage/validation`): every bad field is reported, with upstream's paths and messages.

use super::meta::{
    is_dns1123_label, is_dns1123_subdomain, label_value_ok, qualified_name_errors, validate_labels,
};
use crate::field::FieldError;
use serde_json::{Map, Value, json};

fn s<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

/// An int-or-percent that must be positive and at most 100% (upstream `ValidatePositiveIntOrPercent`,
/// `IsNotMoreThan100Percent` and the StatefulSet "cannot be 0" rule, pkg/apis/apps/validation).
fn positive_int_or_percent(v: Option<&Value>, field: &str, errs: &mut Vec<FieldError>) {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return;
    };
    let value = match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => match s
            .strip_suffix('%')
            .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        {
            Some(d) => {
                let pct = d.parse::<i64>().unwrap_or(i64::MAX);
                if pct > 100 {
                    errs.push(FieldError::invalid(
                        field,
                        v.clone(),
                        "must not be greater than 100%",
                    ));
                }
                Some(pct)
            }
            None => {
                errs.push(FieldError::invalid(field, v.clone(), "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')"));
                return;
            }
        },
        _ => None,
    };
    match value {
        Some(n) if n < 0 => errs.push(FieldError::invalid(
            field,
            v.clone(),
            "must be greater than or equal to 0",
        )),
        Some(0) => errs.push(FieldError::invalid(field, v.clone(), "cannot be 0")),
        _ => {}
    }
}

pub(super) fn non_negative(v: &Value, ptr: &str, field: &str, errs: &mut Vec<FieldError>) {
    if let Some(n) = v.pointer(ptr).and_then(Value::as_i64)
        && n < 0
    {
        errs.push(FieldError::invalid(
            field,
            n,
            "must be greater than or equal to 0",
        ));
    }
}

/// Validate `(group, kind)`-specific fields of a whole object.
pub fn validate_kind(group: &str, kind: &str, obj: &Value, errs: &mut Vec<FieldError>) {
    match (group, kind) {
        ("apps", "StatefulSet") => stateful_set(obj, errs),
        ("apps", "Deployment") | ("apps", "ReplicaSet") | ("apps", "DaemonSet") => workload(kind, obj, errs),
        ("", "ReplicationController") => replication_controller(obj, errs),
        ("", "Pod") => match obj.get("spec") {
            Some(spec) => pod_spec(spec, "spec", errs),
            None => errs.push(FieldError::required("spec", "")),
        },
        ("", "Service") => service(obj, errs),
        ("", "PersistentVolumeClaim") => pvc_spec(obj.get("spec").unwrap_or(&Value::Null), "spec", errs),
        ("", "ConfigMap") => data_keys(obj, &["data", "binaryData"], errs),
        ("", "Secret") => data_keys(obj, &["data", "stringData"], errs),
        ("storage.k8s.io", "StorageClass") => {
            if s(obj, "/provisioner").is_none_or(str::is_empty) {
                errs.push(FieldError::required("provisioner", ""));
            }
            if let Some(p) = s(obj, "/reclaimPolicy")
                && !matches!(p, "Delete" | "Retain")
            {
                errs.push(FieldError::not_supported(
                    "reclaimPolicy",
                    p,
                    &["Delete", "Retain"],
                ));
            }
            if let Some(m) = s(obj, "/volumeBindingMode")
                && !matches!(m, "Immediate" | "WaitForFirstConsumer")
            {
                errs.push(FieldError::not_supported(
                    "volumeBindingMode",
                    m,
                    &["Immediate", "WaitForFirstConsumer"],
                ));
            }
        }
        _ => {}
    }
}

fn data_keys(obj: &Value, fields: &[&str], errs: &mut Vec<FieldError>) {
    for f in fields {
        if let Some(m) = obj.get(*f).and_then(Value::as_object) {
            for k in m.keys() {
                let ok = !k.is_empty()
                    && k.len() <= 253
                    && k.bytes()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
                if !ok {
                    errs.push(FieldError::invalid(
                        format!("{f}[{k}]"),
                        k.clone(),
                        "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                    ));
                }
            }
        }
    }
}

/// A metav1.LabelSelector; returns whether it is usable for matching.
pub(super) fn label_selector(sel: &Value, path: &str, errs: &mut Vec<FieldError>) {
    validate_labels(sel.get("matchLabels"), &format!("{path}.matchLabels"), errs);
    if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
        for (i, e) in exprs.iter().enumerate() {
            let p = format!("{path}.matchExpressions[{i}]");
            let key = s(e, "/key").unwrap_or("");
            for msg in qualified_name_errors(key) {
                errs.push(FieldError::invalid(format!("{p}.key"), key, msg));
            }
            let values = e
                .get("values")
                .and_then(Value::as_array)
                .map(Vec::len)
                .unwrap_or(0);
            match s(e, "/operator").unwrap_or("") {
                "In" | "NotIn" if values == 0 => errs.push(FieldError::required(
                    format!("{p}.values"),
                    "must be specified when `operator` is 'In' or 'NotIn'",
                )),
                "Exists" | "DoesNotExist" if values > 0 => errs.push(FieldError::forbidden(
                    format!("{p}.values"),
                    "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                )),
                "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                other => errs.push(FieldError::invalid(
                    format!("{p}.operator"),
                    other,
                    "not a valid selector operator",
                )),
            }
        }
    }
}

/// Whether `selector` (matchLabels and matchExpressions) matches `labels`.
pub(super) fn selector_matches(sel: &Value, labels: &Map<String, Value>) -> bool {
    let ml_ok = sel
        .get("matchLabels")
        .and_then(Value::as_object)
        .is_none_or(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)));
    let me_ok = sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .is_none_or(|exprs| {
            exprs.iter().all(|e| {
                let key = s(e, "/key").unwrap_or("");
                let vals: Vec<&str> = e
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let have = labels.get(key).and_then(Value::as_str);
                match s(e, "/operator").unwrap_or("") {
                    "In" => have.is_some_and(|h| vals.contains(&h)),
                    "NotIn" => have.is_none_or(|h| !vals.contains(&h)),
                    "Exists" => have.is_some(),
                    "DoesNotExist" => have.is_none(),
                    _ => false,
                }
            })
        });
    ml_ok && me_ok
}

pub(super) fn selector_is_empty(sel: &Value) -> bool {
    sel.get("matchLabels")
        .and_then(Value::as_object)
        .is_none_or(Map::is_empty)
        && sel
            .get("matchExpressions")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
}

/// Selector + template checks shared by StatefulSet, Deployment, ReplicaSet and DaemonSet.
fn selector_and_template(kind: &str, obj: &Value, errs: &mut Vec<FieldError>) {
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    match spec.get("selector").filter(|v| !v.is_null()) {
        None => errs.push(FieldError::required("spec.selector", "")),
        Some(sel) => {
            label_selector(sel, "spec.selector", errs);
            if selector_is_empty(sel) {
                errs.push(FieldError::invalid(
                    "spec.selector",
                    sel.clone(),
                    format!("empty selector is invalid for {}", kind.to_lowercase()),
                ));
            } else {
                let empty = Map::new();
                let labels = spec
                    .pointer("/template/metadata/labels")
                    .and_then(Value::as_object)
                    .unwrap_or(&empty);
                if !selector_matches(sel, labels) {
                    errs.push(FieldError::invalid(
                        "spec.template.metadata.labels",
                        Value::Object(labels.clone()),
                        "`selector` does not match template `labels`",
                    ));
                }
            }
        }
    }
    match spec.get("template").filter(|v| !v.is_null()) {
        None => errs.push(FieldError::required("spec.template", "")),
        Some(t) => {
            validate_labels(
                t.pointer("/metadata/labels"),
                "spec.template.metadata.labels",
                errs,
            );
            match t.get("spec") {
                Some(ps) => pod_spec(ps, "spec.template.spec", errs),
                None => errs.push(FieldError::required("spec.template.spec", "")),
            }
        }
    }
}

fn stateful_set(obj: &Value, errs: &mut Vec<FieldError>) {
    let name = s(obj, "/metadata/name").unwrap_or("");
    if !name.is_empty() && !is_dns1123_label(name) && !errs.iter().any(|e| e.field == "metadata.name") {
        errs.push(FieldError::invalid("metadata.name", name, "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"));
    }
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    non_negative(obj, "/spec/replicas", "spec.replicas", errs);
    non_negative(obj, "/spec/minReadySeconds", "spec.minReadySeconds", errs);
    non_negative(obj, "/spec/ordinals/start", "spec.ordinals.start", errs);
    match s(&spec, "/podManagementPolicy") {
        Some("OrderedReady" | "Parallel") => {}
        Some(other) => errs.push(FieldError::invalid(
            "spec.podManagementPolicy",
            other,
            "must be 'OrderedReady' or 'Parallel'",
        )),
        None => errs.push(FieldError::required("spec.podManagementPolicy", "")),
    }
    match s(&spec, "/updateStrategy/type") {
        Some("RollingUpdate") => {
            non_negative(
                obj,
                "/spec/updateStrategy/rollingUpdate/partition",
                "spec.updateStrategy.rollingUpdate.partition",
                errs,
            );
            positive_int_or_percent(
                spec.pointer("/updateStrategy/rollingUpdate/maxUnavailable"),
                "spec.updateStrategy.rollingUpdate.maxUnavailable",
                errs,
            );
        }
        Some("OnDelete") => {
            if spec
                .pointer("/updateStrategy/rollingUpdate")
                .is_some_and(|v| !v.is_null())
            {
                errs.push(FieldError::invalid(
                    "spec.updateStrategy.rollingUpdate",
                    spec.pointer("/updateStrategy/rollingUpdate")
                        .cloned()
                        .unwrap_or(Value::Null),
                    "only allowed for updateStrategy 'RollingUpdate'",
                ));
            }
        }
        Some(other) => errs.push(FieldError::invalid(
            "spec.updateStrategy",
            other,
            "must be 'RollingUpdate' or 'OnDelete'",
        )),
        None => errs.push(FieldError::required("spec.updateStrategy", "")),
    }
    for f in ["whenDeleted", "whenScaled"] {
        if let Some(v) = s(&spec, &format!("/persistentVolumeClaimRetentionPolicy/{f}"))
            && !matches!(v, "Retain" | "Delete")
        {
            errs.push(FieldError::not_supported(
                format!("spec.persistentVolumeClaimRetentionPolicy.{f}"),
                v,
                &["Retain", "Delete"],
            ));
        }
    }
    selector_and_template("StatefulSet", obj, errs);
    if let Some(rp) = s(&spec, "/template/spec/restartPolicy")
        && rp != "Always"
    {
        errs.push(FieldError::not_supported(
            "spec.template.spec.restartPolicy",
            rp,
            &["Always"],
        ));
    }
    if spec
        .pointer("/template/spec/activeDeadlineSeconds")
        .is_some_and(|v| !v.is_null())
    {
        errs.push(FieldError::forbidden(
            "spec.template.spec.activeDeadlineSeconds",
            "activeDeadlineSeconds in StatefulSet is not Supported",
        ));
    }
    if let Some(vcts) = spec.get("volumeClaimTemplates").and_then(Value::as_array) {
        for (i, vct) in vcts.iter().enumerate() {
            let p = format!("spec.volumeClaimTemplates[{i}]");
            let n = s(vct, "/metadata/name").unwrap_or("");
            if n.is_empty() {
                errs.push(FieldError::required(format!("{p}.metadata.name"), ""));
            } else if !is_dns1123_subdomain(n) {
                errs.push(FieldError::invalid(format!("{p}.metadata.name"), n, "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"));
            }
            pvc_spec(
                vct.get("spec").unwrap_or(&Value::Null),
                &format!("{p}.spec"),
                errs,
            );
        }
    }
}

fn workload(kind: &str, obj: &Value, errs: &mut Vec<FieldError>) {
    non_negative(obj, "/spec/replicas", "spec.replicas", errs);
    non_negative(obj, "/spec/minReadySeconds", "spec.minReadySeconds", errs);
    selector_and_template(kind, obj, errs);
    if kind == "Deployment"
        && let Some(t) = s(obj, "/spec/strategy/type")
        && !matches!(t, "RollingUpdate" | "Recreate")
    {
        errs.push(FieldError::not_supported(
            "spec.strategy.type",
            t,
            &["Recreate", "RollingUpdate"],
        ));
    }
    if kind == "Deployment" {
        deployment_spec(obj, errs);
    }
}

/// An int-or-percent that must be ≥ 0 (upstream `ValidatePositiveIntOrPercent`); its value, a percentage
/// as its number.
fn non_negative_int_or_percent(v: &Value, field: &str, errs: &mut Vec<FieldError>) -> Option<i64> {
    let n = match v {
        Value::Number(n) => n.as_i64(),
        Value::String(st) => match st
            .strip_suffix('%')
            .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        {
            Some(d) => d.parse::<i64>().ok(),
            None => {
                errs.push(FieldError::invalid(field, v.clone(), "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')"));
                return None;
            }
        },
        _ => None,
    }?;
    if n < 0 {
        errs.push(FieldError::invalid(
            field,
            v.clone(),
            "must be greater than or equal to 0",
        ));
    }
    Some(n)
}

/// Upstream `ValidateDeploymentSpec`'s strategy and count rules.
fn deployment_spec(obj: &Value, errs: &mut Vec<FieldError>) {
    non_negative(
        obj,
        "/spec/revisionHistoryLimit",
        "spec.revisionHistoryLimit",
        errs,
    );
    non_negative(
        obj,
        "/spec/progressDeadlineSeconds",
        "spec.progressDeadlineSeconds",
        errs,
    );
    if let (Some(p), Some(m)) = (
        obj.pointer("/spec/progressDeadlineSeconds")
            .and_then(Value::as_i64),
        obj.pointer("/spec/minReadySeconds").and_then(Value::as_i64),
    ) && p <= m
    {
        errs.push(FieldError::invalid(
            "spec.progressDeadlineSeconds",
            json!(p),
            "must be greater than minReadySeconds",
        ));
    }
    let ru = obj
        .pointer("/spec/strategy/rollingUpdate")
        .filter(|v| !v.is_null());
    match (s(obj, "/spec/strategy/type"), ru) {
        (Some("Recreate"), Some(_)) => errs.push(FieldError::forbidden(
            "spec.strategy.rollingUpdate",
            "may not be specified when strategy `type` is 'Recreate'",
        )),
        (Some("RollingUpdate"), Some(ru)) => {
            let field = "spec.strategy.rollingUpdate.maxUnavailable";
            let unavailable = ru.get("maxUnavailable").filter(|v| !v.is_null());
            let surge = ru.get("maxSurge").filter(|v| !v.is_null());
            let u = unavailable.and_then(|v| non_negative_int_or_percent(v, field, errs));
            let sg = surge
                .and_then(|v| non_negative_int_or_percent(v, "spec.strategy.rollingUpdate.maxSurge", errs));
            if u.unwrap_or(0) == 0 && sg.unwrap_or(0) == 0 {
                errs.push(FieldError::invalid(
                    field,
                    unavailable.cloned().unwrap_or(json!(0)),
                    "may not be 0 when `maxSurge` is 0",
                ));
            }
            if let Some(Value::String(st)) = unavailable
                && st.ends_with('%')
                && u.is_some_and(|n| n > 100)
            {
                errs.push(FieldError::invalid(
                    field,
                    json!(st),
                    "must not be greater than 100%",
                ));
            }
        }
        _ => {}
    }
}

/// Upstream `ValidateReplicationControllerSpec`: a non-empty selector map that the template's labels
/// satisfy, a valid template, non-negative counts.
fn replication_controller(obj: &Value, errs: &mut Vec<FieldError>) {
    non_negative(obj, "/spec/replicas", "spec.replicas", errs);
    non_negative(obj, "/spec/minReadySeconds", "spec.minReadySeconds", errs);
    // The same checks as the apps kinds, over the selector map written as `matchLabels`.
    let mut as_apps = obj.clone();
    let selector = obj.pointer("/spec/selector").cloned().unwrap_or(Value::Null);
    if selector.as_object().is_some_and(|m| !m.is_empty()) {
        if let Some(spec) = as_apps.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("selector".into(), json!({"matchLabels": selector}));
        }
    } else {
        errs.push(FieldError::required("spec.selector", ""));
        if obj.pointer("/spec/template").is_none_or(Value::is_null) {
            errs.push(FieldError::required("spec.template", ""));
        }
        return;
    }
    selector_and_template("ReplicationController", &as_apps, errs);
}

fn pvc_spec(spec: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let modes = spec.get("accessModes").and_then(Value::as_array);
    match modes {
        None => errs.push(FieldError::required(
            format!("{path}.accessModes"),
            "at least 1 access mode is required",
        )),
        Some(m) if m.is_empty() => errs.push(FieldError::required(
            format!("{path}.accessModes"),
            "at least 1 access mode is required",
        )),
        Some(m) => {
            for mode in m {
                let v = mode.as_str().unwrap_or("");
                if !matches!(
                    v,
                    "ReadWriteOnce" | "ReadOnlyMany" | "ReadWriteMany" | "ReadWriteOncePod"
                ) {
                    errs.push(FieldError::not_supported(
                        format!("{path}.accessModes"),
                        mode.clone(),
                        &[
                            "ReadOnlyMany",
                            "ReadWriteMany",
                            "ReadWriteOnce",
                            "ReadWriteOncePod",
                        ],
                    ));
                }
            }
        }
    }
    match spec.pointer("/resources/requests/storage") {
        None => errs.push(FieldError::required(format!("{path}.resources[storage]"), "")),
        Some(q) => {
            if !q.as_str().is_some_and(crate::strategy::validate::quantity_ok) {
                errs.push(FieldError::invalid(
                    format!("{path}.resources.requests[storage]"),
                    q.clone(),
                    "must be a valid quantity",
                ));
            }
        }
    }
}

/// A Kubernetes resource quantity (`200Mi`, `1.5`, `100m`, `1e3`), non-negative.
pub(crate) fn quantity_ok(q: &str) -> bool {
    crate::quantity::is_valid_non_negative(q)
}

pub(super) fn pod_spec(spec: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let containers = spec.get("containers").and_then(Value::as_array);
    if containers.is_none_or(Vec::is_empty) {
        errs.push(FieldError::required(format!("{path}.containers"), ""));
    }
    let volumes: Vec<String> = spec
        .get("volumes")
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .filter_map(|v| s(v, "/name").map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if let Some(vs) = spec.get("volumes").and_then(Value::as_array) {
        let mut seen = std::collections::BTreeSet::new();
        for (i, v) in vs.iter().enumerate() {
            let name = s(v, "/name").unwrap_or("");
            let p = format!("{path}.volumes[{i}]");
            if name.is_empty() {
                errs.push(FieldError::required(format!("{p}.name"), ""));
            } else if !is_dns1123_label(name) {
                errs.push(FieldError::invalid(format!("{p}.name"), name, "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"));
            } else if !seen.insert(name.to_string()) {
                errs.push(FieldError::duplicate(format!("{p}.name"), name));
            }
            let sources = v
                .as_object()
                .map(|m| m.keys().filter(|k| *k != "name").count())
                .unwrap_or(0);
            if sources == 0 {
                errs.push(FieldError::required(p.clone(), "must specify a volume type"));
            } else if sources > 1 {
                errs.push(FieldError::forbidden(
                    p.clone(),
                    "may not specify more than 1 volume type",
                ));
            }
        }
    }
    if let Some(rp) = s(spec, "/restartPolicy")
        && !matches!(rp, "Always" | "OnFailure" | "Never")
    {
        errs.push(FieldError::not_supported(
            format!("{path}.restartPolicy"),
            rp,
            &["Always", "OnFailure", "Never"],
        ));
    }
    if let Some(h) = s(spec, "/hostname")
        && !is_dns1123_label(h)
    {
        errs.push(FieldError::invalid(format!("{path}.hostname"), h, "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"));
    }
    if let Some(sd) = s(spec, "/subdomain")
        && !sd.is_empty()
        && !is_dns1123_label(sd)
    {
        errs.push(FieldError::invalid(format!("{path}.subdomain"), sd, "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"));
    }
    let mut names = std::collections::BTreeSet::new();
    for list in ["initContainers", "containers"] {
        let Some(cs) = spec.get(list).and_then(Value::as_array) else {
            continue;
        };
        for (i, c) in cs.iter().enumerate() {
            let p = format!("{path}.{list}[{i}]");
            let name = s(c, "/name").unwrap_or("");
            if name.is_empty() {
                errs.push(FieldError::required(format!("{p}.name"), ""));
            } else if !is_dns1123_label(name) {
                errs.push(FieldError::invalid(format!("{p}.name"), name, "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"));
            } else if !names.insert(name.to_string()) {
                errs.push(FieldError::duplicate(format!("{p}.name"), name));
            }
            if s(c, "/image").is_none_or(|i| i.trim().is_empty()) {
                errs.push(FieldError::required(format!("{p}.image"), ""));
            }
            if let Some(ports) = c.get("ports").and_then(Value::as_array) {
                for (j, port) in ports.iter().enumerate() {
                    let pp = format!("{p}.ports[{j}]");
                    match port.get("containerPort").and_then(Value::as_i64) {
                        Some(n) if (1..=65535).contains(&n) => {}
                        Some(n) => errs.push(FieldError::invalid(
                            format!("{pp}.containerPort"),
                            n,
                            "must be between 1 and 65535, inclusive",
                        )),
                        None => errs.push(FieldError::required(format!("{pp}.containerPort"), "")),
                    }
                    if let Some(proto) = s(port, "/protocol")
                        && !matches!(proto, "TCP" | "UDP" | "SCTP")
                    {
                        errs.push(FieldError::not_supported(
                            format!("{pp}.protocol"),
                            proto,
                            &["SCTP", "TCP", "UDP"],
                        ));
                    }
                }
            }
            if let Some(mounts) = c.get("volumeMounts").and_then(Value::as_array) {
                for (j, m) in mounts.iter().enumerate() {
                    let mp = format!("{p}.volumeMounts[{j}]");
                    let vname = s(m, "/name").unwrap_or("");
                    if vname.is_empty() {
                        errs.push(FieldError::required(format!("{mp}.name"), ""));
                    } else if path != "spec.template.spec" && !volumes.iter().any(|v| v == vname) {
                        // StatefulSet/Deployment templates may mount volumes that volumeClaimTemplates add.
                        errs.push(FieldError {
                            error_type: crate::field::ErrorType::NotFound,
                            field: format!("{mp}.name"),
                            value: Some(Value::String(vname.into())),
                            detail: String::new(),
                        });
                    }
                    if s(m, "/mountPath").is_none_or(str::is_empty) {
                        errs.push(FieldError::required(format!("{mp}.mountPath"), ""));
                    }
                }
            }
            for (r, kind) in [("requests", "requests"), ("limits", "limits")] {
                if let Some(m) = c.pointer(&format!("/resources/{r}")).and_then(Value::as_object) {
                    for (k, v) in m {
                        if !v.as_str().is_some_and(quantity_ok) && !v.is_number() {
                            errs.push(FieldError::invalid(
                                format!("{p}.resources.{kind}[{k}]"),
                                v.clone(),
                                "must be a valid quantity",
                            ));
                        }
                    }
                }
            }
        }
    }
}

fn service(obj: &Value, errs: &mut Vec<FieldError>) {
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    let svc_type = s(&spec, "/type").unwrap_or("ClusterIP");
    if !matches!(
        svc_type,
        "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName"
    ) {
        errs.push(FieldError::not_supported(
            "spec.type",
            svc_type,
            &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        ));
    }
    let headless = s(&spec, "/clusterIP") == Some("None");
    let ports = spec
        .get("ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if ports.is_empty() && !headless && svc_type != "ExternalName" {
        errs.push(FieldError::required("spec.ports", ""));
    }
    if headless && svc_type != "ClusterIP" && svc_type != "ExternalName" {
        errs.push(FieldError::invalid(
            "spec.clusterIPs[0]",
            "None",
            format!("may not be set to 'None' for {svc_type} services"),
        ));
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = format!("spec.ports[{i}]");
        let name = s(p, "/name").unwrap_or("");
        if ports.len() > 1 && name.is_empty() {
            errs.push(FieldError::required(format!("{pp}.name"), ""));
        } else if !name.is_empty() {
            if !is_dns1123_label(name) {
                errs.push(FieldError::invalid(format!("{pp}.name"), name, "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"));
            } else if !names.insert(name.to_string()) {
                errs.push(FieldError::duplicate(format!("{pp}.name"), name));
            }
        }
        match p.get("port").and_then(Value::as_i64) {
            Some(n) if (1..=65535).contains(&n) => {}
            Some(n) => errs.push(FieldError::invalid(
                format!("{pp}.port"),
                n,
                "must be between 1 and 65535, inclusive",
            )),
            None => errs.push(FieldError::required(format!("{pp}.port"), "")),
        }
        if let Some(proto) = s(p, "/protocol")
            && !matches!(proto, "TCP" | "UDP" | "SCTP")
        {
            errs.push(FieldError::not_supported(
                format!("{pp}.protocol"),
                proto,
                &["SCTP", "TCP", "UDP"],
            ));
        }
        if let Some(np) = p.get("nodePort").and_then(Value::as_i64)
            && np != 0
            && svc_type == "ClusterIP"
        {
            errs.push(FieldError::forbidden(
                format!("{pp}.nodePort"),
                "may not be used when `type` is 'ClusterIP'",
            ));
        }
    }
    if let Some(sel) = spec.get("selector") {
        validate_labels(Some(sel), "spec.selector", errs);
    }
    if let Some(sa) = s(&spec, "/sessionAffinity")
        && !matches!(sa, "None" | "ClientIP")
    {
        errs.push(FieldError::not_supported(
            "spec.sessionAffinity",
            sa,
            &["ClientIP", "None"],
        ));
    }
    let _ = label_value_ok;
}

/// With [`super::EXPAND_VOLUME_CLAIMS`]: a raised storage request of a template (same templates, same
/// order) is accepted by copying the old request into `new_spec` before the immutability comparison; a
/// lowered one is Forbidden on its own field.
fn claim_template_expansion(new_spec: &mut Value, old_spec: &Value, errs: &mut Vec<FieldError>) {
    let old_templates = old_spec.get("volumeClaimTemplates").and_then(Value::as_array);
    let Some(new_templates) = new_spec
        .get_mut("volumeClaimTemplates")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    let Some(old_templates) = old_templates.filter(|o| o.len() == new_templates.len()) else {
        return;
    };
    for (i, (n, o)) in new_templates.iter_mut().zip(old_templates).enumerate() {
        let ptr = "/spec/resources/requests/storage";
        let (Some(nq), Some(oq)) = (
            n.pointer(ptr).and_then(Value::as_str).map(str::to_string),
            o.pointer(ptr).cloned(),
        ) else {
            continue;
        };
        if let (Some(a), Some(b)) = (
            crate::quantity::parse(&nq),
            oq.as_str().and_then(crate::quantity::parse),
        ) {
            if a < b {
                errs.push(FieldError::forbidden(
                    format!("spec.volumeClaimTemplates[{i}].spec.resources.requests.storage"),
                    "field can not be less than previous value",
                ));
            }
            if let Some(slot) = n.pointer_mut(ptr) {
                *slot = oq;
            }
        }
    }
}

/// Immutability rules of updates.
/// A StatefulSet's status as upstream's `ValidateStatefulSetStatus` and `ValidateStatefulSetStatusUpdate`
/// check it: counts and generations non-negative, no count above `status.replicas`, available not above
/// ready, and `collisionCount` never decremented. (A main-resource update carries the stored status, which
/// passed these checks when it was written.)
fn statefulset_status(new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    let Some(st) = new.get("status").filter(|s| s.is_object()) else {
        return;
    };
    let int = |v: &Value, f: &str| v.get(f).and_then(Value::as_i64);
    for f in [
        "replicas",
        "readyReplicas",
        "currentReplicas",
        "updatedReplicas",
        "availableReplicas",
        "observedGeneration",
        "collisionCount",
    ] {
        if let Some(n) = int(st, f).filter(|n| *n < 0) {
            errs.push(FieldError::invalid(
                format!("status.{f}"),
                n,
                "must be greater than or equal to 0",
            ));
        }
    }
    let replicas = int(st, "replicas").unwrap_or(0);
    for f in [
        "readyReplicas",
        "currentReplicas",
        "updatedReplicas",
        "availableReplicas",
    ] {
        if let Some(n) = int(st, f).filter(|n| *n > replicas) {
            errs.push(FieldError::invalid(
                format!("status.{f}"),
                n,
                "cannot be greater than status.replicas",
            ));
        }
    }
    if let Some(n) = int(st, "availableReplicas").filter(|n| *n > int(st, "readyReplicas").unwrap_or(0)) {
        errs.push(FieldError::invalid(
            "status.availableReplicas",
            n,
            "cannot be greater than status.readyReplicas",
        ));
    }
    let old_count = old.pointer("/status/collisionCount").and_then(Value::as_i64);
    if let Some(was) = old_count {
        let now = int(st, "collisionCount");
        if now.is_none_or(|n| n < was) {
            errs.push(FieldError::invalid(
                "status.collisionCount",
                now.unwrap_or(0),
                "cannot be decremented",
            ));
        }
    }
}

pub fn validate_update_kind(group: &str, kind: &str, new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    for (ptr, field) in [
        ("/metadata/namespace", "metadata.namespace"),
        ("/metadata/name", "metadata.name"),
    ] {
        if new.pointer(ptr) != old.pointer(ptr) {
            errs.push(FieldError::invalid(
                field,
                new.pointer(ptr).cloned().unwrap_or(Value::Null),
                "field is immutable",
            ));
        }
    }
    match (group, kind) {
        ("apps", "StatefulSet") => {
            statefulset_status(new, old, errs);
            // Upstream ValidateStatefulSetUpdate: copy the mutable fields from old into new and compare.
            let mut a = new.get("spec").cloned().unwrap_or(Value::Null);
            let b = old.get("spec").cloned().unwrap_or(Value::Null);
            if let (Some(am), Some(bm)) = (a.as_object_mut(), b.as_object()) {
                for f in [
                    "replicas",
                    "ordinals",
                    "template",
                    "updateStrategy",
                    "persistentVolumeClaimRetentionPolicy",
                    "minReadySeconds",
                ] {
                    match bm.get(f) {
                        Some(v) => {
                            am.insert(f.into(), v.clone());
                        }
                        None => {
                            am.remove(f);
                        }
                    }
                }
            }
            let expand = new
                .pointer(&format!(
                    "/metadata/annotations/{}",
                    super::EXPAND_VOLUME_CLAIMS.replace('/', "~1")
                ))
                .and_then(Value::as_str)
                == Some("true");
            if expand {
                claim_template_expansion(&mut a, &b, errs);
            }
            if !semantically_equal(&a, &b) {
                errs.push(FieldError::forbidden(
                    "spec",
                    "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
                ));
            }
        }
        ("apps", "Deployment" | "ReplicaSet" | "DaemonSet")
            if new.pointer("/spec/selector") != old.pointer("/spec/selector") =>
        {
            errs.push(FieldError::invalid(
                "spec.selector",
                new.pointer("/spec/selector").cloned().unwrap_or(Value::Null),
                "field is immutable",
            ));
        }
        ("", "Pod") => {
            let strip = |v: &Value| {
                let mut spec = v.get("spec").cloned().unwrap_or(Value::Null);
                if let Some(cs) = spec.get_mut("containers").and_then(Value::as_array_mut) {
                    for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                        c.remove("image");
                    }
                }
                if let Some(m) = spec.as_object_mut() {
                    for f in [
                        "activeDeadlineSeconds",
                        "tolerations",
                        "terminationGracePeriodSeconds",
                        "schedulingGates",
                    ] {
                        m.remove(f);
                    }
                    // nodeName is set once, by binding.
                    if old
                        .pointer("/spec/nodeName")
                        .is_none_or(|n| n.is_null() || n == "")
                    {
                        m.remove("nodeName");
                    }
                }
                spec
            };
            if !semantically_equal(&strip(new), &strip(old)) {
                errs.push(FieldError::forbidden("spec", "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"));
            }
        }
        ("", "PersistentVolumeClaim") => {
            // Upstream: the binder may set `volumeName` once (an unbound claim's), requests may change.
            let binding = old
                .pointer("/spec/volumeName")
                .is_none_or(|v| v.is_null() || v == "");
            let strip = |v: &Value| {
                let mut spec = v.get("spec").cloned().unwrap_or(Value::Null);
                if let Some(m) = spec.as_object_mut() {
                    m.remove("resources");
                    if binding {
                        m.remove("volumeName");
                    }
                }
                spec
            };
            let o = strip(old);
            let storage =
                |v: &Value| s(v, "/spec/resources/requests/storage").and_then(crate::quantity::parse);
            if let (Some(n), Some(o)) = (storage(new), storage(old))
                && n < o
            {
                // Upstream ValidatePersistentVolumeClaimUpdate: a request can grow, never shrink.
                errs.push(FieldError::forbidden(
                    "spec.resources.requests.storage",
                    "field can not be less than previous value",
                ));
            }
            if !semantically_equal(&strip(new), &o) {
                errs.push(FieldError::forbidden("spec", "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims"));
            }
        }
        ("", "Service") => {
            let (a, b) = (s(new, "/spec/clusterIP"), s(old, "/spec/clusterIP"));
            if b.is_some()
                && a.is_some()
                && a != b
                && new.pointer("/spec/type") != Some(&Value::String("ExternalName".into()))
            {
                errs.push(FieldError::invalid(
                    "spec.clusterIPs[0]",
                    a.unwrap_or(""),
                    "may not change once set",
                ));
            }
        }
        ("", "ConfigMap" | "Secret") if old.get("immutable") == Some(&Value::Bool(true)) => {
            for f in ["data", "binaryData", "stringData"] {
                if new.get(f) != old.get(f) {
                    errs.push(FieldError::forbidden(
                        f,
                        "field is immutable when `immutable` is set",
                    ));
                }
            }
            if new.get("immutable") != Some(&Value::Bool(true)) {
                errs.push(FieldError::forbidden(
                    "immutable",
                    "field is immutable when `immutable` is set",
                ));
            }
        }
        _ => {}
    }
}

/// Equality where a missing field, null, an empty map and an empty list are the same (Go's semantic
/// DeepEqual over defaulted structs treats nil and empty alike).
pub(super) fn semantically_equal(a: &Value, b: &Value) -> bool {
    fn empty(v: &Value) -> bool {
        match v {
            Value::Null => true,
            Value::Object(m) => m.values().all(empty),
            Value::Array(a) => a.is_empty(),
            _ => false,
        }
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().all(|k| match (x.get(k), y.get(k)) {
                (Some(p), Some(q)) => semantically_equal(p, q),
                (Some(p), None) | (None, Some(p)) => empty(p),
                (None, None) => true,
            })
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| semantically_equal(p, q))
        }
        (Value::Null, other) | (other, Value::Null) => empty(other),
        _ => a == b,
    }
}
