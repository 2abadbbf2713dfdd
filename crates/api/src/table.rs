//! Server-side Table printing (upstream `pkg/printers/internalversion/printers.go`, 1.32): the columns and
//! cells `kubectl get` prints verbatim, and apimachinery's `duration.HumanDuration` for AGE.

use serde_json::{Value, json};

/// One column definition of a `meta.k8s.io/v1 Table`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Column {
    /// Header (`NAME` is printed upper-case by kubectl).
    pub name: &'static str,
    /// `string`, `integer`, `date`.
    #[serde(rename = "type")]
    pub type_: &'static str,
    /// `name` for the name column.
    pub format: &'static str,
    /// Description.
    pub description: &'static str,
    /// 0 = default, 1 = only with `-o wide`.
    pub priority: i32,
}

const fn col(name: &'static str, type_: &'static str, priority: i32) -> Column {
    Column {
        name,
        type_,
        format: if matches!(name.as_bytes(), b"Name") {
            "name"
        } else {
            ""
        },
        description: "",
        priority,
    }
}

/// kubectl's human duration: `45s`, `2m30s` (< 10m), `25m`, `5h10m` (< 8h), `30h`, `3d4h` (< 8d), `45d`,
/// `2y10d`; negative beyond a small skew is `<invalid>`.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    let s = seconds.max(0);
    if s < 60 * 2 {
        return format!("{s}s");
    }
    let m = s / 60;
    if m < 10 {
        let rem = s % 60;
        return if rem == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{rem}s")
        };
    }
    if m < 60 * 3 {
        return format!("{m}m");
    }
    let h = s / 3600;
    if h < 8 {
        let rem = m % 60;
        return if rem == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{rem}m")
        };
    }
    if h < 48 {
        return format!("{h}h");
    }
    if h < 24 * 8 {
        let d = h / 24;
        let rem = h % 24;
        return if rem == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{rem}h")
        };
    }
    if h < 24 * 365 * 2 {
        return format!("{}d", h / 24);
    }
    if h < 24 * 365 * 8 {
        let y = h / 24 / 365;
        let d = h / 24 - y * 365;
        return if d == 0 {
            format!("{y}y")
        } else {
            format!("{y}y{d}d")
        };
    }
    format!("{}y", h / 24 / 365)
}

fn age(obj: &Value, now: jiff::Timestamp) -> String {
    match obj
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
    {
        Some(t) => human_duration(now.as_second() - t.as_second()),
        None => "<unknown>".into(),
    }
}

fn since(ts: Option<&str>, now: jiff::Timestamp) -> Option<String> {
    ts.and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map(|t| human_duration(now.as_second() - t.as_second()))
}

fn st<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

fn int(v: &Value, p: &str) -> i64 {
    v.pointer(p).and_then(Value::as_i64).unwrap_or(0)
}

fn none_if_empty(s: String) -> String {
    if s.is_empty() { "<none>".into() } else { s }
}

fn selector_string(sel: Option<&Value>) -> String {
    sel.and_then(|s| crate::selector::LabelSelector::from_json(s).ok())
        .map(|s| s.to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "<none>".into())
}

fn containers_images(spec: Option<&Value>) -> (String, String) {
    let cs = spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = cs
        .iter()
        .filter_map(|c| c.get("name").and_then(Value::as_str))
        .collect();
    let images: Vec<&str> = cs
        .iter()
        .filter_map(|c| c.get("image").and_then(Value::as_str))
        .collect();
    (names.join(","), images.join(","))
}

/// The columns of `(group, kind)`; unknown kinds get upstream's default `Name`, `Created At`… reduced to
/// Name and Age.
pub fn columns(group: &str, kind: &str) -> Vec<Column> {
    let n = col("Name", "string", 0);
    let age = col("Age", "string", 0);
    match (group, kind) {
        ("", "Pod") => vec![
            n,
            col("Ready", "string", 0),
            col("Status", "string", 0),
            col("Restarts", "string", 0),
            age,
            col("IP", "string", 1),
            col("Node", "string", 1),
            col("Nominated Node", "string", 1),
            col("Readiness Gates", "string", 1),
        ],
        ("apps", "StatefulSet") => vec![
            n,
            col("Ready", "string", 0),
            age,
            col("Containers", "string", 1),
            col("Images", "string", 1),
        ],
        ("apps", "Deployment") => vec![
            n,
            col("Ready", "string", 0),
            col("Up-to-date", "integer", 0),
            col("Available", "integer", 0),
            age,
            col("Containers", "string", 1),
            col("Images", "string", 1),
            col("Selector", "string", 1),
        ],
        ("apps", "ReplicaSet") | ("", "ReplicationController") => vec![
            n,
            col("Desired", "integer", 0),
            col("Current", "integer", 0),
            col("Ready", "integer", 0),
            age,
            col("Containers", "string", 1),
            col("Images", "string", 1),
            col("Selector", "string", 1),
        ],
        ("apps", "DaemonSet") => vec![
            n,
            col("Desired", "integer", 0),
            col("Current", "integer", 0),
            col("Ready", "integer", 0),
            col("Up-to-date", "integer", 0),
            col("Available", "integer", 0),
            col("Node Selector", "string", 0),
            age,
            col("Containers", "string", 1),
            col("Images", "string", 1),
            col("Selector", "string", 1),
        ],
        ("batch", "Job") => vec![
            n,
            col("Status", "string", 0),
            col("Completions", "string", 0),
            col("Duration", "string", 0),
            age,
            col("Containers", "string", 1),
            col("Images", "string", 1),
            col("Selector", "string", 1),
        ],
        ("batch", "CronJob") => vec![
            n,
            col("Schedule", "string", 0),
            col("Timezone", "string", 0),
            col("Suspend", "boolean", 0),
            col("Active", "integer", 0),
            col("Last Schedule", "string", 0),
            age,
            col("Containers", "string", 1),
            col("Images", "string", 1),
            col("Selector", "string", 1),
        ],
        ("apps", "ControllerRevision") => vec![
            n,
            col("Controller", "string", 0),
            col("Revision", "integer", 0),
            age,
        ],
        ("", "Service") => vec![
            n,
            col("Type", "string", 0),
            col("Cluster-IP", "string", 0),
            col("External-IP", "string", 0),
            col("Port(s)", "string", 0),
            age,
            col("Selector", "string", 1),
        ],
        ("", "Endpoints") => vec![n, col("Endpoints", "string", 0), age],
        ("", "PersistentVolumeClaim") => vec![
            n,
            col("Status", "string", 0),
            col("Volume", "string", 0),
            col("Capacity", "string", 0),
            col("Access Modes", "string", 0),
            col("StorageClass", "string", 0),
            col("VolumeAttributesClass", "string", 0),
            age,
            col("VolumeMode", "string", 1),
        ],
        ("", "PersistentVolume") => vec![
            n,
            col("Capacity", "string", 0),
            col("Access Modes", "string", 0),
            col("Reclaim Policy", "string", 0),
            col("Status", "string", 0),
            col("Claim", "string", 0),
            col("StorageClass", "string", 0),
            col("VolumeAttributesClass", "string", 0),
            col("Reason", "string", 0),
            age,
            col("VolumeMode", "string", 1),
        ],
        ("", "ConfigMap") => vec![n, col("Data", "string", 0), age],
        ("", "Secret") => vec![n, col("Type", "string", 0), col("Data", "string", 0), age],
        ("", "Namespace") => vec![n, col("Status", "string", 0), age],
        ("", "Node") => vec![
            n,
            col("Status", "string", 0),
            col("Roles", "string", 0),
            age,
            col("Version", "string", 0),
            col("Internal-IP", "string", 1),
            col("External-IP", "string", 1),
            col("OS-Image", "string", 1),
            col("Kernel-Version", "string", 1),
            col("Container-Runtime", "string", 1),
        ],
        ("", "ServiceAccount") => vec![n, col("Secrets", "string", 0), age],
        ("", "Event") => vec![
            col("Last Seen", "string", 0),
            col("Type", "string", 0),
            col("Reason", "string", 0),
            col("Object", "string", 0),
            col("Message", "string", 0),
            col("Subobject", "string", 1),
            col("Source", "string", 1),
            col("First Seen", "string", 1),
            col("Count", "string", 1),
            col("Name", "string", 1),
        ],
        ("events.k8s.io", "Event") => vec![
            col("Last Seen", "string", 0),
            col("Type", "string", 0),
            col("Reason", "string", 0),
            col("Object", "string", 0),
            col("Message", "string", 0),
        ],
        ("storage.k8s.io", "StorageClass") => vec![
            n,
            col("Provisioner", "string", 0),
            col("ReclaimPolicy", "string", 0),
            col("VolumeBindingMode", "string", 0),
            col("AllowVolumeExpansion", "string", 0),
            age,
        ],
        ("discovery.k8s.io", "EndpointSlice") => vec![
            n,
            col("AddressType", "string", 0),
            col("Ports", "string", 0),
            col("Endpoints", "string", 0),
            age,
        ],
        ("coordination.k8s.io", "Lease") => vec![n, col("Holder", "string", 0), age],
        ("policy", "PodDisruptionBudget") => vec![
            n,
            col("Min Available", "string", 0),
            col("Max Unavailable", "string", 0),
            col("Allowed Disruptions", "integer", 0),
            age,
        ],
        ("networking.k8s.io", "NetworkPolicy") => vec![n, col("Pod-Selector", "string", 0), age],
        ("networking.k8s.io", "Ingress") => vec![
            n,
            col("Class", "string", 0),
            col("Hosts", "string", 0),
            col("Address", "string", 0),
            col("Ports", "string", 0),
            age,
        ],
        ("networking.k8s.io", "IngressClass") => vec![
            n,
            col("Controller", "string", 0),
            col("Parameters", "string", 0),
            age,
        ],
        ("scheduling.k8s.io", "PriorityClass") => vec![
            n,
            col("Value", "integer", 0),
            col("Global-Default", "boolean", 0),
            age,
            col("PreemptionPolicy", "string", 0),
        ],
        ("", "ResourceQuota") => vec![n, age, col("Request", "string", 0), col("Limit", "string", 0)],
        ("", "LimitRange") => vec![n, col("Created At", "date", 0)],
        ("autoscaling", "HorizontalPodAutoscaler") => vec![
            n,
            col("Reference", "string", 0),
            col("Targets", "string", 0),
            col("MinPods", "string", 0),
            col("MaxPods", "integer", 0),
            col("Replicas", "integer", 0),
            age,
        ],
        ("apiregistration.k8s.io", "APIService") => {
            vec![n, col("Service", "string", 0), col("Available", "string", 0), age]
        }
        _ => vec![n, age],
    }
}

/// Pod STATUS as upstream's `printPod`: the phase, or a container's waiting/terminated reason,
/// `Init:x/y`, `Completed`, `Terminating`.
fn pod_status(pod: &Value) -> String {
    let mut reason = st(pod, "/status/reason").to_string();
    if reason.is_empty() {
        reason = st(pod, "/status/phase").to_string();
    }
    let init_total = pod
        .pointer("/spec/initContainers")
        .and_then(Value::as_array)
        .map(Vec::len)
        .unwrap_or(0);
    let mut initializing = false;
    for (i, c) in pod
        .pointer("/status/initContainerStatuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let term = c.pointer("/state/terminated");
        if term.is_some_and(|t| t.get("exitCode").and_then(Value::as_i64) == Some(0)) {
            continue;
        }
        initializing = true;
        reason = if let Some(t) = term {
            let r = t.get("reason").and_then(Value::as_str).unwrap_or("");
            if r.is_empty() {
                format!(
                    "Init:ExitCode:{}",
                    t.get("exitCode").and_then(Value::as_i64).unwrap_or(0)
                )
            } else {
                format!("Init:{r}")
            }
        } else if let Some(r) = c
            .pointer("/state/waiting/reason")
            .and_then(Value::as_str)
            .filter(|r| !r.is_empty() && *r != "PodInitializing")
        {
            format!("Init:{r}")
        } else {
            format!("Init:{i}/{init_total}")
        };
        break;
    }
    if !initializing {
        let mut has_running = false;
        for c in pod
            .pointer("/status/containerStatuses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .rev()
        {
            if let Some(r) = c
                .pointer("/state/waiting/reason")
                .and_then(Value::as_str)
                .filter(|r| !r.is_empty())
            {
                reason = r.to_string();
            } else if let Some(t) = c.pointer("/state/terminated") {
                reason = match t.get("reason").and_then(Value::as_str).filter(|r| !r.is_empty()) {
                    Some(r) => r.to_string(),
                    None => match t.get("signal").and_then(Value::as_i64).filter(|s| *s != 0) {
                        Some(sig) => format!("Signal:{sig}"),
                        None => format!(
                            "ExitCode:{}",
                            t.get("exitCode").and_then(Value::as_i64).unwrap_or(0)
                        ),
                    },
                };
            } else if c.get("ready").and_then(Value::as_bool) == Some(true)
                && c.pointer("/state/running").is_some()
            {
                has_running = true;
            }
        }
        if reason == "Completed" && has_running {
            reason = if pod
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
            {
                "Running".into()
            } else {
                "NotReady".into()
            };
        }
    }
    if pod
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
    {
        reason = if st(pod, "/status/reason") == "NodeLost" {
            "Unknown".into()
        } else {
            "Terminating".into()
        };
    }
    reason
}

fn pod_restarts(pod: &Value, now: jiff::Timestamp) -> String {
    let mut restarts = 0;
    let mut last: Option<jiff::Timestamp> = None;
    for c in pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        restarts += c.get("restartCount").and_then(Value::as_i64).unwrap_or(0);
        if let Some(t) = c
            .pointer("/lastState/terminated/finishedAt")
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            && last.is_none_or(|l| t > l)
        {
            last = Some(t);
        }
    }
    match last {
        Some(t) if restarts > 0 => format!(
            "{restarts} ({} ago)",
            human_duration(now.as_second() - t.as_second())
        ),
        _ => restarts.to_string(),
    }
}

fn service_ports(svc: &Value) -> String {
    let ports: Vec<String> = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| {
            let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
            match p.get("nodePort").and_then(Value::as_i64).filter(|n| *n != 0) {
                Some(np) => format!("{}:{np}/{proto}", int(p, "/port")),
                None => format!("{}/{proto}", int(p, "/port")),
            }
        })
        .collect();
    if ports.is_empty() {
        "<none>".into()
    } else {
        ports.join(",")
    }
}

fn service_external_ip(svc: &Value) -> String {
    let ext: Vec<&str> = svc
        .pointer("/spec/externalIPs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    match st(svc, "/spec/type") {
        "LoadBalancer" => {
            let mut ips: Vec<String> = svc
                .pointer("/status/loadBalancer/ingress")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|i| {
                    i.get("ip")
                        .or_else(|| i.get("hostname"))
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .collect();
            ips.extend(ext.iter().map(|s| s.to_string()));
            if ips.is_empty() {
                "<pending>".into()
            } else {
                ips.join(",")
            }
        }
        "ExternalName" => st(svc, "/spec/externalName").to_string(),
        _ => {
            if ext.is_empty() {
                "<none>".into()
            } else {
                ext.join(",")
            }
        }
    }
}

/// A Job's STATUS cell (upstream `printJob`): the first of Complete, Failed, Terminating, Suspended,
/// FailureTarget that holds, else Running.
fn job_status(obj: &Value) -> &'static str {
    let has = |t: &str| {
        obj.pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == t && c["status"] == "True"))
    };
    if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if obj
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
    {
        "Terminating"
    } else if has("Suspended") {
        "Suspended"
    } else if has("FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    }
}

/// A Job's COMPLETIONS cell: `succeeded/completions`, or `succeeded/1 [of parallelism]` without
/// completions (upstream `printJob`).
fn job_completions(obj: &Value) -> String {
    let succeeded = int(obj, "/status/succeeded");
    match obj.pointer("/spec/completions").and_then(Value::as_i64) {
        Some(c) => format!("{succeeded}/{c}"),
        None => {
            let p = int(obj, "/spec/parallelism");
            if p > 1 {
                format!("{succeeded}/1 of {p}")
            } else {
                format!("{succeeded}/1")
            }
        }
    }
}

/// A Job's DURATION cell: empty before it starts, then the time since start, then start to completion.
fn job_duration(obj: &Value, now: jiff::Timestamp) -> String {
    let t = |p: &str| {
        obj.pointer(p)
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
    };
    match (t("/status/startTime"), t("/status/completionTime")) {
        (None, _) => String::new(),
        (Some(s), None) => human_duration(now.as_second() - s.as_second()),
        (Some(s), Some(c)) => human_duration(c.as_second() - s.as_second()),
    }
}

/// The cells of one row of `(group, kind)`; `now` is passed in.
pub fn row_cells(group: &str, kind: &str, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let name = json!(st(obj, "/metadata/name"));
    let a = json!(age(obj, now));
    match (group, kind) {
        ("", "Pod") => {
            let total = obj
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map(Vec::len)
                .unwrap_or(0);
            let ready = obj
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .map(|cs| cs.iter().filter(|c| c["ready"] == true).count())
                .unwrap_or(0);
            let gates = obj
                .pointer("/spec/readinessGates")
                .and_then(Value::as_array)
                .map(Vec::len)
                .unwrap_or(0);
            let gates = if gates == 0 {
                "<none>".to_string()
            } else {
                format!("0/{gates}")
            };
            vec![
                name,
                json!(format!("{ready}/{total}")),
                json!(pod_status(obj)),
                json!(pod_restarts(obj, now)),
                a,
                json!(none_if_empty(st(obj, "/status/podIP").into())),
                json!(none_if_empty(st(obj, "/spec/nodeName").into())),
                json!(none_if_empty(st(obj, "/status/nominatedNodeName").into())),
                json!(gates),
            ]
        }
        ("apps", "StatefulSet") => {
            let (c, i) = containers_images(obj.pointer("/spec/template/spec"));
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    int(obj, "/status/readyReplicas"),
                    int(obj, "/spec/replicas")
                )),
                a,
                json!(c),
                json!(i),
            ]
        }
        ("apps", "Deployment") => {
            let (c, i) = containers_images(obj.pointer("/spec/template/spec"));
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    int(obj, "/status/readyReplicas"),
                    int(obj, "/spec/replicas")
                )),
                json!(int(obj, "/status/updatedReplicas")),
                json!(int(obj, "/status/availableReplicas")),
                a,
                json!(c),
                json!(i),
                json!(selector_string(obj.pointer("/spec/selector"))),
            ]
        }
        ("", "ReplicationController") => {
            let (c, i) = containers_images(obj.pointer("/spec/template/spec"));
            let sel = obj.pointer("/spec/selector").map(|m| json!({"matchLabels": m}));
            vec![
                name,
                json!(int(obj, "/spec/replicas")),
                json!(int(obj, "/status/replicas")),
                json!(int(obj, "/status/readyReplicas")),
                a,
                json!(c),
                json!(i),
                json!(selector_string(sel.as_ref())),
            ]
        }
        ("apps", "ReplicaSet") => {
            let (c, i) = containers_images(obj.pointer("/spec/template/spec"));
            vec![
                name,
                json!(int(obj, "/spec/replicas")),
                json!(int(obj, "/status/replicas")),
                json!(int(obj, "/status/readyReplicas")),
                a,
                json!(c),
                json!(i),
                json!(selector_string(obj.pointer("/spec/selector"))),
            ]
        }
        ("apps", "DaemonSet") => {
            let (c, i) = containers_images(obj.pointer("/spec/template/spec"));
            let ns: Vec<String> = obj
                .pointer("/spec/template/spec/nodeSelector")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                        .collect()
                })
                .unwrap_or_default();
            vec![
                name,
                json!(int(obj, "/status/desiredNumberScheduled")),
                json!(int(obj, "/status/currentNumberScheduled")),
                json!(int(obj, "/status/numberReady")),
                json!(int(obj, "/status/updatedNumberScheduled")),
                json!(int(obj, "/status/numberAvailable")),
                json!(none_if_empty(ns.join(","))),
                a,
                json!(c),
                json!(i),
                json!(selector_string(obj.pointer("/spec/selector"))),
            ]
        }
        ("batch", "Job") => {
            let (c, i) = containers_images(obj.pointer("/spec/template/spec"));
            vec![
                name,
                json!(job_status(obj)),
                json!(job_completions(obj)),
                json!(job_duration(obj, now)),
                a,
                json!(c),
                json!(i),
                json!(selector_string(obj.pointer("/spec/selector"))),
            ]
        }
        ("batch", "CronJob") => {
            let (c, i) = containers_images(obj.pointer("/spec/jobTemplate/spec/template/spec"));
            let active = obj
                .pointer("/status/active")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            vec![
                name,
                json!(st(obj, "/spec/schedule")),
                json!(none_if_empty(st(obj, "/spec/timeZone").into())),
                json!(
                    obj.pointer("/spec/suspend")
                        .and_then(Value::as_bool)
                        .unwrap_or(false)
                ),
                json!(active),
                json!(
                    since(
                        obj.pointer("/status/lastScheduleTime").and_then(Value::as_str),
                        now
                    )
                    .unwrap_or_else(|| "<none>".into())
                ),
                a,
                json!(c),
                json!(i),
                json!(selector_string(obj.pointer("/spec/jobTemplate/spec/selector"))),
            ]
        }
        ("apps", "ControllerRevision") => {
            let owner = obj
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .and_then(|o| o.iter().find(|r| r["controller"] == true))
                .map(|r| {
                    let api_version = r["apiVersion"].as_str().unwrap_or("");
                    let group = api_version.split_once('/').map(|(g, _)| g).unwrap_or("");
                    let kind = r["kind"].as_str().unwrap_or("").to_lowercase();
                    let kind = if group.is_empty() {
                        kind
                    } else {
                        format!("{kind}.{group}")
                    };
                    format!("{kind}/{}", r["name"].as_str().unwrap_or(""))
                });
            vec![
                name,
                json!(owner.unwrap_or_else(|| "<none>".into())),
                json!(int(obj, "/revision")),
                a,
            ]
        }
        ("", "Service") => {
            let cip = match st(obj, "/spec/clusterIP") {
                "" => "<none>".to_string(),
                ip => ip.to_string(),
            };
            let sel = obj
                .pointer("/spec/selector")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            vec![
                name,
                json!(st(obj, "/spec/type")),
                json!(cip),
                json!(service_external_ip(obj)),
                json!(service_ports(obj)),
                a,
                json!(none_if_empty(sel)),
            ]
        }
        ("", "Endpoints") => {
            let mut eps = Vec::new();
            for s in obj.get("subsets").and_then(Value::as_array).into_iter().flatten() {
                let ports: Vec<i64> = s
                    .get("ports")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p.get("port").and_then(Value::as_i64))
                    .collect();
                for addr in s.get("addresses").and_then(Value::as_array).into_iter().flatten() {
                    let ip = addr.get("ip").and_then(Value::as_str).unwrap_or("");
                    if ports.is_empty() {
                        eps.push(ip.to_string());
                    }
                    for p in &ports {
                        eps.push(format!("{ip}:{p}"));
                    }
                }
            }
            let shown = if eps.len() > 3 {
                format!("{} + {} more...", eps[..3].join(","), eps.len() - 3)
            } else {
                eps.join(",")
            };
            vec![name, json!(none_if_empty(shown)), a]
        }
        ("", "PersistentVolumeClaim") => {
            let modes = access_modes(
                obj.pointer("/status/accessModes")
                    .or(obj.pointer("/spec/accessModes")),
            );
            let bound = st(obj, "/status/phase") == "Bound";
            let cap = if bound {
                st(obj, "/status/capacity/storage").to_string()
            } else {
                String::new()
            };
            let modes = if bound { modes } else { String::new() };
            let status = if obj
                .pointer("/metadata/deletionTimestamp")
                .is_some_and(|v| !v.is_null())
            {
                "Terminating".to_string()
            } else {
                st(obj, "/status/phase").to_string()
            };
            vec![
                name,
                json!(status),
                json!(st(obj, "/spec/volumeName")),
                json!(cap),
                json!(modes),
                json!(none_if_empty(st(obj, "/spec/storageClassName").into())),
                json!(none_if_empty(st(obj, "/spec/volumeAttributesClassName").into())),
                a,
                json!(st(obj, "/spec/volumeMode")),
            ]
        }
        ("", "PersistentVolume") => {
            let claim = match (
                st(obj, "/spec/claimRef/namespace"),
                st(obj, "/spec/claimRef/name"),
            ) {
                ("", "") => String::new(),
                (ns, n) => format!("{ns}/{n}"),
            };
            vec![
                name,
                json!(st(obj, "/spec/capacity/storage")),
                json!(access_modes(obj.pointer("/spec/accessModes"))),
                json!(st(obj, "/spec/persistentVolumeReclaimPolicy")),
                json!(st(obj, "/status/phase")),
                json!(claim),
                json!(st(obj, "/spec/storageClassName")),
                json!(none_if_empty(st(obj, "/spec/volumeAttributesClassName").into())),
                json!(st(obj, "/status/reason")),
                a,
                json!(st(obj, "/spec/volumeMode")),
            ]
        }
        ("", "ConfigMap") => {
            let n = obj
                .get("data")
                .and_then(Value::as_object)
                .map(|m| m.len())
                .unwrap_or(0)
                + obj
                    .get("binaryData")
                    .and_then(Value::as_object)
                    .map(|m| m.len())
                    .unwrap_or(0);
            vec![name, json!(n), a]
        }
        ("", "Secret") => {
            let n = obj
                .get("data")
                .and_then(Value::as_object)
                .map(|m| m.len())
                .unwrap_or(0);
            vec![name, json!(st(obj, "/type")), json!(n), a]
        }
        ("", "Namespace") => vec![name, json!(st(obj, "/status/phase")), a],
        ("", "Node") => {
            let ready = obj
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                .map(|c| c["status"] == "True");
            let mut status = match ready {
                Some(true) => "Ready".to_string(),
                _ => "NotReady".to_string(),
            };
            if obj.pointer("/spec/unschedulable") == Some(&json!(true)) {
                status.push_str(",SchedulingDisabled");
            }
            let roles: Vec<String> = obj
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .map(|m| {
                    m.keys()
                        .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/").map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let addr = |t: &str| {
                obj.pointer("/status/addresses")
                    .and_then(Value::as_array)
                    .and_then(|a| a.iter().find(|x| x["type"] == t))
                    .and_then(|x| x["address"].as_str())
                    .unwrap_or("<none>")
                    .to_string()
            };
            vec![
                name,
                json!(status),
                json!(none_if_empty(roles.join(","))),
                a,
                json!(st(obj, "/status/nodeInfo/kubeletVersion")),
                json!(addr("InternalIP")),
                json!(addr("ExternalIP")),
                json!(st(obj, "/status/nodeInfo/osImage")),
                json!(st(obj, "/status/nodeInfo/kernelVersion")),
                json!(st(obj, "/status/nodeInfo/containerRuntimeVersion")),
            ]
        }
        ("", "ServiceAccount") => vec![
            name,
            json!(
                obj.get("secrets")
                    .and_then(Value::as_array)
                    .map(Vec::len)
                    .unwrap_or(0)
            ),
            a,
        ],
        ("", "Event") => {
            let last = since(
                obj.get("lastTimestamp")
                    .and_then(Value::as_str)
                    .or(obj.get("eventTime").and_then(Value::as_str)),
                now,
            )
            .unwrap_or_else(|| "<unknown>".into());
            let first = since(
                obj.get("firstTimestamp")
                    .and_then(Value::as_str)
                    .or(obj.get("eventTime").and_then(Value::as_str)),
                now,
            )
            .unwrap_or_else(|| "<unknown>".into());
            let object = format!(
                "{}/{}",
                st(obj, "/involvedObject/kind").to_lowercase(),
                st(obj, "/involvedObject/name")
            );
            let source = match st(obj, "/source/component") {
                "" => st(obj, "/reportingComponent").to_string(),
                c => c.to_string(),
            };
            vec![
                json!(last),
                json!(st(obj, "/type")),
                json!(st(obj, "/reason")),
                json!(object),
                json!(st(obj, "/message").trim()),
                json!(st(obj, "/involvedObject/fieldPath")),
                json!(source),
                json!(first),
                json!(int(obj, "/count").max(1).to_string()),
                name,
            ]
        }
        ("events.k8s.io", "Event") => {
            let last = since(
                obj.get("eventTime")
                    .and_then(Value::as_str)
                    .or(obj.get("deprecatedLastTimestamp").and_then(Value::as_str)),
                now,
            )
            .unwrap_or_else(|| "<unknown>".into());
            let object = format!(
                "{}/{}",
                st(obj, "/regarding/kind").to_lowercase(),
                st(obj, "/regarding/name")
            );
            vec![
                json!(last),
                json!(st(obj, "/type")),
                json!(st(obj, "/reason")),
                json!(object),
                json!(st(obj, "/note")),
            ]
        }
        ("storage.k8s.io", "StorageClass") => {
            let default = obj
                .pointer("/metadata/annotations/storageclass.kubernetes.io~1is-default-class")
                .and_then(Value::as_str)
                == Some("true");
            let n = if default {
                format!("{} (default)", st(obj, "/metadata/name"))
            } else {
                st(obj, "/metadata/name").to_string()
            };
            let expand = obj
                .get("allowVolumeExpansion")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            vec![
                json!(n),
                json!(st(obj, "/provisioner")),
                json!(st(obj, "/reclaimPolicy")),
                json!(st(obj, "/volumeBindingMode")),
                json!(expand.to_string()),
                a,
            ]
        }
        ("discovery.k8s.io", "EndpointSlice") => {
            let ports: Vec<String> = obj
                .get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|p| p.get("port").and_then(Value::as_i64))
                .map(|p| p.to_string())
                .collect();
            let addrs: Vec<String> = obj
                .get("endpoints")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .flat_map(|e| {
                    e.get("addresses")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default()
                })
                .filter_map(|a| a.as_str().map(str::to_string))
                .collect();
            let shown = if addrs.len() > 3 {
                format!("{} + {} more...", addrs[..3].join(","), addrs.len() - 3)
            } else {
                addrs.join(",")
            };
            vec![
                name,
                json!(st(obj, "/addressType")),
                json!(if ports.is_empty() {
                    "<unset>".to_string()
                } else {
                    ports.join(",")
                }),
                json!(if shown.is_empty() {
                    "<unset>".to_string()
                } else {
                    shown
                }),
                a,
            ]
        }
        ("coordination.k8s.io", "Lease") => vec![name, json!(st(obj, "/spec/holderIdentity")), a],
        ("policy", "PodDisruptionBudget") => {
            let ios = |p: &str| match obj.pointer(p) {
                Some(Value::Number(n)) => n.to_string(),
                Some(Value::String(s)) => s.clone(),
                _ => "N/A".to_string(),
            };
            vec![
                name,
                json!(ios("/spec/minAvailable")),
                json!(ios("/spec/maxUnavailable")),
                json!(int(obj, "/status/disruptionsAllowed")),
                a,
            ]
        }
        ("networking.k8s.io", "NetworkPolicy") => {
            vec![name, json!(selector_string(obj.pointer("/spec/podSelector"))), a]
        }
        ("networking.k8s.io", "Ingress") => {
            let class = match st(obj, "/spec/ingressClassName") {
                "" => "<none>",
                c => c,
            };
            let hosts: Vec<&str> = obj
                .pointer("/spec/rules")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|r| r.get("host").and_then(Value::as_str))
                .filter(|h| !h.is_empty())
                .collect();
            let hosts = match hosts.len() {
                0 => "*".to_string(),
                1..=3 => hosts.join(","),
                n => format!("{} + {} more...", hosts[..3].join(","), n - 3),
            };
            let addrs: Vec<&str> = obj
                .pointer("/status/loadBalancer/ingress")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|i| {
                    i.get("ip")
                        .and_then(Value::as_str)
                        .or_else(|| i.get("hostname").and_then(Value::as_str))
                })
                .collect();
            let tls = obj
                .pointer("/spec/tls")
                .and_then(Value::as_array)
                .is_some_and(|t| !t.is_empty());
            vec![
                name,
                json!(class),
                json!(hosts),
                json!(addrs.join(",")),
                json!(if tls { "80, 443" } else { "80" }),
                a,
            ]
        }
        ("networking.k8s.io", "IngressClass") => {
            let params = match obj.pointer("/spec/parameters") {
                Some(p) if p.is_object() => {
                    let kind = match st(p, "/apiGroup") {
                        "" => st(p, "/kind").to_string(),
                        g => format!("{}.{g}", st(p, "/kind")),
                    };
                    format!("{kind}/{}", st(p, "/name"))
                }
                _ => "<none>".to_string(),
            };
            vec![name, json!(st(obj, "/spec/controller")), json!(params), a]
        }
        ("scheduling.k8s.io", "PriorityClass") => vec![
            name,
            json!(int(obj, "/value")),
            json!(obj.get("globalDefault").and_then(Value::as_bool).unwrap_or(false)),
            a,
            json!(match st(obj, "/preemptionPolicy") {
                "" => "PreemptLowerPriority",
                p => p,
            }),
        ],
        ("", "ResourceQuota") => {
            let (mut requests, mut limits) = (Vec::new(), Vec::new());
            if let Some(hard) = obj.pointer("/spec/hard").and_then(Value::as_object) {
                let mut keys: Vec<&String> = hard.keys().collect();
                keys.sort();
                for k in keys {
                    let quantity = |v: Option<&Value>| match v {
                        Some(Value::String(s)) => s.clone(),
                        Some(Value::Number(n)) => n.to_string(),
                        _ => "0".to_string(),
                    };
                    let used = quantity(obj.pointer("/status/used").and_then(|u| u.get(k.as_str())));
                    let cell = format!("{k}: {used}/{}", quantity(hard.get(k.as_str())));
                    if k.starts_with("limits") {
                        limits.push(cell);
                    } else {
                        requests.push(cell);
                    }
                }
            }
            vec![name, a, json!(requests.join(", ")), json!(limits.join(", "))]
        }
        ("", "LimitRange") => vec![name, json!(st(obj, "/metadata/creationTimestamp"))],
        ("autoscaling", "HorizontalPodAutoscaler") => {
            let reference = format!(
                "{}/{}",
                st(obj, "/spec/scaleTargetRef/kind"),
                st(obj, "/spec/scaleTargetRef/name")
            );
            let min = obj
                .pointer("/spec/minReplicas")
                .and_then(Value::as_i64)
                .map_or_else(|| "<unset>".to_string(), |m| m.to_string());
            vec![
                name,
                json!(reference),
                json!(hpa_targets(obj)),
                json!(min),
                json!(int(obj, "/spec/maxReplicas")),
                json!(int(obj, "/status/currentReplicas")),
                a,
            ]
        }
        ("apiregistration.k8s.io", "APIService") => {
            let service = match obj.pointer("/spec/service") {
                Some(svc) if svc.is_object() => {
                    format!("{}/{}", st(svc, "/namespace"), st(svc, "/name"))
                }
                _ => "Local".to_string(),
            };
            let available = obj
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Available"))
                .map_or_else(
                    || "Unknown".to_string(),
                    |c| match (st(c, "/status"), st(c, "/reason")) {
                        ("True", _) | (_, "") => st(c, "/status").to_string(),
                        (s, r) => format!("{s} ({r})"),
                    },
                );
            vec![name, json!(service), json!(available), a]
        }
        _ => vec![name, a],
    }
}

fn access_modes(modes: Option<&Value>) -> String {
    let mut out: Vec<&str> = Vec::new();
    for m in modes
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let short = match m {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            other => other,
        };
        if !out.contains(&short) {
            out.push(short);
        }
    }
    out.join(",")
}

/// The HPA `TARGETS` cell (upstream `formatHPAMetrics`): `cpu: 40%/80%`, `<unknown>` for a current value
/// not known yet, `<none>` without metrics, at most 2 listed then `+ N more...`.
fn hpa_targets(obj: &Value) -> String {
    let specs = obj
        .pointer("/spec/metrics")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if specs.is_empty() {
        return "<none>".into();
    }
    let statuses = obj
        .pointer("/status/currentMetrics")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut list = Vec::new();
    for (i, m) in specs.iter().enumerate() {
        let kind = st(m, "/type");
        let key = match kind {
            "Resource" => "resource",
            "ContainerResource" => "containerResource",
            "Pods" => "pods",
            "Object" => "object",
            "External" => "external",
            _ => "",
        };
        let target = m
            .pointer(&format!("/{key}/target"))
            .cloned()
            .unwrap_or(Value::Null);
        let current = statuses
            .get(i)
            .and_then(|s| s.pointer(&format!("/{key}/current")))
            .cloned()
            .unwrap_or(Value::Null);
        let (cur, tgt) = if let Some(u) = target.get("averageUtilization").and_then(Value::as_i64) {
            let c = current
                .get("averageUtilization")
                .and_then(Value::as_i64)
                .map_or_else(|| "<unknown>".to_string(), |c| format!("{c}%"));
            (c, format!("{u}%"))
        } else {
            let field = ["averageValue", "value"]
                .into_iter()
                .find(|f| target.get(*f).is_some())
                .unwrap_or("value");
            let c = current
                .get(field)
                .and_then(Value::as_str)
                .map_or_else(|| "<unknown>".to_string(), str::to_string);
            let t = target
                .get(field)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            (
                c,
                if field == "averageValue" {
                    format!("{t} (avg)")
                } else {
                    t
                },
            )
        };
        let cell = match kind {
            "Resource" | "ContainerResource" => {
                format!("{}: {cur}/{tgt}", st(m, &format!("/{key}/name")))
            }
            _ => format!("{cur}/{tgt}"),
        };
        list.push(cell);
    }
    if list.len() > 2 {
        let more = list.len() - 2;
        format!("{} + {more} more...", list[..2].join(", "))
    } else {
        list.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> jiff::Timestamp {
        "2026-01-01T12:00:00Z".parse().expect("ts")
    }

    #[test]
    fn human_duration_matches_kubectl() {
        for (s, want) in [
            (45, "45s"),
            (119, "119s"),
            (150, "2m30s"),
            (600, "10m"),
            (1500, "25m"),
            (5 * 3600 + 600, "5h10m"),
            (30 * 3600, "30h"),
            (76 * 3600, "3d4h"),
            (45 * 86400, "45d"),
            (740 * 86400, "2y10d"),
            (-5, "<invalid>"),
        ] {
            assert_eq!(human_duration(s), want, "{s}");
        }
    }

    #[test]
    fn pod_row_shows_ready_status_restarts_and_wide_columns() {
        let pod = json!({"metadata": {"name": "web-0", "creationTimestamp": "2026-01-01T11:59:00Z"},
            "spec": {"containers": [{"name": "nginx"}], "nodeName": "n1"},
            "status": {"phase": "Running", "podIP": "10.42.0.5", "containerStatuses": [{"name": "nginx", "ready": true, "restartCount": 2, "state": {"running": {}},
                "lastState": {"terminated": {"finishedAt": "2026-01-01T11:55:00Z"}}}]}});
        let cells = row_cells("", "Pod", &pod, now());
        assert_eq!(
            cells[..5],
            [
                json!("web-0"),
                json!("1/1"),
                json!("Running"),
                json!("2 (5m ago)"),
                json!("60s")
            ]
        );
        assert_eq!(cells[5], "10.42.0.5");
        assert_eq!(columns("", "Pod").len(), cells.len());
    }

    #[test]
    fn pod_status_prefers_waiting_reasons_and_terminating() {
        let crash = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}, "status": {"phase": "Running", "containerStatuses": [{"ready": false, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        assert_eq!(pod_status(&crash), "CrashLoopBackOff");
        let mut term = crash.clone();
        term["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        assert_eq!(pod_status(&term), "Terminating");
        let init = json!({"spec": {"initContainers": [{"name": "a"}, {"name": "b"}]}, "status": {"phase": "Pending", "initContainerStatuses": [{"state": {"terminated": {"exitCode": 0}}}, {"state": {"running": {}}}]}});
        assert_eq!(pod_status(&init), "Init:1/2");
    }

    #[test]
    fn service_rows_print_headless_and_node_ports() {
        let headless = json!({"metadata": {"name": "nginx"}, "spec": {"type": "ClusterIP", "clusterIP": "None", "ports": [{"port": 80, "protocol": "TCP"}]}});
        let c = row_cells("", "Service", &headless, now());
        assert_eq!(
            (c[1].clone(), c[2].clone(), c[3].clone(), c[4].clone()),
            (
                json!("ClusterIP"),
                json!("None"),
                json!("<none>"),
                json!("80/TCP")
            )
        );
        let np = json!({"metadata": {"name": "greet"}, "spec": {"type": "NodePort", "clusterIP": "10.43.0.11", "ports": [{"port": 80, "nodePort": 30001, "protocol": "TCP"}]}});
        assert_eq!(row_cells("", "Service", &np, now())[4], "80:30001/TCP");
    }

    #[test]
    fn statefulset_controller_revision_and_storage_class_rows() {
        let sts = json!({"metadata": {"name": "web"}, "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1"}]}}}, "status": {"readyReplicas": 2}});
        assert_eq!(row_cells("apps", "StatefulSet", &sts, now())[1], "2/3");
        let cr = json!({"metadata": {"name": "web-abc", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "controller": true}]}, "revision": 2});
        let c = row_cells("apps", "ControllerRevision", &cr, now());
        assert_eq!(
            (c[1].clone(), c[2].clone()),
            (json!("statefulset.apps/web"), json!(2))
        );
        let sc = json!({"metadata": {"name": "local-path", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}}, "provisioner": "berth.dev/local-path", "reclaimPolicy": "Delete", "volumeBindingMode": "WaitForFirstConsumer"});
        assert_eq!(
            row_cells("storage.k8s.io", "StorageClass", &sc, now())[0],
            "local-path (default)"
        );
    }
}
