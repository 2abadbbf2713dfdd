//! Berth's controllers, each a pure `plan(observed) -> steps` plus a short executor on a kube-rs `Client`
//! (style.md §3.4): the StatefulSet controller, the garbage collector and the namespace lifecycle, the
//! volume provisioner and binder, and the scheduler.
//!
//! Invariants: `plan` functions do no I/O and read no clock; controllers reach the API only through the
//! kube-rs client they are given, so they run unchanged against any conformant API server.

pub mod endpoints;
pub mod events;
pub mod gc;
pub mod nodeipam;
pub mod scheduler;
pub mod servicelb;
pub mod statefulset;
pub mod volume;

use std::future::Future;
use std::time::Duration;

/// Run `f` forever, restarting it after a pause if it ends.
fn supervise<F, Fut>(name: &'static str, f: F)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            f().await;
            tracing::warn!(controller = name, "controller stopped; restarting");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

/// Start every controller on `client` (in `berth server`, an in-process client); `cluster_cidr` is the
/// pod network the node IPAM controller slices.
pub fn spawn_all(client: kube::Client, cluster_cidr: String) {
    let c = client.clone();
    supervise("nodeipam", move || nodeipam::run(c.clone(), cluster_cidr.clone()));
    let c = client.clone();
    supervise("endpoints", move || endpoints::run(c.clone()));
    let c = client.clone();
    supervise("servicelb", move || servicelb::run(c.clone()));
    let c = client.clone();
    supervise("garbage-collector", move || gc::run(c.clone()));
    let c = client.clone();
    supervise("statefulset", move || statefulset::run(c.clone()));
    let c = client.clone();
    supervise("persistentvolume", move || volume::run(c.clone()));
    let c = client.clone();
    supervise("scheduler", move || scheduler::run(c.clone()));
}
