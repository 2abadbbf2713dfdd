//! `berth`: one binary that serves the Kubernetes API and runs stateful workloads.
//!
//! This crate only wires components together: flags → config, the store, the API server, the
//! in-process controllers, signals and exit codes. No business logic lives here.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::net::IpAddr;
use std::path::PathBuf;

mod bench;
mod loadbalancer;

/// Default data directory, as k3s's `/var/lib/rancher/k3s`.
const DEFAULT_DATA_DIR: &str = "/var/lib/berth";

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "Kubernetes StatefulSets on a machine of your own"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the all-in-one server: API server, store, controllers.
    Server(Box<ServerArgs>),
    /// Join a server as a node agent (another machine's kubelet), k3s-style.
    Agent(AgentArgs),
    /// Measure Berth's figures on this machine and print them as Markdown (docs/benchmarks.md).
    Bench(bench::BenchArgs),
    /// The node's image store: import air-gapped archives, list and remove images.
    Image {
        /// Data directory.
        #[arg(long, default_value = DEFAULT_DATA_DIR, env = "BERTH_DATA_DIR", global = true)]
        data_dir: PathBuf,
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Internal: a container's shim (started by the agent; outlives the server).
    #[command(hide = true, name = "container-shim")]
    ContainerShim {
        /// The container's directory.
        dir: PathBuf,
    },
    /// Internal: a container's init (PID 1 of its PID namespace until it execs the workload).
    #[command(hide = true, name = "container-init")]
    ContainerInit {
        /// The container's directory.
        dir: PathBuf,
    },
    /// Internal: run a command inside a running container (probes).
    #[command(hide = true, name = "container-exec")]
    ContainerExec {
        /// stdin is a terminal: make it the controlling terminal (`kubectl exec -t`).
        #[arg(long)]
        tty: bool,
        /// The container's directory.
        dir: PathBuf,
        /// The command.
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
    /// Secrets encryption at rest on a running server (k3s `secrets-encrypt`): `status`, `rotate` (a new
    /// key, every Secret re-encrypted with it, the old key dropped), `reencrypt`, `enable` or `disable`.
    #[command(name = "secrets-encrypt")]
    SecretsEncrypt {
        /// Data directory of the server (its admin kubeconfig is used).
        #[arg(long, default_value = DEFAULT_DATA_DIR, env = "BERTH_DATA_DIR", global = true)]
        data_dir: PathBuf,
        #[command(subcommand)]
        command: SecretsEncryptCommand,
    },
    /// Snapshots of the cluster's store at one revision (k3s `etcd-snapshot`): `save` (through the running
    /// server, or the embedded store directly while no server runs), `ls`, `restore` (into a fresh data dir
    /// or an empty etcd, with the server stopped).
    Snapshot(SnapshotArgs),
    /// Print the path of the admin kubeconfig.
    Kubeconfig {
        /// Data directory.
        #[arg(long, default_value = DEFAULT_DATA_DIR, env = "BERTH_DATA_DIR")]
        data_dir: PathBuf,
    },
}

/// `berth snapshot` flags (k3s's `etcd-snapshot` names).
#[derive(Parser, Clone)]
pub struct SnapshotArgs {
    /// Data directory of the server.
    #[arg(long, default_value = DEFAULT_DATA_DIR, env = "BERTH_DATA_DIR", global = true)]
    data_dir: PathBuf,
    /// Where snapshots are kept (default `<data-dir>/snapshots`, k3s's `db/snapshots`).
    #[arg(long, alias = "etcd-snapshot-dir", global = true)]
    snapshot_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: SnapshotCommand,
}

#[derive(Subcommand, Clone)]
enum SnapshotCommand {
    /// Take a snapshot now: `<name>-<node>-<unix time>` in the snapshot directory.
    Save {
        /// Name prefix (k3s's `--name`, default `on-demand`).
        #[arg(long, default_value = "on-demand")]
        name: String,
        /// This node's name in the file name (default: the host name).
        #[arg(long)]
        node_name: Option<String>,
        /// `berth`: every key at one revision, restorable into either backend by `berth snapshot
        /// restore`; `etcd` (etcd datastore only): etcd's own database snapshot as k3s takes it, for
        /// `etcdctl snapshot restore`.
        #[arg(long, default_value = "berth", value_parser = ["berth", "etcd"])]
        format: String,
    },
    /// List the snapshots in the snapshot directory.
    #[command(alias = "list")]
    Ls,
    /// Restore a snapshot, with the server stopped: into the data dir's embedded store, which must not
    /// exist yet (a fresh data dir), or with `--datastore-endpoint` into an etcd that holds no key.
    Restore {
        /// The snapshot file (a path, or a name in the snapshot directory).
        file: PathBuf,
        /// etcd client URLs, comma-separated (restore into etcd instead of the embedded store).
        #[arg(long, env = "BERTH_DATASTORE_ENDPOINT")]
        datastore_endpoint: Option<String>,
        /// CA of the etcd servers.
        #[arg(long, env = "BERTH_DATASTORE_CAFILE")]
        datastore_cafile: Option<PathBuf>,
        /// Client certificate for etcd.
        #[arg(long, env = "BERTH_DATASTORE_CERTFILE")]
        datastore_certfile: Option<PathBuf>,
        /// Its key.
        #[arg(long, env = "BERTH_DATASTORE_KEYFILE")]
        datastore_keyfile: Option<PathBuf>,
    },
}

/// The snapshot directory of a data dir (k3s's `<data-dir>/server/db/snapshots`).
pub fn snapshot_dir(data_dir: &std::path::Path, flag: Option<&PathBuf>) -> PathBuf {
    flag.cloned().unwrap_or_else(|| data_dir.join("snapshots"))
}

/// `berth snapshot …`.
async fn snapshot(args: SnapshotArgs) -> Result<()> {
    let dir = snapshot_dir(&args.data_dir, args.snapshot_dir.as_ref());
    match args.command {
        SnapshotCommand::Ls => {
            println!("{:<50} {:>12} {:<30}", "Name", "Size", "Created");
            for l in store::snapshot::list(&dir)? {
                let created = jiff::Timestamp::try_from(l.modified)
                    .map(|t| t.to_string())
                    .unwrap_or_default();
                println!("{:<50} {:>12} {:<30}", l.name, l.size, created);
            }
            Ok(())
        }
        SnapshotCommand::Save {
            name,
            node_name,
            format,
        } => {
            let node = node_name.unwrap_or_else(host_name);
            let file = format!("{name}-{node}-{}", jiff::Timestamp::now().as_second());
            let kc_path = args.data_dir.join("kubeconfig.yaml");
            let via_server = async {
                let kc = kube::config::Kubeconfig::read_from(&kc_path)?;
                let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
                let client = kube::Client::try_from(config)?;
                let req = http::Request::post(format!("/v1-berth/snapshot/save?name={file}&format={format}"))
                    .body(Vec::new())?;
                anyhow::Ok(client.request_text(req).await?)
            };
            match via_server.await {
                Ok(text) => {
                    let v: serde_json::Value = serde_json::from_str(&text).context("the server's answer")?;
                    println!(
                        "Snapshot {} saved (revision {}, {} keys, {} bytes).",
                        v["path"].as_str().unwrap_or(&file),
                        v["revision"],
                        v["keys"],
                        v["size"]
                    );
                    Ok(())
                }
                Err(e) => {
                    // No server answers: the embedded store can be read directly (its lock tells whether a
                    // server still holds it).
                    let path = args.data_dir.join("store");
                    if !path.exists() || format != "berth" {
                        return Err(e.context("asking the server for a snapshot"));
                    }
                    let store =
                        store::Store::open_embedded(&path, store::Options::default()).map_err(|oe| {
                            anyhow::anyhow!(
                                "asking the server for a snapshot: {e:#}; opening {}: {oe}",
                                path.display()
                            )
                        })?;
                    let s = store::snapshot::save(&store, &dir, &file).await?;
                    println!(
                        "Snapshot {} saved (revision {}, {} keys).",
                        s.path.display(),
                        s.revision,
                        s.keys
                    );
                    Ok(())
                }
            }
        }
        SnapshotCommand::Restore {
            file,
            datastore_endpoint,
            datastore_cafile,
            datastore_certfile,
            datastore_keyfile,
        } => {
            let path = if file.exists() { file } else { dir.join(&file) };
            let snap = store::snapshot::Snapshot::read(&path)?;
            match datastore_endpoint {
                None => {
                    let target = args.data_dir.join("store");
                    private_data_dir(&args.data_dir)?;
                    store::snapshot::restore_embedded(&target, &snap).map_err(|e| match e {
                        store::Error::AlreadyExists { .. } => anyhow::anyhow!(
                            "{} exists: restore into a fresh data dir (or move the store away first)",
                            target.display()
                        ),
                        e => e.into(),
                    })?;
                    println!(
                        "Restored {} keys at revision {} into {}.",
                        snap.kvs.len(),
                        snap.revision,
                        target.display()
                    );
                }
                Some(endpoint) => {
                    let config = store::EtcdConfig {
                        ca_file: datastore_cafile,
                        cert_file: datastore_certfile,
                        key_file: datastore_keyfile,
                        ..store::EtcdConfig::from_endpoint(&endpoint)
                            .map_err(|e| anyhow::anyhow!("--datastore-endpoint: {e}"))?
                    };
                    let store = store::Store::open_etcd(config).await?;
                    store::snapshot::restore_into(&store, &snap)
                        .await
                        .map_err(|e| match e {
                            store::Error::AlreadyExists { key } => {
                                anyhow::anyhow!(
                                    "the datastore is not empty (it holds {key}): restore into an empty etcd"
                                )
                            }
                            e => e.into(),
                        })?;
                    println!("Restored {} keys into {endpoint}.", snap.kvs.len());
                }
            }
            Ok(())
        }
    }
}

/// Take a snapshot on `--snapshot-schedule-cron` and keep the newest `--snapshot-retention` scheduled
/// ones (k3s's scheduled etcd snapshots: `etcd-snapshot-<node>-<unix time>`, 5 kept, every 12 hours).
async fn scheduled_snapshots(
    store: store::Store,
    schedule: api::cron::Schedule,
    dir: PathBuf,
    node: String,
    retention: usize,
) {
    let tz = jiff::tz::TimeZone::UTC;
    loop {
        let now = jiff::Timestamp::now();
        let Some(next) = schedule.next_after(now, &tz) else {
            return;
        };
        let wait = std::time::Duration::try_from(next.duration_since(now)).unwrap_or_default();
        tokio::time::sleep(wait).await;
        let prefix = format!("etcd-snapshot-{node}-");
        let name = format!("{prefix}{}", jiff::Timestamp::now().as_second());
        match store::snapshot::save(&store, &dir, &name).await {
            Ok(s) => {
                tracing::info!(path = %s.path.display(), revision = s.revision, keys = s.keys, "scheduled snapshot")
            }
            Err(e) => tracing::warn!(error = %e, "scheduled snapshot failed"),
        }
        match store::snapshot::prune(&dir, &prefix, retention) {
            Ok(gone) if !gone.is_empty() => tracing::info!(?gone, "snapshots past retention removed"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "snapshot retention"),
        }
    }
}

#[derive(Subcommand, Clone, Copy)]
enum SecretsEncryptCommand {
    /// Print whether encryption is on, the write key and how many Secrets still use an older key.
    Status,
    /// Replace the key: add a new write key, re-encrypt every Secret, drop the old key.
    #[command(alias = "rotate-keys")]
    Rotate,
    /// Re-encrypt every Secret not yet written with the current key.
    Reencrypt,
    /// Write Secrets encrypted again (after `disable`), and re-encrypt the ones in clear.
    Enable,
    /// Write Secrets in clear (keys stay for reading), and rewrite the encrypted ones in clear.
    Disable,
}

/// `berth secrets-encrypt …`: the server's admin API (`/v1-berth/encrypt/*`) through its kubeconfig.
async fn secrets_encrypt(data_dir: &std::path::Path, cmd: SecretsEncryptCommand) -> Result<()> {
    let kc_path = data_dir.join("kubeconfig.yaml");
    let kc = kube::config::Kubeconfig::read_from(&kc_path)
        .with_context(|| format!("reading {} (is the server running?)", kc_path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    let client = kube::Client::try_from(config)?;
    let (method, path) = match cmd {
        SecretsEncryptCommand::Status => (http::Method::GET, "/v1-berth/encrypt/status"),
        SecretsEncryptCommand::Rotate => (http::Method::POST, "/v1-berth/encrypt/rotate"),
        SecretsEncryptCommand::Reencrypt => (http::Method::POST, "/v1-berth/encrypt/reencrypt"),
        SecretsEncryptCommand::Enable => (http::Method::POST, "/v1-berth/encrypt/enable"),
        SecretsEncryptCommand::Disable => (http::Method::POST, "/v1-berth/encrypt/disable"),
    };
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .body(Vec::new())?;
    let text = client.request_text(req).await.context("asking the server")?;
    let v: serde_json::Value = serde_json::from_str(&text).context("the server's answer")?;
    if let Some(n) = v.get("reencrypted") {
        println!("reencrypted: {n} objects");
        return Ok(());
    }
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("-").to_string();
    println!("Encryption Status: {}", s("encryption"));
    println!("Current Write Key: {}:{}", s("writeProvider"), s("writeKey"));
    for p in v["providers"].as_array().into_iter().flatten() {
        let keys: Vec<&str> = p["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|k| k.as_str())
            .collect();
        println!(
            "Provider {}: {}",
            p["provider"].as_str().unwrap_or(""),
            keys.join(", ")
        );
    }
    println!(
        "Secrets: {} ({} not written with the current key)",
        v["objects"], v["stale"]
    );
    Ok(())
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Import an OCI image-layout or `docker save` archive (tar, optionally gzip/zstd); works while the
    /// server runs.
    Import {
        /// Archive files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// List stored images.
    Ls,
    /// Remove images by name.
    Rm {
        /// Names (any spelling Docker accepts: `busybox` = `docker.io/library/busybox:latest`).
        #[arg(required = true)]
        names: Vec<String>,
    },
}

fn image(data_dir: &std::path::Path, cmd: ImageCommand) -> Result<()> {
    let store = agent::image::ImageStore::open(data_dir)?;
    match cmd {
        ImageCommand::Import { files } => {
            for f in files {
                for (name, digest) in store
                    .import(&f)
                    .with_context(|| format!("importing {}", f.display()))?
                {
                    println!("{name} {digest}");
                }
            }
        }
        ImageCommand::Ls => {
            println!("{:<60} {:<20} {:>10}", "IMAGE", "DIGEST", "SIZE");
            for e in store.list()? {
                let short = e
                    .digest
                    .trim_start_matches("sha256:")
                    .get(..12)
                    .unwrap_or("")
                    .to_string();
                println!("{:<60} {:<20} {:>10}", e.name, short, e.size);
            }
        }
        ImageCommand::Rm { names } => {
            for n in names {
                store.remove(&n)?;
                println!("removed {}", agent::image::normalize(&n));
            }
        }
    }
    Ok(())
}

/// `berth agent` flags, named as k3s names them.
#[derive(Parser, Clone)]
pub struct AgentArgs {
    /// The server's URL (`https://host:6443`), or every server's, comma-separated: the agent reaches the
    /// API through a local load balancer that moves to the next server when its server fails (k3s's
    /// client-side load balancer).
    #[arg(long, env = "BERTH_URL")]
    pub server: String,
    /// The join token: the server's `<data-dir>/token` (`K10<CA hash>::server:<secret>`), or its plain
    /// `--token` (then the CA is trusted on first use).
    #[arg(long, env = "BERTH_TOKEN")]
    pub token: String,
    /// Directory holding this node's images, pods and volumes.
    #[arg(long, default_value = DEFAULT_DATA_DIR, env = "BERTH_DATA_DIR")]
    pub data_dir: PathBuf,
    /// This node's name (default: the host name).
    #[arg(long)]
    pub node_name: Option<String>,
    /// The address reported as the node's InternalIP (default: the one that reaches the server).
    #[arg(long)]
    pub node_ip: Option<IpAddr>,
    /// The cluster DNS address pods' resolv.conf names (the server's `--cluster-dns`; kubelet's flag).
    #[arg(long, default_value = "10.43.0.10")]
    pub cluster_dns: IpAddr,
    /// The cluster domain (the server's `--cluster-domain`; kubelet's flag).
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Give containers without a `seccompProfile` the runtime's default profile (`RuntimeDefault`)
    /// instead of `Unconfined` (kubelet's flag, off by default as upstream).
    #[arg(long)]
    pub seccomp_default: bool,
}

/// Flags named as k3s names them.
#[derive(Parser, Clone)]
pub struct ServerArgs {
    /// Directory holding the store, certificates and kubeconfig.
    #[arg(long, default_value = DEFAULT_DATA_DIR, env = "BERTH_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Address the API server listens on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind_address: IpAddr,
    /// HTTPS port of the API server.
    #[arg(long, default_value_t = 6443)]
    pub https_listen_port: u16,
    /// Also write the admin kubeconfig to this path.
    #[arg(long)]
    pub write_kubeconfig: Option<PathBuf>,
    /// Do not run a node agent on this machine: no Node is registered here, so without remote agents
    /// pods are not scheduled and WaitForFirstConsumer claims are not provisioned; a pod bound to no
    /// registered Node is deleted at once instead of gracefully (one on a remote agent's Node waits for it).
    #[arg(long)]
    pub disable_agent: bool,
    /// External datastore: etcd client URLs, comma-separated (`https://etcd1:2379,https://etcd2:2379`;
    /// `http://` for loopback tests). Several servers on one etcd serve one cluster. The embedded store
    /// (`<data-dir>/store`) is used when absent.
    #[arg(long, env = "BERTH_DATASTORE_ENDPOINT")]
    pub datastore_endpoint: Option<String>,
    /// Serve lists from the API server's watch cache (kube-apiserver's `--watch-cache`; `false` reads every
    /// list from the store).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub watch_cache: bool,
    /// CA certificate that signed the etcd servers' certificates (k3s's flag).
    #[arg(long, env = "BERTH_DATASTORE_CAFILE")]
    pub datastore_cafile: Option<PathBuf>,
    /// Client certificate for etcd's mutual TLS (k3s's flag).
    #[arg(long, env = "BERTH_DATASTORE_CERTFILE")]
    pub datastore_certfile: Option<PathBuf>,
    /// Key of `--datastore-certfile` (k3s's flag).
    #[arg(long, env = "BERTH_DATASTORE_KEYFILE")]
    pub datastore_keyfile: Option<PathBuf>,
    /// Shared secret accepted as a bearer token (and used by agents to join).
    #[arg(long, env = "BERTH_TOKEN")]
    pub token: Option<String>,
    /// Join the cluster of this server (`https://first:6443`, k3s's flag): its datastore endpoint and
    /// client credentials come from it (`/v1-berth/server-bootstrap`, authenticated by `--token`, its CA
    /// checked against a `K10…` token's hash), then the CA and keys from the datastore as for any server.
    /// Kept under `<data-dir>/server/datastore/`, so a restart works while that server is down.
    #[arg(long, env = "BERTH_URL", conflicts_with = "datastore_endpoint")]
    pub server: Option<String>,
    /// This node's name (default: the host name).
    #[arg(long)]
    pub node_name: Option<String>,
    /// Pod network range.
    #[arg(long, default_value = "10.42.0.0/16")]
    pub cluster_cidr: String,
    /// Service ClusterIP range.
    #[arg(long, default_value = "10.43.0.0/16")]
    pub service_cidr: String,
    /// Cluster DNS service address.
    #[arg(long, default_value = "10.43.0.10")]
    pub cluster_dns: IpAddr,
    /// Cluster domain.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Give containers without a `seccompProfile` the runtime's default profile (`RuntimeDefault`)
    /// instead of `Unconfined` (the kubelet's `--seccomp-default`, off by default as upstream).
    #[arg(long)]
    pub seccomp_default: bool,
    /// How long a node may go without a heartbeat before it is marked `Unknown`, tainted unreachable and
    /// its pods not ready (kube-controller-manager's `--node-monitor-grace-period`: `40s`, `2m`, `1m30s`).
    #[arg(long, default_value = "40s", value_parser = humantime::parse_duration)]
    pub node_monitor_grace_period: std::time::Duration,
    /// How many finished pods (Succeeded or Failed) to keep before the pod garbage collector deletes the
    /// oldest, evicted ones first (kube-controller-manager's `--terminated-pod-gc-threshold`; 0 keeps all).
    #[arg(long, default_value_t = controllers::podgc::DEFAULT_TERMINATED_THRESHOLD)]
    pub terminated_pod_gc_threshold: usize,
    /// How long the controllers' Lease is valid after its last renewal: a server that dies is replaced
    /// as leader after about this long (kube-controller-manager's `--leader-elect-lease-duration`).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub leader_elect_lease_duration: std::time::Duration,
    /// How long the leader tries to renew before it stops its controllers
    /// (`--leader-elect-renew-deadline`).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub leader_elect_renew_deadline: std::time::Duration,
    /// Time between election attempts (`--leader-elect-retry-period`).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub leader_elect_retry_period: std::time::Duration,
    /// This node's InternalIP (default: `--bind-address`; with 0.0.0.0, the address of the interface of
    /// the default route, as k3s picks it). Other nodes route this node's pod slice and the cluster DNS
    /// through it.
    #[arg(long)]
    pub node_ip: Option<IpAddr>,
    /// PodSecurity's policy for namespaces without `pod-security.kubernetes.io/*` labels: a level
    /// (`privileged`, `baseline`, `restricted`) for every mode, or `enforce=baseline,warn=restricted`,
    /// each optionally `level:v1.x` (upstream's `PodSecurityConfiguration` defaults; k3s takes a file).
    #[arg(long, default_value = "privileged")]
    pub pod_security_default: String,
    /// Namespaces PodSecurity never checks (upstream `exemptions.namespaces`), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub pod_security_exempt_namespaces: Vec<String>,
    /// k3s's `--pod-security-admission-config-file`: an upstream `AdmissionConfiguration` with a
    /// `PodSecurityConfiguration` (defaults and exemptions); overrides `--pod-security-default`.
    #[arg(long)]
    pub pod_security_admission_config_file: Option<PathBuf>,
    /// Encrypt Secrets at rest (k3s `--secrets-encryption`): a key is created in
    /// `<data-dir>/server/cred/encryption-config.json`, an upstream `EncryptionConfiguration`.
    #[arg(long)]
    pub secrets_encryption: bool,
    /// Cipher of a newly created encryption key: `aescbc` (k3s's default), `aesgcm` or `secretbox`.
    #[arg(long, default_value = "aescbc")]
    pub secrets_encryption_provider: String,
    /// When to take scheduled snapshots, a five-field cron expression (k3s's
    /// `--etcd-snapshot-schedule-cron`, every 12 hours by default).
    #[arg(long, alias = "etcd-snapshot-schedule-cron", default_value = "0 */12 * * *")]
    pub snapshot_schedule_cron: String,
    /// How many scheduled snapshots to keep (k3s's `--etcd-snapshot-retention`).
    #[arg(long, alias = "etcd-snapshot-retention", default_value_t = 5)]
    pub snapshot_retention: usize,
    /// Take no scheduled snapshots (k3s's `--etcd-disable-snapshots`).
    #[arg(long, alias = "etcd-disable-snapshots")]
    pub disable_snapshots: bool,
    /// Where snapshots are kept (default `<data-dir>/snapshots`; k3s's `--etcd-snapshot-dir`).
    #[arg(long, alias = "etcd-snapshot-dir")]
    pub snapshot_dir: Option<PathBuf>,
}

/// Where the encryption configuration lives (k3s's path under its data dir).
pub fn encryption_config_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir
        .join("server")
        .join("cred")
        .join("encryption-config.json")
}

/// The encryption configuration to run with: with `--secrets-encryption`, the existing one or a new one
/// (and the file); without it, an existing file is still honoured, so Secrets written encrypted stay
/// readable.
fn encryption_config(args: &ServerArgs) -> Result<Option<(apiserver::encryption::Config, PathBuf)>> {
    let path = encryption_config_path(&args.data_dir);
    if path.exists() {
        let cfg = apiserver::encryption::Config::load(&path)?;
        if !args.secrets_encryption {
            tracing::warn!(path = %path.display(), "secrets encryption configuration found: still in force");
        }
        return Ok(Some((cfg, path)));
    }
    if !args.secrets_encryption {
        return Ok(None);
    }
    let cfg = apiserver::encryption::Config::generate(&args.secrets_encryption_provider)?;
    cfg.save(&path)?;
    tracing::info!(path = %path.display(), "secrets encryption key created");
    Ok(Some((cfg, path)))
}

/// Create the data dir if needed and make it (and the store file) private to this user: the store holds
/// every Secret. Existing data dirs made by older versions are tightened too.
fn private_data_dir(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making {} private", dir.display()))
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG").unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Server(args) => run_async(server(*args)),
        Command::Agent(args) => run_async(agent_main(args)),
        Command::Bench(args) => run_async(bench::run(args)),
        Command::Image { data_dir, command } => image(&data_dir, command),
        Command::ContainerShim { dir } => agent::runtime::shim_main(&dir).context("container shim"),
        Command::ContainerInit { dir } => agent::runtime::init_main(&dir).context("container init"),
        Command::ContainerExec { tty, dir, argv } => match agent::runtime::exec_main(&dir, &argv, tty) {
            Ok(code) => std::process::exit(code),
            Err(e) => Err(anyhow::anyhow!("container exec: {e}")),
        },
        Command::SecretsEncrypt { data_dir, command } => run_async(secrets_encrypt(&data_dir, command)),
        Command::Snapshot(args) => run_async(snapshot(args)),
        Command::Kubeconfig { data_dir } => {
            println!("{}", data_dir.join("kubeconfig.yaml").display());
            Ok(())
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_async<F: std::future::Future<Output = Result<()>>>(f: F) -> Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(f)
}

fn node_name(args: &ServerArgs) -> String {
    args.node_name.clone().unwrap_or_else(host_name)
}

/// k3s's secure join token: `K10<sha256 of the CA certificate PEM>::server:<token>`, so a joining agent can
/// check the CA it downloads from `/cacerts` before trusting it.
fn join_token(ca_pem: &str, token: &str) -> String {
    use sha2::Digest;
    format!("K10{:x}::server:{token}", sha2::Sha256::digest(ca_pem.as_bytes()))
}

/// A join token's parts: `K10<CA hash>::<user>:<password>` → (hash, password); a plain token is its
/// own password (k3s's token formats).
fn split_token(token: &str) -> (Option<String>, String) {
    match token.strip_prefix("K10").and_then(|r| r.split_once("::")) {
        Some((hash, cred)) => (
            Some(hash.to_string()),
            cred.split_once(':').map_or(cred, |(_, p)| p).to_string(),
        ),
        None => (None, token.to_string()),
    }
}

/// A client of the server at `url` with `password` as bearer, trusting the CA it serves at `/cacerts`
/// once that matches the token's `hash` (k3s's join; a plain token trusts it on first use).
///
/// # Errors
/// The server is unreachable, its CA does not match, or it refuses the token.
async fn token_client(url: &str, hash: Option<&str>, password: &str) -> Result<kube::Client> {
    use base64::Engine;
    use sha2::Digest;
    let mut insecure = kube::Config::new(url.parse()?);
    insecure.accept_invalid_certs = true;
    let ca = kube::Client::try_from(insecure)?
        .request_text(http::Request::get("/cacerts").body(Vec::new())?)
        .await
        .context("fetching the server's CA from /cacerts")?;
    match hash {
        Some(h) if format!("{:x}", sha2::Sha256::digest(ca.as_bytes())) != h => {
            bail!("the server's CA does not match the token's hash: refusing to join")
        }
        Some(_) => {}
        None => tracing::warn!("plain token: the server's CA is trusted on first use (a K10… token pins it)"),
    }
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: berth\n  cluster:\n    server: {url}\n    certificate-authority-data: {}\nusers:\n- name: agent\n  user:\n    token: {password}\ncontexts:\n- name: berth\n  context: {{cluster: berth, user: agent}}\ncurrent-context: berth\n",
        base64::engine::general_purpose::STANDARD.encode(ca.as_bytes())
    );
    let kc = kube::config::Kubeconfig::from_yaml(&kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    let client = kube::Client::try_from(config)?;
    client
        .apiserver_version()
        .await
        .context("the server refused the token")?;
    Ok(client)
}

/// The datastore files a joined server keeps: `(bootstrap key, file name)`.
const JOINED_FILES: [(&str, &str); 3] = [
    ("datastoreCA", "ca.crt"),
    ("datastoreCert", "client.crt"),
    ("datastoreKey", "client.key"),
];

/// `berth server --server URL --token T`: `args` with the datastore of the server at URL (its
/// `/v1-berth/server-bootstrap`), as k3s's joining server takes its bootstrap from the first one. The
/// answer is kept under `<data-dir>/server/datastore/` and used when that server cannot be reached
/// (a restart while it is down); a refused token is never passed over.
///
/// # Errors
/// No `--token`; the server refuses, runs the embedded store, or cannot be reached and nothing is kept.
async fn join_datastore(args: &ServerArgs) -> Result<ServerArgs> {
    let url = args.server.as_deref().context("--server")?;
    let token = args
        .token
        .as_deref()
        .context("--server needs --token (the cluster's token, or the first server's <data-dir>/token)")?;
    let (hash, password) = split_token(token);
    let dir = args.data_dir.join("server").join("datastore");
    let kept = dir.join("bootstrap.json");
    let fetched = async {
        let client = token_client(url, hash.as_deref(), &password).await?;
        let text = client
            .request_text(http::Request::get("/v1-berth/server-bootstrap").body(Vec::new())?)
            .await
            .with_context(|| format!("asking {url} for its datastore"))?;
        anyhow::Ok(text)
    }
    .await;
    let text = match fetched {
        Ok(text) => {
            write_file(&kept, &text)?;
            text
        }
        Err(e) if kept.exists() && !format!("{e:#}").contains("refused the token") => {
            tracing::warn!(
                error = format!("{e:#}"),
                "joining {url}: using the datastore kept from the last join"
            );
            std::fs::read_to_string(&kept).with_context(|| format!("reading {}", kept.display()))?
        }
        Err(e) => return Err(e).with_context(|| format!("joining the cluster of {url}")),
    };
    let info: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{url}'s server bootstrap"))?;
    let mut joined = args.clone();
    joined.token = Some(password);
    joined.datastore_endpoint = Some(
        info["datastoreEndpoint"]
            .as_str()
            .context("the server bootstrap names no datastore")?
            .to_string(),
    );
    for (key, file) in JOINED_FILES {
        let path = match info[key].as_str() {
            Some(pem) => {
                let path = dir.join(file);
                write_file(&path, pem)?;
                Some(path)
            }
            None => None,
        };
        match key {
            "datastoreCA" => joined.datastore_cafile = path,
            "datastoreCert" => joined.datastore_certfile = path,
            _ => joined.datastore_keyfile = path,
        }
    }
    tracing::info!(%url, endpoint = joined.datastore_endpoint.as_deref().unwrap_or(""), "joined: the cluster's datastore");
    Ok(joined)
}

/// What this server hands a joining one (see [`join_datastore`]): its datastore endpoint and the
/// PEMs of its datastore flags. `None` on the embedded store.
fn server_bootstrap(args: &ServerArgs) -> Result<Option<serde_json::Value>> {
    let Some(endpoint) = &args.datastore_endpoint else {
        return Ok(None);
    };
    let mut v = serde_json::json!({"datastoreEndpoint": endpoint});
    for ((key, _), path) in JOINED_FILES.iter().zip([
        &args.datastore_cafile,
        &args.datastore_certfile,
        &args.datastore_keyfile,
    ]) {
        v[*key] = match path {
            Some(p) => std::fs::read_to_string(p)
                .with_context(|| format!("reading {}", p.display()))?
                .into(),
            None => serde_json::Value::Null,
        };
    }
    Ok(Some(v))
}

/// Join a server as a node agent (`berth agent --server URL --token T`), the k3s way: fetch the CA from
/// `/cacerts`, check it against a `K10…` token's hash, then talk HTTPS with the token as bearer.
async fn agent_main(args: AgentArgs) -> Result<()> {
    let (hash, password) = split_token(&args.token);
    let urls: Vec<String> = args
        .server
        .split(',')
        .map(|u| u.trim().to_string())
        .filter(|u| !u.is_empty())
        .collect();
    let servers = urls
        .iter()
        .map(|u| loadbalancer::host_port(u).with_context(|| format!("--server {u}")))
        .collect::<Result<Vec<_>>>()?;
    let url: http::Uri = urls
        .first()
        .context("--server names no server")?
        .parse()
        .context("--server is not a URL")?;
    // Every API connection goes through the local load balancer (k3s's), so it outlives any one server.
    let lb = loadbalancer::LoadBalancer::start(servers)
        .await
        .context("starting the API load balancer")?;
    let client = token_client(&lb.url(), hash.as_deref(), &password).await?;
    // Learn every API server from the `default/kubernetes` Endpoints, as k3s's agent does.
    let lb = std::sync::Arc::new(lb);
    tokio::spawn(learn_servers(client.clone(), lb.clone()));
    let node_ip = match args.node_ip {
        Some(ip) => ip,
        None => local_ip_towards(&url).unwrap_or(IpAddr::from([127, 0, 0, 1])),
    };
    private_data_dir(&args.data_dir)?;
    let node = args.node_name.clone().unwrap_or_else(host_name);
    agent::start(
        client,
        agent::Config {
            node_name: node.clone(),
            node_ip,
            data_dir: args.data_dir.clone(),
            control_plane: false,
            kubelet_token: password,
            kubelet_port: 0,
            cluster_dns: args.cluster_dns,
            cluster_domain: args.cluster_domain.clone(),
            seccomp_default: args.seccomp_default,
        },
    )
    .await?;
    println!(
        "berth agent {node} ({node_ip}) joined {} (through {})",
        args.server,
        lb.current()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}

/// Keep the agent's load balancer listing every API server the `default/kubernetes` Endpoints name
/// (kept by the servers, `apiserver::peers`), every 10 s.
async fn learn_servers(client: kube::Client, lb: std::sync::Arc<loadbalancer::LoadBalancer>) {
    use k8s_openapi::api::core::v1::Endpoints;
    let api = kube::Api::<Endpoints>::namespaced(client, "default");
    loop {
        if let Ok(ep) = api.get("kubernetes").await {
            let servers: Vec<String> = ep
                .subsets
                .unwrap_or_default()
                .iter()
                .flat_map(|s| {
                    let port = s
                        .ports
                        .iter()
                        .flatten()
                        .find(|p| p.name.as_deref() == Some("https"))
                        .map_or(6443, |p| p.port);
                    s.addresses
                        .iter()
                        .flatten()
                        .map(move |a| format!("{}:{port}", a.ip))
                })
                .collect();
            if !servers.is_empty() {
                lb.update(servers);
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(10)).await;
    }
}

/// The local address this machine would use to reach `url`'s host (a UDP connect sends nothing).
fn local_ip_towards(url: &http::Uri) -> Option<IpAddr> {
    let host = url.host()?;
    let port = url.port_u16().unwrap_or(6443);
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    sock.connect((host, port)).ok()?;
    sock.local_addr().ok().map(|a| a.ip())
}

/// The server node's InternalIP: `--node-ip`, else `--bind-address`, else (bound to all addresses) the
/// source address of the default route (a UDP connect sends nothing), else loopback.
fn server_node_ip(args: &ServerArgs) -> IpAddr {
    if let Some(ip) = args.node_ip {
        return ip;
    }
    if !args.bind_address.is_unspecified() {
        return args.bind_address;
    }
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            // TEST-NET-1 (RFC 5737): only the routing decision is made, no packet leaves.
            s.connect(("192.0.2.1", 9))?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_lowercase())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "berth".into())
}

/// 256 random bits, hex (from the kernel's CSPRNG).
fn uuid_like_secret() -> String {
    let mut buf = [0u8; 32];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut buf);
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A running server, for `berth server` and `berth bench`.
pub struct Running {
    /// The admin kubeconfig path.
    pub kubeconfig: PathBuf,
    /// The API URL.
    pub url: String,
    /// The in-process router.
    pub router: axum::Router,
    shutdown: tokio::sync::watch::Sender<bool>,
    serve: tokio::task::JoinHandle<()>,
    /// This server's record in `default/kubernetes` (servers on a datastore), taken out at shutdown.
    peer: Option<(apiserver::registry::Registry, String, u16)>,
}

/// The datastore `berth server` runs on: etcd with `--datastore-endpoint`, else the embedded store.
pub async fn open_store(args: &ServerArgs) -> Result<store::Store> {
    let Some(endpoint) = &args.datastore_endpoint else {
        return store::Store::open_embedded(&args.data_dir.join("store"), store::Options::default())
            .context("opening the embedded store");
    };
    let config = store::EtcdConfig {
        ca_file: args.datastore_cafile.clone(),
        cert_file: args.datastore_certfile.clone(),
        key_file: args.datastore_keyfile.clone(),
        ..store::EtcdConfig::from_endpoint(endpoint)
            .map_err(|e| anyhow::anyhow!("--datastore-endpoint: {e}"))?
    };
    let store = store::Store::open_etcd(config)
        .await
        .with_context(|| format!("connecting to the datastore {endpoint}"))?;
    tracing::info!(%endpoint, "datastore: etcd");
    Ok(store)
}

/// The cluster's token: `--token`, else (servers sharing a datastore need one to share their bootstrap
/// data) the one this server made on its first start, kept in `<data-dir>/server/token` as k3s keeps its
/// own. `None` for an embedded store without `--token`.
fn cluster_token(args: &ServerArgs) -> Result<Option<String>> {
    if let Some(t) = &args.token {
        return Ok(Some(t.clone()));
    }
    if args.datastore_endpoint.is_none() {
        return Ok(None);
    }
    let path = args.data_dir.join("server").join("token");
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(Some(t.trim().to_string())),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let t = uuid_like_secret();
    write_file(&path, &t)?;
    tracing::info!(path = %path.display(), "cluster token created: start the other servers with --token");
    Ok(Some(t))
}

/// Start the store, API server and controllers; returns once the API answers.
pub async fn start(args: &ServerArgs) -> Result<Running> {
    private_data_dir(&args.data_dir)?;
    let joined;
    let args = if args.server.is_some() {
        joined = join_datastore(args).await?;
        &joined
    } else {
        args
    };
    let pod_security = match &args.pod_security_admission_config_file {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let mut c = apiserver::admission::podsecurity::parse_config_file(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            c.exempt_namespaces
                .extend(args.pod_security_exempt_namespaces.iter().cloned());
            c
        }
        None => apiserver::admission::podsecurity::PodSecurityConfig {
            defaults: apiserver::admission::podsecurity::parse_default(&args.pod_security_default)
                .map_err(|e| anyhow::anyhow!("--pod-security-default: {e}"))?,
            exempt_namespaces: args.pod_security_exempt_namespaces.clone(),
            exempt_runtime_classes: Vec::new(),
        },
    };
    let election = controllers::Election {
        lease_duration: args.leader_elect_lease_duration,
        renew_deadline: args.leader_elect_renew_deadline,
        retry_period: args.leader_elect_retry_period,
    };
    election.validate().map_err(anyhow::Error::msg)?;
    let store = open_store(args).await?;
    let token = cluster_token(args)?;
    // Servers sharing a datastore share the CA, the admin certificate and the encryption configuration
    // through it (k3s's bootstrap data): a joining server takes them before it makes its certificates.
    let bootstrap = match (&args.datastore_endpoint, &token) {
        (Some(_), Some(t)) => {
            let t = apiserver::cluster::Token(t.clone());
            let paths = apiserver::cluster::Paths {
                tls_dir: args.data_dir.join("tls"),
                encryption_config: encryption_config_path(&args.data_dir),
            };
            let outcome = apiserver::cluster::reconcile(&store, &t, &paths, args.secrets_encryption)
                .await
                .context("the cluster's bootstrap data")?;
            tracing::info!(?outcome, "bootstrap data");
            Some((t, paths, outcome))
        }
        _ => None,
    };
    let node = node_name(args);
    let first_service_ip = apiserver::alloc::nth_ip(&args.service_cidr, 1)
        .map(|i| i.to_string())
        .unwrap_or_default();
    let mut sans = vec![
        "127.0.0.1".to_string(),
        "localhost".to_string(),
        node.clone(),
        first_service_ip,
    ];
    if !args.bind_address.is_unspecified() {
        sans.push(args.bind_address.to_string());
    }
    // The node's address too: agents on other machines reach the server there when it listens on all.
    let node_ip = server_node_ip(args).to_string();
    if !sans.contains(&node_ip) {
        sans.push(node_ip);
    }
    sans.push("kubernetes.default.svc".into());
    sans.push(format!("kubernetes.default.svc.{}", args.cluster_domain));
    let mut encryption = encryption_config(args)?;
    let mut pki = apiserver::tls::Pki::load_or_create(&args.data_dir.join("tls"), &sans)
        .context("preparing certificates")?;
    if let Some((t, paths, apiserver::cluster::Outcome::First)) = &bootstrap {
        let published = apiserver::cluster::publish(&store, t, paths)
            .await
            .context("storing the cluster's bootstrap data")?;
        if !published {
            // Another server bootstrapped the cluster at the same moment: its files were taken.
            encryption = encryption_config(args)?;
            pki = apiserver::tls::Pki::load_or_create(&args.data_dir.join("tls"), &sans)
                .context("preparing certificates")?;
        }
    }
    let reg_cfg = apiserver::registry::RegistryConfig {
        service_cidr: args.service_cidr.clone(),
        graceful_pod_deletion: !args.disable_agent,
        admission: apiserver::admission::AdmissionConfig { pod_security },
        encryption_path: encryption.as_ref().map(|(_, p)| p.clone()),
        encryption: encryption.map(|(c, _)| c),
        watch_cache: args.watch_cache,
        cluster_token: bootstrap.as_ref().map(|(t, _, _)| t.clone()),
        snapshot_dir: Some(snapshot_dir(&args.data_dir, args.snapshot_dir.as_ref())),
        ..Default::default()
    };
    let schedule = if args.disable_snapshots {
        None
    } else {
        Some(
            api::cron::parse(&args.snapshot_schedule_cron)
                .map_err(|e| anyhow::anyhow!("--snapshot-schedule-cron: {e}"))?,
        )
    };
    if let Some(schedule) = schedule {
        tokio::spawn(scheduled_snapshots(
            store.clone(),
            schedule,
            snapshot_dir(&args.data_dir, args.snapshot_dir.as_ref()),
            node.clone(),
            args.snapshot_retention,
        ));
    }
    let registry = apiserver::registry::Registry::new(store, reg_cfg);
    apiserver::bootstrap(&registry, args.https_listen_port)
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.status()))?;
    let listener = tokio::net::TcpListener::bind((args.bind_address, args.https_listen_port))
        .await
        .with_context(|| format!("listening on {}:{}", args.bind_address, args.https_listen_port))?;
    let local = listener.local_addr()?;
    let peer = args
        .datastore_endpoint
        .is_some()
        .then(|| (registry.clone(), server_node_ip(args).to_string(), local.port()));
    if let Some((reg, ip, port)) = peer.clone() {
        // Servers sharing a datastore keep `default/kubernetes` naming the live ones (upstream's lease
        // endpoint reconciler); agents learn every server from it.
        tokio::spawn(apiserver::peers::run(reg, ip, port));
    }
    let host = if args.bind_address.is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        args.bind_address.to_string()
    };
    let url = format!("https://{host}:{}", local.port());
    let kubeconfig = pki.kubeconfig(&url);
    let kc_path = args.data_dir.join("kubeconfig.yaml");
    write_file(&kc_path, &kubeconfig)?;
    if let Some(p) = &args.write_kubeconfig {
        write_file(p, &kubeconfig)?;
    }
    // A fresh secret per start that only this process and its own agent know.
    // The agents' kubelet APIs trust this token: the cluster token when there is one (remote agents know
    // it), else a fresh per-start secret only this process and its own agent share.
    let kubelet_token = token.clone().unwrap_or_else(uuid_like_secret);
    if let Some(t) = &token {
        write_file(&args.data_dir.join("token"), &join_token(&pki.ca_cert, t))?;
    }
    let state = apiserver::http::AppState {
        registry,
        server_address: format!("{host}:{}", local.port()),
        kubelet_token: kubelet_token.clone(),
        ca_pem: pki.ca_cert.clone(),
        server_bootstrap: server_bootstrap(args)?,
    };
    let router = apiserver::http::router(state);
    let tls = pki.server_config().context("tls")?;
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    let serve = tokio::spawn(apiserver::server::serve_tls(
        listener,
        tls,
        router.clone(),
        token.clone(),
        async move {
            let _ = rx.wait_for(|v| *v).await;
        },
    ));
    // Controllers reach the API through a kube-rs client over the in-process router (no socket).
    let client = kube::Client::new(apiserver::server::in_process(router.clone()), "default");
    // The controller set runs while this server holds its Lease (one copy per cluster).
    tokio::spawn(controllers::run_elected(
        client.clone(),
        args.cluster_cidr.clone(),
        node.clone(),
        peer.as_ref().and_then(|(_, ip, port)| {
            ip.parse::<IpAddr>()
                .ok()
                .map(|ip| std::net::SocketAddr::new(ip, *port).to_string())
        }),
        controllers::Options {
            node_monitor_grace_period: args.node_monitor_grace_period,
            terminated_pod_gc_threshold: args.terminated_pod_gc_threshold,
        },
        election,
    ));
    // Cluster DNS on `--cluster-dns`, an address of this host (needs root, as the pod network does).
    match args.cluster_dns {
        IpAddr::V4(ip) if nix::unistd::geteuid().is_root() => match dns::ensure_address(ip) {
            Ok(()) => {
                if let Err(e) = dns::serve(client.clone(), (ip, 53).into(), args.cluster_domain.clone()).await
                {
                    tracing::warn!(error = %e, %ip, "cluster DNS not served");
                }
            }
            Err(e) => tracing::warn!(error = %e, %ip, "cluster DNS address not set up"),
        },
        ip => tracing::warn!(%ip, "cluster DNS not served (needs root and an IPv4 address)"),
    }
    if !args.disable_agent {
        // This machine's own node agent, on the same in-process client (a remote agent uses HTTPS).
        agent::start(
            client,
            agent::Config {
                node_name: node.clone(),
                node_ip: server_node_ip(args),
                data_dir: args.data_dir.clone(),
                control_plane: true,
                kubelet_token: kubelet_token.clone(),
                kubelet_port: 0,
                cluster_dns: args.cluster_dns,
                cluster_domain: args.cluster_domain.clone(),
                seccomp_default: args.seccomp_default,
            },
        )
        .await
        .context("starting the node agent")?;
    }
    tracing::info!(%url, kubeconfig = %kc_path.display(), "berth server ready");
    Ok(Running {
        kubeconfig: kc_path,
        url,
        router,
        shutdown: tx,
        serve,
        peer,
    })
}

impl Running {
    /// Stop accepting connections.
    pub async fn stop(self) {
        if let Some((reg, ip, port)) = &self.peer {
            // As kube-apiserver's RemoveEndpoints at shutdown: agents drop this server at once.
            if let Err(e) = apiserver::peers::remove(reg, ip, *port).await {
                tracing::warn!(error = %e, "removing this server from default/kubernetes");
            }
        }
        let _ = self.shutdown.send(true);
        let _ = self.serve.await;
    }
}

fn write_file(path: &std::path::Path, contents: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).ok();
    }
    apiserver::files::write_private(path, contents.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

async fn server(args: ServerArgs) -> Result<()> {
    let running = start(&args).await?;
    println!("Berth is running at {}", running.url);
    println!("  export KUBECONFIG={}", running.kubeconfig.display());
    println!("  kubectl get nodes,sts,pods -A");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt: shutting down"),
    }
    running.stop().await;
    Ok(())
}
