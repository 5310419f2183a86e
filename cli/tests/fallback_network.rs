//! When no snapshot comes: on a real CometBFT 0.38.26 network (the one
//! network test left on 0.38; the others run 0.39.3) whose validator
//! makes no snapshots, `statesnap testnet join --block-sync-after` sees the
//! joining node find none (CometBFT alone would look forever,
//! cometbft#3878), restarts it with state sync off, and the node joins by
//! block sync from genesis; `statesnap join-fallback`, the operator's
//! command, does the same beside a node it does not start. Needs cometbft
//! (scripts/setup.sh installs it).

mod common;

use std::process::Command;
use std::time::Duration;

use common::net::{options, require_cometbft, Network};
use statesnap::store::StoreKind;
use statesnap_harness::testnet::{CometBftRelease, JoinOptions, NodeInfo, TestnetOptions};

#[test]
fn a_node_that_finds_no_snapshot_joins_by_block_sync() {
    require_cometbft();
    let opts = TestnetOptions {
        snapshot_interval: 0, // snapshots turned off
        block_time: Duration::from_millis(200),
        genesis_keys: 2_000,
        store: StoreKind::Lmdb,
        // The one network test on CometBFT 0.38.26 (the others run 0.39.3):
        // join-fallback exists for 0.38's state sync that never gives up.
        cometbft: CometBftRelease::V038,
        ..options("no-snapshots", 1)
    };
    let mut net = Network::start(&opts);
    net.wait_for_height("node0", 10);

    let out = Command::new(env!("CARGO_BIN_EXE_statesnap"))
        .args([
            "testnet",
            "join",
            "--name",
            "joiner",
            "--block-sync-after",
            "15s",
            "--dir",
        ])
        .arg(net.dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("restarted with state sync off"),
        "the join fell back to block sync: {stdout}"
    );

    // `testnet join` added the node: read testnet.json again.
    net.reload();
    assert!(
        !net.node("joiner").unwrap().state_sync,
        "testnet.json says block sync now"
    );
    let config = std::fs::read_to_string(net.node("joiner").unwrap().cometbft_home.join("config/config.toml")).unwrap();
    let doc: toml::Table = config.parse().unwrap();
    assert_eq!(doc["statesync"]["enable"].as_bool(), Some(false));
    let target = net.caught_up("node0");
    net.wait_for_height("joiner", target);
    let status = net.rpc("joiner").status().unwrap();
    assert_eq!(status.earliest_block_height, 1, "it replayed from genesis");
    let restored = net.metric("joiner", "statesnap_restored_snapshot_height");
    assert_eq!(restored, 0.0, "no snapshot was restored");
    // Its state machine computes the validator's app hash.
    net.assert_same_app_hash("joiner", "node0");

    // The operator's command, beside a node that has blocks: nothing to do.
    let joiner = net.node("joiner").unwrap().clone();
    let fallback = |node: &NodeInfo, then: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_statesnap"))
            .args(["join-fallback", "--after", "10s", "--then", then, "--cometbft-home"])
            .arg(&node.cometbft_home)
            .args(["--rpc", &node.rpc_url(), "--metrics", &node.metrics_url()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let said = fallback(&joiner, "false");
    assert!(said.contains("nothing to do"), "{said}");

    // And beside a new node that finds no snapshot: it turns state sync off
    // and runs the restart command.
    let operated = net.add_node("operated", &JoinOptions::default()).unwrap().clone();
    net.start_node("operated", &[]).unwrap();
    let marker = net.scratch().join("restarted");
    let said = fallback(&operated, &format!("touch {}", marker.display()));
    assert!(said.contains("set [statesync] enable = false"), "{said}");
    assert!(marker.exists(), "the restart command ran");
    net.stop_node("operated").unwrap();
    net.start_node("operated", &[]).unwrap();
    let target = net.caught_up("node0");
    net.wait_for_height("operated", target);
    assert_eq!(net.rpc("operated").status().unwrap().earliest_block_height, 1);
    net.assert_same_app_hash("operated", "node0");
}
