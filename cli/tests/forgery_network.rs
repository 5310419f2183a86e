//! A hostile validator on a real CometBFT 0.39 network: it builds every
//! snapshot from a forged state (the real one with one value altered) and
//! advertises it under the real app hash, with chunk hashes that match its
//! manifest. Its snapshots are the highest, so joining nodes try them first.
//! For each built-in format in turn, a new node must refuse the forgery at
//! its first chunk, write none of its entries, reject the forger and sync
//! from the honest validators. Needs cometbft (scripts/setup.sh installs it).

mod common;

use common::net::{many_chunks, require_cometbft, Network};
use statesnap::store::StoreKind;
use statesnap_harness::testnet::JoinOptions;

const CHAIN: &str = "forgery-chain";
const HONEST: [&str; 2] = ["node0", "node1"];
const FORGER: &str = "node2";
const FORGE: &[&str] = &["--test-forge-states"];

#[test]
fn a_forging_validator_is_refused_at_its_first_chunk_and_nodes_sync_from_honest_ones() {
    require_cometbft();
    let opts = many_chunks(CHAIN, 20_000, StoreKind::Lmdb);
    let mut net = Network::start_with(&opts, &[(FORGER, FORGE)]);
    let forge: Vec<String> = FORGE.iter().map(|s| s.to_string()).collect();
    // Every validator has its height-10 snapshot; then the honest ones stop
    // making more (they keep serving theirs), so the forger's are the newest.
    for node in [HONEST[0], HONEST[1], FORGER] {
        net.poll(node, &format!("{node}'s height-10 snapshot"), || {
            net.advertised(node).iter().any(|&(h, _)| h == 10).then_some(())
        });
    }
    for node in HONEST {
        net.stop_node(node).unwrap();
        net.edit_config(node, |c| c.snapshot_interval = 0);
        net.start_node(node, &[]).unwrap();
    }
    let honest: Vec<_> = HONEST
        .iter()
        .map(|n| {
            net.poll(n, &format!("{n} serving its snapshots again"), || {
                Some(net.advertised(n)).filter(|l| !l.is_empty())
            })
        })
        .collect();
    let honest_heights: Vec<u64> = honest.iter().flatten().map(|&(h, _)| h).collect();
    let newest_honest = *honest_heights.iter().max().unwrap();

    for (plugin, format) in [("zstd", 1), ("gzip", 2), ("brotli", 3)] {
        // The forger now forges in this format; its newest snapshot is the
        // best CometBFT is offered.
        net.stop_node(FORGER).unwrap();
        net.edit_config(FORGER, |c| c.snapshot_plugin = plugin.into());
        net.start_node(FORGER, &forge).unwrap();
        let forged = net.poll(
            FORGER,
            &format!("a forged {plugin} snapshot above height {newest_honest}"),
            || {
                let newest = net.advertised(FORGER).into_iter().max()?;
                (newest.0 > newest_honest && newest.1 == format).then_some(newest.0)
            },
        );
        // The joiner's light client checks a snapshot of height H with the
        // headers of H+1 and H+2 from its RPC servers (node0 and node1),
        // and rejects it for good when they do not have them yet: it would
        // never be offered the forgery. Restarting the forger stalled the
        // chain (two of three validators are not more than 2/3), and its
        // newest snapshot may be one it made just before.
        for node in HONEST {
            net.wait_for_height(node, forged + 2);
        }
        for (node, list) in HONEST.iter().zip(&honest) {
            assert_eq!(&net.advertised(node), list, "{node} makes no more snapshots");
        }

        let joiner = format!("joiner-{plugin}");
        net.add_node(&joiner, &JoinOptions::default()).unwrap();
        net.start_node(&joiner, &[]).unwrap();
        net.wait_for_sync(&joiner);
        let m = |name: &str| net.metric(&joiner, name);
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
        assert!(
            net.log(&joiner).contains("chunk 0 matches the manifest, but"),
            "{plugin}: the forgery was refused at chunk 0"
        );
        // It computes the validators' app hash.
        net.assert_same_app_hash(&joiner, HONEST[0]);
        net.stop_node(&joiner).unwrap();
    }
}
