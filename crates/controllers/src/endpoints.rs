//! The Endpoints and EndpointSlice controllers: for every Service with a selector, the addresses of the
//! pods it selects, as upstream's `pkg/controller/endpoint/endpoints_controller.go` and
//! `pkg/controller/endpointslice` write them, so DNS and Service routing (and `kubectl get endpoints`)
//! see the same thing as on any cluster:
//!
//! - a pod counts once it has a `podIP` and is not terminal (Succeeded/Failed); a terminating pod only
//!   with `publishNotReadyAddresses`;
//! - ready pods go to `addresses`, the others to `notReadyAddresses`, unless the Service has
//!   `publishNotReadyAddresses` (then every pod is in `addresses`);
//! - each address carries `nodeName`, a `targetRef` to the pod, and `hostname` when the pod's
//!   `spec.hostname` is set and its `spec.subdomain` names this Service (every StatefulSet pod of a set
//!   whose `serviceName` is this Service);
//! - ports: each Service port's `targetPort` resolved on the pod (a number, or a container port's name;
//!   a pod without that named port is left out of that port's subset); pods with the same resolved
//!   ports share a subset (upstream's `RepackSubsets`); a headless Service without ports gets subsets
//!   without ports;
//! - the EndpointSlice (`<service>-<first five of its uid>`, labels `kubernetes.io/service-name` and
//!   `endpointslice.kubernetes.io/managed-by`) has one endpoint per pod with `ready`, `serving` and
//!   `terminating` conditions; one slice per distinct port set.
//!
//! Both are owned by the Service (the garbage collector removes them with it; upstream's Endpoints have
//! no owner and their controller deletes them). Services without a
//! selector are left to their users, as upstream.

use controller_runtime::{Informers, Settings, SharedInformers};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::watcher;
use serde_json::{Value, json};
use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::time::Duration;

/// Managed-by label value of the slices written here (upstream's controller name).
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn selects(selector: &BTreeMap<String, String>, p: &Pod) -> bool {
    let labels = p.metadata.labels.clone().unwrap_or_default();
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The pod's port for a Service port's `targetPort` (defaulting to `port`), or `None` for a name the pod
/// does not declare.
fn resolve_port(p: &Pod, port: &Value) -> Option<i64> {
    let target = if port["targetPort"].is_null() {
        &port["port"]
    } else {
        &port["targetPort"]
    };
    if let Some(n) = target.as_i64() {
        return Some(n);
    }
    let name = target.as_str()?;
    if let Ok(n) = name.parse::<i64>() {
        return Some(n);
    }
    p.spec
        .as_ref()?
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|cp| cp.name.as_deref() == Some(name))
        .map(|cp| i64::from(cp.container_port))
}

struct Member<'a> {
    pod: &'a Pod,
    ip: String,
    ready: bool,
    terminating: bool,
    ports: Vec<Value>,
}

fn members<'a, P: Borrow<Pod>>(svc: &Value, pods: &'a [P]) -> Option<Vec<Member<'a>>> {
    let ns = svc["metadata"]["namespace"].as_str().unwrap_or_default();
    let selector: BTreeMap<String, String> = serde_json::from_value(svc["spec"]["selector"].clone()).ok()?;
    if selector.is_empty() {
        return None;
    }
    let tolerate = svc["spec"]["publishNotReadyAddresses"] == true;
    let svc_ports = svc["spec"]["ports"].as_array().cloned().unwrap_or_default();
    let mut out = Vec::new();
    for p in pods.iter().map(Borrow::borrow) {
        if p.metadata.namespace.as_deref() != Some(ns) || !selects(&selector, p) {
            continue;
        }
        let Some(ip) = p
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .filter(|i| !i.is_empty())
        else {
            continue;
        };
        let phase = p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("");
        if matches!(phase, "Succeeded" | "Failed") {
            continue;
        }
        let terminating = p.metadata.deletion_timestamp.is_some();
        if terminating && !tolerate {
            continue;
        }
        let mut ports = Vec::new();
        for sp in &svc_ports {
            if let Some(n) = resolve_port(p, sp) {
                let mut ep = json!({"port": n, "protocol": sp["protocol"].as_str().unwrap_or("TCP")});
                if let Some(name) = sp["name"].as_str().filter(|n| !n.is_empty()) {
                    ep["name"] = json!(name);
                }
                if !sp["appProtocol"].is_null() {
                    ep["appProtocol"] = sp["appProtocol"].clone();
                }
                ports.push(ep);
            }
        }
        if !svc_ports.is_empty() && ports.is_empty() {
            continue;
        }
        ports.sort_by_key(|p| (p["name"].as_str().unwrap_or("").to_string(), p["port"].as_i64()));
        out.push(Member {
            pod: p,
            ip,
            ready: tolerate || pod_ready(p),
            terminating,
            ports,
        });
    }
    out.sort_by(|a, b| a.ip.cmp(&b.ip));
    Some(out)
}

fn address(svc: &Value, m: &Member) -> Value {
    let p = m.pod;
    let mut a = json!({"ip": m.ip, "targetRef": {"kind": "Pod", "namespace": p.metadata.namespace,
        "name": p.metadata.name, "uid": p.metadata.uid}});
    if let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
        a["nodeName"] = json!(node);
    }
    if let Some(h) = hostname(svc, p) {
        a["hostname"] = json!(h);
    }
    a
}

fn hostname(svc: &Value, p: &Pod) -> Option<String> {
    let spec = p.spec.as_ref()?;
    let h = spec.hostname.clone().filter(|h| !h.is_empty())?;
    (spec.subdomain.as_deref() == svc["metadata"]["name"].as_str()).then_some(h)
}

fn labels(svc: &Value) -> serde_json::Map<String, Value> {
    let mut l = svc["metadata"]["labels"].as_object().cloned().unwrap_or_default();
    if svc["spec"]["clusterIP"] == "None" {
        l.insert("service.kubernetes.io/headless".into(), json!(""));
    }
    l
}

fn owner(svc: &Value) -> Value {
    json!([{"apiVersion": "v1", "kind": "Service", "name": svc["metadata"]["name"],
        "uid": svc["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}])
}

/// A subset being built: ready addresses, not-ready addresses, ports.
type Subset = (Vec<Value>, Vec<Value>, Vec<Value>);

/// The Endpoints object the Service should have (`None` for a Service without a selector).
pub fn desired_endpoints<P: Borrow<Pod>>(svc: &Value, pods: &[P]) -> Option<Value> {
    let members = members(svc, pods)?;
    let mut groups: BTreeMap<String, Subset> = BTreeMap::new();
    for m in &members {
        let key = serde_json::to_string(&m.ports).unwrap_or_default();
        let g = groups
            .entry(key)
            .or_insert_with(|| (Vec::new(), Vec::new(), m.ports.clone()));
        if m.ready {
            g.0.push(address(svc, m));
        } else {
            g.1.push(address(svc, m));
        }
    }
    let subsets: Vec<Value> = groups
        .into_values()
        .map(|(ready, not_ready, ports)| {
            let mut s = json!({});
            if !ready.is_empty() {
                s["addresses"] = json!(ready);
            }
            if !not_ready.is_empty() {
                s["notReadyAddresses"] = json!(not_ready);
            }
            if !ports.is_empty() {
                s["ports"] = json!(ports);
            }
            s
        })
        .collect();
    // (Upstream's Endpoints carry no ownerReference and its controller deletes them with the Service;
    // here the Service owns them, so the garbage collector does.)
    let mut e = json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {
        "name": svc["metadata"]["name"], "namespace": svc["metadata"]["namespace"], "labels": labels(svc),
        "ownerReferences": owner(svc)}});
    if !subsets.is_empty() {
        e["subsets"] = json!(subsets);
    }
    Some(e)
}

/// The EndpointSlices the Service should have, one per distinct port set (`None` without a selector).
pub fn desired_slices<P: Borrow<Pod>>(svc: &Value, pods: &[P]) -> Option<Vec<Value>> {
    let members = members(svc, pods)?;
    let name = svc["metadata"]["name"].as_str().unwrap_or_default();
    let uid = svc["metadata"]["uid"].as_str().unwrap_or_default();
    let mut groups: BTreeMap<String, (Vec<Value>, Vec<Value>)> = BTreeMap::new();
    for m in &members {
        let key = serde_json::to_string(&m.ports).unwrap_or_default();
        let g = groups.entry(key).or_insert_with(|| (Vec::new(), m.ports.clone()));
        let mut ep = json!({"addresses": [m.ip],
            "conditions": {"ready": m.ready && !m.terminating, "serving": pod_ready(m.pod) || m.ready, "terminating": m.terminating},
            "targetRef": {"kind": "Pod", "namespace": m.pod.metadata.namespace, "name": m.pod.metadata.name, "uid": m.pod.metadata.uid}});
        if let Some(node) = m.pod.spec.as_ref().and_then(|s| s.node_name.clone()) {
            ep["nodeName"] = json!(node);
        }
        if let Some(h) = hostname(svc, m.pod) {
            ep["hostname"] = json!(h);
        }
        g.0.push(ep);
    }
    let mut l = labels(svc);
    l.insert("kubernetes.io/service-name".into(), json!(name));
    l.insert("endpointslice.kubernetes.io/managed-by".into(), json!(MANAGED_BY));
    let prefix: String = uid.chars().filter(char::is_ascii_alphanumeric).take(5).collect();
    let mut slices: Vec<Value> = groups
        .into_values()
        .enumerate()
        .map(|(i, (endpoints, ports))| {
            let slice_name = if i == 0 {
                format!("{name}-{prefix}")
            } else {
                format!("{name}-{prefix}-{i}")
            };
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": slice_name, "namespace": svc["metadata"]["namespace"], "labels": l,
                    "ownerReferences": owner(svc)},
                "addressType": "IPv4", "endpoints": endpoints, "ports": ports})
        })
        .collect();
    if slices.is_empty() {
        // No endpoints: one empty slice still stands for the Service (upstream's placeholder slice).
        slices.push(json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{name}-{prefix}"), "namespace": svc["metadata"]["namespace"], "labels": l,
                "ownerReferences": owner(svc)},
            "addressType": "IPv4", "endpoints": []}));
    }
    Some(slices)
}

/// Whether `existing` already says what `desired` does (the fields this controller owns).
fn same(existing: &Value, desired: &Value) -> bool {
    ["subsets", "endpoints", "ports", "addressType"].iter().all(|k| {
        existing[*k] == desired[*k]
            || (existing[*k].is_null() && desired[*k].as_array().is_some_and(Vec::is_empty))
    }) && existing["metadata"]["labels"] == desired["metadata"]["labels"]
}

async fn put(api: &Api<DynamicObject>, name: &str, desired: &Value) -> Result<(), kube::Error> {
    match api.get_opt(name).await? {
        Some(cur) => {
            let cur = serde_json::to_value(&cur).unwrap_or_default();
            if same(&cur, desired) {
                return Ok(());
            }
            let mut next = desired.clone();
            next["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"].clone();
            next["metadata"]["uid"] = cur["metadata"]["uid"].clone();
            let obj: DynamicObject = serde_json::from_value(next).map_err(kube::Error::SerdeError)?;
            api.replace(name, &PostParams::default(), &obj).await?;
        }
        None => {
            let obj: DynamicObject =
                serde_json::from_value(desired.clone()).map_err(kube::Error::SerdeError)?;
            api.create(&PostParams::default(), &obj).await?;
        }
    }
    Ok(())
}

/// Run until the process ends: caches of pods and Services; once both have listed (controller-runtime),
/// write each Service's Endpoints and EndpointSlices after each burst of changes.
pub async fn run(client: kube::Client, shared: SharedInformers) {
    let cfg = watcher::Config::default().any_semantic();
    let mut informers = Informers::new();
    let pods = informers.watch_shared(&shared, Api::<Pod>::all(client.clone()), cfg.clone());
    let services = informers.watch_shared(&shared, Api::<Service>::all(client.clone()), cfg);
    let settings = Settings {
        resync: Duration::from_secs(10),
        ..Settings::default()
    };
    let mut passes = informers.into_loop("endpoints", settings);
    let ep_res = ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", "Endpoints"));
    let slice_res = ApiResource::from_gvk(&GroupVersionKind::gvk("discovery.k8s.io", "v1", "EndpointSlice"));
    // What was last written per object, so an unchanged world costs no request; forgotten every resync
    // period so a change made behind our back is repaired.
    let mut written: BTreeMap<(String, String, String), Value> = BTreeMap::new();
    let mut forgotten = tokio::time::Instant::now();
    while let Some(mut pass) = passes.next_pass().await {
        if forgotten.elapsed() >= settings.resync {
            written.clear();
            forgotten = tokio::time::Instant::now();
        }
        let all_pods = pods.state();
        for svc in services.state() {
            let svc = serde_json::to_value(&*svc).unwrap_or_default();
            let ns = svc["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let mut wanted = Vec::new();
            if let Some(e) = desired_endpoints(&svc, &all_pods) {
                wanted.push((&ep_res, e));
            }
            for s in desired_slices(&svc, &all_pods).unwrap_or_default() {
                wanted.push((&slice_res, s));
            }
            for (res, obj) in wanted {
                let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_string();
                let key = (res.kind.clone(), ns.clone(), name.clone());
                if written.get(&key) == Some(&obj) {
                    continue;
                }
                let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, res);
                if pass
                    .step(&format!("{} {ns}/{name}", res.kind), put(&api, &name, &obj))
                    .await
                {
                    written.insert(key, obj);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ip: Option<&str>, ready: bool, extra: Value) -> Pod {
        let mut p = json!({"metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
                "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}});
        if let Some(ip) = ip {
            p["status"]["podIP"] = json!(ip);
        }
        json_patch::merge(&mut p, &extra);
        serde_json::from_value(p).expect("pod")
    }

    fn svc(extra: Value) -> Value {
        let mut s = json!({"metadata": {"name": "web", "namespace": "default", "uid": "abcdef-123"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "web", "port": 80, "targetPort": "http", "protocol": "TCP"}]}});
        json_patch::merge(&mut s, &extra);
        s
    }

    #[test]
    fn ready_and_not_ready_addresses_with_hostnames_and_named_ports() {
        let pods = [
            pod(
                "web-0",
                Some("10.42.0.5"),
                true,
                json!({"spec": {"hostname": "web-0", "subdomain": "web"}}),
            ),
            pod(
                "web-1",
                Some("10.42.0.6"),
                false,
                json!({"spec": {"hostname": "web-1", "subdomain": "web"}}),
            ),
            pod("pending", None, false, json!({})),
            pod(
                "done",
                Some("10.42.0.7"),
                false,
                json!({"status": {"phase": "Succeeded"}}),
            ),
            pod(
                "other",
                Some("10.42.0.8"),
                true,
                json!({"metadata": {"labels": {"app": "x"}}}),
            ),
            pod(
                "going",
                Some("10.42.0.9"),
                true,
                json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}),
            ),
        ];
        let e = desired_endpoints(&svc(json!({"spec": {"clusterIP": "None"}})), &pods).expect("endpoints");
        let s = &e["subsets"][0];
        assert_eq!(s["addresses"][0]["ip"], "10.42.0.5");
        assert_eq!(s["addresses"][0]["hostname"], "web-0");
        assert_eq!(s["addresses"][0]["nodeName"], "n1");
        assert_eq!(s["addresses"][0]["targetRef"]["name"], "web-0");
        assert_eq!(s["notReadyAddresses"][0]["ip"], "10.42.0.6");
        assert_eq!(
            s["ports"],
            json!([{"name": "web", "port": 8080, "protocol": "TCP"}])
        );
        assert_eq!(e["subsets"].as_array().map(Vec::len), Some(1));
        assert_eq!(e["metadata"]["labels"]["service.kubernetes.io/headless"], "");

        // publishNotReadyAddresses: every pod, terminating ones too, in addresses.
        let e =
            desired_endpoints(&svc(json!({"spec": {"publishNotReadyAddresses": true}})), &pods).expect("e");
        let ips: Vec<&str> = e["subsets"][0]["addresses"]
            .as_array()
            .expect("addresses")
            .iter()
            .filter_map(|a| a["ip"].as_str())
            .collect();
        assert_eq!(ips, ["10.42.0.5", "10.42.0.6", "10.42.0.9"]);

        // A hostname only for the Service the pod's subdomain names.
        let other = svc(json!({"metadata": {"name": "other-svc"}}));
        let e = desired_endpoints(&other, &pods).expect("e");
        assert!(e["subsets"][0]["addresses"][0]["hostname"].is_null());
        // No selector: not managed.
        assert!(desired_endpoints(&json!({"metadata": {"name": "x"}, "spec": {}}), &pods).is_none());
    }

    #[test]
    fn slices_carry_conditions_and_the_service_labels() {
        let pods = [
            pod(
                "web-0",
                Some("10.42.0.5"),
                true,
                json!({"spec": {"hostname": "web-0", "subdomain": "web"}}),
            ),
            pod("web-1", Some("10.42.0.6"), false, json!({})),
        ];
        let slices = desired_slices(&svc(json!({})), &pods).expect("slices");
        assert_eq!(slices.len(), 1);
        let s = &slices[0];
        assert_eq!(s["metadata"]["name"], "web-abcde");
        assert_eq!(s["metadata"]["labels"]["kubernetes.io/service-name"], "web");
        assert_eq!(
            s["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
            MANAGED_BY
        );
        assert_eq!(
            s["endpoints"][0]["conditions"],
            json!({"ready": true, "serving": true, "terminating": false})
        );
        assert_eq!(s["endpoints"][0]["hostname"], "web-0");
        assert_eq!(s["endpoints"][1]["conditions"]["ready"], false);
        assert_eq!(s["ports"][0]["port"], 8080);
        assert_eq!(s["metadata"]["ownerReferences"][0]["kind"], "Service");
        // No pods: one empty slice.
        let empty = desired_slices::<Pod>(&svc(json!({})), &[]).expect("slices");
        assert_eq!(empty[0]["endpoints"], json!([]));
    }
}
