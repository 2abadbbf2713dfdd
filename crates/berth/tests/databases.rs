//! Three real clustered databases as StatefulSets (issue 6; `examples/etcd`, `examples/redis`,
//! `examples/postgres`): each image built from Debian packages by its `build.sh`, imported, and its
//! manifest applied unchanged. Checked with the databases' own tools through `kubectl exec` and with
//! clients on the host: replication between members, a deleted member coming back with its identity and
//! data, scaling down and up, a rolling update that keeps etcd's quorum, and kill -9 of the whole server
//! losing nothing. Needs root (like `pods.rs`) and the Debian mirror (apt).

mod common;

use base64::Engine;
use common::{Server, eventually, pod};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The example's manifest.
fn manifest(example: &str) -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(example)
        .join(format!("{example}.yaml"))
        .to_string_lossy()
        .into_owned()
}

fn is_ready(p: &Value) -> bool {
    p["metadata"]["deletionTimestamp"].is_null()
        && p["status"]["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// Wait until every named pod is Ready (and not terminating); their uids.
fn all_ready(s: &Server, pods: &[&str], secs: u64) -> Vec<String> {
    eventually(secs, &format!("{pods:?} Ready"), || {
        pods.iter()
            .map(|n| {
                let p = pod(s, n)?;
                is_ready(&p).then(|| p["metadata"]["uid"].as_str().unwrap_or_default().to_string())
            })
            .collect()
    })
}

/// Apply the example's manifest and wait for its members to be Ready; prints the time it took.
fn apply_and_wait(s: &Server, example: &str, pods: &[&str]) {
    let t0 = Instant::now();
    s.ok(&["apply", "-f", &manifest(example)]);
    all_ready(s, pods, 120);
    eprintln!(
        "{example}: kubectl apply → {} members Ready in {:.1} s",
        pods.len(),
        t0.elapsed().as_secs_f64()
    );
}

/// `kubectl exec POD -- ARGS…`, stdout; panics when it fails.
#[track_caller]
fn exec(s: &Server, pod: &str, args: &[&str]) -> String {
    let mut a = vec!["exec", pod, "--"];
    a.extend_from_slice(args);
    s.ok(&a)
}

/// `kubectl exec POD -- ARGS…`, stdout when it succeeds.
fn try_exec(s: &Server, pod: &str, args: &[&str]) -> Option<String> {
    let mut a = vec!["exec", pod, "--"];
    a.extend_from_slice(args);
    let out = s.kubectl(&a);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Wait until every member of the set is updated and Ready, from the set's status.
fn rolled_out(s: &Server, set: &str, replicas: u64, secs: u64) {
    eventually(secs, &format!("{set} rolled out"), || {
        let st = s.get_json(&["sts", set]);
        let status = &st["status"];
        (status["observedGeneration"] == st["metadata"]["generation"]
            && status["updatedReplicas"].as_u64() == Some(replicas)
            && status["readyReplicas"].as_u64() == Some(replicas)
            && status["currentRevision"] == status["updateRevision"])
            .then_some(())
    });
}

// ---- etcd ----

const ETCD: [&str; 3] = ["etcd-0", "etcd-1", "etcd-2"];

/// Member name → member ID, from `etcdctl member list` (`ID, status, name, peer, client, learner`).
fn etcd_members(s: &Server) -> Vec<(String, String)> {
    let out = exec(s, "etcd-0", &["etcdctl", "member", "list"]);
    let mut m: Vec<(String, String)> = out
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(", ").collect();
            Some((f.get(2)?.to_string(), f.first()?.to_string()))
        })
        .collect();
    m.sort();
    m
}

/// One etcd write through its JSON gateway (`POST /v3/kv/put`) on `addr`, over a fresh connection.
fn etcd_put(addr: (&str, u16), key: &str, value: &str) -> Result<(), String> {
    let b64 = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
    let body = format!(r#"{{"key":"{}","value":"{}"}}"#, b64(key), b64(value));
    let ip: std::net::IpAddr = addr.0.parse().map_err(|e| format!("{e}"))?;
    let mut c = TcpStream::connect_timeout(&(ip, addr.1).into(), Duration::from_secs(2))
        .map_err(|e| format!("connect: {e}"))?;
    c.set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(|e| e.to_string())?;
    let req = format!(
        "POST /v3/kv/put HTTP/1.0\r\nHost: etcd\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    c.write_all(req.as_bytes()).map_err(|e| format!("send: {e}"))?;
    let mut r = String::new();
    c.read_to_string(&mut r).map_err(|e| format!("read: {e}"))?;
    if r.starts_with("HTTP/1.0 200") || r.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(r.lines().last().unwrap_or_default().to_string())
    }
}

/// How many keys start with `prefix`, read through `pod` (a range's `count` is of all matching keys,
/// whatever its limit; etcdctl 3.4 has no `--count-only`).
fn etcd_count(s: &Server, pod: &str, prefix: &str) -> u64 {
    let out = exec(
        s,
        pod,
        &["etcdctl", "get", prefix, "--prefix", "--limit=1", "-w", "json"],
    );
    serde_json::from_str::<Value>(&out).expect("json")["count"]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn etcd_three_members_keep_identity_data_and_quorum() {
    if !common::can_run_containers() {
        return;
    }
    let t = Instant::now();
    let mut s = Server::start_with(&["--node-name", "etcd-node"]);
    common::build_and_import(&s, "etcd", None);
    apply_and_wait(&s, "etcd", &ETCD);

    // The three members bootstrapped through their stable names; a write through etcd-0 is read through
    // etcd-2.
    eventually(60, "all members healthy", || common::etcd_example_healthy(&s));
    exec(&s, "etcd-0", &["etcdctl", "put", "greeting", "hello"]);
    assert_eq!(
        exec(
            &s,
            "etcd-2",
            &["etcdctl", "get", "greeting", "--print-value-only"]
        ),
        "hello\n"
    );

    // A deleted member comes back as the same member (ID from its data dir) with its data.
    let members = etcd_members(&s);
    assert_eq!(
        members.iter().map(|m| m.0.as_str()).collect::<Vec<_>>(),
        ETCD,
        "{members:?}"
    );
    let uid = pod(&s, "etcd-1").expect("etcd-1")["metadata"]["uid"].clone();
    s.ok(&["delete", "pod", "etcd-1"]);
    let uids = all_ready(&s, &["etcd-1"], 60);
    assert_ne!(uids[0], uid.as_str().unwrap_or_default());
    assert_eq!(etcd_members(&s), members, "same member IDs");
    // Serializable: answered from etcd-1's own copy.
    assert_eq!(
        exec(
            &s,
            "etcd-1",
            &[
                "etcdctl",
                "get",
                "greeting",
                "--print-value-only",
                "--consistency=s"
            ]
        ),
        "hello\n"
    );
    eventually(30, "all members healthy again", || {
        common::etcd_example_healthy(&s)
    });

    // A rolling update to another tag of the image, one member at a time: a client writing through the
    // `etcd-client` Service all along sees every write acknowledged. Like etcd's own client, it retries a
    // write that a member going away could not answer; a write that gets no acknowledgement for 10 s
    // (no quorum) fails the test.
    let svc = s.get_json(&["service", "etcd-client"])["spec"]["clusterIP"]
        .as_str()
        .expect("clusterIP")
        .to_string();
    let stop = AtomicBool::new(false);
    let (writes, retries) = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let (mut writes, mut retries) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let key = format!("rollout/{writes:05}");
                let deadline = Instant::now() + Duration::from_secs(10);
                while let Err(e) = etcd_put((&svc, 2379), &key, "v") {
                    assert!(
                        Instant::now() < deadline,
                        "write {key} not acknowledged for 10 s: {e}"
                    );
                    retries += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                writes += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            (writes, retries)
        });
        let t0 = Instant::now();
        s.ok(&["set", "image", "sts/etcd", "etcd=berth.local/etcd:3.4.23-b"]);
        rolled_out(&s, "etcd", 3, 120);
        eprintln!(
            "etcd: rolling update of 3 members in {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        stop.store(true, Ordering::Relaxed);
        writer.join().expect("writer")
    });
    eprintln!("etcd: {writes} writes during the rollout, all acknowledged ({retries} retried)");
    assert!(writes > 20, "only {writes} writes");
    for m in ETCD {
        assert_eq!(
            pod(&s, m).expect("pod")["spec"]["containers"][0]["image"],
            "berth.local/etcd:3.4.23-b"
        );
    }
    assert_eq!(etcd_count(&s, "etcd-0", "rollout/"), writes);
    assert_eq!(etcd_members(&s), members, "same member IDs after the rollout");

    // kill -9 of the whole server: the cluster keeps answering its clients directly, and everything
    // converges back with nothing lost.
    let ip0 = pod(&s, "etcd-0").expect("pod")["status"]["podIP"]
        .as_str()
        .expect("podIP")
        .to_string();
    s.kill9();
    etcd_put((&ip0, 2379), "while-down", "yes").expect("write while the server is down");
    s.restart();
    all_ready(&s, &ETCD, 90);
    eventually(30, "all members healthy after the restart", || {
        common::etcd_example_healthy(&s)
    });
    assert_eq!(etcd_count(&s, "etcd-2", "rollout/"), writes);
    assert_eq!(
        exec(
            &s,
            "etcd-1",
            &["etcdctl", "get", "while-down", "--print-value-only"]
        ),
        "yes\n"
    );
    exec(&s, "etcd-2", &["etcdctl", "put", "after", "restart"]);
    assert_eq!(
        exec(&s, "etcd-0", &["etcdctl", "get", "after", "--print-value-only"]),
        "restart\n"
    );
    assert_eq!(etcd_members(&s), members);
    eprintln!("etcd: test took {:.1} s", t.elapsed().as_secs_f64());
}

// ---- redis ----

const REDIS: [&str; 3] = ["redis-0", "redis-1", "redis-2"];

fn redis_get(s: &Server, pod: &str, key: &str) -> Option<String> {
    try_exec(s, pod, &["redis-cli", "get", key]).map(|v| v.trim_end().to_string())
}

/// One `SET` in the RESP protocol straight to a pod's address: "+OK" or the error line.
fn redis_set(ip: &str, key: &str, value: &str) -> String {
    let mut c = TcpStream::connect((ip, 6379)).expect("connect redis");
    c.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let cmd = format!(
        "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n{value}\r\n",
        key.len(),
        value.len()
    );
    c.write_all(cmd.as_bytes()).expect("send");
    let mut buf = [0u8; 64];
    let n = c.read(&mut buf).expect("read");
    String::from_utf8_lossy(&buf[..n]).trim_end().to_string()
}

/// A key set on the primary is read on both replicas.
fn redis_replicated(s: &Server, key: &str, value: &str) {
    for r in ["redis-1", "redis-2"] {
        eventually(20, &format!("{key} on {r}"), || {
            (redis_get(s, r, key).as_deref() == Some(value)).then_some(())
        });
    }
}

#[test]
fn redis_primary_and_two_replicas_by_pod_index() {
    if !common::can_run_containers() {
        return;
    }
    let t = Instant::now();
    let mut s = Server::start_with(&["--node-name", "redis-node"]);
    common::build_and_import(&s, "redis", None);
    apply_and_wait(&s, "redis", &REDIS);

    // Roles from the pod-index label: redis-0 the primary, the others its replicas.
    assert!(exec(&s, "redis-0", &["redis-cli", "role"]).starts_with("master\n"));
    for r in ["redis-1", "redis-2"] {
        let role = exec(&s, r, &["redis-cli", "role"]);
        assert!(role.starts_with("slave\nredis-0.redis\n6379\n"), "{role}");
    }
    assert_eq!(
        exec(&s, "redis-0", &["redis-cli", "set", "greeting", "hello"]),
        "OK\n"
    );
    redis_replicated(&s, "greeting", "hello");
    // A replica refuses writes.
    assert!(exec(&s, "redis-1", &["redis-cli", "set", "x", "y"]).starts_with("READONLY"));

    // A deleted replica comes back as a replica, from its own append-only file first.
    s.ok(&["delete", "pod", "redis-2"]);
    all_ready(&s, &["redis-2"], 60);
    let log = s.ok(&["logs", "redis-2"]);
    assert!(log.contains("DB loaded from append only file"), "{log}");
    assert!(exec(&s, "redis-2", &["redis-cli", "role"]).starts_with("slave\n"));
    assert_eq!(redis_get(&s, "redis-2", "greeting").as_deref(), Some("hello"));
    exec(&s, "redis-0", &["redis-cli", "set", "after-delete", "1"]);
    redis_replicated(&s, "after-delete", "1");

    // kill -9 of the whole server: the primary keeps taking writes (straight to its address), and the
    // set converges back with every key on every member.
    let ip0 = pod(&s, "redis-0").expect("pod")["status"]["podIP"]
        .as_str()
        .expect("podIP")
        .to_string();
    s.kill9();
    assert_eq!(redis_set(&ip0, "while-down", "yes"), "+OK");
    s.restart();
    all_ready(&s, &REDIS, 90);
    for k in ["greeting", "after-delete", "while-down"] {
        assert!(redis_get(&s, "redis-0", k).is_some_and(|v| !v.is_empty()), "{k}");
    }
    redis_replicated(&s, "while-down", "yes");
    redis_replicated(&s, "greeting", "hello");
    exec(&s, "redis-0", &["redis-cli", "set", "after-restart", "2"]);
    redis_replicated(&s, "after-restart", "2");
    eprintln!("redis: test took {:.1} s", t.elapsed().as_secs_f64());
}

// ---- postgres ----

const POSTGRES: [&str; 3] = ["postgres-0", "postgres-1", "postgres-2"];

fn psql(s: &Server, pod: &str, sql: &str) -> Option<String> {
    try_exec(s, pod, &["psql", "-U", "postgres", "-Atc", sql]).map(|v| v.trim_end().to_string())
}

/// Wait until `select count(*) from t` on each replica says `n`.
fn rows_on_replicas(s: &Server, replicas: &[&str], n: u32) {
    for r in replicas {
        eventually(30, &format!("{n} rows on {r}"), || {
            (psql(s, r, "select count(*) from t").as_deref() == Some(&*n.to_string())).then_some(())
        });
    }
}

#[test]
fn postgres_primary_and_two_streaming_replicas_cloned_by_pg_basebackup() {
    if !common::can_run_containers() {
        return;
    }
    let t = Instant::now();
    let mut s = Server::start_with(&["--node-name", "postgres-node"]);
    common::build_and_import(&s, "postgres", None);
    apply_and_wait(&s, "postgres", &POSTGRES);

    // A table created on the primary is on both replicas, which stream from it.
    assert_eq!(
        psql(&s, "postgres-0", "create table t (id int primary key, v text)").as_deref(),
        Some("CREATE TABLE")
    );
    psql(&s, "postgres-0", "insert into t values (1, 'one')").expect("insert");
    rows_on_replicas(&s, &["postgres-1", "postgres-2"], 1);
    for r in ["postgres-1", "postgres-2"] {
        assert_eq!(psql(&s, r, "select pg_is_in_recovery()").as_deref(), Some("t"));
        let log = s.ok(&["logs", r, "-c", "init-data"]);
        assert!(log.contains("1/1 tablespace"), "{r} cloned: {log}");
    }
    assert_eq!(exec(&s, "postgres-0", &["id", "-u"]), "999\n");
    eventually(20, "two replicas streaming", || {
        (psql(
            &s,
            "postgres-0",
            "select count(*) from pg_stat_replication where state = 'streaming'",
        )
        .as_deref()
            == Some("2"))
        .then_some(())
    });

    // Scale to one and back to three: the replicas' claims stay, and the replicas resume streaming from
    // their own data (not cloned again).
    s.ok(&["scale", "sts", "postgres", "--replicas=1"]);
    eventually(60, "replicas gone", || {
        (pod(&s, "postgres-1").is_none() && pod(&s, "postgres-2").is_none()).then_some(())
    });
    let claims = s.ok(&["get", "pvc", "-o", "name"]);
    assert!(
        claims.contains("data-postgres-1") && claims.contains("data-postgres-2"),
        "{claims}"
    );
    psql(&s, "postgres-0", "insert into t values (2, 'two')").expect("insert");
    s.ok(&["scale", "sts", "postgres", "--replicas=3"]);
    all_ready(&s, &POSTGRES, 90);
    rows_on_replicas(&s, &["postgres-1", "postgres-2"], 2);
    for r in ["postgres-1", "postgres-2"] {
        let log = s.ok(&["logs", r, "-c", "init-data"]);
        assert!(!log.contains("tablespace"), "{r} cloned again: {log}");
    }
    psql(&s, "postgres-0", "insert into t values (3, 'three')").expect("insert");
    rows_on_replicas(&s, &["postgres-1", "postgres-2"], 3);

    // kill -9 of the whole server: the set converges back with every row, and streams new ones.
    s.kill9();
    s.restart();
    all_ready(&s, &POSTGRES, 90);
    assert_eq!(
        psql(&s, "postgres-0", "select count(*) from t").as_deref(),
        Some("3")
    );
    psql(&s, "postgres-0", "insert into t values (4, 'four')").expect("insert");
    rows_on_replicas(&s, &["postgres-1", "postgres-2"], 4);
    assert_eq!(
        psql(&s, "postgres-2", "select string_agg(v, ',' order by id) from t").as_deref(),
        Some("one,two,three,four")
    );
    eprintln!("postgres: test took {:.1} s", t.elapsed().as_secs_f64());
}

// ---- backup (examples/backup) ----

/// The example's other manifests (`examples/backup/backup.yaml`, `restore.yaml`).
fn example_file(example: &str, file: &str) -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(example)
        .join(file)
        .to_string_lossy()
        .into_owned()
}

#[test]
fn postgres_backups_by_a_cronjob_every_minute_and_a_restore_job() {
    if !common::can_run_containers() {
        return;
    }
    let t = Instant::now();
    let s = Server::start_with(&["--node-name", "backup-node"]);
    common::build_and_import(&s, "postgres", None);
    s.ok(&["apply", "-f", &manifest("postgres")]);
    // The primary is all a backup needs: the replicas are left out to keep the test short.
    s.ok(&["scale", "sts", "postgres", "--replicas=1"]);
    all_ready(&s, &["postgres-0"], 120);
    psql(&s, "postgres-0", "create table t (id int primary key, v text)").expect("create");
    psql(&s, "postgres-0", "insert into t values (1, 'one'), (2, 'two')").expect("insert");

    s.ok(&["apply", "-f", &example_file("backup", "backup.yaml")]);
    let scheduled_from = Instant::now();
    // A dump now, from the CronJob's template, then a table dropped by mistake and the restore Job.
    s.ok(&["create", "job", "dump-now", "--from=cronjob/postgres-backup"]);
    s.ok(&[
        "wait",
        "--for=condition=complete",
        "job/dump-now",
        "--timeout=120s",
    ]);
    let log = s.ok(&["logs", "job/dump-now"]);
    assert!(log.contains("dumped") && log.contains("dump-now.dump"), "{log}");
    psql(&s, "postgres-0", "drop table t").expect("drop");
    s.ok(&["apply", "-f", &example_file("backup", "restore.yaml")]);
    s.ok(&[
        "wait",
        "--for=condition=complete",
        "job/postgres-restore",
        "--timeout=120s",
    ]);
    let log = s.ok(&["logs", "job/postgres-restore"]);
    assert!(log.contains("restored"), "{log}");
    assert_eq!(
        psql(&s, "postgres-0", "select string_agg(v, ',' order by id) from t").as_deref(),
        Some("one,two")
    );

    // The schedule: a Job of the CronJob at the next full minute, its dump in the claim.
    let left = 75u64.saturating_sub(scheduled_from.elapsed().as_secs()).max(5);
    let job = eventually(left, "a scheduled backup Job complete", || {
        let jobs = s.get_json(&["jobs", "-l", "app=postgres-backup"]);
        jobs["items"].as_array()?.iter().find_map(|j| {
            let name = j["metadata"]["name"].as_str()?;
            let done = j["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Complete" && c["status"] == "True");
            (name.starts_with("postgres-backup-") && done).then(|| name.to_string())
        })
    });
    let log = s.ok(&["logs", &format!("job/{job}")]);
    assert!(log.contains(&format!("{job}.dump")), "{log}");
    let cj = s.get_json(&["cronjob", "postgres-backup"]);
    assert!(cj["status"]["lastSuccessfulTime"].is_string(), "{cj}");
    s.ok(&[
        "patch",
        "cronjob",
        "postgres-backup",
        "-p",
        r#"{"spec":{"suspend":true}}"#,
    ]);
    eprintln!("backup: test took {:.1} s", t.elapsed().as_secs_f64());
}
