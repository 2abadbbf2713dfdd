//! The disruption controller (upstream `pkg/controller/disruption`, 1.32): keeps each PodDisruptionBudget's
//! status — `expectedPods`, `desiredHealthy`, `currentHealthy`, `disruptionsAllowed`, `disruptedPods`, the
//! `DisruptionAllowed` condition and `observedGeneration` — from the pods it selects and their controllers'
//! scale, so the `pods/eviction` subresource (which reads this status) can refuse an eviction that would
//! break the budget.
//!
//! - `maxUnavailable` (int or %) and a `minAvailable` percentage count against the **expected** pods: the
//!   sum of the replicas of the selected pods' controllers (a ReplicaSet owned by a Deployment counts as
//!   the Deployment; StatefulSets, ReplicaSets, ReplicationControllers), each controller once; a pod
//!   without such a controller makes the budget fail safe (0 disruptions allowed, condition reason
//!   `SyncFailed`). An int `minAvailable` counts against the selected pods.
//! - A pod is healthy when Ready, not terminating and not in `disruptedPods` (an eviction the API server
//!   granted but whose pod is not terminating yet); such entries expire after 2 minutes.
//! - `disruptionsAllowed = currentHealthy - desiredHealthy`, never negative, and 0 while no pod is expected.

use crate::workload::intstr::scaled_value;
use crate::workload::selector_matches;
use controller_runtime::{Informers, Settings, SharedInformers};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// Upstream's `DeletionTimeout`: how long an entry of `disruptedPods` waits for its pod to be deleted.
pub const DELETION_TIMEOUT: Duration = Duration::from_secs(120);

/// The controllers that give a pod's expected scale: `(uid, replicas)` of the pod's controller, as upstream's
/// `finders` (Deployment through its ReplicaSet, ReplicaSet, ReplicationController, StatefulSet).
pub trait Scales {
    /// `(uid, replicas)` of the controller `owner` (in `namespace`), if known.
    fn scale(&self, namespace: &str, owner: &OwnerReference) -> Option<(String, i32)>;
}

/// The numbers of a budget's status (upstream `updatePdbStatus`'s inputs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts {
    /// `expectedPods`.
    pub expected: i32,
    /// `desiredHealthy`.
    pub desired_healthy: i32,
    /// `currentHealthy`.
    pub current_healthy: i32,
    /// `disruptionsAllowed`.
    pub disruptions_allowed: i32,
}

/// `disruptionsAllowed` as upstream: the healthy surplus, 0 when negative or when no pod is expected.
pub fn disruptions_allowed(current_healthy: i32, desired_healthy: i32, expected: i32) -> i32 {
    let allowed = current_healthy - desired_healthy;
    if expected <= 0 || allowed <= 0 { 0 } else { allowed }
}

fn controller_of(pod: &Pod) -> Option<&OwnerReference> {
    pod.metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))
}

/// The expected scale of `pods` (upstream `getExpectedScale`).
///
/// # Errors
/// Upstream's messages for a pod without a controller or with a controller of unknown scale.
pub fn expected_scale(pods: &[&Pod], scales: &dyn Scales) -> Result<i32, String> {
    let mut by_controller: BTreeMap<String, i32> = BTreeMap::new();
    for pod in pods {
        let name = pod.metadata.name.as_deref().unwrap_or("");
        let owner = controller_of(pod).ok_or_else(|| format!("found no controller ref for pod {name:?}"))?;
        let ns = pod.metadata.namespace.as_deref().unwrap_or("");
        let (uid, replicas) = scales
            .scale(ns, owner)
            .ok_or_else(|| format!("found no controllers for pod {name:?}"))?;
        by_controller.insert(uid, replicas);
    }
    Ok(by_controller.values().sum())
}

/// `(expectedPods, desiredHealthy)` of `pdb` over its `pods` (upstream `getExpectedPodCount`).
///
/// # Errors
/// A pod whose controller is unknown (when the scale is needed) or a malformed percentage.
pub fn expected_and_desired(
    pdb: &PodDisruptionBudget,
    pods: &[&Pod],
    scales: &dyn Scales,
) -> Result<(i32, i32), String> {
    let spec = pdb.spec.clone().unwrap_or_default();
    if let Some(max) = &spec.max_unavailable {
        let expected = expected_scale(pods, scales)?;
        let max = scaled_value(max, expected, true)?;
        return Ok((expected, (expected - max).max(0)));
    }
    match &spec.min_available {
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n)) => {
            Ok((i32::try_from(pods.len()).unwrap_or(i32::MAX), *n))
        }
        Some(pct) => {
            let expected = expected_scale(pods, scales)?;
            Ok((expected, scaled_value(pct, expected, true)?))
        }
        None => Ok((0, 0)),
    }
}

/// The `disruptedPods` entries still pending at `now` (upstream `buildDisruptedPodMap`): an entry is dropped
/// once its pod is terminating or gone, or after [`DELETION_TIMEOUT`].
pub fn pending_disruptions(
    pdb: &PodDisruptionBudget,
    pods: &[&Pod],
    now: jiff::Timestamp,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(old) = pdb.status.as_ref().and_then(|s| s.disrupted_pods.as_ref()) else {
        return out;
    };
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(at) = old.get(&name) else { continue };
        let Ok(at_ts) = jiff::Timestamp::from_second(at.0.as_second()) else {
            continue;
        };
        let expires = at_ts.as_second() + i64::try_from(DELETION_TIMEOUT.as_secs()).unwrap_or(120);
        if expires < now.as_second() {
            continue;
        }
        out.insert(name, at_ts.to_string());
    }
    out
}

/// The healthy pods (upstream `countHealthyPods`): Ready, not terminating, not a pending disruption.
pub fn current_healthy(pods: &[&Pod], disrupted: &BTreeMap<String, String>) -> i32 {
    let n = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| !disrupted.contains_key(p.metadata.name.as_deref().unwrap_or("")))
        .filter(|p| crate::workload::pods::is_ready(p))
        .count();
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The pods `pdb` selects (its namespace; an empty selector selects all, a missing one none).
pub fn selected<'a>(pdb: &PodDisruptionBudget, pods: &'a [std::sync::Arc<Pod>]) -> Vec<&'a Pod> {
    let ns = pdb.metadata.namespace.as_deref();
    let Some(sel) = pdb.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return Vec::new();
    };
    pods.iter()
        .map(|p| &**p)
        .filter(|p| p.metadata.namespace.as_deref() == ns)
        .filter(|p| selector_matches(sel, p.metadata.labels.as_ref()))
        .collect()
}

/// The status `pdb` should have at `now`: the counts (or the fail-safe on `Err`) with the condition, kept
/// with its old `lastTransitionTime` when its status did not change.
pub fn desired_status(
    pdb: &PodDisruptionBudget,
    counts: Result<&Counts, &str>,
    disrupted: &BTreeMap<String, String>,
    now: jiff::Timestamp,
) -> Value {
    let generation = pdb.metadata.generation.unwrap_or(0);
    let (c, status, reason, message) = match counts {
        Ok(c) if c.disruptions_allowed > 0 => (c.clone(), "True", "SufficientPods", String::new()),
        Ok(c) => (c.clone(), "False", "InsufficientPods", String::new()),
        Err(e) => {
            let old = pdb.status.clone().unwrap_or_default();
            let c = Counts {
                expected: old.expected_pods,
                desired_healthy: old.desired_healthy,
                current_healthy: old.current_healthy,
                disruptions_allowed: 0,
            };
            (c, "False", "SyncFailed", e.to_string())
        }
    };
    let old_cond = pdb
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "DisruptionAllowed"));
    let since = match old_cond {
        Some(o) if o.status == status && o.reason == reason => o.last_transition_time.0.to_string(),
        _ => now.to_string(),
    };
    let since = since.parse::<jiff::Timestamp>().map_or(since, |t| {
        t.round(jiff::Unit::Second)
            .map_or_else(|_| t.to_string(), |t| t.to_string())
    });
    let mut dp = Map::new();
    for (k, v) in disrupted {
        dp.insert(k.clone(), json!(v));
    }
    let mut st = json!({
        "observedGeneration": generation,
        "disruptionsAllowed": c.disruptions_allowed,
        "currentHealthy": c.current_healthy,
        "desiredHealthy": c.desired_healthy,
        "expectedPods": c.expected,
        "conditions": [{"type": "DisruptionAllowed", "status": status, "reason": reason, "message": message,
                        "observedGeneration": generation, "lastTransitionTime": since}],
    });
    if !dp.is_empty() {
        st["disruptedPods"] = Value::Object(dp);
    }
    st
}

struct Caches {
    rs: Vec<std::sync::Arc<ReplicaSet>>,
    deploy: Vec<std::sync::Arc<Deployment>>,
    sts: Vec<std::sync::Arc<StatefulSet>>,
    rc: Vec<std::sync::Arc<ReplicationController>>,
}

fn find<'a, T: kube::Resource>(items: &'a [std::sync::Arc<T>], ns: &str, uid: &str) -> Option<&'a T> {
    items
        .iter()
        .map(|x| &**x)
        .find(|x| x.meta().namespace.as_deref() == Some(ns) && x.meta().uid.as_deref() == Some(uid))
}

impl Scales for Caches {
    fn scale(&self, ns: &str, owner: &OwnerReference) -> Option<(String, i32)> {
        let uid = owner.uid.as_str();
        match (owner.api_version.as_str(), owner.kind.as_str()) {
            ("apps/v1", "ReplicaSet") => {
                let rs = find(&self.rs, ns, uid)?;
                let parent = rs.metadata.owner_references.as_ref().and_then(|o| {
                    o.iter()
                        .find(|o| o.controller == Some(true) && o.kind == "Deployment")
                });
                match parent {
                    Some(d) => {
                        let d = find(&self.deploy, ns, &d.uid)?;
                        Some((d.metadata.uid.clone()?, d.spec.as_ref()?.replicas.unwrap_or(1)))
                    }
                    None => Some((uid.to_string(), rs.spec.as_ref()?.replicas.unwrap_or(1))),
                }
            }
            ("apps/v1", "StatefulSet") => {
                let s = find(&self.sts, ns, uid)?;
                Some((uid.to_string(), s.spec.as_ref()?.replicas.unwrap_or(1)))
            }
            ("v1", "ReplicationController") => {
                let r = find(&self.rc, ns, uid)?;
                Some((uid.to_string(), r.spec.as_ref()?.replicas.unwrap_or(1)))
            }
            _ => None,
        }
    }
}

/// Run until the process ends: caches of budgets, pods and the workload controllers; each pass writes
/// the status of every budget whose status differs from what it should be.
pub async fn run(client: kube::Client, shared: SharedInformers) {
    let cfg = watcher::Config::default().any_semantic();
    let mut informers = Informers::new();
    let pdbs = informers.watch_shared(
        &shared,
        Api::<PodDisruptionBudget>::all(client.clone()),
        cfg.clone(),
    );
    let pods = informers.watch_shared(&shared, Api::<Pod>::all(client.clone()), cfg.clone());
    let rs = informers.watch_shared(&shared, Api::<ReplicaSet>::all(client.clone()), cfg.clone());
    let deploy = informers.watch_shared(&shared, Api::<Deployment>::all(client.clone()), cfg.clone());
    let sts = informers.watch_shared(&shared, Api::<StatefulSet>::all(client.clone()), cfg.clone());
    let rc = informers.watch_shared(&shared, Api::<ReplicationController>::all(client.clone()), cfg);
    let settings = Settings {
        // Pending disruptions expire on the clock, not on an event.
        resync: Duration::from_secs(15),
        ..Settings::default()
    };
    let mut passes = informers.into_loop("disruption", settings);
    while let Some(mut pass) = passes.next_pass().await {
        let all_pods = pods.state();
        let caches = Caches {
            rs: rs.state(),
            deploy: deploy.state(),
            sts: sts.state(),
            rc: rc.state(),
        };
        let now = jiff::Timestamp::now();
        for pdb in pdbs.state() {
            let chosen = selected(&pdb, &all_pods);
            let disrupted = pending_disruptions(&pdb, &chosen, now);
            let counts = expected_and_desired(&pdb, &chosen, &caches).map(|(expected, desired)| {
                let healthy = current_healthy(&chosen, &disrupted);
                Counts {
                    expected,
                    desired_healthy: desired,
                    current_healthy: healthy,
                    disruptions_allowed: disruptions_allowed(healthy, desired, expected),
                }
            });
            let want = desired_status(&pdb, counts.as_ref().map_err(String::as_str), &disrupted, now);
            let have = serde_json::to_value(&pdb.status).unwrap_or(Value::Null);
            if same_status(&have, &want) {
                continue;
            }
            let ns = pdb.metadata.namespace.clone().unwrap_or_default();
            let name = pdb.metadata.name.clone().unwrap_or_default();
            let api: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns);
            // The cached resourceVersion makes the write a compare-and-swap: an eviction that
            // decremented the budget meanwhile wins, and the next pass recomputes.
            let mut want = want;
            if want.get("disruptedPods").is_none() {
                // A merge patch keeps keys it does not name: an emptied map is removed explicitly.
                want["disruptedPods"] = Value::Null;
            }
            let patch = json!({"metadata": {"resourceVersion": pdb.metadata.resource_version},
                               "status": want});
            pass.step(&format!("PodDisruptionBudget {ns}/{name}"), async move {
                api.patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                    .map(|_| ())
            })
            .await;
        }
    }
}

/// Whether the stored status already says what `want` says (timestamps compared as instants).
fn same_status(have: &Value, want: &Value) -> bool {
    let norm = |v: &Value| {
        let mut v = v.clone();
        if let Some(cs) = v.get_mut("conditions").and_then(Value::as_array_mut) {
            for c in cs {
                for k in ["lastTransitionTime"] {
                    if let Some(t) = c
                        .get(k)
                        .and_then(Value::as_str)
                        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                    {
                        c[k] = json!(t.as_second());
                    }
                }
                if c.get("message").is_some_and(|m| m == "") {
                    c.as_object_mut().map(|o| o.remove("message"));
                }
            }
        }
        if let Some(dp) = v.get_mut("disruptedPods").and_then(Value::as_object_mut) {
            for (_, t) in dp.iter_mut() {
                if let Some(ts) = t.as_str().and_then(|s| s.parse::<jiff::Timestamp>().ok()) {
                    *t = json!(ts.as_second());
                }
            }
        }
        v
    };
    norm(have) == norm(want)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Vec<(&'static str, i32)>);
    impl Scales for Fixed {
        fn scale(&self, _: &str, owner: &OwnerReference) -> Option<(String, i32)> {
            self.0
                .iter()
                .find(|(uid, _)| *uid == owner.uid)
                .map(|(uid, n)| (uid.to_string(), *n))
        }
    }

    fn pod(name: &str, owner: &str, ready: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web",
                                              "uid": owner, "controller": true}]},
            "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
        }))
        .expect("pod")
    }

    fn pdb(spec: Value) -> PodDisruptionBudget {
        serde_json::from_value(
            json!({"metadata": {"name": "b", "namespace": "default", "generation": 1},
                                      "spec": spec}),
        )
        .expect("pdb")
    }

    #[test]
    fn max_unavailable_counts_against_the_controllers_scale() {
        let pods = [
            pod("web-0", "u1", true),
            pod("web-1", "u1", true),
            pod("web-2", "u1", false),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let scales = Fixed(vec![("u1", 3)]);
        let b = pdb(json!({"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}}));
        let (expected, desired) = expected_and_desired(&b, &refs, &scales).expect("counts");
        assert_eq!((expected, desired), (3, 2));
        let healthy = current_healthy(&refs, &BTreeMap::new());
        assert_eq!(healthy, 2);
        assert_eq!(disruptions_allowed(healthy, desired, expected), 0);
        // All three ready: one may go.
        let pods = [
            pod("web-0", "u1", true),
            pod("web-1", "u1", true),
            pod("web-2", "u1", true),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        assert_eq!(
            disruptions_allowed(current_healthy(&refs, &BTreeMap::new()), 2, 3),
            1
        );
        // A granted eviction whose pod is not terminating yet is not healthy.
        let disrupted = BTreeMap::from([("web-0".to_string(), "2026-01-01T00:00:00Z".to_string())]);
        assert_eq!(current_healthy(&refs, &disrupted), 2);
    }

    #[test]
    fn min_available_int_counts_pods_and_percent_rounds_up() {
        let pods = [pod("a", "u1", true), pod("b", "u1", true)];
        let refs: Vec<&Pod> = pods.iter().collect();
        let scales = Fixed(vec![("u1", 3)]);
        let b = pdb(json!({"minAvailable": 1, "selector": {}}));
        assert_eq!(expected_and_desired(&b, &refs, &scales), Ok((2, 1)));
        let b = pdb(json!({"minAvailable": "50%", "selector": {}}));
        assert_eq!(expected_and_desired(&b, &refs, &scales), Ok((3, 2)));
        let b = pdb(json!({"maxUnavailable": "50%", "selector": {}}));
        assert_eq!(expected_and_desired(&b, &refs, &scales), Ok((3, 1)));
        // A pod without a known controller: fail safe.
        let none = Fixed(vec![]);
        assert_eq!(
            expected_and_desired(&b, &refs, &none),
            Err("found no controllers for pod \"a\"".to_string())
        );
        assert_eq!(disruptions_allowed(5, 0, 0), 0, "nothing expected yet");
    }

    #[test]
    fn status_carries_the_condition_and_the_generation() {
        let b = pdb(json!({"maxUnavailable": 1, "selector": {}}));
        let now: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().expect("ts");
        let c = Counts {
            expected: 3,
            desired_healthy: 2,
            current_healthy: 3,
            disruptions_allowed: 1,
        };
        let st = desired_status(&b, Ok(&c), &BTreeMap::new(), now);
        assert_eq!(st["disruptionsAllowed"], 1);
        assert_eq!(st["observedGeneration"], 1);
        assert_eq!(st["conditions"][0]["reason"], "SufficientPods");
        let st = desired_status(&b, Err("found no controllers"), &BTreeMap::new(), now);
        assert_eq!(st["conditions"][0]["reason"], "SyncFailed");
        assert_eq!(st["disruptionsAllowed"], 0);
    }
}
