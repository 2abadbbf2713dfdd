//! What every workload controller (StatefulSet, ReplicaSet and ReplicationController, Deployment, Job,
//! DaemonSet) shares, as upstream keeps it in `pkg/controller/controller_utils.go`,
//! `controller_ref_manager.go`, `pkg/controller/history` and `pkg/api/v1/pod`:
//!
//! - [`controller_ref`]: ControllerRef adoption and release (`ClaimObject` for pods and revisions), with
//!   the live re-checks a cache-driven controller needs before it changes ownership;
//! - [`revision`]: ControllerRevision data, hash and names (`history.HashControllerRevision`) and the
//!   `pod-template-hash` (`controller.ComputeHash`);
//! - [`pods`]: readiness and availability with `minReadySeconds` (`podutil.IsPodAvailable`), active pods,
//!   the pod built from a template (`GetPodFromTemplate`) and the deletion ranking (`ActivePodsWithRanks`);
//! - [`expectations`]: pod writes not yet seen in the cache (`ControllerExpectations`);
//! - [`intstr`]: `maxUnavailable`/`maxSurge` as ints or percentages (`GetScaledValueFromIntOrPercent`,
//!   the Deployment's `ResolveFenceposts`).
//!
//! All of it is pure: no I/O and no clock (time is passed in), except [`controller_ref::can_adopt`] and
//! [`controller_ref::confirm_release`], the two live reads.

pub mod controller_ref;
pub mod expectations;
pub mod intstr;
pub mod pods;
pub mod revision;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use std::collections::BTreeMap;

/// Whether `labels` satisfy `selector` (upstream `metav1.LabelSelectorAsSelector(…).Matches`). An empty
/// selector matches nothing here: the apps/v1 and batch/v1 kinds refuse one at validation, and a
/// controller must never claim every pod of a namespace.
pub fn selector_matches(selector: &LabelSelector, labels: Option<&BTreeMap<String, String>>) -> bool {
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    let ml_ok = selector
        .match_labels
        .as_ref()
        .is_none_or(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)));
    let me_ok = selector.match_expressions.as_ref().is_none_or(|exprs| {
        exprs.iter().all(|e| {
            let have = labels.get(&e.key);
            let vals = e.values.as_deref().unwrap_or_default();
            match e.operator.as_str() {
                "In" => have.is_some_and(|h| vals.contains(h)),
                "NotIn" => have.is_none_or(|h| !vals.contains(h)),
                "Exists" => have.is_some(),
                "DoesNotExist" => have.is_none(),
                _ => false,
            }
        })
    });
    let is_empty = selector.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
        && selector.match_expressions.as_ref().is_none_or(Vec::is_empty);
    !is_empty && ml_ok && me_ok
}

/// Whether an object's labels satisfy `selector` ([`selector_matches`] on `metadata.labels`).
pub fn meta_matches(selector: &LabelSelector, meta: &ObjectMeta) -> bool {
    selector_matches(selector, meta.labels.as_ref())
}

/// A selector given as a plain map (ReplicationController's `spec.selector`) as a `LabelSelector`.
pub fn selector_from_map(map: Option<&BTreeMap<String, String>>) -> LabelSelector {
    LabelSelector {
        match_labels: map.cloned(),
        match_expressions: None,
    }
}

/// The selector as a label-selector string for list requests (`app=web,tier in (a,b)`), through
/// `api::selector`; empty when it cannot be written.
pub fn selector_string(selector: &LabelSelector) -> String {
    serde_json::to_value(selector)
        .ok()
        .and_then(|v| api::selector::LabelSelector::from_json(&v).ok())
        .map(|s| s.to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sel(v: serde_json::Value) -> LabelSelector {
        serde_json::from_value(v).expect("selector")
    }

    #[test]
    fn selectors_match_labels_and_expressions_and_empty_matches_nothing() {
        let labels: BTreeMap<String, String> =
            [("app".into(), "web".into()), ("tier".into(), "a".into())].into();
        assert!(selector_matches(
            &sel(json!({"matchLabels": {"app": "web"}})),
            Some(&labels)
        ));
        assert!(!selector_matches(
            &sel(json!({"matchLabels": {"app": "db"}})),
            Some(&labels)
        ));
        assert!(selector_matches(
            &sel(json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]})),
            Some(&labels)
        ));
        assert!(!selector_matches(
            &sel(json!({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]})),
            Some(&labels)
        ));
        assert!(!selector_matches(&sel(json!({})), Some(&labels)));
        assert_eq!(
            selector_string(&sel(json!({"matchLabels": {"app": "web"}}))),
            "app=web"
        );
    }
}
