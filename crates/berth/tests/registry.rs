//! Images not in the node's store are pulled from their registry (issue "Node agent", Images): a real
//! registry (Debian's `docker-registry`, the CNCF distribution server) on 127.0.0.1 with htpasswd
//! authentication; the busybox test image is pushed to it with oci-client, then pods pull it, with
//! `imagePullSecrets` credentials, and `imagePullPolicy` is honoured as upstream's image manager does.
//! Needs root and busybox like `pods.rs`, and `/usr/bin/docker-registry` (installed by `scripts/test`).

mod common;

use common::{Server, eventually};
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::secrets::RegistryAuth;
use serde_json::Value;
use sha2::Digest;
use std::io::Write;
use std::process::{Child, Command, Stdio};

/// bcrypt of "s3cret" (htpasswd's only accepted format), made with libxcrypt's `crypt`.
const HTPASSWD: &str = "puller:$2b$05$abcdefghijklmnopqrstuuLK7U1u6pVRmL7L1BBM2aS35PSZnDXlK\n";

struct Registry {
    child: Child,
    _dir: tempfile::TempDir,
    addr: String,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_registry() -> Option<Registry> {
    let bin = std::path::Path::new("/usr/bin/docker-registry");
    if !bin.exists() {
        assert!(
            std::env::var_os("BERTH_TEST_ROOT").is_none(),
            "BERTH_TEST_ROOT is set but /usr/bin/docker-registry (Debian docker-registry) is missing"
        );
        eprintln!("skipped: needs /usr/bin/docker-registry");
        return None;
    }
    let dir = tempfile::tempdir().expect("dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let addr = format!("127.0.0.1:{port}");
    std::fs::write(dir.path().join("htpasswd"), HTPASSWD).expect("htpasswd");
    let config = format!(
        "version: 0.1\nlog: {{level: warn}}\nstorage: {{filesystem: {{rootdirectory: {}}}}}\nhttp: {{addr: \"{addr}\"}}\nauth: {{htpasswd: {{realm: berth-test, path: {}}}}}\n",
        dir.path().join("storage").display(),
        dir.path().join("htpasswd").display()
    );
    std::fs::write(dir.path().join("config.yml"), config).expect("config");
    let child = Command::new(bin)
        .arg("serve")
        .arg(dir.path().join("config.yml"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("registry.log")).expect("log"))
        .spawn()
        .expect("docker-registry");
    let r = Registry {
        child,
        _dir: dir,
        addr,
    };
    eventually(20, "registry listening", || {
        std::net::TcpStream::connect(&r.addr).ok()
    });
    Some(r)
}

/// Push the busybox test image, gzip-compressed, as `<registry>/<repo>`.
fn push(registry: &str, repo: &str) {
    let (layer, _) = agent::image::busybox_layer().expect("busybox layer");
    let diff_id = format!("sha256:{:x}", sha2::Sha256::digest(&layer));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&layer).expect("gzip");
    let gz = gz.finish().expect("gzip");
    let config = serde_json::json!({"architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]}});
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let client = oci_client::Client::new(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(vec![registry.to_string()]),
            ..ClientConfig::default()
        });
        let reference: oci_client::Reference = format!("{registry}/{repo}").parse().expect("reference");
        let layers = [ImageLayer::new(
            gz,
            oci_client::manifest::IMAGE_LAYER_GZIP_MEDIA_TYPE.into(),
            None,
        )];
        let config = Config::new(
            serde_json::to_vec(&config).expect("config"),
            oci_client::manifest::IMAGE_CONFIG_MEDIA_TYPE.into(),
            None,
        );
        client
            .push(
                &reference,
                &layers,
                config,
                &RegistryAuth::Basic("puller".into(), "s3cret".into()),
                None,
            )
            .await
            .expect("push to the test registry");
    });
}

fn waiting_reason(s: &Server, pod: &str) -> Option<String> {
    let p: Value = s.get_json(&["pod", pod]);
    p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
        .as_str()
        .map(str::to_string)
}

#[test]
fn missing_images_are_pulled_from_a_registry_with_the_pods_pull_secret() {
    if !common::can_run_containers() {
        return;
    }
    let Some(reg) = start_registry() else { return };
    push(&reg.addr, "team/tool:1.0");
    let s = Server::start_with(&["--node-name", "puller"]);
    let image = format!("{}/team/tool:1.0", reg.addr);

    // Without credentials the registry answers 401: ErrImagePull, then ImagePullBackOff, with the reason.
    s.apply(&format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"anon"}},"spec":{{"containers":[{{"name":"c","image":"{image}","command":["sleep","3600"]}}]}}}}"#
    ));
    // (ErrImagePull is the reason for the sync that saw the failure; the next ones say ImagePullBackOff.)
    eventually(30, "ErrImagePull or ImagePullBackOff", || {
        matches!(
            waiting_reason(&s, "anon")?.as_str(),
            "ErrImagePull" | "ImagePullBackOff"
        )
        .then_some(())
    });
    let msg = s.get_json(&["pod", "anon"])["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(msg.contains(&image) && msg.contains("Not authorized"), "{msg}");
    eventually(30, "ImagePullBackOff", || {
        (waiting_reason(&s, "anon")? == "ImagePullBackOff").then_some(())
    });

    // imagePullPolicy Never with the image absent: ErrImageNeverPull, and nothing is pulled.
    s.apply(&format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"never"}},"spec":{{"containers":[{{"name":"c","image":"{image}","imagePullPolicy":"Never"}}]}}}}"#
    ));
    eventually(30, "ErrImageNeverPull", || {
        (waiting_reason(&s, "never")? == "ErrImageNeverPull").then_some(())
    });

    // With a kubernetes.io/dockerconfigjson Secret made by kubectl, the pull succeeds and the pod runs.
    s.ok(&[
        "create",
        "secret",
        "docker-registry",
        "regcred",
        &format!("--docker-server={}", reg.addr),
        "--docker-username=puller",
        "--docker-password=s3cret",
    ]);
    s.apply(&format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"pulled"}},"spec":{{"imagePullSecrets":[{{"name":"regcred"}}],
        "containers":[{{"name":"c","image":"{image}","command":["/bin/sh","-c","echo pulled and running; sleep 3600"]}}]}}}}"#
    ));
    eventually(60, "the pulled pod running", || {
        (s.get_json(&["pod", "pulled"])["status"]["phase"] == "Running").then_some(())
    });
    eventually(20, "its log", || {
        (s.ok(&["logs", "pulled"]) == "pulled and running\n").then_some(())
    });
    let st = &s.get_json(&["pod", "pulled"])["status"]["containerStatuses"][0];
    assert_eq!(st["image"], image.as_str());
    assert!(
        st["imageID"].as_str().is_some_and(|i| i.contains("sha256:")),
        "{st}"
    );

    // Now present in the node's store: an IfNotPresent pod without credentials uses it without pulling.
    let ls = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["image", "ls", "--data-dir"])
        .arg(s.data_dir())
        .output()
        .expect("image ls");
    assert!(String::from_utf8_lossy(&ls.stdout).contains(&image));
    s.apply(&format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"cached"}},"spec":{{"containers":[{{"name":"c","image":"{image}","imagePullPolicy":"IfNotPresent","command":["sleep","3600"]}}]}}}}"#
    ));
    eventually(30, "the cached pod running", || {
        (s.get_json(&["pod", "cached"])["status"]["phase"] == "Running").then_some(())
    });

    s.ok(&["delete", "pod", "--all", "--wait=false", "--grace-period=1"]);
    s.wait_pods_gone(30);
    common::kill_containers(s.data_dir());
}
