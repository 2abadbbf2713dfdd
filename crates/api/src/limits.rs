//! LimitRange rules (upstream `plugin/pkg/admission/limitranger`, 1.32): defaulting a new pod's container
//! requests and limits from the namespace's `Container` limits (`defaultRequest`, `default`), and
//! refusing containers, pods and claims outside `min`/`max`/`maxLimitRequestRatio`, with upstream's
//! messages ("maximum cpu usage per Container is 1, but limit is 2").

use crate::quota::milli;
use serde_json::{Map, Value, json};

fn items(ranges: &[Value], ty: &str) -> Vec<Value> {
    ranges
        .iter()
        .filter_map(|r| r.pointer("/spec/limits").and_then(Value::as_array))
        .flatten()
        .filter(|l| l["type"] == ty)
        .cloned()
        .collect()
}

fn map<'a>(v: &'a Value, key: &str) -> Option<&'a Map<String, Value>> {
    v.get(key).and_then(Value::as_object)
}

fn text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

/// Default the requests and limits of every container of a new pod (upstream
/// `defaultContainerResourceRequirements` + `mergePodResourceRequirements`); returns the
/// `kubernetes.io/limit-ranger` annotation's value, or `None` when nothing was set.
pub fn default_pod(pod: &mut Value, ranges: &[Value]) -> Option<String> {
    let (mut def_req, mut def_lim) = (Map::new(), Map::new());
    for l in ranges
        .iter()
        .filter_map(|r| r.pointer("/spec/limits").and_then(Value::as_array))
        .flatten()
        .filter(|l| l["type"] == "Container")
    {
        for (k, v) in map(l, "defaultRequest").into_iter().flatten() {
            def_req.entry(k.clone()).or_insert(v.clone());
        }
        for (k, v) in map(l, "default").into_iter().flatten() {
            def_lim.entry(k.clone()).or_insert(v.clone());
        }
    }
    if def_req.is_empty() && def_lim.is_empty() {
        return None;
    }
    let mut notes = Vec::new();
    for list in ["initContainers", "containers"] {
        let Some(cs) = pod
            .pointer_mut(&format!("/spec/{list}"))
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        for c in cs {
            let name = c["name"].as_str().unwrap_or("").to_string();
            if !c.get("resources").is_some_and(Value::is_object) {
                c["resources"] = json!({});
            }
            let res = &mut c["resources"];
            let (mut set_req, mut set_lim) = (Vec::new(), Vec::new());
            for (key, defaults, set) in [
                ("requests", &def_req, &mut set_req),
                ("limits", &def_lim, &mut set_lim),
            ] {
                if !res.get(key).is_some_and(Value::is_object) {
                    res[key] = json!({});
                }
                let m = res[key].as_object_mut().expect("object");
                for (k, v) in defaults {
                    if !m.contains_key(k) {
                        m.insert(k.clone(), v.clone());
                        set.push(k.clone());
                    }
                }
            }
            // A default limit without a request: the request is the limit (upstream merges the default
            // limit in before the API defaulting of requests from limits has been applied to it).
            let limits = res["limits"].as_object().cloned().unwrap_or_default();
            let reqs = res["requests"].as_object_mut().expect("object");
            for (k, v) in &limits {
                if !reqs.contains_key(k) && set_lim.contains(k) {
                    reqs.insert(k.clone(), v.clone());
                    set_req.push(k.clone());
                }
            }
            for key in ["requests", "limits"] {
                if res[key].as_object().is_some_and(Map::is_empty) {
                    res.as_object_mut().map(|o| o.remove(key));
                }
            }
            set_req.sort();
            set_lim.sort();
            if !set_req.is_empty() {
                notes.push(format!(
                    "{} request for {} {name}",
                    set_req.join(", "),
                    container_word(list)
                ));
            }
            if !set_lim.is_empty() {
                notes.push(format!(
                    "{} limit for {} {name}",
                    set_lim.join(", "),
                    container_word(list)
                ));
            }
        }
    }
    (!notes.is_empty()).then(|| format!("LimitRanger plugin set: {}", notes.join("; ")))
}

fn container_word(list: &str) -> &'static str {
    if list == "initContainers" {
        "init container"
    } else {
        "container"
    }
}

fn check(
    kind: &str,
    item: &Value,
    requests: &Map<String, Value>,
    limits: &Map<String, Value>,
    errs: &mut Vec<String>,
) {
    for (r, enforced) in map(item, "min").into_iter().flatten() {
        let e = milli(enforced).unwrap_or(0);
        match requests.get(r) {
            None => errs.push(format!(
                "minimum {r} usage per {kind} is {}.  No request is specified",
                text(enforced)
            )),
            Some(q) if milli(q).unwrap_or(0) < e => errs.push(format!(
                "minimum {r} usage per {kind} is {}, but request is {}",
                text(enforced),
                text(q)
            )),
            Some(_) => {
                if let Some(l) = limits.get(r)
                    && milli(l).unwrap_or(0) < e
                {
                    errs.push(format!(
                        "minimum {r} usage per {kind} is {}, but limit is {}",
                        text(enforced),
                        text(l)
                    ));
                }
            }
        }
    }
    for (r, enforced) in map(item, "max").into_iter().flatten() {
        let e = milli(enforced).unwrap_or(0);
        match limits.get(r) {
            None => errs.push(format!(
                "maximum {r} usage per {kind} is {}.  No limit is specified",
                text(enforced)
            )),
            Some(l) if milli(l).unwrap_or(0) > e => errs.push(format!(
                "maximum {r} usage per {kind} is {}, but limit is {}",
                text(enforced),
                text(l)
            )),
            Some(_) => {
                if let Some(q) = requests.get(r)
                    && milli(q).unwrap_or(0) > e
                {
                    errs.push(format!(
                        "maximum {r} usage per {kind} is {}, but request is {}",
                        text(enforced),
                        text(q)
                    ));
                }
            }
        }
    }
    for (r, enforced) in map(item, "maxLimitRequestRatio").into_iter().flatten() {
        let req = requests.get(r).and_then(milli).unwrap_or(0);
        let lim = limits.get(r).and_then(milli).unwrap_or(0);
        if req == 0 {
            errs.push(format!(
                "{r} max limit to request ratio per {kind} is {}, but no request is specified or request is 0",
                text(enforced)
            ));
        } else if lim == 0 {
            errs.push(format!(
                "{r} max limit to request ratio per {kind} is {}, but no limit is specified or limit is 0",
                text(enforced)
            ));
        } else {
            #[allow(clippy::cast_precision_loss)]
            let ratio = lim as f64 / req as f64;
            #[allow(clippy::cast_precision_loss)]
            let max = milli(enforced).unwrap_or(0) as f64 / 1000.0;
            if ratio > max {
                errs.push(format!(
                    "{r} max limit to request ratio per {kind} is {}, but provided ratio is {ratio:.6}",
                    text(enforced)
                ));
            }
        }
    }
}

fn resources(c: &Value, key: &str) -> Map<String, Value> {
    c.pointer(&format!("/resources/{key}"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// Every LimitRange violation of a pod (upstream `PodValidateLimitFunc`): each container against the
/// `Container` items, the containers' sums against the `Pod` items.
pub fn validate_pod(pod: &Value, ranges: &[Value]) -> Vec<String> {
    let mut errs = Vec::new();
    let containers: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .filter_map(|l| pod.pointer(&format!("/spec/{l}")).and_then(Value::as_array))
        .flatten()
        .collect();
    for item in &items(ranges, "Container") {
        for c in &containers {
            check(
                "Container",
                item,
                &resources(c, "requests"),
                &resources(c, "limits"),
                &mut errs,
            );
        }
    }
    let pod_items = items(ranges, "Pod");
    if !pod_items.is_empty() {
        let like = |m: crate::quota::Usage| -> Map<String, Value> {
            m.into_iter()
                .map(|(k, v)| (k, Value::String(crate::quota::format(v, ""))))
                .collect()
        };
        let req = like(crate::quota::pod_resources(pod, "requests"));
        let lim = like(crate::quota::pod_resources(pod, "limits"));
        for item in &pod_items {
            check("Pod", item, &req, &lim, &mut errs);
        }
    }
    errs
}

/// Every LimitRange violation of a claim's `requests.storage`/`limits.storage` (upstream
/// `PersistentVolumeClaimValidateLimitFunc`, min/max only).
pub fn validate_claim(pvc: &Value, ranges: &[Value]) -> Vec<String> {
    let mut errs = Vec::new();
    let req = pvc
        .pointer("/spec/resources/requests")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let lim = pvc
        .pointer("/spec/resources/limits")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for item in &items(ranges, "PersistentVolumeClaim") {
        for (r, enforced) in map(item, "min").into_iter().flatten() {
            match req.get(r) {
                None => errs.push(format!(
                    "minimum {r} usage per PersistentVolumeClaim is {}.  No request is specified",
                    text(enforced)
                )),
                Some(q) if milli(q) < milli(enforced) => errs.push(format!(
                    "minimum {r} usage per PersistentVolumeClaim is {}, but request is {}",
                    text(enforced),
                    text(q)
                )),
                Some(_) => {}
            }
        }
        for (r, enforced) in map(item, "max").into_iter().flatten() {
            let q = lim.get(r).or_else(|| req.get(r));
            if let Some(q) = q
                && milli(q) > milli(enforced)
            {
                errs.push(format!(
                    "maximum {r} usage per PersistentVolumeClaim is {}, but request is {}",
                    text(enforced),
                    text(q)
                ));
            }
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range() -> Value {
        json!({"spec": {"limits": [{"type": "Container", "default": {"cpu": "500m", "memory": "256Mi"},
            "defaultRequest": {"cpu": "100m"}, "max": {"cpu": "1"}, "min": {"cpu": "50m"}}]}})
    }

    #[test]
    fn containers_get_default_requests_and_limits() {
        let mut pod = json!({"spec": {"containers": [{"name": "c"},
            {"name": "d", "resources": {"limits": {"cpu": "800m"}}}]}});
        let note = default_pod(&mut pod, &[range()]).expect("defaulted");
        let c = &pod["spec"]["containers"][0]["resources"];
        assert_eq!(c["requests"]["cpu"], "100m");
        assert_eq!(
            c["requests"]["memory"], "256Mi",
            "a defaulted limit is the request"
        );
        assert_eq!(c["limits"]["cpu"], "500m");
        let d = &pod["spec"]["containers"][1]["resources"];
        assert_eq!(d["limits"]["cpu"], "800m", "given limits are kept");
        assert_eq!(
            note,
            "LimitRanger plugin set: cpu, memory request for container c; cpu, memory limit for container c; cpu, memory request for container d; memory limit for container d"
        );
        assert!(validate_pod(&pod, &[range()]).is_empty());
    }

    #[test]
    fn out_of_range_containers_get_upstreams_messages() {
        let pod = json!({"spec": {"containers": [{"name": "c",
            "resources": {"requests": {"cpu": "10m"}, "limits": {"cpu": "2"}}}]}});
        assert_eq!(
            validate_pod(&pod, &[range()]),
            vec![
                "minimum cpu usage per Container is 50m, but request is 10m",
                "maximum cpu usage per Container is 1, but limit is 2"
            ]
        );
        let pvc = json!({"spec": {"resources": {"requests": {"storage": "500Mi"}}}});
        let r = json!({"spec": {"limits": [{"type": "PersistentVolumeClaim", "min": {"storage": "1Gi"}}]}});
        assert_eq!(
            validate_claim(&pvc, &[r]),
            vec!["minimum storage usage per PersistentVolumeClaim is 1Gi, but request is 500Mi"]
        );
    }
}
