//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`, the `k8s\0` envelope), which
//! `kubectl create namespace|configmap|secret|deployment` send.
//!
//! Not decoded yet: such bodies get 415 UnsupportedMediaType with a message naming the JSON alternative, so
//! a client sees a clear error instead of a misparse.

use crate::error::{ApiError, ApiResult};
use crate::request::Target;
use serde_json::Value;

/// Decode a protobuf body for `target`.
///
/// # Errors
/// Always [`ApiError::UnsupportedMediaType`] for now.
pub fn decode(_bytes: &[u8], target: &Target) -> ApiResult<Value> {
    Err(ApiError::UnsupportedMediaType(format!(
        "protobuf bodies for {} are not supported yet; send application/json",
        target.resource.qualified()
    )))
}
