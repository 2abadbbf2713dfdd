//! Image pulls from registries (oci-client), as the kubelet's image manager does (`pkg/kubelet/images`):
//! `imagePullPolicy` decides, `imagePullSecrets` of type `kubernetes.io/dockerconfigjson` give credentials
//! (anonymous otherwise), and registries on loopback are spoken to over plain HTTP (as containerd treats
//! `localhost` registries). The pulled image goes into the node's [`ImageStore`].

use crate::image::ImageStore;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, manifest};

/// Layer media types accepted from registries (plain, gzip and zstd, OCI and Docker).
const LAYER_TYPES: &[&str] = &[
    manifest::IMAGE_LAYER_MEDIA_TYPE,
    manifest::IMAGE_LAYER_GZIP_MEDIA_TYPE,
    manifest::IMAGE_DOCKER_LAYER_TAR_MEDIA_TYPE,
    manifest::IMAGE_DOCKER_LAYER_GZIP_MEDIA_TYPE,
    "application/vnd.oci.image.layer.v1.tar+zstd",
];

fn is_loopback(registry: &str) -> bool {
    let host = registry.rsplit_once(':').map_or(registry, |(h, p)| {
        if p.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            registry
        }
    });
    host == "localhost" || host.starts_with("127.") || host == "[::1]"
}

/// Credentials for `registry` from `.dockerconfigjson` documents (`auths.<registry>.username/password`
/// or `auth` = base64 `user:pass`), anonymous when none matches.
pub fn auth_for(registry: &str, dockerconfigs: &[Vec<u8>]) -> RegistryAuth {
    use base64::Engine;
    for doc in dockerconfigs {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(doc) else {
            continue;
        };
        let Some(auths) = v["auths"].as_object() else {
            continue;
        };
        for (host, entry) in auths {
            let host = host
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .trim_end_matches('/');
            let matches = host == registry || (registry == "docker.io" && host.contains("index.docker.io"));
            if !matches {
                continue;
            }
            if let (Some(u), Some(p)) = (entry["username"].as_str(), entry["password"].as_str()) {
                return RegistryAuth::Basic(u.into(), p.into());
            }
            if let Some(a) = entry["auth"].as_str()
                && let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(a)
                && let Some((u, p)) = String::from_utf8_lossy(&raw).split_once(':')
            {
                return RegistryAuth::Basic(u.into(), p.into());
            }
        }
    }
    RegistryAuth::Anonymous
}

/// Pull `image` into `store`; returns its manifest digest in the store.
///
/// # Errors
/// The registry's or the store's error, worded for the pod's `ErrImagePull` message.
pub async fn pull(store: &ImageStore, image: &str, dockerconfigs: &[Vec<u8>]) -> Result<String, String> {
    let name = crate::image::normalize(image);
    let reference: Reference = name
        .parse()
        .map_err(|e| format!("invalid image reference {image:?}: {e}"))?;
    let registry = reference.resolve_registry().to_string();
    let protocol = if is_loopback(&registry) {
        ClientProtocol::HttpsExcept(vec![registry.clone()])
    } else {
        ClientProtocol::Https
    };
    let client = Client::new(ClientConfig {
        protocol,
        connect_timeout: Some(std::time::Duration::from_secs(10)),
        read_timeout: Some(std::time::Duration::from_secs(60)),
        ..ClientConfig::default()
    });
    let auth = auth_for(reference.registry(), dockerconfigs);
    let data = client
        .pull(&reference, &auth, LAYER_TYPES.to_vec())
        .await
        .map_err(|e| format!("failed to pull image {image:?}: {e}"))?;
    let layers: Vec<(String, Vec<u8>)> = data.layers.into_iter().map(|l| (l.media_type, l.data)).collect();
    let store = store.clone();
    let config = data.config.data;
    let stored = tokio::task::spawn_blocking(move || store.store_pulled(&name, &config, &layers))
        .await
        .map_err(|e| format!("storing image {image:?}: {e}"))?;
    stored.map_err(|e| format!("storing image {image:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_and_docker_credentials() {
        assert!(is_loopback("127.0.0.1:5000") && is_loopback("localhost:5000") && is_loopback("localhost"));
        assert!(!is_loopback("registry.example.com:5000"));
        let cfg = br#"{"auths":{"https://reg.example.com":{"auth":"dXNlcjpwYXNz"},"other.io":{"username":"a","password":"b"}}}"#.to_vec();
        assert_eq!(
            auth_for("reg.example.com", std::slice::from_ref(&cfg)),
            RegistryAuth::Basic("user".into(), "pass".into())
        );
        assert_eq!(
            auth_for("other.io", std::slice::from_ref(&cfg)),
            RegistryAuth::Basic("a".into(), "b".into())
        );
        assert_eq!(auth_for("nope.io", &[cfg]), RegistryAuth::Anonymous);
    }
}
