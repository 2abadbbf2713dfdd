//! Watch streams (kubectl-compat.md §2.6): newline-delimited `{"type","object"}` events over a chunked
//! response, resumed from a resourceVersion, with synthetic ADDED events for `resourceVersion` "" / "0" and
//! `sendInitialEvents`, bookmarks, `timeoutSeconds`, and an `ERROR` 410 event past compaction
//! (upstream `k8s.io/apiserver/pkg/endpoints/handlers/watch.go` and the cacher's filtering rules).

use crate::error::{ApiError, ApiResult};
use crate::http::json_response;
use crate::registry::{self, ListOptions, Registry};
use crate::request::{Query, Target};
use axum::body::{Body, Bytes};
use axum::response::Response;
use futures::StreamExt;
use http::{StatusCode, header};
use serde_json::{Value, json};
use std::time::Duration;
use store::EventKind;

/// Default watch lifetime when the client gives no `timeoutSeconds` (upstream picks 30-60 min).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);
/// How often a bookmark is sent when the client allows them.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(30);

/// Serve a watch request.
pub async fn serve(
    reg: Registry,
    target: Target,
    query: Query,
    opts: ListOptions,
    table: bool,
) -> ApiResult<Response> {
    let res = target.resource;
    let ns = target.namespace.clone();
    let rv = query.get("resourceVersion").unwrap_or("").to_string();
    let send_initial = query.get("sendInitialEvents").map(|v| v == "true");
    let bookmarks = query.flag("allowWatchBookmarks");
    let timeout = query
        .int("timeoutSeconds")
        .map_err(ApiError::BadRequest)?
        .filter(|t| *t > 0)
        .map(|t| Duration::from_secs(t as u64))
        .unwrap_or(DEFAULT_TIMEOUT);
    // Synthetic ADDED events for the current state when the client has no resourceVersion to resume from.
    let replay = send_initial.unwrap_or(rv.is_empty() || rv == "0");
    let (initial, after) = if replay {
        let list = reg
            .list(
                res,
                ns.as_deref(),
                &ListOptions {
                    label_selector: opts.label_selector.clone(),
                    field_selector: opts.field_selector.clone(),
                    limit: 0,
                    continue_token: None,
                },
            )
            .await?;
        (list.items, list.revision)
    } else {
        let after: i64 = rv
            .parse()
            .map_err(|_| ApiError::BadRequest(format!("invalid resourceVersion {rv:?}")))?;
        (Vec::new(), after)
    };
    let prefix = crate::object::prefix(res, ns.as_deref());
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(256);
    let mut printer = crate::table::WatchPrinter::new(target.clone(), table, &query);
    let watch = reg.store().watch(&prefix, after);
    tokio::spawn(async move {
        let send = |v: Value| {
            let mut line = v.to_string();
            line.push('\n');
            Ok::<_, std::io::Error>(Bytes::from(line))
        };
        for obj in initial {
            let ev = json!({"type": "ADDED", "object": printer.object(obj)});
            if tx.send(send(ev)).await.is_err() {
                return;
            }
        }
        if send_initial == Some(true) {
            let ev = json!({"type": "BOOKMARK", "object": bookmark(res, after, true)});
            if tx.send(send(ev)).await.is_err() {
                return;
            }
        }
        let mut stream = match watch {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.send(send(error_event(e))).await;
                return;
            }
        };
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(BOOKMARK_INTERVAL);
        tick.tick().await;
        let mut last_rev = after;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                _ = tick.tick(), if bookmarks => {
                    let ev = json!({"type": "BOOKMARK", "object": bookmark(res, last_rev, false)});
                    if tx.send(send(ev)).await.is_err() { return; }
                }
                next = stream.next() => {
                    let Some(next) = next else { return };
                    let event = match next {
                        Ok(e) => e,
                        Err(e) => { let _ = tx.send(send(error_event(e))).await; return; }
                    };
                    last_rev = event.kv.mod_revision;
                    let Some((kind, obj)) = classify(&event, &opts) else { continue };
                    let ev = json!({"type": kind, "object": printer.object(obj)});
                    if tx.send(send(ev)).await.is_err() { return; }
                }
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

fn bookmark(res: &api::resources::Resource, rev: i64, initial_end: bool) -> Value {
    let mut meta = json!({"resourceVersion": rev.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": res.kind, "apiVersion": res.api_version(), "metadata": meta})
}

fn error_event(e: store::Error) -> Value {
    let status = ApiError::from(e).status();
    json!({"type": "ERROR", "object": status})
}

/// Map a store event through the watch's filters, as upstream's cacher does: an object that starts
/// matching is ADDED, one that stops matching is DELETED, deletes carry the last state.
fn classify(event: &store::Event, opts: &ListOptions) -> Option<(&'static str, Value)> {
    let cur = registry::decode(&event.kv).ok()?;
    let prev = event.prev.as_ref().and_then(|p| registry::decode(p).ok());
    let prev_match = prev.as_ref().is_some_and(|p| registry::passes(p, opts));
    match event.kind {
        EventKind::Delete => {
            let mut obj = prev.unwrap_or(cur);
            crate::object::meta_mut(&mut obj).insert(
                "resourceVersion".into(),
                Value::String(event.kv.mod_revision.to_string()),
            );
            registry::passes(&obj, opts).then_some(("DELETED", obj))
        }
        EventKind::Put => {
            let cur_match = registry::passes(&cur, opts);
            match (prev.is_some() && prev_match, cur_match) {
                (true, true) => Some(("MODIFIED", cur)),
                (false, true) => Some(("ADDED", cur)),
                (true, false) => Some(("DELETED", cur)),
                (false, false) => None,
            }
        }
    }
}

/// A 410 answer for list/watch requests that ask for history that is gone.
pub fn gone(message: &str) -> Response {
    json_response(StatusCode::GONE, &ApiError::Gone(message.to_string()).status())
}
