//! Encryption at rest (upstream `k8s.io/apiserver/pkg/server/options/encryptionconfig` and
//! `pkg/storage/value/encrypt/{aes,secretbox,identity}`; k3s `--secrets-encryption`): an
//! `EncryptionConfiguration` (`apiserver.config.k8s.io/v1`) names, per resource, an ordered list of
//! providers — `aescbc`, `aesgcm`, `secretbox` with named keys, and `identity`. Writes use the first
//! provider's first key; reads pick the provider and key named by the stored value's prefix
//! `k8s:enc:<provider>:v1:<key name>:`, so values written under older keys stay readable until they are
//! re-encrypted. The store only ever sees the resulting bytes.
//!
//! Ciphers are RustCrypto's: AES-CBC with PKCS#7 padding and a random IV (upstream `aescbc`), AES-GCM with
//! a random 12-byte nonce and the storage key as additional data (upstream `aesgcm`), and NaCl's
//! XSalsa20-Poly1305 secretbox with a random 24-byte nonce (upstream `secretbox`).

use aes_gcm::aead::rand_core::RngCore;
use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use base64::Engine;
use serde_json::{Value, json};
use std::path::Path;

/// Why a configuration or a value could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file is malformed.
    #[error("encryption configuration: {0}")]
    Config(String),
    /// Reading or writing the configuration file failed.
    #[error("encryption configuration {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A value could not be encrypted (the cipher refused the key).
    #[error("encrypting {key}: {why}")]
    Encrypt {
        /// The storage key.
        key: String,
        /// Why.
        why: String,
    },
    /// A stored value could not be decrypted (unknown key, wrong key, corrupt data).
    #[error("decrypting {key}: {why}")]
    Decrypt {
        /// The storage key.
        key: String,
        /// Why.
        why: String,
    },
}

/// The stored value's prefix of every encrypted value (upstream's `k8s:enc:`).
pub const ENCRYPTED_PREFIX: &[u8] = b"k8s:enc:";

/// A cipher provider with its keys, newest (write) key first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provider {
    /// No encryption.
    Identity,
    /// AES-CBC, PKCS#7 (`aescbc`).
    AesCbc(Vec<Key>),
    /// AES-GCM (`aesgcm`).
    AesGcm(Vec<Key>),
    /// XSalsa20-Poly1305 (`secretbox`).
    Secretbox(Vec<Key>),
}

/// A named key.
#[derive(Clone, PartialEq, Eq)]
pub struct Key {
    /// The key's name (part of every value's prefix).
    pub name: String,
    /// The raw secret (16, 24 or 32 bytes for AES, 32 for secretbox).
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({}, {} bytes)", self.name, self.secret.len())
    }
}

impl Provider {
    /// The provider's name in the configuration and in prefixes.
    pub fn kind(&self) -> &'static str {
        match self {
            Provider::Identity => "identity",
            Provider::AesCbc(_) => "aescbc",
            Provider::AesGcm(_) => "aesgcm",
            Provider::Secretbox(_) => "secretbox",
        }
    }

    /// The provider's keys (none for identity).
    pub fn keys(&self) -> &[Key] {
        match self {
            Provider::Identity => &[],
            Provider::AesCbc(k) | Provider::AesGcm(k) | Provider::Secretbox(k) => k,
        }
    }

    fn keys_mut(&mut self) -> Option<&mut Vec<Key>> {
        match self {
            Provider::Identity => None,
            Provider::AesCbc(k) | Provider::AesGcm(k) | Provider::Secretbox(k) => Some(k),
        }
    }

    /// A provider of `kind` with one fresh random 32-byte key named `name`.
    ///
    /// # Errors
    /// [`Error::Config`] for an unknown kind.
    pub fn generate(kind: &str, name: &str) -> Result<Provider, Error> {
        let key = vec![Key {
            name: name.to_string(),
            secret: random_key(),
        }];
        match kind {
            "aescbc" => Ok(Provider::AesCbc(key)),
            "aesgcm" => Ok(Provider::AesGcm(key)),
            "secretbox" => Ok(Provider::Secretbox(key)),
            other => Err(Error::Config(format!(
                "unknown provider {other:?} (aescbc, aesgcm or secretbox)"
            ))),
        }
    }

    fn prefix(&self, key: &Key) -> Vec<u8> {
        format!("k8s:enc:{}:v1:{}:", self.kind(), key.name).into_bytes()
    }

    fn seal(&self, key: &Key, storage_key: &str, plain: &[u8]) -> Result<Vec<u8>, String> {
        let mut out = self.prefix(key);
        match self {
            Provider::Identity => out = plain.to_vec(),
            Provider::AesCbc(_) => {
                let mut iv = [0u8; 16];
                OsRng.fill_bytes(&mut iv);
                out.extend_from_slice(&iv);
                out.extend(aes_cbc_encrypt(&key.secret, &iv, plain)?);
            }
            Provider::AesGcm(_) => {
                let mut nonce = [0u8; 12];
                OsRng.fill_bytes(&mut nonce);
                out.extend_from_slice(&nonce);
                let payload = Payload {
                    msg: plain,
                    aad: storage_key.as_bytes(),
                };
                out.extend(aes_gcm_seal(&key.secret, &nonce, payload)?);
            }
            Provider::Secretbox(_) => {
                use crypto_secretbox::XSalsa20Poly1305;
                let mut nonce = [0u8; 24];
                OsRng.fill_bytes(&mut nonce);
                let cipher = XSalsa20Poly1305::new_from_slice(&key.secret).map_err(|_| bad_len(key))?;
                out.extend_from_slice(&nonce);
                out.extend(
                    cipher
                        .encrypt(&nonce.into(), plain)
                        .map_err(|_| "secretbox seal failed".to_string())?,
                );
            }
        }
        Ok(out)
    }

    fn open(&self, key: &Key, storage_key: &str, data: &[u8]) -> Result<Vec<u8>, String> {
        match self {
            Provider::Identity => Ok(data.to_vec()),
            Provider::AesCbc(_) => {
                if data.len() < 16 {
                    return Err("the stored data was shorter than the required block size".into());
                }
                let (iv, ct) = data.split_at(16);
                aes_cbc_decrypt(&key.secret, iv, ct)
            }
            Provider::AesGcm(_) => {
                if data.len() < 12 {
                    return Err("the stored data was shorter than the required size".into());
                }
                let (nonce, ct) = data.split_at(12);
                let payload = Payload {
                    msg: ct,
                    aad: storage_key.as_bytes(),
                };
                aes_gcm_open(&key.secret, nonce, payload)
            }
            Provider::Secretbox(_) => {
                use crypto_secretbox::XSalsa20Poly1305;
                if data.len() < 24 {
                    return Err("the stored data was shorter than the required size".into());
                }
                let (nonce, ct) = data.split_at(24);
                let cipher = XSalsa20Poly1305::new_from_slice(&key.secret).map_err(|_| bad_len(key))?;
                cipher
                    .decrypt(nonce.into(), ct)
                    .map_err(|_| "output array was not large enough for encryption".to_string())
            }
        }
    }
}

fn bad_len(key: &Key) -> String {
    format!(
        "key {:?} has an invalid length of {} bytes",
        key.name,
        key.secret.len()
    )
}

fn aes_cbc_encrypt(secret: &[u8], iv: &[u8; 16], plain: &[u8]) -> Result<Vec<u8>, String> {
    use cbc::cipher::{BlockEncryptMut, KeyIvInit, block_padding::Pkcs7};
    Ok(match secret.len() {
        16 => cbc::Encryptor::<aes::Aes128>::new_from_slices(secret, iv)
            .map_err(|e| e.to_string())?
            .encrypt_padded_vec_mut::<Pkcs7>(plain),
        24 => cbc::Encryptor::<aes::Aes192>::new_from_slices(secret, iv)
            .map_err(|e| e.to_string())?
            .encrypt_padded_vec_mut::<Pkcs7>(plain),
        32 => cbc::Encryptor::<aes::Aes256>::new_from_slices(secret, iv)
            .map_err(|e| e.to_string())?
            .encrypt_padded_vec_mut::<Pkcs7>(plain),
        n => return Err(format!("invalid AES key length {n}")),
    })
}

fn aes_cbc_decrypt(secret: &[u8], iv: &[u8], ct: &[u8]) -> Result<Vec<u8>, String> {
    use cbc::cipher::{BlockDecryptMut, KeyIvInit, block_padding::Pkcs7};
    let unpad = |r: Result<Vec<u8>, cbc::cipher::block_padding::UnpadError>| {
        r.map_err(|_| "invalid PKCS7 data (empty or not padded)".to_string())
    };
    match secret.len() {
        16 => unpad(
            cbc::Decryptor::<aes::Aes128>::new_from_slices(secret, iv)
                .map_err(|e| e.to_string())?
                .decrypt_padded_vec_mut::<Pkcs7>(ct),
        ),
        24 => unpad(
            cbc::Decryptor::<aes::Aes192>::new_from_slices(secret, iv)
                .map_err(|e| e.to_string())?
                .decrypt_padded_vec_mut::<Pkcs7>(ct),
        ),
        32 => unpad(
            cbc::Decryptor::<aes::Aes256>::new_from_slices(secret, iv)
                .map_err(|e| e.to_string())?
                .decrypt_padded_vec_mut::<Pkcs7>(ct),
        ),
        n => Err(format!("invalid AES key length {n}")),
    }
}

type Aes192Gcm = aes_gcm::AesGcm<aes::Aes192, aes_gcm::aead::consts::U12>;

fn aes_gcm_seal(secret: &[u8], nonce: &[u8; 12], payload: Payload) -> Result<Vec<u8>, String> {
    let nonce = aes_gcm::Nonce::from_slice(nonce);
    let fail = |_| "AES-GCM seal failed".to_string();
    match secret.len() {
        16 => aes_gcm::Aes128Gcm::new_from_slice(secret)
            .map_err(|e| e.to_string())?
            .encrypt(nonce, payload)
            .map_err(fail),
        24 => Aes192Gcm::new_from_slice(secret)
            .map_err(|e| e.to_string())?
            .encrypt(nonce, payload)
            .map_err(fail),
        32 => aes_gcm::Aes256Gcm::new_from_slice(secret)
            .map_err(|e| e.to_string())?
            .encrypt(nonce, payload)
            .map_err(fail),
        n => Err(format!("invalid AES key length {n}")),
    }
}

fn aes_gcm_open(secret: &[u8], nonce: &[u8], payload: Payload) -> Result<Vec<u8>, String> {
    let nonce = aes_gcm::Nonce::from_slice(nonce);
    let fail = |_| "cipher: message authentication failed".to_string();
    match secret.len() {
        16 => aes_gcm::Aes128Gcm::new_from_slice(secret)
            .map_err(|e| e.to_string())?
            .decrypt(nonce, payload)
            .map_err(fail),
        24 => Aes192Gcm::new_from_slice(secret)
            .map_err(|e| e.to_string())?
            .decrypt(nonce, payload)
            .map_err(fail),
        32 => aes_gcm::Aes256Gcm::new_from_slice(secret)
            .map_err(|e| e.to_string())?
            .decrypt(nonce, payload)
            .map_err(fail),
        n => Err(format!("invalid AES key length {n}")),
    }
}

/// 32 random bytes from the OS.
pub fn random_key() -> Vec<u8> {
    let mut k = vec![0u8; 32];
    OsRng.fill_bytes(&mut k);
    k
}

/// One `resources` entry: which resources, and their providers in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `secrets`, `deployments.apps`, `*.apps`, `*.*`.
    pub resources: Vec<String>,
    /// Providers, the first one encrypts.
    pub providers: Vec<Provider>,
}

/// A parsed `EncryptionConfiguration`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// The rules, first match wins.
    pub rules: Vec<Rule>,
}

impl Config {
    /// k3s's initial configuration: Secrets with a fresh key of `provider` (`aescbc`, `aesgcm` or
    /// `secretbox`) named `<provider>key`, then `identity` so values written before stay readable.
    ///
    /// # Errors
    /// [`Error::Config`] for an unknown provider.
    pub fn generate(provider: &str) -> Result<Config, Error> {
        Ok(Config {
            rules: vec![Rule {
                resources: vec!["secrets".into()],
                providers: vec![
                    Provider::generate(provider, &format!("{provider}key"))?,
                    Provider::Identity,
                ],
            }],
        })
    }

    /// Parse the JSON or YAML of an `EncryptionConfiguration` (`apiserver.config.k8s.io/v1`).
    ///
    /// # Errors
    /// [`Error::Config`] naming the bad part.
    pub fn parse(text: &str) -> Result<Config, Error> {
        let bad = |m: String| Error::Config(m);
        let v: Value = serde_json::from_str(text)
            .or_else(|_| serde_saphyr::from_str(text))
            .map_err(|e| bad(format!("not JSON or YAML: {e}")))?;
        if v.get("kind").and_then(Value::as_str) != Some("EncryptionConfiguration") {
            return Err(bad("kind must be EncryptionConfiguration".into()));
        }
        let mut rules = Vec::new();
        for (i, r) in v
            .get("resources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let resources: Vec<String> = r
                .get("resources")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect();
            if resources.is_empty() {
                return Err(bad(format!("resources[{i}].resources: Required value")));
            }
            let mut providers = Vec::new();
            for (j, p) in r
                .get("providers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let obj = p
                    .as_object()
                    .filter(|o| o.len() == 1)
                    .ok_or_else(|| bad(format!("resources[{i}].providers[{j}]: exactly one provider")))?;
                let (kind, body) = obj.iter().next().expect("one entry");
                let keys = || -> Result<Vec<Key>, Error> {
                    let mut out = Vec::new();
                    for (k, key) in body
                        .get("keys")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .enumerate()
                    {
                        let at = format!("resources[{i}].providers[{j}].{kind}.keys[{k}]");
                        let name = key
                            .get("name")
                            .and_then(Value::as_str)
                            .filter(|n| !n.is_empty() && !n.contains(':'))
                            .ok_or_else(|| bad(format!("{at}.name: a name without ':' is required")))?;
                        let secret = key
                            .get("secret")
                            .and_then(Value::as_str)
                            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                            .ok_or_else(|| bad(format!("{at}.secret: base64 is required")))?;
                        let ok = match kind.as_str() {
                            "secretbox" => secret.len() == 32,
                            _ => matches!(secret.len(), 16 | 24 | 32),
                        };
                        if !ok {
                            return Err(bad(format!(
                                "{at}.secret: key of {} bytes is not valid for {kind}",
                                secret.len()
                            )));
                        }
                        out.push(Key {
                            name: name.to_string(),
                            secret,
                        });
                    }
                    if out.is_empty() {
                        return Err(bad(format!(
                            "resources[{i}].providers[{j}].{kind}.keys: Required value"
                        )));
                    }
                    Ok(out)
                };
                providers.push(match kind.as_str() {
                    "identity" => Provider::Identity,
                    "aescbc" => Provider::AesCbc(keys()?),
                    "aesgcm" => Provider::AesGcm(keys()?),
                    "secretbox" => Provider::Secretbox(keys()?),
                    other => {
                        return Err(bad(format!(
                            "resources[{i}].providers[{j}]: provider {other:?} is not supported (kms is not)"
                        )));
                    }
                });
            }
            if providers.is_empty() {
                return Err(bad(format!("resources[{i}].providers: Required value")));
            }
            rules.push(Rule { resources, providers });
        }
        Ok(Config { rules })
    }

    /// The configuration as upstream's JSON (what k3s writes to `encryption-config.json`).
    pub fn to_json(&self) -> Value {
        let rules: Vec<Value> = self
            .rules
            .iter()
            .map(|r| {
                let providers: Vec<Value> = r
                    .providers
                    .iter()
                    .map(|p| match p {
                        Provider::Identity => json!({"identity": {}}),
                        _ => {
                            let keys: Vec<Value> = p
                                .keys()
                                .iter()
                                .map(|k| {
                                    json!({"name": k.name,
                                           "secret": base64::engine::general_purpose::STANDARD.encode(&k.secret)})
                                })
                                .collect();
                            json!({p.kind(): {"keys": keys}})
                        }
                    })
                    .collect();
                json!({"resources": r.resources, "providers": providers})
            })
            .collect();
        json!({"kind": "EncryptionConfiguration", "apiVersion": "apiserver.config.k8s.io/v1", "resources": rules})
    }

    /// Read the configuration at `path`.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::Config`].
    pub fn load(path: &Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text)
    }

    /// Write the configuration to `path` (mode 0600, in a 0700 directory; atomically by rename).
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        use std::os::unix::fs::PermissionsExt;
        let io = |source| Error::Io {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        }
        let body = serde_json::to_vec_pretty(&self.to_json()).unwrap_or_default();
        crate::files::write_private(path, &body).map_err(io)
    }

    /// The providers for the object stored at `storage_key` (`/registry/<group|core>/<plural>/…`); none
    /// (identity) when no rule names its resource.
    pub fn providers_for(&self, storage_key: &str) -> Option<&[Provider]> {
        let mut parts = storage_key.trim_start_matches('/').split('/').skip(1);
        let group = parts.next()?;
        let plural = parts.next()?;
        let group = if group == "core" { "" } else { group };
        let qualified = if group.is_empty() {
            plural.to_string()
        } else {
            format!("{plural}.{group}")
        };
        self.rules
            .iter()
            .find(|r| {
                r.resources.iter().any(|res| {
                    res == &qualified
                        || res == "*.*"
                        || (group.is_empty() && res == "*.")
                        || res
                            .strip_prefix("*.")
                            .is_some_and(|g| !g.is_empty() && g == group)
                })
            })
            .map(|r| r.providers.as_slice())
    }

    /// Whether anything is encrypted on write.
    pub fn encrypts(&self) -> bool {
        self.rules
            .iter()
            .any(|r| r.providers.first().is_some_and(|p| *p != Provider::Identity))
    }

    /// The value to store for `plain` at `storage_key`: encrypted with the first provider's first key.
    ///
    /// # Errors
    /// [`Error::Encrypt`] when the cipher refuses the key.
    pub fn encrypt(&self, storage_key: &str, plain: Vec<u8>) -> Result<Vec<u8>, Error> {
        let Some(first) = self.providers_for(storage_key).and_then(<[Provider]>::first) else {
            return Ok(plain);
        };
        let Some(key) = first.keys().first() else {
            return Ok(plain);
        };
        first
            .seal(key, storage_key, &plain)
            .map_err(|why| Error::Encrypt {
                key: storage_key.to_string(),
                why,
            })
    }

    /// The plain value of a stored value, and whether it is stale (not written with the current write
    /// key, so a re-encryption would rewrite it). Unprefixed values are read as identity only where the
    /// rule lists `identity` (or no rule names the resource), as upstream does.
    ///
    /// # Errors
    /// [`Error::Decrypt`] when no listed key matches the value's prefix or the key does not open it.
    pub fn decrypt(&self, storage_key: &str, stored: &[u8]) -> Result<(Vec<u8>, bool), Error> {
        let err = |why: String| Error::Decrypt {
            key: storage_key.to_string(),
            why,
        };
        let Some(providers) = self.providers_for(storage_key) else {
            return if stored.starts_with(ENCRYPTED_PREFIX) {
                Err(err(
                    "the value is encrypted but no encryption rule covers this resource".into(),
                ))
            } else {
                Ok((stored.to_vec(), false))
            };
        };
        let current = providers
            .first()
            .and_then(|p| p.keys().first().map(|k| p.prefix(k)));
        if !stored.starts_with(ENCRYPTED_PREFIX) {
            if providers.contains(&Provider::Identity) {
                return Ok((stored.to_vec(), current.is_some()));
            }
            return Err(err(
                "no matching prefix found: the value is not encrypted and identity is not listed".into(),
            ));
        }
        for p in providers {
            for k in p.keys() {
                let prefix = p.prefix(k);
                if let Some(rest) = stored.strip_prefix(prefix.as_slice()) {
                    let plain = p.open(k, storage_key, rest).map_err(err)?;
                    return Ok((plain, current.as_deref() != Some(prefix.as_slice())));
                }
            }
        }
        let shown: String = String::from_utf8_lossy(&stored[..stored.len().min(64)])
            .split(':')
            .take(5)
            .collect::<Vec<_>>()
            .join(":");
        Err(err(format!(
            "no key in the encryption configuration matches {shown}:"
        )))
    }

    /// The first encrypting provider of the rule for Secrets and its write key name, for status.
    pub fn write_key(&self, storage_key: &str) -> Option<(String, String)> {
        let p = self.providers_for(storage_key)?.first()?;
        let k = p.keys().first()?;
        Some((p.kind().to_string(), k.name.clone()))
    }

    /// Rotation, step 1 (upstream's documented rotation): a fresh key of the write provider's kind becomes
    /// the write key of every rule; old keys stay for reading. A rule writing with identity gets `default`
    /// (`aescbc`) in front. Returns the new key's name.
    ///
    /// # Errors
    /// [`Error::Config`] for an unknown `default`.
    pub fn add_write_key(&mut self, name: &str, default: &str) -> Result<(), Error> {
        for rule in &mut self.rules {
            match rule.providers.first_mut().and_then(Provider::keys_mut) {
                Some(keys) => keys.insert(
                    0,
                    Key {
                        name: name.to_string(),
                        secret: random_key(),
                    },
                ),
                None => rule.providers.insert(0, Provider::generate(default, name)?),
            }
        }
        Ok(())
    }

    /// k3s `secrets-encrypt enable`/`disable`: make the first encrypting provider (enable) or `identity`
    /// (disable, added when absent) the write provider of every rule; the other providers stay for
    /// reading.
    ///
    /// # Errors
    /// [`Error::Config`] when enabling a rule that has no encrypting provider.
    pub fn set_encrypting(&mut self, on: bool) -> Result<(), Error> {
        for rule in &mut self.rules {
            let pos = if on {
                rule.providers
                    .iter()
                    .position(|p| *p != Provider::Identity)
                    .ok_or_else(|| {
                        Error::Config(format!("no key for {:?}: rotate to create one", rule.resources))
                    })?
            } else {
                match rule.providers.iter().position(|p| *p == Provider::Identity) {
                    Some(i) => i,
                    None => {
                        rule.providers.push(Provider::Identity);
                        rule.providers.len() - 1
                    }
                }
            };
            let p = rule.providers.remove(pos);
            rule.providers.insert(0, p);
        }
        Ok(())
    }

    /// Rotation, last step: drop every key but the write key of each rule's first provider, and every
    /// other encrypting provider (identity stays, so values written before encryption stay readable).
    pub fn drop_old_keys(&mut self) {
        for rule in &mut self.rules {
            if let Some(keys) = rule.providers.first_mut().and_then(Provider::keys_mut) {
                keys.truncate(1);
            }
            let mut first = true;
            rule.providers.retain(|p| {
                let keep = first || *p == Provider::Identity;
                first = false;
                keep
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "/registry/core/secrets/default/s";

    #[test]
    fn every_provider_round_trips_and_hides_the_value() {
        for kind in ["aescbc", "aesgcm", "secretbox"] {
            let c = Config::generate(kind).unwrap();
            let stored = c.encrypt(KEY, b"{\"data\":\"hunter2\"}".to_vec()).unwrap();
            assert!(stored.starts_with(format!("k8s:enc:{kind}:v1:{kind}key:").as_bytes()));
            assert!(!stored.windows(7).any(|w| w == b"hunter2"), "{kind}");
            let (plain, stale) = c.decrypt(KEY, &stored).unwrap();
            assert_eq!(plain, b"{\"data\":\"hunter2\"}");
            assert!(!stale);
            // Plain values written before encryption are read through identity, and are stale.
            assert_eq!(c.decrypt(KEY, b"{}").unwrap(), (b"{}".to_vec(), true));
            // Other resources are not encrypted.
            let cm = "/registry/core/configmaps/default/c";
            assert_eq!(c.encrypt(cm, b"{}".to_vec()).unwrap(), b"{}");
        }
    }

    #[test]
    fn aesgcm_binds_the_value_to_its_key() {
        let c = Config::generate("aesgcm").unwrap();
        let stored = c.encrypt(KEY, b"x".to_vec()).unwrap();
        assert!(
            c.decrypt("/registry/core/secrets/default/other", &stored)
                .is_err()
        );
    }

    #[test]
    fn rotation_keeps_old_values_readable_until_the_old_key_is_dropped() {
        let mut c = Config::generate("secretbox").unwrap();
        let old = c.encrypt(KEY, b"v".to_vec()).unwrap();
        c.add_write_key("k2", "aescbc").unwrap();
        let (plain, stale) = c.decrypt(KEY, &old).unwrap();
        assert_eq!((plain.as_slice(), stale), (&b"v"[..], true));
        let new = c.encrypt(KEY, b"v".to_vec()).unwrap();
        assert!(new.starts_with(b"k8s:enc:secretbox:v1:k2:"));
        c.drop_old_keys();
        assert!(c.decrypt(KEY, &old).is_err());
        assert_eq!(c.decrypt(KEY, &new).unwrap().0, b"v");
        // Round trip through the file format.
        let again = Config::parse(&c.to_json().to_string()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn disable_writes_in_clear_and_enable_encrypts_again() {
        let mut c = Config::generate("aesgcm").unwrap();
        let sealed = c.encrypt(KEY, b"v".to_vec()).unwrap();
        c.set_encrypting(false).unwrap();
        assert!(!c.encrypts());
        assert_eq!(c.encrypt(KEY, b"v".to_vec()).unwrap(), b"v");
        assert_eq!(
            c.decrypt(KEY, &sealed).unwrap(),
            (b"v".to_vec(), true),
            "old values still read"
        );
        c.set_encrypting(true).unwrap();
        assert!(c.encrypts());
        assert_eq!(c.decrypt(KEY, &sealed).unwrap(), (b"v".to_vec(), false));
    }

    #[test]
    fn upstream_yaml_is_accepted_and_bad_configs_are_refused() {
        let yaml = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets, '*.apps']\n  providers:\n  - aesgcm:\n      keys:\n      - name: key1\n        secret: c2VjcmV0IGlzIHNlY3VyZQ==\n  - identity: {}\n";
        let c = Config::parse(yaml).unwrap();
        assert_eq!(c.rules[0].providers[0].keys()[0].secret, b"secret is secure");
        assert!(c.providers_for("/registry/apps/deployments/ns/d").is_some());
        assert!(c.providers_for("/registry/core/configmaps/ns/d").is_none());
        let no_identity = yaml.replace("  - identity: {}\n", "");
        let c = Config::parse(&no_identity).unwrap();
        assert!(c.decrypt(KEY, b"{}").is_err(), "plain values need identity");
        assert!(Config::parse(&yaml.replace("c2VjcmV0IGlzIHNlY3VyZQ==", "c2hvcnQ=")).is_err());
        assert!(Config::parse(&yaml.replace("aesgcm", "kms")).is_err());
    }
}
