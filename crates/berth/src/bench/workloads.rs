//! `berth bench --suite workloads`: the Deployment and ReplicaSet controllers at scale beside the
//! StatefulSet controller, in one bench run (each on a fresh server): a Parallel StatefulSet of
//! `--parallel-replicas` from 0 to all pods created, a Deployment of the same size likewise, and its
//! rollout to a new image to completion (the bench plays the kubelet: every new pod is marked Running and
//! Ready as it appears).

use super::{BenchArgs, namespace, start_server, sts_manifest, wait_for_pods};
use anyhow::Result;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use std::time::{Duration, Instant};

/// Upstream kube-controller-manager's default `--kube-api-qps`.
const UPSTREAM_QPS: f64 = 20.0;

fn deployment(name: &str, replicas: usize, image: &str) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": image}]}}}
    }))
    .expect("deployment manifest")
}

/// The bench's kubelet for namespace `ns`: every pod that appears is marked Running and Ready.
fn kubelet(client: kube::Client, ns: &str, rv: String) -> tokio::task::JoinHandle<()> {
    let pods: Api<Pod> = Api::namespaced(client, ns);
    tokio::spawn(async move {
        let mut rv = rv;
        loop {
            let Ok(stream) = pods.watch(&WatchParams::default().timeout(290), &rv).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let mut stream = stream.boxed();
            while let Some(Ok(ev)) = stream.next().await {
                let p = match ev {
                    WatchEvent::Added(p) | WatchEvent::Modified(p) => p,
                    WatchEvent::Deleted(p) => {
                        rv = p.metadata.resource_version.unwrap_or_default();
                        continue;
                    }
                    _ => continue,
                };
                rv = p.metadata.resource_version.clone().unwrap_or_default();
                let ready = p
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready"));
                if ready || p.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
                let status = serde_json::json!({"status": {"phase": "Running",
                    "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}]}});
                let name = p.metadata.name.clone().unwrap_or_default();
                let _ = pods
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await;
            }
        }
    })
}

/// Wait until the Deployment reports `replicas` updated, available and in total, for its generation.
async fn rolled_out(api: &Api<Deployment>, name: &str, replicas: usize) -> Result<()> {
    let want = i32::try_from(replicas)?;
    let t0 = Instant::now();
    loop {
        let d = api.get(name).await?;
        let st = d.status.clone().unwrap_or_default();
        if st.updated_replicas == Some(want)
            && st.available_replicas == Some(want)
            && st.replicas == Some(want)
            && st.observed_generation == d.metadata.generation
        {
            return Ok(());
        }
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(600),
            "rollout not finished in 600 s: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn first_rv(list: &kube::core::ObjectList<Pod>) -> String {
    list.metadata.resource_version.clone().unwrap_or_default()
}

/// Print the workload figures as table rows.
pub async fn figures(args: &BenchArgs) -> Result<()> {
    let n = args.parallel_replicas;
    let floor = n as f64 / UPSTREAM_QPS;
    // Each on its own fresh server: with no node, every pod stays Pending and the scheduler keeps working
    // on all of them, so pods left by one figure would slow the next.
    let (child, _, client) = start_server().await?;
    // 1. A Parallel StatefulSet of that size, on a fresh server.
    namespace(&client, "bench-sts").await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "bench-sts");
    let rv = first_rv(&pods.list(&ListParams::default().limit(1)).await?);
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "bench-sts");
    let t0 = Instant::now();
    sets.create(&PostParams::default(), &sts_manifest("par", n, "Parallel"))
        .await?;
    wait_for_pods(&client, Some("bench-sts"), n, &rv).await?;
    println!(
        "| Parallel StatefulSet of {n} replicas (fresh server): 0 → all pods created | {:.2} s (upstream at 20 requests/s: ≥ {floor:.0} s) |",
        t0.elapsed().as_secs_f64()
    );
    drop(child);

    let (child, _, client) = start_server().await?;

    // 2. A Deployment from 0 to all pods created (its ReplicaSet's slow-start batches of 1, 2, 4, …).
    namespace(&client, "bench-deploy").await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "bench-deploy");
    let rv = first_rv(&pods.list(&ListParams::default().limit(1)).await?);
    let lp = kubelet(client.clone(), "bench-deploy", rv.clone());
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "bench-deploy");
    let t0 = Instant::now();
    deployments
        .create(&PostParams::default(), &deployment("web", n, "busybox:1"))
        .await?;
    wait_for_pods(&client, Some("bench-deploy"), n, &rv).await?;
    let created = t0.elapsed().as_secs_f64();
    println!(
        "| Deployment of {n} replicas: 0 → all pods created | {created:.2} s (upstream's controller-manager at its default 20 requests/s: ≥ {floor:.0} s, {:.0}× longer) |",
        floor / created
    );
    rolled_out(&deployments, "web", n).await?;

    // 3. Its rollout to a new image: 25 % surge and unavailability, each new pod Ready as it appears.
    let t0 = Instant::now();
    let patch = serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox:2"}]}}}});
    deployments
        .patch("web", &PatchParams::default(), &Patch::Strategic(&patch))
        .await?;
    rolled_out(&deployments, "web", n).await?;
    let rollout = t0.elapsed().as_secs_f64();
    // At least n creates, n deletes and the scale steps of both ReplicaSets.
    let upstream = 2.0 * floor;
    println!(
        "| its rollout to a new image (maxSurge/maxUnavailable 25 %; the bench marks each new pod Ready) to complete | {rollout:.2} s (upstream at 20 requests/s: ≥ {upstream:.0} s for the {} pod creates and deletes alone, {:.0}× longer) |",
        2 * n,
        upstream / rollout
    );
    lp.abort();

    drop(child);
    Ok(())
}
