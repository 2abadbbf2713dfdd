//! The embedded backend: one redb file with group commit and an in-process broadcast to watchers (see the
//! crate documentation).

use crate::{
    Error, Event, EventKind, KeyValue, ListResult, Memo, Options, Result, Revision, Watch, backend, codec,
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, mpsc};
use tokio::sync::{broadcast, oneshot};

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

/// The embedded backend: cheap to clone. The database closes when the last clone (and the last watch) is
/// gone.
#[derive(Clone)]
pub(crate) struct Embedded {
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

impl Embedded {
    /// Open (or create) the store file at `path`.
    pub(crate) fn open(path: &Path, opts: Options) -> Result<Embedded> {
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
        Ok(Embedded {
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
    pub(crate) fn revision(&self) -> Revision {
        self.shared.revision.load(Ordering::SeqCst)
    }

    /// History at or below this revision is gone.
    pub(crate) fn compacted_revision(&self) -> Revision {
        self.shared.compacted.load(Ordering::SeqCst)
    }

    /// Read one key.
    pub(crate) fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let tx = self.shared.db.begin_read().map_err(backend)?;
        let kv = tx.open_table(KV).map_err(backend)?;
        match kv.get(key).map_err(backend)? {
            Some(v) => Ok(Some(codec::decode_kv(key, v.value())?)),
            None => Ok(None),
        }
    }

    /// Keys starting with `prefix`, ascending, strictly after `start_after`, at most `limit` (0 = all).
    pub(crate) fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<ListResult> {
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
    pub(crate) async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue> {
        self.submit(Op::Create {
            key: key.into(),
            value,
        })
        .await
    }

    /// Replace `key` if its mod_revision is `expected_mod_revision` ([`Error::Conflict`] otherwise,
    /// [`Error::NotFound`] if missing).
    pub(crate) async fn update(
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
    pub(crate) async fn delete(
        &self,
        key: &str,
        expected_mod_revision: Option<Revision>,
    ) -> Result<KeyValue> {
        self.submit(Op::Delete {
            key: key.into(),
            expected: expected_mod_revision,
        })
        .await
    }

    /// Drop history at or below `up_to` (live keys are never touched).
    pub(crate) async fn compact(&self, up_to: Revision) -> Result<()> {
        self.submit(Op::Compact { up_to }).await.map(|_| ())
    }

    /// Every event on keys with `prefix` after revision `after`, in order, then live events.
    ///
    /// # Errors
    /// [`Error::Compacted`] when `after` is older than the kept history (also as a stream item if the
    /// watcher later falls behind past a compaction).
    pub(crate) fn watch(&self, prefix: &str, after: Revision) -> Result<Watch> {
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
        let progress = Arc::new(AtomicI64::new(after));
        Ok(Watch::from_parts(
            Box::pin(futures::stream::unfold(
                WatchState {
                    shared: self.shared.clone(),
                    rx,
                    prefix: prefix.to_string(),
                    position: after,
                    pending: Default::default(),
                    catching_up: behind,
                    failed: false,
                    progress: progress.clone(),
                },
                next_event,
            )),
            progress,
            None,
        ))
    }
}

/// Write a new store file at `path` holding `kvs` (with their revisions) at `revision`, with no history
/// before it (compacted at `revision`): the embedded side of a snapshot restore.
pub(crate) fn restore(path: &Path, revision: Revision, kvs: &[KeyValue]) -> Result<()> {
    {
        let store = Embedded::open(path, Options::default())?;
        drop(store);
    }
    let db = Database::create(path).map_err(backend)?;
    let tx = db.begin_write().map_err(backend)?;
    {
        let mut kv_table = tx.open_table(KV).map_err(backend)?;
        for kv in kvs {
            kv_table
                .insert(kv.key.as_str(), codec::encode_kv(kv).as_slice())
                .map_err(backend)?;
        }
        let mut meta = tx.open_table(META).map_err(backend)?;
        meta.insert("revision", revision).map_err(backend)?;
        meta.insert("compacted", revision).map_err(backend)?;
    }
    tx.commit().map_err(backend)?;
    Ok(())
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
    /// The watch's [`Watch::progress`]: `position` whenever nothing is pending.
    progress: Arc<AtomicI64>,
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
            if st.pending.is_empty() {
                // Everything up to `position` is looked at and this was the last event to hand out.
                st.progress.store(st.position, Ordering::SeqCst);
            }
            return Some((Ok(ev), st));
        }
        if st.catching_up {
            if let Err(e) = st.catch_up() {
                st.failed = true;
                return Some((Err(e), st));
            }
            // The log holds every published revision: once at its end, the broadcast (which the watch
            // subscribed to before reading anything) carries on without a gap.
            if st.pending.is_empty() {
                st.progress.store(st.position, Ordering::SeqCst);
                if st.position >= st.shared.revision.load(Ordering::SeqCst) {
                    st.catching_up = false;
                }
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
                st.progress.store(rev, Ordering::SeqCst);
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
