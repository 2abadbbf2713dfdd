//! The agent's kubelet API, which the API server calls for `pods/log` (upstream kubelet server
//! `/containerLogs/{namespace}/{pod}/{container}`, `pkg/kubelet/server`): container logs read from the
//! CRI log files the shims write, with `follow`, `previous`, `tailLines`, `sinceSeconds`, `timestamps`
//! and `limitBytes` as `kubectl logs` sends them.
//!
//! It listens on the node's address at a port chosen by the OS (published in the Node's
//! `status.daemonEndpoints.kubeletEndpoint.Port`) and answers only requests carrying the bearer token the
//! server gave it (the agent and the API server share it; nothing else can read logs).

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// `kubectl logs` options (upstream `PodLogOptions`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LogOptions {
    /// Keep streaming until the container's run ends.
    #[serde(default)]
    pub follow: bool,
    /// The previous run's log.
    #[serde(default)]
    pub previous: bool,
    /// Only the last N lines.
    pub tail_lines: Option<usize>,
    /// Only lines newer than this many seconds.
    pub since_seconds: Option<i64>,
    /// Prefix each line with its RFC 3339 time.
    #[serde(default)]
    pub timestamps: bool,
    /// Stop after this many bytes.
    pub limit_bytes: Option<usize>,
}

/// One record of a CRI log file.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// When it was written.
    pub time: Option<jiff::Timestamp>,
    /// RFC 3339 text of `time`, as written.
    pub time_text: String,
    /// The text, partial records joined, without the newline.
    pub text: Vec<u8>,
}

/// Parse CRI log lines (`<time> <stream> <F|P> <text>`); partial (`P`) records are joined with the next.
/// Lines that are not CRI records (a shim's own message) are kept as text.
pub fn parse(content: &[u8]) -> Vec<Record> {
    let mut out = Vec::new();
    let mut partial: Option<Record> = None;
    for line in content.split(|b| *b == b'\n') {
        if line.is_empty() {
            continue;
        }
        let mut parts = line.splitn(4, |b| *b == b' ');
        let (ts, stream, tag, text) = (parts.next(), parts.next(), parts.next(), parts.next());
        let time = ts
            .and_then(|t| std::str::from_utf8(t).ok())
            .and_then(|t| t.parse::<jiff::Timestamp>().ok());
        match (time, stream, tag, text) {
            (Some(time), Some(b"stdout" | b"stderr"), Some(tag @ (b"F" | b"P")), text) => {
                let rec = partial.get_or_insert_with(|| Record {
                    time: Some(time),
                    time_text: String::from_utf8_lossy(ts.unwrap_or_default()).into_owned(),
                    text: Vec::new(),
                });
                rec.text.extend_from_slice(text.unwrap_or_default());
                if tag == b"F"
                    && let Some(r) = partial.take()
                {
                    out.push(r);
                }
            }
            _ => out.push(Record {
                time: None,
                time_text: String::new(),
                text: line.to_vec(),
            }),
        }
    }
    out.extend(partial);
    out
}

/// Render records as `kubectl logs` prints them, after `sinceSeconds` (relative to `now`) and `tailLines`.
pub fn render(records: &[Record], opts: &LogOptions, now: jiff::Timestamp) -> Vec<u8> {
    let since = opts
        .since_seconds
        .map(|s| now - jiff::SignedDuration::from_secs(s.max(0)));
    let kept: Vec<&Record> = records
        .iter()
        .filter(|r| since.is_none_or(|s| r.time.is_none_or(|t| t >= s)))
        .collect();
    let start = opts.tail_lines.map_or(0, |n| kept.len().saturating_sub(n));
    let mut out = Vec::new();
    for r in &kept[start..] {
        if opts.timestamps {
            out.extend_from_slice(r.time_text.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(&r.text);
        out.push(b'\n');
    }
    if let Some(limit) = opts.limit_bytes {
        out.truncate(limit);
    }
    out
}

struct Shared {
    token: String,
    pods_dir: PathBuf,
    berth: PathBuf,
}

/// The container directory of `container` in pod `ns/name` on this node.
fn container_dir(pods_dir: &Path, ns: &str, name: &str, container: &str) -> Option<PathBuf> {
    let want = format!("{ns}/{name}");
    for e in std::fs::read_dir(pods_dir).ok()?.flatten() {
        if std::fs::read_to_string(e.path().join("pod")).is_ok_and(|p| p.trim() == want) {
            for sub in ["containers", "init"] {
                let d = e.path().join(sub).join(container);
                if d.is_dir() {
                    return Some(d);
                }
            }
        }
    }
    None
}

async fn container_logs(
    State(shared): State<Arc<Shared>>,
    UrlPath((ns, pod, container)): UrlPath<(String, String, String)>,
    Query(opts): Query<LogOptions>,
    headers: HeaderMap,
) -> Response {
    if let Some(denied) = unauthorized(&headers, &shared.token) {
        return denied;
    }
    let Some(dir) = container_dir(&shared.pods_dir, &ns, &pod, &container) else {
        return (
            StatusCode::NOT_FOUND,
            format!("container {container:?} in pod {pod:?} is waiting to start: no log yet"),
        )
            .into_response();
    };
    let file = dir.join(if opts.previous { "previous.log" } else { "log" });
    let Ok(content) = tokio::fs::read(&file).await else {
        let msg = if opts.previous {
            format!("previous terminated container {container:?} in pod {pod:?} not found")
        } else {
            format!("container {container:?} in pod {pod:?} has no log yet")
        };
        return (StatusCode::NOT_FOUND, msg).into_response();
    };
    let first = render(&parse(&content), &opts, jiff::Timestamp::now());
    if !opts.follow || opts.previous {
        return (StatusCode::OK, first).into_response();
    }
    // Follow: what is there, then what is appended, until this run of the container ends.
    let stream = futures::stream::unfold(
        (Some(first), content.len(), dir, file, opts),
        |(pending, offset, dir, file, opts)| async move {
            if let Some(p) = pending {
                return Some((Ok::<_, std::io::Error>(p), (None, offset, dir, file, opts)));
            }
            loop {
                let content = tokio::fs::read(&file).await.ok()?;
                if content.len() > offset {
                    // Only complete lines; a line still being written waits for its newline.
                    let end = content[offset..]
                        .iter()
                        .rposition(|b| *b == b'\n')
                        .map(|i| offset + i + 1);
                    if let Some(end) = end {
                        let opts_all = LogOptions {
                            tail_lines: None,
                            since_seconds: None,
                            limit_bytes: None,
                            ..opts.clone()
                        };
                        let chunk = render(&parse(&content[offset..end]), &opts_all, jiff::Timestamp::now());
                        return Some((Ok(chunk), (None, end, dir, file, opts)));
                    }
                }
                if dir.join("exit").exists() || content.len() < offset {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        },
    );
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/plain")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// `kubectl exec` parameters (upstream `PodExecOptions`; `command` repeats).
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// argv.
    pub command: Vec<String>,
    /// Attach stdin.
    pub stdin: bool,
    /// Run the command on a pseudo-terminal (stdout and stderr merged on channel 1; channel 4 resizes).
    pub tty: bool,
}

impl ExecOptions {
    fn from_query(q: &str) -> Self {
        let mut o = ExecOptions::default();
        for pair in q.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v);
            match k {
                "command" => o.command.push(v),
                "stdin" => o.stdin = v == "true" || v == "1",
                "tty" => o.tty = v == "true" || v == "1",
                _ => {}
            }
        }
        o
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = (b[i] == b'%' && i + 3 <= b.len())
            .then(|| {
                std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .flatten();
        match (b[i], hex) {
            (_, Some(c)) => {
                out.push(c);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (c, None) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The final status on the error channel (channel 3), as the kubelet's remotecommand server writes it.
pub fn exit_status(code: i32, command: &[String]) -> String {
    if code == 0 {
        return r#"{"metadata":{},"status":"Success"}"#.to_string();
    }
    serde_json::json!({"metadata": {}, "status": "Failure",
        "message": format!("command terminated with non-zero exit code: error executing command [{}], exit code {code}", command.join(" ")),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}})
    .to_string()
}

async fn exec(
    State(shared): State<Arc<Shared>>,
    UrlPath((ns, pod, container)): UrlPath<(String, String, String)>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    ws: axum::extract::ws::WebSocketUpgrade,
) -> Response {
    if let Some(denied) = unauthorized(&headers, &shared.token) {
        return denied;
    }
    let Some(dir) = container_dir(&shared.pods_dir, &ns, &pod, &container) else {
        return (
            StatusCode::NOT_FOUND,
            format!("container {container:?} not found in pod {pod:?}"),
        )
            .into_response();
    };
    let opts = ExecOptions::from_query(uri.query().unwrap_or(""));
    let berth = shared.berth.clone();
    ws.protocols(["v5.channel.k8s.io", "v4.channel.k8s.io"])
        .on_upgrade(move |socket| async move {
            if opts.tty {
                run_exec_tty(socket, berth, dir, opts).await;
            } else {
                run_exec(socket, berth, dir, opts).await;
            }
        })
}

/// `None` when `headers` carry the kubelet bearer `token`, else the 401 to answer.
pub(crate) fn unauthorized(headers: &HeaderMap, token: &str) -> Option<Response> {
    let ok = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == token);
    (!ok).then(|| (StatusCode::UNAUTHORIZED, "Unauthorized").into_response())
}

/// End a channel-protocol stream: the final `status` (a `metav1.Status` JSON) on channel 3, then a normal
/// closure (1000); client-go reads the error channel until the stream ends cleanly.
async fn finish<S>(tx: &mut S, status: &str)
where
    S: futures::Sink<axum::extract::ws::Message> + Unpin,
{
    use futures::SinkExt;
    let mut m = vec![3u8];
    m.extend_from_slice(status.as_bytes());
    let _ = tx.send(axum::extract::ws::Message::Binary(m.into())).await;
    let _ = tx
        .send(axum::extract::ws::Message::Close(Some(
            axum::extract::ws::CloseFrame {
                code: 1000,
                reason: "".into(),
            },
        )))
        .await;
}

/// The bytes of a channel-protocol frame: a binary message's, or a text message's (the Python client
/// writes `str` data as text frames, `"\x00" + data`). Upstream's `wsstream` reads both kinds alike
/// (`websocket.Message.Receive` into a `[]byte`); `None` for control messages and empty frames.
fn channel_frame(msg: &axum::extract::ws::Message) -> Option<&[u8]> {
    use axum::extract::ws::Message;
    let b: &[u8] = match msg {
        Message::Binary(b) => b,
        Message::Text(t) => t.as_str().as_bytes(),
        _ => return None,
    };
    (!b.is_empty()).then_some(b)
}

/// Run the command in the container and carry its stdio over the channel protocol (one leading byte per
/// binary message: 0 stdin, 1 stdout, 2 stderr, 3 the final status; v5's 255 closes a stream).
async fn run_exec(socket: axum::extract::ws::WebSocket, berth: PathBuf, dir: PathBuf, opts: ExecOptions) {
    use axum::extract::ws::Message;
    use futures::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut tx, mut rx) = socket.split();
    let mut cmd = tokio::process::Command::new(&berth);
    cmd.arg("container-exec")
        .arg(&dir)
        .arg("--")
        .args(&opts.command)
        .stdin(if opts.stdin {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let mut m = vec![3u8];
            m.extend_from_slice(
                exit_status(126, &opts.command)
                    .replace("error executing", &format!("{e}: error executing"))
                    .as_bytes(),
            );
            let _ = tx.send(Message::Binary(m.into())).await;
            return;
        }
    };
    let mut stdin = child.stdin.take();
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<(u8, Vec<u8>)>(64);
    for (ch, mut reader) in [
        (
            1u8,
            Box::new(child.stdout.take().expect("piped")) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
        ),
        (2u8, Box::new(child.stderr.take().expect("piped"))),
    ] {
        let out_tx = out_tx.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            while let Ok(n) = reader.read(&mut buf).await {
                if n == 0 || out_tx.send((ch, buf[..n].to_vec())).await.is_err() {
                    break;
                }
            }
        });
    }
    drop(out_tx);
    let mut outputs_open = true;
    let mut client_open = true;
    let status = loop {
        tokio::select! {
            out = out_rx.recv(), if outputs_open => match out {
                Some((ch, data)) => {
                    let mut m = vec![ch];
                    m.extend_from_slice(&data);
                    if client_open && tx.send(Message::Binary(m.into())).await.is_err() {
                        stdin = None;
                        client_open = false;
                    }
                }
                None => outputs_open = false,
            },
            msg = rx.next(), if client_open => match msg {
                Some(Ok(m)) if channel_frame(&m).is_some() => {
                    let b = channel_frame(&m).unwrap_or_default();
                    match b[0] {
                        0 => {
                            if let Some(s) = stdin.as_mut()
                                && (s.write_all(&b[1..]).await.is_err() || s.flush().await.is_err())
                            {
                                stdin = None;
                            }
                        }
                        255 if b.get(1) == Some(&0) => stdin = None,
                        _ => {}
                    }
                }
                // The client went away (v4 has no close frame for stdin: closing the stream is how a
                // client ends its input): the command's stdin reaches end of file, as upstream's
                // kubelet closes the stream's pipe, and the command runs to its end unobserved.
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    stdin = None;
                    client_open = false;
                }
                Some(Ok(_)) => {}
            },
            st = child.wait(), if !outputs_open => break st.ok(),
        }
    };
    let Some(status) = status.filter(|_| client_open) else {
        return;
    };
    finish(&mut tx, &exit_status(status.code().unwrap_or(137), &opts.command)).await;
}

/// `kubectl exec -t`: the command runs on a pseudo-terminal allocated here (its slave becomes the
/// command's controlling terminal in `berth container-exec --tty`); the master's output goes out on
/// channel 1, channel 0 is typed input and channel 4 a resize (`{"Width":W,"Height":H}`, upstream
/// `remotecommand.TerminalSize`), applied with TIOCSWINSZ. Ends with the status on channel 3, as without a
/// TTY.
async fn run_exec_tty(socket: axum::extract::ws::WebSocket, berth: PathBuf, dir: PathBuf, opts: ExecOptions) {
    use axum::extract::ws::Message;
    use futures::{SinkExt, StreamExt};
    use std::io::{Read, Write};
    let (mut tx, mut rx) = socket.split();
    let fail = |e: String| {
        let mut m = vec![3u8];
        m.extend_from_slice(
            exit_status(126, &opts.command)
                .replace("error executing", &format!("{e}: error executing"))
                .as_bytes(),
        );
        m
    };
    let spawned = (|| {
        let pty = nix::pty::openpty(None, None).map_err(|e| format!("allocating a terminal: {e}"))?;
        crate::stdio::cloexec(&pty.master).map_err(|e| e.to_string())?;
        crate::stdio::cloexec(&pty.slave).map_err(|e| e.to_string())?;
        let slave = std::fs::File::from(pty.slave);
        let (out, err) = (
            slave.try_clone().map_err(|e| e.to_string())?,
            slave.try_clone().map_err(|e| e.to_string())?,
        );
        let child = tokio::process::Command::new(&berth)
            .arg("container-exec")
            .arg("--tty")
            .arg(&dir)
            .arg("--")
            .args(&opts.command)
            .stdin(slave)
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| e.to_string())?;
        // (The Command and with it our copies of the slave are dropped here: the master then reads EIO
        // once the command and everything it started have closed the terminal.)
        Ok::<_, String>((child, std::fs::File::from(pty.master)))
    })();
    let (mut child, master) = match spawned {
        Ok(x) => x,
        Err(e) => {
            let _ = tx.send(Message::Binary(fail(e).into())).await;
            return;
        }
    };
    let (Ok(mut reader), Ok(mut writer)) = (master.try_clone(), master.try_clone()) else {
        let _ = tx.send(Message::Binary(fail("terminal".into()).into())).await;
        return;
    };
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; 32 * 1024];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 || out_tx.blocking_send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let (in_tx, mut in_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
    tokio::task::spawn_blocking(move || {
        while let Some(data) = in_rx.blocking_recv() {
            if writer.write_all(&data).is_err() {
                break;
            }
        }
    });
    let mut output_open = true;
    let status = loop {
        tokio::select! {
            out = out_rx.recv(), if output_open => match out {
                Some(data) => {
                    let mut m = vec![1u8];
                    m.extend_from_slice(&data);
                    if tx.send(Message::Binary(m.into())).await.is_err() {
                        break None;
                    }
                }
                None => output_open = false,
            },
            msg = rx.next() => match msg {
                Some(Ok(m)) if channel_frame(&m).is_some() => {
                    let b = channel_frame(&m).unwrap_or_default();
                    match b[0] {
                    0 if opts.stdin => {
                        let _ = in_tx.send(b[1..].to_vec()).await;
                    }
                    4 => {
                        if let Ok(size) = serde_json::from_slice::<TerminalSize>(&b[1..]) {
                            let _ = rustix::termios::tcsetwinsize(
                                &master,
                                rustix::termios::Winsize {
                                    ws_row: size.height,
                                    ws_col: size.width,
                                    ws_xpixel: 0,
                                    ws_ypixel: 0,
                                },
                            );
                        }
                    }
                    _ => {}
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break None,
                Some(Ok(_)) => {}
            },
            st = child.wait(), if !output_open => break st.ok(),
        }
    };
    let Some(status) = status else { return };
    finish(&mut tx, &exit_status(status.code().unwrap_or(137), &opts.command)).await;
}

/// `kubectl attach` (upstream kubelet `/attach/{namespace}/{pod}/{container}`): the running container's
/// output from now on (channel 1), typed input to its stdin (channel 0, when the container has
/// `stdin: true` and the client asked for `stdin`), resizes of its terminal (channel 4), through the
/// container shim's attach socket ([`crate::stdio`]). Ends with a Success status when the container's
/// output ends.
async fn attach(
    State(shared): State<Arc<Shared>>,
    UrlPath((ns, pod, container)): UrlPath<(String, String, String)>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    ws: axum::extract::ws::WebSocketUpgrade,
) -> Response {
    if let Some(denied) = unauthorized(&headers, &shared.token) {
        return denied;
    }
    let sock = container_dir(&shared.pods_dir, &ns, &pod, &container).map(|d| d.join("attach.sock"));
    let Some(sock) = sock.filter(|s| s.exists()) else {
        return (
            StatusCode::BAD_REQUEST,
            format!("container {container} in pod {pod} is not running"),
        )
            .into_response();
    };
    let opts = ExecOptions::from_query(uri.query().unwrap_or(""));
    ws.protocols(["v5.channel.k8s.io", "v4.channel.k8s.io"])
        .on_upgrade(move |socket| run_attach(socket, sock, opts))
}

async fn run_attach(socket: axum::extract::ws::WebSocket, sock: PathBuf, opts: ExecOptions) {
    use crate::stdio::{FRAME_CLOSE_STDIN, FRAME_RESIZE, FRAME_STDIN, frame};
    use axum::extract::ws::Message;
    use futures::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut tx, mut rx) = socket.split();
    let stream = match tokio::net::UnixStream::connect(&sock).await {
        Ok(s) => s,
        Err(e) => {
            let status = serde_json::json!({"metadata": {}, "status": "Failure",
                "message": format!("attaching to the container: {e}")});
            let mut m = vec![3u8];
            m.extend_from_slice(status.to_string().as_bytes());
            let _ = tx.send(Message::Binary(m.into())).await;
            return;
        }
    };
    let (mut from_shim, mut to_shim) = stream.into_split();
    let mut buf = vec![0u8; 32 * 1024];
    let ended = loop {
        tokio::select! {
            n = from_shim.read(&mut buf) => match n {
                Ok(0) | Err(_) => break true,
                Ok(n) => {
                    let mut m = vec![1u8];
                    m.extend_from_slice(&buf[..n]);
                    if tx.send(Message::Binary(m.into())).await.is_err() {
                        break false;
                    }
                }
            },
            msg = rx.next() => match msg {
                Some(Ok(m)) if channel_frame(&m).is_some() => {
                    let b = channel_frame(&m).unwrap_or_default();
                    let f = match b[0] {
                        0 if opts.stdin => Some(frame(FRAME_STDIN, &b[1..])),
                        4 => serde_json::from_slice::<TerminalSize>(&b[1..])
                            .ok()
                            .map(|t| frame(FRAME_RESIZE, format!("{} {}", t.width, t.height).as_bytes())),
                        255 if b.get(1) == Some(&0) => Some(frame(FRAME_CLOSE_STDIN, b"")),
                        _ => None,
                    };
                    if let Some(f) = f
                        && to_shim.write_all(&f).await.is_err()
                    {
                        break true;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break false,
                Some(Ok(_)) => {}
            },
        }
    };
    if ended {
        finish(&mut tx, &exit_status(0, &[])).await;
    }
}

/// A terminal size as the client sends it on channel 4 (upstream `remotecommand.TerminalSize`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TerminalSize {
    width: u16,
    height: u16,
}

/// Bind the kubelet API on `ip` (port chosen by the OS); returns the port and the serving future.
///
/// # Errors
/// When the socket cannot be bound.
pub async fn bind(
    ip: std::net::IpAddr,
    token: String,
    data_dir: &Path,
) -> std::io::Result<(u16, impl std::future::Future<Output = ()> + use<>)> {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await?;
    let port = listener.local_addr()?.port();
    let port_forward = crate::portforward::router(token.clone(), data_dir.join("agent/pods"));
    let shared = Arc::new(Shared {
        token,
        pods_dir: data_dir.join("agent/pods"),
        berth: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("berth")),
    });
    let app = axum::Router::new()
        .route(
            "/containerLogs/{ns}/{pod}/{container}",
            axum::routing::get(container_logs),
        )
        .route("/exec/{ns}/{pod}/{container}", axum::routing::any(exec))
        .route("/attach/{ns}/{pod}/{container}", axum::routing::any(attach))
        .with_state(shared)
        .merge(port_forward);
    Ok((port, async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "kubelet API stopped");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &[u8] = b"2026-01-01T00:00:01Z stdout F one\n2026-01-01T00:00:02Z stderr P tw\n2026-01-01T00:00:02Z stderr F o\nberth: container init: exec foo: not found\n2026-01-01T00:00:05Z stdout F three\n";

    #[test]
    fn exec_query_and_final_status_follow_the_protocol() {
        let o = ExecOptions::from_query(
            "command=sh&command=-c&command=echo%20a%2Bb&stdin=true&stdout=true&tty=false&container=c",
        );
        assert_eq!(o.command, ["sh", "-c", "echo a+b"]);
        assert!(o.stdin && !o.tty);
        assert_eq!(exit_status(0, &[]), r#"{"metadata":{},"status":"Success"}"#);
        let st: serde_json::Value =
            serde_json::from_str(&exit_status(3, &["false".to_string()])).expect("json");
        assert_eq!(st["reason"], "NonZeroExitCode");
        assert_eq!(st["details"]["causes"][0]["message"], "3");
    }

    #[test]
    fn cri_lines_join_partials_and_render_with_tail_since_timestamps_and_limit() {
        let recs = parse(LOG);
        assert_eq!(recs.len(), 4);
        assert_eq!(recs[1].text, b"two");
        let now: jiff::Timestamp = "2026-01-01T00:00:06Z".parse().expect("ts");
        let all = render(&recs, &LogOptions::default(), now);
        assert_eq!(
            all,
            b"one\ntwo\nberth: container init: exec foo: not found\nthree\n"
        );
        let tail = render(
            &recs,
            &LogOptions {
                tail_lines: Some(1),
                timestamps: true,
                ..LogOptions::default()
            },
            now,
        );
        assert_eq!(tail, b"2026-01-01T00:00:05Z three\n");
        let since = render(
            &recs,
            &LogOptions {
                since_seconds: Some(3),
                ..LogOptions::default()
            },
            now,
        );
        assert_eq!(since, b"berth: container init: exec foo: not found\nthree\n");
        let limited = render(
            &recs,
            &LogOptions {
                limit_bytes: Some(5),
                ..LogOptions::default()
            },
            now,
        );
        assert_eq!(limited, b"one\nt");
    }
}
