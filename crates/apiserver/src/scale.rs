//! The `/scale` subresource of StatefulSets, Deployments and ReplicaSets: an `autoscaling/v1 Scale` view of
//! `spec.replicas` (upstream `pkg/registry/apps/statefulset/storage` ScaleREST). `kubectl scale` sends a
//! merge patch, the Python client a strategic one; both patch the Scale, then the parent's replicas change.

use crate::error::{ApiError, ApiResult};
use crate::http::{decode_body, json_response, read_body};
use crate::registry::{PatchType, Registry, WriteOptions, subject};
use crate::request::Target;
use api::selector::LabelSelector;
use axum::body::Body;
use axum::response::Response;
use http::{Method, StatusCode};
use serde_json::{Value, json};

/// The Scale view of a parent object.
pub fn scale_of(parent: &Value) -> Value {
    let meta = parent.get("metadata").cloned().unwrap_or(json!({}));
    let pick = |k: &str| meta.get(k).cloned().unwrap_or(Value::Null);
    // A ReplicationController's selector is a plain label map.
    let selector = parent
        .pointer("/spec/selector")
        .map(|s| {
            if parent.get("kind").and_then(Value::as_str) == Some("ReplicationController") {
                json!({"matchLabels": s})
            } else {
                s.clone()
            }
        })
        .and_then(|s| LabelSelector::from_json(&s).ok())
        .map(|s| s.to_string())
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {"name": pick("name"), "namespace": pick("namespace"), "uid": pick("uid"),
                     "resourceVersion": pick("resourceVersion"), "creationTimestamp": pick("creationTimestamp")},
        "spec": {"replicas": parent.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0)},
        "status": {"replicas": parent.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
                   "selector": selector}
    })
}

/// Handle GET, PUT and PATCH on `/scale`.
pub async fn handle(
    reg: &Registry,
    target: &Target,
    name: &str,
    method: &Method,
    content_type: &str,
    body: Body,
    write: &WriteOptions,
) -> ApiResult<Response> {
    let res = target.resource;
    let ns = target.namespace.as_deref();
    if let Some(_attempt) = (0..8).next() {
        let parent = reg.get(res, ns, name).await?;
        let current = scale_of(&parent);
        let desired = match *method {
            Method::GET => return Ok(json_response(StatusCode::OK, &current)),
            Method::PUT => {
                let scale = decode_body(content_type, body, target).await?;
                if let Some(rv) = scale
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    && Some(rv)
                        != current
                            .pointer("/metadata/resourceVersion")
                            .and_then(Value::as_str)
                {
                    return Err(ApiError::Conflict(
                        subject(res, name),
                        "the object has been modified; please apply your changes to the latest version and try again".into(),
                    ));
                }
                scale
            }
            Method::PATCH => {
                let patch_type = PatchType::from_content_type(content_type).ok_or_else(|| {
                    ApiError::UnsupportedMediaType(format!("unsupported patch type {content_type}"))
                })?;
                let bytes = read_body(body).await?;
                let patch: Value = serde_json::from_slice(&bytes)
                    .map_err(|e| ApiError::BadRequest(format!("error decoding patch: {e}")))?;
                let patched = match patch_type {
                    PatchType::Json => api::patch::json_patch(&current, &patch),
                    PatchType::Merge | PatchType::Apply => api::patch::merge_patch(&current, &patch),
                    PatchType::Strategic => {
                        api::patch::strategic_merge_patch("autoscaling", "Scale", &current, &patch)
                    }
                }
                .map_err(|e| ApiError::BadRequest(e.to_string()))?;
                return apply_replicas(reg, target, name, &patched, write).await;
            }
            _ => {
                return Err(ApiError::MethodNotAllowed(format!(
                    "{method} is not allowed on scale"
                )));
            }
        };
        return apply_replicas(reg, target, name, &desired, write).await;
    }
    Err(ApiError::Internal("scale retries exhausted".into()))
}

async fn apply_replicas(
    reg: &Registry,
    target: &Target,
    name: &str,
    scale: &Value,
    write: &WriteOptions,
) -> ApiResult<Response> {
    let res = target.resource;
    let replicas = scale
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if replicas < 0 {
        return Err(ApiError::Invalid {
            subject: subject(res, name),
            kind: "Scale.autoscaling".into(),
            errors: vec![api::field::FieldError::invalid(
                "spec.replicas",
                replicas,
                "must be greater than or equal to 0",
            )],
        });
    }
    let patch = json!({"spec": {"replicas": replicas}});
    // Written as the `scale` subresource, so admission sees it as one (PodSecurity ignores subresources).
    let written = reg
        .patch(
            res,
            target.namespace.as_deref(),
            name,
            Some(api::resources::Subresource::Scale),
            PatchType::Merge,
            &patch,
            write,
        )
        .await?;
    let obj = match written {
        crate::registry::Written::Created(v) | crate::registry::Written::Updated(v) => v,
    };
    Ok(json_response(StatusCode::OK, &scale_of(&obj)))
}
