//! Xian's own state sync (format 1) passes through `statesnap proxy`, and
//! `statesnap tx load --xian` loads a Xian network.
//!
//! Two Xian validators run behind proxies that take no statesnap snapshot
//! (interval 0), under `statesnap tx load --xian DIR` (signed transfers
//! from senders the founder funds, each to a new account). Xian's operator
//! command `xian-state-snapshot export` makes a format-1 snapshot on
//! validator 0, which its proxy lists (merged with its own, empty, list).
//! A new node, behind its own proxy, joins by state sync: the proxy passes
//! the format-1 offer and chunks on to its xian-abci, which imports the
//! archive; the node catches up with the validators' app hash, holds the
//! load's transfers, and its proxy restored nothing of its own.
//!
//! Needs the tools of `scripts/install-xian.sh` (`scripts/setup.sh` runs it)
//! and root; fails, saying so, without them.

mod common;

use std::time::Instant;

use common::xian::{assert_app_hash_matches, metric, require_xian, short_tempdir, wait, Guard};
use sha2::{Digest, Sha256};
use statesnap_harness::testnet::free_base_port;
use statesnap_harness::xian::{ProxyOptions, XianNet, XianNetOptions};

#[test]
fn a_node_behind_a_proxy_joins_by_xians_own_format_1_under_a_cli_load() {
    require_xian();
    let started = Instant::now();
    let tmp = short_tempdir("xf");
    let opts = XianNetOptions {
        validators: 2,
        chain_id: "xian-format-1".into(),
        base_port: free_base_port(4).unwrap(),
        block_time_ms: 300,
        genesis_keys: 2_000,
        statesnap: Some(ProxyOptions {
            statesnap_bin: env!("CARGO_BIN_EXE_statesnap").into(),
            snapshot_interval: 0,
            snapshot_keep_recent: 2,
            extra_args: Vec::new(),
            node_args: Vec::new(),
            without_proxy: Vec::new(),
        }),
        ..XianNetOptions::default()
    };
    let mut net = XianNet::init(&tmp.path().join("net"), &opts).unwrap();
    let _guard = Guard(Some(tmp), net.dir().to_path_buf());
    net.start().unwrap();

    // The CLI's Xian load: 4 senders at 20 transfers a second for 8 s.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_statesnap"))
        .args(["tx", "load", "--xian"])
        .arg(net.dir())
        .args(["--rate", "20", "--duration", "8s", "--accounts", "4", "--seed", "7"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tx load --xian failed:\n{stderr}");
    let stats: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    let accepted = stats["accepted"].as_u64().unwrap();
    assert_eq!(stats["funded_senders"], 4, "{stats}");
    assert!(
        accepted >= 100,
        "most of the 160 transfers were accepted: {stats}\n{stderr}"
    );
    assert!(stderr.contains("load: "), "progress lines on stderr:\n{stderr}");

    // Xian's own snapshot, by its operator command on validator 0 (run
    // again if a block committed while it read: Xian's exporter refuses then).
    let exported = net.export_state_snapshot(0).unwrap().export.height;
    // A node behind its own proxy joins by Xian's format 1.
    let joiner = net.add_node(true).unwrap();
    net.start_node(joiner).unwrap();
    let node = net.node(joiner).clone();
    let synced = wait("the joiner to catch up", &net, joiner, || {
        let s = node.rpc().status().ok()?;
        (!s.catching_up && s.latest_block_height > exported).then_some(s.latest_block_height)
    });
    let status = node.rpc().status().unwrap();
    assert_eq!(
        status.earliest_block_height,
        exported + 1,
        "the joiner restored the format-1 snapshot of height {exported}\n{}",
        node.log_tails()
    );
    assert_eq!(
        metric(&net, joiner, "statesnap_restored_snapshot_height"),
        0.0,
        "the joiner's proxy restored nothing itself"
    );
    let proxy_log = std::fs::read_to_string(node.proxy_log()).unwrap();
    assert!(
        !proxy_log.contains("the restored home is in place"),
        "the joiner's proxy did not swap a home in:\n{}",
        node.log_tails()
    );
    assert_app_hash_matches(&net, joiner, 0, synced);

    // The load's first transfer of sender 0 is in the joiner's state.
    let recipient = hex::encode(Sha256::digest(b"statesnap-xian-load-7-to-0-1"));
    assert_eq!(net.balance(joiner, &recipient).unwrap(), "1");
    eprintln!(
        "passed after {:?} ({accepted} transfers, format-1 snapshot of height {exported})",
        started.elapsed()
    );
}
