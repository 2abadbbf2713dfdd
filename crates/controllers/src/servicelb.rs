//! The service load balancer for `type: LoadBalancer` Services, as k3s's ServiceLB (klipper-lb) provides it
//! on machines without a cloud: the Service's `status.loadBalancer.ingress` lists the `InternalIP` of every
//! Ready node, and each node's agent serves the Service's ports on its addresses (`agent::proxy`).
//! Services of other types have their ingress cleared.

use controller_runtime::{Informers, Settings, SharedInformers};
use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;
use serde_json::{Value, json};
use std::time::Duration;

/// The `status.loadBalancer.ingress` list each Service should have (`None`: leave it as it is).
pub fn desired_ingress(svc: &Service, nodes: &[Node]) -> Option<Value> {
    let lb = svc.spec.as_ref()?.type_.as_deref() == Some("LoadBalancer");
    if !lb {
        let has = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|l| l.ingress.as_ref())
            .is_some_and(|i| !i.is_empty());
        return has.then(|| json!([]));
    }
    let mut ips: Vec<String> = nodes
        .iter()
        .filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .filter_map(|n| {
            n.status
                .as_ref()?
                .addresses
                .as_ref()?
                .iter()
                .find(|a| a.type_ == "InternalIP")
                .map(|a| a.address.clone())
        })
        .collect();
    ips.sort();
    ips.dedup();
    Some(json!(
        ips.iter()
            .map(|ip| json!({"ip": ip, "ipMode": "VIP"}))
            .collect::<Vec<_>>()
    ))
}

/// Run until the process ends: caches of Services and Nodes; once both have listed (controller-runtime),
/// write each LoadBalancer Service's ingress after each burst of changes.
pub async fn run(client: kube::Client, shared: SharedInformers) {
    let cfg = watcher::Config::default().any_semantic();
    let mut informers = Informers::new();
    let services = informers.watch_shared(&shared, Api::<Service>::all(client.clone()), cfg.clone());
    let nodes = informers.watch_shared(&shared, Api::<Node>::all(client.clone()), cfg);
    let settings = Settings {
        resync: Duration::from_secs(10),
        ..Settings::default()
    };
    let mut passes = informers.into_loop("servicelb", settings);
    while let Some(mut pass) = passes.next_pass().await {
        let ns: Vec<Node> = nodes.state().iter().map(|n| (**n).clone()).collect();
        for svc in services.state() {
            let Some(want) = desired_ingress(&svc, &ns) else {
                continue;
            };
            let current = svc
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|l| serde_json::to_value(&l.ingress).ok())
                .unwrap_or(Value::Null);
            let current_ips: Vec<Value> = current.as_array().cloned().unwrap_or_default();
            if current_ips == want.as_array().cloned().unwrap_or_default() {
                continue;
            }
            let api: Api<Service> = Api::namespaced(
                client.clone(),
                svc.metadata.namespace.as_deref().unwrap_or("default"),
            );
            let patch = json!({"status": {"loadBalancer": {"ingress": want}}});
            let name = svc.metadata.name.as_deref().unwrap_or("");
            let key = format!(
                "Service {}/{name}",
                svc.metadata.namespace.as_deref().unwrap_or("")
            );
            pass.step(
                &key,
                api.patch_status(name, &PatchParams::default(), &Patch::Merge(patch)),
            )
            .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_nodes_addresses_for_load_balancers_only() {
        let nodes: Vec<Node> = serde_json::from_value(json!([
            {"metadata": {"name": "a"}, "status": {"conditions": [{"type": "Ready", "status": "True"}],
                "addresses": [{"type": "InternalIP", "address": "192.168.1.10"}]}},
            {"metadata": {"name": "b"}, "status": {"conditions": [{"type": "Ready", "status": "False"}],
                "addresses": [{"type": "InternalIP", "address": "192.168.1.11"}]}}
        ]))
        .expect("nodes");
        let lb: Service =
            serde_json::from_value(json!({"metadata": {"name": "s"}, "spec": {"type": "LoadBalancer"}}))
                .expect("svc");
        assert_eq!(
            desired_ingress(&lb, &nodes),
            Some(json!([{"ip": "192.168.1.10", "ipMode": "VIP"}]))
        );
        let plain: Service =
            serde_json::from_value(json!({"metadata": {"name": "s"}, "spec": {"type": "ClusterIP"}}))
                .expect("svc");
        assert_eq!(desired_ingress(&plain, &nodes), None);
    }
}
