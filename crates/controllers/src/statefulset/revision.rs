//! ControllerRevisions of a StatefulSet (upstream `pkg/controller/history` and `newRevision` in
//! `stateful_set_utils.go`): the revision data is `{"spec":{"template":{…,"$patch":"replace"}}}` with
//! sorted keys (what `kubectl rollout undo` sends back), named `<set>-<hash>`, numbered increasingly.
//!
//! The data, hash and naming are the shared [`crate::workload::revision`].

use crate::workload::revision as shared;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use serde_json::{Value, json};

pub use shared::{HASH_LABEL, equal_data, hash, template_of};

/// The revision data of the set's current template ([`shared::template_patch`]).
pub fn data_of(set: &StatefulSet) -> Value {
    set.spec
        .as_ref()
        .map(|s| shared::template_patch(&s.template))
        .unwrap_or_else(|| shared::sorted(&json!({"spec": {"template": {"$patch": "replace"}}})))
}

/// A new revision object for the set at `revision` number ([`shared::new_revision`]).
pub fn new_revision(set: &StatefulSet, revision: i64, collision_count: i32) -> ControllerRevision {
    shared::new_revision(
        &set.metadata,
        super::identity::controller_ref(set),
        set.spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.labels.as_ref()),
        data_of(set),
        revision,
        collision_count,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(image: &str) -> StatefulSet {
        serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "default", "uid": "u"},
            "spec": {"serviceName": "nginx", "selector": {"matchLabels": {"app": "nginx"}},
                "template": {"metadata": {"labels": {"app": "nginx"}}, "spec": {"containers": [{"name": "nginx", "image": image}]}}}}))
        .expect("set")
    }

    #[test]
    fn revision_data_is_a_replace_patch_of_the_template_and_names_are_stable() {
        let a = new_revision(&set("nginx:1"), 1, 0);
        let b = new_revision(&set("nginx:1"), 1, 0);
        let c = new_revision(&set("nginx:2"), 2, 0);
        assert_eq!(a.metadata.name, b.metadata.name);
        assert_ne!(a.metadata.name, c.metadata.name);
        let data = &a.data.as_ref().expect("data").0;
        assert_eq!(data["spec"]["template"]["$patch"], "replace");
        assert_eq!(
            template_of(&a)
                .and_then(|t| t.spec)
                .map(|s| s.containers[0].image.clone()),
            Some(Some("nginx:1".into()))
        );
        assert!(a.metadata.name.as_deref().is_some_and(|n| n.starts_with("web-")));
        assert_eq!(
            a.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("app"))
                .map(String::as_str),
            Some("nginx")
        );
        assert_ne!(hash(data, 0), hash(data, 1), "collision count changes the name");
    }
}
