//! The node agent's volume side, the local-path provisioner and binder, and the scheduler, against the real
//! `berth server` with its agent on (issue "Node agent", item 4 "Volumes", and the storage parts of the
//! StatefulSet issue): claims are provisioned on the node their pod is scheduled to, bound before the pod is,
//! cloned from the previous ordinal and expanded on request, and their directories removed on release.
//! The test plays the container runtime (which is not built yet) by marking pods Ready through `pods/status`.

mod common;

use common::{Server, eventually, seed};
use serde_json::Value;
use std::path::PathBuf;

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
    let s = Server::start_with(&["--node-name", "node-a"]);
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
        &seed("seed-storage-local.yaml").to_string_lossy(),
        "-f",
        &seed("seed-web.yaml").to_string_lossy(),
    ]);
    s.ok(&[
        "annotate",
        "sts",
        "web",
        "berth.dev/clone-previous-ordinal=true",
        "berth.dev/expand-volume-claims=true",
    ]);
    // WaitForFirstConsumer: the claim is provisioned on the node web-0 is scheduled to, then web-0 is bound.
    let c0 = eventually(30, "www-web-0 bound", || bound(&s, "www-web-0"));
    assert_eq!(
        c0["metadata"]["annotations"]["volume.kubernetes.io/selected-node"],
        "node-a"
    );
    let pod = eventually(20, "web-0 scheduled", || {
        let p = s.get_json(&["pod", "web-0"]);
        (p["spec"]["nodeName"] == "node-a").then_some(p)
    });
    assert!(pod["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "PodScheduled" && c["status"] == "True")
    }));
    let dir0 = volume_dir(&s, "www-web-0");
    assert!(
        dir0.starts_with(s.data_dir().join("volumes")),
        "{}",
        dir0.display()
    );
    assert!(dir0.is_dir());
    std::fs::write(dir0.join("index.html"), "web-0 data\n").expect("write into web-0's volume");

    // web-1's claim is a clone of web-0's.
    s.mark_ready("web-0");
    let c1 = eventually(30, "www-web-1 bound", || bound(&s, "www-web-1"));
    assert_eq!(c1["spec"]["dataSource"]["name"], "www-web-0");
    let dir1 = volume_dir(&s, "www-web-1");
    assert_ne!(dir0, dir1);
    assert_eq!(
        std::fs::read_to_string(dir1.join("index.html")).expect("cloned file"),
        "web-0 data\n"
    );

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

    // Scale to zero: the agent finishes the graceful deletions; claims and data stay (Retain).
    s.ok(&["scale", "sts", "web", "--replicas=0"]);
    eventually(30, "pods gone", || {
        let out = s.ok(&["get", "pods", "-o", "name"]);
        out.trim().is_empty().then_some(())
    });
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
}
