//! The HTTP surface: axum routes for version, health, discovery and OpenAPI, and one dispatcher that
//! turns every resource request into a registry call (upstream `k8s.io/apiserver/pkg/endpoints/handlers`).

use crate::discovery;
use crate::error::{ApiError, ApiResult};
use crate::registry::{DeleteOptions, ListOptions, PatchType, Registry, WriteOptions, Written, subject};
use crate::request::{self, Query, Target};
use crate::watch;
use api::resources::Subresource;
use api::selector::{FieldSelector, LabelSelector};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderMap, Method, StatusCode, header};
use serde_json::{Value, json};

/// Largest request body accepted (upstream's 3 MiB limit for JSON bodies).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// Marks a request whose caller proved who it is (client certificate, bearer token, or in-process).
#[derive(Clone, Copy, Debug)]
pub struct Authenticated;

/// Shared state of the HTTP layer.
#[derive(Clone)]
pub struct AppState {
    /// The generic registry.
    pub registry: Registry,
    /// `host:port` advertised in legacy discovery.
    pub server_address: String,
    /// Bearer token presented to node agents' kubelet APIs (logs, exec).
    pub kubelet_token: String,
    /// The cluster CA certificate (PEM), served unauthenticated at `/cacerts` for joining agents, as k3s
    /// does (agents check it against the hash in their `K10…` token).
    pub ca_pem: String,
    /// What a server joining with `--server <this server> --token …` needs to reach the cluster's
    /// datastore (k3s's `/v1-k3s/server-bootstrap`): `{"datastoreEndpoint", "datastoreCA",
    /// "datastoreCert", "datastoreKey"}` (PEMs, or null), served to the token's holders only. `None` on the
    /// embedded store, which one server alone can use.
    pub server_bootstrap: Option<Value>,
}

/// The version Berth advertises: minor 32, so the kubectl dispatcher runs its built-in kubectl 1.32
/// (kubectl-compat.md §0, finding 1).
pub fn version() -> Value {
    json!({
        "major": "1", "minor": "32", "gitVersion": "v1.32.4+berth", "gitCommit": env!("CARGO_PKG_VERSION"),
        "gitTreeState": "clean", "buildDate": "2026-11-23T00:00:00Z", "goVersion": "rust",
        "compiler": "rustc", "platform": format!("{}/{}", std::env::consts::OS, arch())
    })
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The router with every route. Requests without an [`Authenticated`] extension get 401, except health checks.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/version",
            get(|| async { json_response(StatusCode::OK, &version()) }),
        )
        .route(
            "/version/",
            get(|| async { json_response(StatusCode::OK, &version()) }),
        )
        .route(
            "/cacerts",
            get(|State(state): State<AppState>| async move {
                (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "text/plain")],
                    state.ca_pem.clone(),
                )
                    .into_response()
            }),
        )
        // k3s serves these on its supervisor port (`/v1-k3s/encrypt/*`); here they are admin API paths.
        .route("/v1-berth/encrypt/status", get(encrypt_status))
        .route(
            "/v1-berth/encrypt/rotate",
            axum::routing::post(|State(state): State<AppState>| async move {
                match state.registry.rotate_encryption_key().await {
                    Ok(v) => json_response(StatusCode::OK, &v),
                    Err(e) => e.into_response(),
                }
            }),
        )
        .route(
            "/v1-berth/encrypt/enable",
            axum::routing::post(|State(state): State<AppState>| async move {
                match state.registry.set_encryption(true).await {
                    Ok(v) => json_response(StatusCode::OK, &v),
                    Err(e) => e.into_response(),
                }
            }),
        )
        .route(
            "/v1-berth/encrypt/disable",
            axum::routing::post(|State(state): State<AppState>| async move {
                match state.registry.set_encryption(false).await {
                    Ok(v) => json_response(StatusCode::OK, &v),
                    Err(e) => e.into_response(),
                }
            }),
        )
        .route(
            "/v1-berth/encrypt/reencrypt",
            axum::routing::post(|State(state): State<AppState>| async move {
                match state.registry.reencrypt().await {
                    Ok(n) => json_response(StatusCode::OK, &json!({"reencrypted": n})),
                    Err(e) => e.into_response(),
                }
            }),
        )
        .route(
            "/v1-berth/server-bootstrap",
            get(|State(state): State<AppState>| async move {
                match &state.server_bootstrap {
                    Some(v) => json_response(StatusCode::OK, v),
                    None => ApiError::BadRequest(
                        "this server runs the embedded store, which only one server can use: servers \
                         share a cluster through an external datastore (start the first one with \
                         --datastore-endpoint)"
                            .into(),
                    )
                    .into_response(),
                }
            }),
        )
        // k3s's `etcd-snapshot save` asks its server likewise; the file lands in the server's snapshot dir.
        .route("/v1-berth/snapshot/save", axum::routing::post(snapshot_save))
        .route("/healthz", get(health))
        .route("/livez", get(health))
        .route("/readyz", get(health))
        .fallback(dispatch)
        .layer(axum::middleware::from_fn(require_auth))
        .with_state(state)
}

async fn encrypt_status(State(state): State<AppState>) -> Response {
    match state.registry.encryption_status().await {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => e.into_response(),
    }
}

/// `POST /v1-berth/snapshot/save?name=<file name>[&format=etcd]`: a snapshot of the store at one
/// revision ([`store::snapshot::save`]), or etcd's own database snapshot ([`store::snapshot::save_etcd`]),
/// into the server's snapshot directory; answers with its path, revision and size.
async fn snapshot_save(State(state): State<AppState>, req: Request) -> Response {
    let query = req.uri().query().unwrap_or("").to_string();
    drop(req);
    let param = |key: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or("")
            .to_string()
    };
    let name = param("name");
    let etcd_format = match param("format").as_str() {
        "" | "berth" => false,
        "etcd" => true,
        other => {
            return ApiError::BadRequest(format!("unknown snapshot format {other:?} (berth or etcd)"))
                .into_response();
        }
    };
    let valid = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid {
        return ApiError::BadRequest(format!("invalid snapshot name {name:?}")).into_response();
    }
    let Some(dir) = state.registry.config().snapshot_dir.clone() else {
        return ApiError::BadRequest("this server keeps no snapshots".into()).into_response();
    };
    let saved = if etcd_format {
        store::snapshot::save_etcd(state.registry.store(), &dir, &name).await
    } else {
        store::snapshot::save(state.registry.store(), &dir, &name).await
    };
    match saved {
        Ok(s) => json_response(
            StatusCode::OK,
            &json!({"path": s.path.display().to_string(), "revision": s.revision, "keys": s.keys, "size": s.size}),
        ),
        Err(e) => ApiError::Internal(format!("snapshot: {e}")).into_response(),
    }
}

async fn health() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "ok",
    )
        .into_response()
}

async fn require_auth(req: Request, next: axum::middleware::Next) -> Response {
    let path = req.uri().path();
    let open = matches!(
        path,
        "/healthz" | "/livez" | "/readyz" | "/version" | "/version/" | "/cacerts"
    );
    if !open && req.extensions().get::<Authenticated>().is_none() {
        return ApiError::Unauthorized.into_response();
    }
    next.run(req).await
}

/// A JSON response with `Content-Type: application/json`.
pub fn json_response(code: StatusCode, v: &Value) -> Response {
    (code, [(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

async fn dispatch(State(state): State<AppState>, req: Request) -> Response {
    // Warnings that admission plugins add travel on the response, success or failure (upstream's
    // warning recorder on the request context).
    let (result, warnings) = crate::admission::collect_warnings(dispatch_inner(state, req)).await;
    let resp = match result {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    with_warnings(resp, &warnings)
}

async fn dispatch_inner(state: AppState, req: Request) -> ApiResult<Response> {
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let query = Query::parse(parts.uri.query());
    let accept = header_str(&parts.headers, header::ACCEPT);
    // Discovery and OpenAPI.
    match path.trim_end_matches('/') {
        "/api" => {
            return Ok(if discovery::wants_aggregated(&accept) {
                aggregated(discovery::aggregated(true))
            } else {
                json_response(StatusCode::OK, &discovery::api_versions(&state.server_address))
            });
        }
        "/apis" => {
            return Ok(if discovery::wants_aggregated(&accept) {
                aggregated(discovery::aggregated(false))
            } else {
                json_response(StatusCode::OK, &discovery::api_group_list())
            });
        }
        "/openapi/v3" => return Ok(json_response(StatusCode::OK, &discovery::openapi_index())),
        "/openapi/v2" => {
            let (ctype, body) = if accept.contains("protobuf") {
                (
                    crate::openapi_v2::PROTOBUF,
                    crate::openapi_v2::protobuf_document(),
                )
            } else {
                ("application/json", crate::openapi_v2::json_document())
            };
            return Ok((StatusCode::OK, [(header::CONTENT_TYPE, ctype)], body).into_response());
        }
        p if p.starts_with("/openapi/v3/") => {
            let doc = discovery::parse_openapi_path(&p["/openapi/v3/".len()..])
                .and_then(|(g, v)| discovery::openapi_group_version(&g, &v));
            return doc
                .map(|d| json_response(StatusCode::OK, &d))
                .ok_or_else(|| ApiError::NotFound(Default::default()));
        }
        _ => {}
    }
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["api", v] => {
            return discovery::api_resource_list("", v)
                .map(|d| json_response(StatusCode::OK, &d))
                .ok_or_else(|| ApiError::NotFound(Default::default()));
        }
        ["apis", g] => {
            return discovery::api_group_doc(g)
                .map(|d| json_response(StatusCode::OK, &d))
                .ok_or_else(|| ApiError::NotFound(Default::default()));
        }
        ["apis", g, v] => {
            return discovery::api_resource_list(g, v)
                .map(|d| json_response(StatusCode::OK, &d))
                .ok_or_else(|| ApiError::NotFound(Default::default()));
        }
        _ => {}
    }
    let target = request::parse_path(&path).map_err(|_| {
        ApiError::NotFound(crate::error::Subject {
            qualified: "the server could not find the requested resource".into(),
            ..Default::default()
        })
    })?;
    let render = crate::table::Render::from_accept(&accept);
    let method = parts.method.clone();
    let content_type = header_str(&parts.headers, header::CONTENT_TYPE);
    let write = WriteOptions {
        field_manager: query
            .get("fieldManager")
            .map(str::to_string)
            .or_else(|| default_manager(&parts.headers)),
        dry_run: query.all("dryRun").iter().any(|d| d == "All"),
        field_validation: query.get("fieldValidation").map(str::to_string),
        force: query.flag("force"),
    };
    let reg = &state.registry;
    let res = target.resource;
    let ns = target.namespace.as_deref();
    match (&method, target.name.as_deref(), target.subresource) {
        (&Method::GET, None, None) => {
            let opts = list_options(&target, &query)?;
            if query.flag("watch") {
                return watch::serve(reg.clone(), target, query, opts, render).await;
            }
            if render == crate::table::Render::Full
                && let Some(body) = reg.list_json(res, ns, &opts).await?
            {
                return Ok(
                    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
                );
            }
            let list = reg.list(res, ns, &opts).await?;
            match render {
                crate::table::Render::Table => {
                    return Ok(json_response(
                        StatusCode::OK,
                        &crate::table::list_table(&target, &list, &query),
                    ));
                }
                crate::table::Render::Metadata => {
                    return Ok(json_response(StatusCode::OK, &crate::table::partial_list(&list)));
                }
                crate::table::Render::Full => {}
            }
            let mut meta = json!({"resourceVersion": list.revision.to_string()});
            if let Some(c) = &list.continue_token {
                meta["continue"] = json!(c);
            }
            let body = json!({"kind": format!("{}List", res.kind), "apiVersion": res.api_version(),
                              "metadata": meta, "items": list.items});
            Ok(json_response(StatusCode::OK, &body))
        }
        (&Method::POST, None, None) => {
            let obj = decode_body(&content_type, body, &target).await?;
            let (obj, warnings) = check_fields(&target, obj, &write)?;
            let created = reg.create(res, ns, obj, &write).await?;
            Ok(with_warnings(
                json_response(StatusCode::CREATED, &shaped(render, &target, created, &query)),
                &warnings,
            ))
        }
        (&Method::DELETE, None, None) => {
            // deletecollection: delete every object matching the selectors.
            let opts = list_options(&target, &query)?;
            let del = delete_options(&content_type, body, &query).await?;
            let list = reg.list(res, ns, &opts).await?;
            let mut items = Vec::new();
            for item in list.items {
                let name = crate::object::name(&item).to_string();
                let item_ns = crate::object::namespace(&item).to_string();
                let item_ns = if res.namespaced {
                    Some(item_ns.as_str())
                } else {
                    None
                };
                match reg.delete(res, item_ns, &name, &del).await {
                    Ok((obj, _)) => items.push(obj),
                    Err(ApiError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            let body = json!({"kind": format!("{}List", res.kind), "apiVersion": res.api_version(),
                              "metadata": {}, "items": items});
            Ok(json_response(StatusCode::OK, &body))
        }
        (
            &Method::GET,
            Some(name),
            None | Some(Subresource::Status) | Some(Subresource::EphemeralContainers),
        ) => {
            // `resourceVersion=0`: any recent state will do, served from the watch cache (upstream's
            // `NotOlderThan` 0 read from the cacher); otherwise a consistent read from the store.
            let cached = if query.get("resourceVersion") == Some("0") {
                reg.cached_get(res, ns, name)
            } else {
                None
            };
            let obj = match cached {
                Some(obj) => obj,
                None => reg.get(res, ns, name).await?,
            };
            match render {
                crate::table::Render::Table => {
                    return Ok(json_response(
                        StatusCode::OK,
                        &crate::table::object_table(&target, &obj, &query),
                    ));
                }
                crate::table::Render::Metadata => {
                    return Ok(json_response(StatusCode::OK, &crate::table::partial(&obj)));
                }
                crate::table::Render::Full => {}
            }
            Ok(json_response(StatusCode::OK, &obj))
        }
        (
            &Method::PUT,
            Some(name),
            sub @ (None
            | Some(Subresource::Status)
            | Some(Subresource::Finalize)
            | Some(Subresource::EphemeralContainers)),
        ) => {
            let obj = decode_body(&content_type, body, &target).await?;
            let (obj, warnings) = check_fields(&target, obj, &write)?;
            let updated = reg.update(res, ns, name, sub, obj, &write).await?;
            Ok(with_warnings(
                json_response(StatusCode::OK, &shaped(render, &target, updated, &query)),
                &warnings,
            ))
        }
        (
            &Method::PATCH,
            Some(name),
            sub @ (None | Some(Subresource::Status) | Some(Subresource::EphemeralContainers)),
        ) => {
            let patch_type = PatchType::from_content_type(&content_type).ok_or_else(|| {
                ApiError::UnsupportedMediaType("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json".to_string())
            })?;
            let bytes = read_body(body).await?;
            let patch = parse_patch_body(patch_type, &bytes)?;
            if patch_type == PatchType::Apply && write.field_manager.is_none() {
                return Err(ApiError::Invalid {
                    subject: subject(res, name),
                    kind: res.qualified_kind(),
                    errors: vec![api::field::FieldError::required(
                        "fieldManager",
                        "is required for apply requests",
                    )],
                });
            }
            let written = reg.patch(res, ns, name, sub, patch_type, &patch, &write).await?;
            Ok(match written {
                Written::Created(v) => {
                    json_response(StatusCode::CREATED, &shaped(render, &target, v, &query))
                }
                Written::Updated(v) => json_response(StatusCode::OK, &shaped(render, &target, v, &query)),
            })
        }
        (&Method::DELETE, Some(name), None) => {
            let del = delete_options(&content_type, body, &query).await?;
            let (obj, gone) = reg.delete(res, ns, name, &del).await?;
            let code = if gone || !crate::object::finalizers(&obj).is_empty() || res.kind == "Pod" {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            };
            Ok(json_response(code, &obj))
        }
        (_, Some(name), Some(Subresource::Scale)) => {
            crate::scale::handle(reg, &target, name, &method, &content_type, body, &write).await
        }
        (&Method::POST, Some(name), Some(Subresource::Eviction)) => {
            let eviction = decode_body(&content_type, body, &target).await?;
            crate::eviction::evict(reg, &target, name, &eviction, write.dry_run).await?;
            Ok(json_response(
                StatusCode::CREATED,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
            ))
        }
        (&Method::POST, Some(name), Some(Subresource::Binding)) => {
            let binding = decode_body(&content_type, body, &target).await?;
            let node = binding
                .pointer("/target/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            bind_pod(reg, &target, name, &node).await?;
            Ok(json_response(
                StatusCode::CREATED,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
            ))
        }
        (&Method::GET | &Method::POST, Some(name), Some(sub @ (Subresource::Exec | Subresource::Attach))) => {
            let agent_path = if matches!(sub, Subresource::Exec) {
                "exec"
            } else {
                "attach"
            };
            crate::proxy::pod_exec(
                reg,
                &target,
                name,
                &query,
                &mut parts,
                &state.kubelet_token,
                agent_path,
            )
            .await
        }
        (&Method::GET | &Method::POST, Some(name), Some(Subresource::PortForward)) => {
            crate::proxy::pod_portforward(reg, &target, name, &mut parts, &state.kubelet_token).await
        }
        (&Method::GET, Some(name), Some(Subresource::Log)) => {
            crate::proxy::pod_log(reg, &target, name, &query, &state.kubelet_token).await
        }
        _ => Err(ApiError::MethodNotAllowed(format!(
            "the server does not allow this method on the requested resource ({method})"
        ))),
    }
}

/// A write's response object in the form the `Accept` header asked for, as upstream's handlers transform
/// every response (`transformResponseObject`): the object, its `PartialObjectMetadata`
/// (`as=PartialObjectMetadata`, what metadata-only clients PATCH with) or a one-row Table.
fn shaped(render: crate::table::Render, target: &Target, obj: Value, query: &Query) -> Value {
    match render {
        crate::table::Render::Full => obj,
        crate::table::Render::Metadata => crate::table::partial(&obj),
        crate::table::Render::Table => crate::table::object_table(target, &obj, query),
    }
}

/// `pods/binding` (upstream `pkg/registry/core/pod/storage` BindingREST): set `spec.nodeName` once.
async fn bind_pod(reg: &Registry, target: &Target, name: &str, node: &str) -> ApiResult<()> {
    if node.is_empty() {
        return Err(ApiError::BadRequest("binding target name is required".into()));
    }
    let patch = json!({"spec": {"nodeName": node}});
    let current = reg
        .get(target.resource, target.namespace.as_deref(), name)
        .await?;
    if let Some(existing) = current
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    {
        return Err(ApiError::Conflict(
            subject(target.resource, name),
            format!("pod {name} is already assigned to node \"{existing}\""),
        ));
    }
    let mut next =
        api::patch::merge_patch(&current, &patch).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    // PodScheduled condition, as the binding subresource sets it upstream.
    let cond = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null,
                      "lastTransitionTime": crate::object::timestamp(jiff::Timestamp::now())});
    let conds = next["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut conds: Vec<Value> = conds
        .into_iter()
        .filter(|c| c["type"] != "PodScheduled")
        .collect();
    conds.push(cond);
    // Binding writes spec through the main resource path; status is carried along by hand.
    let status = std::mem::take(&mut next["status"]);
    let updated = reg
        .update(
            target.resource,
            target.namespace.as_deref(),
            name,
            None,
            next,
            &WriteOptions::default(),
        )
        .await?;
    let mut with_status = updated;
    with_status["status"] = status;
    api::value::set_in(&mut with_status, &["status", "conditions"], Value::Array(conds));
    reg.update(
        target.resource,
        target.namespace.as_deref(),
        name,
        Some(Subresource::Status),
        with_status,
        &WriteOptions::default(),
    )
    .await?;
    Ok(())
}

fn aggregated(doc: Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, discovery::AGGREGATED_CONTENT_TYPE)],
        doc.to_string(),
    )
        .into_response()
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// Upstream derives a default field manager from the User-Agent (`kubectl`, `kube-rs` …).
fn default_manager(h: &HeaderMap) -> Option<String> {
    let ua = header_str(h, header::USER_AGENT);
    let first = ua.split('/').next().unwrap_or("").trim();
    if first.is_empty() {
        None
    } else {
        Some(first.chars().take(128).collect())
    }
}

fn list_options(target: &Target, q: &Query) -> ApiResult<ListOptions> {
    let label_selector = match q.get("labelSelector") {
        Some(s) => Some(LabelSelector::parse(s).map_err(|e| ApiError::BadRequest(e.to_string()))?),
        None => None,
    };
    let field_selector = match q.get("fieldSelector") {
        Some(s) => {
            let fs = FieldSelector::parse(s).map_err(|e| ApiError::BadRequest(e.to_string()))?;
            fs.validate_for(target.resource.group, target.resource.kind)
                .map_err(|e| ApiError::BadRequest(e.to_string()))?;
            Some(fs)
        }
        None => None,
    };
    let limit = q.int("limit").map_err(ApiError::BadRequest)?.unwrap_or(0).max(0) as usize;
    Ok(ListOptions {
        label_selector,
        field_selector,
        limit,
        continue_token: q.get("continue").map(str::to_string),
    })
}

pub(crate) async fn read_body(body: Body) -> ApiResult<Bytes> {
    match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(b) => Ok(b),
        Err(e) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                || e.to_string().contains("length limit");
            if too_large {
                Err(ApiError::TooLarge(
                    "the request body is too large (limit 3 MiB)".into(),
                ))
            } else {
                Err(ApiError::BadRequest(format!("reading the request body: {e}")))
            }
        }
    }
}

/// Decode a JSON or YAML body into an object (protobuf bodies from `kubectl create <generator>` go through
/// [`crate::protobuf`]).
pub(crate) async fn decode_body(content_type: &str, body: Body, target: &Target) -> ApiResult<Value> {
    let bytes = read_body(body).await?;
    decode_bytes(content_type, &bytes, target)
}

pub(crate) fn decode_bytes(content_type: &str, bytes: &[u8], target: &Target) -> ApiResult<Value> {
    let base = content_type.split(';').next().unwrap_or("").trim();
    let v: Value = match base {
        "application/vnd.kubernetes.protobuf" => crate::protobuf::decode(bytes, target)?,
        "application/yaml" | "application/apply-patch+yaml" => serde_saphyr::from_slice(bytes)
            .map_err(|e| ApiError::BadRequest(format!("error decoding YAML: {e}")))?,
        _ => serde_json::from_slice(bytes).map_err(|e| {
            ApiError::BadRequest(format!("the body of the request was in an unknown format: {e}"))
        })?,
    };
    if !v.is_object() {
        return Err(ApiError::BadRequest(
            "the body of the request was in an unknown format: object expected".into(),
        ));
    }
    Ok(v)
}

fn parse_patch_body(patch_type: PatchType, bytes: &[u8]) -> ApiResult<Value> {
    let v: Value = if patch_type == PatchType::Apply {
        serde_saphyr::from_slice(bytes)
            .map_err(|e| ApiError::BadRequest(format!("error decoding YAML: {e}")))?
    } else {
        serde_json::from_slice(bytes)
            .map_err(|e| ApiError::BadRequest(format!("error decoding patch: {e}")))?
    };
    Ok(v)
}

/// Typed decode and unknown-field check for `fieldValidation` (upstream default `Warn` for the API,
/// kubectl sends `Strict`): Strict → 400 naming every unknown field, Warn → `Warning` headers.
fn check_fields(target: &Target, obj: Value, opts: &WriteOptions) -> ApiResult<(Value, Vec<String>)> {
    let r = target.resource;
    let unknown = api::schema::unknown_fields(r.group, r.version, r.kind, &obj)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if unknown.is_empty() {
        return Ok((obj, Vec::new()));
    }
    let msgs: Vec<String> = unknown.iter().map(|f| format!("unknown field \"{f}\"")).collect();
    match opts.field_validation.as_deref() {
        Some("Strict") => Err(ApiError::BadRequest(format!(
            "strict decoding error: {}",
            msgs.join(", ")
        ))),
        Some("Ignore") => Ok((obj, Vec::new())),
        _ => Ok((obj, msgs)),
    }
}

fn with_warnings(mut resp: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let text = format!("299 - \"{}\"", w.replace('"', "\\\""));
        if let Ok(v) = http::HeaderValue::from_str(&text) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}

/// A `DeleteOptions` body (JSON form) as the registry's options.
pub(crate) fn delete_options_from(v: &Value) -> DeleteOptions {
    let text = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
    let propagation_policy = text("/propagationPolicy").or_else(|| {
        v.get("orphanDependents")
            .and_then(Value::as_bool)
            .map(|o| if o { "Orphan" } else { "Background" }.to_string())
    });
    DeleteOptions {
        grace_period_seconds: v.get("gracePeriodSeconds").and_then(Value::as_i64),
        propagation_policy,
        precondition_uid: text("/preconditions/uid"),
        precondition_resource_version: text("/preconditions/resourceVersion"),
        dry_run: v
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|d| d == "All")),
    }
}

async fn delete_options(content_type: &str, body: Body, q: &Query) -> ApiResult<DeleteOptions> {
    let bytes = read_body(body).await?;
    let mut opts = DeleteOptions::default();
    if !bytes.is_empty() {
        let base = content_type.split(';').next().unwrap_or("").trim();
        let v: Value = if base == "application/vnd.kubernetes.protobuf" {
            crate::protobuf::decode_delete_options(&bytes)?
        } else {
            serde_json::from_slice(&bytes)
                .map_err(|e| ApiError::BadRequest(format!("invalid DeleteOptions: {e}")))?
        };
        opts = delete_options_from(&v);
    }
    if let Some(g) = q.int("gracePeriodSeconds").map_err(ApiError::BadRequest)? {
        opts.grace_period_seconds = Some(g);
    }
    if let Some(p) = q.get("propagationPolicy") {
        opts.propagation_policy = Some(p.to_string());
    }
    if q.all("dryRun").iter().any(|d| d == "All") {
        opts.dry_run = true;
    }
    Ok(opts)
}
