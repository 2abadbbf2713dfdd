//! The `default/kubernetes` Endpoints kept to the API servers that are alive, as upstream's lease
//! endpoint reconciler (`pkg/controlplane/reconcilers/lease.go`, kube-apiserver's default
//! `--endpoint-reconciler-type=lease`): every server renews its own record under
//! `/berth/apiservers/<ip>:<port>` every [`INTERVAL`], and sets the Endpoints to the servers whose record
//! is younger than [`TTL`] (an expired record is deleted by whichever server sees it). Upstream's records
//! are etcd keys with a TTL lease; the store has no TTLs, so a record carries its renewal time and age is
//! judged on the reader's clock (servers of one cluster are assumed to keep time within a few seconds).
//!
//! Agents learn every server from these Endpoints (k3s's agent load balancer does the same), and pods reach
//! the API through the `kubernetes` Service.

use crate::registry::{Registry, WriteOptions};
use serde_json::{Value, json};
use std::time::Duration;

/// How often a server renews its record and reconciles the Endpoints (upstream: 10 s).
pub const INTERVAL: Duration = Duration::from_secs(5);
/// How long a record stays valid without renewal (upstream's master lease TTL: 15 s).
pub const TTL: Duration = Duration::from_secs(15);

const PREFIX: &str = "/berth/apiservers/";

fn now_secs() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// The Endpoints subsets for `servers` (`(ip, port)`): one subset per port, addresses sorted.
pub fn subsets(servers: &[(String, u16)]) -> Value {
    let mut by_port: std::collections::BTreeMap<u16, Vec<&str>> = Default::default();
    for (ip, port) in servers {
        by_port.entry(*port).or_default().push(ip);
    }
    Value::Array(
        by_port
            .into_iter()
            .map(|(port, mut ips)| {
                ips.sort_unstable();
                ips.dedup();
                json!({"addresses": ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>(),
                       "ports": [{"name": "https", "port": port, "protocol": "TCP"}]})
            })
            .collect(),
    )
}

/// At shutdown: delete this server's record and take it out of the Endpoints at once (upstream's
/// `RemoveEndpoints`), instead of after [`TTL`].
///
/// # Errors
/// Store and registry errors.
pub async fn remove(reg: &Registry, ip: &str, port: u16) -> Result<(), String> {
    let key = format!("{PREFIX}{ip}:{port}");
    match reg.store().delete(&key, None).await {
        Ok(_) | Err(store::Error::NotFound { .. }) => {}
        Err(e) => return Err(e.to_string()),
    }
    sync_endpoints(reg).await
}

/// One round: renew this server's record, drop expired ones, and make the Endpoints name the live
/// servers. Errors are returned for the caller to log (the next round tries again).
///
/// # Errors
/// Store and registry errors.
pub async fn reconcile_once(reg: &Registry, ip: &str, port: u16) -> Result<(), String> {
    let store = reg.store();
    let key = format!("{PREFIX}{ip}:{port}");
    let me = json!({"ip": ip, "port": port, "renewed": now_secs()})
        .to_string()
        .into_bytes();
    match store.get(&key).await.map_err(|e| e.to_string())? {
        Some(kv) => {
            store
                .update(&key, me, kv.mod_revision)
                .await
                .map_err(|e| e.to_string())?;
        }
        None => {
            store.create(&key, me).await.map_err(|e| e.to_string())?;
        }
    }
    sync_endpoints(reg).await
}

/// Drop expired records and make the Endpoints name the live servers.
async fn sync_endpoints(reg: &Registry) -> Result<(), String> {
    let store = reg.store();
    let mut live = Vec::new();
    for kv in store.list(PREFIX, None, 0).await.map_err(|e| e.to_string())?.kvs {
        let rec: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
        let renewed = rec["renewed"].as_i64().unwrap_or(0);
        let (Some(ip), Some(port)) = (rec["ip"].as_str(), rec["port"].as_u64()) else {
            continue;
        };
        if now_secs() - renewed > TTL.as_secs() as i64 {
            // Upstream's TTL expiry; another server may delete it first.
            let _ = store.delete(&kv.key, Some(kv.mod_revision)).await;
            continue;
        }
        live.push((ip.to_string(), u16::try_from(port).unwrap_or(0)));
    }
    let res = api::resources::find("", "v1", "endpoints").ok_or("no endpoints resource")?;
    let want = subsets(&live);
    match reg.get(res, Some("default"), "kubernetes").await {
        Ok(mut cur) => {
            if cur["subsets"] == want {
                return Ok(());
            }
            cur["subsets"] = want;
            reg.update(
                res,
                Some("default"),
                "kubernetes",
                None,
                cur,
                &WriteOptions::default(),
            )
            .await
            .map_err(|e| e.status().to_string())?;
        }
        Err(crate::error::ApiError::NotFound(_)) => {
            let obj = json!({"apiVersion": "v1", "kind": "Endpoints",
                "metadata": {"name": "kubernetes", "namespace": "default",
                             "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
                "subsets": want});
            reg.create(res, Some("default"), obj, &WriteOptions::default())
                .await
                .map_err(|e| e.status().to_string())?;
        }
        Err(e) => return Err(e.status().to_string()),
    }
    Ok(())
}

/// Run [`reconcile_once`] every [`INTERVAL`] for ever (`ip:port` is this server's advertised address).
pub async fn run(reg: Registry, ip: String, port: u16) {
    loop {
        if let Err(e) = reconcile_once(&reg, &ip, port).await {
            tracing::warn!(error = %e, "kubernetes endpoints");
        }
        tokio::time::sleep(INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_subset_per_port() {
        let s = subsets(&[
            ("10.0.0.2".into(), 6443),
            ("10.0.0.1".into(), 6443),
            ("127.0.0.1".into(), 7000),
        ]);
        assert_eq!(
            s,
            json!([
                {"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}],
                 "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]},
                {"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "https", "port": 7000, "protocol": "TCP"}]}
            ])
        );
    }
}
