//! Governance of snapshot formats in process (the same ABCI calls CometBFT
//! makes): proposals, votes, tallies, activation, self-describing snapshots
//! and every refusal of a shipped plugin before it runs.

mod common;

use std::path::Path;
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use serde_json::Value;
use statesnap::chain::registry::{format_key, FormatApproval};
use statesnap::chain::tx::{self, code, Action, Proposal, TxBody};
use statesnap::node::{ChunkAnswer, Metrics, Node, NodeConfig, Offer, OfferAnswer, TestHooks};
use statesnap::plugin::{PluginEngine, PluginRegistry};
use statesnap::snapshot::Manifest;
use statesnap::store::treap::MerkleTreap;
use statesnap::store::value::canonical_bytes;

const CHAIN: &str = "gov-chain";

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn validators() -> Vec<SigningKey> {
    (1..=4).map(|i| key(20 + i)).collect()
}

/// Signs transactions with the account's committed nonce (one transaction
/// per account per block).
struct Nonces<'a>(&'a Node);

impl Nonces<'_> {
    fn sign(&mut self, k: &SigningKey, action: Action) -> Vec<u8> {
        let account = k.verifying_key().to_bytes();
        let stored = self.0.query("/key", tx::nonce_key(&account).as_bytes());
        let nonce = tx::parse_nonce(
            (stored.code == 0)
                .then(|| String::from_utf8(stored.value).unwrap())
                .as_deref(),
        )
        .unwrap();
        let body = TxBody {
            chain_id: CHAIN.into(),
            account,
            nonce,
            action,
        };
        tx::Tx::sign(body, k).unwrap().into_bytes()
    }
}

fn proposal(wasm: &[u8], format: u32, expires_after: u64) -> Action {
    Action::Propose(Proposal::new(format, wasm, 2, expires_after))
}

fn config(snapshot_plugin: &str) -> NodeConfig {
    NodeConfig {
        chain_id: CHAIN.into(),
        snapshot_interval: 4,
        snapshot_keep_recent: 2,
        checkpoint_interval: 1000,
        format_overlap: 1,
        snapshot_plugin: snapshot_plugin.into(),
        ..NodeConfig::default()
    }
}

fn open(home: &Path, config: NodeConfig, registry: PluginRegistry) -> Node {
    Node::open(home, config, registry, Arc::new(Metrics::new()), TestHooks::default()).unwrap()
}

/// A node at genesis with the four validators (power 10 each) and some state.
fn genesis(home: &Path) -> (Node, Vec<[u8; 32]>) {
    let node = open(home, config("zstd"), common::registry());
    let vals: Vec<([u8; 32], i64)> = validators()
        .iter()
        .map(|k| (k.verifying_key().to_bytes(), 10))
        .collect();
    let entries: Vec<Value> = (0..300)
        .map(|i| serde_json::json!({"key": format!("currency.balances:acct{i:04}"), "stored": format!("{}", i * 7)}))
        .collect();
    let app_state = serde_json::json!({ "entries": entries }).to_string();
    let h0 = node.init_chain(CHAIN, 1, app_state.as_bytes(), &vals).unwrap();
    (node, vec![h0])
}

/// Runs the next block; returns each transaction's code.
fn block(node: &Node, hashes: &mut Vec<[u8; 32]>, txs: &[Vec<u8>]) -> Vec<u32> {
    let height = hashes.len() as u64;
    let (outcomes, app_hash) = node.finalize_block(height, txs).unwrap();
    node.commit().unwrap();
    node.wait_for_snapshots();
    hashes.push(app_hash);
    outcomes.iter().map(|o| o.code).collect()
}

fn gov(node: &Node) -> Value {
    let a = node.query("/gov", b"");
    assert_eq!(a.code, 0, "{}", a.log);
    serde_json::from_slice(&a.value).unwrap()
}

fn builtin(name: &str) -> Vec<u8> {
    let (_, bytes) = statesnap::plugin::BUILT_IN.iter().find(|(n, _)| *n == name).unwrap();
    bytes.to_vec()
}

fn metric(node: &Node, name: &str) -> f64 {
    statesnap::node::metrics::read_metric(&node.metrics().render(), name).unwrap_or(0.0)
}

fn offer(src: &Node, hashes: &[[u8; 32]], height: u64, format: u32) -> Offer {
    let s = src
        .list_snapshots()
        .into_iter()
        .find(|s| s.height == height && s.format == format)
        .unwrap_or_else(|| panic!("no snapshot {height}-{format}: {:?}", src.list_snapshots()));
    Offer {
        height,
        format,
        chunks: s.chunks,
        hash: s.hash.to_vec(),
        metadata: s.metadata,
        trusted_app_hash: hashes[height as usize].to_vec(),
    }
}

fn edited(offer: &Offer, edit: impl FnOnce(&mut Manifest)) -> Offer {
    let mut m = Manifest::decode(&offer.metadata).unwrap();
    edit(&mut m);
    Offer {
        format: m.format,
        hash: m.hash().to_vec(),
        metadata: m.encode(),
        ..offer.clone()
    }
}

fn no_built_ins() -> PluginRegistry {
    PluginRegistry::new(PluginEngine::new(Default::default()).unwrap(), false)
}

#[test]
fn a_format_passes_activates_and_restores_on_a_node_without_the_plugin() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, mut hashes) = genesis(&tmp.path().join("source"));
    let v = validators();
    let outsider = key(99);
    let gzip = builtin("gzip");
    let mut n = Nonces(&node);

    // Height 1: a good proposal; a plugin failing conformance; a non-validator's proposal.
    let nondet = std::fs::read(common::testplugin("nondet")).unwrap();
    let codes = block(
        &node,
        &mut hashes,
        &[
            n.sign(&v[0], proposal(&gzip, 2, 50)),
            n.sign(&v[1], proposal(&nondet, 7, 50)),
            n.sign(&outsider, proposal(&gzip, 2, 50)),
            n.sign(&v[2], proposal(&gzip, 9, 50)), // the plugin makes format 2, not 9
        ],
    );
    assert_eq!(
        codes,
        [
            code::OK,
            code::PLUGIN_REFUSED,
            code::NOT_VALIDATOR,
            code::PLUGIN_REFUSED
        ]
    );
    let status = gov(&node);
    assert_eq!(status["total_power"], 40);
    assert_eq!(status["proposals"].as_array().unwrap().len(), 1);
    assert_eq!(status["proposals"][0]["status"], "voting");
    assert_eq!(status["proposals"][0]["sha256"], statesnap::plugin::sha256_hex(&gzip));

    // Height 2: two of four votes (20 of 40) do not pass; an outsider's vote is refused.
    let codes = block(
        &node,
        &mut hashes,
        &[
            n.sign(&v[0], Action::Vote(1)),
            n.sign(&v[1], Action::Vote(1)),
            n.sign(&outsider, Action::Vote(1)),
            n.sign(&v[2], Action::Vote(2)), // no such proposal
        ],
    );
    assert_eq!(codes, [code::OK, code::OK, code::NOT_VALIDATOR, code::NO_SUCH_PROPOSAL]);
    let p = &gov(&node)["proposals"][0];
    assert_eq!(
        (p["yes_power"].as_u64(), p["status"].as_str()),
        (Some(20), Some("voting"))
    );

    // Height 3: a repeated vote is refused; the third vote passes it (30 of 40 > 2/3).
    let codes = block(
        &node,
        &mut hashes,
        &[n.sign(&v[0], Action::Vote(1)), n.sign(&v[2], Action::Vote(1))],
    );
    assert_eq!(codes, [code::ALREADY_VOTED, code::OK]);
    let status = gov(&node);
    assert_eq!(status["proposals"][0]["status"], "passed");
    assert_eq!(status["proposals"][0]["activation_height"], 5);
    assert_eq!(status["formats"][0]["format"], 2);
    assert_eq!(status["formats"][0]["active"], false);

    // Height 4: a vote after passing is refused; the snapshot is still format 1 only.
    assert_eq!(
        block(&node, &mut hashes, &[n.sign(&v[3], Action::Vote(1))]),
        [code::PROPOSAL_PASSED]
    );
    let formats_at = |node: &Node, h: u64| -> Vec<u32> {
        let mut f: Vec<u32> = node
            .list_snapshots()
            .iter()
            .filter(|s| s.height == h)
            .map(|s| s.format)
            .collect();
        f.sort();
        f
    };
    assert_eq!(formats_at(&node, 4), [1]);

    // Heights 5..8: format 2 is active from 5; at 8 (within the overlap of
    // one interval) both formats are made, with the same node (no restart).
    for _ in 5..=8 {
        block(&node, &mut hashes, &[]);
    }
    assert_eq!(formats_at(&node, 8), [1, 2]);
    assert_eq!(metric(&node, "statesnap_snapshot_last_format"), 2.0);
    let old = Manifest::decode(&offer(&node, &hashes, 8, 1).metadata).unwrap();
    assert!(old.approval.is_none(), "the configured zstd is not approved in state");
    let good = offer(&node, &hashes, 8, 2);
    let m = Manifest::decode(&good.metadata).unwrap();
    assert_eq!(m.plugin.sha256, statesnap::plugin::sha256(&gzip));
    assert_eq!(m.chunks[0], m.plugin.sha256, "chunk 0 is the plugin");
    assert_eq!(node.load_snapshot_chunk(8, 2, 0), gzip);
    let approval = m.approval.clone().expect("self-describing");
    assert_eq!(approval.key, format_key(2));

    // A fresh node with no built-in plugins and no configured format.
    let fresh = open(&tmp.path().join("fresh"), config(""), no_built_ins());
    let refused = |o: &Offer| match fresh.offer_snapshot(o) {
        OfferAnswer::Reject(why) => why,
        other => panic!("expected a refusal, got {other:?}"),
    };
    // Format 1 is not approved and not local: skipped as a format.
    assert!(matches!(
        fresh.offer_snapshot(&offer(&node, &hashes, 8, 1)),
        OfferAnswer::RejectFormat(_)
    ));
    // A forged proof: an approval record the state does not hold.
    let forged_value = edited(&good, |m| {
        let a = m.approval.as_mut().unwrap();
        let mut record = FormatApproval::parse(&a.key, &a.stored).unwrap();
        record.activation_height = 1;
        a.stored = record.stored();
    });
    assert!(refused(&forged_value).contains("forged"));
    // A forged proof: a real proof, of a state with that record but another root.
    let forged_state = edited(&good, |m| {
        let a = m.approval.as_mut().unwrap();
        let mut t = MerkleTreap::new();
        t.set(&a.key, &canonical_bytes(&a.stored).unwrap().unwrap());
        t.set("con.x", b"1");
        a.proof = t.prove(&a.key).unwrap();
    });
    assert!(refused(&forged_state).contains("forged"));
    // The proof for format 2 offered for a snapshot claiming format 3.
    let other_format = edited(&good, |m| m.format = 3);
    assert!(refused(&other_format).contains("not \"statesnap.formats:3\""));
    // A snapshot naming another plugin than the approved one.
    let zstd_sha = statesnap::plugin::sha256(&builtin("zstd"));
    let other_plugin = edited(&good, |m| {
        m.plugin.sha256 = zstd_sha;
        m.chunks[0] = zstd_sha;
    });
    assert!(refused(&other_plugin).contains("approves plugin"));
    // A chunk 0 listed with another hash than the approved plugin's.
    let other_chunk = edited(&good, |m| m.chunks[0] = zstd_sha);
    assert!(refused(&other_chunk).contains("chunk 0 must be the shipped plugin"));
    // The right manifest, but a peer ships other bytes as chunk 0.
    assert_eq!(fresh.offer_snapshot(&good), OfferAnswer::Accept);
    match fresh.apply_snapshot_chunk(0, &builtin("zstd"), "evil-peer") {
        ChunkAnswer::Retry {
            refetch,
            reject_senders,
            ..
        } => assert_eq!((refetch, reject_senders), (vec![0], vec!["evil-peer".to_string()])),
        other => panic!("{other:?}"),
    }
    // Nothing ran: no plugin was loaded and no fuel was spent.
    assert_eq!(metric(&fresh, "statesnap_shipped_plugins_loaded_total"), 0.0);
    assert_eq!(metric(&fresh, "statesnap_plugin_fuel_used_total"), 0.0);
    assert_eq!(metric(&fresh, "statesnap_refused_plugins_total"), 5.0);

    // The real chunks restore with the shipped plugin.
    for i in 0..good.chunks {
        let answer = fresh.apply_snapshot_chunk(i, &node.load_snapshot_chunk(8, 2, i), "good-peer");
        assert!(matches!(answer, ChunkAnswer::Accept), "chunk {i}: {answer:?}");
    }
    assert_eq!(fresh.info(), (8, hashes[8]));
    assert_eq!(metric(&fresh, "statesnap_shipped_plugins_loaded_total"), 1.0);
    assert_eq!(
        common::consensus_entries(&tmp.path().join("fresh/state")),
        common::consensus_entries(&tmp.path().join("source/state"))
    );

    // Both nodes go on; past the overlap only format 2 is made, by the
    // restored node too (its code from state), byte for byte the same.
    let mut fresh_hashes = hashes.clone();
    for _ in 9..=12 {
        block(&node, &mut hashes, &[]);
        block(&fresh, &mut fresh_hashes, &[]);
    }
    assert_eq!(hashes, fresh_hashes);
    assert_eq!(formats_at(&node, 12), [2]);
    assert_eq!(formats_at(&fresh, 12), [2]);
    assert_eq!(
        offer(&node, &hashes, 12, 2).metadata,
        offer(&fresh, &fresh_hashes, 12, 2).metadata
    );

    // Offline, `snapshot restore` does the same with a host that has no plugins.
    let snap = tmp.path().join("source/snapshots/12-2");
    let home = tmp.path().join("offline");
    let bar = indicatif::ProgressBar::hidden();
    let summary = statesnap::snapshot::restore_dir(&snap, &home, hashes[12], &no_built_ins(), &bar).unwrap();
    assert_eq!(summary.root, hashes[12]);
    let err = statesnap::snapshot::restore_dir(&snap, &home, hashes[0], &no_built_ins(), &bar).unwrap_err();
    assert!(err.to_string().contains("trusted app hash"), "{err}");
}

#[test]
fn a_proposal_without_enough_votes_expires_and_never_activates() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, mut hashes) = genesis(&tmp.path().join("source"));
    let v = validators();
    let mut n = Nonces(&node);
    let gzip = builtin("gzip");
    assert_eq!(block(&node, &mut hashes, &[n.sign(&v[0], proposal(&gzip, 2, 3))]), [0]);
    assert_eq!(
        block(
            &node,
            &mut hashes,
            &[n.sign(&v[0], Action::Vote(1)), n.sign(&v[1], Action::Vote(1))]
        ),
        [0, 0]
    );
    for _ in 3..=4 {
        block(&node, &mut hashes, &[]);
    }
    // Height 5 is past the expiry (1 + 3): the third vote comes too late.
    assert_eq!(
        block(&node, &mut hashes, &[n.sign(&v[2], Action::Vote(1))]),
        [code::PROPOSAL_EXPIRED]
    );
    for _ in 6..=8 {
        block(&node, &mut hashes, &[]);
    }
    let status = gov(&node);
    assert_eq!(status["proposals"][0]["status"], "expired");
    assert_eq!(status["proposals"][0]["yes_power"], 20);
    assert!(status["formats"].as_array().unwrap().is_empty());
    let formats: Vec<u32> = node.list_snapshots().iter().map(|s| s.format).collect();
    assert_eq!(formats, [1, 1]);
    // CheckTx refuses what the block would: the mempool stays clean.
    let late = n.sign(&v[3], Action::Vote(1));
    assert_eq!(node.check_tx(&late).code, code::PROPOSAL_EXPIRED);
    assert!(node.check_tx(&late).log.contains("expired"));
}

/// The conformance check of a proposed plugin runs outside the chain lock:
/// while CheckTx spends seconds on a plugin that spins until it runs out of
/// fuel, a block is executed and committed. (Before, CheckTx held the chain
/// lock throughout, so the block finished only after the check.) An ordering
/// of events, not a timing: the check takes seconds, the block milliseconds.
#[test]
fn blocks_do_not_wait_for_a_proposals_conformance_check() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, mut hashes) = genesis(tmp.path());
    let v = validators();
    let spin = std::fs::read(common::testplugin("spin")).unwrap();
    let tx = Nonces(&node).sign(&v[0], proposal(&spin, 902, 100));
    std::thread::scope(|s| {
        let checking = s.spawn(|| {
            let outcome = node.check_tx(&tx);
            (outcome, std::time::Instant::now())
        });
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert_eq!(block(&node, &mut hashes, &[]), Vec::<u32>::new());
        let block_done = std::time::Instant::now();
        let (outcome, check_done) = checking.join().unwrap();
        assert_eq!(outcome.code, code::PLUGIN_REFUSED, "{}", outcome.log);
        assert!(outcome.log.contains("fuel"), "{}", outcome.log);
        assert!(
            block_done < check_done,
            "the block waited for CheckTx's conformance check"
        );
    });
}
