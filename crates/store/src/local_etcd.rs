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

/// A running etcd: one member, or a cluster of several ([`LocalEtcd::cluster`]).
pub struct LocalEtcd {
    members: Vec<Member>,
    dir: Option<tempfile::TempDir>,
    tls: bool,
}

struct Member {
    name: String,
    child: Option<Child>,
    client_port: u16,
    peer_port: u16,
    /// Plain-HTTP port serving `/health` (and metrics), whatever the client URLs' scheme.
    metrics_port: u16,
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

/// `n` distinct free loopback ports (all held open until every one is chosen).
fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()?;
    held.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

impl LocalEtcd {
    /// Start a member on fresh loopback ports and a fresh data dir; returns once it answers.
    ///
    /// # Errors
    /// When the binary is missing, cannot start, or does not answer within 30 s.
    pub fn start() -> std::io::Result<LocalEtcd> {
        Self::start_inner(1, false)
    }

    /// Like [`LocalEtcd::start`], with clients served over HTTPS and required to present a certificate
    /// signed by the member's CA ([`LocalEtcd::tls_files`]).
    ///
    /// # Errors
    /// As [`LocalEtcd::start`], or when the certificates cannot be made.
    pub fn start_tls() -> std::io::Result<LocalEtcd> {
        Self::start_inner(1, true)
    }

    /// A cluster of `n` members on loopback (one raft group); returns once every member answers.
    ///
    /// # Errors
    /// As [`LocalEtcd::start`].
    pub fn cluster(n: usize) -> std::io::Result<LocalEtcd> {
        Self::start_inner(n, false)
    }

    fn start_inner(n: usize, tls: bool) -> std::io::Result<LocalEtcd> {
        let dir = tempfile::Builder::new().prefix("berth-etcd-").tempdir()?;
        let ports = free_ports(3 * n)?;
        let members = (0..n)
            .map(|i| Member {
                name: format!("berth-test-{i}"),
                child: None,
                client_port: ports[3 * i],
                peer_port: ports[3 * i + 1],
                metrics_port: ports[3 * i + 2],
            })
            .collect();
        let mut etcd = LocalEtcd {
            members,
            dir: Some(dir),
            tls,
        };
        if tls {
            make_certificates(etcd.data_dir()).map_err(std::io::Error::other)?;
        }
        for i in 0..n {
            etcd.spawn(i)?;
        }
        for i in 0..n {
            etcd.wait_healthy(i)?;
        }
        Ok(etcd)
    }

    /// The first member's client URL (`http://127.0.0.1:<port>`, `https://` for a TLS member).
    pub fn endpoint(&self) -> String {
        self.member_endpoint(0)
    }

    /// Every member's client URL, comma-separated (a `--datastore-endpoint` value).
    pub fn endpoints(&self) -> String {
        (0..self.members.len())
            .map(|i| self.member_endpoint(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn member_endpoint(&self, i: usize) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.members[i].client_port)
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

    /// The data dir (every member's data below it).
    pub fn data_dir(&self) -> &Path {
        self.dir
            .as_ref()
            .map(|d| d.path())
            .unwrap_or(Path::new("/nonexistent"))
    }

    /// The first member's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.members[0].child.as_ref().map(Child::id)
    }

    fn spawn(&mut self, i: usize) -> std::io::Result<()> {
        let initial_cluster = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let client = self.member_endpoint(i);
        let m = &self.members[i];
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let metrics = format!("http://127.0.0.1:{}", m.metrics_port);
        let mut cmd = Command::new(binary());
        cmd.args(["--name", &m.name])
            .arg("--data-dir")
            .arg(self.data_dir().join(&m.name))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--listen-metrics-urls", &metrics])
            .args(["--initial-cluster", &initial_cluster])
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
        self.members[i].child = Some(child);
        Ok(())
    }

    fn wait_healthy(&mut self, i: usize) -> std::io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let m = &mut self.members[i];
        loop {
            // Ready when it answers a plain HTTP health check on the metrics port (with a leader).
            if health(m.metrics_port) {
                return Ok(());
            }
            if let Some(c) = m.child.as_mut()
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

    /// SIGKILL the (first) member; its data dir stays.
    pub fn kill(&mut self) {
        self.kill_member(0);
    }

    /// SIGKILL member `i` of a cluster.
    pub fn kill_member(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start the (first) member again on the same ports and data dir (after [`LocalEtcd::kill`]).
    ///
    /// # Errors
    /// As [`LocalEtcd::start`].
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.kill_member(0);
        self.spawn(0)?;
        self.wait_healthy(0)
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
        for i in 0..self.members.len() {
            self.kill_member(i);
        }
        drop(self.dir.take());
    }
}
