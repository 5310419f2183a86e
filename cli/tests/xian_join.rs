//! `statesnap join --app xian` on a real Xian network: two validators,
//! `xian-abci` 0.9.3 each run by its `statesnap proxy` behind CometBFT
//! v0.39.3, under a load of signed transfers (`XianNet::start_load`). The
//! proxies snapshot every 10 blocks, and validator 0's publishes each
//! snapshot to a directory (`--snapshot-publish file:///DIR`) that a plain
//! HTTP server serves. A new Xian node's homes are made (`XianNet::add_node`
//! without state sync, never started) and `statesnap join --app xian` fills
//! them from that URL: the app hash of H from the light client over both
//! validators' RPC (header H+1), the state restored into Xian's storage home
//! with Xian's block marker (height H, its app hash, block H's time), and
//! CometBFT's empty stores bootstrapped at H with state sync off. What Xian's
//! own code reads in the home before the start is the state of H and that
//! marker. The chain goes 30 blocks further; then the node is started
//! (proxy, xian-abci, CometBFT, state sync still off): it block-syncs from
//! H+1 (its earliest block) to the validators' height and app hash, its
//! proxy restored nothing (no CometBFT state sync either) and snapshots the
//! joined home with the validators' app hash, and a transfer sent through it
//! after the join executes there and on a validator.
//!
//! Needs the tools of `scripts/install-xian.sh` (`scripts/setup.sh` runs it)
//! and root; fails, saying so, without them.

mod common;

use std::path::Path;
use std::time::Instant;

use common::xian::{abci_info, assert_app_hash_matches, metric, require_xian, short_tempdir, wait, Guard, TIMEOUT};
use statesnap::snapshot::list_snapshots;
use statesnap_harness::object_server::StaticHttpServer;
use statesnap_harness::testnet::free_base_port;
use statesnap_harness::xian::{ProxyOptions, XianLoadConfig, XianNet, XianNetOptions};

const INTERVAL: u64 = 10;
/// The validator whose proxy publishes its snapshots.
const PUBLISHER: usize = 0;

/// The published index at `site` (`index.json`): (height, app hash hex,
/// chain id, entries) of each snapshot listed, newest first.
fn published(site: &Path) -> Vec<(u64, String, String, u64)> {
    let Ok(bytes) = std::fs::read(site.join("index.json")) else {
        return Vec::new();
    };
    let Ok(index) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Vec::new();
    };
    index["snapshots"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|e| {
                    (
                        e["height"].as_u64().unwrap(),
                        e["app_hash"].as_str().unwrap().to_string(),
                        e["chain_id"].as_str().unwrap().to_string(),
                        e["entries"].as_u64().unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_xian_node_joined_out_of_band_follows_the_chain_with_the_validators_app_hash() {
    require_xian();
    let started = Instant::now();
    let tmp = short_tempdir("xj");
    let site = tmp.path().join("site");
    std::fs::create_dir_all(&site).unwrap();
    let opts = XianNetOptions {
        validators: 2,
        chain_id: "xian-join".into(),
        base_port: free_base_port(4).unwrap(),
        block_time_ms: 300,
        genesis_keys: 2_000,
        statesnap: Some(ProxyOptions {
            statesnap_bin: env!("CARGO_BIN_EXE_statesnap").into(),
            snapshot_interval: INTERVAL,
            snapshot_keep_recent: 3,
            extra_args: vec!["--param".into(), "chunk_bytes=40000".into()],
            node_args: vec![(
                PUBLISHER,
                vec!["--snapshot-publish".into(), format!("file://{}", site.display())],
            )],
            without_proxy: Vec::new(),
        }),
        ..XianNetOptions::default()
    };
    let mut net = XianNet::init(&tmp.path().join("net"), &opts).unwrap();
    let _guard = Guard(Some(tmp), net.dir().to_path_buf());
    net.start().unwrap();
    eprintln!("network up after {:?}", started.elapsed());

    // Transfers from 4 funded senders through both validators, until stopped.
    let load = net
        .start_load(
            &XianLoadConfig {
                rate: 10.0,
                duration: None,
                senders: 4,
                seed: 11,
                nodes: vec![0, 1],
            },
            false,
        )
        .unwrap();
    let load_from = net.node(0).rpc().status().unwrap().latest_block_height;

    // A published snapshot of a height H after the load began (its senders
    // funded by then), and the chain at H+2 on the node the app hash is
    // read from (the light client needs headers H+1 and H+2).
    let (height, index_app_hash, chain_id, entries) =
        wait("a published snapshot past the load's start", &net, PUBLISHER, || {
            published(&site).into_iter().find(|s| s.0 > load_from + 2 * INTERVAL)
        });
    net.node(0)
        .wait_for_height(net.supervisor(), height + 2, TIMEOUT)
        .unwrap();
    let app_hash = hex::encode(net.node(0).rpc().header(Some(height + 1)).unwrap().app_hash);
    assert_eq!(index_app_hash, app_hash, "the index's app hash of H is header H+1's");
    assert_eq!(chain_id, "xian-join");
    let http = StaticHttpServer::start(&site).unwrap();
    eprintln!(
        "snapshot of height {height} published after {:?} ({entries} entries)",
        started.elapsed()
    );

    // A new Xian node's homes (the chain's genesis, the validators as peers,
    // no state sync), never started, joined from the HTTP mirror.
    let joiner = net.add_node(false).unwrap();
    let node = net.node(joiner).clone();
    let rpcs = format!("{},{}", net.node(0).rpc_url(), net.node(1).rpc_url());
    let joining = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_statesnap"))
        .args(["join", "--from", &http.url(), "--trust-rpc", &rpcs, "--cometbft-home"])
        .arg(node.cometbft_home())
        .arg("--home")
        .arg(node.storage_home())
        .args(["--app", "xian", "--cometbft"])
        .arg(&net.tools().cometbft)
        .args(["--height", &height.to_string()])
        .output()
        .unwrap();
    let join_seconds = joining.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "statesnap join --app xian failed:\n{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let joined: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(joined["app"], "xian", "{joined}");
    assert_eq!(joined["height"], height, "{joined}");
    assert_eq!(joined["app_hash"], app_hash, "{joined}");
    assert_eq!(joined["entries"], entries, "{joined}");
    let fetched = joined["fetch"]["fetched"].as_u64().unwrap();
    assert!(fetched >= 1, "{joined}");
    assert_eq!(http.chunk_gets(), fetched, "every chunk came from the HTTP mirror");
    let config = std::fs::read_to_string(node.cometbft_home().join("config/config.toml")).unwrap();
    let config: toml::Table = config.parse().unwrap();
    assert_eq!(config["statesync"]["enable"].as_bool(), Some(false), "state sync off");
    eprintln!("joined in {join_seconds:.1} s: {joined}");

    // What Xian's own code reads in the joined home: the state of H, and the
    // block marker naming H and its app hash.
    let xian = net.read_home_with_xian(&node.storage_home()).unwrap();
    assert_eq!(xian.root, app_hash, "Xian's root of the joined home");
    assert_eq!(xian.consensus_entries, entries, "Xian's count of the joined entries");
    let marker = xian.marker.expect("the joined home has Xian's block marker");
    let marker = match marker {
        serde_json::Value::String(text) => serde_json::from_str(&text).unwrap(),
        other => other,
    };
    assert_eq!(marker["height"], height, "{marker}");
    assert_eq!(marker["hash"], app_hash, "{marker}");
    let header = net
        .node(0)
        .rpc()
        .call("header", serde_json::json!({ "height": height.to_string() }))
        .unwrap();
    let time = header["header"]["time"].as_str().unwrap();
    let nanos = humantime::parse_rfc3339(time)
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    assert_eq!(
        marker["nanos"].as_u64(),
        Some(nanos),
        "the marker's time is block H's ({time}): {marker}"
    );

    // The chain moves on under the load while the joined node is down, so
    // it has blocks of transfers to catch up on.
    let behind = height + 3 * INTERVAL;
    net.node(0).wait_for_height(net.supervisor(), behind, TIMEOUT).unwrap();

    // Started as the harness starts a node (its proxy runs xian-abci), with
    // state sync still off: it block-syncs from H+1.
    net.start_node(joiner).unwrap();
    let synced = wait("the joiner to catch up", &net, joiner, || {
        let s = node.rpc().status().ok()?;
        (!s.catching_up && s.latest_block_height >= behind).then_some(s.latest_block_height)
    });
    eprintln!("the joiner caught up at {synced} after {:?}", started.elapsed());
    let status = node.rpc().status().unwrap();
    assert_eq!(
        status.earliest_block_height,
        height + 1,
        "its first block is the one after the snapshot\n{}",
        node.log_tails()
    );
    // It reaches the validators' height, with their app hash there.
    let validators_at = net.node(0).rpc().status().unwrap().latest_block_height;
    node.wait_for_height(net.supervisor(), validators_at, TIMEOUT).unwrap();
    let checked = assert_app_hash_matches(&net, joiner, 0, validators_at);
    assert_app_hash_matches(&net, joiner, 1, checked);

    // Its proxy restored nothing by p2p state sync.
    let metrics = net.metrics(joiner).unwrap();
    assert!(
        metrics.contains("statesnap_restored_snapshot_height"),
        "the joiner's proxy serves its metrics:\n{metrics}"
    );
    assert_eq!(
        metric(&net, joiner, "statesnap_restored_snapshot_height"),
        0.0,
        "the joiner's proxy restored no snapshot"
    );
    let proxy_log = std::fs::read_to_string(node.proxy_log()).unwrap();
    assert!(
        !proxy_log.contains("the restored home is in place"),
        "the joiner's proxy swapped no home in:\n{}",
        node.log_tails()
    );
    let cometbft_log = std::fs::read_to_string(node.cometbft_log()).unwrap();
    assert!(
        !["Starting state sync", "Offering snapshot", "Snapshot restored"]
            .iter()
            .any(|line| cometbft_log.contains(line)),
        "the joiner's CometBFT did not state-sync:\n{}",
        node.log_tails()
    );

    // Its proxy snapshots the joined home as it goes on (it reads the
    // marker xian-abci writes after each block): a snapshot past H, whose
    // root is the validators' app hash there.
    let (own, own_hash) = wait("a snapshot by the joiner's proxy", &net, joiner, || {
        // Manifests only: a snapshot pruned while it is read is skipped.
        list_snapshots(&node.snapshot_dir())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|s| s.manifest().ok())
            .map(|m| (m.height, m.app_hash))
            .find(|(h, _)| *h > height)
    });
    // Header own+1, once validator 0 has it (the joiner may be ahead of it).
    net.node(0).wait_for_height(net.supervisor(), own + 1, TIMEOUT).unwrap();
    assert_eq!(
        hex::encode(own_hash),
        hex::encode(net.node(0).rpc().header(Some(own + 1)).unwrap().app_hash),
        "the joiner's snapshot of height {own}"
    );

    // The load ends; a transfer sent through the joiner, after the join,
    // executes there and on the validators (once the joiner has committed
    // every block so far: it reads the founder's nonce from its state).
    let stats = load.stop().unwrap();
    assert!(stats.accepted > 0, "{stats:?}");
    let now = net.node(0).rpc().status().unwrap().latest_block_height;
    node.wait_for_height(net.supervisor(), now + 2, TIMEOUT).unwrap();
    let to = "70".repeat(32);
    let tx = net.transfer(joiner, net.founder_private_key(), &to, "3.5").unwrap();
    assert!(tx.height > height, "the transfer is after H");
    node.wait_for_height(net.supervisor(), tx.height + 1, TIMEOUT).unwrap();
    assert_eq!(net.balance(joiner, &to).unwrap(), "3.5");
    net.node(1)
        .wait_for_height(net.supervisor(), tx.height + 1, TIMEOUT)
        .unwrap();
    assert_eq!(net.balance(1, &to).unwrap(), "3.5");
    assert_app_hash_matches(&net, joiner, 0, tx.height);
    let (info_height, _) = abci_info(&net, joiner);
    assert!(
        info_height > tx.height,
        "the joiner's app answers Info past the transfer"
    );

    eprintln!(
        "passed after {:?} (join {join_seconds:.1} s at height {height}, {} transfers accepted)",
        started.elapsed(),
        stats.accepted
    );
}
