//! A restart storm loses nothing (issue 13): a 40-replica Parallel StatefulSet with one claim each on the
//! seed's `storage-local` class (reclaimPolicy Delete), a file written into every claim, 3,000 other
//! claims stored beside it (what makes the claims list slower than the volumes list at a cold start),
//! then 20 restarts of the real `berth server` alternating SIGTERM and kill -9 at random moments, one
//! during a rolling update and one during a scale-down. Afterwards every pod that was Ready keeps its uid
//! unless the rollout replaced it, every PersistentVolume is still Bound and every file is still there.
//! Runs real containers, so it needs root and busybox like `pods.rs`.

mod common;

use common::{Server, eventually};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

const REPLICAS: usize = 40;
const OTHER_CLAIMS: usize = 3000;

const SET: &str = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: data
spec:
  serviceName: data
  replicas: 40
  podManagementPolicy: Parallel
  # Ten at a time (upstream's MaxUnavailableStatefulSet), so the rollout fits the test's time.
  updateStrategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: 10}}
  selector: {matchLabels: {app: data}}
  template:
    metadata: {labels: {app: data}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: busybox:test
        env: [{name: ROUND, value: "1"}]
        command: ["/bin/sh", "-c", "[ -f /data/id ] || hostname > /data/id; trap 'exit 0' TERM; while true; do sleep 1; done"]
        readinessProbe:
          exec: {command: ["cat", "/data/id"]}
          periodSeconds: 2
        volumeMounts: [{name: www, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: www}
    spec:
      accessModes: [ReadWriteOnce]
      storageClassName: storage-local
      resources: {requests: {storage: 8Mi}}
"#;

/// A small deterministic generator for the moments of the restarts (seeded and printed, so a failing
/// run can be replayed).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn other_claims() -> String {
    let items: Vec<Value> = (0..OTHER_CLAIMS)
        .map(|i| {
            serde_json::json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": format!("pending-{i}")},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "storage-local",
                    "resources": {"requests": {"storage": "1Mi"}}}})
        })
        .collect();
    serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string()
}

/// Pod name → (uid, controller-revision-hash) of every Ready pod of the set.
fn ready_pods(s: &Server) -> BTreeMap<String, (String, String)> {
    let pods = s.get_json(&["pods", "-l", "app=data"]);
    pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
                && p["metadata"]["deletionTimestamp"].is_null()
        })
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap_or("").to_string(),
                (
                    p["metadata"]["uid"].as_str().unwrap_or("").to_string(),
                    p["metadata"]["labels"]["controller-revision-hash"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                ),
            )
        })
        .collect()
}

/// Claim name → (volume name, its phase, its directory) for the set's claims.
fn volumes(s: &Server) -> BTreeMap<String, (String, String, PathBuf)> {
    let pvs = s.get_json(&["pv"]);
    pvs["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| {
            let claim = v["spec"]["claimRef"]["name"].as_str()?;
            claim.starts_with("www-data-").then(|| {
                (
                    claim.to_string(),
                    (
                        v["metadata"]["name"].as_str().unwrap_or("").to_string(),
                        v["status"]["phase"].as_str().unwrap_or("").to_string(),
                        PathBuf::from(v["spec"]["hostPath"]["path"].as_str().unwrap_or("")),
                    ),
                )
            })
        })
        .collect()
}

#[test]
fn twenty_restarts_at_random_moments_lose_no_pod_volume_or_file() {
    if !common::can_run_containers() {
        return;
    }
    let mut s = common::server_with_busybox("storm");
    s.apply(&std::fs::read_to_string(common::seed("seed-storage-local.yaml")).expect("class"));
    // A `kind: List`: kubectl validates it through OpenAPI v2 (`/openapi/v2`).
    let out = s.with_stdin(&["create", "-f", "-"], &other_claims());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    s.apply(SET);
    eventually(240, "40 pods Ready", || {
        (ready_pods(&s).len() == REPLICAS).then_some(())
    });
    let before = ready_pods(&s);
    // A volume's own phase follows its claim's binding in a later pass of the binder (as upstream's PV
    // controller syncs the volume after the claim), so a pod may be Ready a moment before it says Bound.
    eventually(60, "40 volumes Bound", || {
        let v = volumes(&s);
        (v.len() == REPLICAS && v.values().all(|(_, phase, _)| phase == "Bound")).then_some(())
    });
    let vols = volumes(&s);
    assert_eq!(vols.len(), REPLICAS);
    for (claim, (_, phase, dir)) in &vols {
        assert_eq!(phase, "Bound", "{claim}");
        let ordinal = claim.trim_start_matches("www-data-");
        let id = std::fs::read_to_string(dir.join("id")).unwrap_or_default();
        assert_eq!(id.trim(), format!("data-{ordinal}"), "{claim}'s file");
    }

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    eprintln!("restart storm seed {seed}");
    let mut rng = XorShift(seed);
    for round in 0..20 {
        match round {
            5 => {
                // A rolling update: pods replaced one at a time, highest ordinal first.
                s.ok(&["set", "env", "statefulset/data", "ROUND=2"]);
            }
            12 => {
                // A scale-down: the highest ordinals go, their claims stay (whenScaled: Retain).
                s.ok(&["scale", "statefulset/data", "--replicas=36"]);
            }
            _ => {}
        }
        let pause = Duration::from_millis(200 + rng.next() % 2800);
        std::thread::sleep(pause);
        if round % 2 == 0 {
            s.restart_graceful();
        } else {
            s.restart();
        }
    }

    // Converged: 36 Ready pods on the new revision.
    let after = eventually(420, "36 pods Ready on the updated revision", || {
        let set = s.get_json(&["statefulset", "data"]);
        let st = &set["status"];
        let done = st["readyReplicas"] == 36
            && st["updatedReplicas"] == 36
            && st["currentRevision"] == st["updateRevision"];
        let pods = ready_pods(&s);
        (done && pods.len() == 36).then_some(pods)
    });
    let update_revision = s.get_json(&["statefulset", "data"])["status"]["updateRevision"]
        .as_str()
        .unwrap_or("")
        .to_string();
    for (name, (uid, rev)) in &after {
        let (old_uid, old_rev) = &before[name];
        assert!(
            uid == old_uid || (rev == &update_revision && rev != old_rev),
            "{name} was replaced ({old_uid} → {uid}) though the rollout did not ask for it"
        );
    }
    let vols_after = volumes(&s);
    assert_eq!(vols_after.len(), REPLICAS, "no volume lost: {vols_after:?}");
    for (claim, (name, phase, dir)) in &vols_after {
        assert_eq!((name, phase), (&vols[claim].0, &"Bound".to_string()), "{claim}");
        let ordinal = claim.trim_start_matches("www-data-");
        let id = std::fs::read_to_string(dir.join("id")).unwrap_or_default();
        assert_eq!(
            id.trim(),
            format!("data-{ordinal}"),
            "{claim}'s file after the storm"
        );
    }
    assert!(
        !s.log().contains("released volume deleted"),
        "a volume was released and deleted during the storm"
    );
    let replaced = after.iter().filter(|(n, (uid, _))| before[*n].0 != **uid).count();
    eprintln!(
        "restart storm totals: 20 restarts survived (10 SIGTERM, 10 kill -9); {} of {REPLICAS} volumes Bound, \
         {} of {REPLICAS} files intact; {replaced} pods replaced, all by the rollout; 0 objects or files lost",
        vols_after.values().filter(|v| v.1 == "Bound").count(),
        vols_after
            .iter()
            .filter(|(c, v)| std::fs::read_to_string(v.2.join("id"))
                .is_ok_and(|id| id.trim() == format!("data-{}", c.trim_start_matches("www-data-"))))
            .count(),
    );
    // Pods outlive the server: delete them through the API before it stops.
    s.ok(&["delete", "statefulset", "data", "--wait=false"]);
    s.wait_pods_gone(120);
}
