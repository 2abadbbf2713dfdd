//! Store tests: operations, a model-based property test against an in-memory reference, watch fan-out,
//! and a crash test that SIGKILLs a writer process mid-burst.

use super::*;
use futures::StreamExt;
use proptest::prelude::*;
use std::collections::BTreeMap;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn open(dir: &tempfile::TempDir, history: i64) -> Store {
    Store::open_embedded(
        &dir.path().join("db"),
        Options {
            history,
            ..Options::default()
        },
    )
    .expect("open")
}

#[test]
fn create_update_delete_follow_compare_and_swap_rules() {
    let dir = tempfile::tempdir().expect("dir");
    rt().block_on(async {
        let s = open(&dir, 1000);
        let a = s.create("/a/x", b"1".to_vec()).await.expect("create");
        assert_eq!((a.create_revision, a.mod_revision), (1, 1));
        assert!(matches!(
            s.create("/a/x", b"2".to_vec()).await,
            Err(Error::AlreadyExists { .. })
        ));
        assert!(matches!(
            s.update("/a/x", b"2".to_vec(), 7).await,
            Err(Error::Conflict { current: 1, .. })
        ));
        let b = s.update("/a/x", b"2".to_vec(), 1).await.expect("update");
        assert_eq!((b.create_revision, b.mod_revision), (1, 2));
        assert!(matches!(
            s.update("/a/nope", vec![], 1).await,
            Err(Error::NotFound { .. })
        ));
        assert!(matches!(
            s.delete("/a/x", Some(1)).await,
            Err(Error::Conflict { .. })
        ));
        let d = s.delete("/a/x", Some(2)).await.expect("delete");
        assert_eq!((d.mod_revision, d.value.as_slice()), (3, b"2".as_slice()));
        assert_eq!(s.get("/a/x").await.expect("get"), None);
        assert_eq!(s.revision(), 3);
    });
}

#[test]
fn list_is_prefix_isolated_ordered_and_paged() {
    let dir = tempfile::tempdir().expect("dir");
    rt().block_on(async {
        let s = open(&dir, 1000);
        for k in ["/a/3", "/a/1", "/ab/1", "/a/2", "/b/1"] {
            s.create(k, k.as_bytes().to_vec()).await.expect("create");
        }
        let all = s.list("/a/", None, 0).await.expect("list");
        let keys: Vec<&str> = all.kvs.iter().map(|k| k.key.as_str()).collect();
        assert_eq!(keys, ["/a/1", "/a/2", "/a/3"]);
        assert_eq!(all.revision, 5);
        let page = s.list("/a/", None, 2).await.expect("list");
        assert!(page.more);
        let rest = s.list("/a/", Some(&page.kvs[1].key), 2).await.expect("list");
        assert_eq!(rest.kvs.len(), 1);
        assert!(!rest.more);
    });
}

#[test]
fn reopen_keeps_revision_data_and_compaction_point() {
    let dir = tempfile::tempdir().expect("dir");
    rt().block_on(async {
        let s = open(&dir, 1000);
        for i in 0..10 {
            s.create(&format!("/k/{i}"), vec![i]).await.expect("create");
        }
        s.compact(4).await.expect("compact");
    });
    rt().block_on(async {
        let s = open(&dir, 1000);
        assert_eq!(s.revision(), 10);
        assert_eq!(s.compacted_revision(), 4);
        assert_eq!(s.list("/k/", None, 0).await.expect("list").kvs.len(), 10);
        assert!(matches!(s.watch("/k/", 3), Err(Error::Compacted { .. })));
        let evs: Vec<_> = s.watch("/k/", 4).expect("watch").take(6).collect().await;
        assert_eq!(
            evs.iter()
                .map(|e| e.as_ref().expect("ev").kv.mod_revision)
                .collect::<Vec<_>>(),
            vec![5, 6, 7, 8, 9, 10]
        );
        s.create("/k/new", vec![]).await.expect("writes after reopen");
        assert_eq!(s.revision(), 11);
    });
}

#[test]
fn watch_from_compacted_revision_returns_compacted_and_auto_compaction_bounds_history() {
    let dir = tempfile::tempdir().expect("dir");
    rt().block_on(async {
        let s = open(&dir, 16);
        for i in 0..100 {
            s.create(&format!("/k/{i}"), vec![]).await.expect("create");
        }
        assert!(s.compacted_revision() >= 100 - 16 - 2);
        assert!(matches!(
            s.watch("/k/", 1),
            Err(Error::Compacted { requested: 1, .. })
        ));
    });
}

#[test]
fn many_watchers_see_every_change_in_order_with_prev_values() {
    let dir = tempfile::tempdir().expect("dir");
    rt().block_on(async {
        let s = open(&dir, 100_000);
        s.create("/w/x", b"0".to_vec()).await.expect("create");
        let start = s.revision();
        let n_changes = 2000usize;
        let mut handles = Vec::new();
        for _ in 0..100 {
            let w = s.watch("/w/", start).expect("watch");
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
                assert_eq!(e.kv.mod_revision, start + 1 + i as i64);
                assert_eq!(e.kv.value, (i + 1).to_string().into_bytes());
                assert_eq!(
                    e.prev.as_ref().map(|p| p.value.clone()),
                    Some(i.to_string().into_bytes())
                );
            }
        }
    });
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
        let mut w = s.watch("/", 0).expect("watch");
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    /// Reference: a BTreeMap of key → (create_rev, mod_rev, value) and a Vec of events.
    #[test]
    fn store_matches_an_in_memory_reference(ops in model_ops(), watch_from in 0i64..20) {
        let dir = tempfile::tempdir().expect("dir");
        let runtime = rt();
        let mut store = open(&dir, 1_000_000);
        let mut model: BTreeMap<String, (i64, i64, Vec<u8>)> = BTreeMap::new();
        let mut log: Vec<(i64, String, bool)> = Vec::new();
        let mut rev = 0i64;
        let mut compacted = 0i64;
        for (step, op) in ops.iter().enumerate() {
            let value = vec![step as u8];
            runtime.block_on(async {
                match op {
                    ModelOp::Create(k) => {
                        let key = format!("/m/{k}");
                        let got = store.create(&key, value.clone()).await;
                        if model.contains_key(&key) {
                            { let ok = matches!(got, Err(Error::AlreadyExists { .. })); prop_assert!(ok, "unexpected result"); };
                        } else {
                            rev += 1;
                            prop_assert_eq!(got.expect("create").mod_revision, rev);
                            model.insert(key.clone(), (rev, rev, value));
                            log.push((rev, key, true));
                        }
                    }
                    ModelOp::Update(k, stale) => {
                        let key = format!("/m/{k}");
                        let current = model.get(&key).map(|e| e.1);
                        let expected = match (current, stale) { (Some(c), true) => c + 100, (Some(c), false) => c, (None, _) => 1 };
                        let got = store.update(&key, value.clone(), expected).await;
                        match current {
                            None => { let ok = matches!(got, Err(Error::NotFound { .. })); prop_assert!(ok, "unexpected result"); },
                            Some(c) if *stale => { let ok = matches!(got, Err(Error::Conflict { current, .. }) if current == c); prop_assert!(ok, "unexpected result"); },
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
                        let key = format!("/m/{k}");
                        let current = model.get(&key).map(|e| e.1);
                        let expected = current.map(|c| if *stale { c + 100 } else { c });
                        let got = store.delete(&key, expected).await;
                        match current {
                            None => { let ok = matches!(got, Err(Error::NotFound { .. })); prop_assert!(ok, "unexpected result"); },
                            Some(_) if *stale => { let ok = matches!(got, Err(Error::Conflict { .. })); prop_assert!(ok, "unexpected result"); },
                            Some(_) => {
                                rev += 1;
                                prop_assert_eq!(got.expect("delete").mod_revision, rev);
                                model.remove(&key);
                                log.push((rev, key, false));
                            }
                        }
                    }
                    ModelOp::Compact(to) => {
                        let to = i64::from(*to).min(rev);
                        store.compact(to).await.expect("compact");
                        compacted = compacted.max(to);
                    }
                    ModelOp::Reopen => {}
                }
                Ok(())
            })?;
            if matches!(op, ModelOp::Reopen) {
                drop(store);
                store = open(&dir, 1_000_000);
            }
            prop_assert_eq!(store.revision(), rev);
            let listed = runtime.block_on(store.list("/m/", None, 0)).expect("list");
            let got: Vec<(String, i64, i64, Vec<u8>)> = listed.kvs.into_iter().map(|k| (k.key, k.create_revision, k.mod_revision, k.value)).collect();
            let want: Vec<(String, i64, i64, Vec<u8>)> = model.iter().map(|(k, (c, m, v))| (k.clone(), *c, *m, v.clone())).collect();
            prop_assert_eq!(got, want);
        }
        let from = watch_from.min(rev);
        match store.watch("/m/", from) {
            Err(Error::Compacted { .. }) => prop_assert!(from < compacted),
            Err(e) => prop_assert!(false, "unexpected {e}"),
            Ok(w) => {
                prop_assert!(from >= compacted);
                let want: Vec<(i64, String, bool)> = log.iter().filter(|e| e.0 > from).cloned().collect();
                let got: Vec<(i64, String, bool)> = runtime.block_on(w.take(want.len()).map(|e| {
                    let e = e.expect("event");
                    (e.kv.mod_revision, e.kv.key.clone(), e.kind == EventKind::Put)
                }).collect());
                prop_assert_eq!(got, want);
            }
        }
    }
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
