//! Several servers on one etcd cluster (issue 16, items 3 and 6): a 3-member etcd on loopback ports and
//! three `berth server` processes sharing it with one `--token`. They share the CA through the datastore
//! (one kubeconfig works against each), every one serves reads and writes, and the controller set runs on
//! the Lease holder only. `kill -9` of the holder: another server takes the Lease (upstream's 15 s) and
//! its controllers carry out new work (a Deployment's ReplicaSet and pods); `kill -9` of one etcd member:
//! writes go on; every acknowledged write survives both. With root, a `berth agent` told of one server
//! learns the other from the `default/kubernetes` Endpoints, keeps its pod running and keeps reporting
//! through the other server when its server dies. A third server joins with `--server <first> --token`
//! alone. With root, `kill -9` of the Lease holder in the middle of a StatefulSet's rolling update: the
//! rollout completes under the next leader and a watch never shows two pods of one ordinal; and the
//! seed's `web` set and `examples/etcd` run unchanged on three servers with a remote agent.
//! Processes and temp dirs are removed on drop, whatever happens.

mod common;

use common::{Server, eventually, pod};
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn etcd_or_skip() -> bool {
    if store::local_etcd::available() {
        return true;
    }
    assert!(
        std::env::var_os("BERTH_TEST_ROOT").is_none(),
        "BERTH_TEST_ROOT is set but this test needs /usr/bin/etcd (Debian etcd-server)"
    );
    eprintln!("skipped: needs /usr/bin/etcd (etcd-server)");
    false
}

fn holder(s: &Server) -> Option<String> {
    let out = s.kubectl(&[
        "get",
        "lease",
        "-n",
        "kube-system",
        "berth-controllers",
        "-o",
        "json",
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v["spec"]["holderIdentity"].as_str().map(str::to_string)
}

/// `kubectl create configmap` through `s`; whether the server acknowledged it.
fn write(s: &Server, name: &str) -> bool {
    s.kubectl(&[
        "create",
        "configmap",
        name,
        "--from-literal=k=v",
        "--request-timeout=30s",
    ])
    .status
    .success()
}

#[test]
fn three_servers_on_a_three_member_etcd_survive_the_leader_and_an_etcd_member() {
    if !etcd_or_skip() {
        return;
    }
    let mut etcd = store::local_etcd::LocalEtcd::cluster(3).expect("etcd cluster");
    let endpoints = etcd.endpoints();
    let start = |name: &str, extra: &[&str]| ha_server(name, "ha-secret", &endpoints, extra);
    // The first server encrypts Secrets; the others take its key from the datastore.
    let mut servers = vec![start("ha-0", &["--secrets-encryption"]), start("ha-1", &[])];
    // The third joins through the first server alone, as k3s's `--server https://first:6443 --token …`:
    // the datastore comes from it, its CA pinned by the first server's K10 token.
    let k10 = std::fs::read_to_string(servers[0].data_dir().join("token")).expect("token file");
    let first = servers[0].url();
    servers.push(Server::start_with(&[
        "--disable-agent",
        "--node-name",
        "ha-2",
        "--token",
        k10.trim(),
        "--server",
        &first,
    ]));
    assert!(
        servers[2]
            .data_dir()
            .join("server/datastore/bootstrap.json")
            .exists()
    );

    // One CA for the cluster, taken from the datastore by the joining servers: the first server's
    // kubeconfig works against each of them.
    let ca = |s: &Server| std::fs::read_to_string(s.data_dir().join("tls/ca.crt")).expect("ca");
    assert_eq!(ca(&servers[0]), ca(&servers[1]));
    assert_eq!(ca(&servers[0]), ca(&servers[2]));
    for s in &servers[1..] {
        let url = s.url();
        let out = servers[0].ok(&["--server", &url, "get", "namespaces", "-o", "name"]);
        assert!(out.contains("namespace/kube-system"), "{out}");
    }
    // A Secret encrypted by the first server reads back through the third, whose encryption
    // configuration came from the datastore.
    let enc = |s: &Server| {
        std::fs::read_to_string(s.data_dir().join("server/cred/encryption-config.json")).expect("enc")
    };
    assert_eq!(enc(&servers[0]), enc(&servers[2]));
    servers[0].ok(&[
        "create",
        "secret",
        "generic",
        "shared",
        "--from-literal=pw=hunter2",
    ]);
    let secret = servers[2].get_json(&["secret", "shared"]);
    assert_eq!(secret["data"]["pw"], "aHVudGVyMg==");
    // A key rotation on the first server reaches the datastore; the third, restarted with the key from
    // before, takes the new configuration and reads the re-encrypted Secret.
    let rotate = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["secrets-encrypt", "rotate", "--data-dir"])
        .arg(servers[0].data_dir())
        .output()
        .expect("berth secrets-encrypt");
    assert!(
        rotate.status.success(),
        "{}",
        String::from_utf8_lossy(&rotate.stderr)
    );
    servers[2].restart();
    assert_eq!(enc(&servers[0]), enc(&servers[2]));
    let secret = servers[2].get_json(&["secret", "shared"]);
    assert_eq!(secret["data"]["pw"], "aHVudGVyMg==");
    // A server that would disagree with the cluster refuses to start, saying why: another token, or its
    // own encryption key.
    let other_key = tempfile::tempdir().expect("dir");
    let cred = other_key.path().join("server/cred");
    std::fs::create_dir_all(&cred).expect("cred");
    std::fs::write(
        cred.join("encryption-config.json"),
        enc(&servers[0]).replace(|c: char| c.is_ascii_digit(), "7"),
    )
    .expect("write");
    let wrong_token = tempfile::tempdir().expect("dir");
    for (dir, token, says) in [
        (
            &other_key,
            "ha-secret",
            "differs from the cluster's encryption configuration",
        ),
        (&wrong_token, "not-the-token", "different token"),
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["server", "--disable-agent", "--https-listen-port", "0"])
            .args(["--token", token, "--datastore-endpoint", &endpoints])
            .arg("--data-dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("berth server");
        let status = eventually(30, "the disagreeing server exits", || {
            child.try_wait().ok().flatten()
        });
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err).expect("read");
        assert!(!status.success() && err.contains(says), "{err}");
    }
    // `--server` to a server on the embedded store (which one server alone can use) is refused, saying
    // why.
    let solo = Server::start_with(&["--disable-agent", "--token", "solo"]);
    let joiner = tempfile::tempdir().expect("dir");
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["server", "--disable-agent", "--https-listen-port", "0"])
        .args(["--token", "solo", "--server", &solo.url()])
        .arg("--data-dir")
        .arg(joiner.path())
        .output()
        .expect("berth server");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("embedded store"), "{err}");
    drop(solo);
    // The join token file names the shared CA's hash on every server.
    let token = |s: &Server| std::fs::read_to_string(s.data_dir().join("token")).expect("token");
    assert_eq!(token(&servers[0]), token(&servers[2]));

    // `default/kubernetes` names every live server (one port each here: they share 127.0.0.1).
    let api_ports = |s: &Server| -> Option<usize> {
        let ep = s.get_json(&["endpoints", "kubernetes"]);
        Some(ep["subsets"].as_array()?.len())
    };
    eventually(30, "three servers in default/kubernetes", || {
        (api_ports(&servers[1]) == Some(3)).then_some(())
    });
    // Every server serves writes; the controllers run on one.
    let mut acked = Vec::new();
    for (i, s) in servers.iter().enumerate() {
        let name = format!("before-{i}");
        assert!(write(s, &name), "{}", s.log());
        acked.push(name);
    }
    let first_holder = eventually(30, "a Lease holder", || holder(&servers[1]));
    let idx = ["ha-0", "ha-1", "ha-2"]
        .iter()
        .position(|n| *n == first_holder)
        .expect("holder is one of ours");

    // kill -9 the holder while writes go on through the others.
    servers[idx].kill9();
    let killed_at = Instant::now();
    let survivors: Vec<usize> = (0..3).filter(|i| *i != idx).collect();
    let a = &servers[survivors[0]];
    let b = &servers[survivors[1]];
    for i in 0..10 {
        let s = if i % 2 == 0 { a } else { b };
        let name = format!("during-{i}");
        if write(s, &name) {
            acked.push(name);
        }
    }
    assert!(acked.len() >= 13, "writes go on while the leader is gone");
    a.ok(&[
        "create",
        "deployment",
        "after-failover",
        "--image=busybox:test",
        "--replicas=2",
    ]);
    let new_holder = eventually(60, "another server takes the Lease", || {
        holder(a).filter(|h| *h != first_holder)
    });
    assert!(["ha-0", "ha-1", "ha-2"].contains(&new_holder.as_str()));
    // The new leader's controllers act: the Deployment's ReplicaSet and its pods appear.
    eventually(
        60,
        "the new leader's Deployment and ReplicaSet controllers",
        || {
            let pods = b.ok(&["get", "pods", "-l", "app=after-failover", "-o", "name"]);
            (pods.lines().count() == 2).then_some(())
        },
    );
    eprintln!(
        "leader failover: {:.1}s from kill -9 to the new leader's pods",
        killed_at.elapsed().as_secs_f64()
    );

    // The killed server's record expires (15 s): the Endpoints name the two that are left.
    eventually(60, "the killed server leaves default/kubernetes", || {
        (api_ports(a) == Some(2)).then_some(())
    });

    // kill -9 one etcd member: writes go on (after the cluster notices, if it was the raft leader).
    etcd.kill_member(0);
    let mut failed = 0;
    for i in 0..10 {
        let s = if i % 2 == 0 { a } else { b };
        let name = format!("etcd-down-{i}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if write(s, &name) {
                acked.push(name);
                break;
            }
            failed += 1;
            assert!(
                Instant::now() < deadline,
                "writes stopped with one etcd member down: {}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    eprintln!("writes refused while etcd elected a new leader: {failed}");
    b.ok(&["scale", "deployment", "after-failover", "--replicas=3"]);
    eventually(60, "the scale is carried out with one etcd member down", || {
        let pods = a.ok(&["get", "pods", "-l", "app=after-failover", "-o", "name"]);
        (pods.lines().count() == 3).then_some(())
    });

    // Every acknowledged write is there, read through each surviving server.
    for s in [a, b] {
        let names = s.ok(&["get", "configmaps", "-o", "name"]);
        for n in &acked {
            assert!(names.contains(&format!("configmap/{n}\n")), "{n} lost: {names}");
        }
    }
    // The killed server comes back on its data dir and serves the same objects.
    servers[idx].restart();
    let names = servers[idx].ok(&["get", "configmaps", "-o", "name"]);
    assert!(names.contains("configmap/etcd-down-9"), "{names}");
    servers[survivors[0]].ok(&["delete", "deployment", "after-failover"]);
    drop(servers);
    drop(etcd);
}

/// A `berth agent` on this machine (its own data dir), killed and its containers removed on drop.
struct Agent {
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl Agent {
    /// `berth agent --server <servers> --token <token> --node-name <node> --node-ip 127.0.0.1 <extra>` on
    /// `dir` (its image store prepared by the caller), its log in `<dir>/agent.log`.
    fn start(dir: tempfile::TempDir, servers: &str, token: &str, node: &str, extra: &[&str]) -> Agent {
        let log = std::fs::File::create(dir.path().join("agent.log")).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["agent", "--server", servers, "--token", token.trim()])
            .args(["--node-name", node, "--node-ip", "127.0.0.1"])
            .args(extra)
            .arg("--data-dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("berth agent");
        Agent { child, dir }
    }

    /// The agent's log so far.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }
}

/// A server of a cluster on `endpoints` (etcd) with `token`, without an agent of its own.
fn ha_server(name: &str, token: &str, endpoints: &str, extra: &[&str]) -> Server {
    let mut args = vec![
        "--disable-agent",
        "--node-name",
        name,
        "--token",
        token,
        "--datastore-endpoint",
        endpoints,
    ];
    args.extend_from_slice(extra);
    Server::start_with(&args)
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        common::kill_containers(self.dir.path());
    }
}

fn node_lease_renewed(s: &Server, node: &str) -> Option<String> {
    let out = s.kubectl(&["get", "lease", "-n", "kube-node-lease", node, "-o", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v["spec"]["renewTime"].as_str().map(str::to_string)
}

#[test]
fn an_agent_learns_every_server_keeps_its_pods_and_reports_through_another_when_one_dies() {
    if !common::can_run_containers() || !etcd_or_skip() {
        return;
    }
    let etcd = store::local_etcd::LocalEtcd::start().expect("etcd");
    let endpoint = etcd.endpoint();
    let start = |name: &str| ha_server(name, "lb-secret", &endpoint, &[]);
    let mut first = start("lb-0");
    let second = start("lb-1");
    // The agent is told of the first server only: it learns the second from the `default/kubernetes`
    // Endpoints the servers keep (k3s's agent load balancer does the same).
    let servers = first.url();
    let token = std::fs::read_to_string(first.data_dir().join("token")).expect("token");

    let dir = tempfile::tempdir().expect("dir");
    let archive = common::busybox_archive(dir.path()).expect("archive");
    common::import_image(dir.path(), &archive);
    let agent = Agent::start(dir, &servers, &token, "lb-node", &[]);
    let second_port = second.url().rsplit(':').next().expect("port").to_string();
    eventually(60, "the agent learns the second server", || {
        agent
            .log()
            .lines()
            .any(|l| l.contains("API servers") && l.contains(&format!(":{second_port}")))
            .then_some(())
    });

    let spec = |name: &str| {
        format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}"}},"spec":{{
            "nodeName":"lb-node","terminationGracePeriodSeconds":1,
            "containers":[{{"name":"c","image":"busybox:test","command":["/bin/sh","-c","sleep 3600"]}}]}}}}"#
        )
    };
    second.apply(&spec("steady"));
    let running = |s: &Server, name: &str| {
        let p = pod(s, name)?;
        let c = &p["status"]["containerStatuses"][0];
        c["state"]["running"]["startedAt"]
            .as_str()
            .map(|t| (t.to_string(), c["restartCount"].clone()))
    };
    let before = eventually(60, "steady Running on the agent", || running(&second, "steady"));

    // The agent reaches the API through the first server in its list: kill it.
    first.kill9();
    let renewed = node_lease_renewed(&second, "lb-node").expect("node lease");
    eventually(
        60,
        "the agent renews its node Lease through the other server",
        || node_lease_renewed(&second, "lb-node").filter(|t| *t != renewed),
    );
    // New work reaches the agent through the other server, and the old pod was never restarted.
    second.apply(&spec("after"));
    eventually(
        60,
        "a new pod runs, the agent watching through the other server",
        || running(&second, "after"),
    );
    assert_eq!(running(&second, "steady"), Some(before), "{}", agent.log());
    assert!(agent.log().contains("switched"), "{}", agent.log());

    second.ok(&["delete", "pod", "steady", "after", "--wait=false"]);
    second.wait_pods_gone(60);
    drop(agent);
    drop(second);
    drop(first);
    drop(etcd);
}

/// A `kubectl get -w --output-watch-events -o json` of a label selector through one server, its events
/// collected by a thread; the kubectl process is killed on drop.
struct Recorder {
    child: std::process::Child,
    events: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
}

impl Recorder {
    fn start(s: &Server, selector: &str) -> Recorder {
        let mut child = s
            .kubectl_cmd(&[
                "get",
                "pods",
                "-l",
                selector,
                "-w",
                "--output-watch-events",
                "-o",
                "json",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl get -w");
        let out = child.stdout.take().expect("stdout");
        let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = events.clone();
        std::thread::spawn(move || {
            for v in serde_json::Deserializer::from_reader(out).into_iter::<Value>() {
                let Ok(v) = v else { break };
                sink.lock().expect("events").push(v);
            }
        });
        Recorder { child, events }
    }

    fn events(&self) -> Vec<Value> {
        self.events.lock().expect("events").clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Issue 16 item 6: `kill -9` of the Lease holder in the middle of a StatefulSet's rolling update, with
/// a real agent running the pods. Another server takes the Lease, the rollout completes in reverse
/// ordinal order, and a watch through a surviving server never shows two pods of one ordinal at once
/// (upstream's at-most-one-pod-per-identity guarantee: a new uid of a name only after its old one's
/// DELETED). Short leader-election timings keep the test quick; the first test keeps upstream's.
#[test]
fn a_rolling_update_completes_across_a_leader_kill_with_one_pod_per_ordinal() {
    if !common::can_run_containers() || !etcd_or_skip() {
        return;
    }
    let etcd = store::local_etcd::LocalEtcd::cluster(3).expect("etcd cluster");
    let endpoints = etcd.endpoints();
    let start = |name: &str| {
        let quick = [
            "--leader-elect-lease-duration",
            "4s",
            "--leader-elect-renew-deadline",
            "3s",
            "--leader-elect-retry-period",
            "500ms",
        ];
        ha_server(name, "roll-secret", &endpoints, &quick)
    };
    let mut servers = vec![start("roll-0"), start("roll-1"), start("roll-2")];
    let urls: Vec<String> = servers.iter().map(Server::url).collect();
    let token = std::fs::read_to_string(servers[0].data_dir().join("token")).expect("token");
    let dir = tempfile::tempdir().expect("dir");
    let archive = common::busybox_archive(dir.path()).expect("archive");
    common::import_image(dir.path(), &archive);
    let agent = Agent::start(dir, &urls.join(","), &token, "roll-node", &[]);

    servers[0].apply(
        r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: roll}
spec:
  replicas: 3
  serviceName: roll
  selector: {matchLabels: {app: roll}}
  template:
    metadata: {labels: {app: roll}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: busybox:test
        command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 1; done"]
        env: [{name: VERSION, value: "1"}]
        readinessProbe: {exec: {command: ["true"]}, periodSeconds: 1}
"#,
    );
    let status = |s: &Server| s.get_json(&["sts", "roll"])["status"].clone();
    eventually(90, "3 Ready pods of revision 1", || {
        (status(&servers[0])["readyReplicas"] == 3).then_some(())
    });
    let leader = eventually(30, "a Lease holder", || holder(&servers[0]));
    let idx = ["roll-0", "roll-1", "roll-2"]
        .iter()
        .position(|n| *n == leader)
        .expect("holder is one of ours");
    let watcher = (idx + 1) % 3;
    let rec = Recorder::start(&servers[watcher], "app=roll");
    eventually(30, "the watch lists the 3 pods", || {
        (rec.events().len() >= 3).then_some(())
    });

    // The rolling update; kill -9 the leader once the first ordinal (the highest) has been replaced.
    servers[watcher].ok(&["set", "env", "sts/roll", "VERSION=2"]);
    let update = eventually(30, "the new revision", || {
        let st = status(&servers[watcher]);
        let (u, c) = (st["updateRevision"].as_str()?, st["currentRevision"].as_str()?);
        (u != c).then(|| u.to_string())
    });
    let revision_of = |s: &Server, name: &str| -> Option<String> {
        pod(s, name)?["metadata"]["labels"]["controller-revision-hash"]
            .as_str()
            .map(str::to_string)
    };
    eventually(60, "roll-2 replaced by the new revision", || {
        (revision_of(&servers[watcher], "roll-2").as_deref() == Some(update.as_str())).then_some(())
    });
    servers[idx].kill9();
    let killed = Instant::now();
    let survivor = &servers[watcher];
    let new_leader = eventually(60, "another server takes the Lease", || {
        holder(survivor).filter(|h| *h != leader)
    });
    // The rollout completes under the new leader.
    eventually(120, "the rollout completes", || {
        let st = status(survivor);
        (st["updateRevision"] == st["currentRevision"]
            && st["updatedReplicas"] == 3
            && st["readyReplicas"] == 3)
            .then_some(())
    });
    eprintln!(
        "rollout finished by {new_leader} {:.1}s after kill -9 of {leader}",
        killed.elapsed().as_secs_f64()
    );
    for n in ["roll-0", "roll-1", "roll-2"] {
        assert_eq!(revision_of(survivor, n).as_deref(), Some(update.as_str()), "{n}");
    }

    // The watch: never two live uids of one name; new-revision pods appear in reverse ordinal order.
    std::thread::sleep(Duration::from_millis(500));
    let events = rec.events();
    let mut live: std::collections::HashMap<String, String> = Default::default();
    let mut terminating = std::collections::HashSet::new();
    let mut updated_order = Vec::new();
    for e in &events {
        let (kind, obj) = (e["type"].as_str().unwrap_or(""), &e["object"]);
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        let uid = obj["metadata"]["uid"].as_str().unwrap_or("").to_string();
        match kind {
            "DELETED" => {
                // Deleted gracefully: Terminating first, gone once the node's agent has stopped it
                // (servers without an agent of their own still wait for the registered node's).
                assert!(
                    terminating.contains(&uid),
                    "{name} ({uid}) removed without a graceful Terminating phase"
                );
                if live.get(&name) == Some(&uid) {
                    live.remove(&name);
                }
            }
            _ => {
                if !obj["metadata"]["deletionTimestamp"].is_null() {
                    terminating.insert(uid.clone());
                }
                if let Some(old) = live.get(&name) {
                    assert_eq!(
                        old, &uid,
                        "{name}: a second pod ({uid}) while {old} was not deleted; events: {events:?}"
                    );
                }
                live.insert(name.clone(), uid);
                if obj["metadata"]["labels"]["controller-revision-hash"] == update.as_str()
                    && !updated_order.contains(&name)
                {
                    updated_order.push(name);
                }
            }
        }
    }
    assert_eq!(
        updated_order,
        ["roll-2", "roll-1", "roll-0"],
        "reverse ordinal order; agent: {}",
        agent.log()
    );
    drop(rec);
    survivor.ok(&["delete", "sts", "roll"]);
    survivor.wait_pods_gone(60);
    drop(agent);
    drop(servers);
    drop(etcd);
}

/// Issue 16 item 6: the seed's `web` StatefulSet and `examples/etcd`, their manifests unchanged, on three
/// servers sharing a 3-member etcd, with their pods on a remote `berth agent`: web-0 and web-1 come up
/// in order with their claims, and the three etcd members form a healthy cluster through their stable
/// DNS names (served by a server's cluster DNS). Needs root and the Debian mirror, as `examples.rs` and
/// `databases.rs`.
#[test]
fn the_seed_web_set_and_the_etcd_example_run_on_three_servers() {
    if !common::can_run_containers() || !etcd_or_skip() {
        return;
    }
    let etcd = store::local_etcd::LocalEtcd::cluster(3).expect("etcd cluster");
    let endpoints = etcd.endpoints();
    let start = |name: &str| ha_server(name, "examples-secret", &endpoints, &[]);
    let servers = [start("ex-0"), start("ex-1"), start("ex-2")];
    let urls: Vec<String> = servers.iter().map(Server::url).collect();
    let token = std::fs::read_to_string(servers[0].data_dir().join("token")).expect("token");
    let dir = tempfile::tempdir().expect("dir");
    common::build_and_import_into(dir.path(), "web", None);
    common::build_and_import_into(dir.path(), "etcd", None);
    let dns = ["--cluster-dns", servers[0].dns.as_str()];
    let agent = Agent::start(dir, &urls.join(","), &token, "ex-node", &dns);

    // Each manifest through another server.
    for f in ["seed-storage-local.yaml", "seed-web.yaml"] {
        servers[1].ok(&["apply", "-f", &common::seed(f).to_string_lossy()]);
    }
    let etcd_manifest =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/etcd/etcd.yaml");
    servers[2].ok(&["apply", "-f", &etcd_manifest.to_string_lossy()]);

    let ready = |s: &Server, name: &str| {
        pod(s, name).is_some_and(|p| {
            p["status"]["conditions"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
        })
    };
    eventually(120, "web-0 and web-1 Ready", || {
        (ready(&servers[0], "web-0") && ready(&servers[0], "web-1")).then_some(())
    });
    assert_eq!(servers[2].ok(&["exec", "web-1", "--", "hostname"]), "web-1\n");
    let claims = servers[0].ok(&["get", "pvc", "-o", "name"]);
    assert!(
        claims.contains("persistentvolumeclaim/www-web-0")
            && claims.contains("persistentvolumeclaim/www-web-1"),
        "{claims}"
    );
    eventually(120, "the etcd members Ready", || {
        ["etcd-0", "etcd-1", "etcd-2"]
            .iter()
            .all(|m| ready(&servers[1], m))
            .then_some(())
    });
    eventually(60, "a healthy etcd cluster", || {
        common::etcd_example_healthy(&servers[1])
    });
    servers[0].ok(&["exec", "etcd-2", "--", "etcdctl", "put", "k", "v"]);
    assert_eq!(
        servers[2].ok(&[
            "exec",
            "etcd-0",
            "--",
            "etcdctl",
            "get",
            "k",
            "--print-value-only"
        ]),
        "v\n",
        "{}",
        agent.log()
    );

    servers[0].ok(&["delete", "sts", "web", "etcd"]);
    servers[0].wait_pods_gone(90);
    drop(agent);
    drop(servers);
    drop(etcd);
}
