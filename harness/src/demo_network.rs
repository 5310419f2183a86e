//! `statesnap demo-network`, the main job end to end: a local network adopts
//! a new snapshot format by vote, and a node with no built-in plugins joins it
//! by state sync in that format.
//!
//! Three CometBFT validators run statesnap under load; they vote the format
//! in and adopt it without restarting; then a brand-new node whose binary has
//! no built-in plugins joins by state sync from a snapshot in that format and
//! is shown to hold the validators' state.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::load::{run_load, LoadConfig, RpcSubmitter, SystemClock};
use crate::testnet::{free_base_port, JoinOptions, Testnet, TestnetOptions};
use statesnap::node::metrics::read_metric;

/// Arguments of `statesnap demo-network`.
#[derive(clap::Args, Debug)]
pub struct DemoNetworkArgs {
    /// Keys in the generated genesis state (a Xian-like state).
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// Seconds of transaction load before the new node joins.
    #[arg(long, default_value_t = 20)]
    pub load_seconds: u64,
    /// Transactions per second of that load.
    #[arg(long, default_value_t = 30.0)]
    pub rate: f64,
    /// Snapshot interval of the validators, in blocks.
    #[arg(long, default_value_t = 20)]
    pub snapshot_interval: u64,
    /// Work directory (default: a temporary directory, removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Leave the network running at the end (with --dir).
    #[arg(long, requires = "dir")]
    pub keep: bool,
}

const TIMEOUT: Duration = Duration::from_secs(900);
/// The built-in plugin the validators vote in (the network starts with zstd).
const NEW_PLUGIN: &str = "brotli";
/// Blocks between the vote passing and the new format's activation.
const ACTIVATION_DELAY: u64 = 5;

struct Network {
    net: Testnet,
    keep: bool,
}

impl Drop for Network {
    fn drop(&mut self) {
        if !self.keep {
            let _ = self.net.stop_all();
        }
    }
}

fn metric(net: &Testnet, node: &str, name: &str) -> f64 {
    net.metrics(node)
        .ok()
        .and_then(|t| read_metric(&t, name))
        .unwrap_or(f64::NAN)
}

pub fn demo_network(args: &DemoNetworkArgs) -> anyhow::Result<()> {
    let (dir, _tmp) = crate::bench::work_dir(&args.dir)?;
    let mut params = BTreeMap::new();
    params.insert("chunk_bytes".to_string(), "1000000".to_string());
    let opts = TestnetOptions {
        validators: 3,
        chain_id: "statesnap-demo".into(),
        base_port: free_base_port(5)?,
        snapshot_interval: args.snapshot_interval,
        snapshot_keep_recent: 2,
        snapshot_params: params,
        block_time: Duration::from_millis(300),
        genesis_keys: args.keys,
        statesnap_bin: std::env::current_exe()?,
        ..TestnetOptions::default()
    };
    let net_dir = dir.join("net");
    println!(
        "1. three validators (CometBFT 0.38 + statesnap) in {}, genesis: a Xian-like state of {} keys",
        net_dir.display(),
        args.keys
    );
    let started = Instant::now();
    let mut net = Network {
        net: Testnet::init(&net_dir, &opts)?,
        keep: args.keep,
    };
    net.net.start_all()?;
    net.net.wait_for_height("node0", 1, TIMEOUT)?;
    println!("   producing blocks after {:.1}s", started.elapsed().as_secs_f64());

    println!(
        "2. {} s of load: {} signed state patches per second",
        args.load_seconds, args.rate
    );
    let submitters: Vec<RpcSubmitter> = ["node0", "node1", "node2"]
        .iter()
        .map(|n| net.net.rpc(n).map(RpcSubmitter))
        .collect::<anyhow::Result<_>>()?;
    let cfg = LoadConfig::new("statesnap-demo", args.rate, Duration::from_secs(args.load_seconds));
    let stats = run_load(
        &cfg,
        &submitters,
        &SystemClock::start(),
        &AtomicBool::new(false),
        |_| {},
    )?;
    let height = net.net.rpc("node0")?.status()?.latest_block_height;
    println!(
        "   {} accepted, {} refused; chain at height {height}; snapshots every {} blocks",
        stats.accepted, stats.refused, args.snapshot_interval
    );
    net.net
        .wait_for_height("node0", args.snapshot_interval + 3, TIMEOUT)
        .context("waiting for the first snapshot")?;
    let snaps = net.net.rpc("node0")?.abci_query("/snapshots", b"")?;
    println!("   node0 advertises: {}", String::from_utf8_lossy(&snaps.value));

    let format = vote_in_new_format(&net.net, &dir, args.snapshot_interval)?;

    println!("4. a new node whose binary has no built-in plugins joins by state sync");
    net.net.add_node("newnode", &JoinOptions::default())?;
    let home = net.net.node("newnode")?.statesnap_home.clone();
    let mut config = statesnap::node::NodeConfig::load(&home)?;
    config.snapshot_plugin = String::new(); // only formats approved by governance
    config.write(&home)?;
    let joined = Instant::now();
    net.net.start_node("newnode", &["--no-built-in-plugins".to_string()])?;
    net.net.wait_for_sync("newnode", TIMEOUT)?;
    let join_s = joined.elapsed().as_secs_f64();
    let restored = metric(&net.net, "newnode", "statesnap_restored_snapshot_height");
    if restored.is_nan() || restored < 1.0 {
        bail!(
            "the new node did not restore a snapshot; see {}",
            net.net.node("newnode")?.statesnap_log.display()
        );
    }
    let status = net.net.rpc("newnode")?.status()?;
    if metric(&net.net, "newnode", "statesnap_shipped_plugins_loaded_total") != 1.0 {
        bail!("the new node did not restore with the plugin shipped in the snapshot");
    }
    println!(
        "   caught up in {join_s:.1}s: restored the format-{format} snapshot of height {restored} with the plugin \
         it shipped in chunk 0, after checking its approval proof against the trusted app hash \
         ({} entries, {} chunks, {:.2}s); its first block is {} (not 1), now at height {}",
        metric(&net.net, "newnode", "statesnap_restore_entries"),
        metric(&net.net, "newnode", "statesnap_restore_chunks_total"),
        metric(&net.net, "newnode", "statesnap_restore_seconds"),
        status.earliest_block_height,
        status.latest_block_height
    );

    println!("5. the new node's own state machine agrees with the validators");
    let q = net.net.rpc("newnode")?.abci_query("/status", b"")?;
    let mine: serde_json::Value = serde_json::from_slice(&q.value)?;
    let h = mine["height"].as_u64().context("the node's /status has no height")?;
    net.net.wait_for_height("node0", h + 1, TIMEOUT)?;
    let theirs = hex::encode(net.net.rpc("node0")?.header(Some(h + 1))?.app_hash);
    let same = mine["app_hash"].as_str() == Some(theirs.as_str());
    println!(
        "   app hash after height {h}: new node {}, validators {} {}",
        &mine["app_hash"].as_str().unwrap_or("?")[..16],
        &theirs[..16],
        if same { "(identical)" } else { "(DIFFERENT)" }
    );
    if !same {
        bail!("the new node's app hash differs from the validators'");
    }
    if args.keep {
        println!(
            "the network keeps running: statesnap testnet status --dir {0}; stop it with statesnap testnet stop --dir {0}",
            net_dir.display()
        );
    } else {
        println!("done in {:.1}s; stopping the network", started.elapsed().as_secs_f64());
    }
    Ok(())
}

/// Step 3: node0 proposes the new plugin, the three validators vote, and the
/// demo waits until every validator advertises a snapshot in the new format,
/// made by the same processes. Returns the new format number.
fn vote_in_new_format(net: &Testnet, dir: &std::path::Path, interval: u64) -> anyhow::Result<u32> {
    let validators = ["node0", "node1", "node2"];
    let exe = std::env::current_exe()?;
    let run = |args: &[&str]| -> anyhow::Result<String> {
        println!("   $ statesnap {}", args.join(" "));
        let out = std::process::Command::new(&exe).args(args).output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            bail!("statesnap {} failed: {stderr}", args.join(" "));
        }
        for line in stderr.lines().filter(|l| l.starts_with("gov:")) {
            println!("     {line}");
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let wasm = dir.join(format!("{NEW_PLUGIN}.wasm"));
    let wasm_arg = wasm.display().to_string();
    let registry =
        statesnap::plugin::PluginRegistry::new(statesnap::plugin::PluginEngine::new(Default::default())?, true);
    let format = registry
        .list()?
        .into_iter()
        .find(|p| p.description().name == NEW_PLUGIN)
        .with_context(|| format!("no built-in plugin {NEW_PLUGIN}"))?
        .description()
        .format;
    println!("3. the validators vote in snapshot format {format} ({NEW_PLUGIN}), with no restart");
    let pids: Vec<_> = validators.iter().map(|n| net.pids(n)).collect::<anyhow::Result<_>>()?;
    run(&["plugin", "export", NEW_PLUGIN, "--out", &wasm_arg])?;
    let key = |n: &str| -> anyhow::Result<String> {
        Ok(net
            .node(n)?
            .cometbft_home
            .join("config/priv_validator_key.json")
            .display()
            .to_string())
    };
    let rpc0 = net.node("node0")?.rpc_url();
    let format_arg = format.to_string();
    let delay = ACTIVATION_DELAY.to_string();
    let key0 = key("node0")?;
    run(&[
        "gov",
        "propose",
        "--plugin",
        &wasm_arg,
        "--format",
        &format_arg,
        "--activation-delay",
        &delay,
        "--rpc",
        &rpc0,
        "--key",
        &key0,
    ])?;
    let id = net.rpc("node0")?.abci_query("/gov", b"")?;
    let gov: serde_json::Value = serde_json::from_slice(&id.value)?;
    let id = gov["proposals"]
        .as_array()
        .and_then(|p| p.last())
        .and_then(|p| p["id"].as_u64())
        .context("the proposal is not in /gov")?
        .to_string();
    for n in validators {
        let (rpc, key) = (net.node(n)?.rpc_url(), key(n)?);
        run(&["gov", "vote", "--proposal", &id, "--rpc", &rpc, "--key", &key])?;
    }
    let gov: serde_json::Value = serde_json::from_slice(&net.rpc("node0")?.abci_query("/gov", b"")?.value)?;
    let activation = gov["formats"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["format"] == format))
        .and_then(|f| f["activation_height"].as_u64())
        .context("the proposal did not pass")?;
    let first = activation.div_ceil(interval) * interval;
    let started = Instant::now();
    for n in validators {
        loop {
            let q = net.rpc(n)?.abci_query("/snapshots", b"")?;
            let list: Vec<serde_json::Value> = serde_json::from_slice(&q.value)?;
            if list
                .iter()
                .any(|s| s["format"] == format && s["height"].as_u64() >= Some(first))
            {
                break;
            }
            if started.elapsed() > TIMEOUT {
                bail!(
                    "{n} made no format-{format} snapshot; see {}",
                    net.node(n)?.statesnap_log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let now: Vec<_> = validators.iter().map(|n| net.pids(n)).collect::<anyhow::Result<_>>()?;
    if now != pids {
        bail!("a validator process restarted during the upgrade");
    }
    let q = net.rpc("node0")?.abci_query("/snapshots", b"")?;
    println!(
        "   format {format} active from height {activation}; every validator made a format-{format} snapshot at \
         height {first} in the same processes (pids unchanged); node0 advertises: {}",
        String::from_utf8_lossy(&q.value)
    );
    Ok(format)
}
