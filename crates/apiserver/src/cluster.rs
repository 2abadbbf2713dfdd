//! Bootstrap data shared by the servers of one cluster through the datastore, as k3s's
//! `pkg/cluster/bootstrap.go` and `encrypt.go` share theirs: the cluster CA (certificate and key), the
//! admin client certificate and the Secrets encryption configuration, so that every server's serving
//! certificate is signed by the same CA, one kubeconfig works against each, and every server reads the
//! Secrets the others encrypted.
//!
//! The record lives at `/bootstrap/<first 12 hex digits of sha256(token)>` (k3s's `storageKey`), outside
//! `/registry/`, so no resource ever lists it. Its value is k3s's format: `<salt>:<base64(nonce ‖
//! AES-256-GCM ciphertext)>` with the key derived from the token by PBKDF2-HMAC-SHA1 (4096 rounds,
//! 32 bytes, the 16 hex characters of 8 random bytes as salt). Without the token the datastore's
//! administrator sees neither the CA key nor the encryption keys.
//!
//! The first server creates the record from its own files (compare-and-swap create, so of two servers
//! starting at once one wins and the other adopts the winner's); a joining server writes the record's
//! files into its data dir before it makes its serving certificate. A server whose encryption
//! configuration differs from the cluster's refuses to start (it could not read the others' Secrets);
//! `berth secrets-encrypt` on one server updates the record, and the other servers take the new
//! configuration when they restart (k3s's rotation likewise restarts every server).

use aes_gcm::aead::{Aead, KeyInit, OsRng};
use aes_gcm::{AeadCore, Aes256Gcm};
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::path::{Path, PathBuf};

/// The cluster's join passphrase (`--token`, the part after `::server:` of a `K10…` token). Its
/// `Debug` never shows the secret.
#[derive(Clone)]
pub struct Token(pub String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

/// Errors of [`reconcile`] and [`save_encryption`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The datastore failed.
    #[error("datastore: {0}")]
    Store(#[from] store::Error),
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The record does not decrypt with the token, or is not bootstrap data.
    #[error("bootstrap data: {0}")]
    Data(String),
    /// This server's settings contradict the cluster's.
    #[error("{0}")]
    Mismatch(String),
}

/// The shared files, as stored (PEM and JSON text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapData {
    /// The cluster CA certificate (`tls/ca.crt`).
    pub server_ca: String,
    /// The cluster CA key (`tls/ca.key`).
    pub server_ca_key: String,
    /// The admin client certificate (`tls/admin.crt`).
    pub client_admin_cert: String,
    /// Its key (`tls/admin.key`).
    pub client_admin_key: String,
    /// The `EncryptionConfiguration` in force (`server/cred/encryption-config.json`), if any.
    #[serde(default)]
    pub encryption_config: Option<String>,
    /// SHA-256 (hex, of the canonical JSON) of every configuration the cluster had before this one: a
    /// server holding one of them missed a `secrets-encrypt` change and takes the current one.
    #[serde(default)]
    pub encryption_history: Vec<String>,
}

/// Where a server keeps the shared files.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `<data-dir>/tls` (`ca.crt`, `ca.key`, `admin.crt`, `admin.key`).
    pub tls_dir: PathBuf,
    /// `<data-dir>/server/cred/encryption-config.json`.
    pub encryption_config: PathBuf,
}

const PREFIX: &str = "/bootstrap/";

/// The record's key for `token`: `/bootstrap/` + the first 12 hex digits of its sha256 (k3s's
/// `storageKey`/`keyHash`).
pub fn storage_key(token: &Token) -> String {
    let hex = format!("{:x}", sha2::Sha256::digest(token.0.as_bytes()));
    format!("{PREFIX}{}", &hex[..12])
}

fn derive(token: &Token, salt: &[u8]) -> [u8; 32] {
    pbkdf2::pbkdf2_hmac_array::<sha1::Sha1, 32>(token.0.as_bytes(), salt, 4096)
}

/// Seal `plain` with the token as k3s's `encrypt`: `<salt>:<base64(nonce ‖ ciphertext)>`.
pub fn encrypt(token: &Token, plain: &[u8]) -> Vec<u8> {
    use aes_gcm::aead::rand_core::RngCore;
    let mut raw = [0u8; 8];
    OsRng.fill_bytes(&mut raw);
    let salt: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let cipher = Aes256Gcm::new(&derive(token, salt.as_bytes()).into());
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    let mut sealed = nonce.to_vec();
    // Encryption with a fresh nonce and a 32-byte key cannot fail.
    sealed.extend(cipher.encrypt(&nonce, plain).unwrap_or_default());
    format!(
        "{salt}:{}",
        base64::engine::general_purpose::STANDARD.encode(sealed)
    )
    .into_bytes()
}

/// Open what [`encrypt`] sealed.
///
/// # Errors
/// [`Error::Data`] when the value is malformed or the token is not the one it was sealed with.
pub fn decrypt(token: &Token, sealed: &[u8]) -> Result<Vec<u8>, Error> {
    let text = std::str::from_utf8(sealed).map_err(|_| Error::Data("not text".into()))?;
    let (salt, b64) = text
        .split_once(':')
        .ok_or_else(|| Error::Data("invalid cipher text, not : delimited".into()))?;
    let data = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| Error::Data(e.to_string()))?;
    if data.len() < 12 {
        return Err(Error::Data("cipher text too short".into()));
    }
    let (nonce, body) = data.split_at(12);
    Aes256Gcm::new(&derive(token, salt.as_bytes()).into())
        .decrypt(nonce.into(), body)
        .map_err(|_| Error::Data("the token does not decrypt the cluster's bootstrap data".into()))
}

fn read(path: &Path) -> Result<Option<String>, Error> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io {
            path: path.into(),
            source,
        }),
    }
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    let io = |source| Error::Io {
        path: path.into(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    crate::files::write_private(path, text.as_bytes()).map_err(io)
}

/// SHA-256 of a configuration's canonical JSON (its text when it is not JSON).
fn config_hash(text: &str) -> String {
    let canonical = serde_json::from_str::<serde_json::Value>(text)
        .map(|v| v.to_string())
        .unwrap_or_else(|_| text.to_string());
    format!("{:x}", sha2::Sha256::digest(canonical.as_bytes()))
}

fn same_json(a: &str, b: &str) -> bool {
    match (
        serde_json::from_str::<serde_json::Value>(a),
        serde_json::from_str::<serde_json::Value>(b),
    ) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// What [`reconcile`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The datastore had the cluster's record; its files are now in this data dir.
    Joined,
    /// No record yet: this server is the first, and [`publish`] must store its files once made.
    First,
}

/// Before the server makes its PKI and loads its encryption configuration: read the cluster's record
/// and write its files into `paths` (a joining server, or a restarted one). `want_encryption` is
/// `--secrets-encryption`.
///
/// # Errors
/// [`Error::Mismatch`] when the datastore holds bootstrap data under another token (k3s: "bootstrap
/// data already found and encrypted with different token"), or when this server's encryption
/// configuration differs from the cluster's (or it asks for encryption the cluster runs without);
/// [`Error::Data`] when the record does not decrypt; store and file errors.
pub async fn reconcile(
    store: &store::Store,
    token: &Token,
    paths: &Paths,
    want_encryption: bool,
) -> Result<Outcome, Error> {
    let key = storage_key(token);
    let Some(kv) = store.get(&key).await? else {
        let others = store.list(PREFIX, None, 1).await?;
        if !others.kvs.is_empty() {
            return Err(Error::Mismatch(
                "the datastore already holds another cluster's bootstrap data, encrypted with a different \
                 token: start this server with that cluster's --token (its first server's \
                 <data-dir>/server/token when it was started without one)"
                    .into(),
            ));
        }
        return Ok(Outcome::First);
    };
    let data: BootstrapData =
        serde_json::from_slice(&decrypt(token, &kv.value)?).map_err(|e| Error::Data(e.to_string()))?;
    let local_enc = read(&paths.encryption_config)?;
    match (&data.encryption_config, &local_enc) {
        (Some(cluster), Some(local))
            if !same_json(cluster, local) && data.encryption_history.contains(&config_hash(local)) =>
        {
            // An older configuration of this cluster: `secrets-encrypt` ran on another server since.
            tracing::warn!(path = %paths.encryption_config.display(), "replaced by the cluster's newer encryption configuration");
            write(&paths.encryption_config, cluster)?;
        }
        (Some(cluster), Some(local)) if !same_json(cluster, local) => {
            return Err(Error::Mismatch(format!(
                "{} differs from the cluster's encryption configuration (kept in the datastore): this \
                 server could not read the Secrets the others encrypt. Remove the file to take the \
                 cluster's",
                paths.encryption_config.display()
            )));
        }
        (None, Some(_)) => {
            return Err(Error::Mismatch(format!(
                "the cluster runs without secrets encryption but {} exists: remove it, or enable \
                 encryption on the cluster's first server",
                paths.encryption_config.display()
            )));
        }
        (None, None) if want_encryption => {
            return Err(Error::Mismatch(
                "--secrets-encryption: the cluster runs without secrets encryption (its first server \
                 was started without the flag); every server of a cluster must encrypt alike"
                    .into(),
            ));
        }
        (Some(cluster), None) => write(&paths.encryption_config, cluster)?,
        _ => {}
    }
    for (name, text) in [
        ("ca.crt", &data.server_ca),
        ("ca.key", &data.server_ca_key),
        ("admin.crt", &data.client_admin_cert),
        ("admin.key", &data.client_admin_key),
    ] {
        let path = paths.tls_dir.join(name);
        match read(&path)? {
            Some(local) if local == *text => {}
            Some(_) => {
                tracing::warn!(path = %path.display(), "replaced by the cluster's (bootstrap data in the datastore)");
                write(&path, text)?;
            }
            None => write(&path, text)?,
        }
    }
    Ok(Outcome::Joined)
}

fn local_data(paths: &Paths) -> Result<BootstrapData, Error> {
    let need = |name: &str| -> Result<String, Error> {
        let path = paths.tls_dir.join(name);
        read(&path)?.ok_or_else(|| Error::Io {
            path,
            source: std::io::ErrorKind::NotFound.into(),
        })
    };
    Ok(BootstrapData {
        server_ca: need("ca.crt")?,
        server_ca_key: need("ca.key")?,
        client_admin_cert: need("admin.crt")?,
        client_admin_key: need("admin.key")?,
        encryption_config: read(&paths.encryption_config)?,
        encryption_history: Vec::new(),
    })
}

/// The first server, once its PKI and encryption configuration exist: store them as the cluster's
/// record. When another server stored its record first (both started at once), that one is taken
/// instead (its files are written here) and `Ok(false)` tells the caller to make its PKI again.
///
/// # Errors
/// As [`reconcile`].
pub async fn publish(store: &store::Store, token: &Token, paths: &Paths) -> Result<bool, Error> {
    let data = local_data(paths)?;
    let body = serde_json::to_vec(&data).map_err(|e| Error::Data(e.to_string()))?;
    match store.create(&storage_key(token), encrypt(token, &body)).await {
        Ok(_) => Ok(true),
        Err(store::Error::AlreadyExists { .. }) => {
            reconcile(store, token, paths, data.encryption_config.is_some()).await?;
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

/// After `berth secrets-encrypt` changed this server's configuration: store it in the cluster's record
/// (compare-and-swap, retried on a conflict), so servers that start later take it.
///
/// # Errors
/// As [`reconcile`]; [`Error::Data`] when the cluster has no record.
pub async fn save_encryption(store: &store::Store, token: &Token, config_json: &str) -> Result<(), Error> {
    let key = storage_key(token);
    loop {
        let kv = store
            .get(&key)
            .await?
            .ok_or_else(|| Error::Data("the cluster has no bootstrap record".into()))?;
        let mut data: BootstrapData =
            serde_json::from_slice(&decrypt(token, &kv.value)?).map_err(|e| Error::Data(e.to_string()))?;
        if let Some(old) = data.encryption_config.take()
            && !same_json(&old, config_json)
        {
            data.encryption_history.push(config_hash(&old));
        }
        data.encryption_config = Some(config_json.to_string());
        let body = serde_json::to_vec(&data).map_err(|e| Error::Data(e.to_string()))?;
        match store.update(&key, encrypt(token, &body), kv.mod_revision).await {
            Ok(_) => return Ok(()),
            Err(store::Error::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_data_opens_only_with_its_token() {
        let t = Token("secret".into());
        let sealed = encrypt(&t, b"hello");
        let text = String::from_utf8(sealed.clone()).expect("text");
        let (salt, _) = text.split_once(':').expect("salt");
        assert_eq!(salt.len(), 16);
        assert_eq!(decrypt(&t, &sealed).expect("open"), b"hello");
        assert!(decrypt(&Token("other".into()), &sealed).is_err());
        // k3s's key: "/bootstrap/" + 12 hex digits of sha256("secret").
        assert_eq!(storage_key(&t), "/bootstrap/2bb80d537b1d");
    }

    #[tokio::test]
    async fn a_second_server_takes_the_first_ones_ca_and_encryption() {
        let dir = tempfile::tempdir().expect("tmp");
        let store =
            store::Store::open_embedded(&dir.path().join("store"), store::Options::default()).expect("store");
        let t = Token("tok".into());
        let paths = |n: &str| Paths {
            tls_dir: dir.path().join(n).join("tls"),
            encryption_config: dir.path().join(n).join("enc.json"),
        };
        let (a, b) = (paths("a"), paths("b"));
        assert_eq!(
            reconcile(&store, &t, &a, true).await.expect("first"),
            Outcome::First
        );
        crate::tls::Pki::load_or_create(&a.tls_dir, &["127.0.0.1".into()]).expect("pki");
        crate::encryption::Config::generate("aescbc")
            .expect("cfg")
            .save(&a.encryption_config)
            .expect("save");
        assert!(publish(&store, &t, &a).await.expect("publish"));
        assert_eq!(
            reconcile(&store, &t, &b, true).await.expect("join"),
            Outcome::Joined
        );
        let ca = |p: &Paths| std::fs::read_to_string(p.tls_dir.join("ca.key")).expect("ca");
        assert_eq!(ca(&a), ca(&b));
        assert_eq!(
            std::fs::read_to_string(&a.encryption_config).expect("a"),
            std::fs::read_to_string(&b.encryption_config).expect("b")
        );
        // Another token finds the record of another cluster and refuses.
        let err = reconcile(&store, &Token("x".into()), &paths("c"), false)
            .await
            .expect_err("other token");
        assert!(matches!(err, Error::Mismatch(_)), "{err}");
        // A different local encryption configuration is refused.
        let c = paths("d");
        crate::encryption::Config::generate("aescbc")
            .expect("cfg")
            .save(&c.encryption_config)
            .expect("save");
        assert!(matches!(
            reconcile(&store, &t, &c, true).await,
            Err(Error::Mismatch(_))
        ));
        // A rotation on one server reaches the record.
        let new = crate::encryption::Config::generate("aescbc").expect("cfg");
        save_encryption(&store, &t, &new.to_json().to_string())
            .await
            .expect("save");
        std::fs::remove_file(&c.encryption_config).expect("rm");
        reconcile(&store, &t, &c, true).await.expect("join");
        assert!(same_json(
            &std::fs::read_to_string(&c.encryption_config).expect("c"),
            &new.to_json().to_string()
        ));
        // A server restarted with the configuration from before the rotation takes the new one.
        reconcile(&store, &t, &b, true)
            .await
            .expect("restart after a rotation elsewhere");
        assert!(same_json(
            &std::fs::read_to_string(&b.encryption_config).expect("b"),
            &new.to_json().to_string()
        ));
    }
}
