//! Priority (upstream `plugin/pkg/admission/priority`): a new pod's `spec.priorityClassName` is resolved
//! to `spec.priority` and `spec.preemptionPolicy` from its PriorityClass (the cluster's `globalDefault`
//! class, or priority 0, when it names none); an unknown class is refused with 403 "no PriorityClass with
//! name … was found", as is a pod that states a different priority itself. Only one PriorityClass may be
//! the global default.

use super::{Attributes, Operation};
use crate::error::{ApiError, ApiResult};
use crate::registry::{Registry, subject};
use serde_json::{Value, json};

async fn classes(reg: &Registry) -> ApiResult<Vec<Value>> {
    let res = api::resources::find("scheduling.k8s.io", "v1", "priorityclasses")
        .ok_or_else(|| ApiError::Internal("no priorityclasses resource".into()))?;
    // Upstream's plugin reads a lister (informer cache).
    reg.lister_list(res, None).await
}

/// Resolve a new pod's priority; refuse a second global default class.
///
/// # Errors
/// 403 Forbidden with upstream's messages.
pub async fn admit(reg: &Registry, attrs: &Attributes<'_>, obj: &mut Value) -> ApiResult<()> {
    if attrs.operation != Operation::Create || attrs.subresource.is_some() {
        return Ok(());
    }
    if attrs.resource.group == "scheduling.k8s.io" && attrs.resource.kind == "PriorityClass" {
        if obj.get("globalDefault").and_then(Value::as_bool) == Some(true)
            && let Some(other) = classes(reg)
                .await?
                .into_iter()
                .find(|c| c.get("globalDefault").and_then(Value::as_bool) == Some(true))
        {
            return Err(ApiError::Forbidden(
                subject(attrs.resource, attrs.name),
                format!(
                    "PriorityClass {} is already marked as default. Only one default can exist",
                    crate::object::name(&other)
                ),
            ));
        }
        return Ok(());
    }
    if !attrs.is_core("Pod") {
        return Ok(());
    }
    let name = obj
        .pointer("/spec/priorityClassName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let all = classes(reg).await?;
    let class = if name.is_empty() {
        all.into_iter()
            .find(|c| c.get("globalDefault").and_then(Value::as_bool) == Some(true))
    } else {
        let found = all.into_iter().find(|c| crate::object::name(c) == name);
        if found.is_none() {
            return Err(ApiError::Forbidden(
                subject(attrs.resource, crate::object::name(obj)),
                format!("no PriorityClass with name {name} was found"),
            ));
        }
        found
    };
    let (class_name, priority, policy) = match &class {
        Some(c) => (
            crate::object::name(c).to_string(),
            c.get("value").and_then(Value::as_i64).unwrap_or(0),
            c.get("preemptionPolicy")
                .and_then(Value::as_str)
                .unwrap_or("PreemptLowerPriority")
                .to_string(),
        ),
        None => (String::new(), 0, "PreemptLowerPriority".to_string()),
    };
    if let Some(given) = obj.pointer("/spec/priority").and_then(Value::as_i64)
        && given != priority
    {
        return Err(ApiError::Forbidden(
            subject(attrs.resource, crate::object::name(obj)),
            format!(
                "the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {priority} from the given PriorityClass name"
            ),
        ));
    }
    if let Some(given) = obj.pointer("/spec/preemptionPolicy").and_then(Value::as_str)
        && given != policy
    {
        return Err(ApiError::Forbidden(
            subject(attrs.resource, crate::object::name(obj)),
            format!(
                "the string value of PreemptionPolicy ({given}) must not be provided in pod spec; priority admission controller computed {policy} from the given PriorityClass name"
            ),
        ));
    }
    if !class_name.is_empty() {
        api::value::set_in(obj, &["spec", "priorityClassName"], json!(class_name));
    }
    api::value::set_in(obj, &["spec", "priority"], json!(priority));
    api::value::set_in(obj, &["spec", "preemptionPolicy"], json!(policy));
    Ok(())
}
