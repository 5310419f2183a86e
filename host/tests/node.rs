//! The node in process, without CometBFT: blocks, transactions, crash
//! recovery, background snapshots, and every answer of the snapshot calls,
//! each on both stores (LMDB and HDF5).

#[macro_use]
mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use statesnap::node::{chain::Chain, ChunkAnswer, Metrics, Node, NodeConfig, Offer, OfferAnswer, QueryCode};
use statesnap::protocol::tx::{self, Action, Op, TxBody};
use statesnap::snapshot::{Manifest, SnapshotDir};
use statesnap::store::{root, HomeStore, StateStore, StoreKind};

use common::node::*;

on_both_stores!(
    blocks_apply_signed_patches_and_the_app_hash_is_the_state_root,
    check_tx_admits_consecutive_nonces_until_commit,
    committed_blocks_survive_a_crash_before_the_checkpoint,
    background_snapshots_hold_their_height_while_blocks_go_on,
    state_sync_restores_a_snapshot_and_answers_every_case,
    a_snapshot_of_another_state_is_rejected_at_its_first_chunk,
    a_view_reads_its_height_after_later_blocks,
    a_clean_stop_saves_the_treap_for_a_fast_start,
    a_snapshot_job_whose_plugin_traps_leaves_nothing_and_the_next_runs,
);

fn blocks_apply_signed_patches_and_the_app_hash_is_the_state_root(kind: StoreKind) {
    let tmp = tempfile::tempdir().unwrap();
    let genesis = genesis_home(tmp.path(), 500);
    let home = tmp.path().join("node");
    let (node, _) = started(kind, &home, &genesis, 0);
    let alice = key(1);
    let bob = key(2);
    let txs = vec![
        patch(
            &alice,
            0,
            vec![set("con_a.x:1", "{\"__fixed__\":\"1.50\"}"), set("con_a.y", "[1,2]")],
        ),
        patch(&alice, 1, vec![Op::Delete { key: "con_a.y".into() }]),
        patch(&alice, 1, vec![set("con_a.z", "1")]), // replayed nonce
        patch(&bob, 0, vec![set("__latest_block.height", "5")]), // reserved key
        patch(&bob, 0, vec![set("statesnap.validators:x", "5")]), // reserved contract
        b"not a transaction".to_vec(),
        patch(&bob, 0, vec![set("con_b.v", "\"hi\"")]),
    ];
    let (codes, app_hash) = block(&node, 1, &txs);
    assert_eq!(codes[0], 0);
    assert_eq!(codes[1], 0);
    assert_ne!(codes[2], 0, "a replayed nonce is refused");
    assert_ne!(codes[3], 0, "run-state keys are reserved");
    assert_ne!(codes[4], 0, "the statesnap contract is reserved");
    assert_ne!(codes[5], 0, "garbage is refused");
    assert_eq!(codes[6], 0);
    assert_eq!(node.info(), (1, app_hash));
    let get = |k: &str| {
        let a = node.query("/key", k.as_bytes());
        (a.code == QueryCode::Found).then(|| String::from_utf8(a.value).unwrap())
    };
    assert_eq!(get("con_a.x:1").as_deref(), Some("{\"__fixed__\":\"1.50\"}"));
    assert_eq!(get("con_a.y"), None);
    assert_eq!(get("con_b.v").as_deref(), Some("\"hi\""));
    assert_eq!(get(&tx::nonce_key(&account(&alice))).as_deref(), Some("2"));
    assert_eq!(
        get(&format!("statesnap.validators:{}", hex::encode([9u8; 32]))).as_deref(),
        Some("10")
    );
    assert_eq!(node.query("/key", b"con_a.y").code, QueryCode::NoValue);
    assert_eq!(node.query("/nope", b"").code, QueryCode::UnknownPath);
    // The app hash is the Xian state root of the whole state on disk.
    drop(node);
    let root = root::root_of_unsorted(
        common::consensus_entries(&home.join("state"))
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    )
    .unwrap();
    assert_eq!(root, app_hash);
    // And the node comes back at the same height and hash.
    let node = open(&home, config(kind, 0));
    assert_eq!(node.info(), (1, app_hash));
}

fn check_tx_admits_consecutive_nonces_until_commit(kind: StoreKind) {
    let tmp = tempfile::tempdir().unwrap();
    let genesis = genesis_home(tmp.path(), 10);
    let (node, _) = started(kind, &tmp.path().join("node"), &genesis, 0);
    let a = key(3);
    assert_eq!(node.check_tx(&patch(&a, 0, vec![set("c.k", "1")])).code, 0);
    assert_eq!(node.check_tx(&patch(&a, 1, vec![set("c.k", "2")])).code, 0);
    assert_ne!(node.check_tx(&patch(&a, 1, vec![set("c.k", "3")])).code, 0);
    assert_ne!(node.check_tx(&patch(&a, 5, vec![set("c.k", "3")])).code, 0);
    let wrong_chain = sign(
        TxBody {
            chain_id: "other".into(),
            account: account(&a),
            nonce: 2,
            action: Action::Patch(vec![set("c.k", "1")]),
        },
        &a,
    );
    assert_ne!(node.check_tx(&wrong_chain).code, 0);
    assert!(!node.process_proposal(&[wrong_chain]));
    assert!(
        node.process_proposal(&[patch(&a, 9, vec![set("c.k", "1")])]),
        "nonces are not a proposal's business"
    );
    // After a commit the mempool nonces start again from the state.
    block(&node, 1, &[patch(&a, 0, vec![set("c.k", "1")])]);
    assert_eq!(node.check_tx(&patch(&a, 1, vec![set("c.k", "2")])).code, 0);
}

fn committed_blocks_survive_a_crash_before_the_checkpoint(kind: StoreKind) {
    let tmp = tempfile::tempdir().unwrap();
    let genesis = genesis_home(tmp.path(), 200);
    let home = tmp.path().join("node");
    let (node, _) = started(kind, &home, &genesis, 0);
    // The state files as they were at the genesis checkpoint.
    let at_genesis = tmp.path().join("at-genesis");
    common::copy_tree(&home.join("state"), &at_genesis);
    let a = key(4);
    let mut last = [0; 32];
    for h in 1..=3u64 {
        let (codes, hash) = block(&node, h, &[patch(&a, h - 1, vec![set(&format!("con.k:{h}"), "1")])]);
        assert_eq!(codes, [0]);
        last = hash;
    }
    let crashed = match kind {
        // A crash after the log was written but before any HDF5 write
        // reached the disk: old files, new log.
        StoreKind::Hdf5 => {
            std::fs::copy(
                home.join("state").join(statesnap::node::chain::WAL_FILE),
                at_genesis.join(statesnap::node::chain::WAL_FILE),
            )
            .unwrap();
            at_genesis
        }
        // LMDB: every commit is durable on its own (no log): the files as a
        // crash right after block 3's commit leaves them.
        StoreKind::Lmdb => {
            assert!(!home.join("state").join(statesnap::node::chain::WAL_FILE).exists());
            let after = tmp.path().join("after-3");
            common::copy_tree(&home.join("state"), &after);
            after
        }
    };
    let chain = Chain::open(&crashed, 1000, kind).unwrap();
    assert_eq!((chain.height(), chain.app_hash()), (3, last));
    assert_eq!(chain.get("con.k:2").unwrap().as_deref(), Some("1"));
    drop(chain);
    // State that does not match its record is refused, with advice.
    let mut store = HomeStore::open(&crashed).unwrap();
    assert_eq!(store.kind(), kind);
    store.write_batch(&[("con.k:1".into(), Some("2".into()))]).unwrap();
    store.flush().unwrap();
    drop(store);
    let err = format!(
        "{:#}",
        Chain::open(&crashed, 1000, kind).err().expect("damaged state refused")
    );
    assert!(
        err.contains("does not match its recorded app hash") && err.contains("state sync"),
        "{err}"
    );
}

/// Snapshots are built in the background from the state of their height
/// while later blocks overwrite and delete its keys.
fn background_snapshots_hold_their_height_while_blocks_go_on(kind: StoreKind) {
    let tmp = tempfile::tempdir().unwrap();
    let genesis = genesis_home(tmp.path(), 20_000);
    let home = tmp.path().join("node");
    let (node, mut hashes) = started(kind, &home, &genesis, 3);
    let genesis_keys: Vec<String> = common::consensus_entries(&genesis)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let a = key(5);
    for h in 1..=8u64 {
        // Each block rewrites and deletes genesis keys the snapshot of
        // height 3 (and 6) is still reading.
        let ops = (0..40)
            .map(|i| {
                let k = &genesis_keys[((h * 997 + i * 131) as usize) % genesis_keys.len()];
                if i % 4 == 0 {
                    Op::Delete { key: k.clone() }
                } else if k.starts_with("__") {
                    set("con.filler", "1")
                } else {
                    set(k, &format!("\"block {h}\""))
                }
            })
            .filter(|op| !matches!(op, Op::Delete { key } if key.starts_with("__")))
            .collect::<Vec<_>>();
        let mut ops = ops;
        ops.sort_by(|x, y| op_key(x).cmp(op_key(y)));
        ops.dedup_by(|x, y| op_key(x) == op_key(y));
        let (codes, hash) = block(&node, h, &[patch(&a, h - 1, ops)]);
        assert_eq!(codes, [0], "block {h}");
        hashes.push(hash);
    }
    node.wait_for_snapshots();
    // Height 3's snapshot was built while blocks 4… ran; height 6's too, or
    // it was skipped because 3's was still running.
    let snaps = node.list_snapshots();
    let heights: Vec<u64> = snaps.iter().map(|s| s.height).collect();
    assert!(heights == [6, 3] || heights == [3], "{heights:?}");
    for s in &snaps {
        let dir = home.join("snapshots").join(format!("{}-{}", s.height, s.format));
        let manifest = SnapshotDir::open(&dir).unwrap().manifest().unwrap();
        assert_eq!(manifest.app_hash, hashes[s.height as usize], "height {}", s.height);
        assert!(manifest.chunks.len() > 1, "small chunk_bytes gives several chunks");
        let restored = tmp.path().join(format!("restored-{}", s.height));
        statesnap::snapshot::restore_dir(
            &dir,
            &restored,
            hashes[s.height as usize],
            &common::registry(),
            Default::default(),
            &indicatif::ProgressBar::hidden(),
        )
        .unwrap();
    }
}

fn op_key(op: &Op) -> &str {
    match op {
        Op::Set { key, .. } | Op::Delete { key } => key,
    }
}

/// A source node with snapshots, and what a fresh node needs to restore one.
struct Source {
    _tmp: tempfile::TempDir,
    node: Node,
    home: PathBuf,
    hashes: Vec<[u8; 32]>,
    fresh: PathBuf,
}

fn source(kind: StoreKind, keys: u64) -> Source {
    let tmp = tempfile::tempdir().unwrap();
    let genesis = genesis_home(tmp.path(), keys);
    let home = tmp.path().join("source");
    let (node, mut hashes) = started(kind, &home, &genesis, 2);
    let a = key(6);
    for h in 1..=4u64 {
        hashes.push(block(&node, h, &[patch(&a, h - 1, vec![set(&format!("con.h:{h}"), "1")])]).1);
        node.wait_for_snapshots();
    }
    let fresh = tmp.path().join("fresh");
    Source {
        node,
        home,
        hashes,
        fresh,
        _tmp: tmp,
    }
}

impl Source {
    fn offer(&self, height: u64) -> Offer {
        offer_of(&self.node, height, self.hashes[height as usize])
    }

    fn chunk(&self, offer: &Offer, i: u32) -> Vec<u8> {
        self.node.load_snapshot_chunk(offer.height, offer.format, i)
    }
}

fn with_manifest(offer: &Offer, edit: impl FnOnce(&mut Manifest)) -> Offer {
    let mut m = Manifest::decode(&offer.metadata).unwrap();
    edit(&mut m);
    Offer {
        hash: m.hash().to_vec(),
        metadata: m.encode(),
        ..offer.clone()
    }
}

fn state_sync_restores_a_snapshot_and_answers_every_case(kind: StoreKind) {
    let src = source(kind, 5_000);
    let node = open(&src.fresh, config(kind, 2));
    assert_eq!(node.info().0, 0);
    let good = src.offer(4);
    assert!(good.chunks > 1);

    // OfferSnapshot refusals.
    let reject = |o: &Offer| node.offer_snapshot(o);
    assert!(matches!(
        reject(&Offer {
            metadata: b"junk".to_vec(),
            ..good.clone()
        }),
        OfferAnswer::Reject(_)
    ));
    assert!(matches!(
        reject(&Offer {
            hash: vec![0; 32],
            ..good.clone()
        }),
        OfferAnswer::Reject(_)
    ));
    assert!(matches!(
        reject(&Offer {
            height: 5,
            ..good.clone()
        }),
        OfferAnswer::Reject(_)
    ));
    let other_chain = with_manifest(&good, |m| m.chain_id = "other".into());
    assert!(matches!(reject(&other_chain), OfferAnswer::Reject(w) if w.contains("other")));
    let wrong_trust = Offer {
        trusted_app_hash: src.hashes[3].to_vec(),
        ..good.clone()
    };
    assert!(matches!(reject(&wrong_trust), OfferAnswer::Reject(w) if w.contains("trusts")));
    let unknown_plugin = with_manifest(&good, |m| m.plugin.sha256 = [7; 32]);
    assert!(matches!(reject(&unknown_plugin), OfferAnswer::RejectFormat(_)));

    // A chunk before any accepted offer.
    assert!(matches!(
        node.apply_snapshot_chunk(0, b"x", "peer"),
        ChunkAnswer::Abort(_)
    ));

    // The good snapshot, with a corrupt chunk from one peer on the way.
    assert_eq!(node.offer_snapshot(&good), OfferAnswer::Accept);
    let mut bad = src.chunk(&good, 0);
    bad[10] ^= 1;
    match node.apply_snapshot_chunk(0, &bad, "evil-peer") {
        ChunkAnswer::Retry {
            refetch,
            reject_senders,
            ..
        } => {
            assert_eq!(refetch, [0]);
            assert_eq!(reject_senders, ["evil-peer"]);
        }
        other => panic!("{other:?}"),
    }
    for i in 0..good.chunks {
        assert!(matches!(
            node.apply_snapshot_chunk(i, &src.chunk(&good, i), "good-peer"),
            ChunkAnswer::Accept
        ));
    }
    assert_eq!(node.info(), (4, src.hashes[4]));
    assert_eq!(
        common::consensus_entries(&src.fresh.join("state")),
        common::consensus_entries(&src.home.join("state"))
    );
    let metrics = node.metrics().render();
    let metric = |n: &str| statesnap::node::metrics::read_metric(&metrics, n);
    assert_eq!(metric("statesnap_restored_snapshot_height"), Some(4.0));
    assert_eq!(metric("statesnap_rejected_senders_total"), Some(1.0));
    assert!(
        metric("statesnap_restore_seconds").is_some_and(|s| s > 0.0),
        "{metrics}"
    );
    assert!(metric("statesnap_restore_bytes").is_some_and(|b| b > 1000.0));
    assert!(common::no_leftovers(&src.fresh.join("state")));

    // The restored node runs the next block exactly as the source did.
    let (codes, hash) = {
        let (o, h) = node
            .finalize_block(5, &[patch(&key(6), 4, vec![set("con.h:5", "1")])])
            .unwrap();
        node.commit().unwrap();
        (o.iter().map(|o| o.code).collect::<Vec<_>>(), h)
    };
    let (src_codes, src_hash) = block(&src.node, 5, &[patch(&key(6), 4, vec![set("con.h:5", "1")])]);
    assert_eq!((codes, hash), (src_codes, src_hash));

    // A snapshot at or below the node's height is refused now.
    assert!(matches!(node.offer_snapshot(&src.offer(4)), OfferAnswer::Reject(w) if w.contains("not above")));
    assert!(
        node.load_snapshot_chunk(99, 1, 0).is_empty(),
        "unknown snapshot: empty chunk"
    );
    assert!(node.load_snapshot_chunk(4, 1, 9999).is_empty());
}

/// Chunks whose hashes match the manifest but whose entries are another
/// state than the trusted app hash's: the first chunk's range proof fails, so
/// the snapshot is refused there, its sender rejected, nothing of it written.
fn a_snapshot_of_another_state_is_rejected_at_its_first_chunk(kind: StoreKind) {
    let src = source(kind, 20_000);
    let node = open(&src.fresh, config(kind, 0));
    let good = src.offer(4);
    assert!(good.chunks > 1, "the test needs a snapshot of several chunks");
    // Claim the height-4 snapshot holds the height-3 state: the offer's
    // trusted hash and the manifest agree, the chunks are the real ones.
    let forged = with_manifest(&good, |m| m.app_hash = src.hashes[3]);
    let forged = Offer {
        trusted_app_hash: src.hashes[3].to_vec(),
        ..forged
    };
    assert_eq!(node.offer_snapshot(&forged), OfferAnswer::Accept);
    let staging = src.fresh.join(".state.statesnap-restore-staging");
    match node.apply_snapshot_chunk(0, &src.chunk(&good, 0), "peer") {
        ChunkAnswer::RejectSnapshot { reason, reject_senders } => {
            assert!(reason.contains("chunk 0") && reason.contains("forged"), "{reason}");
            assert_eq!(reject_senders, vec!["peer".to_string()]);
        }
        other => panic!("chunk 0 of a forged snapshot: {other:?}"),
    }
    let metrics = node.metrics().render();
    assert_eq!(
        statesnap::node::metrics::read_metric(&metrics, "statesnap_forged_chunks_total"),
        Some(1.0),
        "{metrics}"
    );
    assert!(!staging.exists(), "the staging home was cleared");
    assert_eq!(node.info().0, 0);
}

/// The mechanism under background snapshots, deterministically: a view
/// taken at height H reads the height-H state after later blocks changed,
/// added and deleted its keys.
fn a_view_reads_its_height_after_later_blocks(kind: StoreKind) {
    let tmp = tempfile::tempdir().unwrap();
    let genesis = genesis_home(tmp.path(), 2_000);
    let home = tmp.path().join("node");
    let (node, hashes) = started(kind, &home, &genesis, 0);
    drop(node);
    let mut chain = Chain::open(&home.join("state"), 1000, kind).unwrap();
    let expected = common::consensus_entries(&home.join("state"));
    let view = chain.view().unwrap();
    assert_eq!(view.app_hash, hashes[0]);
    let a = key(8);
    let conformance = statesnap::node::governance::Conformance::new().unwrap();
    for h in 1..=3u64 {
        let ops: Vec<Op> = expected
            .iter()
            .skip(h as usize * 7)
            .step_by(50)
            .filter(|(k, _)| !k.starts_with("__"))
            .enumerate()
            .map(|(i, (k, _))| {
                if i % 3 == 0 {
                    Op::Delete { key: k.clone() }
                } else {
                    set(k, &format!("{h}"))
                }
            })
            .chain([set(&format!("con.new:{h}"), "1")])
            .collect();
        let prepared = statesnap::node::execute::prepare(&patch(&a, h - 1, ops), CHAIN, &conformance).unwrap();
        let (outcomes, _) = chain.finalize_block(h, &[prepared], &conformance).unwrap();
        assert_eq!(outcomes[0].code, 0, "{}", outcomes[0].log);
        chain.commit().unwrap();
    }
    let seen: Vec<(String, String)> = view
        .entries()
        .unwrap()
        .map(|e| e.map(|e| (e.key, e.stored)).unwrap())
        .collect();
    assert_eq!(seen, expected);
    assert_ne!(
        common::consensus_entries(&home.join("state")),
        expected,
        "the live state did move on"
    );
}

/// A clean stop saves the treap; the next start uses it (once) instead of
/// reading the whole state, and runs the next block exactly as a node that
/// rebuilt it from the state.
fn a_clean_stop_saves_the_treap_for_a_fast_start(kind: StoreKind) {
    let tmp = tempfile::tempdir().unwrap();
    let genesis = genesis_home(tmp.path(), 1_000);
    let home = tmp.path().join("node");
    let (node, _) = started(kind, &home, &genesis, 0);
    let a = key(9);
    for h in 1..=3u64 {
        block(&node, h, &[patch(&a, h - 1, vec![set(&format!("con.s:{h}"), "1")])]);
    }
    let before = node.info();
    node.shutdown().unwrap();
    drop(node);
    let saved = home.join("state").join(statesnap::node::treap_file::FILE);
    assert!(saved.exists());
    // The same state without the saved treap, for comparison.
    let rebuilt_home = tmp.path().join("rebuilt");
    common::copy_tree(&home, &rebuilt_home);
    std::fs::remove_file(rebuilt_home.join("state").join(statesnap::node::treap_file::FILE)).unwrap();

    let node = open(&home, config(kind, 0));
    assert_eq!(node.info(), before);
    assert!(!saved.exists(), "the saved treap is used once");
    let rebuilt = open(&rebuilt_home, config(kind, 0));
    assert_eq!(rebuilt.info(), before);
    let next = [patch(
        &a,
        3,
        vec![set("con.s:4", "1"), Op::Delete { key: "con.s:1".into() }],
    )];
    assert_eq!(block(&node, 4, &next), block(&rebuilt, 4, &next));
}

/// Supervised snapshot jobs: jobs whose plugin traps are logged and counted,
/// leave no unfinished snapshot behind, and the next interval runs (no
/// "skipping": the service is idle). (A job that panics: `faults.rs`.)
fn a_snapshot_job_whose_plugin_traps_leaves_nothing_and_the_next_runs(kind: StoreKind) {
    let tmp = tempfile::tempdir().unwrap();
    let genesis = genesis_home(tmp.path(), 20_000);
    let run = |home: &Path, config: NodeConfig, blocks: u64| -> (Vec<u64>, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        let node = Node::open(home, config, common::registry(), metrics.clone()).unwrap();
        (run_empty_blocks(&node, &genesis, blocks), metrics)
    };

    // A plugin that traps in every write: every interval tries, fails
    // cleanly and leaves nothing.
    let home = tmp.path().join("traps");
    let mut c = config(kind, 2);
    c.snapshot_plugin = common::testplugin("trap").display().to_string();
    c.snapshot_params.clear();
    let (heights, metrics) = run(&home, c, 6);
    assert!(heights.is_empty(), "{kind}: {heights:?}");
    assert_eq!(
        metrics.snapshots_failed.get(),
        3,
        "{kind}: heights 2, 4 and 6 each failed"
    );
    assert_eq!(
        metrics.snapshot_jobs_panicked.get(),
        0,
        "{kind}: a trap is an error, not a panic"
    );
    assert!(
        unfinished_snapshots(&home).is_empty(),
        "{kind}: {:?}",
        unfinished_snapshots(&home)
    );
}
