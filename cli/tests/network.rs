//! State sync on a real CometBFT 0.39 network on loopback: three validators
//! running `statesnap start` on HDF5 homes under load, one of them serving
//! corrupted chunks; new nodes on LMDB homes join by state sync (across
//! stores: the snapshot does not depend on the store), one of them killed
//! with SIGKILL in the middle of its restore and then, synced, killed again
//! and again under load. Needs cometbft (scripts/setup.sh installs it).

mod common;

use std::path::Path;
use std::time::Duration;

use common::net::{many_chunks, require_cometbft, Network};
use statesnap::store::StoreKind;
use statesnap_harness::testnet::{JoinOptions, TestnetOptions};

const CHAIN: &str = "e2e-chain";

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
    // node2 is a validator that serves corrupted snapshot chunks. A joiner
    // may pick a snapshot node2 has finished before the others: once it
    // rejects node2 no peer serves it, and CometBFT gives up on it only after
    // its fixed 2-minute chunk timeout, then tries the next best snapshot it
    // discovered at the start. Snapshots are kept 400 blocks (about 4.5
    // minutes at the 1.4 blocks/s seen here) so that one is still served.
    let opts = TestnetOptions {
        snapshot_keep_recent: 40,
        ..many_chunks(CHAIN, 30_000, StoreKind::Hdf5)
    };
    let mut net = Network::start_with(&opts, &[("node2", &["--test-corrupt-chunks"])]);

    // Load on node0 and node1 for the rest of the test.
    let load = net.start_load(CHAIN, &["node0", "node1"], 20.0);

    net.wait_for_height("node0", 24);

    // Every validator advertises the same snapshot for the same height and
    // format (each makes its snapshots in the background, on its own time).
    let validators = net.validators();
    let lists = net.poll("node2", "a snapshot height common to all validators", || {
        let lists: Vec<_> = validators.iter().map(|n| net.snapshots(n)).collect();
        let common = lists[0].keys().any(|k| lists[1..].iter().all(|l| l.contains_key(k)));
        common.then_some(lists)
    });
    for (key, hash) in &lists[0] {
        for (node, list) in validators.iter().zip(&lists).skip(1) {
            if let Some(other) = list.get(key) {
                assert_eq!(other, hash, "snapshot {key:?} differs on {node}: {lists:?}");
            }
        }
    }

    // A new node on LMDB joins the HDF5 validators by state sync.
    let on_lmdb = JoinOptions {
        store: Some(StoreKind::Lmdb),
        ..JoinOptions::default()
    };
    net.add_node("joiner", &on_lmdb).unwrap();
    net.start_node("joiner", &[]).unwrap();
    net.wait_for_sync("joiner");
    let restored_at = net.metric("joiner", "statesnap_restored_snapshot_height");
    assert!(restored_at >= 10.0, "the joiner restored a snapshot (at {restored_at})");
    let joiner_state = net.node("joiner").unwrap().statesnap_home.join("state");
    assert!(
        joiner_state.join("lmdb").join("data.mdb").is_file(),
        "the joiner's state is an LMDB home"
    );
    let status = net.rpc("joiner").status().unwrap();
    assert!(
        status.earliest_block_height > 1,
        "the joiner did not replay from block 1 (its first block is {})",
        status.earliest_block_height
    );
    assert!(
        net.metric("joiner", "statesnap_rejected_senders_total") >= 1.0,
        "the corrupting validator was rejected as a sender"
    );
    // Its own state machine computes the validators' app hash…
    net.assert_same_app_hash("joiner", "node0");
    // …and keeps following new blocks.
    let (h, _) = net.app_status("joiner");
    net.wait_for_height("joiner", h + 5);

    // A node killed with SIGKILL in the middle of its restore.
    net.add_node("crasher", &on_lmdb).unwrap();
    net.start_node("crasher", &["--test-chunk-delay-ms".to_string(), "200".to_string()])
        .unwrap();
    let (applied, total) = net.poll("crasher", "the crasher's restore to be under way", || {
        let applied = net.metric("crasher", "statesnap_restore_chunks_applied");
        let total = net.metric("crasher", "statesnap_restore_chunks_total");
        (applied >= 1.0 && applied < total).then_some((applied, total))
    });
    net.kill_app("crasher").unwrap();
    let crasher_home = net.node("crasher").unwrap().statesnap_home.clone();
    assert!(
        !leftovers(&crasher_home).is_empty(),
        "killed after {applied} of {total} chunks, a staging home is left"
    );
    net.stop_node("crasher").unwrap();
    net.start_node("crasher", &[]).unwrap();
    net.wait_for_sync("crasher");
    assert!(net.metric("crasher", "statesnap_restored_snapshot_height") >= 10.0);
    assert_eq!(leftovers(&crasher_home), Vec::<String>::new(), "no staging data left");
    net.assert_same_app_hash("crasher", "node0");

    // kill -9 of the synced LMDB node under load, again and again, at
    // different points of its block cycle: each restart resumes at a height
    // whose app hash is the validators' (a crash loses at most the block
    // being committed, which CometBFT replays) and catches up.
    for (round, after_ms) in [350u64, 1100, 60].into_iter().enumerate() {
        let before = net.app_status("crasher").0;
        // (Not a wait for anything: it moves the kill to another point of
        // the block cycle.)
        std::thread::sleep(Duration::from_millis(after_ms));
        net.kill_app("crasher").unwrap();
        net.stop_node("crasher").unwrap();
        net.start_node("crasher", &[]).unwrap();
        // Back at the validators' height (the app's, not only CometBFT's
        // block store): at least `before`.
        let target = net.caught_up("node0");
        net.wait_for_height("crasher", target);
        let (h, _) = net.app_status("crasher");
        assert!(h >= before, "round {round}: restarted at {h}, below {before}");
        net.assert_same_app_hash("crasher", "node0");
    }
    assert!(
        !net.node("crasher")
            .unwrap()
            .statesnap_home
            .join("state")
            .join(statesnap::node::chain::WAL_FILE)
            .exists(),
        "an LMDB node keeps no write-ahead log"
    );

    let stats = load.finish();
    assert!(stats.accepted > 50, "the load was applied: {stats:?}");
    assert!(
        net.metric("node0", "statesnap_txs_applied_total") > 50.0,
        "transactions reached blocks"
    );
}
