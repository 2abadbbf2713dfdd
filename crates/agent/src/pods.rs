//! Pods bound to this node. Today: finishing graceful deletion. With an agent present the API server
//! deletes pods gracefully (it sets `deletionTimestamp` and waits, upstream `pkg/registry/core/pod`); the
//! kubelet then stops the containers and deletes the object with grace period 0. This agent runs no
//! containers yet, so it deletes such pods at once (with a uid precondition, so a replacement pod of the
//! same name is never touched).

use crate::Config;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};

/// Whether this agent must finish `p`'s deletion.
pub fn must_finish_deletion(node: &str, p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_some()
        && p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node)
}

/// Run until the process ends.
pub async fn run(client: kube::Client, cfg: Config) {
    let api: Api<Pod> = Api::all(client.clone());
    let wc = watcher::Config::default()
        .any_semantic()
        .fields(&format!("spec.nodeName={}", cfg.node_name));
    let mut pods = watcher(api, wc).default_backoff().applied_objects().boxed();
    while let Some(ev) = pods.next().await {
        let Ok(p) = ev else { continue };
        if !must_finish_deletion(&cfg.node_name, &p) {
            continue;
        }
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        let name = p.metadata.name.clone().unwrap_or_default();
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: p.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        match api.delete(&name, &dp).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => tracing::warn!(pod = %name, error = %e, "finishing pod deletion failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_terminating_pods_of_this_node() {
        let pod = |node: &str, deleting: bool| -> Pod {
            let mut v =
                json!({"metadata": {"name": "p", "uid": "u"}, "spec": {"nodeName": node, "containers": []}});
            if deleting {
                v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
            }
            serde_json::from_value(v).expect("pod")
        };
        assert!(must_finish_deletion("n1", &pod("n1", true)));
        assert!(!must_finish_deletion("n1", &pod("n1", false)));
        assert!(!must_finish_deletion("n1", &pod("n2", true)));
    }
}
