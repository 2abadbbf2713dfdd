//! The pod's volumes as the kubelet's volume manager sets them up (upstream `pkg/volume`): emptyDir,
//! hostPath, claims (bound to local PersistentVolumes), and configMap, secret, projected and downwardAPI
//! volumes written as the atomic writer does.

use super::*;

impl Agent {
    /// Host directories of the pod's volumes (claims must be bound).
    pub(super) async fn volumes(&self, p: &Pod, dir: &Path) -> Result<HashMap<String, PathBuf>, String> {
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        let mut out = HashMap::new();
        for v in p
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .into_iter()
            .flatten()
        {
            let path = if let Some(c) = &v.persistent_volume_claim {
                let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &ns);
                let claim = claims
                    .get_opt(&c.claim_name)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("persistentvolumeclaim {:?} not found", c.claim_name))?;
                let vol = claim
                    .spec
                    .and_then(|s| s.volume_name)
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| format!("persistentvolumeclaim {:?} is not bound", c.claim_name))?;
                let pvs: Api<PersistentVolume> = Api::all(self.client.clone());
                let pv = pvs.get(&vol).await.map_err(|e| e.to_string())?;
                let bytes = pv
                    .spec
                    .as_ref()
                    .and_then(|s| s.capacity.as_ref()?.get("storage"))
                    .and_then(|q| api::quantity::bytes(&q.0));
                let hp = pv
                    .spec
                    .and_then(|s| s.host_path)
                    .ok_or_else(|| format!("volume {vol} has no local path"))?;
                // A capacity-enforced volume must be mounted before a container binds it (after a
                // reboot the agent may get here before the provisioner's resync does), and grown to its
                // capacity if that was raised while containers held it (offline expansion).
                let path = PathBuf::from(hp.path);
                crate::capacity::ensure_mounted(&path).map_err(|e| format!("mounting volume {vol}: {e}"))?;
                if let Some(b) = bytes
                    && let Err(e) = crate::capacity::grow(&path, b)
                {
                    tracing::debug!(volume = %vol, error = %e, "volume not grown yet");
                }
                path
            } else if v.empty_dir.is_some() {
                dir.join("volumes/empty-dir").join(&v.name)
            } else if let Some(h) = &v.host_path {
                PathBuf::from(&h.path)
            } else if let Some(cm) = &v.config_map {
                let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &ns);
                let data = match api.get_opt(&cm.name).await.map_err(|e| e.to_string())? {
                    Some(m) => m.data.unwrap_or_default(),
                    None if cm.optional == Some(true) => BTreeMap::new(),
                    None => return Err(format!("configmap {:?} not found", cm.name)),
                };
                let d = dir.join("volumes/configmap").join(&v.name);
                write_files(&d, data.into_iter().map(|(k, v)| (k, v.into_bytes())))?;
                d
            } else if let Some(s) = &v.secret {
                let name = s.secret_name.clone().unwrap_or_default();
                let api: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
                let data = match api.get_opt(&name).await.map_err(|e| e.to_string())? {
                    Some(sec) => sec.data.unwrap_or_default(),
                    None if s.optional == Some(true) => BTreeMap::new(),
                    None => return Err(format!("secret {name:?} not found")),
                };
                let d = dir.join("volumes/secret").join(&v.name);
                write_files(&d, data.into_iter().map(|(k, v)| (k, v.0)))?;
                d
            } else if let Some(da) = &v.downward_api {
                let d = dir.join("volumes/downward-api").join(&v.name);
                write_tree(
                    &d,
                    downward_files(p, da.items.as_deref().unwrap_or(&[]), &self.cfg)?,
                )?;
                d
            } else if let Some(pr) = &v.projected {
                // upstream `pkg/volume/projected`: the sources' files merged into one directory.
                // serviceAccountToken and clusterTrustBundle sources are skipped: Berth issues no
                // service-account tokens yet.
                let mut files = Vec::new();
                for src in pr.sources.iter().flatten() {
                    if let Some(cm) = &src.config_map {
                        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &ns);
                        match api.get_opt(&cm.name).await.map_err(|e| e.to_string())? {
                            Some(m) => {
                                let data = m
                                    .data
                                    .unwrap_or_default()
                                    .into_iter()
                                    .map(|(k, v)| (k, v.into_bytes()));
                                files.extend(select_keys(data.collect(), cm.items.as_deref(), cm.optional)?);
                            }
                            None if cm.optional == Some(true) => {}
                            None => return Err(format!("configmap {:?} not found", cm.name)),
                        }
                    }
                    if let Some(sp) = &src.secret {
                        let api: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
                        match api.get_opt(&sp.name).await.map_err(|e| e.to_string())? {
                            Some(sec) => {
                                let data = sec.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0));
                                files.extend(select_keys(data.collect(), sp.items.as_deref(), sp.optional)?);
                            }
                            None if sp.optional == Some(true) => {}
                            None => return Err(format!("secret {:?} not found", sp.name)),
                        }
                    }
                    if let Some(da) = &src.downward_api {
                        files.extend(downward_files(p, da.items.as_deref().unwrap_or(&[]), &self.cfg)?);
                    }
                }
                let d = dir.join("volumes/projected").join(&v.name);
                write_tree(&d, files)?;
                d
            } else {
                return Err(format!(
                    "volume {:?}: this volume type is not supported yet",
                    v.name
                ));
            };
            std::fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            out.insert(v.name.clone(), path);
        }
        Ok(out)
    }
}

/// Write `files` into `dir` (replacing what was there), as the kubelet's atomic writer does for
/// configMap and secret volumes (keys are file names; a key with a path separator is refused).
fn write_files(dir: &Path, files: impl Iterator<Item = (String, Vec<u8>)>) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    for (k, v) in files {
        if k.contains('/') || k == ".." || k == "." {
            return Err(format!("key {k:?} is not a file name"));
        }
        std::fs::write(dir.join(&k), v).map_err(|e| format!("{}: {e}", dir.join(&k).display()))?;
    }
    Ok(())
}

/// Write `(relative path, contents)` files under `dir` (paths may have directories; `..` and absolute
/// paths are refused, as upstream's validation does).
fn write_tree(dir: &Path, files: Vec<(String, Vec<u8>)>) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    for (k, v) in files {
        let rel = Path::new(&k);
        if k.is_empty()
            || rel.is_absolute()
            || rel
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(format!("path {k:?} is not a relative path without '..'"));
        }
        let f = dir.join(rel);
        if let Some(parent) = f.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        std::fs::write(&f, v).map_err(|e| format!("{}: {e}", f.display()))?;
    }
    Ok(())
}

/// The keys of a ConfigMap or Secret as files: every key under its own name, or only `items` (key →
/// path); a missing item key is an error unless the source is optional.
fn select_keys(
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&[k8s_openapi::api::core::v1::KeyToPath]>,
    optional: Option<bool>,
) -> Result<Vec<(String, Vec<u8>)>, String> {
    let Some(items) = items else {
        return Ok(data.into_iter().collect());
    };
    let mut out = Vec::new();
    for it in items {
        match data.get(&it.key) {
            Some(v) => out.push((it.path.clone(), v.clone())),
            None if optional == Some(true) => {}
            None => return Err(format!("key {:?} not found", it.key)),
        }
    }
    Ok(out)
}

/// The files of a downwardAPI volume (upstream `pkg/volume/downwardapi`): `fieldRef` values, with
/// `metadata.labels`/`metadata.annotations` as `key="value"` lines, and `resourceFieldRef` values
/// (limits/requests of cpu in cores rounded up, memory and ephemeral-storage in bytes, divided by
/// `divisor`).
fn downward_files(
    p: &Pod,
    items: &[k8s_openapi::api::core::v1::DownwardAPIVolumeFile],
    cfg: &Config,
) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut out = Vec::new();
    for it in items {
        let value = if let Some(f) = &it.field_ref {
            match f.field_path.as_str() {
                path @ ("metadata.labels" | "metadata.annotations") => {
                    let map = if path == "metadata.labels" {
                        p.metadata.labels.clone()
                    } else {
                        p.metadata.annotations.clone()
                    };
                    map.unwrap_or_default()
                        .iter()
                        .map(|(k, v)| format!("{k}={v:?}\n"))
                        .collect::<String>()
                }
                path => field_value(p, path, cfg)?,
            }
        } else if let Some(r) = &it.resource_field_ref {
            resource_value(p, r)?
        } else {
            String::new()
        };
        out.push((it.path.clone(), value.into_bytes()));
    }
    Ok(out)
}

/// A `resourceFieldRef` value (upstream `ExtractResourceValueByContainerName`): the container's limit or
/// request divided by the divisor, rounded up; an unset CPU or memory limit reads as the node's capacity
/// upstream, here as 0.
pub(super) fn resource_value(
    p: &Pod,
    r: &k8s_openapi::api::core::v1::ResourceFieldSelector,
) -> Result<String, String> {
    let spec = p.spec.as_ref().ok_or("pod without spec")?;
    let c = match &r.container_name {
        Some(n) if !n.is_empty() => spec.containers.iter().find(|c| &c.name == n),
        _ => spec.containers.first(),
    }
    .ok_or_else(|| format!("resourceFieldRef: no container {:?}", r.container_name))?;
    let (kind, res) = r
        .resource
        .split_once('.')
        .ok_or_else(|| format!("unsupported resource {:?}", r.resource))?;
    let res_map = c.resources.as_ref().and_then(|rr| {
        if kind == "limits" {
            rr.limits.clone()
        } else {
            rr.requests.clone()
        }
    });
    let q = res_map.and_then(|m| m.get(res).map(|q| q.0.clone()));
    let amount = q.as_deref().and_then(api::quantity::parse).unwrap_or(0.0);
    let divisor = r
        .divisor
        .as_ref()
        .and_then(|d| api::quantity::parse(&d.0))
        .filter(|d| *d > 0.0)
        .unwrap_or(1.0);
    Ok(format!("{}", (amount / divisor).ceil() as i64))
}

/// A downward-API field (upstream `podFieldSelectorRuntimeValue` and `ExtractFieldPathAsString`).
pub(super) fn field_value(p: &Pod, path: &str, cfg: &Config) -> Result<String, String> {
    let m = &p.metadata;
    let map_key = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_suffix("']"))
            .map(str::to_string)
    };
    Ok(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "spec.nodeName" => cfg.node_name.clone(),
        "spec.serviceAccountName" => p
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" => pod_ip(cfg, p).to_string(),
        "status.hostIP" => cfg.node_ip.to_string(),
        _ => {
            if let Some(k) = map_key("metadata.labels['") {
                m.labels
                    .as_ref()
                    .and_then(|l| l.get(&k).cloned())
                    .unwrap_or_default()
            } else if let Some(k) = map_key("metadata.annotations['") {
                m.annotations
                    .as_ref()
                    .and_then(|l| l.get(&k).cloned())
                    .unwrap_or_default()
            } else {
                return Err(format!("unsupported fieldRef {path:?}"));
            }
        }
    })
}
