//! A live format upgrade on a real CometBFT 0.38 network of four validators:
//! proposals and votes through the `statesnap gov` CLI, activation without a
//! restart, and a node whose binary has no built-in plugins joining by state
//! sync from a self-describing snapshot. Needs cometbft (scripts/setup.sh).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::gov::{self, advertised, gov_status, key_file, statesnap, vote, Propose};
use common::net::{metric, require_cometbft, Running};
use serde_json::Value;
use statesnap::node::NodeConfig;
use statesnap::protocol::account_key;
use statesnap::protocol::tx::{code, Action, Proposal, Tx, TxBody};
use statesnap_harness::load::fetch_nonce;
use statesnap_harness::testnet::{free_base_port, JoinOptions, Testnet, TestnetOptions};

const CHAIN: &str = "gov-e2e";
const TIMEOUT: Duration = Duration::from_secs(240);
/// The format the validators start with (configured) and the one they vote in.
const FORMAT_A: u32 = 1;
const PLUGIN_B: &str = "brotli";
const FORMAT_B: u32 = 3;
const INTERVAL: u64 = 5;
const ACTIVATION_DELAY: u64 = 8;

fn propose(net: &Testnet, node: &str, wasm: &Path, format: u32, expires_after: u64) -> (bool, String) {
    let p = Propose {
        wasm,
        format,
        activation_delay: ACTIVATION_DELAY,
        expires_after,
        extra: &[],
    };
    gov::propose(net, node, &p)
}

fn poll<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    common::net::poll(what, TIMEOUT, f)
}

#[test]
fn validators_vote_in_a_new_format_and_a_node_without_it_syncs_from_it() {
    require_cometbft();
    let dir = tempfile::tempdir().unwrap();
    let opts = TestnetOptions {
        validators: 4,
        chain_id: CHAIN.into(),
        base_port: free_base_port(6).unwrap(),
        snapshot_interval: INTERVAL,
        snapshot_keep_recent: 4,
        snapshot_plugin: "zstd".into(),
        block_time: Duration::from_millis(300),
        genesis_keys: 5_000,
        statesnap_bin: PathBuf::from(env!("CARGO_BIN_EXE_statesnap")),
        ..TestnetOptions::default()
    };
    let mut net = Running(Testnet::init(&dir.path().join("net"), &opts).unwrap());
    net.0.start_all().unwrap();
    net.0.wait_for_height("node0", 2, TIMEOUT).unwrap();
    let validators = ["node0", "node1", "node2", "node3"];
    let pids: Vec<_> = validators.iter().map(|n| net.0.pids(n).unwrap()).collect();
    assert!(pids.iter().all(|(c, s)| c.is_some() && s.is_some()), "{pids:?}");

    // Plugin B's wasm, as an operator gets it.
    let wasm = dir.path().join(format!("{PLUGIN_B}.wasm"));
    let (ok, out, err) = statesnap(&["plugin", "export", PLUGIN_B, "--out", wasm.to_str().unwrap()]);
    assert!(ok, "{out}{err}");

    // A plugin failing conformance is refused at proposal time by the nodes
    // (sent raw: the CLI would refuse it before sending).
    let nondet = std::fs::read(common::testplugin("nondet")).unwrap();
    let rpc = net.0.rpc("node1").unwrap();
    let v1 = account_key::read(&key_file(&net.0, "node1")).unwrap();
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
    let nondet_file = dir.path().join("nondet.wasm");
    std::fs::write(&nondet_file, &nondet).unwrap();
    let (ok, out) = propose(&net.0, "node1", &nondet_file, 7, 50);
    assert!(!ok && out.contains("would be refused"), "{out}");

    // Proposal 1: plugin B as format B. Three of four validators vote.
    let (ok, out) = propose(&net.0, "node0", &wasm, FORMAT_B, 400);
    assert!(ok, "{out}");
    let status = gov_status(&net.0, "node3");
    assert_eq!(status["proposals"][0]["id"], 1);
    assert_eq!(status["proposals"][0]["status"], "voting");

    // A vote signed by a key that is not a validator's is refused.
    let outsider = dir.path().join("outsider.json");
    account_key::write_new(&outsider, &account_key::generate()).unwrap();
    let (ok, out) = vote(&net.0, "node2", &outsider, 1);
    assert!(!ok && out.contains("not a validator"), "{out}");

    for (node, voter) in [("node0", "node0"), ("node2", "node1")] {
        let (ok, out) = vote(&net.0, node, &key_file(&net.0, voter), 1);
        assert!(ok, "{out}");
    }
    assert_eq!(gov_status(&net.0, "node1")["proposals"][0]["status"], "voting");
    let (ok, out) = vote(&net.0, "node3", &key_file(&net.0, "node2"), 1);
    assert!(ok && out.contains("passed"), "{out}");
    let status = gov_status(&net.0, "node0");
    let activation = status["proposals"][0]["activation_height"].as_u64().unwrap();
    assert_eq!(status["proposals"][0]["yes_power"], 30);
    assert_eq!(status["formats"][0]["format"], FORMAT_B);

    // Proposal 2 (format A's zstd, approved for format 1) gets two of four
    // votes and expires: it never activates.
    let zstd = dir.path().join("zstd.wasm");
    assert!(statesnap(&["plugin", "export", "zstd", "--out", zstd.to_str().unwrap()]).0);
    let (ok, out) = propose(&net.0, "node3", &zstd, FORMAT_A, 6);
    assert!(ok, "{out}");
    for voter in ["node3", "node1"] {
        let (ok, out) = vote(&net.0, voter, &key_file(&net.0, voter), 2);
        assert!(ok, "{out}");
    }

    // From the activation height every validator makes format B (and, during
    // the overlap, still format A), in the same processes.
    let first_b = activation.div_ceil(INTERVAL) * INTERVAL;
    for node in validators {
        // Both formats of that height (format A is made second, in the same job).
        let list = poll(
            &format!("{node}'s snapshots of formats {FORMAT_B} and {FORMAT_A} at {first_b}"),
            || {
                let list = advertised(&net.0, node);
                (list.contains(&(first_b, FORMAT_B)) && list.contains(&(first_b, FORMAT_A))).then_some(list)
            },
        );
        assert!(
            !list.iter().any(|&(h, f)| f == FORMAT_B && h < activation),
            "{node} made format {FORMAT_B} before activation: {list:?}"
        );
        assert_eq!(
            metric(&net.0, node, "statesnap_snapshot_last_format"),
            f64::from(FORMAT_B)
        );
    }
    let now: Vec<_> = validators.iter().map(|n| net.0.pids(n).unwrap()).collect();
    assert_eq!(pids, now, "no validator restarted");

    // Proposal 2 expired with 20 of 40: a late vote is refused; no format 1 approval.
    let expires = gov_status(&net.0, "node0")["proposals"][1]["expires_height"]
        .as_u64()
        .unwrap();
    net.0.wait_for_height("node0", expires + 1, TIMEOUT).unwrap();
    let (ok, out) = vote(&net.0, "node0", &key_file(&net.0, "node0"), 2);
    assert!(!ok && out.contains("expired"), "{out}");
    // (CheckTx judges at the next height; the status shows the last committed one.)
    let status = poll("proposal 2 to show as expired", || {
        let status = gov_status(&net.0, "node2");
        (status["proposals"][1]["status"] == "expired").then_some(status)
    });
    assert_eq!(status["formats"].as_array().unwrap().len(), 1);

    // A node whose binary has no built-in plugins (and no configured
    // format) joins by state sync from a format-B snapshot.
    net.0.add_node("joiner", &JoinOptions::default()).unwrap();
    let home = net.0.node("joiner").unwrap().statesnap_home.clone();
    let mut config = NodeConfig::load(&home).unwrap();
    config.snapshot_plugin = String::new();
    config.write(&home).unwrap();
    net.0
        .start_node("joiner", &["--no-built-in-plugins".to_string()])
        .unwrap();
    net.0.wait_for_sync("joiner", TIMEOUT).unwrap();
    let restored = metric(&net.0, "joiner", "statesnap_restored_snapshot_height");
    assert!(restored >= first_b as f64, "restored at {restored}");
    assert_eq!(metric(&net.0, "joiner", "statesnap_shipped_plugins_loaded_total"), 1.0);
    // It follows the chain with the validators' app hash, and makes format B
    // snapshots itself with the code from state.
    let q = net.0.rpc("joiner").unwrap().abci_query("/status", b"").unwrap();
    let v: Value = serde_json::from_slice(&q.value).unwrap();
    let (h, app_hash) = (
        v["height"].as_u64().unwrap(),
        v["app_hash"].as_str().unwrap().to_string(),
    );
    net.0.wait_for_height("node0", h + 1, TIMEOUT).unwrap();
    let header = net.0.rpc("node0").unwrap().header(Some(h + 1)).unwrap();
    assert_eq!(hex::encode(header.app_hash), app_hash);
    poll("the joiner's own format B snapshot", || {
        advertised(&net.0, "joiner")
            .iter()
            .any(|&(_, f)| f == FORMAT_B)
            .then_some(())
    });

    // A hostile peer: node3 now advertises its format-B snapshots with forged
    // approvals (a forged proof, the proof for another format number, a
    // chunk 0 that is not the approved plugin, one per height). A node with
    // no plugins that can only reach node3 refuses each before running anything.
    poll("three format-B snapshot heights on node3", || {
        let heights = advertised(&net.0, "node3")
            .iter()
            .filter(|&&(_, f)| f == FORMAT_B)
            .count();
        (heights >= 3).then_some(())
    });
    net.0.stop_node("node3").unwrap();
    net.0
        .start_node("node3", &["--test-forge-approvals".to_string()])
        .unwrap();
    net.0
        .add_node(
            "victim",
            &JoinOptions {
                peers: vec!["node3".into()],
                ..JoinOptions::default()
            },
        )
        .unwrap();
    let home = net.0.node("victim").unwrap().statesnap_home.clone();
    let mut config = NodeConfig::load(&home).unwrap();
    config.snapshot_plugin = String::new();
    config.write(&home).unwrap();
    net.0
        .start_node("victim", &["--no-built-in-plugins".to_string()])
        .unwrap();
    poll("the victim to refuse three forged snapshots", || {
        (metric(&net.0, "victim", "statesnap_refused_plugins_total") >= 3.0).then_some(())
    });
    let log = std::fs::read_to_string(&net.0.node("victim").unwrap().statesnap_log).unwrap();
    for reason in [
        "it is forged or from another state",
        "it does not approve this snapshot's format",
        "chunk 0 must be the shipped plugin",
    ] {
        assert!(log.contains(reason), "the victim's log lacks {reason:?}");
    }
    assert_eq!(metric(&net.0, "victim", "statesnap_shipped_plugins_loaded_total"), 0.0);
    assert_eq!(metric(&net.0, "victim", "statesnap_plugin_fuel_used_total"), 0.0);
    let restored = metric(&net.0, "victim", "statesnap_restored_snapshot_height");
    assert!(
        restored.is_nan() || restored == 0.0,
        "the victim restored height {restored}"
    );
}
