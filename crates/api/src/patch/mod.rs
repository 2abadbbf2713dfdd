//! The patch engine: JSON patch (RFC 6902), JSON merge patch (RFC 7386), strategic merge patch
//! (upstream `apimachinery/pkg/util/strategicpatch`) and server-side apply with `managedFields`
//! (upstream `structured-merge-diff`, reduced to what kubectl and kube-rs use), all over the wire form.

mod apply;
mod schema;

pub use apply::{record_update, server_side_apply};

use schema::Strategy;
use serde_json::{Map, Value};

/// A field another manager owns that an apply would change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyConflict {
    /// The other manager.
    pub manager: String,
    /// The field, as upstream prints it (`.spec.replicas`).
    pub field: String,
}

/// Why a patch cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The patch document is malformed (400/422 for the caller).
    #[error("{0}")]
    InvalidPatch(String),
    /// A JSON patch `test` operation failed or a path does not exist.
    #[error("{0}")]
    Failed(String),
    /// Server-side apply conflicts with other managers.
    #[error("apply conflicts with {} field(s) owned by other managers", .0.len())]
    Conflict(Vec<ApplyConflict>),
}

/// RFC 7386 merge patch.
pub fn merge_patch(original: &Value, patch: &Value) -> Result<Value, PatchError> {
    let mut out = original.clone();
    json_patch::merge(&mut out, patch);
    Ok(out)
}

/// RFC 6902 JSON patch.
pub fn json_patch(original: &Value, patch: &Value) -> Result<Value, PatchError> {
    let ops: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| PatchError::InvalidPatch(format!("invalid JSON patch: {e}")))?;
    let mut out = original.clone();
    json_patch::patch(&mut out, &ops).map_err(|e| PatchError::Failed(e.to_string()))?;
    Ok(out)
}

/// Strategic merge patch of an object of `(group, kind)`.
///
/// # Errors
/// [`PatchError::InvalidPatch`] when the patch is not an object or a directive is malformed.
pub fn strategic_merge_patch(
    group: &str,
    kind: &str,
    original: &Value,
    patch: &Value,
) -> Result<Value, PatchError> {
    let Value::Object(p) = patch else {
        return Err(PatchError::InvalidPatch(
            "a strategic merge patch must be a JSON object".into(),
        ));
    };
    let mut out = match original {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    match merge_map(&mut out, p, schema::root(group, kind))? {
        MapOutcome::Keep => Ok(Value::Object(out)),
        MapOutcome::Delete => Ok(Value::Object(Map::new())),
    }
}

enum MapOutcome {
    Keep,
    Delete,
}

fn is_directive(k: &str) -> bool {
    k.starts_with('$')
}

/// The value with every `$`-directive removed, recursively (for values inserted as they are).
pub(crate) fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !is_directive(k))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(
            a.iter()
                .filter(|i| {
                    !(i.as_object()
                        .is_some_and(|m| m.len() == 1 && m.contains_key("$patch")))
                })
                .map(strip_directives)
                .collect(),
        ),
        other => other.clone(),
    }
}

fn merge_map(
    original: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    ty: &str,
) -> Result<MapOutcome, PatchError> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            *original = match strip_directives(&Value::Object(patch.clone())) {
                Value::Object(m) => m,
                _ => Map::new(),
            };
            return Ok(MapOutcome::Keep);
        }
        Some("delete") => return Ok(MapOutcome::Delete),
        Some("merge") | None => {}
        Some(other) => return Err(PatchError::InvalidPatch(format!("unknown patch type: {other}"))),
    }
    if let Some(keep) = patch.get("$retainKeys") {
        let keep: Vec<&str> = keep
            .as_array()
            .ok_or_else(|| PatchError::InvalidPatch("$retainKeys must be a list".into()))?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        original.retain(|k, _| keep.contains(&k.as_str()));
    }
    let mut orders: Vec<(String, Vec<Value>)> = Vec::new();
    for (k, v) in patch {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let remove = v.as_array().cloned().unwrap_or_default();
            if let Some(Value::Array(list)) = original.get_mut(field) {
                list.retain(|x| !remove.contains(x));
            }
        } else if let Some(field) = k.strip_prefix("$setElementOrder/") {
            let order = v
                .as_array()
                .cloned()
                .ok_or_else(|| PatchError::InvalidPatch(format!("{k} must be a list")))?;
            orders.push((field.to_string(), order));
        }
    }
    for (k, v) in patch {
        if is_directive(k) {
            continue;
        }
        if v.is_null() {
            original.remove(k);
            continue;
        }
        let info = schema::field(ty, k);
        let child_ty = info.and_then(|(_, c)| c).unwrap_or("Object");
        match v {
            Value::Object(pm) => {
                let existing = original.get_mut(k);
                match existing {
                    Some(Value::Object(om)) => {
                        if let MapOutcome::Delete = merge_map(om, pm, child_ty)? {
                            original.remove(k);
                        }
                    }
                    _ => {
                        if pm.get("$patch").and_then(Value::as_str) == Some("delete") {
                            original.remove(k);
                        } else {
                            let mut fresh = Map::new();
                            merge_map(&mut fresh, pm, child_ty)?;
                            original.insert(k.clone(), Value::Object(fresh));
                        }
                    }
                }
            }
            Value::Array(items) => {
                let strategy = info.map(|(s, _)| s).unwrap_or(Strategy::Atomic);
                let current = match original.remove(k) {
                    Some(Value::Array(a)) => a,
                    _ => Vec::new(),
                };
                let merged = match strategy {
                    Strategy::MergeByKey(key) | Strategy::MergeByKeyRetainKeys(key) => {
                        merge_list_by_key(current, items, key, child_ty)?
                    }
                    Strategy::MergePrimitives => {
                        if items.iter().any(|i| {
                            i.as_object()
                                .is_some_and(|m| m.get("$patch") == Some(&Value::String("replace".into())))
                        }) {
                            strip_list(items)
                        } else {
                            let mut out = current;
                            for i in items {
                                if !out.contains(i) {
                                    out.push(i.clone());
                                }
                            }
                            out
                        }
                    }
                    _ => strip_list(items),
                };
                original.insert(k.clone(), Value::Array(merged));
            }
            other => {
                original.insert(k.clone(), other.clone());
            }
        }
    }
    for (field, order) in orders {
        let key = match schema::field(ty, &field) {
            Some((Strategy::MergeByKey(key) | Strategy::MergeByKeyRetainKeys(key), _)) => Some(key),
            _ => None,
        };
        if let Some(Value::Array(list)) = original.get_mut(&field) {
            reorder(list, &order, key);
        }
    }
    Ok(MapOutcome::Keep)
}

fn strip_list(items: &[Value]) -> Vec<Value> {
    match strip_directives(&Value::Array(items.to_vec())) {
        Value::Array(a) => a,
        _ => Vec::new(),
    }
}

fn merge_list_by_key(
    mut current: Vec<Value>,
    patch: &[Value],
    key: &str,
    child_ty: &str,
) -> Result<Vec<Value>, PatchError> {
    if patch
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        return Ok(strip_list(patch));
    }
    for item in patch {
        let Value::Object(pm) = item else {
            return Err(PatchError::InvalidPatch(format!(
                "list items merged by {key} must be objects"
            )));
        };
        let Some(kv) = pm.get(key) else {
            return Err(PatchError::InvalidPatch(format!(
                "map: {item} does not contain declared merge key: {key}"
            )));
        };
        let pos = current.iter().position(|c| c.get(key) == Some(kv));
        match (pm.get("$patch").and_then(Value::as_str), pos) {
            (Some("delete"), Some(i)) => {
                current.remove(i);
            }
            (Some("delete"), None) => {}
            (_, Some(i)) => {
                if let Value::Object(om) = &mut current[i]
                    && let MapOutcome::Delete = merge_map(om, pm, child_ty)?
                {
                    current.remove(i);
                }
            }
            (_, None) => {
                let mut fresh = Map::new();
                merge_map(&mut fresh, pm, child_ty)?;
                current.push(Value::Object(fresh));
            }
        }
    }
    Ok(current)
}

/// `$setElementOrder`: items named in `order` come first, in that order; the rest keep their relative
/// order after them.
fn reorder(list: &mut Vec<Value>, order: &[Value], key: Option<&str>) {
    let ident = |v: &Value| -> Value {
        match key {
            Some(k) => v.get(k).cloned().unwrap_or(Value::Null),
            None => v.clone(),
        }
    };
    let wanted: Vec<Value> = order.iter().map(&ident).collect();
    let mut placed: Vec<Value> = Vec::with_capacity(list.len());
    for w in &wanted {
        if let Some(i) = list.iter().position(|x| ident(x) == *w) {
            placed.push(list.remove(i));
        }
    }
    placed.append(list);
    *list = placed;
}

#[cfg(test)]
mod tests;
