//! The agent's client-side load balancer, as k3s's `pkg/agent/loadbalancer`: a TCP proxy on loopback
//! that every API connection of `berth agent` goes through. It dials the current server and stays with it
//! while it answers; when a dial fails it moves on to the next server in the list (round the list once),
//! so an agent keeps reporting through another server when its server dies, and its pods are never
//! touched (the agent process, and so its pod loops, go on; only their connections are made again).
//!
//! TLS passes through untouched: the agent talks HTTPS to `https://127.0.0.1:<port>`, which every Berth
//! server's certificate names, and every server of a cluster shares one CA (the bootstrap data), so one
//! kubeconfig verifies whichever server answers. Upstream differences: k3s also health-checks servers
//! and closes the connections to one that fails its check; here a dead server's connections end when its
//! process does (or by the client's own timeouts). The list is what `--server` names plus, as k3s's, every
//! server the `default/kubernetes` Endpoints name ([`LoadBalancer::update`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// How long one dial may take before the next server is tried (k3s's dialer timeout is 10 s; a server
/// on a live host refuses at once, so this only bounds an unreachable host).
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct State {
    /// `host:port` of each server.
    servers: Vec<String>,
    /// Index of the server new connections go to.
    current: usize,
    /// The servers named at start (`--server`), kept whatever the cluster says (k3s keeps its default
    /// server likewise).
    defaults: Vec<String>,
}

/// A running load balancer; stops accepting when dropped.
#[derive(Debug)]
pub struct LoadBalancer {
    state: Arc<Mutex<State>>,
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LoadBalancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LoadBalancer {
    /// Listen on `127.0.0.1` (an OS-chosen port) and proxy to `servers` (`host:port`, at least one).
    ///
    /// # Errors
    /// When no server is given or the listener cannot be bound.
    pub async fn start(servers: Vec<String>) -> std::io::Result<LoadBalancer> {
        if servers.is_empty() {
            return Err(std::io::Error::other("no server to balance"));
        }
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(Mutex::new(State {
            defaults: servers.clone(),
            servers,
            current: 0,
        }));
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    if let Some(mut upstream) = dial(&st).await {
                        let mut conn = conn;
                        let _ = conn.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await;
                    }
                });
            }
        });
        Ok(LoadBalancer { state, port, task })
    }

    /// The loopback URL clients use (`https://127.0.0.1:<port>`).
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Replace the list with `servers` (the cluster's API servers, `host:port`) plus the ones named at
    /// start, staying with the current server while it is listed (k3s's `LoadBalancer.Update`).
    pub fn update(&self, servers: Vec<String>) {
        let mut s = lock(&self.state);
        let current = s.servers[s.current].clone();
        let mut next: Vec<String> = Vec::new();
        for x in servers.into_iter().chain(s.defaults.clone()) {
            if !next.contains(&x) {
                next.push(x);
            }
        }
        if next != s.servers {
            tracing::info!(servers = ?next, "API servers");
        }
        s.current = next.iter().position(|x| *x == current).unwrap_or(0);
        s.servers = next;
    }

    /// The server new connections go to now (`host:port`).
    pub fn current(&self) -> String {
        let s = lock(&self.state);
        s.servers[s.current].clone()
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Dial the current server; on failure the next ones in turn, making the first that answers current.
async fn dial(state: &Mutex<State>) -> Option<TcpStream> {
    let (servers, start) = {
        let s = lock(state);
        (s.servers.clone(), s.current)
    };
    for i in 0..servers.len() {
        let idx = (start + i) % servers.len();
        let addr = &servers[idx];
        match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(addr.as_str())).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                let mut s = lock(state);
                if s.current != idx {
                    tracing::warn!(from = %servers[start], to = %addr, "server unreachable: switched");
                    s.current = idx;
                }
                return Some(stream);
            }
            Ok(Err(e)) => tracing::debug!(server = %addr, error = %e, "dial failed"),
            Err(_) => tracing::debug!(server = %addr, "dial timed out"),
        }
    }
    tracing::warn!(?servers, "no server answers");
    None
}

/// `host:port` of an `https://host:port` URL (port 6443 when absent).
///
/// # Errors
/// When `url` is not a URL with a host.
pub fn host_port(url: &str) -> anyhow::Result<String> {
    let uri: http::Uri = url.parse()?;
    let host = uri.host().ok_or_else(|| anyhow::anyhow!("{url}: no host"))?;
    Ok(format!("{host}:{}", uri.port_u16().unwrap_or(6443)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn echo(tag: u8) -> (String, tokio::task::JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        let task = tokio::spawn(async move {
            while let Ok((mut c, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut b = [0u8; 1];
                    while c.read_exact(&mut b).await.is_ok() {
                        if c.write_all(&[tag]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        (addr, task)
    }

    async fn ask(lb: &LoadBalancer) -> u8 {
        let mut c = TcpStream::connect(("127.0.0.1", lb.port)).await.expect("connect");
        c.write_all(b"?").await.expect("write");
        let mut b = [0u8; 1];
        c.read_exact(&mut b).await.expect("read");
        b[0]
    }

    #[tokio::test]
    async fn new_connections_move_to_the_next_server_when_the_current_one_dies() {
        let (a, ta) = echo(b'a').await;
        let (b, _tb) = echo(b'b').await;
        let lb = LoadBalancer::start(vec![a.clone(), b.clone()]).await.expect("lb");
        assert_eq!(ask(&lb).await, b'a');
        assert_eq!(ask(&lb).await, b'a');
        ta.abort();
        let _ = ta.await;
        assert_eq!(ask(&lb).await, b'b');
        assert_eq!(lb.current(), b);
        // It stays with the server that answers.
        assert_eq!(ask(&lb).await, b'b');
        assert_eq!(host_port("https://10.0.0.1").expect("url"), "10.0.0.1:6443");
        // Servers learnt from the cluster join the list; the current one stays current.
        lb.update(vec!["127.0.0.1:1".into(), b.clone()]);
        assert_eq!(lb.current(), b);
        assert_eq!(ask(&lb).await, b'b');
    }
}
