//! The patch metadata of the served types: for each (type, field), the child type and the patch strategy,
//! as the `patchStrategy`/`patchMergeKey` struct tags of k8s.io/api v1.32 say (kubectl-compat.md §5.2).
//! Server-side apply uses the same keys as list-map keys (ports add `protocol`, as upstream's
//! `x-kubernetes-list-map-keys`).

/// How a field merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// A map (struct or `map[string]string`): keys merge recursively.
    Map,
    /// A list of objects merged by a key.
    MergeByKey(&'static str),
    /// A list of objects merged by a key, whose items honour `$retainKeys`.
    MergeByKeyRetainKeys(&'static str),
    /// A list of primitives merged as a set.
    MergePrimitives,
    /// A struct that honours `$retainKeys`.
    RetainKeys,
    /// Replaced whole (lists without a strategy, scalars).
    Atomic,
}

/// (strategy, child type) of `field` in `ty`; `None` when the field has no metadata (maps merge, lists are
/// atomic).
pub fn field(ty: &str, field: &str) -> Option<(Strategy, Option<&'static str>)> {
    use Strategy::*;
    let r = match (ty, field) {
        (_, "metadata") if ty != "ObjectMeta" => (Map, Some("ObjectMeta")),
        ("ObjectMeta", "ownerReferences") => (MergeByKey("uid"), None),
        ("ObjectMeta", "finalizers") => (MergePrimitives, None),
        ("Pod", "spec") | ("PodTemplateSpec", "spec") => (Map, Some("PodSpec")),
        ("Pod", "status") => (Map, Some("PodStatus")),
        ("StatefulSet", "spec") => (Map, Some("StatefulSetSpec")),
        ("StatefulSet", "status")
        | ("Deployment", "status")
        | ("ReplicaSet", "status")
        | ("ReplicationController", "status")
        | ("DaemonSet", "status") => (Map, Some("WorkloadStatus")),
        ("Deployment", "spec") => (Map, Some("DeploymentSpec")),
        ("ReplicaSet", "spec")
        | ("ReplicationController", "spec")
        | ("DaemonSet", "spec")
        | ("StatefulSetSpec", "template") => {
            if field == "template" {
                (Map, Some("PodTemplateSpec"))
            } else {
                (Map, Some("WorkloadSpec"))
            }
        }
        ("DeploymentSpec", "template") | ("WorkloadSpec", "template") => (Map, Some("PodTemplateSpec")),
        ("DeploymentSpec", "strategy") => (RetainKeys, None),
        ("WorkloadStatus", "conditions") => (MergeByKey("type"), None),
        ("Job", "spec") | ("JobTemplateSpec", "spec") => (Map, Some("JobSpec")),
        ("JobSpec", "template") => (Map, Some("PodTemplateSpec")),
        ("Job", "status") => (Map, Some("JobStatus")),
        ("JobStatus", "conditions") => (MergeByKey("type"), None),
        ("CronJob", "spec") => (Map, Some("CronJobSpec")),
        ("CronJobSpec", "jobTemplate") => (Map, Some("JobTemplateSpec")),
        ("PodSpec", "containers") | ("PodSpec", "initContainers") | ("PodSpec", "ephemeralContainers") => {
            (MergeByKey("name"), Some("Container"))
        }
        ("PodSpec", "imagePullSecrets") | ("PodSpec", "schedulingGates") => (MergeByKey("name"), None),
        ("PodSpec", "volumes") | ("PodSpec", "resourceClaims") => (MergeByKeyRetainKeys("name"), None),
        ("PodSpec", "hostAliases") => (MergeByKey("ip"), None),
        ("PodSpec", "topologySpreadConstraints") => (MergeByKey("topologyKey"), None),
        ("Container", "ports") => (MergeByKey("containerPort"), None),
        ("Container", "env") => (MergeByKey("name"), None),
        ("Container", "volumeMounts") => (MergeByKey("mountPath"), None),
        ("Container", "volumeDevices") => (MergeByKey("devicePath"), None),
        ("PodStatus", "conditions") => (MergeByKey("type"), None),
        ("PodStatus", "podIPs") | ("PodStatus", "hostIPs") => (MergeByKey("ip"), None),
        ("PodStatus", "resourceClaimStatuses") => (MergeByKeyRetainKeys("name"), None),
        ("Service", "spec") => (Map, Some("ServiceSpec")),
        ("Service", "status") | ("Namespace", "status") | ("PersistentVolumeClaim", "status") => {
            (Map, Some("ConditionsStatus"))
        }
        ("ServiceSpec", "ports") => (MergeByKey("port"), None),
        ("ConditionsStatus", "conditions") => (MergeByKey("type"), None),
        ("ServiceAccount", "secrets") => (MergeByKey("name"), None),
        ("Node", "spec") => (Map, Some("NodeSpec")),
        ("Node", "status") => (Map, Some("NodeStatus")),
        ("NodeSpec", "podCIDRs") => (MergePrimitives, None),
        ("NodeStatus", "addresses") | ("NodeStatus", "conditions") => (MergeByKey("type"), None),
        _ => return None,
    };
    Some(r)
}

/// The root type name for a served `(group, kind)`.
pub fn root(_group: &str, kind: &str) -> &'static str {
    match kind {
        "Pod" => "Pod",
        "StatefulSet" => "StatefulSet",
        "Deployment" => "Deployment",
        "ReplicaSet" => "ReplicaSet",
        "ReplicationController" => "ReplicationController",
        "DaemonSet" => "DaemonSet",
        "Job" => "Job",
        "CronJob" => "CronJob",
        "Service" => "Service",
        "Namespace" => "Namespace",
        "PersistentVolumeClaim" => "PersistentVolumeClaim",
        "ServiceAccount" => "ServiceAccount",
        "Node" => "Node",
        _ => "Object",
    }
}

/// List-map keys for server-side apply: the merge key, plus `protocol` for container and service ports.
pub fn list_map_keys(strategy: Strategy, ty: &str, field: &str) -> Option<Vec<&'static str>> {
    match strategy {
        Strategy::MergeByKey(k) | Strategy::MergeByKeyRetainKeys(k) => {
            if field == "ports" && (ty == "Container" || ty == "ServiceSpec") {
                Some(vec![k, "protocol"])
            } else {
                Some(vec![k])
            }
        }
        _ => None,
    }
}
