//! A throwaway etcd member on loopback, for tests and `berth bench`: Debian's `etcd-server` binary
//! (`/usr/bin/etcd`, or `$BERTH_ETCD`) on OS-chosen ports with a temporary data dir; killed and its dir
//! removed on drop, whatever happened in between.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The etcd binary to run: `$BERTH_ETCD` or `/usr/bin/etcd`.
pub fn binary() -> PathBuf {
    std::env::var_os("BERTH_ETCD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"))
}

/// Whether an etcd binary is installed.
pub fn available() -> bool {
    binary().is_file()
}

/// A running single-member etcd.
pub struct LocalEtcd {
    child: Option<Child>,
    dir: Option<tempfile::TempDir>,
    client_port: u16,
    peer_port: u16,
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl LocalEtcd {
    /// Start a member on fresh loopback ports and a fresh data dir; returns once it answers.
    ///
    /// # Errors
    /// When the binary is missing, cannot start, or does not answer within 30 s.
    pub fn start() -> std::io::Result<LocalEtcd> {
        let dir = tempfile::Builder::new().prefix("berth-etcd-").tempdir()?;
        let mut etcd = LocalEtcd {
            child: None,
            dir: Some(dir),
            client_port: free_port()?,
            peer_port: free_port()?,
        };
        etcd.spawn()?;
        Ok(etcd)
    }

    /// The client URL (`http://127.0.0.1:<port>`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The data dir.
    pub fn data_dir(&self) -> &Path {
        self.dir
            .as_ref()
            .map(|d| d.path())
            .unwrap_or(Path::new("/nonexistent"))
    }

    /// The member's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new(binary())
            .args(["--name", "berth-test"])
            .arg("--data-dir")
            .arg(self.data_dir().join("member"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("berth-test={peer}")])
            .args(["--initial-cluster-state", "new", "--log-level", "error"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // Ready when it answers a plain HTTP health check on the client port.
            if health(self.client_port) {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut()
                && let Some(status) = c.try_wait()?
            {
                return Err(std::io::Error::other(format!("etcd exited at start: {status}")));
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other("etcd did not become healthy within 30 s"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL the member (its data dir stays).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start the member again on the same ports and data dir (after [`LocalEtcd::kill`]).
    ///
    /// # Errors
    /// As [`LocalEtcd::start`].
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.kill();
        self.spawn()
    }
}

/// `GET /health` answers `{"health":"true"}` once the member serves.
fn health(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.contains("\"health\":\"true\"")
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        self.kill();
        drop(self.dir.take());
    }
}
