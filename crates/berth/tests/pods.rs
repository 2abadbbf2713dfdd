//! Pods really run (issue "Node agent"): the agent inside `berth server` runs a StatefulSet's pods as
//! Linux processes in their own namespaces on an overlay of an imported image, with their claims mounted,
//! restarts crashed containers, terminates gracefully, and re-adopts its containers after kill -9 of the
//! server. Needs root, overlayfs and `/usr/bin/busybox` (Debian `busybox-static`, installed by `.ci/run`);
//! skipped otherwise unless `BERTH_TEST_ROOT=1` (set by `scripts/test` as root), which makes it fail.

mod common;

use common::{Server, eventually, pod};
use serde_json::Value;
use std::path::PathBuf;

const SET: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: db}
spec: {clusterIP: None, selector: {app: db}, ports: [{port: 80, name: web}]}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 2
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: main
        image: busybox:test
        env:
        - name: ORDINAL
          valueFrom: {fieldRef: {fieldPath: "metadata.labels['apps.kubernetes.io/pod-index']"}}
        command: ["/bin/sh", "-c"]
        args:
        - |
          echo "hello from $(hostname)"
          echo "boot $(hostname) $ORDINAL" >> /data/log
          trap 'echo "term $(hostname)" >> /data/log; exit 0' TERM
          (sleep 3; echo ok > /tmp/ready) &
          while true; do sleep 1; done
        readinessProbe:
          exec: {command: [cat, /tmp/ready]}
          periodSeconds: 1
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 10Mi}}}
"#;

fn ready(p: &Value) -> bool {
    p["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

fn volume_log(s: &Server, claim: &str) -> String {
    let c = s.get_json(&["pvc", claim]);
    let pv = s.get_json(&["pv", c["spec"]["volumeName"].as_str().expect("bound")]);
    let dir = PathBuf::from(pv["spec"]["hostPath"]["path"].as_str().expect("path"));
    std::fs::read_to_string(dir.join("log")).unwrap_or_default()
}

fn uid(s: &Server, name: &str) -> String {
    pod(s, name).expect("pod")["metadata"]["uid"]
        .as_str()
        .expect("uid")
        .to_string()
}

#[test]
fn a_statefulset_runs_as_real_processes_with_identity_storage_restarts_and_graceful_termination() {
    if !common::can_run_containers() {
        return;
    }
    // The image is imported while the server runs.
    let mut s = common::server_with_busybox("node-a");

    s.apply(SET);
    // The readiness probe (exec inside the container) holds db-0 Running but not Ready for 3 seconds.
    eventually(30, "db-0 Running, not yet Ready", || {
        pod(&s, "db-0").filter(|p| p["status"]["phase"] == "Running" && !ready(p))
    });
    if let Some(p1) = pod(&s, "db-1") {
        panic!(
            "db-1 exists while db-0 was not Ready:\ndb-0: {}\ndb-1: {}",
            pod(&s, "db-0")
                .map(|p| p["status"].to_string())
                .unwrap_or_default(),
            p1["metadata"]
        );
    }
    // OrderedReady with a real kubelet: db-1 only after db-0 runs and is Ready.
    let p0 = eventually(60, "db-0 Running and Ready", || pod(&s, "db-0").filter(ready));
    assert_eq!(p0["status"]["phase"], "Running");
    let p1 = eventually(60, "db-1 Running and Ready", || pod(&s, "db-1").filter(ready));
    let t0 = p0["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
        .as_str()
        .expect("t0")
        .to_string();
    let c1 = p1["metadata"]["creationTimestamp"]
        .as_str()
        .expect("c1")
        .to_string();
    assert!(
        c1.as_str() >= &t0[..19],
        "db-1 created ({c1}) before db-0 ran ({t0})"
    );
    // Identity inside the container: hostname and the pod-index label through the downward API.
    eventually(20, "both pods wrote into their own claims", || {
        (volume_log(&s, "data-db-0").contains("boot db-0 0")
            && volume_log(&s, "data-db-1").contains("boot db-1 1"))
        .then_some(())
    });

    // kubectl logs through the API server and the agent's kubelet API (also --timestamps, --tail).
    eventually(20, "kubectl logs", || {
        (s.ok(&["logs", "db-1"]) == "hello from db-1\n").then_some(())
    });
    let ts = s.ok(&["logs", "db-1", "--timestamps", "--tail=1"]);
    assert!(ts.ends_with(" hello from db-1\n") && ts.starts_with("20"), "{ts}");
    let err = s.fails(&["logs", "db-1", "-c", "nope"]);
    assert!(err.contains("container nope is not valid for pod db-1"), "{err}");

    // kubectl exec (WebSocket v5.channel.k8s.io through the API server to the agent): stdout, stdin, the
    // exit code; inside the container's namespaces and root, with its volume.
    assert_eq!(s.ok(&["exec", "db-1", "--", "hostname"]), "db-1\n");
    let out = s.with_stdin(
        &["exec", "-i", "db-1", "--", "sh"],
        "cat /data/log; cat /etc/hostname\n",
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "boot db-1 1\ndb-1\n");
    let out = s.kubectl(&["exec", "db-1", "--", "sh", "-c", "exit 3"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // kubectl cp rides on exec and tar.
    let local = s.data_dir().join("copied.txt");
    std::fs::write(&local, "copied in\n").expect("write");
    s.ok(&["cp", &local.to_string_lossy(), "db-1:/tmp/copied.txt"]);
    assert_eq!(
        s.ok(&["exec", "db-1", "--", "cat", "/tmp/copied.txt"]),
        "copied in\n"
    );

    // Graceful deletion: SIGTERM reaches the workload, then db-0 comes back on the same claim.
    let old = uid(&s, "db-0");
    s.ok(&["delete", "pod", "db-0", "--wait=false"]);
    eventually(60, "db-0 back and Ready", || {
        pod(&s, "db-0").filter(|p| p["metadata"]["uid"] != old.as_str() && ready(p))
    });
    eventually(20, "term then a second boot on the same volume", || {
        let log = volume_log(&s, "data-db-0");
        (log.contains("term db-0") && log.matches("boot db-0 0").count() == 2).then_some(())
    });

    // A crashed container is restarted in place (restartCount, lastState).
    let dir = s
        .data_dir()
        .join("agent/pods")
        .join(uid(&s, "db-1"))
        .join("containers/main");
    let pid: i32 = std::fs::read_to_string(dir.join("pid"))
        .expect("pid")
        .trim()
        .parse()
        .expect("pid");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).expect("kill");
    let p1 = eventually(30, "db-1 restarted", || {
        pod(&s, "db-1").filter(|p| p["status"]["containerStatuses"][0]["restartCount"] == 1 && ready(p))
    });
    assert_eq!(
        p1["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"],
        137
    );

    // kill -9 of the whole server: the containers keep running and are re-adopted, not restarted.
    let before = std::fs::read_to_string(dir.join("pid")).expect("pid");
    s.restart();
    std::thread::sleep(std::time::Duration::from_secs(3));
    let p1 = eventually(30, "db-1 still Ready after the restart", || {
        pod(&s, "db-1").filter(ready)
    });
    assert_eq!(p1["status"]["containerStatuses"][0]["restartCount"], 1);
    assert_eq!(
        std::fs::read_to_string(dir.join("pid")).expect("pid"),
        before,
        "same process"
    );

    // Resource limits become cgroup limits (v1 here: memory and cpu hierarchies; v2 when unified), and
    // the cgroup goes with the container.
    s.apply(r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"limited"},"spec":{"containers":[{"name":"c","image":"busybox:test",
        "command":["/bin/sleep","3600"],"resources":{"limits":{"memory":"64Mi","cpu":"500m"}}}]}}"#);
    let lp = eventually(30, "limited running", || {
        pod(&s, "limited").filter(|p| p["status"]["phase"] == "Running")
    });
    let luid = lp["metadata"]["uid"].as_str().expect("uid").to_string();
    let (mem_file, cpu_file, procs) = if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        let d = format!("/sys/fs/cgroup/berth/{luid}/c");
        (
            format!("{d}/memory.max"),
            format!("{d}/cpu.max"),
            format!("{d}/cgroup.procs"),
        )
    } else {
        let m = format!("/sys/fs/cgroup/memory/berth/{luid}/c");
        (
            format!("{m}/memory.limit_in_bytes"),
            format!("/sys/fs/cgroup/cpu/berth/{luid}/c/cpu.cfs_quota_us"),
            format!("{m}/cgroup.procs"),
        )
    };
    assert_eq!(
        std::fs::read_to_string(&mem_file).expect("memory limit").trim(),
        "67108864"
    );
    assert!(
        std::fs::read_to_string(&cpu_file)
            .expect("cpu quota")
            .starts_with("50000")
    );
    let cpid = std::fs::read_to_string(
        s.data_dir()
            .join("agent/pods")
            .join(&luid)
            .join("containers/c/pid"),
    )
    .expect("pid");
    assert!(
        std::fs::read_to_string(&procs)
            .expect("procs")
            .lines()
            .any(|l| l == cpid.trim()),
        "the workload is in its cgroup"
    );
    s.ok(&["delete", "pod", "limited", "--grace-period=1"]);
    eventually(20, "cgroup removed with the container", || {
        (!std::path::Path::new(&mem_file).exists()).then_some(())
    });

    // A failing liveness probe restarts the container.
    s.apply(r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"unlive"},"spec":{"containers":[{"name":"c","image":"busybox:test",
        "command":["/bin/sh","-c","while true; do sleep 1; done"],
        "livenessProbe":{"exec":{"command":["cat","/tmp/alive"]},"periodSeconds":1,"failureThreshold":1}}]}}"#);
    eventually(30, "liveness restart", || {
        (pod(&s, "unlive")?["status"]["containerStatuses"][0]["restartCount"].as_i64()? >= 1).then_some(())
    });
    // A missing image and a crashing command are reported as upstream names them.
    s.apply(r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"noimage"},"spec":{"containers":[{"name":"c","image":"127.0.0.1:1/nothere:1"}]}}"#);
    s.apply(r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"crash"},"spec":{"containers":[{"name":"c","image":"busybox:test","command":["/bin/false"]}]}}"#);
    // (The registry on 127.0.0.1:1 refuses; ErrImagePull, then ImagePullBackOff on the next syncs.)
    eventually(30, "ErrImagePull", || {
        let w = pod(&s, "noimage")?["status"]["containerStatuses"][0]["state"]["waiting"].clone();
        (matches!(w["reason"].as_str()?, "ErrImagePull" | "ImagePullBackOff")
            && w["message"].as_str()?.contains("127.0.0.1:1/nothere:1"))
        .then_some(())
    });
    eventually(40, "CrashLoopBackOff", || {
        (pod(&s, "crash")?["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
            == "CrashLoopBackOff")
            .then_some(())
    });

    // Scale to zero and delete the rest: no container process remains.
    s.ok(&["scale", "sts", "db", "--replicas=0"]);
    s.ok(&["delete", "pod", "noimage", "crash", "unlive", "--wait=false"]);
    s.wait_pods_gone(60);
    eventually(20, "no pod directories left", || {
        std::fs::read_dir(s.data_dir().join("agent/pods"))
            .ok()?
            .next()
            .is_none()
            .then_some(())
    });
}

/// `kubectl exec -it … -- sh` (issue "Node agent", Done when): kubectl on a terminal of its own (a pty this
/// test allocates, 100×40), the shell on a terminal the agent allocates, sized from kubectl's resize
/// message; typed input is echoed and the shell's exit code comes back as kubectl's. Then `kubectl attach`,
/// with piped stdin (`stdinOnce`) and on a `tty` container.
#[test]
fn exec_it_and_attach_run_interactive_sessions_on_terminals() {
    use std::io::{Read, Write};
    if !common::can_run_containers() {
        return;
    }
    let s = common::server_with_busybox("tty-node");
    s.apply(r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"term"},"spec":{"terminationGracePeriodSeconds":1,
        "containers":[{"name":"c","image":"busybox:test","command":["sleep","3600"]}]}}"#);
    eventually(30, "term running", || {
        (pod(&s, "term")?["status"]["phase"] == "Running").then_some(())
    });
    let size = nix::pty::Winsize {
        ws_row: 40,
        ws_col: 100,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).expect("pty");
    let slave = std::fs::File::from(pty.slave);
    let mut kubectl = {
        let mut cmd = s.kubectl_cmd(&["exec", "-it", "term", "--", "sh"]);
        cmd.stdin(slave.try_clone().expect("slave"))
            .stdout(slave.try_clone().expect("slave"))
            .stderr(slave);
        cmd.spawn().expect("kubectl exec -it")
    };
    let mut master = std::fs::File::from(pty.master);
    let output = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let reader = {
        let output = output.clone();
        let mut master = master.try_clone().expect("master");
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = master.read(&mut buf) {
                if n == 0 {
                    break;
                }
                output.lock().expect("lock").extend_from_slice(&buf[..n]);
            }
        })
    };
    let text = || String::from_utf8_lossy(&output.lock().expect("lock")).into_owned();
    eventually(30, "the shell's prompt", || text().contains("# ").then_some(()));
    master
        .write_all(b"test -t 0 && echo IS-A-TTY; stty size; echo TERM=$TERM; exit 3\n")
        .expect("type");
    let status = eventually(30, "kubectl to exit", || kubectl.try_wait().expect("wait"));
    let out = text();
    assert_eq!(status.code(), Some(3), "{out}");
    assert!(out.contains("IS-A-TTY\r\n"), "{out}");
    assert!(out.contains("40 100\r\n"), "{out}");
    assert!(out.contains("TERM=xterm\r\n"), "{out}");
    drop(master);
    let _ = reader.join();

    // `kubectl attach -i` to a container with `stdin` and `stdinOnce`: piped input reaches its stdin, the
    // end of it closes the container's stdin, the container ends, and so does the attach.
    s.apply(
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"reader"},"spec":{"restartPolicy":"Never",
        "containers":[{"name":"c","image":"busybox:test","stdin":true,"stdinOnce":true,
        "command":["/bin/sh","-c","while read l; do echo got:$l; done; echo stdin closed"]}]}}"#,
    );
    eventually(30, "reader running", || {
        (pod(&s, "reader")?["status"]["phase"] == "Running").then_some(())
    });
    let out = s.with_stdin(&["attach", "-i", "reader"], "one\ntwo\n");
    let attached = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{attached} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        attached.contains("got:one\ngot:two\nstdin closed\n"),
        "{attached}"
    );
    eventually(30, "reader Succeeded", || {
        (pod(&s, "reader")?["status"]["phase"] == "Succeeded").then_some(())
    });

    // `kubectl attach -it` to a `tty` container running a shell: an interactive session on its terminal.
    s.apply(
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"console"},"spec":{"restartPolicy":"Never",
        "containers":[{"name":"c","image":"busybox:test","stdin":true,"tty":true,"command":["/bin/sh"]}]}}"#,
    );
    eventually(30, "console running", || {
        (pod(&s, "console")?["status"]["phase"] == "Running").then_some(())
    });
    let pty = nix::pty::openpty(Some(&size), None).expect("pty");
    let slave = std::fs::File::from(pty.slave);
    let mut kubectl = {
        let mut cmd = s.kubectl_cmd(&["attach", "-it", "console"]);
        cmd.stdin(slave.try_clone().expect("slave"))
            .stdout(slave.try_clone().expect("slave"))
            .stderr(slave);
        cmd.spawn().expect("kubectl attach -it")
    };
    let mut master = std::fs::File::from(pty.master);
    output.lock().expect("lock").clear();
    let reader = {
        let output = output.clone();
        let mut master = master.try_clone().expect("master");
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = master.read(&mut buf) {
                if n == 0 {
                    break;
                }
                output.lock().expect("lock").extend_from_slice(&buf[..n]);
            }
        })
    };
    // (Attach shows output from now on: a newline makes the shell print a fresh prompt.)
    eventually(30, "attached", || {
        let _ = master.write_all(b"\n");
        std::thread::sleep(std::time::Duration::from_millis(200));
        text().contains("# ").then_some(())
    });
    master
        .write_all(b"echo ATTACHED-$((40+2)); stty size; exit 4\n")
        .expect("type");
    let status = eventually(30, "kubectl attach to exit", || kubectl.try_wait().expect("wait"));
    let out = text();
    assert!(out.contains("ATTACHED-42\r\n"), "{out}");
    assert!(out.contains("40 100\r\n"), "{out}");
    assert!(status.success(), "{out}");
    drop(master);
    let _ = reader.join();
    eventually(30, "console Failed with exit code 4", || {
        let p = pod(&s, "console")?;
        (p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 4).then_some(())
    });

    s.ok(&["delete", "pod", "--all", "--wait=false", "--grace-period=1"]);
    s.wait_pods_gone(30);
    common::kill_containers(s.data_dir());
}

/// Every pod has its own network namespace on the node's bridge (issue "Cluster networking", item 1):
/// an address from the node's slice of 10.42.0.0/16, reported in `status.podIP` and written in its
/// `/etc/hosts`; two pods listen on the same port; the host and the other pod reach each over HTTP; an
/// httpGet readiness probe reaches it at its address; `hostNetwork` pods keep the node's address.
#[test]
fn pods_have_their_own_addresses_and_reach_each_other() {
    use std::io::{Read, Write};
    if !common::can_run_containers() {
        return;
    }
    let s = common::server_with_busybox("net-node");
    let node = s.get_json(&["node", "net-node"]);
    let slice = node["spec"]["podCIDR"].as_str().unwrap_or_default().to_string();
    assert!(slice.starts_with("10.42.") && slice.ends_with(".0/24"), "{node}");
    for name in ["web-a", "web-b"] {
        s.apply(&format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}"}},"spec":{{"terminationGracePeriodSeconds":1,
            "containers":[{{"name":"c","image":"busybox:test","command":["/bin/sh","-c","mkdir -p /www; echo I am $(hostname) > /www/index.html; exec httpd -f -p 8080 -h /www"],
            "readinessProbe":{{"httpGet":{{"path":"/","port":8080}},"periodSeconds":1}}}}]}}}}"#
        ));
    }
    s.apply(r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"on-host"},"spec":{"hostNetwork":true,"terminationGracePeriodSeconds":1,
        "containers":[{"name":"c","image":"busybox:test","command":["sleep","3600"]}]}}"#);
    let ip = |name: &str| -> String {
        eventually(60, "ready with an address", || {
            let p = pod(&s, name)?;
            ready(&p).then(|| p["status"]["podIP"].as_str().map(str::to_string))?
        })
    };
    let (a, b) = (ip("web-a"), ip("web-b"));
    assert_ne!(a, b);
    let prefix = slice.trim_end_matches("0/24");
    assert!(
        a.starts_with(prefix) && b.starts_with(prefix),
        "{a} {b} in {slice}"
    );
    assert!(
        s.ok(&["exec", "web-a", "--", "cat", "/etc/hosts"])
            .contains(&format!("{a}\tweb-a"))
    );
    // From the host, straight to each pod's address.
    for (addr, who) in [(&a, "web-a"), (&b, "web-b")] {
        let mut c = std::net::TcpStream::connect((addr.as_str(), 8080)).expect("connect to the pod");
        c.write_all(b"GET / HTTP/1.0\r\n\r\n").expect("send");
        let mut body = String::new();
        c.read_to_string(&mut body).expect("read");
        assert!(body.ends_with(&format!("I am {who}\n")), "{body}");
    }
    // Pod to pod.
    let got = s.ok(&[
        "exec",
        "web-a",
        "--",
        "wget",
        "-qO-",
        &format!("http://{b}:8080/"),
    ]);
    assert_eq!(got, "I am web-b\n");
    // The endpoints controllers: a Service selecting both lists their addresses with the named port
    // resolved on the pods (the Endpoints for `kubectl get endpoints`, and an EndpointSlice).
    s.ok(&["label", "pod", "web-a", "web-b", "app=web"]);
    s.apply(
        r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"web"},"spec":{"type":"NodePort","selector":{"app":"web"},
        "ports":[{"name":"http","port":80,"targetPort":8080}]}}"#,
    );
    let mut want = vec![a.clone(), b.clone()];
    want.sort();
    eventually(20, "endpoints of both pods", || {
        let e = s.get_json(&["endpoints", "web"]);
        let mut ips: Vec<String> = e["subsets"][0]["addresses"]
            .as_array()?
            .iter()
            .filter_map(|x| x["ip"].as_str().map(str::to_string))
            .collect();
        ips.sort();
        (ips == want && e["subsets"][0]["ports"][0]["port"] == 8080).then_some(())
    });
    let slices = s.get_json(&["endpointslices", "-l", "kubernetes.io/service-name=web"]);
    assert_eq!(
        slices["items"][0]["endpoints"].as_array().map(Vec::len),
        Some(2),
        "{slices}"
    );
    assert!(s.ok(&["get", "endpoints", "web"]).contains(":8080"));
    // The Service load-balances: by its DNS name from a pod (its ClusterIP), and on the node port from
    // the host; both pods answer over repeated requests.
    let mut seen = std::collections::BTreeSet::new();
    eventually(30, "both pods behind the ClusterIP", || {
        let out = s.kubectl(&["exec", "web-a", "--", "wget", "-qO-", "http://web/"]);
        seen.insert(String::from_utf8_lossy(&out.stdout).into_owned());
        (seen.contains("I am web-a\n") && seen.contains("I am web-b\n")).then_some(())
    });
    let node_port = s.get_json(&["service", "web"])["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .expect("nodePort");
    let mut seen = std::collections::BTreeSet::new();
    eventually(30, "both pods behind the node port", || {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", u16::try_from(node_port).ok()?)).ok()?;
        c.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
        let mut body = String::new();
        c.read_to_string(&mut body).ok()?;
        seen.insert(body.rsplit("\r\n\r\n").next()?.to_string());
        (seen.contains("I am web-a\n") && seen.contains("I am web-b\n")).then_some(())
    });
    // LoadBalancer: the node's address as the ingress (k3s's ServiceLB), served on the Service's port.
    s.apply(r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"web-lb"},"spec":{"type":"LoadBalancer","selector":{"app":"web"},
        "ports":[{"name":"http","port":18080,"targetPort":8080}]}}"#);
    let ingress = eventually(30, "the load balancer's ingress", || {
        s.get_json(&["service", "web-lb"])["status"]["loadBalancer"]["ingress"][0]["ip"]
            .as_str()
            .map(str::to_string)
    });
    assert_eq!(
        ingress,
        node["status"]["addresses"][0]["address"]
            .as_str()
            .unwrap_or_default()
    );
    eventually(30, "served at the ingress address", || {
        let mut c = std::net::TcpStream::connect((ingress.as_str(), 18080)).ok()?;
        c.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
        let mut body = String::new();
        c.read_to_string(&mut body).ok()?;
        body.contains("I am web-").then_some(())
    });
    s.ok(&["delete", "service", "web-lb"]);
    // A UDP Service port: a Service without a selector whose Endpoints (written by hand, as upstream
    // allows) name the cluster DNS; a DNS query over UDP to the Service's ClusterIP from a pod is relayed
    // there and answered.
    s.apply(
        r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"dns-relay"},"spec":{
        "ports":[{"name":"dns","port":53,"protocol":"UDP"}]}}"#,
    );
    s.apply(&format!(
        r#"{{"apiVersion":"v1","kind":"Endpoints","metadata":{{"name":"dns-relay"}},"subsets":[{{
        "addresses":[{{"ip":"{}"}}],"ports":[{{"name":"dns","port":53,"protocol":"UDP"}}]}}]}}"#,
        s.dns
    ));
    let relay_ip = s.get_json(&["service", "dns-relay"])["spec"]["clusterIP"]
        .as_str()
        .expect("clusterIP")
        .to_string();
    let web_ip = s.get_json(&["service", "web"])["spec"]["clusterIP"]
        .as_str()
        .expect("clusterIP")
        .to_string();
    eventually(30, "a DNS answer through the UDP Service", || {
        let out = s.kubectl(&[
            "exec",
            "web-a",
            "--",
            "busybox",
            "nslookup",
            "web.default.svc.cluster.local",
            &relay_ip,
        ]);
        let out = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.contains(&relay_ip) && out.contains(&format!("Address: {web_ip}"))).then_some(())
    });
    // hostPort: the pod's port on the node's addresses (the CNI portmap plugin's job upstream).
    let host_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    s.apply(&format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"with-host-port"}},"spec":{{"terminationGracePeriodSeconds":1,
        "containers":[{{"name":"c","image":"busybox:test","command":["/bin/sh","-c","mkdir -p /www; echo via hostPort > /www/index.html; exec httpd -f -p 8080 -h /www"],
        "ports":[{{"containerPort":8080,"hostPort":{host_port}}}]}}]}}}}"#
    ));
    eventually(60, "served on the hostPort", || {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", host_port)).ok()?;
        c.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
        let mut body = String::new();
        c.read_to_string(&mut body).ok()?;
        body.ends_with("via hostPort\n").then_some(())
    });
    // A second pod bound straight to the node (past the scheduler's NodePorts filter) asking for the same
    // hostPort is rejected at the kubelet's admission, as upstream's: Failed, reason NodePorts.
    let node_name = node["metadata"]["name"].as_str().unwrap_or_default().to_string();
    s.apply(&format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"port-taken"}},"spec":{{"nodeName":"{node_name}",
        "terminationGracePeriodSeconds":1,"containers":[{{"name":"c","image":"busybox:test","command":["sleep","60"],
        "ports":[{{"containerPort":9,"hostPort":{host_port}}}]}}]}}}}"#
    ));
    let rejected = eventually(30, "port-taken rejected at admission", || {
        let p = pod(&s, "port-taken")?;
        (p["status"]["phase"] == "Failed").then_some(p)
    });
    assert_eq!(rejected["status"]["reason"], "NodePorts", "{rejected}");
    assert_eq!(
        rejected["status"]["message"],
        "Pod was rejected: Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports"
    );
    // One whose cpu request is more than the node's allocatable (past the scheduler's fit filter): the
    // kubelet's resource admission rejects it, Failed, reason OutOfcpu, upstream's message.
    s.apply(&format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"too-big"}},"spec":{{"nodeName":"{node_name}",
        "terminationGracePeriodSeconds":1,"containers":[{{"name":"c","image":"busybox:test","command":["sleep","60"],
        "resources":{{"requests":{{"cpu":"1000"}}}}}}]}}}}"#
    ));
    let rejected = eventually(30, "too-big rejected at admission", || {
        let p = pod(&s, "too-big")?;
        (p["status"]["phase"] == "Failed").then_some(p)
    });
    assert_eq!(rejected["status"]["reason"], "OutOfcpu", "{rejected}");
    let capacity = node["status"]["allocatable"]["cpu"]
        .as_str()
        .and_then(|c| c.parse::<i64>().ok())
        .expect("allocatable cpu")
        * 1000;
    let message = rejected["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(
            "Pod was rejected: Node didn't have enough resource: cpu, requested: 1000000, used: "
        ) && message.ends_with(&format!(", capacity: {capacity}")),
        "{message}"
    );
    // hostNetwork: the node's address.
    let host = eventually(30, "on-host running", || {
        let p = pod(&s, "on-host")?;
        (p["status"]["phase"] == "Running").then(|| p["status"]["podIP"].as_str().map(str::to_string))?
    });
    assert_eq!(
        host,
        node["status"]["addresses"][0]["address"]
            .as_str()
            .unwrap_or_default()
    );
    s.ok(&["delete", "pod", "--all", "--wait=false"]);
    s.wait_pods_gone(30);
    // Their addresses are free again.
    eventually(10, "addresses released", || {
        let held: Vec<String> = std::fs::read_dir(agent::network::IPAM_DIR)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        (!held.contains(&a) && !held.contains(&b)).then_some(())
    });
    common::kill_containers(s.data_dir());
}

/// downwardAPI and projected volumes (issue "Node agent", item 4), and the preStop hook before SIGTERM
/// (item 5), seen through a hostPath directory this test owns.
#[test]
fn downward_api_and_projected_volumes_and_the_pre_stop_hook() {
    if !common::can_run_containers() {
        return;
    }
    let s = common::server_with_busybox("vol-node");
    let out = tempfile::tempdir().expect("dir");
    s.ok(&[
        "create",
        "configmap",
        "conf",
        "--from-literal=mode=fast",
        "--from-literal=other=x",
    ]);
    s.ok(&[
        "create",
        "secret",
        "generic",
        "creds",
        "--from-literal=password=s3cret",
    ]);
    s.apply(&format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"vols","labels":{{"app":"vols","tier":"db"}}}},
        "spec":{{"terminationGracePeriodSeconds":4,"containers":[{{"name":"c","image":"busybox:test",
          "command":["/bin/sh","-c","trap 'echo term >> /out/events' TERM; while true; do sleep 1; done"],
          "resources":{{"limits":{{"memory":"64Mi"}}}},
          "lifecycle":{{"preStop":{{"exec":{{"command":["/bin/sh","-c","echo prestop >> /out/events; sleep 1"]}}}}}},
          "volumeMounts":[{{"name":"info","mountPath":"/info"}},{{"name":"all","mountPath":"/all"}},{{"name":"out","mountPath":"/out"}}]}}],
        "volumes":[
          {{"name":"info","downwardAPI":{{"items":[{{"path":"labels","fieldRef":{{"fieldPath":"metadata.labels"}}}},
             {{"path":"name","fieldRef":{{"fieldPath":"metadata.name"}}}},
             {{"path":"mem","resourceFieldRef":{{"containerName":"c","resource":"limits.memory","divisor":"1Mi"}}}}]}}}},
          {{"name":"all","projected":{{"sources":[{{"configMap":{{"name":"conf","items":[{{"key":"mode","path":"conf/mode"}}]}}}},
             {{"secret":{{"name":"creds"}}}},{{"downwardAPI":{{"items":[{{"path":"ns","fieldRef":{{"fieldPath":"metadata.namespace"}}}}]}}}}]}}}},
          {{"name":"out","hostPath":{{"path":"{}"}}}}]}}}}"#,
        out.path().display()
    ));
    eventually(30, "vols running", || {
        (pod(&s, "vols")?["status"]["phase"] == "Running").then_some(())
    });
    assert_eq!(
        s.ok(&["exec", "vols", "--", "cat", "/info/labels"]),
        "app=\"vols\"\ntier=\"db\"\n"
    );
    assert_eq!(s.ok(&["exec", "vols", "--", "cat", "/info/name"]), "vols");
    assert_eq!(s.ok(&["exec", "vols", "--", "cat", "/info/mem"]), "64");
    assert_eq!(s.ok(&["exec", "vols", "--", "cat", "/all/conf/mode"]), "fast");
    assert_eq!(s.ok(&["exec", "vols", "--", "cat", "/all/password"]), "s3cret");
    assert_eq!(s.ok(&["exec", "vols", "--", "cat", "/all/ns"]), "default");
    assert!(
        !s.kubectl(&["exec", "vols", "--", "cat", "/all/other"])
            .status
            .success(),
        "only the listed item"
    );
    // Deletion: the preStop hook runs to its end, then SIGTERM, once (the workload ignores it: it is
    // killed when the grace period ends, without a second SIGTERM on the way).
    s.ok(&["delete", "pod", "vols"]);
    assert_eq!(
        std::fs::read_to_string(out.path().join("events")).expect("events"),
        "prestop\nterm\n"
    );
    common::kill_containers(s.data_dir());
}

/// Ephemeral containers (issue 15 item 16b): the real `kubectl debug --target` adds one through
/// `pods/ephemeralcontainers`; it runs in the target's PID namespace (its `ps` shows the target's
/// process), reports `ephemeralContainerStatuses`, and `kubectl logs -c` reads it. The subresource
/// refuses removals and forbidden fields with upstream's messages.
#[test]
fn kubectl_debug_adds_an_ephemeral_container_in_the_targets_pid_namespace() {
    if !common::can_run_containers() {
        return;
    }
    let s = common::server_with_busybox("debug-node");
    s.apply(
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web"},"spec":{"terminationGracePeriodSeconds":1,
        "containers":[{"name":"app","image":"busybox:test","command":["sleep","3600"]}]}}"#,
    );
    eventually(60, "web running", || {
        (pod(&s, "web")?["status"]["phase"] == "Running").then_some(())
    });
    s.ok(&[
        "debug",
        "web",
        "--image=busybox:test",
        "--target=app",
        "--container=dbg",
        "--",
        "sh",
        "-c",
        "ps; sleep 30",
    ]);
    let p = eventually(60, "dbg running", || {
        let p = pod(&s, "web")?;
        (p["status"]["ephemeralContainerStatuses"][0]["state"]["running"].is_object()).then_some(p)
    });
    assert_eq!(p["spec"]["ephemeralContainers"][0]["targetContainerName"], "app");
    assert_eq!(p["status"]["ephemeralContainerStatuses"][0]["name"], "dbg");
    assert_eq!(p["status"]["ephemeralContainerStatuses"][0]["ready"], false);
    assert_eq!(p["status"]["phase"], "Running");
    let logs = eventually(30, "dbg's ps", || {
        let out = s.kubectl(&["logs", "web", "-c", "dbg"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("sleep 30").then_some(text)
    });
    assert!(
        logs.contains("sleep 3600"),
        "the target's process is visible: {logs}"
    );
    // Removing it, or adding one with ports, is refused.
    let path = "/api/v1/namespaces/default/pods/web/ephemeralcontainers";
    let mut current: Value = serde_json::from_str(&s.ok(&["get", "--raw", path])).expect("pod");
    current["spec"]["ephemeralContainers"] = serde_json::json!([]);
    let file = s.data_dir().join("ephemeral.json");
    std::fs::write(&file, current.to_string()).expect("write");
    let out = s.kubectl(&["replace", "--raw", path, "-f", file.to_str().expect("path")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(r#"spec.ephemeralContainers: Forbidden: existing ephemeral containers "dbg" may not be removed"#),
        "{err}"
    );
    let mut current: Value = serde_json::from_str(&s.ok(&["get", "--raw", path])).expect("pod");
    current["spec"]["ephemeralContainers"]
        .as_array_mut()
        .expect("list")
        .push(serde_json::json!({"name": "d2", "image": "busybox:test", "ports": [{"containerPort": 80}]}));
    std::fs::write(&file, current.to_string()).expect("write");
    let out = s.kubectl(&["replace", "--raw", path, "-f", file.to_str().expect("path")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains(
                "spec.ephemeralContainers[1].ports: Forbidden: cannot be set for an Ephemeral Container"
            ),
        "{err}"
    );
    s.ok(&["delete", "pod", "web", "--wait=false"]);
    s.wait_pods_gone(30);
}
