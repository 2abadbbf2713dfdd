//! NamespaceLifecycle (upstream `plugin/pkg/admission/namespace/lifecycle`): new objects go only into
//! namespaces that exist and are not terminating, and the namespaces the cluster itself needs
//! (`default`, `kube-system`, `kube-public`) cannot be deleted.

use super::{Attributes, Operation};
use crate::error::{ApiError, ApiResult};
use crate::object;
use crate::registry::{Registry, subject};
use serde_json::Value;

/// Namespaces that may not be deleted (upstream's `immortalNamespaces`).
pub const IMMORTAL: &[&str] = &["default", "kube-system", "kube-public"];

/// On create of a namespaced object: its namespace exists (404 otherwise) and is not being deleted
/// (403 `unable to create new content in namespace … because it is being terminated`).
pub async fn admit(reg: &Registry, attrs: &Attributes<'_>, obj: &mut Value) -> ApiResult<()> {
    if attrs.operation != Operation::Create || !attrs.resource.namespaced {
        return Ok(());
    }
    let Some(ns) = attrs.namespace else {
        return Ok(());
    };
    let ns_res = api::resources::find("", "v1", "namespaces")
        .ok_or_else(|| ApiError::Internal("no namespaces resource".into()))?;
    // The namespace as upstream's plugin reads it: its lister, a live lookup on a miss.
    match reg.lister_get(ns_res, None, ns).await {
        Err(ApiError::NotFound(_)) => Err(ApiError::NotFound(subject(ns_res, ns))),
        Err(e) => Err(e),
        Ok(ns_obj) if object::is_deleting(&ns_obj) => Err(ApiError::Forbidden(
            subject(attrs.resource, object::name(obj)),
            format!("unable to create new content in namespace {ns} because it is being terminated"),
        )),
        Ok(_) => Ok(()),
    }
}

/// On delete of a namespace: the immortal ones are refused (403 `this namespace may not be deleted`).
pub fn validate(attrs: &Attributes<'_>) -> ApiResult<()> {
    if attrs.operation == Operation::Delete && attrs.is_core("Namespace") && IMMORTAL.contains(&attrs.name) {
        return Err(ApiError::Forbidden(
            subject(attrs.resource, attrs.name),
            "this namespace may not be deleted".into(),
        ));
    }
    Ok(())
}
