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

/// Priority: the class resolves to the pod's priority; an unknown class is refused as upstream.
#[tokio::test]
async fn priority_resolves_the_class_and_refuses_an_unknown_one() {
    let dir = tempfile::tempdir().expect("dir");
    let reg = registry(dir.path(), Default::default()).await;
    let pods = res("", "v1", "pods");
    let pod = |class: &str| {
        json!({"metadata": {"name": "p"}, "spec": {"priorityClassName": class,
               "containers": [{"name": "c", "image": "x"}]}})
    };
    let created = reg
        .create(
            pods,
            Some("default"),
            pod("system-cluster-critical"),
            &WriteOptions::default(),
        )
        .await
        .expect("built-in class");
    assert_eq!(created["spec"]["priority"], 2_000_000_000);
    assert_eq!(created["spec"]["preemptionPolicy"], "PreemptLowerPriority");
    let e = reg
        .create(pods, Some("default"), pod("nope"), &WriteOptions::default())
        .await
        .expect_err("unknown class");
    assert_eq!(
        message(&e),
        "pods \"p\" is forbidden: no PriorityClass with name nope was found"
    );
}

/// LimitRanger defaults container resources and refuses out-of-range ones; ResourceQuota charges new
/// pods and refuses the one that would exceed it, with upstream's messages.
#[tokio::test]
async fn limit_ranges_default_and_quotas_refuse_what_exceeds_them() {
    let dir = tempfile::tempdir().expect("dir");
    let reg = registry(dir.path(), Default::default()).await;
    let opts = WriteOptions::default();
    let lr = json!({"metadata": {"name": "lr"}, "spec": {"limits": [{"type": "Container",
        "default": {"cpu": "500m", "memory": "128Mi"}, "defaultRequest": {"cpu": "100m", "memory": "64Mi"},
        "max": {"cpu": "1"}}]}});
    reg.create(res("", "v1", "limitranges"), Some("default"), lr, &opts)
        .await
        .expect("limitrange");
    let q = json!({"metadata": {"name": "q"}, "spec": {"hard": {"pods": "2", "requests.cpu": "1"}}});
    reg.create(res("", "v1", "resourcequotas"), Some("default"), q, &opts)
        .await
        .expect("quota");
    let pods = res("", "v1", "pods");
    let pod = |name: &str, limits: Value| {
        json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "x",
               "resources": {"limits": limits}}]}})
    };
    let p = reg
        .create(pods, Some("default"), pod("a", json!({})), &opts)
        .await
        .expect("defaulted pod");
    assert_eq!(p["spec"]["containers"][0]["resources"]["requests"]["cpu"], "100m");
    assert_eq!(
        p["spec"]["containers"][0]["resources"]["limits"]["memory"],
        "128Mi"
    );
    assert!(
        p["metadata"]["annotations"]["kubernetes.io/limit-ranger"]
            .as_str()
            .is_some_and(|a| a.starts_with("LimitRanger plugin set: cpu, memory request for container c")),
        "{p}"
    );
    let e = reg
        .create(pods, Some("default"), pod("big", json!({"cpu": "2"})), &opts)
        .await
        .expect_err("over the max");
    assert_eq!(
        message(&e),
        "pods \"big\" is forbidden: maximum cpu usage per Container is 1, but limit is 2"
    );
    let quota = reg
        .get(res("", "v1", "resourcequotas"), Some("default"), "q")
        .await
        .expect("quota");
    assert_eq!(quota["status"]["used"]["pods"], "1");
    assert_eq!(quota["status"]["used"]["requests.cpu"], "100m");
    reg.create(pods, Some("default"), pod("b", json!({})), &opts)
        .await
        .expect("second pod fits");
    let e = reg
        .create(pods, Some("default"), pod("c", json!({})), &opts)
        .await
        .expect_err("third pod exceeds");
    assert_eq!(
        message(&e),
        "pods \"c\" is forbidden: exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2"
    );
}
