//! ResourceQuota arithmetic (upstream `pkg/quota/v1` and its core evaluators, 1.32): what an object adds
//! to a namespace's usage, whether that fits a quota's `spec.hard`, and upstream's messages.
//!
//! Usage is kept in milli-units (`i128`), so `100m` CPU and `64Mi` memory add exactly.
//!
//! Counted: `pods`/`count/pods` and the pod's effective `requests.cpu`/`cpu`, `requests.memory`/`memory`,
//! `limits.cpu`, `limits.memory` (non-terminal pods only; containers summed, each init container a
//! floor, as upstream `PodRequests`); `persistentvolumeclaims`, `requests.storage` and the per-class
//! `<class>.storageclass.storage.k8s.io/…` forms; `services`, `services.loadbalancers`,
//! `services.nodeports`; the legacy `configmaps`, `secrets`, `replicationcontrollers`, `resourcequotas`;
//! and `count/<resource>[.<group>]` of every kind.

use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// Usage by resource name, in milli-units.
pub type Usage = BTreeMap<String, i128>;

/// A quantity in milli-units (`"100m"` → 100, `"1"` → 1000, `"1Ki"` → 1 024 000).
pub fn milli(q: &Value) -> Option<i128> {
    let text = match q {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let v = crate::quantity::parse(&text)?;
    // Round up, as upstream's MilliValue does for sub-milli quantities.
    #[allow(clippy::cast_possible_truncation)]
    Some((v * 1000.0).ceil() as i128)
}

/// Format milli-units as a quantity, in binary units when `like` uses them (`8Gi`), else decimal
/// (`4`, `500m`).
pub fn format(milli: i128, like: &str) -> String {
    let binary = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]
        .iter()
        .any(|s| like.ends_with(s));
    if milli % 1000 == 0 {
        let units = milli / 1000;
        if binary && units != 0 {
            for (suffix, size) in [
                ("Ti", 1_i128 << 40),
                ("Gi", 1 << 30),
                ("Mi", 1 << 20),
                ("Ki", 1 << 10),
            ] {
                if units % size == 0 {
                    return format!("{}{suffix}", units / size);
                }
            }
        }
        return units.to_string();
    }
    format!("{milli}m")
}

fn add(u: &mut Usage, k: &str, v: i128) {
    *u.entry(k.to_string()).or_insert(0) += v;
}

fn resources_of(c: &Value, which: &str) -> Usage {
    let mut u = Usage::new();
    if let Some(m) = c
        .pointer(&format!("/resources/{which}"))
        .and_then(Value::as_object)
    {
        for (k, v) in m {
            if let Some(n) = milli(v) {
                u.insert(k.clone(), n);
            }
        }
    }
    u
}

/// The pod's effective requests or limits (`which`): containers summed, each init container a floor.
pub fn pod_resources(pod: &Value, which: &str) -> Usage {
    let mut sum = Usage::new();
    for c in pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for (k, v) in resources_of(c, which) {
            add(&mut sum, &k, v);
        }
    }
    for c in pod
        .pointer("/spec/initContainers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for (k, v) in resources_of(c, which) {
            let e = sum.entry(k).or_insert(0);
            *e = (*e).max(v);
        }
    }
    sum
}

/// Whether a pod no longer counts (upstream `QuotaV1Pod`: Succeeded or Failed).
pub fn is_terminal(pod: &Value) -> bool {
    matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    )
}

/// What one object of `(group, plural)` adds to its namespace's usage.
pub fn usage(group: &str, plural: &str, obj: &Value) -> Usage {
    let mut u = Usage::new();
    let count = if group.is_empty() {
        format!("count/{plural}")
    } else {
        format!("count/{plural}.{group}")
    };
    if group.is_empty() && plural == "pods" && is_terminal(obj) {
        return u;
    }
    add(&mut u, &count, 1000);
    if !group.is_empty() {
        return u;
    }
    match plural {
        "pods" => {
            add(&mut u, "pods", 1000);
            for (k, v) in pod_resources(obj, "requests") {
                if matches!(k.as_str(), "cpu" | "memory" | "ephemeral-storage") {
                    add(&mut u, &format!("requests.{k}"), v);
                    if k != "ephemeral-storage" {
                        add(&mut u, &k, v);
                    }
                }
            }
            for (k, v) in pod_resources(obj, "limits") {
                if matches!(k.as_str(), "cpu" | "memory" | "ephemeral-storage") {
                    add(&mut u, &format!("limits.{k}"), v);
                }
            }
        }
        "persistentvolumeclaims" => {
            add(&mut u, "persistentvolumeclaims", 1000);
            let storage = obj
                .pointer("/spec/resources/requests/storage")
                .and_then(milli)
                .unwrap_or(0);
            add(&mut u, "requests.storage", storage);
            if let Some(class) = obj.pointer("/spec/storageClassName").and_then(Value::as_str) {
                add(
                    &mut u,
                    &format!("{class}.storageclass.storage.k8s.io/requests.storage"),
                    storage,
                );
                add(
                    &mut u,
                    &format!("{class}.storageclass.storage.k8s.io/persistentvolumeclaims"),
                    1000,
                );
            }
        }
        "services" => {
            add(&mut u, "services", 1000);
            let ty = obj
                .pointer("/spec/type")
                .and_then(Value::as_str)
                .unwrap_or("ClusterIP");
            let ports = obj
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let ports = i128::try_from(ports).unwrap_or(0);
            if ty == "LoadBalancer" {
                add(&mut u, "services.loadbalancers", 1000);
            }
            if matches!(ty, "LoadBalancer" | "NodePort") {
                add(&mut u, "services.nodeports", ports * 1000);
            }
        }
        "configmaps" | "secrets" | "replicationcontrollers" | "resourcequotas" => add(&mut u, plural, 1000),
        _ => {}
    }
    u
}

/// Whether a quota with these `spec.scopes` covers `pod` (upstream scope matching; a quota with a
/// `scopeSelector` or a scope not listed here is treated as not covering it).
pub fn scopes_match(quota: &Value, plural: &str, obj: &Value) -> bool {
    if quota.pointer("/spec/scopeSelector").is_some_and(|s| !s.is_null()) {
        return false;
    }
    let scopes: Vec<&str> = quota
        .pointer("/spec/scopes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if scopes.is_empty() {
        return true;
    }
    if plural != "pods" {
        return false;
    }
    let terminating = obj
        .pointer("/spec/activeDeadlineSeconds")
        .is_some_and(|v| !v.is_null());
    let best_effort = pod_resources(obj, "requests").is_empty() && pod_resources(obj, "limits").is_empty();
    scopes.iter().all(|s| match *s {
        "Terminating" => terminating,
        "NotTerminating" => !terminating,
        "BestEffort" => best_effort,
        "NotBestEffort" => !best_effort,
        _ => false,
    })
}

fn pretty(list: &[(String, String)]) -> String {
    list.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The resources a quota on cpu/memory makes every container state (upstream pod evaluator
/// `Constraints`): `Some("requests.cpu for: c")` when a container lacks one.
pub fn missing_requests(hard: &Map<String, Value>, pod: &Value) -> Option<String> {
    let required: BTreeSet<&str> = hard
        .keys()
        .map(String::as_str)
        .filter(|k| {
            matches!(
                *k,
                "cpu" | "memory" | "requests.cpu" | "requests.memory" | "limits.cpu" | "limits.memory"
            )
        })
        .collect();
    if required.is_empty() {
        return None;
    }
    let mut missing: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for c in pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let req = resources_of(c, "requests");
        let lim = resources_of(c, "limits");
        let mut have: BTreeSet<String> = BTreeSet::new();
        for k in req.keys() {
            have.insert(k.clone());
            have.insert(format!("requests.{k}"));
        }
        for k in lim.keys() {
            have.insert(format!("limits.{k}"));
        }
        for r in &required {
            if !have.contains(*r) {
                missing
                    .entry(r)
                    .or_default()
                    .insert(c["name"].as_str().unwrap_or("").to_string());
            }
        }
    }
    if missing.is_empty() {
        return None;
    }
    let parts: Vec<String> = missing
        .iter()
        .map(|(r, names)| format!("{r} for: {}", names.iter().cloned().collect::<Vec<_>>().join(",")))
        .collect();
    Some(format!("must specify {}", parts.join("; ")))
}

/// Check `delta` against one quota (`spec.hard`, `status.used`); `Err` with upstream's message
/// (`exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2`) when it does not fit, `Ok` with
/// the quota's new `status.used` (only the resources it limits) when it does. `Ok(None)`: the quota
/// limits none of `delta`'s resources.
///
/// # Errors
/// The "exceeded quota" message.
pub fn charge(quota: &Value, delta: &Usage) -> Result<Option<Map<String, Value>>, String> {
    let name = quota
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let empty = Map::new();
    let hard = quota
        .pointer("/spec/hard")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let used = quota
        .pointer("/status/used")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let limited: Vec<&String> = hard.keys().filter(|k| delta.contains_key(*k)).collect();
    if limited.is_empty() {
        return Ok(None);
    }
    let (mut req, mut was, mut lim) = (Vec::new(), Vec::new(), Vec::new());
    let mut next = used.clone();
    for k in limited {
        let h_text = hard[k]
            .as_str()
            .map_or_else(|| hard[k].to_string(), str::to_string);
        let h = milli(&hard[k]).unwrap_or(0);
        let u = used.get(k).and_then(milli).unwrap_or(0);
        let d = delta[k];
        if d > 0 && u + d > h {
            req.push((k.clone(), format(d, &h_text)));
            was.push((k.clone(), format(u, &h_text)));
            lim.push((k.clone(), h_text.clone()));
        }
        next.insert(k.clone(), Value::String(format(u + d, &h_text)));
    }
    if !req.is_empty() {
        return Err(format!(
            "exceeded quota: {name}, requested: {}, used: {}, limited: {}",
            pretty(&req),
            pretty(&was),
            pretty(&lim)
        ));
    }
    Ok(Some(next))
}

/// A quota's `status.used` from the usage of every object it covers (the quota controller's
/// recalculation): each `spec.hard` resource, 0 when nothing uses it, formatted like its hard value.
pub fn used_from(hard: &Map<String, Value>, total: &Usage) -> Map<String, Value> {
    hard.iter()
        .map(|(k, h)| {
            let like = h.as_str().unwrap_or("");
            (
                k.clone(),
                Value::String(format(*total.get(k).unwrap_or(&0), like)),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(cpu: &str, mem: &str) -> Value {
        json!({"spec": {"containers": [
            {"name": "a", "resources": {"requests": {"cpu": cpu, "memory": mem}, "limits": {"memory": mem}}},
            {"name": "b", "resources": {"requests": {"cpu": cpu}}}],
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "2"}}}]}})
    }

    #[test]
    fn pod_usage_sums_containers_with_init_containers_as_a_floor() {
        let u = usage("", "pods", &pod("250m", "64Mi"));
        assert_eq!(u["pods"], 1000);
        assert_eq!(u["count/pods"], 1000);
        assert_eq!(u["requests.cpu"], 2000, "init container's 2 CPUs floor the 500m");
        assert_eq!(u["requests.memory"], 64 * 1024 * 1024 * 1000);
        assert_eq!(u["limits.memory"], 64 * 1024 * 1024 * 1000);
        let u = usage("apps", "deployments", &json!({}));
        assert_eq!(u, Usage::from([("count/deployments.apps".to_string(), 1000)]));
        assert!(usage("", "pods", &json!({"status": {"phase": "Succeeded"}})).is_empty());
    }

    #[test]
    fn charging_a_full_quota_gives_upstreams_message() {
        let q = json!({"metadata": {"name": "q"}, "spec": {"hard": {"pods": "2", "requests.memory": "1Gi"}},
                       "status": {"used": {"pods": "2", "requests.memory": "512Mi"}}});
        let delta = usage("", "pods", &pod("100m", "64Mi"));
        assert_eq!(
            charge(&q, &delta),
            Err("exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2".into())
        );
        let q = json!({"metadata": {"name": "q"}, "spec": {"hard": {"pods": "3", "requests.memory": "1Gi"}},
                       "status": {"used": {"pods": "2", "requests.memory": "512Mi"}}});
        let used = charge(&q, &delta).expect("fits").expect("limits");
        assert_eq!(used["pods"], "3");
        assert_eq!(used["requests.memory"], "576Mi");
        assert_eq!(charge(&q, &usage("", "configmaps", &json!({}))), Ok(None));
    }

    #[test]
    fn quantities_format_like_the_hard_value() {
        assert_eq!(format(500, "1"), "500m");
        assert_eq!(format(4000, "4"), "4");
        assert_eq!(format(8 * (1 << 30) * 1000, "8Gi"), "8Gi");
        assert_eq!(format(0, "8Gi"), "0");
        assert_eq!(milli(&json!("100m")), Some(100));
        assert_eq!(milli(&json!(2)), Some(2000));
    }

    #[test]
    fn cpu_quotas_require_container_requests() {
        let hard = json!({"requests.cpu": "1", "pods": "5"});
        let p = json!({"spec": {"containers": [{"name": "c"}, {"name": "d", "resources": {"requests": {"cpu": "1"}}}]}});
        assert_eq!(
            missing_requests(hard.as_object().expect("map"), &p),
            Some("must specify requests.cpu for: c".into())
        );
    }
}
