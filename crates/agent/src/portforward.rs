//! Port forwarding, the kubelet's `/portForward/{namespace}/{pod}` (upstream kubelet
//! `pkg/kubelet/cri/streaming/portforward/{httpstream.go,websocket.go}`), reached through the API server's
//! `pods/portforward` proxy. Two protocols, picked by the WebSocket subprotocol:
//!
//! - [`SPDY_PROTOCOL`] (`kubectl port-forward` since 1.31, client-go `tools/portforward`): the WebSocket's
//!   binary messages carry a SPDY/3.1 byte stream, split at arbitrary points. For each local connection
//!   the client opens an error stream and a data stream (headers `streamtype`, `port`, `requestid`); the
//!   agent answers each SYN_STREAM with a SYN_REPLY, connects to the port once the pair is complete, and
//!   copies bytes both ways on the data stream. When the target closes its side, the agent FINs the data
//!   stream, then the error stream; when the connection fails, it first writes the error text on the
//!   error stream. See [`serve_spdy`].
//! - [`V4_PROTOCOL`] (kube-rs, the Python client; `?ports=80,81`): per requested port `i`, channel `2i`
//!   carries data and `2i+1` errors, each message starting with its channel byte; the agent's first
//!   message on each channel is the port as u16 little-endian. See [`serve_v4`].
//!
//! Pods share the node's network namespace today, so the agent dials `localhost:<port>` on the node.
//! Upstream's runtime dials localhost *inside the pod sandbox's network namespace*; once pods get their
//! own network, [`dial`] must enter the pod's network namespace first.

pub mod spdy;

use futures::{Sink, SinkExt, Stream, StreamExt};
use spdy::{FLAG_FIN, Frame, FrameReader, HeaderCompressor, HeaderDecompressor};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The WebSocket subprotocol kubectl 1.31+ offers: SPDY/3.1 tunnelled in binary messages.
pub const SPDY_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// The WebSocket channel protocol of kube-rs and the Python client (upstream
/// `v4BinaryWebsocketProtocol`).
pub const V4_PROTOCOL: &str = "v4.channel.k8s.io";
/// How long a SPDY stream waits for its partner (error or data) before the request is abandoned
/// (upstream kubelet's default `streamCreationTimeout`).
pub const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long dialling the target port may take.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest data chunk read from the target and sent as one frame or message, in bytes.
pub const CHUNK: usize = 32 * 1024;

/// The pod a connection forwards to, as named in error messages
/// (`error forwarding port P to pod NAME, uid UID: …`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    /// `namespace/name`.
    pub name: String,
    /// The pod's UID.
    pub uid: String,
    /// The pod's pinned network namespace; `None` for a `hostNetwork` pod (the node's).
    pub netns: Option<PathBuf>,
}

/// Connect to `port` on `localhost` of the pod, as upstream's runtime does (`localhost` inside the
/// sandbox's network namespace, so a server bound to 127.0.0.1 in the pod is reachable): `127.0.0.1`,
/// then `::1`. With `netns`, the socket is made on a fresh thread that first joins that namespace (a
/// socket stays in the namespace it was made in; the thread ends, so no runtime thread changes its
/// namespace); without it, on the node's.
///
/// # Errors
/// Both attempts' errors in one message, e.g. `failed to connect to localhost:81: IPv4: Connection
/// refused (os error 111), IPv6: …`.
pub async fn dial(port: u16, netns: Option<&Path>) -> Result<TcpStream, String> {
    let ns = netns.map(Path::to_path_buf);
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let result = (|| {
            if let Some(ns) = &ns {
                let f = std::fs::File::open(ns).map_err(|e| format!("the pod's network namespace: {e}"))?;
                nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| format!("joining the pod's network namespace: {e}"))?;
            }
            let attempt = |addr: std::net::SocketAddr| {
                std::net::TcpStream::connect_timeout(&addr, DIAL_TIMEOUT).map_err(|e| e.to_string())
            };
            let v4 = match attempt((std::net::Ipv4Addr::LOCALHOST, port).into()) {
                Ok(s) => return Ok(s),
                Err(e) => e,
            };
            attempt((std::net::Ipv6Addr::LOCALHOST, port).into())
                .map_err(|v6| format!("failed to connect to localhost:{port}: IPv4: {v4}, IPv6: {v6}"))
        })();
        let _ = tx.send(result);
    });
    let stream = rx.await.map_err(|_| "the dialling thread failed".to_string())??;
    stream.set_nonblocking(true).map_err(|e| e.to_string())?;
    TcpStream::from_std(stream).map_err(|e| e.to_string())
}

/// What a connection's forwarding tasks hand to its single writer (which owns the header compressor,
/// so header blocks are compressed in the order they are sent).
#[derive(Debug)]
enum Out {
    /// SYN_REPLY (empty headers) for a stream.
    Reply(u32),
    /// Bytes on a stream (SPDY) or channel (v4).
    Data(u32, Vec<u8>),
    /// Close our half of a stream (SPDY only; at most once, nothing is sent on it afterwards).
    Fin(u32),
    /// RST_STREAM with a status.
    Reset(u32, u32),
    /// Echo a PING.
    Ping(u32),
    /// GOAWAY: last good stream, status.
    GoAway(u32, u32),
}

/// Copy between the target connection and one stream: the target's bytes go out as [`Out::Data`] on
/// `stream`, the peer's bytes (from `inbound`; its end is the peer's FIN) go to the target, whose write
/// half is then shut down. Returns when the target closes its side (or errs), or the writer is gone.
async fn pump(conn: TcpStream, stream: u32, out: &mpsc::Sender<Out>, inbound: &mut mpsc::Receiver<Vec<u8>>) {
    let (mut rd, mut wr) = conn.into_split();
    let up = async {
        while let Some(chunk) = inbound.recv().await {
            if wr.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    };
    let down = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if out.send(Out::Data(stream, buf[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    tokio::pin!(up, down);
    let mut up_done = false;
    loop {
        tokio::select! {
            () = &mut up, if !up_done => up_done = true,
            () = &mut down => return,
        }
    }
}

/// Forward one request: dial `port`, pump it over `data`, then FIN `data` and `error` (SPDY). When the
/// dial fails, the error text goes on `error` first, as upstream's `httpStreamHandler.portForward` writes
/// it.
async fn forward(
    pod: Arc<Pod>,
    port: u16,
    data: u32,
    error: u32,
    out: mpsc::Sender<Out>,
    mut inbound: mpsc::Receiver<Vec<u8>>,
) {
    match dial(port, pod.netns.as_deref()).await {
        Ok(conn) => pump(conn, data, &out, &mut inbound).await,
        Err(e) => {
            let msg = format!(
                "error forwarding port {port} to pod {}, uid {}: {e}",
                pod.name, pod.uid
            );
            tracing::debug!(%msg, "port-forward");
            let _ = out.send(Out::Data(error, msg.into_bytes())).await;
        }
    }
    let _ = out.send(Out::Fin(data)).await;
    let _ = out.send(Out::Fin(error)).await;
}

/// Encode what the tasks hand over as SPDY frames, coalescing what is ready into one binary message.
async fn spdy_writer<O>(mut sink: O, mut rx: mpsc::Receiver<Out>)
where
    O: Sink<Vec<u8>> + Unpin,
{
    let mut z = match HeaderCompressor::new() {
        Ok(z) => z,
        Err(e) => {
            tracing::warn!(error = %e, "port-forward: no header compressor");
            return;
        }
    };
    let mut closed: HashSet<u32> = HashSet::new();
    while let Some(first) = rx.recv().await {
        let mut wire = Vec::new();
        let mut next = Some(first);
        while let Some(out) = next.take() {
            let frame = match out {
                Out::Reply(id) => match z.compress(&[]) {
                    Ok(header_block) => Some(Frame::SynReply {
                        stream_id: id,
                        flags: 0,
                        header_block,
                    }),
                    Err(e) => {
                        tracing::warn!(error = %e, "port-forward: header compression");
                        return;
                    }
                },
                Out::Data(id, data) => (!closed.contains(&id)).then_some(Frame::Data {
                    stream_id: id,
                    flags: 0,
                    data,
                }),
                Out::Fin(id) => closed.insert(id).then_some(Frame::Data {
                    stream_id: id,
                    flags: FLAG_FIN,
                    data: Vec::new(),
                }),
                Out::Reset(id, status) => {
                    closed.insert(id);
                    Some(Frame::RstStream {
                        stream_id: id,
                        status,
                    })
                }
                Out::Ping(id) => Some(Frame::Ping { id }),
                Out::GoAway(last, status) => Some(Frame::GoAway {
                    last_good_stream_id: last,
                    status,
                }),
            };
            if let Some(frame) = frame
                && let Err(e) = frame.encode(&mut wire)
            {
                tracing::warn!(error = %e, "port-forward: frame not encodable");
            }
            if wire.len() < 4 * CHUNK {
                next = rx.try_recv().ok();
            }
        }
        if !wire.is_empty() && sink.send(wire).await.is_err() {
            return;
        }
    }
    let _ = sink.close().await;
}

/// One stream pair of a SPDY connection (upstream `httpStreamPair`), keyed by `requestid`.
#[derive(Debug, Default)]
struct Pair {
    error: Option<u32>,
    data: Option<u32>,
    port: u16,
    /// The peer's data bytes for the running task; `None` before it starts and after the peer's FIN.
    data_tx: Option<mpsc::Sender<Vec<u8>>>,
    /// The peer closed the data stream before the pair was complete.
    data_fin: bool,
    task: Option<JoinHandle<()>>,
}

enum Event {
    /// A pair's forwarding task finished.
    Done(String),
    /// A pair's creation timer fired.
    Timeout(String),
}

/// The state of one SPDY connection's reading side.
struct SpdyConn {
    pod: Arc<Pod>,
    out: mpsc::Sender<Out>,
    events: mpsc::UnboundedSender<Event>,
    headers: HeaderDecompressor,
    pairs: HashMap<String, Pair>,
    streams: HashMap<u32, String>,
    last_stream: u32,
    going_away: bool,
}

impl SpdyConn {
    fn forget(&mut self, request: &str) -> Option<Pair> {
        let pair = self.pairs.remove(request)?;
        for id in [pair.error, pair.data].into_iter().flatten() {
            self.streams.remove(&id);
        }
        Some(pair)
    }

    async fn send(&self, out: Out) -> Result<(), String> {
        self.out
            .send(out)
            .await
            .map_err(|_| "the connection's writer is gone".to_string())
    }

    /// Handle one frame from the client. An error closes the connection.
    async fn on_frame(&mut self, frame: Frame) -> Result<(), String> {
        match frame {
            Frame::SynStream {
                stream_id,
                flags,
                header_block,
                ..
            } => {
                // Decompress even a stream that will be refused: the zlib stream is shared.
                let headers = self
                    .headers
                    .decompress(&header_block)
                    .map_err(|e| e.to_string())?;
                self.last_stream = self.last_stream.max(stream_id);
                if self.going_away || self.streams.contains_key(&stream_id) {
                    return self
                        .send(Out::Reset(stream_id, spdy::status::REFUSED_STREAM))
                        .await;
                }
                self.on_new_stream(stream_id, flags, &headers).await
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                let Some(pair) = self.streams.get(&stream_id).and_then(|r| self.pairs.get_mut(r)) else {
                    return Ok(());
                };
                // The error stream carries nothing from the client (it FINs it at once).
                if pair.data != Some(stream_id) {
                    return Ok(());
                }
                if !data.is_empty() {
                    let gone = match &pair.data_tx {
                        Some(tx) => tx.send(data).await.is_err(),
                        None => false,
                    };
                    if gone {
                        pair.data_tx = None;
                    }
                }
                if flags & FLAG_FIN != 0 {
                    pair.data_tx = None;
                    pair.data_fin = true;
                }
                Ok(())
            }
            Frame::RstStream { stream_id, .. } => {
                // client-go resets the data stream when its side is done (or failed): stop forwarding
                // and end the error stream it is still reading.
                if let Some(request) = self.streams.get(&stream_id).cloned()
                    && let Some(pair) = self.forget(&request)
                {
                    if let Some(task) = pair.task {
                        task.abort();
                    }
                    if let Some(e) = pair.error {
                        self.send(Out::Fin(e)).await?;
                    }
                }
                Ok(())
            }
            // Echo the client's pings (odd ids); an even id would answer a ping of ours.
            Frame::Ping { id } if id % 2 == 1 => self.send(Out::Ping(id)).await,
            Frame::GoAway { .. } => {
                self.going_away = true;
                Ok(())
            }
            // SETTINGS, WINDOW_UPDATE (spdystream enforces no flow control), HEADERS, SYN_REPLY to
            // streams we never open, and unknown control frames are ignored.
            _ => Ok(()),
        }
    }

    /// A new stream (upstream `httpStreamReceived` validation, then `httpStreamHandler.run`).
    async fn on_new_stream(
        &mut self,
        id: u32,
        flags: u8,
        headers: &[(String, String)],
    ) -> Result<(), String> {
        let port_text = spdy::header(headers, "port").unwrap_or("");
        let port = port_text.parse::<u16>().ok().filter(|p| *p > 0);
        let kind = spdy::header(headers, "streamtype").unwrap_or("");
        let (Some(port), "error" | "data") = (port, kind) else {
            tracing::debug!(
                stream = id,
                port = port_text,
                streamtype = kind,
                "port-forward: stream rejected"
            );
            return self.send(Out::Reset(id, spdy::status::CANCEL)).await;
        };
        self.send(Out::Reply(id)).await?;
        // Old clients send no request id: error and data streams then have consecutive odd ids.
        let request = match spdy::header(headers, "requestid") {
            Some(r) => r.to_string(),
            None if kind == "error" => id.to_string(),
            None => id.saturating_sub(2).to_string(),
        };
        if !self.pairs.contains_key(&request) {
            let events = self.events.clone();
            let r = request.clone();
            tokio::spawn(async move {
                tokio::time::sleep(STREAM_CREATION_TIMEOUT).await;
                let _ = events.send(Event::Timeout(r));
            });
        }
        let pair = self.pairs.entry(request.clone()).or_default();
        let slot = if kind == "error" {
            &mut pair.error
        } else {
            &mut pair.data
        };
        if slot.is_some() {
            let msg =
                format!("error processing stream for request {request}: {kind} stream already assigned");
            let error = pair.error;
            if let Some(e) = error {
                self.send(Out::Data(e, msg.into_bytes())).await?;
            }
            return Ok(());
        }
        *slot = Some(id);
        if kind == "data" {
            pair.port = port;
            pair.data_fin = flags & FLAG_FIN != 0;
        }
        self.streams.insert(id, request.clone());
        if let (Some(error), Some(data), None) = (pair.error, pair.data, pair.task.as_ref()) {
            let (tx, rx) = mpsc::channel(16);
            if !pair.data_fin {
                pair.data_tx = Some(tx);
            }
            let (pod, out, events, port) =
                (self.pod.clone(), self.out.clone(), self.events.clone(), pair.port);
            pair.task = Some(tokio::spawn(async move {
                forward(pod, port, data, error, out, rx).await;
                let _ = events.send(Event::Done(request));
            }));
        }
        Ok(())
    }

    async fn on_event(&mut self, event: Event) -> Result<(), String> {
        match event {
            Event::Done(request) => {
                self.forget(&request);
            }
            Event::Timeout(request) => {
                if self.pairs.get(&request).is_some_and(|p| p.task.is_none())
                    && let Some(pair) = self.forget(&request)
                {
                    tracing::debug!(request, "port-forward: timed out waiting for streams");
                    if let Some(e) = pair.error {
                        let msg = format!("(request={request}) timed out waiting for streams");
                        self.send(Out::Data(e, msg.into_bytes())).await?;
                        self.send(Out::Fin(e)).await?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Serve one SPDY/3.1 port-forward connection (the [`SPDY_PROTOCOL`] subprotocol): `incoming` yields the
/// payloads of the client's binary messages (arbitrary pieces of the SPDY byte stream; its end is the
/// connection's end), `outgoing` takes the payloads of the messages to send (whole frames, possibly
/// several per message) and is closed at the end.
///
/// Returns when the client closes the connection or breaks the protocol (a malformed frame or header
/// block; a GOAWAY with PROTOCOL_ERROR is sent then); forwarding still under way is then aborted.
pub async fn serve_spdy<I, O>(mut incoming: I, outgoing: O, pod: Pod)
where
    I: Stream<Item = Vec<u8>> + Unpin,
    O: Sink<Vec<u8>> + Unpin + Send + 'static,
{
    let (out, out_rx) = mpsc::channel(64);
    let writer = tokio::spawn(spdy_writer(outgoing, out_rx));
    let (events, mut events_rx) = mpsc::unbounded_channel();
    let mut conn = SpdyConn {
        pod: Arc::new(pod),
        out,
        events,
        headers: HeaderDecompressor::new(),
        pairs: HashMap::new(),
        streams: HashMap::new(),
        last_stream: 0,
        going_away: false,
    };
    let mut reader = FrameReader::new();
    let failure = 'conn: loop {
        tokio::select! {
            msg = incoming.next() => {
                let Some(bytes) = msg else { break 'conn None };
                reader.push(&bytes);
                loop {
                    match reader.next_frame() {
                        Ok(Some(frame)) => {
                            if let Err(e) = conn.on_frame(frame).await {
                                break 'conn Some(e);
                            }
                        }
                        Ok(None) => break,
                        Err(e) => break 'conn Some(e.to_string()),
                    }
                }
            }
            Some(event) = events_rx.recv() => {
                if let Err(e) = conn.on_event(event).await {
                    break 'conn Some(e);
                }
            }
        }
    };
    if let Some(e) = failure {
        tracing::debug!(error = %e, "port-forward: closing the connection");
        let _ = conn
            .out
            .try_send(Out::GoAway(conn.last_stream, spdy::status::PROTOCOL_ERROR));
    }
    for (_, pair) in conn.pairs.drain() {
        if let Some(task) = pair.task {
            task.abort();
        }
    }
    drop(conn);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
}

/// The ports a v4 request asks for: every `ports` (what kube-rs and the Python client send to the API
/// server) or `port` (what the API server sends upstream's kubelet) query parameter, each a
/// comma-separated list (upstream kubelet `NewV4Options`).
///
/// # Errors
/// Upstream's messages: none given, an empty value, a value that is not a port in 1..=65535; and more than
/// 128 ports (channels are one byte).
pub fn parse_ports(query: &str) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    let mut seen = false;
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k != "ports" && k != "port" {
            continue;
        }
        seen = true;
        let v = v.replace("%2C", ",").replace("%2c", ",");
        if v.is_empty() {
            return Err(format!("query parameter {k:?} cannot be empty"));
        }
        for p in v.split(',') {
            match p.parse::<u16>() {
                Ok(0) => return Err(format!("port {v:?} must be > 0")),
                Ok(port) => ports.push(port),
                Err(e) => return Err(format!("unable to parse {v:?} as a port: {e}")),
            }
        }
    }
    if !seen {
        return Err("query parameter \"port\" is required".into());
    }
    if ports.len() > 128 {
        return Err("at most 128 ports can be forwarded over one connection".into());
    }
    Ok(ports)
}

/// Encode v4 channel messages: `[channel] + bytes` per [`Out::Data`]; the protocol has no per-channel
/// close, so FINs are dropped.
async fn v4_writer<O>(mut sink: O, mut rx: mpsc::Receiver<Out>)
where
    O: Sink<Vec<u8>> + Unpin,
{
    while let Some(out) = rx.recv().await {
        if let Out::Data(channel, data) = out {
            let mut m = Vec::with_capacity(1 + data.len());
            m.push(channel as u8);
            m.extend_from_slice(&data);
            if sink.send(m).await.is_err() {
                return;
            }
        }
    }
    let _ = sink.close().await;
}

/// Serve one v4 channel-protocol connection ([`V4_PROTOCOL`], upstream `handleWebSocketStreams`): for
/// port `i` of `ports`, channel `2i` is data and `2i+1` errors; each starts with the port (u16
/// little-endian), then every port is dialled at once. Messages are `[channel] + payload` both ways.
/// Returns when every port's forwarding has ended (the connection is then closed) or the client closes.
pub async fn serve_v4<I, O>(mut incoming: I, outgoing: O, pod: Pod, ports: Vec<u16>)
where
    I: Stream<Item = Vec<u8>> + Unpin,
    O: Sink<Vec<u8>> + Unpin + Send + 'static,
{
    let (out, out_rx) = mpsc::channel(64);
    let writer = tokio::spawn(v4_writer(outgoing, out_rx));
    let pod = Arc::new(pod);
    let mut inbound = Vec::with_capacity(ports.len());
    let mut tasks = tokio::task::JoinSet::new();
    for (i, port) in ports.iter().enumerate() {
        let (data, error) = (2 * i as u32, 2 * i as u32 + 1);
        for ch in [data, error] {
            if out
                .send(Out::Data(ch, port.to_le_bytes().to_vec()))
                .await
                .is_err()
            {
                return;
            }
        }
        let (tx, rx) = mpsc::channel(16);
        inbound.push(Some(tx));
        tasks.spawn(forward(pod.clone(), *port, data, error, out.clone(), rx));
    }
    drop(out);
    loop {
        tokio::select! {
            msg = incoming.next() => {
                let Some(msg) = msg else { break };
                let Some((&channel, payload)) = msg.split_first() else { continue };
                let slot = (channel % 2 == 0)
                    .then(|| inbound.get_mut(usize::from(channel / 2)))
                    .flatten();
                if let Some(slot) = slot
                    && !payload.is_empty()
                    && let Some(tx) = slot
                    && tx.send(payload.to_vec()).await.is_err()
                {
                    *slot = None;
                }
            }
            done = tasks.join_next() => if done.is_none() { break },
        }
    }
    tasks.abort_all();
    drop(inbound);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
}

/// The directory of pod `ns/name` on this node (`<pods_dir>/<uid>`, whose `pod` file names it).
pub fn pod_dir(pods_dir: &Path, ns: &str, name: &str) -> Option<PathBuf> {
    let want = format!("{ns}/{name}");
    std::fs::read_dir(pods_dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|d| std::fs::read_to_string(d.join("pod")).is_ok_and(|p| p.trim() == want))
}

struct Shared {
    token: String,
    pods_dir: PathBuf,
}

async fn handler(
    axum::extract::State(shared): axum::extract::State<Arc<Shared>>,
    axum::extract::Path((ns, name)): axum::extract::Path<(String, String)>,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    ws: axum::extract::ws::WebSocketUpgrade,
) -> axum::response::Response {
    use axum::extract::ws::Message;
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    if let Some(denied) = crate::kubelet::unauthorized(&headers, &shared.token) {
        return denied;
    }
    let Some(dir) = pod_dir(&shared.pods_dir, &ns, &name) else {
        return (
            StatusCode::NOT_FOUND,
            format!("pod {ns}/{name} not found on this node"),
        )
            .into_response();
    };
    let pod = Pod {
        name: format!("{ns}/{name}"),
        uid: dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        netns: Some(dir.join("netns")).filter(|n| n.exists()),
    };
    let ws = ws.protocols([SPDY_PROTOCOL, V4_PROTOCOL]);
    let spdy = match ws.selected_protocol().and_then(|p| p.to_str().ok()) {
        Some(SPDY_PROTOCOL) => None,
        _ => match parse_ports(uri.query().unwrap_or("")) {
            Ok(ports) => Some(ports),
            Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
        },
    };
    ws.on_upgrade(move |socket| async move {
        let (tx, rx) = socket.split();
        // Binary payloads until the client closes (or the socket fails); pings are answered by the socket.
        let incoming = Box::pin(
            rx.take_while(|m| std::future::ready(matches!(m, Ok(m) if !matches!(m, Message::Close(_)))))
                .filter_map(|m| {
                    std::future::ready(match m {
                        Ok(Message::Binary(b)) => Some(b.to_vec()),
                        _ => None,
                    })
                }),
        );
        let outgoing =
            tx.with(|b: Vec<u8>| std::future::ready(Ok::<_, axum::Error>(Message::Binary(b.into()))));
        match spdy {
            None => serve_spdy(incoming, Box::pin(outgoing), pod).await,
            Some(ports) => serve_v4(incoming, Box::pin(outgoing), pod, ports).await,
        }
    })
}

/// The kubelet API's port-forward route, `GET /portForward/{namespace}/{pod}` with a WebSocket upgrade
/// (subprotocol [`SPDY_PROTOCOL`], else [`V4_PROTOCOL`] with `?ports=`), answering only requests that
/// carry `Authorization: Bearer <token>` (401 otherwise; 404 for a pod that has no directory under
/// `pods_dir`; 400 for bad ports).
pub fn router(token: String, pods_dir: PathBuf) -> axum::Router {
    axum::Router::new()
        .route("/portForward/{ns}/{pod}", axum::routing::any(handler))
        .with_state(Arc::new(Shared { token, pods_dir }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::channel::mpsc as fmpsc;
    use spdy::Headers;

    /// A target that answers each connection with `got:` + everything it read until the client's EOF.
    async fn echo_target() -> u16 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    let _ = c.read_to_end(&mut got).await;
                    let mut answer = b"got:".to_vec();
                    answer.extend_from_slice(&got);
                    let _ = c.write_all(&answer).await;
                });
            }
        });
        port
    }

    async fn closed_port() -> u16 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        l.local_addr().expect("addr").port()
    }

    fn headers(kind: &str, port: u16, request: u32) -> Headers {
        vec![
            ("streamtype".into(), kind.into()),
            ("port".into(), port.to_string()),
            ("requestid".into(), request.to_string()),
        ]
    }

    /// The client side of a SPDY connection, driving [`serve_spdy`] over in-memory message channels.
    struct Client {
        to_server: fmpsc::UnboundedSender<Vec<u8>>,
        from_server: fmpsc::UnboundedReceiver<Vec<u8>>,
        z: HeaderCompressor,
        unz: HeaderDecompressor,
        reader: FrameReader,
    }

    impl Client {
        fn start() -> (Client, JoinHandle<()>) {
            let (to_server, incoming) = fmpsc::unbounded();
            let (outgoing, from_server) = fmpsc::unbounded();
            let pod = Pod {
                name: "ns/p".into(),
                uid: "u-1".into(),
                netns: None,
            };
            let server = tokio::spawn(serve_spdy(incoming, outgoing, pod));
            let client = Client {
                to_server,
                from_server,
                z: HeaderCompressor::new().expect("z"),
                unz: HeaderDecompressor::new(),
                reader: FrameReader::new(),
            };
            (client, server)
        }

        /// Send frames as one byte stream cut into `piece`-byte messages (plus an empty one).
        fn send(&mut self, frames: &[Frame], piece: usize) {
            let mut wire = Vec::new();
            for f in frames {
                f.encode(&mut wire).expect("encode");
            }
            self.to_server.unbounded_send(Vec::new()).expect("send");
            for chunk in wire.chunks(piece) {
                self.to_server.unbounded_send(chunk.to_vec()).expect("send");
            }
        }

        fn syn(&mut self, id: u32, h: &Headers) -> Frame {
            Frame::SynStream {
                stream_id: id,
                associated_id: 0,
                priority: 0,
                slot: 0,
                flags: 0,
                header_block: self.z.compress(h).expect("compress"),
            }
        }

        /// The next frame from the server, its SYN_REPLY header blocks checked to be empty.
        async fn next(&mut self) -> Option<Frame> {
            loop {
                if let Some(f) = self.reader.next_frame().expect("valid frames") {
                    if let Frame::SynReply { header_block, .. } = &f {
                        assert_eq!(self.unz.decompress(header_block).expect("reply headers"), vec![]);
                    }
                    return Some(f);
                }
                let msg = tokio::time::timeout(Duration::from_secs(10), self.from_server.next())
                    .await
                    .expect("server answers in time")?;
                self.reader.push(&msg);
            }
        }
    }

    fn data(id: u32, flags: u8, d: &[u8]) -> Frame {
        Frame::Data {
            stream_id: id,
            flags,
            data: d.to_vec(),
        }
    }

    /// Collect frames until both streams of a request are FIN'd: (data bytes, error bytes, replies seen).
    async fn collect(c: &mut Client, data_id: u32, error_id: u32) -> (Vec<u8>, Vec<u8>, Vec<u32>) {
        let (mut d, mut e, mut replies) = (Vec::new(), Vec::new(), Vec::new());
        let mut fins = HashSet::new();
        while fins.len() < 2 {
            match c.next().await.expect("frame") {
                Frame::SynReply { stream_id, .. } => replies.push(stream_id),
                Frame::Data {
                    stream_id,
                    flags,
                    data,
                } => {
                    assert!(!fins.contains(&stream_id), "data after FIN on {stream_id}");
                    if stream_id == data_id {
                        d.extend_from_slice(&data);
                    } else {
                        assert_eq!(stream_id, error_id);
                        e.extend_from_slice(&data);
                    }
                    if flags & FLAG_FIN != 0 {
                        fins.insert(stream_id);
                    }
                }
                Frame::Ping { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        (d, e, replies)
    }

    #[tokio::test]
    async fn spdy_streams_forward_bytes_and_report_dial_errors() {
        let port = echo_target().await;
        let (mut c, server) = Client::start();
        // As client-go: the error stream, its immediate FIN, the data stream, the payload and its FIN, all
        // split into 1-byte messages; plus a PING.
        let e = c.syn(1, &headers("error", port, 0));
        let d = c.syn(3, &headers("data", port, 0));
        c.send(
            &[
                e,
                data(1, FLAG_FIN, b""),
                Frame::Ping { id: 1 },
                d,
                data(3, 0, b"hel"),
                data(3, FLAG_FIN, b"lo"),
            ],
            1,
        );
        let (got, err, replies) = collect(&mut c, 3, 1).await;
        assert_eq!(got, b"got:hello");
        assert_eq!(err, b"");
        assert_eq!(replies, [1, 3]);

        // A port nothing listens on: the error text on the error stream, then both FINs.
        let dead = closed_port().await;
        let e = c.syn(5, &headers("error", dead, 1));
        let d = c.syn(7, &headers("data", dead, 1));
        c.send(&[e, data(5, FLAG_FIN, b""), d], 3);
        let (got, err, replies) = collect(&mut c, 7, 5).await;
        assert!(got.is_empty());
        let err = String::from_utf8(err).expect("utf8");
        assert!(
            err.starts_with(&format!(
                "error forwarding port {dead} to pod ns/p, uid u-1: failed to connect to localhost:{dead}"
            )),
            "{err}"
        );
        assert!(err.to_lowercase().contains("refused"), "{err}");
        assert_eq!(replies, [5, 7]);

        // Two requests at once, interleaved; the header stream stays in sync across them.
        let frames = vec![
            c.syn(9, &headers("error", port, 2)),
            c.syn(11, &headers("error", port, 3)),
            c.syn(13, &headers("data", port, 3)),
            c.syn(15, &headers("data", port, 2)),
            data(13, FLAG_FIN, b"three"),
            data(15, FLAG_FIN, b"two"),
        ];
        c.send(&frames, 7);
        let mut bodies: HashMap<u32, Vec<u8>> = HashMap::new();
        let mut fins = 0;
        while fins < 4 {
            if let Frame::Data {
                stream_id,
                flags,
                data,
            } = c.next().await.expect("frame")
            {
                bodies.entry(stream_id).or_default().extend_from_slice(&data);
                fins += usize::from(flags & FLAG_FIN != 0);
            }
        }
        assert_eq!(bodies[&13], b"got:three");
        assert_eq!(bodies[&15], b"got:two");

        // A large payload both ways: many frames up (through the bounded queue to the target), the echo
        // back in CHUNK-sized frames coalesced into messages.
        let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut frames = vec![
            c.syn(19, &headers("error", port, 4)),
            data(19, FLAG_FIN, b""),
            c.syn(21, &headers("data", port, 4)),
        ];
        frames.extend(big.chunks(4000).map(|piece| data(21, 0, piece)));
        frames.push(data(21, FLAG_FIN, b""));
        c.send(&frames, 65536);
        let (got, err, _) = collect(&mut c, 21, 19).await;
        assert_eq!(err, b"");
        assert_eq!(got.len(), 4 + big.len());
        assert!(got[4..] == big[..], "echoed bytes differ");

        // A stream without a port is reset, not replied to.
        let bad = c.syn(23, &vec![("streamtype".into(), "data".into())]);
        c.send(&[bad], 100);
        assert_eq!(
            c.next().await,
            Some(Frame::RstStream {
                stream_id: 23,
                status: spdy::status::CANCEL
            })
        );

        // Closing the client side ends the server and closes its side.
        c.to_server.close_channel();
        server.await.expect("server");
        assert_eq!(c.next().await, None, "frames after close");
    }

    #[tokio::test]
    async fn a_reset_data_stream_ends_the_request_and_its_error_stream() {
        // A target that never closes: only the client's RST ends the request.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        let (accepted_tx, mut accepted) = mpsc::channel(1);
        tokio::spawn(async move {
            let (mut conn, _) = l.accept().await.expect("accept");
            let mut buf = [0u8; 16];
            let n = conn.read(&mut buf).await.expect("read");
            let _ = accepted_tx.send(buf[..n].to_vec()).await;
            // Waits for the agent to drop the connection.
            let rest = conn.read(&mut buf).await;
            let _ = accepted_tx.send(vec![rest.map_or(255, |n| n as u8)]).await;
        });
        let (mut c, _server) = Client::start();
        let e = c.syn(1, &headers("error", port, 0));
        let d = c.syn(3, &headers("data", port, 0));
        c.send(&[e, d, data(3, 0, b"ping")], 5);
        assert_eq!(accepted.recv().await.expect("target got data"), b"ping");
        c.send(
            &[Frame::RstStream {
                stream_id: 3,
                status: spdy::status::CANCEL,
            }],
            1,
        );
        // The error stream is FIN'd ...
        loop {
            match c.next().await.expect("frame") {
                Frame::Data {
                    stream_id: 1,
                    flags: FLAG_FIN,
                    ..
                } => break,
                Frame::SynReply { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        // ... and the target's connection dropped (EOF).
        assert_eq!(accepted.recv().await.expect("target closed"), [0]);
    }

    #[tokio::test]
    async fn malformed_frames_close_the_connection_with_goaway() {
        let (mut c, server) = Client::start();
        c.to_server
            .unbounded_send(vec![0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1])
            .expect("send");
        assert_eq!(
            c.next().await,
            Some(Frame::GoAway {
                last_good_stream_id: 0,
                status: spdy::status::PROTOCOL_ERROR
            })
        );
        server.await.expect("server");
        assert_eq!(c.next().await, None);
        // A SYN_STREAM whose header block is not zlib is as fatal.
        let (mut c, server) = Client::start();
        c.send(
            &[Frame::SynStream {
                stream_id: 1,
                associated_id: 0,
                priority: 0,
                slot: 0,
                flags: 0,
                header_block: b"garbage".to_vec(),
            }],
            4,
        );
        assert!(matches!(c.next().await, Some(Frame::GoAway { .. })));
        server.await.expect("server");
    }

    #[test]
    fn ports_are_parsed_as_upstream_does() {
        assert_eq!(parse_ports("ports=80"), Ok(vec![80]));
        assert_eq!(parse_ports("&ports=80,81&ports=82"), Ok(vec![80, 81, 82]));
        assert_eq!(parse_ports("port=8080%2C9090"), Ok(vec![8080, 9090]));
        assert!(parse_ports("").is_err());
        assert!(parse_ports("ports=").is_err());
        assert!(parse_ports("ports=0").is_err());
        assert!(parse_ports("ports=70000").is_err());
        assert!(parse_ports("ports=http").is_err());
    }

    #[tokio::test]
    async fn v4_channels_carry_the_port_then_data_and_errors() {
        let port = echo_target().await;
        let dead = closed_port().await;
        let (to_server, incoming) = fmpsc::unbounded::<Vec<u8>>();
        let (outgoing, mut from_server) = fmpsc::unbounded::<Vec<u8>>();
        let pod = Pod {
            name: "ns/p".into(),
            uid: "u".into(),
            netns: None,
        };
        let server = tokio::spawn(serve_v4(incoming, outgoing, pod, vec![port, dead]));
        let mut by_channel: HashMap<u8, Vec<Vec<u8>>> = HashMap::new();
        let mut sent = false;
        while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(10), from_server.next()).await {
            let (ch, rest) = m.split_first().expect("channel byte");
            by_channel.entry(*ch).or_default().push(rest.to_vec());
            if !sent && by_channel.get(&0).is_some_and(|v| !v.is_empty()) {
                // The echo target answers at EOF, which v4 cannot signal: it only sees our bytes.
                to_server.unbounded_send(b"\x00hi".to_vec()).expect("send");
                sent = true;
            }
            if by_channel.get(&3).is_some_and(|v| v.len() == 2) {
                break;
            }
        }
        assert_eq!(by_channel[&0][0], port.to_le_bytes());
        assert_eq!(by_channel[&1][0], port.to_le_bytes());
        assert_eq!(by_channel[&2][0], dead.to_le_bytes());
        assert_eq!(by_channel[&3][0], dead.to_le_bytes());
        let err = String::from_utf8(by_channel[&3][1].clone()).expect("utf8");
        assert!(
            err.starts_with(&format!("error forwarding port {dead} to pod ns/p, uid u:")),
            "{err}"
        );
        drop(to_server);
        server.await.expect("server ends when the client closes");
    }
}
