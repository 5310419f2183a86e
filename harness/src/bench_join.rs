//! `statesnap bench-transport --join`: an out-of-band join of a new node,
//! timed step by step, against the offline restore of the same snapshot.
//!
//! Two validators (real CometBFT, loopback) start from a generated genesis
//! state of `--keys` keys and publish their snapshots to a directory a plain
//! HTTP server serves. Once one is published, the validators go on without
//! making snapshots (so that only empty blocks share the cores with what is
//! timed), and a new node runs `statesnap
//! join` from that server with the light client over both validators' RPC
//! (trust, restore, CometBFT's bootstrap: each timed by the command), is
//! started, and is timed to its first block (the one after the snapshot)
//! and to caught up. Then `snapshot restore` of the same snapshot from
//! node0's snapshot directory is timed, as the offline baseline.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};

use crate::bench::{child, s};
use crate::bench_network::{offline_restore, restart_without_snapshots, Stopper};
use crate::object_server::StaticHttpServer;
use crate::testnet::{free_base_port, CometBft, JoinOptions, Testnet, TestnetOptions};
use statesnap_transport::location::Location;

/// Long enough for InitChain of tens of millions of keys on a slow machine.
const TIMEOUT: Duration = Duration::from_secs(3600);

fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or(f64::NAN)
}

/// The newest snapshot published in `site`, once there is one.
fn wait_for_published(site: &Path) -> anyhow::Result<u64> {
    let location = Location::parse(s(site), false)?;
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(first) = statesnap_transport::publish::list(&location)
            .ok()
            .and_then(|i| i.snapshots.first().map(|e| e.height))
        {
            return Ok(first);
        }
        anyhow::ensure!(Instant::now() < deadline, "no snapshot published in {TIMEOUT:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn bench_join(keys: u64, plugin: &str, params: &[String], dir: &Path) -> anyhow::Result<()> {
    let net_dir = dir.join("net-join");
    let _ = std::fs::remove_dir_all(&net_dir);
    let site = dir.join("join-site");
    let _ = std::fs::remove_dir_all(&site);
    let mut snapshot_params = std::collections::BTreeMap::new();
    for p in params {
        let (k, v) = p
            .split_once('=')
            .with_context(|| format!("--param {p}: not NAME=VALUE"))?;
        snapshot_params.insert(k.to_string(), v.to_string());
    }
    let opts = TestnetOptions {
        validators: 2,
        chain_id: "bench-join".into(),
        base_port: free_base_port(8)?,
        snapshot_interval: 20,
        // Kept beyond the join, for the offline restore of the same snapshot.
        snapshot_keep_recent: 50,
        snapshot_plugin: plugin.to_string(),
        snapshot_params,
        snapshot_publish: format!("file://{}", site.display()),
        block_time: Duration::from_millis(300),
        genesis_keys: keys,
        statesnap_bin: std::env::current_exe()?,
        ..TestnetOptions::default()
    };
    let cometbft = CometBft::discover_release(opts.cometbft)?;
    eprintln!(
        "bench-transport --join: 2 validators with a {keys}-key genesis state in {}",
        net_dir.display()
    );
    let mut net = Stopper(Testnet::init(&net_dir, &opts)?);
    let started = Instant::now();
    net.0.start_all()?;
    let height = wait_for_published(&site)?;
    eprintln!(
        "bench-transport --join: snapshot of height {height} published, {:.0} s after the start",
        started.elapsed().as_secs_f64()
    );
    // Idle from here: no more snapshots (whose building would share the
    // cores with the join and the offline restore), only empty blocks.
    restart_without_snapshots(&net.0, &["node0", "node1"])?;
    // The light client verifies header H+1 against H+2's commit.
    net.0.wait_for_height("node0", height + 2, TIMEOUT)?;
    net.0.wait_for_height("node1", height + 2, TIMEOUT)?;
    let http = StaticHttpServer::start(&site)?;

    let join = JoinOptions {
        rpc_servers: vec!["node0".into(), "node1".into()],
        ..JoinOptions::default()
    };
    let joiner = net.0.add_node("joiner", &join)?.clone();
    let rpcs = format!("{},{}", net.0.node("node0")?.rpc_url(), net.0.node("node1")?.rpc_url());
    let h = height.to_string();
    let url = http.url();
    eprintln!("bench-transport --join: statesnap join from {url}");
    let joining = Instant::now();
    let joined = child(&[
        "join",
        "--from",
        &url,
        "--trust-rpc",
        &rpcs,
        "--cometbft-home",
        s(&joiner.cometbft_home),
        "--home",
        s(&joiner.statesnap_home),
        "--cometbft",
        s(&cometbft.path),
        "--height",
        &h,
    ])?;
    let join_s = joining.elapsed().as_secs_f64();
    net.0.start_node("joiner", &[])?;
    net.0.wait_for_height("joiner", height + 1, TIMEOUT)?;
    let first_block_s = joining.elapsed().as_secs_f64();
    net.0.wait_for_sync("joiner", TIMEOUT)?;
    let caught_up_s = joining.elapsed().as_secs_f64();
    // The joined node agrees with the validators: the same header (and so
    // app hash) at a height both have.
    let tip = net.0.rpc("node0")?.status()?.latest_block_height;
    net.0.wait_for_height("joiner", tip, TIMEOUT)?;
    let (ours, theirs) = (
        net.0.rpc("joiner")?.header(Some(tip))?,
        net.0.rpc("node0")?.header(Some(tip))?,
    );
    anyhow::ensure!(
        ours.app_hash == theirs.app_hash,
        "the joined node's app hash at {tip} differs from node0's"
    );
    net.0.stop_node("joiner")?;

    eprintln!("bench-transport --join: offline restore of the same snapshot");
    let offline_s = offline_restore(&net.0, height, &dir.join("join-offline"))?;
    let total = first_block_s;
    println!();
    println!(
        "out-of-band join of a {keys}-key state (snapshot at height {height}, {} chunks, {:.1} MiB, from HTTP):",
        joined["fetch"]["fetched"],
        joined["fetch"]["bytes_fetched"].as_f64().unwrap_or(f64::NAN) / (1024.0 * 1024.0)
    );
    println!("{:<36} {:>9} {:>10}", "step", "seconds", "x offline");
    let rows = [
        ("trust (light client, 2 RPCs)", f(&joined, "trust_seconds")),
        ("restore (fetch, proofs, root)", f(&joined, "restore_seconds")),
        ("bootstrap (cometbft-bootstrap)", f(&joined, "bootstrap_seconds")),
        ("statesnap join, whole command", join_s),
        ("start to first block (H+1)", first_block_s - join_s),
        ("total: join to first block", total),
        ("join to caught up", caught_up_s),
        ("offline restore (directory)", offline_s),
    ];
    for (name, secs) in rows {
        println!("{name:<36} {secs:>9.2} {:>10.2}", secs / offline_s);
    }
    println!(
        "{}",
        json!({
            "keys": keys,
            "height": height,
            "join": joined,
            "join_seconds": join_s,
            "first_block_seconds": first_block_s,
            "caught_up_seconds": caught_up_s,
            "offline_seconds": offline_s,
            "ratio": total / offline_s,
        })
    );
    Ok(())
}
