//! Berth's revisioned key/value store, etcd-shaped (as k3s's kine gives Kubernetes an etcd-shaped store
//! over SQL): one global revision that increases by one per write and serves as every object's
//! resourceVersion, compare-and-swap on a key's mod_revision, ordered range reads, watch from a revision,
//! and compaction of old history.
//!
//! The embedded backend keeps everything in one redb file: a `kv` table (key → create_revision,
//! mod_revision, value), a `log` table (revision → the event, with the previous version of the key) and a
//! `meta` table (current and compacted revision). All writes go through one writer thread that commits
//! every queued write in one fsync'd transaction (group commit), then publishes the events in revision
//! order to an in-process broadcast.
//!
//! # Guarantees
//! - An acknowledged write (an `Ok` from `create`/`update`/`delete`) is on disk: it survives kill -9.
//! - A watcher that starts after revision R sees every change after R on its prefix, in revision order,
//!   exactly once, or gets [`Error::Compacted`]; it never silently skips an event, even when it falls
//!   behind the broadcast (it then catches up from the log).
//!
//! The store knows bytes and revisions, never Kubernetes kinds.

mod codec;

use futures::Stream;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, mpsc};
use std::task::{Context, Poll};
use tokio::sync::{broadcast, oneshot};

/// A store revision: 0 before the first write, then +1 per write.
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

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const LOG: TableDefinition<i64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");

enum Op {
    Create {
        key: String,
        value: Vec<u8>,
    },
    Update {
        key: String,
        value: Vec<u8>,
        expected: Revision,
    },
    Delete {
        key: String,
        expected: Option<Revision>,
    },
    Compact {
        up_to: Revision,
    },
}

struct Request {
    op: Op,
    reply: oneshot::Sender<Result<KeyValue>>,
}

struct Shared {
    db: Database,
    revision: AtomicI64,
    compacted: AtomicI64,
    events: broadcast::Sender<Arc<Event>>,
}

/// The store: cheap to clone, shared by every request. The database closes when the last clone (and the
/// last watch) is gone.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
    writer: Arc<Writer>,
}

/// The writer thread's handle: dropping it lets the thread drain its queue and exit, and waits for that.
struct Writer {
    tx: Option<mpsc::Sender<Request>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Store {
    /// Open (or create) the embedded store at `path`.
    ///
    /// # Errors
    /// [`Error::Backend`] when the file cannot be opened or is not a redb database.
    pub fn open_embedded(path: &Path, opts: Options) -> Result<Store> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(backend)?;
        }
        {
            // Created private (0600) before redb initialises it: no window where another user could open it.
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(path)
                .map_err(backend)?;
        }
        let db = Database::builder()
            .set_cache_size(opts.cache_bytes)
            .create(path)
            .map_err(backend)?;
        // The store holds every object, Secrets included: readable by this user only (kept so for files
        // created by older versions).
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(backend)?;
        }
        let (revision, compacted) = {
            let tx = db.begin_write().map_err(backend)?;
            let (rev, comp) = {
                tx.open_table(KV).map_err(backend)?;
                tx.open_table(LOG).map_err(backend)?;
                let meta = tx.open_table(META).map_err(backend)?;
                let rev = meta
                    .get("revision")
                    .map_err(backend)?
                    .map(|v| v.value())
                    .unwrap_or(0);
                let comp = meta
                    .get("compacted")
                    .map_err(backend)?
                    .map(|v| v.value())
                    .unwrap_or(0);
                (rev, comp)
            };
            tx.commit().map_err(backend)?;
            (rev, comp)
        };
        let (events, _) = broadcast::channel(opts.broadcast_capacity.max(16));
        let shared = Arc::new(Shared {
            db,
            revision: AtomicI64::new(revision),
            compacted: AtomicI64::new(compacted),
            events,
        });
        let (tx, rx) = mpsc::channel::<Request>();
        let writer_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(writer_shared, rx, opts))
            .map_err(backend)?;
        Ok(Store {
            shared,
            writer: Arc::new(Writer {
                tx: Some(tx),
                thread: Some(thread),
            }),
        })
    }

    async fn submit(&self, op: Op) -> Result<KeyValue> {
        let (reply, rx) = oneshot::channel();
        let tx = self.writer.tx.as_ref().ok_or(Error::Closed)?;
        tx.send(Request { op, reply }).map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// The latest committed revision.
    pub fn revision(&self) -> Revision {
        self.shared.revision.load(Ordering::SeqCst)
    }

    /// History at or below this revision is gone.
    pub fn compacted_revision(&self) -> Revision {
        self.shared.compacted.load(Ordering::SeqCst)
    }

    /// Read one key.
    pub async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let tx = self.shared.db.begin_read().map_err(backend)?;
        let kv = tx.open_table(KV).map_err(backend)?;
        match kv.get(key).map_err(backend)? {
            Some(v) => Ok(Some(codec::decode_kv(key, v.value())?)),
            None => Ok(None),
        }
    }

    /// Keys starting with `prefix`, ascending, strictly after `start_after`, at most `limit` (0 = all).
    pub async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<ListResult> {
        let tx = self.shared.db.begin_read().map_err(backend)?;
        // The revision of this snapshot: read it inside the same transaction.
        let revision = {
            let meta = tx.open_table(META).map_err(backend)?;
            meta.get("revision")
                .map_err(backend)?
                .map(|v| v.value())
                .unwrap_or(0)
        };
        let kv = tx.open_table(KV).map_err(backend)?;
        let start = match start_after {
            Some(s) if s >= prefix => s,
            _ => prefix,
        };
        let mut kvs = Vec::new();
        let mut more = false;
        for entry in kv.range(start..).map_err(backend)? {
            let (k, v) = entry.map_err(backend)?;
            let k = k.value();
            if !k.starts_with(prefix) {
                break;
            }
            if start_after.is_some_and(|s| k <= s) {
                continue;
            }
            if limit != 0 && kvs.len() == limit {
                more = true;
                break;
            }
            kvs.push(codec::decode_kv(k, v.value())?);
        }
        Ok(ListResult { kvs, revision, more })
    }

    /// Create `key`; [`Error::AlreadyExists`] if it exists.
    pub async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue> {
        self.submit(Op::Create {
            key: key.into(),
            value,
        })
        .await
    }

    /// Replace `key` if its mod_revision is `expected_mod_revision` ([`Error::Conflict`] otherwise,
    /// [`Error::NotFound`] if missing).
    pub async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected_mod_revision: Revision,
    ) -> Result<KeyValue> {
        self.submit(Op::Update {
            key: key.into(),
            value,
            expected: expected_mod_revision,
        })
        .await
    }

    /// Delete `key` (only at `expected_mod_revision` when given). Returns the last version with
    /// `mod_revision` set to the delete's revision.
    pub async fn delete(&self, key: &str, expected_mod_revision: Option<Revision>) -> Result<KeyValue> {
        self.submit(Op::Delete {
            key: key.into(),
            expected: expected_mod_revision,
        })
        .await
    }

    /// Drop history at or below `up_to` (live keys are never touched).
    pub async fn compact(&self, up_to: Revision) -> Result<()> {
        self.submit(Op::Compact { up_to }).await.map(|_| ())
    }

    /// Every event on keys with `prefix` after revision `after`, in order, then live events.
    ///
    /// # Errors
    /// [`Error::Compacted`] when `after` is older than the kept history (also as a stream item if the
    /// watcher later falls behind past a compaction).
    pub fn watch(&self, prefix: &str, after: Revision) -> Result<Watch> {
        // Subscribe before anything is read, so no event can fall between the replay and the live feed.
        let rx = self.shared.events.subscribe();
        let behind = after < self.shared.revision.load(Ordering::SeqCst);
        let compacted = self.compacted_revision();
        if after < compacted {
            return Err(Error::Compacted {
                requested: after,
                compacted,
            });
        }
        Ok(Watch {
            inner: Box::pin(futures::stream::unfold(
                WatchState {
                    shared: self.shared.clone(),
                    rx,
                    prefix: prefix.to_string(),
                    position: after,
                    pending: Default::default(),
                    catching_up: behind,
                    failed: false,
                },
                next_event,
            )),
        })
    }
}

/// A watch stream: `Result<Arc<Event>>` items in revision order. Live events are the broadcast's own
/// `Arc`, shared with every other watcher (and their [`Memo`]).
pub struct Watch {
    inner: Pin<Box<dyn Stream<Item = Result<Arc<Event>>> + Send>>,
}

impl Stream for Watch {
    type Item = Result<Arc<Event>>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

struct WatchState {
    shared: Arc<Shared>,
    rx: broadcast::Receiver<Arc<Event>>,
    prefix: String,
    /// Every revision up to here has been looked at (sent or filtered out).
    position: Revision,
    pending: std::collections::VecDeque<Arc<Event>>,
    /// Reading from the log: at start when behind, and after a gap in (or lag behind) the broadcast.
    catching_up: bool,
    failed: bool,
}

impl WatchState {
    /// Read history after `position` from the log (in chunks) into `pending`.
    fn catch_up(&mut self) -> Result<()> {
        let compacted = self.shared.compacted.load(Ordering::SeqCst);
        if self.position < compacted {
            return Err(Error::Compacted {
                requested: self.position,
                compacted,
            });
        }
        let tx = self.shared.db.begin_read().map_err(backend)?;
        let log = tx.open_table(LOG).map_err(backend)?;
        let mut n = 0;
        for entry in log.range((self.position + 1)..).map_err(backend)? {
            let (rev, bytes) = entry.map_err(backend)?;
            let rev = rev.value();
            if rev != self.position + 1 {
                // A hole means compaction raced with this read.
                let compacted = self.shared.compacted.load(Ordering::SeqCst);
                return Err(Error::Compacted {
                    requested: self.position,
                    compacted,
                });
            }
            let ev = codec::decode_event(bytes.value())?;
            self.position = rev;
            if ev.kv.key.starts_with(&self.prefix) {
                self.pending.push_back(Arc::new(ev));
            }
            n += 1;
            if n >= 512 {
                break;
            }
        }
        Ok(())
    }
}

async fn next_event(mut st: WatchState) -> Option<(Result<Arc<Event>>, WatchState)> {
    if st.failed {
        return None;
    }
    loop {
        if let Some(ev) = st.pending.pop_front() {
            return Some((Ok(ev), st));
        }
        if st.catching_up {
            if let Err(e) = st.catch_up() {
                st.failed = true;
                return Some((Err(e), st));
            }
            // The log holds every published revision: once at its end, the broadcast (which the watch
            // subscribed to before reading anything) carries on without a gap.
            if st.pending.is_empty() && st.position >= st.shared.revision.load(Ordering::SeqCst) {
                st.catching_up = false;
            }
            continue;
        }
        match st.rx.recv().await {
            Ok(ev) => {
                let rev = ev.kv.mod_revision;
                if rev <= st.position {
                    continue;
                }
                if rev != st.position + 1 {
                    // Missed something (subscribed mid-batch or lagged): the log has it, this one included.
                    st.catching_up = true;
                    continue;
                }
                st.position = rev;
                if ev.kv.key.starts_with(&st.prefix) {
                    return Some((Ok(ev), st));
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => st.catching_up = true,
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}

fn writer_loop(shared: Arc<Shared>, rx: mpsc::Receiver<Request>, opts: Options) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < opts.max_batch {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let base = shared.revision.load(Ordering::SeqCst);
        let outcome = commit_batch(&shared, &batch, base, &opts);
        match outcome {
            Ok((results, events, new_rev, compacted)) => {
                // Publish in revision order, then answer: a caller's own write is visible to its watch.
                shared.revision.store(new_rev, Ordering::SeqCst);
                shared.compacted.store(compacted, Ordering::SeqCst);
                for ev in events {
                    let _ = shared.events.send(Arc::new(ev));
                }
                for (req, res) in batch.into_iter().zip(results) {
                    let _ = req.reply.send(res);
                }
            }
            Err(e) => {
                let msg = e.to_string();
                tracing::error!(error = %msg, "store commit failed");
                for req in batch {
                    let _ = req.reply.send(Err(Error::Backend(msg.clone())));
                }
            }
        }
    }
}

type BatchOutcome = (Vec<Result<KeyValue>>, Vec<Event>, Revision, Revision);

fn commit_batch(shared: &Shared, batch: &[Request], base: Revision, opts: &Options) -> Result<BatchOutcome> {
    let tx = shared.db.begin_write().map_err(backend)?;
    let mut results = Vec::with_capacity(batch.len());
    let mut events = Vec::new();
    let mut rev = base;
    let mut compacted = shared.compacted.load(Ordering::SeqCst);
    {
        let mut kv = tx.open_table(KV).map_err(backend)?;
        let mut log = tx.open_table(LOG).map_err(backend)?;
        let mut meta = tx.open_table(META).map_err(backend)?;
        for req in batch {
            let (key, new_value, check): (&str, Option<&Vec<u8>>, _) = match &req.op {
                Op::Create { key, value } => (key.as_str(), Some(value), Check::Absent),
                Op::Update { key, value, expected } => (key.as_str(), Some(value), Check::At(*expected)),
                Op::Delete { key, expected } => {
                    (key.as_str(), None, expected.map_or(Check::Present, Check::At))
                }
                Op::Compact { up_to } => {
                    let up_to = (*up_to).min(rev);
                    if up_to > compacted {
                        compact_log(&mut log, up_to)?;
                        compacted = up_to;
                    }
                    results.push(Ok(KeyValue {
                        key: String::new(),
                        value: Vec::new(),
                        create_revision: 0,
                        mod_revision: rev,
                    }));
                    continue;
                }
            };
            let prev = kv
                .get(key)
                .map_err(backend)?
                .map(|v| codec::decode_kv(key, v.value()))
                .transpose()?;
            let verdict = match (&check, &prev) {
                (Check::Absent, Some(_)) => Err(Error::AlreadyExists { key: key.into() }),
                (Check::At(_) | Check::Present, None) => Err(Error::NotFound { key: key.into() }),
                (Check::At(e), Some(p)) if p.mod_revision != *e => Err(Error::Conflict {
                    key: key.into(),
                    current: p.mod_revision,
                }),
                _ => Ok(()),
            };
            if let Err(e) = verdict {
                results.push(Err(e));
                continue;
            }
            rev += 1;
            let event = match new_value {
                Some(value) => {
                    let new = KeyValue {
                        key: key.to_string(),
                        value: value.clone(),
                        create_revision: prev.as_ref().map_or(rev, |p| p.create_revision),
                        mod_revision: rev,
                    };
                    kv.insert(key, codec::encode_kv(&new).as_slice())
                        .map_err(backend)?;
                    Event {
                        kind: EventKind::Put,
                        kv: new,
                        prev,
                        memo: Memo::default(),
                    }
                }
                None => {
                    let last = prev.clone().ok_or_else(|| Error::NotFound { key: key.into() })?;
                    kv.remove(key).map_err(backend)?;
                    Event {
                        kind: EventKind::Delete,
                        kv: KeyValue {
                            mod_revision: rev,
                            ..last
                        },
                        prev,
                        memo: Memo::default(),
                    }
                }
            };
            log.insert(rev, codec::encode_event(&event).as_slice())
                .map_err(backend)?;
            results.push(Ok(event.kv.clone()));
            events.push(event);
        }
        // Automatic compaction with some slack, so it runs every history/8 writes rather than every write.
        if rev - compacted > opts.history + opts.history / 8 {
            let up_to = rev - opts.history;
            compact_log(&mut log, up_to)?;
            compacted = up_to;
        }
        meta.insert("revision", rev).map_err(backend)?;
        meta.insert("compacted", compacted).map_err(backend)?;
    }
    tx.commit().map_err(backend)?;
    Ok((results, events, rev, compacted))
}

enum Check {
    Absent,
    Present,
    At(Revision),
}

fn compact_log(log: &mut redb::Table<i64, &[u8]>, up_to: Revision) -> Result<()> {
    log.retain_in(..=up_to, |_, _| false).map_err(backend)
}

#[cfg(test)]
mod tests;
