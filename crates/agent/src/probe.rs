//! Container probes as the kubelet runs them (upstream `pkg/kubelet/prober`): `exec` (inside the container,
//! through `berth container-exec`), `httpGet` (a status from 200 to 399 succeeds) and `tcpSocket` (a
//! connection succeeds), with `initialDelaySeconds`, `periodSeconds`, `timeoutSeconds`,
//! `successThreshold` and `failureThreshold`. Startup probes gate the others; a failed liveness (or
//! startup) probe restarts the container; readiness decides the container's `ready`.

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `startupProbe`.
    Startup,
    /// `livenessProbe`.
    Liveness,
    /// `readinessProbe`.
    Readiness,
}

/// One probe's running result for one container run.
#[derive(Debug, Clone)]
pub struct Tracker {
    /// When the container run started (initial delay counts from here).
    pub run_started: Instant,
    next: Instant,
    successes: i32,
    failures: i32,
    /// The probe's verdict so far (`None` until thresholds are reached).
    pub passing: Option<bool>,
}

impl Tracker {
    /// A tracker for a run that started at `run_started`.
    pub fn new(run_started: Instant, probe: &Probe) -> Self {
        Tracker {
            run_started,
            next: run_started + secs(probe.initial_delay_seconds, 0),
            successes: 0,
            failures: 0,
            passing: None,
        }
    }

    /// Whether a probe is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        now >= self.next
    }

    /// Record one result at `now`; returns the verdict.
    pub fn record(&mut self, probe: &Probe, ok: bool, now: Instant) -> Option<bool> {
        self.next = now + secs(probe.period_seconds, 10);
        if ok {
            self.successes += 1;
            self.failures = 0;
            if self.successes >= probe.success_threshold.unwrap_or(1).max(1) {
                self.passing = Some(true);
            }
        } else {
            self.failures += 1;
            self.successes = 0;
            if self.failures >= probe.failure_threshold.unwrap_or(3).max(1) {
                self.passing = Some(false);
            }
        }
        self.passing
    }
}

fn secs(v: Option<i32>, default: i32) -> Duration {
    Duration::from_secs(v.unwrap_or(default).max(0) as u64)
}

fn port_of(p: &IntOrString, c: &Container) -> Result<u16, String> {
    match p {
        IntOrString::Int(i) => u16::try_from(*i).map_err(|_| format!("invalid port {i}")),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name.as_str()))
            .and_then(|cp| u16::try_from(cp.container_port).ok())
            .ok_or_else(|| format!("no container port named {name:?}")),
    }
}

/// Run one probe now. `Ok(())` is success; `Err` carries the failure as the kubelet words it.
pub async fn run(
    berth: &Path,
    dir: &Path,
    c: &Container,
    probe: &Probe,
    pod_ip: IpAddr,
) -> Result<(), String> {
    let timeout = secs(probe.timeout_seconds, 1).max(Duration::from_secs(1));
    if let Some(e) = &probe.exec {
        let mut cmd = tokio::process::Command::new(berth);
        cmd.arg("container-exec")
            .arg(dir)
            .arg("--")
            .args(e.command.iter().flatten())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        let status = tokio::time::timeout(timeout, cmd.status())
            .await
            .map_err(|_| format!("command timed out after {}s", timeout.as_secs()))?
            .map_err(|e| e.to_string())?;
        return if status.success() {
            Ok(())
        } else {
            Err(format!("command exited with {}", status.code().unwrap_or(-1)))
        };
    }
    if let Some(t) = &probe.tcp_socket {
        let port = port_of(&t.port, c)?;
        let host: IpAddr = t.host.as_deref().and_then(|h| h.parse().ok()).unwrap_or(pod_ip);
        return tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port)))
            .await
            .map_err(|_| format!("dial tcp {host}:{port}: i/o timeout"))?
            .map(|_| ())
            .map_err(|e| format!("dial tcp {host}:{port}: {e}"));
    }
    if let Some(h) = &probe.http_get {
        let port = port_of(&h.port, c)?;
        let host: IpAddr = h.host.as_deref().and_then(|h| h.parse().ok()).unwrap_or(pod_ip);
        let path = h.path.clone().unwrap_or_else(|| "/".into());
        let fut = async {
            let mut s = tokio::net::TcpStream::connect((host, port)).await?;
            let mut req = format!(
                "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.32\r\nAccept: */*\r\nConnection: close\r\n"
            );
            for hdr in h.http_headers.iter().flatten() {
                req.push_str(&format!("{}: {}\r\n", hdr.name, hdr.value));
            }
            req.push_str("\r\n");
            s.write_all(req.as_bytes()).await?;
            let mut buf = vec![0u8; 64];
            let n = s.read(&mut buf).await?;
            Ok::<_, std::io::Error>(String::from_utf8_lossy(&buf[..n]).into_owned())
        };
        let head = tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| format!("Get \"http://{host}:{port}{path}\": context deadline exceeded"))?
            .map_err(|e| format!("Get \"http://{host}:{port}{path}\": {e}"))?;
        let code: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        return if (200..400).contains(&code) {
            Ok(())
        } else {
            Err(format!("HTTP probe failed with statuscode: {code}"))
        };
    }
    Err("probe has no handler this agent supports (exec, httpGet, tcpSocket)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(v: serde_json::Value) -> Probe {
        serde_json::from_value(v).expect("probe")
    }

    #[test]
    fn thresholds_and_delays_follow_the_probe_fields() {
        let p = probe(
            serde_json::json!({"initialDelaySeconds": 5, "periodSeconds": 2, "failureThreshold": 2, "successThreshold": 1}),
        );
        let t0 = Instant::now();
        let mut t = Tracker::new(t0, &p);
        assert!(!t.due(t0 + Duration::from_secs(4)));
        assert!(t.due(t0 + Duration::from_secs(5)));
        assert_eq!(t.record(&p, true, t0 + Duration::from_secs(5)), Some(true));
        assert!(!t.due(t0 + Duration::from_secs(6)));
        assert_eq!(
            t.record(&p, false, t0 + Duration::from_secs(7)),
            Some(true),
            "one failure is not enough"
        );
        assert_eq!(t.record(&p, false, t0 + Duration::from_secs(9)), Some(false));
    }

    #[tokio::test]
    async fn tcp_and_http_probes_against_real_sockets() {
        let c: Container = serde_json::from_value(
            serde_json::json!({"name": "c", "ports": [{"name": "web", "containerPort": 1}]}),
        )
        .expect("container");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).into_owned();
                let reply = if req.starts_with("GET /ok ") {
                    "HTTP/1.1 200 OK\r\n\r\n"
                } else {
                    "HTTP/1.1 503 Unavailable\r\n\r\n"
                };
                let _ = s.write_all(reply.as_bytes()).await;
            }
        });
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let dir = Path::new("/nonexistent");
        let tcp = probe(serde_json::json!({"tcpSocket": {"port": port}}));
        assert!(run(Path::new("berth"), dir, &c, &tcp, ip).await.is_ok());
        let ok = probe(serde_json::json!({"httpGet": {"path": "/ok", "port": port}}));
        assert!(run(Path::new("berth"), dir, &c, &ok, ip).await.is_ok());
        let bad = probe(serde_json::json!({"httpGet": {"path": "/bad", "port": port}}));
        assert_eq!(
            run(Path::new("berth"), dir, &c, &bad, ip).await,
            Err("HTTP probe failed with statuscode: 503".to_string())
        );
        let closed = probe(serde_json::json!({"tcpSocket": {"port": "web"}}));
        assert!(run(Path::new("berth"), dir, &c, &closed, ip).await.is_err());
    }
}
