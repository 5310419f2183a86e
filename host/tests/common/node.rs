//! The node in process: its set-up, blocks and offers, shared by the tests
//! of the node (`node.rs`) and of its faults (`faults.rs`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use statesnap::node::{Metrics, Node, NodeConfig, Offer};
use statesnap::protocol::tx::{self, Action, Op, TxBody};
use statesnap::store::{generate, StateStore, StoreKind, XianHdf5Store};

pub const CHAIN: &str = "test-chain";

pub fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

pub fn account(k: &SigningKey) -> [u8; 32] {
    k.verifying_key().to_bytes()
}

pub fn patch(k: &SigningKey, nonce: u64, ops: Vec<Op>) -> Vec<u8> {
    sign(
        TxBody {
            chain_id: CHAIN.into(),
            account: account(k),
            nonce,
            action: Action::Patch(ops),
        },
        k,
    )
}

pub fn sign(body: TxBody, k: &SigningKey) -> Vec<u8> {
    tx::Tx::sign(body, k).unwrap().into_bytes()
}

pub fn set(key: &str, stored: &str) -> Op {
    Op::Set {
        key: key.into(),
        stored: stored.into(),
    }
}

pub fn config(kind: StoreKind, interval: u64) -> NodeConfig {
    let mut c = NodeConfig {
        chain_id: CHAIN.into(),
        store: kind,
        snapshot_interval: interval,
        snapshot_keep_recent: 2,
        checkpoint_interval: 1000,
        ..NodeConfig::default()
    };
    c.snapshot_params.insert("chunk_bytes".into(), "200000".into());
    c
}

pub fn open(home: &Path, config: NodeConfig) -> Node {
    Node::open(home, config, super::registry(), Arc::new(Metrics::new())).unwrap()
}

/// A genesis home of `keys` generated keys.
pub fn genesis_home(dir: &Path, keys: u64) -> PathBuf {
    let home = dir.join("genesis");
    let mut store = XianHdf5Store::create(&home).unwrap();
    generate::generate(&mut store, keys, 3, |_| {}).unwrap();
    store.flush().unwrap();
    home
}

pub fn app_state(import: &Path) -> Vec<u8> {
    serde_json::json!({
        "import_home": import,
        "entries": [{"key": "currency.balances:genesis", "stored": "{\"__fixed__\":\"1000\"}"}],
    })
    .to_string()
    .into_bytes()
}

/// A node with a genesis state; returns it and its app hash per height.
pub fn started(kind: StoreKind, home: &Path, genesis: &Path, interval: u64) -> (Node, Vec<[u8; 32]>) {
    let node = open(home, config(kind, interval));
    let h0 = node
        .init_chain(CHAIN, 1, &app_state(genesis), &[([9; 32], 10)])
        .unwrap();
    (node, vec![h0])
}

/// Runs block `height` with `txs` through FinalizeBlock and Commit.
pub fn block(node: &Node, height: u64, txs: &[Vec<u8>]) -> (Vec<u32>, [u8; 32]) {
    let (outcomes, app_hash) = node.finalize_block(height, txs).unwrap();
    node.commit().unwrap();
    (outcomes.iter().map(|o| o.code).collect(), app_hash)
}

/// CometBFT's offer of `node`'s snapshot of `height`, trusting `app_hash`.
pub fn offer_of(node: &Node, height: u64, app_hash: [u8; 32]) -> Offer {
    let s = node
        .list_snapshots()
        .into_iter()
        .find(|s| s.height == height)
        .expect("snapshot exists");
    Offer {
        height: s.height,
        format: s.format,
        chunks: s.chunks,
        hash: s.hash.to_vec(),
        metadata: s.metadata,
        trusted_app_hash: app_hash.to_vec(),
    }
}

/// Every file of a directory, by name, with its bytes.
pub fn files_of(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().to_string(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    assert!(files.len() > 2, "{}: {} files", dir.display(), files.len());
    files
}

/// The unfinished snapshot directories in a node home's `snapshots/`.
pub fn unfinished_snapshots(home: &Path) -> Vec<String> {
    std::fs::read_dir(home.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(".tmp-"))
        .collect()
}

/// Starts `node` from `genesis` and runs `blocks` empty blocks, waiting for
/// each snapshot job (one at a time, so no height is skipped for being
/// busy); the heights of the snapshots it then lists.
pub fn run_empty_blocks(node: &Node, genesis: &Path, blocks: u64) -> Vec<u64> {
    node.init_chain(CHAIN, 1, &app_state(genesis), &[([9; 32], 10)])
        .unwrap();
    for h in 1..=blocks {
        block(node, h, &[]);
        node.wait_for_snapshots();
    }
    node.list_snapshots().iter().map(|s| s.height).collect()
}
