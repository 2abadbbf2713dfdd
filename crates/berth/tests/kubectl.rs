//! The control plane as a new user meets it: the real `kubectl` against a real `berth server` on a fresh
//! data dir (issue "Control plane", its "Done when" list). Each test runs its own server, so they run in
//! parallel.

mod common;

use common::{Server, eventually, seed};
use serde_json::Value;

fn seed_path(name: &str) -> String {
    seed(name).to_string_lossy().into_owned()
}

#[test]
fn apply_twice_is_unchanged_and_an_edit_is_configured() {
    let s = Server::start();
    let (sc, web) = (seed_path("seed-storage-local.yaml"), seed_path("seed-web.yaml"));
    let out = s.ok(&["apply", "-f", &sc, "-f", &web]);
    assert!(
        out.contains("storageclass.storage.k8s.io/storage-local created"),
        "{out}"
    );
    assert!(
        out.contains("service/nginx created") && out.contains("statefulset.apps/web created"),
        "{out}"
    );
    let again = s.ok(&["apply", "-f", &sc, "-f", &web]);
    assert!(
        again.contains("statefulset.apps/web unchanged") && again.contains("service/nginx unchanged"),
        "{again}"
    );
    let edited = std::fs::read_to_string(&web)
        .expect("seed")
        .replace("replicas: 2", "replicas: 3");
    let out = s.apply(&edited);
    assert!(out.contains("statefulset.apps/web configured"), "{out}");
    let sts = s.get_json(&["sts", "web"]);
    assert_eq!(sts["spec"]["replicas"], 3);
    assert_eq!(sts["metadata"]["generation"], 2, "a spec change bumps generation");
    // Server-side defaulting that `kubectl rollout` depends on (kubectl-compat.md §6.1).
    assert_eq!(sts["spec"]["updateStrategy"]["type"], "RollingUpdate");
    assert_eq!(sts["spec"]["updateStrategy"]["rollingUpdate"]["partition"], 0);
    assert_eq!(sts["spec"]["podManagementPolicy"], "OrderedReady");
    // kubectl diff exits 1 when there are differences and 0 when there are none.
    let diff = s.kubectl_cmd(&["diff", "-f", &web]).output().expect("diff");
    assert_eq!(
        diff.status.code(),
        Some(1),
        "diff of replicas 2 vs 3: {}",
        String::from_utf8_lossy(&diff.stderr)
    );
    assert!(String::from_utf8_lossy(&diff.stdout).contains("replicas: 2"));
    // Server-side apply of the same files.
    let out = s.ok(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        &sc,
        "-f",
        &web,
    ]);
    assert!(out.contains("serverside-applied"), "{out}");
    let sts = s.get_json(&["sts", "web", "--show-managed-fields"]);
    assert_eq!(sts["spec"]["replicas"], 2);
    let managers: Vec<&str> = sts["metadata"]["managedFields"]
        .as_array()
        .map(|a| a.iter().filter_map(|m| m["manager"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        managers.contains(&"kubectl"),
        "managedFields records the apply manager: {managers:?}"
    );
    let out = s.ok(&["apply", "--server-side", "-f", &web]);
    assert!(out.contains("serverside-applied"), "{out}");
    assert_eq!(
        s.get_json(&["sts", "web"])["metadata"]["resourceVersion"],
        sts["metadata"]["resourceVersion"],
        "re-apply is a no-op"
    );
}

#[test]
fn get_describe_and_tables_print_upstream_columns() {
    let s = Server::start();
    s.ok(&[
        "apply",
        "-f",
        &seed_path("seed-storage-local.yaml"),
        "-f",
        &seed_path("seed-web.yaml"),
    ]);
    let out = s.ok(&["get", "sts"]);
    assert!(
        out.starts_with("NAME") && out.contains("READY") && out.contains("web"),
        "{out}"
    );
    assert!(out.contains("0/2"), "READY is readyReplicas/replicas: {out}");
    let svc = s.ok(&["get", "svc", "nginx", "-o", "yaml"]);
    assert!(
        svc.contains("clusterIP: None") && svc.contains("protocol: TCP"),
        "{svc}"
    );
    let all = s.ok(&["get", "all"]);
    assert!(
        all.contains("service/nginx")
            && all.contains("statefulset.apps/web")
            && all.contains("service/kubernetes"),
        "{all}"
    );
    let svcs = s.ok(&["get", "svc"]);
    assert!(
        svcs.contains("CLUSTER-IP") && svcs.contains("None") && svcs.contains("80/TCP"),
        "{svcs}"
    );
    let a = s.ok(&["get", "svc", "-A", "--show-labels"]);
    assert!(
        a.contains("NAMESPACE") && a.contains("default") && a.contains("app=nginx"),
        "{a}"
    );
    let d = s.ok(&["describe", "sts", "web"]);
    assert!(
        d.contains("Name:")
            && d.contains("web")
            && d.contains("Replicas:")
            && d.contains("Port:         80/TCP"),
        "{d}"
    );
    let r = s.ok(&["api-resources"]);
    for line in [
        "statefulsets",
        "sts",
        "apps/v1",
        "persistentvolumeclaims",
        "leases",
        "endpointslices",
    ] {
        assert!(r.contains(line), "api-resources lacks {line}: {r}");
    }
    let ns = s.ok(&["get", "ns"]);
    for n in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(ns.contains(n), "{ns}");
    }
    assert!(ns.contains("Active"), "{ns}");
}

#[test]
fn get_watch_stays_open_and_prints_changes() {
    let s = Server::start();
    s.ok(&["apply", "-f", &seed_path("seed-web.yaml")]);
    let child = s
        .kubectl_cmd(&["get", "sts", "-w", "--output-watch-events"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl get -w");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    s.ok(&["scale", "sts", "web", "--replicas=5"]);
    s.ok(&["delete", "sts", "web"]);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let pid = child.id();
    let still_running = std::process::Command::new("kill")
        .arg("-0")
        .arg(pid.to_string())
        .status()
        .is_ok_and(|st| st.success());
    assert!(still_running, "kubectl get -w exited early");
    let _ = std::process::Command::new("kill").arg(pid.to_string()).status();
    let out = child.wait_with_output().expect("output");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ADDED") && text.contains("MODIFIED") && text.contains("DELETED"),
        "{text}"
    );
}

#[test]
fn label_annotate_patch_scale_and_edit_behave_as_upstream() {
    let s = Server::start();
    s.ok(&["apply", "-f", &seed_path("seed-web.yaml")]);
    s.ok(&["label", "sts", "web", "tier=db"]);
    s.ok(&["annotate", "sts", "web", "owner=team-a"]);
    let sts = s.get_json(&["sts", "web"]);
    assert_eq!(sts["metadata"]["labels"]["tier"], "db");
    assert_eq!(sts["metadata"]["annotations"]["owner"], "team-a");
    assert_eq!(
        sts["metadata"]["generation"], 1,
        "metadata writes do not bump generation"
    );
    s.ok(&[
        "patch",
        "sts",
        "web",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"nginx","image":"nginx:1.27"}]}}}}"#,
    ]);
    let sts = s.get_json(&["sts", "web"]);
    let c = &sts["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "nginx:1.27");
    assert_eq!(
        c["ports"][0]["containerPort"], 80,
        "strategic merge keeps the other fields of the container"
    );
    assert_eq!(sts["metadata"]["generation"], 2);
    s.ok(&[
        "patch",
        "sts",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"replicas":4}}"#,
    ]);
    s.ok(&[
        "patch",
        "sts",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/replicas","value":6}]"#,
    ]);
    assert_eq!(s.get_json(&["sts", "web"])["spec"]["replicas"], 6);
    let out = s.ok(&[
        "patch",
        "sts",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"replicas":6}}"#,
    ]);
    assert!(
        out.contains("(no change)"),
        "a no-op patch is reported as no change: {out}"
    );
    s.ok(&["scale", "sts", "web", "--replicas=5"]);
    assert_eq!(s.get_json(&["sts", "web"])["spec"]["replicas"], 5);
    // kubectl edit with a scripted editor.
    let editor = s.dir.path().join("editor.sh");
    std::fs::write(&editor, "#!/bin/sh\nsed -i 's/replicas: 5/replicas: 7/' \"$1\"\n").expect("editor");
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&editor)
        .status()
        .expect("chmod");
    let out = s
        .kubectl_cmd(&["edit", "sts", "web"])
        .env("EDITOR", &editor)
        .output()
        .expect("edit");
    assert!(
        out.status.success(),
        "edit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s.get_json(&["sts", "web"])["spec"]["replicas"], 7);
    let scale = s.ok(&[
        "get",
        "--raw",
        "/apis/apps/v1/namespaces/default/statefulsets/web/scale",
    ]);
    let scale: Value = serde_json::from_str(&scale).expect("scale");
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["status"]["selector"], "app=nginx");
}

#[test]
fn invalid_statefulset_is_refused_with_every_bad_field_and_nothing_is_stored() {
    let s = Server::start();
    let bad = r#"apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: bad
spec:
  serviceName: bad
  replicas: -1
  selector:
    matchLabels:
      app: one
  template:
    metadata:
      labels:
        app: two
    spec:
      containers:
      - name: c
        image: x
"#;
    let out = s.with_stdin(&["apply", "-f", "-"], bad);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is invalid"), "{err}");
    assert!(err.contains("spec.replicas"), "replicas named: {err}");
    assert!(
        err.contains("spec.template.metadata.labels"),
        "selector mismatch named: {err}"
    );
    assert!(
        !s.kubectl(&["get", "sts", "bad"]).status.success(),
        "nothing stored"
    );
    // Unknown fields are refused under kubectl's fieldValidation=Strict.
    let unknown = bad
        .replace("replicas: -1", "replicas: 1\n  replicaz: 2")
        .replace("app: two", "app: one");
    let out = s.with_stdin(&["apply", "-f", "-"], &unknown);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("unknown field \"spec.replicaz\""),
        "{err}"
    );
}

#[test]
fn changing_an_immutable_statefulset_field_gets_upstreams_forbidden_message() {
    let s = Server::start();
    s.ok(&["apply", "-f", &seed_path("seed-web.yaml")]);
    let err = s.fails(&[
        "patch",
        "sts",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"serviceName":"other"}}"#,
    ]);
    assert!(
        err.contains("spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"),
        "{err}"
    );
}

#[test]
fn bad_bodies_get_400_and_413_and_the_server_survives() {
    let s = Server::start();
    let junk = s.dir.path().join("junk");
    std::fs::write(&junk, b"\x00\x01not json {{{").expect("write");
    let err = s.fails(&[
        "create",
        "--raw",
        "/api/v1/namespaces/default/configmaps",
        "-f",
        &junk.to_string_lossy(),
    ]);
    assert!(
        err.contains("BadRequest") || err.contains("400") || err.contains("unknown format"),
        "{err}"
    );
    let big = s.dir.path().join("big.json");
    let payload = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"big"}},"data":{{"a":"{}"}}}}"#,
        "x".repeat(4 * 1024 * 1024)
    );
    std::fs::write(&big, payload).expect("write");
    let err = s.fails(&[
        "create",
        "--raw",
        "/api/v1/namespaces/default/configmaps",
        "-f",
        &big.to_string_lossy(),
    ]);
    assert!(
        err.contains("too large") || err.contains("413") || err.contains("RequestEntityTooLarge"),
        "{err}"
    );
    s.ok(&["get", "ns", "default"]);
}

#[test]
fn requests_without_credentials_get_401_and_the_token_is_accepted() {
    let s = Server::start_with(&["--disable-agent", "--token", "s3cret-token"]);
    let url = s.url();
    let anon = s.dir.path().join("anon.yaml");
    let with_token = |token: Option<&str>| {
        let user = match token {
            Some(t) => format!("users:\n- name: u\n  user:\n    token: {t}\n"),
            // kubectl prompts for a password when a user has no credentials at all, so "anonymous" here is a
            // wrong token: the server must not tell it apart from none.
            None => "users:\n- name: u\n  user:\n    token: wrong-token\n".to_string(),
        };
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    insecure-skip-tls-verify: true\n    server: {url}\n  name: c\ncontexts:\n- context:\n    cluster: c\n    user: u\n  name: c\ncurrent-context: c\n{user}"
        )
    };
    std::fs::write(&anon, with_token(None)).expect("write");
    let out = s
        .kubectl_cmd(&["get", "ns"])
        .env("KUBECONFIG", &anon)
        .output()
        .expect("kubectl");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    // kubectl's wording for a 401 from discovery.
    assert!(
        err.contains("Unauthorized") || err.contains("provide credentials"),
        "{err}"
    );
    std::fs::write(&anon, with_token(Some("s3cret-token"))).expect("write");
    let out = s
        .kubectl_cmd(&["get", "ns", "default"])
        .env("KUBECONFIG", &anon)
        .output()
        .expect("kubectl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn cascade_orphan_background_and_foreground_as_upstream() {
    let s = Server::start();
    let owner =
        |name: &str| format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  a: b\n");
    for mode in ["background", "orphan", "foreground"] {
        let o = format!("owner-{mode}");
        let d = format!("dep-{mode}");
        s.apply(&owner(&o));
        let uid = s.ok(&["get", "cm", &o, "-o", "jsonpath={.metadata.uid}"]);
        s.apply(&format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {d}\n  ownerReferences:\n  - apiVersion: v1\n    kind: ConfigMap\n    name: {o}\n    uid: {uid}\n    blockOwnerDeletion: true\ndata:\n  a: b\n"
        ));
        s.ok(&["delete", "cm", &o, &format!("--cascade={mode}"), "--timeout=30s"]);
        match mode {
            "orphan" => {
                let dep = s.get_json(&["cm", &d]);
                assert!(
                    dep["metadata"]["ownerReferences"]
                        .as_array()
                        .is_none_or(|a| a.is_empty()),
                    "orphaned: {dep}"
                );
            }
            _ => eventually(20, &format!("{d} garbage collected ({mode})"), || {
                (!s.kubectl(&["get", "cm", &d]).status.success()).then_some(())
            }),
        }
    }
}

#[test]
fn deleting_a_namespace_deletes_what_it_contains() {
    let s = Server::start();
    s.apply("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n");
    s.apply("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  namespace: demo\ndata:\n  a: b\n");
    s.ok(&["delete", "ns", "demo", "--timeout=60s"]);
    assert!(!s.kubectl(&["get", "ns", "demo"]).status.success());
    assert!(s.ok(&["get", "cm", "-n", "demo", "-o", "name"]).trim().is_empty());
}

#[test]
fn generator_commands_send_protobuf_and_work() {
    let s = Server::start();
    s.ok(&["create", "namespace", "demo"]);
    s.ok(&["create", "configmap", "c", "--from-literal=a=b", "-n", "demo"]);
    s.ok(&["create", "deployment", "d", "--image=x"]);
    assert_eq!(s.get_json(&["cm", "c", "-n", "demo"])["data"]["a"], "b");
    assert_eq!(
        s.get_json(&["deploy", "d"])["spec"]["template"]["spec"]["containers"][0]["image"],
        "x"
    );
}

#[test]
fn kill_9_during_a_burst_of_creates_loses_no_acknowledged_write() {
    let mut s = Server::start();
    let kubeconfig = s.kubeconfig();
    let cache = tempfile::tempdir().expect("cache");
    // Each kubectl create that exits 0 was acknowledged by the server.
    let mut acked = Vec::new();
    let mut children = Vec::new();
    for i in 0..40 {
        let name = format!("burst-{i}");
        let child = std::process::Command::new("kubectl")
            .args([
                "create",
                "--raw",
                "/api/v1/namespaces/default/configmaps",
                "-f",
                "-",
            ])
            .env("KUBECONFIG", &kubeconfig)
            .env("KUBECACHEDIR", cache.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("kubectl");
        children.push((name, child));
    }
    for (name, child) in children.iter_mut() {
        use std::io::Write;
        let body = format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}}}}"#);
        let _ = child.stdin.take().map(|mut i| i.write_all(body.as_bytes()));
    }
    std::thread::sleep(std::time::Duration::from_millis(150));
    s.kill9();
    for (name, mut child) in children {
        if child.wait().is_ok_and(|st| st.success()) {
            acked.push(name);
        }
    }
    s.restart();
    for name in &acked {
        assert!(
            s.kubectl(&["get", "cm", name]).status.success(),
            "acknowledged {name} lost after kill -9"
        );
    }
}

#[test]
fn list_pagination_follows_continue_tokens() {
    let s = Server::start();
    for i in 0..7 {
        s.apply(&format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: page-{i}\n"
        ));
    }
    // kubectl follows `continue` itself with --chunk-size.
    let out = s.ok(&["get", "cm", "--chunk-size=2", "-o", "name"]);
    let names: Vec<&str> = out.lines().filter(|l| l.contains("page-")).collect();
    assert_eq!(names.len(), 7, "{out}");
    let first: Value =
        serde_json::from_str(&s.ok(&["get", "--raw", "/api/v1/namespaces/default/configmaps?limit=3"]))
            .expect("json");
    assert_eq!(first["items"].as_array().map(Vec::len), Some(3));
    let token = first["metadata"]["continue"]
        .as_str()
        .expect("continue token")
        .to_string();
    let next: Value = serde_json::from_str(&s.ok(&[
        "get",
        "--raw",
        &format!("/api/v1/namespaces/default/configmaps?limit=3&continue={token}"),
    ]))
    .expect("json");
    assert_ne!(
        next["items"][0]["metadata"]["name"],
        first["items"][0]["metadata"]["name"]
    );
}

#[test]
fn sigterm_shuts_the_server_down_cleanly() {
    let mut s = Server::start();
    let pid = s.pid();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    eventually(10, "server exits after SIGTERM", || {
        let alive = std::path::Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z ");
        (!alive).then_some(())
    });
    // The data dir opens again and still has the bootstrap namespaces.
    s.restart();
    s.ok(&["get", "ns", "kube-system"]);
}

/// Issue 15 item 14b: the everyday backup-and-restore round trip with kubectl's default client-side
/// validation, which reads `/openapi/v2` for a `kind: List`.
#[test]
fn backup_and_restore_of_a_list_validates_through_openapi_v2() {
    let s = Server::start();
    s.ok(&["create", "configmap", "one", "--from-literal=a=1"]);
    s.ok(&["create", "configmap", "two", "--from-literal=b=2"]);
    let backup = s.ok(&["get", "cm", "-o", "yaml"]);
    assert!(backup.contains("kind: List"), "{backup}");
    let file = s.dir.path().join("backup.yaml");
    std::fs::write(&file, &backup).expect("write backup");
    s.ok(&["delete", "cm", "one", "two"]);
    let file = file.to_string_lossy().into_owned();
    let out = s.ok(&["apply", "-f", &file]);
    assert!(
        out.contains("configmap/one created") && out.contains("configmap/two created"),
        "{out}"
    );
    assert_eq!(s.get_json(&["cm", "two"])["data"]["b"], "2");
    // (Applying the same backup again is a 409, as upstream: it carries the deleted objects'
    // resourceVersions.) The document is served as JSON too.
    let doc: Value = serde_json::from_str(&s.ok(&["get", "--raw", "/openapi/v2"])).expect("json");
    assert_eq!(
        doc["definitions"]["io.k8s.api.apps.v1.StatefulSet"]["description"],
        "apps/v1 StatefulSet"
    );
}

const CHART_KINDS: &str = r#"
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: db}
spec:
  minAvailable: 1
  selector: {matchLabels: {app: db}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {role: client}}}]
    ports: [{protocol: TCP, port: 5432}]
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: nginx}
spec: {controller: k8s.io/ingress-nginx}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web}
spec:
  ingressClassName: nginx
  rules:
  - host: web.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: db-critical}
value: 100000
description: databases first
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: web}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  minReplicas: 1
  maxReplicas: 5
  metrics:
  - type: Resource
    resource: {name: cpu, target: {type: Utilization, averageUtilization: 80}}
---
apiVersion: v1
kind: ResourceQuota
metadata: {name: q}
spec:
  hard: {pods: "10", requests.cpu: "4", limits.memory: 8Gi}
---
apiVersion: v1
kind: LimitRange
metadata: {name: lr}
spec:
  limits:
  - type: Container
    default: {cpu: 500m, memory: 256Mi}
    defaultRequest: {cpu: 100m, memory: 64Mi}
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {name: v1beta1.metrics.k8s.io}
spec:
  group: metrics.k8s.io
  version: v1beta1
  groupPriorityMinimum: 100
  versionPriority: 100
  service: {namespace: kube-system, name: metrics-server}
"#;

/// Issue 15 item 14: the kinds a stateful Helm chart renders are accepted, stored, listed with upstream's
/// columns and validated with every bad field named.
#[test]
fn the_kinds_a_helm_chart_renders_are_served_as_upstream() {
    let s = Server::start();
    let out = s.apply(CHART_KINDS);
    for line in [
        "poddisruptionbudget.policy/db created",
        "networkpolicy.networking.k8s.io/db created",
        "ingressclass.networking.k8s.io/nginx created",
        "ingress.networking.k8s.io/web created",
        "priorityclass.scheduling.k8s.io/db-critical created",
        "horizontalpodautoscaler.autoscaling/web created",
        "resourcequota/q created",
        "limitrange/lr created",
        "apiservice.apiregistration.k8s.io/v1beta1.metrics.k8s.io created",
    ] {
        assert!(out.contains(line), "{line}: {out}");
    }
    // (A PodDisruptionBudget re-applies as "configured": kubectl's patch always carries its selector,
    // whose patch strategy is `replace` in policy/v1.)
    let again = s.apply(CHART_KINDS);
    assert!(
        again.contains("networkpolicy.networking.k8s.io/db unchanged")
            && again.contains("ingress.networking.k8s.io/web unchanged")
            && again.contains("horizontalpodautoscaler.autoscaling/web unchanged"),
        "{again}"
    );
    for (what, header) in [
        ("pdb", "MIN AVAILABLE   MAX UNAVAILABLE   ALLOWED DISRUPTIONS"),
        ("netpol", "POD-SELECTOR"),
        ("ing", "CLASS   HOSTS             ADDRESS   PORTS"),
        ("ingressclass", "CONTROLLER"),
        ("pc", "GLOBAL-DEFAULT"),
        ("hpa", "REFERENCE"),
        ("quota", "REQUEST"),
        ("limits", "CREATED AT"),
        ("apiservice", "SERVICE"),
    ] {
        let table = s.ok(&["get", what]);
        assert!(table.contains(header), "{what}: {table}");
    }
    let hpa = s.ok(&["get", "hpa", "web"]);
    assert!(
        hpa.contains("Deployment/web") && hpa.contains("cpu: <unknown>/80%"),
        "{hpa}"
    );
    // The quota controller keeps status.used (nothing runs in the namespace: 0).
    eventually(20, "the quota's status.used", || {
        let q = s.get_json(&["quota", "q"]);
        (q["status"]["used"]["pods"] == "0" && q["status"]["hard"]["pods"] == "10").then_some(())
    });
    let quota = s.ok(&["get", "quota", "q"]);
    assert!(quota.contains("limits.memory: 0/8Gi"), "{quota}");
    // Upstream's built-in classes are there.
    let pcs = s.ok(&["get", "pc"]);
    assert!(
        pcs.contains("system-cluster-critical") && pcs.contains("system-node-critical"),
        "{pcs}"
    );
    // Every bad field named in one 422.
    let err = s.fails_with_stdin(
        &["apply", "-f", "-"],
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: bad}\nspec: {minAvailable: 1, maxUnavailable: \"150%\"}\n",
    );
    assert!(
        err.contains("minAvailable and maxUnavailable cannot be both set")
            && err.contains("spec.maxUnavailable: Invalid value: \"150%\": must not be greater than 100%"),
        "{err}"
    );
    let err = s.fails_with_stdin(
        &["apply", "-f", "-"],
        "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: bad}\nspec: {scaleTargetRef: {kind: Deployment, name: x}, minReplicas: 4, maxReplicas: 2}\n",
    );
    assert!(err.contains("spec.maxReplicas"), "{err}");
}
