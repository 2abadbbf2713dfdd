//! The admission chain through the registry: NamespaceLifecycle, DefaultStorageClass and PodSecurity
//! refuse, mutate and warn as upstream's plugins do, with warnings collected per request.

use apiserver::admission::collect_warnings;
use apiserver::error::ApiError;
use apiserver::registry::{DeleteOptions, Registry, RegistryConfig, WriteOptions};
use serde_json::{Value, json};

async fn registry(dir: &std::path::Path, config: RegistryConfig) -> Registry {
    let store = store::Store::open_embedded(&dir.join("store"), store::Options::default()).expect("store");
    let reg = Registry::new(store, config);
    apiserver::bootstrap(&reg, 6443).await.expect("bootstrap");
    reg
}

fn res(group: &str, version: &str, plural: &str) -> &'static api::resources::Resource {
    api::resources::find(group, version, plural).expect("served resource")
}

fn message(e: &ApiError) -> String {
    e.status()["message"].as_str().unwrap_or_default().to_string()
}

async fn namespace(reg: &Registry, name: &str, labels: Value) {
    let ns = json!({"metadata": {"name": name, "labels": labels}, "spec": {"finalizers": ["kubernetes"]}});
    reg.create(res("", "v1", "namespaces"), None, ns, &WriteOptions::default())
        .await
        .expect("namespace");
}

#[tokio::test]
async fn namespace_lifecycle_refuses_missing_terminating_and_system_namespaces() {
    let dir = tempfile::tempdir().expect("dir");
    let reg = registry(dir.path(), Default::default()).await;
    let cms = res("", "v1", "configmaps");
    let cm = json!({"metadata": {"name": "c"}});
    let e = reg
        .create(cms, Some("nope"), cm.clone(), &WriteOptions::default())
        .await
        .expect_err("missing namespace");
    assert_eq!(message(&e), "namespaces \"nope\" not found");
    namespace(&reg, "going", json!({})).await;
    reg.delete(
        res("", "v1", "namespaces"),
        None,
        "going",
        &DeleteOptions::default(),
    )
    .await
    .expect("delete");
    let e = reg
        .create(cms, Some("going"), cm, &WriteOptions::default())
        .await
        .expect_err("terminating namespace");
    assert_eq!(
        message(&e),
        "configmaps \"c\" is forbidden: unable to create new content in namespace going because it is being terminated"
    );
    for ns in ["default", "kube-system", "kube-public"] {
        let e = reg
            .delete(res("", "v1", "namespaces"), None, ns, &DeleteOptions::default())
            .await
            .expect_err("immortal");
        assert_eq!(
            message(&e),
            format!("namespaces \"{ns}\" is forbidden: this namespace may not be deleted")
        );
    }
}

#[tokio::test]
async fn default_storage_class_fills_in_claims_without_a_class() {
    let dir = tempfile::tempdir().expect("dir");
    let reg = registry(dir.path(), Default::default()).await;
    let pvcs = res("", "v1", "persistentvolumeclaims");
    let claim = |name: &str, class: Option<&str>| {
        let mut c = json!({"metadata": {"name": name}, "spec": {"accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}}}});
        if let Some(cl) = class {
            c["spec"]["storageClassName"] = json!(cl);
        }
        c
    };
    let made = reg
        .create(pvcs, Some("default"), claim("a", None), &WriteOptions::default())
        .await
        .expect("claim");
    assert_eq!(made["spec"]["storageClassName"], "local-path");
    let made = reg
        .create(
            pvcs,
            Some("default"),
            claim("b", Some("")),
            &WriteOptions::default(),
        )
        .await
        .expect("claim");
    assert_eq!(
        made["spec"]["storageClassName"], "",
        "an explicit empty class stays"
    );
}

#[tokio::test]
async fn pod_security_refuses_pods_warns_for_workloads_and_collects_warnings_per_request() {
    let dir = tempfile::tempdir().expect("dir");
    let mut config = RegistryConfig::default();
    config.admission.pod_security.exempt_namespaces = vec!["exempt".into()];
    let reg = registry(dir.path(), config).await;
    let labels = json!({"pod-security.kubernetes.io/enforce": "baseline",
                        "pod-security.kubernetes.io/warn": "restricted"});
    namespace(&reg, "apps", labels.clone()).await;
    namespace(&reg, "exempt", labels).await;
    let privileged = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox",
        "securityContext": {"privileged": true}}]}});
    let pods = res("", "v1", "pods");
    let (r, warnings) =
        collect_warnings(reg.create(pods, Some("apps"), privileged.clone(), &WriteOptions::default())).await;
    let e = r.expect_err("privileged pod under enforce=baseline");
    assert_eq!(
        message(&e),
        "pods \"p\" is forbidden: violates PodSecurity \"baseline:latest\": privileged (container \"c\" must not set securityContext.privileged=true)"
    );
    assert!(
        warnings.is_empty(),
        "no warning on a refused request: {warnings:?}"
    );
    // The same pod in an exempt namespace is admitted without a word.
    let (r, warnings) =
        collect_warnings(reg.create(pods, Some("exempt"), privileged.clone(), &WriteOptions::default()))
            .await;
    r.expect("exempt namespace");
    assert!(warnings.is_empty());
    // A workload with that template is admitted, with the warn level's verdict.
    let sts = json!({"metadata": {"name": "w"}, "spec": {"serviceName": "w", "selector": {"matchLabels": {"a": "b"}},
        "template": {"metadata": {"labels": {"a": "b"}}, "spec": privileged["spec"]}}});
    let (r, warnings) = collect_warnings(reg.create(
        res("apps", "v1", "statefulsets"),
        Some("apps"),
        sts,
        &WriteOptions::default(),
    ))
    .await;
    r.expect("workloads are never refused");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("would violate PodSecurity \"restricted:latest\": privileged (container \"c\" must not set securityContext.privileged=true), allowPrivilegeEscalation != false"),
        "{}",
        warnings[0]
    );
    // Status updates of a pod are not looked at.
    let plain =
        json!({"metadata": {"name": "q"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    let (r, warnings) =
        collect_warnings(reg.create(pods, Some("apps"), plain, &WriteOptions::default())).await;
    let mut pod = r.expect("baseline pod");
    assert_eq!(warnings.len(), 1, "warned at restricted: {warnings:?}");
    pod["status"] = json!({"phase": "Running"});
    let (r, warnings) = collect_warnings(reg.update(
        pods,
        Some("apps"),
        "q",
        Some(api::resources::Subresource::Status),
        pod,
        &WriteOptions::default(),
    ))
    .await;
    r.expect("status update");
    assert!(warnings.is_empty(), "{warnings:?}");
}
