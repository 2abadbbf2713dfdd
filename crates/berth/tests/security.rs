//! Pod Security admission and the node's own files, end to end (issue 14, items 4 and 4b): the real
//! `kubectl` against a real `berth server`, checking the very lines a Kubernetes cluster prints, and the
//! store file on disk for Secrets in clear.

mod common;

use common::{Server, berth, eventually, seed};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// What the restricted policy says about the seed's `web` pods (one container `nginx`, no security
/// context), exactly as upstream's PodSecurity admission words it.
const NGINX_RESTRICTED: &str = "allowPrivilegeEscalation != false (container \"nginx\" must set securityContext.allowPrivilegeEscalation=false), \
unrestricted capabilities (container \"nginx\" must set securityContext.capabilities.drop=[\"ALL\"]), \
runAsNonRoot != true (pod or container \"nginx\" must set securityContext.runAsNonRoot=true), \
seccompProfile (pod or container \"nginx\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")";

const COMPLIANT_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: hardened
spec:
  securityContext:
    runAsNonRoot: true
    runAsUser: 1000
    seccompProfile:
      type: RuntimeDefault
  containers:
  - name: app
    image: busybox
    command: ["sleep", "3600"]
    securityContext:
      allowPrivilegeEscalation: false
      capabilities:
        drop: ["ALL"]
"#;

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_restricted_namespace_refuses_the_seed_web_pods_and_admits_a_compliant_one() {
    let s = Server::start();
    s.ok(&["create", "namespace", "locked"]);
    s.ok(&[
        "label",
        "namespace",
        "locked",
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted",
    ]);
    let sc = seed("seed-storage-local.yaml").to_string_lossy().into_owned();
    s.ok(&["apply", "-f", &sc]);
    // The StatefulSet itself is admitted, with upstream's warning about its template.
    let web = std::fs::read_to_string(seed("seed-web.yaml")).expect("seed web");
    let out = s.with_stdin(&["apply", "-n", "locked", "-f", "-"], &web);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let warning = format!("Warning: would violate PodSecurity \"restricted:latest\": {NGINX_RESTRICTED}");
    assert!(
        stderr_of(&out).lines().any(|l| l == warning),
        "want the line\n{warning}\ngot\n{}",
        stderr_of(&out)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("statefulset.apps/web created"));
    // Its pods are refused: the controller's FailedCreate event carries the API server's message.
    let forbidden = format!(
        "pods \"web-0\" is forbidden: violates PodSecurity \"restricted:latest\": {NGINX_RESTRICTED}"
    );
    let event = eventually(30, "a FailedCreate event", || {
        let events = s.get_json(&["events", "-n", "locked"]);
        events["items"]
            .as_array()?
            .iter()
            .find(|e| e["reason"] == "FailedCreate")
            .and_then(|e| e["message"].as_str().map(str::to_string))
    });
    assert_eq!(
        event,
        format!("create Pod web-0 in StatefulSet web failed error: {forbidden}")
    );
    assert_eq!(s.ok(&["get", "pods", "-n", "locked", "-o", "name"]).trim(), "");
    // Scaling goes through the scale subresource, which PodSecurity does not look at.
    let out = s.kubectl(&["scale", "sts", "web", "-n", "locked", "--replicas=1"]);
    assert!(
        out.status.success() && !stderr_of(&out).contains("Warning"),
        "{}",
        stderr_of(&out)
    );
    // The same pod from kubectl gets the same 403.
    let err = s.fails(&[
        "run",
        "web-0",
        "-n",
        "locked",
        "--image=k8s.gcr.io/nginx-slim:0.8",
        "--overrides={\"spec\":{\"containers\":[{\"name\":\"nginx\",\"image\":\"k8s.gcr.io/nginx-slim:0.8\"}]}}",
    ]);
    assert!(
        err.contains(&format!("Error from server (Forbidden): {forbidden}")),
        "{err}"
    );
    // A compliant pod is admitted, without a warning.
    let out = s.with_stdin(&["apply", "-n", "locked", "-f", "-"], COMPLIANT_POD);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(!stderr_of(&out).contains("Warning"), "{}", stderr_of(&out));
    assert_eq!(
        s.ok(&["get", "pods", "-n", "locked", "-o", "name"]).trim(),
        "pod/hardened"
    );
    // Malformed labels are refused with upstream's field error.
    let err = s.fails(&[
        "label",
        "--overwrite",
        "namespace",
        "locked",
        "pod-security.kubernetes.io/enforce=strict",
    ]);
    assert!(
        err.contains("metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: \"strict\": must be one of privileged, baseline, restricted"),
        "{err}"
    );
    // A namespace created with a malformed level is refused too.
    let out = s.with_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: typo\n  labels:\n    pod-security.kubernetes.io/warn-version: \"1.30\"\n",
    );
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains("metadata.labels[pod-security.kubernetes.io/warn-version]: Invalid value: \"1.30\": must be \"latest\" or \"v1.x\""),
        "{}",
        stderr_of(&out)
    );
    s.ok(&["delete", "namespace", "locked", "--wait=false"]);
}

#[test]
fn warn_mode_prints_warnings_on_kubectl_run_and_tightening_enforce_names_existing_pods() {
    let s = Server::start();
    s.ok(&["create", "namespace", "warned"]);
    s.ok(&[
        "label",
        "namespace",
        "warned",
        "pod-security.kubernetes.io/warn=baseline",
        "pod-security.kubernetes.io/warn-version=v1.32",
    ]);
    // Baseline passes a plain pod; a privileged one is admitted with a warning.
    let out = s.kubectl(&["run", "plain", "-n", "warned", "--image=busybox"]);
    assert!(
        out.status.success() && !stderr_of(&out).contains("Warning"),
        "{}",
        stderr_of(&out)
    );
    let out = s.kubectl(&[
        "run",
        "root",
        "-n",
        "warned",
        "--image=busybox",
        "--overrides={\"spec\":{\"hostNetwork\":true,\"containers\":[{\"name\":\"root\",\"image\":\"busybox\",\"securityContext\":{\"privileged\":true}}]}}",
    ]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains(
            "Warning: would violate PodSecurity \"baseline:v1.32\": host namespaces (hostNetwork=true), privileged (container \"root\" must not set securityContext.privileged=true)"
        ),
        "{}",
        stderr_of(&out)
    );
    // Enforcing restricted now: allowed, with upstream's warnings about the pods already there.
    let out = s.kubectl(&[
        "label",
        "namespace",
        "warned",
        "pod-security.kubernetes.io/enforce=restricted",
    ]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(
        err.contains("Warning: existing pods in namespace \"warned\" violate the new PodSecurity enforce level \"restricted:latest\""),
        "{err}"
    );
    assert!(
        err.contains("Warning: plain: allowPrivilegeEscalation != false, unrestricted capabilities, runAsNonRoot != true, seccompProfile"),
        "{err}"
    );
    assert!(
        err.contains("Warning: root: host namespaces, privileged, allowPrivilegeEscalation != false, unrestricted capabilities, runAsNonRoot != true, seccompProfile"),
        "{err}"
    );
    s.ok(&["delete", "namespace", "warned", "--wait=false"]);
}

#[test]
fn the_server_default_applies_to_namespaces_without_labels() {
    let s = Server::start_with(&["--disable-agent", "--pod-security-default", "enforce=baseline"]);
    let err = s.fails(&[
        "run",
        "priv",
        "--image=busybox",
        "--overrides={\"spec\":{\"containers\":[{\"name\":\"priv\",\"image\":\"busybox\",\"securityContext\":{\"privileged\":true}}]}}",
    ]);
    assert!(
        err.contains("pods \"priv\" is forbidden: violates PodSecurity \"baseline:latest\": privileged (container \"priv\" must not set securityContext.privileged=true)"),
        "{err}"
    );
    s.ok(&["run", "plain", "--image=busybox"]);
    // A label still overrides the default.
    s.ok(&[
        "label",
        "namespace",
        "default",
        "pod-security.kubernetes.io/enforce=privileged",
    ]);
    s.ok(&[
        "run",
        "priv",
        "--image=busybox",
        "--overrides={\"spec\":{\"containers\":[{\"name\":\"priv\",\"image\":\"busybox\",\"securityContext\":{\"privileged\":true}}]}}",
    ]);
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
}

fn store_contains(data_dir: &Path, needle: &str) -> bool {
    let bytes = std::fs::read(data_dir.join("store")).expect("store file");
    bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn the_data_dir_is_private_and_secrets_are_encrypted_at_rest_across_a_key_rotation() {
    use base64::Engine;
    let s = Server::start_with(&["--disable-agent", "--secrets-encryption"]);
    let dir = s.data_dir().to_path_buf();
    assert_eq!(mode(&dir), 0o700, "data dir");
    assert_eq!(mode(&dir.join("store")), 0o600, "store file");
    let cfg = dir.join("server/cred/encryption-config.json");
    assert_eq!(mode(&cfg), 0o600, "encryption config");
    assert_eq!(mode(cfg.parent().expect("cred")), 0o700, "cred dir");
    let value = "hunter2-berth-at-rest-7f3a";
    let b64 = base64::engine::general_purpose::STANDARD.encode(value);
    s.ok(&[
        "create",
        "secret",
        "generic",
        "vault",
        &format!("--from-literal=password={value}"),
    ]);
    // The same value in a ConfigMap shows the grep finds clear text when there is some.
    s.ok(&[
        "create",
        "configmap",
        "plain",
        &format!("--from-literal=password={value}"),
    ]);
    assert!(store_contains(&dir, value), "the ConfigMap is stored in clear");
    s.ok(&["delete", "configmap", "plain"]);
    let readable = |s: &Server| s.ok(&["get", "secret", "vault", "-o", "jsonpath={.data.password}"]);
    assert_eq!(readable(&s), b64);
    let yaml = s.ok(&["get", "secret", "vault", "-o", "yaml"]);
    assert!(yaml.contains(&format!("password: {b64}")), "{yaml}");
    assert!(
        !store_contains(&dir, &b64),
        "the Secret's data is not in the store file"
    );
    assert!(
        store_contains(&dir, "k8s:enc:aescbc:v1:aescbckey:"),
        "stored with upstream's prefix"
    );

    let status = berth(&dir, &["secrets-encrypt", "status"]);
    assert!(status.contains("Encryption Status: Enabled"), "{status}");
    assert!(status.contains("Current Write Key: aescbc:aescbckey"), "{status}");
    let rotated = berth(&dir, &["secrets-encrypt", "rotate"]);
    assert!(
        !rotated.contains("aescbckey"),
        "the old key is dropped: {rotated}"
    );
    assert!(
        rotated.contains("(0 not written with the current key)"),
        "{rotated}"
    );
    assert_eq!(readable(&s), b64, "readable after rotation");
    // disable writes the Secrets in clear (the grep sees them), enable encrypts them again.
    let off = berth(&dir, &["secrets-encrypt", "disable"]);
    assert!(off.contains("Encryption Status: Disabled"), "{off}");
    assert!(store_contains(&dir, &b64), "in clear after disable");
    assert_eq!(readable(&s), b64);
    let on = berth(&dir, &["secrets-encrypt", "enable"]);
    assert!(
        on.contains("Encryption Status: Enabled") && on.contains("(0 not written with the current key)"),
        "{on}"
    );
    assert_eq!(readable(&s), b64);
    let config = std::fs::read_to_string(&cfg).expect("config");
    assert!(!config.contains("\"aescbckey\""), "{config}");
    assert!(config.contains("\"identity\""), "{config}");
    // A restart reads the rotated key from the file, and tightens a data dir and store file that an older
    // version left readable.
    let mut s = s;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(dir.join("store"), std::fs::Permissions::from_mode(0o644)).expect("chmod");
    s.restart();
    assert_eq!(mode(&dir), 0o700, "data dir tightened");
    assert_eq!(mode(&dir.join("store")), 0o600, "store file tightened");
    assert_eq!(readable(&s), b64, "readable after a restart");
}

#[test]
fn secrets_written_before_encryption_are_reencrypted_on_request() {
    let mut s = Server::start();
    s.ok(&[
        "create",
        "secret",
        "generic",
        "old",
        "--from-literal=k=before-encryption",
    ]);
    let dir = s.data_dir().to_path_buf();
    // Turn encryption on for the same data dir (as k3s does with the flag added on restart).
    let cfg = apiserver::encryption::Config::generate("secretbox").expect("config");
    cfg.save(&dir.join("server/cred/encryption-config.json"))
        .expect("save");
    s.restart();
    let status = berth(&dir, &["secrets-encrypt", "status"]);
    assert!(
        status.contains("(1 not written with the current key)"),
        "{status}"
    );
    let out = berth(&dir, &["secrets-encrypt", "reencrypt"]);
    assert!(out.contains("reencrypted: 1"), "{out}");
    let status = berth(&dir, &["secrets-encrypt", "status"]);
    assert!(
        status.contains("(0 not written with the current key)"),
        "{status}"
    );
    assert_eq!(
        s.ok(&["get", "secret", "old", "-o", "jsonpath={.data.k}"]),
        "YmVmb3JlLWVuY3J5cHRpb24="
    );
}
