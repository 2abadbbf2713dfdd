//! One runtime for every watch loop of Berth: the controllers, the agent's loops and the cluster DNS.
//!
//! A loop declares the kinds it watches ([`Informers`]), then asks for passes ([`Loop::next_pass`]) and
//! runs its pure `plan` over the caches inside each pass, executing each step through
//! [`Pass::step`]. The runtime owns everything else, as kube-runtime's `Controller` and client-go's
//! shared informers do upstream:
//!
//! - **complete caches only**: no pass runs before every cache has finished its initial list (upstream
//!   `cache.WaitForCacheSync`, kube-runtime's `Store::wait_until_ready`), nor while a cache that lost its
//!   watch (410 Gone) is relisting;
//! - **debounced passes**: a burst of changes gives one pass, plus a periodic resync;
//! - **per-object back-off**: a failed step is logged at warn with its object and error and retried after
//!   an exponential back-off (upstream's per-item rate limiter), other objects' steps going on meanwhile;
//! - **supervision** ([`supervise`]): a loop that ends is restarted after a pause;
//! - **live confirmation** ([`live`]): what a destructive step decided on a cache is re-read from the API
//!   first (upstream's garbage collector `isDangling`, the PV controller's claim re-read);
//! - **leader election** ([`leader`]): the controller set runs only on the holder of a Lease.
//!
//! Must never: know a particular kind's business rules (those are the controllers'), or reach the store or
//! the API server other than through a kube-rs `Client`.

mod informers;
pub mod leader;
pub mod live;
mod pass;
mod shared;

pub use informers::{Informers, Signal};
pub use pass::{Loop, Pass, Settings};
pub use shared::{Interest, SharedInformers, touches_ownership};

use std::future::Future;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Run `f` forever on its own task, restarting it after a one-second pause whenever it ends; the
/// returned handle aborts it.
pub fn supervise<F, Fut>(name: &'static str, f: F) -> JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            f().await;
            tracing::warn!(loop_ = name, "loop stopped; restarting");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

/// Tasks that end together: every handle is aborted when this is dropped (a controller set that loses
/// its lease stops at once).
#[derive(Debug, Default)]
pub struct Tasks(Vec<JoinHandle<()>>);

impl Tasks {
    /// Add a task.
    pub fn push(&mut self, h: JoinHandle<()>) {
        self.0.push(h);
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}
