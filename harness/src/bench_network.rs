//! `statesnap bench-network`: measuring a new node's join of a live local
//! network, by state sync against block sync, and taken apart into its steps.
//!
//! For each block count N it starts 3 validators (real CometBFT, loopback),
//! builds the state through N blocks of load (as a real chain does: the
//! genesis is empty), stops the load, then times a new node joining by state
//! sync and then one joining by block sync, each from start to caught up,
//! with what each received over p2p, the disk it took and the CPU its two
//! processes used.
//!
//! Then, on a network whose genesis is a generated state of `--genesis-keys`
//! keys, it joins nodes by state sync from 1 and from 3 serving peers, first
//! with load running (transactions, and validators building snapshots), then
//! with the validators idle (no load, no new snapshots), and splits each join
//! into discovery (start to the snapshot accepted), the restore (fetching,
//! and ApplySnapshotChunk on CometBFT's ABCI connection) and catch-up (block
//! sync from the snapshot height), against an offline `snapshot restore` of
//! the same snapshot in the same run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;

use crate::load::{run_load, LoadConfig, RpcSubmitter, SystemClock};
use crate::node_usage::{usage, Usage};
use crate::testnet::{free_base_port, JoinOptions, Testnet, TestnetOptions};
use statesnap::node::metrics::read_metric;
use statesnap::node::NodeConfig;

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
    /// Keys of the generated genesis state of the taken-apart joins.
    #[arg(long, alias = "restore-keys", default_value_t = 200_000)]
    pub genesis_keys: u64,
    /// Chunk size of those snapshots (0: the plugin's default, 10 MB).
    #[arg(long, alias = "restore-chunk-bytes", default_value_t = 0)]
    pub split_chunk_bytes: u64,
    /// Snapshot interval of the validators while loaded in those joins.
    #[arg(long, default_value_t = 20)]
    pub split_snapshot_interval: u64,
    /// Only the taken-apart joins, not the state sync against block sync runs.
    #[arg(long)]
    pub split_only: bool,
    /// Work directory (default: a temporary directory, removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The nodes' app: statesnap's own node, or Xian's real node with and
    /// without `statesnap proxy` (joins through statesnap, Xian's own state
    /// sync and block sync; block time with and without the proxy).
    #[arg(long, value_enum, default_value_t = BenchApp::Statesnap)]
    pub app: BenchApp,
    /// With --app xian: validators.
    #[arg(long, default_value_t = 2)]
    pub validators: usize,
    /// With --app xian: accounts sending the transfers (funded by the founder).
    #[arg(long, default_value_t = 16)]
    pub senders: usize,
    /// With --app xian: blocks of load before the joins.
    #[arg(long, default_value_t = 1000)]
    pub load_blocks: u64,
    /// With --app xian: blocks of load on the network without proxies.
    #[arg(long, default_value_t = 300)]
    pub baseline_blocks: u64,
    /// With --app xian: CometBFT's timeout_commit.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "500ms")]
    pub block_time: Duration,
}

/// Which app `bench-network` runs.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchApp {
    /// statesnap's own node (state patches).
    Statesnap,
    /// Xian's real node (xian-abci 0.9.3), behind `statesnap proxy` and without it.
    Xian,
}

const TIMEOUT: Duration = Duration::from_secs(1800);

/// Stops the network's processes when dropped (also on an error).
pub(crate) struct Stopper(pub(crate) Testnet);

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
    if chunk_bytes > 0 {
        params.insert("chunk_bytes".to_string(), chunk_bytes.to_string());
    }
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

/// Starts `name` and times it from start to caught up; what it cost then.
fn time_join(net: &mut Testnet, name: &str, join: JoinOptions) -> anyhow::Result<(f64, Usage)> {
    net.add_node(name, &join)?;
    let started = Instant::now();
    net.start_node(name, &[])?;
    net.wait_for_sync(name, TIMEOUT)?;
    let seconds = started.elapsed().as_secs_f64();
    Ok((seconds, usage(net, name)?))
}

pub fn bench_network(args: &BenchNetworkArgs) -> anyhow::Result<()> {
    let (dir, _tmp) = crate::bench::work_dir(&args.dir)?;
    if args.app == BenchApp::Xian {
        let bench = crate::bench_xian::XianBench {
            validators: args.validators,
            genesis_keys: args.genesis_keys,
            rate: args.rate,
            senders: args.senders,
            load_blocks: args.load_blocks,
            baseline_blocks: args.baseline_blocks,
            snapshot_interval: args.snapshot_interval,
            block_time: args.block_time,
        };
        return crate::bench_xian::bench_xian(&bench, &dir);
    }
    let rows = if args.split_only {
        Vec::new()
    } else {
        chain_lengths(args, &dir)?
    };
    let splits = split_joins(args, &dir)?;

    println!(
        "statesnap bench-network: 3 validators on loopback, 300 ms blocks, load {} tx/s over {} accounts",
        args.rate, args.accounts
    );
    if !rows.is_empty() {
        println!();
        println!(
            "{:>7} {:>10} {:>9} | {:>10} {:>10} {:>6} | {:>10} {:>10} | {:>9} {:>9} | {:>7} {:>7} | {:>8}",
            "blocks",
            "state keys",
            "txs",
            "state s",
            "block s",
            "ratio",
            "recv MB ss",
            "recv MB bs",
            "disk MB ss",
            "disk MB bs",
            "CPU s ss",
            "CPU s bs",
            "restored"
        );
        for r in &rows {
            println!(
                "{:>7} {:>10} {:>9} | {:>10.1} {:>10.1} {:>5.2}x | {:>10.2} {:>10.2} | {:>9.1} {:>9.1} | {:>7.1} {:>7.1} | {:>8}",
                r.blocks,
                r.keys,
                r.txs,
                r.state_sync_s,
                r.block_sync_s,
                r.block_sync_s / r.state_sync_s,
                r.state_sync.received_bytes / 1e6,
                r.block_sync.received_bytes / 1e6,
                r.state_sync.disk_bytes as f64 / 1e6,
                r.block_sync.disk_bytes as f64 / 1e6,
                r.state_sync.cpu_seconds,
                r.block_sync.cpu_seconds,
                r.restored_at
            );
        }
    }
    println!();
    println!(
        "joins by state sync of a {}-key genesis state (seconds; restore = fetch wait + apply; ratio = restore / offline restore)",
        args.genesis_keys
    );
    println!(
        "{:>6} {:>5} {:>7} {:>6} {:>8} | {:>9} {:>10} {:>7} {:>8} | {:>8} {:>7} | {:>8} {:>6}",
        "load",
        "peers",
        "height",
        "chunks",
        "MB",
        "discovery",
        "fetch wait",
        "apply",
        "restore",
        "catch-up",
        "total",
        "offline",
        "ratio"
    );
    for j in &splits {
        println!(
            "{:>6} {:>5} {:>7} {:>6} {:>8.1} | {:>9.1} {:>10.2} {:>7.2} {:>8.2} | {:>8.1} {:>7.1} | {:>8.2} {:>5.2}x",
            if j.loaded { "load" } else { "idle" },
            j.peers,
            j.height,
            j.chunks,
            j.bytes / 1e6,
            j.discovery_s,
            j.restore_s - j.apply_s,
            j.apply_s,
            j.restore_s,
            j.catch_up_s,
            j.total_s,
            j.offline_s,
            j.restore_s / j.offline_s
        );
    }
    println!(
        "{}",
        json!({
            "joins": rows.iter().map(|r| json!({"blocks": r.blocks, "state_keys": r.keys, "txs": r.txs,
                "state_sync_seconds": r.state_sync_s, "block_sync_seconds": r.block_sync_s, "restored_height": r.restored_at,
                "state_sync": usage_json(&r.state_sync), "block_sync": usage_json(&r.block_sync)})).collect::<Vec<_>>(),
            "split": splits.iter().map(|j| json!({"loaded": j.loaded, "peers": j.peers, "height": j.height,
                "chunks": j.chunks, "bytes": j.bytes, "discovery_seconds": j.discovery_s, "restore_seconds": j.restore_s,
                "apply_seconds": j.apply_s, "catch_up_seconds": j.catch_up_s, "total_seconds": j.total_s,
                "offline_restore_seconds": j.offline_s})).collect::<Vec<_>>(),
        })
    );
    Ok(())
}

fn usage_json(u: &Usage) -> serde_json::Value {
    json!({"received_bytes": u.received_bytes, "disk_bytes": u.disk_bytes, "cpu_seconds": u.cpu_seconds})
}

/// One chain length: a join by state sync and one by block sync.
struct ChainRow {
    blocks: u64,
    keys: f64,
    txs: u64,
    state_sync_s: f64,
    block_sync_s: f64,
    restored_at: f64,
    state_sync: Usage,
    block_sync: Usage,
}

fn chain_lengths(args: &BenchNetworkArgs, dir: &Path) -> anyhow::Result<Vec<ChainRow>> {
    let mut rows = Vec::new();
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
        let (stop, load) = start_load(&net.0, args)?;
        eprintln!("bench-network: {blocks} blocks: load at {} tx/s", args.rate);
        net.0.wait_for_height("node0", blocks, TIMEOUT)?;
        stop.store(true, Ordering::SeqCst);
        let stats = load.join().expect("the load thread panicked")?;
        let keys = metric(&net.0, "node0", "statesnap_state_keys")?;

        eprintln!("bench-network: {blocks} blocks: a node joins by state sync");
        let (state_sync_s, state_sync) = time_join(&mut net.0, "statesync", JoinOptions::default())?;
        let restored_at = metric(&net.0, "statesync", "statesnap_restored_snapshot_height")?;
        if restored_at < 1.0 {
            bail!("the state-sync node did not restore a snapshot");
        }
        net.0.stop_node("statesync")?;
        eprintln!("bench-network: {blocks} blocks: a node joins by block sync");
        let (block_sync_s, block_sync) = time_join(
            &mut net.0,
            "blocksync",
            JoinOptions {
                state_sync: false,
                ..JoinOptions::default()
            },
        )?;
        net.0.stop_node("blocksync")?;
        rows.push(ChainRow {
            blocks,
            keys,
            txs: stats.accepted,
            state_sync_s,
            block_sync_s,
            restored_at,
            state_sync,
            block_sync,
        });
    }
    Ok(rows)
}

type LoadHandle = std::thread::JoinHandle<anyhow::Result<crate::load::LoadStats>>;

fn start_load(net: &Testnet, args: &BenchNetworkArgs) -> anyhow::Result<(Arc<AtomicBool>, LoadHandle)> {
    let stop = Arc::new(AtomicBool::new(false));
    let submitters: Vec<RpcSubmitter> = ["node0", "node1", "node2"]
        .iter()
        .map(|n| net.rpc(n).map(RpcSubmitter))
        .collect::<anyhow::Result<_>>()?;
    let mut cfg = LoadConfig::new("bench-network", args.rate, Duration::from_secs(86_400));
    cfg.accounts = args.accounts;
    let flag = stop.clone();
    let handle = std::thread::spawn(move || run_load(&cfg, &submitters, &SystemClock::start(), &flag, |_| {}));
    Ok((stop, handle))
}

/// One state sync join, taken apart.
struct SplitJoin {
    loaded: bool,
    peers: usize,
    height: u64,
    chunks: f64,
    bytes: f64,
    discovery_s: f64,
    restore_s: f64,
    apply_s: f64,
    catch_up_s: f64,
    total_s: f64,
    offline_s: f64,
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn split_joins(args: &BenchNetworkArgs, dir: &Path) -> anyhow::Result<Vec<SplitJoin>> {
    let net_dir = dir.join("net-split");
    let mut opts = three_validators(
        &net_dir,
        args.split_snapshot_interval,
        args.split_chunk_bytes,
        args.genesis_keys,
    )?;
    // Snapshots outlive the joins that restore them, for the offline restore.
    opts.snapshot_keep_recent = 10;
    eprintln!(
        "bench-network: joins of a {}-key genesis state: starting 3 validators in {}",
        args.genesis_keys,
        net_dir.display()
    );
    let mut net = Stopper(Testnet::init(&net_dir, &opts)?);
    net.0.start_all()?;
    wait_for_snapshot(&net.0, "node0")?;
    let mut out = Vec::new();
    let mut n = 0;
    let (stop, load) = start_load(&net.0, args)?;
    for loaded in [true, false] {
        if !loaded {
            stop.store(true, Ordering::SeqCst);
            // Idle: no load, and no new snapshots (the old ones are served).
            restart_without_snapshots(&net.0, &["node0", "node1", "node2"])?;
            let h = net.0.rpc("node0")?.status()?.latest_block_height;
            net.0.wait_for_height("node0", h + 3, TIMEOUT)?;
        }
        for peers in [1usize, 3] {
            n += 1;
            let name = format!("join{n}");
            let state = if loaded { "with load" } else { "idle" };
            eprintln!("bench-network: {name}: state sync from {peers} peer(s), validators {state}");
            let join = JoinOptions {
                peers: if peers == 1 {
                    vec!["node0".to_string()]
                } else {
                    Vec::new()
                },
                ..JoinOptions::default()
            };
            net.0.add_node(&name, &join)?;
            let t0 = unix_now();
            net.0.start_node(&name, &[])?;
            net.0.wait_for_sync(&name, TIMEOUT)?;
            let t1 = unix_now();
            let m = |k: &str| metric(&net.0, &name, k);
            let height = m("statesnap_restored_snapshot_height")? as u64;
            if height == 0 {
                bail!("{name} did not restore a snapshot");
            }
            let (started, restore_s) = (
                m("statesnap_restore_started_unixtime")?,
                m("statesnap_restore_seconds")?,
            );
            let (chunks, bytes, apply_s) = (
                m("statesnap_restore_chunks_total")?,
                m("statesnap_restore_bytes")?,
                m("statesnap_restore_apply_seconds")?,
            );
            net.0.stop_node(&name)?;
            let offline_s = offline_restore(&net.0, height, &dir.join(format!("offline-{name}")))?;
            out.push(SplitJoin {
                loaded,
                peers,
                height,
                chunks,
                bytes,
                discovery_s: started - t0,
                restore_s,
                apply_s,
                catch_up_s: t1 - (started + restore_s),
                total_s: t1 - t0,
                offline_s,
            });
        }
    }
    let _ = load.join();
    Ok(out)
}

/// Restarts each of `validators` with snapshots off (those made are kept).
pub(crate) fn restart_without_snapshots(net: &Testnet, validators: &[&str]) -> anyhow::Result<()> {
    for v in validators {
        net.stop_node(v)?;
        let home = net.node(v)?.statesnap_home.clone();
        let mut config = NodeConfig::load(&home)?;
        config.snapshot_interval = 0;
        config.write(&home)?;
        net.start_node(v, &[])?;
    }
    Ok(())
}

/// Waits until `node` advertises a snapshot.
fn wait_for_snapshot(net: &Testnet, node: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Ok(q) = net.rpc(node).and_then(|r| r.abci_query("/snapshots", b"")) {
            let list: Vec<serde_json::Value> = serde_json::from_slice(&q.value).unwrap_or_default();
            if !list.is_empty() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("{node} made no snapshot in {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Times `statesnap snapshot restore` of node0's snapshot of `height`.
pub(crate) fn offline_restore(net: &Testnet, height: u64, home: &Path) -> anyhow::Result<f64> {
    let snapshots = net.node("node0")?.statesnap_home.join("snapshots");
    let prefix = format!("{height}-");
    let snap = std::fs::read_dir(&snapshots)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&prefix)))
        .with_context(|| {
            format!(
                "node0 no longer has its snapshot of height {height} in {}",
                snapshots.display()
            )
        })?;
    let manifest = statesnap::snapshot::SnapshotDir::open(&snap)?.manifest()?;
    let started = Instant::now();
    let status = std::process::Command::new(std::env::current_exe()?)
        .args(["snapshot", "restore", "--from"])
        .arg(&snap)
        .arg("--home")
        .arg(home)
        .args(["--app-hash", &hex::encode(manifest.app_hash)])
        .stdout(std::process::Stdio::null())
        .status()?;
    let seconds = started.elapsed().as_secs_f64();
    if !status.success() {
        bail!("the offline restore of {} failed ({status})", snap.display());
    }
    let _ = std::fs::remove_dir_all(home);
    Ok(seconds)
}
