//! The etcd v3 backend (`berth server --datastore-endpoint`), on the `etcd-client` crate.
//!
//! It mirrors upstream's `k8s.io/apiserver/pkg/storage/etcd3`:
//! - keys are the store's keys unchanged (`/registry/...`), values the bytes the API server hands over;
//! - a key's `mod_revision` is its resourceVersion, the header revision of a write is the new revision;
//! - create is a transaction `If(create_revision(key) == 0) Then(Put)` (`store.go` `Create`); update and
//!   delete are `If(mod_revision(key) == expected) Then(Put|Delete) Else(Get)`, the `Else` telling a
//!   conflict (with the current revision) from a missing key (`GuaranteedUpdate`, `conditionalDelete`);
//! - lists are ranges over the prefix in key order; every page after the first is read at the first page's
//!   revision (`GetList` with `WithRev`), so a continued list is one snapshot, and a compacted revision is
//!   [`Error::Compacted`] (upstream's 410 for an expired continue token);
//! - watches start at `after + 1` with `prev_kv` and progress notifications (`watcher.go`), on a context
//!   that requires a leader; `compact_revision` in a response is [`Error::Compacted`], and progress
//!   notifications (also asked for with [`crate::Watch::request_progress`], etcd's `RequestProgress`)
//!   advance [`crate::Watch::progress`] for bookmarks;
//! - compaction is upstream's `compact.go`: every server runs the loop, and a compare-and-swap on the
//!   version of the key `compact_rev_key` lets exactly one of them compact per interval (the key's value is
//!   the revision compacted to), to the revision seen one interval earlier.
//!
//! etcd's `Compact(E)` keeps the state *at* `E` but not the history of `E` itself: a key deleted at `E`
//! loses its tombstone (etcd's `keyIndex.compact` drops a tombstone at the compaction revision), so a
//! watch that etcd still lets start at `E` would miss that delete. The store's compacted revision is
//! therefore `E` itself (a list at `E` still works, a watch must be after `E`). A watch reads the recorded
//! compaction revision first and fails at once when it is after `after`; etcd's own check catches every
//! older start, so only a compaction to exactly `after + 1` racing the watch's creation could slip
//! through (the compactor compacts to a revision an interval old; the watch cache watches from a fresh
//! list). Starting etcd's watch at `after` instead would close that gap, but etcd 3.4 then sends progress
//! notifications ahead of the events of a watcher it has not yet synced (seen with the watch cache's
//! consistent reads), so the watch starts at `after + 1` as upstream's does.

use crate::{Error, Event, EventKind, KeyValue, ListResult, Memo, Result, Revision, Watch};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Upstream's compactor key (`compact.go`): its value is the revision last compacted to, its version the
/// compactor's logical clock.
pub const COMPACT_REV_KEY: &str = "compact_rev_key";

/// Keys read per range request when a list asks for everything (bounded gRPC messages).
const LIST_CHUNK: i64 = 1000;

/// How to reach the etcd cluster (k3s's `--datastore-*` flags).
#[derive(Debug, Clone, Default)]
pub struct EtcdConfig {
    /// Client URLs, `http://` or `https://host:port` (several: requests are balanced and fail over).
    pub endpoints: Vec<String>,
    /// `--datastore-cafile`: the CA that signed the etcd servers' certificates (needed for `https`).
    pub ca_file: Option<PathBuf>,
    /// `--datastore-certfile`: client certificate (mutual TLS).
    pub cert_file: Option<PathBuf>,
    /// `--datastore-keyfile`: the client certificate's key.
    pub key_file: Option<PathBuf>,
    /// How often the compactor runs (upstream `--etcd-compaction-interval`, 5 minutes); `None` = never.
    pub compaction_interval: Option<Duration>,
}

impl EtcdConfig {
    /// The configuration for k3s's `--datastore-endpoint`: comma-separated `http(s)://host:port` URLs
    /// (an `etcd://`-less list, as k3s takes for etcd). Upstream's 5-minute compaction interval.
    ///
    /// # Errors
    /// [`Error::Backend`] for an empty list or a URL that is not `http://` or `https://` (k3s's SQL
    /// datastores are not supported).
    pub fn from_endpoint(spec: &str) -> Result<EtcdConfig> {
        let endpoints: Vec<String> = spec
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if endpoints.is_empty() {
            return Err(Error::Backend("empty datastore endpoint".into()));
        }
        for e in &endpoints {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(Error::Backend(format!(
                    "datastore endpoint {e:?}: only etcd (http:// or https:// client URLs) is supported"
                )));
            }
        }
        Ok(EtcdConfig {
            endpoints,
            compaction_interval: Some(Duration::from_secs(300)),
            ..EtcdConfig::default()
        })
    }
}

/// The etcd backend: a connected client (cheap to clone).
#[derive(Clone)]
pub(crate) struct Etcd {
    /// Shared: the client is large (kilobytes of per-service state), its clones are not needed.
    client: Arc<Client>,
    /// Stops the compactor when the last clone goes.
    _compactor: Option<Arc<AbortOnDrop>>,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn etcd_err(e: etcd_client::Error) -> Error {
    Error::Backend(format!("etcd: {e}"))
}

/// etcd's `ErrCompacted` ("mvcc: required revision has been compacted") as the store's error.
fn read_err(e: etcd_client::Error, requested: Revision) -> Error {
    if let etcd_client::Error::GRpcStatus(s) = &e
        && s.message().contains("required revision has been compacted")
    {
        return Error::Compacted {
            requested,
            compacted: 0,
        };
    }
    etcd_err(e)
}

fn header_revision(h: Option<&etcd_client::ResponseHeader>) -> Result<Revision> {
    h.map(|h| h.revision())
        .ok_or_else(|| Error::Backend("etcd: response without header".into()))
}

fn to_kv(kv: &etcd_client::KeyValue) -> Result<KeyValue> {
    Ok(KeyValue {
        key: kv.key_str().map_err(etcd_err)?.to_string(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
    })
}

/// The range end of a prefix (etcd's `GetPrefixRangeEnd`).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn read_file(p: &PathBuf) -> Result<Vec<u8>> {
    std::fs::read(p).map_err(|e| Error::Backend(format!("reading {}: {e}", p.display())))
}

impl Etcd {
    pub(crate) async fn connect(config: EtcdConfig) -> Result<Etcd> {
        // Upstream's client settings (`etcd3.newETCD3Client`): keepalive 30 s / 10 s, dial timeout 20 s, and
        // a leader required, so a member cut off from the quorum fails requests and watches instead of
        // serving stale data.
        let mut opts = ConnectOptions::new()
            .with_keep_alive(Duration::from_secs(30), Duration::from_secs(10))
            .with_connect_timeout(Duration::from_secs(20))
            .with_require_leader(true);
        if config.endpoints.iter().any(|e| e.starts_with("https://")) {
            let ca = config
                .ca_file
                .as_ref()
                .ok_or_else(|| Error::Backend("https datastore endpoints need --datastore-cafile".into()))?;
            let mut tls = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(read_file(ca)?));
            match (&config.cert_file, &config.key_file) {
                (Some(c), Some(k)) => {
                    tls = tls.identity(etcd_client::Identity::from_pem(read_file(c)?, read_file(k)?));
                }
                (None, None) => {}
                _ => {
                    return Err(Error::Backend(
                        "--datastore-certfile and --datastore-keyfile go together".into(),
                    ));
                }
            }
            opts = opts.with_tls(tls);
        }
        let client = Client::connect(&config.endpoints, Some(opts))
            .await
            .map_err(etcd_err)?;
        let store = Etcd {
            client: Arc::new(client),
            _compactor: None,
        };
        // Fail now, not at the first request, when no endpoint answers.
        store.revision().await?;
        let compactor = config.compaction_interval.map(|every| {
            let c = store.clone();
            Arc::new(AbortOnDrop(tokio::spawn(async move { c.compactor(every).await })))
        });
        Ok(Etcd {
            _compactor: compactor,
            ..store
        })
    }

    fn kv(&self) -> etcd_client::KvClient {
        self.client.kv_client().max_decoding_message_size(256 << 20)
    }

    /// A range request, retried while the chosen endpoint is unreachable (a dead member, until the
    /// client's balancer stops picking it), as clientv3's retry interceptor repeats reads on `Unavailable`.
    async fn range(
        &self,
        key: impl Into<Vec<u8>>,
        opts: Option<GetOptions>,
    ) -> std::result::Result<etcd_client::GetResponse, etcd_client::Error> {
        let key = key.into();
        let mut attempt = 0u64;
        loop {
            match self.kv().get(key.clone(), opts.clone()).await {
                Err(etcd_client::Error::GRpcStatus(s))
                    if s.code() == tonic::Code::Unavailable && attempt < 10 =>
                {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
                }
                other => return other,
            }
        }
    }

    /// A transaction, sent again while the chosen endpoint cannot be connected to: a write that failed
    /// to connect never reached a member, so repeating it cannot apply it twice (clientv3's
    /// `isSafeRetryMutableRPC` retries a mutating call only in that case). Any other failure — the
    /// outcome unknown — is returned as is.
    async fn txn(&self, txn: Txn) -> std::result::Result<etcd_client::TxnResponse, etcd_client::Error> {
        let mut attempt = 0u64;
        loop {
            match self.kv().txn(txn.clone()).await {
                Err(etcd_client::Error::GRpcStatus(s))
                    if s.code() == tonic::Code::Unavailable
                        && s.message().contains("connect error")
                        && attempt < 10 =>
                {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(20 * attempt)).await;
                }
                other => return other,
            }
        }
    }

    /// etcd's own database snapshot (the maintenance `Snapshot` stream of the member the client picks,
    /// what `etcdctl snapshot save` writes), streamed into `out`; returns the bytes written.
    pub(crate) async fn native_snapshot(&self, out: &mut (dyn std::io::Write + Send)) -> Result<u64> {
        let mut stream = self
            .client
            .maintenance_client()
            .snapshot()
            .await
            .map_err(etcd_err)?;
        let mut n = 0u64;
        while let Some(resp) = stream.message().await.map_err(etcd_err)? {
            out.write_all(resp.blob()).map_err(crate::backend)?;
            n += resp.blob().len() as u64;
        }
        Ok(n)
    }

    pub(crate) async fn revision(&self) -> Result<Revision> {
        let resp = self
            .range(COMPACT_REV_KEY, Some(GetOptions::new().with_count_only()))
            .await
            .map_err(etcd_err)?;
        header_revision(resp.header())
    }

    pub(crate) async fn compacted_revision(&self) -> Result<Revision> {
        let resp = self.range(COMPACT_REV_KEY, None).await.map_err(etcd_err)?;
        let at = resp
            .kvs()
            .first()
            .and_then(|kv| kv.value_str().ok()?.parse::<i64>().ok())
            .unwrap_or(0);
        Ok(at.max(0))
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let resp = self.range(key, None).await.map_err(etcd_err)?;
        resp.kvs().first().map(to_kv).transpose()
    }

    pub(crate) async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        at: Revision,
    ) -> Result<ListResult> {
        let end = prefix_end(prefix);
        // The first key strictly after `start_after`: the key followed by a NUL byte.
        let mut from: Vec<u8> = match start_after {
            Some(s) if s >= prefix => {
                let mut k = s.as_bytes().to_vec();
                k.push(0);
                k
            }
            _ => prefix.as_bytes().to_vec(),
        };
        let mut revision = at;
        let mut kvs = Vec::new();
        loop {
            let want = if limit == 0 {
                LIST_CHUNK
            } else {
                (limit - kvs.len()) as i64
            };
            let mut opts = GetOptions::new().with_range(end.clone()).with_limit(want);
            if revision > 0 {
                opts = opts.with_revision(revision);
            }
            let resp = self
                .range(from.clone(), Some(opts))
                .await
                .map_err(|e| read_err(e, revision))?;
            if revision == 0 {
                revision = header_revision(resp.header())?;
            }
            for kv in resp.kvs() {
                kvs.push(to_kv(kv)?);
            }
            let more = resp.more();
            if !more || (limit != 0 && kvs.len() >= limit) {
                return Ok(ListResult { kvs, revision, more });
            }
            match resp.kvs().last() {
                Some(last) => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                None => return Ok(ListResult { kvs, revision, more }),
            }
        }
    }

    pub(crate) async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue> {
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value.clone(), None)]);
        let resp = self.txn(txn).await.map_err(etcd_err)?;
        if !resp.succeeded() {
            return Err(Error::AlreadyExists { key: key.into() });
        }
        let rev = header_revision(resp.header())?;
        Ok(KeyValue {
            key: key.into(),
            value,
            create_revision: rev,
            mod_revision: rev,
        })
    }

    /// The store's error for a failed compare on `key`: the `Else(Get)` found it at another revision or
    /// not at all.
    fn failed_compare(key: &str, resp: &etcd_client::TxnResponse) -> Error {
        let current = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(g) => Some(g.kvs().first().map(|kv| kv.mod_revision())),
            _ => None,
        });
        match current.flatten() {
            Some(current) => Error::Conflict {
                key: key.into(),
                current,
            },
            None => Error::NotFound { key: key.into() },
        }
    }

    pub(crate) async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> Result<KeyValue> {
        if expected <= 0 {
            // `mod_revision == 0` would hold for a missing key: never a valid expectation.
            return match self.get(key).await? {
                Some(kv) => Err(Error::Conflict {
                    key: key.into(),
                    current: kv.mod_revision,
                }),
                None => Err(Error::NotFound { key: key.into() }),
            };
        }
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, expected)])
            .and_then([TxnOp::put(
                key,
                value.clone(),
                Some(PutOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(key, None)]);
        let resp = self.txn(txn).await.map_err(etcd_err)?;
        if !resp.succeeded() {
            return Err(Self::failed_compare(key, &resp));
        }
        let rev = header_revision(resp.header())?;
        let create_revision = resp
            .op_responses()
            .into_iter()
            .find_map(|r| match r {
                TxnOpResponse::Put(p) => p.prev_key().map(|kv| kv.create_revision()),
                _ => None,
            })
            .unwrap_or(rev);
        Ok(KeyValue {
            key: key.into(),
            value,
            create_revision,
            mod_revision: rev,
        })
    }

    pub(crate) async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue> {
        let del = TxnOp::delete(key, Some(DeleteOptions::new().with_prev_key()));
        let txn = match expected {
            Some(e) => Txn::new()
                .when([Compare::mod_revision(key, CompareOp::Equal, e)])
                .and_then([del])
                .or_else([TxnOp::get(key, None)]),
            None => Txn::new()
                .when([Compare::create_revision(key, CompareOp::Greater, 0)])
                .and_then([del])
                .or_else([TxnOp::get(key, None)]),
        };
        let resp = self.txn(txn).await.map_err(etcd_err)?;
        if !resp.succeeded() {
            return Err(Self::failed_compare(key, &resp));
        }
        let rev = header_revision(resp.header())?;
        let last = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Delete(d) => d.prev_kvs().first().cloned(),
            _ => None,
        });
        // A key deleted between the compare and the delete cannot happen inside one transaction.
        let last = last.ok_or_else(|| Error::NotFound { key: key.into() })?;
        Ok(KeyValue {
            mod_revision: rev,
            ..to_kv(&last)?
        })
    }

    /// Compact etcd to `up_to` (clamped to the current revision), recording it in [`COMPACT_REV_KEY`] as
    /// the compactor does.
    pub(crate) async fn compact(&self, up_to: Revision) -> Result<()> {
        let current = self.revision().await?;
        let target = up_to.min(current);
        let recorded = self.compacted_revision().await?;
        if target <= recorded {
            return Ok(());
        }
        self.kv()
            .put(COMPACT_REV_KEY, target.to_string(), None)
            .await
            .map_err(etcd_err)?;
        self.physical_compact(target).await
    }

    async fn physical_compact(&self, rev: Revision) -> Result<()> {
        match self.kv().compact(rev, None).await.map_err(|e| read_err(e, rev)) {
            // Another server compacted further meanwhile.
            Ok(_) | Err(Error::Compacted { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Upstream's `compactor`: every `interval`, try to advance the logical clock (the version of
    /// [`COMPACT_REV_KEY`]) from the value this server last saw; the one server whose compare succeeds
    /// compacts to the revision it saw one interval ago. A server that loses the race adopts the winner's
    /// clock and the current revision, so it compacts next time if nobody else does.
    async fn compactor(self, interval: Duration) {
        let (mut clock, mut rev) = (0i64, 0i64);
        loop {
            tokio::time::sleep(interval).await;
            match self.compact_step(clock, rev).await {
                Ok((c, r)) => (clock, rev) = (c, r),
                Err(e) => tracing::warn!(error = %e, "etcd compaction failed"),
            }
        }
    }

    async fn compact_step(&self, clock: i64, rev: Revision) -> Result<(i64, Revision)> {
        let txn = Txn::new()
            .when([Compare::version(COMPACT_REV_KEY, CompareOp::Equal, clock)])
            .and_then([TxnOp::put(COMPACT_REV_KEY, rev.to_string(), None)])
            .or_else([TxnOp::get(COMPACT_REV_KEY, None)]);
        let resp = self.txn(txn).await.map_err(etcd_err)?;
        let current = header_revision(resp.header())?;
        if !resp.succeeded() {
            let their_clock = resp
                .op_responses()
                .into_iter()
                .find_map(|r| match r {
                    TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.version()),
                    _ => None,
                })
                .unwrap_or(0);
            return Ok((their_clock, current));
        }
        if rev > 0 {
            self.physical_compact(rev).await?;
            tracing::info!(revision = rev, "etcd compacted");
        }
        Ok((clock + 1, current))
    }

    pub(crate) async fn watch(&self, prefix: &str, after: Revision) -> Result<Watch> {
        // The delete events at the compaction revision itself are gone (module docs).
        let compacted = self.compacted_revision().await?;
        if after < compacted {
            return Err(Error::Compacted {
                requested: after,
                compacted,
            });
        }
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(after + 1)
            .with_prev_key()
            .with_progress_notify();
        let stream = self
            .client
            .watch_client()
            .max_decoding_message_size(256 << 20)
            .watch(prefix, Some(opts))
            .await
            .map_err(etcd_err)?;
        let (sender, responses) = stream.split();
        let progress = Arc::new(AtomicI64::new(after));
        let wake = Arc::new(tokio::sync::Notify::new());
        let state = EtcdWatch {
            sender,
            responses,
            after,
            pending: VecDeque::new(),
            progress: progress.clone(),
            wake: wake.clone(),
            done: false,
        };
        Ok(Watch::from_parts(
            Box::pin(futures::stream::unfold(state, next_etcd_event)),
            progress,
            Some(wake),
        ))
    }
}

struct EtcdWatch {
    sender: etcd_client::WatchRequestSender,
    responses: etcd_client::WatchResponseStream,
    after: Revision,
    pending: VecDeque<Arc<Event>>,
    progress: Arc<AtomicI64>,
    wake: Arc<tokio::sync::Notify>,
    done: bool,
}

fn convert(ev: &etcd_client::Event) -> Result<Event> {
    let kv = ev
        .kv()
        .ok_or_else(|| Error::Backend("etcd: watch event without kv".into()))?;
    let prev = ev.prev_kv().map(to_kv).transpose()?;
    Ok(match ev.event_type() {
        EventType::Put => Event {
            kind: EventKind::Put,
            kv: to_kv(kv)?,
            prev,
            memo: Memo::default(),
        },
        EventType::Delete => {
            // etcd's delete event carries only the key and the delete's revision: the last state is prev_kv.
            let last = prev.clone().unwrap_or_else(|| KeyValue {
                key: String::from_utf8_lossy(kv.key()).into_owned(),
                value: Vec::new(),
                create_revision: 0,
                mod_revision: 0,
            });
            Event {
                kind: EventKind::Delete,
                kv: KeyValue {
                    mod_revision: kv.mod_revision(),
                    ..last
                },
                prev,
                memo: Memo::default(),
            }
        }
    })
}

async fn next_etcd_event(mut st: EtcdWatch) -> Option<(Result<Arc<Event>>, EtcdWatch)> {
    loop {
        if let Some(ev) = st.pending.pop_front() {
            if st.pending.is_empty() {
                st.progress.store(ev.kv.mod_revision, Ordering::SeqCst);
            }
            return Some((Ok(ev), st));
        }
        if st.done {
            return None;
        }
        let msg = tokio::select! {
            m = st.responses.message() => m,
            _ = st.wake.notified() => {
                if let Err(e) = st.sender.request_progress().await {
                    st.done = true;
                    return Some((Err(etcd_err(e)), st));
                }
                continue;
            }
        };
        let resp = match msg {
            Ok(Some(r)) => r,
            Ok(None) => return None,
            Err(e) => {
                st.done = true;
                return Some((Err(etcd_err(e)), st));
            }
        };
        if resp.compact_revision() > 0 {
            st.done = true;
            return Some((
                Err(Error::Compacted {
                    requested: st.after,
                    compacted: resp.compact_revision(),
                }),
                st,
            ));
        }
        if resp.canceled() {
            st.done = true;
            return Some((
                Err(Error::Backend(format!(
                    "etcd watch canceled: {}",
                    resp.cancel_reason()
                ))),
                st,
            ));
        }
        if resp.events().is_empty() {
            // A progress notification (or the creation answer): every event up to the header's revision
            // has been sent before it (etcd sends progress only for a synced watcher).
            if !resp.created()
                && let Some(h) = resp.header()
            {
                st.progress.fetch_max(h.revision(), Ordering::SeqCst);
            }
            continue;
        }
        for ev in resp.events() {
            match convert(ev) {
                Ok(e) => st.pending.push_back(Arc::new(e)),
                Err(e) => {
                    st.done = true;
                    return Some((Err(e), st));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_key_after_every_key_with_the_prefix() {
        assert_eq!(prefix_end("/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
    }

    #[test]
    fn endpoints_are_a_comma_separated_list_of_client_urls() {
        let c = EtcdConfig::from_endpoint("https://a:2379, https://b:2379").expect("parse");
        assert_eq!(c.endpoints, ["https://a:2379", "https://b:2379"]);
        assert!(EtcdConfig::from_endpoint("mysql://u@tcp(h)/db").is_err());
        assert!(EtcdConfig::from_endpoint(" , ").is_err());
    }
}
