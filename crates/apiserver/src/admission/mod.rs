//! The admission chain (upstream `k8s.io/apiserver/pkg/admission`): every write the registry makes passes
//! the mutating plugins, then — after the kind's strategy validated it — the validating plugins, in
//! upstream's default plugin order. A plugin sees the operation, the object and the old object, may
//! change the object (mutating), refuse the request with an [`ApiError`], or add warnings that reach the
//! client as `Warning: 299 - "…"` headers ([`warn`], upstream `warning.AddWarning` on the request context).
//!
//! Plugins: [`lifecycle`] (NamespaceLifecycle), [`limitranger`] (LimitRanger), [`priority`] (Priority),
//! [`storageclass`] (DefaultStorageClass), [`tolerations`] (DefaultTolerationSeconds), [`podsecurity`]
//! (PodSecurity) and [`quota`] (ResourceQuota).

pub mod lifecycle;
pub mod limitranger;
pub mod podsecurity;
pub mod priority;
pub mod quota;
pub mod storageclass;
pub mod tolerations;

use crate::error::ApiResult;
use crate::registry::Registry;
use api::resources::{Resource, Subresource};
use serde_json::Value;
use std::cell::RefCell;
use std::future::Future;

/// The operation being admitted (upstream `admission.Operation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// POST, or server-side apply of a missing object.
    Create,
    /// PUT or PATCH.
    Update,
    /// DELETE.
    Delete,
}

/// What a plugin knows about the request (upstream `admission.Attributes`).
#[derive(Debug, Clone, Copy)]
pub struct Attributes<'a> {
    /// The operation.
    pub operation: Operation,
    /// The resource written.
    pub resource: &'static Resource,
    /// The subresource (`status`, `finalize`), if any.
    pub subresource: Option<Subresource>,
    /// The request's namespace (`None` for cluster-scoped resources).
    pub namespace: Option<&'a str>,
    /// The object's name.
    pub name: &'a str,
    /// The stored object an update or delete starts from.
    pub old: Option<&'a Value>,
}

impl Attributes<'_> {
    /// Whether the resource is core/v1 `kind`.
    pub fn is_core(&self, kind: &str) -> bool {
        self.resource.group.is_empty() && self.resource.kind == kind
    }
}

/// One plugin of the chain. An enum rather than trait objects: the set is closed and each plugin's
/// methods are async.
#[derive(Debug, Clone)]
pub enum Plugin {
    /// `NamespaceLifecycle`: objects only in existing, non-terminating namespaces; the system
    /// namespaces cannot be deleted.
    NamespaceLifecycle,
    /// `DefaultStorageClass`: claims without a class get the default one.
    DefaultStorageClass,
    /// `DefaultTolerationSeconds`: pods tolerate a not-ready or unreachable node for 300 s.
    DefaultTolerationSeconds,
    /// `PodSecurity`: the Pod Security Standards of the namespace's labels.
    PodSecurity(podsecurity::PodSecurity),
    /// `LimitRanger`: default container resources, refuse pods and claims outside the LimitRanges.
    LimitRanger,
    /// `Priority`: resolve a pod's PriorityClass to its priority.
    Priority,
    /// `ResourceQuota`: charge new objects to their namespace's quotas.
    ResourceQuota,
}

impl Plugin {
    /// Upstream's plugin name.
    pub fn name(&self) -> &'static str {
        match self {
            Plugin::NamespaceLifecycle => "NamespaceLifecycle",
            Plugin::DefaultStorageClass => "DefaultStorageClass",
            Plugin::DefaultTolerationSeconds => "DefaultTolerationSeconds",
            Plugin::PodSecurity(_) => "PodSecurity",
            Plugin::LimitRanger => "LimitRanger",
            Plugin::Priority => "Priority",
            Plugin::ResourceQuota => "ResourceQuota",
        }
    }
}

/// Settings of the chain that come from `berth server` flags.
#[derive(Debug, Clone, Default)]
pub struct AdmissionConfig {
    /// PodSecurity's defaults and exemptions.
    pub pod_security: podsecurity::PodSecurityConfig,
}

/// The mutating plugins, then the validating ones, each in upstream's recommended order
/// (`kube-apiserver --enable-admission-plugins` defaults).
#[derive(Debug, Clone)]
pub struct Chain {
    mutating: Vec<Plugin>,
    validating: Vec<Plugin>,
}

impl Chain {
    /// The default chain: NamespaceLifecycle, LimitRanger, DefaultStorageClass, Priority and
    /// DefaultTolerationSeconds mutate; NamespaceLifecycle, LimitRanger, PodSecurity and ResourceQuota
    /// (last, so only requests every other plugin let through are charged) validate.
    pub fn new(config: &AdmissionConfig) -> Chain {
        Chain {
            mutating: vec![
                Plugin::NamespaceLifecycle,
                Plugin::LimitRanger,
                Plugin::DefaultStorageClass,
                Plugin::Priority,
                Plugin::DefaultTolerationSeconds,
            ],
            validating: vec![
                Plugin::NamespaceLifecycle,
                Plugin::LimitRanger,
                Plugin::PodSecurity(podsecurity::PodSecurity::new(config.pod_security.clone())),
                Plugin::ResourceQuota,
            ],
        }
    }

    /// Run the mutating plugins over `obj` (create/update), before the kind's validation.
    ///
    /// # Errors
    /// The first plugin's refusal (403 Forbidden, 404 for a missing namespace, …).
    pub async fn admit(&self, reg: &Registry, attrs: &Attributes<'_>, obj: &mut Value) -> ApiResult<()> {
        for p in &self.mutating {
            match p {
                Plugin::NamespaceLifecycle => lifecycle::admit(reg, attrs, obj).await?,
                Plugin::DefaultStorageClass => storageclass::admit(reg, attrs, obj).await?,
                Plugin::DefaultTolerationSeconds => tolerations::admit(attrs, obj),
                Plugin::LimitRanger => limitranger::admit(reg, attrs, obj).await?,
                Plugin::Priority => priority::admit(reg, attrs, obj).await?,
                Plugin::PodSecurity(_) | Plugin::ResourceQuota => {}
            }
        }
        Ok(())
    }

    /// Run the validating plugins over the object about to be written (for a delete: the stored one).
    ///
    /// # Errors
    /// The first plugin's refusal.
    pub async fn validate(&self, reg: &Registry, attrs: &Attributes<'_>, obj: &Value) -> ApiResult<()> {
        for p in &self.validating {
            match p {
                Plugin::NamespaceLifecycle => lifecycle::validate(attrs)?,
                Plugin::PodSecurity(ps) => ps.validate(reg, attrs, obj).await?,
                Plugin::LimitRanger => limitranger::validate(reg, attrs, obj).await?,
                Plugin::ResourceQuota => quota::validate(reg, attrs, obj).await?,
                Plugin::DefaultStorageClass | Plugin::DefaultTolerationSeconds | Plugin::Priority => {}
            }
        }
        Ok(())
    }
}

tokio::task_local! {
    static WARNINGS: RefCell<Vec<String>>;
}

/// Add a warning to the current request's response (upstream `warning.AddWarning`); duplicates are
/// dropped. Outside a request (bootstrap, tests) the warning is discarded.
pub fn warn(message: impl Into<String>) {
    let message = message.into();
    let _ = WARNINGS.try_with(|w| {
        let mut w = w.borrow_mut();
        if !w.contains(&message) {
            w.push(message);
        }
    });
}

/// Run a request handler collecting the warnings its plugins add.
pub async fn collect_warnings<F: Future>(f: F) -> (F::Output, Vec<String>) {
    WARNINGS
        .scope(RefCell::new(Vec::new()), async move {
            let out = f.await;
            let warnings = WARNINGS.with(|w| w.take());
            (out, warnings)
        })
        .await
}
