//! Defaulting, as upstream's `SetDefaults_*` functions (`pkg/apis/core/v1/defaults.go`,
//! `pkg/apis/apps/v1/defaults.go`, `pkg/apis/storage/v1/defaults.go`). Idempotent.

use serde_json::{Map, Value, json};

fn obj(v: &mut Value) -> Option<&mut Map<String, Value>> {
    v.as_object_mut()
}

/// Set `key` to `value` in map `m` when absent or null.
fn set_default(m: &mut Map<String, Value>, key: &str, value: Value) {
    if m.get(key).is_none_or(Value::is_null) {
        m.insert(key.to_string(), value);
    }
}

/// The child map at `key`, created when absent.
fn child<'a>(m: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let entry = m.entry(key.to_string()).or_insert_with(|| json!({}));
    if !entry.is_object() {
        *entry = json!({});
    }
    entry.as_object_mut().expect("made an object above")
}

/// Apply the defaults of `(group, kind)` to `obj`.
pub fn default(group: &str, kind: &str, obj_value: &mut Value) {
    let Some(o) = obj(obj_value) else { return };
    match (group, kind) {
        ("", "Pod") => {
            if let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut) {
                pod_spec(spec);
            }
        }
        ("", "Service") => service(child(o, "spec")),
        ("", "PersistentVolumeClaim") => {
            let spec = child(o, "spec");
            set_default(spec, "volumeMode", json!("Filesystem"));
        }
        ("", "PersistentVolume") => {
            let spec = child(o, "spec");
            set_default(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
            set_default(spec, "volumeMode", json!("Filesystem"));
        }
        ("", "Secret") => set_default(o, "type", json!("Opaque")),
        ("scheduling.k8s.io", "PriorityClass") => {
            set_default(o, "preemptionPolicy", json!("PreemptLowerPriority"));
        }
        ("autoscaling", "HorizontalPodAutoscaler") => {
            // Upstream `autoscaling/v2` SetDefaults_HorizontalPodAutoscaler: one replica at least, and
            // 80% average CPU utilization when no metric is given.
            let spec = child(o, "spec");
            set_default(spec, "minReplicas", json!(1));
            if spec
                .get("metrics")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty)
            {
                spec.insert(
                    "metrics".into(),
                    json!([{"type": "Resource", "resource": {"name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": 80}}}]),
                );
            }
        }
        ("networking.k8s.io", "NetworkPolicy") => {
            // Upstream SetDefaults_NetworkPolicy: Ingress always, Egress when egress rules are given;
            // ports default to TCP.
            let spec = child(o, "spec");
            for dir in ["ingress", "egress"] {
                for rule in spec
                    .get_mut(dir)
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    for port in rule
                        .get_mut("ports")
                        .and_then(Value::as_array_mut)
                        .into_iter()
                        .flatten()
                    {
                        if let Some(p) = port.as_object_mut() {
                            set_default(p, "protocol", json!("TCP"));
                        }
                    }
                }
            }
            if spec
                .get("policyTypes")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty)
            {
                let egress = spec
                    .get("egress")
                    .and_then(Value::as_array)
                    .is_some_and(|e| !e.is_empty());
                let types = if egress {
                    json!(["Ingress", "Egress"])
                } else {
                    json!(["Ingress"])
                };
                spec.insert("policyTypes".into(), types);
            }
        }
        ("", "ServiceAccount") | ("", "ConfigMap") | ("", "Namespace") | ("", "Event") | ("", "Node") => {}
        ("storage.k8s.io", "StorageClass") => {
            set_default(o, "reclaimPolicy", json!("Delete"));
            set_default(o, "volumeBindingMode", json!("Immediate"));
        }
        ("apps", "StatefulSet") => stateful_set(child(o, "spec")),
        ("apps", "Deployment") => deployment(child(o, "spec")),
        ("apps", "ReplicaSet") => {
            let spec = child(o, "spec");
            set_default(spec, "replicas", json!(1));
            template(spec);
        }
        ("", "ReplicationController") => replication_controller(o),
        ("apps", "DaemonSet") => {
            let spec = child(o, "spec");
            let us = child(spec, "updateStrategy");
            set_default(us, "type", json!("RollingUpdate"));
            if us.get("type") == Some(&json!("RollingUpdate")) {
                let ru = child(us, "rollingUpdate");
                set_default(ru, "maxUnavailable", json!(1));
                set_default(ru, "maxSurge", json!(0));
            }
            set_default(spec, "revisionHistoryLimit", json!(10));
            template(spec);
        }
        ("batch", "Job") => job_spec(child(o, "spec")),
        ("batch", "CronJob") => {
            let spec = child(o, "spec");
            set_default(spec, "concurrencyPolicy", json!("Allow"));
            set_default(spec, "suspend", json!(false));
            set_default(spec, "successfulJobsHistoryLimit", json!(3));
            set_default(spec, "failedJobsHistoryLimit", json!(1));
            // The template's pod spec is defaulted; its JobSpec fields are defaulted when a Job is made
            // from it (upstream SetObjectDefaults_CronJob).
            let jt = child(spec, "jobTemplate");
            template(child(jt, "spec"));
        }
        _ => {}
    }
}

/// Upstream `SetDefaults_ReplicationController`: an empty selector and empty labels are the template's
/// labels; `replicas` 1.
fn replication_controller(o: &mut Map<String, Value>) {
    let template_labels = o
        .get("spec")
        .and_then(|s| s.pointer("/template/metadata/labels"))
        .filter(|l| l.as_object().is_some_and(|m| !m.is_empty()))
        .cloned();
    if let Some(labels) = template_labels {
        let spec = child(o, "spec");
        if spec
            .get("selector")
            .and_then(Value::as_object)
            .is_none_or(Map::is_empty)
        {
            spec.insert("selector".into(), labels.clone());
        }
        let meta = child(o, "metadata");
        if meta
            .get("labels")
            .and_then(Value::as_object)
            .is_none_or(Map::is_empty)
        {
            meta.insert("labels".into(), labels);
        }
    }
    let spec = child(o, "spec");
    set_default(spec, "replicas", json!(1));
    template(spec);
}

fn template(spec: &mut Map<String, Value>) {
    if let Some(t) = spec.get_mut("template").and_then(Value::as_object_mut) {
        // Go writes `creationTimestamp: null` inside templates (kubectl-compat.md §6.3).
        let meta = child(t, "metadata");
        meta.entry("creationTimestamp").or_insert(Value::Null);
        if let Some(ps) = t.get_mut("spec").and_then(Value::as_object_mut) {
            pod_spec(ps);
        }
    }
}

/// StatefulSet defaults, including upstream's gotcha: `rollingUpdate{partition:0}` is created only when
/// `updateStrategy.type` was empty (statefulset-spec.md §1.2).
fn stateful_set(spec: &mut Map<String, Value>) {
    set_default(spec, "replicas", json!(1));
    set_default(spec, "podManagementPolicy", json!("OrderedReady"));
    set_default(spec, "revisionHistoryLimit", json!(10));
    let us = child(spec, "updateStrategy");
    if us.get("type").and_then(Value::as_str).is_none_or(str::is_empty) {
        us.insert("type".into(), json!("RollingUpdate"));
        let ru = child(us, "rollingUpdate");
        set_default(ru, "partition", json!(0));
    } else if let Some(ru) = us.get_mut("rollingUpdate").and_then(Value::as_object_mut) {
        set_default(ru, "partition", json!(0));
    }
    let pol = child(spec, "persistentVolumeClaimRetentionPolicy");
    set_default(pol, "whenDeleted", json!("Retain"));
    set_default(pol, "whenScaled", json!("Retain"));
    // volumeClaimTemplates are kept as written. Upstream defaults each template as a PVC (status phase,
    // volumeMode), which makes every re-apply of a manifest with templates print "configured" because the
    // list is atomic for kubectl's three-way patch; the controller applies PVC defaults when it creates claims.
    template(spec);
}

/// Job defaults (upstream `pkg/apis/batch/v1/defaults.go` `SetDefaults_Job`).
fn job_spec(spec: &mut Map<String, Value>) {
    let unset = |spec: &Map<String, Value>, k: &str| spec.get(k).is_none_or(Value::is_null);
    if unset(spec, "completions") && unset(spec, "parallelism") {
        spec.insert("completions".into(), json!(1));
    }
    set_default(spec, "parallelism", json!(1));
    let per_index = !unset(spec, "backoffLimitPerIndex");
    set_default(
        spec,
        "backoffLimit",
        json!(if per_index { i64::from(i32::MAX) } else { 6 }),
    );
    set_default(spec, "completionMode", json!("NonIndexed"));
    set_default(spec, "suspend", json!(false));
    let has_policy = !unset(spec, "podFailurePolicy");
    if let Some(Value::Array(rules)) = spec.get_mut("podFailurePolicy").and_then(|p| p.get_mut("rules")) {
        for r in rules.iter_mut() {
            if let Some(Value::Array(conds)) = r.get_mut("onPodConditions") {
                for c in conds.iter_mut().filter_map(Value::as_object_mut) {
                    set_default(c, "status", json!("True"));
                }
            }
        }
    }
    set_default(
        spec,
        "podReplacementPolicy",
        json!(if has_policy {
            "Failed"
        } else {
            "TerminatingOrFailed"
        }),
    );
    template(spec);
}

fn deployment(spec: &mut Map<String, Value>) {
    set_default(spec, "replicas", json!(1));
    set_default(spec, "revisionHistoryLimit", json!(10));
    set_default(spec, "progressDeadlineSeconds", json!(600));
    let strategy = child(spec, "strategy");
    set_default(strategy, "type", json!("RollingUpdate"));
    if strategy.get("type") == Some(&json!("RollingUpdate")) {
        let ru = child(strategy, "rollingUpdate");
        set_default(ru, "maxUnavailable", json!("25%"));
        set_default(ru, "maxSurge", json!("25%"));
    }
    template(spec);
}

fn service(spec: &mut Map<String, Value>) {
    set_default(spec, "type", json!("ClusterIP"));
    set_default(spec, "sessionAffinity", json!("None"));
    let svc_type = spec.get("type").and_then(Value::as_str).unwrap_or("").to_string();
    if svc_type != "ExternalName" {
        set_default(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if svc_type == "NodePort" || svc_type == "LoadBalancer" {
        set_default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if spec.get("sessionAffinity") == Some(&json!("ClientIP")) {
        let cfg = child(spec, "sessionAffinityConfig");
        let cip = child(cfg, "clientIP");
        set_default(cip, "timeoutSeconds", json!(10800));
    }
    if let Some(Value::Array(ports)) = spec.get_mut("ports") {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            set_default(p, "protocol", json!("TCP"));
            if p.get("targetPort")
                .is_none_or(|t| t.is_null() || *t == json!(0) || *t == json!(""))
                && let Some(port) = p.get("port").cloned()
            {
                p.insert("targetPort".into(), port);
            }
        }
    }
}

/// PodSpec defaults (`SetDefaults_PodSpec`, `SetDefaults_Container`, probes, volumes).
pub(crate) fn pod_spec(spec: &mut Map<String, Value>) {
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "enableServiceLinks", json!(true));
    for list in ["initContainers", "containers"] {
        if let Some(Value::Array(cs)) = spec.get_mut(list) {
            for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                container(c);
            }
        }
    }
    if let Some(Value::Array(vols)) = spec.get_mut("volumes") {
        for v in vols.iter_mut().filter_map(Value::as_object_mut) {
            for (src, mode) in [
                ("configMap", 420),
                ("secret", 420),
                ("downwardAPI", 420),
                ("projected", 420),
            ] {
                if let Some(s) = v.get_mut(src).and_then(Value::as_object_mut) {
                    set_default(s, "defaultMode", json!(mode));
                }
            }
            if let Some(hp) = v.get_mut("hostPath").and_then(Value::as_object_mut) {
                set_default(hp, "type", json!(""));
            }
        }
    }
}

fn probe(p: &mut Map<String, Value>) {
    set_default(p, "timeoutSeconds", json!(1));
    set_default(p, "periodSeconds", json!(10));
    set_default(p, "successThreshold", json!(1));
    set_default(p, "failureThreshold", json!(3));
    if let Some(h) = p.get_mut("httpGet").and_then(Value::as_object_mut) {
        set_default(h, "path", json!("/"));
        set_default(h, "scheme", json!("HTTP"));
    }
}

fn container(c: &mut Map<String, Value>) {
    let image = c.get("image").and_then(Value::as_str).unwrap_or("").to_string();
    // `:latest` or no tag (and no digest) pulls Always, otherwise IfNotPresent (SetDefaults_Container).
    let last = image.rsplit('/').next().unwrap_or("");
    let tag = if image.contains('@') {
        Some("digest")
    } else {
        last.split_once(':').map(|(_, t)| t)
    };
    let policy = match tag {
        None | Some("latest") => "Always",
        Some(_) => "IfNotPresent",
    };
    set_default(c, "imagePullPolicy", json!(policy));
    set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(c, "terminationMessagePolicy", json!("File"));
    set_default(c, "resources", json!({}));
    if let Some(Value::Array(ports)) = c.get_mut("ports") {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            set_default(p, "protocol", json!("TCP"));
        }
    }
    if let Some(Value::Array(env)) = c.get_mut("env") {
        for e in env.iter_mut().filter_map(Value::as_object_mut) {
            if let Some(fr) = e
                .get_mut("valueFrom")
                .and_then(|v| v.get_mut("fieldRef"))
                .and_then(Value::as_object_mut)
            {
                set_default(fr, "apiVersion", json!("v1"));
            }
        }
    }
    for p in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(pm) = c.get_mut(p).and_then(Value::as_object_mut) {
            probe(pm);
        }
    }
}

/// The pod's QoS class from its containers' requests and limits (upstream `GetPodQOS`, simplified to
/// cpu/memory presence).
pub(crate) fn qos_class(pod: &Value) -> &'static str {
    let containers = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut any = false;
    let mut all_guaranteed = !containers.is_empty();
    for c in &containers {
        let req = c.pointer("/resources/requests").and_then(Value::as_object);
        let lim = c.pointer("/resources/limits").and_then(Value::as_object);
        if req.is_some_and(|m| !m.is_empty()) || lim.is_some_and(|m| !m.is_empty()) {
            any = true;
        }
        let guaranteed = ["cpu", "memory"].iter().all(|r| {
            let l = lim.and_then(|m| m.get(*r));
            let q = req.and_then(|m| m.get(*r)).or(l);
            l.is_some() && q == l
        });
        all_guaranteed &= guaranteed;
    }
    if all_guaranteed {
        "Guaranteed"
    } else if any {
        "Burstable"
    } else {
        "BestEffort"
    }
}
