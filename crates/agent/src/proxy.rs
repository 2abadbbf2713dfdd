//! The Service proxy on this node, in the manner of kube-proxy's original userspace mode: for every TCP
//! port of every Service with ready endpoints, the agent listens on the Service's ClusterIP (an address
//! it puts on the loopback interface, so pods reach it through their default route, as the cluster DNS
//! address), for NodePort and LoadBalancer Services on the node's `nodePort` on all addresses, and for
//! LoadBalancer Services on the Service's port at each ingress address that is this node's;
//! each accepted connection is spliced to one ready endpoint, round-robin, or the same one for the same
//! client address with `sessionAffinity: ClientIP` (upstream's default 10800 s timeout).
//!
//! Why a proxy rather than iptables/nftables rules: it needs nothing but the agent (no iptables binary,
//! no netfilter modules, which minimal hosts lack) and never rewrites packets of anything but the
//! Service's own sockets. The price is a copy through the agent per connection (see docs/benchmarks.md).
//! UDP Service ports are not proxied yet.

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::api::Api;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One proxied Service port: where it listens and where it sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Ready endpoints (`ip:port`).
    pub backends: Vec<SocketAddr>,
    /// `sessionAffinity: ClientIP` timeout, if set.
    pub affinity: Option<Duration>,
}

/// The rules for `services` and their `endpoints` (pure; TCP ports only).
pub fn rules(services: &[Service], endpoints: &[Endpoints]) -> Vec<Rule> {
    let eps: BTreeMap<(String, String), &Endpoints> = endpoints
        .iter()
        .map(|e| {
            (
                (
                    e.metadata.namespace.clone().unwrap_or_default(),
                    e.metadata.name.clone().unwrap_or_default(),
                ),
                e,
            )
        })
        .collect();
    let mut out = Vec::new();
    for svc in services {
        let key = (
            svc.metadata.namespace.clone().unwrap_or_default(),
            svc.metadata.name.clone().unwrap_or_default(),
        );
        let Some(spec) = &svc.spec else { continue };
        let Some(e) = eps.get(&key) else { continue };
        let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            let secs = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref()?.timeout_seconds)
                .unwrap_or(10800);
            Duration::from_secs(u64::try_from(secs).unwrap_or(10800))
        });
        let cluster_ip: Option<IpAddr> = spec.cluster_ip.as_deref().and_then(|i| i.parse().ok());
        let node_ports = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
        for p in spec.ports.iter().flatten() {
            if p.protocol.as_deref().unwrap_or("TCP") != "TCP" {
                continue;
            }
            // The endpoint port: the subset port of the same name (unnamed: the only one).
            let mut backends: Vec<SocketAddr> = Vec::new();
            for subset in e.subsets.iter().flatten() {
                let port = subset
                    .ports
                    .iter()
                    .flatten()
                    .find(|ep| ep.name == p.name || (p.name.is_none() && ep.name.is_none()));
                let Some(port) = port.and_then(|ep| u16::try_from(ep.port).ok()) else {
                    continue;
                };
                for a in subset.addresses.iter().flatten() {
                    if let Ok(ip) = a.ip.parse::<IpAddr>() {
                        backends.push(SocketAddr::new(ip, port));
                    }
                }
            }
            backends.sort();
            if backends.is_empty() {
                continue;
            }
            if let (Some(ip), Ok(port)) = (cluster_ip, u16::try_from(p.port)) {
                out.push(Rule {
                    listen: SocketAddr::new(ip, port),
                    backends: backends.clone(),
                    affinity,
                });
            }
            // LoadBalancer: the ingress addresses the service load balancer published (the nodes' own
            // addresses; a node binds those that are its own, as k3s's ServiceLB pods do with hostPorts).
            if spec.type_.as_deref() == Some("LoadBalancer")
                && let Ok(port) = u16::try_from(p.port)
            {
                let ingress = svc
                    .status
                    .as_ref()
                    .and_then(|s| s.load_balancer.as_ref()?.ingress.clone());
                for ing in ingress.into_iter().flatten() {
                    if let Some(ip) = ing.ip.as_deref().and_then(|i| i.parse::<IpAddr>().ok()) {
                        out.push(Rule {
                            listen: SocketAddr::new(ip, port),
                            backends: backends.clone(),
                            affinity,
                        });
                    }
                }
            }
            if node_ports && let Some(np) = p.node_port.and_then(|n| u16::try_from(n).ok()) {
                out.push(Rule {
                    listen: SocketAddr::new(IpAddr::from([0, 0, 0, 0]), np),
                    backends,
                    affinity,
                });
            }
        }
    }
    out
}

/// Backends and choice state of one listener, updated in place when endpoints change.
#[derive(Default)]
struct Balancer {
    backends: Vec<SocketAddr>,
    affinity: Option<Duration>,
    next: usize,
    sticky: HashMap<IpAddr, (SocketAddr, Instant)>,
}

impl Balancer {
    fn pick(&mut self, client: IpAddr) -> Option<SocketAddr> {
        if self.backends.is_empty() {
            return None;
        }
        if let Some(ttl) = self.affinity
            && let Some((b, at)) = self.sticky.get(&client).copied()
            && at.elapsed() < ttl
            && self.backends.contains(&b)
        {
            self.sticky.insert(client, (b, Instant::now()));
            return Some(b);
        }
        let b = self.backends[self.next % self.backends.len()];
        self.next = self.next.wrapping_add(1);
        if self.affinity.is_some() {
            self.sticky.insert(client, (b, Instant::now()));
        }
        Some(b)
    }
}

fn ensure_local_address(ip: IpAddr) {
    if ip.is_unspecified() || ip.is_loopback() {
        return;
    }
    let _ = std::process::Command::new("ip")
        .args(["addr", "replace", &format!("{ip}/32"), "dev", "lo"])
        .output();
}

/// Run until the process ends.
pub async fn run(client: kube::Client) {
    let cfg = watcher::Config::default().any_semantic();
    let (services, w1) = reflector::store::<Service>();
    let (endpoints, w2) = reflector::store::<Endpoints>();
    let mut events = futures::stream::select_all(vec![
        reflector(w1, watcher(Api::<Service>::all(client.clone()), cfg.clone()))
            .default_backoff()
            .map(|_| ())
            .boxed(),
        reflector(w2, watcher(Api::<Endpoints>::all(client), cfg))
            .default_backoff()
            .map(|_| ())
            .boxed(),
    ]);
    let mut listeners: HashMap<SocketAddr, (Arc<Mutex<Balancer>>, tokio::task::JoinHandle<()>)> =
        HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            ev = events.next() => if ev.is_none() { return },
            _ = tick.tick() => {}
        }
        while let Some(Some(())) = futures::FutureExt::now_or_never(events.next()) {}
        let s: Vec<Service> = services.state().iter().map(|x| (**x).clone()).collect();
        let e: Vec<Endpoints> = endpoints.state().iter().map(|x| (**x).clone()).collect();
        let want = rules(&s, &e);
        listeners.retain(|addr, (_, task)| {
            let keep = want.iter().any(|r| &r.listen == addr);
            if !keep {
                task.abort();
            }
            keep
        });
        for r in want {
            if let Some((b, _)) = listeners.get(&r.listen) {
                if let Ok(mut b) = b.lock() {
                    b.backends = r.backends.clone();
                    b.affinity = r.affinity;
                }
                continue;
            }
            ensure_local_address(r.listen.ip());
            let listener = match tokio::net::TcpListener::bind(r.listen).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::debug!(listen = %r.listen, error = %e, "service port not bound; will retry");
                    continue;
                }
            };
            let balancer = Arc::new(Mutex::new(Balancer {
                backends: r.backends.clone(),
                affinity: r.affinity,
                ..Balancer::default()
            }));
            let b = balancer.clone();
            let task = tokio::spawn(async move {
                loop {
                    let Ok((mut conn, peer)) = listener.accept().await else {
                        continue;
                    };
                    let b = b.clone();
                    tokio::spawn(async move {
                        // A backend that refuses (a pod going away before its endpoint is removed) is
                        // skipped for the next one, as kube-proxy's userspace mode retried.
                        let tries = b.lock().map(|b| b.backends.len()).unwrap_or(0);
                        for _ in 0..tries {
                            let Some(target) = b.lock().ok().and_then(|mut b| b.pick(peer.ip())) else {
                                return;
                            };
                            let connect = tokio::net::TcpStream::connect(target);
                            if let Ok(Ok(mut up)) =
                                tokio::time::timeout(Duration::from_secs(1), connect).await
                            {
                                let _ = tokio::io::copy_bidirectional(&mut conn, &mut up).await;
                                return;
                            }
                        }
                    });
                }
            });
            listeners.insert(r.listen, (balancer, task));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cluster_ip_and_node_port_rules_from_ready_endpoints() {
        let services: Vec<Service> = serde_json::from_value(json!([
            {"metadata": {"name": "greet", "namespace": "default"}, "spec": {"type": "NodePort", "clusterIP": "10.43.0.20",
              "sessionAffinity": "ClientIP",
              "ports": [{"name": "http", "port": 80, "nodePort": 30080, "protocol": "TCP"}]}},
            {"metadata": {"name": "none", "namespace": "default"}, "spec": {"clusterIP": "10.43.0.21", "ports": [{"port": 80}]}}
        ]))
        .expect("services");
        let endpoints: Vec<Endpoints> = serde_json::from_value(json!([
            {"metadata": {"name": "greet", "namespace": "default"}, "subsets": [{
                "addresses": [{"ip": "10.42.0.6"}, {"ip": "10.42.0.5"}], "notReadyAddresses": [{"ip": "10.42.0.7"}],
                "ports": [{"name": "http", "port": 8080}]}]},
            {"metadata": {"name": "none", "namespace": "default"}, "subsets": []}
        ]))
        .expect("endpoints");
        let r = rules(&services, &endpoints);
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(r[0].listen, "10.43.0.20:80".parse().expect("addr"));
        assert_eq!(
            r[0].backends,
            [
                "10.42.0.5:8080".parse().expect("a"),
                "10.42.0.6:8080".parse().expect("b")
            ]
        );
        assert_eq!(r[0].affinity, Some(Duration::from_secs(10800)));
        assert_eq!(r[1].listen, "0.0.0.0:30080".parse().expect("addr"));
    }

    #[test]
    fn round_robin_and_client_ip_affinity() {
        let backends: Vec<SocketAddr> =
            vec!["10.0.0.1:1".parse().expect("a"), "10.0.0.2:1".parse().expect("b")];
        let mut b = Balancer {
            backends: backends.clone(),
            ..Balancer::default()
        };
        let c: IpAddr = "10.42.0.9".parse().expect("ip");
        assert_ne!(b.pick(c), b.pick(c));
        b.affinity = Some(Duration::from_secs(60));
        let first = b.pick(c);
        assert!((0..5).all(|_| b.pick(c) == first));
    }
}
