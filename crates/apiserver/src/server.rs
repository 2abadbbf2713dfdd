//! The HTTPS listener: TLS (rustls), authentication (a client certificate signed by the cluster CA, or the
//! `--token` as a bearer token), and hyper connections with upgrades for exec and port-forward.

use crate::http::Authenticated;
use axum::Router;
use axum::body::Body;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tower::ServiceExt;

/// Serve `router` on `listener` until `shutdown` resolves. Each connection is authenticated once (its client
/// certificate) and each request by its bearer token otherwise.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    token: Option<String>,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let token = Arc::new(token);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => { tracing::warn!(error = %e, "accept failed"); continue; }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        let token = token.clone();
        tokio::spawn(async move {
            let stream = match acceptor.accept(tcp).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "tls handshake failed");
                    return;
                }
            };
            let has_cert = stream
                .get_ref()
                .1
                .peer_certificates()
                .is_some_and(|c| !c.is_empty());
            let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let router = router.clone();
                let token = token.clone();
                async move {
                    let mut req = req.map(Body::new);
                    let bearer_ok = token.as_deref().is_some_and(|t| {
                        req.headers()
                            .get(http::header::AUTHORIZATION)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.strip_prefix("Bearer "))
                            .is_some_and(|given| constant_time_eq(given.trim().as_bytes(), t.as_bytes()))
                    });
                    if has_cert || bearer_ok {
                        req.extensions_mut().insert(Authenticated);
                    }
                    router.oneshot(req).await
                }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A tower service for in-process clients (the controllers' kube-rs `Client` in `berth server`): requests go
/// straight into the router, authenticated as the server itself, with no socket.
pub fn in_process<B>(
    router: Router,
) -> impl tower::Service<
    http::Request<B>,
    Response = http::Response<Body>,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<http::Response<Body>, std::convert::Infallible>> + Send,
> + Clone
+ Send
+ 'static
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    tower::service_fn(move |req: http::Request<B>| {
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(Authenticated);
        router.clone().oneshot(req)
    })
}
