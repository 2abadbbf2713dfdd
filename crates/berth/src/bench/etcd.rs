//! `berth bench --suite etcd`: the etcd backend (`--datastore-endpoint`) against a raw etcd put benchmark
//! on the same member in the same run: creates/s through the API with 1 and 16 clients beside plain etcd
//! puts/s with as many concurrent clients, and their ratio (the goal: at least 0.6, as the embedded
//! store reaches against its own conditional creates); beside them, the same against etcd's own create
//! transaction (`If(create_revision == 0) Then(Put)`, which every create through upstream's etcd3 store
//! makes too), the like-for-like baseline of the embedded store's figure; the list latency with 10,000
//! pods read from etcd; the server's RSS after it. The member is Debian's etcd on loopback (`store::local_etcd`), one member: the raw
//! figure is what that member commits, whatever the disk.

use super::{
    BenchArgs, CONTROL_PLANE_ARGS, create_rate, list_latency, list_only, namespace, rss_kib,
    start_server_with,
};
use anyhow::{Context, Result};
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use std::time::Instant;

/// Alternating rounds of API creates and raw puts per client count: one member on a shared machine
/// drifts by a factor of two between seconds, so each API round is paired with the raw rounds right
/// after it (puts, then create transactions) and each figure is the median pair's ratio.
const ROUNDS: usize = 3;

/// What a raw round writes: etcd's plain put (the baseline), or the transaction every API create
/// must make, `If(create_revision(key) == 0) Then(Put)` (upstream etcd3 `store.go` `Create`; the
/// embedded store's baseline is likewise its own conditional create).
#[derive(Clone, Copy, PartialEq)]
enum Raw {
    Put,
    CreateTxn,
}

/// `total` writes of 300-byte values through `concurrency` clients on one connection; returns writes/s.
/// `round` keeps each round's keys apart.
async fn raw_rate(endpoint: &str, total: usize, concurrency: usize, round: usize, raw: Raw) -> Result<f64> {
    let client = etcd_client::Client::connect([endpoint], None).await?;
    let value = vec![b'x'; 300];
    let per = total / concurrency;
    let kind = if raw == Raw::Put { "put" } else { "txn" };
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let mut kv = client.kv_client();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                let key = format!("/raw/{kind}/{concurrency}/{round}/{w}/{i}");
                match raw {
                    Raw::Put => {
                        kv.put(key, value.clone(), None).await?;
                    }
                    Raw::CreateTxn => {
                        let txn = Txn::new()
                            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
                            .and_then([TxnOp::put(key.as_str(), value.clone(), None)]);
                        kv.txn(txn).await?;
                    }
                }
            }
            Ok::<_, etcd_client::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok((per * concurrency) as f64 / t0.elapsed().as_secs_f64())
}

/// Print the etcd backend's rows.
pub async fn figures(args: &BenchArgs) -> Result<()> {
    anyhow::ensure!(
        store::local_etcd::available(),
        "the etcd suite needs {} (Debian etcd-server)",
        store::local_etcd::binary().display()
    );
    let etcd = store::local_etcd::LocalEtcd::start().context("starting etcd")?;
    let endpoint = etcd.endpoint();
    let mut extra = CONTROL_PLANE_ARGS.to_vec();
    // One --token: the second server below joins the first one's cluster (shared CA in the datastore).
    extra.extend(["--token", "bench-etcd", "--datastore-endpoint", endpoint.as_str()]);
    let (child, took, client) = start_server_with(&extra).await?;
    println!(
        "| etcd backend (1 member on loopback): server start to first successful request | {:.1} ms |",
        took.as_secs_f64() * 1e3
    );
    for conc in [1usize, 16] {
        // (API creates/s, raw puts/s, raw create transactions/s) of each round.
        let mut rounds = Vec::with_capacity(ROUNDS);
        for round in 0..ROUNDS {
            // Each round in a namespace of its own: the ConfigMap names repeat per client count.
            let ns = format!("bench-etcd-{conc}-{round}");
            namespace(&client, &ns).await?;
            let api_rate = create_rate(&client, &ns, args.creates, conc).await?;
            let put = raw_rate(&endpoint, args.creates, conc, round, Raw::Put).await?;
            let txn = raw_rate(&endpoint, args.creates, conc, round, Raw::CreateTxn).await?;
            rounds.push((api_rate, put, txn));
        }
        for (raw, what) in [
            (Raw::Put, "raw etcd puts/s"),
            (
                Raw::CreateTxn,
                "raw etcd create transactions/s (upstream's create: put if create_revision == 0)",
            ),
        ] {
            let mut pairs: Vec<(f64, f64)> = rounds
                .iter()
                .map(|&(a, p, t)| (a, if raw == Raw::Put { p } else { t }))
                .collect();
            pairs.sort_by(|a, b| (a.0 / a.1).total_cmp(&(b.0 / b.1)));
            let (api_rate, base) = pairs[ROUNDS / 2];
            let all: Vec<String> = pairs.iter().map(|(a, r)| format!("{:.2}", a / r)).collect();
            println!(
                "| etcd backend: creates/s, {conc} client(s) (HTTPS, kube-rs) vs {what} right after, median of {ROUNDS} alternating rounds | {api_rate:.0} vs {base:.0} (ratio {:.2}; rounds {}) |",
                api_rate / base,
                all.join(", ")
            );
        }
    }
    let lists = list_latency(&client, args.pods).await?;
    println!(
        "| etcd backend: list latency with {} pods stored, from the watch cache (medians of 5): full list decoded by kube-rs / the same as bytes / first page of 500 | {lists} |",
        args.pods,
    );
    // A second server on the same etcd without the watch cache: the same lists read from etcd.
    let mut uncached = extra.clone();
    uncached.extend(["--watch-cache", "false"]);
    let (second, _, second_client) = start_server_with(&uncached).await?;
    let lists = list_only(&second_client, args.pods).await?;
    println!(
        "| etcd backend: the same lists through a second server without the watch cache (from etcd) | {lists} |"
    );
    drop(second);
    let rss = rss_kib(child.proc.id()).unwrap_or(0);
    println!(
        "| etcd backend: server RSS after the runs ({} pods) | {:.1} MB |",
        args.pods,
        rss as f64 / 1024.0
    );
    drop(child);
    drop(etcd);
    Ok(())
}
