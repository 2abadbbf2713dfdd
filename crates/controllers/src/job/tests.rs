//! Table tests of the Job plan, and a property test over a fake cluster and kubelet: after every step a
//! Job never has more than `parallelism` active pods nor more successes than `completions`, and, with
//! executions cut short at random (a `kill -9` between any two writes) and plans made from a lagging
//! (but never backwards-moving) Job cache, every finished pod is counted exactly once.

use super::plan::{Observed, Plan, format_indexes, new_pod, parse_indexes, plan};
use api::wellknown::{JOB_COMPLETION_INDEX, JOB_TRACKING_FINALIZER};
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use proptest::prelude::*;
use serde_json::json;
use std::collections::BTreeMap;

fn t(s: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + s).expect("time")
}

fn job(spec: serde_json::Value) -> Job {
    let mut spec = spec;
    spec["template"] = json!({"metadata": {"labels": {"app": "x"}},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}});
    spec["selector"] = json!({"matchLabels": {"app": "x"}});
    serde_json::from_value(
        json!({"metadata": {"name": "pi", "namespace": "default", "uid": "job-uid",
        "resourceVersion": "1"}, "spec": spec}),
    )
    .expect("job")
}

fn pod(name: &str, phase: &str, finalizer: bool, index: Option<i32>) -> Pod {
    let mut p = json!({"metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
        "creationTimestamp": t(0).to_string(),
        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "pi", "uid": "job-uid",
            "controller": true}]},
        "status": {"phase": phase}});
    if finalizer {
        p["metadata"]["finalizers"] = json!([JOB_TRACKING_FINALIZER]);
    }
    if let Some(i) = index {
        p["metadata"]["annotations"] = json!({JOB_COMPLETION_INDEX: i.to_string()});
    }
    serde_json::from_value(p).expect("pod")
}

fn run(job: &Job, pods: &[Pod], now: Timestamp) -> Plan {
    plan(&Observed {
        job,
        pods: pods.iter().collect(),
        settled: true,
        now,
    })
}

#[test]
fn a_new_job_starts_parallelism_pods_with_the_finalizer_and_owner() {
    let j = job(json!({"completions": 3, "parallelism": 2}));
    let p = run(&j, &[], t(0));
    assert_eq!(p.create.len(), 2);
    let pod = &p.create[0];
    assert_eq!(pod.metadata.generate_name.as_deref(), Some("pi-"));
    assert_eq!(
        pod.metadata.finalizers.as_deref(),
        Some(&[JOB_TRACKING_FINALIZER.to_string()][..])
    );
    let owner = &pod.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!((owner.kind.as_str(), owner.controller), ("Job", Some(true)));
    let st = p.status.expect("status");
    assert!(st.start_time.is_some());
    assert_eq!(st.active, Some(2));
}

#[test]
fn a_finished_pod_is_recorded_then_released_then_counted() {
    let mut j = job(json!({"completions": 2, "parallelism": 1}));
    let done = pod("a", "Succeeded", true, None);
    // 1. Recorded as uncounted, finalizer kept; the second pod is created.
    let p = run(&j, std::slice::from_ref(&done), t(1));
    let st = p.status.clone().expect("status");
    assert_eq!(
        st.uncounted_terminated_pods
            .as_ref()
            .and_then(|u| u.succeeded.clone()),
        Some(vec!["uid-a".to_string()])
    );
    assert_eq!(st.succeeded, None);
    assert!(p.remove_finalizers.is_empty(), "not before the record is stored");
    assert_eq!(p.create.len(), 1);
    // 2. With the record stored, the finalizer goes.
    j.status = Some(st);
    let p = run(&j, std::slice::from_ref(&done), t(2));
    assert_eq!(p.remove_finalizers.len(), 1);
    // 3. Without the finalizer, it is counted and leaves the record.
    let released = pod("a", "Succeeded", false, None);
    let p = run(&j, &[released], t(3));
    let st = p.status.expect("status");
    assert_eq!(st.succeeded, Some(1));
    assert!(st.uncounted_terminated_pods.and_then(|u| u.succeeded).is_none());
}

#[test]
fn completion_gives_success_criteria_then_complete() {
    let mut j = job(json!({"completions": 1, "parallelism": 1}));
    j.status =
        Some(serde_json::from_value(json!({"succeeded": 1, "startTime": t(0).to_string()})).expect("st"));
    let p = run(&j, &[pod("a", "Succeeded", false, None)], t(5));
    let st = p.status.expect("status");
    let types: Vec<&str> = st.conditions.iter().flatten().map(|c| c.type_.as_str()).collect();
    assert_eq!(types, ["SuccessCriteriaMet", "Complete"]);
    assert!(st.completion_time.is_some());
    assert!(p.events.iter().any(|e| e.reason == "Completed"));
}

#[test]
fn backoff_limit_fails_the_job_after_failure_target() {
    let mut j = job(json!({"completions": 1, "parallelism": 1, "backoffLimit": 1}));
    j.status = Some(serde_json::from_value(json!({"failed": 2, "startTime": t(0).to_string()})).expect("st"));
    let p = run(
        &j,
        &[pod("a", "Failed", false, None), pod("b", "Failed", false, None)],
        t(50),
    );
    let st = p.status.expect("status");
    let c: Vec<(&str, &str)> = st
        .conditions
        .iter()
        .flatten()
        .map(|c| (c.type_.as_str(), c.reason.as_deref().unwrap_or("")))
        .collect();
    assert_eq!(
        c,
        [
            ("FailureTarget", "BackoffLimitExceeded"),
            ("Failed", "BackoffLimitExceeded")
        ]
    );
    assert!(p.create.is_empty());
}

#[test]
fn a_replacement_waits_for_the_backoff() {
    let mut j = job(json!({"completions": 1, "parallelism": 1, "backoffLimit": 6}));
    j.status = Some(serde_json::from_value(json!({"failed": 1, "startTime": t(0).to_string()})).expect("st"));
    let mut failed = pod("a", "Failed", false, None);
    failed.metadata.deletion_timestamp = None;
    failed.status = Some(
        serde_json::from_value(
            json!({"phase": "Failed", "containerStatuses": [{"name": "c", "image": "i",
        "imageID": "", "ready": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": 1, "finishedAt": t(10).to_string()}}}]}),
        )
        .expect("status"),
    );
    let p = run(&j, std::slice::from_ref(&failed), t(15));
    assert!(p.create.is_empty(), "10 s back-off after the first failure");
    assert_eq!(p.requeue_after, Some(std::time::Duration::from_secs(5)));
    let p = run(&j, std::slice::from_ref(&failed), t(21));
    assert_eq!(p.create.len(), 1);
}

#[test]
fn active_deadline_and_suspend() {
    let mut j = job(json!({"completions": 5, "parallelism": 2, "activeDeadlineSeconds": 30}));
    j.status = Some(serde_json::from_value(json!({"active": 1, "startTime": t(0).to_string()})).expect("st"));
    let p = run(&j, &[pod("a", "Running", true, None)], t(31));
    assert_eq!(p.delete.len(), 1);
    let st = p.status.expect("status");
    assert_eq!(
        st.conditions.expect("c")[0].reason.as_deref(),
        Some("DeadlineExceeded")
    );
    let mut s = job(json!({"completions": 5, "parallelism": 2, "suspend": true}));
    s.status = None;
    let p = run(&s, &[pod("a", "Running", true, None)], t(1));
    assert_eq!(p.delete.len(), 1);
    assert!(p.create.is_empty());
    assert_eq!(p.status.expect("st").conditions.expect("c")[0].type_, "Suspended");
}

#[test]
fn indexed_jobs_fill_the_lowest_missing_indexes_with_hostnames_and_env() {
    let mut j = job(json!({"completions": 4, "parallelism": 2, "completionMode": "Indexed"}));
    j.status = Some(
        serde_json::from_value(json!({"completedIndexes": "0", "startTime": t(0).to_string()})).expect("st"),
    );
    let p = run(&j, &[pod("pi-2-x", "Running", true, Some(2))], t(1));
    assert_eq!(p.create.len(), 1);
    let created = &p.create[0];
    assert_eq!(created.metadata.generate_name.as_deref(), Some("pi-1-"));
    assert_eq!(
        created.spec.as_ref().and_then(|s| s.hostname.as_deref()),
        Some("pi-1")
    );
    let env = created.spec.as_ref().expect("spec").containers[0]
        .env
        .clone()
        .expect("env");
    assert_eq!(env[0].name, "JOB_COMPLETION_INDEX");
    assert_eq!(
        created
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(JOB_COMPLETION_INDEX))
            .map(String::as_str),
        Some("1")
    );
    // A success of index 2 goes into completedIndexes directly.
    let p = run(&j, &[pod("pi-2-x", "Succeeded", true, Some(2))], t(2));
    assert_eq!(p.status.expect("st").completed_indexes.as_deref(), Some("0,2"));
}

#[test]
fn pod_failure_policy_fail_job_and_ignore() {
    let mut j = job(json!({"completions": 2, "parallelism": 1, "backoffLimit": 6,
        "podFailurePolicy": {"rules": [
            {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [42]}},
            {"action": "FailJob", "onExitCodes": {"containerName": "c", "operator": "In", "values": [3]}}]}}));
    j.spec
        .as_mut()
        .expect("spec")
        .template
        .spec
        .as_mut()
        .expect("spec")
        .restart_policy = Some("Never".into());
    let failed = |code: i32| -> Pod {
        let mut p = pod("a", "Failed", true, None);
        p.status = Some(
            serde_json::from_value(json!({"phase": "Failed", "containerStatuses": [{"name": "c",
                "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": code}}}]}))
            .expect("status"),
        );
        p
    };
    let p = run(&j, &[failed(42)], t(1));
    assert_eq!(p.remove_finalizers.len(), 1, "ignored: released uncounted");
    assert!(
        p.status
            .as_ref()
            .and_then(|s| s.uncounted_terminated_pods.as_ref())
            .and_then(|u| u.failed.as_ref())
            .is_none()
    );
    let p = run(&j, &[failed(3)], t(1));
    let st = p.status.expect("st");
    let c = &st.conditions.expect("c")[0];
    assert_eq!(
        (c.type_.as_str(), c.reason.as_deref()),
        ("FailureTarget", Some("PodFailurePolicy"))
    );
    assert_eq!(
        c.message.as_deref(),
        Some("Container c for pod default/a failed with exit code 3 matching FailJob rule at index 1")
    );
}

fn with_failure_count(mut p: Pod, n: i32) -> Pod {
    p.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(super::plan::JOB_INDEX_FAILURE_COUNT.into(), n.to_string());
    p
}

fn reason_of(p: &Plan, type_: &str) -> Option<String> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
        .and_then(|c| c.reason.clone())
}

#[test]
fn backoff_limit_per_index_retries_an_index_then_fails_it_and_the_job() {
    let spec =
        json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed", "backoffLimitPerIndex": 1});
    let mut j = job(spec.clone());
    j.status = Some(serde_json::from_value(json!({"startTime": t(0).to_string()})).expect("st"));
    // Index 0 failed once: recorded, not failed yet; its replacement says one failure before it.
    let pods = [
        pod("a", "Failed", true, Some(0)),
        pod("b", "Running", true, Some(1)),
        pod("c", "Running", true, Some(2)),
    ];
    let p = run(&j, &pods, t(100));
    let st = p.status.as_ref().expect("status");
    assert_eq!(st.failed_indexes.as_deref(), Some(""));
    assert_eq!(p.create.len(), 1);
    let ann = p.create[0].metadata.annotations.as_ref().expect("ann");
    assert_eq!(ann[JOB_COMPLETION_INDEX], "0");
    assert_eq!(ann[super::plan::JOB_INDEX_FAILURE_COUNT], "1");
    assert!(
        reason_of(&p, "FailureTarget").is_none(),
        "backoffLimit does not apply per index"
    );

    // The replacement failed too (its count reached the limit): index 0 fails, nothing replaces it.
    let pods = [
        pod("a", "Failed", false, Some(0)),
        with_failure_count(pod("a2", "Failed", true, Some(0)), 1),
        pod("b", "Running", true, Some(1)),
        pod("c", "Running", true, Some(2)),
    ];
    j.status = Some(
        serde_json::from_value(json!({"startTime": t(0).to_string(), "failed": 1, "failedIndexes": ""}))
            .expect("st"),
    );
    let p = run(&j, &pods, t(200));
    assert_eq!(
        p.status.as_ref().and_then(|s| s.failed_indexes.as_deref()),
        Some("0")
    );
    assert!(p.create.is_empty(), "{:?}", p.create);
    assert!(reason_of(&p, "FailureTarget").is_none());

    // The other indexes succeed: every index finished, one failed → the Job fails with FailedIndexes.
    j.status = Some(
        serde_json::from_value(json!({"startTime": t(0).to_string(), "failed": 2, "failedIndexes": "0"}))
            .expect("st"),
    );
    let pods = [
        pod("a", "Failed", false, Some(0)),
        pod("a2", "Failed", false, Some(0)),
        pod("b", "Succeeded", false, Some(1)),
        pod("c", "Succeeded", false, Some(2)),
    ];
    let p = run(&j, &pods, t(300));
    assert_eq!(reason_of(&p, "FailureTarget").as_deref(), Some("FailedIndexes"));
    assert_eq!(reason_of(&p, "Failed").as_deref(), Some("FailedIndexes"));

    // maxFailedIndexes 0: the first failed index fails the Job at once.
    let mut spec = spec;
    spec["maxFailedIndexes"] = json!(0);
    let mut j = job(spec);
    j.status = Some(serde_json::from_value(json!({"startTime": t(0).to_string()})).expect("st"));
    let pods = [
        with_failure_count(pod("a2", "Failed", true, Some(0)), 1),
        pod("b", "Running", true, Some(1)),
    ];
    let p = run(&j, &pods, t(100));
    assert_eq!(
        reason_of(&p, "FailureTarget").as_deref(),
        Some("MaxFailedIndexesExceeded")
    );
    assert_eq!(p.delete.len(), 1, "the running pod is stopped");
}

#[test]
fn a_success_policy_rule_completes_an_indexed_job_early() {
    let mut j = job(
        json!({"completions": 5, "parallelism": 5, "completionMode": "Indexed",
        "successPolicy": {"rules": [{"succeededIndexes": "3-4"}, {"succeededIndexes": "0-2", "succeededCount": 1}]}}),
    );
    j.status = Some(serde_json::from_value(json!({"startTime": t(0).to_string()})).expect("st"));
    let running: Vec<Pod> = (1..5)
        .map(|i| pod(&format!("p{i}"), "Running", true, Some(i)))
        .collect();
    // Nothing succeeded: no rule met.
    let p = run(&j, &running, t(10));
    assert!(reason_of(&p, "SuccessCriteriaMet").is_none());
    // Index 0 succeeded: the second rule (one of 0-2) is met; the others are stopped.
    let mut pods = running.clone();
    pods.push(pod("p0", "Succeeded", false, Some(0)));
    let p = run(&j, &pods, t(20));
    assert_eq!(
        reason_of(&p, "SuccessCriteriaMet").as_deref(),
        Some("SuccessPolicy")
    );
    let msg = p
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| {
            c.iter()
                .find(|c| c.type_ == "SuccessCriteriaMet")
                .and_then(|c| c.message.clone())
        });
    assert_eq!(msg.as_deref(), Some("Matched rules at index 1"));
    assert_eq!(p.delete.len(), 4);
    assert!(p.create.is_empty());
    // Once nothing runs: Complete, with the same reason.
    let mut j2 = j.clone();
    j2.status = p.status.clone();
    let done = [pod("p0", "Succeeded", false, Some(0))];
    let p = run(&j2, &done, t(30));
    assert_eq!(reason_of(&p, "Complete").as_deref(), Some("SuccessPolicy"));
}

#[test]
fn ttl_deletes_a_finished_job_when_due() {
    let mut j = job(json!({"completions": 1, "ttlSecondsAfterFinished": 10}));
    j.status = Some(
        serde_json::from_value(
            json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True",
            "lastTransitionTime": t(0).to_string()}]}),
        )
        .expect("st"),
    );
    assert!(!run(&j, &[], t(5)).delete_job);
    assert!(run(&j, &[], t(10)).delete_job);
}

#[test]
fn index_sets_round_trip_as_intervals() {
    let s = parse_indexes("0,2-4,7", 10);
    assert_eq!(s.iter().copied().collect::<Vec<_>>(), [0, 2, 3, 4, 7]);
    assert_eq!(format_indexes(&s), "0,2-4,7");
    assert_eq!(parse_indexes("8-12", 10).len(), 2);
}

/// The fake cluster: the Job (its stored status and a resourceVersion), pods by uid.
#[derive(Clone)]
struct Cluster {
    job: Job,
    rv: u64,
    pods: BTreeMap<String, Pod>,
    next: u32,
    /// Every pod that ever reached a terminal phase (uid → succeeded?).
    finished: BTreeMap<String, bool>,
}

fn apply(c: &mut Cluster, p: Plan, based_on: u64, cut: usize) {
    // The executor's order; `cut` = how many writes happen before a crash.
    let mut writes = 0;
    let mut go = || {
        writes += 1;
        writes <= cut
    };
    if let Some(st) = p.status {
        if based_on != c.rv {
            return; // 409
        }
        if !go() {
            return;
        }
        c.job.status = Some(st);
        c.rv += 1;
    }
    for r in &p.remove_finalizers {
        if !go() {
            return;
        }
        if let Some(pod) = c.pods.get_mut(&r.uid) {
            pod.metadata.finalizers = None;
        }
    }
    for r in &p.delete {
        if !go() {
            return;
        }
        if let Some(pod) = c.pods.get_mut(&r.uid) {
            // Upstream counts a pod being deleted as failed from then on.
            c.finished.entry(r.uid.clone()).or_insert(false);
            pod.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t(0)));
        }
    }
    for mut pod in p.create {
        if !go() {
            return;
        }
        c.next += 1;
        let name = format!(
            "{}{}",
            pod.metadata.generate_name.clone().unwrap_or_default(),
            c.next
        );
        pod.metadata.name = Some(name.clone());
        pod.metadata.uid = Some(format!("uid-{name}"));
        pod.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t(
            i64::from(c.next),
        )));
        pod.status = Some(serde_json::from_value(json!({"phase": "Pending"})).expect("st"));
        c.pods.insert(format!("uid-{name}"), pod);
    }
}

/// The fake kubelet: move pod `i` one step (Pending → Running → Succeeded/Failed; a deleted pod ends
/// Failed and disappears once no finalizer holds it).
fn kubelet(c: &mut Cluster, i: usize, succeed: bool) {
    let Some(uid) = c.pods.keys().nth(i % c.pods.len().max(1)).cloned() else {
        return;
    };
    let pod = c.pods.get_mut(&uid).expect("pod");
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    let deleting = pod.metadata.deletion_timestamp.is_some();
    let next = match (phase.as_str(), deleting) {
        ("Pending" | "Running", true) => "Failed",
        ("Pending", false) => "Running",
        ("Running", false) if succeed => "Succeeded",
        ("Running", false) => "Failed",
        _ => {
            if deleting && pod.metadata.finalizers.is_none() {
                c.pods.remove(&uid);
            }
            return;
        }
    };
    pod.status = Some(serde_json::from_value(json!({"phase": next})).expect("st"));
    if matches!(next, "Succeeded" | "Failed") && !deleting {
        c.finished.insert(uid, next == "Succeeded");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn never_more_than_parallelism_active_nor_more_successes_than_completions_and_counted_once(
        completions in 1i32..6,
        parallelism in 1i32..4,
        indexed in any::<bool>(),
        ops in proptest::collection::vec((0u8..4, 0usize..10, any::<bool>(), 0usize..6), 1..120),
    ) {
        let mode = if indexed { "Indexed" } else { "NonIndexed" };
        let mut c = Cluster {
            job: job(json!({"completions": completions, "parallelism": parallelism,
                "backoffLimit": 1000, "completionMode": mode})),
            rv: 1,
            pods: BTreeMap::new(),
            next: 0,
            finished: BTreeMap::new(),
        };
        // A stale snapshot the controller may plan from (a lagging cache). A reflector's cache never goes
        // back in time, so a snapshot older than one the controller already planned from is not used.
        let mut stale: Option<(Job, u64)> = None;
        let mut seen_rv = 0u64;
        for (op, i, flag, cut) in ops {
            match op {
                0 | 1 => kubelet(&mut c, i, flag || op == 1),
                2 => {
                    let (j, rv) = match (&stale, flag) {
                        (Some((j, rv)), true) if *rv >= seen_rv => (j.clone(), *rv),
                        _ => (c.job.clone(), c.rv),
                    };
                    seen_rv = seen_rv.max(rv);
                    let pods: Vec<Pod> = c.pods.values().cloned().collect();
                    let p = plan(&Observed { job: &j, pods: pods.iter().collect(), settled: true, now: t(10_000) });
                    apply(&mut c, p, rv, cut);
                }
                _ => stale = Some((c.job.clone(), c.rv)),
            }
            let active = c.pods.values().filter(|p| {
                let ph = p.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
                !matches!(ph.as_str(), "Succeeded" | "Failed") && p.metadata.deletion_timestamp.is_none()
            }).count();
            prop_assert!(active <= usize::try_from(parallelism).unwrap_or(0), "{active} active > {parallelism}");
            let st = c.job.status.clone().unwrap_or_default();
            prop_assert!(st.succeeded.unwrap_or(0) <= completions);
            let counted = st.succeeded.unwrap_or(0) + st.failed.unwrap_or(0);
            let unc = st.uncounted_terminated_pods.clone().unwrap_or_default();
            let recorded = unc.succeeded.unwrap_or_default().len() + unc.failed.unwrap_or_default().len();
            prop_assert!(
                usize::try_from(counted).unwrap_or(0) + recorded <= c.finished.len(),
                "counted {counted} + recorded {recorded} > finished {}", c.finished.len()
            );
        }
        // Let it settle without crashes: everything finished is counted exactly once.
        for round in 0..400 {
            kubelet(&mut c, round, true);
            let pods: Vec<Pod> = c.pods.values().cloned().collect();
            let p = plan(&Observed { job: &c.job, pods: pods.iter().collect(), settled: true, now: t(10_000) });
            let rv = c.rv;
            apply(&mut c, p, rv, usize::MAX);
        }
        let st = c.job.status.clone().unwrap_or_default();
        let types: Vec<String> = st.conditions.iter().flatten().map(|c| c.type_.clone()).collect();
        prop_assert!(types.contains(&"Complete".to_string()), "{types:?} {st:?}");
        prop_assert_eq!(st.succeeded.unwrap_or(0), completions);
        if !indexed {
            let ok = c.finished.values().filter(|s| **s).count();
            let bad = c.finished.len() - ok;
            prop_assert_eq!(usize::try_from(st.failed.unwrap_or(0)).unwrap_or(0), bad);
            prop_assert_eq!(usize::try_from(st.succeeded.unwrap_or(0)).unwrap_or(0), ok);
        }
        let _ = new_pod(&c.job, None);
    }
}
