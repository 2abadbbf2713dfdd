//! The one generic registry every kind goes through (upstream `k8s.io/apiserver/pkg/registry/generic/registry`
//! `Store`): create, get, list, update, patch and delete over the revisioned store, with per-kind behaviour
//! coming from `api::strategy` and the few stateful additions (ClusterIP and NodePort allocation, graceful
//! pod deletion) that upstream also keeps in the registry layer. Every write passes the admission chain
//! ([`crate::admission`]: mutating plugins after defaulting, validating ones after the kind's validation),
//! and every object becomes bytes for the store through the encryption configuration
//! ([`crate::encryption`], upstream's storage transformers).

mod at_rest;
mod patch;

pub use patch::{PatchType, apply_patch};

use crate::admission::{self, Attributes, Operation};
use crate::alloc;
use crate::encryption;
use crate::error::{ApiError, ApiResult, Subject};
use crate::object::{self, meta_mut};
use api::resources::{self, Resource, Subresource};
use api::selector::{FieldSelector, LabelSelector};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use store::{KeyValue, Revision, Store};

/// Settings of the registry that come from `berth server` flags.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// `--service-cidr`: the range ClusterIPs are allocated from (IPv4 CIDR).
    pub service_cidr: String,
    /// Inclusive NodePort range (upstream default 30000-32767).
    pub node_port_range: (u16, u16),
    /// Whether every pod bound to a node is deleted gracefully (the node agent confirms), as upstream.
    /// `false` (`--disable-agent`): only pods bound to a registered Node are (a remote `berth agent`
    /// confirms); a pod bound to a name no agent registered is removed at once (nothing would confirm).
    pub graceful_pod_deletion: bool,
    /// The admission chain's settings (PodSecurity defaults and exemptions).
    pub admission: admission::AdmissionConfig,
    /// Encryption at rest (`--secrets-encryption`): the `EncryptionConfiguration` in force, if any.
    pub encryption: Option<encryption::Config>,
    /// Where the encryption configuration lives, so key rotation can rewrite it.
    pub encryption_path: Option<PathBuf>,
    /// Serve lists from the watch cache ([`crate::cacher`], upstream's `--watch-cache`, on by default).
    pub watch_cache: bool,
    /// The cluster token of servers sharing a datastore: a changed encryption configuration is also
    /// stored in the cluster's bootstrap record ([`crate::cluster::save_encryption`]).
    pub cluster_token: Option<crate::cluster::Token>,
    /// Where `berth snapshot save` writes through `/v1-berth/snapshot/save` (`<data-dir>/snapshots`).
    pub snapshot_dir: Option<PathBuf>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            service_cidr: "10.43.0.0/16".into(),
            node_port_range: (30000, 32767),
            graceful_pod_deletion: true,
            admission: Default::default(),
            encryption: None,
            encryption_path: None,
            watch_cache: true,
            cluster_token: None,
            snapshot_dir: None,
        }
    }
}

/// The generic registry: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    config: RegistryConfig,
    /// Serialises Service creates/updates so IP and port allocation never hands out a value twice.
    service_lock: tokio::sync::Mutex<()>,
    /// The admission plugins every write passes.
    admission: admission::Chain,
    /// The encryption configuration in force (identity when empty); swapped by key rotation.
    encryption: RwLock<Arc<encryption::Config>>,
    /// Serialises key rotations and re-encryptions.
    rotation_lock: tokio::sync::Mutex<()>,
    /// The watch cache of each resource listed so far, by key prefix.
    caches: std::sync::Mutex<std::collections::HashMap<String, Arc<crate::cacher::Cacher>>>,
    /// The revision of this server's last write, per resource prefix: what a lister read waits for the
    /// watch cache to have seen (read-your-own-writes without a round trip to the store).
    /// Keyed by (group, plural): no allocation on the write path.
    written: std::sync::Mutex<std::collections::HashMap<(&'static str, &'static str), Revision>>,
}

/// Options of a write, from the query string.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// `fieldManager`.
    pub field_manager: Option<String>,
    /// `dryRun=All`: validate and answer, write nothing.
    pub dry_run: bool,
    /// `fieldValidation`: `Strict`, `Warn` or `Ignore` (upstream default for non-kubectl clients: `Warn`).
    pub field_validation: Option<String>,
    /// `force` (server-side apply).
    pub force: bool,
}

/// `DeleteOptions` that matter here.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// `gracePeriodSeconds`.
    pub grace_period_seconds: Option<i64>,
    /// `propagationPolicy`: `Orphan`, `Background` or `Foreground`.
    pub propagation_policy: Option<String>,
    /// `preconditions.uid`.
    pub precondition_uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub precondition_resource_version: Option<String>,
    /// `dryRun`.
    pub dry_run: bool,
}

/// A list request's filters and paging.
#[derive(Debug, Default)]
pub struct ListOptions {
    /// `labelSelector`.
    pub label_selector: Option<LabelSelector>,
    /// `fieldSelector`.
    pub field_selector: Option<FieldSelector>,
    /// `limit` (0 = all).
    pub limit: usize,
    /// `continue` token.
    pub continue_token: Option<String>,
}

/// The result of a list: items (with resourceVersion set), the list's resourceVersion and a continue token.
pub struct ListResult {
    /// Matching objects.
    pub items: Vec<Value>,
    /// The store revision the list saw.
    pub revision: Revision,
    /// Set when `limit` cut the list.
    pub continue_token: Option<String>,
    /// Objects left after this page (upstream's `remainingItemCount`), when known.
    pub remaining: Option<i64>,
}

/// How a write ended, for the HTTP status code.
pub enum Written {
    /// A new object (201).
    Created(Value),
    /// An existing object changed, or nothing changed (200).
    Updated(Value),
}

pub(crate) fn subject(resource: &Resource, name: &str) -> Subject {
    Subject {
        qualified: resource.qualified(),
        group: resource.group.to_string(),
        plural: resource.plural.to_string(),
        name: name.to_string(),
    }
}

fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

/// Decode a stored plain JSON object and stamp its resourceVersion from the store revision.
fn decode_plain(key: &str, bytes: &[u8], mod_revision: Revision) -> ApiResult<Value> {
    let mut obj: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::Internal(format!("corrupt object at {key}: {e}")))?;
    meta_mut(&mut obj).insert("resourceVersion".into(), Value::String(mod_revision.to_string()));
    Ok(obj)
}

fn generate_suffix() -> String {
    // Upstream's `utilrand.String(5)` alphabet: no vowels, no confusable characters.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    bytes
        .iter()
        .take(5)
        .map(|b| ALPHABET[(*b as usize) % ALPHABET.len()] as char)
        .collect()
}

impl Registry {
    /// A registry over `store`.
    pub fn new(store: Store, config: RegistryConfig) -> Self {
        let encryption = RwLock::new(Arc::new(config.encryption.clone().unwrap_or_default()));
        Self {
            inner: Arc::new(Inner {
                store,
                admission: admission::Chain::new(&config.admission),
                config,
                service_lock: tokio::sync::Mutex::new(()),
                encryption,
                rotation_lock: tokio::sync::Mutex::new(()),
                caches: Default::default(),
                written: Default::default(),
            }),
        }
    }

    /// Decode a stored object (decrypting it when it was written encrypted, upstream's storage
    /// transformer) and stamp its resourceVersion from the store revision.
    ///
    /// # Errors
    /// 500 when the value cannot be decrypted or is not JSON.
    pub fn decode(&self, kv: &KeyValue) -> ApiResult<Value> {
        let cfg = self.encryption();
        if kv.value.starts_with(encryption::ENCRYPTED_PREFIX) || cfg.providers_for(&kv.key).is_some() {
            let (plain, _) = cfg
                .decrypt(&kv.key, &kv.value)
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            return decode_plain(&kv.key, &plain, kv.mod_revision);
        }
        decode_plain(&kv.key, &kv.value, kv.mod_revision)
    }

    /// The bytes to store for `obj` at `key`: JSON without resourceVersion, encrypted when the
    /// encryption configuration covers the resource.
    fn encode(&self, key: &str, obj: &Value) -> ApiResult<Vec<u8>> {
        let mut copy = obj.clone();
        meta_mut(&mut copy).remove("resourceVersion");
        let plain =
            serde_json::to_vec(&copy).map_err(|e| ApiError::Internal(format!("encoding object: {e}")))?;
        self.encryption()
            .encrypt(key, plain)
            .map_err(|e| ApiError::Internal(e.to_string()))
    }

    /// The underlying store (for watch and health checks).
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The registry's settings.
    pub fn config(&self) -> &RegistryConfig {
        &self.inner.config
    }

    /// Read one object.
    pub async fn get(&self, res: &'static Resource, ns: Option<&str>, name: &str) -> ApiResult<Value> {
        Ok(self.get_kv(res, ns, name).await?.1)
    }

    async fn get_kv(
        &self,
        res: &'static Resource,
        ns: Option<&str>,
        name: &str,
    ) -> ApiResult<(KeyValue, Value)> {
        let key = object::key(res, ns, name);
        let kv = self
            .inner
            .store
            .get(&key)
            .await?
            .ok_or_else(|| ApiError::NotFound(subject(res, name)))?;
        let obj = self.decode(&kv)?;
        Ok((kv, obj))
    }

    /// The watch cache of `res`, started on first use (none with `watch_cache` off).
    fn cacher(&self, res: &'static Resource) -> Option<Arc<crate::cacher::Cacher>> {
        if !self.inner.config.watch_cache {
            return None;
        }
        let prefix = object::prefix(res, None);
        let mut caches = self
            .inner
            .caches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let cacher = caches.entry(prefix.clone()).or_insert_with(|| {
            let weak = Arc::downgrade(&self.inner);
            let decode: crate::cacher::Decoder = Arc::new(move |kv: &KeyValue| {
                let inner = weak.upgrade()?;
                Some(Registry { inner }.decode(kv).ok())
            });
            crate::cacher::Cacher::start(self.inner.store.clone(), prefix, decode)
        });
        Some(cacher.clone())
    }

    /// A first page from the watch cache once it has caught up with the store's current revision, each
    /// item given by `shape`; `None` when the cache cannot serve it (a continuation, the cache disabled,
    /// not ready or not caught up within [`crate::cacher::FRESH_TIMEOUT`]).
    async fn cached_page<T>(
        &self,
        res: &'static Resource,
        ns: Option<&str>,
        opts: &ListOptions,
        shape: impl Fn(&crate::cacher::Cached) -> T,
    ) -> ApiResult<Option<crate::cacher::Page<T>>> {
        if opts.continue_token.is_some() {
            return Ok(None);
        }
        let Some(cacher) = self.cacher(res) else {
            return Ok(None);
        };
        let target = self.inner.store.revision().await?;
        if !cacher.fresh(target, crate::cacher::FRESH_TIMEOUT).await {
            return Ok(None);
        }
        let prefix = object::prefix(res, ns);
        Ok(cacher.page(&prefix, opts.limit, |o| matches_filters(o, opts), shape))
    }

    /// The object as the watch cache holds it (`resourceVersion=0` reads: any recent state); `None` when
    /// the cache is disabled, not ready, or does not hold it (the caller reads the store, which also
    /// gives the 404).
    pub fn cached_get(&self, res: &'static Resource, ns: Option<&str>, name: &str) -> Option<Value> {
        self.cacher(res)?.get(&object::key(res, ns, name))
    }

    /// What an admission plugin reads, as upstream's plugins read their informers' listers: the
    /// objects of `res` in `ns` (all namespaces with `None`) from the watch cache as it stands (any
    /// recent state, no wait for the store's current revision), else a consistent list from the store
    /// (cache disabled or not ready yet). Saves every create the store round trips a consistent read
    /// costs (on etcd, one range request for the revision and the wait for the cache to reach it).
    ///
    /// # Errors
    /// As [`Registry::list`], when the store is read.
    pub async fn lister_list(&self, res: &'static Resource, ns: Option<&str>) -> ApiResult<Vec<Value>> {
        if let Some(cacher) = self.lister_cache(res).await
            && let Some(page) = cacher.page(&object::prefix(res, ns), 0, |_| true, |c| c.value.clone())
        {
            return Ok(page.items);
        }
        Ok(self.list(res, ns, &ListOptions::default()).await?.items)
    }

    /// Whether a Node named `name` is registered (from the watch cache as a lister reads it, else the
    /// store).
    async fn node_registered(&self, name: &str) -> bool {
        match api::resources::find("", "v1", "nodes") {
            Some(nodes) => self.lister_get(nodes, None, name).await.is_ok(),
            None => false,
        }
    }

    /// Note a write of `res` acknowledged at `revision` (see [`Registry::lister_cache`]).
    fn note_write(&self, res: &'static Resource, revision: Revision) {
        let mut written = self
            .inner
            .written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let at = written.entry((res.group, res.plural)).or_default();
        *at = (*at).max(revision);
    }

    /// The watch cache of `res` once it has seen this server's last write of `res` (so a lister read
    /// follows every write this server acknowledged, as a client of one API server expects; writes through
    /// other servers show up as the cache follows the store, as in upstream's informers). `None` when
    /// the cache is disabled, not ready, or not caught up within [`crate::cacher::FRESH_TIMEOUT`].
    async fn lister_cache(&self, res: &'static Resource) -> Option<Arc<crate::cacher::Cacher>> {
        let cacher = self.cacher(res)?;
        let target = self
            .inner
            .written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(res.group, res.plural))
            .copied()
            .unwrap_or(0);
        cacher
            .fresh(target, crate::cacher::FRESH_TIMEOUT)
            .await
            .then_some(cacher)
    }

    /// One object as an admission plugin reads it (see [`Registry::lister_list`]): from the watch cache
    /// when it holds it, else from the store, so an object created a moment ago is still found, as
    /// upstream's NamespaceLifecycle falls back to a live lookup when its lister misses.
    ///
    /// # Errors
    /// As [`Registry::get`] (404 when the store does not hold it either).
    pub async fn lister_get(&self, res: &'static Resource, ns: Option<&str>, name: &str) -> ApiResult<Value> {
        if let Some(cacher) = self.lister_cache(res).await
            && let Some(v) = cacher.get(&object::key(res, ns, name))
        {
            return Ok(v);
        }
        self.get(res, ns, name).await
    }

    /// A watch of `res` (in `ns`) from after revision `after`, served from the watch cache's window when
    /// it can ([`crate::cacher::Cacher::watch`]); `None` when the store must serve it (no cache, a
    /// revision before the window, or one the cache does not reach within [`crate::cacher::FRESH_TIMEOUT`]).
    ///
    /// A cache still listing, or a revision the cache has not applied yet (a list just read from the
    /// store, a write acknowledged a moment ago, another server's revision) is waited for, as upstream's
    /// cacher waits for its initialization and in `waitUntilFreshAndBlock` before it serves such a
    /// watch: a store watch opened instead would stay for the watch's whole life, one more etcd watcher
    /// receiving (and one more decode of) every event of the resource.
    pub async fn cached_watch(
        &self,
        res: &'static Resource,
        ns: Option<&str>,
        after: i64,
    ) -> Option<store::Watch> {
        let cacher = self.cacher(res)?;
        let prefix = object::prefix(res, ns);
        if let Some(w) = cacher.watch(&prefix, after) {
            return Some(w);
        }
        if cacher.fresh(after, crate::cacher::FRESH_TIMEOUT).await {
            return cacher.watch(&prefix, after);
        }
        None
    }

    /// [`Registry::list`] as one JSON `<Kind>List` body when the watch cache serves it: the cached objects'
    /// encodings are concatenated, nothing is copied or encoded again per list (upstream's cacher serves
    /// lists from its store without a deep copy). `None` when the list must be read from the store.
    ///
    /// # Errors
    /// As [`Registry::list`].
    pub async fn list_json(
        &self,
        res: &'static Resource,
        ns: Option<&str>,
        opts: &ListOptions,
    ) -> ApiResult<Option<axum::body::Bytes>> {
        let Some(page) = self.cached_page(res, ns, opts, |c| c.json.clone()).await? else {
            return Ok(None);
        };
        let mut meta = serde_json::json!({"resourceVersion": page.revision.to_string()});
        if let Some(k) = &page.continue_after {
            meta["continue"] = Value::String(encode_continue(k, page.revision));
        }
        let head = serde_json::json!({"kind": format!("{}List", res.kind), "apiVersion": res.api_version(), "metadata": meta});
        let head = head.to_string();
        let size: usize = page.items.iter().map(|b| b.len() + 1).sum();
        let mut out = Vec::with_capacity(head.len() + size + 16);
        // `{"apiVersion":…,"kind":…,"metadata":…}` with `,"items":[…]}` in place of its closing brace.
        out.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
        out.extend_from_slice(b",\"items\":[");
        for (i, item) in page.items.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(item);
        }
        out.extend_from_slice(b"]}");
        Ok(Some(out.into()))
    }

    /// List objects, filtered and paged. Items are in key order (namespace, then name), as etcd returns them.
    /// A first page comes from the watch cache once it has caught up with the store's current revision
    /// (upstream's consistent list from cache); continuations and an unready cache read the store.
    pub async fn list(
        &self,
        res: &'static Resource,
        ns: Option<&str>,
        opts: &ListOptions,
    ) -> ApiResult<ListResult> {
        let prefix = object::prefix(res, ns);
        if let Some(page) = self.cached_page(res, ns, opts, |c| c.value.clone()).await? {
            return Ok(ListResult {
                items: page.items,
                revision: page.revision,
                continue_token: page.continue_after.map(|k| encode_continue(&k, page.revision)),
                remaining: None,
            });
        }
        // A field selector pinning metadata.name is a point read (kubectl wait/rollout/delete do this).
        let (start_after, mut revision_floor) = match &opts.continue_token {
            Some(tok) => {
                let (key, rev) = decode_continue(tok)?;
                if !key.starts_with(&prefix) {
                    return Err(ApiError::BadRequest("invalid continue token".into()));
                }
                (Some(key), rev)
            }
            None => (None, 0),
        };
        let mut items = Vec::new();
        let mut last_key: Option<String> = start_after.clone();
        let mut more;
        let page = if opts.limit == 0 { 0 } else { opts.limit.max(1) };
        let mut revision;
        loop {
            // Fetch a chunk; filters may drop items so keep reading until the page is full.
            let chunk = if page == 0 { 0 } else { page.max(64) };
            // Every chunk (and every later page, through the continue token) at the first chunk's
            // revision, as upstream's etcd3 `GetList` reads continuations `WithRev`: one snapshot. A
            // revision compacted since is 410, upstream's expired continue token.
            let res_list = self
                .inner
                .store
                .list_at(&prefix, last_key.as_deref(), chunk, revision_floor)
                .await
                .map_err(|e| match e {
                    store::Error::Compacted { .. } if opts.continue_token.is_some() => ApiError::Gone(
                        "The provided continue parameter is too old to display a consistent list result. \
                         You can start a new list without the continue parameter."
                            .into(),
                    ),
                    e => e.into(),
                })?;
            revision = res_list.revision;
            if revision_floor == 0 {
                revision_floor = revision;
            }
            more = res_list.more;
            let n = res_list.kvs.len();
            for kv in &res_list.kvs {
                last_key = Some(kv.key.clone());
                let obj = self.decode(kv)?;
                if matches_filters(&obj, opts) {
                    items.push(obj);
                    if page != 0 && items.len() == page {
                        // Is anything left after this one?
                        let idx = res_list.kvs.iter().position(|k| k.key == kv.key).unwrap_or(n);
                        more = more || idx + 1 < n;
                        break;
                    }
                }
            }
            if page == 0 || items.len() >= page || !more || n == 0 {
                break;
            }
        }
        if revision_floor == 0 {
            revision_floor = revision;
        }
        let continue_token = if page != 0 && more && items.len() == page {
            last_key.map(|k| encode_continue(&k, revision_floor))
        } else {
            None
        };
        Ok(ListResult {
            items,
            revision: revision_floor,
            continue_token,
            remaining: None,
        })
    }

    /// Create an object (POST). `obj` has already been decoded from the body.
    pub async fn create(
        &self,
        res: &'static Resource,
        ns: Option<&str>,
        mut obj: Value,
        opts: &WriteOptions,
    ) -> ApiResult<Value> {
        if !obj.is_object() {
            return Err(ApiError::BadRequest(
                "the body of the request was in an unknown format".into(),
            ));
        }
        check_type_meta(res, &mut obj)?;
        self.check_namespace_for_write(res, ns, &mut obj)?;
        {
            let meta = meta_mut(&mut obj);
            let name = meta.get("name").and_then(Value::as_str).unwrap_or("").to_string();
            if name.is_empty()
                && let Some(gen_name) = meta
                    .get("generateName")
                    .and_then(Value::as_str)
                    .filter(|g| !g.is_empty())
            {
                let full = format!("{gen_name}{}", generate_suffix());
                meta.insert("name".into(), Value::String(full));
            }
            for k in [
                "resourceVersion",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "selfLink",
            ] {
                meta.remove(k);
            }
            meta.insert("uid".into(), Value::String(uuid::Uuid::new_v4().to_string()));
            meta.insert(
                "creationTimestamp".into(),
                Value::String(object::timestamp(now())),
            );
        }
        api::strategy::prepare_for_create(res.group, res.kind, &mut obj);
        api::strategy::default(res.group, res.kind, &mut obj);
        let name = object::name(&obj).to_string();
        let attrs = Attributes {
            operation: Operation::Create,
            resource: res,
            subresource: None,
            namespace: ns.filter(|_| res.namespaced),
            name: &name,
            old: None,
        };
        self.inner.admission.admit(self, &attrs, &mut obj).await?;
        let mut errors = api::strategy::validate(res.group, res.kind, &obj);
        if name.is_empty() && !errors.iter().any(|e| e.field == "metadata.name") {
            errors.push(api::field::FieldError::required(
                "metadata.name",
                "name or generateName is required",
            ));
        }
        if !errors.is_empty() {
            return Err(ApiError::Invalid {
                subject: subject(res, &name),
                kind: res.qualified_kind(),
                errors,
            });
        }
        self.inner.admission.validate(self, &attrs, &obj).await?;
        if let Some(manager) = &opts.field_manager {
            api::patch::record_update(
                res.group,
                res.kind,
                None,
                &mut obj,
                manager,
                &object::micro_timestamp(now()),
            );
        }
        let _guard = if res.kind == "Service" && res.group.is_empty() {
            Some(self.inner.service_lock.lock().await)
        } else {
            None
        };
        if res.kind == "Service" && res.group.is_empty() {
            // An existing object is a 409, not an allocation error.
            if self
                .inner
                .store
                .get(&object::key(res, ns, &name))
                .await?
                .is_some()
            {
                return Err(ApiError::AlreadyExists(subject(res, &name)));
            }
            let existing = self.all_services().await?;
            alloc::allocate_service(&mut obj, None, &existing, &self.inner.config).map_err(|errors| {
                ApiError::Invalid {
                    subject: subject(res, &name),
                    kind: res.qualified_kind(),
                    errors,
                }
            })?;
        }
        if opts.dry_run {
            return Ok(obj);
        }
        let key = object::key(res, ns, &name);
        match self.inner.store.create(&key, self.encode(&key, &obj)?).await {
            Ok(kv) => {
                self.note_write(res, kv.mod_revision);
                meta_mut(&mut obj).insert(
                    "resourceVersion".into(),
                    Value::String(kv.mod_revision.to_string()),
                );
                Ok(obj)
            }
            Err(store::Error::AlreadyExists { .. }) => Err(ApiError::AlreadyExists(subject(res, &name))),
            Err(e) => Err(e.into()),
        }
    }

    async fn all_services(&self) -> ApiResult<Vec<Value>> {
        let svc =
            resources::find("", "v1", "services").ok_or_else(|| ApiError::Internal("no services".into()))?;
        let list = self.inner.store.list(&object::prefix(svc, None), None, 0).await?;
        list.kvs.iter().map(|kv| self.decode(kv)).collect()
    }

    /// The namespace of a write (upstream `rest.BeforeCreate`/`BeforeUpdate` and the handler's namespace
    /// check): cluster-scoped objects carry none; a namespaced object's body must agree with the path.
    fn check_namespace_for_write(
        &self,
        res: &'static Resource,
        ns: Option<&str>,
        obj: &mut Value,
    ) -> ApiResult<()> {
        if !res.namespaced {
            meta_mut(obj).remove("namespace");
            return Ok(());
        }
        let ns = ns.ok_or_else(|| ApiError::BadRequest("namespace is required".into()))?;
        let body_ns = object::namespace(obj).to_string();
        if !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::BadRequest(
                "the namespace of the provided object does not match the namespace sent on the request"
                    .into(),
            ));
        }
        meta_mut(obj).insert("namespace".into(), Value::String(ns.to_string()));
        Ok(())
    }

    /// Replace an object (PUT), on the main resource or its `/status` (or `/finalize` for namespaces).
    /// A stale `metadata.resourceVersion` is a 409; an update that changes nothing writes nothing.
    pub async fn update(
        &self,
        res: &'static Resource,
        ns: Option<&str>,
        name: &str,
        sub: Option<Subresource>,
        mut obj: Value,
        opts: &WriteOptions,
    ) -> ApiResult<Value> {
        if !obj.is_object() {
            return Err(ApiError::BadRequest(
                "the body of the request was in an unknown format".into(),
            ));
        }
        check_type_meta(res, &mut obj)?;
        let body_name = object::name(&obj).to_string();
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let (kv, old) = self.get_kv(res, ns, name).await?;
        if let Some(rv) = object::str_at(&obj, &["metadata", "resourceVersion"]).filter(|s| !s.is_empty())
            && rv != kv.mod_revision.to_string()
        {
            return Err(ApiError::Conflict(
                subject(res, name),
                "the object has been modified; please apply your changes to the latest version and try again"
                    .into(),
            ));
        }
        self.write_update(res, ns, name, sub, kv, old, obj, opts)
            .await
            .map(|w| match w {
                Written::Created(v) | Written::Updated(v) => v,
            })
    }

    /// [`Registry::update`] as a boxed future, for writes made from inside the admission chain (which
    /// `update` itself runs): its signature, not its body, tells the compiler the future is `Send`, which
    /// breaks the type cycle (ResourceQuota's status writes).
    #[allow(clippy::type_complexity)]
    pub fn update_boxed<'a>(
        &'a self,
        res: &'static Resource,
        ns: Option<&'a str>,
        name: &'a str,
        sub: Option<Subresource>,
        obj: Value,
        opts: &'a WriteOptions,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ApiResult<Value>> + Send + 'a>> {
        Box::pin(self.update(res, ns, name, sub, obj, opts))
    }

    /// The common tail of update and patch: strategy, validation, no-op detection, CAS write, and the
    /// finalizer check that completes a pending deletion.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn write_update(
        &self,
        res: &'static Resource,
        ns: Option<&str>,
        name: &str,
        sub: Option<Subresource>,
        kv: KeyValue,
        old: Value,
        mut obj: Value,
        opts: &WriteOptions,
    ) -> ApiResult<Written> {
        // Metadata the client may not change (upstream `rest.FillObjectMetaSystemFields` / `BeforeUpdate`).
        {
            let old_meta = old.get("metadata").cloned().unwrap_or(json!({}));
            let meta = meta_mut(&mut obj);
            meta.insert("name".into(), Value::String(name.to_string()));
            if let Some(n) = ns.filter(|_| res.namespaced) {
                meta.insert("namespace".into(), Value::String(n.to_string()));
            } else {
                meta.remove("namespace");
            }
            for k in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                match old_meta.get(k) {
                    Some(v) => {
                        meta.insert(k.into(), v.clone());
                    }
                    None => {
                        meta.remove(k);
                    }
                }
            }
            meta.insert(
                "resourceVersion".into(),
                Value::String(kv.mod_revision.to_string()),
            );
            if object::is_deleting(&old) {
                // Upstream: no new finalizers once deletion started (removal is allowed).
                let old_fin = object::finalizers(&old);
                if let Some(Value::Array(fins)) = meta.get_mut("finalizers") {
                    fins.retain(|f| f.as_str().is_some_and(|s| old_fin.iter().any(|o| o == s)));
                }
            }
        }
        match sub {
            Some(Subresource::Status) => {
                api::strategy::prepare_for_status_update(res.group, res.kind, &mut obj, &old);
            }
            Some(Subresource::EphemeralContainers) => {
                // pods/ephemeralcontainers changes only spec.ephemeralContainers (upstream
                // `podEphemeralContainersStrategy`): the stored metadata, with the new resourceVersion.
                let rv = obj.pointer("/metadata/resourceVersion").cloned();
                obj = api::strategy::ephemeral::prepare_for_update(&obj, &old);
                if let (Some(rv), Some(m)) = (rv, obj.get_mut("metadata").and_then(Value::as_object_mut)) {
                    m.insert("resourceVersion".into(), rv);
                }
            }
            Some(Subresource::Finalize) => {
                // namespaces/finalize changes only spec.finalizers.
                let fins = obj.pointer("/spec/finalizers").cloned();
                let mut next = old.clone();
                match fins {
                    Some(f) => api::value::set_in(&mut next, &["spec", "finalizers"], f),
                    None => {
                        if let Some(spec) = next.get_mut("spec").and_then(Value::as_object_mut) {
                            spec.remove("finalizers");
                        }
                    }
                }
                obj = next;
            }
            _ => {
                api::strategy::prepare_for_update(res.group, res.kind, &mut obj, &old);
                api::strategy::default(res.group, res.kind, &mut obj);
            }
        }
        let attrs = Attributes {
            operation: Operation::Update,
            resource: res,
            subresource: sub,
            namespace: ns.filter(|_| res.namespaced),
            name,
            old: Some(&old),
        };
        self.inner.admission.admit(self, &attrs, &mut obj).await?;
        let errors = if sub == Some(Subresource::EphemeralContainers) {
            api::strategy::ephemeral::validate_update(&obj, &old)
        } else {
            api::strategy::validate_update(res.group, res.kind, &obj, &old)
        };
        if !errors.is_empty() {
            return Err(ApiError::Invalid {
                subject: subject(res, name),
                kind: res.qualified_kind(),
                errors,
            });
        }
        self.inner.admission.validate(self, &attrs, &obj).await?;
        let _guard = if res.kind == "Service" && res.group.is_empty() && sub.is_none() {
            Some(self.inner.service_lock.lock().await)
        } else {
            None
        };
        if res.kind == "Service" && res.group.is_empty() && sub.is_none() {
            let existing = self.all_services().await?;
            alloc::allocate_service(&mut obj, Some(&old), &existing, &self.inner.config).map_err(
                |errors| ApiError::Invalid {
                    subject: subject(res, name),
                    kind: res.qualified_kind(),
                    errors,
                },
            )?;
        }
        if let Some(manager) = &opts.field_manager {
            api::patch::record_update(
                res.group,
                res.kind,
                Some(&old),
                &mut obj,
                manager,
                &object::micro_timestamp(now()),
            );
        }
        // No-op writes neither bump the resourceVersion nor notify watchers (upstream `GuaranteedUpdate`).
        if without_volatile(&obj) == without_volatile(&old) {
            return Ok(Written::Updated(old));
        }
        if opts.dry_run {
            return Ok(Written::Updated(obj));
        }
        // A deletion waiting on finalizers completes when the last one is gone.
        if object::is_deleting(&obj) && pending_finalizers(res, &obj).is_empty() {
            let key = object::key(res, ns, name);
            return match self.inner.store.delete(&key, Some(kv.mod_revision)).await {
                Ok(deleted) => {
                    self.note_write(res, deleted.mod_revision);
                    meta_mut(&mut obj).insert(
                        "resourceVersion".into(),
                        Value::String(deleted.mod_revision.to_string()),
                    );
                    Ok(Written::Updated(obj))
                }
                Err(e) => Err(self.map_cas_error(res, name, e)),
            };
        }
        let key = object::key(res, ns, name);
        match self
            .inner
            .store
            .update(&key, self.encode(&key, &obj)?, kv.mod_revision)
            .await
        {
            Ok(new_kv) => {
                self.note_write(res, new_kv.mod_revision);
                meta_mut(&mut obj).insert(
                    "resourceVersion".into(),
                    Value::String(new_kv.mod_revision.to_string()),
                );
                Ok(Written::Updated(obj))
            }
            Err(e) => Err(self.map_cas_error(res, name, e)),
        }
    }

    fn map_cas_error(&self, res: &'static Resource, name: &str, e: store::Error) -> ApiError {
        match e {
            store::Error::Conflict { .. } => ApiError::Conflict(
                subject(res, name),
                "the object has been modified; please apply your changes to the latest version and try again"
                    .into(),
            ),
            store::Error::NotFound { .. } => ApiError::NotFound(subject(res, name)),
            other => other.into(),
        }
    }

    /// Delete an object with upstream's semantics: preconditions, graceful pod deletion, finalizers and the
    /// `orphan` / `foregroundDeletion` finalizers for the propagation policy. Returns the object as it is
    /// afterwards (with `deletionTimestamp` while finalizers are pending) and whether it is gone.
    pub async fn delete(
        &self,
        res: &'static Resource,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> ApiResult<(Value, bool)> {
        for _attempt in 0..8 {
            let (kv, old) = self.get_kv(res, ns, name).await?;
            let attrs = Attributes {
                operation: Operation::Delete,
                resource: res,
                subresource: None,
                namespace: ns.filter(|_| res.namespaced),
                name,
                old: Some(&old),
            };
            self.inner.admission.validate(self, &attrs, &old).await?;
            if let Some(uid) = &opts.precondition_uid
                && object::str_at(&old, &["metadata", "uid"]) != Some(uid.as_str())
            {
                return Err(ApiError::Conflict(
                    subject(res, name),
                    format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        object::str_at(&old, &["metadata", "uid"]).unwrap_or("")
                    ),
                ));
            }
            if let Some(rv) = &opts.precondition_resource_version
                && *rv != kv.mod_revision.to_string()
            {
                return Err(ApiError::Conflict(
                    subject(res, name),
                    format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        kv.mod_revision
                    ),
                ));
            }
            let mut obj = old.clone();
            let now_ts = now();
            // Graceful deletion of pods (upstream `pkg/registry/core/pod/strategy.go` CheckGracefulDelete):
            // a pod on a node waits for its node agent; an unscheduled or finished pod goes at once.
            let mut graceful = false;
            if res.kind == "Pod" && res.group.is_empty() {
                let node = obj
                    .pointer("/spec/nodeName")
                    .and_then(Value::as_str)
                    .filter(|n| !n.is_empty());
                let scheduled = match node {
                    None => false,
                    Some(_) if self.inner.config.graceful_pod_deletion => true,
                    // Servers without an agent of their own (several servers, remote agents) still
                    // wait for a registered node's agent: removing the pod at once would let its
                    // replacement (the same StatefulSet ordinal) start while it still runs there.
                    Some(n) => self.node_registered(n).await,
                };
                let phase = obj.pointer("/status/phase").and_then(Value::as_str).unwrap_or("");
                let terminal = phase == "Succeeded" || phase == "Failed";
                let grace = opts.grace_period_seconds.unwrap_or_else(|| {
                    obj.pointer("/spec/terminationGracePeriodSeconds")
                        .and_then(Value::as_i64)
                        .unwrap_or(30)
                });
                if scheduled && !terminal && grace > 0 {
                    graceful = true;
                    let current = obj
                        .pointer("/metadata/deletionGracePeriodSeconds")
                        .and_then(Value::as_i64);
                    if current.is_none_or(|c| grace < c) {
                        let deadline = now_ts + jiff::SignedDuration::from_secs(grace);
                        let meta = meta_mut(&mut obj);
                        meta.insert(
                            "deletionTimestamp".into(),
                            Value::String(object::timestamp(deadline)),
                        );
                        meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
                    }
                }
            }
            // Propagation finalizers (upstream `deletionFinalizersForGarbageCollection`).
            let policy = opts.propagation_policy.as_deref().unwrap_or("Background");
            let mut fins = object::finalizers(&obj);
            let add = match policy {
                "Orphan" => Some("orphan"),
                "Foreground" => Some("foregroundDeletion"),
                "Background" => None,
                other => {
                    return Err(ApiError::Invalid {
                        subject: subject(res, name),
                        kind: res.qualified_kind(),
                        errors: vec![api::field::FieldError::not_supported(
                            "propagationPolicy",
                            other,
                            &["Foreground", "Background", "Orphan"],
                        )],
                    });
                }
            };
            if !object::is_deleting(&old) {
                if let Some(f) = add
                    && !fins.iter().any(|x| x == f)
                {
                    fins.push(f.to_string());
                }
                if policy != "Orphan" {
                    fins.retain(|f| f != "orphan");
                }
                if !fins.is_empty() {
                    meta_mut(&mut obj).insert("finalizers".into(), json!(fins));
                }
            }
            if res.kind == "Namespace" && res.group.is_empty() {
                api::value::set_in(&mut obj, &["status", "phase"], json!("Terminating"));
            }
            let pending = !pending_finalizers(res, &obj).is_empty();
            if (pending || graceful)
                && !(res.kind == "Pod" && opts.grace_period_seconds == Some(0) && !pending)
            {
                if !object::is_deleting(&obj) {
                    let meta = meta_mut(&mut obj);
                    meta.insert(
                        "deletionTimestamp".into(),
                        Value::String(object::timestamp(now_ts)),
                    );
                    meta.entry("deletionGracePeriodSeconds").or_insert(json!(0));
                }
                if opts.dry_run {
                    return Ok((obj, false));
                }
                if without_volatile(&obj) == without_volatile(&old) {
                    return Ok((old, false));
                }
                let key = object::key(res, ns, name);
                match self
                    .inner
                    .store
                    .update(&key, self.encode(&key, &obj)?, kv.mod_revision)
                    .await
                {
                    Ok(new_kv) => {
                        self.note_write(res, new_kv.mod_revision);
                        meta_mut(&mut obj).insert(
                            "resourceVersion".into(),
                            Value::String(new_kv.mod_revision.to_string()),
                        );
                        return Ok((obj, false));
                    }
                    Err(store::Error::Conflict { .. }) => continue,
                    Err(e) => return Err(self.map_cas_error(res, name, e)),
                }
            }
            if opts.dry_run {
                return Ok((old, true));
            }
            let key = object::key(res, ns, name);
            match self.inner.store.delete(&key, Some(kv.mod_revision)).await {
                Ok(deleted) => {
                    self.note_write(res, deleted.mod_revision);
                    let mut gone = old;
                    meta_mut(&mut gone).insert(
                        "resourceVersion".into(),
                        Value::String(deleted.mod_revision.to_string()),
                    );
                    return Ok((gone, true));
                }
                Err(store::Error::Conflict { .. }) => continue,
                Err(e) => return Err(self.map_cas_error(res, name, e)),
            }
        }
        Err(ApiError::Conflict(
            subject(res, name),
            "too many concurrent writes, try again".into(),
        ))
    }
}

/// Finalizers that still hold an object: `metadata.finalizers`, plus `spec.finalizers` of a Namespace.
fn pending_finalizers(res: &Resource, obj: &Value) -> Vec<String> {
    let mut out = object::finalizers(obj);
    if res.kind == "Namespace"
        && res.group.is_empty()
        && let Some(a) = obj.pointer("/spec/finalizers").and_then(Value::as_array)
    {
        out.extend(a.iter().filter_map(|v| v.as_str().map(str::to_string)));
    }
    out
}

/// The object without fields that change on every write (resourceVersion, managedFields timestamps), for no-op
/// detection.
fn without_volatile(obj: &Value) -> Value {
    let mut c = obj.clone();
    if let Some(meta) = c.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
        if let Some(Value::Array(mf)) = meta.get_mut("managedFields") {
            for entry in mf.iter_mut() {
                if let Some(e) = entry.as_object_mut() {
                    e.remove("time");
                }
            }
        }
    }
    c
}

/// `kind`/`apiVersion` must name the resource when present, and are filled in when absent.
fn check_type_meta(res: &'static Resource, obj: &mut Value) -> ApiResult<()> {
    let api_version = res.api_version();
    if let Some(k) = obj.get("kind").and_then(Value::as_str).filter(|k| !k.is_empty())
        && k != res.kind
    {
        return Err(ApiError::BadRequest(format!(
            "the API version in the data ({}) does not match the expected API version ({api_version})",
            obj.get("apiVersion").and_then(Value::as_str).unwrap_or("")
        ))
        .with_kind_mismatch(k, res.kind));
    }
    if let Some(v) = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
        && v != api_version
    {
        return Err(ApiError::BadRequest(format!(
            "the API version in the data ({v}) does not match the expected API version ({api_version})"
        )));
    }
    let map = obj
        .as_object_mut()
        .ok_or_else(|| ApiError::BadRequest("object expected".into()))?;
    map.insert("kind".into(), Value::String(res.kind.into()));
    map.insert("apiVersion".into(), Value::String(api_version));
    Ok(())
}

impl ApiError {
    fn with_kind_mismatch(self, got: &str, want: &str) -> ApiError {
        ApiError::BadRequest(format!(
            "the kind in the data ({got}) does not match the expected kind ({want})"
        ))
    }
}

fn matches_filters(obj: &Value, opts: &ListOptions) -> bool {
    if let Some(ls) = &opts.label_selector {
        let empty = serde_json::Map::new();
        let labels = obj
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        if !ls.matches(labels) {
            return false;
        }
    }
    if let Some(fs) = &opts.field_selector
        && !fs.matches(obj)
    {
        return false;
    }
    true
}

/// Whether an object passes a list/watch filter (label and field selectors).
pub fn passes(obj: &Value, opts: &ListOptions) -> bool {
    matches_filters(obj, opts)
}

fn encode_continue(key: &str, rev: Revision) -> String {
    use base64::Engine;
    let raw = json!({"v": "berth.dev/v1", "start": key, "rv": rev}).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_continue(tok: &str) -> ApiResult<(String, Revision)> {
    use base64::Engine;
    let bad = || ApiError::BadRequest("invalid continue token".into());
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(tok)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let start = v.get("start").and_then(Value::as_str).ok_or_else(bad)?;
    let rev = v.get("rv").and_then(Value::as_i64).ok_or_else(bad)?;
    Ok((start.to_string(), rev))
}
