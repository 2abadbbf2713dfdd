//! ResourceQuota (upstream `plugin/pkg/admission/resourcequota`, the last validating plugin): a new object
//! is charged to every ResourceQuota of its namespace that limits a resource it uses (`api::quota`); when
//! one would go over its `spec.hard` the request is refused with 403 "exceeded quota: …" (or "failed
//! quota: …: must specify requests.cpu for: c" for a container without the request a cpu/memory quota
//! needs), otherwise the quotas' `status.used` are raised by compare-and-swap writes before the object is
//! stored, so concurrent creates cannot both take the last unit. The quota controller
//! (`controllers::resourcequota`) recomputes `status.used` from what exists, releasing what deletions and
//! failed creates left counted.

use super::{Attributes, Operation};
use crate::error::{ApiError, ApiResult};
use crate::registry::{ListOptions, Registry, WriteOptions, subject};
use api::resources::Subresource;
use serde_json::Value;

/// Charge a new object to its namespace's quotas.
///
/// # Errors
/// 403 Forbidden with upstream's messages; a failed quota read or write.
pub async fn validate(reg: &Registry, attrs: &Attributes<'_>, obj: &Value) -> ApiResult<()> {
    if attrs.operation != Operation::Create || attrs.subresource.is_some() || !attrs.resource.namespaced {
        return Ok(());
    }
    let Some(ns) = attrs.namespace else {
        return Ok(());
    };
    let res = api::resources::find("", "v1", "resourcequotas")
        .ok_or_else(|| ApiError::Internal("no resourcequotas resource".into()))?;
    let delta = api::quota::usage(attrs.resource.group, attrs.resource.plural, obj);
    if delta.is_empty() {
        return Ok(());
    }
    let forbidden = |why: String| ApiError::Forbidden(subject(attrs.resource, crate::object::name(obj)), why);
    // Upstream retries a quota write that lost a race (its evaluator re-reads the quotas).
    for attempt in 0..10 {
        // The first read from the lister (upstream's quota accessor reads its informer), a retry after
        // a lost race from the store.
        let quotas = if attempt == 0 {
            reg.lister_list(res, Some(ns)).await?
        } else {
            reg.list(res, Some(ns), &ListOptions::default()).await?.items
        };
        let mut writes = Vec::new();
        for q in &quotas {
            if !api::quota::scopes_match(q, attrs.resource.plural, obj) {
                continue;
            }
            let qname = crate::object::name(q).to_string();
            if attrs.is_core("Pod")
                && let Some(hard) = q.pointer("/spec/hard").and_then(Value::as_object)
                && let Some(why) = api::quota::missing_requests(hard, obj)
            {
                return Err(forbidden(format!("failed quota: {qname}: {why}")));
            }
            match api::quota::charge(q, &delta) {
                Err(why) => return Err(forbidden(why)),
                Ok(None) => {}
                Ok(Some(used)) => {
                    let mut next = q.clone();
                    next["status"]["used"] = Value::Object(used);
                    if next.pointer("/status/hard").is_none() {
                        next["status"]["hard"] = q.pointer("/spec/hard").cloned().unwrap_or(Value::Null);
                    }
                    writes.push((qname, next));
                }
            }
        }
        let mut conflicted = false;
        for (qname, next) in writes {
            // Boxed: a quota's status write passes the admission chain again (as an update, which this
            // plugin lets through).
            let opts = WriteOptions::default();
            let write = reg.update_boxed(res, Some(ns), &qname, Some(Subresource::Status), next, &opts);
            match write.await {
                Ok(_) => {}
                Err(ApiError::Conflict(..)) => {
                    conflicted = true;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        if !conflicted {
            return Ok(());
        }
    }
    Err(forbidden(
        "status unknown for quota: the quotas kept changing during admission".into(),
    ))
}
