//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go's `tools/leaderelection` with its
//! `LeaseLock` (what kube-controller-manager runs under): one holder at a time; a candidate takes a
//! Lease that is absent, already its own, or whose record it has seen unchanged for `lease_duration`
//! (measured on its own clock from when it observed the record, never from the holder's timestamps, so
//! clock skew between servers cannot shorten a lease); the holder renews every `retry_period` and gives up
//! leading when it could not renew for `renew_deadline`. Writes are compare-and-swap on the Lease's
//! resourceVersion, so two candidates can never both win one round.
//!
//! One addition to client-go (Berth's, not upstream's): a holder that knows its API address writes it to
//! the Lease (annotation [`HOLDER_ADDRESS`]), and a candidate that has seen the record unchanged for
//! [`Config::dead_after`] (two retry periods: a live holder renews every retry period) probes that address
//! with a TCP connect. Only a refused connection (nothing listens there: the holder's process is gone, as
//! after `kill -9` or a stop) lets it take the Lease before `lease_duration`; a timeout or an unreachable
//! host (a partition, a dead machine) changes nothing, so the lease's guarantee still holds there. Should
//! the holder still be alive after all, its next renewal fails its compare-and-swap and it stops leading.

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

/// The Lease annotation holding the holder's API address (`ip:port`), probed by candidates.
pub const HOLDER_ADDRESS: &str = "berth.dev/holder-address";

/// Where the Lease is and how long it lasts.
#[derive(Debug, Clone)]
pub struct Config {
    /// Lease namespace (`kube-system`).
    pub namespace: String,
    /// Lease name (`berth-controllers`).
    pub name: String,
    /// This candidate's identity: stable across restarts of the same server (its node name), so a
    /// restarted server takes back its own Lease at once.
    pub identity: String,
    /// How long a Lease is valid after its last observed renewal (upstream default 15 s).
    pub lease_duration: Duration,
    /// How long the holder keeps trying to renew before it stops leading (upstream default 10 s).
    pub renew_deadline: Duration,
    /// Time between attempts (upstream default 2 s).
    pub retry_period: Duration,
    /// This candidate's API address (`ip:port`) that other candidates may probe once it holds the Lease;
    /// `None` for a server alone on its store.
    pub address: Option<String>,
}

impl Config {
    /// kube-controller-manager's timings (15 s / 10 s / 2 s) for `namespace/name` and `identity`.
    #[must_use]
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        Config {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            address: None,
        }
    }

    /// How long a record must stay unchanged before a candidate probes the holder's address: two retry
    /// periods, so a live holder has missed at least one renewal.
    #[must_use]
    pub fn dead_after(&self) -> Duration {
        2 * self.retry_period
    }
}

/// Whether nothing listens at `address` (`ip:port`): the TCP connect is refused. A timeout (bounded by
/// `within`), an unreachable host or any other error is not proof and answers `false`.
pub async fn refuses_connections(address: &str, within: Duration) -> bool {
    matches!(
        tokio::time::timeout(within, tokio::net::TcpStream::connect(address)).await,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

/// A candidate's view of the Lease between attempts.
#[derive(Debug, Default)]
pub struct Elector {
    /// The last record seen (holder, renew time, transitions) and when it was first seen so.
    observed: Option<(String, Instant)>,
}

fn record_of(spec: &LeaseSpec) -> String {
    format!(
        "{}|{:?}|{:?}",
        spec.holder_identity.as_deref().unwrap_or(""),
        spec.renew_time.as_ref().map(|t| t.0),
        spec.lease_transitions
    )
}

impl Elector {
    /// One `tryAcquireOrRenew`: `Ok(true)` when this candidate holds the Lease after the call.
    ///
    /// # Errors
    /// API errors other than a lost race (409), which is `Ok(false)`.
    pub async fn try_acquire_or_renew(
        &mut self,
        api: &Api<Lease>,
        cfg: &Config,
    ) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let seconds = i32::try_from(cfg.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let current = match api.get(&cfg.name).await {
            Err(kube::Error::Api(s)) if s.code == 404 => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(cfg.name.clone()),
                        namespace: Some(cfg.namespace.clone()),
                        annotations: cfg
                            .address
                            .as_ref()
                            .map(|a| BTreeMap::from([(HOLDER_ADDRESS.to_string(), a.clone())])),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(cfg.identity.clone()),
                        lease_duration_seconds: Some(seconds),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                return match api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                    Err(e) => Err(e),
                };
            }
            other => other?,
        };
        let spec = current.spec.clone().unwrap_or_default();
        let record = record_of(&spec);
        let seen_at = match &self.observed {
            Some((r, at)) if *r == record => *at,
            _ => {
                let at = Instant::now();
                self.observed = Some((record, at));
                at
            }
        };
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let ours = holder == cfg.identity;
        if !holder.is_empty() && !ours && seen_at.elapsed() < cfg.lease_duration {
            let address = current
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(HOLDER_ADDRESS))
                .filter(|a| Some(*a) != cfg.address.as_ref());
            let dead = match address {
                Some(a) if seen_at.elapsed() >= cfg.dead_after() => {
                    refuses_connections(a, cfg.retry_period / 2).await
                }
                _ => false,
            };
            if !dead {
                return Ok(false);
            }
            tracing::info!(lease = %cfg.name, %holder, address = ?address,
                "leader election: the holder stopped renewing and its API address refuses connections; taking the Lease before it expires");
        }
        let mut lease = current;
        let annotations = lease.metadata.annotations.get_or_insert_with(BTreeMap::new);
        match &cfg.address {
            Some(a) => {
                annotations.insert(HOLDER_ADDRESS.into(), a.clone());
            }
            None => {
                annotations.remove(HOLDER_ADDRESS);
            }
        }
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(cfg.identity.clone()),
            lease_duration_seconds: Some(seconds),
            acquire_time: if ours {
                spec.acquire_time.clone()
            } else {
                Some(MicroTime(now))
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(spec.lease_transitions.unwrap_or(0) + i32::from(!ours)),
            ..spec
        });
        match api.replace(&cfg.name, &PostParams::default(), &lease).await {
            Ok(l) => {
                if let Some(s) = &l.spec {
                    self.observed = Some((record_of(s), Instant::now()));
                }
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Run for ever: wait to hold the Lease, then `start()` the led work and keep renewing; when renewal
/// fails for `renew_deadline`, drop what `start` returned (which must stop the work, as [`crate::Tasks`]
/// does) and campaign again. Upstream's controller-manager exits instead; stopping the set in process
/// gives the same guarantee (no second copy runs once the Lease may be someone else's: the holder stops
/// `lease_duration - renew_deadline` before a candidate may take over).
pub async fn run<G, F>(client: kube::Client, cfg: Config, mut start: F)
where
    F: FnMut() -> G,
{
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let mut elector = Elector::default();
    loop {
        loop {
            match elector.try_acquire_or_renew(&api, &cfg).await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => tracing::warn!(lease = %cfg.name, error = %e, "leader election: acquiring failed"),
            }
            tokio::time::sleep(cfg.retry_period).await;
        }
        tracing::info!(lease = %cfg.name, identity = %cfg.identity, "leader election: became leader");
        let led = start();
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(cfg.retry_period).await;
            let left = cfg.renew_deadline.saturating_sub(renewed.elapsed());
            match tokio::time::timeout(left, elector.try_acquire_or_renew(&api, &cfg)).await {
                Ok(Ok(true)) => renewed = Instant::now(),
                Ok(Ok(false)) => {
                    tracing::warn!(lease = %cfg.name, "leader election: the Lease was taken");
                    break;
                }
                Ok(Err(e)) => {
                    tracing::warn!(lease = %cfg.name, error = %e, "leader election: renewing failed")
                }
                Err(_) => {}
            }
            if renewed.elapsed() >= cfg.renew_deadline {
                tracing::warn!(lease = %cfg.name, "leader election: renew deadline passed");
                break;
            }
        }
        drop(led);
        tracing::warn!(lease = %cfg.name, "leader election: stopped leading");
    }
}
