//! The fuzz targets' bodies: each takes arbitrary bytes and must return
//! without panicking, whatever they are; where the input is accepted, each
//! also checks what must then hold (a decoded manifest re-encodes to the
//! same bytes, say). `fuzz/fuzz_targets/*.rs` (cargo-fuzz, nightly) call
//! these; `tests/corpora.rs` runs every saved corpus input through them on
//! stable, in the default test run. The targets, by name:
//!
//! * `manifest`: snapshot manifest decoding (CometBFT's snapshot metadata);
//! * `tx`: transaction decoding, signature verification and the stateless
//!   rules, and unpacking a proposal's plugin;
//! * `value`: the stored-value canonicaliser the state root hashes;
//! * `batch`: the SDK's framed-entry batch parser;
//! * `range_proof`: decoding a chunk's range proof and checking it against a
//!   fixed state: only the one true proof may pass (a proof has one encoding);
//! * `reader_zstd`, `reader_gzip`, `reader_brotli`: each built-in format's
//!   reader (natively: the same code the wasm plugin runs) on arbitrary
//!   chunks.

use statesnap::protocol::tx::{decode_and_verify, Action};
use statesnap::snapshot::Manifest;
use statesnap::store::range_proof::{RangeProof, RangeProver};
use statesnap::store::root::{leaf_hash, RootBuilder};
use statesnap::store::value::canonical_bytes;
use statesnap_plugin_sdk::{Format, FormatReader};

/// A target's body.
pub type Target = fn(&[u8]);

/// Every target, by name, for the corpus test and `scripts/fuzz.sh`.
pub const TARGETS: &[(&str, Target)] = &[
    ("manifest", manifest),
    ("tx", tx),
    ("value", value),
    ("batch", batch),
    ("range_proof", range_proof),
    ("reader_zstd", reader_zstd),
    ("reader_gzip", reader_gzip),
    ("reader_brotli", reader_brotli),
];

/// The fixed state `range_proof` checks against: 64 keys, split after 23.
pub struct ProofCase {
    pub prefix: RootBuilder,
    pub root: [u8; 32],
    pub proof: RangeProof,
}

pub fn proof_case() -> &'static ProofCase {
    static CASE: std::sync::OnceLock<ProofCase> = std::sync::OnceLock::new();
    CASE.get_or_init(|| {
        let mut prover = RangeProver::new();
        let mut prefix = RootBuilder::new();
        for i in 0..64u32 {
            let key = format!("con.k:{i:03}");
            let leaf = leaf_hash(key.as_bytes(), i.to_string().as_bytes());
            prover.push(key.as_bytes(), leaf);
            if i < 23 {
                prefix.push_leaf(&key, leaf).unwrap();
            }
            if i == 22 {
                prover.split();
            }
        }
        let (root, mut proofs) = prover.finish();
        ProofCase {
            prefix,
            root,
            proof: proofs.remove(0),
        }
    })
}

pub fn range_proof(data: &[u8]) {
    if let Ok(proof) = RangeProof::decode(data) {
        assert_eq!(proof.encode(), data, "an accepted proof re-encodes to its bytes");
        let case = proof_case();
        if proof.verify(&case.prefix, &case.root).is_ok() {
            assert_eq!(proof, case.proof, "only the true proof passes");
        }
    }
}

pub fn manifest(data: &[u8]) {
    if let Ok(m) = Manifest::decode(data) {
        // Only the canonical encoding is accepted: one manifest, one hash.
        assert_eq!(m.encode(), data, "an accepted manifest re-encodes to its bytes");
        assert!(!m.chunks.is_empty());
    }
}

pub fn tx(data: &[u8]) {
    if let Ok(tx) = decode_and_verify(data) {
        assert_eq!(tx.bytes(), data);
        if tx.validate("fuzz-chain").is_ok() {
            if let Action::Propose(p) = &tx.body().action {
                // Bounded however the gzip stream claims to expand.
                let _ = p.plugin();
            }
        }
    }
}

pub fn value(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(Some(canonical)) = canonical_bytes(text) {
            // What the root hashes is itself a value of the same meaning.
            let again = std::str::from_utf8(&canonical).expect("the canonical form is UTF-8");
            assert_eq!(
                canonical_bytes(again).expect("the canonical form canonicalises"),
                Some(canonical.clone()),
                "canonicalising is idempotent"
            );
        }
    }
}

pub fn batch(data: &[u8]) {
    let mut whole = 0usize;
    for item in statesnap_plugin_sdk::entries(data) {
        match item {
            Ok((k, v)) => whole += statesnap_plugin_sdk::framed_len(k, v),
            Err(_) => break,
        }
    }
    assert!(whole <= data.len());
    assert!(statesnap_plugin_sdk::whole_entries_len(data) <= data.len());
}

/// Feeds `data` to a reader as two chunks (split where its first byte
/// says), draining entries after each, as the host does.
fn read_with<F: Format>(data: &[u8]) {
    let Ok(mut r) = F::reader(&[]) else { return };
    let cut = data.first().map_or(0, |b| (*b as usize * data.len()) / 256);
    for chunk in [&data[..cut], &data[cut..]] {
        if r.feed(chunk).is_err() {
            return;
        }
        loop {
            match r.next(1 << 20) {
                Ok(Some(batch)) => {
                    for e in statesnap_plugin_sdk::entries(&batch) {
                        if e.is_err() {
                            break;
                        }
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let _ = r.finish();
}

pub fn reader_zstd(data: &[u8]) {
    read_with::<statesnap_plugin_zstd::Zstd>(data)
}

pub fn reader_gzip(data: &[u8]) {
    read_with::<statesnap_plugin_gzip::Gzip>(data)
}

pub fn reader_brotli(data: &[u8]) {
    read_with::<statesnap_plugin_brotli::Brotli>(data)
}
