//! Live confirmation of what a cache suggests, before anything is deleted or released (upstream's garbage
//! collector re-reads an owner by name and uid in `isDangling`; the PV controller re-reads a claim before
//! releasing its volume): a cache can lag or, at a cold start, be incomplete; the API cannot.

use kube::Resource;
use kube::api::Api;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::time::Duration;

/// How long a confirming read may take before it counts as failed.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// What a live read found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presence {
    /// The object exists with the expected uid.
    Present,
    /// It does not exist, or a different object (another uid) has its name now.
    Absent,
}

/// A confirming read that did not answer (timeout, 5xx, transport): the caller must do nothing now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unconfirmed(pub String);

impl std::fmt::Display for Unconfirmed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "could not confirm with a live read: {}", self.0)
    }
}

impl std::error::Error for Unconfirmed {}

/// Read `name` through `api` (metadata only) and tell whether the object with `uid` is there; `uid`
/// empty matches any uid.
///
/// # Errors
/// [`Unconfirmed`] when the read fails other than with 404, or takes longer than [`TIMEOUT`].
pub async fn presence<K>(api: &Api<K>, name: &str, uid: &str) -> Result<Presence, Unconfirmed>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    match tokio::time::timeout(TIMEOUT, api.get_metadata(name)).await {
        Err(_) => Err(Unconfirmed(format!("reading {name} timed out"))),
        Ok(Err(kube::Error::Api(s))) if s.code == 404 => Ok(Presence::Absent),
        Ok(Err(e)) => Err(Unconfirmed(format!("reading {name}: {e}"))),
        Ok(Ok(m)) if uid.is_empty() || m.metadata.uid.as_deref() == Some(uid) => Ok(Presence::Present),
        Ok(Ok(_)) => Ok(Presence::Absent),
    }
}

/// Read `name` through `api` (the whole object).
///
/// # Errors
/// [`Unconfirmed`] when the read fails other than with 404 (`Ok(None)`), or takes longer than [`TIMEOUT`].
pub async fn get<K>(api: &Api<K>, name: &str) -> Result<Option<K>, Unconfirmed>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    match tokio::time::timeout(TIMEOUT, api.get(name)).await {
        Err(_) => Err(Unconfirmed(format!("reading {name} timed out"))),
        Ok(Err(kube::Error::Api(s))) if s.code == 404 => Ok(None),
        Ok(Err(e)) => Err(Unconfirmed(format!("reading {name}: {e}"))),
        Ok(Ok(o)) => Ok(Some(o)),
    }
}
