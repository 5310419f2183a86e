//! A hostile validator on a real CometBFT 0.38 network: it builds every
//! snapshot from a forged state (the real one with one value altered) and
//! advertises it under the real app hash, with chunk hashes that match its
//! manifest. Its snapshots are the highest, so joining nodes try them first.
//! For each built-in format in turn, a new node must refuse the forgery at
//! its first chunk, write none of its entries, reject the forger and sync
//! from the honest validators. Needs cometbft (scripts/setup.sh installs it).

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use common::net::{assert_same_app_hash, metric, poll, require_cometbft, Running};
use serde_json::Value;
use statesnap::node::NodeConfig;
use statesnap::store::StoreKind;
use statesnap_harness::testnet::{free_base_port, JoinOptions, Testnet, TestnetOptions};

const CHAIN: &str = "forgery-chain";
const TIMEOUT: Duration = Duration::from_secs(240);
const HONEST: [&str; 2] = ["node0", "node1"];
const FORGER: &str = "node2";

/// `/snapshots` of a node: (height, format) pairs.
fn advertised(net: &Testnet, node: &str) -> Vec<(u64, u64)> {
    let Ok(q) = net.rpc(node).and_then(|r| r.abci_query("/snapshots", b"")) else {
        return Vec::new();
    };
    let list: Vec<Value> = serde_json::from_slice(&q.value).unwrap_or_default();
    list.iter()
        .map(|s| (s["height"].as_u64().unwrap(), s["format"].as_u64().unwrap()))
        .collect()
}

fn set_config(net: &Testnet, node: &str, edit: impl FnOnce(&mut NodeConfig)) {
    let home = net.node(node).unwrap().statesnap_home.clone();
    let mut config = NodeConfig::load(&home).unwrap();
    edit(&mut config);
    config.write(&home).unwrap();
}

#[test]
fn a_forging_validator_is_refused_at_its_first_chunk_and_nodes_sync_from_honest_ones() {
    require_cometbft();
    let dir = tempfile::tempdir().unwrap();
    let mut params = BTreeMap::new();
    // Many chunks, so that "refused at the first" means something.
    params.insert("chunk_bytes".to_string(), "40000".to_string());
    let opts = TestnetOptions {
        validators: 3,
        chain_id: CHAIN.into(),
        base_port: free_base_port(6).unwrap(),
        snapshot_interval: 10,
        snapshot_keep_recent: 3,
        snapshot_params: params,
        block_time: Duration::from_millis(300),
        genesis_keys: 20_000,
        store: StoreKind::Lmdb,
        statesnap_bin: PathBuf::from(env!("CARGO_BIN_EXE_statesnap")),
        ..TestnetOptions::default()
    };
    let forge = ["--test-forge-states".to_string()];
    let mut net = Running(Testnet::init(&dir.path().join("net"), &opts).unwrap());
    for node in HONEST {
        net.0.start_node(node, &[]).unwrap();
    }
    net.0.start_node(FORGER, &forge).unwrap();
    // Every validator has its height-10 snapshot; then the honest ones stop
    // making more (they keep serving theirs), so the forger's are the newest.
    poll("a height-10 snapshot on every validator", TIMEOUT, || {
        [HONEST[0], HONEST[1], FORGER]
            .iter()
            .all(|n| advertised(&net.0, n).iter().any(|&(h, _)| h == 10))
            .then_some(())
    });
    for node in HONEST {
        net.0.stop_node(node).unwrap();
        set_config(&net.0, node, |c| c.snapshot_interval = 0);
        net.0.start_node(node, &[]).unwrap();
    }
    let honest: Vec<Vec<(u64, u64)>> = HONEST
        .iter()
        .map(|n| {
            poll(&format!("{n} serving its snapshots again"), TIMEOUT, || {
                Some(advertised(&net.0, n)).filter(|l| !l.is_empty())
            })
        })
        .collect();
    let honest_heights: Vec<u64> = honest.iter().flatten().map(|&(h, _)| h).collect();
    let newest_honest = *honest_heights.iter().max().unwrap();

    for (plugin, format) in [("zstd", 1), ("gzip", 2), ("brotli", 3)] {
        // The forger now forges in this format; its newest snapshot is the
        // best CometBFT is offered.
        net.0.stop_node(FORGER).unwrap();
        set_config(&net.0, FORGER, |c| c.snapshot_plugin = plugin.into());
        net.0.start_node(FORGER, &forge).unwrap();
        poll(
            &format!("a forged {plugin} snapshot above height {newest_honest}"),
            TIMEOUT,
            || {
                let newest = advertised(&net.0, FORGER).into_iter().max()?;
                (newest.0 > newest_honest && newest.1 == format).then_some(())
            },
        );
        for (node, list) in HONEST.iter().zip(&honest) {
            assert_eq!(&advertised(&net.0, node), list, "{node} makes no more snapshots");
        }

        let joiner = format!("joiner-{plugin}");
        net.0.add_node(&joiner, &JoinOptions::default()).unwrap();
        net.0.start_node(&joiner, &[]).unwrap();
        net.0.wait_for_sync(&joiner, TIMEOUT).unwrap();
        let m = |name: &str| metric(&net.0, &joiner, name);
        assert!(
            m("statesnap_forged_chunks_total") >= 1.0,
            "{plugin} (format {format}): the joiner met the forgery"
        );
        let restored = m("statesnap_restored_snapshot_height");
        assert!(
            honest_heights.iter().any(|&h| h as f64 == restored),
            "{plugin}: restored height {restored}, not an honest snapshot's {honest_heights:?}"
        );
        // Only the honest snapshot's entries were ever written: not one
        // entry of the forged snapshot passed its chunk's proof.
        assert_eq!(
            m("statesnap_restore_entries_written_total"),
            m("statesnap_restore_entries"),
            "{plugin}: entries written beyond the honest snapshot's"
        );
        assert!(
            m("statesnap_rejected_senders_total") >= 1.0,
            "{plugin}: the forger was rejected"
        );
        let log = std::fs::read_to_string(&net.0.node(&joiner).unwrap().statesnap_log).unwrap();
        assert!(
            log.contains("chunk 0 matches the manifest, but"),
            "{plugin}: the forgery was refused at chunk 0"
        );
        // It computes the validators' app hash.
        assert_same_app_hash(&net.0, &joiner, HONEST[0], TIMEOUT);
        net.0.stop_node(&joiner).unwrap();
    }
}
