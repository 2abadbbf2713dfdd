//! TEMPORARY SHIM (replaced by the table module being written).
use serde_json::{Value, json};
#[derive(Clone, Debug, serde::Serialize)]
pub struct Column {
    pub name: &'static str,
    #[serde(rename = "type")]
    pub type_: &'static str,
    pub format: &'static str,
    pub description: &'static str,
    pub priority: i32,
}
pub fn columns(_g: &str, _k: &str) -> Vec<Column> {
    vec![Column {
        name: "Name",
        type_: "string",
        format: "name",
        description: "",
        priority: 0,
    }]
}
pub fn row_cells(_g: &str, _k: &str, obj: &Value, _now: k8s_openapi::jiff::Timestamp) -> Vec<Value> {
    vec![obj.pointer("/metadata/name").cloned().unwrap_or(json!(""))]
}
