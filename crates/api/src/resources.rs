//! The table of resources Berth serves: group, version, kind, plural, scope, short names,
//! categories, verbs and subresources, exactly as upstream's discovery documents list them
//! (`kubectl api-resources` against a 1.32 cluster).

/// A subresource of a served resource, as listed in discovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subresource {
    /// `<plural>/status`: get, patch, update; writes only `.status`.
    Status,
    /// `<plural>/scale`: an `autoscaling/v1 Scale`.
    Scale,
    /// `pods/binding`: create only.
    Binding,
    /// `pods/log`: get, text/plain.
    Log,
    /// `pods/exec`: WebSocket streaming.
    Exec,
    /// `pods/attach`: WebSocket streaming.
    Attach,
    /// `pods/portforward`: SPDY/WebSocket streaming.
    PortForward,
    /// `namespaces/finalize`: update of `spec.finalizers` only.
    Finalize,
    /// `pods/ephemeralcontainers`: get, patch, update; writes only `spec.ephemeralContainers`.
    EphemeralContainers,
    /// `pods/eviction`: create a `policy/v1 Eviction`, a delete that honours PodDisruptionBudgets.
    Eviction,
}

impl Subresource {
    /// The path segment (`status`, `scale`, …).
    pub fn name(self) -> &'static str {
        match self {
            Subresource::Status => "status",
            Subresource::Scale => "scale",
            Subresource::Binding => "binding",
            Subresource::Log => "log",
            Subresource::Exec => "exec",
            Subresource::Attach => "attach",
            Subresource::PortForward => "portforward",
            Subresource::Finalize => "finalize",
            Subresource::EphemeralContainers => "ephemeralcontainers",
            Subresource::Eviction => "eviction",
        }
    }

    /// Parse a path segment.
    pub fn parse(s: &str) -> Option<Self> {
        ALL_SUBRESOURCES.iter().copied().find(|sub| sub.name() == s)
    }

    /// The verbs discovery lists for this subresource.
    pub fn verbs(self) -> &'static [&'static str] {
        match self {
            Subresource::Status | Subresource::Scale | Subresource::EphemeralContainers => {
                &["get", "patch", "update"]
            }
            Subresource::Binding | Subresource::Eviction => &["create"],
            Subresource::Log => &["get"],
            Subresource::Exec | Subresource::Attach | Subresource::PortForward => &["create", "get"],
            Subresource::Finalize => &["update"],
        }
    }

    /// `(group, version, kind)` of the object this subresource answers with, when it differs from the parent.
    pub fn response_kind(self) -> Option<(&'static str, &'static str, &'static str)> {
        match self {
            Subresource::Scale => Some(("autoscaling", "v1", "Scale")),
            Subresource::Binding => Some(("", "v1", "Binding")),
            Subresource::Log => Some(("", "v1", "Pod")),
            Subresource::Exec => Some(("", "v1", "PodExecOptions")),
            Subresource::Attach => Some(("", "v1", "PodAttachOptions")),
            Subresource::PortForward => Some(("", "v1", "PodPortForwardOptions")),
            Subresource::Eviction => Some(("policy", "v1", "Eviction")),
            Subresource::Status | Subresource::Finalize | Subresource::EphemeralContainers => None,
        }
    }
}

const ALL_SUBRESOURCES: [Subresource; 10] = [
    Subresource::Status,
    Subresource::Scale,
    Subresource::Binding,
    Subresource::Log,
    Subresource::Exec,
    Subresource::Attach,
    Subresource::PortForward,
    Subresource::Finalize,
    Subresource::EphemeralContainers,
    Subresource::Eviction,
];

/// One served resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource {
    /// API group, `""` for core.
    pub group: &'static str,
    /// Served version.
    pub version: &'static str,
    /// Kind, e.g. `StatefulSet`.
    pub kind: &'static str,
    /// Plural resource name, e.g. `statefulsets`.
    pub plural: &'static str,
    /// Singular name, e.g. `statefulset`.
    pub singular: &'static str,
    /// Namespaced or cluster-scoped, as upstream.
    pub namespaced: bool,
    /// `kubectl` short names.
    pub short_names: &'static [&'static str],
    /// Categories; `all` drives `kubectl get all`.
    pub categories: &'static [&'static str],
    /// Subresources served.
    pub subresources: &'static [Subresource],
}

/// Verbs of every top-level resource.
pub const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

impl Resource {
    /// `apps/v1` or `v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Whether the resource has a `/status` subresource (its main writes then ignore `.status`).
    pub fn has_status(&self) -> bool {
        self.subresources.contains(&Subresource::Status)
    }

    /// `statefulsets.apps` or `pods`: the qualified resource used in error messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `StatefulSet.apps` or `Pod`: the qualified kind used in `Invalid` messages.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }
}

macro_rules! res {
    ($g:expr, $v:expr, $k:expr, $p:expr, $s:expr, $ns:expr, [$($sn:expr),*], [$($c:expr),*], [$($sub:ident),*]) => {
        Resource {
            group: $g, version: $v, kind: $k, plural: $p, singular: $s, namespaced: $ns,
            short_names: &[$($sn),*], categories: &[$($c),*], subresources: &[$(Subresource::$sub),*],
        }
    };
}

/// Every resource Berth serves, in discovery order.
pub static RESOURCES: &[Resource] = &[
    res!(
        "",
        "v1",
        "Namespace",
        "namespaces",
        "namespace",
        false,
        ["ns"],
        [],
        [Status, Finalize]
    ),
    res!(
        "",
        "v1",
        "Pod",
        "pods",
        "pod",
        true,
        ["po"],
        ["all"],
        [
            Status,
            Binding,
            Eviction,
            Log,
            Exec,
            Attach,
            PortForward,
            EphemeralContainers
        ]
    ),
    res!(
        "",
        "v1",
        "ReplicationController",
        "replicationcontrollers",
        "replicationcontroller",
        true,
        ["rc"],
        ["all"],
        [Status, Scale]
    ),
    res!(
        "",
        "v1",
        "Service",
        "services",
        "service",
        true,
        ["svc"],
        ["all"],
        [Status]
    ),
    res!(
        "",
        "v1",
        "Endpoints",
        "endpoints",
        "endpoints",
        true,
        ["ep"],
        [],
        []
    ),
    res!(
        "",
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        "persistentvolumeclaim",
        true,
        ["pvc"],
        [],
        [Status]
    ),
    res!(
        "",
        "v1",
        "PersistentVolume",
        "persistentvolumes",
        "persistentvolume",
        false,
        ["pv"],
        [],
        [Status]
    ),
    res!(
        "",
        "v1",
        "ConfigMap",
        "configmaps",
        "configmap",
        true,
        ["cm"],
        [],
        []
    ),
    res!("", "v1", "Secret", "secrets", "secret", true, [], [], []),
    res!("", "v1", "Event", "events", "event", true, ["ev"], [], []),
    res!("", "v1", "Node", "nodes", "node", false, ["no"], [], [Status]),
    res!(
        "",
        "v1",
        "ServiceAccount",
        "serviceaccounts",
        "serviceaccount",
        true,
        ["sa"],
        [],
        []
    ),
    res!(
        "",
        "v1",
        "ResourceQuota",
        "resourcequotas",
        "resourcequota",
        true,
        ["quota"],
        [],
        [Status]
    ),
    res!(
        "",
        "v1",
        "LimitRange",
        "limitranges",
        "limitrange",
        true,
        ["limits"],
        [],
        []
    ),
    res!(
        "apps",
        "v1",
        "StatefulSet",
        "statefulsets",
        "statefulset",
        true,
        ["sts"],
        ["all"],
        [Status, Scale]
    ),
    res!(
        "apps",
        "v1",
        "ControllerRevision",
        "controllerrevisions",
        "controllerrevision",
        true,
        [],
        [],
        []
    ),
    res!(
        "apps",
        "v1",
        "Deployment",
        "deployments",
        "deployment",
        true,
        ["deploy"],
        ["all"],
        [Status, Scale]
    ),
    res!(
        "apps",
        "v1",
        "ReplicaSet",
        "replicasets",
        "replicaset",
        true,
        ["rs"],
        ["all"],
        [Status, Scale]
    ),
    res!(
        "apps",
        "v1",
        "DaemonSet",
        "daemonsets",
        "daemonset",
        true,
        ["ds"],
        ["all"],
        [Status]
    ),
    res!("batch", "v1", "Job", "jobs", "job", true, [], ["all"], [Status]),
    res!(
        "batch",
        "v1",
        "CronJob",
        "cronjobs",
        "cronjob",
        true,
        ["cj"],
        ["all"],
        [Status]
    ),
    res!(
        "storage.k8s.io",
        "v1",
        "StorageClass",
        "storageclasses",
        "storageclass",
        false,
        ["sc"],
        [],
        []
    ),
    res!(
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
        "endpointslice",
        true,
        [],
        [],
        []
    ),
    res!(
        "coordination.k8s.io",
        "v1",
        "Lease",
        "leases",
        "lease",
        true,
        [],
        [],
        []
    ),
    res!(
        "events.k8s.io",
        "v1",
        "Event",
        "events",
        "event",
        true,
        ["ev"],
        [],
        []
    ),
    res!(
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        "horizontalpodautoscaler",
        true,
        ["hpa"],
        ["all"],
        [Status]
    ),
    res!(
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        "poddisruptionbudget",
        true,
        ["pdb"],
        [],
        [Status]
    ),
    res!(
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
        "networkpolicy",
        true,
        ["netpol"],
        [],
        []
    ),
    res!(
        "networking.k8s.io",
        "v1",
        "Ingress",
        "ingresses",
        "ingress",
        true,
        ["ing"],
        [],
        [Status]
    ),
    res!(
        "networking.k8s.io",
        "v1",
        "IngressClass",
        "ingressclasses",
        "ingressclass",
        false,
        [],
        [],
        []
    ),
    res!(
        "scheduling.k8s.io",
        "v1",
        "PriorityClass",
        "priorityclasses",
        "priorityclass",
        false,
        ["pc"],
        [],
        []
    ),
    res!(
        "apiregistration.k8s.io",
        "v1",
        "APIService",
        "apiservices",
        "apiservice",
        false,
        [],
        ["api-extensions"],
        [Status]
    ),
];

/// The served resource at `(group, version, plural)`.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The served resource for `(group, kind)`; core Event and events.k8s.io Event differ by group.
pub fn find_kind(group: &str, kind: &str) -> Option<&'static Resource> {
    RESOURCES.iter().find(|r| r.group == group && r.kind == kind)
}

/// The API groups served besides core, in discovery order, each with its one version.
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES {
        if !r.group.is_empty() && !out.iter().any(|(g, _)| *g == r.group) {
            out.push((r.group, r.version));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_resource_is_unique_by_group_and_plural() {
        for (i, a) in RESOURCES.iter().enumerate() {
            for b in &RESOURCES[i + 1..] {
                assert!(
                    !(a.group == b.group && a.plural == b.plural),
                    "{} twice",
                    a.qualified()
                );
            }
        }
    }

    #[test]
    fn statefulsets_are_namespaced_with_scale() {
        let sts = find("apps", "v1", "statefulsets").expect("served");
        assert!(sts.namespaced);
        assert!(sts.subresources.contains(&Subresource::Scale));
        assert_eq!(sts.qualified(), "statefulsets.apps");
        assert_eq!(find_kind("", "Node").map(|r| r.namespaced), Some(false));
    }
}
