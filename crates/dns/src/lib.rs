//! Cluster DNS, as the Kubernetes DNS specification defines it
//! (<https://github.com/kubernetes/dns/blob/master/docs/specification.md>) and CoreDNS's `kubernetes`
//! plugin serves it:
//!
//! - `<service>.<ns>.svc.<domain>`: A of the ClusterIP; for a headless Service, A of each ready
//!   endpoint (the Endpoints' `addresses`, which hold not-ready pods too with `publishNotReadyAddresses`);
//! - `<hostname>.<service>.<ns>.svc.<domain>`: A of an endpoint that carries a hostname (every
//!   StatefulSet pod whose `serviceName` is that headless Service); endpoints without one are named by
//!   their dashed address (`10-42-0-5.<service>…`);
//! - `_<port>._<proto>.<service>.<ns>.svc.<domain>`: SRV for each named port (targets: the Service, or
//!   each endpoint's name for a headless Service);
//! - PTR for ClusterIPs and for endpoints with a hostname;
//! - NXDOMAIN, with the zone's SOA, for unknown names in the zone; NODATA (SOA too) for known names
//!   without the asked type; everything else is forwarded to the host's resolvers.
//!
//! The decision is the pure [`Index::answer`]; [`serve`] keeps the index current from watches of
//! Services and Endpoints (answers follow a change within the watch latency) and answers on UDP and TCP.

use controller_runtime::{Informers, Settings};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, PTR, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::api::Api;
use kube::runtime::watcher;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// TTL of every answer, seconds (CoreDNS's `kubernetes` plugin default).
pub const TTL: u32 = 5;

/// The records of the cluster zone.
#[derive(Debug, Default, Clone)]
pub struct Index {
    zone: Option<Name>,
    records: BTreeMap<Name, Vec<RData>>,
    /// Every name that exists (with records, or as an ancestor of one).
    names: BTreeSet<Name>,
    serial: u32,
    /// Built from complete caches; until then names of the zone get SERVFAIL (a resolver retries),
    /// never an NXDOMAIN that a cold start would make up.
    complete: bool,
}

fn name(s: &str) -> Option<Name> {
    let mut n = Name::from_ascii(s).ok()?;
    n.set_fqdn(true);
    Some(n.to_lowercase())
}

fn reverse(ip: Ipv4Addr) -> Option<Name> {
    let [a, b, c, d] = ip.octets();
    name(&format!("{d}.{c}.{b}.{a}.in-addr.arpa."))
}

impl Index {
    /// The zone `domain` while the Service and Endpoints caches are still listing: every name of the zone
    /// is answered SERVFAIL.
    #[must_use]
    pub fn loading(domain: &str) -> Self {
        Index {
            zone: name(&format!("{domain}.")),
            ..Index::default()
        }
    }

    /// Build the zone `domain` (e.g. `cluster.local`) from Services and their Endpoints.
    pub fn build(domain: &str, services: &[Service], endpoints: &[Endpoints], serial: u32) -> Self {
        let mut ix = Index {
            zone: name(&format!("{domain}.")),
            serial,
            complete: true,
            ..Index::default()
        };
        let Some(zone) = ix.zone.clone() else {
            return ix;
        };
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
        for svc in services {
            let ns = svc.metadata.namespace.clone().unwrap_or_default();
            let sname = svc.metadata.name.clone().unwrap_or_default();
            let Some(base) = name(&format!("{sname}.{ns}.svc.{zone}")) else {
                continue;
            };
            let spec = svc.spec.clone().unwrap_or_default();
            let cluster_ip = spec.cluster_ip.clone().unwrap_or_default();
            if cluster_ip == "None" {
                let Some(e) = eps.get(&(ns.clone(), sname.clone())) else {
                    ix.exist(&base, &zone);
                    continue;
                };
                for subset in e.subsets.iter().flatten() {
                    for addr in subset.addresses.iter().flatten() {
                        let Ok(ip) = addr.ip.parse::<Ipv4Addr>() else {
                            continue;
                        };
                        ix.add(&base, &zone, RData::A(A(ip)));
                        let label = addr.hostname.clone().unwrap_or_else(|| addr.ip.replace('.', "-"));
                        let Some(own) = name(&format!("{label}.{base}")) else {
                            continue;
                        };
                        ix.add(&own, &zone, RData::A(A(ip)));
                        if addr.hostname.is_some() {
                            ix.add_ptr(ip, &own);
                        }
                        for p in subset.ports.iter().flatten() {
                            let (pname, proto) = (p.name.as_deref(), p.protocol.as_deref());
                            ix.add_srv(&zone, &base, pname, proto, p.port, &own);
                        }
                    }
                }
                ix.exist(&base, &zone);
            } else if let Ok(ip) = cluster_ip.parse::<Ipv4Addr>() {
                ix.add(&base, &zone, RData::A(A(ip)));
                ix.add_ptr(ip, &base);
                for p in spec.ports.iter().flatten() {
                    let (pname, proto) = (p.name.as_deref(), p.protocol.as_deref());
                    ix.add_srv(&zone, &base, pname, proto, p.port, &base);
                }
            }
        }
        ix
    }

    /// `_<port name>._<protocol>.<base>` SRV → `target` (unnamed ports have none, as the DNS
    /// specification says).
    fn add_srv(
        &mut self,
        zone: &Name,
        base: &Name,
        port_name: Option<&str>,
        protocol: Option<&str>,
        port: i32,
        target: &Name,
    ) {
        let Some(pname) = port_name.filter(|n| !n.is_empty()) else {
            return;
        };
        let proto = protocol.unwrap_or("TCP").to_lowercase();
        if let Some(srv) = name(&format!("_{pname}._{proto}.{base}")) {
            let port = u16::try_from(port).unwrap_or(0);
            self.add(&srv, zone, RData::SRV(SRV::new(0, 100, port, target.clone())));
        }
    }

    /// The PTR record of `ip` → `target` (outside the zone: no existence bookkeeping).
    fn add_ptr(&mut self, ip: Ipv4Addr, target: &Name) {
        if let Some(r) = reverse(ip) {
            self.records
                .entry(r)
                .or_default()
                .push(RData::PTR(PTR(target.clone())));
        }
    }

    fn add(&mut self, n: &Name, zone: &Name, r: RData) {
        let v = self.records.entry(n.clone()).or_default();
        if !v.contains(&r) {
            v.push(r);
        }
        self.exist(n, zone);
    }

    fn exist(&mut self, n: &Name, zone: &Name) {
        let mut cur = n.clone();
        while zone.zone_of(&cur) && self.names.insert(cur.clone()) {
            cur = cur.base_name();
        }
    }

    fn soa(&self) -> Option<Record> {
        let zone = self.zone.clone()?;
        let soa = SOA::new(
            name(&format!("ns.dns.{zone}"))?,
            name(&format!("hostmaster.{zone}"))?,
            self.serial,
            7200,
            1800,
            86400,
            TTL,
        );
        Some(Record::from_rdata(zone, TTL, RData::SOA(soa)))
    }

    /// The response to `request`, or `None` when the question is not ours (forward it).
    pub fn answer(&self, request: &Message) -> Option<Message> {
        let q = request.queries().first()?;
        let qname = q.name().to_lowercase();
        let zone = self.zone.as_ref()?;
        let in_zone = zone.zone_of(&qname);
        let ours = in_zone || (q.query_type() == RecordType::PTR && self.records.contains_key(&qname));
        if !ours {
            return None;
        }
        if !self.complete {
            return Some(servfail(request));
        }
        let mut m = Message::new();
        m.set_id(request.id())
            .set_message_type(MessageType::Response)
            .set_op_code(OpCode::Query)
            .set_authoritative(true)
            .set_recursion_desired(request.recursion_desired())
            .set_recursion_available(true)
            .add_query(Query::query(q.name().clone(), q.query_type()));
        let matches = |r: &RData| q.query_type() == RecordType::ANY || r.record_type() == q.query_type();
        let found: Vec<Record> = self
            .records
            .get(&qname)
            .into_iter()
            .flatten()
            .filter(|r| matches(r))
            .map(|r| Record::from_rdata(q.name().clone(), TTL, r.clone()))
            .collect();
        if !found.is_empty() {
            // SRV answers carry their targets' addresses, as CoreDNS does.
            for r in &found {
                if let RData::SRV(srv) = r.data() {
                    for a in self.records.get(srv.target()).into_iter().flatten() {
                        if matches!(a, RData::A(_)) {
                            m.add_additional(Record::from_rdata(srv.target().clone(), TTL, a.clone()));
                        }
                    }
                }
            }
            m.add_answers(found);
            return Some(m);
        }
        let exists = self.names.contains(&qname) || self.records.contains_key(&qname);
        m.set_response_code(if exists {
            ResponseCode::NoError
        } else {
            ResponseCode::NXDomain
        });
        if let Some(soa) = self.soa() {
            m.add_name_server(soa);
        }
        Some(m)
    }
}

/// The host's resolvers (`nameserver` lines of `/etc/resolv.conf`), where other names are forwarded.
pub fn host_resolvers() -> Vec<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

async fn forward(query: &[u8], upstream: &[SocketAddr]) -> Option<Vec<u8>> {
    for u in upstream {
        let bind: SocketAddr = if u.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().ok()?;
        let Ok(sock) = tokio::net::UdpSocket::bind(bind).await else {
            continue;
        };
        if sock.send_to(query, u).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 4096];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), sock.recv(&mut buf)).await {
            buf.truncate(n);
            return Some(buf);
        }
    }
    None
}

/// The index's reply to one query's bytes, when the name is ours to answer.
fn local(index: &Index, bytes: &[u8]) -> Option<Vec<u8>> {
    let req = Message::from_vec(bytes).ok()?;
    index.answer(&req)?.to_vec().ok()
}

/// The reply to one query's bytes: ours from the index, else the upstream's; SERVFAIL when neither.
async fn respond(index: &Index, bytes: &[u8], upstream: &[SocketAddr]) -> Option<Vec<u8>> {
    let req = Message::from_vec(bytes).ok()?;
    if let Some(m) = index.answer(&req) {
        return m.to_vec().ok();
    }
    if let Some(r) = forward(bytes, upstream).await {
        return Some(r);
    }
    servfail(&req).to_vec().ok()
}

fn servfail(req: &Message) -> Message {
    let mut m = Message::new();
    m.set_id(req.id())
        .set_message_type(MessageType::Response)
        .set_response_code(ResponseCode::ServFail);
    for q in req.queries() {
        m.add_query(q.clone());
    }
    m
}

/// Serve the zone `domain` on `addr` (UDP and TCP) until the process ends, from watches of Services and
/// Endpoints through `client`.
///
/// # Errors
/// When the sockets cannot be bound.
pub async fn serve(client: kube::Client, addr: SocketAddr, domain: String) -> std::io::Result<()> {
    let udp = Arc::new(tokio::net::UdpSocket::bind(addr).await?);
    let tcp = tokio::net::TcpListener::bind(addr).await?;
    let (tx, rx) = tokio::sync::watch::channel(Arc::new(Index::loading(&domain)));
    let upstream: Arc<Vec<SocketAddr>> = Arc::new(
        host_resolvers()
            .into_iter()
            .filter(|u| u.ip() != addr.ip())
            .collect(),
    );
    tokio::spawn(async move {
        let cfg = watcher::Config::default().any_semantic();
        let mut informers = Informers::new();
        let services = informers.watch(Api::<Service>::all(client.clone()), cfg.clone());
        let endpoints = informers.watch(Api::<Endpoints>::all(client), cfg);
        // No debounce: a pod's Ready → its name answering is a measured figure.
        let settings = Settings {
            debounce: std::time::Duration::ZERO,
            ..Settings::default()
        };
        let mut passes = informers.into_loop("dns", settings);
        let mut serial = 1u32;
        while let Some(_pass) = passes.next_pass().await {
            serial = serial.wrapping_add(1);
            let s: Vec<Service> = services.state().iter().map(|x| (**x).clone()).collect();
            let e: Vec<Endpoints> = endpoints.state().iter().map(|x| (**x).clone()).collect();
            let _ = tx.send(Arc::new(Index::build(&domain, &s, &e, serial)));
        }
    });
    {
        let (udp, rx, upstream) = (udp.clone(), rx.clone(), upstream.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = udp.recv_from(&mut buf).await else {
                    continue;
                };
                let index = rx.borrow().clone();
                // Names of the zone are answered here, from memory, without a task per query; only
                // forwarding (which waits on another server) gets its own task.
                if let Some(r) = local(&index, &buf[..n]) {
                    let _ = udp.send_to(&r, peer).await;
                    continue;
                }
                let query = buf[..n].to_vec();
                let (udp, upstream) = (udp.clone(), upstream.clone());
                tokio::spawn(async move {
                    if let Some(r) = respond(&index, &query, &upstream).await {
                        let _ = udp.send_to(&r, peer).await;
                    }
                });
            }
        });
    }
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let Ok((mut conn, _)) = tcp.accept().await else {
                continue;
            };
            let (rx, upstream) = (rx.clone(), upstream.clone());
            tokio::spawn(async move {
                loop {
                    let Ok(len) = conn.read_u16().await else { return };
                    let mut q = vec![0u8; usize::from(len)];
                    if conn.read_exact(&mut q).await.is_err() {
                        return;
                    }
                    let index = rx.borrow().clone();
                    let Some(r) = respond(&index, &q, &upstream).await else {
                        return;
                    };
                    let Ok(rlen) = u16::try_from(r.len()) else { return };
                    if conn.write_u16(rlen).await.is_err() || conn.write_all(&r).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(())
}

/// Give this host the cluster DNS address (a /32 on the loopback interface, which needs no kernel module,
/// unlike a dummy interface), so pods reach it through their default route (architecture.md: cluster
/// DNS lives on the node). Idempotent; [`remove_address`] undoes it.
///
/// # Errors
/// When `ip` fails (not root, no iproute2).
pub fn ensure_address(ip: Ipv4Addr) -> std::io::Result<()> {
    let out = std::process::Command::new("ip")
        .args(["addr", "replace", &format!("{ip}/32"), "dev", "lo"])
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "ip addr replace {ip}/32 dev lo: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Remove the cluster DNS address from the loopback interface (a server's clean shutdown).
pub fn remove_address(ip: Ipv4Addr) {
    let _ = std::process::Command::new("ip")
        .args(["addr", "del", &format!("{ip}/32"), "dev", "lo"])
        .output();
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn index() -> Index {
        let services: Vec<Service> = serde_json::from_value(json!([
            {"metadata": {"name": "nginx", "namespace": "default"}, "spec": {"clusterIP": "None", "ports": [{"name": "web", "port": 80}]}},
            {"metadata": {"name": "greet", "namespace": "default"}, "spec": {"clusterIP": "10.43.0.20", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}},
            {"metadata": {"name": "empty", "namespace": "default"}, "spec": {"clusterIP": "None"}}
        ]))
        .expect("services");
        let endpoints: Vec<Endpoints> = serde_json::from_value(json!([
            {"metadata": {"name": "nginx", "namespace": "default"}, "subsets": [{
                "addresses": [{"ip": "10.42.0.5", "hostname": "web-0"}, {"ip": "10.42.0.6", "hostname": "web-1"}],
                "notReadyAddresses": [{"ip": "10.42.0.7", "hostname": "web-2"}],
                "ports": [{"name": "web", "port": 80, "protocol": "TCP"}]}]}
        ]))
        .expect("endpoints");
        Index::build("cluster.local", &services, &endpoints, 7)
    }

    fn ask(ix: &Index, q: &str, t: RecordType) -> Option<Message> {
        let mut m = Message::new();
        m.set_id(42)
            .add_query(Query::query(Name::from_ascii(q).expect("name"), t));
        ix.answer(&m)
    }

    fn a_records(m: &Message) -> Vec<String> {
        let mut v: Vec<String> = m
            .answers()
            .iter()
            .filter_map(|r| match r.data() {
                RData::A(a) => Some(a.0.to_string()),
                _ => None,
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn statefulset_pods_services_srv_ptr_and_negative_answers() {
        let ix = index();
        let m = ask(&ix, "web-0.nginx.default.svc.cluster.local.", RecordType::A).expect("ours");
        assert_eq!(a_records(&m), ["10.42.0.5"]);
        assert!(m.authoritative() && m.id() == 42);
        let m = ask(&ix, "NGINX.default.svc.cluster.local.", RecordType::A).expect("ours");
        assert_eq!(
            a_records(&m),
            ["10.42.0.5", "10.42.0.6"],
            "ready endpoints only, case-insensitive"
        );
        assert_eq!(m.response_code(), ResponseCode::NoError);
        let m = ask(&ix, "greet.default.svc.cluster.local.", RecordType::A).expect("ours");
        assert_eq!(a_records(&m), ["10.43.0.20"]);
        let m = ask(&ix, "_web._tcp.nginx.default.svc.cluster.local.", RecordType::SRV).expect("ours");
        assert_eq!(m.answers().len(), 2);
        assert_eq!(m.additionals().len(), 2, "targets' addresses");
        let m = ask(
            &ix,
            "_http._tcp.greet.default.svc.cluster.local.",
            RecordType::SRV,
        )
        .expect("ours");
        assert!(matches!(m.answers()[0].data(), RData::SRV(s) if s.port() == 8080));
        let m = ask(&ix, "20.0.43.10.in-addr.arpa.", RecordType::PTR).expect("ours");
        assert!(
            matches!(m.answers()[0].data(), RData::PTR(p) if p.0.to_string() == "greet.default.svc.cluster.local.")
        );
        let m = ask(&ix, "6.0.42.10.in-addr.arpa.", RecordType::PTR).expect("ours");
        assert!(
            matches!(m.answers()[0].data(), RData::PTR(p) if p.0.to_string() == "web-1.nginx.default.svc.cluster.local.")
        );
        // Unknown in the zone: NXDOMAIN with the SOA; known without that type: NODATA with the SOA.
        let m = ask(&ix, "web-2.nginx.default.svc.cluster.local.", RecordType::A).expect("ours");
        assert_eq!(m.response_code(), ResponseCode::NXDomain);
        assert!(matches!(m.name_servers()[0].data(), RData::SOA(s) if s.serial() == 7));
        let m = ask(&ix, "nginx.default.svc.cluster.local.", RecordType::AAAA).expect("ours");
        assert_eq!((m.response_code(), m.answers().len()), (ResponseCode::NoError, 0));
        let m = ask(&ix, "default.svc.cluster.local.", RecordType::A).expect("ours");
        assert_eq!(m.response_code(), ResponseCode::NoError);
        let m = ask(&ix, "empty.default.svc.cluster.local.", RecordType::A).expect("ours");
        assert_eq!(m.response_code(), ResponseCode::NoError);
        // Not ours: forwarded.
        assert!(ask(&ix, "example.com.", RecordType::A).is_none());
        assert!(ask(&ix, "1.1.168.192.in-addr.arpa.", RecordType::PTR).is_none());
    }
}
