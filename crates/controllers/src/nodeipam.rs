//! Node IPAM: every Node gets its own slice of the cluster's pod network (`--cluster-cidr`, default
//! 10.42.0.0/16) in `spec.podCIDR`/`spec.podCIDRs`, as upstream's range allocator does
//! (`pkg/controller/nodeipam/ipam/range_allocator.go`, node CIDR mask /24 for IPv4). The agent on the
//! node builds its bridge and allocates pod IPs from it. A slice is given once and never changed while
//! the Node exists (upstream's validation forbids changing it).

use controller_runtime::{Informers, Settings, SharedInformers};
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;
use serde_json::json;

/// Mask of a node's slice (upstream `--node-cidr-mask-size-ipv4` default).
pub const NODE_MASK: u8 = 24;

/// Slices to assign: `(node name, slice)` for every Node without one, the first free slices in order.
pub fn plan(cluster: Ipv4Net, nodes: &[Node]) -> Vec<(String, Ipv4Net)> {
    let used: Vec<Ipv4Net> = nodes
        .iter()
        .filter_map(|n| n.spec.as_ref()?.pod_cidr.as_ref()?.parse().ok())
        .collect();
    let Ok(mut free) = cluster.subnets(NODE_MASK.max(cluster.prefix_len())) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut names: Vec<&Node> = nodes
        .iter()
        .filter(|n| {
            n.spec
                .as_ref()
                .and_then(|s| s.pod_cidr.as_ref())
                .is_none_or(String::is_empty)
        })
        .collect();
    names.sort_by_key(|n| n.metadata.creation_timestamp.as_ref().map(|t| t.0));
    for n in names {
        let Some(slice) = free.find(|s| !used.iter().any(|u| u.contains(s) || s.contains(u))) else {
            break;
        };
        out.push((n.metadata.name.clone().unwrap_or_default(), slice));
    }
    out
}

/// Run until the process ends.
pub async fn run(client: kube::Client, shared: SharedInformers, cluster_cidr: String) {
    let Ok(cluster) = cluster_cidr.parse::<Ipv4Net>() else {
        tracing::error!(cidr = %cluster_cidr, "--cluster-cidr is not an IPv4 CIDR; no pod CIDRs are assigned");
        std::future::pending::<()>().await;
        return;
    };
    let api: Api<Node> = Api::all(client);
    let mut informers = Informers::new();
    let store = informers.watch_shared(&shared, api.clone(), watcher::Config::default());
    // Every Node must be listed before a slice is handed out, or a slice already taken could be given twice.
    let mut passes = informers.into_loop("nodeipam", Settings::default());
    while let Some(mut pass) = passes.next_pass().await {
        let nodes: Vec<Node> = store.state().iter().map(|n| (**n).clone()).collect();
        for (name, slice) in plan(cluster, &nodes) {
            let patch = json!({"spec": {"podCIDR": slice.to_string(), "podCIDRs": [slice.to_string()]}});
            let assigned = pass
                .step(
                    &format!("Node {name}"),
                    api.patch(&name, &PatchParams::default(), &Patch::Merge(patch)),
                )
                .await;
            if assigned {
                tracing::info!(node = %name, pod_cidr = %slice, "pod CIDR assigned");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cidr: Option<&str>, t: i64) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name,
            "creationTimestamp": jiff::Timestamp::from_second(t).expect("t").to_string()},
            "spec": cidr.map_or(json!({}), |c| json!({"podCIDR": c}))}))
        .expect("node")
    }

    #[test]
    fn first_free_slices_in_creation_order_and_assigned_ones_kept() {
        let cluster: Ipv4Net = "10.42.0.0/16".parse().expect("cidr");
        let nodes = [
            node("b", None, 20),
            node("a", Some("10.42.0.0/24"), 5),
            node("c", None, 10),
        ];
        assert_eq!(
            plan(cluster, &nodes),
            vec![
                ("c".to_string(), "10.42.1.0/24".parse().expect("c")),
                ("b".to_string(), "10.42.2.0/24".parse().expect("b")),
            ]
        );
        assert!(plan(cluster, &nodes[1..2]).is_empty());
    }
}
