//! TEMPORARY SHIM (replaced by the patch module being written).
use serde_json::Value;
#[derive(Debug)]
pub struct ApplyConflict {
    pub manager: String,
    pub field: String,
}
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error("{0}")]
    InvalidPatch(String),
    #[error("conflicts")]
    Conflict(Vec<ApplyConflict>),
}
fn merge(target: &mut Value, patch: &Value) {
    if let Value::Object(p) = patch {
        if !target.is_object() {
            *target = Value::Object(Default::default());
        }
        let t = target.as_object_mut().expect("object");
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    } else {
        *target = patch.clone();
    }
}
pub fn merge_patch(original: &Value, patch: &Value) -> Result<Value, PatchError> {
    let mut o = original.clone();
    merge(&mut o, patch);
    Ok(o)
}
pub fn json_patch(_original: &Value, _patch: &Value) -> Result<Value, PatchError> {
    Err(PatchError::InvalidPatch("not yet".into()))
}
pub fn strategic_merge_patch(
    _g: &str,
    _k: &str,
    original: &Value,
    patch: &Value,
) -> Result<Value, PatchError> {
    merge_patch(original, patch)
}
pub fn server_side_apply(
    _g: &str,
    _k: &str,
    live: Option<&Value>,
    applied: &Value,
    _m: &str,
    _f: bool,
    _now: &str,
) -> Result<Value, PatchError> {
    match live {
        Some(l) => merge_patch(l, applied),
        None => Ok(applied.clone()),
    }
}
pub fn record_update(_g: &str, _k: &str, _old: Option<&Value>, _new: &mut Value, _m: &str, _now: &str) {}
