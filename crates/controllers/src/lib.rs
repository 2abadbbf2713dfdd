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
pub mod podgc;
pub mod replicaset;
pub mod resourcequota;
pub mod scheduler;
pub mod servicelb;
pub mod statefulset;
pub mod volume;
pub mod workload;

use controller_runtime::{SharedInformers, Tasks, leader, supervise};

/// The Lease the controller set runs under (upstream's `kube-system/kube-controller-manager`).
pub const LEASE_NAMESPACE: &str = "kube-system";
/// Its name.
pub const LEASE_NAME: &str = "berth-controllers";

/// Start every controller on `client` (in `berth server`, an in-process client); `cluster_cidr` is the
/// pod network the node IPAM controller slices. Dropping the returned [`Tasks`] stops them all.
#[must_use]
pub fn spawn_all(client: &kube::Client, cluster_cidr: &str) -> Tasks {
    spawn_all_with(client, cluster_cidr, Options::default())
}

/// Settings of the controller set that come from `berth server` flags (kube-controller-manager's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// `--node-monitor-grace-period`: how long a node may go without a heartbeat (40 s).
    pub node_monitor_grace_period: std::time::Duration,
    /// `--terminated-pod-gc-threshold`: how many finished pods the pod garbage collector keeps (12,500;
    /// 0 keeps all).
    pub terminated_pod_gc_threshold: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            node_monitor_grace_period: nodelifecycle::DEFAULT_GRACE,
            terminated_pod_gc_threshold: podgc::DEFAULT_TERMINATED_THRESHOLD,
        }
    }
}

/// [`spawn_all`] with `options`.
#[must_use]
pub fn spawn_all_with(client: &kube::Client, cluster_cidr: &str, options: Options) -> Tasks {
    let mut tasks = Tasks::default();
    // One cache per watched kind for the whole set (client-go's SharedInformerFactory); it stops with the
    // last loop, when `tasks` is dropped.
    let shared = SharedInformers::new();
    let (c, s) = (client.clone(), shared.clone());
    tasks.push(supervise("nodelifecycle", move || {
        nodelifecycle::run(c.clone(), s.clone(), options.node_monitor_grace_period)
    }));
    let (c, s) = (client.clone(), shared.clone());
    tasks.push(supervise("podgc", move || {
        podgc::run(c.clone(), s.clone(), options.terminated_pod_gc_threshold)
    }));
    let (c, s, cidr) = (client.clone(), shared.clone(), cluster_cidr.to_string());
    tasks.push(supervise("nodeipam", move || {
        nodeipam::run(c.clone(), s.clone(), cidr.clone())
    }));
    let (c, s) = (client.clone(), shared.clone());
    tasks.push(supervise("endpoints", move || {
        endpoints::run(c.clone(), s.clone())
    }));
    let (c, s) = (client.clone(), shared.clone());
    tasks.push(supervise("servicelb", move || {
        servicelb::run(c.clone(), s.clone())
    }));
    let (c, s) = (client.clone(), shared.clone());
    tasks.push(supervise("garbage-collector", move || {
        gc::run(c.clone(), s.clone())
    }));
    let c = client.clone();
    tasks.push(supervise("statefulset", move || statefulset::run(c.clone())));
    let (c, s) = (client.clone(), shared.clone());
    tasks.push(supervise("replicaset", move || {
        replicaset::run(c.clone(), s.clone())
    }));
    let (c, s) = (client.clone(), shared.clone());
    tasks.push(supervise("replicationcontroller", move || {
        replicaset::run_replication_controllers(c.clone(), s.clone())
    }));
    let (c, s) = (client.clone(), shared.clone());
    tasks.push(supervise("deployment", move || {
        deployment::run(c.clone(), s.clone())
    }));
    let (c, s) = (client.clone(), shared.clone());
    tasks.push(supervise("persistentvolume", move || {
        volume::run(c.clone(), s.clone())
    }));
    let (c, s) = (client.clone(), shared.clone());
    tasks.push(supervise("job", move || job::run(c.clone(), s.clone())));
    let (c, s) = (client.clone(), shared.clone());
    tasks.push(supervise("cronjob", move || cronjob::run(c.clone(), s.clone())));
    let (c, s) = (client.clone(), shared.clone());
    tasks.push(supervise("daemonset", move || {
        daemonset::run(c.clone(), s.clone())
    }));
    let (c, s) = (client.clone(), shared.clone());
    tasks.push(supervise("scheduler", move || {
        scheduler::run(c.clone(), s.clone())
    }));
    let (c, s) = (client.clone(), shared.clone());
    tasks.push(supervise("disruption", move || {
        disruption::run(c.clone(), s.clone())
    }));
    let (c, s) = (client.clone(), shared.clone());
    tasks.push(supervise("resourcequota", move || {
        resourcequota::run(c.clone(), s.clone())
    }));
    tasks
}

/// The Lease timings, kube-controller-manager's `--leader-elect-lease-duration` (15 s),
/// `--leader-elect-renew-deadline` (10 s) and `--leader-elect-retry-period` (2 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Election {
    /// How long a Lease is valid after its last observed renewal.
    pub lease_duration: std::time::Duration,
    /// How long the holder keeps trying to renew before it stops leading.
    pub renew_deadline: std::time::Duration,
    /// Time between attempts.
    pub retry_period: std::time::Duration,
}

impl Default for Election {
    fn default() -> Self {
        Election {
            lease_duration: std::time::Duration::from_secs(15),
            renew_deadline: std::time::Duration::from_secs(10),
            retry_period: std::time::Duration::from_secs(2),
        }
    }
}

impl Election {
    /// Upstream's checks (`leaderelection.NewLeaderElector`): lease duration > renew deadline >
    /// 1.2 × retry period (its jitter factor), none zero.
    ///
    /// # Errors
    /// A message naming the flags that contradict each other.
    pub fn validate(&self) -> Result<(), String> {
        if self.retry_period.is_zero() {
            return Err("--leader-elect-retry-period must be greater than zero".into());
        }
        if self.lease_duration <= self.renew_deadline {
            return Err(
                "--leader-elect-lease-duration must be greater than --leader-elect-renew-deadline".into(),
            );
        }
        if self.renew_deadline.as_secs_f64() <= 1.2 * self.retry_period.as_secs_f64() {
            return Err(
                "--leader-elect-renew-deadline must be greater than 1.2 × --leader-elect-retry-period".into(),
            );
        }
        Ok(())
    }
}

/// Run the controller set for ever, only while this server holds the Lease
/// `kube-system/berth-controllers` (`election`: upstream's timings by default, 15 s lease, 10 s renew
/// deadline, 2 s retry), so a second server process on the same datastore never runs a second copy.
/// `identity` is stable across restarts of one server (its node name), so a single server takes its
/// Lease back at once. `options` are the controllers' flags.
/// `address` is this server's API address (`ip:port`) when it shares a datastore with others: written to
/// the Lease while it holds it, so the others may take over at once when nothing listens there any more
/// ([`leader`]'s early takeover) instead of after the whole lease duration.
pub async fn run_elected(
    client: kube::Client,
    cluster_cidr: String,
    identity: String,
    address: Option<String>,
    options: Options,
    election: Election,
) {
    let cfg = leader::Config {
        lease_duration: election.lease_duration,
        renew_deadline: election.renew_deadline,
        retry_period: election.retry_period,
        address,
        ..leader::Config::new(LEASE_NAMESPACE, LEASE_NAME, &identity)
    };
    let c = client.clone();
    leader::run(client, cfg, move || spawn_all_with(&c, &cluster_cidr, options)).await;
}
