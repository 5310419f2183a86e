//! Writes the seed inputs of every fuzz target into `fuzz/corpus/<target>/`
//! (`seed-*` files): real manifests, transactions of each kind, the stored
//! values of the shared state-root vectors, framed batches, and chunks of
//! each built-in format. Run again after a format change:
//!
//!   cargo run -p statesnap-fuzz --example seeds

use std::path::{Path, PathBuf};

use statesnap::protocol::account_key;
use statesnap::protocol::tx::{Action, HashProposal, Op, Proposal, Tx, TxBody, Upload};
use statesnap::snapshot::{Manifest, PluginRef, MANIFEST_VERSION};
use statesnap_plugin_sdk::{sample, Format, FormatWriter};

fn corpus(target: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn put(target: &str, name: &str, bytes: &[u8]) {
    std::fs::write(corpus(target).join(format!("seed-{name}")), bytes).unwrap();
}

fn chunks<F: Format>(entries: &[(Vec<u8>, Vec<u8>)], params: &[(String, String)]) -> Vec<Vec<u8>> {
    let mut w = F::writer(params).unwrap();
    let mut out = Vec::new();
    for b in sample::batches(entries, 16 << 10) {
        out.extend(w.write(&b).unwrap());
    }
    out.extend(w.finish().unwrap());
    out
}

fn main() {
    let manifest = Manifest {
        version: MANIFEST_VERSION,
        chain_id: "xian-1".into(),
        height: 42,
        app_hash: [7; 32],
        format: 1,
        plugin: PluginRef {
            sha256: [1; 32],
            name: "zstd".into(),
            version: "1.0.0".into(),
        },
        params: vec![("level".into(), "3".into()), ("chunk_bytes".into(), "4000000".into())],
        chunks: vec![[2; 32], [3; 32], [4; 32]],
        entries: 1000,
        state_bytes: 100_000,
        snapshot_bytes: 40_000,
        approval: None,
        block_time_nanos: None,
    };
    put("manifest", "plain", &manifest.encode());
    let one_chunk = Manifest {
        chunks: vec![[9; 32]],
        params: Vec::new(),
        snapshot_bytes: 100,
        ..manifest.clone()
    };
    put("manifest", "one-chunk", &one_chunk.encode());

    let key = account_key::derive(7, 0);
    let account = key.verifying_key().to_bytes();
    let body = |nonce, action| TxBody {
        chain_id: "fuzz-chain".into(),
        account,
        nonce,
        action,
    };
    let patch = Action::Patch(vec![
        Op::Set {
            key: "con_token.balances:alice".into(),
            stored: "{\"__fixed__\":\"12.5\"}".into(),
        },
        Op::Delete {
            key: "con_token.old".into(),
        },
    ]);
    put("tx", "patch", Tx::sign(body(0, patch), &key).unwrap().bytes());
    put("tx", "vote", Tx::sign(body(1, Action::Vote(3)), &key).unwrap().bytes());
    let wasm: Vec<u8> = b"\0asm\x0d\0\x01\0".iter().copied().cycle().take(4096).collect();
    let propose = Action::Propose(Proposal::new(9, &wasm, 10, 100));
    put("tx", "propose", Tx::sign(body(2, propose), &key).unwrap().bytes());
    let by_hash = Action::ProposeHash(HashProposal::new(9, &wasm, 16 * 1024, 10, 100));
    put("tx", "propose-hash", Tx::sign(body(3, by_hash), &key).unwrap().bytes());
    let upload = Action::Upload(Upload {
        proposal: 4,
        index: 0,
        bytes: wasm[..1024].to_vec(),
    });
    put("tx", "upload", Tx::sign(body(4, upload), &key).unwrap().bytes());

    let vectors: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/vectors/xian-state-root-v2.json"),
        )
        .unwrap(),
    )
    .unwrap();
    // One of each distinct stored value, up to 100 (the corpus test checks
    // every vector against the canonicaliser anyway).
    let mut values = std::collections::BTreeSet::new();
    for case in vectors["cases"].as_array().unwrap() {
        for e in case["entries"].as_array().unwrap() {
            values.insert(e["stored"].as_str().unwrap().to_string());
        }
    }
    for (n, v) in values.iter().take(100).enumerate() {
        put("value", &format!("vector-{n:03}"), v.as_bytes());
    }

    let entries = sample::xian_like(300, 5);
    for (i, b) in sample::batches(&entries, 2 << 10).iter().take(3).enumerate() {
        put("batch", &format!("{i}"), b);
    }
    let case = statesnap_fuzz::proof_case();
    put("range_proof", "true", &case.proof.encode());
    let mut other = case.proof.clone();
    other.suffix.truncate(1);
    put("range_proof", "truncated", &other.encode());

    let small = [("chunk_bytes".to_string(), "8000".to_string())];
    for (i, c) in chunks::<statesnap_plugin_zstd::Zstd>(&entries, &small)
        .iter()
        .take(3)
        .enumerate()
    {
        put("reader_zstd", &format!("{i}"), c);
    }
    for (i, c) in chunks::<statesnap_plugin_gzip::Gzip>(&entries, &small)
        .iter()
        .take(3)
        .enumerate()
    {
        put("reader_gzip", &format!("{i}"), c);
    }
    for (i, c) in chunks::<statesnap_plugin_brotli::Brotli>(&entries, &small)
        .iter()
        .take(3)
        .enumerate()
    {
        put("reader_brotli", &format!("{i}"), c);
    }
    println!("seeds written under fuzz/corpus/");
}
