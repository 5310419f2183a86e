//! A plugin too large for a proposal, through governance on a real CometBFT
//! 0.38 network of four validators: proposed by hash, uploaded in pieces by
//! a key that is no validator's, checked and activated without a restart,
//! and shipped in two chunks to a node without it that joins by state sync.
//! An upload of other bytes is refused; an expired proposal's code leaves
//! state. Needs cometbft (scripts/setup.sh).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::gov::{self, gov_status, key_file, statesnap_joined as statesnap, vote, Propose};
use common::net::{metric, require_cometbft, Running};
use serde_json::Value;
use statesnap::node::NodeConfig;
use statesnap::protocol::account_key;
use statesnap::protocol::tx::{code, Action, Tx, TxBody, Upload};
use statesnap_harness::load::fetch_nonce;
use statesnap_harness::testnet::{free_base_port, JoinOptions, Testnet, TestnetOptions};

const CHAIN: &str = "gov-upload-e2e";
const TIMEOUT: Duration = Duration::from_secs(300);
const INTERVAL: u64 = 5;
/// The large plugin: gzip (format 2) with 17 MiB of incompressible padding.
const FORMAT: u32 = 2;

/// `statesnap gov propose --by-hash` from `node`'s validator, with `extra` options.
fn propose_by_hash(
    net: &Testnet,
    node: &str,
    wasm: &Path,
    format: u32,
    expires_after: u64,
    extra: &[&str],
) -> (bool, String) {
    let extra = [&["--by-hash"][..], extra].concat();
    let p = Propose {
        wasm,
        format,
        activation_delay: 6,
        expires_after,
        extra: &extra,
    };
    gov::propose(net, node, &p)
}

fn has_key(net: &Testnet, node: &str, key: &str) -> bool {
    net.rpc(node).unwrap().abci_query("/key", key.as_bytes()).unwrap().code == 0
}

#[test]
fn a_plugin_too_large_for_a_proposal_is_approved_by_hash_uploaded_and_shipped_to_a_new_node() {
    require_cometbft();
    let dir = tempfile::tempdir().unwrap();
    let opts = TestnetOptions {
        validators: 4,
        chain_id: CHAIN.into(),
        base_port: free_base_port(6).unwrap(),
        snapshot_interval: INTERVAL,
        snapshot_keep_recent: 3,
        snapshot_plugin: "zstd".into(),
        block_time: Duration::from_millis(300),
        genesis_keys: 2_000,
        statesnap_bin: PathBuf::from(env!("CARGO_BIN_EXE_statesnap")),
        ..TestnetOptions::default()
    };
    let mut net = Running(Testnet::init(&dir.path().join("net"), &opts).unwrap());
    net.0.start_all().unwrap();
    net.0.wait_for_height("node0", 2, TIMEOUT).unwrap();
    let validators = ["node0", "node1", "node2", "node3"];
    let pids: Vec<_> = validators.iter().map(|n| net.0.pids(n).unwrap()).collect();

    let export = |name: &str| -> Vec<u8> {
        let path = dir.path().join(format!("{name}.wasm"));
        let (ok, out) = statesnap(&["plugin", "export", name, "--out", path.to_str().unwrap()]);
        assert!(ok, "{out}");
        std::fs::read(path).unwrap()
    };
    let big = common::padded_plugin(&export("gzip"), 17 << 20);
    let big_file = dir.path().join("big.wasm");
    std::fs::write(&big_file, &big).unwrap();
    let big_sha = statesnap::plugin::sha256_hex(&big);

    // It cannot ride in a proposal: the CLI says so and points to --by-hash.
    let url0 = net.0.node("node0").unwrap().rpc_url();
    let (ok, out) = statesnap(&[
        "gov",
        "propose",
        "--plugin",
        big_file.to_str().unwrap(),
        "--format",
        "2",
        "--rpc",
        &url0,
        "--key",
        key_file(&net.0, "node0").to_str().unwrap(),
    ]);
    assert!(!ok && out.contains("--by-hash"), "{out}");

    // Proposal 1, by hash, without its bytes yet.
    let (ok, out) = propose_by_hash(&net.0, "node0", &big_file, FORMAT, 600, &["--no-upload"]);
    assert!(ok, "{out}");
    let p = gov_status(&net.0, "node1")["proposals"][0].clone();
    assert_eq!(
        (p["id"].as_u64(), p["sha256"].as_str()),
        (Some(1), Some(big_sha.as_str()))
    );
    let pieces = p["upload"]["pieces"].as_u64().unwrap();
    assert_eq!(pieces, (big.len() as u64).div_ceil(512 * 1024));

    // An upload of bytes that are not the approved piece is refused (sent
    // raw: the CLI compares the file with the proposal before it sends).
    let uploader = dir.path().join("uploader.json");
    account_key::write_new(&uploader, &account_key::generate()).unwrap();
    let key = account_key::read(&uploader).unwrap();
    let account = key.verifying_key().to_bytes();
    let rpc = net.0.rpc("node2").unwrap();
    let forged = Tx::sign(
        TxBody {
            chain_id: CHAIN.into(),
            account,
            nonce: fetch_nonce(&rpc, &account).unwrap(),
            action: Action::Upload(Upload {
                proposal: 1,
                index: 0,
                bytes: big[1..512 * 1024 + 1].to_vec(),
            }),
        },
        &key,
    )
    .unwrap();
    let r = rpc.broadcast_tx_sync(forged.bytes()).unwrap();
    assert_eq!(r.code, code::UPLOAD_MISMATCH, "{}", r.log);
    assert!(r.log.contains("not the approved"), "{}", r.log);
    let url2 = net.0.node("node2").unwrap().rpc_url();
    let other = dir.path().join("gzip.wasm");
    let upload = |file: &Path| {
        statesnap(&[
            "gov",
            "upload",
            "--proposal",
            "1",
            "--plugin",
            file.to_str().unwrap(),
            "--rpc",
            &url2,
            "--key",
            uploader.to_str().unwrap(),
        ])
    };
    let (ok, out) = upload(&other);
    assert!(!ok && out.contains("but this file is"), "{out}");

    // Three of four validators vote: it passes, but nothing is approved
    // until the code is complete.
    for (node, voter) in [("node0", "node0"), ("node1", "node1"), ("node3", "node2")] {
        let (ok, out) = vote(&net.0, node, &key_file(&net.0, voter), 1);
        assert!(ok, "{out}");
    }
    let status = gov_status(&net.0, "node3");
    assert_eq!(status["proposals"][0]["status"], "passed");
    assert!(status["formats"].as_array().unwrap().is_empty(), "{status}");

    // Proposal 2 (zstd, padded, as format 1) is uploaded whole but never
    // voted for: its code is in state until it expires.
    let small = common::padded_plugin(&export("zstd"), 600 << 10);
    let small_file = dir.path().join("small.wasm");
    std::fs::write(&small_file, &small).unwrap();
    let small_meta = format!("statesnap.plugins:{}", statesnap::plugin::sha256_hex(&small));
    let (ok, out) = propose_by_hash(&net.0, "node3", &small_file, 1, 8, &[]);
    assert!(ok, "{out}");
    assert!(has_key(&net.0, "node0", &small_meta), "proposal 2's code is in state");
    assert!(has_key(&net.0, "node0", &format!("{small_meta}:0")));

    // Anyone finishes proposal 1's upload: a key that is no validator's.
    let (ok, out) = upload(&big_file);
    assert!(ok, "{out}");
    assert!(out.contains(&format!("({pieces} of {pieces} missing pieces)")), "{out}");
    // Pieces travel several at a time: blocks take more than one.
    let heights: std::collections::BTreeSet<&str> = out
        .lines()
        .filter_map(|l| l.split(" at height ").nth(1)?.split(' ').next())
        .collect();
    assert!(
        !heights.is_empty() && (heights.len() as u64) < pieces,
        "{pieces} pieces in {} blocks: {out}",
        heights.len()
    );
    let status = gov_status(&net.0, "node1");
    let p = &status["proposals"][0];
    assert_eq!(p["upload"]["complete"], true);
    assert_eq!(p["name"], "gzip");
    let activation = p["activation_height"].as_u64().unwrap();
    assert_eq!(status["formats"][0]["sha256"], big_sha);

    // Every validator makes the new format from the code in state, no restart.
    let first = activation.div_ceil(INTERVAL) * INTERVAL;
    // (At or after the first interval: a job still running when the next
    // interval comes skips it, and old snapshots are pruned.)
    for node in validators {
        let started = std::time::Instant::now();
        loop {
            let q = net.0.rpc(node).unwrap().abci_query("/snapshots", b"").unwrap();
            let list: Vec<Value> = serde_json::from_slice(&q.value).unwrap();
            if list
                .iter()
                .any(|s| s["height"].as_u64() >= Some(first) && s["format"] == FORMAT)
            {
                break;
            }
            if started.elapsed() > TIMEOUT {
                let log = std::fs::read_to_string(&net.0.node(node).unwrap().statesnap_log).unwrap_or_default();
                let tail: Vec<_> = log
                    .lines()
                    .rev()
                    .take(40)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                panic!(
                    "timed out waiting for {node}'s format {FORMAT} snapshot at {first} or later; it has {list:?}; its log ends:\n{}",
                    tail.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let now: Vec<_> = validators.iter().map(|n| net.0.pids(n).unwrap()).collect();
    assert_eq!(pids, now, "no validator restarted");

    // Proposal 2 expired: its code is gone from every node's state.
    let expires = gov_status(&net.0, "node0")["proposals"][1]["expires_height"]
        .as_u64()
        .unwrap();
    net.0.wait_for_height("node0", expires + 2, TIMEOUT).unwrap();
    for node in validators {
        assert!(
            !has_key(&net.0, node, &small_meta),
            "{node} still holds proposal 2's code"
        );
        assert!(!has_key(&net.0, node, &format!("{small_meta}:0")));
    }
    assert_eq!(gov_status(&net.0, "node2")["proposals"][1]["status"], "expired");

    // A node with no plugins joins by state sync: the plugin arrives in the
    // snapshot's first two chunks.
    net.0.add_node("joiner", &JoinOptions::default()).unwrap();
    let home = net.0.node("joiner").unwrap().statesnap_home.clone();
    let mut config = NodeConfig::load(&home).unwrap();
    config.snapshot_plugin = String::new();
    config.write(&home).unwrap();
    net.0
        .start_node("joiner", &["--no-built-in-plugins".to_string()])
        .unwrap();
    net.0.wait_for_sync("joiner", TIMEOUT).unwrap();
    assert!(metric(&net.0, "joiner", "statesnap_restored_snapshot_height") >= first as f64);
    assert_eq!(metric(&net.0, "joiner", "statesnap_shipped_plugins_loaded_total"), 1.0);
    let log = std::fs::read_to_string(&net.0.node("joiner").unwrap().statesnap_log).unwrap();
    assert!(log.contains("plugin_chunks=2"), "the joiner's log: {log}");
    let q = net.0.rpc("joiner").unwrap().abci_query("/status", b"").unwrap();
    let v: Value = serde_json::from_slice(&q.value).unwrap();
    let h = v["height"].as_u64().unwrap();
    net.0.wait_for_height("node0", h + 1, TIMEOUT).unwrap();
    let header = net.0.rpc("node0").unwrap().header(Some(h + 1)).unwrap();
    assert_eq!(hex::encode(header.app_hash), v["app_hash"].as_str().unwrap());
}
