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
        server_bootstrap: None,
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

/// A list served from the watch cache's encoded objects is the same document the store path gives:
/// kind, resourceVersion, items, and a `continue` token that the store then follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_from_the_cache_equal_lists_from_the_store() {
    let dir = tempfile::tempdir().expect("dir");
    let r = router(dir.path()).await;
    for i in 0..5 {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("c{i}"), "labels": {"odd": (i % 2).to_string()}}, "data": {"k": "v"}});
        let (code, _) = call(
            &r,
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/json",
            "application/json",
            cm,
        )
        .await;
        assert_eq!(code, 201);
    }
    let list = |q: &'static str| {
        let r = r.clone();
        async move {
            let (code, v) = call(
                &r,
                "GET",
                &format!("/api/v1/namespaces/default/configmaps{q}"),
                "application/json",
                "application/json",
                Value::Null,
            )
            .await;
            assert_eq!(code, 200, "{v}");
            v
        }
    };
    let all = list("").await;
    assert_eq!(all["kind"], "ConfigMapList");
    assert_eq!(all["apiVersion"], "v1");
    assert!(
        all["metadata"]["resourceVersion"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    let names: Vec<&str> = all["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, ["c0", "c1", "c2", "c3", "c4"]);
    assert_eq!(all["items"][2]["data"]["k"], "v");
    let odd = list("?labelSelector=odd%3D1").await;
    assert_eq!(odd["items"].as_array().map(Vec::len), Some(2));
    let first = list("?limit=2").await;
    assert_eq!(first["items"].as_array().map(Vec::len), Some(2));
    let token = first["metadata"]["continue"]
        .as_str()
        .expect("continue")
        .to_string();
    let rest = {
        let (code, v) = call(
            &r,
            "GET",
            &format!("/api/v1/namespaces/default/configmaps?limit=10&continue={token}"),
            "application/json",
            "application/json",
            Value::Null,
        )
        .await;
        assert_eq!(code, 200, "{v}");
        v
    };
    let names: Vec<&str> = rest["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, ["c2", "c3", "c4"]);
    // `resourceVersion=0` gets (from the cache once it is ready, which the lists above made it).
    for (path, code) in [("c1", 200), ("missing", 404)] {
        let (got, v) = call(
            &r,
            "GET",
            &format!("/api/v1/namespaces/default/configmaps/{path}?resourceVersion=0"),
            "application/json",
            "application/json",
            Value::Null,
        )
        .await;
        assert_eq!(got, code, "{v}");
        if code == 200 {
            assert_eq!(v["metadata"]["name"], "c1");
            assert!(v["metadata"]["resourceVersion"].is_string());
        }
    }
}

async fn raw(r: &axum::Router, path: &str, accept: &str) -> (u16, bytes::Bytes) {
    let req = http::Request::builder()
        .method("GET")
        .uri(path)
        .header("accept", accept)
        .body(Body::empty())
        .expect("request");
    let resp = apiserver::server::in_process::<Body>(r.clone())
        .oneshot(req)
        .await
        .expect("response");
    let status = resp.status().as_u16();
    (status, resp.into_body().collect().await.expect("body").to_bytes())
}

/// Issue 15 item 17: every discovery document, legacy and aggregated, is the same bytes on every call
/// (clients that cache discovery by its bytes, or diff it, see no change when nothing changed).
#[tokio::test]
async fn discovery_documents_are_byte_stable_between_calls() {
    let dir = tempfile::tempdir().expect("dir");
    let r = router(dir.path()).await;
    let aggregated = apiserver::discovery::AGGREGATED_CONTENT_TYPE;
    let mut paths = vec![
        "/api".to_string(),
        "/apis".to_string(),
        "/api/v1".to_string(),
        "/openapi/v3".to_string(),
    ];
    for (g, v) in api::resources::groups() {
        paths.push(format!("/apis/{g}/{v}"));
        paths.push(format!("/apis/{g}"));
    }
    for path in &paths {
        for accept in ["application/json", aggregated] {
            let (code, first) = raw(&r, path, accept).await;
            assert_eq!(code, 200, "{path}");
            for _ in 0..3 {
                let (_, again) = raw(&r, path, accept).await;
                assert_eq!(first, again, "{path} with Accept {accept} changed between calls");
            }
        }
    }
}
