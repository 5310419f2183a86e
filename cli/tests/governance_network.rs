//! A live format upgrade on a real CometBFT 0.39 network of four validators:
//! proposals and votes through the `statesnap gov` CLI, activation without a
//! restart, and a node whose binary has no built-in plugins joining by state
//! sync from a self-describing snapshot. Needs cometbft (scripts/setup.sh).

mod common;

use std::path::Path;

use common::gov::{self, gov_status, key_file, statesnap, vote, Propose, INTERVAL};
use common::net::{require_cometbft, Network};
use statesnap::protocol::account_key;
use statesnap::protocol::tx::{code, Action, Proposal, Tx, TxBody};
use statesnap_harness::load::fetch_nonce;
use statesnap_harness::testnet::JoinOptions;

const CHAIN: &str = "gov-e2e";
/// The format the validators start with (configured) and the one they vote in.
const FORMAT_A: u32 = 1;
const PLUGIN_B: &str = "brotli";
const FORMAT_B: u32 = 3;
const ACTIVATION_DELAY: u64 = 8;
/// Blocks until proposal 2 expires. Its two votes, each a CLI run that
/// waits first for its node to have the proposal and then for its own
/// block, must land before then: 6 blocks (1.8 s at 300 ms) left little
/// room on a loaded machine. 20 cost at most a few blocks of waiting for
/// the expiry, after the wait for format B's snapshots.
const EXPIRES_2: u64 = 20;

fn propose(net: &Network, node: &str, wasm: &Path, format: u32, expires_after: u64) -> (bool, String) {
    let p = Propose {
        wasm,
        format,
        activation_delay: ACTIVATION_DELAY,
        expires_after,
        extra: &[],
    };
    gov::propose(net, node, &p)
}

#[test]
fn validators_vote_in_a_new_format_and_a_node_without_it_syncs_from_it() {
    require_cometbft();
    let mut net = gov::four_validators(CHAIN, 4, 5_000);
    let dir = net.scratch().to_path_buf();

    // Plugin B's wasm, as an operator gets it.
    let wasm = dir.join(format!("{PLUGIN_B}.wasm"));
    let (ok, out, err) = statesnap(&["plugin", "export", PLUGIN_B, "--out", wasm.to_str().unwrap()]);
    assert!(ok, "{out}{err}");

    // A plugin failing conformance is refused at proposal time by the nodes
    // (sent raw: the CLI would refuse it before sending).
    let nondet = std::fs::read(common::testplugin("nondet")).unwrap();
    let rpc = net.rpc("node1");
    let v1 = account_key::read(&key_file(&net, "node1")).unwrap();
    let account = v1.verifying_key().to_bytes();
    let bad = Tx::sign(
        TxBody {
            chain_id: CHAIN.into(),
            account,
            nonce: fetch_nonce(&rpc, &account).unwrap(),
            action: Action::Propose(Proposal::new(7, &nondet, 5, 50)),
        },
        &v1,
    )
    .unwrap();
    let r = rpc.broadcast_tx_sync(bad.bytes()).unwrap();
    assert_eq!(r.code, code::PLUGIN_REFUSED, "{}", r.log);
    assert!(r.log.contains("conformance"), "{}", r.log);
    let nondet_file = dir.join("nondet.wasm");
    std::fs::write(&nondet_file, &nondet).unwrap();
    let (ok, out) = propose(&net, "node1", &nondet_file, 7, 50);
    assert!(!ok && out.contains("would be refused"), "{out}");

    // Proposal 1: plugin B as format B. Three of four validators vote.
    let (ok, out) = propose(&net, "node0", &wasm, FORMAT_B, 400);
    assert!(ok, "{out}");
    let status = gov_status(&net, "node3");
    assert_eq!(status["proposals"][0]["id"], 1);
    assert_eq!(status["proposals"][0]["status"], "voting");

    // A vote signed by a key that is not a validator's is refused.
    let outsider = dir.join("outsider.json");
    account_key::write_new(&outsider, &account_key::generate()).unwrap();
    let (ok, out) = vote(&net, "node2", &outsider, 1);
    assert!(!ok && out.contains("not a validator"), "{out}");

    for (node, voter) in [("node0", "node0"), ("node2", "node1")] {
        let (ok, out) = vote(&net, node, &key_file(&net, voter), 1);
        assert!(ok, "{out}");
    }
    let status = gov_status(&net, "node1");
    assert_eq!(status["proposals"][0]["status"], "voting");
    assert_eq!(status["proposals"][0]["yes_power"], 20);
    let (ok, out) = vote(&net, "node3", &key_file(&net, "node2"), 1);
    assert!(ok && out.contains("passed"), "{out}");
    let status = gov_status(&net, "node0");
    let activation = status["proposals"][0]["activation_height"].as_u64().unwrap();
    assert_eq!(status["proposals"][0]["yes_power"], 30);
    assert_eq!(status["formats"][0]["format"], FORMAT_B);

    // Proposal 2 (format A's zstd, approved for format 1) gets two of four
    // votes and expires: it never activates.
    let zstd = dir.join("zstd.wasm");
    assert!(statesnap(&["plugin", "export", "zstd", "--out", zstd.to_str().unwrap()]).0);
    let (ok, out) = propose(&net, "node3", &zstd, FORMAT_A, EXPIRES_2);
    assert!(ok, "{out}");
    for voter in ["node3", "node1"] {
        let (ok, out) = vote(&net, voter, &key_file(&net, voter), 2);
        assert!(ok, "{out}");
    }

    // From the activation height every validator makes format B (and, during
    // the overlap, still format A), in the same processes.
    let first_b = activation.div_ceil(INTERVAL) * INTERVAL;
    for node in &net.validators() {
        // Both formats of that height (format A is made second, in the same job).
        let list = net.poll(
            node,
            &format!("{node}'s snapshots of formats {FORMAT_B} and {FORMAT_A} at {first_b}"),
            || {
                let list = net.advertised(node);
                (list.contains(&(first_b, FORMAT_B)) && list.contains(&(first_b, FORMAT_A))).then_some(list)
            },
        );
        assert!(
            !list.iter().any(|&(h, f)| f == FORMAT_B && h < activation),
            "{node} made format {FORMAT_B} before activation: {list:?}"
        );
        assert_eq!(net.metric(node, "statesnap_snapshot_last_format"), f64::from(FORMAT_B));
    }
    net.assert_no_validator_restarted();

    // Proposal 2 expired with 20 of 40: a late vote is refused; no format 1
    // approval. (CheckTx judges at the height after the committed one.)
    let status = gov_status(&net, "node0");
    assert_eq!(status["proposals"][1]["yes_power"], 20);
    let expires = status["proposals"][1]["expires_height"].as_u64().unwrap();
    net.wait_for_height("node0", expires);
    let (ok, out) = vote(&net, "node0", &key_file(&net, "node0"), 2);
    assert!(!ok && out.contains("expired"), "{out}");
    net.wait_for_height("node2", expires + 1);
    let status = gov_status(&net, "node2");
    assert_eq!(status["proposals"][1]["status"], "expired");
    assert_eq!(status["formats"].as_array().unwrap().len(), 1);

    // A node whose binary has no built-in plugins (and no configured
    // format) joins by state sync from a format-B snapshot.
    gov::join_without_plugins(&mut net, "joiner", &JoinOptions::default());
    net.wait_for_sync("joiner");
    let restored = net.metric("joiner", "statesnap_restored_snapshot_height");
    assert!(restored >= first_b as f64, "restored at {restored}");
    assert_eq!(net.metric("joiner", "statesnap_shipped_plugins_loaded_total"), 1.0);
    // It follows the chain with the validators' app hash, and makes format B
    // snapshots itself with the code from state.
    net.assert_same_app_hash("joiner", "node0");
    net.poll("joiner", "the joiner's own format B snapshot", || {
        net.advertised("joiner")
            .iter()
            .any(|&(_, f)| f == FORMAT_B)
            .then_some(())
    });

    // A hostile peer: node3 now advertises its format-B snapshots with forged
    // approvals (a forged proof, the proof for another format number, a
    // chunk 0 that is not the approved plugin, one per height). A node with
    // no plugins that can only reach node3 refuses each before running anything.
    net.poll("node3", "three format-B snapshot heights on node3", || {
        let heights = net.advertised("node3").iter().filter(|&&(_, f)| f == FORMAT_B).count();
        (heights >= 3).then_some(())
    });
    net.stop_node("node3").unwrap();
    net.start_node("node3", &["--test-forge-approvals".to_string()])
        .unwrap();
    let only_node3 = JoinOptions {
        peers: vec!["node3".into()],
        ..JoinOptions::default()
    };
    gov::join_without_plugins(&mut net, "victim", &only_node3);
    // (The victim counts a refusal before it logs why: wait for both.)
    let reasons = [
        "it is forged or from another state",
        "it does not approve this snapshot's format",
        "chunk 0 must be the shipped plugin",
    ];
    net.poll("victim", "the victim to refuse three forged snapshots", || {
        let log = net.log("victim");
        (net.metric("victim", "statesnap_refused_plugins_total") >= 3.0 && reasons.iter().all(|r| log.contains(r)))
            .then_some(())
    });
    assert_eq!(net.metric("victim", "statesnap_shipped_plugins_loaded_total"), 0.0);
    assert_eq!(net.metric("victim", "statesnap_plugin_fuel_used_total"), 0.0);
    let restored = net.metric("victim", "statesnap_restored_snapshot_height");
    assert!(
        restored.is_nan() || restored == 0.0,
        "the victim restored height {restored}"
    );
}
