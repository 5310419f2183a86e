//! A plugin too large for a proposal, through governance on a real CometBFT
//! 0.38 network of four validators: proposed by hash, uploaded in pieces by
//! a key that is no validator's, checked and activated without a restart,
//! and shipped in two chunks to a node without it that joins by state sync.
//! An upload of other bytes is refused; an expired proposal's code leaves
//! state. Needs cometbft (scripts/setup.sh).

mod common;

use std::path::Path;

use common::gov::{self, gov_status, key_file, statesnap_joined as statesnap, vote, Propose, INTERVAL};
use common::net::{require_cometbft, Network};
use statesnap::protocol::account_key;
use statesnap::protocol::tx::{code, Action, Tx, TxBody, Upload};
use statesnap_harness::load::fetch_nonce;
use statesnap_harness::testnet::JoinOptions;

const CHAIN: &str = "gov-upload-e2e";
/// The large plugin: gzip (format 2) with 17 MiB of incompressible padding.
const FORMAT: u32 = 2;
/// Blocks until proposal 2 expires. Its two pieces must be uploaded, and
/// node0 read, before then: 30 blocks (9 s at 300 ms) leave room on a
/// loaded machine; the test waits for the expiry only after proposal 1's
/// upload and activation, which take longer.
const EXPIRES_2: u64 = 30;

/// `statesnap gov propose --by-hash` from `node`'s validator, with `extra` options.
fn propose_by_hash(
    net: &Network,
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

/// Whether `node`'s state holds `key`, and the height it answered at.
fn holds(net: &Network, node: &str, key: &str) -> (bool, u64) {
    let q = net.query(node, "/key", key.as_bytes());
    (q.code == 0, q.height)
}

#[test]
fn a_plugin_too_large_for_a_proposal_is_approved_by_hash_uploaded_and_shipped_to_a_new_node() {
    require_cometbft();
    let mut net = gov::four_validators(CHAIN, 3, 2_000);
    let dir = net.scratch().to_path_buf();

    let export = |name: &str| -> Vec<u8> {
        let path = dir.join(format!("{name}.wasm"));
        let (ok, out) = statesnap(&["plugin", "export", name, "--out", path.to_str().unwrap()]);
        assert!(ok, "{out}");
        std::fs::read(path).unwrap()
    };
    let big = common::padded_plugin(&export("gzip"), 17 << 20);
    let big_file = dir.join("big.wasm");
    std::fs::write(&big_file, &big).unwrap();
    let big_sha = statesnap::plugin::sha256_hex(&big);

    // It cannot ride in a proposal: the CLI says so and points to --by-hash.
    let url0 = net.node("node0").unwrap().rpc_url();
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
        key_file(&net, "node0").to_str().unwrap(),
    ]);
    assert!(!ok && out.contains("--by-hash"), "{out}");

    // Proposal 1, by hash, without its bytes yet.
    let (ok, out) = propose_by_hash(&net, "node0", &big_file, FORMAT, 600, &["--no-upload"]);
    assert!(ok, "{out}");
    let p = gov_status(&net, "node1")["proposals"][0].clone();
    assert_eq!(
        (p["id"].as_u64(), p["sha256"].as_str()),
        (Some(1), Some(big_sha.as_str()))
    );
    let pieces = p["upload"]["pieces"].as_u64().unwrap();
    assert_eq!(pieces, (big.len() as u64).div_ceil(512 * 1024));

    // An upload of bytes that are not the approved piece is refused (sent
    // raw: the CLI compares the file with the proposal before it sends).
    let uploader = dir.join("uploader.json");
    account_key::write_new(&uploader, &account_key::generate()).unwrap();
    let key = account_key::read(&uploader).unwrap();
    let account = key.verifying_key().to_bytes();
    let rpc = net.rpc("node2");
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
    let (ok, out) = gov::upload(&net, "node2", 1, &dir.join("gzip.wasm"), &uploader);
    assert!(!ok && out.contains("but this file is"), "{out}");

    // Three of four validators vote: it passes, but nothing is approved
    // until the code is complete.
    for (node, voter) in [("node0", "node0"), ("node1", "node1"), ("node3", "node2")] {
        let (ok, out) = vote(&net, node, &key_file(&net, voter), 1);
        assert!(ok, "{out}");
    }
    let status = gov_status(&net, "node3");
    assert_eq!(status["proposals"][0]["status"], "passed");
    assert!(status["formats"].as_array().unwrap().is_empty(), "{status}");

    // Proposal 2 (zstd, padded, as format 1) is uploaded whole but never
    // voted for: its code is in state until it expires (swept at the end
    // of the block after its expiry height).
    let small = common::padded_plugin(&export("zstd"), 600 << 10);
    let small_file = dir.join("small.wasm");
    std::fs::write(&small_file, &small).unwrap();
    let small_meta = format!("statesnap.plugins:{}", statesnap::plugin::sha256_hex(&small));
    let small_keys = [small_meta.clone(), format!("{small_meta}:0")];
    let (ok, out) = propose_by_hash(&net, "node3", &small_file, 1, EXPIRES_2, &[]);
    assert!(ok, "{out}");
    let expires = gov_status(&net, "node0")["proposals"][1]["expires_height"]
        .as_u64()
        .unwrap();
    for key in &small_keys {
        let (held, at) = holds(&net, "node0", key);
        assert!(
            at <= expires,
            "node0 answered at height {at}, after proposal 2 expired at {expires}: the machine is too slow for EXPIRES_2"
        );
        assert!(held, "{key} is in node0's state at height {at}");
    }

    // Anyone finishes proposal 1's upload: a key that is no validator's.
    let (ok, out) = gov::upload(&net, "node2", 1, &big_file, &uploader);
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
    let status = gov_status(&net, "node1");
    let p = &status["proposals"][0];
    assert_eq!(p["upload"]["complete"], true);
    assert_eq!(p["name"], "gzip");
    let activation = p["activation_height"].as_u64().unwrap();
    assert_eq!(status["formats"][0]["sha256"], big_sha);

    // Every validator makes the new format from the code in state, no restart.
    let first = activation.div_ceil(INTERVAL) * INTERVAL;
    // (At or after the first interval: a job still running when the next
    // interval comes skips it, and old snapshots are pruned.)
    for node in &net.validators() {
        net.poll(
            node,
            &format!("{node}'s format {FORMAT} snapshot at {first} or later"),
            || {
                net.advertised(node)
                    .iter()
                    .any(|&(h, f)| h >= first && f == FORMAT)
                    .then_some(())
            },
        );
    }
    net.assert_no_validator_restarted();

    // Proposal 2 expired: its code is gone from every node's state.
    net.wait_for_height("node0", expires + 1);
    for node in &net.validators() {
        for key in &small_keys {
            assert!(!holds(&net, node, key).0, "{node} still holds {key}");
        }
    }
    assert_eq!(gov_status(&net, "node2")["proposals"][1]["status"], "expired");

    // A node with no plugins joins by state sync: the plugin arrives in the
    // snapshot's first two chunks.
    gov::join_without_plugins(&mut net, "joiner", &JoinOptions::default());
    net.wait_for_sync("joiner");
    assert!(net.metric("joiner", "statesnap_restored_snapshot_height") >= first as f64);
    assert_eq!(net.metric("joiner", "statesnap_shipped_plugins_loaded_total"), 1.0);
    let log = net.log("joiner");
    assert!(log.contains("plugin_chunks=2"), "the joiner's log: {log}");
    net.assert_same_app_hash("joiner", "node0");
}
