//! Store tests, each against both backends (the embedded redb store and a real etcd started on loopback):
//! operations, a model-based property test against an in-memory reference, watch fan-out, compaction, and
//! crash tests (SIGKILL of a writer process for the embedded store, of the etcd member for etcd).
//!
//! etcd is Debian's `etcd-server` (`/usr/bin/etcd`); without it the etcd half is skipped with a message,
//! unless `BERTH_TEST_ROOT=1` (what `scripts/test` sets after installing it), where it is required.

use super::*;
use futures::StreamExt;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::time::Duration;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// One backend under test: where its data lives.
enum Fixture {
    Embedded(tempfile::TempDir),
    Etcd(local_etcd::LocalEtcd),
}

impl Fixture {
    fn name(&self) -> &'static str {
        match self {
            Fixture::Embedded(_) => "embedded",
            Fixture::Etcd(_) => "etcd",
        }
    }

    /// Open a store on this fixture (embedded: keeping `history` revisions; etcd: no compactor).
    async fn open(&self, history: i64) -> Store {
        match self {
            Fixture::Embedded(dir) => Store::open_embedded(
                &dir.path().join("db"),
                Options {
                    history,
                    ..Options::default()
                },
            )
            .expect("open"),
            Fixture::Etcd(etcd) => Store::open_etcd(EtcdConfig {
                endpoints: vec![etcd.endpoint()],
                ..EtcdConfig::default()
            })
            .await
            .expect("connect to etcd"),
        }
    }
}

/// An etcd member for a test, or `None` (skip) when etcd is not installed and not required.
fn etcd() -> Option<local_etcd::LocalEtcd> {
    if !local_etcd::available() {
        assert!(
            std::env::var("BERTH_TEST_ROOT").as_deref() != Ok("1"),
            "etcd ({}) is required with BERTH_TEST_ROOT=1 (Debian etcd-server)",
            local_etcd::binary().display()
        );
        eprintln!("skipping the etcd backend: no {}", local_etcd::binary().display());
        return None;
    }
    Some(local_etcd::LocalEtcd::start().expect("start etcd"))
}

/// Both backends (etcd when available).
fn fixtures() -> Vec<Fixture> {
    let mut out = vec![Fixture::Embedded(tempfile::tempdir().expect("dir"))];
    out.extend(etcd().map(Fixture::Etcd));
    out
}

/// Whether a watch after `after` fails with `Compacted`: at creation (embedded) or as its first item
/// (etcd reports it once the watch is set up).
async fn watch_is_compacted(s: &Store, prefix: &str, after: Revision) -> bool {
    match s.watch(prefix, after).await {
        Err(Error::Compacted { .. }) => true,
        Err(e) => panic!("unexpected {e}"),
        Ok(mut w) => matches!(
            tokio::time::timeout(Duration::from_secs(2), w.next()).await,
            Ok(Some(Err(Error::Compacted { .. })))
        ),
    }
}

#[test]
fn create_update_delete_follow_compare_and_swap_rules() {
    for fx in fixtures() {
        rt().block_on(async {
            let s = fx.open(1000).await;
            let base = s.revision().await.expect("revision");
            let a = s.create("/a/x", b"1".to_vec()).await.expect("create");
            assert_eq!(
                (a.create_revision, a.mod_revision),
                (base + 1, base + 1),
                "{}",
                fx.name()
            );
            assert!(matches!(
                s.create("/a/x", b"2".to_vec()).await,
                Err(Error::AlreadyExists { .. })
            ));
            let stale = s.update("/a/x", b"2".to_vec(), base + 7).await;
            assert!(
                matches!(stale, Err(Error::Conflict { current, .. }) if current == base + 1),
                "{}: {stale:?}",
                fx.name()
            );
            let b = s.update("/a/x", b"2".to_vec(), base + 1).await.expect("update");
            assert_eq!((b.create_revision, b.mod_revision), (base + 1, base + 2));
            assert!(matches!(
                s.update("/a/nope", vec![], 1).await,
                Err(Error::NotFound { .. })
            ));
            assert!(matches!(
                s.update("/a/nope", vec![], 0).await,
                Err(Error::NotFound { .. })
            ));
            assert!(matches!(
                s.delete("/a/x", Some(base + 1)).await,
                Err(Error::Conflict { .. })
            ));
            assert!(matches!(
                s.delete("/a/nope", None).await,
                Err(Error::NotFound { .. })
            ));
            let d = s.delete("/a/x", Some(base + 2)).await.expect("delete");
            assert_eq!((d.mod_revision, d.value.as_slice()), (base + 3, b"2".as_slice()));
            assert_eq!(d.create_revision, base + 1);
            assert_eq!(s.get("/a/x").await.expect("get"), None);
            assert_eq!(s.revision().await.expect("revision"), base + 3, "{}", fx.name());
        });
    }
}

#[test]
fn list_is_prefix_isolated_ordered_and_paged() {
    for fx in fixtures() {
        rt().block_on(async {
            let s = fx.open(1000).await;
            let base = s.revision().await.expect("revision");
            for k in ["/a/3", "/a/1", "/ab/1", "/a/2", "/b/1"] {
                s.create(k, k.as_bytes().to_vec()).await.expect("create");
            }
            let all = s.list("/a/", None, 0).await.expect("list");
            let keys: Vec<&str> = all.kvs.iter().map(|k| k.key.as_str()).collect();
            assert_eq!(keys, ["/a/1", "/a/2", "/a/3"], "{}", fx.name());
            assert_eq!(all.revision, base + 5);
            let page = s.list("/a/", None, 2).await.expect("list");
            assert!(page.more);
            let rest = s
                .list_at("/a/", Some(&page.kvs[1].key), 2, page.revision)
                .await
                .expect("list");
            assert_eq!(rest.kvs.len(), 1);
            assert!(!rest.more);
        });
    }
}

#[test]
fn etcd_pages_of_one_list_are_one_snapshot_and_an_expired_revision_is_compacted() {
    let Some(etcd) = etcd() else { return };
    let fx = Fixture::Etcd(etcd);
    rt().block_on(async {
        let s = fx.open(0).await;
        for i in 0..2500 {
            s.create(&format!("/p/{i:05}"), vec![1; 10])
                .await
                .expect("create");
        }
        // An unlimited list crosses several range chunks at one revision.
        let all = s.list("/p/", None, 0).await.expect("list");
        assert_eq!(all.kvs.len(), 2500);
        let first = s.list("/p/", None, 10).await.expect("page");
        s.delete("/p/00010", None).await.expect("delete");
        s.create("/p/00010a", vec![]).await.expect("create");
        let second = s
            .list_at("/p/", Some(&first.kvs[9].key), 2, first.revision)
            .await
            .expect("page at the first page's revision");
        assert_eq!(
            second.kvs[0].key, "/p/00010",
            "the snapshot still has the deleted key"
        );
        assert_eq!(second.revision, first.revision);
        s.compact(s.revision().await.expect("rev"))
            .await
            .expect("compact");
        let expired = s.list_at("/p/", Some(&first.kvs[9].key), 2, first.revision).await;
        assert!(matches!(expired, Err(Error::Compacted { .. })), "{expired:?}");
    });
}

/// A delete at the very revision compacted to: a watch from just before it is refused, never silently
/// short of the delete (etcd drops the tombstone at its compaction revision; found by the model test).
#[test]
fn a_delete_at_the_compaction_revision_is_never_missed_by_a_watch() {
    for fx in fixtures() {
        rt().block_on(async {
            let s = fx.open(1000).await;
            let created = s.create("/d/a", vec![1]).await.expect("create");
            let deleted = s
                .delete("/d/a", Some(created.mod_revision))
                .await
                .expect("delete");
            s.compact(deleted.mod_revision).await.expect("compact");
            assert_eq!(
                s.compacted_revision().await.expect("compacted"),
                deleted.mod_revision,
                "{}",
                fx.name()
            );
            assert!(
                watch_is_compacted(&s, "/d/", deleted.mod_revision - 1).await,
                "{}: a watch from before the delete",
                fx.name()
            );
            // From the compaction revision on, the next change arrives.
            let mut w = s.watch("/d/", deleted.mod_revision).await.expect("watch");
            let next = s.create("/d/b", vec![]).await.expect("create");
            let ev = tokio::time::timeout(Duration::from_secs(5), w.next())
                .await
                .expect("an event within 5 s")
                .expect("event")
                .expect("ok");
            assert_eq!(ev.kv.mod_revision, next.mod_revision, "{}", fx.name());
        });
    }
}

#[test]
fn reopen_keeps_revision_data_and_compaction_point() {
    for fx in fixtures() {
        let base = rt().block_on(async {
            let s = fx.open(1000).await;
            let base = s.revision().await.expect("revision");
            for i in 0..10 {
                s.create(&format!("/k/{i}"), vec![i]).await.expect("create");
            }
            s.compact(base + 4).await.expect("compact");
            base
        });
        rt().block_on(async {
            let s = fx.open(1000).await;
            let rev = s.revision().await.expect("revision");
            assert!(rev >= base + 10, "{}", fx.name());
            assert_eq!(
                s.compacted_revision().await.expect("compacted"),
                base + 4,
                "{}",
                fx.name()
            );
            assert_eq!(s.list("/k/", None, 0).await.expect("list").kvs.len(), 10);
            assert!(watch_is_compacted(&s, "/k/", base + 3).await, "{}", fx.name());
            let evs: Vec<_> = s
                .watch("/k/", base + 4)
                .await
                .expect("watch")
                .take(6)
                .collect()
                .await;
            assert_eq!(
                evs.iter()
                    .map(|e| e.as_ref().expect("ev").kv.mod_revision - base)
                    .collect::<Vec<_>>(),
                vec![5, 6, 7, 8, 9, 10]
            );
            let new = s.create("/k/new", vec![]).await.expect("writes after reopen");
            assert_eq!(new.mod_revision, rev + 1);
        });
    }
}

#[test]
fn watch_from_compacted_revision_returns_compacted_and_auto_compaction_bounds_history() {
    let dir = tempfile::tempdir().expect("dir");
    let fx = Fixture::Embedded(dir);
    rt().block_on(async {
        let s = fx.open(16).await;
        for i in 0..100 {
            s.create(&format!("/k/{i}"), vec![]).await.expect("create");
        }
        assert!(s.compacted_revision().await.expect("compacted") >= 100 - 16 - 2);
        assert!(matches!(
            s.watch("/k/", 1).await,
            Err(Error::Compacted { requested: 1, .. })
        ));
    });
}

#[test]
fn etcd_compactor_compacts_once_per_interval_to_the_revision_seen_an_interval_earlier() {
    let Some(etcd) = etcd() else { return };
    rt().block_on(async {
        let config = EtcdConfig {
            endpoints: vec![etcd.endpoint()],
            compaction_interval: Some(Duration::from_millis(300)),
            ..EtcdConfig::default()
        };
        // Two servers' compactors on one etcd: the version compare lets one of them win each interval.
        let a = Store::open_etcd(config.clone()).await.expect("connect");
        let b = Store::open_etcd(config).await.expect("connect");
        for i in 0..50 {
            a.create(&format!("/c/{i}"), vec![]).await.expect("create");
        }
        let written = a.revision().await.expect("revision");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while b.compacted_revision().await.expect("compacted") < written {
            assert!(std::time::Instant::now() < deadline, "no compaction");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(watch_is_compacted(&b, "/c/", 1).await);
        // The compactor's key is outside every prefix the API server watches.
        assert!(a.get(etcd::COMPACT_REV_KEY).await.expect("get").is_some());
    });
}

#[test]
fn many_watchers_see_every_change_in_order_with_prev_values() {
    for fx in fixtures() {
        // etcd fsyncs each write and opens a gRPC stream per watcher: fewer of both there.
        let (watchers, n_changes) = match fx {
            Fixture::Embedded(_) => (100, 2000usize),
            Fixture::Etcd(_) => (20, 300usize),
        };
        rt().block_on(async {
            let s = fx.open(100_000).await;
            s.create("/w/x", b"0".to_vec()).await.expect("create");
            let start = s.revision().await.expect("revision");
            let mut handles = Vec::new();
            for _ in 0..watchers {
                let w = s.watch("/w/", start).await.expect("watch");
                handles.push(tokio::spawn(async move {
                    let evs: Vec<std::sync::Arc<Event>> =
                        w.take(n_changes).map(|e| e.expect("event")).collect().await;
                    evs
                }));
            }
            let writer = s.clone();
            let mut rev = start;
            for i in 1..=n_changes {
                rev = writer
                    .update("/w/x", i.to_string().into_bytes(), rev)
                    .await
                    .expect("update")
                    .mod_revision;
            }
            for h in handles {
                let evs = h.await.expect("join");
                assert_eq!(evs.len(), n_changes);
                for (i, e) in evs.iter().enumerate() {
                    assert_eq!(e.kv.mod_revision, start + 1 + i as i64, "{}", fx.name());
                    assert_eq!(e.kv.value, (i + 1).to_string().into_bytes());
                    assert_eq!(
                        e.prev.as_ref().map(|p| p.value.clone()),
                        Some(i.to_string().into_bytes())
                    );
                }
            }
        });
    }
}

#[test]
fn deletes_reach_watchers_with_the_last_state_and_progress_follows_the_store() {
    for fx in fixtures() {
        rt().block_on(async {
            let s = fx.open(1000).await;
            let base = s.revision().await.expect("revision");
            let mut w = s.watch("/d/", base).await.expect("watch");
            assert_eq!(w.progress(), base);
            s.create("/d/x", b"last".to_vec()).await.expect("create");
            s.create("/other/y", vec![]).await.expect("create");
            let del = s.delete("/d/x", None).await.expect("delete");
            let put = w.next().await.expect("ev").expect("ok");
            assert_eq!(put.kind, EventKind::Put);
            let ev = w.next().await.expect("ev").expect("ok");
            assert_eq!(ev.kind, EventKind::Delete, "{}", fx.name());
            assert_eq!(ev.kv.mod_revision, del.mod_revision);
            assert_eq!(ev.kv.value, b"last");
            assert_eq!(ev.kv.create_revision, base + 1);
            assert_eq!(w.progress(), del.mod_revision);
            // A write elsewhere moves the progress (bookmarks) without an event on this prefix.
            let other = s.create("/other/z", vec![]).await.expect("create");
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while w.progress() < other.mod_revision {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{}: progress stuck",
                    fx.name()
                );
                w.request_progress();
                // Drive the stream (the embedded watch advances while it is polled).
                let _ = tokio::time::timeout(Duration::from_millis(100), w.next()).await;
            }
        });
    }
}

#[test]
fn a_watcher_far_behind_the_broadcast_catches_up_from_the_log() {
    let dir = tempfile::tempdir().expect("dir");
    rt().block_on(async {
        let s = Store::open_embedded(
            &dir.path().join("db"),
            Options {
                broadcast_capacity: 16,
                ..Options::default()
            },
        )
        .expect("open");
        let mut w = s.watch("/", 0).await.expect("watch");
        let first = s.create("/x/0", vec![]).await.expect("create");
        assert_eq!(
            w.next().await.expect("ev").expect("ok").kv.mod_revision,
            first.mod_revision
        );
        for i in 1..500 {
            s.create(&format!("/x/{i}"), vec![]).await.expect("create");
        }
        for expected in 2..=500 {
            assert_eq!(w.next().await.expect("ev").expect("ok").kv.mod_revision, expected);
        }
    });
}

#[derive(Debug, Clone)]
enum ModelOp {
    Create(u8),
    Update(u8, bool),
    Delete(u8, bool),
    Compact(u8),
    Reopen,
}

fn model_ops() -> impl Strategy<Value = Vec<ModelOp>> {
    prop::collection::vec(
        prop_oneof![
            3 => (0u8..6).prop_map(ModelOp::Create),
            3 => (0u8..6, any::<bool>()).prop_map(|(k, s)| ModelOp::Update(k, s)),
            2 => (0u8..6, any::<bool>()).prop_map(|(k, s)| ModelOp::Delete(k, s)),
            1 => any::<u8>().prop_map(ModelOp::Compact),
            1 => Just(ModelOp::Reopen),
        ],
        1..40,
    )
}

/// One property-test case: `ops` on a fresh prefix of the fixture's store, checked against a reference
/// (a BTreeMap of key → (create_rev, mod_rev, value) and a Vec of events), then a watch from
/// `base + watch_from`. Revisions are absolute; `base` is the store's revision when the case starts (etcd
/// is shared by the cases, and its compaction bookkeeping takes a revision of its own).
fn model_case(
    runtime: &tokio::runtime::Runtime,
    fx: &Fixture,
    case: usize,
    ops: &[ModelOp],
    watch_from: i64,
) -> Result<(), TestCaseError> {
    let prefix = format!("/m{case}/");
    let mut store = runtime.block_on(fx.open(1_000_000));
    let base = runtime.block_on(store.revision()).expect("revision");
    let mut model: BTreeMap<String, (i64, i64, Vec<u8>)> = BTreeMap::new();
    let mut log: Vec<(i64, String, bool)> = Vec::new();
    let mut rev = base;
    let mut compacted = runtime.block_on(store.compacted_revision()).expect("compacted");
    for (step, op) in ops.iter().enumerate() {
        let value = vec![step as u8];
        runtime.block_on(async {
            match op {
                ModelOp::Create(k) => {
                    let key = format!("{prefix}{k}");
                    let got = store.create(&key, value.clone()).await;
                    if model.contains_key(&key) {
                        let ok = matches!(got, Err(Error::AlreadyExists { .. }));
                        prop_assert!(ok, "unexpected result");
                    } else {
                        rev += 1;
                        prop_assert_eq!(got.expect("create").mod_revision, rev);
                        model.insert(key.clone(), (rev, rev, value));
                        log.push((rev, key, true));
                    }
                }
                ModelOp::Update(k, stale) => {
                    let key = format!("{prefix}{k}");
                    let current = model.get(&key).map(|e| e.1);
                    let expected = match (current, stale) {
                        (Some(c), true) => c + 100,
                        (Some(c), false) => c,
                        (None, _) => 1,
                    };
                    let got = store.update(&key, value.clone(), expected).await;
                    match current {
                        None => {
                            let ok = matches!(got, Err(Error::NotFound { .. }));
                            prop_assert!(ok, "unexpected result");
                        }
                        Some(c) if *stale => {
                            let ok = matches!(got, Err(Error::Conflict { current, .. }) if current == c);
                            prop_assert!(ok, "unexpected result");
                        }
                        Some(_) => {
                            rev += 1;
                            prop_assert_eq!(got.expect("update").mod_revision, rev);
                            let entry = model.get_mut(&key).expect("present");
                            entry.1 = rev;
                            entry.2 = value;
                            log.push((rev, key, true));
                        }
                    }
                }
                ModelOp::Delete(k, stale) => {
                    let key = format!("{prefix}{k}");
                    let current = model.get(&key).map(|e| e.1);
                    let expected = current.map(|c| if *stale { c + 100 } else { c });
                    let got = store.delete(&key, expected).await;
                    match current {
                        None => {
                            let ok = matches!(got, Err(Error::NotFound { .. }));
                            prop_assert!(ok, "unexpected result");
                        }
                        Some(_) if *stale => {
                            let ok = matches!(got, Err(Error::Conflict { .. }));
                            prop_assert!(ok, "unexpected result");
                        }
                        Some(_) => {
                            rev += 1;
                            prop_assert_eq!(got.expect("delete").mod_revision, rev);
                            model.remove(&key);
                            log.push((rev, key, false));
                        }
                    }
                }
                ModelOp::Compact(to) => {
                    let to = (base + i64::from(*to)).min(rev);
                    store.compact(to).await.expect("compact");
                    let now = store.compacted_revision().await.expect("compacted");
                    prop_assert_eq!(now, compacted.max(to));
                    compacted = now;
                    // etcd records the compaction in its own key: one revision more.
                    rev = store.revision().await.expect("revision");
                }
                ModelOp::Reopen => {}
            }
            Ok(())
        })?;
        if matches!(op, ModelOp::Reopen) {
            drop(store);
            store = runtime.block_on(fx.open(1_000_000));
        }
        prop_assert_eq!(runtime.block_on(store.revision()).expect("revision"), rev);
        let listed = runtime.block_on(store.list(&prefix, None, 0)).expect("list");
        let got: Vec<(String, i64, i64, Vec<u8>)> = listed
            .kvs
            .into_iter()
            .map(|k| (k.key, k.create_revision, k.mod_revision, k.value))
            .collect();
        let want: Vec<(String, i64, i64, Vec<u8>)> = model
            .iter()
            .map(|(k, (c, m, v))| (k.clone(), *c, *m, v.clone()))
            .collect();
        prop_assert_eq!(got, want);
    }
    let from = (base + watch_from).min(rev);
    let want: Vec<(i64, String, bool)> = log.iter().filter(|e| e.0 > from).cloned().collect();
    if from < compacted {
        prop_assert!(runtime.block_on(watch_is_compacted(&store, &prefix, from)));
        return Ok(());
    }
    let w = runtime.block_on(store.watch(&prefix, from)).expect("watch");
    // A missing event fails the case within seconds instead of waiting forever.
    let got: Vec<(i64, String, bool)> = runtime.block_on(async {
        let mut got = Vec::new();
        let mut w = w.take(want.len());
        while let Ok(Some(e)) = tokio::time::timeout(Duration::from_secs(5), w.next()).await {
            let e = e.expect("event");
            got.push((e.kv.mod_revision, e.kv.key.clone(), e.kind == EventKind::Put));
        }
        got
    });
    prop_assert_eq!(got, want);
    Ok(())
}

/// `cases` random cases of [`model_case`], or `STORE_MODEL_CASES` of them (a longer hunt by hand: a run
/// of 1,000 cases on etcd found a delete lost at the compaction revision).
fn run_model(fx: &Fixture, cases: u32) {
    let runtime = rt();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: std::env::var("STORE_MODEL_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(cases),
        // A failing case is shrunk for at most a minute (the default shrinks without bound).
        max_shrink_time: 60_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let case = std::cell::Cell::new(0usize);
    let result = runner.run(&(model_ops(), 0i64..20), |(ops, watch_from)| {
        case.set(case.get() + 1);
        model_case(&runtime, fx, case.get(), &ops, watch_from)
    });
    if let Err(e) = result {
        panic!("{}: {e}", fx.name());
    }
}

#[test]
fn embedded_store_matches_an_in_memory_reference() {
    run_model(&Fixture::Embedded(tempfile::tempdir().expect("dir")), 48);
}

#[test]
fn etcd_store_matches_an_in_memory_reference() {
    let Some(etcd) = etcd() else { return };
    // Every case on one etcd member (fresh prefix per case); fewer cases, each write being an fsync.
    run_model(&Fixture::Etcd(etcd), 24);
}

/// The child side of the crash test: creates keys concurrently and prints each acknowledged key.
#[test]
fn crash_child_writer() {
    let Ok(path) = std::env::var("STORE_CRASH_CHILD") else {
        return;
    };
    rt().block_on(async {
        let s = Store::open_embedded(Path::new(&path), Options::default()).expect("open");
        let mut tasks = Vec::new();
        for w in 0..8 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0.. {
                    let key = format!("/crash/{w}/{i}");
                    if s.create(&key, vec![7; 200]).await.is_ok() {
                        use std::io::Write;
                        let mut out = std::io::stdout().lock();
                        let _ = writeln!(out, "{key}");
                        let _ = out.flush();
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
}

#[test]
fn kill_9_mid_burst_loses_no_acknowledged_write() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("db");
    for round in 0..3 {
        let mut child = std::process::Command::new(std::env::current_exe().expect("exe"))
            .args([
                "--exact",
                "tests::crash_child_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("STORE_CRASH_CHILD", &path)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let mut acked = Vec::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.expect("line");
            if line.starts_with("/crash/") {
                acked.push(line);
            }
            if acked.len() >= 300 + round * 100 {
                break;
            }
        }
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        rt().block_on(async {
            let s = Store::open_embedded(&path, Options::default()).expect("reopens cleanly after SIGKILL");
            for key in &acked {
                assert!(
                    s.get(key).await.expect("get").is_some(),
                    "acknowledged {key} lost"
                );
            }
            s.create(&format!("/after/{round}"), vec![])
                .await
                .expect("accepts writes");
        });
    }
}

/// The etcd backend's crash test: eight writers create keys while the etcd member is SIGKILLed mid-burst;
/// after a restart on the same data dir every acknowledged key is there, and writes go on.
#[test]
fn etcd_kill_9_mid_burst_loses_no_acknowledged_write() {
    let Some(mut etcd) = etcd() else { return };
    let endpoint = etcd.endpoint();
    let runtime = rt();
    for round in 0..2 {
        let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        let s = runtime
            .block_on(Store::open_etcd(EtcdConfig {
                endpoints: vec![endpoint.clone()],
                ..EtcdConfig::default()
            }))
            .expect("connect");
        for w in 0..8 {
            let (s, acked, stop) = (s.clone(), acked.clone(), stop.clone());
            tasks.push(runtime.spawn(async move {
                for i in 0.. {
                    if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    let key = format!("/crash{round}/{w}/{i}");
                    match tokio::time::timeout(Duration::from_secs(2), s.create(&key, vec![7; 200])).await {
                        Ok(Ok(_)) => acked.lock().expect("lock").push(key),
                        _ => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            }));
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while acked.lock().expect("lock").len() < 300 + round * 100 {
            assert!(std::time::Instant::now() < deadline, "writes too slow");
            std::thread::sleep(Duration::from_millis(5));
        }
        etcd.kill();
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for t in tasks {
            let _ = runtime.block_on(t);
        }
        drop(s);
        etcd.restart().expect("etcd restarts on its data dir");
        runtime.block_on(async {
            let s = Store::open_etcd(EtcdConfig {
                endpoints: vec![endpoint.clone()],
                ..EtcdConfig::default()
            })
            .await
            .expect("reconnect");
            let acked = acked.lock().expect("lock").clone();
            let listed = s.list(&format!("/crash{round}/"), None, 0).await.expect("list");
            let present: std::collections::HashSet<&str> =
                listed.kvs.iter().map(|kv| kv.key.as_str()).collect();
            for key in &acked {
                assert!(present.contains(key.as_str()), "acknowledged {key} lost");
            }
            s.create(&format!("/after/{round}"), vec![])
                .await
                .expect("accepts writes");
        });
    }
}

/// `--datastore-cafile/certfile/keyfile`: an etcd that serves HTTPS and requires client certificates is
/// reached with them (reads, writes, watches), and refused without a client certificate.
#[test]
fn etcd_over_mutual_tls_with_the_datastore_files() {
    if etcd().is_none() {
        return;
    }
    let etcd = local_etcd::LocalEtcd::start_tls().expect("start etcd with TLS");
    let files = etcd.tls_files().expect("tls files");
    rt().block_on(async {
        let config = EtcdConfig {
            endpoints: vec![etcd.endpoint()],
            ca_file: Some(files.ca.clone()),
            ..EtcdConfig::default()
        };
        let refused = tokio::time::timeout(Duration::from_secs(30), Store::open_etcd(config.clone())).await;
        assert!(matches!(refused, Ok(Err(_))), "no client certificate: refused");
        let s = Store::open_etcd(EtcdConfig {
            cert_file: Some(files.cert.clone()),
            key_file: Some(files.key.clone()),
            ..config
        })
        .await
        .expect("connect with the client certificate");
        let base = s.revision().await.expect("revision");
        let mut w = s.watch("/tls/", base).await.expect("watch");
        let kv = s.create("/tls/x", b"v".to_vec()).await.expect("create");
        assert_eq!(s.get("/tls/x").await.expect("get"), Some(kv.clone()));
        assert_eq!(w.next().await.expect("ev").expect("ok").kv, kv);
    });
}

/// Several endpoints: a store on a 3-member etcd cluster keeps taking writes when one member is
/// SIGKILLed mid-burst (the client fails over to the others), and no acknowledged write is lost.
#[test]
fn etcd_cluster_keeps_writing_when_a_member_is_killed() {
    if etcd().is_none() {
        return;
    }
    let mut cluster = local_etcd::LocalEtcd::cluster(3).expect("start a 3-member etcd");
    let runtime = rt();
    let s = runtime
        .block_on(Store::open_etcd(
            EtcdConfig::from_endpoint(&cluster.endpoints()).expect("endpoints"),
        ))
        .expect("connect");
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..4 {
        let (s, acked, stop) = (s.clone(), acked.clone(), stop.clone());
        tasks.push(runtime.spawn(async move {
            for i in 0.. {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let key = format!("/ha/{w}/{i}");
                match tokio::time::timeout(Duration::from_secs(5), s.create(&key, vec![1; 100])).await {
                    Ok(Ok(_)) => acked.lock().expect("lock").push(key),
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }));
    }
    let count = || acked.lock().expect("lock").len();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while count() < 200 {
        assert!(std::time::Instant::now() < deadline, "writes too slow");
        std::thread::sleep(Duration::from_millis(5));
    }
    cluster.kill_member(0);
    let at_kill = count();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while count() < at_kill + 300 {
        assert!(
            std::time::Instant::now() < deadline,
            "writes did not continue after a member died ({} since)",
            count() - at_kill
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for t in tasks {
        let _ = runtime.block_on(t);
    }
    let listed = runtime.block_on(s.list("/ha/", None, 0)).expect("list");
    let present: std::collections::HashSet<String> = listed.kvs.into_iter().map(|kv| kv.key).collect();
    for key in acked.lock().expect("lock").iter() {
        assert!(present.contains(key), "acknowledged {key} lost");
    }
}

/// A store opened while one member of its endpoints is down (a server restarted during a member's
/// outage) writes at once: a write the dead member never received is sent to another one, as clientv3
/// retries a mutating call that failed before reaching a server.
#[test]
fn etcd_writes_go_to_a_live_member_when_one_endpoint_is_down() {
    if etcd().is_none() {
        return;
    }
    let mut cluster = local_etcd::LocalEtcd::cluster(3).expect("start a 3-member etcd");
    cluster.kill_member(0);
    let runtime = rt();
    let s = runtime
        .block_on(Store::open_etcd(
            EtcdConfig::from_endpoint(&cluster.endpoints()).expect("endpoints"),
        ))
        .expect("connect");
    runtime.block_on(async {
        for i in 0..30 {
            let key = format!("/down/{i}");
            let kv = s.create(&key, vec![1]).await.expect("create with a member down");
            s.update(&key, vec![2], kv.mod_revision)
                .await
                .expect("update with a member down");
            if i % 2 == 0 {
                s.delete(&key, None).await.expect("delete with a member down");
            }
        }
    });
}

/// `berth snapshot save --format etcd`: etcd's own database snapshot, which `etcdctl snapshot status`
/// reads as a database holding the keys written before it (checked when Debian's etcd-client is there).
#[test]
fn etcd_native_snapshot_is_a_database_etcdctl_reads() {
    let Some(etcd) = etcd() else {
        return;
    };
    let runtime = rt();
    let s = runtime
        .block_on(Store::open_etcd(
            EtcdConfig::from_endpoint(&etcd.endpoint()).expect("endpoint"),
        ))
        .expect("connect");
    let dir = tempfile::tempdir().expect("dir");
    let saved = runtime.block_on(async {
        for i in 0..50 {
            s.create(&format!("/native/{i}"), vec![7; 64])
                .await
                .expect("create");
        }
        crate::snapshot::save_etcd(&s, dir.path(), "native.db")
            .await
            .expect("etcd snapshot")
    });
    assert!(saved.size > 0 && saved.path.is_file());
    let embedded = Store::open_embedded(&dir.path().join("e"), Options::default()).expect("embedded");
    assert!(runtime.block_on(embedded.etcd_snapshot(&mut Vec::new())).is_err());
    let etcdctl = std::path::Path::new("/usr/bin/etcdctl");
    if !etcdctl.is_file() {
        eprintln!("etcdctl not installed: the snapshot's contents are not checked");
        return;
    }
    let out = std::process::Command::new(etcdctl)
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "status", "-w", "json"])
        .arg(&saved.path)
        .output()
        .expect("etcdctl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(status["totalKey"].as_i64().unwrap_or(0) >= 50, "{status}");
    assert!(
        status["revision"].as_i64().unwrap_or(0) >= saved.revision,
        "{status}"
    );
}
