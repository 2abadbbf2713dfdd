//! Node registration and heartbeats (upstream kubelet `kubelet_node_status.go` and the node lease
//! controller `pkg/kubelet/nodelease`): the Node object with capacity, allocatable, addresses and node
//! info; its `Ready` condition's heartbeat every [`HEARTBEAT`]; its Lease renewed as often.

use crate::Config;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

/// How often the Ready heartbeat and the Lease are renewed (upstream: lease every 10 s).
pub const HEARTBEAT: Duration = Duration::from_secs(10);
/// The Lease duration (upstream `nodeLeaseDurationSeconds` default 40).
pub const LEASE_SECONDS: i32 = 40;
/// Pods per node (upstream `maxPods` default).
pub const MAX_PODS: u32 = 110;

/// What the agent reads off the machine.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Machine {
    /// CPUs available to this process.
    pub cpus: usize,
    /// Total memory in KiB (`/proc/meminfo` MemTotal).
    pub memory_kib: u64,
    /// `uname -r`.
    pub kernel: String,
    /// `/etc/os-release` PRETTY_NAME.
    pub os_image: String,
    /// `/etc/machine-id`.
    pub machine_id: String,
    /// `/proc/sys/kernel/random/boot_id`.
    pub boot_id: String,
}

impl Machine {
    /// Read this machine.
    pub fn read() -> Machine {
        let file = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let memory_kib = file("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        let os_image = file("/etc/os-release")
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_else(|| "Linux".into());
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            memory_kib,
            kernel: nix::sys::utsname::uname()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default(),
            os_image,
            machine_id: file("/etc/machine-id").trim().to_string(),
            boot_id: file("/proc/sys/kernel/random/boot_id").trim().to_string(),
        }
    }
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The Node as this agent registers it (status included; `now` stamps the conditions).
pub fn node_object(cfg: &Config, m: &Machine, now: jiff::Timestamp) -> Node {
    let mut labels: BTreeMap<String, String> = [
        (api::wellknown::HOSTNAME_LABEL.to_string(), cfg.node_name.clone()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), arch().to_string()),
        ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
        ("beta.kubernetes.io/arch".to_string(), arch().to_string()),
    ]
    .into();
    if cfg.control_plane {
        labels.insert("node-role.kubernetes.io/control-plane".into(), "true".into());
    }
    let resources: BTreeMap<String, Quantity> = [
        ("cpu".to_string(), Quantity(m.cpus.to_string())),
        ("memory".to_string(), Quantity(format!("{}Ki", m.memory_kib))),
        ("pods".to_string(), Quantity(MAX_PODS.to_string())),
    ]
    .into();
    Node {
        metadata: ObjectMeta {
            name: Some(cfg.node_name.clone()),
            labels: Some(labels),
            annotations: Some(
                [(
                    api::wellknown::VOLUMES_DIR.to_string(),
                    cfg.volumes_dir().to_string_lossy().into_owned(),
                )]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        spec: None,
        status: Some(NodeStatus {
            capacity: Some(resources.clone()),
            allocatable: Some(resources),
            conditions: Some(conditions(now)),
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: cfg.node_ip.to_string(),
                },
                NodeAddress {
                    type_: "Hostname".into(),
                    address: cfg.node_name.clone(),
                },
            ]),
            daemon_endpoints: Some(NodeDaemonEndpoints {
                kubelet_endpoint: Some(DaemonEndpoint {
                    port: i32::from(cfg.kubelet_port),
                }),
            }),
            node_info: Some(NodeSystemInfo {
                architecture: arch().into(),
                boot_id: m.boot_id.clone(),
                container_runtime_version: format!("berth://{}", env!("CARGO_PKG_VERSION")),
                kernel_version: m.kernel.clone(),
                kube_proxy_version: String::new(),
                kubelet_version: "v1.32.4+berth".into(),
                machine_id: m.machine_id.clone(),
                operating_system: "linux".into(),
                os_image: m.os_image.clone(),
                system_uuid: m.machine_id.clone(),
                ..NodeSystemInfo::default()
            }),
            ..NodeStatus::default()
        }),
    }
}

/// The node conditions with `now` as heartbeat and transition time.
pub fn conditions(now: jiff::Timestamp) -> Vec<NodeCondition> {
    let t = Time(now);
    let c = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(t.clone()),
        last_transition_time: Some(t.clone()),
    };
    vec![
        c(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        c(
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
        ),
        c(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
        c(
            "Ready",
            "True",
            "KubeletReady",
            "berth agent is posting ready status",
        ),
    ]
}

/// Register the Node (create, or refresh labels, annotations and status), then heartbeat until an error.
pub async fn run(client: kube::Client, cfg: Config) {
    if let Err(e) = register_and_heartbeat(&client, &cfg).await {
        tracing::warn!(error = %e, "node heartbeat failed");
    }
}

async fn register_and_heartbeat(client: &kube::Client, cfg: &Config) -> Result<(), kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let machine = Machine::read();
    let node = node_object(cfg, &machine, jiff::Timestamp::now());
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => tracing::info!(node = %cfg.node_name, "node registered"),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let meta = json!({"metadata": {"labels": node.metadata.labels, "annotations": node.metadata.annotations}});
            nodes
                .patch(&cfg.node_name, &PatchParams::default(), &Patch::Merge(meta))
                .await?;
        }
        Err(e) => return Err(e),
    }
    let status = json!({"status": node.status});
    nodes
        .patch_status(&cfg.node_name, &PatchParams::default(), &Patch::Merge(status))
        .await?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), api::wellknown::NODE_LEASE_NAMESPACE);
    let mut tick = tokio::time::interval(HEARTBEAT);
    loop {
        tick.tick().await;
        let now = jiff::Timestamp::now();
        renew_lease(&leases, cfg, now).await?;
        // Ready heartbeat: the conditions keep their transition times, only the heartbeat moves.
        let current = nodes.get_status(&cfg.node_name).await?;
        let mut conds = current
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_else(|| conditions(now));
        for c in &mut conds {
            c.last_heartbeat_time = Some(Time(now));
        }
        let status = json!({"status": {"conditions": conds}});
        nodes
            .patch_status(&cfg.node_name, &PatchParams::default(), &Patch::Strategic(status))
            .await?;
    }
}

async fn renew_lease(leases: &Api<Lease>, cfg: &Config, now: jiff::Timestamp) -> Result<(), kube::Error> {
    let spec = LeaseSpec {
        holder_identity: Some(cfg.node_name.clone()),
        lease_duration_seconds: Some(LEASE_SECONDS),
        renew_time: Some(MicroTime(now)),
        ..LeaseSpec::default()
    };
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(cfg.node_name.clone()),
            namespace: Some(api::wellknown::NODE_LEASE_NAMESPACE.into()),
            ..ObjectMeta::default()
        },
        spec: Some(spec.clone()),
    };
    match leases.create(&PostParams::default(), &lease).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => leases
            .patch(
                &cfg.node_name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": spec})),
            )
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_object_carries_capacity_labels_and_the_volumes_dir() {
        let cfg = Config {
            node_name: "n1".into(),
            node_ip: "127.0.0.1".parse().expect("ip"),
            data_dir: "/var/lib/berth".into(),
            control_plane: true,
            kubelet_token: String::new(),
            kubelet_port: 10250,
            cluster_dns: "10.43.0.10".parse().expect("ip"),
            cluster_domain: "cluster.local".into(),
            seccomp_default: false,
        };
        let m = Machine {
            cpus: 2,
            memory_kib: 1024,
            ..Machine::default()
        };
        let n = node_object(&cfg, &m, jiff::Timestamp::UNIX_EPOCH);
        let labels = n.metadata.labels.clone().expect("labels");
        assert_eq!(labels["kubernetes.io/hostname"], "n1");
        assert_eq!(labels["node-role.kubernetes.io/control-plane"], "true");
        let st = n.status.expect("status");
        assert_eq!(st.capacity.as_ref().expect("cap")["cpu"].0, "2");
        assert_eq!(st.capacity.as_ref().expect("cap")["memory"].0, "1024Ki");
        assert_eq!(
            n.metadata.annotations.expect("ann")[api::wellknown::VOLUMES_DIR],
            "/var/lib/berth/volumes"
        );
        assert!(
            st.conditions
                .expect("conds")
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        );
    }
}
