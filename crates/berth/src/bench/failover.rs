//! `berth bench --suite failover`: leader failover time with several servers on one etcd (issue 16's
//! figure). A 3-member etcd on loopback and two servers sharing it (`--disable-agent`, one `--token`);
//! each round kills the Lease holder with SIGKILL, creates a Deployment through the survivor at once, and
//! times (a) until the survivor holds `kube-system/berth-controllers` and (b) until the Deployment's
//! ReplicaSet exists — the first controller write of the new leader. The killed server is started again
//! on its data dir (it waits, the Lease being the survivor's) before the next round. Upstream's timings
//! (15 s lease, 2 s retry) bound (b) at about 17 s; a second run uses shorter ones
//! (`--leader-elect-lease-duration 5s` and friends).

use super::{client_for, spawn_server};
use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams, PostParams};
use std::time::{Duration, Instant};

struct Srv {
    name: String,
    dir: tempfile::TempDir,
    proc: Option<std::process::Child>,
    args: Vec<String>,
}

impl Drop for Srv {
    fn drop(&mut self) {
        self.kill();
        // The server put its cluster DNS address (and any ClusterIP its proxy bound) on `lo`; killed, it
        // cannot take them away (as `super::Child` does for the other suites).
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        if let Some((dns, service_cidr)) = super::loopback_of(&args) {
            super::network::drop_lo_addresses(dns, &service_cidr);
        }
    }
}

impl Srv {
    fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
    }

    async fn start(&mut self) -> Result<kube::Client> {
        let kc = self.dir.path().join("kubeconfig.yaml");
        let _ = std::fs::remove_file(&kc);
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.proc = Some(spawn_server(self.dir.path(), &args)?);
        let t0 = Instant::now();
        loop {
            if kc.exists()
                && let Ok(c) = client_for(&kc).await
                && c.apiserver_version().await.is_ok()
            {
                return Ok(c);
            }
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(30),
                "{} not ready in 30 s",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn holder(client: &kube::Client) -> Option<String> {
    let lease = Api::<Lease>::namespaced(client.clone(), "kube-system")
        .get("berth-controllers")
        .await
        .ok()?;
    lease.spec?.holder_identity
}

fn deployment(name: &str) -> Result<Deployment> {
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "c", "image": "busybox:test"}]}}}
    }))?)
}

/// Print the failover rows: upstream's timings, then shorter ones (5 s / 3 s / 1 s).
pub async fn figures() -> Result<()> {
    anyhow::ensure!(
        store::local_etcd::available(),
        "the failover suite needs {} (Debian etcd-server)",
        store::local_etcd::binary().display()
    );
    rounds(&[], "upstream's 15 s lease, 2 s retry").await?;
    rounds(
        &[
            "--leader-elect-lease-duration",
            "5s",
            "--leader-elect-renew-deadline",
            "3s",
            "--leader-elect-retry-period",
            "1s",
        ],
        "--leader-elect-lease-duration 5s, renew deadline 3s, retry 1s",
    )
    .await
}

async fn rounds(timings: &[&str], label: &str) -> Result<()> {
    let etcd = store::local_etcd::LocalEtcd::cluster(3).context("starting etcd")?;
    let endpoints = etcd.endpoints();
    let mut servers: Vec<Srv> = Vec::new();
    let mut clients = Vec::new();
    for (i, name) in ["failover-0", "failover-1"].iter().enumerate() {
        let mut s = Srv {
            name: name.to_string(),
            dir: tempfile::tempdir()?,
            proc: None,
            args: [
                "--disable-agent",
                "--node-name",
                name,
                "--token",
                "bench-failover",
                "--datastore-endpoint",
                &endpoints,
                "--cluster-dns",
                &format!("10.43.255.{}", 240 + i),
                "--service-cidr",
                &format!("10.44.{}.0/24", 240 + i),
            ]
            .iter()
            .chain(timings)
            .map(|s| s.to_string())
            .collect(),
        };
        clients.push(s.start().await?);
        servers.push(s);
    }
    let rounds = 3;
    let mut takeovers = Vec::new();
    let mut first_writes = Vec::new();
    for round in 0..rounds {
        let t = Instant::now();
        let leader = loop {
            if let Some(h) = holder(&clients[0]).await {
                break h;
            }
            anyhow::ensure!(t.elapsed() < Duration::from_secs(60), "no Lease holder");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let dead = servers
            .iter()
            .position(|s| s.name == leader)
            .context("the holder is not a bench server")?;
        let alive = 1 - dead;
        let client = clients[alive].clone();
        servers[dead].kill();
        let t0 = Instant::now();
        let name = format!("failover-{round}");
        Api::<Deployment>::namespaced(client.clone(), "default")
            .create(&PostParams::default(), &deployment(&name)?)
            .await?;
        let mut took_lease = None;
        let replicasets = Api::<ReplicaSet>::namespaced(client.clone(), "default");
        let first_write = loop {
            if took_lease.is_none() && holder(&client).await.as_deref() == Some(&servers[alive].name) {
                took_lease = Some(t0.elapsed());
            }
            let lp = ListParams::default().labels(&format!("app={name}"));
            if replicasets.list(&lp).await.is_ok_and(|l| !l.items.is_empty()) {
                break t0.elapsed();
            }
            anyhow::ensure!(t0.elapsed() < Duration::from_secs(90), "no ReplicaSet after 90 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        takeovers.push(took_lease.unwrap_or(first_write));
        first_writes.push(first_write);
        clients[dead] = servers[dead].start().await?;
    }
    let fmt = |v: &[Duration]| {
        v.iter()
            .map(|d| format!("{:.1}", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    println!(
        "| leader failover ({label}), 2 servers on a 3-member etcd: kill -9 of the Lease holder → the other holds the Lease ({rounds} rounds) | {} s |",
        fmt(&takeovers)
    );
    println!(
        "| leader failover ({label}): kill -9 of the Lease holder → the new leader's first controller write (a Deployment's ReplicaSet) | {} s |",
        fmt(&first_writes)
    );
    drop(servers);
    drop(etcd);
    Ok(())
}
