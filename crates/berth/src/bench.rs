//! `berth bench`: measures the control plane's figures on this machine and prints them as Markdown for
//! docs/benchmarks.md (issue "Control plane", Figures): start-to-ready time and idle RSS of a real
//! `berth server` process, create throughput with 1 and 16 concurrent clients beside the raw store commit
//! rate it rests on, watch fan-out, and list latency with 10,000 pods stored.

mod etcd;
mod examples;
mod failover;
mod jobs;
mod network;
mod restart;
mod security;
mod workloads;

use anyhow::{Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use std::time::{Duration, Instant};

/// Flags of `berth bench`.
#[derive(clap::Args, Clone)]
pub struct BenchArgs {
    /// Objects created per throughput run.
    #[arg(long, default_value_t = 2000)]
    pub creates: usize,
    /// Watchers in the fan-out run.
    #[arg(long, default_value_t = 100)]
    pub watchers: usize,
    /// Changes in the fan-out run.
    #[arg(long, default_value_t = 10_000)]
    pub changes: usize,
    /// Pods stored for the list-latency run.
    #[arg(long, default_value_t = 10_000)]
    pub pods: usize,
    /// Which figures: `control-plane`, `security` (encryption at rest and PodSecurity), `etcd` (the etcd
    /// backend beside raw etcd puts; needs /usr/bin/etcd), `failover` (leader failover time of two servers
    /// on a 3-member etcd; not part of `all`), `statefulset`,
    /// `workloads` (a Deployment's creation and rollout beside a Parallel StatefulSet),
    /// `agent`, `network`, `jobs` (these three need root and
    /// /usr/bin/busybox; `network` compares with dnsmasq when installed) or `all` (`agent` and `network`
    /// included when they can run), or `examples` (root, kubectl and the Debian mirror: the examples'
    /// apply → Ready times and Berth's memory with all of them running; not part of `all`).
    #[arg(long, default_value = "all")]
    pub suite: String,
    /// Replicas of the Parallel set in the StatefulSet run (and of the Deployment in the workloads run).
    #[arg(long, default_value_t = 1000)]
    pub parallel_replicas: usize,
    /// Sets (of 10 pods each) in the controller-memory run.
    #[arg(long, default_value_t = 1000)]
    pub sets: usize,
    /// Running pods in the agent-memory run.
    #[arg(long, default_value_t = 100)]
    pub running_pods: usize,
    /// The repository's `examples/` directory, for `--suite examples`.
    #[arg(long, default_value = "examples")]
    pub examples_dir: std::path::PathBuf,
}

/// The cluster DNS address of the control-plane bench servers.
const CONTROL_PLANE_DNS: &str = "10.43.255.247";

struct Child {
    proc: std::process::Child,
    dir: tempfile::TempDir,
    /// Its `--cluster-dns` and `--service-cidr`: the server puts the DNS address and the ClusterIPs its
    /// proxy binds on `lo` (as root); removed on drop.
    loopback: Option<(std::net::Ipv4Addr, String)>,
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.proc.kill();
        let _ = self.proc.wait();
        // The pods' networks (pinned namespaces, veths, addresses) and any other mount under the data
        // dir: the server was killed before its agent could tear them down.
        let pods = self.dir.path().join("agent/pods");
        for e in std::fs::read_dir(&pods).into_iter().flatten().flatten() {
            let _ = agent::network::teardown(&e.file_name().to_string_lossy(), &e.path());
        }
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut mounts: Vec<&str> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| std::path::Path::new(m).starts_with(self.dir.path()))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
        if let Some((dns, service_cidr)) = &self.loopback {
            network::drop_lo_addresses(*dns, service_cidr);
        }
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// CPU time (user + system) a process has used so far, from /proc/<pid>/stat.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    Some(ticks / hz)
}

async fn client_for(kubeconfig: &std::path::Path) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(kube::Client::try_from(cfg)?)
}

/// The flags of the control-plane bench servers (no agent; their own DNS address and Service range).
const CONTROL_PLANE_ARGS: [&str; 5] = [
    "--disable-agent",
    "--cluster-dns",
    CONTROL_PLANE_DNS,
    "--service-cidr",
    "10.44.247.0/24",
];

/// Start `berth server` as a child process and wait for its first successful request.
async fn start_server() -> Result<(Child, Duration, kube::Client)> {
    start_server_with(&CONTROL_PLANE_ARGS).await
}

/// The value following `flag` in `args`.
fn flag_value<'a>(args: &[&'a str], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| *a == flag)
        .and_then(|i| args.get(i + 1).copied())
}

/// What a bench server started with `args` puts on `lo`: its `--cluster-dns` address and the ClusterIPs
/// of its `--service-cidr` (for [`network::drop_lo_addresses`]).
fn loopback_of(args: &[&str]) -> Option<(std::net::Ipv4Addr, String)> {
    let dns = flag_value(args, "--cluster-dns")?.parse().ok()?;
    Some((dns, flag_value(args, "--service-cidr").unwrap_or("").to_string()))
}

/// `berth server` on `data_dir` with `extra` flags, on an OS-chosen port, its stderr in
/// `<data_dir>/server.log` (truncated).
fn spawn_server(data_dir: &std::path::Path, extra: &[&str]) -> Result<std::process::Child> {
    std::process::Command::new(std::env::current_exe()?)
        .args(["server", "--https-listen-port", "0", "--data-dir"])
        .arg(data_dir)
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(data_dir.join("server.log"))?)
        .spawn()
        .context("spawning berth server")
}

async fn start_server_with(extra: &[&str]) -> Result<(Child, Duration, kube::Client)> {
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig.yaml");
    let t0 = Instant::now();
    let proc = spawn_server(dir.path(), extra)?;
    // Bench servers name their own cluster DNS and Service range (not the defaults a real server on this
    // machine may use), so that what they put on `lo` can be taken off again.
    let child = Child {
        proc,
        dir,
        loopback: loopback_of(extra),
    };
    loop {
        if kubeconfig.exists()
            && let Ok(client) = client_for(&kubeconfig).await
            && client.apiserver_version().await.is_ok()
        {
            return Ok((child, t0.elapsed(), client));
        }
        anyhow::ensure!(t0.elapsed() < Duration::from_secs(30), "server not ready in 30 s");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn config_map(name: String) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name);
    cm.data = Some([("k".to_string(), "v".to_string())].into());
    cm
}

async fn create_rate(client: &kube::Client, ns: &str, total: usize, concurrency: usize) -> Result<f64> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let t0 = Instant::now();
    let per = total / concurrency;
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                api.create(
                    &PostParams::default(),
                    &config_map(format!("c{concurrency}-{w}-{i}")),
                )
                .await?;
            }
            Ok::<_, kube::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok((per * concurrency) as f64 / t0.elapsed().as_secs_f64())
}

async fn store_rate(total: usize, concurrency: usize) -> Result<f64> {
    let dir = tempfile::tempdir()?;
    let store = store::Store::open_embedded(&dir.path().join("store"), store::Options::default())?;
    let value = vec![b'x'; 300];
    let t0 = Instant::now();
    let per = total / concurrency;
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let store = store.clone();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                store.create(&format!("/bench/{w}/{i}"), value.clone()).await?;
            }
            Ok::<_, store::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok((per * concurrency) as f64 / t0.elapsed().as_secs_f64())
}

async fn watch_fan_out(client: &kube::Client, watchers: usize, changes: usize) -> Result<(Duration, usize)> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-public");
    api.create(&PostParams::default(), &config_map("fan".into()))
        .await?;
    let rv = api
        .get("fan")
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let mut handles = Vec::new();
    for _ in 0..watchers {
        let stream = api
            .watch(
                &WatchParams::default().fields("metadata.name=fan").timeout(290),
                &rv,
            )
            .await?;
        handles.push(tokio::spawn(async move {
            let mut stream = stream.boxed();
            let mut seen = 0usize;
            let mut last = 0i64;
            while let Some(ev) = stream.next().await {
                if let Ok(WatchEvent::Modified(cm)) = ev {
                    let v: i64 = cm
                        .data
                        .and_then(|d| d.get("n").cloned())
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(-1);
                    if v != last + 1 {
                        return (seen, false);
                    }
                    last = v;
                    seen += 1;
                    if seen == changes {
                        return (seen, true);
                    }
                }
            }
            (seen, false)
        }));
    }
    let t0 = Instant::now();
    for n in 1..=changes {
        let patch = serde_json::json!({"data": {"n": n.to_string()}});
        api.patch(
            "fan",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await?;
    }
    let mut complete = 0;
    for h in handles {
        let (_, ok) = h.await?;
        if ok {
            complete += 1;
        }
    }
    Ok((t0.elapsed(), complete))
}

async fn list_latency(client: &kube::Client, pods: usize) -> Result<ListFigures> {
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    // Bound to a node (the agent is off in these benches): the lists are timed on a settled server.
    // The Node exists, so the pod garbage collector leaves its pods alone (gcOrphaned).
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let node = serde_json::from_value(serde_json::json!({"metadata": {"name": "bench-node"}}))?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    create_pods_on(&api, pods, Some("bench-node")).await?;
    list_only(client, pods).await
}

/// List latencies, medians of 5: the whole list decoded by kube-rs into typed Pods (what a client waits
/// for, the client's decoding included), the same list read as bytes (the server's share and the
/// transfer), and a first page of 500.
pub(crate) struct ListFigures {
    pub typed: Duration,
    pub raw: Duration,
    pub page: Duration,
}

impl std::fmt::Display for ListFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.0} ms / {:.0} ms / {:.0} ms",
            self.typed.as_secs_f64() * 1e3,
            self.raw.as_secs_f64() * 1e3,
            self.page.as_secs_f64() * 1e3
        )
    }
}

/// [`list_latency`] without creating the pods (they are stored already).
async fn list_only(client: &kube::Client, pods: usize) -> Result<ListFigures> {
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let mut typed = Vec::new();
    let mut raw = Vec::new();
    let mut page = Vec::new();
    for _ in 0..5 {
        let t0 = Instant::now();
        let list = api.list(&ListParams::default()).await?;
        anyhow::ensure!(list.items.len() == pods, "listed {} of {pods}", list.items.len());
        typed.push(t0.elapsed());
        let t0 = Instant::now();
        let req = http::Request::get("/api/v1/namespaces/default/pods").body(Vec::new())?;
        let body = client.request_text(req).await?;
        raw.push(t0.elapsed());
        anyhow::ensure!(body.len() > pods * 100, "a {}-byte list", body.len());
        let t0 = Instant::now();
        let first = api.list(&ListParams::default().limit(500)).await?;
        anyhow::ensure!(first.items.len() == 500);
        page.push(t0.elapsed());
    }
    Ok(ListFigures {
        typed: median(typed),
        raw: median(raw),
        page: median(page),
    })
}

/// Create `pods` unscheduled pods `p-<i>` through `api`, 16 clients at once.
async fn create_pods(api: &Api<Pod>, pods: usize) -> Result<()> {
    create_pods_on(api, pods, None).await
}

/// [`create_pods`], the pods bound to `node` (`spec.nodeName`) when given: a settled cluster's pods,
/// which no controller rewrites (unscheduled ones each get the scheduler's `PodScheduled=False` status
/// and a `FailedScheduling` Event, some 20,000 writes for 10,000 pods while the lists would be timed).
async fn create_pods_on(api: &Api<Pod>, pods: usize, node: Option<&str>) -> Result<()> {
    let mut tasks = Vec::new();
    for w in 0..16 {
        let api = api.clone();
        let node = node.map(str::to_string);
        tasks.push(tokio::spawn(async move {
            for i in (w..pods).step_by(16) {
                let mut pod = serde_json::json!({
                    "metadata": {"name": format!("p-{i}"), "labels": {"app": "bench"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]}
                });
                if let Some(node) = &node {
                    pod["spec"]["nodeName"] = serde_json::json!(node);
                }
                let pod: Pod = serde_json::from_value(pod).expect("pod");
                api.create(&PostParams::default(), &pod).await?;
            }
            Ok::<_, kube::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

fn sts_manifest(name: &str, replicas: usize, policy: &str) -> k8s_openapi::api::apps::v1::StatefulSet {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "serviceName": name, "podManagementPolicy": policy,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}}
    }))
    .expect("statefulset manifest")
}

async fn namespace(client: &kube::Client, name: &str) -> Result<()> {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let ns: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?;
    api.create(&PostParams::default(), &ns).await?;
    Ok(())
}

/// Count ADDED pod events in `ns` (all namespaces when None) until `want`; returns when they arrived.
async fn wait_for_pods(client: &kube::Client, ns: Option<&str>, want: usize, rv: &str) -> Result<Duration> {
    let api: Api<Pod> = match ns {
        Some(n) => Api::namespaced(client.clone(), n),
        None => Api::all(client.clone()),
    };
    let t0 = Instant::now();
    let mut seen = 0usize;
    let mut rv = rv.to_string();
    while seen < want {
        let mut stream = api
            .watch(&WatchParams::default().timeout(290), &rv)
            .await?
            .boxed();
        while let Some(ev) = stream.next().await {
            match ev? {
                WatchEvent::Added(p) => {
                    seen += 1;
                    rv = p.metadata.resource_version.unwrap_or_default();
                    if seen == want {
                        break;
                    }
                }
                WatchEvent::Modified(p) | WatchEvent::Deleted(p) => {
                    rv = p.metadata.resource_version.unwrap_or_default()
                }
                _ => {}
            }
        }
    }
    Ok(t0.elapsed())
}

async fn statefulset_figures(args: &BenchArgs) -> Result<()> {
    use k8s_openapi::api::apps::v1::StatefulSet;
    let (child, _, client) = start_server().await?;
    // 1. A Parallel set from 0 to all pods created.
    namespace(&client, "bench-par").await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "bench-par");
    let rv = pods
        .list(&ListParams::default().limit(1))
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "bench-par");
    let t0 = Instant::now();
    sets.create(
        &PostParams::default(),
        &sts_manifest("par", args.parallel_replicas, "Parallel"),
    )
    .await?;
    wait_for_pods(&client, Some("bench-par"), args.parallel_replicas, &rv).await?;
    println!(
        "| Parallel set of {} replicas: 0 → all pods created | {:.2} s |",
        args.parallel_replicas,
        t0.elapsed().as_secs_f64()
    );
    // 2. OrderedReady handoff: pod N marked Ready → pod N+1 created.
    namespace(&client, "bench-ord").await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "bench-ord");
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "bench-ord");
    let n = 31;
    let rv = pods
        .list(&ListParams::default().limit(1))
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    sets.create(&PostParams::default(), &sts_manifest("ord", n, "OrderedReady"))
        .await?;
    // One watch for the whole sequence; a handoff is timed from the moment the Ready patch is acknowledged
    // (committed and visible) to the arrival of pod N+1's ADDED event.
    let mut stream = pods
        .watch(&WatchParams::default().timeout(120), &rv)
        .await?
        .boxed();
    let mut handoffs: Vec<(Instant, Option<Duration>)> = Vec::new();
    for i in 0..n {
        let mut created = None;
        while let Some(ev) = stream.next().await {
            if let WatchEvent::Added(p) = ev?
                && p.metadata.name.as_deref() == Some(&format!("ord-{i}"))
            {
                created = Some(Instant::now());
                break;
            }
        }
        let created = created.ok_or_else(|| anyhow::anyhow!("pod ord-{i} never created"))?;
        if let Some(h) = handoffs.last_mut() {
            h.1 = Some(created - h.0);
        }
        if i + 1 == n {
            break;
        }
        let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        let status = serde_json::json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}]}});
        pods.patch_status(
            &format!("ord-{i}"),
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&status),
        )
        .await?;
        handoffs.push((Instant::now(), None));
    }
    drop(stream);
    let mut lat: Vec<Duration> = handoffs.iter().filter_map(|h| h.1).collect();
    lat.sort();
    println!(
        "| OrderedReady handoff, pod N Ready → pod N+1 created ({} handoffs): median / p90 / max | {:.2} ms / {:.2} ms / {:.2} ms |",
        lat.len(),
        lat[lat.len() / 2].as_secs_f64() * 1e3,
        lat[lat.len() * 9 / 10].as_secs_f64() * 1e3,
        lat[lat.len() - 1].as_secs_f64() * 1e3
    );
    // 3. Memory with many sets of 10 pods (100 namespaces).
    let before = rss_kib(child.proc.id()).unwrap_or(0);
    let all: Api<Pod> = Api::all(client.clone());
    let rv = all
        .list(&ListParams::default().limit(1))
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let t0 = Instant::now();
    for ns in 0..100 {
        namespace(&client, &format!("mem-{ns}")).await?;
    }
    for i in 0..args.sets {
        let api: Api<StatefulSet> = Api::namespaced(client.clone(), &format!("mem-{}", i % 100));
        api.create(
            &PostParams::default(),
            &sts_manifest(&format!("s{i}"), 10, "Parallel"),
        )
        .await?;
    }
    wait_for_pods(&client, None, args.sets * 10, &rv).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(child.proc.id()).unwrap_or(0);
    println!(
        "| {} sets × 10 pods (Parallel): all pods created; server RSS before → after (store, API server and controllers in one process) | {:.1} s; {:.1} MB → {:.1} MB |",
        args.sets,
        t0.elapsed().as_secs_f64(),
        before as f64 / 1024.0,
        after as f64 / 1024.0
    );
    drop(child);
    Ok(())
}

/// Run every measurement and print Markdown.
pub async fn run(args: BenchArgs) -> Result<()> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_default();
    println!(
        "Machine: {} cores, {cpu}; build: {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    println!();
    println!("| figure | result |");
    println!("| --- | --- |");
    if args.suite == "statefulset" {
        return statefulset_figures(&args).await;
    }
    if args.suite == "agent" {
        return agent_figures(&args).await;
    }
    if args.suite == "network" {
        return network::figures().await;
    }
    if args.suite == "examples" {
        return examples::figures(&args.examples_dir).await;
    }
    if args.suite == "restart" {
        return restart::figures(&args).await;
    }
    if args.suite == "security" {
        return security::figures(&args).await;
    }
    if args.suite == "jobs" {
        return jobs::figures().await;
    }
    if args.suite == "workloads" {
        return workloads::figures(&args).await;
    }
    if args.suite == "etcd" {
        return etcd::figures(&args).await;
    }
    if args.suite == "failover" {
        return failover::figures().await;
    }
    let mut starts = Vec::new();
    for _ in 0..5 {
        let (child, took, _client) = start_server().await?;
        starts.push(took);
        drop(child);
    }
    starts.sort();
    let (child, _, client) = start_server().await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss_kib(child.proc.id()).unwrap_or(0);
    println!(
        "| server start to first successful request (median of 5) | {:.1} ms |",
        starts[2].as_secs_f64() * 1e3
    );
    println!("| idle RSS after start | {:.1} MB |", idle as f64 / 1024.0);
    for conc in [1usize, 16] {
        let api_rate = create_rate(&client, "default", args.creates, conc).await?;
        let raw = store_rate(args.creates, conc).await?;
        println!(
            "| creates/s, {conc} client(s) (HTTPS, kube-rs) vs raw store commits/s | {api_rate:.0} vs {raw:.0} (ratio {:.2}) |",
            api_rate / raw
        );
    }
    let cpu0 = cpu_seconds(child.proc.id()).unwrap_or(0.0);
    let (took, complete) = watch_fan_out(&client, args.watchers, args.changes).await?;
    let server_cpu = cpu_seconds(child.proc.id()).unwrap_or(0.0) - cpu0;
    println!(
        "| watch fan-out: {} watchers × {} changes (field-selected, one writer) | {complete}/{} watchers saw every change in order; {:.2} s wall, {:.2} s server CPU |",
        args.watchers,
        args.changes,
        args.watchers,
        took.as_secs_f64(),
        server_cpu
    );
    let lists = list_latency(&client, args.pods).await?;
    println!(
        "| list latency with {} pods stored (medians of 5): full list decoded by kube-rs / the same as bytes / first page of 500 | {lists} |",
        args.pods,
    );
    let loaded = rss_kib(child.proc.id()).unwrap_or(0);
    println!("| RSS after the runs | {:.1} MB |", loaded as f64 / 1024.0);
    let _ = &child.dir;
    drop(child);
    if args.suite == "all" {
        security::figures(&args).await?;
        if store::local_etcd::available() {
            etcd::figures(&args).await?;
        }
        statefulset_figures(&args).await?;
        workloads::figures(&args).await?;
        if nix::unistd::geteuid().is_root() && std::path::Path::new("/usr/bin/busybox").exists() {
            agent_figures(&args).await?;
            network::figures().await?;
            jobs::figures().await?;
        }
    }
    Ok(())
}

/// Proportional set size (KiB) of a process: its share of shared pages (`/proc/<pid>/smaps_rollup`).
fn pss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Pids of the container shims started for `data_dir`.
fn shims(data_dir: &std::path::Path) -> Vec<u32> {
    let needle = data_dir.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&std::fs::read(e.path().join("cmdline")).unwrap_or_default())
            .replace('\0', " ");
        if cmd.contains("container-shim") && cmd.contains(&needle) {
            out.push(pid);
        }
    }
    out
}

/// A watch of `pods` from their current resourceVersion (only changes from now on), for 60 s.
async fn watch_pods_from_now(
    pods: &Api<Pod>,
) -> Result<futures::stream::BoxStream<'static, kube::Result<WatchEvent<Pod>>>> {
    let rv = pods
        .list(&ListParams::default().limit(1))
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    Ok(pods
        .watch(&WatchParams::default().timeout(60), &rv)
        .await?
        .boxed())
}

/// Wait (up to 30 s) for the Node `name` to be registered, so that pods bound to it are run.
async fn wait_for_node(client: &kube::Client, name: &str) -> Result<()> {
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let t0 = Instant::now();
    while nodes.get_opt(name).await?.is_none() {
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(30),
            "node {name} never registered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Wait up to `secs` for the shims of `data_dir`'s pods to end (their pods were deleted), then kill
/// what is left of them (each leads its process group, with its container).
async fn end_shims(data_dir: &std::path::Path, secs: u64) {
    let t = Instant::now();
    while !shims(data_dir).is_empty() && t.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for pid in shims(data_dir) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

fn bench_pod(name: &str, node: &str, extra: serde_json::Value) -> Result<Pod> {
    let mut v = serde_json::json!({"metadata": {"name": name, "labels": {"bench": "agent"}},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "c", "image": "busybox:test", "command": ["/bin/sleep", "3600"]}]}});
    json_patch::merge(&mut v, &extra);
    Ok(serde_json::from_value(v)?)
}

/// Start latency of one pod `name` (with `extra` merged in), created already bound to the node
/// `bench`, until a watch shows it Running.
async fn start_latency(pods: &Api<Pod>, name: &str, extra: &serde_json::Value) -> Result<Duration> {
    let mut stream = watch_pods_from_now(pods).await?;
    let t = Instant::now();
    pods.create(&PostParams::default(), &bench_pod(name, "bench", extra.clone())?)
        .await?;
    while let Some(ev) = stream.next().await {
        if let WatchEvent::Modified(p) = ev?
            && p.metadata.name.as_deref() == Some(name)
            && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        {
            return Ok(t.elapsed());
        }
    }
    anyhow::bail!("the watch ended before {name} ran")
}

/// Issue 4's figures: pod start latency (bound → Running), a 10-replica OrderedReady set with a
/// readiness probe to all Ready, and the memory of Berth's own processes per running pod.
async fn agent_figures(args: &BenchArgs) -> Result<()> {
    use k8s_openapi::api::apps::v1::StatefulSet;
    let (child, _, client) = start_server_with(&[
        "--node-name",
        "bench",
        "--cluster-dns",
        "10.43.255.251",
        "--service-cidr",
        "10.44.251.0/24",
    ])
    .await?;
    let archive = agent::image::busybox_archive(child.dir.path())?;
    agent::image::ImageStore::open(child.dir.path())?.import(&archive)?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    wait_for_node(&client, "bench").await?;
    // 1. Start latency: a pod created already bound (spec.nodeName), until the watch shows it Running;
    // with the default walls (capabilities, masked paths, device rules), then with containerd's
    // RuntimeDefault seccomp profile on top.
    // Interleaved (one pod of each kind in turn), so a busy machine's noise falls on all alike.
    let variants = [
        ("start", "default walls", serde_json::json!({})),
        (
            "seccomp",
            "`seccompProfile: RuntimeDefault`",
            serde_json::json!({"spec": {"securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}}}),
        ),
        (
            "privileged",
            "`privileged: true` (no walls; the host's device nodes copied)",
            serde_json::json!({"spec": {"containers": [{"name": "c", "image": "busybox:test",
                "command": ["/bin/sleep", "3600"], "securityContext": {"privileged": true}}]}}),
        ),
        (
            "userns",
            "`hostUsers: false` (a user namespace, id-mapped root layer)",
            serde_json::json!({"spec": {"hostUsers": false}}),
        ),
    ];
    let mut lats: Vec<Vec<Duration>> = vec![Vec::new(); variants.len()];
    for i in 0..20 {
        for (v, (prefix, _, extra)) in variants.iter().enumerate() {
            lats[v].push(start_latency(&pods, &format!("{prefix}-{i}"), extra).await?);
        }
    }
    for ((_, what, _), mut lat) in variants.iter().zip(lats) {
        lat.sort();
        println!(
            "| pod start, {what}: created bound to the node → Running (image present; {} pods, one at a time): median / p90 / max | {:.1} ms / {:.1} ms / {:.1} ms |",
            lat.len(),
            lat[lat.len() / 2].as_secs_f64() * 1e3,
            lat[lat.len() * 9 / 10].as_secs_f64() * 1e3,
            lat[lat.len() - 1].as_secs_f64() * 1e3
        );
    }
    // The CPU side of RuntimeDefault, which the wall-clock medians above cannot resolve on a busy
    // machine: building containerd's profile for the default capabilities and compiling it to BPF (done
    // by the agent for the spec and again by the init before it installs the filter).
    let caps: Vec<String> = agent::security::DEFAULT_CAPABILITIES
        .iter()
        .map(|c| c.to_string())
        .collect();
    let mut times = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let programs = agent::security::runtime_default(&caps)
            .compile()
            .map_err(anyhow::Error::msg)?;
        times.push(t.elapsed());
        std::hint::black_box(programs);
    }
    times.sort();
    println!(
        "| RuntimeDefault seccomp: containerd's profile built and compiled to BPF (median of 200) | {:.0} µs |",
        times[times.len() / 2].as_secs_f64() * 1e6
    );
    // 2. A 10-replica OrderedReady set with an exec readiness probe (periodSeconds 1) until all Ready.
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    let set: StatefulSet = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "ready"},
        "spec": {"replicas": 10, "serviceName": "ready", "selector": {"matchLabels": {"app": "ready"}},
            "template": {"metadata": {"labels": {"app": "ready"}}, "spec": {"terminationGracePeriodSeconds": 1,
                "containers": [{"name": "c", "image": "busybox:test", "command": ["/bin/sleep", "3600"],
                    "readinessProbe": {"exec": {"command": ["/bin/true"]}, "periodSeconds": 1}}]}}}}))?;
    let t = Instant::now();
    sets.create(&PostParams::default(), &set).await?;
    loop {
        let s = sets.get("ready").await?;
        if s.status.as_ref().and_then(|st| st.ready_replicas) == Some(10) {
            break;
        }
        anyhow::ensure!(t.elapsed() < Duration::from_secs(120), "set not Ready in 120 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "| 10-replica OrderedReady set with an exec readiness probe: create → all 10 Ready | {:.2} s |",
        t.elapsed().as_secs_f64()
    );
    sets.delete("ready", &Default::default()).await?;
    for i in 0..20 {
        for (prefix, _, _) in &variants {
            let _ = pods.delete(&format!("{prefix}-{i}"), &Default::default()).await;
        }
    }
    let t = Instant::now();
    while !shims(child.dir.path()).is_empty() {
        anyhow::ensure!(t.elapsed() < Duration::from_secs(60), "pods not gone in 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // 3. Memory of Berth's own processes (server + shims, not the workloads) with N running pods.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = pss_kib(child.proc.id()).unwrap_or(0);
    for i in 0..args.running_pods {
        pods.create(
            &PostParams::default(),
            &bench_pod(&format!("mem-{i}"), "bench", serde_json::json!({}))?,
        )
        .await?;
    }
    let t = Instant::now();
    loop {
        let list = pods.list(&ListParams::default().labels("bench=agent")).await?;
        let running = list
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        if running == args.running_pods {
            break;
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(180),
            "only {running} pods running after 180 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let server = pss_kib(child.proc.id()).unwrap_or(0);
    let shim_pids = shims(child.dir.path());
    let shim_pss: u64 = shim_pids.iter().filter_map(|p| pss_kib(*p)).sum();
    let shim_rss: u64 = shim_pids.iter().filter_map(|p| rss_kib(*p)).sum();
    println!(
        "| {} running pods: server PSS {:.1} → {:.1} MB; {} shims PSS {:.1} MB (RSS {:.1} MB); Berth's own memory per pod | {:.0} KiB |",
        args.running_pods,
        before as f64 / 1024.0,
        server as f64 / 1024.0,
        shim_pids.len(),
        shim_pss as f64 / 1024.0,
        shim_rss as f64 / 1024.0,
        ((server.saturating_sub(before)) + shim_pss) as f64 / args.running_pods.max(1) as f64
    );
    let _ = pods
        .delete_collection(&Default::default(), &ListParams::default().labels("bench=agent"))
        .await;
    end_shims(child.dir.path(), 60).await;
    drop(child);
    Ok(())
}
