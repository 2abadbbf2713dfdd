//! Table tests of the Deployment plan and a property test over an in-memory cluster: the real executor
//! writes through [`Objects`] into the cluster, a simulated ReplicaSet controller and kubelet move pods,
//! and the invariants are checked after every step.

use super::plan::{self, Observed, Step, max_surge, max_unavailable, plan};
use super::{Objects, Outcome, execute};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Mutex;

fn ts(s: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(s).expect("ts")
}

fn deployment(replicas: i32, image: &str, strategy: Value) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "d-uid", "generation": 1, "resourceVersion": "1"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
            "strategy": strategy, "revisionHistoryLimit": 2, "progressDeadlineSeconds": 600,
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": image}]}}}
    }))
    .expect("deployment")
}

fn rolling(surge: Value, unavailable: Value) -> Value {
    json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}})
}

fn run(d: &Deployment, rss: &[ReplicaSet], now: i64) -> plan::Plan {
    let refs: Vec<&ReplicaSet> = rss.iter().collect();
    plan(&Observed {
        deployment: d,
        replica_sets: &refs,
        pods: &[],
        now: ts(now),
    })
}

fn created(p: &plan::Plan) -> Vec<&ReplicaSet> {
    p.steps
        .iter()
        .filter_map(|s| match s {
            Step::CreateReplicaSet(r) => Some(r),
            _ => None,
        })
        .collect()
}

fn scaled(p: &plan::Plan) -> Vec<(String, i32)> {
    p.steps
        .iter()
        .filter_map(|s| match s {
            Step::UpdateReplicaSet { name, replicas, .. } => Some((name.clone(), *replicas)),
            _ => None,
        })
        .collect()
}

/// A ReplicaSet of `d` as the controller would have made it, with `replicas` of which `available` are.
fn rs_of(
    d: &Deployment,
    image: &str,
    replicas: i32,
    available: i32,
    revision: i64,
    created_at: i64,
) -> ReplicaSet {
    let mut d2 = d.clone();
    d2.spec
        .as_mut()
        .expect("spec")
        .template
        .spec
        .as_mut()
        .expect("ps")
        .containers[0]
        .image = Some(image.into());
    d2.spec.as_mut().expect("spec").paused = None;
    let p = run(&d2, &[], 0);
    let mut rs = created(&p)[0].clone();
    rs.metadata.uid = Some(format!("uid-{image}"));
    rs.metadata.resource_version = Some("7".into());
    rs.metadata.creation_timestamp = Some(Time(ts(created_at)));
    rs.metadata.generation = Some(1);
    rs.spec.as_mut().expect("spec").replicas = Some(replicas);
    rs.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(plan::REVISION.into(), revision.to_string());
    rs.status = Some(ReplicaSetStatus {
        replicas,
        ready_replicas: Some(available),
        available_replicas: Some(available),
        observed_generation: Some(1),
        ..ReplicaSetStatus::default()
    });
    rs
}

#[test]
fn fenceposts_default_to_a_quarter_each_with_upstream_rounding() {
    let q = || rolling(json!("25%"), json!("25%"));
    // (replicas, strategy) → (maxSurge, maxUnavailable)
    let cases = [
        (10, q(), (3, 2)),
        (1, q(), (1, 0)),
        (4, q(), (1, 1)),
        (3, rolling(json!(0), json!("10%")), (0, 1)),
        (5, rolling(json!(2), json!(9)), (2, 5)),
        (5, json!({"type": "Recreate"}), (0, 0)),
    ];
    for (replicas, strategy, want) in cases {
        let d = deployment(replicas, "v1", strategy.clone());
        assert_eq!(
            (max_surge(&d), max_unavailable(&d)),
            want,
            "{replicas} {strategy}"
        );
    }
}

#[test]
fn a_new_deployment_creates_its_hashed_replica_set_at_full_size_with_revision_one() {
    let d = deployment(3, "v1", rolling(json!("25%"), json!("25%")));
    let p = run(&d, &[], 100);
    let rs = created(&p)[0];
    let name = rs.metadata.name.clone().expect("name");
    let hash = name.strip_prefix("web-").expect("prefix").to_string();
    let spec = rs.spec.as_ref().expect("spec");
    assert_eq!(spec.replicas, Some(3));
    assert_eq!(
        spec.selector
            .match_labels
            .as_ref()
            .and_then(|m| m.get("pod-template-hash")),
        Some(&hash)
    );
    let tl = spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .expect("labels");
    assert_eq!(tl.get("pod-template-hash"), Some(&hash));
    let a = rs.metadata.annotations.clone().expect("annotations");
    assert_eq!(a.get(plan::REVISION).map(String::as_str), Some("1"));
    assert_eq!(a.get(plan::DESIRED_REPLICAS).map(String::as_str), Some("3"));
    assert_eq!(a.get(plan::MAX_REPLICAS).map(String::as_str), Some("4"));
    assert!(p.steps.contains(&Step::SetRevision("1".into())));
    let owner = &rs.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("Deployment", Some(true))
    );
    // The same template always gives the same name.
    assert_eq!(created(&run(&d, &[], 5))[0].metadata.name, rs.metadata.name);
}

#[test]
fn a_rolling_update_surges_then_scales_old_down_within_the_budget() {
    let mut d = deployment(10, "v2", rolling(json!("25%"), json!("25%")));
    let old = rs_of(&d, "v1", 10, 10, 1, 10);
    // Step 1: the new set is created at maxSurge (3), and in the same sync (as upstream, whose
    // `reconcileNewReplicaSet` finds nothing more to scale up) the old one goes 10 → 8: 13 pods asked
    // for, 3 of them new and unavailable, 8 must stay available.
    let p = run(&d, std::slice::from_ref(&old), 100);
    assert_eq!(created(&p)[0].spec.as_ref().and_then(|s| s.replicas), Some(3));
    assert_eq!(scaled(&p), [(old.metadata.name.clone().expect("n"), 8)]);
    // Step 2: the new set's 3 available, old at 8 (11 pods): the new set grows to 5 (13 with the surge).
    let mut old8 = old.clone();
    old8.spec.as_mut().expect("s").replicas = Some(8);
    old8.status.as_mut().expect("st").available_replicas = Some(8);
    let new = rs_of(&d, "v2", 3, 3, 2, 20);
    let p = run(&d, &[old8.clone(), new.clone()], 100);
    assert_eq!(scaled(&p), [(new.metadata.name.clone().expect("n"), 5)]);
    // maxSurge 0, maxUnavailable 1: old goes first, one at a time.
    d = deployment(3, "v2", rolling(json!(0), json!(1)));
    let old = rs_of(&d, "v1", 3, 3, 1, 10);
    let p = run(&d, std::slice::from_ref(&old), 100);
    assert_eq!(created(&p)[0].spec.as_ref().and_then(|s| s.replicas), Some(0));
    let new = rs_of(&d, "v2", 0, 0, 2, 20);
    let p = run(&d, &[old.clone(), new.clone()], 100);
    assert_eq!(scaled(&p), [(old.metadata.name.clone().expect("n"), 2)]);
    // Unhealthy old replicas are cleaned up first, as many as the budget allows (4 asked for, 3 must stay
    // available: one).
    d = deployment(4, "v2", rolling(json!(0), json!(1)));
    let sick = rs_of(&d, "v1", 4, 1, 1, 10);
    let new = rs_of(&d, "v2", 0, 0, 2, 20);
    let p = run(&d, &[sick.clone(), new], 100);
    assert_eq!(
        scaled(&p),
        [(sick.metadata.name.clone().expect("n"), 3)],
        "{:?}",
        p.steps
    );
}

#[test]
fn recreate_scales_old_to_zero_and_waits_for_old_pods_before_the_new_set() {
    let d = deployment(2, "v2", json!({"type": "Recreate"}));
    let old = rs_of(&d, "v1", 2, 2, 1, 10);
    let p = run(&d, std::slice::from_ref(&old), 100);
    assert_eq!(scaled(&p), [(old.metadata.name.clone().expect("n"), 0)]);
    assert!(created(&p).is_empty());
    // Scaled to 0 but its pods still reported: wait.
    let mut draining = old.clone();
    draining.spec.as_mut().expect("s").replicas = Some(0);
    let p = run(&d, std::slice::from_ref(&draining), 100);
    assert!(created(&p).is_empty() && scaled(&p).is_empty(), "{:?}", p.steps);
    // Gone: the new set at full size.
    draining.status = Some(ReplicaSetStatus::default());
    let p = run(&d, &[draining], 100);
    assert_eq!(created(&p)[0].spec.as_ref().and_then(|s| s.replicas), Some(2));
}

#[test]
fn scaling_during_a_rollout_is_proportional() {
    // Upstream's documented example: 10 replicas, maxSurge 3, maxUnavailable 2, mid-rollout 8 old + 5 new,
    // scaled to 15: 5 more replicas (to 18 with the surge) split 3 to the old set, 2 to the new one.
    let mut d = deployment(15, "v2", rolling(json!(3), json!(2)));
    let old = rs_of(&d, "v1", 8, 8, 1, 10);
    let new = rs_of(&d, "v2", 5, 0, 2, 20);
    let with_max = |mut r: ReplicaSet| {
        let a = r.metadata.annotations.get_or_insert_with(BTreeMap::new);
        a.insert(plan::DESIRED_REPLICAS.into(), "10".into());
        a.insert(plan::MAX_REPLICAS.into(), "13".into());
        r
    };
    let (old, new) = (with_max(old), with_max(new));
    d.metadata.generation = Some(2);
    let p = run(&d, &[old.clone(), new.clone()], 100);
    let mut got = scaled(&p);
    got.sort();
    let mut want = vec![
        (old.metadata.name.clone().expect("n"), 11),
        (new.metadata.name.clone().expect("n"), 7),
    ];
    want.sort();
    assert_eq!(got, want, "{:?}", p.steps);
}

#[test]
fn rollback_reuses_the_old_set_with_the_next_revision_and_history() {
    let d = deployment(2, "v1", rolling(json!("25%"), json!("25%")));
    let v1 = rs_of(&d, "v1", 0, 0, 1, 10);
    let v2 = rs_of(&d, "v2", 2, 2, 2, 20);
    let p = run(&d, &[v1.clone(), v2], 100);
    let upd = p
        .steps
        .iter()
        .find_map(|s| match s {
            Step::UpdateReplicaSet {
                name, annotations, ..
            } if Some(name) == v1.metadata.name.as_ref() => Some(annotations.clone()),
            _ => None,
        })
        .expect("v1 updated");
    assert_eq!(upd.get(plan::REVISION).map(String::as_str), Some("3"));
    assert_eq!(upd.get(plan::REVISION_HISTORY).map(String::as_str), Some("1"));
}

#[test]
fn history_beyond_the_limit_is_deleted_oldest_first_and_only_when_empty() {
    let d = deployment(1, "v5", rolling(json!("25%"), json!("25%")));
    let mut rss: Vec<ReplicaSet> = (1..=4)
        .map(|i| rs_of(&d, &format!("v{i}"), 0, 0, i, i * 10))
        .collect();
    rss[1].status.as_mut().expect("st").replicas = 1; // still has a pod: kept
    rss.push(rs_of(&d, "v5", 1, 1, 5, 50));
    let mut d = d;
    d.status = Some(DeploymentStatus {
        observed_generation: Some(1),
        replicas: Some(1),
        updated_replicas: Some(1),
        available_replicas: Some(1),
        ..DeploymentStatus::default()
    });
    let p = run(&d, &rss, 100);
    let deleted: Vec<String> = p
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::DeleteReplicaSet { name, .. } => Some(name.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        deleted,
        [rss[0].metadata.name.clone().expect("n")],
        "4 old, limit 2: the two oldest, minus the one with pods"
    );
}

#[test]
fn paused_deployments_do_not_roll_and_say_so_and_deadlines_time_out() {
    let mut d = deployment(2, "v2", rolling(json!("25%"), json!("25%")));
    d.spec.as_mut().expect("s").paused = Some(true);
    let old = rs_of(&d, "v1", 2, 2, 1, 10);
    let p = run(&d, std::slice::from_ref(&old), 100);
    assert!(created(&p).is_empty());
    let st = p
        .steps
        .iter()
        .rev()
        .find_map(|s| match s {
            Step::UpdateStatus(st) => Some(st.clone()),
            _ => None,
        })
        .expect("status");
    let prog = st
        .conditions
        .as_ref()
        .and_then(|c| c.iter().find(|c| c.type_ == "Progressing"))
        .expect("progressing");
    assert_eq!(
        (prog.status.as_str(), prog.reason.as_deref()),
        ("Unknown", Some(plan::reason::PAUSED))
    );

    // A rollout without progress for progressDeadlineSeconds: ProgressDeadlineExceeded.
    let mut d = deployment(2, "v2", rolling(json!(1), json!(0)));
    let old = rs_of(&d, "v1", 2, 2, 1, 10);
    let new = rs_of(&d, "v2", 1, 0, 2, 20);
    d.status = Some(
        serde_json::from_value(
            json!({"observedGeneration": 1, "replicas": 3, "updatedReplicas": 1,
        "readyReplicas": 2, "availableReplicas": 2, "unavailableReplicas": 1,
        "conditions": [{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
            "lastUpdateTime": ts(100).to_string(), "lastTransitionTime": ts(100).to_string()}]}),
        )
        .expect("st"),
    );
    let p = run(&d, &[old.clone(), new.clone()], 650);
    assert!(
        p.requeue_after.is_some(),
        "not yet: look again before the deadline"
    );
    let p = run(&d, &[old, new], 701);
    let st = p
        .steps
        .iter()
        .find_map(|s| match s {
            Step::UpdateStatus(st) => Some(st.clone()),
            _ => None,
        })
        .expect("status");
    let prog = st
        .conditions
        .as_ref()
        .and_then(|c| c.iter().find(|c| c.type_ == "Progressing"))
        .expect("progressing");
    assert_eq!(
        (prog.status.as_str(), prog.reason.as_deref()),
        ("False", Some(plan::reason::TIMED_OUT))
    );
}

#[test]
fn a_hash_collision_bumps_the_collision_count_and_renames() {
    let d = deployment(1, "v1", rolling(json!("25%"), json!("25%")));
    let mut squatter = created(&run(&d, &[], 0))[0].clone();
    squatter.metadata.owner_references = None;
    squatter.metadata.labels = Some([("other".to_string(), "x".to_string())].into());
    squatter
        .spec
        .as_mut()
        .expect("s")
        .template
        .as_mut()
        .expect("t")
        .spec
        .as_mut()
        .expect("ps")
        .containers[0]
        .image = Some("other".into());
    let p = run(&d, std::slice::from_ref(&squatter), 1);
    assert!(created(&p).is_empty());
    let st = p
        .steps
        .iter()
        .find_map(|s| match s {
            Step::UpdateStatus(st) => Some(st.clone()),
            _ => None,
        })
        .expect("status");
    assert_eq!(st.collision_count, Some(1));
    let mut d2 = d.clone();
    d2.status = Some(st);
    let renamed = created(&run(&d2, &[squatter.clone()], 2))[0]
        .metadata
        .name
        .clone();
    assert_ne!(renamed, squatter.metadata.name);
}

// ---- property test ----

/// The in-memory cluster: the Deployment, its ReplicaSets, and per set a list of pods (true = available).
struct World {
    inner: Mutex<Inner>,
}

struct Inner {
    d: Deployment,
    rss: BTreeMap<String, ReplicaSet>,
    pods: BTreeMap<String, Vec<bool>>,
    rv: u64,
    now: i64,
}

fn conflict() -> kube::Error {
    kube::Error::Api(
        kube::core::Status::failure("conflict", "Conflict")
            .with_code(409)
            .boxed(),
    )
}

impl Inner {
    fn bump(&mut self) -> String {
        self.rv += 1;
        self.rv.to_string()
    }

    /// The ReplicaSet controller and kubelet's view: each set's status from its pods.
    fn refresh(&mut self, name: &str) {
        let pods = self.pods.get(name).cloned().unwrap_or_default();
        if let Some(rs) = self.rss.get_mut(name) {
            let available = pods.iter().filter(|a| **a).count() as i32;
            rs.status = Some(ReplicaSetStatus {
                replicas: pods.len() as i32,
                ready_replicas: Some(available),
                available_replicas: Some(available),
                fully_labeled_replicas: Some(pods.len() as i32),
                observed_generation: rs.metadata.generation,
                ..ReplicaSetStatus::default()
            });
        }
    }
}

impl Objects for World {
    async fn can_adopt(&self) -> Result<(), String> {
        Ok(())
    }

    async fn set_owners(
        &self,
        name: &str,
        _uid: &str,
        owner_references: &[OwnerReference],
    ) -> Result<(), kube::Error> {
        let mut w = self.inner.lock().expect("lock");
        let rv = w.bump();
        let rs = w.rss.get_mut(name).ok_or_else(conflict)?;
        rs.metadata.owner_references = Some(owner_references.to_vec());
        rs.metadata.resource_version = Some(rv);
        Ok(())
    }

    async fn create_replica_set(&self, rs: &ReplicaSet) -> Result<String, kube::Error> {
        let mut w = self.inner.lock().expect("lock");
        let name = rs.metadata.name.clone().expect("name");
        if w.rss.contains_key(&name) {
            return Err(conflict());
        }
        let mut rs = rs.clone();
        rs.metadata.uid = Some(format!("uid-{name}"));
        let rv = w.bump();
        rs.metadata.resource_version = Some(rv.clone());
        rs.metadata.generation = Some(1);
        rs.metadata.creation_timestamp = Some(Time(ts(w.now)));
        w.now += 1;
        w.rss.insert(name, rs);
        Ok(rv)
    }

    async fn update_replica_set(
        &self,
        name: &str,
        resource_version: &str,
        replicas: i32,
        min_ready_seconds: i32,
        annotations: &BTreeMap<String, String>,
    ) -> Result<String, kube::Error> {
        let mut w = self.inner.lock().expect("lock");
        let rv = w.bump();
        let rs = w.rss.get_mut(name).ok_or_else(conflict)?;
        if rs.metadata.resource_version.as_deref() != Some(resource_version) {
            return Err(conflict());
        }
        let spec = rs.spec.as_mut().expect("spec");
        if spec.replicas != Some(replicas) || spec.min_ready_seconds != Some(min_ready_seconds) {
            rs.metadata.generation = Some(rs.metadata.generation.unwrap_or(1) + 1);
        }
        spec.replicas = Some(replicas);
        spec.min_ready_seconds = Some(min_ready_seconds);
        rs.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .extend(annotations.clone());
        rs.metadata.resource_version = Some(rv.clone());
        Ok(rv)
    }

    async fn delete_replica_set(&self, name: &str, _uid: &str) -> Result<(), kube::Error> {
        let mut w = self.inner.lock().expect("lock");
        w.rss.remove(name);
        w.pods.remove(name);
        Ok(())
    }

    async fn set_revision(&self, resource_version: &str, revision: &str) -> Result<String, kube::Error> {
        let mut w = self.inner.lock().expect("lock");
        if w.d.metadata.resource_version.as_deref() != Some(resource_version) {
            return Err(conflict());
        }
        let rv = w.bump();
        w.d.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(plan::REVISION.into(), revision.into());
        w.d.metadata.resource_version = Some(rv.clone());
        Ok(rv)
    }

    async fn update_status(
        &self,
        resource_version: &str,
        status: &DeploymentStatus,
    ) -> Result<String, kube::Error> {
        let mut w = self.inner.lock().expect("lock");
        if w.d.metadata.resource_version.as_deref() != Some(resource_version) {
            return Err(conflict());
        }
        let rv = w.bump();
        w.d.status = Some(status.clone());
        w.d.metadata.resource_version = Some(rv.clone());
        Ok(rv)
    }

    async fn event(&self, _type: &str, _reason: &str, _message: &str) {}
}

impl World {
    /// A controller sync, re-planned at once after a conflict as the loop does (a few times at most).
    fn sync(&self) -> Outcome {
        for _ in 0..3 {
            if self.sync_once() == Outcome::Done {
                return Outcome::Done;
            }
        }
        Outcome::Replan
    }

    fn sync_once(&self) -> Outcome {
        let (d, rss, now) = {
            let w = self.inner.lock().expect("lock");
            (w.d.clone(), w.rss.values().cloned().collect::<Vec<_>>(), w.now)
        };
        let refs: Vec<&ReplicaSet> = rss.iter().collect();
        let p = plan(&Observed {
            deployment: &d,
            replica_sets: &refs,
            pods: &[] as &[&Pod],
            now: ts(now),
        });
        futures::executor::block_on(execute(self, &d, p.steps)).expect("no hard errors")
    }

    /// The ReplicaSet controller: each set to its size (surplus pods go unavailable-first).
    fn rs_controller(&self) {
        let mut w = self.inner.lock().expect("lock");
        let names: Vec<String> = w.rss.keys().cloned().collect();
        for n in names {
            let want = w.rss[&n]
                .spec
                .as_ref()
                .and_then(|s| s.replicas)
                .unwrap_or(0)
                .max(0) as usize;
            let pods = w.pods.entry(n.clone()).or_default();
            pods.sort(); // false (unavailable) first
            while pods.len() > want {
                pods.remove(0);
            }
            while pods.len() < want {
                pods.insert(0, false);
            }
            w.refresh(&n);
        }
    }

    fn kubelet(&self, i: usize) {
        let mut w = self.inner.lock().expect("lock");
        let names: Vec<String> = w.pods.keys().cloned().collect();
        if names.is_empty() {
            return;
        }
        let n = names[i % names.len()].clone();
        if let Some(p) = w.pods.get_mut(&n).and_then(|ps| ps.iter_mut().find(|a| !**a)) {
            *p = true;
        }
        w.refresh(&n);
    }

    /// Whether some active set was sized for another `replicas` (upstream `isScalingEvent`).
    fn scaling_pending(&self) -> bool {
        let w = self.inner.lock().expect("lock");
        let want =
            w.d.spec
                .as_ref()
                .and_then(|s| s.replicas)
                .unwrap_or(0)
                .to_string();
        w.rss.values().any(|r| {
            r.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0) > 0
                && r.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(plan::DESIRED_REPLICAS))
                    != Some(&want)
        })
    }

    fn totals(&self) -> (i32, i32) {
        let w = self.inner.lock().expect("lock");
        let spec: i32 = w
            .rss
            .values()
            .map(|r| r.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0))
            .sum();
        let available = w.pods.values().flatten().filter(|a| **a).count() as i32;
        (spec, available)
    }
}

#[derive(Debug, Clone)]
enum Op {
    Sync,
    RsController,
    Kubelet(usize),
    SetImage(u8),
    Scale(i32),
    Pause(bool),
    Tick,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => Just(Op::Sync),
        4 => Just(Op::RsController),
        6 => any::<usize>().prop_map(Op::Kubelet),
        1 => (0u8..4).prop_map(Op::SetImage),
        1 => (0i32..12).prop_map(Op::Scale),
        1 => any::<bool>().prop_map(Op::Pause),
        1 => Just(Op::Tick),
    ]
}

fn strategy() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(rolling(json!("25%"), json!("25%"))),
        Just(rolling(json!(1), json!(0))),
        Just(rolling(json!(0), json!(1))),
        Just(rolling(json!("50%"), json!("30%"))),
        Just(json!({"type": "Recreate"})),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 150, ..ProptestConfig::default() })]

    /// After every sync a Deployment's ReplicaSets together ask for at most `replicas + maxSurge` pods;
    /// once `replicas − maxUnavailable` pods are available, a rollout never takes them below that (until
    /// the Deployment is scaled); in the end the newest set alone holds every replica, all available,
    /// the status says so with `NewReplicaSetAvailable`, and no more than `revisionHistoryLimit` old sets
    /// are left.
    #[test]
    fn rollouts_keep_surge_and_availability_bounds_and_converge(
        replicas in 0i32..8, strat in strategy(), ops in prop::collection::vec(op(), 1..100)
    ) {
        let w = World {
            inner: Mutex::new(Inner {
                d: deployment(replicas, "v0", strat.clone()),
                rss: BTreeMap::new(),
                pods: BTreeMap::new(),
                rv: 1,
                now: 1_000,
            }),
        };
        let recreate = strat["type"] == "Recreate";
        let mut floor_reached = false;
        let mut scaled_now = false;
        let mut generation = 1;
        for o in ops {
            match o {
                Op::Sync => {
                    // The ReplicaSet controller acts on the new sizes before any pod changes readiness
                    // (otherwise a pod turning Ready just as its set is scaled down may be the one
                    // deleted: upstream's race too).
                    // A sync that answers a scale of the Deployment spreads it proportionally, which may
                    // take availability down with it: the floor holds again from the next rollout on.
                    if w.scaling_pending() {
                        floor_reached = false;
                        scaled_now = true;
                    }
                    w.sync();
                    w.rs_controller();
                    let d = w.inner.lock().expect("lock").d.clone();
                    let (spec, _) = w.totals();
                    let bound = plan::max_surge(&d) + d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
                    prop_assert!(spec <= bound, "ReplicaSets ask for {spec} > replicas + maxSurge = {bound}");
                }
                Op::RsController => w.rs_controller(),
                Op::Kubelet(i) => w.kubelet(i),
                Op::SetImage(v) => {
                    let mut g = w.inner.lock().expect("lock");
                    let spec = g.d.spec.as_mut().expect("spec");
                    let image = format!("v{v}");
                    let c = &mut spec.template.spec.as_mut().expect("ps").containers[0];
                    if c.image.as_deref() != Some(image.as_str()) {
                        c.image = Some(image);
                        generation += 1;
                        g.d.metadata.generation = Some(generation);
                        let rv = g.bump();
                        g.d.metadata.resource_version = Some(rv);
                    }
                }
                Op::Scale(n) => {
                    let mut g = w.inner.lock().expect("lock");
                    g.d.spec.as_mut().expect("spec").replicas = Some(n);
                    generation += 1;
                    g.d.metadata.generation = Some(generation);
                    let rv = g.bump();
                    g.d.metadata.resource_version = Some(rv);
                    floor_reached = false;
                }
                Op::Pause(p) => {
                    let mut g = w.inner.lock().expect("lock");
                    g.d.spec.as_mut().expect("spec").paused = Some(p);
                    let rv = g.bump();
                    g.d.metadata.resource_version = Some(rv);
                }
                Op::Tick => w.inner.lock().expect("lock").now += 5,
            }
            if !recreate && !std::mem::take(&mut scaled_now) {
                let d = w.inner.lock().expect("lock").d.clone();
                let min = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0) - plan::max_unavailable(&d);
                let (_, available) = w.totals();
                if floor_reached {
                    prop_assert!(available >= min, "available {available} < replicas - maxUnavailable = {min}");
                }
                floor_reached |= available >= min;
            }
        }
        // Converge (resumed).
        {
            let mut g = w.inner.lock().expect("lock");
            g.d.spec.as_mut().expect("spec").paused = Some(false);
            let rv = g.bump();
            g.d.metadata.resource_version = Some(rv);
        }
        for round in 0..60 {
            w.sync();
            w.rs_controller();
            for i in 0..10 {
                w.kubelet(i + round);
            }
            w.inner.lock().expect("lock").now += 1;
        }
        w.sync();
        let g = w.inner.lock().expect("lock");
        let want = g.d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        let st = g.d.status.clone().unwrap_or_default();
        prop_assert_eq!(st.updated_replicas.unwrap_or(0), want);
        prop_assert_eq!(st.available_replicas.unwrap_or(0), want);
        prop_assert_eq!(st.replicas.unwrap_or(0), want);
        let image = g.d.spec.as_ref().and_then(|s| s.template.spec.as_ref()).and_then(|p| p.containers[0].image.clone());
        let holders: Vec<&ReplicaSet> = g.rss.values().filter(|r| r.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0) > 0).collect();
        if want > 0 {
            prop_assert_eq!(holders.len(), 1);
            let t = holders[0].spec.as_ref().and_then(|s| s.template.as_ref()).and_then(|t| t.spec.as_ref()).map(|p| p.containers[0].image.clone());
            prop_assert_eq!(t, Some(image));
        }
        let prog = st.conditions.clone().unwrap_or_default().into_iter().find(|c| c.type_ == "Progressing");
        prop_assert_eq!(prog.and_then(|c| c.reason), Some(plan::reason::NEW_RS_AVAILABLE.to_string()));
        prop_assert!(g.rss.len() <= 1 + 2, "{} sets left", g.rss.len());
    }
}
