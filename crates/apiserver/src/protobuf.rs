//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`), which kubectl's generator
//! commands send (`kubectl create namespace|configmap|secret|deployment|service|serviceaccount|job|cronjob`,
//! kubectl-compat.md §0 finding 7). The body is the `k8s\0` magic followed by a `runtime.Unknown` envelope
//! whose `raw` bytes are the typed object (k8s.io/api `generated.proto`); the `k8s-pb` crate has the
//! prost types, and this module turns the fields those commands send into the JSON wire form.

use crate::error::{ApiError, ApiResult};
use crate::request::Target;
use k8s_pb::api::{apps::v1 as apps, batch::v1 as batch, core::v1 as core};
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use prost::Message;
use serde_json::{Map, Value, json};

const MAGIC: &[u8] = b"k8s\0";

fn bad(what: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest(format!(
        "the body of the request was in an unknown format: {what}"
    ))
}

/// The `runtime.Unknown` envelope: (apiVersion, kind, raw bytes).
fn envelope(bytes: &[u8]) -> ApiResult<(String, String, Vec<u8>)> {
    let rest = bytes
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad("protobuf body without the k8s magic prefix"))?;
    let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown::decode(rest)
        .map_err(|e| bad(format!("protobuf envelope: {e}")))?;
    let tm = unknown.type_meta.unwrap_or_default();
    Ok((
        tm.api_version.unwrap_or_default(),
        tm.kind.unwrap_or_default(),
        unknown.raw.unwrap_or_default(),
    ))
}

fn put(m: &mut Map<String, Value>, k: &str, v: Option<Value>) {
    if let Some(v) = v {
        m.insert(k.to_string(), v);
    }
}

fn s(v: &Option<String>) -> Option<Value> {
    v.as_ref().filter(|s| !s.is_empty()).map(|s| json!(s))
}

fn string_map<'a>(m: impl IntoIterator<Item = (&'a String, &'a String)>) -> Option<Value> {
    let out: Map<String, Value> = m.into_iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    (!out.is_empty()).then_some(Value::Object(out))
}

fn object_meta(m: &Option<meta::ObjectMeta>) -> Value {
    let mut out = Map::new();
    if let Some(m) = m {
        put(&mut out, "name", s(&m.name));
        put(&mut out, "generateName", s(&m.generate_name));
        put(&mut out, "namespace", s(&m.namespace));
        put(&mut out, "labels", string_map(&m.labels));
        put(&mut out, "annotations", string_map(&m.annotations));
        if !m.finalizers.is_empty() {
            out.insert("finalizers".into(), json!(m.finalizers));
        }
        if !m.owner_references.is_empty() {
            let refs: Vec<Value> = m
                .owner_references
                .iter()
                .map(|r| {
                    let mut o = Map::new();
                    put(&mut o, "apiVersion", s(&r.api_version));
                    put(&mut o, "kind", s(&r.kind));
                    put(&mut o, "name", s(&r.name));
                    put(&mut o, "uid", s(&r.uid));
                    put(&mut o, "controller", r.controller.map(|b| json!(b)));
                    put(
                        &mut o,
                        "blockOwnerDeletion",
                        r.block_owner_deletion.map(|b| json!(b)),
                    );
                    Value::Object(o)
                })
                .collect();
            out.insert("ownerReferences".into(), Value::Array(refs));
        }
    }
    Value::Object(out)
}

fn label_selector(sel: &Option<meta::LabelSelector>) -> Option<Value> {
    let sel = sel.as_ref()?;
    let mut o = Map::new();
    put(&mut o, "matchLabels", string_map(&sel.match_labels));
    if !sel.match_expressions.is_empty() {
        let exprs: Vec<Value> = sel
            .match_expressions
            .iter()
            .map(|e| json!({"key": e.key.clone().unwrap_or_default(), "operator": e.operator.clone().unwrap_or_default(), "values": e.values}))
            .collect();
        o.insert("matchExpressions".into(), Value::Array(exprs));
    }
    Some(Value::Object(o))
}

fn int_or_string(v: &Option<k8s_pb::apimachinery::pkg::util::intstr::IntOrString>) -> Option<Value> {
    let v = v.as_ref()?;
    match v.r#type {
        Some(1) => v.str_val.as_ref().map(|s| json!(s)),
        _ => v.int_val.map(|i| json!(i)),
    }
}

fn quantities<'a>(
    m: impl IntoIterator<Item = (&'a String, &'a k8s_pb::apimachinery::pkg::api::resource::Quantity)>,
) -> Option<Value> {
    let out: Map<String, Value> = m
        .into_iter()
        .map(|(k, q)| (k.clone(), json!(q.string.clone().unwrap_or_default())))
        .collect();
    (!out.is_empty()).then_some(Value::Object(out))
}

fn container(c: &core::Container) -> Value {
    let mut o = Map::new();
    put(&mut o, "name", s(&c.name));
    put(&mut o, "image", s(&c.image));
    if !c.command.is_empty() {
        o.insert("command".into(), json!(c.command));
    }
    if !c.args.is_empty() {
        o.insert("args".into(), json!(c.args));
    }
    put(&mut o, "workingDir", s(&c.working_dir));
    if !c.ports.is_empty() {
        let ports: Vec<Value> = c
            .ports
            .iter()
            .map(|p| {
                let mut po = Map::new();
                put(&mut po, "name", s(&p.name));
                put(&mut po, "containerPort", p.container_port.map(|n| json!(n)));
                put(
                    &mut po,
                    "hostPort",
                    p.host_port.filter(|n| *n != 0).map(|n| json!(n)),
                );
                put(&mut po, "protocol", s(&p.protocol));
                Value::Object(po)
            })
            .collect();
        o.insert("ports".into(), Value::Array(ports));
    }
    if !c.env.is_empty() {
        let env: Vec<Value> = c
            .env
            .iter()
            .map(|e| {
                let mut eo = Map::new();
                put(&mut eo, "name", s(&e.name));
                // `value` is omitempty in Go's JSON: an empty one is left out.
                put(&mut eo, "value", s(&e.value));
                put(&mut eo, "valueFrom", e.value_from.as_ref().map(env_source));
                Value::Object(eo)
            })
            .collect();
        o.insert("env".into(), Value::Array(env));
    }
    if !c.env_from.is_empty() {
        let from: Vec<Value> = c
            .env_from
            .iter()
            .map(|f| {
                let mut fo = Map::new();
                put(&mut fo, "prefix", s(&f.prefix));
                if let Some(r) = &f.config_map_ref {
                    let mut ro = local_ref(&r.local_object_reference);
                    put(&mut ro, "optional", r.optional.map(|b| json!(b)));
                    fo.insert("configMapRef".into(), Value::Object(ro));
                }
                if let Some(r) = &f.secret_ref {
                    let mut ro = local_ref(&r.local_object_reference);
                    put(&mut ro, "optional", r.optional.map(|b| json!(b)));
                    fo.insert("secretRef".into(), Value::Object(ro));
                }
                Value::Object(fo)
            })
            .collect();
        o.insert("envFrom".into(), Value::Array(from));
    }
    let mut res = Map::new();
    if let Some(r) = &c.resources {
        put(&mut res, "limits", quantities(&r.limits));
        put(&mut res, "requests", quantities(&r.requests));
    }
    o.insert("resources".into(), Value::Object(res));
    if !c.volume_mounts.is_empty() {
        let vm: Vec<Value> = c
            .volume_mounts
            .iter()
            .map(|m| {
                let mut mo = Map::new();
                put(&mut mo, "name", s(&m.name));
                put(&mut mo, "mountPath", s(&m.mount_path));
                put(&mut mo, "subPath", s(&m.sub_path));
                put(&mut mo, "readOnly", m.read_only.filter(|b| *b).map(|b| json!(b)));
                Value::Object(mo)
            })
            .collect();
        o.insert("volumeMounts".into(), Value::Array(vm));
    }
    put(&mut o, "imagePullPolicy", s(&c.image_pull_policy));
    put(
        &mut o,
        "securityContext",
        c.security_context.as_ref().map(container_security),
    );
    for (k, p) in [
        ("livenessProbe", &c.liveness_probe),
        ("readinessProbe", &c.readiness_probe),
        ("startupProbe", &c.startup_probe),
    ] {
        put(&mut o, k, p.as_ref().map(probe));
    }
    Value::Object(o)
}

fn seccomp(p: &Option<core::SeccompProfile>) -> Option<Value> {
    let p = p.as_ref()?;
    let mut o = Map::new();
    put(&mut o, "type", s(&p.r#type));
    put(&mut o, "localhostProfile", s(&p.localhost_profile));
    Some(Value::Object(o))
}

/// A container's securityContext: users and groups, privilege, capabilities, read-only root, seccomp.
fn container_security(c: &core::SecurityContext) -> Value {
    let mut o = Map::new();
    put(&mut o, "runAsUser", c.run_as_user.map(|n| json!(n)));
    put(&mut o, "runAsGroup", c.run_as_group.map(|n| json!(n)));
    put(&mut o, "runAsNonRoot", c.run_as_non_root.map(|b| json!(b)));
    put(&mut o, "privileged", c.privileged.map(|b| json!(b)));
    put(
        &mut o,
        "readOnlyRootFilesystem",
        c.read_only_root_filesystem.map(|b| json!(b)),
    );
    put(
        &mut o,
        "allowPrivilegeEscalation",
        c.allow_privilege_escalation.map(|b| json!(b)),
    );
    put(&mut o, "procMount", s(&c.proc_mount));
    put(&mut o, "seccompProfile", seccomp(&c.seccomp_profile));
    if let Some(caps) = &c.capabilities {
        let mut co = Map::new();
        if !caps.add.is_empty() {
            co.insert("add".into(), json!(caps.add));
        }
        if !caps.drop.is_empty() {
            co.insert("drop".into(), json!(caps.drop));
        }
        o.insert("capabilities".into(), Value::Object(co));
    }
    Value::Object(o)
}

/// A probe with an exec, httpGet or tcpSocket handler and its timings.
fn probe(p: &core::Probe) -> Value {
    let mut o = Map::new();
    if let Some(h) = &p.handler {
        if let Some(e) = &h.exec {
            o.insert("exec".into(), json!({"command": e.command}));
        }
        if let Some(g) = &h.http_get {
            let mut go = Map::new();
            put(&mut go, "path", s(&g.path));
            put(&mut go, "port", int_or_string(&g.port));
            put(&mut go, "host", s(&g.host));
            put(&mut go, "scheme", s(&g.scheme));
            o.insert("httpGet".into(), Value::Object(go));
        }
        if let Some(t) = &h.tcp_socket {
            let mut to = Map::new();
            put(&mut to, "port", int_or_string(&t.port));
            put(&mut to, "host", s(&t.host));
            o.insert("tcpSocket".into(), Value::Object(to));
        }
    }
    for (k, v) in [
        ("initialDelaySeconds", p.initial_delay_seconds),
        ("timeoutSeconds", p.timeout_seconds),
        ("periodSeconds", p.period_seconds),
        ("successThreshold", p.success_threshold),
        ("failureThreshold", p.failure_threshold),
    ] {
        put(&mut o, k, v.map(|n| json!(n)));
    }
    Value::Object(o)
}

fn local_ref(r: &Option<core::LocalObjectReference>) -> Map<String, Value> {
    let mut o = Map::new();
    put(&mut o, "name", r.as_ref().and_then(|r| s(&r.name)));
    o
}

fn env_source(v: &core::EnvVarSource) -> Value {
    let mut o = Map::new();
    if let Some(f) = &v.field_ref {
        let mut fo = Map::new();
        put(&mut fo, "apiVersion", s(&f.api_version));
        put(&mut fo, "fieldPath", s(&f.field_path));
        o.insert("fieldRef".into(), Value::Object(fo));
    }
    if let Some(k) = &v.config_map_key_ref {
        let mut ko = local_ref(&k.local_object_reference);
        put(&mut ko, "key", s(&k.key));
        put(&mut ko, "optional", k.optional.map(|b| json!(b)));
        o.insert("configMapKeyRef".into(), Value::Object(ko));
    }
    if let Some(k) = &v.secret_key_ref {
        let mut ko = local_ref(&k.local_object_reference);
        put(&mut ko, "key", s(&k.key));
        put(&mut ko, "optional", k.optional.map(|b| json!(b)));
        o.insert("secretKeyRef".into(), Value::Object(ko));
    }
    Value::Object(o)
}

fn key_paths(items: &[core::KeyToPath]) -> Option<Value> {
    (!items.is_empty()).then(|| {
        json!(
            items
                .iter()
                .map(|k| {
                    let mut o = Map::new();
                    put(&mut o, "key", s(&k.key));
                    put(&mut o, "path", s(&k.path));
                    put(&mut o, "mode", k.mode.map(|m| json!(m)));
                    Value::Object(o)
                })
                .collect::<Vec<_>>()
        )
    })
}

/// A volume of the common sources (persistentVolumeClaim, emptyDir, hostPath, configMap, secret); other
/// sources are not converted.
fn volume(v: &core::Volume) -> Value {
    let mut o = Map::new();
    put(&mut o, "name", s(&v.name));
    let Some(src) = &v.volume_source else {
        return Value::Object(o);
    };
    if let Some(c) = &src.persistent_volume_claim {
        let mut co = Map::new();
        put(&mut co, "claimName", s(&c.claim_name));
        put(&mut co, "readOnly", c.read_only.filter(|b| *b).map(|b| json!(b)));
        o.insert("persistentVolumeClaim".into(), Value::Object(co));
    }
    if let Some(e) = &src.empty_dir {
        let mut eo = Map::new();
        put(&mut eo, "medium", s(&e.medium));
        put(
            &mut eo,
            "sizeLimit",
            e.size_limit
                .as_ref()
                .and_then(|q| q.string.clone())
                .map(|q| json!(q)),
        );
        o.insert("emptyDir".into(), Value::Object(eo));
    }
    if let Some(h) = &src.host_path {
        let mut ho = Map::new();
        put(&mut ho, "path", s(&h.path));
        put(&mut ho, "type", h.r#type.as_ref().map(|t| json!(t)));
        o.insert("hostPath".into(), Value::Object(ho));
    }
    if let Some(c) = &src.config_map {
        let mut co = local_ref(&c.local_object_reference);
        put(&mut co, "items", key_paths(&c.items));
        put(&mut co, "defaultMode", c.default_mode.map(|m| json!(m)));
        put(&mut co, "optional", c.optional.map(|b| json!(b)));
        o.insert("configMap".into(), Value::Object(co));
    }
    if let Some(c) = &src.secret {
        let mut co = Map::new();
        put(&mut co, "secretName", s(&c.secret_name));
        put(&mut co, "items", key_paths(&c.items));
        put(&mut co, "defaultMode", c.default_mode.map(|m| json!(m)));
        put(&mut co, "optional", c.optional.map(|b| json!(b)));
        o.insert("secret".into(), Value::Object(co));
    }
    Value::Object(o)
}

fn job_spec(sp: &batch::JobSpec) -> Value {
    let mut spec = Map::new();
    let int = |v: Option<i32>| v.map(|n| json!(n));
    put(&mut spec, "parallelism", int(sp.parallelism));
    put(&mut spec, "completions", int(sp.completions));
    put(
        &mut spec,
        "activeDeadlineSeconds",
        sp.active_deadline_seconds.map(|n| json!(n)),
    );
    put(&mut spec, "backoffLimit", int(sp.backoff_limit));
    put(&mut spec, "backoffLimitPerIndex", int(sp.backoff_limit_per_index));
    put(&mut spec, "maxFailedIndexes", int(sp.max_failed_indexes));
    put(&mut spec, "selector", label_selector(&sp.selector));
    put(&mut spec, "manualSelector", sp.manual_selector.map(|b| json!(b)));
    put(
        &mut spec,
        "ttlSecondsAfterFinished",
        int(sp.ttl_seconds_after_finished),
    );
    put(&mut spec, "completionMode", s(&sp.completion_mode));
    put(&mut spec, "suspend", sp.suspend.map(|b| json!(b)));
    put(&mut spec, "podReplacementPolicy", s(&sp.pod_replacement_policy));
    spec.insert("template".into(), pod_template(&sp.template));
    Value::Object(spec)
}

fn pod_spec(spec: &Option<core::PodSpec>) -> Value {
    let mut o = Map::new();
    if let Some(p) = spec {
        o.insert(
            "containers".into(),
            Value::Array(p.containers.iter().map(container).collect()),
        );
        if !p.init_containers.is_empty() {
            o.insert(
                "initContainers".into(),
                Value::Array(p.init_containers.iter().map(container).collect()),
            );
        }
        if !p.volumes.is_empty() {
            o.insert(
                "volumes".into(),
                Value::Array(p.volumes.iter().map(volume).collect()),
            );
        }
        put(&mut o, "restartPolicy", s(&p.restart_policy));
        if let Some(sc) = &p.security_context {
            let mut so = Map::new();
            put(&mut so, "runAsUser", sc.run_as_user.map(|n| json!(n)));
            put(&mut so, "runAsGroup", sc.run_as_group.map(|n| json!(n)));
            put(&mut so, "runAsNonRoot", sc.run_as_non_root.map(|b| json!(b)));
            put(&mut so, "fsGroup", sc.fs_group.map(|n| json!(n)));
            if !sc.supplemental_groups.is_empty() {
                so.insert("supplementalGroups".into(), json!(sc.supplemental_groups));
            }
            put(&mut so, "seccompProfile", seccomp(&sc.seccomp_profile));
            o.insert("securityContext".into(), Value::Object(so));
        }
        if !p.image_pull_secrets.is_empty() {
            let refs: Vec<Value> = p
                .image_pull_secrets
                .iter()
                .map(|r| json!({"name": r.name.clone().unwrap_or_default()}))
                .collect();
            o.insert("imagePullSecrets".into(), Value::Array(refs));
        }
        put(&mut o, "serviceAccountName", s(&p.service_account_name));
        put(&mut o, "nodeName", s(&p.node_name));
        put(&mut o, "hostname", s(&p.hostname));
        put(&mut o, "subdomain", s(&p.subdomain));
        put(&mut o, "nodeSelector", string_map(&p.node_selector));
        put(
            &mut o,
            "terminationGracePeriodSeconds",
            p.termination_grace_period_seconds.map(|n| json!(n)),
        );
        put(
            &mut o,
            "hostNetwork",
            p.host_network.filter(|b| *b).map(|b| json!(b)),
        );
    }
    Value::Object(o)
}

fn pod_template(t: &Option<core::PodTemplateSpec>) -> Value {
    match t {
        Some(t) => json!({"metadata": object_meta(&t.metadata), "spec": pod_spec(&t.spec)}),
        None => json!({}),
    }
}

fn b64(bytes: &[u8]) -> Value {
    use base64::Engine;
    json!(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// Decode a protobuf body for `target` into the JSON wire form.
///
/// # Errors
/// 400 BadRequest for bytes that are not a Kubernetes protobuf envelope or do not decode as the kind;
/// 415 UnsupportedMediaType for kinds whose protobuf form is not converted here.
pub fn decode(bytes: &[u8], target: &Target) -> ApiResult<Value> {
    let (api_version, kind, raw) = envelope(bytes)?;
    let r = target.resource;
    let kind = if kind.is_empty() { r.kind.to_string() } else { kind };
    let api_version = if api_version.is_empty() {
        r.api_version()
    } else {
        api_version
    };
    let dec = |e: prost::DecodeError| bad(format!("{kind}: {e}"));
    let mut out = match kind.as_str() {
        "Namespace" => {
            let ns = core::Namespace::decode(raw.as_slice()).map_err(dec)?;
            json!({"metadata": object_meta(&ns.metadata)})
        }
        "ConfigMap" => {
            let cm = core::ConfigMap::decode(raw.as_slice()).map_err(dec)?;
            let mut o = json!({"metadata": object_meta(&cm.metadata)});
            put(o.as_object_mut().expect("object"), "data", string_map(&cm.data));
            if !cm.binary_data.is_empty() {
                o["binaryData"] =
                    Value::Object(cm.binary_data.iter().map(|(k, v)| (k.clone(), b64(v))).collect());
            }
            if let Some(i) = cm.immutable {
                o["immutable"] = json!(i);
            }
            o
        }
        "Secret" => {
            let sec = core::Secret::decode(raw.as_slice()).map_err(dec)?;
            let mut o = json!({"metadata": object_meta(&sec.metadata)});
            if !sec.data.is_empty() {
                o["data"] = Value::Object(sec.data.iter().map(|(k, v)| (k.clone(), b64(v))).collect());
            }
            put(
                o.as_object_mut().expect("object"),
                "stringData",
                string_map(&sec.string_data),
            );
            put(o.as_object_mut().expect("object"), "type", s(&sec.r#type));
            o
        }
        "ServiceAccount" => {
            let sa = core::ServiceAccount::decode(raw.as_slice()).map_err(dec)?;
            json!({"metadata": object_meta(&sa.metadata)})
        }
        "Pod" => {
            let pod = core::Pod::decode(raw.as_slice()).map_err(dec)?;
            json!({"metadata": object_meta(&pod.metadata), "spec": pod_spec(&pod.spec)})
        }
        "Service" => {
            let svc = core::Service::decode(raw.as_slice()).map_err(dec)?;
            let mut spec = Map::new();
            if let Some(sp) = &svc.spec {
                let ports: Vec<Value> = sp
                    .ports
                    .iter()
                    .map(|p| {
                        let mut po = Map::new();
                        put(&mut po, "name", s(&p.name));
                        put(&mut po, "protocol", s(&p.protocol));
                        put(&mut po, "port", p.port.map(|n| json!(n)));
                        put(&mut po, "targetPort", int_or_string(&p.target_port));
                        put(
                            &mut po,
                            "nodePort",
                            p.node_port.filter(|n| *n != 0).map(|n| json!(n)),
                        );
                        Value::Object(po)
                    })
                    .collect();
                spec.insert("ports".into(), Value::Array(ports));
                put(&mut spec, "selector", string_map(&sp.selector));
                put(&mut spec, "type", s(&sp.r#type));
                put(&mut spec, "clusterIP", s(&sp.cluster_ip));
                put(&mut spec, "externalName", s(&sp.external_name));
            }
            json!({"metadata": object_meta(&svc.metadata), "spec": spec})
        }
        "Deployment" => {
            let d = apps::Deployment::decode(raw.as_slice()).map_err(dec)?;
            let mut spec = Map::new();
            if let Some(sp) = &d.spec {
                put(&mut spec, "replicas", sp.replicas.map(|n| json!(n)));
                put(&mut spec, "selector", label_selector(&sp.selector));
                spec.insert("template".into(), pod_template(&sp.template));
                let mut strategy = Map::new();
                if let Some(st) = &sp.strategy {
                    put(&mut strategy, "type", s(&st.r#type));
                }
                spec.insert("strategy".into(), Value::Object(strategy));
            }
            json!({"metadata": object_meta(&d.metadata), "spec": spec})
        }
        "StatefulSet" => {
            let d = apps::StatefulSet::decode(raw.as_slice()).map_err(dec)?;
            let mut spec = Map::new();
            if let Some(sp) = &d.spec {
                put(&mut spec, "replicas", sp.replicas.map(|n| json!(n)));
                put(&mut spec, "selector", label_selector(&sp.selector));
                put(&mut spec, "serviceName", s(&sp.service_name));
                spec.insert("template".into(), pod_template(&sp.template));
            }
            json!({"metadata": object_meta(&d.metadata), "spec": spec})
        }
        "Job" => {
            let j = batch::Job::decode(raw.as_slice()).map_err(dec)?;
            let spec = j.spec.as_ref().map_or_else(|| json!({}), job_spec);
            json!({"metadata": object_meta(&j.metadata), "spec": spec})
        }
        "CronJob" => {
            let c = batch::CronJob::decode(raw.as_slice()).map_err(dec)?;
            let mut spec = Map::new();
            if let Some(sp) = &c.spec {
                put(&mut spec, "schedule", s(&sp.schedule));
                put(&mut spec, "timeZone", sp.time_zone.as_ref().map(|t| json!(t)));
                put(
                    &mut spec,
                    "startingDeadlineSeconds",
                    sp.starting_deadline_seconds.map(|n| json!(n)),
                );
                put(&mut spec, "concurrencyPolicy", s(&sp.concurrency_policy));
                put(&mut spec, "suspend", sp.suspend.map(|b| json!(b)));
                put(
                    &mut spec,
                    "successfulJobsHistoryLimit",
                    sp.successful_jobs_history_limit.map(|n| json!(n)),
                );
                put(
                    &mut spec,
                    "failedJobsHistoryLimit",
                    sp.failed_jobs_history_limit.map(|n| json!(n)),
                );
                if let Some(t) = &sp.job_template {
                    let tspec = t.spec.as_ref().map_or_else(|| json!({}), job_spec);
                    spec.insert(
                        "jobTemplate".into(),
                        json!({"metadata": object_meta(&t.metadata), "spec": tspec}),
                    );
                }
            }
            json!({"metadata": object_meta(&c.metadata), "spec": spec})
        }
        "Eviction" => {
            let e = k8s_pb::api::policy::v1::Eviction::decode(raw.as_slice()).map_err(dec)?;
            let mut o = json!({"metadata": object_meta(&e.metadata)});
            if let Some(d) = &e.delete_options {
                o["deleteOptions"] = delete_options_json(d);
            }
            o
        }
        other => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "protobuf bodies for kind {other} are not supported; send application/json"
            )));
        }
    };
    out["apiVersion"] = json!(api_version);
    out["kind"] = json!(kind);
    Ok(out)
}

/// Decode a protobuf `DeleteOptions` body into its JSON form.
///
/// # Errors
/// 400 BadRequest when the bytes are not a DeleteOptions envelope.
pub fn decode_delete_options(bytes: &[u8]) -> ApiResult<Value> {
    let (_, _, raw) = envelope(bytes)?;
    let d = meta::DeleteOptions::decode(raw.as_slice()).map_err(|e| bad(format!("DeleteOptions: {e}")))?;
    Ok(delete_options_json(&d))
}

fn delete_options_json(d: &meta::DeleteOptions) -> Value {
    let mut o = Map::new();
    put(
        &mut o,
        "gracePeriodSeconds",
        d.grace_period_seconds.map(|n| json!(n)),
    );
    put(&mut o, "propagationPolicy", s(&d.propagation_policy));
    put(&mut o, "orphanDependents", d.orphan_dependents.map(|b| json!(b)));
    if let Some(p) = &d.preconditions {
        let mut po = Map::new();
        put(&mut po, "uid", s(&p.uid));
        put(&mut po, "resourceVersion", s(&p.resource_version));
        o.insert("preconditions".into(), Value::Object(po));
    }
    if !d.dry_run.is_empty() {
        o.insert("dryRun".into(), json!(d.dry_run));
    }
    Value::Object(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrap(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown {
            type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta {
                api_version: Some(api_version.into()),
                kind: Some(kind.into()),
            }),
            raw: Some(raw),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        let mut out = MAGIC.to_vec();
        out.extend(unknown.encode_to_vec());
        out
    }

    fn target(path: &str) -> Target {
        crate::request::parse_path(path).expect("path")
    }

    #[test]
    fn configmap_from_kubectl_create_decodes() {
        let cm = core::ConfigMap {
            metadata: Some(meta::ObjectMeta {
                name: Some("c".into()),
                namespace: Some("demo".into()),
                ..Default::default()
            }),
            data: [("a".to_string(), "b".to_string())].into_iter().collect(),
            ..Default::default()
        };
        let v = decode(
            &wrap("v1", "ConfigMap", cm.encode_to_vec()),
            &target("/api/v1/namespaces/demo/configmaps"),
        )
        .expect("decodes");
        assert_eq!(
            v,
            json!({"metadata": {"name": "c", "namespace": "demo"}, "data": {"a": "b"}, "apiVersion": "v1", "kind": "ConfigMap"})
        );
    }

    #[test]
    fn deployment_keeps_its_pod_template() {
        let labels: std::collections::BTreeMap<String, String> =
            [("app".to_string(), "d".to_string())].into_iter().collect();
        let d = apps::Deployment {
            metadata: Some(meta::ObjectMeta {
                name: Some("d".into()),
                labels: labels.clone().into_iter().collect(),
                ..Default::default()
            }),
            spec: Some(apps::DeploymentSpec {
                replicas: Some(1),
                selector: Some(meta::LabelSelector {
                    match_labels: labels.clone().into_iter().collect(),
                    ..Default::default()
                }),
                template: Some(core::PodTemplateSpec {
                    metadata: Some(meta::ObjectMeta {
                        labels: labels.into_iter().collect(),
                        ..Default::default()
                    }),
                    spec: Some(core::PodSpec {
                        containers: vec![core::Container {
                            name: Some("x".into()),
                            image: Some("x".into()),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = decode(
            &wrap("apps/v1", "Deployment", d.encode_to_vec()),
            &target("/apis/apps/v1/namespaces/default/deployments"),
        )
        .expect("decodes");
        assert_eq!(v["spec"]["template"]["spec"]["containers"][0]["image"], "x");
        assert_eq!(v["spec"]["selector"]["matchLabels"]["app"], "d");
    }

    #[test]
    fn garbage_is_a_bad_request_not_a_panic() {
        let t = target("/api/v1/namespaces");
        assert!(matches!(decode(b"nope", &t), Err(ApiError::BadRequest(_))));
        assert!(matches!(
            decode(b"k8s\0\xff\xff\xff", &t),
            Err(ApiError::BadRequest(_))
        ));
        assert!(decode(&wrap("v1", "Namespace", vec![0xff, 0x01]), &t).is_err());
    }

    #[test]
    fn job_from_a_cronjob_keeps_env_sources_volumes_and_security() {
        let container = core::Container {
            name: Some("dump".into()),
            image: Some("busybox".into()),
            env: vec![core::EnvVar {
                name: Some("JOB".into()),
                value: Some(String::new()),
                value_from: Some(core::EnvVarSource {
                    field_ref: Some(core::ObjectFieldSelector {
                        api_version: Some("v1".into()),
                        field_path: Some("metadata.name".into()),
                    }),
                    ..Default::default()
                }),
            }],
            security_context: Some(core::SecurityContext {
                run_as_non_root: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        let job = batch::Job {
            metadata: Some(meta::ObjectMeta {
                name: Some("dump-now".into()),
                ..Default::default()
            }),
            spec: Some(batch::JobSpec {
                backoff_limit: Some(2),
                template: Some(core::PodTemplateSpec {
                    metadata: None,
                    spec: Some(core::PodSpec {
                        containers: vec![container],
                        restart_policy: Some("Never".into()),
                        security_context: Some(core::PodSecurityContext {
                            run_as_user: Some(0),
                            ..Default::default()
                        }),
                        volumes: vec![core::Volume {
                            name: Some("backups".into()),
                            volume_source: Some(core::VolumeSource {
                                persistent_volume_claim: Some(core::PersistentVolumeClaimVolumeSource {
                                    claim_name: Some("b".into()),
                                    read_only: None,
                                }),
                                ..Default::default()
                            }),
                        }],
                        ..Default::default()
                    }),
                }),
                ..Default::default()
            }),
            status: None,
        };
        let v = decode(
            &wrap("batch/v1", "Job", job.encode_to_vec()),
            &target("/apis/batch/v1/namespaces/default/jobs"),
        )
        .expect("decodes");
        let spec = &v["spec"]["template"]["spec"];
        assert_eq!(v["spec"]["backoffLimit"], 2);
        assert_eq!(
            spec["containers"][0]["env"][0],
            json!({"name": "JOB", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}})
        );
        assert_eq!(spec["containers"][0]["securityContext"]["runAsNonRoot"], true);
        assert_eq!(spec["securityContext"]["runAsUser"], 0);
        assert_eq!(
            spec["volumes"][0],
            json!({"name": "backups", "persistentVolumeClaim": {"claimName": "b"}})
        );
    }
}
