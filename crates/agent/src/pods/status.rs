//! The pod's status as the kubelet's status manager writes it (upstream `status_manager.go`,
//! `kubelet_pods.go` `generateAPIPodStatus` and `getPhase`): phase, conditions, container statuses and
//! the pod's IPs, written through `pods/status` only when they changed.

use super::*;

/// The pod's phase from its app containers' statuses (as the kubelet's `getPhase`): Pending while
/// initializing or while a container waits without having run; Running while any runs, and for
/// `restartPolicy: Always` while they are all stopped (a waiting container with a last termination counts
/// as stopped: it is restarting, e.g. in CrashLoopBackOff); once all stopped, Succeeded when every one
/// exited 0, Failed under `Never`, Running under `OnFailure` (it restarts).
pub(super) fn pod_phase(initialized: bool, app: &[Value], restart_policy: &str) -> &'static str {
    let (mut running, mut stopped, mut succeeded, mut waiting) = (0, 0, 0, 0);
    for s in app {
        let state = &s["state"];
        if state.get("running").is_some() {
            running += 1;
        } else if let Some(t) = state.get("terminated") {
            stopped += 1;
            if t["exitCode"] == 0 {
                succeeded += 1;
            }
        } else if s["lastState"].get("terminated").is_some() {
            stopped += 1;
        } else {
            waiting += 1;
        }
    }
    if !initialized || waiting > 0 || app.is_empty() {
        "Pending"
    } else if running > 0 || restart_policy == "Always" {
        "Running"
    } else if stopped == succeeded {
        "Succeeded"
    } else if restart_policy == "Never" {
        "Failed"
    } else {
        "Running"
    }
}

/// Whether a running container counts as ready (`ready`) or started: without the relevant probes at once,
/// with them only after the probes said so (never before their first verdict).
pub(super) fn probed_ok(c: &Container, verdicts: &HashMap<String, (bool, bool)>, ready: bool) -> bool {
    let probed = if ready {
        c.readiness_probe.is_some() || c.startup_probe.is_some()
    } else {
        c.startup_probe.is_some()
    };
    !probed
        || verdicts
            .get(&c.name)
            .is_some_and(|v| if ready { v.1 } else { v.0 })
}

pub(super) fn read_restarts(cdir: &Path) -> i64 {
    std::fs::read_to_string(cdir.join("restarts"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

impl Agent {
    pub(super) async fn write_status(
        &mut self,
        p: &Pod,
        dir: &Path,
        waiting: &BTreeMap<String, (String, String)>,
        initialized: bool,
        verdicts: &HashMap<String, (bool, bool)>,
    ) -> Result<(), String> {
        let uid = p.metadata.uid.clone().unwrap_or_default();
        let spec = p.spec.clone().unwrap_or_default();
        let now = jiff::Timestamp::now().to_string();
        let statuses = |list: &[Container], sub: &str| -> Vec<Value> {
            list.iter()
                .map(|c| {
                    let cdir = dir.join(sub).join(&c.name);
                    let digest = self.images.resolve(c.image.as_deref().unwrap_or("")).unwrap_or_default();
                    let state = match (waiting.get(&c.name), runtime::state(&cdir)) {
                        (Some((reason, message)), _) => json!({"waiting": {"reason": reason, "message": message}}),
                        (None, State::Running { started, .. }) => json!({"running": {"startedAt": started}}),
                        (None, State::Exited { code, started, finished }) => json!({"terminated": {
                            "exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" },
                            "startedAt": started, "finishedAt": finished}}),
                        (None, State::Absent | State::Starting) => json!({"waiting": {"reason": "ContainerCreating"}}),
                        (None, State::Stopping) => json!({"waiting": {"reason": "ContainerCreating"}}),
                    };
                    let running = state.get("running").is_some();
                    let last = runtime::last_exit(&cdir).map_or(json!({}), |(code, started, finished)| {
                        json!({"terminated": {"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" },
                                              "startedAt": started, "finishedAt": finished}})
                    });
                    json!({"name": c.name, "image": c.image, "imageID": digest,
                           "containerID": format!("berth://{uid}/{}", c.name),
                           "ready": running && sub == "containers" && probed_ok(c, verdicts, true),
                           "started": running && probed_ok(c, verdicts, false),
                           "restartCount": read_restarts(&cdir), "state": state, "lastState": last})
                })
                .collect()
        };
        let init = statuses(spec.init_containers.as_deref().unwrap_or(&[]), "init");
        let app = statuses(&spec.containers, "containers");
        // Ephemeral containers are never ready (upstream leaves `ready` false for them).
        let mut ephemeral = statuses(&ephemeral_containers(&spec), "containers");
        for s in &mut ephemeral {
            s["ready"] = json!(false);
        }
        let all_ready = !app.is_empty() && app.iter().all(|s| s["ready"] == true);
        let restart_policy = spec.restart_policy.clone().unwrap_or_else(|| "Always".into());
        let phase = pod_phase(initialized, &app, &restart_policy);
        let old_conds: Vec<Value> = p
            .status
            .as_ref()
            .and_then(|s| serde_json::to_value(&s.conditions).ok())
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default();
        let cond = |t: &str, ok: bool| {
            let status = if ok { "True" } else { "False" };
            let since = old_conds
                .iter()
                .find(|c| c["type"] == t && c["status"] == status)
                .and_then(|c| c["lastTransitionTime"].as_str().map(str::to_string))
                .unwrap_or_else(|| now.clone());
            json!({"type": t, "status": status, "lastTransitionTime": since})
        };
        let host_ip = self.cfg.node_ip.to_string();
        let ip = pod_ip(&self.cfg, p).to_string();
        let start_time = p
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0.to_string())
            .unwrap_or_else(|| now.clone());
        let status = json!({
            "phase": phase,
            "conditions": [cond("PodReadyToStartContainers", true), cond("Initialized", initialized), cond("Ready", all_ready),
                           cond("ContainersReady", all_ready), cond("PodScheduled", true)],
            "hostIP": host_ip, "hostIPs": [{"ip": host_ip}], "podIP": ip, "podIPs": [{"ip": ip}],
            "startTime": start_time,
            "initContainerStatuses": init,
            "containerStatuses": app,
            "ephemeralContainerStatuses": if ephemeral.is_empty() { Value::Null } else { json!(ephemeral) },
            "qosClass": p.status.as_ref().and_then(|s| s.qos_class.clone()),
        });
        if self.written.get(&uid) == Some(&status) {
            return Ok(());
        }
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), p.metadata.namespace.as_deref().unwrap_or(""));
        api.patch_status(
            p.metadata.name.as_deref().unwrap_or(""),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
        .map_err(|e| e.to_string())?;
        self.written.insert(uid, status);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_follows_the_kubelets_get_phase() {
        let running = json!({"state": {"running": {}}, "lastState": {}});
        let exited = |code: i32| json!({"state": {"terminated": {"exitCode": code}}, "lastState": {}});
        let crash_looping = json!({"state": {"waiting": {"reason": "CrashLoopBackOff"}},
                                   "lastState": {"terminated": {"exitCode": 1}}});
        let creating = json!({"state": {"waiting": {"reason": "ContainerCreating"}}, "lastState": {}});
        // A restarting container (waiting, with a last termination) of an Always pod: Running, not Pending.
        assert_eq!(
            pod_phase(true, std::slice::from_ref(&crash_looping), "Always"),
            "Running"
        );
        assert_eq!(
            pod_phase(true, std::slice::from_ref(&crash_looping), "OnFailure"),
            "Running"
        );
        assert_eq!(
            pod_phase(true, std::slice::from_ref(&creating), "Always"),
            "Pending"
        );
        assert_eq!(pod_phase(true, &[running.clone(), creating], "Always"), "Pending");
        assert_eq!(
            pod_phase(false, std::slice::from_ref(&running), "Always"),
            "Pending"
        );
        assert_eq!(pod_phase(true, &[running.clone(), exited(0)], "Never"), "Running");
        assert_eq!(pod_phase(true, &[exited(0), exited(0)], "Never"), "Succeeded");
        assert_eq!(pod_phase(true, &[exited(0), exited(1)], "Never"), "Failed");
        assert_eq!(pod_phase(true, &[exited(1)], "OnFailure"), "Running");
        assert_eq!(pod_phase(true, &[exited(0)], "Always"), "Running");
    }
}
