//! State sync on a real CometBFT 0.38 network on loopback: three validators
//! running `statesnap start` on HDF5 homes under load, one of them serving
//! corrupted chunks; new nodes on LMDB homes join by state sync (across
//! stores: the snapshot does not depend on the store), one of them killed
//! with SIGKILL in the middle of its restore and then, synced, killed again
//! and again under load. Needs cometbft (scripts/setup.sh installs it).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::net::{app_status, metric, poll, require_cometbft, Running};
use serde_json::Value;
use statesnap::store::StoreKind;
use statesnap_harness::load::{run_load, LoadConfig, RpcSubmitter, SystemClock};
use statesnap_harness::testnet::{free_base_port, JoinOptions, Testnet, TestnetOptions};

const CHAIN: &str = "e2e-chain";
const SYNC_TIMEOUT: Duration = Duration::from_secs(240);

/// `/snapshots` of a node: (height, format) → hash.
fn advertised(net: &Testnet, node: &str) -> BTreeMap<(u64, u64), String> {
    let q = net.rpc(node).unwrap().abci_query("/snapshots", b"").unwrap();
    assert_eq!(q.code, 0, "{}", q.log);
    let list: Vec<Value> = serde_json::from_slice(&q.value).unwrap();
    list.iter()
        .map(|s| {
            (
                (s["height"].as_u64().unwrap(), s["format"].as_u64().unwrap()),
                s["hash"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Files or directories a restore or swap left next to the state home.
fn leftovers(statesnap_home: &Path) -> Vec<String> {
    std::fs::read_dir(statesnap_home)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.contains(".statesnap-"))
        .collect()
}

#[test]
fn new_nodes_join_a_live_network_by_state_sync() {
    require_cometbft();
    let dir = tempfile::tempdir().unwrap();
    let mut params = BTreeMap::new();
    // Small chunks: many of them, so every peer serves some.
    params.insert("chunk_bytes".to_string(), "40000".to_string());
    let opts = TestnetOptions {
        validators: 3,
        chain_id: CHAIN.into(),
        base_port: free_base_port(6).unwrap(),
        snapshot_interval: 10,
        snapshot_keep_recent: 3,
        snapshot_params: params,
        block_time: Duration::from_millis(300),
        genesis_keys: 30_000,
        store: StoreKind::Hdf5,
        statesnap_bin: PathBuf::from(env!("CARGO_BIN_EXE_statesnap")),
        ..TestnetOptions::default()
    };
    let mut net = Running(Testnet::init(&dir.path().join("net"), &opts).unwrap());
    for node in ["node0", "node1"] {
        net.0.start_node(node, &[]).unwrap();
    }
    // node2 is a validator that serves corrupted snapshot chunks.
    net.0
        .start_node("node2", &["--test-corrupt-chunks".to_string()])
        .unwrap();
    net.0.wait_for_height("node0", 2, SYNC_TIMEOUT).unwrap();

    // Load on node0 and node1 for the rest of the test.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let submitters: Vec<RpcSubmitter> = ["node0", "node1"]
            .iter()
            .map(|n| RpcSubmitter(net.0.rpc(n).unwrap()))
            .collect();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let cfg = LoadConfig::new(CHAIN, 20.0, Duration::from_secs(3600));
            run_load(&cfg, &submitters, &SystemClock::start(), &stop, |_| {})
        })
    };
    net.0.wait_for_height("node0", 24, SYNC_TIMEOUT).unwrap();

    // Every validator advertises the same snapshot for the same height and format.
    let lists: Vec<_> = ["node0", "node1", "node2"]
        .iter()
        .map(|n| advertised(&net.0, n))
        .collect();
    let mut compared = 0;
    for (key, hash) in &lists[0] {
        let others: Vec<_> = lists[1..].iter().filter_map(|l| l.get(key)).collect();
        if others.len() == 2 {
            assert!(others.iter().all(|h| *h == hash), "snapshot {key:?} differs: {lists:?}");
            compared += 1;
        }
    }
    assert!(compared >= 1, "no snapshot height common to all validators: {lists:?}");

    // A new node on LMDB joins the HDF5 validators by state sync.
    let on_lmdb = JoinOptions {
        store: Some(StoreKind::Lmdb),
        ..JoinOptions::default()
    };
    net.0.add_node("joiner", &on_lmdb).unwrap();
    net.0.start_node("joiner", &[]).unwrap();
    net.0.wait_for_sync("joiner", SYNC_TIMEOUT).unwrap();
    let restored_at = metric(&net.0, "joiner", "statesnap_restored_snapshot_height");
    assert!(restored_at >= 10.0, "the joiner restored a snapshot (at {restored_at})");
    let joiner_state = net.0.node("joiner").unwrap().statesnap_home.join("state");
    assert!(
        joiner_state.join("lmdb").join("data.mdb").is_file(),
        "the joiner's state is an LMDB home"
    );
    let status = net.0.rpc("joiner").unwrap().status().unwrap();
    assert!(
        status.earliest_block_height > 1,
        "the joiner did not replay from block 1 (its first block is {})",
        status.earliest_block_height
    );
    assert!(
        metric(&net.0, "joiner", "statesnap_rejected_senders_total") >= 1.0,
        "the corrupting validator was rejected as a sender"
    );
    // Its own state machine computes the validators' app hash…
    let (h, app_hash) = app_status(&net.0, "joiner");
    net.0.wait_for_height("node0", h + 1, SYNC_TIMEOUT).unwrap();
    let header = net.0.rpc("node0").unwrap().header(Some(h + 1)).unwrap();
    assert_eq!(hex::encode(header.app_hash), app_hash, "app hash after height {h}");
    // …and keeps following new blocks.
    net.0.wait_for_height("joiner", h + 5, SYNC_TIMEOUT).unwrap();

    // A node killed with SIGKILL in the middle of its restore.
    net.0.add_node("crasher", &on_lmdb).unwrap();
    net.0
        .start_node("crasher", &["--test-chunk-delay-ms".to_string(), "200".to_string()])
        .unwrap();
    let (applied, total) = poll("the crasher's restore to be under way", SYNC_TIMEOUT, || {
        let applied = metric(&net.0, "crasher", "statesnap_restore_chunks_applied");
        let total = metric(&net.0, "crasher", "statesnap_restore_chunks_total");
        (applied >= 1.0 && applied < total).then_some((applied, total))
    });
    net.0.kill_app("crasher").unwrap();
    let crasher_home = net.0.node("crasher").unwrap().statesnap_home.clone();
    assert!(
        !leftovers(&crasher_home).is_empty(),
        "killed after {applied} of {total} chunks, a staging home is left"
    );
    net.0.stop_node("crasher").unwrap();
    net.0.start_node("crasher", &[]).unwrap();
    net.0.wait_for_sync("crasher", SYNC_TIMEOUT).unwrap();
    assert!(metric(&net.0, "crasher", "statesnap_restored_snapshot_height") >= 10.0);
    assert_eq!(leftovers(&crasher_home), Vec::<String>::new(), "no staging data left");
    let (h, app_hash) = app_status(&net.0, "crasher");
    net.0.wait_for_height("node0", h + 1, SYNC_TIMEOUT).unwrap();
    let header = net.0.rpc("node0").unwrap().header(Some(h + 1)).unwrap();
    assert_eq!(hex::encode(header.app_hash), app_hash);

    // kill -9 of the synced LMDB node under load, again and again, at
    // different points of its block cycle: each restart resumes at a height
    // whose app hash is the validators' (a crash loses at most the block
    // being committed, which CometBFT replays) and catches up.
    for (round, after_ms) in [350u64, 1100, 60].into_iter().enumerate() {
        let before = app_status(&net.0, "crasher").0;
        std::thread::sleep(Duration::from_millis(after_ms));
        net.0.kill_app("crasher").unwrap();
        net.0.stop_node("crasher").unwrap();
        net.0.start_node("crasher", &[]).unwrap();
        let target = net.0.rpc("node0").unwrap().status().unwrap().latest_block_height;
        net.0.wait_for_height("crasher", target, SYNC_TIMEOUT).unwrap();
        let (h, app_hash) = app_status(&net.0, "crasher");
        assert!(h >= before, "round {round}: restarted at {h}, below {before}");
        net.0.wait_for_height("node0", h + 1, SYNC_TIMEOUT).unwrap();
        let header = net.0.rpc("node0").unwrap().header(Some(h + 1)).unwrap();
        assert_eq!(
            hex::encode(header.app_hash),
            app_hash,
            "round {round}: app hash after height {h}"
        );
    }
    assert!(
        !net.0
            .node("crasher")
            .unwrap()
            .statesnap_home
            .join("state")
            .join(statesnap::node::chain::WAL_FILE)
            .exists(),
        "an LMDB node keeps no write-ahead log"
    );

    stop.store(true, Ordering::SeqCst);
    let stats = load.join().unwrap().unwrap();
    assert!(stats.accepted > 50, "the load was applied: {stats:?}");
    assert!(
        metric(&net.0, "node0", "statesnap_txs_applied_total") > 50.0,
        "transactions reached blocks"
    );
}
