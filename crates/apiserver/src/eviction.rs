//! `pods/eviction` (upstream `pkg/registry/core/pod/storage/eviction.go`, 1.32): a `policy/v1 Eviction`
//! POSTed for a pod is a graceful delete that honours the pod's PodDisruptionBudget. With a budget whose
//! `status.disruptionsAllowed` is 0 the answer is 429 TooManyRequests "Cannot evict pod as it would
//! violate the pod's disruption budget." (a `DisruptionBudget` cause says how many healthy pods the budget
//! needs), which `kubectl drain` retries every 5 s; otherwise the budget's `disruptionsAllowed` is
//! decremented and the pod recorded in `status.disruptedPods` (so the disruption controller does not count
//! it healthy until it is gone) by a compare-and-swap write of the budget's status, then the pod is deleted.

use crate::error::{ApiError, ApiResult, Subject};
use crate::http::delete_options_from;
use crate::registry::{ListOptions, Registry, WriteOptions};
use crate::request::Target;
use api::resources::{self, Subresource};
use serde_json::{Value, json};

/// Upstream's message for a refused eviction.
pub const REFUSED: &str = "Cannot evict pod as it would violate the pod's disruption budget.";
/// Upstream's `MaxDisruptedPodSize`: evictions not yet confirmed by the disruption controller.
const MAX_DISRUPTED_PODS: usize = 2000;

/// Whether the pod may go without asking its budget (upstream `canIgnorePDB`): finished, not yet running,
/// or already being deleted.
pub fn can_ignore_budget(pod: &Value) -> bool {
    matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed" | "Pending")
    ) || pod
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
}

/// Whether the pod's `Ready` condition is `True` (upstream `podutil.IsPodReady`).
pub fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// Whether a policy/v1 budget selects the pod: an empty selector selects every pod of the namespace, a
/// missing one none (upstream `getPodDisruptionBudgets`).
pub fn selects(pdb: &Value, pod: &Value) -> bool {
    let Some(sel) = pdb.pointer("/spec/selector") else {
        return false;
    };
    let Ok(sel) = api::selector::LabelSelector::from_json(sel) else {
        return false;
    };
    let empty = serde_json::Map::new();
    let labels = pod
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    sel.matches(labels)
}

/// What the budget says about evicting one more pod (upstream `checkAndDecrement`).
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed: the budget's status after the eviction (`disruptionsAllowed` - 1, the pod recorded).
    Allow(Value),
    /// 429 with this cause message.
    TooMany(String),
    /// 403 with this message.
    Forbidden(String),
}

/// Decide one eviction against `pdb` at time `now` (RFC 3339).
pub fn check_and_decrement(pdb: &Value, pod_name: &str, now: &str) -> Verdict {
    let name = pdb
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let int = |p: &str| pdb.pointer(p).and_then(Value::as_i64).unwrap_or(0);
    if int("/status/observedGeneration") < int("/metadata/generation") {
        return Verdict::TooMany(format!(
            "The disruption budget {name} is still being processed by the server."
        ));
    }
    let allowed = int("/status/disruptionsAllowed");
    if allowed < 0 {
        return Verdict::Forbidden("pdb disruptions allowed is negative".into());
    }
    let disrupted = pdb
        .pointer("/status/disruptedPods")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if disrupted.len() > MAX_DISRUPTED_PODS {
        return Verdict::Forbidden(
            "DisruptedPods map too big - too many evictions not confirmed by PDB controller".into(),
        );
    }
    if allowed == 0 {
        return Verdict::TooMany(format!(
            "The disruption budget {name} needs {} healthy pods and has {} currently",
            int("/status/desiredHealthy"),
            int("/status/currentHealthy")
        ));
    }
    let mut status = pdb.get("status").cloned().unwrap_or_else(|| json!({}));
    status["disruptionsAllowed"] = json!(allowed - 1);
    let mut disrupted = disrupted;
    disrupted.insert(pod_name.to_string(), json!(now));
    status["disruptedPods"] = Value::Object(disrupted);
    Verdict::Allow(status)
}

fn too_many(cause: String) -> ApiError {
    ApiError::TooManyRequests {
        message: REFUSED.to_string(),
        causes: vec![("DisruptionBudget".to_string(), cause)],
    }
}

/// Evict pod `name` of `target` as the `Eviction` body asks.
///
/// # Errors
/// 400 when the body names another pod; 404 for a missing pod; 429 when the budget allows no disruption
/// now (or has not been processed since its last change); 403 for a broken budget; 500 when several
/// budgets select the pod (upstream does not support that either); what the delete itself returns.
pub async fn evict(
    reg: &Registry,
    target: &Target,
    name: &str,
    eviction: &Value,
    dry_run: bool,
) -> ApiResult<()> {
    let body_name = eviction
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !body_name.is_empty() && body_name != name {
        return Err(ApiError::BadRequest(
            "name in URL does not match name in Eviction object".into(),
        ));
    }
    let mut del = eviction
        .get("deleteOptions")
        .map(delete_options_from)
        .unwrap_or_default();
    del.dry_run |= dry_run;
    let ns = target.namespace.as_deref();
    let pods = target.resource;
    let pdbs = resources::find("policy", "v1", "poddisruptionbudgets")
        .ok_or_else(|| ApiError::Internal("policy/v1 poddisruptionbudgets not served".into()))?;
    // Upstream retries the whole decision on a conflicting budget write (`EvictionsRetry`).
    for _ in 0..5 {
        let pod = reg.get(pods, ns, name).await?;
        if can_ignore_budget(&pod) {
            reg.delete(pods, ns, name, &del).await?;
            return Ok(());
        }
        let list = reg.list(pdbs, ns, &ListOptions::default()).await?;
        let matching: Vec<&Value> = list.items.iter().filter(|b| selects(b, &pod)).collect();
        let pdb = match matching.as_slice() {
            [] => {
                reg.delete(pods, ns, name, &del).await?;
                return Ok(());
            }
            [one] => (*one).clone(),
            _ => {
                return Err(ApiError::Internal(
                    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
                        .into(),
                ));
            }
        };
        // An unready pod does not count as healthy, so evicting it costs the budget nothing when the
        // budget is met (`IfHealthyBudget`, the default) or always (`AlwaysAllow`).
        if !is_ready(&pod) {
            let policy = pdb
                .pointer("/spec/unhealthyPodEvictionPolicy")
                .and_then(Value::as_str)
                .unwrap_or("IfHealthyBudget");
            let int = |p: &str| pdb.pointer(p).and_then(Value::as_i64).unwrap_or(0);
            let healthy_budget = int("/status/currentHealthy") >= int("/status/desiredHealthy")
                && int("/status/desiredHealthy") > 0;
            if policy == "AlwaysAllow" || healthy_budget {
                let mut del = del.clone();
                del.precondition_resource_version = pod
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                reg.delete(pods, ns, name, &del).await?;
                return Ok(());
            }
        }
        let now = crate::object::timestamp(jiff::Timestamp::now());
        let status = match check_and_decrement(&pdb, name, &now) {
            Verdict::Allow(status) => status,
            Verdict::TooMany(cause) => return Err(too_many(cause)),
            Verdict::Forbidden(why) => {
                return Err(ApiError::Forbidden(
                    Subject {
                        qualified: "pods".into(),
                        plural: "pods".into(),
                        name: name.to_string(),
                        ..Default::default()
                    },
                    why,
                ));
            }
        };
        let pdb_name = crate::object::name(&pdb).to_string();
        let mut next = pdb.clone();
        next["status"] = status;
        let write = WriteOptions {
            dry_run: del.dry_run,
            ..WriteOptions::default()
        };
        match reg
            .update(pdbs, ns, &pdb_name, Some(Subresource::Status), next, &write)
            .await
        {
            Ok(_) => {}
            Err(ApiError::Conflict(..)) => continue,
            Err(e) => return Err(e),
        }
        reg.delete(pods, ns, name, &del).await?;
        return Ok(());
    }
    Err(too_many(
        "the disruption budget was changed by others during the eviction; try again".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pdb(allowed: i64, generation: i64, observed: i64) -> Value {
        json!({"metadata": {"name": "web", "generation": generation},
               "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}},
               "status": {"observedGeneration": observed, "disruptionsAllowed": allowed,
                          "currentHealthy": 2, "desiredHealthy": 2, "expectedPods": 3}})
    }

    #[test]
    fn a_budget_with_no_disruption_left_refuses_with_its_numbers() {
        assert_eq!(
            check_and_decrement(&pdb(0, 1, 1), "web-0", "2026-01-01T00:00:00Z"),
            Verdict::TooMany("The disruption budget web needs 2 healthy pods and has 2 currently".into())
        );
        assert_eq!(
            check_and_decrement(&pdb(1, 2, 1), "web-0", "2026-01-01T00:00:00Z"),
            Verdict::TooMany("The disruption budget web is still being processed by the server.".into())
        );
        assert!(matches!(
            check_and_decrement(&pdb(-1, 1, 1), "web-0", "t"),
            Verdict::Forbidden(_)
        ));
    }

    #[test]
    fn an_allowed_eviction_decrements_and_records_the_pod() {
        let Verdict::Allow(status) = check_and_decrement(&pdb(1, 1, 1), "web-0", "2026-01-01T00:00:00Z")
        else {
            panic!("allowed")
        };
        assert_eq!(status["disruptionsAllowed"], 0);
        assert_eq!(status["disruptedPods"]["web-0"], "2026-01-01T00:00:00Z");
    }

    #[test]
    fn selection_and_pods_that_ignore_the_budget() {
        let pod = json!({"metadata": {"labels": {"app": "web"}}, "status": {"phase": "Running"}});
        assert!(selects(&pdb(1, 1, 1), &pod));
        assert!(
            selects(&json!({"spec": {"selector": {}}}), &pod),
            "empty selects all"
        );
        assert!(!selects(&json!({"spec": {}}), &pod), "missing selects none");
        assert!(!can_ignore_budget(&pod));
        assert!(can_ignore_budget(&json!({"status": {"phase": "Pending"}})));
        assert!(can_ignore_budget(
            &json!({"metadata": {"deletionTimestamp": "x"}, "status": {"phase": "Running"}})
        ));
    }
}
