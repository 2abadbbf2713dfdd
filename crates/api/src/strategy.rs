//! TEMPORARY SHIM (replaced by the strategy module being written).
use crate::field::FieldError;
use serde_json::Value;
pub fn default(_g: &str, _k: &str, _obj: &mut Value) {}
pub fn prepare_for_create(_g: &str, _k: &str, _obj: &mut Value) {}
pub fn prepare_for_update(_g: &str, _k: &str, new: &mut Value, old: &Value) {
    if let Some(s) = old.get("status") {
        new["status"] = s.clone();
    }
}
pub fn prepare_for_status_update(_g: &str, _k: &str, new: &mut Value, old: &Value) {
    let s = new.get("status").cloned();
    *new = old.clone();
    if let Some(s) = s {
        new["status"] = s;
    }
}
pub fn validate(_g: &str, _k: &str, _obj: &Value) -> Vec<FieldError> {
    Vec::new()
}
pub fn validate_update(_g: &str, _k: &str, _n: &Value, _o: &Value) -> Vec<FieldError> {
    Vec::new()
}
