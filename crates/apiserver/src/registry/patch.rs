//! PATCH (upstream `staging/src/k8s.io/apiserver/pkg/endpoints/handlers/patch.go`): JSON patch, merge
//! patch, strategic merge patch and server-side apply over the registry's update, retried on conflicts.

use super::*;

impl Registry {
    /// Patch an object (PATCH) with one of the four patch types; server-side apply may create it.
    #[allow(clippy::too_many_arguments)]
    /// Conflicts on the final write are retried against the latest object, as upstream's patcher does.
    pub async fn patch(
        &self,
        res: &'static Resource,
        ns: Option<&str>,
        name: &str,
        sub: Option<Subresource>,
        patch_type: PatchType,
        patch: &Value,
        opts: &WriteOptions,
    ) -> ApiResult<Written> {
        let mut last_err = None;
        for _attempt in 0..8 {
            let current = match self.get_kv(res, ns, name).await {
                Ok(found) => Some(found),
                Err(ApiError::NotFound(_)) if patch_type == PatchType::Apply && sub.is_none() => None,
                Err(e) => return Err(e),
            };
            let Some((kv, old)) = current else {
                // Server-side apply of a missing object creates it.
                let manager = opts.field_manager.clone().unwrap_or_default();
                let mut applied = patch.clone();
                check_type_meta(res, &mut applied)?;
                let created = api::patch::server_side_apply(
                    res.group,
                    res.kind,
                    None,
                    &applied,
                    &manager,
                    opts.force,
                    &object::micro_timestamp(now()),
                )
                .map_err(|e| patch_error(res, name, e))?;
                let create_opts = WriteOptions {
                    field_manager: None,
                    ..opts.clone()
                };
                return match self.create(res, ns, created, &create_opts).await {
                    Ok(v) => Ok(Written::Created(v)),
                    Err(ApiError::AlreadyExists(_)) => continue,
                    Err(e) => Err(e),
                };
            };
            let patched =
                apply_patch(res, &old, patch_type, patch, opts).map_err(|e| patch_error(res, name, e))?;
            // A patch that sets `metadata.resourceVersion` or `metadata.uid` makes it a precondition, as
            // upstream's `GuaranteedUpdate` (a stale resourceVersion) and `checkUID` do: controllers patch
            // ownerReferences "with the uid as precondition" and scale with the resourceVersion they saw.
            if let Some(rv) =
                object::str_at(&patched, &["metadata", "resourceVersion"]).filter(|s| !s.is_empty())
                && rv != kv.mod_revision.to_string()
            {
                return Err(ApiError::Conflict(
                    subject(res, name),
                    "the object has been modified; please apply your changes to the latest version and try again"
                        .into(),
                ));
            }
            if let Some(uid) = object::str_at(&patched, &["metadata", "uid"]).filter(|s| !s.is_empty())
                && Some(uid) != object::str_at(&old, &["metadata", "uid"])
            {
                return Err(ApiError::Conflict(
                    subject(res, name),
                    format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        object::str_at(&old, &["metadata", "uid"]).unwrap_or("")
                    ),
                ));
            }
            let write_opts = if patch_type == PatchType::Apply {
                WriteOptions {
                    field_manager: None,
                    ..opts.clone()
                }
            } else {
                opts.clone()
            };
            match self
                .write_update(res, ns, name, sub, kv, old, patched, &write_opts)
                .await
            {
                Err(ApiError::Conflict(s, m)) => last_err = Some(ApiError::Conflict(s, m)),
                other => return other,
            }
        }
        Err(last_err.unwrap_or_else(|| ApiError::Internal("patch retries exhausted".into())))
    }
}

/// The four patch content types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json`.
    Json,
    /// `application/merge-patch+json`.
    Merge,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml`.
    Apply,
}

impl PatchType {
    /// From a Content-Type header value.
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let base = ct.split(';').next().unwrap_or("").trim();
        match base {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(PatchType::Apply),
            _ => None,
        }
    }
}

fn patch_error(res: &'static Resource, name: &str, e: api::patch::PatchError) -> ApiError {
    match e {
        api::patch::PatchError::Conflict(conflicts) => ApiError::ApplyConflict(
            subject(res, name),
            conflicts.into_iter().map(|c| (c.manager, c.field)).collect(),
        ),
        other => ApiError::Invalid {
            subject: subject(res, name),
            kind: res.qualified_kind(),
            errors: vec![api::field::FieldError::invalid(
                "patch",
                Value::Null,
                other.to_string(),
            )],
        },
    }
}

/// Apply a patch of `patch_type` to `old` (pure).
pub fn apply_patch(
    res: &'static Resource,
    old: &Value,
    patch_type: PatchType,
    patch: &Value,
    opts: &WriteOptions,
) -> Result<Value, api::patch::PatchError> {
    match patch_type {
        PatchType::Json => api::patch::json_patch(old, patch),
        PatchType::Merge => api::patch::merge_patch(old, patch),
        PatchType::Strategic => api::patch::strategic_merge_patch(res.group, res.kind, old, patch),
        PatchType::Apply => api::patch::server_side_apply(
            res.group,
            res.kind,
            Some(old),
            patch,
            opts.field_manager.as_deref().unwrap_or(""),
            opts.force,
            &object::micro_timestamp(now()),
        ),
    }
}
