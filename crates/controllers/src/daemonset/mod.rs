//! The DaemonSet controller (upstream `pkg/controller/daemon`) on the controller runtime: caches of
//! DaemonSets, Nodes, Pods and ControllerRevisions, the pure [`plan::plan`] per DaemonSet on complete
//! caches, and a thin executor.
//!
//! - one pod on every node that should run it (the template's nodeSelector and required node affinity,
//!   taints against its tolerations plus the ones upstream adds to every daemon pod); a new node gets its
//!   pod, a node that no longer qualifies (or is gone) loses it; a failed daemon pod is replaced;
//! - pods are pinned to their node by a required node affinity on `metadata.name` and bound by the
//!   scheduler, as upstream since 1.12;
//! - ControllerRevisions of the template (`<ds>-<hash>`, the `controller-revision-hash` label on pods),
//!   renumbered on a rollback, beyond `revisionHistoryLimit` deleted, so `kubectl rollout
//!   history|undo|status daemonset` work;
//! - `RollingUpdate` with `maxUnavailable` (old pods replaced while the unavailable ones stay within it),
//!   `OnDelete` (only deleted pods come back updated);
//! - status: `desiredNumberScheduled`, `currentNumberScheduled`, `numberMisscheduled`, `numberReady`,
//!   `updatedNumberScheduled`, `numberAvailable` (with `minReadySeconds`), `numberUnavailable`,
//!   `observedGeneration`.
//!
//! Deviations: `rollingUpdate.maxSurge` is stored but updates always go delete-then-create; no back-off
//! between replacements of a failing daemon pod; orphan pods matching the selector are not adopted.

pub mod plan;
#[cfg(test)]
mod tests;

use crate::workload::controller_ref::controller_of;
use controller_runtime::{Informers, Settings, SharedInformers};
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::watcher;
use plan::{Observed, Plan};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::workload::expectations::Expectations as Expect;

async fn execute(
    client: &kube::Client,
    ds: &DaemonSet,
    plan: Plan,
    exp: &mut Expect,
) -> Result<(), kube::Error> {
    let ns = ds.metadata.namespace.clone().unwrap_or_default();
    let name = ds.metadata.name.clone().unwrap_or_default();
    let revisions: Api<ControllerRevision> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let sets: Api<DaemonSet> = Api::namespaced(client.clone(), &ns);
    if let Some(rev) = &plan.create_revision {
        match revisions.create(&PostParams::default(), rev).await {
            Ok(_) => {}
            // The same name with other data would be a hash collision (upstream bumps collisionCount);
            // the same data made before a restart is fine.
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let existing = revisions.get(rev.metadata.name.as_deref().unwrap_or("")).await?;
                let same = existing
                    .data
                    .as_ref()
                    .zip(rev.data.as_ref())
                    .is_some_and(|(a, b)| crate::workload::revision::equal_data(&a.0, &b.0));
                if !same {
                    let count = ds.status.as_ref().and_then(|s| s.collision_count).unwrap_or(0) + 1;
                    let patch = json!({"status": {"collisionCount": count}});
                    sets.patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
                        .await?;
                    return Ok(());
                }
            }
            Err(e) => return Err(e),
        }
    }
    if let Some((rname, revision)) = &plan.renumber_revision {
        let patch = json!({"revision": revision});
        revisions
            .patch(rname, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
    }
    for r in &plan.delete_revisions {
        match revisions.delete(r, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
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
            }
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    for pod in &plan.create {
        let made = pods.create(&PostParams::default(), pod).await?;
        exp.created(made.metadata.name.unwrap_or_default());
    }
    if let Some(status) = plan.status {
        let mut next = ds.clone();
        next.status = Some(status);
        match sets.replace_status(&name, &PostParams::default(), &next).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Run until the process ends: on every pass (changes, a 2 s resync for `minReadySeconds`), plan and
/// execute each DaemonSet.
pub async fn run(client: kube::Client, shared: SharedInformers) {
    let cfg = watcher::Config::default().any_semantic();
    let mut informers = Informers::new();
    let sets = informers.watch_shared(&shared, Api::<DaemonSet>::all(client.clone()), cfg.clone());
    let nodes = informers.watch_shared(&shared, Api::<Node>::all(client.clone()), cfg.clone());
    let pods = informers.watch_shared(&shared, Api::<Pod>::all(client.clone()), cfg.clone());
    let revisions = informers.watch_shared(&shared, Api::<ControllerRevision>::all(client.clone()), cfg);
    let settings = Settings {
        resync: Duration::from_secs(2),
        ..Settings::default()
    };
    let mut passes = informers.into_loop("daemonset", settings);
    let mut expectations: HashMap<String, Expect> = HashMap::new();
    while let Some(mut pass) = passes.next_pass().await {
        let all_pods = pods.state();
        let all_revs = revisions.state();
        let all_nodes = nodes.state();
        let node_refs: Vec<&Node> = all_nodes.iter().map(AsRef::as_ref).collect();
        let mut pods_of: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
        for p in all_pods.iter() {
            if let Some(r) = controller_of(&p.metadata).filter(|r| r.kind == "DaemonSet") {
                pods_of.entry(r.uid.clone()).or_default().push(p);
            }
        }
        let mut revs_of: BTreeMap<String, Vec<&ControllerRevision>> = BTreeMap::new();
        for r in all_revs.iter() {
            if let Some(o) = controller_of(&r.metadata).filter(|o| o.kind == "DaemonSet") {
                revs_of.entry(o.uid.clone()).or_default().push(r);
            }
        }
        let now = jiff::Timestamp::now();
        let mut live = std::collections::HashSet::new();
        for ds in sets.state().iter() {
            let uid = ds.metadata.uid.clone().unwrap_or_default();
            live.insert(uid.clone());
            let ds_pods = pods_of.get(&uid).cloned().unwrap_or_default();
            let exp = expectations.entry(uid.clone()).or_default();
            let settled = exp.settled(&ds_pods);
            let p = plan::plan(&Observed {
                ds,
                nodes: node_refs.clone(),
                pods: ds_pods,
                revisions: revs_of.get(&uid).cloned().unwrap_or_default(),
                settled,
                now,
            });
            if p.create_revision.is_none()
                && p.renumber_revision.is_none()
                && p.delete_revisions.is_empty()
                && p.delete.is_empty()
                && p.create.is_empty()
                && p.status.is_none()
            {
                continue;
            }
            let key = format!(
                "DaemonSet {}/{}",
                ds.metadata.namespace.as_deref().unwrap_or(""),
                ds.metadata.name.as_deref().unwrap_or("")
            );
            pass.step(&key, execute(&client, ds, p, exp)).await;
        }
        expectations.retain(|u, _| live.contains(u));
    }
}
