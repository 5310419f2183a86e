//! When no snapshot comes: on a real CometBFT 0.38 network whose validator
//! makes no snapshots, `statesnap testnet join --block-sync-after` sees the
//! joining node find none (CometBFT alone would look forever,
//! cometbft#3878), restarts it with state sync off, and the node joins by
//! block sync from genesis; `statesnap join-fallback`, the operator's
//! command, does the same beside a node it does not start. Needs cometbft
//! (scripts/setup.sh installs it).

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::net::{assert_same_app_hash, metric, require_cometbft};
use statesnap::store::StoreKind;
use statesnap_harness::testnet::{free_base_port, JoinOptions, Testnet, TestnetOptions};

const TIMEOUT: Duration = Duration::from_secs(240);

/// Stops the network (reopened: `testnet join` added a node) when the
/// test ends, passing or not.
struct Running(PathBuf);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(net) = Testnet::open(&self.0) {
            let _ = net.stop_all();
        }
    }
}

#[test]
fn a_node_that_finds_no_snapshot_joins_by_block_sync() {
    require_cometbft();
    let dir = tempfile::tempdir().unwrap();
    let net_dir = dir.path().join("net");
    let opts = TestnetOptions {
        validators: 1,
        chain_id: "no-snapshots".into(),
        base_port: free_base_port(3).unwrap(),
        snapshot_interval: 0, // snapshots turned off
        block_time: Duration::from_millis(200),
        genesis_keys: 2_000,
        store: StoreKind::Lmdb,
        statesnap_bin: PathBuf::from(env!("CARGO_BIN_EXE_statesnap")),
        ..TestnetOptions::default()
    };
    let net = Testnet::init(&net_dir, &opts).unwrap();
    let _running = Running(net_dir.clone());
    net.start_node("node0", &[]).unwrap();
    net.wait_for_height("node0", 10, TIMEOUT).unwrap();

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
        .arg(&net_dir)
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

    let net = Testnet::open(&net_dir).unwrap();
    assert!(
        !net.node("joiner").unwrap().state_sync,
        "testnet.json says block sync now"
    );
    let config = std::fs::read_to_string(net.node("joiner").unwrap().cometbft_home.join("config/config.toml")).unwrap();
    let doc: toml::Table = config.parse().unwrap();
    assert_eq!(doc["statesync"]["enable"].as_bool(), Some(false));
    let target = net.rpc("node0").unwrap().status().unwrap().latest_block_height;
    net.wait_for_height("joiner", target, TIMEOUT).unwrap();
    let status = net.rpc("joiner").unwrap().status().unwrap();
    assert_eq!(status.earliest_block_height, 1, "it replayed from genesis");
    let restored = metric(&net, "joiner", "statesnap_restored_snapshot_height");
    assert_eq!(restored, 0.0, "no snapshot was restored");
    // Its state machine computes the validator's app hash.
    assert_same_app_hash(&net, "joiner", "node0", TIMEOUT);

    // The operator's command, beside a node that has blocks: nothing to do.
    let joiner = net.node("joiner").unwrap().clone();
    let fallback = |node: &statesnap_harness::testnet::NodeInfo, then: &str| {
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
    let mut net = net;
    let operated = net.add_node("operated", &JoinOptions::default()).unwrap().clone();
    net.start_node("operated", &[]).unwrap();
    let marker = dir.path().join("restarted");
    let said = fallback(&operated, &format!("touch {}", marker.display()));
    assert!(said.contains("set [statesync] enable = false"), "{said}");
    assert!(marker.exists(), "the restart command ran");
    net.stop_node("operated").unwrap();
    net.start_node("operated", &[]).unwrap();
    let target = net.rpc("node0").unwrap().status().unwrap().latest_block_height;
    net.wait_for_height("operated", target, TIMEOUT).unwrap();
    assert_eq!(net.rpc("operated").unwrap().status().unwrap().earliest_block_height, 1);
    assert_same_app_hash(&net, "operated", "node0", TIMEOUT);
}
