//! Strategy tests: defaulting, generation, status split, validation messages.

use super::*;
use serde_json::json;

fn web() -> Value {
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "web", "namespace": "default"},
        "spec": {"serviceName": "nginx", "replicas": 2, "selector": {"matchLabels": {"app": "nginx"}},
            "template": {"metadata": {"labels": {"app": "nginx"}}, "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "www"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "200Mi"}}}}]}})
}

#[test]
fn statefulset_defaults_match_upstream_and_are_idempotent() {
    let mut s = web();
    default("apps", "StatefulSet", &mut s);
    assert_eq!(s["spec"]["podManagementPolicy"], "OrderedReady");
    assert_eq!(
        s["spec"]["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
    );
    assert_eq!(s["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(
        s["spec"]["persistentVolumeClaimRetentionPolicy"],
        json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
    );
    let c = &s["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["ports"][0]["protocol"], "TCP");
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    assert_eq!(s["spec"]["template"]["spec"]["restartPolicy"], "Always");
    let again = {
        let mut t = s.clone();
        default("apps", "StatefulSet", &mut t);
        t
    };
    assert_eq!(again, s);
    assert!(
        validate("apps", "StatefulSet", &s).is_empty(),
        "{:?}",
        validate("apps", "StatefulSet", &s)
    );
}

#[test]
fn explicit_rolling_update_type_keeps_rolling_update_null_as_upstream() {
    let mut s = web();
    s["spec"]["updateStrategy"] = json!({"type": "RollingUpdate"});
    default("apps", "StatefulSet", &mut s);
    assert!(s["spec"]["updateStrategy"].get("rollingUpdate").is_none());
}

#[test]
fn bad_selector_and_negative_replicas_are_reported_together() {
    let mut s = web();
    s["spec"]["replicas"] = json!(-1);
    s["spec"]["template"]["metadata"]["labels"] = json!({"app": "other"});
    default("apps", "StatefulSet", &mut s);
    let errs = validate("apps", "StatefulSet", &s);
    let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
    assert!(fields.contains(&"spec.replicas"), "{fields:?}");
    assert!(fields.contains(&"spec.template.metadata.labels"), "{fields:?}");
    assert!(errs.iter().any(|e| {
        e.to_string()
            .contains("`selector` does not match template `labels`")
    }));
}

#[test]
fn changing_service_name_is_forbidden_with_upstreams_message() {
    let mut old = web();
    default("apps", "StatefulSet", &mut old);
    let mut new = old.clone();
    new["spec"]["serviceName"] = json!("other");
    let errs = validate_update("apps", "StatefulSet", &new, &old);
    assert_eq!(errs.len(), 1);
    assert_eq!(
        errs[0].to_string(),
        "spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"
    );
    let mut ok = old.clone();
    ok["spec"]["replicas"] = json!(5);
    ok["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.28");
    assert!(validate_update("apps", "StatefulSet", &ok, &old).is_empty());
}

#[test]
fn generation_moves_on_spec_changes_only_and_status_is_kept() {
    let mut old = web();
    prepare_for_create("apps", "StatefulSet", &mut old);
    assert_eq!(old["metadata"]["generation"], 1);
    old["status"] = json!({"replicas": 2});
    let mut meta_only = old.clone();
    meta_only["metadata"]["labels"] = json!({"a": "b"});
    meta_only["status"] = json!({"replicas": 99});
    prepare_for_update("apps", "StatefulSet", &mut meta_only, &old);
    assert_eq!(meta_only["metadata"]["generation"], 1);
    assert_eq!(
        meta_only["status"]["replicas"], 2,
        "main writes keep the stored status"
    );
    let mut spec_change = old.clone();
    spec_change["spec"]["replicas"] = json!(3);
    prepare_for_update("apps", "StatefulSet", &mut spec_change, &old);
    assert_eq!(spec_change["metadata"]["generation"], 2);
    let mut status_write = old.clone();
    status_write["spec"]["replicas"] = json!(7);
    status_write["status"] = json!({"replicas": 1});
    prepare_for_status_update("apps", "StatefulSet", &mut status_write, &old);
    assert_eq!(status_write["spec"]["replicas"], 2, "status writes ignore spec");
    assert_eq!(status_write["status"]["replicas"], 1);
}

#[test]
fn service_defaults_and_port_validation() {
    let mut svc = json!({"metadata": {"name": "greet"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "targetPort": 8080}], "selector": {"app": "greet"}}});
    default("", "Service", &mut svc);
    assert_eq!(svc["spec"]["ports"][0]["protocol"], "TCP");
    assert_eq!(svc["spec"]["sessionAffinity"], "None");
    assert_eq!(svc["spec"]["externalTrafficPolicy"], "Cluster");
    assert!(validate("", "Service", &svc).is_empty());
    let bad = json!({"metadata": {"name": "Bad_Name"}, "spec": {"ports": [{"port": 0}, {"port": 81}]}});
    let fields: Vec<String> = validate("", "Service", &bad)
        .into_iter()
        .map(|e| e.field)
        .collect();
    assert!(
        fields.contains(&"metadata.name".to_string())
            && fields.contains(&"spec.ports[0].port".to_string())
            && fields.contains(&"spec.ports[0].name".to_string()),
        "{fields:?}"
    );
}

#[test]
fn pod_needs_containers_with_names_and_images() {
    let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}, {"name": "c", "image": "x"}]}});
    let errs = validate("", "Pod", &pod);
    let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
    assert!(
        fields.contains(&"spec.containers[0].image") && fields.contains(&"spec.containers[1].name"),
        "{fields:?}"
    );
    let mut p =
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    default("", "Pod", &mut p);
    assert_eq!(p["spec"]["containers"][0]["imagePullPolicy"], "Always");
    prepare_for_create("", "Pod", &mut p);
    assert_eq!(p["status"], json!({"phase": "Pending", "qosClass": "BestEffort"}));
}

#[test]
fn namespaces_start_active_with_the_kubernetes_finalizer() {
    let mut ns = json!({"metadata": {"name": "demo"}});
    prepare_for_create("", "Namespace", &mut ns);
    assert_eq!(ns["status"]["phase"], "Active");
    assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
    assert!(
        !validate("", "Namespace", &json!({"metadata": {"name": "a.b"}})).is_empty(),
        "namespace names are labels"
    );
}

#[test]
fn quantities_are_checked() {
    for ok in ["200Mi", "1", "1.5Gi", "100m", "1e3"] {
        assert!(validate::quantity_ok(ok), "{ok}");
    }
    for bad in ["", "abc", "1Q", "-1Gi"] {
        assert!(!validate::quantity_ok(bad), "{bad}");
    }
}

#[test]
fn claim_template_storage_may_grow_only_with_the_opt_in_annotation() {
    let mut old = web();
    default("apps", "StatefulSet", &mut old);
    let mut grown = old.clone();
    grown["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] = json!("1Gi");
    let errs = validate_update("apps", "StatefulSet", &grown, &old);
    assert_eq!(errs.len(), 1, "upstream forbids it by default: {errs:?}");
    grown["metadata"]["annotations"] = json!({EXPAND_VOLUME_CLAIMS: "true"});
    assert!(validate_update("apps", "StatefulSet", &grown, &old).is_empty());
    let mut shrunk = grown.clone();
    shrunk["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] = json!("100Mi");
    let errs: Vec<String> = validate_update("apps", "StatefulSet", &shrunk, &old)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        errs,
        [
            "spec.volumeClaimTemplates[0].spec.resources.requests.storage: Forbidden: field can not be less than previous value"
        ]
    );
    let mut renamed = grown.clone();
    renamed["spec"]["volumeClaimTemplates"][0]["spec"]["accessModes"] = json!(["ReadWriteMany"]);
    assert_eq!(
        validate_update("apps", "StatefulSet", &renamed, &old).len(),
        1,
        "other template fields stay immutable"
    );
}

#[test]
fn statefulset_max_unavailable_is_validated_like_upstream() {
    let mut s = web();
    default("apps", "StatefulSet", &mut s);
    for (v, ok) in [
        (json!(1), true),
        (json!("25%"), true),
        (json!(0), false),
        (json!("0%"), false),
        (json!("150%"), false),
        (json!("x"), false),
        (json!(-1), false),
    ] {
        let mut t = s.clone();
        t["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] = v.clone();
        let errs = validate("apps", "StatefulSet", &t);
        assert_eq!(errs.is_empty(), ok, "{v}: {errs:?}");
        if !ok {
            assert!(
                errs.iter()
                    .all(|e| e.field == "spec.updateStrategy.rollingUpdate.maxUnavailable"),
                "{errs:?}"
            );
        }
    }
}

#[test]
fn claim_requests_may_grow_but_not_shrink() {
    let old = json!({"metadata": {"name": "www-web-0", "namespace": "default"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
    let mut grown = old.clone();
    grown["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
    assert!(validate_update("", "PersistentVolumeClaim", &grown, &old).is_empty());
    let mut bound = old.clone();
    bound["spec"]["volumeName"] = json!("pvc-1");
    assert!(
        validate_update("", "PersistentVolumeClaim", &bound, &old).is_empty(),
        "the binder sets volumeName once"
    );
    let mut rebound = bound.clone();
    rebound["spec"]["volumeName"] = json!("pvc-2");
    assert_eq!(
        validate_update("", "PersistentVolumeClaim", &rebound, &bound).len(),
        1,
        "and only once"
    );
    let mut shrunk = old.clone();
    shrunk["spec"]["resources"]["requests"]["storage"] = json!("512Mi");
    let errs = validate_update("", "PersistentVolumeClaim", &shrunk, &old);
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].field, "spec.resources.requests.storage");
}

#[test]
fn statefulset_status_writes_are_validated_as_upstream() {
    // Upstream ValidateStatefulSetStatus / ValidateStatefulSetStatusUpdate.
    let mut old = web();
    default("apps", "StatefulSet", &mut old);
    old["status"] = json!({"replicas": 2, "readyReplicas": 2, "availableReplicas": 2, "collisionCount": 1});
    let with = |status: Value| {
        let mut new = old.clone();
        new["status"] = status;
        validate_update("apps", "StatefulSet", &new, &old)
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
    };
    assert!(with(json!({"replicas": 2, "readyReplicas": 1, "collisionCount": 1})).is_empty());
    let errs = with(
        json!({"replicas": 1, "readyReplicas": 2, "availableReplicas": 2, "currentReplicas": 3,
                           "updatedReplicas": 2, "collisionCount": 1}),
    );
    for f in [
        "readyReplicas",
        "availableReplicas",
        "currentReplicas",
        "updatedReplicas",
    ] {
        assert!(
            errs.iter().any(|e| e.starts_with(&format!("status.{f}"))
                && e.ends_with("cannot be greater than status.replicas")),
            "{f}: {errs:?}"
        );
    }
    let errs = with(json!({"replicas": -1, "collisionCount": 0}));
    assert!(
        errs.iter()
            .any(|e| e.starts_with("status.replicas") && e.ends_with("must be greater than or equal to 0")),
        "{errs:?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.starts_with("status.collisionCount") && e.ends_with("cannot be decremented")),
        "{errs:?}"
    );
    let errs = with(json!({"replicas": 2, "readyReplicas": 1, "availableReplicas": 2, "collisionCount": 1}));
    assert!(
        errs.iter()
            .any(|e| e.ends_with("cannot be greater than status.readyReplicas")),
        "{errs:?}"
    );
}

#[test]
fn status_integers_upstream_always_serializes_are_zero_not_absent() {
    // A fresh DaemonSet answers currentNumberScheduled … numberReady as 0, as upstream's Go struct does.
    let mut ds = json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "d"}, "spec": {}});
    prepare_for_create("apps", "DaemonSet", &mut ds);
    for f in [
        "currentNumberScheduled",
        "numberMisscheduled",
        "desiredNumberScheduled",
        "numberReady",
    ] {
        assert_eq!(ds["status"][f], json!(0), "{f}");
    }
    // A status write that leaves one out keeps it at 0.
    let mut next = json!({"status": {"numberReady": 2}});
    prepare_for_status_update("apps", "DaemonSet", &mut next, &ds);
    assert_eq!(next["status"]["numberReady"], json!(2));
    assert_eq!(next["status"]["desiredNumberScheduled"], json!(0));
    let mut rs =
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "r"}, "spec": {}});
    prepare_for_create("apps", "ReplicaSet", &mut rs);
    assert_eq!(rs["status"]["replicas"], json!(0));
}

fn job(spec: Value) -> Value {
    json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "pi", "namespace": "default", "uid": "u-1"}, "spec": spec})
}

#[test]
fn job_defaults_and_generated_selector_as_upstream() {
    let mut j = job(json!({"template": {"spec": {"restartPolicy": "Never",
        "containers": [{"name": "c", "image": "busybox"}]}}}));
    prepare_for_create("batch", "Job", &mut j);
    default("batch", "Job", &mut j);
    assert_eq!(j["spec"]["completions"], 1);
    assert_eq!(j["spec"]["parallelism"], 1);
    assert_eq!(j["spec"]["backoffLimit"], 6);
    assert_eq!(j["spec"]["completionMode"], "NonIndexed");
    assert_eq!(j["spec"]["suspend"], false);
    assert_eq!(j["spec"]["podReplacementPolicy"], "TerminatingOrFailed");
    assert_eq!(
        j["spec"]["selector"],
        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u-1"}})
    );
    let labels = &j["spec"]["template"]["metadata"]["labels"];
    assert_eq!(labels["batch.kubernetes.io/job-name"], "pi");
    assert_eq!(labels["controller-uid"], "u-1");
    assert_eq!(labels["job-name"], "pi");
    assert_eq!(j["metadata"]["generation"], 1);
    assert!(
        validate("batch", "Job", &j).is_empty(),
        "{:?}",
        validate("batch", "Job", &j)
    );
    // parallelism alone leaves completions unset (a work queue).
    let mut q = job(json!({"parallelism": 3, "template": {}}));
    default("batch", "Job", &mut q);
    assert!(q["spec"].get("completions").is_none());
}

#[test]
fn job_validation_reports_restart_policy_indexed_and_immutable_fields() {
    let mut j = job(json!({"completionMode": "Indexed", "parallelism": -1,
        "template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}));
    j["spec"]["completions"] = Value::Null;
    prepare_for_create("batch", "Job", &mut j);
    default("batch", "Job", &mut j);
    let fields: Vec<String> = validate("batch", "Job", &j)
        .iter()
        .map(|e| format!("{} {}", e.field, e.detail))
        .collect();
    assert!(
        fields
            .iter()
            .any(|f| f.starts_with("spec.template.spec.restartPolicy")),
        "{fields:?}"
    );
    assert!(
        fields.iter().any(|f| f.starts_with("spec.parallelism")),
        "{fields:?}"
    );
    let mut ok = job(
        json!({"completions": 3, "template": {"spec": {"restartPolicy": "OnFailure",
        "containers": [{"name": "c", "image": "busybox"}]}}}),
    );
    prepare_for_create("batch", "Job", &mut ok);
    default("batch", "Job", &mut ok);
    let mut changed = ok.clone();
    changed["spec"]["completions"] = json!(4);
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx");
    changed["spec"]["parallelism"] = json!(2);
    let errs: Vec<String> = validate_update("batch", "Job", &changed, &ok)
        .iter()
        .map(|e| e.field.clone())
        .collect();
    assert_eq!(errs, ["spec.template", "spec.completions"]);
}

#[test]
fn cronjob_defaults_schedule_and_time_zone_validation() {
    let mut cj = json!({"apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "backup", "namespace": "default"},
        "spec": {"schedule": "*/1 * * * *", "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox"}]}}}}}});
    prepare_for_create("batch", "CronJob", &mut cj);
    default("batch", "CronJob", &mut cj);
    assert_eq!(cj["spec"]["concurrencyPolicy"], "Allow");
    assert_eq!(cj["spec"]["suspend"], false);
    assert_eq!(cj["spec"]["successfulJobsHistoryLimit"], 3);
    assert_eq!(cj["spec"]["failedJobsHistoryLimit"], 1);
    assert!(cj["spec"]["jobTemplate"]["spec"].get("backoffLimit").is_none());
    assert!(validate("batch", "CronJob", &cj).is_empty());
    cj["spec"]["schedule"] = json!("every minute");
    cj["spec"]["timeZone"] = json!("Nowhere/Special");
    cj["spec"]["jobTemplate"]["spec"]["selector"] = json!({"matchLabels": {"a": "b"}});
    let fields: Vec<String> = validate("batch", "CronJob", &cj)
        .iter()
        .map(|e| e.field.clone())
        .collect();
    assert_eq!(
        fields,
        ["spec.schedule", "spec.timeZone", "spec.jobTemplate.spec.selector"]
    );
}

#[test]
fn replication_controllers_default_selector_and_labels_from_the_template_and_validate_as_apps_kinds() {
    let mut rc = json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "rc"},
        "spec": {"template": {"metadata": {"labels": {"app": "legacy"}},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}});
    default("", "ReplicationController", &mut rc);
    assert_eq!(rc["spec"]["selector"], json!({"app": "legacy"}));
    assert_eq!(rc["metadata"]["labels"], json!({"app": "legacy"}));
    assert_eq!(rc["spec"]["replicas"], json!(1));
    assert!(validate("", "ReplicationController", &rc).is_empty());
    let mut bad = rc.clone();
    bad["spec"]["selector"] = json!({"app": "other"});
    let errs = validate("", "ReplicationController", &bad);
    assert!(
        errs.iter().any(|e| e.field == "spec.template.metadata.labels"),
        "{errs:?}"
    );
    let mut rc =
        json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "r"}, "spec": {}});
    prepare_for_create("", "ReplicationController", &mut rc);
    assert_eq!(rc["status"]["replicas"], json!(0));
}

#[test]
fn an_emptied_finalizer_list_is_dropped_on_update_as_upstreams_omitempty() {
    let old = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p",
        "finalizers": ["batch.kubernetes.io/job-tracking"]}, "spec": {"containers": []}});
    let mut new = old.clone();
    new["metadata"]["finalizers"] = json!([]);
    prepare_for_update("", "Pod", &mut new, &old);
    assert!(new["metadata"].get("finalizers").is_none(), "{new}");
}

#[test]
fn deployment_strategies_are_validated_as_upstream() {
    let d = |strategy: Value| {
        let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"selector": {"matchLabels": {"app": "d"}}, "strategy": strategy,
                "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        default("apps", "Deployment", &mut d);
        validate("apps", "Deployment", &d)
            .into_iter()
            .map(|e| e.field)
            .collect::<Vec<_>>()
    };
    assert!(d(json!({})).is_empty(), "defaults 25%/25% are valid");
    assert_eq!(
        d(json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}})),
        ["spec.strategy.rollingUpdate.maxUnavailable"]
    );
    assert_eq!(
        d(json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": "101%"}})),
        ["spec.strategy.rollingUpdate.maxUnavailable"]
    );
    assert_eq!(
        d(json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "x", "maxUnavailable": 1}})),
        ["spec.strategy.rollingUpdate.maxSurge"]
    );
    assert_eq!(
        d(json!({"type": "Recreate", "rollingUpdate": {"maxSurge": 1}})),
        ["spec.strategy.rollingUpdate"]
    );
    assert!(d(json!({"type": "Recreate"})).is_empty());
}
