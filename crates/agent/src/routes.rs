//! Routes between the nodes' pod slices, as flannel's `host-gw` backend (k3s's `--flannel-backend=host-gw`)
//! makes them: for every other Node with a `spec.podCIDR` and an IPv4 `InternalIP`, a route
//! `<podCIDR> via <InternalIP>` in this node's network namespace, so a pod's packet to a pod on another node
//! leaves through its bridge gateway (this host), crosses the nodes' shared network, and is delivered by
//! that node's bridge. The nodes must share a link-layer network, as host-gw requires.
//!
//! Berth serves cluster DNS in `berth server` itself (on `--cluster-dns`, an address of the server's
//! host) rather than as a Service of DNS pods, so an agent on another host also routes that one address
//! to the control-plane node (the Node labelled `node-role.kubernetes.io/control-plane`).
//!
//! Nodes whose address is one of this host's own (agents sharing a machine, as in tests and `berth server`
//! with a second local agent) need no route: their slices are on the same bridge. Nothing is routed
//! anywhere but to other nodes' addresses.

use controller_runtime::{Informers, Settings};
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use kube::runtime::watcher;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

/// One route this node wants: `dst via via`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    /// Destination (another node's pod slice, or the cluster DNS address as a /32).
    pub dst: Ipv4Net,
    /// The other node's address.
    pub via: Ipv4Addr,
}

fn internal_ipv4(n: &Node) -> Option<Ipv4Addr> {
    n.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .filter(|a| a.type_ == "InternalIP")
        .find_map(|a| a.address.parse::<Ipv4Addr>().ok())
}

fn is_control_plane(n: &Node) -> bool {
    n.metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key("node-role.kubernetes.io/control-plane"))
}

/// The routes node `own` wants given all `nodes` (pure). `is_local` tells whether an address belongs to
/// this host's network namespace; nodes at such addresses (and at loopback ones) get no route.
pub fn desired(
    nodes: &[Node],
    own: &str,
    cluster_dns: IpAddr,
    is_local: impl Fn(IpAddr) -> bool,
) -> Vec<Route> {
    let mut sorted: Vec<&Node> = nodes.iter().collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let remote = |ip: Ipv4Addr| !ip.is_loopback() && !ip.is_unspecified() && !is_local(IpAddr::V4(ip));
    let mut out = BTreeSet::new();
    for n in &sorted {
        if n.metadata.name.as_deref() == Some(own) {
            continue;
        }
        let Some(via) = internal_ipv4(n).filter(|ip| remote(*ip)) else {
            continue;
        };
        if let Some(dst) = n
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidr.as_deref())
            .and_then(|c| c.parse::<Ipv4Net>().ok())
        {
            out.insert(Route { dst, via });
        }
    }
    let own_is_control_plane = sorted
        .iter()
        .any(|n| n.metadata.name.as_deref() == Some(own) && is_control_plane(n));
    if let IpAddr::V4(dns) = cluster_dns
        && !own_is_control_plane
        && !is_local(cluster_dns)
        && let Some(via) = sorted
            .iter()
            .filter(|n| is_control_plane(n))
            .find_map(|n| internal_ipv4(n).filter(|ip| remote(*ip)))
    {
        out.insert(Route {
            dst: Ipv4Net::from(dns),
            via,
        });
    }
    out.into_iter().collect()
}

/// Whether `ip` is an address of this network namespace (binding to it succeeds).
pub fn is_local(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind((ip, 0)).is_ok()
}

fn ip_route(verb: &str, r: &Route) -> std::io::Result<()> {
    let out = std::process::Command::new("ip")
        .args(["route", verb, &r.dst.to_string(), "via", &r.via.to_string()])
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "ip route {verb} {} via {}: {}",
            r.dst,
            r.via,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Keep this node's routes to the other nodes' slices (and to the cluster DNS) in step with the Nodes,
/// re-applying them every 10 s (a route goes when its link goes down). Runs until the watch ends.
pub async fn run(client: kube::Client, cfg: crate::Config) {
    let mut informers = Informers::new();
    let nodes = informers.watch(Api::<Node>::all(client), watcher::Config::default());
    let mut applied: BTreeSet<Route> = BTreeSet::new();
    let settings = Settings {
        debounce: Duration::ZERO,
        resync: Duration::from_secs(10),
        ..Settings::default()
    };
    let mut passes = informers.into_loop("routes", settings);
    while let Some(_pass) = passes.next_pass().await {
        let all: Vec<Node> = nodes.state().iter().map(|n| (**n).clone()).collect();
        // Until this node itself is registered, nothing is known to be stale.
        if !all
            .iter()
            .any(|n| n.metadata.name.as_deref() == Some(cfg.node_name.as_str()))
        {
            continue;
        }
        let want: BTreeSet<Route> = desired(&all, &cfg.node_name, cfg.cluster_dns, is_local)
            .into_iter()
            .collect();
        let stale: Vec<Route> = applied.difference(&want).cloned().collect();
        let result = tokio::task::spawn_blocking(move || {
            for r in &stale {
                let _ = ip_route("del", r);
            }
            want.into_iter()
                .filter(|r| match ip_route("replace", r) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(error = %e, "route to another node not set");
                        false
                    }
                })
                .collect::<BTreeSet<Route>>()
        })
        .await;
        if let Ok(now) = result {
            applied = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, ip: &str, cidr: Option<&str>, cp: bool) -> Node {
        let labels = if cp {
            json!({"node-role.kubernetes.io/control-plane": "true"})
        } else {
            json!({})
        };
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"podCIDR": cidr},
            "status": {"addresses": [{"type": "Hostname", "address": name}, {"type": "InternalIP", "address": ip}]}
        }))
        .expect("node")
    }

    #[test]
    fn a_route_per_remote_slice_and_one_to_the_cluster_dns() {
        let nodes = vec![
            node("server", "172.31.0.1", Some("10.42.0.0/24"), true),
            node("a", "172.31.0.2", Some("10.42.1.0/24"), false),
            node("b", "172.31.0.3", Some("10.42.2.0/24"), false),
            node("pending", "172.31.0.4", None, false),
        ];
        let local_a = |ip: IpAddr| ip == IpAddr::from([172, 31, 0, 2]);
        let dns = IpAddr::from([10, 43, 0, 10]);
        let r = desired(&nodes, "a", dns, local_a);
        let want = |dst: &str, via: &str| Route {
            dst: dst.parse().expect("net"),
            via: via.parse().expect("ip"),
        };
        assert_eq!(
            r,
            [
                want("10.42.0.0/24", "172.31.0.1"),
                want("10.42.2.0/24", "172.31.0.3"),
                want("10.43.0.10/32", "172.31.0.1"),
            ]
        );
        // The control plane serves the DNS itself: no route to it there.
        let local_s = |ip: IpAddr| ip == IpAddr::from([172, 31, 0, 1]) || ip == dns;
        let r = desired(&nodes, "server", dns, local_s);
        assert_eq!(
            r,
            [
                want("10.42.1.0/24", "172.31.0.2"),
                want("10.42.2.0/24", "172.31.0.3")
            ]
        );
    }

    #[test]
    fn nodes_on_this_host_need_no_route() {
        let nodes = vec![
            node("node-a", "127.0.0.1", Some("10.42.0.0/24"), true),
            node("node-b", "127.0.0.1", Some("10.42.1.0/24"), false),
        ];
        assert!(desired(&nodes, "node-b", IpAddr::from([10, 43, 0, 10]), |_| false).is_empty());
    }
}
