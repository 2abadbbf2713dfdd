//! The Job controller (upstream `pkg/controller/job`) and the TTL-after-finished deletion of finished
//! Jobs (upstream `pkg/controller/ttlafterfinished`), on the controller runtime: caches of Jobs and Pods,
//! the pure [`plan::plan`] per Job on complete caches, and a thin executor.
//!
//! - `completions`/`parallelism` (a work queue without completions), `completionMode: Indexed` (pods
//!   `<job>-<index>-xxxxx` with the `batch.kubernetes.io/job-completion-index` annotation and label,
//!   hostname `<job>-<index>`, `JOB_COMPLETION_INDEX`), `suspend` (running pods deleted, `Suspended`
//!   condition; resuming restarts `startTime`), `activeDeadlineSeconds`, `backoffLimit` with upstream's
//!   back-off between retries (10 s doubling to 6 min since the last success), `podFailurePolicy`
//!   (`FailJob`, `Ignore`, `Count`), `podReplacementPolicy`, `ttlSecondsAfterFinished`;
//! - conditions as upstream 1.31+: `SuccessCriteriaMet`/`FailureTarget` when decided, `Complete`/`Failed`
//!   once no pod runs and every finished pod is counted, so `kubectl wait --for=condition=complete` works;
//! - the tracking finalizer protocol of [`plan`], and a status written only with the cached Job's
//!   resourceVersion, so a `kill -9` at any point never counts a pod twice;
//! - expectations as upstream's `ControllerExpectations`: after creating or deleting pods, no more are
//!   created or deleted for that Job until the pod cache shows those writes (or 5 minutes pass), so a
//!   lagging cache never makes extra pods.
//!
//! - Indexed Jobs' `backoffLimitPerIndex`, `maxFailedIndexes` (`status.failedIndexes`, the
//!   `FailIndex` action, per-index back-off, the `job-index-failure-count` annotation) and
//!   `successPolicy` (`SuccessCriteriaMet`/`Complete` with reason `SuccessPolicy`, the remaining pods
//!   stopped), as upstream's `indexed_job_utils.go` and `success_policy.go`.
//!
//! Deviations: orphan pods matching a `manualSelector` are not adopted.

pub mod plan;
#[cfg(test)]
mod tests;

use crate::events;
use api::wellknown::JOB_TRACKING_FINALIZER;
use controller_runtime::live::{self, Presence};
use controller_runtime::{Informers, Settings, SharedInformers};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions, PropagationPolicy};
use kube::runtime::watcher;
use plan::{Observed, Plan, PodRef};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// The component name on Events (upstream `job-controller`).
const COMPONENT: &str = "job-controller";

use crate::workload::expectations::Expectations as Expect;

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

fn controller_uid(p: &Pod) -> Option<&str> {
    p.metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true) && r.kind == "Job")
        .map(|r| r.uid.as_str())
}

/// Remove the tracking finalizer from one pod (upstream `removeTrackingFinalizerPatch`: a strategic
/// merge patch deleting it from the list, leaving other finalizers alone).
async fn remove_finalizer(pods: &Api<Pod>, p: &PodRef) -> Result<(), kube::Error> {
    let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": [JOB_TRACKING_FINALIZER]}});
    match pods
        .patch(&p.name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Carry out one Job's plan: status (with the cached resourceVersion, so a stale plan gets 409), then
/// finalizers, deletes, creates, events, and the TTL deletion.
async fn execute(client: &kube::Client, job: &Job, plan: Plan, exp: &mut Expect) -> Result<(), kube::Error> {
    let ns = job.metadata.namespace.clone().unwrap_or_default();
    let name = job.metadata.name.clone().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    if let Some(status) = plan.status {
        let mut next = job.clone();
        next.status = Some(status);
        match jobs.replace_status(&name, &PostParams::default(), &next).await {
            Ok(_) => {}
            // The cache was stale: plan again from the stored Job, doing nothing of this plan.
            Err(kube::Error::Api(s)) if s.code == 409 => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    for p in &plan.remove_finalizers {
        remove_finalizer(&pods, p).await?;
    }
    for p in &plan.delete {
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(p.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match pods.delete(&p.name, &dp).await {
            Ok(_) => {
                exp.deleted(p.uid.clone());
                let msg = format!("Deleted pod: {}", p.name);
                let _ = events::record(
                    client,
                    &ns,
                    job_ref(job),
                    "Normal",
                    "SuccessfulDelete",
                    &msg,
                    COMPONENT,
                )
                .await;
            }
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    for pod in &plan.create {
        match pods.create(&PostParams::default(), pod).await {
            Ok(made) => {
                let made_name = made.metadata.name.unwrap_or_default();
                exp.created(made_name.clone());
                let msg = format!("Created pod: {made_name}");
                let _ = events::record(
                    client,
                    &ns,
                    job_ref(job),
                    "Normal",
                    "SuccessfulCreate",
                    &msg,
                    COMPONENT,
                )
                .await;
            }
            Err(kube::Error::Api(s)) if s.code != 409 && (400..500).contains(&s.code) => {
                let msg = format!("Error creating: {}", s.message);
                let _ = events::record(
                    client,
                    &ns,
                    job_ref(job),
                    "Warning",
                    "FailedCreate",
                    &msg,
                    COMPONENT,
                )
                .await;
                return Err(kube::Error::Api(s));
            }
            Err(e) => return Err(e),
        }
    }
    for e in &plan.events {
        let _ = events::record(
            client,
            &ns,
            job_ref(job),
            e.type_,
            e.reason,
            &e.message,
            COMPONENT,
        )
        .await;
    }
    if plan.delete_job {
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Foreground),
            preconditions: Some(Preconditions {
                uid: job.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match jobs.delete(&name, &dp).await {
            Ok(_) => tracing::info!(job = %format!("{ns}/{name}"), "finished Job's TTL passed: deleted"),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Run until the process ends: caches of Jobs and Pods; on every pass (changes, and a 1 s resync for
/// back-offs, deadlines and TTLs), plan and execute each Job, and let go of orphaned pods that still
/// carry the tracking finalizer once a live read confirms their Job is gone.
pub async fn run(client: kube::Client, shared: SharedInformers) {
    let cfg = watcher::Config::default().any_semantic();
    let mut informers = Informers::new();
    let jobs = informers.watch_shared(&shared, Api::<Job>::all(client.clone()), cfg.clone());
    let pods = informers.watch_shared(&shared, Api::<Pod>::all(client.clone()), cfg);
    let settings = Settings {
        resync: Duration::from_secs(1),
        ..Settings::default()
    };
    let mut passes = informers.into_loop("job", settings);
    let mut expectations: HashMap<String, Expect> = HashMap::new();
    while let Some(mut pass) = passes.next_pass().await {
        let all_pods = pods.state();
        let all_jobs = jobs.state();
        let mut by_job: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
        for p in all_pods.iter() {
            if let Some(u) = controller_uid(p) {
                by_job.entry(u.to_string()).or_default().push(p);
            }
        }
        let now = jiff::Timestamp::now();
        let mut live_jobs = std::collections::HashSet::new();
        for job in all_jobs.iter() {
            let uid = job.metadata.uid.clone().unwrap_or_default();
            live_jobs.insert(uid.clone());
            let job_pods = by_job.get(&uid).cloned().unwrap_or_default();
            let exp = expectations.entry(uid.clone()).or_default();
            let settled = exp.settled(&job_pods);
            let p = plan::plan(&Observed {
                job,
                pods: job_pods,
                settled,
                now,
            });
            if p.status.is_none()
                && p.remove_finalizers.is_empty()
                && p.delete.is_empty()
                && p.create.is_empty()
                && !p.delete_job
            {
                continue;
            }
            let key = format!(
                "Job {}/{}",
                job.metadata.namespace.as_deref().unwrap_or(""),
                job.metadata.name.as_deref().unwrap_or("")
            );
            pass.step(&key, execute(&client, job, p, exp)).await;
        }
        expectations.retain(|u, _| live_jobs.contains(u));
        // Orphans: a pod whose Job is gone keeps no finalizer of ours (upstream `orphanPodFinalizers`).
        for p in all_pods.iter() {
            let Some(u) = controller_uid(p) else { continue };
            let tracked = p
                .metadata
                .finalizers
                .as_ref()
                .is_some_and(|f| f.iter().any(|f| f == JOB_TRACKING_FINALIZER));
            if !tracked || live_jobs.contains(u) {
                continue;
            }
            let ns = p.metadata.namespace.clone().unwrap_or_default();
            let owner = p
                .metadata
                .owner_references
                .iter()
                .flatten()
                .find(|r| r.uid == u)
                .map(|r| r.name.clone())
                .unwrap_or_default();
            let jobs_api: Api<Job> = Api::namespaced(client.clone(), &ns);
            let pods_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
            let r = PodRef {
                name: p.metadata.name.clone().unwrap_or_default(),
                uid: p.metadata.uid.clone().unwrap_or_default(),
            };
            let key = format!("Pod {ns}/{}", r.name);
            pass.step(&key, async {
                match live::presence(&jobs_api, &owner, u).await {
                    Ok(Presence::Absent) => remove_finalizer(&pods_api, &r).await.map_err(|e| e.to_string()),
                    Ok(Presence::Present) => Ok(()),
                    Err(e) => Err(e.to_string()),
                }
            })
            .await;
        }
    }
}
