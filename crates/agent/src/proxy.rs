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
//!
//! UDP ports are relayed per client address (ip:port): the first datagram picks a backend, later ones and
//! the replies follow it until the flow has been idle for 30 s (the kernel's conntrack UDP timeout, which
//! kube-proxy's iptables mode relies on); a flow whose backend left the endpoints picks again. Replies
//! leave from the listening socket, so a client sees them come from the address it sent to (for node
//! ports bound on all addresses, from the address the host's routing picks).
//!
//! A pod's `hostPort` is served the same way (what the CNI `portmap` plugin does with DNAT): the agent
//! listens on `hostIP` (default all addresses) at the hostPort and relays to the pod's IP at its
//! containerPort, for as long as the pod has an IP on this node.

use controller_runtime::{Informers, Settings};
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use kube::api::Api;
use kube::runtime::watcher;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A port's protocol (`TCP` or `UDP`; SCTP is not proxied).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP: each accepted connection is spliced to one backend.
    Tcp,
    /// UDP: datagrams are relayed per client flow.
    Udp,
}

impl Protocol {
    fn parse(p: Option<&str>) -> Option<Protocol> {
        match p.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            _ => None,
        }
    }
}

/// One proxied Service port (or hostPort): where it listens and where it sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The protocol.
    pub protocol: Protocol,
    /// Where to listen.
    pub listen: SocketAddr,
    /// Ready endpoints (`ip:port`).
    pub backends: Vec<SocketAddr>,
    /// `sessionAffinity: ClientIP` timeout, if set.
    pub affinity: Option<Duration>,
}

/// The rules for `services` and their `endpoints` (pure; TCP and UDP ports).
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
            let Some(protocol) = Protocol::parse(p.protocol.as_deref()) else {
                continue;
            };
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
                    protocol,
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
                            protocol,
                            listen: SocketAddr::new(ip, port),
                            backends: backends.clone(),
                            affinity,
                        });
                    }
                }
            }
            if node_ports && let Some(np) = p.node_port.and_then(|n| u16::try_from(n).ok()) {
                out.push(Rule {
                    protocol,
                    listen: SocketAddr::new(IpAddr::from([0, 0, 0, 0]), np),
                    backends,
                    affinity,
                });
            }
        }
    }
    out
}

/// The `hostPort` rules of the pods bound to this node (pure): one per container port with a hostPort,
/// for pods that have an IP and are not host-network (whose ports are the host's already) nor finished.
pub fn host_port_rules(pods: &[Pod]) -> Vec<Rule> {
    let mut out = Vec::new();
    for p in pods {
        let (Some(spec), Some(status)) = (&p.spec, &p.status) else {
            continue;
        };
        if spec.host_network == Some(true)
            || p.metadata.deletion_timestamp.is_some()
            || matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"))
        {
            continue;
        }
        let Some(ip) = status.pod_ip.as_deref().and_then(|i| i.parse::<IpAddr>().ok()) else {
            continue;
        };
        for c in &spec.containers {
            for port in c.ports.iter().flatten() {
                let (Some(hp), Ok(cp)) = (
                    port.host_port
                        .and_then(|h| u16::try_from(h).ok())
                        .filter(|h| *h > 0),
                    u16::try_from(port.container_port),
                ) else {
                    continue;
                };
                let Some(protocol) = Protocol::parse(port.protocol.as_deref()) else {
                    continue;
                };
                let host_ip = port
                    .host_ip
                    .as_deref()
                    .and_then(|h| h.parse::<IpAddr>().ok())
                    .unwrap_or(IpAddr::from([0, 0, 0, 0]));
                out.push(Rule {
                    protocol,
                    listen: SocketAddr::new(host_ip, hp),
                    backends: vec![SocketAddr::new(ip, cp)],
                    affinity: None,
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

/// How long a UDP flow without traffic keeps its backend (conntrack's UDP timeout).
const UDP_IDLE: Duration = Duration::from_secs(30);

/// Run until the process ends: Services of the whole cluster, and the `hostPort`s of the pods bound to
/// node `node_name`.
pub async fn run(client: kube::Client, node_name: String) {
    let cfg = watcher::Config::default().any_semantic();
    let on_node = watcher::Config::default().fields(&format!("spec.nodeName={node_name}"));
    let mut informers = Informers::new();
    let services = informers.watch(Api::<Service>::all(client.clone()), cfg.clone());
    let endpoints = informers.watch(Api::<Endpoints>::all(client.clone()), cfg);
    let pods = informers.watch(Api::<Pod>::all(client), on_node);
    type Key = (Protocol, SocketAddr);
    let mut listeners: HashMap<Key, (Arc<Mutex<Balancer>>, tokio::task::JoinHandle<()>)> = HashMap::new();
    // No debounce: an endpoint change should reach the balancers at once. Listeners are closed only on
    // complete caches, so a cold start never drops a Service's listener it still has.
    let settings = Settings {
        debounce: Duration::ZERO,
        ..Settings::default()
    };
    let mut passes = informers.into_loop("service-proxy", settings);
    while let Some(_pass) = passes.next_pass().await {
        let s: Vec<Service> = services.state().iter().map(|x| (**x).clone()).collect();
        let e: Vec<Endpoints> = endpoints.state().iter().map(|x| (**x).clone()).collect();
        let p: Vec<Pod> = pods.state().iter().map(|x| (**x).clone()).collect();
        let mut want = rules(&s, &e);
        want.extend(host_port_rules(&p));
        listeners.retain(|key, (_, task)| {
            let keep = want.iter().any(|r| (r.protocol, r.listen) == *key);
            if !keep {
                task.abort();
            }
            keep
        });
        for r in want {
            if let Some((b, _)) = listeners.get(&(r.protocol, r.listen)) {
                if let Ok(mut b) = b.lock() {
                    b.backends = r.backends.clone();
                    b.affinity = r.affinity;
                }
                continue;
            }
            ensure_local_address(r.listen.ip());
            let balancer = Arc::new(Mutex::new(Balancer {
                backends: r.backends.clone(),
                affinity: r.affinity,
                ..Balancer::default()
            }));
            let task = match r.protocol {
                Protocol::Tcp => match tokio::net::TcpListener::bind(r.listen).await {
                    Ok(l) => tokio::spawn(serve_tcp(l, balancer.clone())),
                    Err(e) => {
                        tracing::debug!(listen = %r.listen, error = %e, "TCP port not bound; will retry");
                        continue;
                    }
                },
                Protocol::Udp => match tokio::net::UdpSocket::bind(r.listen).await {
                    Ok(sock) => tokio::spawn(serve_udp(sock, balancer.clone())),
                    Err(e) => {
                        tracing::debug!(listen = %r.listen, error = %e, "UDP port not bound; will retry");
                        continue;
                    }
                },
            };
            listeners.insert((r.protocol, r.listen), (balancer, task));
        }
    }
}

/// Splice every accepted connection to one backend.
async fn serve_tcp(listener: tokio::net::TcpListener, b: Arc<Mutex<Balancer>>) {
    loop {
        let Ok((mut conn, peer)) = listener.accept().await else {
            // (Out of descriptors, say: pause rather than spin.)
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let b = b.clone();
        tokio::spawn(async move {
            // A backend that refuses (a pod going away before its endpoint is removed) is skipped for
            // the next one, as kube-proxy's userspace mode retried.
            let tries = b.lock().map(|b| b.backends.len()).unwrap_or(0);
            for _ in 0..tries {
                let Some(target) = b.lock().ok().and_then(|mut b| b.pick(peer.ip())) else {
                    return;
                };
                let connect = tokio::net::TcpStream::connect(target);
                if let Ok(Ok(mut up)) = tokio::time::timeout(Duration::from_secs(1), connect).await {
                    // Large buffers: the default 8 KiB made a bulk stream through the proxy a fifth of direct.
                    let _ =
                        tokio::io::copy_bidirectional_with_sizes(&mut conn, &mut up, 1 << 18, 1 << 18).await;
                    return;
                }
            }
        });
    }
}

/// One client's UDP flow: its socket towards the backend and when it last carried a datagram.
struct Flow {
    up: Arc<tokio::net::UdpSocket>,
    backend: SocketAddr,
    last: Instant,
}

/// Relay datagrams per client flow (see the module docs).
async fn serve_udp(sock: tokio::net::UdpSocket, b: Arc<Mutex<Balancer>>) {
    let sock = Arc::new(sock);
    let flows: Arc<Mutex<HashMap<SocketAddr, Flow>>> = Arc::default();
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let backends = b.lock().map(|b| b.backends.clone()).unwrap_or_default();
        let existing = flows.lock().ok().and_then(|mut f| {
            let flow = f.get_mut(&peer)?;
            if !backends.contains(&flow.backend) {
                f.remove(&peer);
                return None;
            }
            flow.last = Instant::now();
            Some(flow.up.clone())
        });
        let up = match existing {
            Some(up) => up,
            None => {
                let Some(target) = b.lock().ok().and_then(|mut b| b.pick(peer.ip())) else {
                    continue;
                };
                let unspecified = match target {
                    SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
                    SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
                };
                let Ok(up) = tokio::net::UdpSocket::bind(unspecified).await else {
                    continue;
                };
                if up.connect(target).await.is_err() {
                    continue;
                }
                let up = Arc::new(up);
                if let Ok(mut f) = flows.lock() {
                    f.insert(
                        peer,
                        Flow {
                            up: up.clone(),
                            backend: target,
                            last: Instant::now(),
                        },
                    );
                }
                tokio::spawn(relay_replies(up.clone(), sock.clone(), peer, flows.clone()));
                up
            }
        };
        let _ = up.send(&buf[..n]).await;
    }
}

/// Send a flow's replies back to its client until the flow has been idle for [`UDP_IDLE`].
async fn relay_replies(
    up: Arc<tokio::net::UdpSocket>,
    sock: Arc<tokio::net::UdpSocket>,
    peer: SocketAddr,
    flows: Arc<Mutex<HashMap<SocketAddr, Flow>>>,
) {
    let mut buf = vec![0u8; 65536];
    loop {
        match tokio::time::timeout(UDP_IDLE, up.recv(&mut buf)).await {
            Ok(Ok(n)) => {
                if let Ok(mut f) = flows.lock()
                    && let Some(flow) = f.get_mut(&peer)
                {
                    flow.last = Instant::now();
                }
                let _ = sock.send_to(&buf[..n], peer).await;
            }
            // An ICMP error from the backend (port unreachable) or a quiet spell: end the flow once
            // idle; the next datagram starts a new one.
            _ => {
                let Ok(mut f) = flows.lock() else { return };
                let same = f.get(&peer).is_some_and(|fl| Arc::ptr_eq(&fl.up, &up));
                if !same {
                    return;
                }
                if f.get(&peer).is_some_and(|fl| fl.last.elapsed() >= UDP_IDLE) {
                    f.remove(&peer);
                    return;
                }
            }
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
        assert_eq!(r[0].protocol, Protocol::Tcp);
        assert_eq!(r[1].listen, "0.0.0.0:30080".parse().expect("addr"));
    }

    #[test]
    fn udp_ports_are_proxied_and_sctp_is_not() {
        let services: Vec<Service> = serde_json::from_value(json!([
            {"metadata": {"name": "dns", "namespace": "default"}, "spec": {"clusterIP": "10.43.0.30",
              "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                        {"name": "s", "port": 9, "protocol": "SCTP"}]}}
        ]))
        .expect("services");
        let endpoints: Vec<Endpoints> = serde_json::from_value(json!([
            {"metadata": {"name": "dns", "namespace": "default"}, "subsets": [{
                "addresses": [{"ip": "10.42.0.6"}],
                "ports": [{"name": "dns", "port": 5353, "protocol": "UDP"}, {"name": "dns-tcp", "port": 5353}, {"name": "s", "port": 9}]}]}
        ]))
        .expect("endpoints");
        let r = rules(&services, &endpoints);
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(
            (r[0].protocol, r[0].listen),
            (Protocol::Udp, "10.43.0.30:53".parse().expect("a"))
        );
        assert_eq!(r[0].backends, ["10.42.0.6:5353".parse().expect("b")]);
        assert_eq!(r[1].protocol, Protocol::Tcp);
    }

    #[test]
    fn host_ports_of_running_pods() {
        let pods: Vec<Pod> = serde_json::from_value(json!([
            {"metadata": {"name": "a"}, "spec": {"containers": [{"name": "c", "ports": [
                {"containerPort": 80, "hostPort": 8080}, {"containerPort": 53, "hostPort": 5353, "protocol": "UDP", "hostIP": "127.0.0.1"},
                {"containerPort": 81}]}]},
             "status": {"phase": "Running", "podIP": "10.42.0.9"}},
            {"metadata": {"name": "no-ip"}, "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8081}]}]},
             "status": {"phase": "Pending"}},
            {"metadata": {"name": "host"}, "spec": {"hostNetwork": true, "containers": [{"name": "c", "ports": [{"containerPort": 82, "hostPort": 82}]}]},
             "status": {"phase": "Running", "podIP": "172.31.0.1"}}
        ]))
        .expect("pods");
        let r = host_port_rules(&pods);
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(
            (r[0].protocol, r[0].listen),
            (Protocol::Tcp, "0.0.0.0:8080".parse().expect("a"))
        );
        assert_eq!(r[0].backends, ["10.42.0.9:80".parse().expect("b")]);
        assert_eq!(
            (r[1].protocol, r[1].listen),
            (Protocol::Udp, "127.0.0.1:5353".parse().expect("a"))
        );
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
