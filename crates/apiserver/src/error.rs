//! `ApiError` and its one conversion into a `metav1.Status` response: the only place that
//! maps errors to HTTP status codes (upstream `k8s.io/apimachinery/pkg/api/errors`).

use api::field::FieldError;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::{Value, json};

/// What the resource a failed request was about, for `details` and messages.
#[derive(Debug, Clone, Default)]
pub struct Subject {
    /// Qualified resource (`statefulsets.apps`, `pods`).
    pub qualified: String,
    /// Group, `""` for core.
    pub group: String,
    /// Plural resource.
    pub plural: String,
    /// Object name, may be empty.
    pub name: String,
}

/// Every way an API request can fail, each with its upstream reason.
#[derive(Debug)]
pub enum ApiError {
    /// 404 `NotFound`: `pods "web-0" not found`.
    NotFound(Subject),
    /// 409 `AlreadyExists`.
    AlreadyExists(Subject),
    /// 409 `Conflict`: stale resourceVersion.
    Conflict(Subject, String),
    /// 422 `Invalid`: every bad field; `kind` is the qualified kind (`StatefulSet.apps`).
    Invalid {
        subject: Subject,
        kind: String,
        errors: Vec<FieldError>,
    },
    /// 400 `BadRequest`.
    BadRequest(String),
    /// 403 `Forbidden`.
    Forbidden(Subject, String),
    /// 405 `MethodNotAllowed`.
    MethodNotAllowed(String),
    /// 410 `Expired`: watch or continue token older than the compacted history.
    Gone(String),
    /// 413 `RequestEntityTooLarge`.
    TooLarge(String),
    /// 415 `UnsupportedMediaType`.
    UnsupportedMediaType(String),
    /// 401 `Unauthorized`.
    Unauthorized,
    /// 503 `ServiceUnavailable`.
    Unavailable(String),
    /// 406 `NotAcceptable`.
    NotAcceptable(String),
    /// 500 `InternalError`; the detail is logged, the client gets a generic message.
    Internal(String),
    /// 409 `Conflict` for server-side apply, with one cause per conflicting field.
    ApplyConflict(Subject, Vec<(String, String)>),
    /// 429 `TooManyRequests` with `(reason, message)` causes (upstream `NewTooManyRequests`, as a refused
    /// eviction answers).
    TooManyRequests {
        /// The message.
        message: String,
        /// `(reason, message)` of each cause.
        causes: Vec<(String, String)>,
    },
}

impl ApiError {
    /// The HTTP status code.
    pub fn code(&self) -> StatusCode {
        match self {
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::AlreadyExists(_) | ApiError::Conflict(..) | ApiError::ApplyConflict(..) => {
                StatusCode::CONFLICT
            }
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Forbidden(..) => StatusCode::FORBIDDEN,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// The `metav1.Status` body, as upstream's `StatusError.ErrStatus`.
    pub fn status(&self) -> Value {
        let details = |s: &Subject| {
            let mut d = json!({ "name": s.name, "kind": s.plural });
            if !s.group.is_empty() {
                d["group"] = json!(s.group);
            }
            d
        };
        let (reason, message, details): (&str, String, Option<Value>) = match self {
            ApiError::NotFound(s) => (
                "NotFound",
                format!("{} \"{}\" not found", s.qualified, s.name),
                Some(details(s)),
            ),
            ApiError::AlreadyExists(s) => (
                "AlreadyExists",
                format!("{} \"{}\" already exists", s.qualified, s.name),
                Some(details(s)),
            ),
            ApiError::Conflict(s, why) => (
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{}\": {}",
                    s.qualified, s.name, why
                ),
                Some(details(s)),
            ),
            ApiError::ApplyConflict(s, conflicts) => {
                let causes: Vec<Value> = conflicts
                    .iter()
                    .map(|(manager, field)| {
                        json!({"reason": "FieldManagerConflict",
                               "message": format!("conflict with \"{manager}\""), "field": field})
                    })
                    .collect();
                let lines: Vec<String> = conflicts
                    .iter()
                    .map(|(m, f)| format!("- conflict with \"{m}\": {f}"))
                    .collect();
                let mut d = details(s);
                d["causes"] = Value::Array(causes);
                (
                    "Conflict",
                    format!(
                        "Apply failed with {} conflict(s): {}",
                        conflicts.len(),
                        lines.join("\n")
                    ),
                    Some(d),
                )
            }
            ApiError::Invalid {
                subject,
                kind,
                errors,
            } => {
                let causes: Vec<Value> = errors
                    .iter()
                    .map(|e| json!({"reason": e.error_type.reason(), "message": e.body(), "field": e.field}))
                    .collect();
                let list: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
                let joined = if list.len() == 1 {
                    list[0].clone()
                } else {
                    format!("[{}]", list.join(", "))
                };
                let mut d = json!({"name": subject.name, "kind": kind.split('.').next().unwrap_or(kind)});
                if !subject.group.is_empty() {
                    d["group"] = json!(subject.group);
                }
                d["causes"] = Value::Array(causes);
                (
                    "Invalid",
                    format!("{} \"{}\" is invalid: {}", kind, subject.name, joined),
                    Some(d),
                )
            }
            ApiError::BadRequest(m) => ("BadRequest", m.clone(), None),
            ApiError::Forbidden(s, why) => (
                "Forbidden",
                if s.name.is_empty() {
                    format!("{} is forbidden: {}", s.qualified, why)
                } else {
                    format!("{} \"{}\" is forbidden: {}", s.qualified, s.name, why)
                },
                Some(details(s)),
            ),
            ApiError::MethodNotAllowed(m) => ("MethodNotAllowed", m.clone(), None),
            ApiError::Gone(m) => ("Expired", m.clone(), None),
            ApiError::TooLarge(m) => ("RequestEntityTooLarge", m.clone(), None),
            ApiError::UnsupportedMediaType(m) => ("UnsupportedMediaType", m.clone(), None),
            ApiError::Unauthorized => ("Unauthorized", "Unauthorized".to_string(), None),
            ApiError::Unavailable(m) => ("ServiceUnavailable", m.clone(), None),
            ApiError::NotAcceptable(m) => ("NotAcceptable", m.clone(), None),
            ApiError::TooManyRequests { message, causes } => {
                let causes: Vec<Value> = causes
                    .iter()
                    .map(|(reason, message)| json!({"reason": reason, "message": message}))
                    .collect();
                (
                    "TooManyRequests",
                    message.clone(),
                    Some(json!({"causes": causes})),
                )
            }
            ApiError::Internal(_) => (
                "InternalError",
                "an internal error occurred; see the server log".to_string(),
                None,
            ),
        };
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": self.code().as_u16(),
        });
        if let Some(d) = details {
            status["details"] = d;
        }
        status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            tracing::error!(%detail, "internal error");
        }
        let code = self.code();
        let body = self.status().to_string();
        (code, [(http::header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}

impl From<store::Error> for ApiError {
    fn from(e: store::Error) -> Self {
        match e {
            store::Error::Compacted { requested, compacted } => {
                ApiError::Gone(format!("too old resource version: {requested} ({compacted})"))
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// Shorthand for handler results.
pub type ApiResult<T> = Result<T, ApiError>;
