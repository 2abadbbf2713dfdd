//! `berth bench --suite jobs` (root and /usr/bin/busybox): a 100-completion Job with parallelism 10 of
//! real busybox pods, from `create` to its `Complete` condition, and the pods it created per second,
//! beside upstream kube-controller-manager's client limit (`--kube-api-qps` 20 objects/s by default).

use super::{Child, start_server_with, wait_for_node};
use anyhow::Result;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DeleteParams, PostParams, PropagationPolicy};
use std::time::{Duration, Instant};

/// Upstream's default `--kube-api-qps` of kube-controller-manager.
const UPSTREAM_QPS: f64 = 20.0;

/// Print the figures as table rows.
///
/// # Errors
/// A server that does not start or a Job that does not complete in 5 minutes.
pub async fn figures() -> Result<()> {
    let (child, _, client): (Child, _, _) = start_server_with(&[
        "--node-name",
        "bench-jobs",
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
    println!(
        "| Job, 100 completions, parallelism 10, real busybox pods (`/bin/true`): create → Complete | {took:.2} s ({rate:.1} pods/s, {:.2}× upstream's 20 objects/s client limit, which alone takes ≥ 5 s for the 100 creates) |",
        rate / UPSTREAM_QPS
    );
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        ..DeleteParams::default()
    };
    jobs.delete("hundred", &dp).await?;
    super::end_shims(child.dir.path(), 30).await;
    drop(child);
    Ok(())
}
