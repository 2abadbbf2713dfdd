//! The CronJob controller (upstream `pkg/controller/cronjob/cronjob_controllerv2.go` and `utils.go`) on
//! the controller runtime: caches of CronJobs and Jobs, the pure [`plan`] per CronJob, a thin executor.
//!
//! - the schedule (`api::cron`: five fields or a descriptor, in `spec.timeZone` or UTC): the most recent
//!   scheduled time after `status.lastScheduleTime` (or the creation time) up to now starts one Job;
//!   older missed times are skipped, as upstream;
//! - `startingDeadlineSeconds`: a scheduled time older than the deadline is missed (`MissSchedule`);
//! - `concurrencyPolicy`: `Allow`, `Forbid` (nothing starts while a Job of the CronJob runs), `Replace`
//!   (the running Jobs are deleted first);
//! - `suspend`; a CronJob being deleted starts nothing;
//! - Jobs are named `<cronjob>-<scheduled time in minutes since the epoch>`, so a restart between the
//!   create and the status write finds the same Job (409) instead of starting a second one; they carry
//!   the template's labels and annotations plus `batch.kubernetes.io/cronjob-scheduled-timestamp`;
//! - `status.active` (running Jobs the CronJob controls, including `kubectl create job --from=cronjob/x`
//!   ones), `lastScheduleTime`, `lastSuccessfulTime`; finished Jobs beyond
//!   `successfulJobsHistoryLimit`/`failedJobsHistoryLimit` are deleted oldest first (Background).

use crate::events;
use api::wellknown::CRONJOB_SCHEDULED_TIMESTAMP;
use controller_runtime::{Informers, Settings, SharedInformers};
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::api::{Api, DeleteParams, PostParams, Preconditions, PropagationPolicy};
use kube::runtime::watcher;
use std::collections::BTreeMap;
use std::time::Duration;

/// The component name on Events (upstream `cronjob-controller`).
const COMPONENT: &str = "cronjob-controller";

/// What the plan reads.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    /// The CronJob.
    pub cron_job: &'a CronJob,
    /// The Jobs it controls (controllerRef uid).
    pub jobs: Vec<&'a Job>,
    /// Now.
    pub now: Timestamp,
}

/// One CronJob's steps, carried out in order: deletes, create, status, events.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Jobs to delete (`(name, uid)`): history beyond the limits, or running ones under `Replace`.
    pub delete: Vec<(String, String)>,
    /// The Job to create and its scheduled time.
    pub create: Option<(Job, Timestamp)>,
    /// The status without the new Job (the executor adds its reference and `lastScheduleTime`).
    pub status: CronJobStatus,
    /// Whether `status` differs from the stored one (a create always writes it).
    pub status_changed: bool,
    /// Events: `(type, reason, message)`.
    pub events: Vec<(&'static str, &'static str, String)>,
}

fn finished(job: &Job) -> Option<&'static str> {
    let conds = job.status.as_ref().and_then(|s| s.conditions.as_ref())?;
    for (t, name) in [("Complete", "Complete"), ("Failed", "Failed")] {
        if conds.iter().any(|c| c.type_ == t && c.status == "True") {
            return Some(name);
        }
    }
    None
}

fn job_ref(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        ..ObjectReference::default()
    }
}

/// The Job for the scheduled time `at` (upstream `getJobFromTemplate2`).
#[must_use]
pub fn job_for(cj: &CronJob, at: Timestamp, tz: &jiff::tz::TimeZone) -> Job {
    let name = cj.metadata.name.clone().unwrap_or_default();
    let tmpl = cj
        .spec
        .as_ref()
        .map(|s| s.job_template.clone())
        .unwrap_or_default();
    let tmeta = tmpl.metadata.unwrap_or_default();
    let mut annotations = tmeta.annotations.unwrap_or_default();
    annotations.insert(
        CRONJOB_SCHEDULED_TIMESTAMP.into(),
        at.to_zoned(tz.clone())
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string()
            .replace("+00:00", "Z"),
    );
    Job {
        metadata: ObjectMeta {
            name: Some(format!("{name}-{}", at.as_second().div_euclid(60))),
            namespace: cj.metadata.namespace.clone(),
            labels: tmeta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".into(),
                kind: "CronJob".into(),
                name,
                uid: cj.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        spec: Some(tmpl.spec.unwrap_or_default()),
        status: None,
    }
}

/// The whole decision for one CronJob, and when to look again (the next scheduled time).
#[must_use]
pub fn plan(o: &Observed) -> (Plan, Option<Duration>) {
    let cj = o.cron_job;
    let spec = cj.spec.clone().unwrap_or_default();
    let old = cj.status.clone().unwrap_or_default();
    let mut out = Plan::default();
    let mut status = old.clone();

    // Active Jobs and the last success, from the Jobs themselves (upstream `syncCronJob`).
    let mut running: Vec<&Job> = o.jobs.iter().copied().filter(|j| finished(j).is_none()).collect();
    running.sort_by_key(|j| j.metadata.name.clone());
    let was_active: Vec<String> = old
        .active
        .iter()
        .flatten()
        .filter_map(|r| r.uid.clone())
        .collect();
    for j in &o.jobs {
        if let Some(how) = finished(j)
            && was_active.iter().any(|u| Some(u) == j.metadata.uid.as_ref())
        {
            out.events.push((
                "Normal",
                "SawCompletedJob",
                format!(
                    "Saw completed job: {}, condition: {how}",
                    j.metadata.name.as_deref().unwrap_or("")
                ),
            ));
        }
    }
    let active: Vec<ObjectReference> = running.iter().map(|j| job_ref(j)).collect();
    let same_active = {
        let uids = |v: &[ObjectReference]| v.iter().map(|r| r.uid.clone()).collect::<Vec<_>>();
        uids(&active) == uids(old.active.as_deref().unwrap_or_default())
    };
    status.active = (!active.is_empty()).then_some(active);
    let last_success = o
        .jobs
        .iter()
        .filter(|j| finished(j) == Some("Complete"))
        .filter_map(|j| j.status.as_ref()?.completion_time.as_ref().map(|t| t.0))
        .max();
    if let Some(t) = last_success
        && old.last_successful_time.as_ref().is_none_or(|o| o.0 < t)
    {
        status.last_successful_time = Some(Time(t));
    }

    // History limits (upstream `cleanupFinishedJobs`: oldest start first).
    for (kind, limit) in [
        ("Complete", spec.successful_jobs_history_limit.unwrap_or(3)),
        ("Failed", spec.failed_jobs_history_limit.unwrap_or(1)),
    ] {
        let mut done: Vec<&Job> = o
            .jobs
            .iter()
            .copied()
            .filter(|j| finished(j) == Some(kind))
            .collect();
        done.sort_by_key(|j| {
            (
                j.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0),
                j.metadata.name.clone(),
            )
        });
        let extra = done
            .len()
            .saturating_sub(usize::try_from(limit.max(0)).unwrap_or(0));
        for j in done.into_iter().take(extra) {
            out.delete.push((
                j.metadata.name.clone().unwrap_or_default(),
                j.metadata.uid.clone().unwrap_or_default(),
            ));
        }
    }
    out.status_changed = !same_active || status.last_successful_time != old.last_successful_time;
    out.status = status;

    if cj.metadata.deletion_timestamp.is_some() || spec.suspend == Some(true) {
        return (out, None);
    }
    let (sched, tz) = match (
        api::cron::parse(&spec.schedule),
        api::cron::zone(spec.time_zone.as_deref()),
    ) {
        (Ok(s), Ok(tz)) => (s, tz),
        (Err(e), _) | (_, Err(e)) => {
            out.events.push(("Warning", "UnparseableSchedule", e));
            return (out, None);
        }
    };
    let now = o.now;
    let next = sched
        .next_after(now, &tz)
        .map(|n| n.duration_since(now).unsigned_abs());
    let mut earliest = old
        .last_schedule_time
        .as_ref()
        .map(|t| t.0)
        .or(cj.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(now);
    let Some(due) = sched.last_at_or_before(now, &tz).filter(|d| *d > earliest) else {
        return (out, next);
    };
    if let Some(deadline) = spec.starting_deadline_seconds {
        let window = now - jiff::SignedDuration::from_secs(deadline);
        if window > earliest {
            earliest = window;
        }
        if due < earliest {
            out.events.push((
                "Warning",
                "MissSchedule",
                format!(
                    "Missed scheduled time to start a job: {}",
                    due.to_zoned(tz.clone()).strftime("%Y-%m-%dT%H:%M:%S%:z")
                ),
            ));
            return (out, next);
        }
    }
    match spec.concurrency_policy.as_deref() {
        Some("Forbid") if !running.is_empty() => {
            out.events.push((
                "Normal",
                "JobAlreadyActive",
                "Not starting job because prior execution is running and concurrency policy is Forbid".into(),
            ));
            return (out, next);
        }
        Some("Replace") => {
            for j in &running {
                out.delete.push((
                    j.metadata.name.clone().unwrap_or_default(),
                    j.metadata.uid.clone().unwrap_or_default(),
                ));
            }
            out.status.active = None;
        }
        _ => {}
    }
    out.create = Some((job_for(cj, due, &tz), due));
    (out, next)
}

fn cron_ref(cj: &CronJob) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("CronJob".into()),
        name: cj.metadata.name.clone(),
        namespace: cj.metadata.namespace.clone(),
        uid: cj.metadata.uid.clone(),
        ..ObjectReference::default()
    }
}

async fn execute(client: &kube::Client, cj: &CronJob, plan: Plan) -> Result<(), kube::Error> {
    let ns = cj.metadata.namespace.clone().unwrap_or_default();
    let name = cj.metadata.name.clone().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let crons: Api<CronJob> = Api::namespaced(client.clone(), &ns);
    let rec = |type_: &'static str, reason: &'static str, msg: String| {
        let c = client.clone();
        let ns = ns.clone();
        let r = cron_ref(cj);
        async move {
            let _ = events::record(&c, &ns, r, type_, reason, &msg, COMPONENT).await;
        }
    };
    for (jname, uid) in &plan.delete {
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            preconditions: Some(Preconditions {
                uid: Some(uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match jobs.delete(jname, &dp).await {
            Ok(_) => rec("Normal", "SuccessfulDelete", format!("Deleted job {jname}")).await,
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    let mut status = plan.status;
    let mut write = plan.status_changed;
    if let Some((job, at)) = plan.create {
        let jname = job.metadata.name.clone().unwrap_or_default();
        let made = match jobs.create(&PostParams::default(), &job).await {
            Ok(made) => {
                rec("Normal", "SuccessfulCreate", format!("Created job {jname}")).await;
                made
            }
            // Made before a restart: the name is the scheduled time's, so it is this one.
            Err(kube::Error::Api(s)) if s.code == 409 => jobs.get(&jname).await?,
            Err(kube::Error::Api(s)) if (400..500).contains(&s.code) => {
                rec(
                    "Warning",
                    "FailedCreate",
                    format!("Error creating job: {}", s.message),
                )
                .await;
                return Err(kube::Error::Api(s));
            }
            Err(e) => return Err(e),
        };
        let active = status.active.get_or_insert_with(Vec::new);
        if !active.iter().any(|r| r.uid == made.metadata.uid) && crate::cronjob::finished(&made).is_none() {
            active.push(job_ref(&made));
        }
        status.last_schedule_time = Some(Time(at));
        write = true;
    }
    if write {
        let mut next = cj.clone();
        next.status = Some(status);
        match crons.replace_status(&name, &PostParams::default(), &next).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    for (t, r, m) in plan.events {
        rec(t, r, m).await;
    }
    Ok(())
}

/// Run until the process ends: caches of CronJobs and Jobs; a pass on changes and every second (so a
/// schedule fires within about a second of its time).
pub async fn run(client: kube::Client, shared: SharedInformers) {
    let cfg = watcher::Config::default().any_semantic();
    let mut informers = Informers::new();
    let crons = informers.watch_shared(&shared, Api::<CronJob>::all(client.clone()), cfg.clone());
    let jobs = informers.watch_shared(&shared, Api::<Job>::all(client.clone()), cfg);
    let settings = Settings {
        resync: Duration::from_secs(1),
        ..Settings::default()
    };
    let mut passes = informers.into_loop("cronjob", settings);
    // Events that do not change from pass to pass (a Forbid skip, a bad schedule) are recorded once per
    // scheduled time, not every second.
    let mut said: BTreeMap<String, String> = BTreeMap::new();
    while let Some(mut pass) = passes.next_pass().await {
        let all_jobs = jobs.state();
        let mut by_owner: BTreeMap<String, Vec<&Job>> = BTreeMap::new();
        for j in all_jobs.iter() {
            if let Some(r) = j
                .metadata
                .owner_references
                .iter()
                .flatten()
                .find(|r| r.controller == Some(true) && r.kind == "CronJob")
            {
                by_owner.entry(r.uid.clone()).or_default().push(j);
            }
        }
        let now = Timestamp::now();
        for cj in crons.state().iter() {
            let uid = cj.metadata.uid.clone().unwrap_or_default();
            let (mut p, _next) = plan(&Observed {
                cron_job: cj,
                jobs: by_owner.get(&uid).cloned().unwrap_or_default(),
                now,
            });
            let key = format!(
                "CronJob {}/{}",
                cj.metadata.namespace.as_deref().unwrap_or(""),
                cj.metadata.name.as_deref().unwrap_or("")
            );
            let sig = format!("{:?}", p.events);
            if p.create.is_none() && said.get(&key) == Some(&sig) {
                p.events.clear();
            } else if p.create.is_none() {
                said.insert(key.clone(), sig);
            }
            if p.delete.is_empty() && p.create.is_none() && !p.status_changed && p.events.is_empty() {
                continue;
            }
            pass.step(&key, execute(&client, cj, p)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(s: &str) -> Timestamp {
        s.parse().expect("time")
    }

    fn cron(spec: serde_json::Value, status: serde_json::Value) -> CronJob {
        let mut spec = spec;
        spec["jobTemplate"] = json!({"metadata": {"labels": {"app": "backup"}},
            "spec": {"template": {"spec": {"restartPolicy": "OnFailure",
                "containers": [{"name": "c", "image": "busybox"}]}}}});
        spec["concurrencyPolicy"] = spec.get("concurrencyPolicy").cloned().unwrap_or(json!("Allow"));
        serde_json::from_value(
            json!({"metadata": {"name": "backup", "namespace": "default", "uid": "cj",
            "creationTimestamp": "2026-01-01T10:00:30Z"}, "spec": spec, "status": status}),
        )
        .expect("cronjob")
    }

    fn job(name: &str, cond: Option<&str>, start: &str) -> Job {
        let mut j = json!({"metadata": {"name": name, "namespace": "default", "uid": format!("u-{name}"),
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "backup", "uid": "cj",
                "controller": true}]},
            "status": {"startTime": start}});
        if let Some(c) = cond {
            j["status"]["conditions"] = json!([{"type": c, "status": "True"}]);
            j["status"]["completionTime"] = json!(start);
        }
        serde_json::from_value(j).expect("job")
    }

    fn run(cj: &CronJob, jobs: &[Job], now: &str) -> (Plan, Option<Duration>) {
        plan(&Observed {
            cron_job: cj,
            jobs: jobs.iter().collect(),
            now: t(now),
        })
    }

    #[test]
    fn a_due_schedule_creates_one_job_named_by_its_minute_and_waits_for_the_next() {
        let cj = cron(json!({"schedule": "*/1 * * * *"}), json!({}));
        let (p, next) = run(&cj, &[], "2026-01-01T10:00:45Z");
        assert!(
            p.create.is_none(),
            "created at 10:00:30, nothing due before 10:01"
        );
        assert_eq!(next, Some(Duration::from_secs(15)));
        let (p, _) = run(&cj, &[], "2026-01-01T10:03:10Z");
        let (job, at) = p.create.expect("due");
        assert_eq!(at, t("2026-01-01T10:03:00Z"), "only the most recent missed time");
        assert_eq!(
            job.metadata.name.as_deref(),
            Some(format!("backup-{}", at.as_second() / 60).as_str())
        );
        let ann = job.metadata.annotations.expect("annotations");
        assert_eq!(ann[CRONJOB_SCHEDULED_TIMESTAMP], "2026-01-01T10:03:00Z");
        assert_eq!(job.metadata.labels.expect("labels")["app"], "backup");
        // Once lastScheduleTime is stored, the same minute never starts a second Job.
        let cj = cron(
            json!({"schedule": "*/1 * * * *"}),
            json!({"lastScheduleTime": "2026-01-01T10:03:00Z"}),
        );
        assert!(run(&cj, &[], "2026-01-01T10:03:50Z").0.create.is_none());
    }

    #[test]
    fn time_zone_suspend_deadline_and_concurrency() {
        let cj = cron(
            json!({"schedule": "0 9 * * *", "timeZone": "Europe/Berlin"}),
            json!({"lastScheduleTime": "2026-01-01T08:00:00Z"}),
        );
        let (p, _) = run(&cj, &[], "2026-01-02T08:00:05Z");
        let (made, _) = p.create.expect("09:00 Berlin = 08:00 UTC");
        assert_eq!(
            made.metadata.annotations.expect("a")[CRONJOB_SCHEDULED_TIMESTAMP],
            "2026-01-02T09:00:00+01:00"
        );
        let cj = cron(json!({"schedule": "* * * * *", "suspend": true}), json!({}));
        assert!(run(&cj, &[], "2026-01-01T11:00:00Z").0.create.is_none());
        let cj = cron(
            json!({"schedule": "0 * * * *", "startingDeadlineSeconds": 60}),
            json!({"lastScheduleTime": "2026-01-01T10:00:00Z"}),
        );
        let (p, _) = run(&cj, &[], "2026-01-01T11:05:00Z");
        assert!(p.create.is_none());
        assert_eq!(p.events[0].1, "MissSchedule");
        let running = job("backup-1", None, "2026-01-01T10:00:00Z");
        let forbid = cron(
            json!({"schedule": "* * * * *", "concurrencyPolicy": "Forbid"}),
            json!({"lastScheduleTime": "2026-01-01T10:59:00Z"}),
        );
        let (p, _) = run(&forbid, std::slice::from_ref(&running), "2026-01-01T11:00:01Z");
        assert!(p.create.is_none());
        let replace = cron(
            json!({"schedule": "* * * * *", "concurrencyPolicy": "Replace"}),
            json!({"lastScheduleTime": "2026-01-01T10:59:00Z"}),
        );
        let (p, _) = run(&replace, std::slice::from_ref(&running), "2026-01-01T11:00:01Z");
        assert_eq!(p.delete, [("backup-1".to_string(), "u-backup-1".to_string())]);
        assert!(p.create.is_some());
    }

    #[test]
    fn active_last_success_and_history_limits() {
        let cj = cron(
            json!({"schedule": "0 0 1 1 *", "successfulJobsHistoryLimit": 1, "failedJobsHistoryLimit": 1}),
            json!({"lastScheduleTime": "2026-01-01T10:00:00Z"}),
        );
        let jobs = [
            job("a", Some("Complete"), "2026-01-01T10:01:00Z"),
            job("b", Some("Complete"), "2026-01-01T10:02:00Z"),
            job("c", Some("Failed"), "2026-01-01T10:03:00Z"),
            job("d", None, "2026-01-01T10:04:00Z"),
        ];
        let (p, _) = run(&cj, &jobs, "2026-01-01T10:05:00Z");
        assert_eq!(p.delete, [("a".to_string(), "u-a".to_string())]);
        let active: Vec<_> = p
            .status
            .active
            .iter()
            .flatten()
            .filter_map(|r| r.name.clone())
            .collect();
        assert_eq!(active, ["d"]);
        assert_eq!(
            p.status.last_successful_time.map(|t| t.0),
            Some(t("2026-01-01T10:02:00Z"))
        );
        assert!(p.status_changed);
    }
}
