//! Validation of the kinds a stateful Helm chart renders besides workloads: PodDisruptionBudget
//! (`pkg/apis/policy/validation`), NetworkPolicy, Ingress and IngressClass (`pkg/apis/networking/validation`),
//! PriorityClass (`pkg/apis/scheduling/validation`), ResourceQuota and LimitRange
//! (`pkg/apis/core/validation`), HorizontalPodAutoscaler (`pkg/apis/autoscaling/validation`) and APIService
//! (`k8s.io/kube-aggregator/pkg/apis/apiregistration/validation`): the main fields, with upstream's paths
//! and messages.

use super::meta::is_dns1123_subdomain;
use crate::field::FieldError;
use crate::quantity;
use serde_json::Value;

fn s<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

/// Upstream's largest value of a user-defined PriorityClass (`HighestUserDefinablePriority`).
pub const HIGHEST_USER_PRIORITY: i64 = 1_000_000_000;

/// A non-negative int-or-percent, at most 100% (upstream `ValidateNonnegativeIntOrPercent` +
/// `IsNotMoreThan100Percent`).
fn non_negative_int_or_percent(v: Option<&Value>, field: &str, errs: &mut Vec<FieldError>) {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return;
    };
    match v {
        Value::Number(n) => {
            if n.as_i64().is_none_or(|n| n < 0) {
                errs.push(FieldError::invalid(field, v.clone(), "must be greater than or equal to 0"));
            }
        }
        Value::String(p) => match p
            .strip_suffix('%')
            .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        {
            Some(d) if d.parse::<i64>().unwrap_or(i64::MAX) > 100 => {
                errs.push(FieldError::invalid(field, v.clone(), "must not be greater than 100%"));
            }
            Some(_) => {}
            None => errs.push(FieldError::invalid(field, v.clone(), "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')")),
        },
        _ => errs.push(FieldError::invalid(field, v.clone(), "must be an integer or percentage")),
    }
}

fn selector(v: Option<&Value>, field: &str, errs: &mut Vec<FieldError>) {
    if let Some(sel) = v.filter(|v| !v.is_null())
        && let Err(e) = crate::selector::LabelSelector::from_json(sel)
    {
        errs.push(FieldError::invalid(field, sel.clone(), e.to_string()));
    }
}

fn quantities(obj: &Value, ptr: &str, field: &str, errs: &mut Vec<FieldError>) {
    if let Some(m) = obj.pointer(ptr).and_then(Value::as_object) {
        for (k, q) in m {
            let f = format!("{field}[{k}]");
            match q.as_str().map(str::to_string).or_else(|| q.as_f64().map(|n| n.to_string())) {
                Some(t) if quantity::is_valid_non_negative(&t) => {}
                Some(t) if quantity::parse(&t).is_some() => {
                    errs.push(FieldError::invalid(f, q.clone(), "must be greater than or equal to 0"));
                }
                _ => errs.push(FieldError::invalid(
                    f,
                    q.clone(),
                    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
                )),
            }
        }
    }
}

/// Validate one of this module's kinds (nothing for other kinds).
pub fn validate(group: &str, kind: &str, obj: &Value, errs: &mut Vec<FieldError>) {
    match (group, kind) {
        ("policy", "PodDisruptionBudget") => pdb(obj, errs),
        ("networking.k8s.io", "NetworkPolicy") => network_policy(obj, errs),
        ("networking.k8s.io", "Ingress") => ingress(obj, errs),
        ("networking.k8s.io", "IngressClass") => match s(obj, "/spec/controller") {
            None | Some("") => errs.push(FieldError::required("spec.controller", "")),
            Some(c) if c.len() > 250 => errs.push(FieldError::invalid(
                "spec.controller",
                c,
                "must be no more than 250 characters",
            )),
            Some(_) => {}
        },
        ("scheduling.k8s.io", "PriorityClass") => priority_class(obj, errs),
        ("", "ResourceQuota") => {
            quantities(obj, "/spec/hard", "spec.hard", errs);
            if let Some(scopes) = obj.pointer("/spec/scopes").and_then(Value::as_array) {
                const SCOPES: &[&str] = &[
                    "Terminating",
                    "NotTerminating",
                    "BestEffort",
                    "NotBestEffort",
                    "PriorityClass",
                    "CrossNamespacePodAffinity",
                ];
                for (i, sc) in scopes.iter().enumerate() {
                    let v = sc.as_str().unwrap_or("");
                    if !SCOPES.contains(&v) {
                        errs.push(FieldError::not_supported(format!("spec.scopes[{i}]"), v, SCOPES));
                    }
                }
            }
        }
        ("", "LimitRange") => limit_range(obj, errs),
        ("autoscaling", "HorizontalPodAutoscaler") => hpa(obj, errs),
        ("apiregistration.k8s.io", "APIService") => api_service(obj, errs),
        _ => {}
    }
}

/// The fields these kinds make immutable.
pub fn validate_update(group: &str, kind: &str, new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    if (group, kind) == ("scheduling.k8s.io", "PriorityClass") && new.get("value") != old.get("value") {
        errs.push(FieldError::forbidden("value", "may not be changed in an update."));
    }
    if (group, kind) == ("networking.k8s.io", "IngressClass")
        && new.pointer("/spec/controller") != old.pointer("/spec/controller")
    {
        errs.push(FieldError::invalid(
            "spec.controller",
            new.pointer("/spec/controller").cloned().unwrap_or(Value::Null),
            "field is immutable",
        ));
    }
}

fn pdb(obj: &Value, errs: &mut Vec<FieldError>) {
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    let min = spec.get("minAvailable").filter(|v| !v.is_null());
    let max = spec.get("maxUnavailable").filter(|v| !v.is_null());
    if min.is_some() && max.is_some() {
        errs.push(FieldError::invalid(
            "spec",
            spec.clone(),
            "minAvailable and maxUnavailable cannot be both set",
        ));
    }
    non_negative_int_or_percent(min, "spec.minAvailable", errs);
    non_negative_int_or_percent(max, "spec.maxUnavailable", errs);
    selector(spec.get("selector"), "spec.selector", errs);
    if let Some(p) = s(&spec, "/unhealthyPodEvictionPolicy")
        && !matches!(p, "IfHealthyBudget" | "AlwaysAllow")
    {
        errs.push(FieldError::not_supported(
            "spec.unhealthyPodEvictionPolicy",
            p,
            &["AlwaysAllow", "IfHealthyBudget"],
        ));
    }
}

fn network_policy(obj: &Value, errs: &mut Vec<FieldError>) {
    selector(obj.pointer("/spec/podSelector"), "spec.podSelector", errs);
    if let Some(types) = obj.pointer("/spec/policyTypes").and_then(Value::as_array) {
        if types.len() > 2 {
            errs.push(FieldError::invalid(
                "spec.policyTypes",
                Value::Array(types.clone()),
                "may not specify more than two policyTypes",
            ));
        }
        for (i, t) in types.iter().enumerate() {
            let v = t.as_str().unwrap_or("");
            if !matches!(v, "Ingress" | "Egress") {
                errs.push(FieldError::not_supported(
                    format!("spec.policyTypes[{i}]"),
                    v,
                    &["Egress", "Ingress"],
                ));
            }
        }
    }
    for dir in ["ingress", "egress"] {
        for (i, rule) in obj
            .pointer(&format!("/spec/{dir}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            for (j, p) in rule["ports"].as_array().into_iter().flatten().enumerate() {
                if let Some(proto) = p.get("protocol").and_then(Value::as_str)
                    && !matches!(proto, "TCP" | "UDP" | "SCTP")
                {
                    errs.push(FieldError::not_supported(
                        format!("spec.{dir}[{i}].ports[{j}].protocol"),
                        proto,
                        &["SCTP", "TCP", "UDP"],
                    ));
                }
            }
        }
    }
}

fn backend(b: &Value, field: &str, errs: &mut Vec<FieldError>) {
    let svc = b.get("service").filter(|v| !v.is_null());
    let res = b.get("resource").filter(|v| !v.is_null());
    match (svc, res) {
        (Some(_), Some(_)) => errs.push(FieldError::invalid(
            field,
            b.clone(),
            "cannot set both service and resource backends",
        )),
        (None, None) => errs.push(FieldError::invalid(
            field,
            b.clone(),
            "resource or service backend is required",
        )),
        (Some(svc), None) => {
            if s(svc, "/name").is_none_or(str::is_empty) {
                errs.push(FieldError::required(format!("{field}.service.name"), ""));
            }
            let port = svc.get("port").cloned().unwrap_or(Value::Null);
            let named = port
                .get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty());
            let number = port.get("number").and_then(Value::as_i64);
            match (named, number) {
                (true, Some(_)) => errs.push(FieldError::invalid(
                    format!("{field}.service.port"),
                    port.clone(),
                    "cannot set both port name & port number",
                )),
                (false, None) => errs.push(FieldError::invalid(
                    format!("{field}.service.port"),
                    port.clone(),
                    "port name or number is required",
                )),
                (false, Some(n)) if !(1..=65535).contains(&n) => errs.push(FieldError::invalid(
                    format!("{field}.service.port.number"),
                    n,
                    "must be between 1 and 65535, inclusive",
                )),
                _ => {}
            }
        }
        (None, Some(_)) => {}
    }
}

fn ingress(obj: &Value, errs: &mut Vec<FieldError>) {
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    let rules = spec
        .get("rules")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(b) = spec.get("defaultBackend").filter(|v| !v.is_null()) {
        backend(b, "spec.defaultBackend", errs);
    } else if rules.is_empty() {
        errs.push(FieldError::invalid(
            "spec.rules",
            Value::Array(Vec::new()),
            "either `defaultBackend` or `rules` must be specified",
        ));
    }
    for (i, rule) in rules.iter().enumerate() {
        if let Some(host) = rule.get("host").and_then(Value::as_str).filter(|h| !h.is_empty()) {
            let bare = host.strip_prefix("*.").unwrap_or(host);
            if !is_dns1123_subdomain(bare) {
                errs.push(FieldError::invalid(
                    format!("spec.rules[{i}].host"),
                    host,
                    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
                ));
            }
        }
        let Some(http) = rule.get("http").filter(|v| !v.is_null()) else {
            continue;
        };
        let paths = http
            .get("paths")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if paths.is_empty() {
            errs.push(FieldError::required(format!("spec.rules[{i}].http.paths"), ""));
        }
        for (j, p) in paths.iter().enumerate() {
            let f = format!("spec.rules[{i}].http.paths[{j}]");
            let path = p.get("path").and_then(Value::as_str).unwrap_or("");
            match p.get("pathType").and_then(Value::as_str) {
                None => errs.push(FieldError::required(
                    format!("{f}.pathType"),
                    "pathType must be specified",
                )),
                Some("Exact" | "Prefix") => {
                    if !path.starts_with('/') {
                        errs.push(FieldError::invalid(
                            format!("{f}.path"),
                            path,
                            "must be an absolute path",
                        ));
                    }
                }
                Some("ImplementationSpecific") => {
                    if !path.is_empty() && !path.starts_with('/') {
                        errs.push(FieldError::invalid(
                            format!("{f}.path"),
                            path,
                            "must be an absolute path",
                        ));
                    }
                }
                Some(t) => errs.push(FieldError::not_supported(
                    format!("{f}.pathType"),
                    t,
                    &["Exact", "ImplementationSpecific", "Prefix"],
                )),
            }
            backend(
                p.get("backend").unwrap_or(&Value::Null),
                &format!("{f}.backend"),
                errs,
            );
        }
    }
}

fn priority_class(obj: &Value, errs: &mut Vec<FieldError>) {
    let name = s(obj, "/metadata/name").unwrap_or("");
    let builtin = matches!(name, "system-cluster-critical" | "system-node-critical");
    if name.starts_with("system-") && !builtin {
        errs.push(FieldError::forbidden(
            "metadata.name",
            "priority class names with 'system-' prefix are reserved",
        ));
    }
    match obj.get("value").and_then(Value::as_i64) {
        None => errs.push(FieldError::required("value", "")),
        Some(v) if v > HIGHEST_USER_PRIORITY && !builtin => errs.push(FieldError::forbidden(
            "value",
            format!("maximum allowed value of a user defined priority is {HIGHEST_USER_PRIORITY}"),
        )),
        Some(_) => {}
    }
    if let Some(p) = s(obj, "/preemptionPolicy")
        && !matches!(p, "PreemptLowerPriority" | "Never")
    {
        errs.push(FieldError::not_supported(
            "preemptionPolicy",
            p,
            &["Never", "PreemptLowerPriority"],
        ));
    }
}

fn limit_range(obj: &Value, errs: &mut Vec<FieldError>) {
    for (i, l) in obj
        .pointer("/spec/limits")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let f = format!("spec.limits[{i}]");
        let t = l.get("type").and_then(Value::as_str).unwrap_or("");
        if !matches!(t, "Pod" | "Container" | "PersistentVolumeClaim") {
            errs.push(FieldError::not_supported(
                format!("{f}.type"),
                t,
                &["Container", "PersistentVolumeClaim", "Pod"],
            ));
        }
        for k in ["max", "min", "default", "defaultRequest", "maxLimitRequestRatio"] {
            quantities(l, &format!("/{k}"), &format!("{f}.{k}"), errs);
        }
        let q = |k: &str, r: &str| {
            l.get(k)
                .and_then(|m| m.get(r))
                .and_then(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .or_else(|| v.as_f64().map(|n| n.to_string()))
                })
                .and_then(|v| quantity::parse(&v).map(|n| (v, n)))
        };
        let resources: std::collections::BTreeSet<String> = ["max", "min", "default", "defaultRequest"]
            .iter()
            .filter_map(|k| l.get(*k).and_then(Value::as_object))
            .flat_map(|m| m.keys().cloned())
            .collect();
        for r in &resources {
            let (min, max) = (q("min", r), q("max", r));
            let (def, req) = (q("default", r), q("defaultRequest", r));
            if let (Some((mn, a)), Some((mx, b))) = (&min, &max)
                && a > b
            {
                errs.push(FieldError::invalid(
                    format!("{f}.min[{r}]"),
                    mn.as_str(),
                    format!("min value {mn} is greater than max value {mx}"),
                ));
            }
            if let (Some((dr, a)), Some((mx, b))) = (&req, &max)
                && a > b
            {
                errs.push(FieldError::invalid(
                    format!("{f}.defaultRequest[{r}]"),
                    dr.as_str(),
                    format!("default request value {dr} is greater than max value {mx}"),
                ));
            }
            if let (Some((dr, a)), Some((d, b))) = (&req, &def)
                && a > b
            {
                errs.push(FieldError::invalid(
                    format!("{f}.defaultRequest[{r}]"),
                    dr.as_str(),
                    format!("default request value {dr} is greater than default limit value {d}"),
                ));
            }
            if let (Some((d, a)), Some((mx, b))) = (&def, &max)
                && a > b
            {
                errs.push(FieldError::invalid(
                    format!("{f}.default[{r}]"),
                    d.as_str(),
                    format!("default value {d} is greater than max value {mx}"),
                ));
            }
            if let (Some((mn, a)), Some((d, b))) = (&min, &def)
                && a > b
            {
                errs.push(FieldError::invalid(
                    format!("{f}.default[{r}]"),
                    d.as_str(),
                    format!("min value {mn} is greater than default value {d}"),
                ));
            }
        }
    }
}

fn hpa(obj: &Value, errs: &mut Vec<FieldError>) {
    for k in ["kind", "name"] {
        if s(obj, &format!("/spec/scaleTargetRef/{k}")).is_none_or(str::is_empty) {
            errs.push(FieldError::required(format!("spec.scaleTargetRef.{k}"), ""));
        }
    }
    let min = obj.pointer("/spec/minReplicas").and_then(Value::as_i64);
    if let Some(m) = min
        && m < 1
    {
        errs.push(FieldError::invalid(
            "spec.minReplicas",
            m,
            "must be greater than or equal to 1",
        ));
    }
    match obj.pointer("/spec/maxReplicas").and_then(Value::as_i64) {
        None => errs.push(FieldError::required("spec.maxReplicas", "")),
        Some(m) if m < 1 => errs.push(FieldError::invalid(
            "spec.maxReplicas",
            m,
            "must be greater than 0",
        )),
        Some(m) if m < min.unwrap_or(1) => errs.push(FieldError::invalid(
            "spec.maxReplicas",
            m,
            "must be greater than or equal to `minReplicas`",
        )),
        Some(_) => {}
    }
}

fn api_service(obj: &Value, errs: &mut Vec<FieldError>) {
    let name = s(obj, "/metadata/name").unwrap_or("");
    let version = s(obj, "/spec/version").unwrap_or("");
    let group = s(obj, "/spec/group").unwrap_or("");
    let want = if group.is_empty() {
        version.to_string()
    } else {
        format!("{version}.{group}")
    };
    if !name.is_empty() && name != want {
        errs.push(FieldError::invalid(
            "metadata.name",
            name,
            format!("must be `spec.version+\".\"+spec.group`: \"{want}\""),
        ));
    }
    if version.is_empty() {
        errs.push(FieldError::required("spec.version", ""));
    }
    let group_min = obj
        .pointer("/spec/groupPriorityMinimum")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if !(1..=20000).contains(&group_min) {
        errs.push(FieldError::invalid(
            "spec.groupPriorityMinimum",
            group_min,
            "must be positive and less than 20000",
        ));
    }
    let version_prio = obj
        .pointer("/spec/versionPriority")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if !(1..=1000).contains(&version_prio) {
        errs.push(FieldError::invalid(
            "spec.versionPriority",
            version_prio,
            "must be positive and less than 1000",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(group: &str, kind: &str, obj: Value) -> Vec<String> {
        let mut errs = Vec::new();
        validate(group, kind, &obj, &mut errs);
        errs.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn every_bad_field_is_named() {
        assert_eq!(
            fields(
                "policy",
                "PodDisruptionBudget",
                json!({"spec": {"minAvailable": -1, "maxUnavailable": "150%", "unhealthyPodEvictionPolicy": "X"}})
            ),
            [
                "spec",
                "spec.minAvailable",
                "spec.maxUnavailable",
                "spec.unhealthyPodEvictionPolicy"
            ]
        );
        assert_eq!(
            fields(
                "autoscaling",
                "HorizontalPodAutoscaler",
                json!({"spec": {"minReplicas": 3, "maxReplicas": 2, "scaleTargetRef": {"kind": "Deployment"}}})
            ),
            ["spec.scaleTargetRef.name", "spec.maxReplicas"]
        );
        assert_eq!(
            fields(
                "scheduling.k8s.io",
                "PriorityClass",
                json!({"metadata": {"name": "system-mine"}, "value": 2_000_000_000i64})
            ),
            ["metadata.name", "value"]
        );
        assert_eq!(
            fields(
                "",
                "LimitRange",
                json!({"spec": {"limits": [{"type": "Container", "min": {"cpu": "2"}, "max": {"cpu": "1"}}]}})
            ),
            ["spec.limits[0].min[cpu]"]
        );
        assert_eq!(
            fields(
                "networking.k8s.io",
                "Ingress",
                json!({"spec": {"rules": [{"host": "Bad_Host", "http": {"paths": [{"path": "x", "pathType": "Prefix",
                    "backend": {"service": {"name": "s", "port": {}}}}]}}]}})
            ),
            [
                "spec.rules[0].host",
                "spec.rules[0].http.paths[0].path",
                "spec.rules[0].http.paths[0].backend.service.port"
            ]
        );
        assert!(
            fields(
                "",
                "ResourceQuota",
                json!({"spec": {"hard": {"pods": "10", "requests.cpu": "1"}}})
            )
            .is_empty()
        );
        assert_eq!(
            fields("", "ResourceQuota", json!({"spec": {"hard": {"pods": "ten"}}})),
            ["spec.hard[pods]"]
        );
    }
}
