//! `kubectl port-forward` end to end (kubectl-compat.md §7.2): the real kubectl 1.32 opens
//! `pods/portforward` with the `SPDY/3.1+portforward.k8s.io` WebSocket subprotocol; the API server
//! splices it to the agent's kubelet API, which speaks SPDY/3.1 inside the WebSocket and dials the pod's
//! port. A busybox httpd in a real pod serves a page; plain TCP clients on loopback fetch it through
//! kubectl's local port, one after another and concurrently; a port nothing listens on yields kubectl's
//! per-connection error. Needs root and `/usr/bin/busybox` (skipped otherwise unless `BERTH_TEST_ROOT=1`).

mod common;

use common::eventually;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const BODY: &str = "hello through port-forward";

/// A loopback port free right now (the OS picks it; the listener is closed at once).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// `GET /index.html` over HTTP/1.0 through `port`; returns the whole answer (busybox httpd closes after
/// one response).
fn fetch(port: u16) -> std::io::Result<String> {
    fetch_path(port, "/index.html")
}

fn fetch_path(port: u16, path: &str) -> std::io::Result<String> {
    let mut c = TcpStream::connect(("127.0.0.1", port))?;
    request_path(&mut c, path)?;
    read_all(c)
}

fn request(c: &mut TcpStream) -> std::io::Result<()> {
    request_path(c, "/index.html")
}

fn request_path(c: &mut TcpStream, path: &str) -> std::io::Result<()> {
    c.set_read_timeout(Some(Duration::from_secs(30)))?;
    c.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
}

fn read_all(mut c: TcpStream) -> std::io::Result<String> {
    let mut s = String::new();
    c.read_to_string(&mut s)?;
    Ok(s)
}

#[track_caller]
fn assert_page(answer: &str) {
    assert!(answer.starts_with("HTTP/1."), "not an HTTP answer: {answer:?}");
    assert!(answer.contains(" 200 "), "not 200: {answer:?}");
    assert!(answer.ends_with(&format!("{BODY}\n")), "wrong body: {answer:?}");
}

/// A running `kubectl port-forward`, its stdout lines on a channel and its stderr collected.
struct PortForward {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl PortForward {
    fn start(s: &common::Server, args: &[&str]) -> PortForward {
        let mut child = s
            .kubectl_cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kubectl port-forward");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let err = child.stderr.take().expect("stderr");
        let collected = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if let Ok(mut s) = collected.lock() {
                    s.push_str(&line);
                    s.push('\n');
                }
            }
        });
        PortForward { child, lines, stderr }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Wait for the stdout line containing `needle`.
    fn wait_line(&mut self, needle: &str) -> String {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(30)) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => panic!(
                    "no {needle:?} line from kubectl port-forward ({e}); exited: {:?}; stderr: {}",
                    self.child.try_wait(),
                    self.stderr()
                ),
            }
        }
    }

    #[track_caller]
    fn assert_running(&mut self) {
        assert!(
            matches!(self.child.try_wait(), Ok(None)),
            "kubectl port-forward exited: {:?}; stderr: {}",
            self.child.try_wait(),
            self.stderr()
        );
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run pod `web`: busybox httpd serving [`BODY`] at `/index.html` and 1 MiB of 64-byte lines at `/big`
/// on `port`, and wait until it is Ready
/// (a tcpSocket probe). Pods share the node's network namespace for now, so `port` must be free here.
fn run_httpd(s: &common::Server, port: u16) {
    s.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: web}}
spec:
  containers:
  - name: httpd
    image: busybox:test
    command: ["/bin/sh", "-c"]
    args:
    - |
      mkdir -p /www
      echo "{BODY}" > /www/index.html
      echo 0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ- > /www/big
      i=0
      while test $i -lt 14; do cat /www/big /www/big > /www/tmp; cat /www/tmp > /www/big; i=$((i+1)); done
      exec /bin/httpd -f -p {port} -h /www
    readinessProbe:
      tcpSocket: {{port: {port}}}
      periodSeconds: 1
"#
    ));
    eventually(90, "pod web Ready", || {
        let out = s.kubectl(&[
            "get",
            "pod",
            "web",
            "-o",
            "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
        ]);
        (String::from_utf8_lossy(&out.stdout) == "True").then_some(())
    });
}

#[test]
fn kubectl_port_forward_reaches_a_pod_port() {
    if !common::can_run_containers() {
        return;
    }
    let s = common::server_with_busybox("node");
    let (pod_port, dead_port) = (free_port(), free_port());
    run_httpd(&s, pod_port);

    let (local, local_dead) = (free_port(), free_port());
    let mut pf = PortForward::start(
        &s,
        &[
            "port-forward",
            "pod/web",
            &format!("{local}:{pod_port}"),
            &format!("{local_dead}:{dead_port}"),
        ],
    );
    let line = pf.wait_line(&format!("Forwarding from 127.0.0.1:{local} -> {pod_port}"));
    assert!(line.starts_with("Forwarding from"), "{line}");
    pf.wait_line(&format!("Forwarding from 127.0.0.1:{local_dead} -> {dead_port}"));

    // Several connections one after another (each one a pair of SPDY streams on the same WebSocket).
    for i in 0..5 {
        let answer = fetch(local).unwrap_or_else(|e| panic!("request {i}: {e}; stderr: {}", pf.stderr()));
        assert_page(&answer);
    }

    // A megabyte comes through whole (many data frames, split across WebSocket messages).
    let big = fetch_path(local, "/big").expect("big");
    let body = big.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    assert_eq!(body.len(), 1 << 20, "{}", &big[..big.len().min(300)]);
    assert!(
        body.lines()
            .all(|l| l == "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-")
    );

    // Two connections open at once: both requests are in flight before either answer is read.
    let mut a = TcpStream::connect(("127.0.0.1", local)).expect("connect a");
    let mut b = TcpStream::connect(("127.0.0.1", local)).expect("connect b");
    request(&mut a).expect("request a");
    request(&mut b).expect("request b");
    let (ra, rb) = (
        std::thread::spawn(move || read_all(a)),
        std::thread::spawn(move || read_all(b)),
    );
    assert_page(&rb.join().expect("thread b").expect("answer b"));
    assert_page(&ra.join().expect("thread a").expect("answer a"));
    // And two concurrent clients each doing a few requests.
    let clients: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(move || (0..3).map(|_| fetch(local)).collect::<Vec<_>>()))
        .collect();
    for c in clients {
        for answer in c.join().expect("client thread") {
            assert_page(&answer.expect("concurrent request"));
        }
    }
    pf.assert_running();

    // A port nothing listens on in the pod: the local connection is closed without data, and kubectl
    // reports the agent's error for that connection ("an error occurred forwarding L -> P: error
    // forwarding port P to pod …: … connection refused").
    let mut dead = TcpStream::connect(("127.0.0.1", local_dead)).expect("connect dead");
    request(&mut dead).expect("request dead");
    let answer = read_all(dead).unwrap_or_default();
    assert_eq!(answer, "", "data from a port nothing listens on");
    let err = eventually(30, "kubectl reports the forwarding error", || {
        let err = pf.stderr();
        err.contains(&format!(
            "an error occurred forwarding {local_dead} -> {dead_port}: error forwarding port {dead_port} to pod default/web, uid "
        ))
        .then_some(err)
    });
    assert!(err.contains("Connection refused"), "{err}");
    // kubectl 1.32 then closes the whole connection on purpose and exits 1 with "lost connection to pod"
    // (client-go `tools/portforward` `handleConnection` closes `streamConn` when the error stream carries
    // a message), as it does against a real kubelet.
    let status = eventually(30, "kubectl port-forward exits after the error", || {
        pf.child.try_wait().ok().flatten()
    });
    assert_eq!(status.code(), Some(1), "stderr: {}", pf.stderr());
    assert!(pf.stderr().contains("lost connection to pod"), "{}", pf.stderr());
    drop(pf);

    // The agent's side is unharmed: a new port-forward serves again.
    let local = free_port();
    let mut pf = PortForward::start(&s, &["port-forward", "web", &format!("{local}:{pod_port}")]);
    pf.wait_line(&format!("Forwarding from 127.0.0.1:{local} -> {pod_port}"));
    assert_page(&fetch(local).unwrap_or_else(|e| panic!("{e}; stderr: {}", pf.stderr())));
    pf.assert_running();
    drop(pf);
    common::kill_containers(s.data_dir());
}

/// The other port-forward protocol (kube-rs, Python): WebSocket `v4.channel.k8s.io` with `?ports=`.
/// Opt-in tier like the other Python test: needs the `kubernetes` package (`BERTH_TEST_PYTHON=1`).
#[test]
fn python_client_port_forward_over_v4_channels() {
    if std::env::var_os("BERTH_TEST_PYTHON").is_none() {
        eprintln!("skipped: set BERTH_TEST_PYTHON=1 with the Python `kubernetes` package installed");
        return;
    }
    if !common::can_run_containers() {
        return;
    }
    let s = common::server_with_busybox("node");
    let (pod_port, dead_port) = (free_port(), free_port());
    run_httpd(&s, pod_port);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python_portforward.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .args(["web", &pod_port.to_string(), &dead_port.to_string(), BODY])
        .env("KUBECONFIG", s.kubeconfig())
        .output()
        .expect("python3");
    common::kill_containers(s.data_dir());
    assert!(
        out.status.success(),
        "python port-forward failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("python port-forward ok"));
}
