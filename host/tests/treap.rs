//! The persistent Merkle treap against the definition: the streamed
//! `RootBuilder`, a sorted map of the same entries, and the vectors (docs/XIAN.md §5).

mod common;

use std::collections::BTreeMap;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use common::fixtures;
use statesnap::store::root::{empty_root, is_consensus_key, leaf_hash, RootBuilder, RootError, StateRoot};
use statesnap::store::treap::{MembershipProof, MerkleTreap, TreapBuilder};
use statesnap::store::value::canonical_bytes;

type Model = BTreeMap<String, Vec<u8>>;

fn model_root(model: &Model) -> StateRoot {
    let mut b = RootBuilder::new();
    for (k, v) in model {
        b.push_canonical(k, v).unwrap();
    }
    b.finish()
}

/// Checks everything the treap says against the model.
fn assert_matches(treap: &MerkleTreap, model: &Model, context: &str) {
    assert_eq!(treap.root_hash(), model_root(model), "{context}: root");
    assert_eq!(treap.len(), model.len() as u64, "{context}: len");
    assert_eq!(treap.is_empty(), model.is_empty(), "{context}: is_empty");
    let expected = model.iter().map(|(k, v)| (k.as_str(), leaf_hash(k.as_bytes(), v)));
    assert!(treap.iter().eq(expected), "{context}: iteration");
}

/// Keys from a few pieces, so that many are prefixes of others; includes the
/// empty key, non-ASCII and a NUL, and now and then a long Xian-like key.
fn random_key(rng: &mut ChaCha8Rng) -> String {
    const PIECES: [&str; 6] = ["a", "b", "é", "😀", ".", "\0"];
    if rng.random_ratio(1, 10) {
        return format!("con_token.balances:{:016x}", rng.random_range(0..64u64));
    }
    (0..rng.random_range(0..=3))
        .map(|_| PIECES[rng.random_range(0..PIECES.len())])
        .collect()
}

#[test]
fn random_writes_match_the_definition_after_every_step() {
    for seed in 1..=5u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut treap = MerkleTreap::new();
        let mut model = Model::new();
        let mut frozen: Vec<(MerkleTreap, Model)> = Vec::new();
        for step in 0..1200 {
            let key = random_key(&mut rng);
            let context = format!("seed {seed} step {step} key {key:?}");
            if rng.random_ratio(1, 3) {
                assert_eq!(treap.remove(&key), model.remove(&key).is_some(), "{context}: remove");
            } else {
                let value = rng.random_range(0..5u32).to_string().into_bytes();
                treap.set(&key, &value);
                model.insert(key.clone(), value);
            }
            assert_matches(&treap, &model, &context);
            let probe = random_key(&mut rng);
            assert_eq!(
                treap.get(&probe),
                model.get(&probe).map(|v| leaf_hash(probe.as_bytes(), v)),
                "{context}: get {probe:?}"
            );
            let expected = model
                .range(probe.clone()..)
                .map(|(k, v)| (k.as_str(), leaf_hash(k.as_bytes(), v)));
            assert!(treap.range_from(&probe).eq(expected), "{context}: range_from {probe:?}");
            if step % 150 == 0 {
                frozen.push((treap.clone(), model.clone()));
            }
        }
        for (i, (view, model)) in frozen.iter().enumerate() {
            assert_matches(view, model, &format!("seed {seed}: frozen view {i}"));
        }
    }
}

#[test]
fn a_clone_is_a_frozen_view() {
    let mut treap = MerkleTreap::new();
    for i in 0..500u32 {
        treap.set(&format!("con.k:{i}"), &i.to_be_bytes());
    }
    let frozen = treap.clone();
    let root = frozen.root_hash();
    let entries: Vec<(String, [u8; 32])> = frozen.iter().map(|(k, l)| (k.to_string(), l)).collect();

    for i in (0..500u32).step_by(3) {
        treap.remove(&format!("con.k:{i}"));
    }
    for i in (1..500u32).step_by(3) {
        treap.set(&format!("con.k:{i}"), b"changed");
    }
    for i in 500..700u32 {
        treap.set(&format!("con.k:{i}"), b"new");
    }
    assert_ne!(treap.root_hash(), root);
    assert_eq!(treap.len(), 500 - 167 + 200);

    assert_eq!(frozen.root_hash(), root);
    assert_eq!(frozen.len(), 500);
    assert!(frozen
        .iter()
        .map(|(k, l)| (k.to_string(), l))
        .eq(entries.iter().cloned()));
    assert_eq!(frozen.get("con.k:0"), Some(leaf_hash(b"con.k:0", &0u32.to_be_bytes())));
    assert_eq!(frozen.get("con.k:600"), None);
    // Changing the frozen view leaves the live tree alone too.
    let live = treap.root_hash();
    let mut fork = frozen.clone();
    fork.set("con.k:1", b"fork");
    assert_eq!(treap.root_hash(), live);
    assert_eq!(frozen.root_hash(), root);
    // Dropping the live tree keeps the view.
    drop(treap);
    assert_eq!(frozen.root_hash(), root);
    assert_eq!(frozen.iter().count(), 500);
}

#[test]
fn builder_equals_inserts_and_the_root_builder() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for n in [0usize, 1, 2, 3, 10, 100, 3000] {
        let mut model = Model::new();
        while model.len() < n {
            let key = format!("con_{}.k:{:x}", rng.random_range(0..4), rng.random::<u32>());
            model.insert(key, rng.random::<u16>().to_string().into_bytes());
        }
        let mut builder = TreapBuilder::new();
        let mut inserted = MerkleTreap::new();
        // Insert in a scrambled order: the tree depends only on the set.
        let mut scrambled: Vec<(&String, &Vec<u8>)> = model.iter().collect();
        scrambled.sort_by_key(|(k, _)| leaf_hash(k.as_bytes(), b""));
        for (k, v) in &scrambled {
            inserted.set(k, v);
        }
        for (k, v) in &model {
            builder.push(k, leaf_hash(k.as_bytes(), v)).unwrap();
        }
        assert_eq!(builder.len(), n as u64);
        let mut built = builder.finish();
        assert_matches(&built, &model, &format!("built, n = {n}"));
        assert_matches(&inserted, &model, &format!("inserted, n = {n}"));
        // A built tree takes updates like any other.
        built.set("con_9.extra", b"1");
        model.insert("con_9.extra".into(), b"1".to_vec());
        if let Some(first) = model.keys().next().cloned() {
            assert!(built.remove(&first));
            model.remove(&first);
        }
        assert_matches(&built, &model, &format!("built then changed, n = {n}"));
    }
    assert_eq!(TreapBuilder::new().finish().root_hash(), empty_root());
}

#[test]
fn builder_rejects_keys_out_of_order() {
    let mut b = TreapBuilder::new();
    b.push("b", [1; 32]).unwrap();
    match b.push("a", [2; 32]).unwrap_err() {
        RootError::OutOfOrder { previous, key } => assert_eq!((previous.as_str(), key.as_str()), ("b", "a")),
        e => panic!("{e}"),
    }
    assert!(matches!(b.push("b", [3; 32]), Err(RootError::OutOfOrder { .. })));
    // The rejected keys left nothing behind.
    b.push("c", [4; 32]).unwrap();
    let t = b.finish();
    assert_eq!(t.iter().map(|(k, _)| k).collect::<Vec<_>>(), ["b", "c"]);
}

#[test]
fn every_shared_vector_through_inserts_and_the_builder() {
    let text = std::fs::read_to_string(fixtures().join("vectors/xian-state-root-v2.json")).unwrap();
    let vectors: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cases = vectors["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let expected: StateRoot = hex::decode(case["root"].as_str().unwrap()).unwrap().try_into().unwrap();
        let mut leaves: BTreeMap<String, [u8; 32]> = BTreeMap::new();
        let mut by_set = MerkleTreap::new();
        for e in case["entries"].as_array().unwrap() {
            let key = e["key"].as_str().unwrap();
            let included = e["consensus"].as_bool().unwrap();
            assert_eq!(is_consensus_key(key), included, "{name}: {key}");
            let Some(canonical) = canonical_bytes(e["stored"].as_str().unwrap()).unwrap() else {
                continue;
            };
            if !included {
                continue;
            }
            let leaf: [u8; 32] = hex::decode(e["leaf"].as_str().unwrap()).unwrap().try_into().unwrap();
            leaves.insert(key.to_string(), leaf);
            by_set.set(key, &canonical);
        }
        let mut by_insert = MerkleTreap::new();
        for (k, leaf) in leaves.iter().rev() {
            by_insert.insert(k, *leaf);
        }
        let mut builder = TreapBuilder::new();
        for (k, leaf) in &leaves {
            builder.push(k, *leaf).unwrap();
        }
        assert_eq!(by_insert.root_hash(), expected, "{name}: insert");
        assert_eq!(by_set.root_hash(), expected, "{name}: set");
        assert_eq!(builder.finish().root_hash(), expected, "{name}: builder");
    }
}

#[test]
fn every_key_proves_and_nothing_else_verifies() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut treap = MerkleTreap::new();
    let mut model = Model::new();
    while model.len() < 2000 {
        let key = format!("con_{}.balances:{:08x}", rng.random_range(0..3), rng.random::<u32>());
        let value = rng.random::<u32>().to_string().into_bytes();
        treap.set(&key, &value);
        model.insert(key, value);
    }
    let root = treap.root_hash();
    assert!(treap.prove("absent").is_none());
    assert!(MerkleTreap::new().prove("").is_none());

    let keys: Vec<&String> = model.keys().collect();
    let mut deepest: Option<(usize, &str)> = None;
    for (i, (key, value)) in model.iter().enumerate() {
        let proof = treap.prove(key).unwrap();
        assert!(proof.verify(key, value, &root), "{key}");
        assert!(!proof.verify(key, b"other", &root), "{key}: wrong value");
        let other = keys[(i + 1) % keys.len()];
        assert!(
            !proof.verify(other, &model[other], &root),
            "{key}: proof used for {other}"
        );
        let mut wrong_root = root;
        wrong_root[31] ^= 1;
        assert!(!proof.verify(key, value, &wrong_root), "{key}: wrong root");
        if deepest.is_none_or(|(d, _)| proof.depth() > d) {
            deepest = Some((proof.depth(), key));
        }
    }
    let (max_depth, deepest) = deepest.unwrap();
    assert!((10..64).contains(&max_depth), "deepest key at {max_depth}");

    // Any changed byte of the serialised proof is rejected (or does not
    // decode): checked for the deepest key, the root's key and a sample.
    let root_key = model.keys().find(|k| treap.prove(k).unwrap().depth() == 0).unwrap();
    let sample = keys.iter().step_by(199).map(|k| k.as_str());
    for key in [deepest, root_key.as_str()].into_iter().chain(sample) {
        let value = &model[key];
        let bytes = postcard::to_allocvec(&treap.prove(key).unwrap()).unwrap();
        let proof: MembershipProof = postcard::from_bytes(&bytes).unwrap();
        assert!(proof.verify(key, value, &root));
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x80] {
                let mut tampered = bytes.clone();
                tampered[i] ^= flip;
                if let Ok(proof) = postcard::from_bytes::<MembershipProof>(&tampered) {
                    assert!(
                        !proof.verify(key, value, &root),
                        "{key}: byte {i} ^ {flip:#x} still verifies"
                    );
                }
            }
        }
    }

    // After a change, old proofs fail against the new root and new ones pass.
    let (key, _) = model.iter().nth(500).unwrap();
    let old = treap.prove(key).unwrap();
    treap.set(key, b"new");
    assert!(!old.verify(key, &model[key], &treap.root_hash()));
    assert!(treap.prove(key).unwrap().verify(key, b"new", &treap.root_hash()));
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// Figures at 1M keys (not a pass/fail test):
/// `cargo test --release -p statesnap --test treap -- --ignored --nocapture`.
#[test]
#[ignore]
fn measure_a_million_keys() {
    use sha2::{Digest, Sha256};
    const N: usize = 1_000_000;
    let key = |i: u64| format!("currency.balances:{}", hex::encode(Sha256::digest(i.to_be_bytes())));
    let mut entries: Vec<(String, Vec<u8>)> = (0..N as u64).map(|i| (key(i), i.to_string().into_bytes())).collect();
    entries.sort();
    let leaves: Vec<[u8; 32]> = entries.iter().map(|(k, v)| leaf_hash(k.as_bytes(), v)).collect();
    let key_bytes: usize = entries.iter().map(|(k, _)| k.len()).sum();

    let t = Instant::now();
    let mut rb = RootBuilder::new();
    for (k, v) in &entries {
        rb.push_canonical(k, v).unwrap();
    }
    let streamed = rb.finish();
    let root_builder_s = t.elapsed().as_secs_f64();

    let rss_before = rss_bytes();
    let t = Instant::now();
    let mut b = TreapBuilder::new();
    for ((k, _), leaf) in entries.iter().zip(&leaves) {
        b.push(k, *leaf).unwrap();
    }
    let built = b.finish();
    let build_s = t.elapsed().as_secs_f64();
    let per_key = (rss_bytes() - rss_before) as f64 / N as f64;
    assert_eq!(built.root_hash(), streamed);
    println!(
        "RootBuilder (full recompute) over {N} keys: {root_builder_s:.2} s; TreapBuilder: {build_s:.2} s ({:.2}x)",
        build_s / root_builder_s
    );
    println!(
        "memory: {per_key:.0} bytes of RSS per key ({:.1} bytes of key each)",
        key_bytes as f64 / N as f64
    );
    drop(built);

    let mut order: Vec<usize> = (0..N).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for i in (1..N).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    let mut treap = MerkleTreap::new();
    let t = Instant::now();
    for &i in &order {
        treap.insert(&entries[i].0, leaves[i]);
    }
    let insert_s = t.elapsed().as_secs_f64();
    assert_eq!(treap.root_hash(), streamed);
    let t = Instant::now();
    for &i in &order {
        treap.insert(&entries[i].0, leaves[(i + 1) % N]);
    }
    let update_s = t.elapsed().as_secs_f64();
    println!(
        "insert {:.0} keys/s, update {:.0} keys/s (random order, {N} keys)",
        N as f64 / insert_s,
        N as f64 / update_s
    );

    // Blocks of 1,000 writes (900 updates, 50 inserts, 50 removes), the new
    // root after each; once with a frozen view kept per block (as at Commit).
    for keep_views in [false, true] {
        let mut views = Vec::new();
        let blocks = 200;
        let t = Instant::now();
        for block in 0..blocks {
            for w in 0..1000usize {
                let i = order[(block * 1000 + w) % N];
                match w % 20 {
                    0 => treap.insert(&format!("{}:new{block}", entries[i].0), leaves[i]),
                    1 => {
                        treap.remove(&entries[i].0);
                    }
                    _ => treap.insert(&entries[i].0, leaves[(i + block) % N]),
                }
            }
            std::hint::black_box(treap.root_hash());
            if keep_views {
                views.push(treap.clone());
                if views.len() > 10 {
                    views.remove(0);
                }
            }
        }
        let per_block_ms = t.elapsed().as_secs_f64() * 1000.0 / blocks as f64;
        println!(
            "block of 1,000 writes + root on ~{N} keys{}: {per_block_ms:.2} ms ({:.0}x faster than a full recompute)",
            if keep_views { ", 10 frozen views kept" } else { "" },
            root_builder_s * 1000.0 / per_block_ms
        );
    }
}
