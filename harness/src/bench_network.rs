//! `statesnap bench-network`: joining a live local network by state sync
//! versus by block sync, and restore throughput from 1 versus 3 peers.
//!
//! For each block count N it starts 3 validators (real CometBFT, loopback),
//! builds the state through N blocks of load (as a real chain does: the
//! genesis is empty), stops the load, then times a new node joining by state
//! sync and then one joining by block sync, each from start to caught up.
//! Then, on a network whose genesis is a generated state large enough for
//! many chunks, it restores once with a single peer to fetch chunks from and
//! once with all three, and reads each restore's time from the joining
//! node's metrics.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;

use crate::load::{run_load, LoadConfig, RpcSubmitter, SystemClock};
use crate::testnet::{free_base_port, JoinOptions, Testnet, TestnetOptions};
use statesnap::node::metrics::read_metric;

/// Arguments of `statesnap bench-network`.
#[derive(clap::Args, Debug)]
pub struct BenchNetworkArgs {
    /// Block counts to measure at, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "100,400")]
    pub blocks: Vec<u64>,
    /// Transactions per second of load while the blocks are made.
    #[arg(long, default_value_t = 60.0)]
    pub rate: f64,
    /// Accounts the load spreads over (each writes its own keys: the state grows with them).
    #[arg(long, default_value_t = 2000)]
    pub accounts: usize,
    /// Snapshot interval of the validators.
    #[arg(long, default_value_t = 50)]
    pub snapshot_interval: u64,
    /// Plugin chunk size.
    #[arg(long, default_value_t = 1_000_000)]
    pub chunk_bytes: u64,
    /// Keys of the generated genesis state the 1-vs-3-peer restores fetch.
    #[arg(long, default_value_t = 200_000)]
    pub restore_keys: u64,
    /// Chunk size of those restores (many chunks, so peers share the work).
    #[arg(long, default_value_t = 500_000)]
    pub restore_chunk_bytes: u64,
    /// Work directory (default: a temporary directory, removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

const TIMEOUT: Duration = Duration::from_secs(1800);

struct Stopper(Testnet);

impl Drop for Stopper {
    fn drop(&mut self) {
        let _ = self.0.stop_all();
    }
}

fn metric(net: &Testnet, node: &str, name: &str) -> anyhow::Result<f64> {
    read_metric(&net.metrics(node)?, name).with_context(|| format!("{node} has no metric {name}"))
}

/// Options of a 3-validator network in `net_dir` (cleared first).
fn three_validators(
    net_dir: &std::path::Path,
    snapshot_interval: u64,
    chunk_bytes: u64,
    genesis_keys: u64,
) -> anyhow::Result<TestnetOptions> {
    if net_dir.exists() {
        std::fs::remove_dir_all(net_dir)?;
    }
    let mut params = BTreeMap::new();
    params.insert("chunk_bytes".to_string(), chunk_bytes.to_string());
    Ok(TestnetOptions {
        validators: 3,
        chain_id: "bench-network".into(),
        base_port: free_base_port(8)?,
        snapshot_interval,
        snapshot_keep_recent: 2,
        snapshot_params: params,
        block_time: Duration::from_millis(300),
        genesis_keys,
        statesnap_bin: std::env::current_exe()?,
        ..TestnetOptions::default()
    })
}

/// Starts `name` and times it from start to caught up.
fn time_join(net: &mut Testnet, name: &str, join: JoinOptions) -> anyhow::Result<f64> {
    net.add_node(name, &join)?;
    let started = Instant::now();
    net.start_node(name, &[])?;
    net.wait_for_sync(name, TIMEOUT)?;
    Ok(started.elapsed().as_secs_f64())
}

pub fn bench_network(args: &BenchNetworkArgs) -> anyhow::Result<()> {
    let (dir, _tmp) = crate::bench::work_dir(&args.dir)?;
    let mut rows = Vec::new();
    let mut peers_rows = Vec::new();
    for &blocks in &args.blocks {
        let net_dir = dir.join(format!("net-{blocks}"));
        let opts = three_validators(&net_dir, args.snapshot_interval, args.chunk_bytes, 0)?;
        eprintln!(
            "bench-network: {blocks} blocks: starting 3 validators in {}",
            net_dir.display()
        );
        let mut net = Stopper(Testnet::init(&net_dir, &opts)?);
        net.0.start_all()?;
        net.0.wait_for_height("node0", 1, TIMEOUT)?;
        let stop = Arc::new(AtomicBool::new(false));
        let load = {
            let submitters: Vec<RpcSubmitter> = ["node0", "node1", "node2"]
                .iter()
                .map(|n| net.0.rpc(n).map(RpcSubmitter))
                .collect::<anyhow::Result<_>>()?;
            let mut cfg = LoadConfig::new("bench-network", args.rate, Duration::from_secs(86_400));
            cfg.accounts = args.accounts;
            let stop = stop.clone();
            std::thread::spawn(move || run_load(&cfg, &submitters, &SystemClock::start(), &stop, |_| {}))
        };
        eprintln!("bench-network: {blocks} blocks: load at {} tx/s", args.rate);
        net.0.wait_for_height("node0", blocks, TIMEOUT)?;
        stop.store(true, Ordering::SeqCst);
        let stats = load.join().expect("the load thread panicked")?;
        let keys = metric(&net.0, "node0", "statesnap_state_keys")?;

        eprintln!("bench-network: {blocks} blocks: a node joins by state sync");
        let state_sync_s = time_join(&mut net.0, "statesync", JoinOptions::default())?;
        let restored_at = metric(&net.0, "statesync", "statesnap_restored_snapshot_height")?;
        if restored_at < 1.0 {
            bail!("the state-sync node did not restore a snapshot");
        }
        net.0.stop_node("statesync")?;
        eprintln!("bench-network: {blocks} blocks: a node joins by block sync");
        let block_sync_s = time_join(
            &mut net.0,
            "blocksync",
            JoinOptions {
                state_sync: false,
                ..JoinOptions::default()
            },
        )?;
        net.0.stop_node("blocksync")?;
        rows.push((blocks, keys, stats.accepted, state_sync_s, block_sync_s, restored_at));
    }

    // Restore throughput: a state large enough for many chunks, restored
    // from one peer (the others unknown to it) and from all three.
    let net_dir = dir.join("net-peers");
    let opts = three_validators(&net_dir, 10, args.restore_chunk_bytes, args.restore_keys)?;
    eprintln!("bench-network: restores of a {}-key state", args.restore_keys);
    let mut net = Stopper(Testnet::init(&net_dir, &opts)?);
    net.0.start_all()?;
    net.0.wait_for_height("node0", 12, TIMEOUT)?;
    for (name, peers) in [("onepeer", vec!["node0".to_string()]), ("threepeers", Vec::new())] {
        let serving = if peers.is_empty() { 3 } else { 1 };
        eprintln!("bench-network: a state sync restoring from {serving} peer(s)");
        time_join(
            &mut net.0,
            name,
            JoinOptions {
                peers: peers.clone(),
                ..JoinOptions::default()
            },
        )?;
        let chunks = metric(&net.0, name, "statesnap_restore_chunks_total")?;
        let seconds = metric(&net.0, name, "statesnap_restore_seconds")?;
        let bytes = metric(&net.0, name, "statesnap_restore_bytes")?;
        net.0.stop_node(name)?;
        peers_rows.push((serving, chunks, bytes, seconds));
    }

    println!(
        "statesnap bench-network: 3 validators on loopback, 300 ms blocks, load {} tx/s over {} accounts",
        args.rate, args.accounts
    );
    println!();
    println!(
        "{:>7} {:>10} {:>9} | {:>13} {:>13} {:>7} | {:>15}",
        "blocks", "state keys", "txs", "state sync s", "block sync s", "ratio", "restored height"
    );
    for (blocks, keys, txs, ss, bs, at) in &rows {
        println!(
            "{blocks:>7} {keys:>10} {txs:>9} | {ss:>13.1} {bs:>13.1} {:>6.2}x | {at:>15}",
            bs / ss
        );
    }
    println!();
    println!(
        "{:>6} {:>7} {:>12} {:>10} {:>10} {:>8}",
        "peers", "chunks", "bytes", "restore s", "chunks/s", "MB/s"
    );
    for (peers, chunks, bytes, seconds) in &peers_rows {
        println!(
            "{peers:>6} {chunks:>7} {bytes:>12} {seconds:>10.2} {:>10.1} {:>8.2}",
            chunks / seconds,
            bytes / seconds / 1e6
        );
    }
    println!(
        "{}",
        json!({
            "joins": rows.iter().map(|r| json!({"blocks": r.0, "state_keys": r.1, "txs": r.2,
                "state_sync_seconds": r.3, "block_sync_seconds": r.4, "restored_height": r.5})).collect::<Vec<_>>(),
            "restores": peers_rows.iter().map(|r| json!({"peers": r.0, "chunks": r.1, "bytes": r.2, "seconds": r.3})).collect::<Vec<_>>(),
        })
    );
    Ok(())
}
