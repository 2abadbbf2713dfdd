//! The node agent (the kubelet's role), reaching the API server only through a kube-rs `Client`: in
//! `berth server` an in-process one, for a remote node one over HTTPS.
//!
//! What it does:
//! - [`node`]: registers its Node (capacity read off the machine, addresses, node info), keeps the `Ready`
//!   condition's heartbeat and its Lease in `kube-node-lease` fresh;
//! - [`volumes`] and [`capacity`]: the node side of the local-path provisioner;
//! - [`pods`] with [`image`], [`pull`], [`runtime`], [`stdio`], [`cgroup`], [`probe`], [`pleg`]: runs the pods bound to
//!   this node as Linux processes, with probes, restarts and graceful termination;
//! - [`network`]: the pod network on this node (bridge, per-pod network namespace, veth, IPAM);
//!   [`routes`]: routes to the other nodes' pod slices;
//! - [`proxy`]: Services (ClusterIP, NodePort, LoadBalancer; TCP and UDP) and pods' `hostPort`s;
//! - [`kubelet`] and [`portforward`]: the kubelet API (logs, exec, attach, port-forward).
//!
//! Invariant: the agent never touches a path outside its own volumes directory.

pub mod admission;
pub mod capacity;
pub mod cgroup;
pub mod devicefilter;
pub mod image;
pub mod kubelet;
pub mod network;
pub mod node;
pub mod pleg;
pub mod pods;
pub mod portforward;
pub mod probe;
pub mod proxy;
pub mod pull;
pub mod routes;
pub mod runtime;
pub mod security;
pub mod stdio;
pub mod userns;
pub mod volumes;

use std::net::IpAddr;
use std::path::PathBuf;

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The Node's name.
    pub node_name: String,
    /// The address reported as the Node's `InternalIP`.
    pub node_ip: IpAddr,
    /// `<data-dir>`; volumes live under `<data-dir>/volumes`.
    pub data_dir: PathBuf,
    /// Whether this agent runs inside `berth server` (its Node gets the control-plane role label, as k3s).
    pub control_plane: bool,
    /// Bearer token the API server presents to this agent's kubelet API.
    pub kubelet_token: String,
    /// The kubelet API's port (set by [`start`] once bound).
    pub kubelet_port: u16,
    /// The cluster DNS address pods' `resolv.conf` names (`--cluster-dns`).
    pub cluster_dns: IpAddr,
    /// The cluster domain (`--cluster-domain`, `cluster.local`).
    pub cluster_domain: String,
    /// A container without `seccompProfile` gets `RuntimeDefault` (the kubelet's `--seccomp-default`;
    /// off, as upstream: such a container is `Unconfined`).
    pub seccomp_default: bool,
}

impl Config {
    /// The directory holding this node's local-path volumes.
    pub fn volumes_dir(&self) -> PathBuf {
        self.data_dir.join("volumes")
    }
}

/// Bind the kubelet API, then start every agent loop on `client`; each loop is restarted after a pause
/// if it ends.
///
/// # Errors
/// When the kubelet API's socket cannot be bound.
pub async fn start(client: kube::Client, mut config: Config) -> std::io::Result<()> {
    let (port, serve) = kubelet::bind(config.node_ip, config.kubelet_token.clone(), &config.data_dir).await?;
    config.kubelet_port = port;
    tokio::spawn(serve);
    spawn(client, config);
    Ok(())
}

fn spawn(client: kube::Client, config: Config) {
    use controller_runtime::supervise;
    let (c, cfg) = (client.clone(), config.clone());
    supervise("node", move || node::run(c.clone(), cfg.clone()));
    let (c, cfg) = (client.clone(), config.clone());
    supervise("volumes", move || volumes::run(c.clone(), cfg.clone()));
    let (c, node) = (client.clone(), config.node_name.clone());
    supervise("service-proxy", move || proxy::run(c.clone(), node.clone()));
    let (c, cfg) = (client.clone(), config.clone());
    supervise("routes", move || routes::run(c.clone(), cfg.clone()));
    let (c, cfg) = (client, config);
    supervise("pods", move || pods::run(c.clone(), cfg.clone()));
}
