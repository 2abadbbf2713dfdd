//! Pod Security Standards as pure checks (upstream `k8s.io/pod-security-admission`, `api` and `policy`
//! packages, as of Kubernetes 1.32): the namespace labels `pod-security.kubernetes.io/{enforce,audit,warn}`
//! and their `-version`, and every check of the `baseline` and `restricted` levels with upstream's
//! forbidden reasons and details, so the real kubectl prints the very `Warning:` lines and Forbidden errors
//! a Kubernetes cluster sends.
//!
//! Objects are the wire form (`serde_json::Value`); no I/O.

use crate::field::FieldError;
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::fmt;

/// `pod-security.kubernetes.io/enforce`.
pub const ENFORCE_LEVEL_LABEL: &str = "pod-security.kubernetes.io/enforce";
/// `pod-security.kubernetes.io/enforce-version`.
pub const ENFORCE_VERSION_LABEL: &str = "pod-security.kubernetes.io/enforce-version";
/// `pod-security.kubernetes.io/audit`.
pub const AUDIT_LEVEL_LABEL: &str = "pod-security.kubernetes.io/audit";
/// `pod-security.kubernetes.io/audit-version`.
pub const AUDIT_VERSION_LABEL: &str = "pod-security.kubernetes.io/audit-version";
/// `pod-security.kubernetes.io/warn`.
pub const WARN_LEVEL_LABEL: &str = "pod-security.kubernetes.io/warn";
/// `pod-security.kubernetes.io/warn-version`.
pub const WARN_VERSION_LABEL: &str = "pod-security.kubernetes.io/warn-version";

/// The newest policy version this code knows; `latest` and anything newer evaluate as this one
/// (upstream's `maxVersion` of the check registry).
pub const MAX_MINOR: u32 = 32;

/// A Pod Security Standards level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    /// No restrictions.
    Privileged,
    /// Known privilege escalations prevented.
    Baseline,
    /// Hardening best practices.
    Restricted,
}

impl Level {
    /// Parse a label value (upstream `api.ParseLevel`): an unknown value is an error and evaluates as
    /// `restricted`.
    pub fn parse(s: &str) -> Result<Level, String> {
        match s {
            "privileged" => Ok(Level::Privileged),
            "baseline" => Ok(Level::Baseline),
            "restricted" => Ok(Level::Restricted),
            _ => Err("must be one of privileged, baseline, restricted".into()),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A policy version: `latest` or `v1.<minor>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// `latest`.
    Latest,
    /// `v1.<minor>`.
    Minor(u32),
}

impl Version {
    /// Parse a label value (upstream `api.ParseVersion`: `latest` or `v1.x`); an error evaluates as latest.
    pub fn parse(s: &str) -> Result<Version, String> {
        if s == "latest" {
            return Ok(Version::Latest);
        }
        let bad = || "must be \"latest\" or \"v1.x\"".to_string();
        let minor = s.strip_prefix("v1.").ok_or_else(bad)?;
        if minor.is_empty()
            || !minor.bytes().all(|b| b.is_ascii_digit())
            || (minor.len() > 1 && minor.starts_with('0'))
        {
            return Err(bad());
        }
        minor.parse().map(Version::Minor).map_err(|_| bad())
    }

    /// The minor version the checks run at (`latest` and future versions: [`MAX_MINOR`]).
    fn effective_minor(self) -> u32 {
        match self {
            Version::Latest => MAX_MINOR,
            Version::Minor(m) => m.min(MAX_MINOR),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Version::Latest => f.write_str("latest"),
            Version::Minor(m) => write!(f, "v1.{m}"),
        }
    }
}

/// A level at a version, shown as upstream shows it: `restricted:latest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LevelVersion {
    /// The level.
    pub level: Level,
    /// The version.
    pub version: Version,
}

impl LevelVersion {
    /// `privileged:latest`, the upstream default of every mode.
    pub const PRIVILEGED: LevelVersion = LevelVersion {
        level: Level::Privileged,
        version: Version::Latest,
    };
}

impl fmt::Display for LevelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.level, self.version)
    }
}

/// The three modes of a namespace's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Violations are refused (pods only).
    pub enforce: LevelVersion,
    /// Violations are recorded in the audit log.
    pub audit: LevelVersion,
    /// Violations are returned as warnings.
    pub warn: LevelVersion,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            enforce: LevelVersion::PRIVILEGED,
            audit: LevelVersion::PRIVILEGED,
            warn: LevelVersion::PRIVILEGED,
        }
    }
}

impl Policy {
    /// Every mode at one level, latest version (`--pod-security-default restricted`).
    pub fn all(level: Level) -> Policy {
        let lv = LevelVersion {
            level,
            version: Version::Latest,
        };
        Policy {
            enforce: lv,
            audit: lv,
            warn: lv,
        }
    }

    /// Whether nothing is ever checked.
    pub fn fully_privileged(&self) -> bool {
        [self.enforce, self.audit, self.warn]
            .iter()
            .all(|lv| lv.level == Level::Privileged)
    }
}

/// The policy of a namespace with `labels`, falling back to `defaults` for absent labels (upstream
/// `api.PolicyToEvaluate`). A policy is always returned; malformed labels also give field errors
/// (`metadata.labels[…]`), enforce falls back to `restricted`/`latest` and audit/warn fail open.
pub fn policy_to_evaluate(
    labels: Option<&Map<String, Value>>,
    defaults: Policy,
) -> (Policy, Vec<FieldError>) {
    let mut p = defaults;
    let mut errs = Vec::new();
    let Some(labels) = labels.filter(|l| !l.is_empty()) else {
        return (p, errs);
    };
    let get = |k: &str| labels.get(k).map(|v| v.as_str().unwrap_or_default().to_string());
    let mut err = |label: &str, value: &str, msg: String| {
        errs.push(FieldError::invalid(
            format!("metadata.labels[{label}]"),
            Value::String(value.to_string()),
            msg,
        ))
    };
    let modes: [(&str, &str, &mut LevelVersion, bool); 3] = [
        (ENFORCE_LEVEL_LABEL, ENFORCE_VERSION_LABEL, &mut p.enforce, false),
        (AUDIT_LEVEL_LABEL, AUDIT_VERSION_LABEL, &mut p.audit, true),
        (WARN_LEVEL_LABEL, WARN_VERSION_LABEL, &mut p.warn, true),
    ];
    for (level_label, version_label, lv, fail_open) in modes {
        if let Some(v) = get(level_label) {
            match Level::parse(&v) {
                Ok(l) => lv.level = l,
                Err(m) => {
                    lv.level = if fail_open {
                        Level::Privileged
                    } else {
                        Level::Restricted
                    };
                    err(level_label, &v, m);
                }
            }
        }
        if let Some(v) = get(version_label) {
            match Version::parse(&v) {
                Ok(ver) => lv.version = ver,
                Err(m) => {
                    lv.version = Version::Latest;
                    err(version_label, &v, m);
                }
            }
        }
    }
    (p, errs)
}

/// One failed check: upstream's `CheckResult` with `Allowed: false`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The short reason (`runAsNonRoot != true`).
    pub reason: String,
    /// What in the pod violates it (may be empty).
    pub detail: String,
}

/// Every violation of `pod_meta`/`pod_spec` against `lv`, in upstream's order (upstream
/// `checkRegistry.EvaluatePod`): the baseline checks, then either the baseline checks that a restricted
/// check supersedes (`Overlap`) or the restricted checks.
pub fn evaluate(lv: LevelVersion, pod_meta: &Value, pod_spec: &Value) -> Vec<Violation> {
    if lv.level == Level::Privileged {
        return Vec::new();
    }
    let v = lv.version.effective_minor();
    let pod = Pod {
        meta: pod_meta,
        spec: pod_spec,
    };
    type CheckFn = fn(&Pod, u32) -> Option<Violation>;
    // Upstream's registry orders checks by ID (baseline IDs sorted, then restricted IDs sorted); at
    // `restricted` a restricted check that exists at the version overrides the baseline check it
    // supersedes (`OverrideCheckIDs`).
    let baseline: [(&str, CheckFn); 11] = [
        ("appArmorProfile", app_armor_profile),
        ("capabilities_baseline", capabilities_baseline),
        ("hostNamespaces", host_namespaces),
        ("hostPathVolumes", host_path_volumes),
        ("hostPorts", host_ports),
        ("privileged", privileged),
        ("procMount", proc_mount),
        ("seLinuxOptions", se_linux_options),
        ("seccompProfile_baseline", seccomp_profile_baseline),
        ("sysctls", sysctls),
        ("windowsHostProcess", windows_host_process),
    ];
    let restricted: [CheckFn; 6] = [
        allow_privilege_escalation,
        capabilities_restricted,
        restricted_volumes,
        run_as_non_root,
        run_as_user,
        seccomp_profile_restricted,
    ];
    let overridden = |id: &str| match id {
        "capabilities_baseline" => v >= 22,
        "hostPathVolumes" => true,
        "seccompProfile_baseline" => v >= 19,
        _ => false,
    };
    let mut checks: Vec<CheckFn> = baseline
        .iter()
        .filter(|(id, _)| lv.level == Level::Baseline || !overridden(id))
        .map(|(_, f)| *f)
        .collect();
    if lv.level == Level::Restricted {
        checks.extend(restricted);
    }
    checks.into_iter().filter_map(|c| c(&pod, v)).collect()
}

/// Reasons with details in parentheses, comma-separated (upstream `AggregateCheckResult.ForbiddenDetail`):
/// `runAsNonRoot != true (pod or container "x" must set …), seccompProfile (…)`.
pub fn forbidden_detail(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|v| {
            if v.detail.is_empty() {
                v.reason.clone()
            } else {
                format!("{} ({})", v.reason, v.detail)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reasons only, comma-separated (upstream `AggregateCheckResult.ForbiddenReason`).
pub fn forbidden_reason(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|v| v.reason.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The pod metadata and spec PodSecurity evaluates in an object of `group`/`kind` (upstream
/// `DefaultPodSpecExtractor`): a Pod's own, or the template of a PodTemplate, ReplicationController,
/// ReplicaSet, Deployment, DaemonSet, StatefulSet, Job or CronJob. `None` for other kinds or when the
/// object carries no template.
pub fn pod_spec_of<'a>(group: &str, kind: &str, obj: &'a Value) -> Option<(&'a Value, &'a Value)> {
    static EMPTY: Value = Value::Null;
    let template = match (group, kind) {
        ("", "Pod") => {
            return Some((
                obj.get("metadata").unwrap_or(&EMPTY),
                obj.get("spec").unwrap_or(&EMPTY),
            ));
        }
        ("", "PodTemplate") => obj.get("template"),
        ("", "ReplicationController")
        | ("apps", "ReplicaSet" | "Deployment" | "DaemonSet" | "StatefulSet")
        | ("batch", "Job") => obj.pointer("/spec/template"),
        ("batch", "CronJob") => obj.pointer("/spec/jobTemplate/spec/template"),
        _ => return None,
    }?;
    if template.is_null() {
        return None;
    }
    Some((
        template.get("metadata").unwrap_or(&EMPTY),
        template.get("spec").unwrap_or(&EMPTY),
    ))
}

/// Whether a pod update changes anything PodSecurity looks at (upstream `isSignificantPodUpdate`: the
/// number of containers, an image, a container's seccomp annotation, or an added ephemeral container).
pub fn is_significant_pod_update(pod: &Value, old: &Value) -> bool {
    let list = |p: &Value, f: &str| -> Vec<Value> {
        p.pointer(&format!("/spec/{f}"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let ann = |p: &Value, k: &str| -> String {
        p.pointer("/metadata/annotations")
            .and_then(|a| a.get(k))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let container_changed = |c: &Value, o: &Value| {
        let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
        let key = format!("container.seccomp.security.alpha.kubernetes.io/{name}");
        c.get("image") != o.get("image") || ann(pod, &key) != ann(old, &key)
    };
    for f in ["containers", "initContainers"] {
        let (new, prev) = (list(pod, f), list(old, f));
        if new.len() != prev.len() || new.iter().zip(&prev).any(|(c, o)| container_changed(c, o)) {
            return true;
        }
    }
    let prev = list(old, "ephemeralContainers");
    list(pod, "ephemeralContainers").iter().any(|c| {
        match prev.iter().find(|o| o.get("name") == c.get("name")) {
            None => true,
            Some(o) => container_changed(c, o),
        }
    })
}

// ---- the checks (one per upstream `policy/check_*.go`) ----

struct Pod<'a> {
    meta: &'a Value,
    spec: &'a Value,
}

impl Pod<'_> {
    /// Init containers, containers, ephemeral containers (upstream `visitContainers`).
    fn containers(&self) -> impl Iterator<Item = &Value> {
        ["initContainers", "containers", "ephemeralContainers"]
            .into_iter()
            .flat_map(|f| {
                self.spec
                    .get(f)
                    .and_then(Value::as_array)
                    .map(|a| a.iter())
                    .into_iter()
                    .flatten()
            })
    }

    fn pod_sc(&self, path: &str) -> Option<&Value> {
        self.spec
            .get("securityContext")
            .and_then(|sc| sc.pointer(path))
            .filter(|v| !v.is_null())
    }

    fn volumes(&self) -> impl Iterator<Item = &Value> {
        self.spec
            .get("volumes")
            .and_then(Value::as_array)
            .map(|a| a.iter())
            .into_iter()
            .flatten()
    }

    /// `spec.os.name: windows`: from policy 1.25 the Linux-only restricted checks (privilege escalation,
    /// capabilities, seccomp) do not apply (the Pod Security Standards' "Linux only policy in v1.25+").
    fn linux_only_exempt(&self, v: u32) -> bool {
        v >= 25 && self.spec.pointer("/os/name").and_then(Value::as_str) == Some("windows")
    }

    fn annotations(&self) -> Option<&Map<String, Value>> {
        self.meta.get("annotations").and_then(Value::as_object)
    }
}

fn sc<'a>(c: &'a Value, path: &str) -> Option<&'a Value> {
    c.get("securityContext")
        .and_then(|sc| sc.pointer(path))
        .filter(|v| !v.is_null())
}

fn name(c: &Value) -> String {
    c.get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn join_quote<S: AsRef<str>>(items: &[S]) -> String {
    if items.is_empty() {
        return String::new();
    }
    let inner: Vec<&str> = items.iter().map(AsRef::as_ref).collect();
    format!("\"{}\"", inner.join("\", \""))
}

fn pluralize<'a>(singular: &'a str, plural: &'a str, n: usize) -> &'a str {
    if n == 1 { singular } else { plural }
}

fn containers_phrase(names: &[String]) -> String {
    format!(
        "{} {}",
        pluralize("container", "containers", names.len()),
        join_quote(names)
    )
}

fn violation(reason: impl Into<String>, detail: impl Into<String>) -> Option<Violation> {
    Some(Violation {
        reason: reason.into(),
        detail: detail.into(),
    })
}

/// Go's `%q` of a string (enough for label/annotation values: escapes `"` and `\`).
fn go_quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// `check_appArmorProfile.go` (1.0+): AppArmor profile types `RuntimeDefault`/`Localhost` only, and the
/// deprecated annotations `runtime/default`, `localhost/*` or empty.
fn app_armor_profile(pod: &Pod, _v: u32) -> Option<Violation> {
    let allowed_type = |t: &Value| matches!(t.as_str(), Some("RuntimeDefault" | "Localhost"));
    let mut bad_setters = Vec::new();
    let mut bad_values = BTreeSet::new();
    if let Some(t) = pod.pod_sc("/appArmorProfile/type")
        && !allowed_type(t)
    {
        bad_setters.push("pod".to_string());
        bad_values.insert(t.as_str().unwrap_or_default().to_string());
    }
    let mut bad_containers = Vec::new();
    for c in pod.containers() {
        if let Some(t) = sc(c, "/appArmorProfile/type")
            && !allowed_type(t)
        {
            bad_containers.push(name(c));
            bad_values.insert(t.as_str().unwrap_or_default().to_string());
        }
    }
    if !bad_containers.is_empty() {
        bad_setters.push(containers_phrase(&bad_containers));
    }
    let mut bad_list: Vec<String> = bad_values.into_iter().collect();
    let mut annotations: Vec<String> = pod
        .annotations()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| {
            let v = v.as_str().unwrap_or_default();
            let allowed = v.is_empty() || v == "runtime/default" || v.starts_with("localhost/");
            (k.starts_with("container.apparmor.security.beta.kubernetes.io/") && !allowed)
                .then(|| format!("{k}={}", go_quote(v)))
        })
        .collect();
    if !annotations.is_empty() {
        annotations.sort();
        bad_setters.push(pluralize("annotation", "annotations", annotations.len()).to_string());
        bad_list.extend(annotations);
    }
    if bad_setters.is_empty() {
        return None;
    }
    violation(
        pluralize(
            "forbidden AppArmor profile",
            "forbidden AppArmor profiles",
            bad_list.len(),
        ),
        format!(
            "{} must not set AppArmor profile type to {}",
            bad_setters.join(" and "),
            join_quote(&bad_list)
        ),
    )
}

/// `check_hostNamespaces.go` (1.0+): no hostNetwork, hostPID, hostIPC.
fn host_namespaces(pod: &Pod, _v: u32) -> Option<Violation> {
    let on = ["hostNetwork", "hostPID", "hostIPC"]
        .into_iter()
        .filter(|f| pod.spec.get(*f).and_then(Value::as_bool) == Some(true))
        .map(|f| format!("{f}=true"))
        .collect::<Vec<_>>();
    if on.is_empty() {
        return None;
    }
    violation("host namespaces", on.join(", "))
}

/// `check_hostPorts.go` (1.0+): no `hostPort`.
fn host_ports(pod: &Pod, _v: u32) -> Option<Violation> {
    let mut bad = Vec::new();
    let mut ports = BTreeSet::new();
    for c in pod.containers() {
        let mut valid = true;
        for p in c.get("ports").and_then(Value::as_array).into_iter().flatten() {
            let hp = p.get("hostPort").and_then(Value::as_i64).unwrap_or(0);
            if hp != 0 {
                valid = false;
                ports.insert(hp.to_string());
            }
        }
        if !valid {
            bad.push(name(c));
        }
    }
    if bad.is_empty() {
        return None;
    }
    let ports: Vec<String> = ports.into_iter().collect();
    violation(
        "hostPort",
        format!(
            "{} {} {} {}",
            containers_phrase(&bad),
            pluralize("uses", "use", bad.len()),
            pluralize("hostPort", "hostPorts", ports.len()),
            ports.join(", ")
        ),
    )
}

/// `check_privileged.go` (1.0+): no `privileged: true`.
fn privileged(pod: &Pod, _v: u32) -> Option<Violation> {
    let bad: Vec<String> = pod
        .containers()
        .filter(|c| sc(c, "/privileged").and_then(Value::as_bool) == Some(true))
        .map(name)
        .collect();
    if bad.is_empty() {
        return None;
    }
    violation(
        "privileged",
        format!(
            "{} must not set securityContext.privileged=true",
            containers_phrase(&bad)
        ),
    )
}

/// `check_procMount.go` (1.0+): `procMount` unset or `Default`.
fn proc_mount(pod: &Pod, _v: u32) -> Option<Violation> {
    let mut bad = Vec::new();
    let mut types = BTreeSet::new();
    for c in pod.containers() {
        if let Some(t) = sc(c, "/procMount").and_then(Value::as_str)
            && t != "Default"
        {
            bad.push(name(c));
            types.insert(t.to_string());
        }
    }
    if bad.is_empty() {
        return None;
    }
    let types: Vec<String> = types.into_iter().collect();
    violation(
        "procMount",
        format!(
            "{} must not set securityContext.procMount to {}",
            containers_phrase(&bad),
            join_quote(&types)
        ),
    )
}

/// `check_seLinuxOptions.go` (1.0+): type empty or `container_t`/`container_init_t`/`container_kvm_t`
/// (and `container_engine_t` from 1.31),
/// no user, no role.
fn se_linux_options(pod: &Pod, v: u32) -> Option<Violation> {
    let mut bad_types = BTreeSet::new();
    let (mut set_user, mut set_role) = (false, false);
    let mut valid = |o: &Value| {
        let s = |k: &str| o.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        let mut ok = true;
        let t = s("type");
        let allowed = matches!(
            t.as_str(),
            "" | "container_t" | "container_init_t" | "container_kvm_t"
        ) || (v >= 31 && t == "container_engine_t");
        if !allowed {
            ok = false;
            bad_types.insert(t);
        }
        if !s("user").is_empty() {
            ok = false;
            set_user = true;
        }
        if !s("role").is_empty() {
            ok = false;
            set_role = true;
        }
        ok
    };
    let mut bad_setters = Vec::new();
    if let Some(o) = pod.pod_sc("/seLinuxOptions")
        && !valid(o)
    {
        bad_setters.push("pod".to_string());
    }
    let bad: Vec<String> = pod
        .containers()
        .filter(|c| sc(c, "/seLinuxOptions").is_some_and(|o| !valid(o)))
        .map(name)
        .collect();
    if !bad.is_empty() {
        bad_setters.push(containers_phrase(&bad));
    }
    if bad_setters.is_empty() {
        return None;
    }
    // Upstream lists user/role only alongside a bad type (its `badData` is built inside that branch).
    let mut bad_data = Vec::new();
    if !bad_types.is_empty() {
        let types: Vec<String> = bad_types.into_iter().collect();
        bad_data.push(format!(
            "{} {}",
            pluralize("type", "types", types.len()),
            join_quote(&types)
        ));
        if set_user {
            bad_data.push("user may not be set".to_string());
        }
        if set_role {
            bad_data.push("role may not be set".to_string());
        }
    }
    violation(
        "seLinuxOptions",
        format!(
            "{} set forbidden securityContext.seLinuxOptions: {}",
            bad_setters.join(" and "),
            bad_data.join("; ")
        ),
    )
}

/// `check_sysctls.go`: only the safe, namespaced sysctls of the policy version.
fn sysctls(pod: &Pod, v: u32) -> Option<Violation> {
    let mut allowed = vec![
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_unprivileged_port_start",
    ];
    if v >= 27 {
        allowed.push("net.ipv4.ip_local_reserved_ports");
    }
    if v >= 29 {
        allowed.extend([
            "net.ipv4.tcp_keepalive_time",
            "net.ipv4.tcp_fin_timeout",
            "net.ipv4.tcp_keepalive_intvl",
            "net.ipv4.tcp_keepalive_probes",
        ]);
    }
    if v >= 32 {
        allowed.extend(["net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"]);
    }
    let bad: Vec<&str> = pod
        .pod_sc("/sysctls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("name").and_then(Value::as_str))
        .filter(|n| !allowed.contains(n))
        .collect();
    if bad.is_empty() {
        return None;
    }
    violation("forbidden sysctls", bad.join(", "))
}

/// `check_windowsHostProcess.go` (1.0+): no `windowsOptions.hostProcess: true`.
fn windows_host_process(pod: &Pod, _v: u32) -> Option<Violation> {
    let on = |v: Option<&Value>| v.and_then(Value::as_bool) == Some(true);
    let bad: Vec<String> = pod
        .containers()
        .filter(|c| on(sc(c, "/windowsOptions/hostProcess")))
        .map(name)
        .collect();
    let mut setters = Vec::new();
    if on(pod.pod_sc("/windowsOptions/hostProcess")) {
        setters.push("pod".to_string());
    }
    if !bad.is_empty() {
        setters.push(containers_phrase(&bad));
    }
    if setters.is_empty() {
        return None;
    }
    violation(
        "hostProcess",
        format!(
            "{} must not set securityContext.windowsOptions.hostProcess=true",
            setters.join(" and ")
        ),
    )
}

/// `check_capabilities_baseline.go` (1.0+, superseded at restricted): only the default capabilities may
/// be added.
fn capabilities_baseline(pod: &Pod, _v: u32) -> Option<Violation> {
    const ALLOWED: &[&str] = &[
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    ];
    let mut bad = Vec::new();
    let mut caps = BTreeSet::new();
    for c in pod.containers() {
        let mut valid = true;
        for cap in sc(c, "/capabilities/add")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let cap = cap.as_str().unwrap_or_default();
            if !ALLOWED.contains(&cap) {
                valid = false;
                caps.insert(cap.to_string());
            }
        }
        if !valid {
            bad.push(name(c));
        }
    }
    if bad.is_empty() {
        return None;
    }
    let caps: Vec<String> = caps.into_iter().collect();
    violation(
        "non-default capabilities",
        format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_phrase(&bad),
            join_quote(&caps)
        ),
    )
}

/// `check_hostPathVolumes.go` (1.0+, superseded at restricted by restrictedVolumes): no hostPath volumes.
fn host_path_volumes(pod: &Pod, _v: u32) -> Option<Violation> {
    let bad: Vec<String> = pod
        .volumes()
        .filter(|v| v.get("hostPath").is_some_and(|h| !h.is_null()))
        .map(name)
        .collect();
    if bad.is_empty() {
        return None;
    }
    violation(
        "hostPath volumes",
        format!(
            "{} {}",
            pluralize("volume", "volumes", bad.len()),
            join_quote(&bad)
        ),
    )
}

fn valid_seccomp(t: Option<&Value>) -> bool {
    matches!(t.and_then(Value::as_str), Some("RuntimeDefault" | "Localhost"))
}

/// `check_seccompProfile_baseline.go`: before 1.19 the alpha annotations; from 1.19 the
/// `seccompProfile.type` fields, which may be unset but not `Unconfined`.
fn seccomp_profile_baseline(pod: &Pod, v: u32) -> Option<Violation> {
    if v < 19 {
        let valid = |s: &str| s == "runtime/default" || s == "docker/default" || s.starts_with("localhost/");
        let ann = pod.annotations();
        let get = |k: &str| ann.and_then(|a| a.get(k)).map(|v| v.as_str().unwrap_or_default());
        let mut bad = BTreeSet::new();
        const POD_KEY: &str = "seccomp.security.alpha.kubernetes.io/pod";
        if let Some(val) = get(POD_KEY)
            && !valid(val)
        {
            bad.insert(format!("{POD_KEY}={}", go_quote(val)));
        }
        for c in pod.containers() {
            let key = format!("container.seccomp.security.alpha.kubernetes.io/{}", name(c));
            if let Some(val) = get(&key)
                && !valid(val)
            {
                bad.insert(format!("{key}={}", go_quote(val)));
            }
        }
        if bad.is_empty() {
            return None;
        }
        let bad: Vec<String> = bad.into_iter().collect();
        return violation(
            "seccompProfile",
            format!(
                "forbidden {} {}",
                pluralize("annotation", "annotations", bad.len()),
                bad.join(", ")
            ),
        );
    }
    let mut setters = Vec::new();
    let mut values = BTreeSet::new();
    if let Some(p) = pod.pod_sc("/seccompProfile")
        && !valid_seccomp(p.get("type"))
    {
        setters.push("pod".to_string());
        values.insert(
            p.get("type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        );
    }
    let mut bad = Vec::new();
    for c in pod.containers() {
        if let Some(p) = sc(c, "/seccompProfile")
            && !valid_seccomp(p.get("type"))
        {
            bad.push(name(c));
            values.insert(
                p.get("type")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            );
        }
    }
    if !bad.is_empty() {
        setters.push(containers_phrase(&bad));
    }
    if setters.is_empty() {
        return None;
    }
    let values: Vec<String> = values.into_iter().collect();
    violation(
        "seccompProfile",
        format!(
            "{} must not set securityContext.seccompProfile.type to {}",
            setters.join(" and "),
            join_quote(&values)
        ),
    )
}

/// `check_allowPrivilegeEscalation.go` (1.8+): every container sets `allowPrivilegeEscalation: false`.
fn allow_privilege_escalation(pod: &Pod, v: u32) -> Option<Violation> {
    if v < 8 || pod.linux_only_exempt(v) {
        return None;
    }
    let bad: Vec<String> = pod
        .containers()
        .filter(|c| sc(c, "/allowPrivilegeEscalation").and_then(Value::as_bool) != Some(false))
        .map(name)
        .collect();
    if bad.is_empty() {
        return None;
    }
    violation(
        "allowPrivilegeEscalation != false",
        format!(
            "{} must set securityContext.allowPrivilegeEscalation=false",
            containers_phrase(&bad)
        ),
    )
}

/// `check_capabilities_restricted.go` (1.22+): every container drops `ALL` and adds at most
/// `NET_BIND_SERVICE`.
fn capabilities_restricted(pod: &Pod, v: u32) -> Option<Violation> {
    if v < 22 || pod.linux_only_exempt(v) {
        return None;
    }
    let mut missing_drop = Vec::new();
    let mut adding = Vec::new();
    let mut forbidden = BTreeSet::new();
    for c in pod.containers() {
        let Some(caps) = sc(c, "/capabilities") else {
            missing_drop.push(name(c));
            continue;
        };
        let list = |k: &str| -> Vec<String> {
            caps.get(k)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|v| v.as_str().unwrap_or_default().to_string())
                .collect()
        };
        if !list("drop").iter().any(|c| c == "ALL") {
            missing_drop.push(name(c));
        }
        let bad: Vec<String> = list("add")
            .into_iter()
            .filter(|c| c != "NET_BIND_SERVICE")
            .collect();
        if !bad.is_empty() {
            adding.push(name(c));
            forbidden.extend(bad);
        }
    }
    let mut details = Vec::new();
    if !missing_drop.is_empty() {
        details.push(format!(
            "{} must set securityContext.capabilities.drop=[\"ALL\"]",
            containers_phrase(&missing_drop)
        ));
    }
    if !adding.is_empty() {
        let forbidden: Vec<String> = forbidden.into_iter().collect();
        details.push(format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_phrase(&adding),
            join_quote(&forbidden)
        ));
    }
    if details.is_empty() {
        return None;
    }
    violation("unrestricted capabilities", details.join("; "))
}

/// `check_restrictedVolumes.go` (1.0+): only configMap, csi, downwardAPI, emptyDir, ephemeral, image,
/// persistentVolumeClaim, projected and secret volumes; the others are named with their types.
fn restricted_volumes(pod: &Pod, _v: u32) -> Option<Violation> {
    const ALLOWED: &[&str] = &[
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "image",
        "persistentVolumeClaim",
        "projected",
        "secret",
    ];
    // Upstream's switch order; a volume of none of these types is `unknown`.
    const RESTRICTED: &[&str] = &[
        "hostPath",
        "gcePersistentDisk",
        "awsElasticBlockStore",
        "gitRepo",
        "nfs",
        "iscsi",
        "glusterfs",
        "rbd",
        "flexVolume",
        "cinder",
        "cephfs",
        "flocker",
        "fc",
        "azureFile",
        "vsphereVolume",
        "quobyte",
        "azureDisk",
        "photonPersistentDisk",
        "portworxVolume",
        "scaleIO",
        "storageos",
    ];
    let set = |v: &Value, t: &str| v.get(t).is_some_and(|s| !s.is_null());
    let mut bad = Vec::new();
    let mut types = BTreeSet::new();
    for vol in pod.volumes() {
        if ALLOWED.iter().any(|t| set(vol, t)) {
            continue;
        }
        bad.push(name(vol));
        types.insert(
            RESTRICTED
                .iter()
                .find(|t| set(vol, t))
                .copied()
                .unwrap_or("unknown")
                .to_string(),
        );
    }
    if bad.is_empty() {
        return None;
    }
    let types: Vec<String> = types.into_iter().collect();
    violation(
        "restricted volume types",
        format!(
            "{} {} {} {} {}",
            pluralize("volume", "volumes", bad.len()),
            join_quote(&bad),
            pluralize("uses", "use", bad.len()),
            pluralize("restricted volume type", "restricted volume types", types.len()),
            join_quote(&types)
        ),
    )
}

/// `check_runAsNonRoot.go` (1.0+): `runAsNonRoot: true` on the pod or on every container, and never
/// `false`.
fn run_as_non_root(pod: &Pod, _v: u32) -> Option<Violation> {
    let mut setters = Vec::new();
    let mut pod_true = false;
    match pod.pod_sc("/runAsNonRoot").and_then(Value::as_bool) {
        Some(false) => setters.push("pod".to_string()),
        Some(true) => pod_true = true,
        None => {}
    }
    let (mut explicit, mut implicit) = (Vec::new(), Vec::new());
    for c in pod.containers() {
        match sc(c, "/runAsNonRoot").and_then(Value::as_bool) {
            Some(false) => explicit.push(name(c)),
            Some(true) => {}
            None if !pod_true => implicit.push(name(c)),
            None => {}
        }
    }
    if !explicit.is_empty() {
        setters.push(containers_phrase(&explicit));
    }
    if !setters.is_empty() {
        return violation(
            "runAsNonRoot != true",
            format!(
                "{} must not set securityContext.runAsNonRoot=false",
                setters.join(" and ")
            ),
        );
    }
    if !implicit.is_empty() {
        return violation(
            "runAsNonRoot != true",
            format!(
                "pod or {} must set securityContext.runAsNonRoot=true",
                containers_phrase(&implicit)
            ),
        );
    }
    None
}

/// `check_runAsUser.go` (1.23+): no `runAsUser: 0`.
fn run_as_user(pod: &Pod, v: u32) -> Option<Violation> {
    if v < 23 {
        return None;
    }
    let zero = |x: Option<&Value>| x.and_then(Value::as_i64) == Some(0);
    let mut setters = Vec::new();
    if zero(pod.pod_sc("/runAsUser")) {
        setters.push("pod".to_string());
    }
    let bad: Vec<String> = pod
        .containers()
        .filter(|c| zero(sc(c, "/runAsUser")))
        .map(name)
        .collect();
    if !bad.is_empty() {
        setters.push(containers_phrase(&bad));
    }
    if setters.is_empty() {
        return None;
    }
    violation(
        "runAsUser=0",
        format!("{} must not set runAsUser=0", setters.join(" and ")),
    )
}

/// `check_seccompProfile_restricted.go` (1.19+): `RuntimeDefault` or `Localhost` on the pod or on every
/// container.
fn seccomp_profile_restricted(pod: &Pod, v: u32) -> Option<Violation> {
    if v < 19 || pod.linux_only_exempt(v) {
        return None;
    }
    let mut setters = Vec::new();
    let mut values = BTreeSet::new();
    let mut pod_set = false;
    if let Some(p) = pod.pod_sc("/seccompProfile") {
        if valid_seccomp(p.get("type")) {
            pod_set = true;
        } else {
            setters.push("pod".to_string());
            values.insert(
                p.get("type")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            );
        }
    }
    let (mut explicit, mut implicit) = (Vec::new(), Vec::new());
    for c in pod.containers() {
        match sc(c, "/seccompProfile") {
            Some(p) if !valid_seccomp(p.get("type")) => {
                explicit.push(name(c));
                values.insert(
                    p.get("type")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                );
            }
            None if !pod_set => implicit.push(name(c)),
            Some(_) | None => {}
        }
    }
    if !explicit.is_empty() {
        setters.push(containers_phrase(&explicit));
    }
    if !setters.is_empty() {
        let values: Vec<String> = values.into_iter().collect();
        return violation(
            "seccompProfile",
            format!(
                "{} must not set securityContext.seccompProfile.type to {}",
                setters.join(" and "),
                join_quote(&values)
            ),
        );
    }
    if !implicit.is_empty() {
        return violation(
            "seccompProfile",
            format!(
                "pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"",
                containers_phrase(&implicit)
            ),
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lv(level: Level) -> LevelVersion {
        LevelVersion {
            level,
            version: Version::Latest,
        }
    }

    fn check(level: Level, spec: Value) -> String {
        forbidden_detail(&evaluate(lv(level), &json!({}), &spec))
    }

    /// The seed's web pod, as the StatefulSet controller creates it.
    fn nginx() -> Value {
        json!({"containers": [{"name": "nginx", "image": "k8s.gcr.io/nginx-slim:0.8",
            "ports": [{"containerPort": 80, "name": "web"}],
            "volumeMounts": [{"name": "www", "mountPath": "/usr/share/nginx/html"}]}],
            "volumes": [{"name": "www", "persistentVolumeClaim": {"claimName": "www-web-0"}}]})
    }

    fn compliant() -> Value {
        json!({"securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "app", "image": "busybox", "securityContext": {
                "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}]})
    }

    #[test]
    fn restricted_refuses_the_seed_pod_with_upstreams_message() {
        assert_eq!(
            check(Level::Restricted, nginx()),
            "allowPrivilegeEscalation != false (container \"nginx\" must set securityContext.allowPrivilegeEscalation=false), \
             unrestricted capabilities (container \"nginx\" must set securityContext.capabilities.drop=[\"ALL\"]), \
             runAsNonRoot != true (pod or container \"nginx\" must set securityContext.runAsNonRoot=true), \
             seccompProfile (pod or container \"nginx\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
        );
        assert_eq!(check(Level::Baseline, nginx()), "");
        assert_eq!(check(Level::Privileged, nginx()), "");
    }

    #[test]
    fn a_compliant_pod_passes_every_level() {
        for l in [Level::Privileged, Level::Baseline, Level::Restricted] {
            assert_eq!(check(l, compliant()), "", "{l}");
        }
    }

    #[test]
    fn baseline_checks() {
        let cases = [
            (
                json!({"hostNetwork": true, "hostPID": true, "containers": []}),
                "host namespaces (hostNetwork=true, hostPID=true)",
            ),
            (
                json!({"containers": [{"name": "a", "ports": [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 81, "hostPort": 9090}]}]}),
                "hostPort (container \"a\" uses hostPorts 8080, 9090)",
            ),
            (
                json!({"containers": [{"name": "a", "securityContext": {"privileged": true}}, {"name": "b", "securityContext": {"privileged": true}}]}),
                "privileged (containers \"a\", \"b\" must not set securityContext.privileged=true)",
            ),
            (
                json!({"containers": [{"name": "a", "securityContext": {"procMount": "Unmasked"}}]}),
                "procMount (container \"a\" must not set securityContext.procMount to \"Unmasked\")",
            ),
            (
                json!({"securityContext": {"seLinuxOptions": {"type": "spc_t", "user": "u"}}, "containers": []}),
                "seLinuxOptions (pod set forbidden securityContext.seLinuxOptions: type \"spc_t\"; user may not be set)",
            ),
            (
                json!({"securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}, {"name": "net.ipv4.tcp_syncookies", "value": "1"}]}, "containers": []}),
                "forbidden sysctls (kernel.msgmax)",
            ),
            (
                json!({"securityContext": {"windowsOptions": {"hostProcess": true}}, "containers": []}),
                "hostProcess (pod must not set securityContext.windowsOptions.hostProcess=true)",
            ),
            (
                json!({"containers": [{"name": "a", "securityContext": {"capabilities": {"add": ["NET_RAW", "CHOWN", "SYS_ADMIN"]}}}]}),
                "non-default capabilities (container \"a\" must not include \"NET_RAW\", \"SYS_ADMIN\" in securityContext.capabilities.add)",
            ),
            (
                json!({"volumes": [{"name": "h", "hostPath": {"path": "/"}}], "containers": []}),
                "hostPath volumes (volume \"h\")",
            ),
            (
                json!({"securityContext": {"seccompProfile": {"type": "Unconfined"}}, "containers": []}),
                "seccompProfile (pod must not set securityContext.seccompProfile.type to \"Unconfined\")",
            ),
            (
                json!({"containers": [{"name": "a", "securityContext": {"appArmorProfile": {"type": "Unconfined"}}}]}),
                "forbidden AppArmor profile (container \"a\" must not set AppArmor profile type to \"Unconfined\")",
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(check(Level::Baseline, spec), want);
        }
    }

    #[test]
    fn violations_come_in_upstreams_check_id_order() {
        // Baseline IDs sorted: capabilities_baseline before hostNamespaces before privileged.
        let spec = json!({"hostPID": true, "containers": [{"name": "a", "securityContext": {
            "privileged": true, "capabilities": {"add": ["NET_RAW"]}}}]});
        assert_eq!(
            forbidden_reason(&evaluate(lv(Level::Baseline), &json!({}), &spec)),
            "non-default capabilities, host namespaces, privileged"
        );
        // At restricted the restricted capabilities check overrides the baseline one (from 1.22).
        assert_eq!(
            forbidden_reason(&evaluate(lv(Level::Restricted), &json!({}), &spec)),
            "host namespaces, privileged, allowPrivilegeEscalation != false, unrestricted capabilities, runAsNonRoot != true, seccompProfile"
        );
        let v21 = LevelVersion {
            level: Level::Restricted,
            version: Version::Minor(21),
        };
        assert_eq!(
            forbidden_reason(&evaluate(v21, &json!({}), &spec)),
            "non-default capabilities, host namespaces, privileged, allowPrivilegeEscalation != false, runAsNonRoot != true, seccompProfile"
        );
    }

    #[test]
    fn container_engine_t_is_allowed_from_1_31() {
        let spec =
            json!({"securityContext": {"seLinuxOptions": {"type": "container_engine_t"}}, "containers": []});
        assert_eq!(check(Level::Baseline, spec.clone()), "");
        let v30 = LevelVersion {
            level: Level::Baseline,
            version: Version::Minor(30),
        };
        assert_eq!(
            forbidden_detail(&evaluate(v30, &json!({}), &spec)),
            "seLinuxOptions (pod set forbidden securityContext.seLinuxOptions: type \"container_engine_t\")"
        );
    }

    #[test]
    fn app_armor_annotations_are_checked() {
        let meta = json!({"annotations": {"container.apparmor.security.beta.kubernetes.io/a": "unconfined"}});
        let got = forbidden_detail(&evaluate(lv(Level::Baseline), &meta, &json!({"containers": []})));
        assert_eq!(
            got,
            "forbidden AppArmor profile (annotation must not set AppArmor profile type to \"container.apparmor.security.beta.kubernetes.io/a=\"unconfined\"\")"
        );
    }

    #[test]
    fn restricted_checks() {
        let base = |sc: Value, volumes: Value| {
            json!({"securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
                "volumes": volumes,
                "containers": [{"name": "a", "securityContext": sc}]})
        };
        let ok_sc = json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}});
        let cases = [
            (
                base(
                    json!({"allowPrivilegeEscalation": true, "capabilities": {"drop": ["ALL"], "add": ["SYS_TIME"]}}),
                    json!([]),
                ),
                "allowPrivilegeEscalation != false (container \"a\" must set securityContext.allowPrivilegeEscalation=false), \
                 unrestricted capabilities (container \"a\" must not include \"SYS_TIME\" in securityContext.capabilities.add)",
            ),
            (
                base(
                    ok_sc.clone(),
                    json!([{"name": "h", "hostPath": {"path": "/"}}, {"name": "n", "nfs": {}}, {"name": "c", "configMap": {}}]),
                ),
                "restricted volume types (volumes \"h\", \"n\" use restricted volume types \"hostPath\", \"nfs\")",
            ),
            (
                base(
                    json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": false, "runAsUser": 0}),
                    json!([]),
                ),
                "runAsNonRoot != true (container \"a\" must not set securityContext.runAsNonRoot=false), \
                 runAsUser=0 (container \"a\" must not set runAsUser=0)",
            ),
            (
                base(
                    json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "Unconfined"}}),
                    json!([]),
                ),
                "seccompProfile (container \"a\" must not set securityContext.seccompProfile.type to \"Unconfined\")",
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(check(Level::Restricted, spec), want);
        }
    }

    #[test]
    fn versions_gate_checks() {
        let v = |m| LevelVersion {
            level: Level::Restricted,
            version: Version::Minor(m),
        };
        let reasons = |m| forbidden_reason(&evaluate(v(m), &json!({}), &nginx()));
        assert_eq!(
            reasons(21),
            "allowPrivilegeEscalation != false, runAsNonRoot != true, seccompProfile"
        );
        assert_eq!(
            reasons(18),
            "allowPrivilegeEscalation != false, runAsNonRoot != true"
        );
        assert_eq!(
            reasons(99),
            "allowPrivilegeEscalation != false, unrestricted capabilities, runAsNonRoot != true, seccompProfile"
        );
    }

    #[test]
    fn windows_pods_skip_the_linux_only_checks_from_1_25() {
        let mut spec = nginx();
        spec["os"] = json!({"name": "windows"});
        let reasons = |m| {
            forbidden_reason(&evaluate(
                LevelVersion {
                    level: Level::Restricted,
                    version: Version::Minor(m),
                },
                &json!({}),
                &spec,
            ))
        };
        assert_eq!(reasons(25), "runAsNonRoot != true");
        assert_eq!(
            reasons(24),
            "allowPrivilegeEscalation != false, unrestricted capabilities, runAsNonRoot != true, seccompProfile"
        );
    }

    #[test]
    fn labels_resolve_to_a_policy() {
        let labels = json!({ENFORCE_LEVEL_LABEL: "restricted", WARN_LEVEL_LABEL: "baseline",
            WARN_VERSION_LABEL: "v1.25"});
        let (p, errs) = policy_to_evaluate(labels.as_object(), Policy::default());
        assert!(errs.is_empty());
        assert_eq!(p.enforce.to_string(), "restricted:latest");
        assert_eq!(p.warn.to_string(), "baseline:v1.25");
        assert_eq!(p.audit.to_string(), "privileged:latest");
        let labels =
            json!({ENFORCE_LEVEL_LABEL: "strict", AUDIT_VERSION_LABEL: "1.25", WARN_LEVEL_LABEL: "x"});
        let (p, errs) = policy_to_evaluate(labels.as_object(), Policy::all(Level::Baseline));
        assert_eq!(p.enforce.level, Level::Restricted, "enforce fails closed");
        assert_eq!(p.warn.level, Level::Privileged, "warn fails open");
        assert_eq!(errs.len(), 3);
        assert_eq!(
            errs[0].field,
            "metadata.labels[pod-security.kubernetes.io/enforce]"
        );
        assert_eq!(errs[0].detail, "must be one of privileged, baseline, restricted");
        assert_eq!(errs[1].detail, "must be \"latest\" or \"v1.x\"");
        assert_eq!(
            Version::parse("v1.07"),
            Err("must be \"latest\" or \"v1.x\"".into())
        );
        assert_eq!(Version::parse("v1.0"), Ok(Version::Minor(0)));
    }

    #[test]
    fn templates_are_found_in_workloads() {
        let sts = json!({"spec": {"template": {"metadata": {"labels": {"a": "b"}}, "spec": nginx()}}});
        let (m, s) = pod_spec_of("apps", "StatefulSet", &sts).expect("template");
        assert_eq!(m["labels"]["a"], "b");
        assert_eq!(s, &nginx());
        let cj = json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": nginx()}}}}});
        assert!(pod_spec_of("batch", "CronJob", &cj).is_some());
        assert!(pod_spec_of("", "ConfigMap", &cj).is_none());
        assert!(pod_spec_of("apps", "Deployment", &json!({"spec": {}})).is_none());
    }

    #[test]
    fn only_image_and_container_changes_are_significant() {
        let pod = json!({"metadata": {}, "spec": nginx()});
        let mut relabeled = pod.clone();
        relabeled["metadata"]["labels"] = json!({"x": "y"});
        assert!(!is_significant_pod_update(&relabeled, &pod));
        let mut new_image = pod.clone();
        new_image["spec"]["containers"][0]["image"] = json!("nginx:2");
        assert!(is_significant_pod_update(&new_image, &pod));
    }
}
