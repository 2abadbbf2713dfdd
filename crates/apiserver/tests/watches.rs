//! Watch-then-write races (issue 15 item 12): hundreds of rounds of the three ways clients start a
//! watch, each followed at once by a write, with other objects written meanwhile; no round may lose
//! the write's event.
//!
//! - kubectl's `get <kind> <name> -w`: GET the object, then watch with `resourceVersion=0` and a
//!   `metadata.name` field selector; kubectl drops the watch's first event (the synthetic ADDED of the
//!   current state, upstream `kubectl/pkg/cmd/get/get.go`), so the change must come as a later event;
//! - a reflector's list-then-watch: LIST, then watch from the list's resourceVersion, the write falling
//!   between the two (it must be replayed from history);
//! - a watch from the resourceVersion of the client's own last write.
//!
//! Run against the watch cache (lists from memory) and without it, on the embedded store.
//!
//! With the watch cache, a watch from a revision the cache has not applied yet (its list still running,
//! or a write acknowledged a moment ago) is served from the cache once it catches up, as upstream's
//! cacher: no API watch may open a store watch of its own.

use axum::body::Body;
use futures::StreamExt;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::time::Duration;
use tower::ServiceExt;

async fn router(dir: &std::path::Path, watch_cache: bool) -> axum::Router {
    let store = store::Store::open_embedded(&dir.join("store"), store::Options::default()).expect("store");
    router_on(store, watch_cache).await
}

async fn router_on(store: store::Store, watch_cache: bool) -> axum::Router {
    let registry = apiserver::registry::Registry::new(
        store,
        apiserver::registry::RegistryConfig {
            watch_cache,
            ..Default::default()
        },
    );
    apiserver::bootstrap(&registry, 6443).await.expect("bootstrap");
    apiserver::http::router(apiserver::http::AppState {
        registry,
        server_address: "127.0.0.1:6443".into(),
        kubelet_token: "unused".into(),
        ca_pem: String::new(),
        server_bootstrap: None,
    })
}

async fn send(r: &axum::Router, method: &str, path: &str, ctype: &str, body: Value) -> http::Response<Body> {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("accept", "application/json")
        .header("content-type", ctype)
        .body(if body.is_null() {
            Body::empty()
        } else {
            Body::from(body.to_string())
        })
        .expect("request");
    apiserver::server::in_process::<Body>(r.clone())
        .oneshot(req)
        .await
        .expect("response")
}

async fn call(r: &axum::Router, method: &str, path: &str, body: Value) -> Value {
    let ctype = if method == "PATCH" {
        "application/merge-patch+json"
    } else {
        "application/json"
    };
    let resp = send(r, method, path, ctype, body).await;
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    assert!(status.is_success(), "{method} {path}: {status} {v}");
    v
}

/// A watch's events, one JSON value per line.
struct Events {
    body: axum::body::BodyDataStream,
    buf: Vec<u8>,
}

impl Events {
    async fn open(r: &axum::Router, path: &str) -> Events {
        let resp = send(r, "GET", path, "application/json", Value::Null).await;
        assert_eq!(resp.status(), 200, "{path}");
        Events {
            body: resp.into_body().into_data_stream(),
            buf: Vec::new(),
        }
    }

    /// The next event, or `None` after `wait`.
    async fn next(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Some(serde_json::from_slice(&line).expect("event line"));
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Ok(Some(Ok(chunk))) => self.buf.extend_from_slice(&chunk),
                _ => return None,
            }
        }
    }

    /// Wait for the MODIFIED event carrying `data.n == n`, skipping older states.
    async fn expect_value(&mut self, n: usize, what: &str) {
        loop {
            let Some(ev) = self.next(Duration::from_secs(5)).await else {
                panic!("{what}: the event of write {n} never came");
            };
            if ev["type"] == "MODIFIED" && ev["object"]["data"]["n"] == json!(n.to_string()) {
                return;
            }
        }
    }
}

const CMS: &str = "/api/v1/namespaces/default/configmaps";

async fn rounds(watch_cache: bool) {
    let dir = tempfile::tempdir().expect("dir");
    let r = router(dir.path(), watch_cache).await;
    call(
        &r,
        "POST",
        CMS,
        json!({"metadata": {"name": "x"}, "data": {"n": "0"}}),
    )
    .await;
    // Writes to other objects all along: the store's revision moves between every step of a round.
    let churn = {
        let r = r.clone();
        tokio::spawn(async move {
            for i in 0.. {
                let name = format!("churn-{}", i % 20);
                let resp = send(
                    &r,
                    "PUT",
                    &format!("{CMS}/{name}"),
                    "application/json",
                    json!({"metadata": {"name": name}, "data": {"i": i.to_string()}}),
                )
                .await;
                let _ = resp.into_body().collect().await;
                tokio::task::yield_now().await;
            }
        })
    };
    let patch = |n: usize| json!({"data": {"n": n.to_string()}});
    let mut n = 0;
    for _ in 0..100 {
        // kubectl get cm x -w
        n += 1;
        let got = call(&r, "GET", &format!("{CMS}/x"), Value::Null).await;
        assert!(got["metadata"]["resourceVersion"].is_string());
        let mut w = Events::open(
            &r,
            &format!("{CMS}?fieldSelector=metadata.name%3Dx&resourceVersion=0&watch=true&timeoutSeconds=10"),
        )
        .await;
        let first = w.next(Duration::from_secs(5)).await.expect("the synthetic ADDED");
        assert_eq!(first["type"], "ADDED", "{first}");
        call(&r, "PATCH", &format!("{CMS}/x"), patch(n)).await;
        w.expect_value(n, "get -w").await;

        // A reflector: the write falls between the list and the watch.
        n += 1;
        let list = call(&r, "GET", CMS, Value::Null).await;
        let rv = list["metadata"]["resourceVersion"]
            .as_str()
            .expect("list rv")
            .to_string();
        call(&r, "PATCH", &format!("{CMS}/x"), patch(n)).await;
        let mut w = Events::open(
            &r,
            &format!("{CMS}?resourceVersion={rv}&watch=true&timeoutSeconds=10"),
        )
        .await;
        w.expect_value(n, "list then watch").await;

        // A watch from the client's own write, then the next write at once.
        n += 1;
        let written = call(&r, "PATCH", &format!("{CMS}/x"), patch(n)).await;
        let rv = written["metadata"]["resourceVersion"]
            .as_str()
            .expect("rv")
            .to_string();
        let mut w = Events::open(
            &r,
            &format!(
                "{CMS}?fieldSelector=metadata.name%3Dx&resourceVersion={rv}&watch=true&timeoutSeconds=10"
            ),
        )
        .await;
        n += 1;
        call(&r, "PATCH", &format!("{CMS}/x"), patch(n)).await;
        w.expect_value(n, "watch from own write").await;
    }
    churn.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_watch_then_write_round_loses_the_write_with_the_watch_cache() {
    rounds(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_watch_then_write_round_loses_the_write_from_the_store() {
    rounds(false).await;
}

/// Watches that start where the cache has not arrived yet (the resource's first use, while its cache
/// lists; a revision written a moment ago; a list's revision) are all served by the watch cache: the store
/// keeps one watch for the resource however many API watches there are, and each API watch still gets
/// every later write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_ahead_of_the_cache_wait_for_it_instead_of_watching_the_store() {
    let dir = tempfile::tempdir().expect("dir");
    let store =
        store::Store::open_embedded(&dir.path().join("store"), store::Options::default()).expect("store");
    let r = router_on(store.clone(), true).await;
    let before = store.open_watches();
    // A watch of ConfigMaps from the resourceVersion of `obj` (an object or a list).
    let watch_from = |obj: Value| {
        let r = r.clone();
        async move {
            let rv = obj["metadata"]["resourceVersion"]
                .as_str()
                .expect("rv")
                .to_string();
            Events::open(
                &r,
                &format!("{CMS}?resourceVersion={rv}&watch=true&timeoutSeconds=30"),
            )
            .await
        }
    };
    let create = |i: usize| {
        call(
            &r,
            "POST",
            CMS,
            json!({"metadata": {"name": format!("w{i}")}, "data": {"n": "0"}}),
        )
    };
    // The first read of ConfigMaps is a watch: their cache starts with it and is still listing.
    let mut watches = vec![watch_from(create(0).await).await];
    for i in 1..20 {
        // A watch from the revision of a write acknowledged a moment ago, then one from a fresh list's.
        watches.push(watch_from(create(i).await).await);
        watches.push(watch_from(call(&r, "GET", CMS, Value::Null).await).await);
    }
    assert_eq!(
        store.open_watches(),
        before + 1,
        "one store watch for the ConfigMaps' cache, none for the {} API watches",
        watches.len()
    );
    call(&r, "PATCH", &format!("{CMS}/w0"), json!({"data": {"n": "1"}})).await;
    for (i, w) in watches.iter_mut().enumerate() {
        w.expect_value(1, &format!("API watch {i}")).await;
    }
}
