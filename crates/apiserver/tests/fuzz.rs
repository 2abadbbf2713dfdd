//! Bounded fuzzing of the HTTP surface (issue "Control plane": no input makes the server panic): random
//! methods, paths, content types and bodies — arbitrary bytes and mutated valid objects — sent through the
//! real router in-process. Every answer must be a well-formed response; a 5xx is a failure too, since bad
//! input must get a 4xx.

use axum::body::Body;
use proptest::prelude::*;
use serde_json::{Value, json};
use tower::ServiceExt;

fn router(dir: &std::path::Path) -> axum::Router {
    let store = store::Store::open_embedded(&dir.join("store"), store::Options::default()).expect("store");
    let registry = apiserver::registry::Registry::new(store, Default::default());
    let rt = tokio::runtime::Handle::current();
    rt.block_on(apiserver::bootstrap(&registry, 6443))
        .expect("bootstrap");
    apiserver::http::router(apiserver::http::AppState {
        registry,
        server_address: "127.0.0.1:6443".into(),
        kubelet_token: "fuzz".into(),
        ca_pem: String::new(),
        server_bootstrap: None,
    })
}

fn paths() -> impl Strategy<Value = String> {
    let fixed = prop::sample::select(vec![
        "/api/v1/namespaces/default/pods",
        "/api/v1/namespaces/default/pods/p",
        "/api/v1/namespaces/default/pods/p/status",
        "/api/v1/namespaces/default/pods/p/binding",
        "/api/v1/namespaces/default/services",
        "/api/v1/namespaces/default/services/s",
        "/api/v1/namespaces/default/configmaps/c",
        "/api/v1/namespaces/nope/configmaps",
        "/api/v1/namespaces/default",
        "/api/v1/namespaces/default/finalize",
        "/api/v1/nodes/n",
        "/apis/apps/v1/namespaces/default/statefulsets",
        "/apis/apps/v1/namespaces/default/statefulsets/web",
        "/apis/apps/v1/namespaces/default/statefulsets/web/scale",
        "/apis/apps/v1/namespaces/default/statefulsets/web/status",
        "/apis/apps/v1/namespaces/default/deployments/d/scale",
        "/apis/storage.k8s.io/v1/storageclasses/sc",
        "/api",
        "/apis",
        "/api/v1",
        "/apis/apps/v1",
        "/openapi/v3",
        "/openapi/v3/apis/apps/v1",
        "/version",
    ])
    .prop_map(str::to_string);
    prop_oneof![4 => fixed, 1 => "/[a-z0-9/%.?&=]{0,60}"]
}

fn queries() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "",
        "?watch=true&timeoutSeconds=1",
        "?labelSelector=app%3Dweb",
        "?labelSelector=a+in+(",
        "?fieldSelector=metadata.name%3Dx",
        "?fieldSelector=spec.nope%3D1",
        "?limit=1",
        "?limit=-5",
        "?continue=garbage",
        "?resourceVersion=abc&watch=1&timeoutSeconds=1",
        "?dryRun=All",
        "?fieldValidation=Strict",
        "?fieldManager=f&force=true",
        "?&&",
    ])
    .prop_map(str::to_string)
}

fn seeds() -> Vec<Value> {
    vec![
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}),
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "web"}, "spec": {"serviceName": "nginx", "replicas": 2,
            "selector": {"matchLabels": {"app": "nginx"}}, "template": {"metadata": {"labels": {"app": "nginx"}}, "spec": {"containers": [{"name": "nginx", "image": "nginx"}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "www"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"type": "NodePort", "ports": [{"port": 80}], "selector": {"a": "b"}}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "b"}}),
        json!({"spec": {"replicas": 3}}),
        json!([{"op": "replace", "path": "/spec/replicas", "value": 1}]),
        json!({"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "nginx"}], "containers": [{"name": "nginx", "$patch": "delete"}]}}}}),
    ]
}

/// Replace a random node of a JSON value with a random value.
fn mutate(v: &mut Value, path_choice: &[usize], replacement: &Value) {
    let Some((&c, rest)) = path_choice.split_first() else {
        *v = replacement.clone();
        return;
    };
    match v {
        Value::Object(m) if !m.is_empty() => {
            let k = m.keys().nth(c % m.len()).cloned().unwrap_or_default();
            if let Some(child) = m.get_mut(&k) {
                mutate(child, rest, replacement);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            let n = a.len();
            mutate(&mut a[c % n], rest, replacement);
        }
        other => *other = replacement.clone(),
    }
}

fn json_values() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "[\\PC]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z$/]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn bodies() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => prop::collection::vec(any::<u8>(), 0..200),
        5 => (0..7usize, prop::collection::vec(any::<usize>(), 0..6), json_values()).prop_map(|(i, path, repl)| {
            let mut v = seeds()[i].clone();
            mutate(&mut v, &path, &repl);
            v.to_string().into_bytes()
        }),
        1 => (0..7usize).prop_map(|i| seeds()[i].to_string().into_bytes()),
    ]
}

fn content_types() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "application/json",
        "application/yaml",
        "application/strategic-merge-patch+json",
        "application/merge-patch+json",
        "application/json-patch+json",
        "application/apply-patch+yaml",
        "application/vnd.kubernetes.protobuf",
        "text/plain",
        "",
    ])
}

fn methods() -> impl Strategy<Value = http::Method> {
    prop::sample::select(vec![
        http::Method::GET,
        http::Method::POST,
        http::Method::PUT,
        http::Method::PATCH,
        http::Method::DELETE,
    ])
}

#[test]
fn no_request_makes_the_server_panic_or_answer_5xx() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let _guard = rt.enter();
    let app = router(dir.path());
    let cases = std::env::var("BERTH_FUZZ_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(1500);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let strategy = (methods(), paths(), queries(), content_types(), bodies());
    runner
        .run(&strategy, |(method, path, query, ct, body)| {
            let uri = format!("{path}{query}");
            let Ok(mut req) = http::Request::builder()
                .method(method.clone())
                .uri(&uri)
                .header("content-type", ct)
                .body(Body::from(body))
            else {
                return Ok(());
            };
            req.extensions_mut().insert(apiserver::http::Authenticated);
            let app = app.clone();
            let status = rt.block_on(async move {
                let resp = app.oneshot(req).await.expect("infallible");
                let status = resp.status();
                // Drain at most a little of the body (watches stream until their timeout).
                let body = resp.into_body();
                let _ = tokio::time::timeout(
                    std::time::Duration::from_millis(20),
                    axum::body::to_bytes(body, 1 << 20),
                )
                .await;
                status
            });
            prop_assert!(
                !status.is_server_error(),
                "{method} {uri} ({ct}) answered {status}"
            );
            Ok(())
        })
        .expect("fuzzing found a failing request");
}
