//! Pod writes of one controller object not yet seen in its cache (upstream `ControllerExpectations` in
//! `pkg/controller/controller_utils.go`, keyed by pod name for creates and uid for deletes): while any is
//! outstanding the object is not managed again, so a lagging cache never creates or deletes twice. The
//! ReplicaSet keeps a richer form of its own (`replicaset::`, with a live read for pods created and
//! deleted between two passes); the Job and DaemonSet controllers use this one.

use k8s_openapi::api::core::v1::Pod;
use std::time::{Duration, Instant};

/// How long unmet expectations hold an object back at most (upstream `ExpectationsTimeout`).
pub const TIMEOUT: Duration = Duration::from_secs(300);

/// The outstanding writes of one object.
#[derive(Debug, Default)]
pub struct Expectations {
    created: Vec<String>,
    deleted: Vec<String>,
    since: Option<Instant>,
}

impl Expectations {
    /// A pod named `name` was created.
    pub fn created(&mut self, name: String) {
        self.created.push(name);
        self.since.get_or_insert_with(Instant::now);
    }

    /// The pod with `uid` was deleted.
    pub fn deleted(&mut self, uid: String) {
        self.deleted.push(uid);
        self.since.get_or_insert_with(Instant::now);
    }

    /// Whether the cache (`pods`, the object's pods) shows every create (the name is there) and delete
    /// (the uid is gone or terminating), or the expectations expired.
    pub fn settled(&mut self, pods: &[&Pod]) -> bool {
        if self.since.is_some_and(|t| t.elapsed() > TIMEOUT) {
            *self = Expectations::default();
        }
        self.created
            .retain(|n| !pods.iter().any(|p| p.metadata.name.as_deref() == Some(n)));
        self.deleted.retain(|u| {
            pods.iter()
                .any(|p| p.metadata.uid.as_deref() == Some(u) && p.metadata.deletion_timestamp.is_none())
        });
        if self.created.is_empty() && self.deleted.is_empty() {
            self.since = None;
        }
        self.created.is_empty() && self.deleted.is_empty()
    }
}
