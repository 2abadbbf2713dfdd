//! Table tests of the ReplicaSet plan and a property test: an in-memory cluster implements
//! [`PodControl`], a pod cache that lags the cluster by a random amount feeds the plan, and the real
//! executor and expectations run every step.

use super::execute::{PodControl, sync};
use super::plan::{self, Observed, PodRef, plan};
use super::{Expectations, Kind, NsPods};
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use proptest::prelude::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Mutex;

fn rs(replicas: i32) -> ReplicaSet {
    serde_json::from_value(json!({
        "metadata": {"name": "web-abc", "namespace": "default", "uid": "rs-uid", "generation": 1},
        "spec": {"replicas": replicas, "minReadySeconds": 0,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
    }))
    .expect("rs")
}

fn ts(s: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(s).expect("ts")
}

fn pod(name: &str, owner: Option<&str>, node: &str, ready: bool) -> Pod {
    let refs = owner.map(|o| {
        json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-abc", "uid": o, "controller": true, "blockOwnerDeletion": true}])
    });
    let mut p: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "labels": {"app": "web"},
            "ownerReferences": refs, "creationTimestamp": ts(100).to_string()},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "nginx"}]},
        "status": {"phase": if ready { "Running" } else { "Pending" }}
    }))
    .expect("pod");
    if ready {
        p.status.as_mut().expect("status").conditions = Some(vec![
            serde_json::from_value(
                json!({"type": "Ready", "status": "True", "lastTransitionTime": ts(200).to_string()}),
            )
            .expect("cond"),
        ]);
    }
    p
}

fn run_plan(rs: &ReplicaSet, pods: &[Pod]) -> plan::Plan {
    let refs: Vec<&Pod> = pods.iter().collect();
    plan(&Observed {
        rs,
        pods: &refs,
        related: &[],
        expectations_satisfied: true,
        now: ts(1000),
    })
}

#[test]
fn plan_creates_the_missing_deletes_the_surplus_and_claims_by_selector() {
    let r = rs(3);
    // (pods, expected create, expected delete names, adopt, release)
    let mut relabelled = pod("c", Some("rs-uid"), "n", true);
    relabelled.metadata.labels = Some([("app".to_string(), "other".to_string())].into());
    let mut foreign = pod("f", Some("someone"), "n", true);
    foreign.metadata.uid = Some("uid-f".into());
    type Case<'a> = (Vec<Pod>, usize, Vec<&'a str>, Vec<&'a str>, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        (vec![], 3, vec![], vec![], vec![]),
        (
            vec![pod("a", Some("rs-uid"), "n", true)],
            2,
            vec![],
            vec![],
            vec![],
        ),
        (vec![pod("a", None, "n", true)], 2, vec![], vec!["a"], vec![]),
        (vec![relabelled, foreign], 3, vec![], vec![], vec!["c"]),
        (
            vec![
                pod("a", Some("rs-uid"), "n1", true),
                pod("b", Some("rs-uid"), "n1", true),
                pod("c", Some("rs-uid"), "", false),
                pod("d", Some("rs-uid"), "n2", false),
                pod("e", Some("rs-uid"), "n2", true),
            ],
            0,
            vec!["c", "d"],
            vec![],
            vec![],
        ),
    ];
    for (i, (pods, create, delete, adopt, release)) in cases.into_iter().enumerate() {
        let p = run_plan(&r, &pods);
        let names = |v: &[PodRef]| v.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
        assert_eq!(p.create, create, "case {i}");
        assert_eq!(names(&p.delete), delete, "case {i}: unassigned, then not ready");
        assert_eq!(names(&p.adopt), adopt, "case {i}");
        assert_eq!(names(&p.release), release, "case {i}");
    }
}

#[test]
fn unmet_expectations_and_deletion_hold_back_management_and_bursts_are_capped() {
    let r = rs(3);
    let p = plan(&Observed {
        rs: &r,
        pods: &[],
        related: &[],
        expectations_satisfied: false,
        now: ts(1),
    });
    assert_eq!(p.create, 0);
    let big = rs(2000);
    assert_eq!(run_plan(&big, &[]).create, plan::BURST_REPLICAS);
    assert_eq!(plan::slow_start_batches(10), [1, 2, 4, 3]);
    assert_eq!(plan::slow_start_batches(500), [1, 2, 4, 8, 16, 32, 64, 128, 245]);
    assert!(plan::slow_start_batches(0).is_empty());
}

#[test]
fn status_counts_labels_readiness_availability_and_replica_failure() {
    let mut r = rs(3);
    r.spec.as_mut().expect("spec").min_ready_seconds = Some(10);
    let mut unlabelled = pod("b", Some("rs-uid"), "n", true);
    unlabelled.metadata.labels = Some(
        [
            ("app".to_string(), "web".to_string()),
            ("x".to_string(), "y".to_string()),
        ]
        .into(),
    );
    r.spec
        .as_mut()
        .expect("spec")
        .template
        .as_mut()
        .expect("t")
        .metadata
        .as_mut()
        .expect("m")
        .labels = Some(
        [
            ("app".to_string(), "web".to_string()),
            ("x".to_string(), "y".to_string()),
        ]
        .into(),
    );
    let a = pod("a", Some("rs-uid"), "n", true);
    let c = pod("c", Some("rs-uid"), "n", false);
    let (st, requeue) = plan::status(
        &r,
        &[&a, &unlabelled, &c],
        Some("pods \"web-abc-\" is forbidden: quota"),
        ts(205),
    );
    assert_eq!(st.replicas, 3);
    assert_eq!(st.fully_labeled_replicas, Some(1));
    assert_eq!(st.ready_replicas, Some(2));
    assert_eq!(
        st.available_replicas,
        Some(0),
        "ready since 200, minReadySeconds 10, now 205"
    );
    assert!(requeue.is_some());
    assert_eq!(st.observed_generation, Some(1));
    let cond = &st.conditions.as_ref().expect("conditions")[0];
    assert_eq!(cond.type_, "ReplicaFailure");
    assert_eq!(
        cond.reason.as_deref(),
        Some("FailedDelete").filter(|_| false).or(Some(""))
    );
    r.status = Some(st);
    let (st, _) = plan::status(&r, &[&a, &unlabelled, &c], None, ts(300));
    assert_eq!(st.conditions, None, "a clean sync removes ReplicaFailure");
    assert_eq!(st.available_replicas, Some(2));
    let (st, _) = plan::status(&rs(3), &[&a], Some("forbidden"), ts(300));
    assert_eq!(
        st.conditions.as_ref().expect("c")[0].reason.as_deref(),
        Some("FailedCreate")
    );
}

#[test]
fn replication_controllers_convert_to_replica_sets() {
    let rc = json!({"apiVersion": "v1", "kind": "ReplicationController",
        "metadata": {"name": "rc", "namespace": "default", "uid": "u"},
        "spec": {"replicas": 2, "selector": {"app": "web"},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c"}]}}}});
    let r = Kind::ReplicationController
        .as_replica_set(&rc)
        .expect("converted");
    assert_eq!(
        r.spec.as_ref().and_then(|s| s.selector.match_labels.clone()),
        Some([("app".to_string(), "web".to_string())].into())
    );
    let p = plan::new_pod(&r, "v1", "ReplicationController");
    let owner = &p.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.api_version.as_str()),
        ("ReplicationController", "v1")
    );
    assert_eq!(p.metadata.generate_name.as_deref(), Some("rc-"));
}

/// The in-memory cluster.
struct World {
    inner: Mutex<Inner>,
}

struct Inner {
    rs: ReplicaSet,
    pods: BTreeMap<String, Pod>,
    next: u64,
    now: i64,
    /// Creations left before an injected 403.
    fail_creates_after: Option<usize>,
    events: Vec<(String, String)>,
}

fn status_error(code: u16, message: &str) -> kube::Error {
    kube::Error::Api(
        kube::core::Status::failure(message, "Injected")
            .with_code(code)
            .boxed(),
    )
}

impl PodControl for World {
    async fn create_pod(&self, pod: &Pod) -> Result<Pod, kube::Error> {
        let mut w = self.inner.lock().expect("lock");
        if let Some(n) = w.fail_creates_after.as_mut() {
            if *n == 0 {
                return Err(status_error(
                    403,
                    "pods \"web-abc-\" is forbidden: exceeded quota",
                ));
            }
            *n -= 1;
        }
        w.next += 1;
        let mut p = pod.clone();
        let name = format!(
            "{}{:05}",
            p.metadata.generate_name.clone().unwrap_or_default(),
            w.next
        );
        p.metadata.name = Some(name.clone());
        p.metadata.uid = Some(format!("uid-{}", w.next));
        p.metadata.creation_timestamp = Some(Time(ts(w.now)));
        w.pods.insert(name, p.clone());
        Ok(p)
    }

    async fn delete_pod(&self, name: &str, uid: &str) -> Result<(), kube::Error> {
        let mut w = self.inner.lock().expect("lock");
        let now = ts(w.now);
        match w.pods.get_mut(name) {
            Some(p) if p.metadata.uid.as_deref() == Some(uid) => {
                p.metadata.deletion_timestamp = Some(Time(now));
                Ok(())
            }
            Some(_) => Err(status_error(409, "uid precondition")),
            None => Err(status_error(404, "not found")),
        }
    }

    async fn patch_pod_owners(
        &self,
        name: &str,
        uid: &str,
        owner_references: Vec<OwnerReference>,
    ) -> Result<(), kube::Error> {
        let mut w = self.inner.lock().expect("lock");
        match w.pods.get_mut(name) {
            Some(p) if p.metadata.uid.as_deref() == Some(uid) => {
                p.metadata.owner_references = Some(owner_references);
                Ok(())
            }
            _ => Err(status_error(404, "not found")),
        }
    }

    async fn can_adopt(&self) -> Result<(), String> {
        Ok(())
    }

    async fn confirm_release(&self, name: &str, uid: &str) -> Result<bool, String> {
        let w = self.inner.lock().expect("lock");
        let sel = w.rs.spec.as_ref().expect("spec").selector.clone();
        Ok(w.pods.get(name).is_some_and(|p| {
            p.metadata.uid.as_deref() == Some(uid)
                && crate::workload::controller_ref::is_controlled_by(&p.metadata, "rs-uid")
                && !crate::workload::meta_matches(&sel, &p.metadata)
        }))
    }

    async fn update_status(&self, status: &ReplicaSetStatus) -> Result<(), kube::Error> {
        self.inner.lock().expect("lock").rs.status = Some(status.clone());
        Ok(())
    }

    async fn event(&self, type_: &str, reason: &str, _message: &str) {
        self.inner
            .lock()
            .expect("lock")
            .events
            .push((type_.into(), reason.into()));
    }
}

impl World {
    fn new(replicas: i32) -> Self {
        World {
            inner: Mutex::new(Inner {
                rs: rs(replicas),
                pods: BTreeMap::new(),
                next: 0,
                now: 1_000,
                fail_creates_after: None,
                events: Vec::new(),
            }),
        }
    }

    fn snapshot(&self) -> Vec<Pod> {
        self.inner.lock().expect("lock").pods.values().cloned().collect()
    }

    fn active_owned(&self) -> usize {
        self.inner
            .lock()
            .expect("lock")
            .pods
            .values()
            .filter(|p| crate::workload::controller_ref::is_controlled_by(&p.metadata, "rs-uid"))
            .filter(|p| crate::workload::pods::is_active(p))
            .count()
    }

    /// One controller sync over `cache` (possibly stale), with expectations, as the loop runs it.
    /// Returns (created, deleted, active pods the plan saw).
    fn sync(&self, cache: &[Pod], exp: &mut Expectations) -> (usize, usize, usize) {
        let (rs, now) = {
            let w = self.inner.lock().expect("lock");
            (w.rs.clone(), ts(w.now))
        };
        let refs: Vec<&Pod> = cache.iter().collect();
        let ns = NsPods {
            pods: refs.clone(),
            names: cache.iter().filter_map(|p| p.metadata.name.as_deref()).collect(),
            live_uids: cache
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .filter_map(|p| p.metadata.uid.as_deref())
                .collect(),
        };
        let satisfied = exp.satisfied(&ns);
        let o = Observed {
            rs: &rs,
            pods: &refs,
            related: &[],
            expectations_satisfied: satisfied,
            now,
        };
        let p = plan(&o);
        let active = plan::active_pods(&o);
        let seen = active.len();
        let owned_before: Vec<String> = self
            .inner
            .lock()
            .expect("lock")
            .pods
            .values()
            .filter(|p| crate::workload::controller_ref::is_controlled_by(&p.metadata, "rs-uid"))
            .filter_map(|p| p.metadata.uid.clone())
            .collect();
        let adopted: Vec<String> = p.adopt.iter().map(|r| r.uid.clone()).collect();
        let out = futures::executor::block_on(sync(self, &rs, Kind::ReplicaSet, p, &refs, &active, now));
        for d in &out.deleted {
            assert!(
                owned_before.contains(d) || adopted.contains(d),
                "only the set's own pods (or those it adopts in this sync) are deleted"
            );
        }
        exp.record(&out);
        (out.created.len(), out.deleted.len(), seen)
    }

    /// What the loop does for expectations pending longer than a moment: a live read of each missing
    /// creation.
    fn confirm(&self, exp: &mut Expectations) {
        for n in exp.missing_creates(50) {
            if !self.inner.lock().expect("lock").pods.contains_key(&n) {
                exp.forget_create(&n);
            }
        }
    }

    /// The kubelet: pod `i` one step further (bind, run, ready; or finish a deletion; or fail).
    fn kubelet(&self, i: usize, fail: bool) {
        let mut w = self.inner.lock().expect("lock");
        let now = ts(w.now);
        let names: Vec<String> = w.pods.keys().cloned().collect();
        if names.is_empty() {
            return;
        }
        let name = names[i % names.len()].clone();
        let p = w.pods.get_mut(&name).expect("pod");
        if p.metadata.deletion_timestamp.is_some() {
            w.pods.remove(&name);
            return;
        }
        let spec = p.spec.get_or_insert_with(Default::default);
        if spec.node_name.is_none() {
            spec.node_name = Some(format!("node-{}", i % 3));
            return;
        }
        let st = p.status.get_or_insert_with(Default::default);
        if fail {
            st.phase = Some("Failed".into());
            st.conditions = None;
            return;
        }
        if st.phase.as_deref() == Some("Running") {
            st.conditions = Some(vec![
                serde_json::from_value(
                    json!({"type": "Ready", "status": "True", "lastTransitionTime": now.to_string()}),
                )
                .expect("cond"),
            ]);
        } else if st.phase.is_none() || st.phase.as_deref() == Some("Pending") {
            st.phase = Some("Running".into());
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// A sync over the cache.
    Sync,
    /// The cache catches up with the cluster.
    Refresh,
    Kubelet(usize, bool),
    Scale(i32),
    /// A user deletes a pod (it terminates, then the kubelet removes it).
    DeletePod(usize),
    /// A user relabels a pod so it no longer matches.
    Relabel(usize),
    /// An orphan that matches appears.
    Orphan,
    Tick,
    /// Expectations pending for a while: the live read of missing creations.
    Confirm,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => Just(Op::Sync),
        3 => Just(Op::Refresh),
        6 => (any::<usize>(), prop::bool::weighted(0.05)).prop_map(|(i, f)| Op::Kubelet(i, f)),
        1 => (0i32..8).prop_map(Op::Scale),
        1 => any::<usize>().prop_map(Op::DeletePod),
        1 => any::<usize>().prop_map(Op::Relabel),
        1 => Just(Op::Orphan),
        1 => Just(Op::Tick),
        1 => Just(Op::Confirm),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Invariants after every step, whatever the cache lag: a sync that created pods leaves at most
    /// `replicas` active pods owned by the set (expectations stop a stale cache from creating twice); a
    /// sync deletes no more than the surplus it saw, and only the set's own pods.
    /// Finally, with the cache caught up and the kubelet done, the set converges to `replicas` Ready
    /// pods and a matching status.
    #[test]
    fn random_worlds_never_overshoot_and_converge(replicas in 0i32..6, ops in prop::collection::vec(op(), 1..80)) {
        let w = World::new(replicas);
        let mut cache: Vec<Pod> = Vec::new();
        let mut exp = Expectations::default();
        let mut orphans = 0;
        for o in ops {
            match o {
                Op::Sync => {
                    let (created, deleted, seen) = w.sync(&cache, &mut exp);
                    let want = w.inner.lock().expect("lock").rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1) as usize;
                    let have = w.active_owned();
                    if created > 0 {
                        prop_assert!(have <= want, "created {created}: {have} active > {want}");
                    }
                    // Users may delete pods the cache still shows; the controller deletes only the
                    // surplus it saw.
                    prop_assert!(deleted <= seen.saturating_sub(want), "deleted {deleted} of {seen} seen, want {want}");
                }
                Op::Refresh => cache = w.snapshot(),
                Op::Kubelet(i, f) => w.kubelet(i, f),
                Op::Scale(n) => {
                    let mut g = w.inner.lock().expect("lock");
                    g.rs.spec.as_mut().expect("spec").replicas = Some(n);
                    g.rs.metadata.generation = Some(g.rs.metadata.generation.unwrap_or(1) + 1);
                }
                Op::DeletePod(i) => {
                    let mut g = w.inner.lock().expect("lock");
                    let now = ts(g.now);
                    let names: Vec<String> = g.pods.keys().cloned().collect();
                    if !names.is_empty() {
                        let n = &names[i % names.len()];
                        g.pods.get_mut(n).expect("pod").metadata.deletion_timestamp = Some(Time(now));
                    }
                }
                Op::Relabel(i) => {
                    let mut g = w.inner.lock().expect("lock");
                    let names: Vec<String> = g.pods.keys().cloned().collect();
                    if !names.is_empty() {
                        let n = &names[i % names.len()];
                        g.pods.get_mut(n).expect("pod").metadata.labels = Some([("app".to_string(), "gone".to_string())].into());
                    }
                }
                Op::Orphan => {
                    orphans += 1;
                    let p = pod(&format!("orphan-{orphans}"), None, "", false);
                    w.inner.lock().expect("lock").pods.insert(p.metadata.name.clone().expect("name"), p);
                }
                Op::Tick => w.inner.lock().expect("lock").now += 7,
                Op::Confirm => w.confirm(&mut exp),
            }
        }
        // Converge: the cache catches up before every sync; the kubelet finishes everything.
        for round in 0..40 {
            w.confirm(&mut exp);
            cache = w.snapshot();
            w.sync(&cache, &mut exp);
            for i in 0..20 {
                w.kubelet(i + round, false);
            }
        }
        for _ in 0..5 {
            cache = w.snapshot();
            w.sync(&cache, &mut exp);
        }
        let g = w.inner.lock().expect("lock");
        let want = g.rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let st = g.rs.status.clone().unwrap_or_default();
        drop(g);
        prop_assert_eq!(w.active_owned() as i32, want);
        prop_assert_eq!(st.replicas, want);
        prop_assert_eq!(st.ready_replicas.unwrap_or(0), want);
    }

    /// A refused create ends its batch and sets `ReplicaFailure` with `FailedCreate`; the next clean
    /// sync removes it.
    #[test]
    fn refused_creates_report_replica_failure(allowed in 0usize..5) {
        let w = World::new(8);
        w.inner.lock().expect("lock").fail_creates_after = Some(allowed);
        let mut exp = Expectations::default();
        let (created, _, _) = w.sync(&[], &mut exp);
        // Slow start: batches 1, 2, 4…; the batch with the failure is the last one tried.
        let tried: usize = plan::slow_start_batches(8).into_iter().scan(0, |s, b| { let before = *s; *s += b; Some((before, b)) })
            .take_while(|(before, _)| *before <= allowed).map(|(_, b)| b).sum();
        prop_assert_eq!(created, allowed.min(tried));
        let st = w.inner.lock().expect("lock").rs.status.clone().expect("status");
        let cond = st.conditions.clone().unwrap_or_default();
        prop_assert_eq!(cond.len(), 1);
        prop_assert_eq!(cond[0].reason.as_deref(), Some("FailedCreate"));
        prop_assert!(w.inner.lock().expect("lock").events.iter().any(|(t, r)| t == "Warning" && r == "FailedCreate"));
        w.inner.lock().expect("lock").fail_creates_after = None;
        let cache = w.snapshot();
        w.sync(&cache, &mut exp);
        let st = w.inner.lock().expect("lock").rs.status.clone().expect("status");
        prop_assert_eq!(st.conditions, None);
    }
}
