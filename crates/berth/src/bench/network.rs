//! `berth bench --suite network` (issue "Cluster networking", Figures), measured from inside a pod: the
//! load runs on threads of this process that joined a client pod's network namespace (`setns`), so its
//! packets take the pod's path (veth, bridge, the host's loopback addresses) while the measuring code is
//! ours, not busybox's.
//!
//! - Cluster DNS queries per second and latency (closed loop, 8 clients), for a StatefulSet-style pod name
//!   of a headless Service, side by side with the same load against dnsmasq (Debian `dnsmasq-base`) serving
//!   the same name as a host record on another loopback address of the host.
//! - Time from a pod becoming Ready (its watch event) to the cluster DNS answering its name with its IP.
//! - Service versus direct: round-trip time of 1-byte messages on one TCP connection to an echo server in
//!   a pod, and the throughput of a 256 MiB stream, through the Service's ClusterIP (the agent's proxy)
//!   and straight to the pod's IP.

use anyhow::{Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ListParams, PostParams, WatchEvent};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const DNS: Ipv4Addr = Ipv4Addr::new(10, 43, 255, 250);
const DNSMASQ: Ipv4Addr = Ipv4Addr::new(10, 43, 255, 249);
const SERVICE_CIDR: &str = "10.44.250.0/24";

/// Run `f` on a thread that joined the network namespace pinned at `pin`; sockets it makes stay in it.
fn in_netns<T: Send + 'static>(pin: PathBuf, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    std::thread::spawn(move || -> Result<T> {
        let ns = std::fs::File::open(&pin).with_context(|| format!("opening {}", pin.display()))?;
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
        Ok(f())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("bench thread panicked"))?
}

/// A DNS query for `name` (type A, class IN, recursion desired) with id `id` (RFC 1035 §4.1).
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Whether `resp` answers query `id` with NOERROR and at least one answer whose last 4 bytes of data are
/// `ip` (the A record is the last answer record, or the only one, for these names).
fn answers(resp: &[u8], id: u16, ip: Option<Ipv4Addr>) -> bool {
    resp.len() >= 12
        && resp[..2] == id.to_be_bytes()
        && resp[3] & 0x0f == 0
        && u16::from_be_bytes([resp[6], resp[7]]) >= 1
        && ip.is_none_or(|ip| resp.ends_with(&ip.octets()))
}

/// Closed-loop DNS load: `clients` threads in the netns `pin`, each sending the next query once the
/// previous is answered, for `secs`; returns (queries/s, p50, p99, unanswered).
fn dns_load(
    pin: &Path,
    server: Ipv4Addr,
    name: &str,
    clients: usize,
    secs: u64,
) -> Result<(f64, Duration, Duration, usize)> {
    let mut handles = Vec::new();
    for c in 0..clients {
        let (pin, name) = (pin.to_path_buf(), name.to_string());
        handles.push(std::thread::spawn(move || {
            in_netns(pin, move || -> Result<(Vec<Duration>, usize)> {
                let sock = UdpSocket::bind("0.0.0.0:0")?;
                sock.connect((server, 53))?;
                sock.set_read_timeout(Some(Duration::from_secs(1)))?;
                let (mut lat, mut lost) = (Vec::new(), 0usize);
                let mut buf = [0u8; 1500];
                let end = Instant::now() + Duration::from_secs(secs);
                let mut id = (c as u16).wrapping_mul(7919);
                while Instant::now() < end {
                    id = id.wrapping_add(1);
                    let q = query(id, &name);
                    let t = Instant::now();
                    sock.send(&q)?;
                    loop {
                        match sock.recv(&mut buf) {
                            Ok(n) if answers(&buf[..n], id, None) => {
                                lat.push(t.elapsed());
                                break;
                            }
                            Ok(_) => continue,
                            Err(_) => {
                                lost += 1;
                                break;
                            }
                        }
                    }
                }
                Ok((lat, lost))
            })
        }));
    }
    let (mut all, mut lost) = (Vec::new(), 0);
    for h in handles {
        let (lat, l) = h.join().map_err(|_| anyhow::anyhow!("client panicked"))???;
        all.extend(lat);
        lost += l;
    }
    anyhow::ensure!(!all.is_empty(), "no query to {server} was answered");
    all.sort();
    let qps = all.len() as f64 / secs as f64;
    Ok((qps, all[all.len() / 2], all[all.len() * 99 / 100], lost))
}

/// Round trips of 1-byte messages on one connection to `to` (an echo server) from netns `pin`.
fn rtt(pin: &Path, to: SocketAddr, n: usize) -> Result<(Duration, Duration)> {
    in_netns(pin.to_path_buf(), move || -> Result<(Duration, Duration)> {
        let mut c = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
        c.set_nodelay(true)?;
        c.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut lat = Vec::with_capacity(n);
        let mut b = [0u8; 1];
        for i in 0..n + 100 {
            let t = Instant::now();
            c.write_all(b"x")?;
            c.read_exact(&mut b)?;
            if i >= 100 {
                lat.push(t.elapsed());
            }
        }
        lat.sort();
        Ok((lat[lat.len() / 2], lat[lat.len() * 99 / 100]))
    })?
}

/// MiB/s of reading the stream `from` sends until it closes, from netns `pin` (best of 3).
fn throughput(pin: &Path, from: SocketAddr) -> Result<f64> {
    let mut best: f64 = 0.0;
    for _ in 0..3 {
        let rate = in_netns(pin.to_path_buf(), move || -> Result<f64> {
            let mut c = TcpStream::connect_timeout(&from, Duration::from_secs(5))?;
            c.set_read_timeout(Some(Duration::from_secs(10)))?;
            let mut buf = vec![0u8; 1 << 16];
            let (t, mut total) = (Instant::now(), 0usize);
            loop {
                let n = c.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                total += n;
            }
            anyhow::ensure!(total >= 256 << 20, "short stream: {total} bytes");
            Ok(total as f64 / (1 << 20) as f64 / t.elapsed().as_secs_f64())
        })??;
        best = best.max(rate);
    }
    Ok(best)
}

fn pod(v: serde_json::Value) -> Result<Pod> {
    let mut base = serde_json::json!({"metadata": {"labels": {"bench": "network"}},
        "spec": {"nodeName": "bench", "terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "c", "image": "busybox:test", "command": ["/bin/sleep", "3600"]}]}});
    json_patch::merge(&mut base, &v);
    Ok(serde_json::from_value(base)?)
}

async fn running(pods: &Api<Pod>, name: &str) -> Result<Pod> {
    let t = Instant::now();
    loop {
        let p = pods.get(name).await?;
        let ready = p
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if ready && p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some() {
            return Ok(p);
        }
        anyhow::ensure!(t.elapsed() < Duration::from_secs(60), "{name} not Ready in 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ip_of(p: &Pod) -> Result<Ipv4Addr> {
    p.status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .and_then(|i| i.parse().ok())
        .context("pod IP")
}

fn add_lo(ip: Ipv4Addr, add: bool) {
    let _ = std::process::Command::new("ip")
        .args([
            "addr",
            if add { "replace" } else { "del" },
            &format!("{ip}/32"),
            "dev",
            "lo",
        ])
        .output();
}

/// The figures (see the module docs); prints Markdown table rows.
pub async fn figures() -> Result<()> {
    let dns = DNS.to_string();
    let (child, _, client) = super::start_server_with(&[
        "--node-name",
        "bench",
        "--cluster-dns",
        &dns,
        "--service-cidr",
        SERVICE_CIDR,
    ])
    .await?;
    run(&child, client).await
}

/// Remove the loopback addresses a bench server left: its cluster DNS address and the ClusterIPs (those
/// in `service_cidr`) its proxy bound.
pub(super) fn drop_lo_addresses(dns: Ipv4Addr, service_cidr: &str) {
    let in_services = |ip: Ipv4Addr| {
        apiserver::alloc::parse_cidr(service_cidr).is_some_and(|(net, len)| {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net)
        })
    };
    let shown = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", "lo"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for w in shown.split_whitespace() {
        if let Some(ip) = w.strip_suffix("/32").and_then(|i| i.parse::<Ipv4Addr>().ok())
            && (ip == dns || in_services(ip))
        {
            add_lo(ip, false);
        }
    }
}

async fn run(child: &super::Child, client: kube::Client) -> Result<()> {
    let data = child.dir.path().to_path_buf();
    let archive = agent::image::busybox_archive(&data)?;
    agent::image::ImageStore::open(&data)?.import(&archive)?;
    super::wait_for_node(&client, "bench").await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    services
        .create(
            &pp,
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "bench-dns"},
                "spec": {"clusterIP": "None", "selector": {"app": "benchdns"}, "ports": [{"port": 80}]}}))?,
        )
        .await?;
    services
        .create(
            &pp,
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "srv"},
                "spec": {"selector": {"app": "srv"}, "ports": [{"name": "echo", "port": 7000}, {"name": "stream", "port": 7001}]}}))?,
        )
        .await?;
    pods.create(&pp, &pod(serde_json::json!({"metadata": {"name": "client"}}))?)
        .await?;
    pods.create(
        &pp,
        &pod(
            serde_json::json!({"metadata": {"name": "dns-0", "labels": {"app": "benchdns"}},
            "spec": {"hostname": "dns-0", "subdomain": "bench-dns"}}),
        )?,
    )
    .await?;
    pods.create(
        &pp,
        &pod(serde_json::json!({"metadata": {"name": "srv", "labels": {"app": "srv"}},
            "spec": {"containers": [{"name": "c", "image": "busybox:test", "command": ["/bin/sh", "-c",
                "busybox nc -ll -p 7000 -e cat & busybox nc -ll -p 7001 -e dd if=/dev/zero bs=65536 count=4096 status=none & wait"],
                "readinessProbe": {"tcpSocket": {"port": 7001}, "periodSeconds": 1}}]}}))?,
    )
    .await?;
    let client_pod = running(&pods, "client").await?;
    let dns_pod = running(&pods, "dns-0").await?;
    let srv = running(&pods, "srv").await?;
    let pin = agent::network::netns_path(
        &data
            .join("agent/pods")
            .join(client_pod.metadata.uid.as_deref().unwrap_or_default()),
    );
    let name = "dns-0.bench-dns.default.svc.cluster.local";
    let dns_ip = ip_of(&dns_pod)?;

    // 1. DNS load: the cluster DNS, then dnsmasq serving the same name.
    let t = Instant::now();
    loop {
        let p = pin.clone();
        let ok = in_netns(p, move || {
            let s = UdpSocket::bind("0.0.0.0:0").ok()?;
            s.set_read_timeout(Some(Duration::from_millis(200))).ok()?;
            s.send_to(&query(1, name), (DNS, 53)).ok()?;
            let mut b = [0u8; 512];
            let n = s.recv(&mut b).ok()?;
            answers(&b[..n], 1, Some(dns_ip)).then_some(())
        })?;
        if ok.is_some() {
            break;
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(20),
            "cluster DNS never answered {name}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (pin2, n2) = (pin.clone(), name.to_string());
    let (qps, p50, p99, lost) =
        tokio::task::spawn_blocking(move || dns_load(&pin2, DNS, &n2, 8, 5)).await??;
    println!(
        "| cluster DNS from a pod: A `{name}`, 8 clients closed-loop, 5 s: queries/s, p50 / p99 | {qps:.0}/s, {:.3} ms / {:.3} ms ({lost} unanswered) |",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    add_lo(DNSMASQ, true);
    let dnsmasq = std::process::Command::new("dnsmasq")
        .args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--user=root",
            "--pid-file=",
            &format!("--listen-address={DNSMASQ}"),
            &format!("--host-record={name},{dns_ip}"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    match dnsmasq {
        Ok(mut d) => {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let (pin2, n2) = (pin.clone(), name.to_string());
            let r = tokio::task::spawn_blocking(move || dns_load(&pin2, DNSMASQ, &n2, 8, 5)).await?;
            let _ = d.kill();
            let _ = d.wait();
            let (qps, p50, p99, lost) = r?;
            println!(
                "| the same load against dnsmasq {} (same name as a host record, same path) | {qps:.0}/s, {:.3} ms / {:.3} ms ({lost} unanswered) |",
                dnsmasq_version(),
                p50.as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3
            );
        }
        Err(e) => println!("| the same load against dnsmasq | not run: {e} (install Debian dnsmasq-base) |"),
    }
    add_lo(DNSMASQ, false);

    // 2. Ready → DNS: a new pod of the headless Service; from its Ready watch event until the cluster
    // DNS answers its name with its address (polled every millisecond).
    let mut delays = Vec::new();
    for i in 0..10 {
        let pname = format!("ready-{i}");
        let mut stream = super::watch_pods_from_now(&pods).await?;
        pods.create(
            &pp,
            &pod(
                serde_json::json!({"metadata": {"name": pname, "labels": {"app": "benchdns"}},
                "spec": {"hostname": pname, "subdomain": "bench-dns"}}),
            )?,
        )
        .await?;
        let (ready_at, ip) = loop {
            let Some(ev) = stream.next().await else {
                anyhow::bail!("watch ended before {pname} was Ready");
            };
            if let WatchEvent::Modified(p) = ev?
                && p.metadata.name.as_deref() == Some(pname.as_str())
                && p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            {
                break (Instant::now(), ip_of(&p)?);
            }
        };
        let qname = format!("{pname}.bench-dns.default.svc.cluster.local");
        let sock = UdpSocket::bind("0.0.0.0:0")?;
        sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        let mut id = 0u16;
        loop {
            id = id.wrapping_add(1);
            sock.send_to(&query(id, &qname), (DNS, 53))?;
            let mut b = [0u8; 512];
            if let Ok(n) = sock.recv(&mut b)
                && answers(&b[..n], id, Some(ip))
            {
                delays.push(ready_at.elapsed());
                break;
            }
            anyhow::ensure!(
                ready_at.elapsed() < Duration::from_secs(10),
                "{qname} never answered"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    delays.sort();
    println!(
        "| a pod's Ready watch event → the cluster DNS answers its name with its IP (10 pods): median / max | {:.1} ms / {:.1} ms |",
        delays[delays.len() / 2].as_secs_f64() * 1e3,
        delays[delays.len() - 1].as_secs_f64() * 1e3
    );

    // 3. Service versus direct, from the client pod.
    let svc = services.get("srv").await?;
    let cluster_ip: Ipv4Addr = svc
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .and_then(|i| i.parse().ok())
        .context("clusterIP")?;
    let srv_ip = ip_of(&srv)?;
    // The proxy binds the Service once its endpoints are ready.
    let t = Instant::now();
    while in_netns(pin.clone(), move || {
        TcpStream::connect_timeout(&SocketAddr::from((cluster_ip, 7000)), Duration::from_millis(200)).is_err()
    })? {
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(20),
            "the Service never answered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let p = pin.clone();
    let (d50, d99, s50, s99) = tokio::task::spawn_blocking(move || -> Result<_> {
        let (d50, d99) = rtt(&p, SocketAddr::from((srv_ip, 7000)), 2000)?;
        let (s50, s99) = rtt(&p, SocketAddr::from((cluster_ip, 7000)), 2000)?;
        Ok((d50, d99, s50, s99))
    })
    .await??;
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "| TCP round trip of 1 byte, pod → pod, 2000 on one connection: direct / through the ClusterIP: p50, p99 | {:.0} µs, {:.0} µs / {:.0} µs, {:.0} µs (added p50 {:.0} µs) |",
        us(d50),
        us(d99),
        us(s50),
        us(s99),
        us(s50) - us(d50)
    );
    let p = pin.clone();
    let (direct, via) = tokio::task::spawn_blocking(move || -> Result<_> {
        Ok((
            throughput(&p, SocketAddr::from((srv_ip, 7001)))?,
            throughput(&p, SocketAddr::from((cluster_ip, 7001)))?,
        ))
    })
    .await??;
    println!(
        "| TCP stream of 256 MiB, pod → pod (best of 3): direct / through the ClusterIP | {direct:.0} MiB/s / {via:.0} MiB/s ({:.0} %) |",
        via / direct * 100.0
    );
    let _ = pods
        .delete_collection(
            &Default::default(),
            &ListParams::default().labels("bench=network"),
        )
        .await;
    super::end_shims(&data, 30).await;
    Ok(())
}

fn dnsmasq_version() -> String {
    std::process::Command::new("dnsmasq")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .nth(2)
                .map(str::to_string)
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_is_rfc1035_and_an_answer_is_recognised() {
        let q = query(0x1234, "a.b.");
        assert_eq!(
            q,
            [
                0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 1, b'b', 0, 0, 1, 0, 1
            ]
        );
        let mut resp = q.clone();
        resp[2] = 0x81;
        resp[3] = 0x80;
        resp[7] = 1;
        resp.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 10, 42, 0, 7]);
        assert!(answers(&resp, 0x1234, Some(Ipv4Addr::new(10, 42, 0, 7))));
        assert!(!answers(&resp, 0x1234, Some(Ipv4Addr::new(10, 42, 0, 8))));
        assert!(!answers(&resp, 0x1235, None));
        resp[3] = 0x83; // NXDOMAIN
        assert!(!answers(&resp, 0x1234, None));
    }
}
