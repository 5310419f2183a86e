//! Every answer state sync gives, from real snapshots (made by the built-in
//! zstd plugin from a generated state) and from each kind of refusal.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use indicatif::ProgressBar;

use super::*;
use crate::plugin::{Limits, PluginEngine};
use crate::snapshot::{self, Codec, CreateOptions, Manifest, PluginRef, SnapshotDir};
use crate::store::generate::generate;
use crate::store::memory::MemoryStore;
use crate::store::range_proof::ProofError;
use crate::store::root::state_root_of;
use crate::store::HomeStore;

const CHAIN: &str = "statesync-test";
const HEIGHT: u64 = 7;
const PEER: &str = "peer-a";

/// A snapshot on disk and the offer a peer would make of it.
struct Served {
    offer: Offer,
    chunks: Vec<Vec<u8>>,
    app_hash: [u8; 32],
}

impl Served {
    /// Re-signs the manifest after chunk `index` was altered, as a forger
    /// serving its own snapshot would: hashes and manifest agree.
    fn forge_chunk(&mut self, index: usize, alter: impl FnOnce(&mut Vec<u8>)) {
        alter(&mut self.chunks[index]);
        let mut manifest = Manifest::decode(&self.offer.metadata).unwrap();
        manifest.chunks[index] = crate::plugin::sha256(&self.chunks[index]);
        manifest.snapshot_bytes = self.chunks.iter().map(|c| c.len() as u64).sum();
        self.set_manifest(&manifest);
    }

    fn set_manifest(&mut self, manifest: &Manifest) {
        self.offer.metadata = manifest.encode();
        self.offer.hash = manifest.hash().to_vec();
    }
}

fn registry(built_ins: bool) -> Arc<PluginRegistry> {
    Arc::new(PluginRegistry::new(
        PluginEngine::new(Limits::default()).unwrap(),
        built_ins,
    ))
}

/// A generated state of 400 keys, snapshotted by zstd in chunks of about
/// 1,000 bytes (several state chunks).
fn served(dir: &Path) -> Served {
    let mut store = MemoryStore::new();
    generate(&mut store, 400, 9, |_| {}).unwrap();
    let (app_hash, _) = state_root_of(&store, || {}).unwrap();
    let plugin = PluginRegistry::new(PluginEngine::new(Limits::default()).unwrap(), true)
        .resolve("zstd")
        .unwrap();
    let params = plugin
        .resolve_params(&[("chunk_bytes".to_string(), "1000".to_string())])
        .unwrap();
    let d = plugin.description();
    let report = snapshot::create(
        &store,
        Codec::plugin(&plugin, &params).unwrap(),
        PluginRef {
            sha256: plugin.sha256(),
            name: d.name.clone(),
            version: d.version.clone(),
        },
        d.format,
        &CreateOptions::new(CHAIN, HEIGHT, params),
        &dir.join("snapshots"),
        &ProgressBar::hidden(),
    )
    .unwrap();
    let snap = SnapshotDir::open(&report.dir).unwrap();
    let manifest = snap.manifest().unwrap();
    assert!(manifest.chunks.len() >= 4, "the test wants several state chunks");
    assert_eq!(manifest.app_hash, app_hash);
    let chunks = (0..manifest.chunks.len() as u32)
        .map(|i| std::fs::read(snap.chunk_path(i)).unwrap())
        .collect();
    Served {
        offer: Offer {
            height: HEIGHT,
            format: manifest.format,
            chunks: manifest.chunks.len() as u32,
            hash: manifest.hash().to_vec(),
            metadata: manifest.encode(),
            trusted_app_hash: app_hash.to_vec(),
        },
        chunks,
        app_hash,
    }
}

struct Node {
    sync: StateSync,
    metrics: Arc<Metrics>,
    home: PathBuf,
    _dir: tempfile::TempDir,
}

fn node(built_ins: bool) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new());
    Node {
        sync: StateSync::new(registry(built_ins), metrics.clone()),
        metrics,
        home: dir.path().join("state"),
        _dir: dir,
    }
}

impl Node {
    fn offer(&mut self, offer: &Offer) -> OfferAnswer {
        let target = Target {
            chain_id: CHAIN,
            height: 0,
            home: &self.home.clone(),
            store: StoreKind::Lmdb,
            treap: true,
        };
        self.sync.offer(offer, &target)
    }

    fn staging_exists(&self) -> bool {
        crate::snapshot::staging_path(&self.home).exists()
    }
}

#[test]
fn an_honest_snapshot_is_accepted_chunk_by_chunk_and_done_with_the_trusted_root() {
    let tmp = tempfile::tempdir().unwrap();
    let s = served(tmp.path());
    let mut n = node(true);
    assert_eq!(n.offer(&s.offer), OfferAnswer::Accept);
    let last = s.chunks.len() - 1;
    for (i, chunk) in s.chunks.iter().enumerate().take(last) {
        assert!(
            matches!(n.sync.apply(i as u32, chunk, PEER), ChunkAnswer::Accept),
            "chunk {i}"
        );
    }
    // A chunk CometBFT fetched again after it was applied changes nothing.
    assert!(matches!(n.sync.apply(0, &s.chunks[0], PEER), ChunkAnswer::Accept));
    let ChunkAnswer::Done(mut verified) = n.sync.apply(last as u32, &s.chunks[last], PEER) else {
        panic!("the last chunk ends the restore")
    };
    assert_eq!(verified.summary().root, s.app_hash);
    assert_eq!(verified.take_treap().unwrap().root_hash(), s.app_hash);
    assert_eq!(n.metrics.restore_chunks_applied.get(), s.chunks.len() as i64);
    let summary = verified.install().unwrap();
    let home = HomeStore::open_read_only(&summary.home).unwrap();
    assert_eq!(state_root_of(&home, || {}).unwrap(), (s.app_hash, summary.entries));
}

#[test]
fn offers_are_answered_by_whose_fault_a_refusal_is() {
    let tmp = tempfile::tempdir().unwrap();
    let s = served(tmp.path());
    let with = |change: &dyn Fn(&mut Offer)| {
        let mut offer = s.offer.clone();
        change(&mut offer);
        offer
    };
    let reject = |answer: OfferAnswer, why: &str| match answer {
        OfferAnswer::Reject(reason) => assert!(reason.contains(why), "{reason}"),
        other => panic!("expected a refusal for {why:?}, got {other:?}"),
    };
    let mut n = node(true);
    reject(
        n.offer(&with(&|o| o.trusted_app_hash = vec![9; 32])),
        "but the light client trusts 0909",
    );
    reject(
        n.offer(&with(&|o| o.hash[0] ^= 1)),
        "is not the SHA-256 of its metadata",
    );
    reject(n.offer(&with(&|o| o.chunks += 1)), "but the offer says height 7");
    reject(n.offer(&with(&|o| o.metadata.push(0))), "manifest is invalid");
    reject(
        n.offer(&with(&|o| o.trusted_app_hash.pop().map(drop).unwrap())),
        "31 bytes",
    );
    let mut other_chain = Manifest::decode(&s.offer.metadata).unwrap();
    other_chain.chain_id = "another".into();
    reject(
        n.offer(&with(&|o| {
            o.metadata = other_chain.encode();
            o.hash = other_chain.hash().to_vec();
        })),
        "not \"statesync-test\"",
    );
    assert_eq!(n.metrics.rejected_snapshots.get(), 6);
    assert!(!n.staging_exists());

    // No plugin for the format: skip the format.
    let mut bare = node(false);
    assert!(matches!(bare.offer(&s.offer), OfferAnswer::RejectFormat(r) if r.contains("does not have")));

    // This node cannot restore into its home: abort.
    let mut broken = node(true);
    std::fs::create_dir_all(&broken.home).unwrap();
    std::fs::write(broken.home.join("notes.txt"), "not a state").unwrap();
    assert!(matches!(broken.offer(&s.offer), OfferAnswer::Abort(r) if r.contains("not a Xian state home")));
    assert_eq!(
        std::fs::read_to_string(broken.home.join("notes.txt")).unwrap(),
        "not a state"
    );
}

#[test]
fn a_corrupt_chunk_is_refetched_from_another_peer_and_the_restore_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let s = served(tmp.path());
    let mut n = node(true);
    assert_eq!(n.offer(&s.offer), OfferAnswer::Accept);
    assert!(matches!(n.sync.apply(0, &s.chunks[0], PEER), ChunkAnswer::Accept));
    let mut bad = s.chunks[1].clone();
    bad[10] ^= 1;
    match n.sync.apply(1, &bad, "liar") {
        ChunkAnswer::Retry {
            refetch,
            reject_senders,
            reason,
        } => {
            assert_eq!((refetch, reject_senders), (vec![1], vec!["liar".to_string()]));
            assert!(reason.contains("the chunk is corrupt or forged"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // Out of turn: ask for the one expected, blame no one.
    match n.sync.apply(3, &s.chunks[3], PEER) {
        ChunkAnswer::Retry {
            refetch,
            reject_senders,
            ..
        } => assert_eq!((refetch, reject_senders), (vec![1], Vec::<String>::new())),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        (n.metrics.rejected_chunks.get(), n.metrics.rejected_senders.get()),
        (1, 1)
    );
    for (i, chunk) in s.chunks.iter().enumerate().skip(1) {
        let answer = n.sync.apply(i as u32, chunk, PEER);
        if i + 1 < s.chunks.len() {
            assert!(matches!(answer, ChunkAnswer::Accept), "chunk {i}: {answer:?}");
        } else {
            assert!(matches!(answer, ChunkAnswer::Done(_)), "chunk {i}: {answer:?}");
        }
    }
}

#[test]
fn a_forged_chunk_rejects_the_snapshot_and_its_sender_before_any_entry_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = served(tmp.path());
    // The last byte of chunk 0's proof (just before its length and magic).
    s.forge_chunk(0, |c| {
        let at = c.len() - 9;
        c[at] ^= 1;
    });
    let mut n = node(true);
    assert_eq!(n.offer(&s.offer), OfferAnswer::Accept);
    match n.sync.apply(0, &s.chunks[0], "forger") {
        ChunkAnswer::RejectSnapshot { reason, reject_senders } => {
            assert_eq!(reject_senders, vec!["forger".to_string()]);
            assert!(reason.contains("the snapshot is forged"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(n.metrics.forged_chunks.get(), 1);
    assert_eq!(n.metrics.restore_entries_written.get(), 0);
    assert!(!n.staging_exists(), "the staging home goes with the snapshot");
    // The session is over: a straggling chunk is a protocol error.
    assert!(matches!(n.sync.apply(1, &s.chunks[1], PEER), ChunkAnswer::Abort(_)));
}

#[test]
fn a_snapshot_that_lies_about_its_size_is_rejected_without_blaming_the_sender() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = served(tmp.path());
    let mut manifest = Manifest::decode(&s.offer.metadata).unwrap();
    manifest.entries = 3;
    s.set_manifest(&manifest);
    let mut n = node(true);
    assert_eq!(n.offer(&s.offer), OfferAnswer::Accept);
    match n.sync.apply(0, &s.chunks[0], PEER) {
        ChunkAnswer::RejectSnapshot { reason, reject_senders } => {
            assert!(reject_senders.is_empty());
            assert!(reason.contains("lies about its size"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!n.staging_exists());
}

#[test]
fn every_fault_has_its_chunk_answer() {
    use crate::snapshot::ManifestError;
    let metrics = Metrics::new();
    let hash = [1u8; 32];
    type Check = fn(&ChunkAnswer) -> bool;
    let table: Vec<(RestoreError, Check)> = vec![
        (
            RestoreError::ChunkHash {
                index: 2,
                expected: hash,
                got: [2; 32],
            },
            |a| matches!(a, ChunkAnswer::Retry { refetch, reject_senders, .. } if refetch == &[2] && reject_senders == &["p"]),
        ),
        (
            RestoreError::Oversized {
                index: 2,
                len: 10,
                limit: 5,
            },
            |a| matches!(a, ChunkAnswer::Retry { refetch, reject_senders, .. } if refetch == &[2] && reject_senders == &["p"]),
        ),
        (
            RestoreError::ChunkOrder { index: 2, expected: 1 },
            |a| matches!(a, ChunkAnswer::Retry { refetch, reject_senders, .. } if refetch == &[1] && reject_senders.is_empty()),
        ),
        (
            RestoreError::Proof {
                index: 2,
                source: ProofError::Root {
                    got: [5; 32],
                    trusted: hash,
                },
            },
            |a| matches!(a, ChunkAnswer::RejectSnapshot { reject_senders, .. } if reject_senders == &["p"]),
        ),
        (
            RestoreError::RootMismatch {
                expected: hash,
                got: [3; 32],
            },
            |a| matches!(a, ChunkAnswer::RejectSnapshot { reject_senders, .. } if reject_senders.is_empty()),
        ),
        (
            RestoreError::Manifest(ManifestError::NoChunks),
            |a| matches!(a, ChunkAnswer::RejectSnapshot { reject_senders, .. } if reject_senders.is_empty()),
        ),
        (
            RestoreError::ShippedPlugin {
                expected: hash,
                got: [4; 32],
            },
            |a| matches!(a, ChunkAnswer::RejectSnapshot { reject_senders, .. } if reject_senders.is_empty()),
        ),
        (
            RestoreError::Store(anyhow::anyhow!("No space left on device")),
            |a| matches!(a, ChunkAnswer::Abort(why) if why.contains("check the disk")),
        ),
    ];
    for (error, expected) in table {
        let answer = chunk_answer(&error, 2, "p", &metrics);
        assert!(expected(&answer), "{error:?} gave {answer:?}");
    }
}
