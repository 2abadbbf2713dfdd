//! Berth's Kubernetes API server: the REST API over axum that the real kubectl, kube-rs and client-go
//! drive unchanged — discovery, OpenAPI, CRUD, list/watch, the four patch types, status and scale
//! subresources, deletion with finalizers and grace periods, Table output and authentication.
//!
//! Invariant: this is the only crate that knows HTTP status codes and `metav1.Status` ([`error`]).
//! Handlers keep no state between requests besides the store; every kind goes through the one generic
//! [`registry::Registry`] with per-kind rules from `api::strategy`.

// `ApiError` carries every field error of a 422 by value; it only travels on the cold error path.
#![allow(clippy::result_large_err)]

pub mod admission;
pub mod alloc;
pub mod cacher;
pub mod cluster;
pub mod discovery;
pub mod encryption;
pub mod error;
pub mod eviction;
pub mod files;
pub mod http;
pub mod object;
pub mod openapi_v2;
pub mod peers;
pub mod protobuf;
pub mod proxy;
pub mod registry;
pub mod request;
pub mod scale;
pub mod server;
pub mod table;
pub mod tls;
pub mod watch;

use registry::{Registry, WriteOptions};
use serde_json::json;

/// Create what a fresh cluster has from the start (upstream's bootstrap controllers): the namespaces
/// `default`, `kube-system`, `kube-public` and `kube-node-lease`, and the `kubernetes` Service in `default`
/// on the first address of the service range. Existing objects are left alone.
pub async fn bootstrap(reg: &Registry, https_port: u16) -> Result<(), error::ApiError> {
    let ns_res =
        api::resources::find("", "v1", "namespaces").ok_or_else(|| error::ApiError::Internal("ns".into()))?;
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        match reg.create(ns_res, None, obj, &WriteOptions::default()).await {
            Ok(_) | Err(error::ApiError::AlreadyExists(_)) => {}
            Err(e) => return Err(e),
        }
    }
    let svc_res =
        api::resources::find("", "v1", "services").ok_or_else(|| error::ApiError::Internal("svc".into()))?;
    let first_ip = alloc::nth_ip(&reg.config().service_cidr, 1)
        .map(|ip| ip.to_string())
        .unwrap_or_default();
    let svc = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"clusterIP": first_ip, "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": https_port}],
                 "sessionAffinity": "None", "type": "ClusterIP"}});
    match reg
        .create(svc_res, Some("default"), svc, &WriteOptions::default())
        .await
    {
        Ok(_) | Err(error::ApiError::AlreadyExists(_)) => {}
        Err(e) => return Err(e),
    }
    // The default StorageClass, as k3s ships it (local-path, WaitForFirstConsumer, Delete); kept if present.
    let sc_res = api::resources::find("storage.k8s.io", "v1", "storageclasses")
        .ok_or_else(|| error::ApiError::Internal("storageclasses".into()))?;
    let sc = json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "local-path", "annotations": {api::wellknown::DEFAULT_CLASS: "true"}},
        "provisioner": api::wellknown::LOCAL_PATH_PROVISIONER, "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer", "allowVolumeExpansion": true});
    match reg.create(sc_res, None, sc, &WriteOptions::default()).await {
        Ok(_) | Err(error::ApiError::AlreadyExists(_)) => {}
        Err(e) => return Err(e),
    }
    // Upstream's built-in PriorityClasses (`pkg/registry/scheduling/rest` AddSystemPriorityClasses).
    let pc_res = api::resources::find("scheduling.k8s.io", "v1", "priorityclasses")
        .ok_or_else(|| error::ApiError::Internal("priorityclasses".into()))?;
    for (name, value, description) in [
        (
            "system-node-critical",
            2_000_001_000_i64,
            "Used for system critical pods that must not be moved from their current node.",
        ),
        (
            "system-cluster-critical",
            2_000_000_000,
            "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
        ),
    ] {
        let pc = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": name}, "value": value, "description": description});
        match reg.create(pc_res, None, pc, &WriteOptions::default()).await {
            Ok(_) | Err(error::ApiError::AlreadyExists(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
