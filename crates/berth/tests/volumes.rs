//! Storage with the real agent (issue "Node agent", item 4 "Volumes", and the storage parts of the
//! StatefulSet issue): claims are provisioned on the node their pod is scheduled to and bound before the
//! pod is, a new ordinal's claim is a copy of the previous one's, raised requests expand every claim,
//! Retain keeps data on scale-down and Delete removes it with the claim. Runs real containers, so it
//! needs root and busybox like `pods.rs`.

mod common;

use common::{Server, eventually};
use serde_json::Value;
use std::path::PathBuf;

const WEB: &str = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
  annotations:
    berth.dev/clone-previous-ordinal: "true"
    berth.dev/expand-volume-claims: "true"
spec:
  serviceName: nginx
  replicas: 2
  selector: {matchLabels: {app: nginx}}
  template:
    metadata: {labels: {app: nginx}}
    spec:
      terminationGracePeriodSeconds: 2
      initContainers:
      - name: seed
        image: busybox:test
        command: ["/bin/sh", "-c", "[ -f /www/index.html ] || echo \"first written by $(hostname)\" > /www/index.html"]
        volumeMounts: [{name: www, mountPath: /www}]
      containers:
      - name: web
        image: busybox:test
        command: ["/bin/sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
        volumeMounts: [{name: www, mountPath: /usr/share/nginx/html}]
  volumeClaimTemplates:
  - metadata: {name: www}
    spec:
      accessModes: [ReadWriteOnce]
      storageClassName: storage-local
      resources: {requests: {storage: 200Mi}}
"#;

fn claim(s: &Server, name: &str) -> Option<Value> {
    let out = s.kubectl(&["get", "pvc", name, "-o", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).expect("json"))
}

/// The directory of a bound claim's volume.
fn volume_dir(s: &Server, claim_name: &str) -> PathBuf {
    let c = claim(s, claim_name).expect("claim");
    let pv = s.get_json(&["pv", c["spec"]["volumeName"].as_str().expect("bound")]);
    PathBuf::from(pv["spec"]["hostPath"]["path"].as_str().expect("hostPath"))
}

fn bound(s: &Server, name: &str) -> Option<Value> {
    claim(s, name).filter(|c| c["status"]["phase"] == "Bound")
}

#[test]
fn claims_are_provisioned_bound_cloned_expanded_and_released_on_the_agents_node() {
    if !common::can_run_containers() {
        return;
    }
    let s = common::server_with_busybox("node-a");
    // The agent registered its node with a lease; the default StorageClass exists.
    eventually(20, "node Ready", || {
        let n = s.kubectl(&["get", "node", "node-a", "-o", "json"]);
        let n: Value = serde_json::from_slice(&n.stdout).ok()?;
        n["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
            .then_some(())
    });
    s.ok(&["get", "lease", "node-a", "-n", "kube-node-lease"]);
    assert!(s.ok(&["get", "storageclass"]).contains("local-path (default)"));

    s.ok(&[
        "apply",
        "-f",
        &common::seed("seed-storage-local.yaml").to_string_lossy(),
    ]);
    s.apply(WEB);
    // WaitForFirstConsumer: the claim is provisioned on the node web-0 is scheduled to, then web-0 is bound.
    let c0 = eventually(30, "www-web-0 bound", || bound(&s, "www-web-0"));
    assert_eq!(
        c0["metadata"]["annotations"]["volume.kubernetes.io/selected-node"],
        "node-a"
    );
    let dir0 = volume_dir(&s, "www-web-0");
    assert!(
        dir0.starts_with(s.data_dir().join("volumes")),
        "{}",
        dir0.display()
    );
    // web-0's init container wrote its page before web-0 became Ready; web-1's claim is a copy of web-0's.
    let c1 = eventually(60, "www-web-1 bound", || bound(&s, "www-web-1"));
    assert_eq!(c1["spec"]["dataSource"]["name"], "www-web-0");
    let dir1 = volume_dir(&s, "www-web-1");
    assert_ne!(dir0, dir1);
    assert_eq!(
        std::fs::read_to_string(dir0.join("index.html")).expect("web-0 page"),
        "first written by web-0\n"
    );
    eventually(30, "web-1 running", || {
        let p = s.get_json(&["pod", "web-1"]);
        (p["status"]["phase"] == "Running").then_some(())
    });
    assert_eq!(
        std::fs::read_to_string(dir1.join("index.html")).expect("cloned page"),
        "first written by web-0\n",
        "the clone carried web-0's data, so web-1's init container kept it"
    );

    // The volume is a filesystem of the claim's size: writing past 200Mi fails with ENOSPC in the pod.
    let out = s.kubectl(&[
        "exec",
        "web-1",
        "--",
        "dd",
        "if=/dev/zero",
        "of=/usr/share/nginx/html/big",
        "bs=1048576",
        "count=300",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("No space left on device"), "{err}");
    s.ok(&["exec", "web-1", "--", "rm", "/usr/share/nginx/html/big"]);
    let size_kib = |pod: &str| -> u64 {
        let df = s.ok(&["exec", pod, "--", "df", "-k", "/usr/share/nginx/html"]);
        df.lines()
            .nth(1)
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .expect("df size")
    };
    assert!((150_000..210_000).contains(&size_kib("web-0")));

    // Raising the template's request expands both claims and their volumes.
    s.ok(&[
        "patch",
        "sts",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/volumeClaimTemplates/0/spec/resources/requests/storage","value":"1Gi"}]"#,
    ]);
    for c in ["www-web-0", "www-web-1"] {
        eventually(30, "claim capacity raised", || {
            (bound(&s, c)?["status"]["capacity"]["storage"] == "1Gi").then_some(())
        });
    }
    // The filesystem grows online where the kernel permits (CAP_SYS_RESOURCE), else when no container
    // holds it: a recreated web-0 has the whole 1Gi either way.
    s.ok(&["delete", "pod", "web-0"]);
    eventually(60, "web-0 back", || {
        let p = s.get_json(&["pod", "web-0"]);
        (p["status"]["phase"] == "Running").then_some(())
    });
    assert!(size_kib("web-0") > 900_000);

    // Scale to zero: the pods stop; claims and data stay (whenScaled: Retain).
    s.ok(&["scale", "sts", "web", "--replicas=0"]);
    s.wait_pods_gone(60);
    assert!(dir0.join("index.html").exists() && dir1.is_dir());

    // Deleting a claim releases its volume; reclaimPolicy Delete removes the data and the volume.
    let pv1 = c1["spec"]["volumeName"].as_str().expect("pv").to_string();
    s.ok(&["delete", "pvc", "www-web-1"]);
    eventually(30, "released volume deleted", || {
        (!s.kubectl(&["get", "pv", &pv1]).status.success() && !dir1.exists()).then_some(())
    });
    assert!(dir0.join("index.html").exists(), "other volumes untouched");

    // A claim of a class that does not exist stays Pending with an event.
    s.apply(
        r#"{"apiVersion":"v1","kind":"PersistentVolumeClaim","metadata":{"name":"lost"},
            "spec":{"storageClassName":"nope","accessModes":["ReadWriteOnce"],"resources":{"requests":{"storage":"1Mi"}}}}"#,
    );
    eventually(20, "ProvisioningFailed event", || {
        let ev = s.ok(&["get", "events", "--field-selector", "involvedObject.name=lost"]);
        ev.contains(r#"storageclass.storage.k8s.io "nope" not found"#)
            .then_some(())
    });
    assert_eq!(claim(&s, "lost").expect("claim")["status"]["phase"], "Pending");
    // DefaultStorageClass admission: a claim without a class gets the default one's name.
    s.apply(
        r#"{"apiVersion":"v1","kind":"PersistentVolumeClaim","metadata":{"name":"plain"},
            "spec":{"accessModes":["ReadWriteOnce"],"resources":{"requests":{"storage":"1Mi"}}}}"#,
    );
    assert_eq!(
        claim(&s, "plain").expect("claim")["spec"]["storageClassName"],
        "local-path"
    );
}
