//! DefaultStorageClass (upstream `plugin/pkg/admission/storage/storageclass/setdefault`): a claim created
//! without `storageClassName` gets the default class's name (the newest one when several are marked
//! default); an explicit `""` stays (no class).

use super::{Attributes, Operation};
use crate::error::ApiResult;
use crate::registry::{ListOptions, Registry};
use serde_json::Value;

/// Set `spec.storageClassName` of a new PersistentVolumeClaim that has none.
pub async fn admit(reg: &Registry, attrs: &Attributes<'_>, obj: &mut Value) -> ApiResult<()> {
    if attrs.operation != Operation::Create || !attrs.is_core("PersistentVolumeClaim") {
        return Ok(());
    }
    if obj
        .pointer("/spec/storageClassName")
        .is_some_and(|v| !v.is_null())
    {
        return Ok(());
    }
    let Some(sc) = api::resources::find("storage.k8s.io", "v1", "storageclasses") else {
        return Ok(());
    };
    let mut defaults: Vec<Value> = reg
        .list(sc, None, &ListOptions::default())
        .await?
        .items
        .into_iter()
        .filter(|c| {
            c.pointer("/metadata/annotations")
                .and_then(|a| a.get(api::wellknown::DEFAULT_CLASS))
                .and_then(Value::as_str)
                == Some("true")
        })
        .collect();
    defaults.sort_by_key(|c| {
        c.pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    });
    if let Some(name) = defaults.last().and_then(|c| c.pointer("/metadata/name")).cloned() {
        api::value::set_in(obj, &["spec", "storageClassName"], name);
    }
    Ok(())
}
