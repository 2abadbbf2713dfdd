//! A second node joins with `berth agent --server URL --token T` (issue "Node agent": the k3s way), and
//! pods scheduled to it run there, with logs and exec through the API server. Both agents run on this
//! machine on 127.0.0.1 (each with its own data dir); runs real containers, so needs root like `pods.rs`.

mod common;

use common::eventually;
use serde_json::Value;
use std::process::{Command, Stdio};

struct Agent {
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        common::kill_containers(self.dir.path());
    }
}

#[test]
fn a_second_node_joins_with_the_token_and_runs_the_pods_scheduled_to_it() {
    if !common::can_run_containers() {
        return;
    }
    let s = common::Server::start_with(&["--node-name", "node-a", "--token", "s3cret"]);
    let token = std::fs::read_to_string(s.data_dir().join("token")).expect("join token file");
    assert!(
        token.starts_with("K10") && token.ends_with("::server:s3cret"),
        "{token}"
    );
    let url = s.url();
    let berth = env!("CARGO_BIN_EXE_berth");

    // A token whose CA hash does not match is refused before anything is sent with it.
    let bad = Command::new(berth)
        .args([
            "agent",
            "--server",
            &url,
            "--token",
            "K10deadbeef::server:s3cret",
            "--node-name",
            "evil",
        ])
        .arg("--data-dir")
        .arg(s.data_dir().join("evil"))
        .output()
        .expect("berth agent");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("does not match the token's hash"));

    let dir = tempfile::tempdir().expect("dir");
    let archive = common::busybox_archive(dir.path()).expect("archive");
    common::import_image(dir.path(), &archive);
    let log = std::fs::File::create(dir.path().join("agent.log")).expect("log");
    let child = Command::new(berth)
        .args([
            "agent",
            "--server",
            &url,
            "--token",
            token.trim(),
            "--node-name",
            "node-b",
            "--node-ip",
            "127.0.0.1",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("berth agent");
    let agent = Agent { child, dir };
    eventually(30, "node-b Ready", || {
        let n = s.kubectl(&["get", "node", "node-b", "-o", "json"]);
        let n: Value = serde_json::from_slice(&n.stdout).ok()?;
        n["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
            .then_some(())
    });
    let nodes = s.ok(&["get", "nodes"]);
    assert!(nodes.contains("node-a") && nodes.contains("node-b"), "{nodes}");

    s.apply(r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"on-b"},"spec":{
        "nodeSelector":{"kubernetes.io/hostname":"node-b"},"terminationGracePeriodSeconds":1,
        "containers":[{"name":"c","image":"busybox:test","command":["/bin/sh","-c","echo running on $(hostname); sleep 3600"]}]}}"#);
    let p = eventually(60, "on-b Running on node-b", || {
        let p = s.get_json(&["pod", "on-b"]);
        (p["status"]["phase"] == "Running").then_some(p)
    });
    assert_eq!(p["spec"]["nodeName"], "node-b");
    let uid = p["metadata"]["uid"].as_str().expect("uid");
    assert!(
        agent.dir.path().join("agent/pods").join(uid).is_dir(),
        "the container runs under node-b's data dir"
    );
    assert!(!s.data_dir().join("agent/pods").join(uid).exists());
    eventually(20, "logs through node-b's kubelet API", || {
        (s.ok(&["logs", "on-b"]) == "running on on-b\n").then_some(())
    });
    assert_eq!(s.ok(&["exec", "on-b", "--", "hostname"]), "on-b\n");
    s.ok(&["delete", "pod", "on-b"]);
    drop(agent);
}

/// A test-made network of "machines" on this host: a bridge holding the server's address, and per node a
/// network namespace joined to it by a veth pair. Nothing is routed beyond these. Removed on drop.
struct Lan {
    bridge: String,
    prefix: String,
    namespaces: Vec<String>,
}

impl Lan {
    fn new() -> Lan {
        let id = std::process::id() % 100_000;
        let lan = Lan {
            bridge: format!("bl{id}"),
            prefix: format!("172.31.{}", 1 + id % 250),
            namespaces: Vec::new(),
        };
        sh(&format!(
            "ip link add {b} type bridge && ip addr add {p}.1/24 dev {b} && ip link set {b} up",
            b = lan.bridge,
            p = lan.prefix
        ));
        lan
    }

    /// A node namespace with address `<prefix>.<host>`; returns its name.
    fn node(&mut self, host: u8) -> String {
        let id = std::process::id() % 100_000;
        let ns = format!("berth-lan{id}-{host}");
        let veth = format!("vl{id}h{host}");
        self.namespaces.push(ns.clone());
        sh(&format!(
            "ip netns add {ns} && ip link add {veth} type veth peer name eth0 netns {ns} && \
             ip link set {veth} master {b} up && ip -n {ns} link set lo up && \
             ip -n {ns} addr add {p}.{host}/24 dev eth0 && ip -n {ns} link set eth0 up",
            b = self.bridge,
            p = self.prefix
        ));
        ns
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).status();
    }
}

fn sh(script: &str) {
    let out = Command::new("sh").args(["-c", script]).output().expect("sh");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue "Cluster networking", Done when: two agents on two network namespaces (two "machines" on a
/// test-made network), a pod on each reaches the other by its DNS name. The agents route to each other's
/// pod slices (flannel host-gw), and the cluster DNS served by the server through the server's node.
#[test]
fn pods_on_two_agents_in_their_own_network_namespaces_reach_each_other_by_dns_name() {
    if !common::can_run_containers() {
        return;
    }
    let mut lan = Lan::new();
    let server_ip = format!("{}.1", lan.prefix);
    let s = common::Server::start_with(&[
        "--node-name",
        "lan-server",
        "--token",
        "s3cret",
        "--bind-address",
        &server_ip,
        "--cluster-cidr",
        "10.62.0.0/16",
    ]);
    let token = std::fs::read_to_string(s.data_dir().join("token")).expect("token");
    let berth = env!("CARGO_BIN_EXE_berth");
    let mut agents = Vec::new();
    for (host, node) in [(2u8, "lan-a"), (3u8, "lan-b")] {
        let ns = lan.node(host);
        let dir = tempfile::tempdir().expect("dir");
        let archive = common::busybox_archive(dir.path()).expect("archive");
        common::import_image(dir.path(), &archive);
        let log = std::fs::File::create(dir.path().join("agent.log")).expect("log");
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{ns}"))
            .args([
                "--",
                berth,
                "agent",
                "--server",
                &s.url(),
                "--token",
                token.trim(),
                "--node-name",
                node,
                "--cluster-dns",
                &s.dns,
            ])
            .arg("--data-dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("berth agent");
        agents.push(Agent { child, dir });
    }
    for node in ["lan-a", "lan-b"] {
        eventually(30, &format!("{node} Ready with its slice"), || {
            let n = s.get_json(&["node", node]);
            let ready = n["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            (ready && n["spec"]["podCIDR"].is_string()).then_some(())
        });
    }
    s.apply(
        r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"peers"},"spec":{"clusterIP":"None","selector":{"app":"peer"},
        "ports":[{"name":"http","port":8080}]}}"#,
    );
    for (name, node) in [("pa", "lan-a"), ("pb", "lan-b")] {
        s.apply(&format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","labels":{{"app":"peer"}}}},"spec":{{
            "hostname":"{name}","subdomain":"peers","nodeSelector":{{"kubernetes.io/hostname":"{node}"}},"terminationGracePeriodSeconds":1,
            "containers":[{{"name":"c","image":"busybox:test","command":["/bin/sh","-c","mkdir -p /www; echo {name} on $(hostname) > /www/index.html; exec httpd -f -p 8080 -h /www"],
            "readinessProbe":{{"tcpSocket":{{"port":8080}},"periodSeconds":1}}}}]}}}}"#
        ));
    }
    let slice = |node: &str| {
        s.get_json(&["node", node])["spec"]["podCIDR"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let (slice_a, slice_b) = (slice("lan-a"), slice("lan-b"));
    assert_ne!(slice_a, slice_b);
    for (name, node_slice) in [("pa", &slice_a), ("pb", &slice_b)] {
        let ip = eventually(60, &format!("{name} Ready"), || {
            let p = s.get_json(&["pod", name]);
            let ready = p["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            ready.then(|| p["status"]["podIP"].as_str().map(str::to_string))?
        });
        assert!(
            ip.starts_with(node_slice.trim_end_matches("0/24")),
            "{name} at {ip}, not in its node's slice {node_slice}"
        );
    }
    // Each node routes to the other's slice through its address on the shared network.
    let routes_a = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["-n", &lan.namespaces[0], "route"])
            .output()
            .expect("ip route")
            .stdout,
    )
    .into_owned();
    assert!(
        routes_a.contains(&format!("{slice_b} via {}.3", lan.prefix)),
        "{routes_a}"
    );
    // A pod on each node reaches the other by its stable DNS name (cluster DNS, answered by the server).
    for (from, to) in [("pa", "pb"), ("pb", "pa")] {
        eventually(30, &format!("{from} reaches {to}.peers"), || {
            let out = s.kubectl(&[
                "exec",
                from,
                "--",
                "wget",
                "-qO-",
                &format!("http://{to}.peers:8080/"),
            ]);
            (String::from_utf8_lossy(&out.stdout) == format!("{to} on {to}\n")).then_some(())
        });
    }
    s.ok(&["delete", "pod", "pa", "pb", "--wait=false"]);
    drop(agents);
    drop(lan);
}
