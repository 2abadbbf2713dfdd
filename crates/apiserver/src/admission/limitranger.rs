//! LimitRanger (upstream `plugin/pkg/admission/limitranger`): a new pod's containers get the default
//! requests and limits of their namespace's LimitRanges (noted in the `kubernetes.io/limit-ranger`
//! annotation), and a pod or claim outside their `min`/`max`/`maxLimitRequestRatio` is refused with
//! 403 and upstream's messages. The rules are `api::limits`.

use super::{Attributes, Operation};
use crate::error::{ApiError, ApiResult};
use crate::registry::{Registry, subject};
use serde_json::{Value, json};

async fn ranges(reg: &Registry, ns: &str) -> ApiResult<Vec<Value>> {
    let res = api::resources::find("", "v1", "limitranges")
        .ok_or_else(|| ApiError::Internal("no limitranges resource".into()))?;
    // Upstream's plugin reads a lister (informer cache).
    reg.lister_list(res, Some(ns)).await
}

fn applies(attrs: &Attributes<'_>) -> bool {
    attrs.operation == Operation::Create
        && attrs.subresource.is_none()
        && (attrs.is_core("Pod") || attrs.is_core("PersistentVolumeClaim"))
}

/// Default a new pod's container resources.
///
/// # Errors
/// A failed read of the LimitRanges.
pub async fn admit(reg: &Registry, attrs: &Attributes<'_>, obj: &mut Value) -> ApiResult<()> {
    if !applies(attrs) || !attrs.is_core("Pod") {
        return Ok(());
    }
    let Some(ns) = attrs.namespace else {
        return Ok(());
    };
    let rs = ranges(reg, ns).await?;
    if rs.is_empty() {
        return Ok(());
    }
    if let Some(note) = api::limits::default_pod(obj, &rs) {
        api::value::set_in(
            obj,
            &["metadata", "annotations", "kubernetes.io/limit-ranger"],
            json!(note),
        );
    }
    Ok(())
}

/// Refuse a new pod or claim outside its namespace's limits.
///
/// # Errors
/// 403 Forbidden listing every violation.
pub async fn validate(reg: &Registry, attrs: &Attributes<'_>, obj: &Value) -> ApiResult<()> {
    if !applies(attrs) {
        return Ok(());
    }
    let Some(ns) = attrs.namespace else {
        return Ok(());
    };
    let rs = ranges(reg, ns).await?;
    if rs.is_empty() {
        return Ok(());
    }
    let errs = if attrs.is_core("Pod") {
        api::limits::validate_pod(obj, &rs)
    } else {
        api::limits::validate_claim(obj, &rs)
    };
    match errs.len() {
        0 => Ok(()),
        // Upstream's aggregate error: one message alone, several in brackets.
        1 => Err(ApiError::Forbidden(
            subject(attrs.resource, crate::object::name(obj)),
            errs[0].clone(),
        )),
        _ => Err(ApiError::Forbidden(
            subject(attrs.resource, crate::object::name(obj)),
            format!("[{}]", errs.join(", ")),
        )),
    }
}
