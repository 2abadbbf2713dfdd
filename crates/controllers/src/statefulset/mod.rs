//! The StatefulSet controller: stable identity, per-pod storage and ordered rollout, as upstream
//! (`pkg/controller/statefulset`), in the shape of style.md §3.4: pure identity, revision and [`plan`]
//! modules, an `execute` module that carries out a plan's steps through a trait of the controller's writes
//! (the API in [`reconcile`], an in-memory cluster in the tests), and the short [`reconcile`] loop.
//!
//! Opt-in extensions, switched by annotations on the StatefulSet (default behaviour stays upstream's):
//! - `berth.dev/heal-stuck-rollout: "true"`: during a RollingUpdate a pod that is not Ready and on an old
//!   revision is replaced instead of blocking the rollout forever (upstream k/k#67250).

mod execute;
pub mod identity;
pub mod plan;
pub mod reconcile;
pub mod revision;

#[cfg(test)]
mod tests;

pub use plan::{Observed, Plan, Step, plan};
pub use reconcile::run;
