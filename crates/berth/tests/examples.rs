//! The seed's `web` StatefulSet, as a new user runs it (issue "Node agent", Done when; `examples/web`): its
//! image `k8s.gcr.io/nginx-slim:0.8` built from Debian's nginx by `examples/web/build.sh`, imported, and the
//! seed's manifests applied unchanged. Checked with the real kubectl and real HTTP to the pods' addresses:
//! order, stable names, per-pod storage surviving pod deletion, scale to zero and back, a container
//! restart, and kill -9 of the whole server; and `examples/contrast`, the same nginx as a Deployment beside
//! the StatefulSet. Needs root (like `pods.rs`) and the Debian mirror (apt).

mod common;

use common::{Server, eventually, pod, ready_ip};
use serde_json::Value;
use std::io::{Read, Write};

/// GET / from a pod's address on port 80: (status line, body). The seed's pods have no readiness probe,
/// so (as upstream) one is Ready as soon as its container runs, a moment before nginx listens: connecting
/// is retried for a few seconds.
fn get(ip: &str) -> (String, String) {
    let mut c = eventually(10, "nginx listening", || {
        std::net::TcpStream::connect((ip, 80)).ok()
    });
    c.write_all(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n").expect("send");
    let mut r = String::new();
    c.read_to_string(&mut r).expect("read");
    let status = r.lines().next().unwrap_or_default().to_string();
    let body = r.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    (status, body)
}

#[test]
fn the_seed_web_statefulset_runs_nginx_with_stable_identity_and_storage() {
    if !common::can_run_containers() {
        return;
    }
    let mut s = Server::start_with(&["--node-name", "web-node"]);
    common::build_and_import(&s, "web", None);
    for f in ["seed-storage-local.yaml", "seed-web.yaml"] {
        s.ok(&["apply", "-f", &common::seed(f).to_string_lossy()]);
    }

    // Order: web-1 is created only once web-0 is Running and Ready.
    let ip0 = ready_ip(&s, "web-0", 90);
    let ip1 = ready_ip(&s, "web-1", 90);
    let created = |n: &str| {
        pod(&s, n).expect("pod")["metadata"]["creationTimestamp"]
            .as_str()
            .map(str::to_string)
    };
    let ready0 = pod(&s, "web-0").expect("web-0")["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["lastTransitionTime"].as_str().map(str::to_string));
    assert!(created("web-1") >= ready0, "web-1 created after web-0 was Ready");
    assert_eq!(s.ok(&["exec", "web-0", "--", "hostname"]), "web-0\n");

    // Each pod serves its own volume.
    s.ok(&[
        "exec",
        "web-0",
        "--",
        "sh",
        "-c",
        "echo page of web-0 > /usr/share/nginx/html/index.html",
    ]);
    s.ok(&[
        "exec",
        "web-1",
        "--",
        "sh",
        "-c",
        "echo page of web-1 > /usr/share/nginx/html/index.html",
    ]);
    assert_eq!(get(&ip0).1, "page of web-0\n");
    assert_eq!(get(&ip1).1, "page of web-1\n");

    // A deleted pod comes back with the same name and the same volume.
    s.ok(&["delete", "pod", "web-0"]);
    let ip0 = ready_ip(&s, "web-0", 90);
    assert_eq!(get(&ip0).1, "page of web-0\n");
    assert_eq!(s.ok(&["exec", "web-0", "--", "hostname"]), "web-0\n");

    // Killing nginx (PID 1 of the container) restarts the container.
    s.ok(&["exec", "web-1", "--", "kill", "1"]);
    eventually(60, "web-1 restarted once and Ready", || {
        let p = pod(&s, "web-1")?;
        (p["status"]["containerStatuses"][0]["restartCount"] == 1
            && p["status"]["containerStatuses"][0]["ready"] == true)
            .then_some(())
    });

    // Scale to zero and back: the claims and their data stay.
    s.ok(&["scale", "sts", "web", "--replicas=0"]);
    eventually(90, "no pods", || {
        s.ok(&["get", "pods", "-o", "name"])
            .trim()
            .is_empty()
            .then_some(())
    });
    assert!(s.ok(&["get", "pvc", "-o", "name"]).contains("www-web-1"));
    s.ok(&["scale", "sts", "web", "--replicas=2"]);
    let ip0 = ready_ip(&s, "web-0", 90);
    let ip1 = ready_ip(&s, "web-1", 90);
    assert_eq!(get(&ip0).1, "page of web-0\n");
    assert_eq!(get(&ip1).1, "page of web-1\n");
    // The headless Service's endpoints name each pod by its stable hostname, at its current address.
    eventually(20, "endpoints with hostnames", || {
        let e = s.get_json(&["endpoints", "nginx"]);
        let mut named: Vec<(String, String)> = e["subsets"][0]["addresses"]
            .as_array()?
            .iter()
            .filter_map(|a| Some((a["hostname"].as_str()?.to_string(), a["ip"].as_str()?.to_string())))
            .collect();
        named.sort();
        (named
            == [
                ("web-0".to_string(), ip0.clone()),
                ("web-1".to_string(), ip1.clone()),
            ])
        .then_some(())
    });

    // Cluster DNS from inside the pods: each pod's stable name answers its current address, also after
    // the pod is replaced; the Service name lists the ready pods; SRV names both.
    let resolv = s.ok(&["exec", "web-1", "--", "cat", "/etc/resolv.conf"]);
    assert!(
        resolv.contains(&format!("nameserver {}", s.dns))
            && resolv.contains("search default.svc.cluster.local svc.cluster.local cluster.local")
            && resolv.contains("options ndots:5"),
        "{resolv}"
    );
    let lookup = |from: &str, name: &str| s.ok(&["exec", from, "--", "nslookup", name]);
    assert!(lookup("web-1", "web-0.nginx").contains(&format!("Address: {ip0}")));
    let both = lookup("web-0", "nginx");
    assert!(
        both.contains(&format!("Address: {ip0}")) && both.contains(&format!("Address: {ip1}")),
        "{both}"
    );
    let srv = s.ok(&[
        "exec",
        "web-0",
        "--",
        "nslookup",
        "-type=srv",
        "_web._tcp.nginx.default.svc.cluster.local",
    ]);
    assert!(
        srv.contains("web-0.nginx.default.svc.cluster.local")
            && srv.contains("web-1.nginx.default.svc.cluster.local"),
        "{srv}"
    );
    assert!(
        !s.kubectl(&["exec", "web-0", "--", "nslookup", "web-9.nginx"])
            .status
            .success(),
        "NXDOMAIN"
    );
    s.ok(&["delete", "pod", "web-0"]);
    let ip0 = ready_ip(&s, "web-0", 90);
    eventually(10, "web-0.nginx answers the new address", || {
        lookup("web-1", "web-0.nginx")
            .contains(&format!("Address: {ip0}"))
            .then_some(())
    });

    // kill -9 of the whole server: its pods keep serving, and are re-adopted when it starts again.
    s.kill9();
    assert_eq!(get(&ip1).1, "page of web-1\n");
    s.restart();
    eventually(60, "web-1 re-adopted, not restarted", || {
        let p = pod(&s, "web-1")?;
        (p["status"]["podIP"] == ip1.as_str() && p["status"]["containerStatuses"][0]["restartCount"] == 0)
            .then_some(())
    });
    assert_eq!(get(&ip0).1, "page of web-0\n");

    // The same nginx image runs as root, so `runAsNonRoot` refuses it with the kubelet's message
    // (issue 14); the seed's pods above ran it with the default walls.
    s.apply(
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"nonroot"},"spec":{"terminationGracePeriodSeconds":1,
        "securityContext":{"runAsNonRoot":true},"containers":[{"name":"nginx","image":"k8s.gcr.io/nginx-slim:0.8"}]}}"#,
    );
    let waiting = eventually(60, "nonroot refused", || {
        let w = pod(&s, "nonroot")?["status"]["containerStatuses"][0]["state"]["waiting"].clone();
        (w["reason"] == "CreateContainerConfigError").then_some(w)
    });
    assert!(
        waiting["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("container has runAsNonRoot and image will run as root")),
        "{waiting}"
    );
    s.ok(&["delete", "pod", "nonroot", "--wait=false"]);

    s.ok(&[
        "delete",
        "-f",
        &common::seed("seed-web.yaml").to_string_lossy(),
        "--wait=false",
    ]);
    s.wait_pods_gone(90);
    common::kill_containers(s.data_dir());
}

/// The seed's `greet` set behind its NodePort Service (issue "Cluster networking", Done when;
/// `examples/greet`, a stand-in image for the seed's private one): from the host, the node port reaches
/// all three pods over repeated requests; from a pod, the Service by name; and the Service keeps answering
/// every request while its pods are replaced one by one.
#[test]
fn the_seed_greet_statefulset_answers_on_its_node_port_and_service_name() {
    if !common::can_run_containers() {
        return;
    }
    let mut s = Server::start_with(&["--node-name", "greet-node"]);
    // (Its own .deb cache: the web test may be downloading into the shared one at the same time.)
    let cache = tempfile::tempdir().expect("cache");
    common::build_and_import(&s, "greet", Some(cache.path()));
    for f in ["seed-greet-service.yaml", "seed-greet-statefulset.yaml"] {
        s.ok(&["apply", "-f", &common::seed(f).to_string_lossy()]);
    }
    for p in ["greet-0", "greet-1", "greet-2"] {
        ready_ip(&s, p, 90);
    }
    let node_port = s.get_json(&["service", "greet"])["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .expect("nodePort");
    let hello = || -> Option<String> {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", node_port)).ok()?;
        c.set_read_timeout(Some(std::time::Duration::from_secs(15)))
            .ok()?;
        c.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
        let mut r = String::new();
        c.read_to_string(&mut r).ok()?;
        r.split("\r\n\r\n").nth(1).map(str::to_string)
    };
    let mut seen = std::collections::BTreeSet::new();
    eventually(30, "all three pods behind the node port", || {
        let body = hello()?;
        assert!(body.starts_with("Hello from greet-"), "{body}");
        seen.insert(body.split('!').next()?.to_string());
        (seen.len() == 3).then_some(())
    });
    // Each pod counts its own visitors.
    let body = s.ok(&["exec", "greet-0", "--", "wget", "-qO-", "http://127.0.0.1:8080/"]);
    assert!(body.starts_with("Hello from greet-0! Visits: "), "{body}");
    // From a pod, by the Service's name (cluster DNS, then the ClusterIP).
    let body = s.ok(&["exec", "greet-0", "--", "wget", "-qO-", "http://greet/"]);
    assert!(body.starts_with("Hello from greet-"), "{body}");
    // Replace the pods one by one: every request in between is answered.
    for p in ["greet-2", "greet-1", "greet-0"] {
        let uid = pod(&s, p).expect("pod")["metadata"]["uid"].clone();
        s.ok(&["delete", "pod", p, "--wait=false"]);
        eventually(60, "replaced and Ready", || {
            let body = hello();
            assert!(
                body.as_deref()
                    .is_some_and(|b| b.starts_with("Hello from greet-")),
                "a request failed: {body:?}"
            );
            let now = pod(&s, p)?;
            (now["metadata"]["uid"] != uid
                && now["status"]["conditions"]
                    .as_array()?
                    .iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True"))
            .then_some(())
        });
    }
    // kill -9 of the whole server: the pods keep serving on their own addresses and keep their
    // counters; after the restart the node port reaches all three again and no count went back.
    let visits = |body: &str| -> u64 {
        body.trim()
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no visit count in {body:?}"))
    };
    let ip0 = ready_ip(&s, "greet-0", 90);
    let before = visits(&s.ok(&["exec", "greet-0", "--", "wget", "-qO-", "http://127.0.0.1:8080/"]));
    s.kill9();
    let mut c = std::net::TcpStream::connect((ip0.as_str(), 8080)).expect("greet-0 while the server is down");
    c.write_all(b"GET / HTTP/1.0\r\n\r\n").expect("send");
    let mut r = String::new();
    c.read_to_string(&mut r).expect("read");
    assert!(
        r.ends_with(&format!("Hello from greet-0! Visits: {}\n", before + 1)),
        "{r}"
    );
    s.restart();
    let mut seen = std::collections::BTreeSet::new();
    eventually(
        60,
        "all three pods behind the node port after the restart",
        || {
            let body = hello()?;
            seen.insert(body.split('!').next()?.to_string());
            (seen.len() == 3).then_some(())
        },
    );
    let after = visits(&s.ok(&["exec", "greet-0", "--", "wget", "-qO-", "http://127.0.0.1:8080/"]));
    assert!(
        after >= before + 2,
        "greet-0's count went from {before} to {after}"
    );
    s.ok(&["delete", "sts", "greet", "--wait=false"]);
    s.wait_pods_gone(60);
    common::kill_containers(s.data_dir());
}

fn names(s: &Server, selector: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(&s.ok(&["get", "pods", "-l", selector, "-o", "json"])).expect("json");
    let mut out: Vec<String> = v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    out.sort();
    out
}

fn page(s: &Server, pod: &str) -> String {
    s.ok(&["exec", pod, "--", "cat", "/usr/share/nginx/html/index.html"])
}

/// `examples/contrast`, as its README runs it: random names against ordinals, one shared claim against a
/// claim per pod, a deleted pod replaced under a new name against the same name (with its own page), and
/// scale-down removing the most recently Ready pod against the highest ordinal.
#[test]
fn the_contrast_example_shows_what_seed_000_describes() {
    if !common::can_run_containers() {
        return;
    }
    let s = Server::start_with(&["--node-name", "contrast-node"]);
    common::build_and_import(&s, "web", None);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/contrast/contrast.yaml");
    s.ok(&[
        "apply",
        "-f",
        &common::seed("seed-storage-local.yaml").to_string_lossy(),
    ]);
    s.ok(&["apply", "-f", &root.to_string_lossy()]);
    s.ok(&["rollout", "status", "deployment/web-deploy", "--timeout=120s"]);
    s.ok(&["rollout", "status", "statefulset/web-sts", "--timeout=120s"]);
    let rs = s.ok(&["get", "rs", "-o", "name"]);
    let rs = rs
        .trim()
        .strip_prefix("replicaset.apps/")
        .expect("one ReplicaSet")
        .to_string();
    assert!(rs.starts_with("web-deploy-"), "{rs}");
    let deploy = names(&s, "app=web-deploy");
    assert_eq!(deploy.len(), 3);
    assert!(
        deploy
            .iter()
            .all(|n| n.len() == rs.len() + 6 && n.starts_with(&format!("{rs}-"))),
        "{deploy:?}"
    );
    assert_eq!(names(&s, "app=web-sts"), ["web-sts-0", "web-sts-1", "web-sts-2"]);
    let claims = s.ok(&["get", "pvc", "-o", "name"]);
    for c in ["www-shared", "www-web-sts-0", "www-web-sts-1", "www-web-sts-2"] {
        assert!(
            claims.contains(&format!("persistentvolumeclaim/{c}\n")),
            "{claims}"
        );
    }
    // One page for all of the Deployment's pods; one per StatefulSet pod.
    s.ok(&[
        "exec",
        &deploy[0],
        "--",
        "sh",
        "-c",
        "echo shared > /usr/share/nginx/html/index.html",
    ]);
    for p in &deploy {
        assert_eq!(page(&s, p), "shared\n");
    }
    for i in 0..3 {
        let p = format!("web-sts-{i}");
        s.ok(&[
            "exec",
            &p,
            "--",
            "sh",
            "-c",
            &format!("echo own {i} > /usr/share/nginx/html/index.html"),
        ]);
    }
    // Deleted pods: a new name against the same name with its own page.
    s.ok(&["delete", "pod", &deploy[1], "web-sts-1"]);
    s.ok(&["rollout", "status", "deployment/web-deploy", "--timeout=120s"]);
    s.ok(&["rollout", "status", "statefulset/web-sts", "--timeout=120s"]);
    let after = names(&s, "app=web-deploy");
    assert_eq!(after.len(), 3);
    assert!(!after.contains(&deploy[1]), "{after:?}");
    let replacement = after
        .iter()
        .find(|n| !deploy.contains(n))
        .expect("a new name")
        .clone();
    eventually(60, "web-sts-1 back with its own page", || {
        (names(&s, "app=web-sts").len() == 3 && page(&s, "web-sts-1") == "own 1\n").then_some(())
    });
    // Scale-down: the replacement (Ready for the shortest time, by upstream's log-scale ranking) against
    // the highest ordinal.
    s.ok(&[
        "scale",
        "deployment/web-deploy",
        "statefulset/web-sts",
        "--replicas=2",
    ]);
    eventually(60, "both at two pods", || {
        let d = names(&s, "app=web-deploy");
        (d.len() == 2 && names(&s, "app=web-sts") == ["web-sts-0", "web-sts-1"]).then_some(d)
    });
    let left = names(&s, "app=web-deploy");
    assert!(
        !left.contains(&replacement),
        "the newest pod goes first: {left:?}"
    );
    assert!(
        s.ok(&["get", "pvc", "-o", "name"]).contains("www-web-sts-2"),
        "the claim stays"
    );
    s.ok(&["delete", "-f", &root.to_string_lossy()]);
    s.ok(&["delete", "pvc", "-l", "app=web-sts"]);
    s.wait_pods_gone(90);
}
