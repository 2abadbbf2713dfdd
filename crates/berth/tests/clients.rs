//! Other clients than kubectl drive the same server: kube-rs (list, watch, create, delete, patch) and the
//! Python `kubernetes` client (kubectl-compat.md §8).

mod common;

use common::Server;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_lists_watches_creates_patches_and_deletes() {
    let s = tokio::task::spawn_blocking(Server::start).await.expect("server");
    let kubeconfig = kube::config::Kubeconfig::read_from(s.kubeconfig()).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    let client = kube::Client::try_from(config).expect("client");
    let version = client.apiserver_version().await.expect("version");
    assert_eq!(version.minor, "32");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let mut events = watcher(cms.clone(), watcher::Config::default())
        .applied_objects()
        .boxed();
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("from-kube-rs".into());
    cm.data = Some([("a".to_string(), "b".to_string())].into());
    let created = cms.create(&PostParams::default(), &cm).await.expect("create");
    assert!(created.metadata.uid.is_some() && created.metadata.resource_version.is_some());
    let seen = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Some(ev) = events.try_next().await.expect("watch") {
            if ev.metadata.name.as_deref() == Some("from-kube-rs") {
                return ev;
            }
        }
        panic!("watch ended")
    })
    .await
    .expect("watch event in time");
    assert_eq!(
        seen.data.as_ref().and_then(|d| d.get("a")).map(String::as_str),
        Some("b")
    );
    let patch = serde_json::json!({"data": {"c": "d"}});
    let patched = cms
        .patch("from-kube-rs", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch");
    assert_eq!(
        patched.data.as_ref().and_then(|d| d.get("c")).map(String::as_str),
        Some("d")
    );
    let applied = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied-rs"}, "data": {"x": "y"}});
    cms.patch(
        "applied-rs",
        &PatchParams::apply("rs").force(),
        &Patch::Apply(&applied),
    )
    .await
    .expect("server-side apply creates");
    let list = cms.list(&ListParams::default()).await.expect("list");
    assert!(
        list.items
            .iter()
            .any(|c| c.metadata.name.as_deref() == Some("applied-rs"))
    );
    // Metadata-only requests (`as=PartialObjectMetadata[List]`), as metadata informers make them.
    let metas: Api<kube::core::PartialObjectMeta<ConfigMap>> = Api::namespaced(client.clone(), "default");
    let list = metas.list(&ListParams::default()).await.expect("metadata list");
    let item = list
        .items
        .iter()
        .find(|m| m.metadata.name.as_deref() == Some("applied-rs"))
        .expect("listed");
    assert_eq!(
        item.types.as_ref().map(|t| t.kind.as_str()),
        Some("PartialObjectMetadata")
    );
    let one = metas.get("applied-rs").await.expect("metadata get");
    assert!(one.metadata.uid.is_some());
    let mut meta_events = watcher(metas, watcher::Config::default())
        .applied_objects()
        .boxed();
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), meta_events.try_next())
        .await
        .expect("metadata watch in time")
        .expect("metadata watch")
        .expect("an object");
    assert!(first.metadata.resource_version.is_some());
    cms.delete("from-kube-rs", &DeleteParams::default())
        .await
        .expect("delete");
    let err = cms.get("from-kube-rs").await.expect_err("gone");
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 404), "{err:?}");
    let mut bad = ConfigMap::default();
    bad.metadata.name = Some("applied-rs".into());
    let err = cms
        .create(&PostParams::default(), &bad)
        .await
        .expect_err("exists");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409 && s.reason == "AlreadyExists"),
        "{err:?}"
    );
    drop(s);
}

/// Opt-in tier: needs `pip install kubernetes` (scripts/test installs it and sets BERTH_TEST_PYTHON=1).
#[test]
fn python_client_lists_watches_creates_and_deletes() {
    if std::env::var_os("BERTH_TEST_PYTHON").is_none() {
        eprintln!("skipped: set BERTH_TEST_PYTHON=1 with the Python `kubernetes` package installed");
        return;
    }
    let s = Server::start();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python_client.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .env("KUBECONFIG", s.kubeconfig())
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python client failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("python client ok"));
}

/// Issue 15 item 16: the Python client's `stream()` exec with stdin, on the v4 channel protocol (no
/// close frame: the client's `str` input arrives as WebSocket text frames) and on v5. Needs the Python
/// tier and real containers.
#[test]
fn python_client_exec_with_stdin_answers_each_line_and_eof_ends_the_input() {
    if std::env::var_os("BERTH_TEST_PYTHON").is_none() {
        eprintln!("skipped: set BERTH_TEST_PYTHON=1 with the Python `kubernetes` package installed");
        return;
    }
    if !common::can_run_containers() {
        return;
    }
    let s = common::server_with_busybox("py-exec");
    s.apply(
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"shell"},"spec":{"terminationGracePeriodSeconds":1,
        "containers":[{"name":"c","image":"busybox:test","command":["sleep","3600"]}]}}"#,
    );
    common::eventually(60, "shell running", || {
        let p = s.get_json(&["pod", "shell"]);
        (p["status"]["phase"] == "Running").then_some(())
    });
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python_exec_stdin.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .env("KUBECONFIG", s.kubeconfig())
        .output()
        .expect("python3");
    s.kubectl(&["delete", "pod", "shell", "--wait=true"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("python exec stdin ok"),
        "python exec stream failed:\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
