//! `berth bench --suite security`: what encryption at rest and PodSecurity admission cost. Secret
//! creates/s (16 clients) and a full list of them, with Secrets stored in clear and under each provider
//! (`--secrets-encryption-provider`); pod creates/s (16 clients) into a namespace without labels and into
//! one enforcing `restricted` (compliant pods, so every check runs and passes).

use super::{BenchArgs, CONTROL_PLANE_ARGS, start_server_with};
use anyhow::Result;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams, PostParams};
use std::time::{Duration, Instant};

/// `total` Secrets through 16 clients; returns creates/s.
async fn create_secrets(client: &kube::Client, total: usize) -> Result<f64> {
    let api: Api<Secret> = Api::namespaced(client.clone(), "default");
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..16 {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..total).step_by(16) {
                let s: Secret = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("s-{i}")},
                    "stringData": {"password": format!("value-{i}-0123456789abcdef0123456789abcdef")}
                }))
                .expect("secret");
                api.create(&PostParams::default(), &s).await?;
            }
            Ok::<_, kube::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(total as f64 / t0.elapsed().as_secs_f64())
}

/// Median of 5 full lists of the Secrets in `default`.
async fn list_secrets(client: &kube::Client, want: usize) -> Result<Duration> {
    let api: Api<Secret> = Api::namespaced(client.clone(), "default");
    let mut samples = Vec::new();
    for _ in 0..5 {
        let t0 = Instant::now();
        let n = api.list(&ListParams::default()).await?.items.len();
        anyhow::ensure!(n == want, "listed {n} of {want} secrets");
        samples.push(t0.elapsed());
    }
    samples.sort();
    Ok(samples[2])
}

/// `total` compliant pods into `ns` through 16 clients; returns creates/s.
async fn create_pods(client: &kube::Client, ns: &str, total: usize) -> Result<f64> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..16 {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..total).step_by(16) {
                let pod: Pod = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("p-{i}")},
                    "spec": {"securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
                        "containers": [{"name": "c", "image": "busybox", "securityContext": {
                            "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]}
                }))
                .expect("pod");
                api.create(&PostParams::default(), &pod).await?;
            }
            Ok::<_, kube::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(total as f64 / t0.elapsed().as_secs_f64())
}

/// Print the security figures as Markdown table rows.
pub async fn figures(args: &BenchArgs) -> Result<()> {
    let n = args.creates;
    for provider in ["none", "aescbc", "aesgcm", "secretbox"] {
        let mut flags: Vec<&str> = CONTROL_PLANE_ARGS.to_vec();
        if provider != "none" {
            flags.extend(["--secrets-encryption", "--secrets-encryption-provider", provider]);
        }
        let (child, _, client) = start_server_with(&flags).await?;
        let rate = create_secrets(&client, n).await?;
        let list = list_secrets(&client, n).await?;
        let shown = if provider == "none" { "in clear" } else { provider };
        println!(
            "| {n} Secrets {shown}: creates/s (16 clients) / full list (median of 5) | {rate:.0}/s / {:.0} ms |",
            list.as_secs_f64() * 1e3
        );
        drop(child);
    }
    let (child, _, client) = start_server_with(&CONTROL_PLANE_ARGS).await?;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    for (name, labels) in [
        ("open", serde_json::json!({})),
        (
            "locked",
            serde_json::json!({"pod-security.kubernetes.io/enforce": "restricted",
                               "pod-security.kubernetes.io/warn": "restricted"}),
        ),
    ] {
        let ns = serde_json::from_value(serde_json::json!({"metadata": {"name": name, "labels": labels}}))?;
        namespaces.create(&PostParams::default(), &ns).await?;
    }
    let open = create_pods(&client, "open", n).await?;
    let locked = create_pods(&client, "locked", n).await?;
    println!(
        "| {n} pods: creates/s (16 clients), namespace without labels / enforcing and warning `restricted` | {open:.0}/s / {locked:.0}/s ({:.0} %) |",
        locked / open * 100.0
    );
    drop(child);
    Ok(())
}
