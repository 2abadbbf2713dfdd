//! The watch cache for lists (upstream `k8s.io/apiserver/pkg/storage/cacher`, the list half): one cache
//! per resource, kept current by **one** store watch on the resource's prefix, holding every object decoded
//! (decrypted, resourceVersion stamped). Lists are served from it **consistently**, as upstream's
//! consistent-list-from-cache (KEP-2340): the request reads the store's current revision (etcd: one cheap
//! range request), waits until the cache has seen everything up to it (asking the store for a progress
//! notification meanwhile, etcd's `RequestProgress`), and then filters and pages in memory. A cache that
//! does not finish its list (first start, a lost watch being re-listed) and catch up within
//! [`FRESH_TIMEOUT`] is bypassed: the list reads the store, as upstream falls back to etcd.
//!
//! Continuations (`continue` tokens) are read from the store at the token's revision (etcd3 `WithRev`),
//! as upstream serves them.
//!
//! Watches are served from the cache too (the cacher's `watchCache` window and its dispatch to
//! `cacheWatcher`s): the cache keeps the last [`WINDOW`] events it applied and broadcasts each new one;
//! a watch from a revision inside the window replays the window's later events and follows the
//! broadcast, with no gap (both are taken under the cache's lock). Progress (for bookmarks) travels in
//! the same ordered feed, so a watcher's bookmark never passes an event it has not yet handed out. A
//! watch from a revision the cache has not reached yet waits for it (the registry's `cached_watch`,
//! upstream's `waitUntilFreshAndBlock`); a watch from before the window, or from a revision the cache
//! does not reach within [`FRESH_TIMEOUT`], is left to the store
//! (which replays older history or answers 410 past compaction); a watcher too slow for the broadcast's
//! buffer is ended, as upstream closes unresponsive watchers, and its client watches again from the
//! last revision it saw. On etcd this is one etcd watch per resource instead of one per API watch.

use serde_json::Value;
use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::sync::atomic::AtomicI64;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use store::{Event, EventKind, KeyValue, Revision, Store};
use tokio::sync::broadcast;

/// How long a consistent list waits for the cache to reach the store's revision before reading the
/// store instead.
pub const FRESH_TIMEOUT: Duration = Duration::from_secs(1);

/// How many of the latest events the cache keeps for watches starting in the past (upstream's watch
/// cache keeps 100 to 100,000 by event rate; a reflector's re-watch after a list is within a few
/// revisions).
pub const WINDOW: usize = 4096;

/// The broadcast's buffer per watcher: a watcher this far behind is ended.
const FEED_CAPACITY: usize = 4096;

/// What the cache hands to its watchers, in order.
#[derive(Clone)]
enum Feed {
    /// An event applied to the cache.
    Event(Arc<Event>),
    /// Every event up to this revision has been fed.
    Progress(Revision),
}

/// Decodes a stored value into the object served (the registry's decryption and resourceVersion
/// stamping); `None` when the registry is gone (the cache then stops).
pub type Decoder = Arc<dyn Fn(&KeyValue) -> Option<Option<Value>> + Send + Sync>;

/// One cached object: decoded (for filters) and encoded once (a JSON list is then a concatenation of
/// these bytes, upstream's cacher serving lists without re-encoding unchanged objects).
pub struct Cached {
    /// The object served.
    pub value: Value,
    /// `value` as JSON.
    pub json: axum::body::Bytes,
}

impl Cached {
    fn new(value: Value) -> Arc<Cached> {
        let json = axum::body::Bytes::from(serde_json::to_vec(&value).unwrap_or_default());
        Arc::new(Cached { value, json })
    }
}

struct State {
    /// Whether `objects` mirrors the store at `revision` (false while listing or after a lost watch).
    ready: bool,
    objects: BTreeMap<String, Arc<Cached>>,
    /// The revision of the last event applied (or of the list).
    applied: Revision,
    /// Every event after this revision up to `applied` is in `events`.
    window_start: Revision,
    /// The latest events applied, oldest first.
    events: VecDeque<Arc<Event>>,
    /// The live feed of watchers; replaced (ending every watcher) when the cache lists again.
    feed: broadcast::Sender<Feed>,
}

impl Default for State {
    fn default() -> Self {
        State {
            ready: false,
            objects: BTreeMap::new(),
            applied: 0,
            window_start: 0,
            events: VecDeque::new(),
            feed: broadcast::channel(FEED_CAPACITY).0,
        }
    }
}

/// One resource's cache.
pub struct Cacher {
    state: RwLock<State>,
    /// Every store event at or below this revision is applied to `state` (while ready).
    revision: tokio::sync::watch::Sender<Revision>,
    /// Requests waiting for freshness (the loop polls the watch's progress only then).
    waiting: AtomicUsize,
    wake: Arc<tokio::sync::Notify>,
}

/// A request waiting for freshness, counted while it waits (the loop asks the store for progress only
/// then); the count drops when the wait ends or is given up.
struct Waiting<'a>(&'a Cacher);

impl<'a> Waiting<'a> {
    fn new(cacher: &'a Cacher) -> Waiting<'a> {
        cacher.waiting.fetch_add(1, Ordering::SeqCst);
        cacher.wake.notify_one();
        Waiting(cacher)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A page served from the cache.
pub struct Page<T> {
    /// Matching objects in key order, as the caller's `shape` made them.
    pub items: Vec<T>,
    /// The cache's revision (the list's resourceVersion).
    pub revision: Revision,
    /// The last item's key when `limit` cut the page and more matching objects remain.
    pub continue_after: Option<String>,
}

impl Cacher {
    /// Start the cache of `prefix` (a resource's key prefix) on `store`; its loop runs until `decode`
    /// says the registry is gone.
    pub fn start(store: Store, prefix: String, decode: Decoder) -> Arc<Cacher> {
        let (revision, _) = tokio::sync::watch::channel(0);
        let cacher = Arc::new(Cacher {
            state: RwLock::new(State::default()),
            revision,
            waiting: AtomicUsize::new(0),
            wake: Arc::new(tokio::sync::Notify::new()),
        });
        tokio::spawn(run(Arc::downgrade(&cacher), store, prefix, decode));
        cacher
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Wait until the cache is ready (its list done: at start, or a re-list after a lost watch) and has
    /// applied every store event up to `target` (upstream's cacher waits for its initialization, then
    /// `waitUntilFreshAndBlock`); false when that does not happen within `timeout`.
    pub async fn fresh(&self, target: Revision, timeout: Duration) -> bool {
        // Subscribed before the first check: a list completing (`send_replace` under the state lock,
        // with `ready`) between the check and the wait is still seen as a change.
        let mut rx = self.revision.subscribe();
        let wait = async {
            while !self.read().ready {
                if rx.changed().await.is_err() {
                    return false;
                }
            }
            if *rx.borrow_and_update() >= target {
                return true;
            }
            let _waiting = Waiting::new(self);
            rx.wait_for(|r| *r >= target).await.is_ok()
        };
        tokio::time::timeout(timeout, wait).await.unwrap_or(false) && self.read().ready
    }

    /// The objects under `prefix` that `keep` accepts, in key order, at most `limit` (0 = all), each
    /// given by `shape` (a clone of the value, or the shared encoded bytes). `None` when the cache is not
    /// ready.
    pub fn page<T>(
        &self,
        prefix: &str,
        limit: usize,
        keep: impl Fn(&Value) -> bool,
        shape: impl Fn(&Cached) -> T,
    ) -> Option<Page<T>> {
        let state = self.read();
        if !state.ready {
            return None;
        }
        let revision = *self.revision.borrow();
        let mut items = Vec::new();
        let mut last = None;
        let mut continue_after = None;
        for (key, obj) in state
            .objects
            .range::<str, _>((std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
        {
            if !keep(&obj.value) {
                continue;
            }
            if limit != 0 && items.len() == limit {
                continue_after = last.take();
                break;
            }
            items.push(shape(obj));
            last = Some(key.clone());
        }
        Some(Page {
            items,
            revision,
            continue_after,
        })
    }

    /// The object under `key`; `None` when the cache is not ready or does not hold it.
    pub fn get(&self, key: &str) -> Option<Value> {
        let state = self.read();
        if !state.ready {
            return None;
        }
        state.objects.get(key).map(|c| c.value.clone())
    }

    /// A watch of the keys under `prefix` from after revision `after`, served from the cache's window;
    /// `None` when the cache cannot serve it (not ready, `after` before the window or past what the cache
    /// has applied): the caller watches the store instead.
    pub fn watch(&self, prefix: &str, after: Revision) -> Option<store::Watch> {
        let state = self.read();
        if !state.ready || after < state.window_start || after > state.applied {
            return None;
        }
        // Under the lock that event application takes: the backlog and the feed meet without a gap.
        let rx = state.feed.subscribe();
        let backlog: VecDeque<Arc<Event>> = state
            .events
            .iter()
            .filter(|e| e.kv.mod_revision > after && e.kv.key.starts_with(prefix))
            .cloned()
            .collect();
        let position = state.applied;
        drop(state);
        let progress = Arc::new(AtomicI64::new(if backlog.is_empty() { position } else { after }));
        let watcher = Watcher {
            rx,
            backlog,
            prefix: prefix.to_string(),
            position,
            progress: progress.clone(),
        };
        Some(store::Watch::from_parts(
            Box::pin(futures::stream::unfold(watcher, next_for_watcher)),
            progress,
            Some(self.wake.clone()),
        ))
    }

    fn publish(&self, rev: Revision) {
        self.revision.send_if_modified(|r| {
            let newer = rev > *r;
            if newer {
                *r = rev;
            }
            newer
        });
    }
}

/// The cache's loop (upstream's reflector into the watch cache): list, then watch from the list's
/// revision; a lost watch (compaction, a dead etcd member) marks the cache unready and lists again.
async fn run(me: std::sync::Weak<Cacher>, store: Store, prefix: String, decode: Decoder) {
    use futures::StreamExt;
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(cacher) = me.upgrade() else { return };
        let listed = match store.list(&prefix, None, 0).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(%prefix, error = %e, "watch cache: list failed");
                drop(cacher);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        let mut objects = BTreeMap::new();
        for kv in &listed.kvs {
            match decode(kv) {
                None => return,
                Some(Some(obj)) => {
                    objects.insert(kv.key.clone(), Cached::new(obj));
                }
                Some(None) => {}
            }
        }
        let mut watch = match store.watch(&prefix, listed.revision).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(%prefix, error = %e, "watch cache: watch failed");
                drop(cacher);
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        {
            let mut state = cacher.write();
            state.objects = objects;
            // The revision may go back after a re-list on another etcd member: start it afresh.
            cacher.revision.send_replace(listed.revision);
            state.applied = listed.revision;
            state.window_start = listed.revision;
            state.events.clear();
            // Watchers of the previous feed may have missed events: a new feed ends them.
            state.feed = broadcast::channel(FEED_CAPACITY).0;
            state.ready = true;
        }
        let mut progress_wanted = false;
        let mut progress_fed = listed.revision;
        backoff = Duration::from_millis(100);
        let mut tick = tokio::time::interval(Duration::from_millis(2));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        drop(cacher);
        let mut ticks = 0u64;
        loop {
            let Some(cacher) = me.upgrade() else { return };
            let waiting = cacher.waiting.load(Ordering::SeqCst) > 0 || progress_wanted;
            tokio::select! {
                next = watch.next() => {
                    let event = match next {
                        Some(Ok(e)) => e,
                        other => {
                            if let Some(Err(e)) = other {
                                tracing::info!(%prefix, error = %e, "watch cache: watch ended, listing again");
                            }
                            cacher.write().ready = false;
                            break;
                        }
                    };
                    let decoded = match event.kind {
                        EventKind::Put => match decode(&event.kv) {
                            None => return,
                            // Encoded here, outside the lock.
                            Some(obj) => obj.map(Cached::new),
                        },
                        EventKind::Delete => None,
                    };
                    {
                        let mut state = cacher.write();
                        match decoded {
                            Some(obj) => {
                                state.objects.insert(event.kv.key.clone(), obj);
                            }
                            None => {
                                state.objects.remove(&event.kv.key);
                            }
                        }
                        state.applied = state.applied.max(event.kv.mod_revision);
                        state.events.push_back(event.clone());
                        if state.events.len() > WINDOW
                            && let Some(old) = state.events.pop_front()
                        {
                            state.window_start = old.kv.mod_revision;
                        }
                        let _ = state.feed.send(Feed::Event(event.clone()));
                    }
                    cacher.publish(event.kv.mod_revision.max(watch.progress()));
                }
                _ = cacher.wake.notified() => {
                    // A fresh list waits for the revision, or a watcher wants a bookmark: both need the
                    // store watch's progress.
                    progress_wanted = true;
                    ticks = 0;
                    watch.request_progress();
                }
                _ = tick.tick(), if waiting => {
                    let rev = watch.progress();
                    cacher.publish(rev);
                    if progress_wanted && rev > progress_fed {
                        // Every event up to `rev` is applied and fed (this loop handles them in order).
                        let mut state = cacher.write();
                        state.applied = state.applied.max(rev);
                        let _ = state.feed.send(Feed::Progress(rev));
                        drop(state);
                        progress_fed = rev;
                        progress_wanted = false;
                    }
                    if ticks >= 50 {
                        progress_wanted = false;
                    }
                    // Ask again now and then (a progress request answered before the wait began).
                    ticks += 1;
                    if ticks.is_multiple_of(25) {
                        watch.request_progress();
                    }
                }
            }
        }
        tokio::time::sleep(backoff).await;
    }
}

/// One watcher of the cache: its backlog from the window, then the live feed.
struct Watcher {
    rx: broadcast::Receiver<Feed>,
    backlog: VecDeque<Arc<Event>>,
    prefix: String,
    /// Every revision up to here is handed out or passed over.
    position: Revision,
    progress: Arc<AtomicI64>,
}

async fn next_for_watcher(mut w: Watcher) -> Option<(store::Result<Arc<Event>>, Watcher)> {
    if let Some(ev) = w.backlog.pop_front() {
        let rev = if w.backlog.is_empty() {
            w.position
        } else {
            ev.kv.mod_revision
        };
        w.progress.store(rev, Ordering::SeqCst);
        return Some((Ok(ev), w));
    }
    loop {
        match w.rx.recv().await {
            Ok(Feed::Event(ev)) => {
                let rev = ev.kv.mod_revision;
                if rev <= w.position {
                    continue;
                }
                w.position = rev;
                w.progress.store(rev, Ordering::SeqCst);
                if ev.kv.key.starts_with(&w.prefix) {
                    return Some((Ok(ev), w));
                }
            }
            Ok(Feed::Progress(rev)) => {
                if rev > w.position {
                    w.position = rev;
                    w.progress.store(rev, Ordering::SeqCst);
                }
            }
            // Too slow for the feed's buffer, or the cache listed again: end, the client re-watches.
            Err(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decoder() -> Decoder {
        Arc::new(|kv: &KeyValue| {
            let mut v: Value = serde_json::from_slice(&kv.value).ok()?;
            v["rv"] = json!(kv.mod_revision);
            Some(Some(v))
        })
    }

    /// Read-your-writes through the cache: every write followed at once by a consistent read from the
    /// cache sees it (and a delete is gone), on both store backends.
    async fn consistent_reads(store: Store) {
        let cacher = Cacher::start(store.clone(), "/c/".into(), decoder());
        // Not ready before the first list: the caller reads the store.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !cacher
            .fresh(store.revision().await.expect("rev"), FRESH_TIMEOUT)
            .await
        {
            assert!(std::time::Instant::now() < deadline, "cache never ready");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for i in 0..100 {
            let key = format!("/c/{i:03}");
            let kv = store
                .create(&key, json!({"n": i}).to_string().into_bytes())
                .await
                .expect("create");
            // A write elsewhere: the cache must also follow revisions outside its prefix.
            store
                .create(&format!("/other/{i}"), vec![])
                .await
                .expect("create");
            let target = store.revision().await.expect("rev");
            assert!(cacher.fresh(target, FRESH_TIMEOUT).await, "fresh at {target}");
            let page = cacher
                .page("/c/", 0, |_| true, |c| c.value.clone())
                .expect("ready");
            assert_eq!(page.items.len(), i + 1);
            assert!(page.revision >= target);
            assert_eq!(page.items[i]["rv"], json!(kv.mod_revision));
        }
        store.delete("/c/050", None).await.expect("delete");
        assert!(
            cacher
                .fresh(store.revision().await.expect("rev"), FRESH_TIMEOUT)
                .await
        );
        let page = cacher
            .page(
                "/c/",
                10,
                |v| v["n"].as_i64().unwrap_or(0) >= 45,
                |c| c.value.clone(),
            )
            .expect("ready");
        let ns: Vec<i64> = page.items.iter().filter_map(|v| v["n"].as_i64()).collect();
        assert_eq!(ns, [45, 46, 47, 48, 49, 51, 52, 53, 54, 55]);
        assert_eq!(page.continue_after.as_deref(), Some("/c/055"));
    }

    /// Watches from the cache: a start inside the window replays the later events of the prefix and
    /// follows the live ones without a gap or a duplicate; a start before the window or past what the
    /// cache applied is left to the store.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watches_from_the_window_replay_then_follow_without_gaps() {
        use futures::StreamExt;
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open_embedded(&dir.path().join("db"), store::Options::default()).expect("store");
        let first = store.create("/c/a/0", b"{}".to_vec()).await.expect("create");
        let cacher = Cacher::start(store.clone(), "/c/".into(), decoder());
        while !cacher
            .fresh(store.revision().await.expect("rev"), FRESH_TIMEOUT)
            .await
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            cacher.watch("/c/", first.mod_revision - 1).is_none(),
            "before the window"
        );
        let mut revs = Vec::new();
        for i in 1..=10 {
            let ns = if i % 2 == 0 { "a" } else { "b" };
            revs.push(
                store
                    .create(&format!("/c/{ns}/{i}"), b"{}".to_vec())
                    .await
                    .expect("create")
                    .mod_revision,
            );
        }
        let target = store.revision().await.expect("rev");
        assert!(cacher.fresh(target, FRESH_TIMEOUT).await);
        assert!(
            cacher.watch("/c/", target + 5).is_none(),
            "past what the cache applied"
        );
        // From the 4th write, namespace a only: the 4th, 6th, 8th and 10th, then live ones.
        let mut w = cacher.watch("/c/a/", revs[2]).expect("in the window");
        let live = {
            let store = store.clone();
            tokio::spawn(async move {
                let mut out = Vec::new();
                for i in 11..=20 {
                    let ns = if i % 2 == 0 { "a" } else { "b" };
                    out.push((
                        i,
                        store
                            .create(&format!("/c/{ns}/{i}"), b"{}".to_vec())
                            .await
                            .expect("create")
                            .mod_revision,
                    ));
                }
                out
            })
        };
        let mut seen = Vec::new();
        while seen.len() < 9 {
            let ev = tokio::time::timeout(Duration::from_secs(5), w.next())
                .await
                .expect("an event in time")
                .expect("open")
                .expect("ok");
            assert!(w.progress() >= ev.kv.mod_revision || w.progress() == revs[2]);
            seen.push(ev.kv.key.clone());
        }
        let live = live.await.expect("writer");
        let expected: Vec<String> = [4, 6, 8, 10]
            .into_iter()
            .chain(live.iter().filter(|(i, _)| i % 2 == 0).map(|(i, _)| *i))
            .map(|i| format!("/c/a/{i}"))
            .collect();
        assert_eq!(seen, expected);
        // Nothing else (no duplicate of a replayed event).
        assert!(
            tokio::time::timeout(Duration::from_millis(300), w.next())
                .await
                .is_err()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_cache_serves_consistent_reads_on_the_embedded_store() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open_embedded(&dir.path().join("db"), store::Options::default()).expect("store");
        consistent_reads(store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_cache_serves_consistent_reads_on_etcd() {
        if !store::local_etcd::available() {
            assert!(
                std::env::var("BERTH_TEST_ROOT").as_deref() != Ok("1"),
                "etcd is required with BERTH_TEST_ROOT=1"
            );
            eprintln!("skipped: no etcd");
            return;
        }
        let etcd = store::local_etcd::LocalEtcd::start().expect("etcd");
        let store = Store::open_etcd(store::EtcdConfig {
            endpoints: vec![etcd.endpoint()],
            ..Default::default()
        })
        .await
        .expect("connect");
        consistent_reads(store).await;
    }
}
