//! `berth bench --suite restart`: how long a restarted server takes until every controller plans on
//! complete caches (controller-runtime's gate: no pass before every watched kind has listed), with
//! `--pods` pods stored, beside the time until its API answers.

use super::{BenchArgs, CONTROL_PLANE_ARGS, Child, client_for, create_pods, spawn_server, start_server};
use anyhow::Result;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use std::time::{Duration, Instant};

/// The controller-runtime loops of the controller set (`controllers::spawn_all`).
const LOOPS: [&str; 13] = [
    "nodelifecycle",
    "nodeipam",
    "endpoints",
    "servicelb",
    "garbage-collector",
    "persistentvolume",
    "scheduler",
    "replicaset",
    "replicationcontroller",
    "deployment",
    "job",
    "cronjob",
    "daemonset",
];

/// Stop the server (SIGTERM, as an operator's restart does), start it again on the same data dir, and
/// return (spawn → first successful request, spawn → every loop's first pass on complete caches).
async fn restart(child: &mut Child) -> Result<(Duration, Duration)> {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.proc.id()).unwrap_or(i32::MAX));
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let _ = child.proc.wait();
    let dir = child.dir.path().to_path_buf();
    let kubeconfig = dir.join("kubeconfig.yaml");
    let _ = std::fs::remove_file(&kubeconfig);
    let log = dir.join("server.log");
    let t0 = Instant::now();
    child.proc = spawn_server(&dir, &CONTROL_PLANE_ARGS)?;
    let mut api_ready = None;
    loop {
        if api_ready.is_none()
            && kubeconfig.exists()
            && let Ok(client) = client_for(&kubeconfig).await
            && client.apiserver_version().await.is_ok()
        {
            api_ready = Some(t0.elapsed());
        }
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let planning = LOOPS.iter().all(|l| {
            text.lines()
                .any(|line| line.contains("caches complete; planning") && line.contains(&format!("\"{l}\"")))
        });
        if planning && let Some(a) = api_ready {
            return Ok((a, t0.elapsed()));
        }
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(60),
            "controllers not planning 60 s after a restart"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Print the restart figures.
///
/// # Errors
/// When a server cannot be started or does not come back.
pub async fn figures(args: &BenchArgs) -> Result<()> {
    let (mut child, _, client) = start_server().await?;
    create_pods(&Api::<Pod>::namespaced(client, "default"), args.pods).await?;
    let (mut api, mut planning) = (Vec::new(), Vec::new());
    for _ in 0..10 {
        let (a, p) = restart(&mut child).await?;
        api.push(a);
        planning.push(p);
    }
    api.sort();
    planning.sort();
    println!(
        "| server restart (SIGTERM) → API answers / → every controller planning on complete caches, {} pods stored (median of 10; max) | {:.0} ms / {:.0} ms ({:.0} ms) |",
        args.pods,
        api[5].as_secs_f64() * 1e3,
        planning[5].as_secs_f64() * 1e3,
        planning[9].as_secs_f64() * 1e3
    );
    Ok(())
}
