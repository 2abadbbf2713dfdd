//! `berth server --datastore-endpoint` on a real etcd (issue 16, the datastore seam): the seed's `web`
//! StatefulSet runs with real pods on a server whose store is etcd, and a second server process on the same
//! etcd (its own data dir and port, the CA and token shared through etcd, no agent) serves the same
//! cluster: it reads what the first wrote, and what it writes (a scale) is carried out by the first
//! server's controllers and agent, which see it through their etcd watches. etcd is Debian's
//! `etcd-server`, started by the test on loopback ports with HTTPS and client-certificate authentication
//! (`--datastore-cafile/certfile/keyfile`), and killed (its data dir removed) on drop. Needs root (real
//! pods) like `examples.rs`.

mod common;

use common::{Server, eventually, ready_ip};
use std::io::{Read, Write};

/// The first line of nginx's answer to `GET /` on the pod's address (retried while nginx starts).
fn http_status(ip: &str) -> String {
    eventually(20, "nginx answers", || {
        let mut c = std::net::TcpStream::connect((ip, 80)).ok()?;
        c.write_all(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n").ok()?;
        let mut r = String::new();
        c.read_to_string(&mut r).ok()?;
        r.lines().next().map(str::to_string)
    })
}

#[test]
fn two_servers_on_one_etcd_serve_the_seed_web_set_and_each_others_writes() {
    if !common::can_run_containers() {
        return;
    }
    if !store::local_etcd::available() {
        assert!(
            std::env::var_os("BERTH_TEST_ROOT").is_none(),
            "BERTH_TEST_ROOT is set but this test needs /usr/bin/etcd (Debian etcd-server)"
        );
        eprintln!("skipped: needs /usr/bin/etcd (etcd-server)");
        return;
    }
    // etcd as production runs it: HTTPS with client certificates (k3s's --datastore-* files).
    let etcd = store::local_etcd::LocalEtcd::start_tls().expect("start etcd");
    let tls = etcd.tls_files().expect("tls files");
    let (ca, cert, key) = (
        tls.ca.to_string_lossy().into_owned(),
        tls.cert.to_string_lossy().into_owned(),
        tls.key.to_string_lossy().into_owned(),
    );
    let endpoint = etcd.endpoint();
    // One --token for the servers of the cluster (it seals the shared CA in the datastore).
    let datastore = [
        "--token",
        "datastore-test",
        "--datastore-endpoint",
        endpoint.as_str(),
        "--datastore-cafile",
        ca.as_str(),
        "--datastore-certfile",
        cert.as_str(),
        "--datastore-keyfile",
        key.as_str(),
    ];
    let first = Server::start_with(&[&["--node-name", "etcd-node-1"][..], &datastore].concat());
    // Nothing of the cluster is in the server's own data dir: the store is etcd.
    assert!(!first.data_dir().join("store").exists());
    common::build_and_import(&first, "web", None);
    for f in ["seed-storage-local.yaml", "seed-web.yaml"] {
        first.ok(&["apply", "-f", &common::seed(f).to_string_lossy()]);
    }
    let ip0 = ready_ip(&first, "web-0", 120);
    let ip1 = ready_ip(&first, "web-1", 120);
    assert!(http_status(&ip0).starts_with("HTTP/1."));
    assert!(http_status(&ip1).starts_with("HTTP/1."));

    // A second server on the same etcd reads the same objects at the same resourceVersions.
    let second =
        Server::start_with(&[&["--disable-agent", "--node-name", "etcd-node-2"][..], &datastore].concat());
    let names = second.ok(&["get", "pods", "-o", "name"]);
    assert!(
        names.contains("pod/web-0") && names.contains("pod/web-1"),
        "{names}"
    );
    let rv = |s: &Server| s.get_json(&["sts", "web"])["metadata"]["resourceVersion"].clone();
    eventually(10, "the same StatefulSet from both servers", || {
        (rv(&first) == rv(&second)).then_some(())
    });
    assert_eq!(
        second.get_json(&["pod", "web-1"])["status"]["podIP"],
        ip1.as_str()
    );
    assert!(
        second
            .ok(&["get", "nodes", "-o", "name"])
            .contains("node/etcd-node-1")
    );
    // Only the first server's controllers run: it holds the Lease, the second waits for it.
    let lease = second.get_json(&["lease", "-n", "kube-system", "berth-controllers"]);
    assert_eq!(lease["spec"]["holderIdentity"], "etcd-node-1");

    // A write through the second server is carried out by the first one's controllers and agent.
    second.ok(&["scale", "sts", "web", "--replicas=3"]);
    let ip2 = ready_ip(&first, "web-2", 120);
    assert!(http_status(&ip2).starts_with("HTTP/1."));
    assert_eq!(
        second.get_json(&["pod", "web-2"])["status"]["podIP"],
        ip2.as_str()
    );
    // A watch through the second server sees the first server's writes.
    let mut watch = second
        .kubectl_cmd(&[
            "get",
            "configmaps",
            "--watch",
            "-o",
            "name",
            "--request-timeout=60s",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl watch");
    std::thread::sleep(std::time::Duration::from_secs(1));
    first.ok(&["create", "configmap", "from-first", "--from-literal=k=v"]);
    let mut out = watch.stdout.take().expect("stdout");
    let mut seen = String::new();
    eventually(30, "the watch through the second server", || {
        let mut buf = [0u8; 4096];
        let n = out.read(&mut buf).ok()?;
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        seen.contains("configmap/from-first").then_some(())
    });
    let _ = watch.kill();
    let _ = watch.wait();

    first.ok(&["scale", "sts", "web", "--replicas=0"]);
    first.wait_pods_gone(120);
    drop(second);
    drop(first);
    drop(etcd);
}
