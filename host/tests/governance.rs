//! Governance of snapshot formats in process (the same ABCI calls CometBFT
//! makes): proposals, votes, tallies, activation, self-describing snapshots
//! and every refusal of a shipped plugin before it runs.

mod common;

use std::path::Path;
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use serde_json::Value;
use statesnap::node::governance::Conformance;
use statesnap::node::{ChunkAnswer, Metrics, Node, NodeConfig, Offer, OfferAnswer, QueryCode};
use statesnap::plugin::check::{CheckFailure, Refusal};
use statesnap::plugin::{PluginEngine, PluginRegistry};
use statesnap::protocol::gov_records::{format_key, FormatApproval};
use statesnap::protocol::tx::{self, code, Action, Proposal, TxBody};
use statesnap::snapshot::{ApprovalError, Manifest, RestoreError, RestoreOptions, RestoreSession};
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
            (stored.code == QueryCode::Found)
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
    Node::open(home, config, registry, Arc::new(Metrics::new())).unwrap()
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
    assert_eq!(a.code, QueryCode::Found, "{}", a.log);
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
    // The chain's verdict on the nondeterministic plugin, as every node reaches it.
    assert_eq!(
        Conformance::new().unwrap().verdict(&nondet).unwrap(),
        Err(Refusal::Check(CheckFailure::HiddenState))
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
    // The node rejects the offer; a restore of it says why.
    let refused = |o: &Offer| -> ApprovalError {
        match fresh.offer_snapshot(o) {
            OfferAnswer::Reject(_) => {}
            other => panic!("expected a refusal, got {other:?}"),
        }
        let manifest = Manifest::decode(&o.metadata).unwrap();
        let trusted = o.trusted_app_hash.as_slice().try_into().unwrap();
        let home = tmp.path().join("never-restored");
        match RestoreSession::begin(manifest, trusted, &no_built_ins(), &home, RestoreOptions::default()) {
            Err(RestoreError::Approval(e)) => e,
            Err(e) => panic!("expected the approval refused, got {e}"),
            Ok(_) => panic!("the restore began"),
        }
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
    assert_eq!(refused(&forged_value), ApprovalError::Forged { trusted: hashes[8] });
    // A forged proof: a real proof, of a state with that record but another root.
    let forged_state = edited(&good, |m| {
        let a = m.approval.as_mut().unwrap();
        let mut t = MerkleTreap::new();
        t.set(&a.key, &canonical_bytes(&a.stored).unwrap().unwrap());
        t.set("con.x", b"1");
        a.proof = t.prove(&a.key).unwrap();
    });
    assert_eq!(refused(&forged_state), ApprovalError::Forged { trusted: hashes[8] });
    // The proof for format 2 offered for a snapshot claiming format 3.
    let other_format = edited(&good, |m| m.format = 3);
    assert_eq!(
        refused(&other_format),
        ApprovalError::OtherFormat {
            expected: format_key(3),
            got: format_key(2)
        }
    );
    // A snapshot naming another plugin than the approved one.
    let zstd_sha = statesnap::plugin::sha256(&builtin("zstd"));
    let other_plugin = edited(&good, |m| {
        m.plugin.sha256 = zstd_sha;
        m.chunks[0] = zstd_sha;
    });
    assert_eq!(
        refused(&other_plugin),
        ApprovalError::OtherPlugin {
            format: 2,
            approved: statesnap::plugin::sha256_hex(&gzip),
            named: zstd_sha
        }
    );
    // A chunk 0 listed with another hash than the approved plugin's.
    let other_chunk = edited(&good, |m| m.chunks[0] = zstd_sha);
    assert_eq!(
        refused(&other_chunk),
        ApprovalError::PluginChunk {
            plugin: statesnap::plugin::sha256(&gzip),
            listed: zstd_sha
        }
    );
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
    let summary =
        statesnap::snapshot::restore_dir(&snap, &home, hashes[12], &no_built_ins(), Default::default(), &bar).unwrap();
    assert_eq!(summary.root, hashes[12]);
    let err = statesnap::snapshot::restore_dir(&snap, &home, hashes[0], &no_built_ins(), Default::default(), &bar)
        .unwrap_err();
    assert!(
        matches!(err, RestoreError::AppHashMismatch { claimed, trusted } if claimed == hashes[12] && trusted == hashes[0]),
        "{err}"
    );
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

// ---- Plugins proposed by hash and uploaded in pieces ----

fn by_hash(wasm: &[u8], format: u32, piece_bytes: u32, expires_after: u64) -> (Action, tx::HashProposal) {
    let p = tx::HashProposal::new(format, wasm, piece_bytes, 2, expires_after);
    (Action::ProposeHash(p.clone()), p)
}

fn upload(proposal: u64, index: u32, bytes: &[u8]) -> Action {
    Action::Upload(tx::Upload {
        proposal,
        index,
        bytes: bytes.to_vec(),
    })
}

/// Whether the node's state holds `key`.
fn has_key(node: &Node, key: &str) -> bool {
    node.query("/key", key.as_bytes()).code == QueryCode::Found
}

fn plugin_keys(sha_hex: &str) -> (String, String) {
    (
        format!("statesnap.plugins:{sha_hex}"),
        format!("statesnap.plugins:{sha_hex}:0"),
    )
}

#[test]
fn a_plugin_proposed_by_hash_is_uploaded_by_anyone_checked_when_complete_and_approved() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, mut hashes) = genesis(&tmp.path().join("source"));
    let v = validators();
    let mut n = Nonces(&node);
    let brotli = builtin("brotli");
    let sha = statesnap::plugin::sha256_hex(&brotli);
    const PIECE: u32 = 64 * 1024;
    let pieces: Vec<&[u8]> = brotli.chunks(PIECE as usize).collect();
    assert!(pieces.len() >= 3, "brotli is {} bytes", brotli.len());
    let (action, _) = by_hash(&brotli, 3, PIECE, 40);

    // Height 1: the proposal; a non-validator may not propose.
    let codes = block(
        &node,
        &mut hashes,
        &[n.sign(&v[0], action.clone()), n.sign(&key(90), action)],
    );
    assert_eq!(codes, [code::OK, code::NOT_VALIDATOR]);
    let p = &gov(&node)["proposals"][0];
    assert_eq!(
        (p["status"].as_str(), p["sha256"].as_str()),
        (Some("voting"), Some(sha.as_str()))
    );
    assert_eq!(p["upload"]["pieces"], pieces.len());
    assert_eq!(p["upload"]["arrived"], 0);

    // Height 2: uploads by anyone; each is checked on arrival.
    let last = pieces.len() as u32 - 1;
    let codes = block(
        &node,
        &mut hashes,
        &[
            n.sign(&key(91), upload(1, 0, pieces[1])),        // bytes of another piece
            n.sign(&key(92), upload(1, last + 1, pieces[0])), // no such piece
            n.sign(&key(93), upload(7, 0, pieces[0])),        // no such proposal
            n.sign(&key(94), upload(1, 0, pieces[0])),
        ],
    );
    assert_eq!(
        codes,
        [
            code::UPLOAD_MISMATCH,
            code::UPLOAD_REFUSED,
            code::NO_SUCH_PROPOSAL,
            code::OK
        ]
    );
    assert!(node
        .check_tx(&n.sign(&key(95), upload(1, 0, pieces[0])))
        .log
        .contains("already arrived"));

    // Height 3: the vote passes before the code is complete: no approval yet.
    let votes: Vec<_> = v[..3].iter().map(|k| n.sign(k, Action::Vote(1))).collect();
    assert_eq!(block(&node, &mut hashes, &votes), [0, 0, 0]);
    let status = gov(&node);
    assert_eq!(status["proposals"][0]["status"], "passed");
    assert_eq!(status["proposals"][0]["activation_height"], 0);
    assert!(status["formats"].as_array().unwrap().is_empty());
    assert!(has_key(&node, &format!("statesnap.plugins:{sha}:0")));
    assert!(
        !has_key(&node, &format!("statesnap.plugins:{sha}")),
        "no meta before the code is complete"
    );

    // Height 4: the other pieces, each from its own account; the last one
    // completes the code, which is checked and approved from 4 + 2.
    let rest: Vec<_> = (1..=last)
        .map(|i| n.sign(&key(100 + i as u8), upload(1, i, pieces[i as usize])))
        .collect();
    assert_eq!(block(&node, &mut hashes, &rest), vec![0; rest.len()]);
    let status = gov(&node);
    let p = &status["proposals"][0];
    assert_eq!(
        (p["name"].as_str(), p["activation_height"].as_u64()),
        (Some("brotli"), Some(6))
    );
    assert_eq!(p["upload"]["complete"], true);
    assert_eq!(status["formats"][0]["format"], 3);
    assert_eq!(status["formats"][0]["sha256"], sha);
    assert_eq!(status["pending_code"]["proposals"], serde_json::json!([]));
    assert!(has_key(&node, &format!("statesnap.plugins:{sha}")));
    assert_eq!(
        node.check_tx(&n.sign(&key(95), upload(1, 0, pieces[0]))).code,
        code::UPLOAD_REFUSED,
        "a complete plugin takes no uploads"
    );

    // From the activation height the node makes format 3 with the code from state.
    while hashes.len() <= 12 {
        block(&node, &mut hashes, &[]);
    }
    assert!(
        node.list_snapshots().iter().any(|s| s.format == 3 && s.height >= 8),
        "{:?}",
        node.list_snapshots()
    );
    let approval = node.query("/key", format_key(3).as_bytes());
    let approval = FormatApproval::parse("k", std::str::from_utf8(&approval.value).unwrap()).unwrap();
    assert_eq!((approval.proposal, approval.name.as_str()), (1, "brotli"));
}

#[test]
fn uploads_that_cannot_complete_a_plugin_are_refused_with_their_own_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, mut hashes) = genesis(&tmp.path().join("source"));
    let v = validators();
    let mut n = Nonces(&node);
    let junk: Vec<u8> = (0..20_000u32).map(|i| (i * 31 % 253) as u8).collect();
    // Proposal 1: junk that is no plugin. Proposal 2: pieces named right, the whole SHA-256 wrong.
    let (not_a_plugin, _) = by_hash(&junk, 40, 16 * 1024, 40);
    let (_, mut wrong_whole) = by_hash(&junk, 41, 16 * 1024, 40);
    wrong_whole.sha256 = [7; 32];
    let gzip = builtin("gzip");
    let codes = block(
        &node,
        &mut hashes,
        &[
            n.sign(&v[0], not_a_plugin),
            n.sign(&v[1], Action::ProposeHash(wrong_whole)),
            n.sign(&v[2], proposal(&gzip, 2, 40)), // inline: proposal 3
        ],
    );
    assert_eq!(codes, [0, 0, 0]);
    let (first, second) = junk.split_at(16 * 1024);
    let codes = block(
        &node,
        &mut hashes,
        &[
            n.sign(&key(91), upload(1, 0, first)),
            n.sign(&key(92), upload(2, 0, first)),
            n.sign(&key(93), upload(3, 0, first)),
        ],
    );
    assert_eq!(
        codes,
        [0, 0, code::UPLOAD_REFUSED],
        "an inline proposal takes no uploads"
    );
    let codes = block(
        &node,
        &mut hashes,
        &[
            n.sign(&key(91), upload(1, 1, second)),
            n.sign(&key(92), upload(2, 1, second)),
        ],
    );
    assert_eq!(codes, [code::PLUGIN_REFUSED, code::UPLOAD_MISMATCH]);
    let status = gov(&node);
    assert_eq!(
        status["proposals"][0]["upload"]["arrived"], 1,
        "the refused last piece is not kept"
    );
    assert_eq!(status["proposals"][1]["upload"]["complete"], false);
}

#[test]
fn proposals_by_hash_are_bounded_in_size_pieces_and_pending_code() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, mut hashes) = genesis(&tmp.path().join("source"));
    let v = validators();
    let mut n = Nonces(&node);
    // A proposal names sizes and hashes only, so limits are checked on the claims.
    let claim = |format: u32, bytes: u64, piece_bytes: u32| {
        let pieces = bytes.div_ceil(u64::from(piece_bytes)) as usize;
        Action::ProposeHash(tx::HashProposal {
            format,
            sha256: [format as u8; 32],
            bytes,
            piece_bytes,
            piece_sha256: vec![[1; 32]; pieces],
            activation_delay: 2,
            expires_after: 100,
        })
    };
    let too_big = claim(50, tx::MAX_UPLOADED_PLUGIN_BYTES + 1, 512 * 1024);
    let too_many_pieces = claim(51, 257 * 16 * 1024, 16 * 1024);
    let bad_piece = claim(52, 100_000, 1000);
    let half = statesnap::node::governance::MAX_PENDING_BYTES / 2;
    let codes = block(
        &node,
        &mut hashes,
        &[
            n.sign(&v[0], too_big),
            n.sign(&v[1], too_many_pieces),
            n.sign(&v[2], bad_piece),
            n.sign(&v[3], claim(53, half, 512 * 1024)),
        ],
    );
    assert_eq!(
        codes,
        [code::PLUGIN_TOO_LARGE, code::TOO_MANY_PIECES, code::GOVERNANCE, 0]
    );
    // Bytes: a second half fills the budget, one more byte is refused.
    let codes = block(
        &node,
        &mut hashes,
        &[
            n.sign(&v[0], claim(54, half, 512 * 1024)),
            n.sign(&v[1], claim(55, 1, 16 * 1024)),
        ],
    );
    assert_eq!(codes, [0, code::PENDING_LIMIT]);
    let log = node.check_tx(&n.sign(&v[1], claim(55, 1, 16 * 1024))).log;
    assert!(log.contains("bytes of code"), "{log}");

    // Count: on a fresh chain, eight small proposals fit and the ninth does not.
    let (node, mut hashes) = genesis(&tmp.path().join("fresh"));
    let mut n = Nonces(&node);
    for round in 0..2u32 {
        let txs: Vec<_> = (0..4u32)
            .map(|i| n.sign(&v[i as usize], claim(60 + round * 4 + i, 100, 16 * 1024)))
            .collect();
        assert_eq!(block(&node, &mut hashes, &txs), [0, 0, 0, 0]);
    }
    let ninth = n.sign(&v[0], claim(70, 100, 16 * 1024));
    let refused = node.check_tx(&ninth);
    assert_eq!(refused.code, code::PENDING_LIMIT, "{}", refused.log);
    assert!(refused.log.contains("8 proposals"), "{}", refused.log);
    assert_eq!(gov(&node)["pending_code"]["proposals"].as_array().unwrap().len(), 8);
}

#[test]
fn the_code_of_expired_and_superseded_proposals_leaves_state() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, mut hashes) = genesis(&tmp.path().join("source"));
    let v = validators();
    let mut n = Nonces(&node);
    let gzip = builtin("gzip");
    let brotli = builtin("brotli");
    let gzip_sha = statesnap::plugin::sha256_hex(&gzip);
    let brotli_sha = statesnap::plugin::sha256_hex(&brotli);
    let (brotli_by_hash, _) = by_hash(&brotli, 3, 64 * 1024, 3);
    // Height 1: gzip inline (expires after 4), brotli by hash (after 1 + 3).
    let codes = block(
        &node,
        &mut hashes,
        &[n.sign(&v[0], proposal(&gzip, 2, 4)), n.sign(&v[1], brotli_by_hash)],
    );
    assert_eq!(codes, [0, 0]);
    let first_piece = &brotli[..64 * 1024];
    assert_eq!(
        block(&node, &mut hashes, &[n.sign(&key(91), upload(2, 0, first_piece))]),
        [0]
    );
    let (gzip_meta, gzip_piece) = plugin_keys(&gzip_sha);
    let (_, brotli_piece) = plugin_keys(&brotli_sha);
    assert!(has_key(&node, &gzip_meta) && has_key(&node, &gzip_piece) && has_key(&node, &brotli_piece));
    // Heights 3-4: nothing; height 5 is past brotli's expiry (4): its piece goes.
    block(&node, &mut hashes, &[]);
    block(&node, &mut hashes, &[]);
    assert!(has_key(&node, &brotli_piece));
    block(&node, &mut hashes, &[]);
    assert!(!has_key(&node, &brotli_piece), "the expired proposal's piece is gone");
    assert!(!has_key(&node, "statesnap.uploads:2"));
    assert!(has_key(&node, &gzip_meta), "gzip's proposal (expiry 5) is still live");
    assert_eq!(
        node.check_tx(&n.sign(&key(92), upload(2, 1, &brotli[64 * 1024..128 * 1024])))
            .code,
        code::PROPOSAL_EXPIRED
    );
    block(&node, &mut hashes, &[]);
    for key in [&gzip_meta, &gzip_piece] {
        assert!(!has_key(&node, key), "{key} is gone once gzip's proposal expired");
    }
    let status = gov(&node);
    let statuses: Vec<_> = status["proposals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["status"].clone())
        .collect();
    assert_eq!(statuses, ["expired", "expired"]);
    assert_eq!(status["pending_code"]["bytes"], 0);

    // Superseded: gzip proposed twice for format 2 (3 inline, 4 by hash); 3 passes.
    let (gzip_by_hash, _) = by_hash(&gzip, 2, 64 * 1024, 50);
    let codes = block(
        &node,
        &mut hashes,
        &[n.sign(&v[0], proposal(&gzip, 2, 50)), n.sign(&v[1], gzip_by_hash)],
    );
    assert_eq!(codes, [0, 0]);
    let votes: Vec<_> = v[..3].iter().map(|k| n.sign(k, Action::Vote(3))).collect();
    assert_eq!(block(&node, &mut hashes, &votes), [0, 0, 0]);
    let status = gov(&node);
    assert_eq!(status["proposals"][2]["status"], "passed");
    assert_eq!(status["proposals"][3]["status"], "superseded");
    assert_eq!(status["pending_code"]["proposals"], serde_json::json!([]));
    assert!(
        has_key(&node, &gzip_meta),
        "the approved code stays, though the superseded proposal named it too"
    );
    assert_eq!(
        node.check_tx(&n.sign(&v[3], Action::Vote(4))).code,
        code::FORMAT_TAKEN,
        "a superseded proposal takes no votes"
    );
}

#[test]
fn a_plugin_larger_than_a_chunk_is_approved_by_hash_and_shipped_in_several_chunks() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, mut hashes) = genesis(&tmp.path().join("source"));
    let v = validators();
    let mut n = Nonces(&node);
    let big = common::padded_plugin(&builtin("gzip"), 17 << 20);
    const PIECE: usize = 512 * 1024;
    let (action, p) = by_hash(&big, 2, PIECE as u32, 40);
    assert_eq!(block(&node, &mut hashes, &[n.sign(&v[0], action)]), [0]);
    // Height 2: three votes and every piece, from anyone, in one block.
    let mut txs: Vec<_> = v[1..].iter().map(|k| n.sign(k, Action::Vote(1))).collect();
    for (i, piece) in big.chunks(PIECE).enumerate() {
        txs.push(n.sign(&key(100 + i as u8), upload(1, i as u32, piece)));
    }
    assert_eq!(p.pieces() as usize, txs.len() - 3);
    assert_eq!(block(&node, &mut hashes, &txs), vec![0; txs.len()]);
    assert_eq!(gov(&node)["formats"][0]["activation_height"], 4);
    while hashes.len() <= 4 {
        block(&node, &mut hashes, &[]);
    }

    // The snapshot at 4 ships the plugin in its first two chunks.
    let good = offer(&node, &hashes, 4, 2);
    let m = Manifest::decode(&good.metadata).unwrap();
    let approval = m.approval.clone().expect("self-describing");
    assert_eq!((approval.plugin_bytes, approval.plugin_chunks()), (big.len() as u64, 2));
    let parts: Vec<Vec<u8>> = (0..2).map(|i| node.load_snapshot_chunk(4, 2, i)).collect();
    assert_eq!(parts.concat(), big);
    assert_eq!(parts[0].len(), statesnap::snapshot::PLUGIN_PART_BYTES);

    // A node without it: parts in order, each checked, then the state.
    let fresh = open(&tmp.path().join("fresh"), config(""), no_built_ins());
    assert_eq!(fresh.offer_snapshot(&good), OfferAnswer::Accept);
    let retry = |answer: ChunkAnswer| match answer {
        ChunkAnswer::Retry {
            refetch,
            reject_senders,
            ..
        } => (refetch, reject_senders),
        other => panic!("expected a retry, got {other:?}"),
    };
    assert_eq!(
        retry(fresh.apply_snapshot_chunk(1, &parts[1], "early")),
        (vec![0], vec![])
    );
    assert!(matches!(
        fresh.apply_snapshot_chunk(0, &parts[0], "good"),
        ChunkAnswer::Accept
    ));
    assert_eq!(
        retry(fresh.apply_snapshot_chunk(1, &parts[0], "evil")),
        (vec![1], vec!["evil".to_string()])
    );
    assert_eq!(metric(&fresh, "statesnap_shipped_plugins_loaded_total"), 0.0);
    for i in 1..good.chunks {
        let answer = fresh.apply_snapshot_chunk(i, &node.load_snapshot_chunk(4, 2, i), "good");
        assert!(matches!(answer, ChunkAnswer::Accept), "chunk {i}: {answer:?}");
    }
    assert_eq!(fresh.info(), (4, hashes[4]));
    assert_eq!(metric(&fresh, "statesnap_shipped_plugins_loaded_total"), 1.0);
    assert_eq!(
        common::consensus_entries(&tmp.path().join("fresh/state")),
        common::consensus_entries(&tmp.path().join("source/state"))
    );

    // Offline too, and `snapshot verify` skips both plugin chunks.
    let snap = tmp.path().join("source/snapshots/4-2");
    let bar = indicatif::ProgressBar::hidden();
    let summary = statesnap::snapshot::restore_dir(
        &snap,
        &tmp.path().join("offline"),
        hashes[4],
        &no_built_ins(),
        Default::default(),
        &bar,
    )
    .unwrap();
    assert_eq!(summary.root, hashes[4]);
    statesnap::snapshot::verify(&snap).unwrap();
}
