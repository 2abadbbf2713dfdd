//! The pods bound to this node, as the kubelet runs them (upstream `pkg/kubelet`: `syncPod`,
//! `kuberuntime_container.go`, `status_manager.go`): each container started through [`crate::runtime`] from
//! an image in the node's store, init containers to completion first and in order, restarts by
//! `restartPolicy` with upstream's back-off (10 s doubling to 5 min), status written through `pods/status`,
//! graceful termination (SIGTERM, then SIGKILL when `deletionTimestamp` passes) and the final deletion
//! with grace period 0. Containers found on disk for pods that no longer exist are stopped and removed.
//!
//! Each pod has its own network namespace on the node's bridge ([`crate::network`]); `hostNetwork` pods
//! share the node's (their `podIP` is the node's address). Startup, liveness and readiness probes run
//! through [`crate::probe`]; a container without them counts as started and ready once it runs.
//!
//! This module holds the pod loop (admission, sync, start, probes, termination); what each container is
//! started with is in `container`, the pod's volumes in `volumes` and its status in `status`.

mod container;
mod status;
mod volumes;

use container::ephemeral_containers;
pub use container::{argv, expand_vars, hosts_file, resolv_conf, resources_of};
use status::read_restarts;
use volumes::field_value;

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
