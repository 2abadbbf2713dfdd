//! Controllers never act on a half-loaded cache (upstream `cache.WaitForCacheSync`) and confirm what a
//! cache says is gone with a live read before deleting or releasing (upstream `isDangling`, the PV
//! controller's claim re-read).
//!
//! Deterministic, in process, no root: the real registry on a temp store, the real controller set, and a
//! kube-rs client whose LISTs of StatefulSets and PersistentVolumeClaims are held back until the test lets
//! them through, as a cold start with many stored claims holds them back in real life. While they are
//! held nothing may be deleted, released or created; once they arrive, exactly what upstream would do
//! happens: the truly orphaned pod is collected, the volume whose claim is truly gone is released, and
//! the set's pods, claims and volumes are untouched.

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::time::Duration;
use tower::ServiceExt;

/// The real API server in process on a temp store.
async fn api_server(dir: &std::path::Path) -> axum::Router {
    let store = store::Store::open_embedded(&dir.join("store"), store::Options::default()).expect("store");
    let registry = apiserver::registry::Registry::new(
        store,
        apiserver::registry::RegistryConfig {
            graceful_pod_deletion: false,
            ..Default::default()
        },
    );
    apiserver::bootstrap(&registry, 6443).await.expect("bootstrap");
    apiserver::http::router(apiserver::http::AppState {
        registry,
        server_address: "127.0.0.1:6443".into(),
        kubelet_token: "unused".into(),
        ca_pem: String::new(),
        server_bootstrap: None,
    })
}

/// A client whose LIST requests for collections ending in one of `held` wait until `gate` opens; gets by
/// name and watches go through.
fn held_client(
    router: axum::Router,
    held: &'static [&'static str],
    gate: tokio::sync::watch::Receiver<bool>,
) -> kube::Client {
    holding_client(router, held, false, gate)
}

/// Like [`held_client`], holding back the WATCH requests (`watches`) instead of the LIST requests.
fn holding_client(
    router: axum::Router,
    held: &'static [&'static str],
    watches: bool,
    gate: tokio::sync::watch::Receiver<bool>,
) -> kube::Client {
    let inner = apiserver::server::in_process::<kube::client::Body>(router);
    let svc = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let inner = inner.clone();
        let mut gate = gate.clone();
        async move {
            let path = req.uri().path().to_string();
            let watch = req.uri().query().unwrap_or("").contains("watch=true");
            if req.method() == http::Method::GET && watch == watches && held.iter().any(|h| path.ends_with(h))
            {
                let _ = gate.wait_for(|open| *open).await;
            }
            inner.oneshot(req).await
        }
    });
    kube::Client::new(svc, "default")
}

async fn create<K>(api: &Api<K>, v: Value) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(v).expect("object");
    api.create(&PostParams::default(), &obj).await.expect("create")
}

fn uid<K: kube::Resource>(o: &K) -> String {
    o.meta().uid.clone().expect("uid")
}

fn owner(kind: &str, api_version: &str, name: &str, uid: &str) -> Value {
    json!([{"apiVersion": api_version, "kind": kind, "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": true}])
}

async fn phase_of(api: &Api<PersistentVolume>, name: &str) -> String {
    let pv = api.get(name).await.expect("pv");
    pv.status.and_then(|s| s.phase).unwrap_or_default()
}

#[tokio::test]
async fn nothing_is_deleted_or_released_until_every_cache_has_listed_then_exactly_the_dangling_objects_are() {
    let dir = tempfile::tempdir().expect("dir");
    let router = api_server(dir.path()).await;
    let direct = kube::Client::new(
        apiserver::server::in_process::<kube::client::Body>(router.clone()),
        "default",
    );
    let sets: Api<StatefulSet> = Api::namespaced(direct.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(direct.clone(), "default");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(direct.clone(), "default");
    let volumes: Api<PersistentVolume> = Api::all(direct.clone());
    let revisions: Api<ControllerRevision> = Api::namespaced(direct.clone(), "default");

    // A set as a restart finds it: its pods, claims bound to volumes of a Delete class, its revision.
    let set: StatefulSet = create(
        &sets,
        json!({"metadata": {"name": "web"},
            "spec": {"replicas": 2, "serviceName": "web", "podManagementPolicy": "Parallel",
                "updateStrategy": {"type": "OnDelete"},
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "www"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "local-path",
                        "resources": {"requests": {"storage": "1Gi"}}}}]}}),
    )
    .await;
    let set_owner = owner("StatefulSet", "apps/v1", "web", &uid(&set));
    create(
        &revisions,
        json!({"metadata": {"name": "web-rev", "labels": {"app": "web"}, "ownerReferences": set_owner},
            "revision": 1, "data": {}}),
    )
    .await;
    let mut pod_uids = Vec::new();
    for i in 0..2 {
        let p: Pod = create(
            &pods,
            json!({"metadata": {"name": format!("web-{i}"), "labels": {"app": "web"}, "ownerReferences": set_owner},
                "spec": {"containers": [{"name": "c", "image": "busybox"}],
                    "volumes": [{"name": "www", "persistentVolumeClaim": {"claimName": format!("www-web-{i}")}}]}}),
        )
        .await;
        pod_uids.push(uid(&p));
    }
    // Claims bound to volumes; plus one volume whose claim is truly gone.
    for (claim, pv) in [
        ("www-web-0", "pv-0"),
        ("www-web-1", "pv-1"),
        ("gone", "pv-dangling"),
    ] {
        let claim_uid = if claim == "gone" {
            "00000000-0000-0000-0000-00000000dead".to_string()
        } else {
            let c: PersistentVolumeClaim = create(
                &claims,
                json!({"metadata": {"name": claim, "labels": {"app": "web"}},
                    "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "local-path", "volumeName": pv,
                        "resources": {"requests": {"storage": "1Gi"}}}}),
            )
            .await;
            claims
                .patch_status(
                    claim,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"phase": "Bound", "capacity": {"storage": "1Gi"}}})),
                )
                .await
                .expect("claim status");
            uid(&c)
        };
        create(
            &volumes,
            json!({"metadata": {"name": pv, "annotations": {"pv.kubernetes.io/provisioned-by": "berth.dev/local-path"}},
                "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "local-path",
                    "hostPath": {"path": format!("/nonexistent/{pv}")},
                    "claimRef": {"kind": "PersistentVolumeClaim", "namespace": "default", "name": claim, "uid": claim_uid}}}),
        )
        .await;
        volumes
            .patch_status(
                pv,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": "Bound"}})),
            )
            .await
            .expect("pv status");
    }
    // And a pod whose owner is truly gone.
    create::<Pod>(
        &pods,
        json!({"metadata": {"name": "orphan",
                "ownerReferences": owner("ReplicaSet", "apps/v1", "gone", "00000000-0000-0000-0000-0000000000aa")},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
    )
    .await;

    // The controller set starts on a client whose StatefulSet and claim lists are held back.
    let (open, gate) = tokio::sync::watch::channel(false);
    let held = held_client(router, &["/statefulsets", "/persistentvolumeclaims"], gate);
    let tasks = controllers::spawn_all(&held, "10.42.0.0/16");

    let world = |pods: Api<Pod>, volumes: Api<PersistentVolume>, revisions: Api<ControllerRevision>| async move {
        let mut p: Vec<String> = pods
            .list(&ListParams::default())
            .await
            .expect("pods")
            .items
            .iter()
            .map(|p| format!("{}={}", p.metadata.name.clone().unwrap_or_default(), uid(p)))
            .collect();
        p.sort();
        let mut v = Vec::new();
        for name in ["pv-0", "pv-1", "pv-dangling"] {
            v.push(format!("{name}:{}", phase_of(&volumes, name).await));
        }
        let r = revisions
            .list(&ListParams::default())
            .await
            .expect("revisions")
            .items
            .len();
        (p, v, r)
    };
    let before = world(pods.clone(), volumes.clone(), revisions.clone()).await;
    // Every other cache (pods, volumes, nodes, classes, …) loads now; a controller that planned on them
    // would collect web-0/web-1 (owner missing) and release pv-0/pv-1 (claim missing) within a second.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = world(pods.clone(), volumes.clone(), revisions.clone()).await;
    assert_eq!(
        before, during,
        "nothing deleted, released or created while two caches were still listing"
    );
    assert!(during.0.iter().any(|p| p.starts_with("orphan=")));

    // The lists arrive: upstream collects the orphan and releases the dangling volume, nothing else.
    open.send(true).expect("open");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (p, v, _) = world(pods.clone(), volumes.clone(), revisions.clone()).await;
        if !p.iter().any(|p| p.starts_with("orphan=")) && v.contains(&"pv-dangling:Released".to_string()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "orphan not collected or volume not released: {p:?} {v:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Give the controllers a little longer to do anything they should not.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (p, v, _) = world(pods.clone(), volumes.clone(), revisions.clone()).await;
    let want: Vec<String> = (0..2).map(|i| format!("web-{i}={}", pod_uids[i])).collect();
    assert_eq!(p, want, "the set's pods kept, with their uids");
    assert_eq!(v, ["pv-0:Bound", "pv-1:Bound", "pv-dangling:Released"]);
    for c in ["www-web-0", "www-web-1"] {
        assert!(claims.get(c).await.is_ok(), "claim {c} kept");
    }
    drop(tasks);
}

#[tokio::test]
async fn one_lease_holder_at_a_time_a_restarted_holder_takes_its_lease_back_at_once_another_waits_for_expiry()
{
    use controller_runtime::leader::{Config, Elector};
    use k8s_openapi::api::coordination::v1::Lease;
    let dir = tempfile::tempdir().expect("dir");
    let router = api_server(dir.path()).await;
    let client = kube::Client::new(
        apiserver::server::in_process::<kube::client::Body>(router),
        "default",
    );
    let leases: Api<Lease> = Api::namespaced(client, "kube-system");
    let cfg = |id: &str| Config {
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1500),
        retry_period: Duration::from_millis(200),
        ..Config::new("kube-system", "berth-controllers", id)
    };
    let (a, b) = (cfg("server-a"), cfg("server-b"));
    let mut ea = Elector::default();
    let mut eb = Elector::default();
    assert!(
        ea.try_acquire_or_renew(&leases, &a).await.expect("a"),
        "first candidate takes a free lease at once"
    );
    assert!(
        !eb.try_acquire_or_renew(&leases, &b).await.expect("b"),
        "second candidate waits"
    );
    assert!(ea.try_acquire_or_renew(&leases, &a).await.expect("a renews"));
    // A restarted holder (same identity, fresh elector) takes its own lease back at once.
    let mut ea2 = Elector::default();
    assert!(ea2.try_acquire_or_renew(&leases, &a).await.expect("a again"));
    // The holder stops renewing: the other candidate takes over only once it has seen the record unchanged
    // for the lease duration.
    assert!(!eb.try_acquire_or_renew(&leases, &b).await.expect("b"));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        !eb.try_acquire_or_renew(&leases, &b).await.expect("b"),
        "not yet expired"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        eb.try_acquire_or_renew(&leases, &b).await.expect("b"),
        "expired: taken over"
    );
    let l = leases.get("berth-controllers").await.expect("lease");
    let spec = l.spec.expect("spec");
    assert_eq!(spec.holder_identity.as_deref(), Some("server-b"));
    assert_eq!(spec.lease_transitions, Some(1));
    assert!(
        !ea2.try_acquire_or_renew(&leases, &a).await.expect("a"),
        "the old holder has lost it"
    );
}

#[tokio::test]
async fn a_candidate_takes_over_early_only_when_the_holders_address_refuses_connections() {
    use controller_runtime::leader::{Config, Elector, HOLDER_ADDRESS};
    use k8s_openapi::api::coordination::v1::Lease;
    let dir = tempfile::tempdir().expect("dir");
    let router = api_server(dir.path()).await;
    let client = kube::Client::new(
        apiserver::server::in_process::<kube::client::Body>(router),
        "default",
    );
    let leases: Api<Lease> = Api::namespaced(client, "kube-system");
    // The holder's "API address": a loopback listener this test owns, closed below to play the holder's
    // death (nothing listens there any more: the connect is refused).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("addr").to_string();
    let cfg = |id: &str, address: Option<String>| Config {
        lease_duration: Duration::from_secs(30),
        renew_deadline: Duration::from_secs(20),
        retry_period: Duration::from_millis(200),
        address,
        ..Config::new("kube-system", "berth-controllers", id)
    };
    let a = cfg("server-a", Some(address.clone()));
    let b = cfg("server-b", Some("127.0.0.1:1".into()));
    let (mut ea, mut eb) = (Elector::default(), Elector::default());
    assert!(ea.try_acquire_or_renew(&leases, &a).await.expect("a"));
    let l = leases.get("berth-controllers").await.expect("lease");
    assert_eq!(
        l.metadata.annotations.unwrap_or_default().get(HOLDER_ADDRESS),
        Some(&address),
        "the holder publishes its address"
    );
    // The holder stops renewing but still listens: no early takeover, however long the record is unchanged
    // (within the lease duration).
    assert!(!eb.try_acquire_or_renew(&leases, &b).await.expect("b"));
    tokio::time::sleep(a.dead_after() + Duration::from_millis(200)).await;
    assert!(
        !eb.try_acquire_or_renew(&leases, &b).await.expect("b"),
        "a holder whose address answers keeps its lease until it expires"
    );
    // Renewals reset the clock: with the listener gone but the record changing, no takeover either.
    drop(listener);
    assert!(ea.try_acquire_or_renew(&leases, &a).await.expect("a renews"));
    assert!(
        !eb.try_acquire_or_renew(&leases, &b).await.expect("b"),
        "a renewing holder is not taken over, whatever its address answers"
    );
    // No renewal for two retry periods and nothing listening: taken at once, long before 30 s.
    tokio::time::sleep(a.dead_after() + Duration::from_millis(200)).await;
    assert!(
        eb.try_acquire_or_renew(&leases, &b).await.expect("b"),
        "a dead holder's lease is taken early"
    );
    let l = leases.get("berth-controllers").await.expect("lease");
    assert_eq!(
        l.spec.as_ref().and_then(|s| s.holder_identity.as_deref()),
        Some("server-b")
    );
    assert_eq!(
        l.metadata
            .annotations
            .unwrap_or_default()
            .get(HOLDER_ADDRESS)
            .map(String::as_str),
        Some("127.0.0.1:1"),
        "the new holder's address replaces the old one"
    );
    // Had the old holder been alive after all, its next renewal loses the compare-and-swap.
    assert!(!ea.try_acquire_or_renew(&leases, &a).await.expect("a"));
}

#[tokio::test]
async fn a_lagging_cache_never_collects_or_releases_what_a_live_read_still_finds() {
    let dir = tempfile::tempdir().expect("dir");
    let router = api_server(dir.path()).await;
    let direct = kube::Client::new(
        apiserver::server::in_process::<kube::client::Body>(router.clone()),
        "default",
    );
    // Every cache lists at once, but the StatefulSet and claim caches never hear of a change afterwards:
    // their watches are held (a lagging cache, as under load or across a slow relist).
    let (_open, gate) = tokio::sync::watch::channel(false);
    let lagging = holding_client(router, &["/statefulsets", "/persistentvolumeclaims"], true, gate);
    let tasks = controllers::spawn_all(&lagging, "10.42.0.0/16");
    tokio::time::sleep(Duration::from_secs(1)).await;

    let sets: Api<StatefulSet> = Api::namespaced(direct.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(direct.clone(), "default");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(direct.clone(), "default");
    let volumes: Api<PersistentVolume> = Api::all(direct.clone());
    // A set and its pod created now: the collector's pod cache sees the pod, its set cache never sees the
    // set, so the pod's owner looks gone.
    let set: StatefulSet = create(
        &sets,
        json!({"metadata": {"name": "late"},
            "spec": {"replicas": 1, "serviceName": "late", "updateStrategy": {"type": "OnDelete"},
                "selector": {"matchLabels": {"app": "late"}},
                "template": {"metadata": {"labels": {"app": "late"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}),
    )
    .await;
    let pod: Pod = create(
        &pods,
        json!({"metadata": {"name": "late-0", "labels": {"app": "late"},
                "ownerReferences": owner("StatefulSet", "apps/v1", "late", &uid(&set))},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
    )
    .await;
    // A claim and its bound volume created now: the volume cache sees the volume, the claim cache never
    // sees the claim, so the volume's claim looks gone.
    let claim: PersistentVolumeClaim = create(
        &claims,
        json!({"metadata": {"name": "late-claim"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "local-path", "volumeName": "pv-late",
                "resources": {"requests": {"storage": "1Gi"}}}}),
    )
    .await;
    create::<PersistentVolume>(
        &volumes,
        json!({"metadata": {"name": "pv-late"},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "local-path",
                "hostPath": {"path": "/nonexistent/pv-late"},
                "claimRef": {"kind": "PersistentVolumeClaim", "namespace": "default", "name": "late-claim", "uid": uid(&claim)}}}),
    )
    .await;
    volumes
        .patch_status(
            "pv-late",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Bound"}})),
        )
        .await
        .expect("pv status");

    // Several passes of every controller (5 s resync) later, the live reads have kept both.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let still = pods
        .get("late-0")
        .await
        .expect("pod kept: its owner exists when read live");
    assert_eq!(uid(&still), uid(&pod));
    assert_eq!(
        phase_of(&volumes, "pv-late").await,
        "Bound",
        "volume kept Bound: its claim exists when read live"
    );
    drop(tasks);
}
