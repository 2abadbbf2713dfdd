//! The registry's side of encryption at rest ([`crate::encryption`]; k3s's `secrets-encrypt` verbs): the
//! configuration in force, its status, enabling and disabling, key rotation and the re-encryption of every
//! stored object of the encrypted resources.

use super::*;

impl Registry {
    pub(super) fn encryption(&self) -> Arc<encryption::Config> {
        self.inner
            .encryption
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// `berth secrets-encrypt status` (k3s `secrets-encrypt status`): whether encryption is on, the write
    /// provider and key of Secrets, every key name, and how many stored Secrets are not yet written with
    /// the current key.
    ///
    /// # Errors
    /// Store errors.
    pub async fn encryption_status(&self) -> ApiResult<Value> {
        let cfg = self.encryption();
        let probe = "/registry/core/secrets/_/_";
        let keys: Vec<Value> = cfg
            .providers_for(probe)
            .into_iter()
            .flatten()
            .map(|p| json!({"provider": p.kind(), "keys": p.keys().iter().map(|k| k.name.clone()).collect::<Vec<_>>()}))
            .collect();
        let (mut total, mut stale) = (0, 0);
        for res in self.encrypted_resources(&cfg) {
            for kv in self
                .inner
                .store
                .list(&object::prefix(res, None), None, 0)
                .await?
                .kvs
            {
                total += 1;
                if cfg.decrypt(&kv.key, &kv.value).map(|(_, s)| s).unwrap_or(true) {
                    stale += 1;
                }
            }
        }
        let write = cfg.write_key(probe);
        Ok(json!({
            "encryption": if cfg.encrypts() { "Enabled" } else { "Disabled" },
            "configPath": self.inner.config.encryption_path.as_ref().map(|p| p.display().to_string()),
            "writeProvider": write.as_ref().map(|w| w.0.clone()),
            "writeKey": write.map(|w| w.1),
            "providers": keys,
            "objects": total,
            "stale": stale,
        }))
    }

    pub(super) fn encrypted_resources(&self, cfg: &encryption::Config) -> Vec<&'static Resource> {
        resources::RESOURCES
            .iter()
            .filter(|r| cfg.providers_for(&object::key(r, Some("_"), "_")).is_some())
            .collect()
    }

    /// `berth secrets-encrypt reencrypt`: rewrite every stored object an encryption rule covers whose
    /// value is not written with the current write key (upstream's "replace every Secret" step). Each
    /// rewrite is a compare-and-swap of the same content, so it bumps the resourceVersion as upstream's
    /// replace does. Returns how many objects were rewritten.
    ///
    /// # Errors
    /// Store errors; a value no key opens is an internal error.
    pub async fn reencrypt(&self) -> ApiResult<usize> {
        let _guard = self.inner.rotation_lock.lock().await;
        self.reencrypt_locked().await
    }

    pub(super) async fn reencrypt_locked(&self) -> ApiResult<usize> {
        let cfg = self.encryption();
        let mut rewritten = 0;
        for res in self.encrypted_resources(&cfg) {
            let prefix = object::prefix(res, None);
            for kv in self.inner.store.list(&prefix, None, 0).await?.kvs {
                let mut kv = kv;
                for _attempt in 0..8 {
                    let (plain, stale) = cfg
                        .decrypt(&kv.key, &kv.value)
                        .map_err(|e| ApiError::Internal(e.to_string()))?;
                    if !stale {
                        break;
                    }
                    let value = cfg
                        .encrypt(&kv.key, plain)
                        .map_err(|e| ApiError::Internal(e.to_string()))?;
                    match self.inner.store.update(&kv.key, value, kv.mod_revision).await {
                        Ok(_) => {
                            rewritten += 1;
                            break;
                        }
                        Err(store::Error::Conflict { .. }) => match self.inner.store.get(&kv.key).await? {
                            Some(now) => kv = now,
                            None => break,
                        },
                        Err(store::Error::NotFound { .. }) => break,
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Ok(rewritten)
    }

    /// `berth secrets-encrypt rotate` (upstream's documented key rotation, in one step): a fresh key
    /// becomes the write key (old keys still read), the configuration is saved, every covered object is
    /// re-encrypted with it, and the old keys are dropped and the configuration saved again. Returns the
    /// status afterwards.
    ///
    /// # Errors
    /// 400 when encryption is not configured; store or file errors.
    pub async fn rotate_encryption_key(&self) -> ApiResult<Value> {
        let _guard = self.inner.rotation_lock.lock().await;
        let path = self.inner.config.encryption_path.clone().ok_or_else(|| {
            ApiError::BadRequest(
                "secrets encryption is not enabled (berth server --secrets-encryption)".into(),
            )
        })?;
        let mut cfg = (*self.encryption()).clone();
        if cfg.rules.is_empty() {
            return Err(ApiError::BadRequest(
                "secrets encryption is not enabled (berth server --secrets-encryption)".into(),
            ));
        }
        let name = format!("key-{}", now().as_second());
        cfg.add_write_key(&name, "aescbc")
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        self.install_encryption(&path, cfg.clone()).await?;
        self.reencrypt_locked().await?;
        // A write that encoded with the old key just before the switch may have landed after the first
        // pass listed its key: a second pass catches it before the old key goes.
        self.reencrypt_locked().await?;
        cfg.drop_old_keys();
        self.install_encryption(&path, cfg).await?;
        drop(_guard);
        self.encryption_status().await
    }

    /// `berth secrets-encrypt enable|disable` (k3s's verbs): switch the write provider between the
    /// encrypting one and `identity` (keys stay for reading), save the configuration, and re-encrypt
    /// every covered object so the store matches. Returns the status afterwards.
    ///
    /// # Errors
    /// 400 when encryption was never configured or there is no key to enable; store or file errors.
    pub async fn set_encryption(&self, on: bool) -> ApiResult<Value> {
        let guard = self.inner.rotation_lock.lock().await;
        let not_configured = || {
            ApiError::BadRequest(
                "secrets encryption is not configured (berth server --secrets-encryption)".into(),
            )
        };
        let path = self
            .inner
            .config
            .encryption_path
            .clone()
            .ok_or_else(not_configured)?;
        let mut cfg = (*self.encryption()).clone();
        if cfg.rules.is_empty() {
            return Err(not_configured());
        }
        cfg.set_encrypting(on)
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        self.install_encryption(&path, cfg).await?;
        self.reencrypt_locked().await?;
        drop(guard);
        self.encryption_status().await
    }

    pub(super) async fn install_encryption(
        &self,
        path: &std::path::Path,
        cfg: encryption::Config,
    ) -> ApiResult<()> {
        cfg.save(path).map_err(|e| ApiError::Internal(e.to_string()))?;
        if let Some(token) = &self.inner.config.cluster_token {
            crate::cluster::save_encryption(
                &self.inner.store,
                token,
                &serde_json::to_string_pretty(&cfg.to_json()).unwrap_or_default(),
            )
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        }
        *self
            .inner
            .encryption
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(cfg);
        Ok(())
    }
}
