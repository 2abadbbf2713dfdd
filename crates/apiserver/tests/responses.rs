//! Response shapes the `Accept` header asks for, on writes as on reads (upstream's
//! `transformResponseObject`): metadata-only clients PATCH with `as=PartialObjectMetadata` and must get
//! `kind: PartialObjectMetadata` back, not the whole object.

use axum::body::Body;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const PARTIAL: &str = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";

async fn router(dir: &std::path::Path) -> axum::Router {
    let store = store::Store::open_embedded(&dir.join("store"), store::Options::default()).expect("store");
    let registry = apiserver::registry::Registry::new(store, Default::default());
    apiserver::bootstrap(&registry, 6443).await.expect("bootstrap");
    apiserver::http::router(apiserver::http::AppState {
        registry,
        server_address: "127.0.0.1:6443".into(),
        kubelet_token: "unused".into(),
        ca_pem: String::new(),
    })
}

async fn call(
    r: &axum::Router,
    method: &str,
    path: &str,
    accept: &str,
    ctype: &str,
    body: Value,
) -> (u16, Value) {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("accept", accept)
        .header("content-type", ctype)
        .body(Body::from(body.to_string()))
        .expect("request");
    let resp = apiserver::server::in_process::<Body>(r.clone())
        .oneshot(req)
        .await
        .expect("response");
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn writes_answer_partial_object_metadata_when_asked() {
    let dir = tempfile::tempdir().expect("dir");
    let r = router(dir.path()).await;
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v"}});
    let (code, created) = call(
        &r,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        PARTIAL,
        "application/json",
        cm,
    )
    .await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["kind"], "PartialObjectMetadata", "{created}");
    assert!(created.get("data").is_none());
    let patch = json!({"metadata": {"labels": {"a": "b"}}});
    let (code, patched) = call(
        &r,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/c",
        PARTIAL,
        "application/merge-patch+json",
        patch,
    )
    .await;
    assert_eq!(code, 200, "{patched}");
    assert_eq!(patched["kind"], "PartialObjectMetadata", "{patched}");
    assert_eq!(patched["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(patched["metadata"]["labels"]["a"], "b");
    assert!(patched.get("data").is_none(), "{patched}");
    // Without the parameter, the whole object as before.
    let (_, full) = call(
        &r,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/c",
        "application/json",
        "application/merge-patch+json",
        json!({"metadata": {"labels": {"a": "c"}}}),
    )
    .await;
    assert_eq!(full["kind"], "ConfigMap");
    assert_eq!(full["data"]["k"], "v");
}
