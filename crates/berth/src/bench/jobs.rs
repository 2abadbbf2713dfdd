//! `berth bench --suite jobs` (root and /usr/bin/busybox): a 100-completion Job with parallelism 10 of
//! real busybox pods, from `create` to its `Complete` condition, and the pods it created per second,
//! beside upstream kube-controller-manager's client limit (`--kube-api-qps` 20 objects/s by default);
//! and a DaemonSet on two nodes: a second `berth agent` joins, until its daemon pod is Running.

use super::{Child, start_server_with, wait_for_node};
use anyhow::Result;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DeleteParams, PostParams, PropagationPolicy};
use std::time::{Duration, Instant};

/// Upstream's default `--kube-api-qps` of kube-controller-manager (burst 30).
const UPSTREAM_QPS: f64 = 20.0;

/// Print the figures as table rows.
///
/// # Errors
/// A server that does not start or a Job that does not complete in 5 minutes.
pub async fn figures() -> Result<()> {
    let (child, _, client): (Child, _, _) = start_server_with(&[
        "--node-name",
        "bench-jobs",
        "--token",
        "bench",
        "--cluster-dns",
        "10.43.255.246",
        "--service-cidr",
        "10.44.246.0/24",
    ])
    .await?;
    let archive = agent::image::busybox_archive(child.dir.path())?;
    agent::image::ImageStore::open(child.dir.path())?.import(&archive)?;
    wait_for_node(&client, "bench-jobs").await?;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let job: Job = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "hundred"},
        "spec": {"completions": 100, "parallelism": 10, "template": {"spec": {
            "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": "busybox:test", "command": ["/bin/true"]}]}}}}))?;
    let t = Instant::now();
    jobs.create(&PostParams::default(), &job).await?;
    loop {
        let j = jobs.get("hundred").await?;
        let complete = j
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Complete" && c.status == "True"));
        if complete {
            let succeeded = j.status.as_ref().and_then(|s| s.succeeded).unwrap_or(0);
            anyhow::ensure!(succeeded == 100, "Complete with {succeeded} succeeded");
            break;
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(300),
            "not Complete in 5 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = t.elapsed().as_secs_f64();
    let rate = 100.0 / took;
    // Upstream's client: each pod costs a create and a finalizer-removal patch, so 20 requests/s caps a
    // Job at 10 pods/s once the burst of 30 is spent (status updates come on top).
    let upstream_cap = UPSTREAM_QPS / 2.0;
    println!(
        "| Job, 100 completions, parallelism 10, real busybox pods (`/bin/true`): create → Complete | {took:.2} s ({rate:.1} pods/s; {:.2}× the 10 pods/s that upstream's 20 requests/s client allows, a create and a finalizer patch per pod) |",
        rate / upstream_cap
    );
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        ..DeleteParams::default()
    };
    jobs.delete("hundred", &dp).await?;
    daemonset_join(&child, &client).await?;
    super::end_shims(child.dir.path(), 30).await;
    drop(child);
    Ok(())
}

/// A DaemonSet running on the server's node; a second agent (own data dir, 127.0.0.1) joins: the time
/// from its spawn until its daemon pod is Running (registration, scheduling, the pod's start).
async fn daemonset_join(child: &Child, client: &kube::Client) -> Result<()> {
    use k8s_openapi::api::apps::v1::DaemonSet;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::ListParams;
    let sets: Api<DaemonSet> = Api::namespaced(client.clone(), "default");
    let ds: DaemonSet = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "agent"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": {
            "metadata": {"labels": {"app": "agent"}},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "c", "image": "busybox:test",
                "command": ["/bin/sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]}]}}}}))?;
    sets.create(&PostParams::default(), &ds).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let running_on = |node: &'static str| {
        let pods = pods.clone();
        async move {
            let list = pods.list(&ListParams::default().labels("app=agent")).await?;
            anyhow::Ok(list.items.iter().any(|p| {
                p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node)
                    && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            }))
        }
    };
    let t = Instant::now();
    while !running_on("bench-jobs").await? {
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(60),
            "no daemon pod on the first node"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let token = std::fs::read_to_string(child.dir.path().join("token"))?;
    let kubeconfig = std::fs::read_to_string(child.dir.path().join("kubeconfig.yaml"))?;
    let url = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .unwrap_or_default()
        .to_string();
    let dir = tempfile::tempdir()?;
    let archive = agent::image::busybox_archive(dir.path())?;
    agent::image::ImageStore::open(dir.path())?.import(&archive)?;
    let t = Instant::now();
    let mut agent = std::process::Command::new(std::env::current_exe()?)
        .args([
            "agent",
            "--server",
            &url,
            "--token",
            token.trim(),
            "--node-name",
            "bench-jobs-b",
        ])
        .args(["--node-ip", "127.0.0.1", "--data-dir"])
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let joined = loop {
        if running_on("bench-jobs-b").await? {
            break t.elapsed();
        }
        if t.elapsed() > Duration::from_secs(60) {
            let _ = agent.kill();
            anyhow::bail!("no daemon pod Running on the joining node in 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!(
        "| DaemonSet on 2 nodes: a second `berth agent` spawned → its daemon pod Running (node registration, scheduling, pod start) | {:.2} s |",
        joined.as_secs_f64()
    );
    sets.delete("agent", &DeleteParams::default()).await?;
    super::end_shims(dir.path(), 15).await;
    let _ = agent.kill();
    let _ = agent.wait();
    super::end_shims(dir.path(), 1).await;
    let pods_dir = dir.path().join("agent/pods");
    for e in std::fs::read_dir(&pods_dir).into_iter().flatten().flatten() {
        let _ = agent::network::teardown(&e.file_name().to_string_lossy(), &e.path());
    }
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<&str> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| std::path::Path::new(m).starts_with(dir.path()))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
    }
    Ok(())
}
