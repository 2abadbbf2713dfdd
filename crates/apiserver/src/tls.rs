//! The cluster's PKI, made on first start as k3s does: a CA, a serving certificate for the API server and
//! an admin client certificate, all under `<data-dir>/tls/`, plus the admin kubeconfig that uses them.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Errors making or loading certificates.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// rustls rejected the material.
    #[error("tls configuration: {0}")]
    Rustls(String),
}

/// PEM material of the cluster.
#[derive(Clone)]
pub struct Pki {
    /// CA certificate (PEM).
    pub ca_cert: String,
    /// Serving certificate (PEM).
    pub server_cert: String,
    /// Serving key (PEM).
    pub server_key: String,
    /// Admin client certificate (PEM, CN `system:admin`, O `system:masters`).
    pub admin_cert: String,
    /// Admin client key (PEM).
    pub admin_key: String,
}

fn read(path: &Path) -> Result<Option<String>, TlsError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TlsError::Io {
            path: path.into(),
            source,
        }),
    }
}

fn write_private(path: &Path, contents: &str) -> Result<(), TlsError> {
    crate::files::write_private(path, contents.as_bytes()).map_err(|source| TlsError::Io {
        path: path.into(),
        source,
    })
}

fn ca_params() -> Result<CertificateParams, TlsError> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::CommonName, "berth-server-ca");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = rcgen::date_time_ymd(2025, 1, 1);
    p.not_after = rcgen::date_time_ymd(2035, 1, 1);
    Ok(p)
}

impl Pki {
    /// Load the PKI from `dir`, creating whatever is missing. The serving certificate is made anew at every
    /// start so that its SANs (`sans`: IPs and DNS names) follow the flags.
    pub fn load_or_create(dir: &Path, sans: &[String]) -> Result<Pki, TlsError> {
        std::fs::create_dir_all(dir).map_err(|source| TlsError::Io {
            path: dir.into(),
            source,
        })?;
        let ca_key_path = dir.join("ca.key");
        let ca_cert_path = dir.join("ca.crt");
        let (ca_key, ca_cert) = match (read(&ca_key_path)?, read(&ca_cert_path)?) {
            (Some(k), Some(c)) => (KeyPair::from_pem(&k)?, c),
            _ => {
                let key = KeyPair::generate()?;
                let cert = ca_params()?.self_signed(&key)?;
                write_private(&ca_key_path, &key.serialize_pem())?;
                write_private(&ca_cert_path, &cert.pem())?;
                (key, cert.pem())
            }
        };
        let issuer = Issuer::from_ca_cert_pem(&ca_cert, &ca_key)?;

        let server_key = KeyPair::generate()?;
        let mut sp = CertificateParams::new(Vec::<String>::new())?;
        sp.distinguished_name.push(DnType::CommonName, "kube-apiserver");
        for san in sans {
            match san.parse::<std::net::IpAddr>() {
                Ok(ip) => sp.subject_alt_names.push(SanType::IpAddress(ip)),
                Err(_) => sp
                    .subject_alt_names
                    .push(SanType::DnsName(san.clone().try_into()?)),
            }
        }
        sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        sp.not_before = rcgen::date_time_ymd(2025, 1, 1);
        sp.not_after = rcgen::date_time_ymd(2035, 1, 1);
        let server_cert = sp.signed_by(&server_key, &issuer)?;
        write_private(&dir.join("server.crt"), &server_cert.pem())?;
        write_private(&dir.join("server.key"), &server_key.serialize_pem())?;

        let admin_key_path = dir.join("admin.key");
        let admin_cert_path = dir.join("admin.crt");
        let (admin_key, admin_cert) = match (read(&admin_key_path)?, read(&admin_cert_path)?) {
            (Some(k), Some(c)) => (k, c),
            _ => {
                let key = KeyPair::generate()?;
                let mut ap = CertificateParams::new(Vec::<String>::new())?;
                ap.distinguished_name.push(DnType::CommonName, "system:admin");
                ap.distinguished_name
                    .push(DnType::OrganizationName, "system:masters");
                ap.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
                ap.not_before = rcgen::date_time_ymd(2025, 1, 1);
                ap.not_after = rcgen::date_time_ymd(2035, 1, 1);
                let cert = ap.signed_by(&key, &issuer)?;
                write_private(&admin_key_path, &key.serialize_pem())?;
                write_private(&admin_cert_path, &cert.pem())?;
                (key.serialize_pem(), cert.pem())
            }
        };
        Ok(Pki {
            ca_cert,
            server_cert: server_cert.pem(),
            server_key: server_key.serialize_pem(),
            admin_cert,
            admin_key,
        })
    }

    /// The admin kubeconfig (YAML) for `server_url` (e.g. `https://127.0.0.1:6443`), certificates embedded.
    pub fn kubeconfig(&self, server_url: &str) -> String {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: {server_url}\n  name: default\ncontexts:\n- context:\n    cluster: default\n    user: default\n  name: default\ncurrent-context: default\npreferences: {{}}\nusers:\n- name: default\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(&self.ca_cert),
            b64(&self.admin_cert),
            b64(&self.admin_key)
        )
    }

    /// A rustls server config that serves the API certificate and asks for (but does not require) a client
    /// certificate signed by the CA; requests without one must then carry a bearer token.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs: Vec<_> = rustls_pemfile::certs(&mut self.server_cert.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
        let key = rustls_pemfile::private_key(&mut self.server_key.as_bytes())
            .map_err(|e| TlsError::Rustls(e.to_string()))?
            .ok_or_else(|| TlsError::Rustls("no private key".into()))?;
        let mut roots = rustls::RootCertStore::empty();
        for ca in rustls_pemfile::certs(&mut self.ca_cert.as_bytes()) {
            roots
                .add(ca.map_err(|e| TlsError::Rustls(e.to_string()))?)
                .map_err(|e| TlsError::Rustls(e.to_string()))?;
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::Rustls(e.to_string()))?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rustls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
}
