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
    render: crate::table::Render,
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
    let mut printer = crate::table::WatchPrinter::new(target.clone(), render, &query);
    // From the watch cache's window when it can (upstream serves every watch from the cacher), else
    // from the store (history before the window, or 410 past compaction).
    let watch = match reg.cached_watch(res, ns.as_deref(), after).await {
        Some(w) => Ok(w),
        None => reg.store().watch(&prefix, after).await,
    };
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
                    // The store's progress (etcd's progress notifications): every event up to it has been
                    // handled, so the bookmark may carry a revision past this prefix's last event.
                    let rev = last_rev.max(stream.progress());
                    let ev = json!({"type": "BOOKMARK", "object": bookmark(res, rev, false)});
                    if tx.send(send(ev)).await.is_err() { return; }
                    stream.request_progress();
                }
                next = stream.next() => {
                    let Some(next) = next else { return };
                    let event = match next {
                        Ok(e) => e,
                        Err(e) => { let _ = tx.send(send(error_event(e))).await; return; }
                    };
                    last_rev = event.kv.mod_revision;
                    let Some(decoded) = event.memo.get_or_init(|| Decoded::of(&event, &reg)) else { continue };
                    let Some((kind, obj)) = decoded.classify(&opts) else { continue };
                    let line = if render != crate::table::Render::Full {
                        send(json!({"type": kind, "object": printer.object(obj.clone())}))
                    } else {
                        Ok(decoded.line(kind))
                    };
                    if tx.send(line).await.is_err() { return; }
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

/// A store event decoded once and shared by every watcher that receives it (through the event's memo):
/// with many watchers an event costs one decode and one encode, not one per watcher.
struct Decoded {
    kind: EventKind,
    /// Put: the new object. Delete: the last state. `resourceVersion` = the event's revision.
    object: Option<Value>,
    /// The version before the event, for selector transitions.
    prev: Option<Value>,
    /// `object` as JSON.
    json: Bytes,
}

impl Decoded {
    fn of(event: &store::Event, reg: &registry::Registry) -> Self {
        let prev = event.prev.as_ref().and_then(|p| reg.decode(p).ok());
        // A corrupt stored object yields no event, as before.
        let object = match event.kind {
            EventKind::Delete => prev.clone().or_else(|| reg.decode(&event.kv).ok()),
            EventKind::Put => reg.decode(&event.kv).ok(),
        }
        .map(|mut o| {
            crate::object::meta_mut(&mut o).insert(
                "resourceVersion".into(),
                Value::String(event.kv.mod_revision.to_string()),
            );
            o
        });
        let json = object
            .as_ref()
            .map(|o| Bytes::from(serde_json::to_vec(o).unwrap_or_default()))
            .unwrap_or_default();
        Decoded {
            kind: event.kind,
            object,
            prev,
            json,
        }
    }

    /// The event type this watch sees, as upstream's cacher filters: an object that starts matching is
    /// ADDED, one that stops matching is DELETED (with its new state), deletes carry the last state.
    fn classify(&self, opts: &ListOptions) -> Option<(&'static str, &Value)> {
        let obj = self.object.as_ref()?;
        let unfiltered = opts.label_selector.is_none() && opts.field_selector.is_none();
        let passes = |o: &Value| unfiltered || registry::passes(o, opts);
        match self.kind {
            EventKind::Delete => passes(obj).then_some(("DELETED", obj)),
            EventKind::Put => {
                let prev_match = self.prev.as_ref().is_some_and(passes);
                match (prev_match, passes(obj)) {
                    (true, true) => Some(("MODIFIED", obj)),
                    (false, true) => Some(("ADDED", obj)),
                    (true, false) => Some(("DELETED", obj)),
                    (false, false) => None,
                }
            }
        }
    }

    /// One JSON watch line.
    fn line(&self, kind: &str) -> Bytes {
        let mut line = Vec::with_capacity(self.json.len() + kind.len() + 24);
        line.extend_from_slice(b"{\"type\":\"");
        line.extend_from_slice(kind.as_bytes());
        line.extend_from_slice(b"\",\"object\":");
        line.extend_from_slice(&self.json);
        line.extend_from_slice(b"}\n");
        Bytes::from(line)
    }
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

/// A 410 answer for list/watch requests that ask for history that is gone.
pub fn gone(message: &str) -> Response {
    json_response(StatusCode::GONE, &ApiError::Gone(message.to_string()).status())
}
