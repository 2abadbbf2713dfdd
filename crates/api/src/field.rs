//! Field errors, as upstream's `k8s.io/apimachinery/pkg/util/validation/field`.
//!
//! Validation collects every problem into a `Vec<FieldError>`; the API server turns the list into
//! one `422 Invalid` `Status` whose `details.causes` name each field.

use serde_json::Value;

/// The kind of a field error; the names and reasons mirror upstream's `field.ErrorType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    /// `FieldValueRequired`: "Required value".
    Required,
    /// `FieldValueInvalid`: "Invalid value".
    Invalid,
    /// `FieldValueForbidden`: "Forbidden".
    Forbidden,
    /// `FieldValueNotSupported`: "Unsupported value".
    NotSupported,
    /// `FieldValueDuplicate`: "Duplicate value".
    Duplicate,
    /// `FieldValueTooLong`: "Too long".
    TooLong,
    /// `FieldValueNotFound`: "Not found".
    NotFound,
}

impl ErrorType {
    /// The `reason` of a `StatusCause` (upstream `metav1.CauseType`).
    pub fn reason(self) -> &'static str {
        match self {
            ErrorType::Required => "FieldValueRequired",
            ErrorType::Invalid => "FieldValueInvalid",
            ErrorType::Forbidden => "FieldValueForbidden",
            ErrorType::NotSupported => "FieldValueNotSupported",
            ErrorType::Duplicate => "FieldValueDuplicate",
            ErrorType::TooLong => "FieldValueTooLong",
            ErrorType::NotFound => "FieldValueNotFound",
        }
    }

    fn text(self) -> &'static str {
        match self {
            ErrorType::Required => "Required value",
            ErrorType::Invalid => "Invalid value",
            ErrorType::Forbidden => "Forbidden",
            ErrorType::NotSupported => "Unsupported value",
            ErrorType::Duplicate => "Duplicate value",
            ErrorType::TooLong => "Too long",
            ErrorType::NotFound => "Not found",
        }
    }
}

/// One invalid field: its path (`spec.template.spec.containers[0].image`), the bad value when
/// upstream reports one, and a detail sentence.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// What is wrong.
    pub error_type: ErrorType,
    /// The field path in upstream's notation: dots for fields, `[i]` for list items, `[key]` for map keys.
    pub field: String,
    /// The offending value (printed for `Invalid`, `NotSupported`, `Duplicate`).
    pub value: Option<Value>,
    /// The explanation, e.g. "must be greater than or equal to 0".
    pub detail: String,
}

impl FieldError {
    /// A `Required value` error.
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            error_type: ErrorType::Required,
            field: field.into(),
            value: None,
            detail: detail.into(),
        }
    }
    /// An `Invalid value` error.
    pub fn invalid(field: impl Into<String>, value: impl Into<Value>, detail: impl Into<String>) -> Self {
        Self {
            error_type: ErrorType::Invalid,
            field: field.into(),
            value: Some(value.into()),
            detail: detail.into(),
        }
    }
    /// A `Forbidden` error.
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            error_type: ErrorType::Forbidden,
            field: field.into(),
            value: None,
            detail: detail.into(),
        }
    }
    /// An `Unsupported value` error listing the supported values.
    pub fn not_supported(field: impl Into<String>, value: impl Into<Value>, supported: &[&str]) -> Self {
        let quoted: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
        Self {
            error_type: ErrorType::NotSupported,
            field: field.into(),
            value: Some(value.into()),
            detail: format!("supported values: {}", quoted.join(", ")),
        }
    }
    /// A `Duplicate value` error.
    pub fn duplicate(field: impl Into<String>, value: impl Into<Value>) -> Self {
        Self {
            error_type: ErrorType::Duplicate,
            field: field.into(),
            value: Some(value.into()),
            detail: String::new(),
        }
    }

    /// The message without the field path, as upstream's `ErrorBody()`:
    /// `Invalid value: -1: must be greater than or equal to 0`.
    pub fn body(&self) -> String {
        let mut s = self.error_type.text().to_string();
        let show_value = matches!(
            self.error_type,
            ErrorType::Invalid | ErrorType::NotSupported | ErrorType::Duplicate | ErrorType::NotFound
        );
        if show_value && let Some(v) = &self.value {
            let printed = match v {
                Value::String(s) => format!("\"{s}\""),
                other => other.to_string(),
            };
            s.push_str(": ");
            s.push_str(&printed);
        }
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }
}

impl std::fmt::Display for FieldError {
    /// `spec.replicas: Invalid value: -1: must be greater than or equal to 0`, as upstream's `Error()`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_error_prints_value_and_detail_like_upstream() {
        let e = FieldError::invalid("spec.replicas", -1, "must be greater than or equal to 0");
        assert_eq!(
            e.to_string(),
            "spec.replicas: Invalid value: -1: must be greater than or equal to 0"
        );
        assert_eq!(e.error_type.reason(), "FieldValueInvalid");
    }

    #[test]
    fn required_error_has_no_value() {
        let e = FieldError::required("spec.containers[0].image", "");
        assert_eq!(e.to_string(), "spec.containers[0].image: Required value");
    }
}
