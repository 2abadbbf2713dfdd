//! A throwaway etcd member on loopback, for tests and `berth bench`: Debian's `etcd-server` binary
//! (`/usr/bin/etcd`, or `$BERTH_ETCD`) on OS-chosen ports with a temporary data dir; killed and its dir
//! removed on drop, whatever happened in between. [`LocalEtcd::start_tls`] serves clients over HTTPS with
//! client-certificate authentication (a CA, server and client certificates made with rcgen in the data dir),
//! as a production etcd for k3s's `--datastore-cafile/certfile/keyfile` does.

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
    /// Plain-HTTP port serving `/health` (and metrics), whatever the client URLs' scheme.
    metrics_port: u16,
    tls: bool,
}

/// The files of a TLS member: what a client passes as `--datastore-cafile/certfile/keyfile`.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA that signed the server and client certificates.
    pub ca: PathBuf,
    /// A client certificate (ClientAuth) the member trusts.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
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
        Self::start_inner(false)
    }

    /// Like [`LocalEtcd::start`], with clients served over HTTPS and required to present a certificate
    /// signed by the member's CA ([`LocalEtcd::tls_files`]).
    ///
    /// # Errors
    /// As [`LocalEtcd::start`], or when the certificates cannot be made.
    pub fn start_tls() -> std::io::Result<LocalEtcd> {
        Self::start_inner(true)
    }

    fn start_inner(tls: bool) -> std::io::Result<LocalEtcd> {
        let dir = tempfile::Builder::new().prefix("berth-etcd-").tempdir()?;
        let mut etcd = LocalEtcd {
            child: None,
            dir: Some(dir),
            client_port: free_port()?,
            peer_port: free_port()?,
            metrics_port: free_port()?,
            tls,
        };
        if tls {
            make_certificates(etcd.data_dir()).map_err(std::io::Error::other)?;
        }
        etcd.spawn()?;
        Ok(etcd)
    }

    /// The client URL (`http://127.0.0.1:<port>`, `https://` for a TLS member).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// The CA and client certificate of a TLS member.
    pub fn tls_files(&self) -> Option<TlsFiles> {
        self.tls.then(|| {
            let d = self.data_dir().join("pki");
            TlsFiles {
                ca: d.join("ca.crt"),
                cert: d.join("client.crt"),
                key: d.join("client.key"),
            }
        })
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
        let metrics = format!("http://127.0.0.1:{}", self.metrics_port);
        let mut cmd = Command::new(binary());
        cmd.args(["--name", "berth-test"])
            .arg("--data-dir")
            .arg(self.data_dir().join("member"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--listen-metrics-urls", &metrics])
            .args(["--initial-cluster", &format!("berth-test={peer}")])
            .args(["--initial-cluster-state", "new", "--log-level", "error"]);
        if self.tls {
            let d = self.data_dir().join("pki");
            cmd.arg("--cert-file")
                .arg(d.join("server.crt"))
                .arg("--key-file")
                .arg(d.join("server.key"))
                .arg("--trusted-ca-file")
                .arg(d.join("ca.crt"))
                .arg("--client-cert-auth");
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // Ready when it answers a plain HTTP health check on the metrics port.
            if health(self.metrics_port) {
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

/// A CA, a server certificate for 127.0.0.1 and a client certificate under `<dir>/pki`.
fn make_certificates(dir: &Path) -> Result<(), rcgen::Error> {
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType,
    };
    let pki = dir.join("pki");
    let write = |name: &str, text: String| {
        std::fs::create_dir_all(&pki)
            .and_then(|()| std::fs::write(pki.join(name), text))
            .map_err(|e| rcgen::Error::PemError(e.to_string()))
    };
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key)?;
    write("ca.crt", ca_cert.pem())?;
    let issuer = Issuer::new(ca, ca_key);
    let server_key = KeyPair::generate()?;
    let mut sp = CertificateParams::new(vec!["localhost".to_string()])?;
    sp.subject_alt_names
        .push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
    sp.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    write("server.crt", sp.signed_by(&server_key, &issuer)?.pem())?;
    write("server.key", server_key.serialize_pem())?;
    let client_key = KeyPair::generate()?;
    let mut cp = CertificateParams::new(Vec::<String>::new())?;
    cp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    write("client.crt", cp.signed_by(&client_key, &issuer)?.pem())?;
    write("client.key", client_key.serialize_pem())?;
    Ok(())
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
