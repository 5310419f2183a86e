//! `statesnap bench-network --app xian`: Xian's real node (xian-abci 0.9.3
//! on CometBFT v0.39.3) with and without `statesnap proxy`.
//!
//! 1. A network of `--validators` Xian validators behind proxies, whose
//!    genesis holds `--genesis-keys` extra accounts, runs `--load-blocks`
//!    blocks of signed transfers (`--rate` a second, each to a new account)
//!    while the proxies snapshot every `--snapshot-interval` blocks. Its
//!    block times are read from the headers; blocks that overlap a
//!    snapshot being built (the proxies' logs say when) are counted apart.
//! 2. On that network, three new nodes join one after the other, each timed
//!    from start to caught up (CometBFT no longer catching up, at the height
//!    the validators had when it started), with the bytes it received over
//!    p2p, its directory's disk, and its processes' CPU and peak RSS:
//!    through statesnap (its own proxy restoring a statesnap snapshot); by
//!    Xian's own state sync (format 1: a snapshot the operator command
//!    `xian-state-snapshot export` made on validator 0, timed too; a node
//!    without a proxy); and by block sync from genesis (without a proxy).
//! 3. The same network without proxies runs `--baseline-blocks` blocks of
//!    the same load: the block times to compare with.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use serde_json::json;

use crate::bench_node::Timings;
use crate::node_usage::{disk_bytes, received_bytes, ProcessSampler, SampledProcess};
use crate::testnet::free_base_port;
use crate::xian::{ExportRun, ProxyOptions, XianLoadConfig, XianLoadStats, XianNet, XianNetOptions};

/// What `--app xian` takes from `bench-network`'s arguments.
#[derive(Debug, Clone)]
pub struct XianBench {
    pub validators: usize,
    pub genesis_keys: u64,
    pub rate: f64,
    pub senders: usize,
    pub load_blocks: u64,
    pub baseline_blocks: u64,
    pub snapshot_interval: u64,
    pub block_time: Duration,
}

/// Longest a join, a load or a start may take.
const TIMEOUT: Duration = Duration::from_secs(3600);
/// Blocks of load before the measured ones.
const WARM_UP_BLOCKS: u64 = 5;

/// Block intervals of a run (seconds between consecutive headers): all of
/// them, those outside any snapshot, and those overlapping a snapshot being built.
struct BlockTimes {
    all: Timings,
    normal: Timings,
    during_snapshot: Timings,
}

/// One join: its time and costs.
#[derive(Debug, Clone, Default)]
struct Join {
    seconds: f64,
    /// Height it restored (0: none, block sync from genesis).
    restored_height: u64,
    caught_up_at: u64,
    received_bytes: f64,
    disk_bytes: u64,
    processes: BTreeMap<String, SampledProcess>,
}

impl Join {
    fn cpu_seconds(&self) -> f64 {
        self.processes.values().map(|p| p.cpu_seconds).sum()
    }

    fn peak_rss(&self, label: &str) -> u64 {
        self.processes.get(label).map_or(0, |p| p.peak_rss_bytes)
    }

    fn to_json(&self) -> serde_json::Value {
        json!({
            "seconds": self.seconds, "restored_height": self.restored_height,
            "caught_up_at": self.caught_up_at, "received_bytes": self.received_bytes,
            "disk_bytes": self.disk_bytes, "cpu_seconds": self.cpu_seconds(),
            "processes": self.processes.iter().map(|(k, p)| (k.clone(), json!({
                "cpu_seconds": p.cpu_seconds, "peak_rss_bytes": p.peak_rss_bytes}))).collect::<serde_json::Map<_, _>>(),
        })
    }
}

/// Stops a network when dropped.
struct Running(XianNet);

impl Drop for Running {
    fn drop(&mut self) {
        if let Err(e) = self.0.stop() {
            eprintln!("bench-network: stopping the Xian network: {e:#}");
        }
    }
}

fn options(b: &XianBench, proxied: bool) -> anyhow::Result<XianNetOptions> {
    Ok(XianNetOptions {
        validators: b.validators,
        chain_id: "bench-xian".into(),
        // Room for the validators and the three joiners.
        base_port: free_base_port(b.validators + 3)?,
        block_time_ms: b.block_time.as_millis().try_into().unwrap_or(u64::MAX),
        genesis_keys: b.genesis_keys,
        statesnap: proxied
            .then(|| -> anyhow::Result<ProxyOptions> {
                Ok(ProxyOptions {
                    statesnap_bin: std::env::current_exe().context("finding the statesnap executable")?,
                    snapshot_interval: b.snapshot_interval,
                    snapshot_keep_recent: 3,
                    extra_args: Vec::new(),
                    node_args: Vec::new(),
                    without_proxy: Vec::new(),
                })
            })
            .transpose()?,
        ..XianNetOptions::default()
    })
}

/// Initialises and starts a network in `dir` (cleared first).
fn start_network(b: &XianBench, dir: &Path, proxied: bool) -> anyhow::Result<(Running, f64)> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    let what = if proxied { "behind proxies" } else { "without proxies" };
    eprintln!(
        "bench-network: {} Xian validators {what}, genesis with {} extra keys, in {}",
        b.validators,
        b.genesis_keys,
        dir.display()
    );
    let started = Instant::now();
    let net = XianNet::init(dir, &options(b, proxied)?)?;
    let net = Running(net);
    net.0.start()?;
    let seconds = started.elapsed().as_secs_f64();
    eprintln!("bench-network: block 1 after {seconds:.1} s (genesis written and InitChain run)");
    Ok((net, seconds))
}

/// Runs the load until validator 0 has `blocks` more blocks; the heights
/// loaded and the load's totals.
fn load_blocks(b: &XianBench, net: &XianNet, blocks: u64) -> anyhow::Result<(u64, u64, XianLoadStats)> {
    let rpc = net.node(0).rpc();
    let cfg = XianLoadConfig {
        rate: b.rate,
        duration: None,
        senders: b.senders,
        seed: 1,
        nodes: (0..net.options().validators).collect(),
    };
    let mut load = net.start_load(&cfg, false)?;
    // The load funds its senders first: count blocks from its first transfer.
    let mut ended = false;
    let from = net
        .node(0)
        .wait_for(net.supervisor(), TIMEOUT, "the load's first transfers", |s| {
            if !load.is_running() {
                ended = true;
                return Some(0);
            }
            let h = s.latest_block_height;
            let txs = rpc.call("block", json!({"height": h.to_string()})).ok()?;
            let n = txs["block"]["data"]["txs"].as_array().map_or(0, Vec::len);
            (n as f64 >= b.rate * b.block_time.as_secs_f64() * 0.5 || n >= b.senders).then_some(h)
        })?;
    if ended {
        bail!("the load ended before its first transfers: {:?}", load.finish());
    }
    // The first blocks after the start and the senders' funding are slow
    // for reasons of their own (a 1M-key node's first block took 5 s): the
    // measured blocks begin a few blocks into the load.
    let from = from + WARM_UP_BLOCKS;
    let to = from + blocks;
    eprintln!(
        "bench-network: load of {} transfers/s from height {from} to {to}",
        b.rate
    );
    net.node(0).wait_for_height(net.supervisor(), to, TIMEOUT)?;
    let stats = load.stop()?;
    eprintln!(
        "bench-network: load done: {} transfers accepted ({:.1}/s), {} refused, {} errors",
        stats.accepted, stats.rate, stats.refused, stats.errors
    );
    Ok((from, to, stats))
}

/// When each proxy of the network built a snapshot: (start, end), from the
/// "snapshot: created … seconds=S" lines of its log.
fn snapshot_windows(net: &XianNet) -> Vec<(SystemTime, SystemTime)> {
    let mut windows = Vec::new();
    for node in net.nodes().iter().filter(|n| !n.joined) {
        let Ok(text) = std::fs::read_to_string(node.proxy_log()) else {
            continue;
        };
        for line in text.lines().filter(|l| l.contains("snapshot: created")) {
            let Some(stamp) = line.split_whitespace().next() else {
                continue;
            };
            let Ok(end) = humantime::parse_rfc3339(stamp) else {
                continue;
            };
            let seconds = line
                .split_once("seconds=\"")
                .and_then(|(_, rest)| rest.split('"').next())
                .and_then(|s| s.parse::<f64>().ok())
                .unwrap_or(0.0);
            windows.push((end - Duration::from_secs_f64(seconds), end));
        }
    }
    windows
}

/// The intervals between the headers of blocks `from..=to`.
fn block_times(net: &XianNet, from: u64, to: u64, windows: &[(SystemTime, SystemTime)]) -> anyhow::Result<BlockTimes> {
    let times = net.node(0).rpc().block_times(from, to)?;
    let (mut all, mut normal, mut during) = (Vec::new(), Vec::new(), Vec::new());
    for pair in times.windows(2) {
        let (start, end) = (pair[0].1, pair[1].1);
        let seconds = end.duration_since(start).map_or(0.0, |d| d.as_secs_f64());
        all.push(seconds);
        if windows.iter().any(|&(ws, we)| start <= we && ws <= end) {
            during.push(seconds);
        } else {
            normal.push(seconds);
        }
    }
    Ok(BlockTimes {
        all: Timings::of(all),
        normal: Timings::of(normal),
        during_snapshot: Timings::of(during),
    })
}

/// Adds a node, starts it and times it to caught up.
fn time_join(net: &mut XianNet, state_sync: bool, proxied: bool, label: &str) -> anyhow::Result<Join> {
    let index = net.add_node(state_sync)?;
    if !proxied {
        net.run_without_proxy(index)?;
    }
    let target = net.node(0).rpc().status()?.latest_block_height;
    eprintln!("bench-network: {label}: node{index} joins (the network is at height {target})");
    let watched = net.node(index).clone();
    let sampler = ProcessSampler::start(move || watched.processes());
    let started = Instant::now();
    net.start_node(index)?;
    let mut last_report = Instant::now();
    let caught_up_at = net
        .node(index)
        .wait_for(
            net.supervisor(),
            TIMEOUT,
            &format!("the end of catching up at height {target}"),
            |s| {
                if !s.catching_up && s.latest_block_height >= target {
                    return Some(s.latest_block_height);
                }
                if last_report.elapsed() > Duration::from_secs(15) {
                    eprintln!(
                        "bench-network: {label}: {:.0} s, at height {} of {target}",
                        started.elapsed().as_secs_f64(),
                        s.latest_block_height
                    );
                    last_report = Instant::now();
                }
                None
            },
        )
        .with_context(|| format!("{label}: node{index} joining"))?;
    let seconds = started.elapsed().as_secs_f64();
    let node = net.node(index);
    let base = node.rpc().status()?.earliest_block_height;
    let join = Join {
        seconds,
        restored_height: base.saturating_sub(1),
        caught_up_at,
        received_bytes: received_bytes(&node.prometheus_url())?,
        disk_bytes: disk_bytes(&node.dir)?,
        processes: sampler.finish(),
    };
    eprintln!(
        "bench-network: {label}: caught up at height {caught_up_at} in {seconds:.1} s (restored height {})",
        join.restored_height
    );
    net.stop_node(index)?;
    Ok(join)
}

/// `xian-state-snapshot export` on validator 0, timed and sampled; the
/// archive's size.
fn export_format_1(net: &XianNet) -> anyhow::Result<(ExportRun, u64)> {
    eprintln!("bench-network: Xian's own snapshot: xian-state-snapshot export on node0");
    let run = net.export_state_snapshot(0)?;
    let path = &run.export.path;
    let archive_bytes = std::fs::metadata(path)
        .with_context(|| format!("the exported archive {}", path.display()))?
        .len();
    eprintln!(
        "bench-network: exported height {} in {:.1} s ({:.1} MB, run {})",
        run.export.height,
        run.seconds,
        archive_bytes as f64 / 1e6,
        run.attempts
    );
    Ok((run, archive_bytes))
}

pub fn bench_xian(b: &XianBench, dir: &Path) -> anyhow::Result<()> {
    if b.validators == 0 || b.load_blocks < 2 || !b.rate.is_finite() || b.rate <= 0.0 || b.senders == 0 {
        bail!("--app xian needs at least 1 validator, 2 load blocks, a positive --rate and 1 sender");
    }
    crate::xian::XianTools::discover()?;

    // 1. Through proxies: load, block times, then the joins.
    let (mut net, proxied_start_s) = start_network(b, &dir.join("xian-proxied"), true)?;
    let (from, to, proxied_load) = load_blocks(b, &net.0, b.load_blocks)?;
    let proxied_times = block_times(&net.0, from, to, &snapshot_windows(&net.0))?;
    let state_keys = net
        .0
        .read_home_with_xian(&net.0.node(0).storage_home())
        .ok()
        .map(|r| r.keys);

    let statesnap = time_join(&mut net.0, true, true, "through statesnap")?;
    let export = export_format_1(&net.0)?;
    let format_1 = time_join(&mut net.0, true, false, "Xian's own state sync (format 1)")?;
    if format_1.restored_height == 0 {
        bail!("the node without a proxy did not restore Xian's format-1 snapshot (it synced from genesis)");
    }
    let block_sync = time_join(&mut net.0, false, false, "block sync")?;
    drop(net);

    // 2. Without proxies: block times only.
    let (net, plain_start_s) = start_network(b, &dir.join("xian-plain"), false)?;
    let (from, to, plain_load) = load_blocks(b, &net.0, b.baseline_blocks)?;
    let plain_times = block_times(&net.0, from, to, &[])?;
    drop(net);

    report(
        b,
        state_keys,
        (proxied_start_s, plain_start_s),
        (&proxied_load, &plain_load),
        (&proxied_times, &plain_times),
        &export,
        [&statesnap, &format_1, &block_sync],
    );
    Ok(())
}

fn report(
    b: &XianBench,
    state_keys: Option<u64>,
    (proxied_start_s, plain_start_s): (f64, f64),
    (proxied_load, plain_load): (&XianLoadStats, &XianLoadStats),
    (proxied, plain): (&BlockTimes, &BlockTimes),
    (export, archive_bytes): &(ExportRun, u64),
    joins: [&Join; 3],
) {
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    println!(
        "statesnap bench-network --app xian: {} validators (xian-abci 0.9.3, CometBFT v0.39.3), {} extra genesis keys, \
         {} ms blocks, load {} transfers/s from {} senders, statesnap snapshots every {} blocks",
        b.validators,
        b.genesis_keys,
        b.block_time.as_millis(),
        b.rate,
        b.senders,
        b.snapshot_interval
    );
    if let Some(keys) = state_keys {
        println!("state after the load: {keys} keys (Xian's LMDBStore on validator 0)");
    }
    println!();
    println!(
        "{:<16} {:>6} {:>9} | {:>7} {:>7} {:>8} | {:>11} {:>16}",
        "block time (s)", "blocks", "accepted", "median", "p95", "longest", "in snapshot", "longest in snap."
    );
    for (name, t, load) in [
        ("through proxies", proxied, proxied_load),
        ("without proxy", plain, plain_load),
    ] {
        println!(
            "{:<16} {:>6} {:>9} | {:>7.3} {:>7.3} {:>8.3} | {:>11} {:>16.3}",
            name,
            t.all.count,
            load.accepted,
            t.all.median,
            t.all.p95,
            t.normal.max,
            t.during_snapshot.count,
            t.during_snapshot.max
        );
    }
    let median_change = proxied.all.median / plain.all.median - 1.0;
    let snapshot_ratio = proxied.during_snapshot.max / proxied.normal.max;
    println!(
        "median block time through proxies: {:+.1}%; longest block during a snapshot / longest normal block: {:.2}",
        median_change * 100.0,
        snapshot_ratio
    );
    println!();
    println!(
        "Xian's own export (xian-state-snapshot export on validator 0): {:.1} s, height {}, {:.1} MB archive, peak RSS {:.0} MiB",
        export.seconds,
        export.export.height,
        *archive_bytes as f64 / 1e6,
        mib(export.peak_rss_bytes)
    );
    println!(
        "{:<26} {:>8} {:>9} {:>9} | {:>8} {:>8} {:>7} | {:>11} {:>11} {:>11}",
        "join",
        "seconds",
        "restored",
        "caught up",
        "recv MB",
        "disk MB",
        "CPU s",
        "proxy RSS",
        "xian RSS",
        "cometbft RSS"
    );
    let names = [
        "through statesnap",
        "Xian's state sync (fmt 1)",
        "block sync from genesis",
    ];
    for (name, j) in names.iter().zip(joins) {
        println!(
            "{:<26} {:>8.1} {:>9} {:>9} | {:>8.1} {:>8.1} {:>7.1} | {:>7.0} MiB {:>7.0} MiB {:>8.0} MiB",
            name,
            j.seconds,
            j.restored_height,
            j.caught_up_at,
            j.received_bytes / 1e6,
            j.disk_bytes as f64 / 1e6,
            j.cpu_seconds(),
            mib(j.peak_rss("proxy")),
            mib(j.peak_rss("xian-abci")),
            mib(j.peak_rss("cometbft"))
        );
    }
    let [statesnap, format_1, block_sync] = joins;
    println!(
        "through statesnap: {:.1}x faster than Xian's own state sync, {:.1}x faster than block sync over {} loaded blocks",
        format_1.seconds / statesnap.seconds,
        block_sync.seconds / statesnap.seconds,
        b.load_blocks
    );
    println!(
        "{}",
        json!({
            "validators": b.validators, "genesis_keys": b.genesis_keys, "state_keys": state_keys,
            "rate": b.rate, "senders": b.senders, "block_time_ms": b.block_time.as_millis() as u64,
            "snapshot_interval": b.snapshot_interval, "load_blocks": b.load_blocks, "baseline_blocks": b.baseline_blocks,
            "start_seconds": {"proxied": proxied_start_s, "plain": plain_start_s},
            "block_times": {
                "proxied": {"median": proxied.all.median, "p95": proxied.all.p95,
                    "longest_normal": proxied.normal.max, "during_snapshot": proxied.during_snapshot.count,
                    "longest_during_snapshot": proxied.during_snapshot.max, "accepted": proxied_load.accepted},
                "plain": {"median": plain.all.median, "p95": plain.all.p95,
                    "longest": plain.all.max, "accepted": plain_load.accepted},
                "median_change": median_change, "snapshot_ratio": snapshot_ratio,
            },
            "export": {"seconds": export.seconds, "height": export.export.height, "archive_bytes": archive_bytes,
                "peak_rss_bytes": export.peak_rss_bytes, "runs": export.attempts},
            "joins": {"statesnap": statesnap.to_json(), "xian_format_1": format_1.to_json(), "block_sync": block_sync.to_json()},
        })
    );
}
