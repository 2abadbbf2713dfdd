//! Berth's revisioned key/value store, etcd-shaped (as k3s's kine gives Kubernetes an etcd-shaped store
//! over SQL): one global revision that increases with every write and serves as every object's
//! resourceVersion, compare-and-swap on a key's mod_revision, ordered range reads, watch from a revision,
//! and compaction of old history.
//!
//! [`Store`] is the seam with two backends, chosen when it is opened:
//! - **embedded** ([`Store::open_embedded`], the default): everything in one redb file, a `kv` table (key →
//!   create_revision, mod_revision, value), a `log` table (revision → the event, with the previous version
//!   of the key) and a `meta` table (current and compacted revision). All writes go through one writer
//!   thread that commits every queued write in one fsync'd transaction (group commit), then publishes the
//!   events in revision order to an in-process broadcast. Revisions start at 0 and grow by one per write.
//! - **etcd v3** ([`Store::open_etcd`], `berth server --datastore-endpoint`): the same keys in an etcd
//!   cluster, mapped as upstream's `k8s.io/apiserver/pkg/storage/etcd3` maps them — a key's
//!   `mod_revision` is its resourceVersion, create is a transaction on `create_revision == 0`, update and
//!   delete compare `mod_revision`, lists read at one revision, watches start at a revision with
//!   `prev_kv`, and compaction follows upstream's `compact.go` (see [`etcd`]). Several Berth servers on
//!   one etcd see each other's writes. etcd's revisions start at 1 and may grow by more than one between
//!   two writes of one server (other servers, the compactor's bookkeeping key).
//!
//! # Guarantees (both backends)
//! - An acknowledged write (an `Ok` from `create`/`update`/`delete`) is durable: it survives kill -9 of
//!   the server (and, on etcd, of a minority of members).
//! - A watcher that starts after revision R sees every change after R on its prefix, in revision order,
//!   exactly once, or gets [`Error::Compacted`] (at [`Store::watch`] or as the stream's first item); it
//!   never silently skips an event.
//!
//! The store knows bytes and revisions, never Kubernetes kinds.

mod codec;
mod embedded;
pub mod etcd;
pub mod local_etcd;
pub mod snapshot;

pub use etcd::EtcdConfig;

use futures::Stream;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::task::{Context, Poll};

/// A store revision: increases with every write (embedded: 0 before the first write, then +1 per write).
pub type Revision = i64;

/// One key's current version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value bytes.
    pub value: Vec<u8>,
    /// Revision of the write that created the key.
    pub create_revision: Revision,
    /// Revision of the last write to the key (for a delete event: the delete's revision).
    pub mod_revision: Revision,
}

/// Whether an event wrote or removed its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Create or update.
    Put,
    /// Delete.
    Delete,
}

/// One change, as a watcher sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// Put: the new version. Delete: the last version, with `mod_revision` = the delete's revision.
    pub kv: KeyValue,
    /// The version before this event (`None` for a create).
    pub prev: Option<KeyValue>,
    /// The consumer's encoding of this event, computed once and shared by every watcher that receives
    /// the same broadcast event (the API server caches the JSON of the object here).
    pub memo: Memo,
}

/// A write-once slot attached to an [`Event`] for the consumer's derived form of it (decoded objects,
/// encoded bytes); ignored by equality and cloned empty.
#[derive(Default)]
pub struct Memo(std::sync::OnceLock<Arc<dyn std::any::Any + Send + Sync>>);

impl Memo {
    /// The cached value, computing it with `f` the first time. `None` if the slot already holds a value
    /// of another type (one consumer type per event is the contract).
    pub fn get_or_init<T: std::any::Any + Send + Sync>(&self, f: impl FnOnce() -> T) -> Option<Arc<T>> {
        self.0.get_or_init(|| Arc::new(f())).clone().downcast::<T>().ok()
    }
}

impl Clone for Memo {
    fn clone(&self) -> Self {
        Memo::default()
    }
}

impl PartialEq for Memo {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Memo {}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Memo")
    }
}

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `create` of a key that exists.
    #[error("key {key} already exists")]
    AlreadyExists {
        /// The key.
        key: String,
    },
    /// `update`/`delete` of a missing key.
    #[error("key {key} not found")]
    NotFound {
        /// The key.
        key: String,
    },
    /// Compare-and-swap failed: the key is at another mod_revision.
    #[error("key {key} is at revision {current}")]
    Conflict {
        /// The key.
        key: String,
        /// Its current mod_revision.
        current: Revision,
    },
    /// The requested history was compacted away.
    #[error("required revision {requested} has been compacted (compacted revision {compacted})")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The store's compacted revision.
        compacted: Revision,
    },
    /// The database failed.
    #[error("store backend: {0}")]
    Backend(String),
    /// The writer thread is gone.
    #[error("store closed")]
    Closed,
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn backend<E: std::fmt::Display>(e: E) -> Error {
    Error::Backend(e.to_string())
}

/// Tuning of the embedded store.
#[derive(Debug, Clone)]
pub struct Options {
    /// How many recent revisions of history are kept for watchers (older ones are compacted automatically).
    pub history: i64,
    /// Most writes committed in one transaction.
    pub max_batch: usize,
    /// Capacity of the in-process broadcast to watchers (a watcher further behind catches up from the log).
    pub broadcast_capacity: usize,
    /// Bytes of redb's page cache (redb's own default is 1 GiB, which an idle control plane grows into).
    pub cache_bytes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            history: 100_000,
            max_batch: 1024,
            broadcast_capacity: 4096,
            cache_bytes: 64 << 20,
        }
    }
}

/// Result of [`Store::list`].
#[derive(Debug)]
pub struct ListResult {
    /// The key-values, ascending by key.
    pub kvs: Vec<KeyValue>,
    /// The revision the read saw.
    pub revision: Revision,
    /// Whether keys remain after the last returned one.
    pub more: bool,
}

/// The store: cheap to clone, shared by every request. The embedded database closes when the last clone
/// (and the last watch) is gone; an etcd connection likewise.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    /// Watches open on this store (all clones): see [`Store::open_watches`].
    open_watches: Arc<AtomicUsize>,
}

#[derive(Clone)]
enum Backend {
    Embedded(embedded::Embedded),
    Etcd(etcd::Etcd),
}

impl Store {
    /// Open (or create) the embedded store at `path`.
    ///
    /// # Errors
    /// [`Error::Backend`] when the file cannot be opened or is not a redb database.
    pub fn open_embedded(path: &Path, opts: Options) -> Result<Store> {
        Ok(Store {
            backend: Backend::Embedded(embedded::Embedded::open(path, opts)?),
            open_watches: Arc::default(),
        })
    }

    /// Connect to an etcd v3 cluster (`--datastore-endpoint`) and start the compactor when the
    /// configuration asks for one (see [`etcd`]).
    ///
    /// # Errors
    /// [`Error::Backend`] when the TLS files cannot be read or no endpoint answers.
    pub async fn open_etcd(config: EtcdConfig) -> Result<Store> {
        Ok(Store {
            backend: Backend::Etcd(etcd::Etcd::connect(config).await?),
            open_watches: Arc::default(),
        })
    }

    /// Which backend this is: `"embedded"` or `"etcd"` (for logs and figures).
    pub fn backend_name(&self) -> &'static str {
        match &self.backend {
            Backend::Embedded(_) => "embedded",
            Backend::Etcd(_) => "etcd",
        }
    }

    /// etcd's own snapshot of its database (the maintenance API's `Snapshot`, as `etcdctl snapshot save`
    /// takes it; restored with `etcdctl snapshot restore`), streamed into `out`; returns its size.
    ///
    /// # Errors
    /// [`Error::Backend`] on the embedded backend, or when etcd or `out` fails.
    pub async fn etcd_snapshot(&self, out: &mut (dyn std::io::Write + Send)) -> Result<u64> {
        match &self.backend {
            Backend::Embedded(_) => Err(Error::Backend(
                "an etcd snapshot needs the etcd datastore (--datastore-endpoint)".into(),
            )),
            Backend::Etcd(e) => e.native_snapshot(out).await,
        }
    }

    /// The latest committed revision (etcd: a linearizable read of the cluster's revision).
    ///
    /// # Errors
    /// [`Error::Backend`] when etcd does not answer.
    pub async fn revision(&self) -> Result<Revision> {
        match &self.backend {
            Backend::Embedded(e) => Ok(e.revision()),
            Backend::Etcd(e) => e.revision().await,
        }
    }

    /// History at or below this revision is gone: a watch after an older revision gets
    /// [`Error::Compacted`].
    ///
    /// # Errors
    /// [`Error::Backend`] when etcd does not answer.
    pub async fn compacted_revision(&self) -> Result<Revision> {
        match &self.backend {
            Backend::Embedded(e) => Ok(e.compacted_revision()),
            Backend::Etcd(e) => e.compacted_revision().await,
        }
    }

    /// Read one key (etcd: linearizable).
    ///
    /// # Errors
    /// [`Error::Backend`].
    pub async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        match &self.backend {
            Backend::Embedded(e) => e.get(key),
            Backend::Etcd(e) => e.get(key).await,
        }
    }

    /// Keys starting with `prefix`, ascending, strictly after `start_after`, at most `limit` (0 = all),
    /// at the latest revision.
    ///
    /// # Errors
    /// [`Error::Backend`].
    pub async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<ListResult> {
        self.list_at(prefix, start_after, limit, 0).await
    }

    /// [`Store::list`] at `revision` (0 = latest), so that the pages of one list are one snapshot, as
    /// upstream's etcd3 store reads every continuation at the first page's revision. The embedded backend
    /// keeps no old versions of live keys and always reads the latest state.
    ///
    /// # Errors
    /// [`Error::Compacted`] when `revision` was compacted away (a continue token that expired: 410);
    /// [`Error::Backend`].
    pub async fn list_at(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        revision: Revision,
    ) -> Result<ListResult> {
        match &self.backend {
            Backend::Embedded(e) => e.list(prefix, start_after, limit),
            Backend::Etcd(e) => e.list(prefix, start_after, limit, revision).await,
        }
    }

    /// Create `key`; [`Error::AlreadyExists`] if it exists.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`]; [`Error::Backend`]/[`Error::Closed`].
    pub async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue> {
        match &self.backend {
            Backend::Embedded(e) => e.create(key, value).await,
            Backend::Etcd(e) => e.create(key, value).await,
        }
    }

    /// Replace `key` if its mod_revision is `expected_mod_revision` ([`Error::Conflict`] otherwise,
    /// [`Error::NotFound`] if missing).
    ///
    /// # Errors
    /// As above; [`Error::Backend`]/[`Error::Closed`].
    pub async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected_mod_revision: Revision,
    ) -> Result<KeyValue> {
        match &self.backend {
            Backend::Embedded(e) => e.update(key, value, expected_mod_revision).await,
            Backend::Etcd(e) => e.update(key, value, expected_mod_revision).await,
        }
    }

    /// Delete `key` (only at `expected_mod_revision` when given). Returns the last version with
    /// `mod_revision` set to the delete's revision.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Conflict`]; [`Error::Backend`]/[`Error::Closed`].
    pub async fn delete(&self, key: &str, expected_mod_revision: Option<Revision>) -> Result<KeyValue> {
        match &self.backend {
            Backend::Embedded(e) => e.delete(key, expected_mod_revision).await,
            Backend::Etcd(e) => e.delete(key, expected_mod_revision).await,
        }
    }

    /// Drop history at or below `up_to` (live keys are never touched). On etcd the compaction point is
    /// clamped to the current revision (etcd cannot compact what is not written yet).
    ///
    /// # Errors
    /// [`Error::Backend`]/[`Error::Closed`].
    pub async fn compact(&self, up_to: Revision) -> Result<()> {
        match &self.backend {
            Backend::Embedded(e) => e.compact(up_to).await,
            Backend::Etcd(e) => e.compact(up_to).await,
        }
    }

    /// Every event on keys with `prefix` after revision `after`, in order, then live events.
    ///
    /// # Errors
    /// [`Error::Compacted`] when `after` is older than the kept history — here, or (etcd, which reports
    /// it once the watch is set up) as the stream's first item; also as a later item if the watcher falls
    /// behind past a compaction. [`Error::Backend`] when etcd cannot be reached.
    pub async fn watch(&self, prefix: &str, after: Revision) -> Result<Watch> {
        let mut watch = match &self.backend {
            Backend::Embedded(e) => e.watch(prefix, after),
            Backend::Etcd(e) => e.watch(prefix, after).await,
        }?;
        self.open_watches.fetch_add(1, Ordering::SeqCst);
        watch.open = Some(OpenWatch(self.open_watches.clone()));
        Ok(watch)
    }

    /// How many watches are open on this store (through any clone) right now: each one costs the
    /// backend a watcher that receives every event under its prefix (etcd's
    /// `etcd_debugging_mvcc_watcher_total`, seen from this client). The API server's watch cache holds
    /// one per cached resource and serves its clients' watches from memory.
    pub fn open_watches(&self) -> usize {
        self.open_watches.load(Ordering::SeqCst)
    }
}

/// Counts a watch in [`Store::open_watches`] while it lives.
struct OpenWatch(Arc<AtomicUsize>);

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A watch stream: `Result<Arc<Event>>` items in revision order. On the embedded backend live events are
/// the broadcast's own `Arc`, shared with every other watcher (and their [`Memo`]).
///
/// Besides events, a watch knows its **progress** (upstream's bookmarks, etcd's progress notifications):
/// a revision such that every event on the prefix at or below it has already been yielded.
pub struct Watch {
    inner: Pin<Box<dyn Stream<Item = Result<Arc<Event>>> + Send>>,
    progress: Arc<AtomicI64>,
    /// Asks the backend for a fresh progress notification (etcd's `RequestProgress`).
    wake: Option<Arc<tokio::sync::Notify>>,
    /// Set for a watch of the store itself (not one made with [`Watch::from_parts`]).
    open: Option<OpenWatch>,
}

impl Watch {
    /// A watch made by a layer above the store (the API server's watch cache serves watches from its
    /// own window of events): `stream` yields the events, `progress` is kept by it as
    /// [`Watch::progress`] describes, and `wake` is notified by [`Watch::request_progress`].
    pub fn from_parts(
        stream: Pin<Box<dyn Stream<Item = Result<Arc<Event>>> + Send>>,
        progress: Arc<AtomicI64>,
        wake: Option<Arc<tokio::sync::Notify>>,
    ) -> Watch {
        Watch {
            inner: stream,
            progress,
            wake,
            open: None,
        }
    }

    /// Every event on the prefix with a revision at or below this has been yielded (at least the
    /// revision the watch started after). Use it for BOOKMARK events.
    pub fn progress(&self) -> Revision {
        self.progress.load(Ordering::SeqCst)
    }

    /// Ask for [`Watch::progress`] to be brought up to the store's current revision soon (etcd:
    /// `RequestProgress` on the watch stream, answered when the watch is synced; the embedded backend
    /// keeps it current by itself).
    pub fn request_progress(&self) {
        if let Some(w) = &self.wake {
            w.notify_one();
        }
    }
}

impl Stream for Watch {
    type Item = Result<Arc<Event>>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

#[cfg(test)]
mod tests;
