//! `berth bench --suite examples` (issue "Real stateful software", Figures): for each example of
//! `examples/` (web, greet, etcd, redis, postgres), the time from `kubectl apply` of its manifests to every
//! member of its StatefulSet Ready, one example after the other on one server; then, with all of them
//! running together, the memory of Berth's own processes (the server and the container shims, not the
//! databases and web servers they run), as proportional set size.
//!
//! Needs root, kubectl and the Debian mirror (each example's `build.sh` builds its image with apt; the
//! `.deb` files are cached in `$BERTH_DEB_CACHE` or `~/.cache/berth-debs`). Run from the repository root,
//! or pass `--examples-dir`.

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::Api;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

const DNS: Ipv4Addr = Ipv4Addr::new(10, 43, 255, 248);

/// Example name, its manifests (relative to the examples dir), its StatefulSet.
const EXAMPLES: [(&str, &[&str], &str); 5] = [
    (
        "web",
        &["seed/seed-storage-local.yaml", "seed/seed-web.yaml"],
        "web",
    ),
    (
        "greet",
        &["seed/seed-greet-statefulset.yaml", "seed/seed-greet-service.yaml"],
        "greet",
    ),
    ("etcd", &["etcd/etcd.yaml"], "etcd"),
    ("redis", &["redis/redis.yaml"], "redis"),
    ("postgres", &["postgres/postgres.yaml"], "postgres"),
];

/// The figures (see the module docs); prints Markdown table rows.
pub async fn figures(examples_dir: &Path) -> Result<()> {
    let dns = DNS.to_string();
    let (child, _, client) = super::start_server_with(&[
        "--node-name",
        "bench",
        "--cluster-dns",
        &dns,
        "--service-cidr",
        "10.44.248.0/24",
    ])
    .await?;
    run(&child, client, examples_dir).await
}

async fn run(child: &super::Child, client: kube::Client, dir: &Path) -> Result<()> {
    let data = child.dir.path().to_path_buf();
    let store = agent::image::ImageStore::open(&data)?;
    for (name, _, _) in EXAMPLES {
        let archive = data.join(format!("{name}.tar"));
        let out = std::process::Command::new(dir.join(name).join("build.sh"))
            .arg(&archive)
            .output()
            .with_context(|| format!("running {}/{name}/build.sh", dir.display()))?;
        anyhow::ensure!(
            out.status.success(),
            "building the {name} image: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        store.import(&archive)?;
    }
    super::wait_for_node(&client, "bench").await?;
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    let kubeconfig = data.join("kubeconfig.yaml");
    let mut pods = 0;
    for (name, manifests, set) in EXAMPLES {
        let t = Instant::now();
        let mut apply = std::process::Command::new("kubectl");
        apply.env("KUBECONFIG", &kubeconfig).arg("apply");
        for m in manifests {
            apply.arg("-f").arg(dir.join(m));
        }
        let out = apply.output().context("kubectl apply")?;
        anyhow::ensure!(
            out.status.success(),
            "kubectl apply ({name}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let replicas = loop {
            if let Some(s) = sets.get_opt(set).await? {
                let want = s.spec.as_ref().and_then(|sp| sp.replicas).unwrap_or(1);
                if s.status.as_ref().and_then(|st| st.ready_replicas) == Some(want) {
                    break want;
                }
            }
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(300),
                "{name}: not all members Ready in 300 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        pods += replicas;
        println!(
            "| `{name}`: `kubectl apply` → all {replicas} members Ready | {:.1} s |",
            t.elapsed().as_secs_f64()
        );
    }
    // Settle, then Berth's own memory with everything running.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let server = super::pss_kib(child.proc.id()).unwrap_or(0);
    let shims = super::shims(&data);
    let shim_pss: u64 = shims.iter().filter_map(|p| super::pss_kib(*p)).sum();
    println!(
        "| all five examples running together ({pods} pods, {} containers): Berth's own memory (PSS): server + shims | {:.1} MB + {:.1} MB = {:.1} MB |",
        shims.len(),
        server as f64 / 1024.0,
        shim_pss as f64 / 1024.0,
        (server + shim_pss) as f64 / 1024.0
    );
    for (_, _, set) in EXAMPLES {
        let _ = sets.delete(set, &Default::default()).await;
    }
    super::end_shims(&data, 90).await;
    Ok(())
}
