//! The pods bound to this node, as the kubelet runs them (upstream `pkg/kubelet`: `syncPod`,
//! `kuberuntime_container.go`, `status_manager.go`): each container started through [`crate::runtime`] from
//! an image in the node's store, init containers to completion first and in order, restarts by
//! `restartPolicy` with upstream's back-off (10 s doubling to 5 min), status written through `pods/status`,
//! graceful termination (SIGTERM, then SIGKILL when `deletionTimestamp` passes) and the final deletion
//! with grace period 0. Containers found on disk for pods that no longer exist are stopped and removed.
//!
//! Each pod has its own network namespace on the node's bridge ([`crate::network`]); `hostNetwork` pods
//! share the node's (their `podIP` is the node's address).
//! Probes are not run yet: a running container counts as ready.

use crate::Config;
use crate::image::ImageStore;
use crate::probe;
use crate::runtime::{self, Bind, ContainerSpec, State};
use controller_runtime::{Informers, Settings};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, PersistentVolume, PersistentVolumeClaim, Pod, Secret,
};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::watcher;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// First restart back-off (upstream `initialBackoff`).
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(10);
/// Back-off ceiling (upstream `MaxContainerBackOff`).
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Whether this agent must finish `p`'s deletion.
pub fn must_finish_deletion(node: &str, p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_some()
        && p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node)
}

/// Kubernetes' argv rule (`command` replaces the image's Entrypoint and drops its Cmd; `args` alone
/// replaces Cmd), with `$(VAR)` references expanded from `env` (`$$` escapes), as upstream
/// `kubecontainer.ExpandContainerCommandAndArgs`.
pub fn argv(
    entrypoint: Option<&[String]>,
    cmd: Option<&[String]>,
    command: Option<&[String]>,
    args: Option<&[String]>,
    env: &[(String, String)],
) -> Vec<String> {
    let expand = |v: &String| expand_vars(v, env);
    match (command, args) {
        (Some(c), a) => c.iter().chain(a.unwrap_or(&[])).map(expand).collect(),
        (None, Some(a)) => entrypoint
            .unwrap_or(&[])
            .iter()
            .cloned()
            .chain(a.iter().map(expand))
            .collect(),
        (None, None) => entrypoint
            .unwrap_or(&[])
            .iter()
            .chain(cmd.unwrap_or(&[]))
            .cloned()
            .collect(),
    }
}

/// Expand `$(NAME)` from `env`; unknown references stay as written; `$$` is a literal `$`.
pub fn expand_vars(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// `/etc/hosts` as the kubelet writes it (`managedHostsFileContent`).
pub fn hosts_file(
    ip: &str,
    hostname: &str,
    subdomain: Option<&str>,
    namespace: &str,
    domain: &str,
) -> String {
    let mut s = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    match subdomain.filter(|s| !s.is_empty()) {
        Some(sub) => s.push_str(&format!(
            "{ip}\t{hostname}.{sub}.{namespace}.svc.{domain}\t{hostname}\n"
        )),
        None => s.push_str(&format!("{ip}\t{hostname}\n")),
    }
    s
}

/// An image pull of one container.
enum Pull {
    /// The pull task and the back-off delay to apply if it fails.
    Running(tokio::task::JoinHandle<Result<String, String>>, Duration),
    /// Failed: no new attempt before the instant; the delay doubles on each failure.
    Failed(Instant, Duration, String),
}

/// First image-pull back-off; it doubles up to [`BACKOFF_MAX`] (upstream's `backOffPeriod`).
pub const IMAGE_BACKOFF_INITIAL: Duration = Duration::from_secs(10);

struct Agent {
    client: kube::Client,
    cfg: Config,
    images: ImageStore,
    berth: PathBuf,
    /// (pod uid, container) → (earliest next start, current back-off).
    backoff: HashMap<(String, String), (Instant, Duration)>,
    /// Pod uid → last status written.
    written: HashMap<String, Value>,
    /// (pod uid, container) → its image pull, running or failed.
    pulls: HashMap<(String, String), Pull>,
    /// The node's bridge, known once the Node has its pod CIDR.
    bridge: Option<crate::network::Bridge>,
    /// (pod uid, container, probe) → (the container run it belongs to, its tracker).
    probes: HashMap<(String, String, probe::Kind), (String, probe::Tracker)>,
    /// Container lifecycle events that wake the loop between resyncs.
    pleg: crate::pleg::Pleg,
    /// The node's allocatable resources, as registered (admission checks requests against them).
    allocatable: crate::admission::Allocatable,
}

/// Run until the process ends.
pub async fn run(client: kube::Client, cfg: Config) {
    let images = match ImageStore::open(&cfg.data_dir) {
        Ok(i) => i,
        Err(e) => {
            tracing::error!(error = %e, "image store");
            return;
        }
    };
    import_dropped(&images, &cfg);
    let berth = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("berth"));
    let api: Api<Pod> = Api::all(client.clone());
    let wc = watcher::Config::default()
        .any_semantic()
        .fields(&format!("spec.nodeName={}", cfg.node_name));
    let mut informers = Informers::new();
    let store = informers.watch(api, wc);
    let (pleg, container_events) = crate::pleg::Pleg::new();
    informers.wake_on("container events", container_events);
    let mut agent = Agent {
        client,
        cfg,
        images,
        berth,
        backoff: HashMap::new(),
        written: HashMap::new(),
        pulls: HashMap::new(),
        bridge: None,
        probes: HashMap::new(),
        pleg,
        allocatable: crate::admission::Allocatable::of_machine(&crate::node::Machine::read()),
    };
    // A sync pass at least every 500 ms (probes, back-offs, grace periods) and at once on a change of a
    // pod or of a container (a start or exit the shim recorded, see `pleg`); none before the pod cache
    // has its full list (nothing is started or collected on a partial one).
    let settings = Settings {
        debounce: Duration::ZERO,
        resync: Duration::from_millis(500),
        ..Settings::default()
    };
    let mut passes = informers.into_loop("pods", settings);
    while let Some(_pass) = passes.next_pass().await {
        let pods: Vec<Pod> = store.state().iter().map(|p| (**p).clone()).collect();
        agent.sync_all(&pods).await;
    }
}

/// Archives dropped into `<data-dir>/agent/images/` are imported at start (the k3s air-gap convention).
fn import_dropped(images: &ImageStore, cfg: &Config) {
    let dir = cfg.data_dir.join("agent/images");
    let Ok(rd) = std::fs::read_dir(&dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if p.is_file()
            && [".tar", ".tar.gz", ".tgz", ".tar.zst"]
                .iter()
                .any(|x| name.ends_with(x))
        {
            match images.import(&p) {
                Ok(named) => tracing::info!(archive = %p.display(), images = ?named, "imported"),
                Err(e) => tracing::warn!(archive = %p.display(), error = %e, "import failed"),
            }
        }
    }
}

/// The pod's phase from its app containers' statuses (as the kubelet's `getPhase`): Pending while
/// initializing or while a container waits without having run; Running while any runs, and for
/// `restartPolicy: Always` while they are all stopped (a waiting container with a last termination counts
/// as stopped: it is restarting, e.g. in CrashLoopBackOff); once all stopped, Succeeded when every one
/// exited 0, Failed under `Never`, Running under `OnFailure` (it restarts).
fn pod_phase(initialized: bool, app: &[Value], restart_policy: &str) -> &'static str {
    let (mut running, mut stopped, mut succeeded, mut waiting) = (0, 0, 0, 0);
    for s in app {
        let state = &s["state"];
        if state.get("running").is_some() {
            running += 1;
        } else if let Some(t) = state.get("terminated") {
            stopped += 1;
            if t["exitCode"] == 0 {
                succeeded += 1;
            }
        } else if s["lastState"].get("terminated").is_some() {
            stopped += 1;
        } else {
            waiting += 1;
        }
    }
    if !initialized || waiting > 0 || app.is_empty() {
        "Pending"
    } else if running > 0 || restart_policy == "Always" {
        "Running"
    } else if stopped == succeeded {
        "Succeeded"
    } else if restart_policy == "Never" {
        "Failed"
    } else {
        "Running"
    }
}

fn pod_dir(cfg: &Config, uid: &str) -> PathBuf {
    cfg.data_dir.join("agent/pods").join(uid)
}

fn host_network(p: &Pod) -> bool {
    p.spec.as_ref().and_then(|s| s.host_network) == Some(true)
}

/// The pod's IP: the node's with `hostNetwork`, else its own once its network is set up.
fn pod_ip(cfg: &Config, p: &Pod) -> std::net::IpAddr {
    if host_network(p) {
        return cfg.node_ip;
    }
    let dir = pod_dir(cfg, p.metadata.uid.as_deref().unwrap_or(""));
    crate::network::pod_ip(&dir).map_or(cfg.node_ip, std::net::IpAddr::V4)
}

/// The pod's `/etc/resolv.conf` by its `dnsPolicy`, as the kubelet writes it (`pkg/kubelet/network/dns`):
/// `ClusterFirst` (the default; for `hostNetwork` pods only with `ClusterFirstWithHostNet`) names the
/// cluster DNS with the search path `<ns>.svc.<domain> svc.<domain> <domain>` and `ndots:5`; `Default`
/// (and `hostNetwork` with `ClusterFirst`) is the node's own file. `dnsConfig` nameservers, searches and
/// options are appended.
pub fn resolv_conf(cfg: &Config, p: &Pod) -> String {
    let spec = p.spec.clone().unwrap_or_default();
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let hostnet = spec.host_network == Some(true);
    let cluster = match policy {
        "ClusterFirstWithHostNet" => true,
        "ClusterFirst" => !hostnet,
        _ => false,
    };
    let ns = p.metadata.namespace.as_deref().unwrap_or("default");
    let d = &cfg.cluster_domain;
    let (mut servers, mut search, mut options) = if cluster {
        (
            vec![cfg.cluster_dns.to_string()],
            vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.clone()],
            vec!["ndots:5".to_string()],
        )
    } else if policy == "None" {
        (Vec::new(), Vec::new(), Vec::new())
    } else {
        return std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    };
    if let Some(dc) = &spec.dns_config {
        servers.extend(dc.nameservers.clone().unwrap_or_default());
        search.extend(dc.searches.clone().unwrap_or_default());
        for o in dc.options.iter().flatten() {
            let o = match &o.value {
                Some(v) => format!("{}:{v}", o.name.clone().unwrap_or_default()),
                None => o.name.clone().unwrap_or_default(),
            };
            options.push(o);
        }
    }
    let mut out = String::new();
    for s in servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

/// The name of the bridge pods are attached to.
pub const BRIDGE: &str = "berth0";

impl Agent {
    async fn sync_all(&mut self, pods: &[Pod]) {
        let live: Vec<String> = pods.iter().filter_map(|p| p.metadata.uid.clone()).collect();
        let rejected = self.admit(pods).await;
        for p in pods {
            if p.metadata.uid.as_ref().is_some_and(|u| rejected.contains(u)) {
                continue;
            }
            if let Err(e) = self.sync_pod(p).await {
                tracing::debug!(pod = ?p.metadata.name, error = %e, "pod sync");
            }
        }
        // Per-container state of pods that are gone (pulls of a deleted pod are abandoned).
        self.backoff.retain(|(uid, _), _| live.contains(uid));
        self.pulls.retain(|(uid, _), pull| {
            let keep = live.contains(uid);
            if let (false, Pull::Running(h, _)) = (keep, pull) {
                h.abort();
            }
            keep
        });
        self.probes.retain(|(uid, _, _), _| live.contains(uid));
        self.pleg.forget_removed();
        // Containers of pods that are gone: stop, then remove.
        let root = self.cfg.data_dir.join("agent/pods");
        if let Ok(rd) = std::fs::read_dir(&root) {
            for e in rd.flatten() {
                let uid = e.file_name().to_string_lossy().into_owned();
                if live.contains(&uid) {
                    continue;
                }
                if stop_all(&e.path(), true) {
                    let _ = crate::network::teardown(&uid, &e.path());
                    let _ = std::fs::remove_dir_all(e.path());
                    self.written.remove(&uid);
                }
            }
        }
    }

    /// Kubelet admission of the pods seen for the first time, oldest first (upstream
    /// `predicateAdmitHandler` with `GeneralPredicates`, in its order): a pod whose requests do not fit
    /// the node's allocatable beside the pods already admitted here is rejected `Failed` with reason
    /// `OutOfcpu`/`OutOfmemory`/`OutOfpods` and `Node didn't have enough resource: …`
    /// (`crate::admission`); a pod whose host ports collide with an admitted pod's, with reason
    /// `NodePorts` and `Predicate NodePorts failed: …`; each message prefixed `Pod was rejected: ` (upstream
    /// `rejectPod`). A rejected pod is never started; its controller replaces it. Returns the uids
    /// rejected in this pass.
    async fn admit(&mut self, pods: &[Pod]) -> std::collections::HashSet<String> {
        let terminal = |p: &Pod| {
            matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        };
        let admitted = |p: &Pod| {
            pod_dir(&self.cfg, p.metadata.uid.as_deref().unwrap_or(""))
                .join("pod")
                .exists()
        };
        let running: Vec<&Pod> = pods.iter().filter(|p| admitted(p) && !terminal(p)).collect();
        let mut used: Vec<api::hostports::HostPort> =
            running.iter().flat_map(|p| api::hostports::of(p)).collect();
        let mut requested = crate::admission::Requests::default();
        for p in &running {
            requested += crate::admission::pod_requests(p);
        }
        let mut count = i64::try_from(running.len()).unwrap_or(i64::MAX);
        let mut fresh: Vec<&Pod> = pods
            .iter()
            .filter(|p| !admitted(p) && !terminal(p) && p.metadata.deletion_timestamp.is_none())
            .collect();
        fresh.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
        let mut rejected = std::collections::HashSet::new();
        for p in fresh {
            let asks = crate::admission::pod_requests(p);
            let (reason, message) =
                match crate::admission::fits(asks, requested, count, &self.allocatable) {
                    Some(short) => (short.reason(), short.message()),
                    None if api::hostports::collide(p, &used) => (
                        "NodePorts".to_string(),
                        "Pod was rejected: Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports".to_string(),
                    ),
                    None => {
                        used.extend(api::hostports::of(p));
                        requested += asks;
                        count += 1;
                        continue;
                    }
                };
            let uid = p.metadata.uid.clone().unwrap_or_default();
            rejected.insert(uid.clone());
            let api: Api<Pod> =
                Api::namespaced(self.client.clone(), p.metadata.namespace.as_deref().unwrap_or(""));
            let status = json!({"metadata": {"uid": uid},
                                "status": {"phase": "Failed", "reason": reason, "message": message}});
            match api
                .patch_status(
                    p.metadata.name.as_deref().unwrap_or(""),
                    &PatchParams::default(),
                    &Patch::Merge(status),
                )
                .await
            {
                Ok(_) => tracing::info!(pod = ?p.metadata.name, %reason, "rejected at admission"),
                Err(e) => {
                    tracing::warn!(pod = ?p.metadata.name, error = %e, "writing the admission rejection")
                }
            }
        }
        rejected
    }

    async fn sync_pod(&mut self, p: &Pod) -> Result<(), String> {
        let uid = p.metadata.uid.clone().unwrap_or_default();
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        let name = p.metadata.name.clone().unwrap_or_default();
        let dir = pod_dir(&self.cfg, &uid);
        let spec = p.spec.clone().unwrap_or_default();
        if p.metadata.deletion_timestamp.is_some() {
            let deadline_passed = p
                .metadata
                .deletion_timestamp
                .as_ref()
                .is_some_and(|t| t.0 <= jiff::Timestamp::now());
            self.pre_stop(p, &dir);
            if stop_all(&dir, deadline_passed) {
                let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
                let dp = DeleteParams {
                    grace_period_seconds: Some(0),
                    preconditions: Some(Preconditions {
                        uid: Some(uid.clone()),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                };
                match api.delete(&name, &dp).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                    Err(e) => return Err(e.to_string()),
                }
                let _ = crate::network::teardown(&uid, &dir);
                let _ = std::fs::remove_dir_all(&dir);
                self.written.remove(&uid);
            }
            return Ok(());
        }
        let phase = p
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or("Pending");
        if matches!(phase, "Succeeded" | "Failed") {
            return Ok(());
        }
        let restart_policy = spec.restart_policy.clone().unwrap_or_else(|| "Always".into());
        // The kubelet API finds a pod's containers by namespace/name.
        if !dir.join("pod").exists() {
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            std::fs::write(dir.join("pod"), format!("{ns}/{name}")).map_err(|e| e.to_string())?;
        }
        let mut waiting: BTreeMap<String, (String, String)> = BTreeMap::new();
        // Volumes first: a claim that is not bound yet keeps every container waiting.
        let binds_by_volume = match self.volumes(p, &dir).await {
            Ok(v) => v,
            Err(msg) => {
                for c in spec.init_containers.iter().flatten().chain(&spec.containers) {
                    waiting.insert(c.name.clone(), ("ContainerCreating".into(), msg.clone()));
                }
                return self.write_status(p, &dir, &waiting, false, &HashMap::new()).await;
            }
        };
        // The pod's network namespace, veth and address (upstream: the sandbox, before any container).
        if !host_network(p) && crate::network::pod_ip(&dir).is_none() {
            let set_up = match self.bridge().await {
                Ok(b) => {
                    let (u, d) = (uid.clone(), dir.clone());
                    tokio::task::spawn_blocking(move || b.setup(&u, &d))
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|r| r.map_err(|e| e.to_string()))
                }
                Err(e) => Err(e),
            };
            if let Err(msg) = set_up {
                let msg = format!("setting up the pod network: {msg}");
                for c in spec.init_containers.iter().flatten().chain(&spec.containers) {
                    waiting.insert(c.name.clone(), ("ContainerCreating".into(), msg.clone()));
                }
                return self.write_status(p, &dir, &waiting, false, &HashMap::new()).await;
            }
        }
        // Init containers, in order, each to completion.
        let mut initialized = true;
        for c in spec.init_containers.iter().flatten() {
            let cdir = dir.join("init").join(&c.name);
            self.pleg.watch(&cdir);
            match runtime::state(&cdir) {
                State::Exited { code: 0, .. } => continue,
                State::Running { .. } | State::Starting | State::Stopping => {
                    initialized = false;
                    break;
                }
                State::Exited { code, .. } if restart_policy == "Never" => {
                    let _ = code;
                    initialized = false;
                    break;
                }
                State::Exited { .. } | State::Absent => {
                    initialized = false;
                    self.start(p, c, &cdir, &binds_by_volume, &mut waiting).await;
                    break;
                }
            }
        }
        if initialized {
            for c in &spec.containers {
                let cdir = dir.join("containers").join(&c.name);
                self.pleg.watch(&cdir);
                match runtime::state(&cdir) {
                    State::Running { .. } | State::Starting | State::Stopping => {}
                    State::Absent => self.start(p, c, &cdir, &binds_by_volume, &mut waiting).await,
                    State::Exited { code, .. } => {
                        let restart =
                            restart_policy == "Always" || (restart_policy == "OnFailure" && code != 0);
                        if restart {
                            self.start(p, c, &cdir, &binds_by_volume, &mut waiting).await;
                        }
                    }
                }
            }
        }
        // Ephemeral containers (`kubectl debug`), once the pod runs: each started once, never restarted
        // (upstream: they have no restart policy of their own); kept with the app containers, whose
        // names they may not share.
        if initialized {
            for c in ephemeral_containers(&spec) {
                let cdir = dir.join("containers").join(&c.name);
                self.pleg.watch(&cdir);
                if runtime::state(&cdir) == State::Absent {
                    self.start(p, &c, &cdir, &binds_by_volume, &mut waiting).await;
                }
            }
        }
        let verdicts = if initialized {
            self.run_probes(p, &dir).await
        } else {
            HashMap::new()
        };
        self.write_status(p, &dir, &waiting, initialized, &verdicts).await
    }

    /// Run the probes that are due for the pod's running containers; returns container → (started, ready)
    /// for containers with probes. A failed liveness or startup probe kills the run (it restarts by policy).
    async fn run_probes(&mut self, p: &Pod, dir: &Path) -> HashMap<String, (bool, bool)> {
        let uid = p.metadata.uid.clone().unwrap_or_default();
        let now = Instant::now();
        let mut out = HashMap::new();
        let mut due = Vec::new();
        for c in &p.spec.as_ref().map(|s| s.containers.clone()).unwrap_or_default() {
            let cdir = dir.join("containers").join(&c.name);
            let State::Running { started, .. } = runtime::state(&cdir) else {
                continue;
            };
            let kinds = [
                (probe::Kind::Startup, &c.startup_probe),
                (probe::Kind::Liveness, &c.liveness_probe),
                (probe::Kind::Readiness, &c.readiness_probe),
            ];
            if kinds.iter().all(|(_, pr)| pr.is_none()) {
                continue;
            }
            let verdict = |kind| {
                self.probes
                    .get(&(uid.clone(), c.name.clone(), kind))
                    .filter(|(run, _)| run == &started)
                    .and_then(|(_, t)| t.passing)
            };
            let startup_passed = c.startup_probe.is_none() || verdict(probe::Kind::Startup) == Some(true);
            let ready = startup_passed
                && (c.readiness_probe.is_none() || verdict(probe::Kind::Readiness) == Some(true));
            out.insert(c.name.clone(), (startup_passed, ready));
            for (kind, pr) in kinds {
                let Some(pr) = pr else { continue };
                if kind != probe::Kind::Startup && !startup_passed {
                    continue;
                }
                if kind == probe::Kind::Startup && startup_passed {
                    continue;
                }
                let key = (uid.clone(), c.name.clone(), kind);
                let entry = self
                    .probes
                    .entry(key.clone())
                    .or_insert_with(|| (started.clone(), probe::Tracker::new(now, pr)));
                if entry.0 != started {
                    *entry = (started.clone(), probe::Tracker::new(now, pr));
                }
                if entry.1.due(now) {
                    due.push((key, c.clone(), pr.clone(), cdir.clone()));
                }
            }
        }
        let ip = pod_ip(&self.cfg, p);
        let berth = self.berth.clone();
        let results = futures::future::join_all(
            due.iter()
                .map(|(_, c, pr, cdir)| probe::run(&berth, cdir, c, pr, ip)),
        )
        .await;
        for ((key, c, pr, cdir), result) in due.into_iter().zip(results) {
            if let Err(msg) = &result {
                tracing::debug!(pod = ?p.metadata.name, container = %c.name, kind = ?key.2, %msg, "probe failed");
            }
            let Some((_, tracker)) = self.probes.get_mut(&key) else {
                continue;
            };
            let verdict = tracker.record(&pr, result.is_ok(), Instant::now());
            match (key.2, verdict) {
                (probe::Kind::Liveness | probe::Kind::Startup, Some(false)) => {
                    // Upstream: "Container … failed liveness probe, will be restarted".
                    runtime::signal(&cdir, nix::sys::signal::Signal::SIGKILL);
                }
                (probe::Kind::Readiness | probe::Kind::Startup, _) => {
                    let startup_passed = c.startup_probe.is_none()
                        || (key.2 == probe::Kind::Startup && verdict == Some(true))
                        || out.get(&c.name).is_some_and(|v| v.0);
                    let ready = startup_passed
                        && (c.readiness_probe.is_none()
                            || self
                                .probes
                                .get(&(key.0.clone(), key.1.clone(), probe::Kind::Readiness))
                                .and_then(|(_, t)| t.passing)
                                == Some(true));
                    out.insert(c.name.clone(), (startup_passed, ready));
                }
                _ => {}
            }
        }
        out
    }

    /// Start (or restart, honouring the back-off) one container.
    async fn start(
        &mut self,
        p: &Pod,
        c: &Container,
        cdir: &Path,
        volumes: &HashMap<String, PathBuf>,
        waiting: &mut BTreeMap<String, (String, String)>,
    ) {
        let uid = p.metadata.uid.clone().unwrap_or_default();
        let key = (uid, c.name.clone());
        let restarting = !matches!(runtime::state(cdir), State::Absent);
        if restarting
            && let Some((next, _)) = self.backoff.get(&key)
            && Instant::now() < *next
        {
            waiting.insert(
                c.name.clone(),
                (
                    "CrashLoopBackOff".into(),
                    format!("back-off restarting failed container {}", c.name),
                ),
            );
            return;
        }
        let image = c.image.clone().unwrap_or_default();
        // imagePullPolicy as the kubelet's image manager applies it (defaulted by the API server:
        // Always for `:latest` or no tag, IfNotPresent otherwise).
        let latest = !image.contains('@')
            && image
                .rsplit('/')
                .next()
                .is_none_or(|l| !l.contains(':') || l.ends_with(":latest"));
        let policy = c.image_pull_policy.clone().unwrap_or_else(|| {
            if latest {
                "Always".into()
            } else {
                "IfNotPresent".into()
            }
        });
        let present = self.images.resolve(&image);
        let digest = match (policy.as_str(), present) {
            ("Never", None) => {
                waiting.insert(
                    c.name.clone(),
                    (
                        "ErrImageNeverPull".into(),
                        format!("Container image {image:?} is not present with pull policy of Never"),
                    ),
                );
                return;
            }
            ("Never" | "IfNotPresent", Some(d)) => d,
            _ => match self.pulls.remove(&key.clone()) {
                // Pulls run in the background so one slow registry holds up no other pod; the container
                // waits as ContainerCreating meanwhile, as upstream's does.
                Some(Pull::Running(handle, delay)) if handle.is_finished() => {
                    match futures::FutureExt::now_or_never(handle) {
                        Some(Ok(Ok(d))) => d,
                        other => {
                            let msg = match other {
                                Some(Ok(Err(m))) => m,
                                _ => format!("pull of {image:?} was interrupted"),
                            };
                            self.pulls.insert(
                                key.clone(),
                                Pull::Failed(Instant::now() + delay, delay, msg.clone()),
                            );
                            waiting.insert(c.name.clone(), ("ErrImagePull".into(), msg));
                            return;
                        }
                    }
                }
                Some(Pull::Running(handle, delay)) => {
                    self.pulls.insert(key.clone(), Pull::Running(handle, delay));
                    waiting.insert(
                        c.name.clone(),
                        ("ContainerCreating".into(), format!("Pulling image {image:?}")),
                    );
                    return;
                }
                // Upstream's image back-off (`pkg/kubelet/images`): 10 s doubling to 5 min.
                Some(Pull::Failed(until, delay, msg)) if Instant::now() < until => {
                    self.pulls
                        .insert(key.clone(), Pull::Failed(until, delay, msg.clone()));
                    waiting.insert(
                        c.name.clone(),
                        (
                            "ImagePullBackOff".into(),
                            format!("Back-off pulling image {image:?}: {msg}"),
                        ),
                    );
                    return;
                }
                previous => {
                    let secrets = self.pull_secrets(p).await;
                    let store = self.images.clone();
                    let img = image.clone();
                    let waker = self.pleg.waker();
                    let handle = tokio::spawn(async move {
                        let pulled = crate::pull::pull(&store, &img, &secrets).await;
                        waker.wake();
                        pulled
                    });
                    let delay = match previous {
                        Some(Pull::Failed(_, d, _)) => (d * 2).min(BACKOFF_MAX),
                        _ => IMAGE_BACKOFF_INITIAL,
                    };
                    self.pulls.insert(key.clone(), Pull::Running(handle, delay));
                    waiting.insert(
                        c.name.clone(),
                        ("ContainerCreating".into(), format!("Pulling image {image:?}")),
                    );
                    return;
                }
            },
        };
        let spec = match self.container_spec(p, c, &digest, volumes).await {
            Ok(s) => s,
            Err(msg) => {
                waiting.insert(c.name.clone(), ("CreateContainerConfigError".into(), msg));
                return;
            }
        };
        if restarting {
            let restarts = read_restarts(cdir) + 1;
            let _ = std::fs::write(cdir.join("restarts"), restarts.to_string());
            // Back-off for the next restart: 10 s doubling to 5 min (reset after 10 min running is
            // approximated by forgetting back-off state of containers that ran that long).
            let next = self
                .backoff
                .get(&key)
                .map_or(BACKOFF_INITIAL, |(_, d)| (*d * 2).min(BACKOFF_MAX));
            self.backoff.insert(key, (Instant::now() + next, next));
        }
        // Watched before the shim exists, so its record of the start cannot be missed.
        let created = std::fs::create_dir_all(cdir);
        self.pleg.watch(cdir);
        if let Err(e) = created.and_then(|()| runtime::start(&self.berth, cdir, &spec)) {
            waiting.insert(c.name.clone(), ("RunContainerError".into(), e.to_string()));
        }
    }

    async fn container_spec(
        &self,
        p: &Pod,
        c: &Container,
        digest: &str,
        volumes: &HashMap<String, PathBuf>,
    ) -> Result<ContainerSpec, String> {
        let cfg = self.images.config(digest).map_err(|e| e.to_string())?;
        let rootfs = self.images.rootfs(digest).map_err(|e| e.to_string())?;
        let spec = p.spec.clone().unwrap_or_default();
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        let mut env: Vec<(String, String)> = cfg
            .env
            .iter()
            .flatten()
            .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
            .collect();
        let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
            env.retain(|(x, _)| x != &k);
            env.push((k, v));
        };
        if !env.iter().any(|(k, _)| k == "PATH") {
            set(
                &mut env,
                "PATH".into(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            );
        }
        let hostname = spec
            .hostname
            .clone()
            .unwrap_or_else(|| p.metadata.name.clone().unwrap_or_default());
        set(&mut env, "HOSTNAME".into(), hostname.clone());
        for e in c.env.iter().flatten() {
            let value = match (&e.value, &e.value_from) {
                (Some(v), _) => expand_vars(v, &env),
                (None, Some(src)) => {
                    if let Some(f) = &src.field_ref {
                        field_value(p, &f.field_path, &self.cfg)?
                    } else if let Some(r) = &src.config_map_key_ref {
                        self.key_ref(&ns, &r.name, &r.key, false, r.optional == Some(true))
                            .await?
                    } else if let Some(r) = &src.secret_key_ref {
                        self.key_ref(&ns, &r.name, &r.key, true, r.optional == Some(true))
                            .await?
                    } else {
                        String::new()
                    }
                }
                (None, None) => String::new(),
            };
            set(&mut env, e.name.clone(), value);
        }
        let argv = argv(
            cfg.entrypoint.as_deref(),
            cfg.cmd.as_deref(),
            c.command.as_deref(),
            c.args.as_deref(),
            &env,
        );
        let mut binds = Vec::new();
        for m in c.volume_mounts.iter().flatten() {
            let Some(src) = volumes.get(&m.name) else {
                return Err(format!("volume {:?} is not available", m.name));
            };
            let source = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                Some(sp) if !sp.split('/').any(|c| c == "..") => {
                    let s = src.join(sp);
                    let _ = std::fs::create_dir_all(&s);
                    s
                }
                Some(sp) => return Err(format!("subPath {sp:?} must not contain '..'")),
                None => src.clone(),
            };
            binds.push(Bind {
                source,
                target: m.mount_path.clone(),
                read_only: m.read_only.unwrap_or(false),
            });
        }
        // Identity and walls (`crate::security`): the pod's and container's securityContext over the
        // image's user; Localhost seccomp profiles live under `<data-dir>/agent/seccomp`.
        let seccomp_dir = self.cfg.data_dir.join("agent/seccomp");
        let decision = crate::security::decide(
            p,
            c,
            &crate::security::ImageUser::parse(cfg.user.as_deref()),
            &crate::security::UserDb::read(&rootfs),
            &crate::security::Defaults {
                seccomp_runtime_default: self.cfg.seccomp_default,
            },
            &|path| {
                std::fs::read(seccomp_dir.join(path))
                    .map_err(|e| format!("cannot load seccomp profile {path:?}: {e}"))
            },
        )?;
        // fsGroup: the kubelet's SetVolumeOwnership, once per pod and volume (hostPath volumes excepted).
        if let Some(fs_group) = spec.security_context.as_ref().and_then(|s| s.fs_group) {
            let on_root_mismatch = spec
                .security_context
                .as_ref()
                .and_then(|s| s.fs_group_change_policy.as_deref())
                == Some("OnRootMismatch");
            let pdir = pod_dir(&self.cfg, p.metadata.uid.as_deref().unwrap_or(""));
            for m in c.volume_mounts.iter().flatten() {
                let host_path = spec
                    .volumes
                    .iter()
                    .flatten()
                    .any(|v| v.name == m.name && v.host_path.is_some());
                let marker = pdir.join("fsgroup").join(&m.name);
                if host_path || marker.exists() {
                    continue;
                }
                if let Some(src) = volumes.get(&m.name) {
                    let gid =
                        u32::try_from(fs_group).map_err(|_| format!("fsGroup {fs_group} is out of range"))?;
                    crate::security::apply::volume_ownership(
                        src,
                        gid,
                        m.read_only == Some(true),
                        on_root_mismatch,
                    )
                    .map_err(|e| format!("setting volume ownership of {:?}: {e}", m.name))?;
                    let _ = std::fs::create_dir_all(pdir.join("fsgroup"));
                    let _ = std::fs::write(&marker, b"");
                }
            }
        }
        let subdomain = spec.subdomain.clone();
        let domain = self.cfg.cluster_domain.as_str();
        let ip = pod_ip(&self.cfg, p).to_string();
        let netns = (!host_network(p)).then(|| {
            crate::network::netns_path(&pod_dir(&self.cfg, p.metadata.uid.as_deref().unwrap_or("")))
        });
        // `hostUsers: false`: the pod's own 64 Ki host ids (`crate::userns`).
        let id_map = if spec.host_users == Some(false) {
            crate::userns::supported()?;
            let pdir = pod_dir(&self.cfg, p.metadata.uid.as_deref().unwrap_or(""));
            Some(
                crate::userns::allocate(&self.cfg.data_dir.join("agent/pods"), &pdir)
                    .map_err(|e| format!("hostUsers: false: {e}"))?,
            )
        } else {
            None
        };
        Ok(ContainerSpec {
            id_map,
            netns,
            rootfs,
            argv,
            env: env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
            cwd: c
                .working_dir
                .clone()
                .or(cfg.working_dir.clone())
                .filter(|w| !w.is_empty())
                .unwrap_or_else(|| "/".into()),
            hostname: hostname.clone(),
            domainname: subdomain
                .as_ref()
                .map(|s| format!("{s}.{ns}.svc.{domain}"))
                .unwrap_or_default(),
            uid: decision.uid,
            gid: decision.gid,
            security: decision.security,
            binds,
            hosts: hosts_file(&ip, &hostname, subdomain.as_deref(), &ns, domain),
            resolv_conf: resolv_conf(&self.cfg, p),
            resources: resources_of(c),
            cgroup: format!("{}/{}", p.metadata.uid.as_deref().unwrap_or(""), c.name),
            stdin: c.stdin == Some(true),
            stdin_once: c.stdin_once == Some(true),
            tty: c.tty == Some(true),
            pid_ns_of: spec
                .ephemeral_containers
                .iter()
                .flatten()
                .find(|e| e.name == c.name)
                .and_then(|e| e.target_container_name.as_deref())
                .filter(|t| !t.is_empty())
                .map(|t| {
                    pod_dir(&self.cfg, p.metadata.uid.as_deref().unwrap_or(""))
                        .join("containers")
                        .join(t)
                }),
        })
    }

    /// Start each running container's `lifecycle.preStop` hook once, in the background, as the kubelet
    /// runs it before SIGTERM and within the grace period (`pkg/kubelet/kuberuntime`
    /// `executePreStopHook`): exec (in the container), httpGet (to the pod's address) or sleep. The
    /// container's `prestop` file marks it started and `prestop-done` finished; [`stop_all`] sends
    /// SIGTERM only after that (SIGKILL at the deadline regardless).
    fn pre_stop(&self, p: &Pod, dir: &Path) {
        let ip = pod_ip(&self.cfg, p);
        for c in p.spec.as_ref().map(|s| s.containers.clone()).unwrap_or_default() {
            let Some(h) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.clone()) else {
                continue;
            };
            let cdir = dir.join("containers").join(&c.name);
            if !matches!(runtime::state(&cdir), State::Running { .. }) || cdir.join("prestop").exists() {
                continue;
            }
            if std::fs::write(cdir.join("prestop"), b"").is_err() {
                continue;
            }
            let berth = self.berth.clone();
            let ports = c.ports.clone().unwrap_or_default();
            tokio::spawn(async move {
                if let Some(e) = &h.exec {
                    let _ = tokio::process::Command::new(&berth)
                        .arg("container-exec")
                        .arg(&cdir)
                        .arg("--")
                        .args(e.command.iter().flatten())
                        .stdin(std::process::Stdio::null())
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .status()
                        .await;
                } else if let Some(g) = &h.http_get {
                    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
                    let port = match &g.port {
                        IntOrString::Int(n) => u16::try_from(*n).ok(),
                        IntOrString::String(name) => ports
                            .iter()
                            .find(|p| p.name.as_deref() == Some(name.as_str()))
                            .and_then(|p| u16::try_from(p.container_port).ok()),
                    };
                    if let Some(port) = port
                        && let Ok(Ok(mut conn)) = tokio::time::timeout(
                            Duration::from_secs(5),
                            tokio::net::TcpStream::connect((ip, port)),
                        )
                        .await
                    {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let path = g.path.clone().unwrap_or_else(|| "/".into());
                        let _ = conn
                            .write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
                            .await;
                        let mut sink = Vec::new();
                        let _ =
                            tokio::time::timeout(Duration::from_secs(30), conn.read_to_end(&mut sink)).await;
                    }
                } else if let Some(sl) = &h.sleep {
                    tokio::time::sleep(Duration::from_secs(u64::try_from(sl.seconds).unwrap_or(0))).await;
                }
                let _ = std::fs::write(cdir.join("prestop-done"), b"");
            });
        }
    }

    /// The node's bridge, once the node IPAM controller gave the Node its `spec.podCIDR`.
    async fn bridge(&mut self) -> Result<crate::network::Bridge, String> {
        if let Some(b) = &self.bridge {
            return Ok(b.clone());
        }
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(self.client.clone());
        let node = nodes.get(&self.cfg.node_name).await.map_err(|e| e.to_string())?;
        let slice = node
            .spec
            .and_then(|s| s.pod_cidr)
            .ok_or_else(|| "the node has no pod CIDR yet".to_string())?
            .parse()
            .map_err(|e| format!("the node's pod CIDR: {e}"))?;
        let b = crate::network::Bridge {
            name: BRIDGE.into(),
            slice,
        };
        let b2 = b.clone();
        tokio::task::spawn_blocking(move || b2.ensure())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        self.bridge = Some(b.clone());
        Ok(b)
    }

    /// `.dockerconfigjson` documents of the pod's `imagePullSecrets`.
    async fn pull_secrets(&self, p: &Pod) -> Vec<Vec<u8>> {
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
        let mut out = Vec::new();
        for r in p
            .spec
            .as_ref()
            .and_then(|s| s.image_pull_secrets.as_ref())
            .into_iter()
            .flatten()
        {
            if let Ok(Some(sec)) = api.get_opt(&r.name).await
                && let Some(doc) = sec.data.and_then(|d| d.get(".dockerconfigjson").cloned())
            {
                out.push(doc.0);
            }
        }
        out
    }

    /// A key of a ConfigMap (`secret` false) or Secret; `Err` names what is missing (upstream:
    /// CreateContainerConfigError), `Ok("")` for a missing optional reference.
    async fn key_ref(
        &self,
        ns: &str,
        name: &str,
        key: &str,
        secret: bool,
        optional: bool,
    ) -> Result<String, String> {
        let value = if secret {
            let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
            api.get_opt(name).await.map_err(|e| e.to_string())?.map(|s| {
                s.data
                    .unwrap_or_default()
                    .get(key)
                    .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            })
        } else {
            let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
            api.get_opt(name)
                .await
                .map_err(|e| e.to_string())?
                .map(|m| m.data.unwrap_or_default().get(key).cloned())
        };
        let kind = if secret { "secret" } else { "configmap" };
        match value {
            Some(Some(v)) => Ok(v),
            _ if optional => Ok(String::new()),
            None => Err(format!("{kind} {name:?} not found")),
            Some(None) => Err(format!("couldn't find key {key} in {kind} {ns}/{name}")),
        }
    }

    /// Host directories of the pod's volumes (claims must be bound).
    async fn volumes(&self, p: &Pod, dir: &Path) -> Result<HashMap<String, PathBuf>, String> {
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        let mut out = HashMap::new();
        for v in p
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .into_iter()
            .flatten()
        {
            let path = if let Some(c) = &v.persistent_volume_claim {
                let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &ns);
                let claim = claims
                    .get_opt(&c.claim_name)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("persistentvolumeclaim {:?} not found", c.claim_name))?;
                let vol = claim
                    .spec
                    .and_then(|s| s.volume_name)
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| format!("persistentvolumeclaim {:?} is not bound", c.claim_name))?;
                let pvs: Api<PersistentVolume> = Api::all(self.client.clone());
                let pv = pvs.get(&vol).await.map_err(|e| e.to_string())?;
                let bytes = pv
                    .spec
                    .as_ref()
                    .and_then(|s| s.capacity.as_ref()?.get("storage"))
                    .and_then(|q| api::quantity::bytes(&q.0));
                let hp = pv
                    .spec
                    .and_then(|s| s.host_path)
                    .ok_or_else(|| format!("volume {vol} has no local path"))?;
                // A capacity-enforced volume must be mounted before a container binds it (after a
                // reboot the agent may get here before the provisioner's resync does), and grown to its
                // capacity if that was raised while containers held it (offline expansion).
                let path = PathBuf::from(hp.path);
                crate::capacity::ensure_mounted(&path).map_err(|e| format!("mounting volume {vol}: {e}"))?;
                if let Some(b) = bytes
                    && let Err(e) = crate::capacity::grow(&path, b)
                {
                    tracing::debug!(volume = %vol, error = %e, "volume not grown yet");
                }
                path
            } else if v.empty_dir.is_some() {
                dir.join("volumes/empty-dir").join(&v.name)
            } else if let Some(h) = &v.host_path {
                PathBuf::from(&h.path)
            } else if let Some(cm) = &v.config_map {
                let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &ns);
                let data = match api.get_opt(&cm.name).await.map_err(|e| e.to_string())? {
                    Some(m) => m.data.unwrap_or_default(),
                    None if cm.optional == Some(true) => BTreeMap::new(),
                    None => return Err(format!("configmap {:?} not found", cm.name)),
                };
                let d = dir.join("volumes/configmap").join(&v.name);
                write_files(&d, data.into_iter().map(|(k, v)| (k, v.into_bytes())))?;
                d
            } else if let Some(s) = &v.secret {
                let name = s.secret_name.clone().unwrap_or_default();
                let api: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
                let data = match api.get_opt(&name).await.map_err(|e| e.to_string())? {
                    Some(sec) => sec.data.unwrap_or_default(),
                    None if s.optional == Some(true) => BTreeMap::new(),
                    None => return Err(format!("secret {name:?} not found")),
                };
                let d = dir.join("volumes/secret").join(&v.name);
                write_files(&d, data.into_iter().map(|(k, v)| (k, v.0)))?;
                d
            } else if let Some(da) = &v.downward_api {
                let d = dir.join("volumes/downward-api").join(&v.name);
                write_tree(
                    &d,
                    downward_files(p, da.items.as_deref().unwrap_or(&[]), &self.cfg)?,
                )?;
                d
            } else if let Some(pr) = &v.projected {
                // upstream `pkg/volume/projected`: the sources' files merged into one directory.
                // serviceAccountToken and clusterTrustBundle sources are skipped: Berth issues no
                // service-account tokens yet.
                let mut files = Vec::new();
                for src in pr.sources.iter().flatten() {
                    if let Some(cm) = &src.config_map {
                        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &ns);
                        match api.get_opt(&cm.name).await.map_err(|e| e.to_string())? {
                            Some(m) => {
                                let data = m
                                    .data
                                    .unwrap_or_default()
                                    .into_iter()
                                    .map(|(k, v)| (k, v.into_bytes()));
                                files.extend(select_keys(data.collect(), cm.items.as_deref(), cm.optional)?);
                            }
                            None if cm.optional == Some(true) => {}
                            None => return Err(format!("configmap {:?} not found", cm.name)),
                        }
                    }
                    if let Some(sp) = &src.secret {
                        let api: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
                        match api.get_opt(&sp.name).await.map_err(|e| e.to_string())? {
                            Some(sec) => {
                                let data = sec.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0));
                                files.extend(select_keys(data.collect(), sp.items.as_deref(), sp.optional)?);
                            }
                            None if sp.optional == Some(true) => {}
                            None => return Err(format!("secret {:?} not found", sp.name)),
                        }
                    }
                    if let Some(da) = &src.downward_api {
                        files.extend(downward_files(p, da.items.as_deref().unwrap_or(&[]), &self.cfg)?);
                    }
                }
                let d = dir.join("volumes/projected").join(&v.name);
                write_tree(&d, files)?;
                d
            } else {
                return Err(format!(
                    "volume {:?}: this volume type is not supported yet",
                    v.name
                ));
            };
            std::fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            out.insert(v.name.clone(), path);
        }
        Ok(out)
    }

    async fn write_status(
        &mut self,
        p: &Pod,
        dir: &Path,
        waiting: &BTreeMap<String, (String, String)>,
        initialized: bool,
        verdicts: &HashMap<String, (bool, bool)>,
    ) -> Result<(), String> {
        let uid = p.metadata.uid.clone().unwrap_or_default();
        let spec = p.spec.clone().unwrap_or_default();
        let now = jiff::Timestamp::now().to_string();
        let statuses = |list: &[Container], sub: &str| -> Vec<Value> {
            list.iter()
                .map(|c| {
                    let cdir = dir.join(sub).join(&c.name);
                    let digest = self.images.resolve(c.image.as_deref().unwrap_or("")).unwrap_or_default();
                    let state = match (waiting.get(&c.name), runtime::state(&cdir)) {
                        (Some((reason, message)), _) => json!({"waiting": {"reason": reason, "message": message}}),
                        (None, State::Running { started, .. }) => json!({"running": {"startedAt": started}}),
                        (None, State::Exited { code, started, finished }) => json!({"terminated": {
                            "exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" },
                            "startedAt": started, "finishedAt": finished}}),
                        (None, State::Absent | State::Starting) => json!({"waiting": {"reason": "ContainerCreating"}}),
                        (None, State::Stopping) => json!({"waiting": {"reason": "ContainerCreating"}}),
                    };
                    let running = state.get("running").is_some();
                    let last = runtime::last_exit(&cdir).map_or(json!({}), |(code, started, finished)| {
                        json!({"terminated": {"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" },
                                              "startedAt": started, "finishedAt": finished}})
                    });
                    json!({"name": c.name, "image": c.image, "imageID": digest,
                           "containerID": format!("berth://{uid}/{}", c.name),
                           "ready": running && sub == "containers" && probed_ok(c, verdicts, true),
                           "started": running && probed_ok(c, verdicts, false),
                           "restartCount": read_restarts(&cdir), "state": state, "lastState": last})
                })
                .collect()
        };
        let init = statuses(spec.init_containers.as_deref().unwrap_or(&[]), "init");
        let app = statuses(&spec.containers, "containers");
        // Ephemeral containers are never ready (upstream leaves `ready` false for them).
        let mut ephemeral = statuses(&ephemeral_containers(&spec), "containers");
        for s in &mut ephemeral {
            s["ready"] = json!(false);
        }
        let all_ready = !app.is_empty() && app.iter().all(|s| s["ready"] == true);
        let restart_policy = spec.restart_policy.clone().unwrap_or_else(|| "Always".into());
        let phase = pod_phase(initialized, &app, &restart_policy);
        let old_conds: Vec<Value> = p
            .status
            .as_ref()
            .and_then(|s| serde_json::to_value(&s.conditions).ok())
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default();
        let cond = |t: &str, ok: bool| {
            let status = if ok { "True" } else { "False" };
            let since = old_conds
                .iter()
                .find(|c| c["type"] == t && c["status"] == status)
                .and_then(|c| c["lastTransitionTime"].as_str().map(str::to_string))
                .unwrap_or_else(|| now.clone());
            json!({"type": t, "status": status, "lastTransitionTime": since})
        };
        let host_ip = self.cfg.node_ip.to_string();
        let ip = pod_ip(&self.cfg, p).to_string();
        let start_time = p
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0.to_string())
            .unwrap_or_else(|| now.clone());
        let status = json!({
            "phase": phase,
            "conditions": [cond("PodReadyToStartContainers", true), cond("Initialized", initialized), cond("Ready", all_ready),
                           cond("ContainersReady", all_ready), cond("PodScheduled", true)],
            "hostIP": host_ip, "hostIPs": [{"ip": host_ip}], "podIP": ip, "podIPs": [{"ip": ip}],
            "startTime": start_time,
            "initContainerStatuses": init,
            "containerStatuses": app,
            "ephemeralContainerStatuses": if ephemeral.is_empty() { Value::Null } else { json!(ephemeral) },
            "qosClass": p.status.as_ref().and_then(|s| s.qos_class.clone()),
        });
        if self.written.get(&uid) == Some(&status) {
            return Ok(());
        }
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), p.metadata.namespace.as_deref().unwrap_or(""));
        api.patch_status(
            p.metadata.name.as_deref().unwrap_or(""),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
        .map_err(|e| e.to_string())?;
        self.written.insert(uid, status);
        Ok(())
    }
}

/// The pod's ephemeral containers as containers (the same fields, less `targetContainerName`).
fn ephemeral_containers(spec: &k8s_openapi::api::core::v1::PodSpec) -> Vec<Container> {
    spec.ephemeral_containers
        .iter()
        .flatten()
        .filter_map(|e| {
            let mut v = serde_json::to_value(e).ok()?;
            v.as_object_mut()?.remove("targetContainerName");
            serde_json::from_value(v).ok()
        })
        .collect()
}

/// A container's cgroup limits from `resources` (limits; the CPU request for shares/weight).
pub fn resources_of(c: &Container) -> crate::cgroup::Resources {
    let get = |m: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
               k: &str| { m.and_then(|m| m.get(k)).and_then(|q| api::quantity::parse(&q.0)) };
    let r = c.resources.as_ref();
    let limits = r.and_then(|r| r.limits.as_ref());
    let requests = r.and_then(|r| r.requests.as_ref());
    crate::cgroup::Resources {
        memory_limit: get(limits, "memory").map(|b| b.ceil() as u64),
        cpu_limit_millis: get(limits, "cpu").map(|c| (c * 1000.0).ceil() as u64),
        cpu_request_millis: get(requests, "cpu")
            .or(get(limits, "cpu"))
            .map(|c| (c * 1000.0).ceil() as u64),
    }
}

/// Whether a running container counts as ready (`ready`) or started: without the relevant probes at once,
/// with them only after the probes said so (never before their first verdict).
fn probed_ok(c: &Container, verdicts: &HashMap<String, (bool, bool)>, ready: bool) -> bool {
    let probed = if ready {
        c.readiness_probe.is_some() || c.startup_probe.is_some()
    } else {
        c.startup_probe.is_some()
    };
    !probed
        || verdicts
            .get(&c.name)
            .is_some_and(|v| if ready { v.1 } else { v.0 })
}

fn read_restarts(cdir: &Path) -> i64 {
    std::fs::read_to_string(cdir.join("restarts"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Write `files` into `dir` (replacing what was there), as the kubelet's atomic writer does for
/// configMap and secret volumes (keys are file names; a key with a path separator is refused).
fn write_files(dir: &Path, files: impl Iterator<Item = (String, Vec<u8>)>) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    for (k, v) in files {
        if k.contains('/') || k == ".." || k == "." {
            return Err(format!("key {k:?} is not a file name"));
        }
        std::fs::write(dir.join(&k), v).map_err(|e| format!("{}: {e}", dir.join(&k).display()))?;
    }
    Ok(())
}

/// Write `(relative path, contents)` files under `dir` (paths may have directories; `..` and absolute
/// paths are refused, as upstream's validation does).
fn write_tree(dir: &Path, files: Vec<(String, Vec<u8>)>) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    for (k, v) in files {
        let rel = Path::new(&k);
        if k.is_empty()
            || rel.is_absolute()
            || rel
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(format!("path {k:?} is not a relative path without '..'"));
        }
        let f = dir.join(rel);
        if let Some(parent) = f.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        std::fs::write(&f, v).map_err(|e| format!("{}: {e}", f.display()))?;
    }
    Ok(())
}

/// The keys of a ConfigMap or Secret as files: every key under its own name, or only `items` (key →
/// path); a missing item key is an error unless the source is optional.
fn select_keys(
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&[k8s_openapi::api::core::v1::KeyToPath]>,
    optional: Option<bool>,
) -> Result<Vec<(String, Vec<u8>)>, String> {
    let Some(items) = items else {
        return Ok(data.into_iter().collect());
    };
    let mut out = Vec::new();
    for it in items {
        match data.get(&it.key) {
            Some(v) => out.push((it.path.clone(), v.clone())),
            None if optional == Some(true) => {}
            None => return Err(format!("key {:?} not found", it.key)),
        }
    }
    Ok(out)
}

/// The files of a downwardAPI volume (upstream `pkg/volume/downwardapi`): `fieldRef` values, with
/// `metadata.labels`/`metadata.annotations` as `key="value"` lines, and `resourceFieldRef` values
/// (limits/requests of cpu in cores rounded up, memory and ephemeral-storage in bytes, divided by
/// `divisor`).
fn downward_files(
    p: &Pod,
    items: &[k8s_openapi::api::core::v1::DownwardAPIVolumeFile],
    cfg: &Config,
) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut out = Vec::new();
    for it in items {
        let value = if let Some(f) = &it.field_ref {
            match f.field_path.as_str() {
                path @ ("metadata.labels" | "metadata.annotations") => {
                    let map = if path == "metadata.labels" {
                        p.metadata.labels.clone()
                    } else {
                        p.metadata.annotations.clone()
                    };
                    map.unwrap_or_default()
                        .iter()
                        .map(|(k, v)| format!("{k}={v:?}\n"))
                        .collect::<String>()
                }
                path => field_value(p, path, cfg)?,
            }
        } else if let Some(r) = &it.resource_field_ref {
            resource_value(p, r)?
        } else {
            String::new()
        };
        out.push((it.path.clone(), value.into_bytes()));
    }
    Ok(out)
}

/// A `resourceFieldRef` value (upstream `ExtractResourceValueByContainerName`): the container's limit or
/// request divided by the divisor, rounded up; an unset CPU or memory limit reads as the node's capacity
/// upstream, here as 0.
fn resource_value(p: &Pod, r: &k8s_openapi::api::core::v1::ResourceFieldSelector) -> Result<String, String> {
    let spec = p.spec.as_ref().ok_or("pod without spec")?;
    let c = match &r.container_name {
        Some(n) if !n.is_empty() => spec.containers.iter().find(|c| &c.name == n),
        _ => spec.containers.first(),
    }
    .ok_or_else(|| format!("resourceFieldRef: no container {:?}", r.container_name))?;
    let (kind, res) = r
        .resource
        .split_once('.')
        .ok_or_else(|| format!("unsupported resource {:?}", r.resource))?;
    let res_map = c.resources.as_ref().and_then(|rr| {
        if kind == "limits" {
            rr.limits.clone()
        } else {
            rr.requests.clone()
        }
    });
    let q = res_map.and_then(|m| m.get(res).map(|q| q.0.clone()));
    let amount = q.as_deref().and_then(api::quantity::parse).unwrap_or(0.0);
    let divisor = r
        .divisor
        .as_ref()
        .and_then(|d| api::quantity::parse(&d.0))
        .filter(|d| *d > 0.0)
        .unwrap_or(1.0);
    Ok(format!("{}", (amount / divisor).ceil() as i64))
}

/// A downward-API field (upstream `podFieldSelectorRuntimeValue` and `ExtractFieldPathAsString`).
fn field_value(p: &Pod, path: &str, cfg: &Config) -> Result<String, String> {
    let m = &p.metadata;
    let map_key = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_suffix("']"))
            .map(str::to_string)
    };
    Ok(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "spec.nodeName" => cfg.node_name.clone(),
        "spec.serviceAccountName" => p
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" => pod_ip(cfg, p).to_string(),
        "status.hostIP" => cfg.node_ip.to_string(),
        _ => {
            if let Some(k) = map_key("metadata.labels['") {
                m.labels
                    .as_ref()
                    .and_then(|l| l.get(&k).cloned())
                    .unwrap_or_default()
            } else if let Some(k) = map_key("metadata.annotations['") {
                m.annotations
                    .as_ref()
                    .and_then(|l| l.get(&k).cloned())
                    .unwrap_or_default()
            } else {
                return Err(format!("unsupported fieldRef {path:?}"));
            }
        }
    })
}

/// Stop every container under a pod directory: SIGTERM once its preStop hook is done (SIGKILL when
/// `kill`); true once none runs.
fn stop_all(pod_dir: &Path, kill: bool) -> bool {
    let mut all_stopped = true;
    for sub in ["init", "containers"] {
        let Ok(rd) = std::fs::read_dir(pod_dir.join(sub)) else {
            continue;
        };
        for e in rd.flatten() {
            let st = runtime::state(&e.path());
            if matches!(st, State::Starting | State::Stopping) {
                all_stopped = false;
            }
            if let State::Running { pid, .. } = st {
                all_stopped = false;
                if kill {
                    runtime::signal(&e.path(), nix::sys::signal::Signal::SIGKILL);
                    continue;
                }
                // A preStop hook still running holds SIGTERM back (not SIGKILL at the deadline).
                let hook_running =
                    e.path().join("prestop").exists() && !e.path().join("prestop-done").exists();
                if hook_running {
                    continue;
                }
                // SIGTERM once per run, as the runtime's StopContainer sends its stop signal once and
                // then waits out the timeout (many programs take a second SIGTERM as "quit now").
                let sent = e.path().join("sigterm-sent");
                if std::fs::read_to_string(&sent).is_ok_and(|p| p == pid.to_string()) {
                    continue;
                }
                runtime::signal(&e.path(), nix::sys::signal::Signal::SIGTERM);
                let _ = std::fs::write(&sent, pid.to_string());
            }
        }
    }
    all_stopped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_follows_the_kubelets_get_phase() {
        let running = json!({"state": {"running": {}}, "lastState": {}});
        let exited = |code: i32| json!({"state": {"terminated": {"exitCode": code}}, "lastState": {}});
        let crash_looping = json!({"state": {"waiting": {"reason": "CrashLoopBackOff"}},
                                   "lastState": {"terminated": {"exitCode": 1}}});
        let creating = json!({"state": {"waiting": {"reason": "ContainerCreating"}}, "lastState": {}});
        // A restarting container (waiting, with a last termination) of an Always pod: Running, not Pending.
        assert_eq!(
            pod_phase(true, std::slice::from_ref(&crash_looping), "Always"),
            "Running"
        );
        assert_eq!(
            pod_phase(true, std::slice::from_ref(&crash_looping), "OnFailure"),
            "Running"
        );
        assert_eq!(
            pod_phase(true, std::slice::from_ref(&creating), "Always"),
            "Pending"
        );
        assert_eq!(pod_phase(true, &[running.clone(), creating], "Always"), "Pending");
        assert_eq!(
            pod_phase(false, std::slice::from_ref(&running), "Always"),
            "Pending"
        );
        assert_eq!(pod_phase(true, &[running.clone(), exited(0)], "Never"), "Running");
        assert_eq!(pod_phase(true, &[exited(0), exited(0)], "Never"), "Succeeded");
        assert_eq!(pod_phase(true, &[exited(0), exited(1)], "Never"), "Failed");
        assert_eq!(pod_phase(true, &[exited(1)], "OnFailure"), "Running");
        assert_eq!(pod_phase(true, &[exited(0)], "Always"), "Running");
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn argv_follows_the_kubernetes_rules_and_expands_env_references() {
        let ep = s(&["/entry"]);
        let cmd = s(&["default"]);
        let env = vec![("NAME".to_string(), "web-0".to_string())];
        assert_eq!(
            argv(Some(&ep), Some(&cmd), None, None, &env),
            s(&["/entry", "default"])
        );
        assert_eq!(
            argv(Some(&ep), Some(&cmd), None, Some(&s(&["x", "$(NAME)"])), &env),
            s(&["/entry", "x", "web-0"])
        );
        assert_eq!(
            argv(Some(&ep), Some(&cmd), Some(&s(&["/bin/sh"])), None, &env),
            s(&["/bin/sh"])
        );
        assert_eq!(
            argv(
                Some(&ep),
                Some(&cmd),
                Some(&s(&["/bin/sh"])),
                Some(&s(&["-c", "echo $$(NAME) $(MISSING)"])),
                &env
            ),
            s(&["/bin/sh", "-c", "echo $(NAME) $(MISSING)"])
        );
    }

    #[test]
    fn hosts_file_names_the_pod_by_its_stable_dns_name() {
        let h = hosts_file("10.42.0.5", "web-0", Some("nginx"), "default", "cluster.local");
        assert!(
            h.ends_with("10.42.0.5\tweb-0.nginx.default.svc.cluster.local\tweb-0\n"),
            "{h}"
        );
        assert!(hosts_file("10.42.0.5", "p", None, "default", "cluster.local").ends_with("10.42.0.5\tp\n"));
    }

    #[test]
    fn only_terminating_pods_of_this_node() {
        let pod = |node: &str, deleting: bool| -> Pod {
            let mut v =
                json!({"metadata": {"name": "p", "uid": "u"}, "spec": {"nodeName": node, "containers": []}});
            if deleting {
                v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
            }
            serde_json::from_value(v).expect("pod")
        };
        assert!(must_finish_deletion("n1", &pod("n1", true)));
        assert!(!must_finish_deletion("n1", &pod("n1", false)));
        assert!(!must_finish_deletion("n1", &pod("n2", true)));
    }
}
