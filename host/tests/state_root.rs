//! The state root against the vectors made by Xian's own code, the h5py
//! fixture (through each store: the HDF5 fixture itself, and its LMDB
//! conversion), and a naive reference treap.

#[macro_use]
mod common;

use common::*;
use statesnap::store::root::{
    empty_root, is_consensus_key, leaf_hash, priority, root_of_unsorted, RootBuilder, RootError, StateRoot,
};
use statesnap::store::value::{canonical_bytes, ValueError};
use statesnap::store::{HomeStore, StateStore, StoreKind};

on_both_stores!(fixture_root_through_the_store);

fn vectors() -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures().join("vectors/xian-state-root-v2.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn hex32(s: &str) -> [u8; 32] {
    hex::decode(s).unwrap().try_into().unwrap()
}

#[test]
fn every_vector_case() {
    let v = vectors();
    assert_eq!(v["algorithm"], "xian-state-root-v2");
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let entries: Vec<(&str, &str)> = case["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["key"].as_str().unwrap(), e["stored"].as_str().unwrap()))
            .collect();
        for e in case["entries"].as_array().unwrap() {
            let key = e["key"].as_str().unwrap();
            let consensus = e["consensus"].as_bool().unwrap();
            assert_eq!(is_consensus_key(key), consensus, "{name}: {key}");
            if let Some(leaf) = e["leaf"].as_str() {
                let canonical = canonical_bytes(e["stored"].as_str().unwrap()).unwrap().unwrap();
                assert_eq!(
                    hex::encode(leaf_hash(key.as_bytes(), &canonical)),
                    leaf,
                    "{name}: leaf of {key}"
                );
            }
        }
        let expected = hex32(case["root"].as_str().unwrap());
        assert_eq!(root_of_unsorted(entries.iter().copied()).unwrap(), expected, "{name}");
        // Streaming over sorted entries gives the same.
        let mut sorted = entries.clone();
        sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let mut b = RootBuilder::new();
        for (k, s) in sorted {
            b.push(k, s).unwrap();
        }
        assert_eq!(b.finish(), expected, "{name}: streamed");
    }
    assert_eq!(hex32(cases[0]["root"].as_str().unwrap()), empty_root());
}

fn fixture_root_through_the_store(kind: StoreKind) {
    let tmp = tempfile::tempdir().unwrap();
    let store = HomeStore::open_read_only(&fixture_home_as(kind, tmp.path())).unwrap();
    assert_eq!(store.kind(), kind);
    let mut b = RootBuilder::new();
    let mut n = 0;
    for e in store.entries().unwrap() {
        let e = e.unwrap();
        b.push(&e.key, &e.stored).unwrap();
        n += 1;
    }
    assert_eq!(n, 400, "{kind}");
    assert_eq!(b.finish(), fixture_root(), "{kind}");
}

#[test]
fn order_nulls_and_deltas() {
    let mut b = RootBuilder::new();
    b.push("b.x", "1").unwrap();
    match b.push("a.x", "1").unwrap_err() {
        RootError::OutOfOrder { previous, key } => assert_eq!((previous.as_str(), key.as_str()), ("b.x", "a.x")),
        e => panic!("{e}"),
    }
    assert!(matches!(b.push("b.x", "2"), Err(RootError::OutOfOrder { .. })));
    // null values and non-consensus keys are skipped, not hashed
    let mut with = RootBuilder::new();
    assert!(!with.push("__latest_block.height", "5").unwrap());
    assert!(with.push("a.x", "1").unwrap());
    assert!(!with.push("a.y", "null").unwrap());
    let mut without = RootBuilder::new();
    without.push("a.x", "1").unwrap();
    assert_eq!(with.finish(), without.finish());
    let e = RootBuilder::new().push("a.t", r#"{"__delta__":[1,0]}"#).unwrap_err();
    assert!(
        matches!(
            e,
            RootError::Value {
                ref key,
                source: ValueError::NoCanonicalForm { tag: "__delta__", .. },
            } if key == "a.t"
        ),
        "{e}"
    );
}

/// A plain recursive treap, the definition, to check the streaming builder.
fn naive_root(entries: &[(String, Vec<u8>)]) -> StateRoot {
    fn node(entries: &[(String, Vec<u8>)]) -> StateRoot {
        if entries.is_empty() {
            return empty_root();
        }
        let (i, _) = entries
            .iter()
            .enumerate()
            .min_by_key(|(_, (k, _))| priority(k.as_bytes()))
            .unwrap();
        let (k, v) = &entries[i];
        let mut h = sha2::Sha256::new();
        use sha2::Digest;
        h.update(b"xian-state-root-v2:node:");
        h.update(node(&entries[..i]));
        h.update(leaf_hash(k.as_bytes(), v));
        h.update(node(&entries[i + 1..]));
        h.finalize().into()
    }
    node(entries)
}

#[test]
fn streaming_equals_the_naive_treap() {
    let mut x = 0x9e3779b97f4a7c15u64;
    for n in [0usize, 1, 2, 3, 10, 257, 3000] {
        let mut entries: Vec<(String, Vec<u8>)> = (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (
                    format!("con_{}.k:{x:x}:{i}", x % 5),
                    format!("{}", x % 1000).into_bytes(),
                )
            })
            .collect();
        entries.sort();
        let mut b = RootBuilder::new();
        for (k, v) in &entries {
            b.push_canonical(k, v).unwrap();
        }
        assert_eq!(b.included(), n as u64);
        assert_eq!(b.finish(), naive_root(&entries), "n = {n}");
    }
}
