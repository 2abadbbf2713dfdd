//! `pods/log`, `pods/exec` and `pods/portforward` through the node agent's kubelet API (upstream
//! `pkg/registry/core/pod/rest/{log.go,subresources.go}` and `LogLocation`/`ExecLocation`/
//! `PortForwardLocation`): find the pod's node, check the container, and stream the kubelet's answer back
//! (logs) or splice the upgraded connections (exec, port-forward).

use crate::error::{ApiError, ApiResult};
use crate::registry::Registry;
use crate::request::{Query, Target};
use axum::body::Body;
use axum::response::Response;
use http::StatusCode;
use serde_json::Value;

fn names(pod: &Value, list: &str) -> Vec<String> {
    pod.pointer(&format!("/spec/{list}"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect()
}

/// The container a log request is for, as upstream picks it: the `container` parameter, else the only
/// container; otherwise upstream's 400 messages.
pub fn pick_container(pod: &Value, name: &str, requested: Option<&str>) -> ApiResult<String> {
    let containers = names(pod, "containers");
    let init = names(pod, "initContainers");
    let ephemeral = names(pod, "ephemeralContainers");
    match requested.filter(|c| !c.is_empty()) {
        Some(c) if containers.iter().chain(&init).chain(&ephemeral).any(|x| x == c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::BadRequest(format!(
            "container {c} is not valid for pod {name}"
        ))),
        None if containers.len() == 1 => Ok(containers[0].clone()),
        None => {
            let mut msg = format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            );
            if !init.is_empty() {
                msg.push_str(&format!(" or one of the init containers: [{}]", init.join(" ")));
            }
            if !ephemeral.is_empty() {
                msg.push_str(&format!(
                    " or one of the ephemeral containers: [{}]",
                    ephemeral.join(" ")
                ));
            }
            Err(ApiError::BadRequest(msg))
        }
    }
}

/// Serve `GET …/pods/{name}/log`.
pub async fn pod_log(
    reg: &Registry,
    target: &Target,
    name: &str,
    query: &Query,
    token: &str,
) -> ApiResult<Response> {
    let ns = target.namespace.clone().unwrap_or_default();
    let (address, port, container) = locate(reg, target, name, query).await?;
    let mut params = Vec::new();
    for key in [
        "follow",
        "previous",
        "tailLines",
        "sinceSeconds",
        "timestamps",
        "limitBytes",
    ] {
        if let Some(v) = query.get(key) {
            params.push(format!("{key}={v}"));
        }
    }
    let path = format!(
        "/containerLogs/{ns}/{name}/{container}{}{}",
        if params.is_empty() { "" } else { "?" },
        params.join("&")
    );
    let unavailable = |e: String| ApiError::Unavailable(format!("the node agent cannot be reached: {e}"));
    let stream = tokio::net::TcpStream::connect((address.as_str(), port))
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", format!("{address}:{port}"))
        .header("authorization", format!("Bearer {token}"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    if resp.status() != StatusCode::OK {
        return Err(agent_refused(resp).await);
    }
    let mut out = Response::new(Body::new(resp.into_body()));
    out.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    Ok(out)
}

/// The node's kubelet API address of a scheduled pod, and the container a request is for.
async fn locate(
    reg: &Registry,
    target: &Target,
    name: &str,
    query: &Query,
) -> ApiResult<(String, u16, String)> {
    let (pod, address, port) = node_of(reg, target, name).await?;
    let container = pick_container(&pod, name, query.get("container"))?;
    Ok((address, port, container))
}

/// A scheduled pod and its node's kubelet API address and port (404 for a missing pod, upstream's 400
/// "does not have a host assigned" for an unscheduled one).
async fn node_of(reg: &Registry, target: &Target, name: &str) -> ApiResult<(Value, String, u16)> {
    let ns = target.namespace.clone().unwrap_or_default();
    let pod = reg.get(target.resource, Some(&ns), name).await?;
    let node_name = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if node_name.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let nodes = api::resources::find("", "v1", "nodes").ok_or_else(|| ApiError::Internal("nodes".into()))?;
    let node = reg.get(nodes, None, node_name).await?;
    let address = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|x| x["type"] == "InternalIP"))
        .and_then(|x| x["address"].as_str())
        .unwrap_or("127.0.0.1")
        .to_string();
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(10250);
    Ok((pod, address, port))
}

/// The agent's refusal as the client's error: 400 with the agent's body (upstream passes the kubelet's
/// error through).
async fn agent_refused(resp: http::Response<hyper::body::Incoming>) -> ApiError {
    use http_body_util::BodyExt;
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    ApiError::BadRequest(String::from_utf8_lossy(&body).into_owned())
}

/// The client's pending WebSocket upgrade, or upstream-style 400 `needs` when the request is not one.
fn websocket_upgrade(parts: &mut http::request::Parts, needs: &str) -> ApiResult<hyper::upgrade::OnUpgrade> {
    let is_websocket = parts
        .headers
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    match parts.extensions.remove::<hyper::upgrade::OnUpgrade>() {
        Some(on_upgrade) if is_websocket => Ok(on_upgrade),
        _ => Err(ApiError::BadRequest(needs.to_string())),
    }
}

/// The upgrade-aware proxy (upstream `UpgradeAwareHandler`): send the client's WebSocket upgrade request
/// to the node agent's kubelet API at `address:port` + `path` (path and query), with the kubelet bearer
/// `token`; answer the client with the agent's `101 Switching Protocols` (its accept key and chosen
/// subprotocol), then splice the two upgraded connections until either side closes.
///
/// # Errors
/// 503 when the agent cannot be reached; 400 with the agent's body when it does not switch protocols.
async fn upgrade_to_agent(
    on_upgrade: hyper::upgrade::OnUpgrade,
    headers: &http::HeaderMap,
    address: &str,
    port: u16,
    path: String,
    token: &str,
) -> ApiResult<Response> {
    let unavailable = |e: String| ApiError::Unavailable(format!("the node agent cannot be reached: {e}"));
    let stream = tokio::net::TcpStream::connect((address, port))
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    tokio::spawn(conn.with_upgrades());
    let mut req = http::Request::get(path)
        .header("host", format!("{address}:{port}"))
        .header("authorization", format!("Bearer {token}"));
    for h in [
        "connection",
        "upgrade",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-protocol",
    ] {
        for v in headers.get_all(h) {
            req = req.header(h, v);
        }
    }
    let req = req
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(agent_refused(resp).await);
    }
    let mut out = Response::new(Body::empty());
    *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    for h in [
        "connection",
        "upgrade",
        "sec-websocket-accept",
        "sec-websocket-protocol",
    ] {
        if let Some(v) = resp.headers().get(h) {
            out.headers_mut()
                .insert(http::HeaderName::from_static(h), v.clone());
        }
    }
    tokio::spawn(async move {
        let (client, agent) = match (on_upgrade.await, hyper::upgrade::on(resp).await) {
            (Ok(c), Ok(a)) => (c, a),
            _ => return,
        };
        let mut client = hyper_util::rt::TokioIo::new(client);
        let mut agent = hyper_util::rt::TokioIo::new(agent);
        let _ = tokio::io::copy_bidirectional(&mut client, &mut agent).await;
    });
    Ok(out)
}

/// Serve `…/pods/{name}/exec` as upstream's upgrade-aware proxy does: forward the WebSocket upgrade
/// (`v5.channel.k8s.io`/`v4.channel.k8s.io`) to the node agent's `/exec`, answer the client with the
/// agent's `101 Switching Protocols`, then splice the two connections. `agent_path` is `exec` or
/// `attach` (`…/pods/{name}/attach` is proxied the same way to the agent's `/attach`).
pub async fn pod_exec(
    reg: &Registry,
    target: &Target,
    name: &str,
    query: &Query,
    parts: &mut http::request::Parts,
    token: &str,
    agent_path: &str,
) -> ApiResult<Response> {
    let on_upgrade = websocket_upgrade(
        parts,
        &format!("{agent_path} needs a WebSocket upgrade (v5.channel.k8s.io); SPDY is not supported"),
    )?;
    let (address, port, container) = locate(reg, target, name, query).await?;
    let ns = target.namespace.clone().unwrap_or_default();
    let raw_query = parts.uri.query().unwrap_or("");
    let path = format!("/{agent_path}/{ns}/{name}/{container}?{raw_query}");
    upgrade_to_agent(on_upgrade, &parts.headers, &address, port, path, token).await
}

/// Serve `…/pods/{name}/portforward` (upstream `PortForwardREST` + `PortForwardLocation`) the same way:
/// forward the WebSocket upgrade to the node agent's `/portForward/{ns}/{name}` with the query as given
/// (`ports=` for the v4 channel protocol of kube-rs and Python; none for kubectl's
/// `SPDY/3.1+portforward.k8s.io`) and splice. kubectl's fallback (a `POST` upgrading to raw SPDY) gets 400.
pub async fn pod_portforward(
    reg: &Registry,
    target: &Target,
    name: &str,
    parts: &mut http::request::Parts,
    token: &str,
) -> ApiResult<Response> {
    let on_upgrade = websocket_upgrade(
        parts,
        "port-forward needs a WebSocket upgrade (SPDY/3.1+portforward.k8s.io or v4.channel.k8s.io); \
         a raw SPDY upgrade is not supported",
    )?;
    let (_, address, port) = node_of(reg, target, name).await?;
    let ns = target.namespace.clone().unwrap_or_default();
    let path = match parts.uri.query() {
        Some(q) => format!("/portForward/{ns}/{name}?{q}"),
        None => format!("/portForward/{ns}/{name}"),
    };
    upgrade_to_agent(on_upgrade, &parts.headers, &address, port, path, token).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn container_is_picked_as_upstream_does() {
        let one = json!({"spec": {"containers": [{"name": "a"}]}});
        assert_eq!(pick_container(&one, "p", None).expect("only"), "a");
        let two = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "i"}]}});
        match pick_container(&two, "p", None) {
            Err(ApiError::BadRequest(m)) => assert_eq!(
                m,
                "a container name must be specified for pod p, choose one of: [a b] or one of the init containers: [i]"
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(pick_container(&two, "p", Some("i")).expect("init"), "i");
        assert!(
            matches!(pick_container(&two, "p", Some("z")), Err(ApiError::BadRequest(m)) if m == "container z is not valid for pod p")
        );
    }
}
