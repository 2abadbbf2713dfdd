//! Jobs and CronJobs end to end with the real kubectl and real pods (busybox): completions with
//! parallelism to `kubectl wait --for=condition=complete`, an Indexed Job's `JOB_COMPLETION_INDEX` and
//! hostnames, a failing Job reaching its backoffLimit, `kubectl create job --from=cronjob/x`, a CronJob
//! starting a Job when due, and a `kill -9` of the server in the middle of a Job whose completions are
//! then counted once; and the pod garbage collector keeping at most `--terminated-pod-gc-threshold`
//! finished pods. Needs root and busybox like `pods.rs`.

mod common;

use common::{Server, eventually};
use serde_json::Value;

const JOBS: &str = r#"
apiVersion: batch/v1
kind: Job
metadata: {name: pi}
spec:
  completions: 3
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      containers:
      - {name: c, image: busybox:test, command: ["/bin/sh", "-c", "echo done"]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: idx}
spec:
  completions: 3
  parallelism: 3
  completionMode: Indexed
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: c
        image: busybox:test
        command: ["/bin/sh", "-c", "echo index=$JOB_COMPLETION_INDEX host=$(hostname); [ \"$(hostname)\" = \"idx-$JOB_COMPLETION_INDEX\" ]"]
---
apiVersion: batch/v1
kind: Job
metadata: {name: fail}
spec:
  backoffLimit: 1
  template:
    spec:
      restartPolicy: Never
      containers:
      - {name: c, image: busybox:test, command: ["/bin/sh", "-c", "exit 3"]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: perindex}
spec:
  completions: 3
  parallelism: 3
  completionMode: Indexed
  backoffLimitPerIndex: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - {name: c, image: busybox:test, command: ["/bin/sh", "-c", "[ $JOB_COMPLETION_INDEX != 1 ]"]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: leader}
spec:
  completions: 3
  parallelism: 3
  completionMode: Indexed
  successPolicy:
    rules: [{succeededIndexes: "0"}]
  template:
    spec:
      restartPolicy: Never
      containers:
      - {name: c, image: busybox:test, command: ["/bin/sh", "-c", "[ $JOB_COMPLETION_INDEX = 0 ] || sleep 300"]}
"#;

const CRON: &str = r#"
apiVersion: batch/v1
kind: CronJob
metadata: {name: backup}
spec:
  schedule: "*/1 * * * *"
  successfulJobsHistoryLimit: 5
  jobTemplate:
    metadata: {labels: {app: backup}}
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers:
          - {name: dump, image: busybox:test, command: ["/bin/sh", "-c", "echo dumped"]}
"#;

fn pods_of(s: &Server, job: &str) -> Vec<Value> {
    s.get_json(&["pods", "-l", &format!("batch.kubernetes.io/job-name={job}")])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Whether the pod carries no finalizer (released by the Job controller).
fn no_finalizer(p: &Value) -> bool {
    p["metadata"]["finalizers"].as_array().is_none_or(Vec::is_empty)
}

fn cleanup(s: &Server) {
    let _ = s.kubectl(&["delete", "cronjobs", "--all", "--wait=false"]);
    s.ok(&["delete", "jobs", "--all", "--wait=false"]);
    s.wait_pods_gone(90);
}

#[test]
fn jobs_complete_index_fail_and_cronjobs_start_them() {
    if !common::can_run_containers() {
        return;
    }
    let s = common::server_with_busybox("job-node");
    let started = std::time::Instant::now();
    s.apply(CRON);
    s.apply(JOBS);

    // completions 3, parallelism 2: Complete, each pod counted once and released from the finalizer.
    let out = s.ok(&["wait", "--for=condition=complete", "job/pi", "--timeout=90s"]);
    assert!(out.contains("job.batch/pi condition met"), "{out}");
    let pi = s.get_json(&["job", "pi"]);
    assert_eq!(pi["status"]["succeeded"], 3, "{pi}");
    assert!(pi["status"]["completionTime"].is_string());
    let pods = pods_of(&s, "pi");
    assert_eq!(pods.len(), 3, "no extra pod");
    for p in &pods {
        assert_eq!(p["status"]["phase"], "Succeeded");
        assert!(no_finalizer(p), "{}", p["metadata"]);
        assert!(p["metadata"]["name"].as_str().unwrap_or("").starts_with("pi-"));
    }
    let table = s.ok(&["get", "jobs", "pi"]);
    assert!(
        table.starts_with("NAME   STATUS     COMPLETIONS   DURATION   AGE"),
        "{table}"
    );
    assert!(table.contains("Complete   3/3"), "{table}");

    // Indexed: each pod gets its index in the environment and as its hostname.
    s.ok(&["wait", "--for=condition=complete", "job/idx", "--timeout=90s"]);
    let idx = s.get_json(&["job", "idx"]);
    assert_eq!(idx["status"]["completedIndexes"], "0-2", "{idx}");
    let mut seen: Vec<String> = pods_of(&s, "idx")
        .iter()
        .map(|p| {
            let name = p["metadata"]["name"].as_str().unwrap_or("").to_string();
            s.ok(&["logs", &name]).trim().to_string()
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        ["index=0 host=idx-0", "index=1 host=idx-1", "index=2 host=idx-2"]
    );

    // backoffLimit 1: two failures (10 s apart), then Failed with upstream's reason.
    s.ok(&["wait", "--for=condition=failed", "job/fail", "--timeout=90s"]);
    let fail = s.get_json(&["job", "fail"]);
    assert_eq!(fail["status"]["failed"], 2, "{fail}");
    let failed = fail["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Failed").cloned())
        .expect("Failed condition");
    assert_eq!(failed["reason"], "BackoffLimitExceeded");
    assert_eq!(failed["message"], "Job has reached the specified backoff limit");
    assert!(s.ok(&["get", "job", "fail"]).contains("Failed"));

    // backoffLimitPerIndex 0: index 1 fails once and for all, the others complete, the Job fails with
    // upstream's FailedIndexes.
    s.ok(&["wait", "--for=condition=failed", "job/perindex", "--timeout=90s"]);
    let per = s.get_json(&["job", "perindex"]);
    assert_eq!(per["status"]["failedIndexes"], "1", "{per}");
    assert_eq!(per["status"]["completedIndexes"], "0,2", "{per}");
    assert_eq!(pods_of(&s, "perindex").len(), 3, "index 1 not retried");
    let reason = per["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Failed").cloned())
        .expect("Failed condition");
    assert_eq!(reason["reason"], "FailedIndexes");

    // successPolicy: index 0's success completes the Job; the sleeping indexes are stopped.
    s.ok(&["wait", "--for=condition=complete", "job/leader", "--timeout=90s"]);
    let leader = s.get_json(&["job", "leader"]);
    let complete = leader["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Complete").cloned())
        .expect("Complete condition");
    assert_eq!(complete["reason"], "SuccessPolicy", "{leader}");
    assert_eq!(leader["status"]["completedIndexes"], "0", "{leader}");
    assert!(leader["status"]["active"].is_null(), "{leader}");

    // kubectl create job --from=cronjob: a Job from the template, owned by the CronJob.
    s.ok(&["create", "job", "manual", "--from=cronjob/backup"]);
    s.ok(&["wait", "--for=condition=complete", "job/manual", "--timeout=90s"]);
    let manual = s.get_json(&["job", "manual"]);
    assert_eq!(manual["metadata"]["ownerReferences"][0]["kind"], "CronJob");
    assert_eq!(
        manual["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"],
        "manual"
    );
    let table = s.ok(&["get", "cronjobs"]);
    assert!(
        table.starts_with("NAME     SCHEDULE      TIMEZONE   SUSPEND   ACTIVE   LAST SCHEDULE   AGE"),
        "{table}"
    );

    // The schedule: a Job named after its minute starts at the next full minute.
    let scheduled = eventually(
        75u64.saturating_sub(started.elapsed().as_secs()).max(5),
        "a scheduled Job",
        || {
            let jobs = s.get_json(&["jobs", "-l", "app=backup"]);
            jobs["items"].as_array()?.iter().find_map(|j| {
                let name = j["metadata"]["name"].as_str()?;
                let minutes = name.strip_prefix("backup-")?.parse::<i64>().ok()?;
                Some((name.to_string(), minutes, j["metadata"]["annotations"].clone()))
            })
        },
    );
    let (name, minutes, annotations) = scheduled;
    let stamp = annotations["batch.kubernetes.io/cronjob-scheduled-timestamp"]
        .as_str()
        .unwrap_or("")
        .parse::<jiff::Timestamp>()
        .expect("scheduled timestamp");
    assert_eq!(stamp.as_second(), minutes * 60, "{name}");
    let cj = s.get_json(&["cronjob", "backup"]);
    assert!(cj["status"]["lastScheduleTime"].is_string(), "{cj}");
    cleanup(&s);
}

#[test]
fn a_job_survives_kill_9_of_the_server_and_counts_each_completion_once() {
    if !common::can_run_containers() {
        return;
    }
    let mut s = common::server_with_busybox("job-crash-node");
    s.apply(
        r#"
apiVersion: batch/v1
kind: Job
metadata: {name: steady}
spec:
  completions: 8
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers:
      - {name: c, image: busybox:test, command: ["/bin/sh", "-c", "sleep 1"]}
"#,
    );
    eventually(90, "two completions", || {
        let j = s.get_json(&["job", "steady"]);
        (j["status"]["succeeded"].as_i64().unwrap_or(0) >= 2).then_some(())
    });
    s.kill9();
    // Pods outlive the server; some finish while it is down.
    std::thread::sleep(std::time::Duration::from_secs(2));
    s.restart();
    s.ok(&["wait", "--for=condition=complete", "job/steady", "--timeout=120s"]);
    let j = s.get_json(&["job", "steady"]);
    assert_eq!(j["status"]["succeeded"], 8, "{j}");
    assert!(j["status"]["failed"].is_null(), "{j}");
    let pods = pods_of(&s, "steady");
    let succeeded = pods
        .iter()
        .filter(|p| p["status"]["phase"] == "Succeeded")
        .count();
    assert_eq!(succeeded, 8, "one pod per completion, none extra");
    assert!(pods.iter().all(no_finalizer));
    cleanup(&s);
}

#[test]
fn finished_pods_beyond_the_threshold_are_collected_oldest_first() {
    if !common::can_run_containers() {
        return;
    }
    let s = Server::start_with(&["--node-name", "podgc-node", "--terminated-pod-gc-threshold", "2"]);
    let archive = common::busybox_archive(s.data_dir()).expect("busybox archive");
    common::import_image(s.data_dir(), &archive);
    // Created in name order: equal creation seconds are ordered by name, as upstream sorts them.
    for name in ["done-1", "done-2", "done-3", "done-4"] {
        s.apply(&format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: done}}}}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: c, image: busybox:test, command: ["/bin/true"]}}
"#
        ));
    }
    // Four finish, two may stay: the two oldest go, whatever order they finished in.
    let left = eventually(60, "two finished pods left, the newest", || {
        let pods = s.get_json(&["pods", "-l", "app=done"]);
        let items = pods["items"].as_array()?.clone();
        let names: Vec<String> = items
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap_or("").to_string())
            .collect();
        (names == ["done-3", "done-4"] && items.iter().all(|p| p["status"]["phase"] == "Succeeded"))
            .then_some(names)
    });
    assert_eq!(left, ["done-3", "done-4"]);
    s.ok(&["delete", "pods", "-l", "app=done"]);
    s.wait_pods_gone(30);
}
