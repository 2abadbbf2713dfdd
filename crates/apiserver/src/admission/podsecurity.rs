//! PodSecurity (upstream `k8s.io/pod-security-admission/admission`, as the in-tree plugin
//! `plugin/pkg/admission/security/podsecurity` runs it): the namespace's `pod-security.kubernetes.io/*`
//! labels (or the server's default policy) decide; the checks themselves are `api::podsecurity`.
//!
//! - Pods (create, and updates that change an image or the containers): `enforce` violations are 403
//!   `pods "x" is forbidden: violates PodSecurity "restricted:latest": …`; `warn` violations are
//!   `would violate PodSecurity …` warnings.
//! - Workload resources with a pod template (Deployment, StatefulSet, Job, …): never refused; `warn`
//!   violations are warnings.
//! - Namespaces: malformed labels are 422; making `enforce` stricter warns about the existing pods that
//!   would violate it.

use super::{Attributes, Operation, warn};
use crate::error::{ApiError, ApiResult};
use crate::registry::{ListOptions, Registry, subject};
use api::podsecurity::{self as ps, Policy};
use serde_json::Value;
use std::collections::BTreeMap;

/// Defaults and exemptions (upstream `PodSecurityConfiguration`).
#[derive(Debug, Clone, Default)]
pub struct PodSecurityConfig {
    /// The policy of namespaces without labels (upstream `defaults`; all `privileged:latest` unless
    /// `--pod-security-default` says otherwise).
    pub defaults: Policy,
    /// Namespaces never checked (upstream `exemptions.namespaces`).
    pub exempt_namespaces: Vec<String>,
    /// RuntimeClasses never checked (upstream `exemptions.runtimeClasses`).
    pub exempt_runtime_classes: Vec<String>,
}

/// Upstream checks at most this many pods when a namespace's enforce level is tightened.
const NAMESPACE_MAX_PODS_TO_CHECK: usize = 3000;

/// The PodSecurity plugin.
#[derive(Debug, Clone)]
pub struct PodSecurity {
    config: PodSecurityConfig,
}

impl PodSecurity {
    /// A plugin with `config`.
    pub fn new(config: PodSecurityConfig) -> Self {
        Self { config }
    }

    /// Admit a create/update of a namespace, pod or workload resource (upstream `Admission.Validate`).
    ///
    /// # Errors
    /// 403 Forbidden for an enforced violation, 422 Invalid for malformed namespace labels.
    pub async fn validate(&self, reg: &Registry, attrs: &Attributes<'_>, obj: &Value) -> ApiResult<()> {
        if attrs.operation == Operation::Delete {
            return Ok(());
        }
        let r = attrs.resource;
        if attrs.is_core("Namespace") {
            return self.validate_namespace(reg, attrs, obj).await;
        }
        if attrs.is_core("Pod") {
            return self.validate_pod(reg, attrs, obj).await;
        }
        if ps::pod_spec_of(r.group, r.kind, obj).is_some() {
            return self.validate_pod_controller(reg, attrs, obj).await;
        }
        Ok(())
    }

    fn policy_of(&self, ns: &Value) -> (Policy, Vec<api::field::FieldError>) {
        ps::policy_to_evaluate(
            ns.pointer("/metadata/labels").and_then(Value::as_object),
            self.config.defaults,
        )
    }

    fn exempt_namespace(&self, ns: Option<&str>) -> bool {
        ns.is_some_and(|n| self.config.exempt_namespaces.iter().any(|e| e == n))
    }

    async fn namespace_policy(&self, reg: &Registry, ns: &str) -> ApiResult<Policy> {
        let ns_res = api::resources::find("", "v1", "namespaces")
            .ok_or_else(|| ApiError::Internal("no namespaces resource".into()))?;
        // Upstream reads its namespace lister; the registry's lister read waits until the watch cache has
        // seen this server's last Namespace write, so a level set a moment ago applies to the very next pod
        // (and falls back to the store when the cache lacks the namespace).
        let ns_obj = reg.lister_get(ns_res, None, ns).await.map_err(|e| match e {
            ApiError::NotFound(_) => ApiError::Internal(format!("failed to lookup namespace \"{ns}\"")),
            other => other,
        })?;
        Ok(self.policy_of(&ns_obj).0)
    }

    /// Upstream `ValidateNamespace`.
    async fn validate_namespace(&self, reg: &Registry, attrs: &Attributes<'_>, obj: &Value) -> ApiResult<()> {
        if attrs.subresource.is_some() {
            return Ok(());
        }
        let (new_policy, new_errs) = self.policy_of(obj);
        let invalid = |errors| ApiError::Invalid {
            subject: subject(attrs.resource, attrs.name),
            kind: attrs.resource.qualified_kind(),
            errors,
        };
        let Some(old) = attrs.old else {
            return if new_errs.is_empty() {
                Ok(())
            } else {
                Err(invalid(new_errs))
            };
        };
        let (old_policy, old_errs) = self.policy_of(old);
        if !new_errs.is_empty() && (old_errs.is_empty() || new_errs != old_errs) {
            return Err(invalid(new_errs));
        }
        let (new_e, old_e) = (new_policy.enforce, old_policy.enforce);
        if new_e == old_e
            || new_e.level == ps::Level::Privileged
            || (new_e.version == old_e.version && new_e.level <= old_e.level)
            || self.exempt_namespace(Some(attrs.name))
        {
            return Ok(());
        }
        for w in self.evaluate_pods_in_namespace(reg, attrs.name, new_e).await {
            warn(w);
        }
        Ok(())
    }

    /// Upstream `EvaluatePodsInNamespace`: one warning per distinct set of reasons, naming the first pod
    /// (by name) and how many others share it.
    async fn evaluate_pods_in_namespace(
        &self,
        reg: &Registry,
        ns: &str,
        enforce: ps::LevelVersion,
    ) -> Vec<String> {
        let Some(pods_res) = api::resources::find("", "v1", "pods") else {
            return Vec::new();
        };
        let pods = match reg.list(pods_res, Some(ns), &ListOptions::default()).await {
            Ok(l) => l.items,
            Err(_) => return vec!["failed to list pods while checking new PodSecurity enforce level".into()],
        };
        let total = pods.len();
        let mut warnings = Vec::new();
        let mut by_reason: BTreeMap<String, (String, usize)> = BTreeMap::new();
        for pod in pods.iter().take(NAMESPACE_MAX_PODS_TO_CHECK) {
            if self.exempt_runtime_class(pod.pointer("/spec")) {
                continue;
            }
            let (meta, spec) = ps::pod_spec_of("", "Pod", pod).unwrap_or((&Value::Null, &Value::Null));
            let violations = ps::evaluate(enforce, meta, spec);
            if violations.is_empty() {
                continue;
            }
            let name = crate::object::name(pod).to_string();
            let entry = by_reason
                .entry(ps::forbidden_reason(&violations))
                .or_insert((name.clone(), 0));
            if name < entry.0 {
                entry.0 = name;
            }
            entry.1 += 1;
        }
        let checked = total.min(NAMESPACE_MAX_PODS_TO_CHECK);
        if checked < total {
            warnings.push(format!(
                "new PodSecurity enforce level only checked against the first {checked} of {total} existing pods"
            ));
        }
        if !by_reason.is_empty() {
            warnings.push(format!(
                "existing pods in namespace \"{ns}\" violate the new PodSecurity enforce level \"{enforce}\""
            ));
        }
        let mut pod_warnings: Vec<String> = by_reason
            .into_iter()
            .map(|(reason, (pod, n))| match n {
                1 => format!("{pod}: {reason}"),
                2 => format!("{pod} (and 1 other pod): {reason}"),
                _ => format!("{pod} (and {} other pods): {reason}", n - 1),
            })
            .collect();
        pod_warnings.sort();
        warnings.extend(pod_warnings);
        warnings
    }

    fn exempt_runtime_class(&self, spec: Option<&Value>) -> bool {
        spec.and_then(|s| s.get("runtimeClassName"))
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
            .is_some_and(|c| self.config.exempt_runtime_classes.iter().any(|e| e == c))
    }

    /// Upstream `ValidatePod`.
    async fn validate_pod(&self, reg: &Registry, attrs: &Attributes<'_>, obj: &Value) -> ApiResult<()> {
        // Upstream ignores exec, attach, binding, eviction, log, portforward, proxy and status.
        if attrs.subresource.is_some() || self.exempt_namespace(attrs.namespace) {
            return Ok(());
        }
        let policy = self
            .namespace_policy(reg, attrs.namespace.unwrap_or_default())
            .await?;
        if policy.fully_privileged() {
            return Ok(());
        }
        if let Some(old) = attrs.old
            && !ps::is_significant_pod_update(obj, old)
        {
            return Ok(());
        }
        self.evaluate(attrs, policy, obj, true)
    }

    /// Upstream `ValidatePodController`: workload resources are never refused, only warned about.
    async fn validate_pod_controller(
        &self,
        reg: &Registry,
        attrs: &Attributes<'_>,
        obj: &Value,
    ) -> ApiResult<()> {
        if attrs.subresource.is_some() || self.exempt_namespace(attrs.namespace) {
            return Ok(());
        }
        let policy = self
            .namespace_policy(reg, attrs.namespace.unwrap_or_default())
            .await?;
        if policy.warn.level == ps::Level::Privileged && policy.audit.level == ps::Level::Privileged {
            return Ok(());
        }
        self.evaluate(attrs, policy, obj, false)
    }

    /// Upstream `EvaluatePod`: enforce (pods only) refuses; warn adds a warning to an admitted request.
    /// Audit annotations are not recorded (Berth keeps no audit log).
    fn evaluate(&self, attrs: &Attributes<'_>, policy: Policy, obj: &Value, enforce: bool) -> ApiResult<()> {
        let r = attrs.resource;
        let Some((meta, spec)) = ps::pod_spec_of(r.group, r.kind, obj) else {
            return Ok(());
        };
        if self.exempt_runtime_class(Some(spec)) {
            return Ok(());
        }
        if enforce {
            let violations = ps::evaluate(policy.enforce, meta, spec);
            if !violations.is_empty() {
                return Err(ApiError::Forbidden(
                    subject(r, attrs.name),
                    format!(
                        "violates PodSecurity \"{}\": {}",
                        policy.enforce,
                        ps::forbidden_detail(&violations)
                    ),
                ));
            }
        }
        let violations = ps::evaluate(policy.warn, meta, spec);
        if !violations.is_empty() {
            warn(format!(
                "would violate PodSecurity \"{}\": {}",
                policy.warn,
                ps::forbidden_detail(&violations)
            ));
        }
        Ok(())
    }
}

/// Parse `--pod-security-default`: a level (`restricted`) for every mode, or `enforce=baseline,warn=restricted`
/// style pairs, each optionally `level:version` (`restricted:v1.30`).
///
/// # Errors
/// A message naming the bad part.
pub fn parse_default(s: &str) -> Result<Policy, String> {
    let parse_lv = |v: &str| -> Result<ps::LevelVersion, String> {
        let (l, ver) = v.split_once(':').unwrap_or((v, "latest"));
        Ok(ps::LevelVersion {
            level: ps::Level::parse(l).map_err(|e| format!("{l:?}: {e}"))?,
            version: ps::Version::parse(ver).map_err(|e| format!("{ver:?}: {e}"))?,
        })
    };
    if !s.contains('=') {
        let lv = parse_lv(s.trim())?;
        return Ok(Policy {
            enforce: lv,
            audit: lv,
            warn: lv,
        });
    }
    let mut p = Policy::default();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (mode, v) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?}: expected mode=level"))?;
        let lv = parse_lv(v)?;
        match mode {
            "enforce" => p.enforce = lv,
            "audit" => p.audit = lv,
            "warn" => p.warn = lv,
            other => return Err(format!("{other:?}: mode must be enforce, audit or warn")),
        }
    }
    Ok(p)
}

/// Parse k3s's `--pod-security-admission-config-file`: an `AdmissionConfiguration`
/// (`apiserver.config.k8s.io/v1`) whose `PodSecurity` plugin carries a `PodSecurityConfiguration`
/// (`pod-security.admission.config.k8s.io/v1`), or that `PodSecurityConfiguration` alone; JSON or YAML.
/// `defaults` (`enforce`, `enforce-version`, `audit`, … as in the namespace labels) and
/// `exemptions.namespaces`/`runtimeClasses` are honoured; `exemptions.usernames` is refused, since Berth
/// has one admin identity.
///
/// # Errors
/// A message naming the bad part.
pub fn parse_config_file(text: &str) -> Result<PodSecurityConfig, String> {
    let v: Value = serde_json::from_str(text)
        .or_else(|_| serde_saphyr::from_str(text))
        .map_err(|e| format!("not JSON or YAML: {e}"))?;
    let psc = match v.get("kind").and_then(Value::as_str) {
        Some("PodSecurityConfiguration") => v.clone(),
        Some("AdmissionConfiguration") => v
            .get("plugins")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|p| p.get("name").and_then(Value::as_str) == Some("PodSecurity"))
            .and_then(|p| p.get("configuration").cloned())
            .ok_or("no PodSecurity plugin configuration")?,
        other => return Err(format!("unexpected kind {other:?}")),
    };
    if psc.get("kind").and_then(Value::as_str) != Some("PodSecurityConfiguration") {
        return Err("the PodSecurity configuration must be a PodSecurityConfiguration".into());
    }
    // The defaults use the label names without the `pod-security.kubernetes.io/` prefix.
    let mut labels = serde_json::Map::new();
    for (k, val) in psc
        .get("defaults")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        labels.insert(format!("pod-security.kubernetes.io/{k}"), val.clone());
    }
    let (defaults, errs) = ps::policy_to_evaluate(Some(&labels), Policy::default());
    if let Some(e) = errs.first() {
        return Err(format!("defaults: {}: {}", e.field, e.detail));
    }
    let list = |k: &str| -> Vec<String> {
        psc.pointer(&format!("/exemptions/{k}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    };
    if !list("usernames").is_empty() {
        return Err("exemptions.usernames is not supported (one admin identity)".into());
    }
    Ok(PodSecurityConfig {
        defaults,
        exempt_namespaces: list("namespaces"),
        exempt_runtime_classes: list("runtimeClasses"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k3s_admission_config_file() {
        let yaml = "apiVersion: apiserver.config.k8s.io/v1\nkind: AdmissionConfiguration\nplugins:\n- name: PodSecurity\n  configuration:\n    apiVersion: pod-security.admission.config.k8s.io/v1\n    kind: PodSecurityConfiguration\n    defaults:\n      enforce: baseline\n      enforce-version: latest\n      warn: restricted\n      warn-version: v1.30\n    exemptions:\n      usernames: []\n      runtimeClasses: []\n      namespaces: [kube-system]\n";
        let c = parse_config_file(yaml).unwrap();
        assert_eq!(c.defaults.enforce.to_string(), "baseline:latest");
        assert_eq!(c.defaults.warn.to_string(), "restricted:v1.30");
        assert_eq!(c.defaults.audit.to_string(), "privileged:latest");
        assert_eq!(c.exempt_namespaces, ["kube-system"]);
        assert!(parse_config_file(&yaml.replace("enforce: baseline", "enforce: strict")).is_err());
        assert!(parse_config_file("kind: Other").is_err());
    }

    #[test]
    fn default_policy_flag() {
        let p = parse_default("restricted").unwrap();
        assert_eq!(p.enforce.to_string(), "restricted:latest");
        assert_eq!(p.warn, p.enforce);
        let p = parse_default("enforce=baseline,warn=restricted:v1.30").unwrap();
        assert_eq!(p.enforce.to_string(), "baseline:latest");
        assert_eq!(p.warn.to_string(), "restricted:v1.30");
        assert_eq!(p.audit.to_string(), "privileged:latest");
        assert!(parse_default("strict").is_err());
        assert!(parse_default("deny=baseline").is_err());
    }
}
