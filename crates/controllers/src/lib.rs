//! Berth's controllers, each a pure `plan(observed) -> steps` plus a short executor on a kube-rs `Client`
//! (style.md §3.4): the StatefulSet, ReplicaSet (and ReplicationController), Deployment, DaemonSet, Job and
//! CronJob controllers over the shared [`workload`] pieces, the garbage collector and the namespace
//! lifecycle, the volume provisioner and binder, the scheduler, and the node lifecycle (stale nodes,
//! taints, eviction).
//!
//! Invariants: `plan` functions do no I/O and read no clock; controllers reach the API only through the
//! kube-rs client they are given, so they run unchanged against any conformant API server.

pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod events;
pub mod gc;
pub mod job;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod replicaset;
pub mod resourcequota;
pub mod scheduler;
pub mod servicelb;
pub mod statefulset;
pub mod volume;
pub mod workload;

use controller_runtime::{Tasks, leader, supervise};

/// The Lease the controller set runs under (upstream's `kube-system/kube-controller-manager`).
pub const LEASE_NAMESPACE: &str = "kube-system";
/// Its name.
pub const LEASE_NAME: &str = "berth-controllers";

/// Start every controller on `client` (in `berth server`, an in-process client); `cluster_cidr` is the
/// pod network the node IPAM controller slices. Dropping the returned [`Tasks`] stops them all.
#[must_use]
pub fn spawn_all(client: &kube::Client, cluster_cidr: &str) -> Tasks {
    spawn_all_with(client, cluster_cidr, nodelifecycle::DEFAULT_GRACE)
}

/// [`spawn_all`] with the node monitor grace period of the node lifecycle controller.
#[must_use]
pub fn spawn_all_with(client: &kube::Client, cluster_cidr: &str, node_grace: std::time::Duration) -> Tasks {
    let mut tasks = Tasks::default();
    let c = client.clone();
    tasks.push(supervise("nodelifecycle", move || {
        nodelifecycle::run(c.clone(), node_grace)
    }));
    let (c, cidr) = (client.clone(), cluster_cidr.to_string());
    tasks.push(supervise("nodeipam", move || {
        nodeipam::run(c.clone(), cidr.clone())
    }));
    let c = client.clone();
    tasks.push(supervise("endpoints", move || endpoints::run(c.clone())));
    let c = client.clone();
    tasks.push(supervise("servicelb", move || servicelb::run(c.clone())));
    let c = client.clone();
    tasks.push(supervise("garbage-collector", move || gc::run(c.clone())));
    let c = client.clone();
    tasks.push(supervise("statefulset", move || statefulset::run(c.clone())));
    let c = client.clone();
    tasks.push(supervise("replicaset", move || replicaset::run(c.clone())));
    let c = client.clone();
    tasks.push(supervise("replicationcontroller", move || {
        replicaset::run_replication_controllers(c.clone())
    }));
    let c = client.clone();
    tasks.push(supervise("deployment", move || deployment::run(c.clone())));
    let c = client.clone();
    tasks.push(supervise("persistentvolume", move || volume::run(c.clone())));
    let c = client.clone();
    tasks.push(supervise("job", move || job::run(c.clone())));
    let c = client.clone();
    tasks.push(supervise("cronjob", move || cronjob::run(c.clone())));
    let c = client.clone();
    tasks.push(supervise("daemonset", move || daemonset::run(c.clone())));
    let c = client.clone();
    tasks.push(supervise("scheduler", move || scheduler::run(c.clone())));
    let c = client.clone();
    tasks.push(supervise("disruption", move || disruption::run(c.clone())));
    let c = client.clone();
    tasks.push(supervise("resourcequota", move || resourcequota::run(c.clone())));
    tasks
}

/// Run the controller set for ever, only while this server holds the Lease
/// `kube-system/berth-controllers` (upstream's timings: 15 s lease, 10 s renew deadline, 2 s retry), so a
/// second server process on the same datastore never runs a second copy. `identity` is stable across
/// restarts of one server (its node name), so a single server takes its Lease back at once.
/// `node_grace` is the node lifecycle controller's `--node-monitor-grace-period`.
pub async fn run_elected(
    client: kube::Client,
    cluster_cidr: String,
    identity: String,
    node_grace: std::time::Duration,
) {
    let cfg = leader::Config::new(LEASE_NAMESPACE, LEASE_NAME, &identity);
    let c = client.clone();
    leader::run(client, cfg, move || spawn_all_with(&c, &cluster_cidr, node_grace)).await;
}
