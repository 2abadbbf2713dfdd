//! ControllerRef adoption and release, as upstream's `BaseControllerRefManager.ClaimObject`
//! (`pkg/controller/controller_ref_manager.go`), shared by every workload controller for its pods and
//! ControllerRevisions (`ClaimPods`, `ClaimControllerRevisions`, `ClaimReplicaSets`).
//!
//! The decision is pure ([`claim`]); the two live reads a cache-driven controller makes before it changes
//! ownership are [`can_adopt`] (upstream `RecheckDeletionTimestamp`: the controller, read fresh, still has
//! the same uid and is not being deleted) and [`confirm_release`] (Berth's addition: an object is released
//! only when a fresh read still shows it controlled by us and no longer matching, so a lagging cache can
//! never strip a pod of its owner).

use controller_runtime::live;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::Resource;
use kube::api::Api;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

/// A controller reference to `owner` of `api_version`/`kind` (upstream `metav1.NewControllerRef`:
/// `controller` and `blockOwnerDeletion` true).
pub fn new_controller_ref(owner: &ObjectMeta, api_version: &str, kind: &str) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: owner.name.clone().unwrap_or_default(),
        uid: owner.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The object's controller reference, if any (upstream `metav1.GetControllerOf`).
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// Whether the object is controlled by the owner with `owner_uid`.
pub fn is_controlled_by(meta: &ObjectMeta, owner_uid: &str) -> bool {
    !owner_uid.is_empty() && controller_of(meta).is_some_and(|r| r.uid == owner_uid)
}

/// What a controller does with one object it sees (upstream `ClaimObject`'s branches).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Controlled by us and matching: ours.
    Owned,
    /// An orphan that matches: adopt it (add our controller reference), then it is ours.
    Adopt,
    /// Controlled by us but no longer matching: release it (drop our reference).
    Release,
    /// Someone else's, or an orphan we must not take: leave it alone.
    Ignore,
}

impl Claim {
    /// Whether the object counts as the controller's after this claim (owned or adopted).
    #[must_use]
    pub fn is_ours(self) -> bool {
        matches!(self, Claim::Owned | Claim::Adopt)
    }
}

/// Classify `obj` for the controller `owner`, `matches` being whether it satisfies the controller's
/// selector (and any other membership test, such as a StatefulSet's `<set>-<ordinal>` names). As upstream:
/// an object controlled by someone else is ignored; ours and matching is owned; ours and not matching is
/// released unless the controller itself is being deleted; an orphan is adopted only when it matches,
/// neither it nor the controller is being deleted, and it lives in the controller's namespace.
pub fn claim(owner: &ObjectMeta, obj: &ObjectMeta, matches: bool) -> Claim {
    let owner_uid = owner.uid.as_deref().unwrap_or_default();
    let owner_deleting = owner.deletion_timestamp.is_some();
    match controller_of(obj) {
        Some(r) if r.uid != owner_uid => Claim::Ignore,
        Some(_) if matches => Claim::Owned,
        Some(_) if owner_deleting => Claim::Ignore,
        Some(_) => Claim::Release,
        None if owner_deleting || !matches || obj.deletion_timestamp.is_some() => Claim::Ignore,
        None if owner.namespace.as_deref().is_some_and(|n| !n.is_empty())
            && owner.namespace != obj.namespace =>
        {
            Claim::Ignore
        }
        None => Claim::Adopt,
    }
}

/// The ownerReferences of `obj` after adopting it: its own kept, `controller_ref` added (upstream's adopt
/// patch adds the reference with a uid precondition).
pub fn adopted_owners(obj: &ObjectMeta, controller_ref: &OwnerReference) -> Vec<OwnerReference> {
    let mut refs: Vec<OwnerReference> = obj
        .owner_references
        .iter()
        .flatten()
        .filter(|r| r.uid != controller_ref.uid)
        .cloned()
        .collect();
    refs.push(controller_ref.clone());
    refs
}

/// The ownerReferences of `obj` after releasing it from the owner with `owner_uid`: every other kept
/// (upstream's release deletes only its own reference, `GenerateDeleteOwnerRefStrategicMergeBytes`).
pub fn released_owners(obj: &ObjectMeta, owner_uid: &str) -> Vec<OwnerReference> {
    obj.owner_references
        .iter()
        .flatten()
        .filter(|r| r.uid != owner_uid)
        .cloned()
        .collect()
}

/// Why a live re-check refused an ownership change.
#[derive(Debug, thiserror::Error)]
pub enum RecheckError {
    /// The read did not answer: do nothing now.
    #[error(transparent)]
    Unconfirmed(#[from] live::Unconfirmed),
    /// The controller is gone, has another uid, or is being deleted (upstream's wording).
    #[error("{0}")]
    Refused(String),
}

/// Upstream `RecheckDeletionTimestamp`, run once before the first adoption of a pass: the controller
/// `name` read fresh through `api` must still have `uid` and no deletion timestamp.
///
/// # Errors
/// [`RecheckError::Refused`] with upstream's message when it may not adopt, [`RecheckError::Unconfirmed`]
/// when the read failed.
pub async fn can_adopt<K>(api: &Api<K>, name: &str, uid: &str) -> Result<(), RecheckError>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let Some(fresh) = live::get(api, name).await? else {
        return Err(RecheckError::Refused(format!(
            "original {name} is gone: got uid none, wanted {uid}"
        )));
    };
    let meta = fresh.meta();
    if meta.uid.as_deref() != Some(uid) {
        return Err(RecheckError::Refused(format!(
            "original {name} is gone: got uid {}, wanted {uid}",
            meta.uid.as_deref().unwrap_or("")
        )));
    }
    if meta.deletion_timestamp.is_some() {
        return Err(RecheckError::Refused(format!(
            "{name} has just been deleted at {:?}",
            meta.deletion_timestamp.as_ref().map(|t| t.0.to_string())
        )));
    }
    Ok(())
}

/// Before releasing the object `name` (expected uid `uid`) that a cache showed no longer matching
/// `selector`, read it fresh: `Ok(true)` only when it still exists with that uid, is still controlled by
/// `owner_uid` and still does not match (`Ok(false)`: the cache lagged; do not release).
///
/// # Errors
/// [`live::Unconfirmed`] when the read failed: do nothing now.
pub async fn confirm_release<K>(
    api: &Api<K>,
    name: &str,
    uid: &str,
    owner_uid: &str,
    selector: &LabelSelector,
) -> Result<bool, live::Unconfirmed>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    Ok(live::get(api, name).await?.is_some_and(|o| {
        let m = o.meta();
        m.uid.as_deref() == Some(uid) && is_controlled_by(m, owner_uid) && !super::meta_matches(selector, m)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn meta(uid: &str, controller: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            name: Some(format!("o-{uid}")),
            namespace: Some("default".into()),
            uid: Some(uid.into()),
            owner_references: controller.map(|c| {
                vec![OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: "ReplicaSet".into(),
                    name: "x".into(),
                    uid: c.into(),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                }]
            }),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn claim_follows_upstream_claim_object() {
        let owner = meta("rs", None);
        let deleting = ObjectMeta {
            deletion_timestamp: Some(Time(jiff::Timestamp::UNIX_EPOCH)),
            ..owner.clone()
        };
        // (owner, object, matches) → claim
        let cases = [
            (&owner, meta("p", Some("rs")), true, Claim::Owned),
            (&owner, meta("p", Some("rs")), false, Claim::Release),
            (&deleting, meta("p", Some("rs")), false, Claim::Ignore),
            (&owner, meta("p", Some("other")), true, Claim::Ignore),
            (&owner, meta("p", None), true, Claim::Adopt),
            (&owner, meta("p", None), false, Claim::Ignore),
            (&deleting, meta("p", None), true, Claim::Ignore),
            (
                &owner,
                ObjectMeta {
                    deletion_timestamp: Some(Time(jiff::Timestamp::UNIX_EPOCH)),
                    ..meta("p", None)
                },
                true,
                Claim::Ignore,
            ),
            (
                &owner,
                ObjectMeta {
                    namespace: Some("other".into()),
                    ..meta("p", None)
                },
                true,
                Claim::Ignore,
            ),
        ];
        for (i, (o, obj, matches, want)) in cases.into_iter().enumerate() {
            assert_eq!(claim(o, &obj, matches), want, "case {i}");
        }
    }

    #[test]
    fn adoption_and_release_keep_other_owners() {
        let mut obj = meta("p", None);
        obj.owner_references = Some(vec![OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: "c".into(),
            uid: "cm".into(),
            controller: None,
            block_owner_deletion: None,
        }]);
        let r = new_controller_ref(&meta("rs", None), "apps/v1", "ReplicaSet");
        let adopted = adopted_owners(&obj, &r);
        assert_eq!(adopted.len(), 2);
        obj.owner_references = Some(adopted);
        assert!(is_controlled_by(&obj, "rs"));
        let released = released_owners(&obj, "rs");
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].uid, "cm");
    }
}
