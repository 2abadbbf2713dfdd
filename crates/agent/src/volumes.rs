//! The node side of the local-path provisioner (what Rancher's local-path-provisioner does with its helper
//! pods, done by the agent itself): for every PersistentVolume the provisioner placed on this node,
//! - `Pending`: create its directory, or, with `berth.dev/clone-from`, copy the source volume's directory
//!   into a temporary directory and rename it into place (so a half-made copy is never seen), then report
//!   the volume `Available` so the binder binds the claim;
//! - `Released` with reclaim policy `Delete`: remove the directory, then the PersistentVolume object.
//!
//! `Retain` volumes and their data are never touched. Paths outside the node's volumes directory are never
//! touched either, whatever a PersistentVolume says.

use crate::Config;
use controller_runtime::{Informers, Settings};
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::watcher;
use serde_json::json;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// One filesystem-then-API action.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Make the volume's directory (a copy of `clone_from` when set), then mark the volume Available.
    Materialize {
        /// Volume name.
        name: String,
        /// Its directory.
        path: PathBuf,
        /// The directory to copy from.
        clone_from: Option<PathBuf>,
        /// `spec.capacity.storage` in bytes, enforced when the node can ([`crate::capacity`]).
        bytes: Option<u64>,
        /// The `metadata.resourceVersion` the plan saw `Pending`: the `Available` write is conditional on
        /// it, so a pass planned on a cache that lags behind the binder never turns a `Bound` volume back
        /// into an `Available` one (a blind write did, and the claim's volume then stayed `Available`).
        resource_version: String,
    },
    /// A volume in use: mount it if it is not (after a reboot), and grow it to `bytes` when its capacity
    /// was raised (claim expansion).
    Maintain {
        /// Its directory.
        path: PathBuf,
        /// `spec.capacity.storage` in bytes.
        bytes: Option<u64>,
    },
    /// Remove the directory, then delete the volume object (uid precondition).
    Remove {
        /// Volume name.
        name: String,
        /// Volume uid.
        uid: String,
        /// Its directory.
        path: PathBuf,
    },
}

fn host_path(v: &PersistentVolume) -> Option<PathBuf> {
    v.spec
        .as_ref()?
        .host_path
        .as_ref()
        .map(|h| PathBuf::from(&h.path))
}

/// `path` is a plain path strictly inside `root` (no `..`, not `root` itself).
pub fn inside(root: &Path, path: &Path) -> bool {
    path.starts_with(root)
        && path != root
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

/// Decide what this node does for the volumes it holds.
pub fn plan(node: &str, volumes_dir: &Path, volumes: &[PersistentVolume]) -> Vec<Step> {
    let ours = |v: &PersistentVolume| {
        v.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(api::wellknown::PROVISIONED_BY))
            .is_some_and(|p| p == api::wellknown::LOCAL_PATH_PROVISIONER)
            && on_node(v) == Some(node)
    };
    let mut steps = Vec::new();
    for v in volumes.iter().filter(|v| ours(v)) {
        let Some(path) = host_path(v).filter(|p| inside(volumes_dir, p)) else {
            continue;
        };
        let name = v.metadata.name.clone().unwrap_or_default();
        let phase = v
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or("Pending");
        match phase {
            "Pending" if v.metadata.deletion_timestamp.is_none() => {
                let source = v
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(api::wellknown::CLONE_FROM));
                let clone_from = match source {
                    None => None,
                    Some(src) => {
                        let Some(src_path) = volumes
                            .iter()
                            .find(|x| x.metadata.name.as_deref() == Some(src.as_str()))
                            .filter(|x| ours(x))
                            .and_then(host_path)
                            .filter(|p| inside(volumes_dir, p))
                        else {
                            // The source is gone or not ours: wait (the provisioner reports it).
                            continue;
                        };
                        Some(src_path)
                    }
                };
                steps.push(Step::Materialize {
                    name,
                    path,
                    clone_from,
                    bytes: capacity_bytes(v),
                    resource_version: v.metadata.resource_version.clone().unwrap_or_default(),
                });
            }
            "Released" if reclaim_policy(v) == "Delete" => {
                steps.push(Step::Remove {
                    name,
                    uid: v.metadata.uid.clone().unwrap_or_default(),
                    path,
                });
            }
            "Available" | "Bound" if v.metadata.deletion_timestamp.is_none() => {
                steps.push(Step::Maintain {
                    path,
                    bytes: capacity_bytes(v),
                });
            }
            _ => {}
        }
    }
    steps
}

/// `spec.persistentVolumeReclaimPolicy` (`Retain` when unset, the safe reading).
fn reclaim_policy(v: &PersistentVolume) -> &str {
    v.spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
        .unwrap_or("Retain")
}

fn capacity_bytes(v: &PersistentVolume) -> Option<u64> {
    v.spec
        .as_ref()?
        .capacity
        .as_ref()?
        .get("storage")
        .and_then(|q| api::quantity::bytes(&q.0))
}

fn on_node(v: &PersistentVolume) -> Option<&str> {
    v.spec
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_expressions.iter().flatten())
        .find(|e| e.key == api::wellknown::HOSTNAME_LABEL && e.operator == "In")
        .and_then(|e| e.values.as_ref()?.first().map(String::as_str))
}

/// Copy the directory tree `from` into `to` (which must not exist): directories, regular files (with
/// their permission bits) and symlinks (as links, never followed).
///
/// # Errors
/// The first I/O error.
pub fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir(to)?;
    std::fs::set_permissions(to, std::fs::metadata(from)?.permissions())?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let ty = entry.file_type()?;
        let dest = to.join(entry.file_name());
        if ty.is_dir() {
            copy_tree(&entry.path(), &dest)?;
        } else if ty.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &dest)?;
        } else if ty.is_file() {
            std::fs::copy(entry.path(), &dest)?;
        }
    }
    Ok(())
}

/// Make a volume directory: empty, or a copy of `clone_from` built beside it and renamed into place;
/// with `bytes` on a node that can enforce capacities, a filesystem of that size ([`crate::capacity`]).
/// Idempotent: an existing volume is kept as it is (and mounted).
///
/// # Errors
/// The first I/O error (a partial copy is removed).
pub fn materialize(path: &Path, clone_from: Option<&Path>, bytes: Option<u64>) -> std::io::Result<()> {
    // The volumes directory is private to the agent's user: other local users cannot list or enter
    // volumes (containers reach theirs through bind mounts made as root).
    if let Some(parent) = path.parent() {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(parent)?;
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700))?;
    }
    if crate::capacity::image_of(path).exists() {
        return crate::capacity::create(path, bytes.unwrap_or(0), clone_from);
    }
    if path.is_dir() {
        return Ok(());
    }
    if let Some(b) = bytes.filter(|_| crate::capacity::available()) {
        return crate::capacity::create(path, b, clone_from);
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match clone_from {
        None => std::fs::create_dir(path),
        Some(src) => {
            let tmp = path.with_extension("cloning");
            let _ = std::fs::remove_dir_all(&tmp);
            if let Err(e) = copy_tree(src, &tmp) {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e);
            }
            std::fs::rename(&tmp, path)
        }
    }
}

/// Run the node side of the provisioner until the process ends.
pub async fn run(client: kube::Client, cfg: Config) {
    let api: Api<PersistentVolume> = Api::all(client.clone());
    let mut informers = Informers::new();
    let store = informers.watch(api.clone(), watcher::Config::default().any_semantic());
    let volumes_dir = cfg.volumes_dir();
    let settings = Settings {
        debounce: Duration::ZERO,
        ..Settings::default()
    };
    let mut passes = informers.into_loop("volumes", settings);
    while let Some(mut pass) = passes.next_pass().await {
        let volumes: Vec<PersistentVolume> = store.state().iter().map(|v| (**v).clone()).collect();
        for step in plan(&cfg.node_name, &volumes_dir, &volumes) {
            let key = match &step {
                Step::Materialize { path, .. } | Step::Maintain { path, .. } | Step::Remove { path, .. } => {
                    format!("volume {}", path.display())
                }
            };
            pass.step(&key, execute(&api, &volumes_dir, &step)).await;
        }
    }
}

/// Whether the PersistentVolume `name` as the API has it now (not as a cache had it) still asks for its
/// data to be removed: the same uid and directory, `Released`, reclaim policy `Delete`, on this node's
/// volumes directory. Anything else, including a failed read, means "keep the data".
async fn confirm_remove(
    api: &Api<PersistentVolume>,
    volumes_dir: &Path,
    name: &str,
    uid: &str,
    path: &Path,
) -> Result<bool, String> {
    let Some(live) = controller_runtime::live::get(api, name)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(false);
    };
    let same = live.metadata.uid.as_deref() == Some(uid)
        && live.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released")
        && reclaim_policy(&live) == "Delete"
        && host_path(&live).as_deref() == Some(path)
        && inside(volumes_dir, path);
    Ok(same)
}

async fn execute(api: &Api<PersistentVolume>, volumes_dir: &Path, step: &Step) -> Result<(), String> {
    match step {
        Step::Maintain { path, bytes } => {
            let (p, b) = (path.clone(), *bytes);
            let grown = tokio::task::spawn_blocking(move || {
                crate::capacity::ensure_mounted(&p)?;
                b.map_or(Ok(false), |b| crate::capacity::grow(&p, b))
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("{}: {e}", path.display()))?;
            if grown {
                tracing::info!(path = %path.display(), bytes = ?bytes, "volume filesystem grown");
            }
        }
        Step::Materialize {
            name,
            path,
            clone_from,
            bytes,
            resource_version,
        } => {
            let (p, c, b) = (path.clone(), clone_from.clone(), *bytes);
            tokio::task::spawn_blocking(move || materialize(&p, c.as_deref(), b))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("{}: {e}", path.display()))?;
            // A merge patch carrying `metadata.resourceVersion` is a precondition (409 when the volume
            // changed since the plan): the next pass re-plans on the newer object.
            let patch =
                json!({"metadata": {"resourceVersion": resource_version}, "status": {"phase": "Available"}});
            match api
                .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    tracing::debug!(volume = %name, "volume changed since the plan; re-planning");
                    return Ok(());
                }
                Err(e) => return Err(e.to_string()),
            }
            tracing::info!(volume = %name, path = %path.display(), cloned = clone_from.is_some(), "volume ready");
        }
        Step::Remove { name, uid, path } => {
            if !confirm_remove(api, volumes_dir, name, uid, path).await? {
                tracing::info!(volume = %name, "the live PersistentVolume no longer asks for removal; data kept");
                return Ok(());
            }
            let p = path.clone();
            tokio::task::spawn_blocking(move || {
                crate::capacity::remove(&p)?;
                match std::fs::remove_dir_all(&p) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                }
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("{}: {e}", path.display()))?;
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(name, &dp).await {
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                other => {
                    other.map_err(|e| e.to_string())?;
                }
            }
            tracing::info!(volume = %name, "released volume deleted");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pv(
        name: &str,
        node: &str,
        path: &str,
        phase: &str,
        reclaim: &str,
        clone: Option<&str>,
    ) -> PersistentVolume {
        let mut ann = json!({"pv.kubernetes.io/provisioned-by": "berth.dev/local-path"});
        if let Some(c) = clone {
            ann["berth.dev/clone-from"] = json!(c);
        }
        serde_json::from_value(json!({
            "metadata": {"name": name, "uid": format!("uid-{name}"), "annotations": ann},
            "spec": {"hostPath": {"path": path}, "persistentVolumeReclaimPolicy": reclaim, "capacity": {"storage": "1Gi"},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}},
            "status": {"phase": phase}
        }))
        .expect("pv")
    }

    #[test]
    fn plan_materializes_pending_removes_released_delete_and_keeps_retain() {
        let root = Path::new("/d/volumes");
        let vols = vec![
            pv("a", "n1", "/d/volumes/a", "Pending", "Delete", None),
            pv("b", "n1", "/d/volumes/b", "Pending", "Delete", Some("a")),
            pv("c", "n1", "/d/volumes/c", "Released", "Delete", None),
            pv("d", "n1", "/d/volumes/d", "Released", "Retain", None),
            pv("e", "n2", "/d/volumes/e", "Pending", "Delete", None),
            pv("f", "n1", "/etc", "Released", "Delete", None),
            pv("g", "n1", "/d/volumes/../../etc", "Released", "Delete", None),
            pv("h", "n1", "/d/volumes/h", "Pending", "Delete", Some("missing")),
            pv("i", "n1", "/d/volumes/i", "Bound", "Delete", None),
        ];
        let steps = plan("n1", root, &vols);
        assert_eq!(
            steps,
            vec![
                Step::Materialize {
                    name: "a".into(),
                    path: "/d/volumes/a".into(),
                    clone_from: None,
                    bytes: Some(1 << 30),
                    resource_version: String::new(),
                },
                Step::Materialize {
                    name: "b".into(),
                    path: "/d/volumes/b".into(),
                    clone_from: Some("/d/volumes/a".into()),
                    bytes: Some(1 << 30),
                    resource_version: String::new(),
                },
                Step::Remove {
                    name: "c".into(),
                    uid: "uid-c".into(),
                    path: "/d/volumes/c".into()
                },
                Step::Maintain {
                    path: "/d/volumes/i".into(),
                    bytes: Some(1 << 30)
                },
            ],
            "Retain kept, other nodes ignored, paths outside the volumes dir never touched, missing source waits"
        );
    }

    #[test]
    fn clone_copies_files_dirs_modes_and_symlinks_and_is_idempotent() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("dir");
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("sub")).expect("mkdir");
        std::fs::write(src.join("data"), b"hello").expect("write");
        std::fs::write(src.join("sub/x"), b"x").expect("write");
        std::fs::set_permissions(src.join("data"), std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::os::unix::fs::symlink("data", src.join("link")).expect("symlink");
        let dst = dir.path().join("dst");
        materialize(&dst, Some(&src), None).expect("clone");
        assert_eq!(std::fs::read(dst.join("data")).expect("read"), b"hello");
        assert_eq!(std::fs::read(dst.join("sub/x")).expect("read"), b"x");
        assert_eq!(
            std::fs::read_link(dst.join("link")).expect("link"),
            Path::new("data")
        );
        assert_eq!(
            std::fs::metadata(dst.join("data"))
                .expect("meta")
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        assert!(!dst.with_extension("cloning").exists());
        // A second pass keeps what is there (the data may have changed since).
        std::fs::write(dst.join("data"), b"changed").expect("write");
        materialize(&dst, Some(&src), None).expect("again");
        assert_eq!(std::fs::read(dst.join("data")).expect("read"), b"changed");
        let empty = dir.path().join("empty");
        materialize(&empty, None, None).expect("mkdir");
        assert!(empty.is_dir());
    }
}
