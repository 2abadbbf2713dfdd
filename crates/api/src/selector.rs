//! TEMPORARY SHIM (replaced by the selector module being written): equality-only selectors.
use serde_json::{Map, Value};
#[derive(Debug, Clone, Default)]
pub struct LabelSelector(Vec<(String, String)>);
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(String);
impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        Ok(Self(
            s.split(',')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (k.to_string(), v.trim_start_matches('=').to_string())
                })
                .collect(),
        ))
    }
    pub fn from_json(sel: &Value) -> Result<Self, SelectorError> {
        Ok(Self(
            sel.get("matchLabels")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                        .collect()
                })
                .unwrap_or_default(),
        ))
    }
    pub fn matches(&self, labels: &Map<String, Value>) -> bool {
        self.0
            .iter()
            .all(|(k, v)| labels.get(k).and_then(Value::as_str) == Some(v.as_str()))
    }
}
impl std::fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
        write!(f, "{}", parts.join(","))
    }
}
#[derive(Debug, Clone, Default)]
pub struct FieldSelector(Vec<(String, String)>);
impl FieldSelector {
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        Ok(Self(
            s.split(',')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (k.to_string(), v.trim_start_matches('=').to_string())
                })
                .collect(),
        ))
    }
    pub fn validate_for(&self, _g: &str, _k: &str) -> Result<(), SelectorError> {
        Ok(())
    }
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(k, v)| {
            let p = format!("/{}", k.replace('.', "/"));
            obj.pointer(&p).and_then(Value::as_str).unwrap_or("") == v
        })
    }
}
