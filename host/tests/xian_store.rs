//! The Xian HDF5 store: reading h5py's fixture (both string forms), writing
//! and reading back every escaping case, key order, deletes, the generator.

mod common;

use common::*;
use statesnap::store::memory::MemoryStore;
use statesnap::store::{generate, StateStore, XianHdf5Store};

#[test]
fn fixture_reads_as_its_entries_file() {
    let store = XianHdf5Store::open(&fixture_home()).unwrap();
    let expected = parse_jsonl(&std::fs::read_to_string(fixtures().join("xian-hdf5-small.entries.jsonl")).unwrap());
    assert_eq!(all_entries(&store), expected);
    for (k, v) in expected.iter().step_by(37) {
        assert_eq!(store.get(k).unwrap().as_deref(), Some(v.as_str()));
    }
    assert_eq!(store.get("currency.balances:nobody").unwrap(), None);
    assert_eq!(store.get("no_such_contract.x").unwrap(), None);
}

#[test]
fn writes_read_back_in_key_order_with_escapes_and_deletes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = XianHdf5Store::create(&tmp.path().join("h")).unwrap();
    let keys = [
        "x.a",
        "x.a:b",
        "x.a0",
        "x.a:b:c",
        "x.a-",
        "x.a::",
        "x.",
        "x",
        "x-y.k",
        "x_y.k",
        "x.a/b",
        "x.%",
        "x.%25",
        "x...",
        "x.é:ü",
        "__n.abc",
        "__n.ab",
        "__latest_block.height",
        "con.k:",
        "con.k:\u{1f680}",
        "a b.c d",
    ];
    let mut batch: Vec<(String, Option<String>)> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.to_string(), Some(format!("{i}"))))
        .collect();
    batch.sort();
    store.write_batch(&batch).unwrap();
    let mut expected: Vec<(String, String)> = batch.iter().map(|(k, v)| (k.clone(), v.clone().unwrap())).collect();
    expected.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    assert_eq!(all_entries(&store), expected);
    // Overwrite and delete; a deleted key leaves its group but no value.
    store
        .write_batch(&[
            ("x.a".into(), Some("\"new\"".into())),
            ("x.a:b".into(), None),
            ("x.zz".into(), None),
        ])
        .unwrap();
    store.flush().unwrap();
    drop(store);
    let store = XianHdf5Store::open(&tmp.path().join("h")).unwrap();
    assert_eq!(store.get("x.a").unwrap().as_deref(), Some("\"new\""));
    assert_eq!(store.get("x.a:b").unwrap(), None);
    assert_eq!(
        store.get("x.a:b:c").unwrap().as_deref(),
        Some(format!("{}", 3).as_str())
    );
    assert_eq!(all_entries(&store).len(), expected.len() - 1);
    assert!(std::fs::read_dir(tmp.path().join("h/run_state")).unwrap().count() == 2);
}

#[test]
fn generated_state_is_deterministic_and_exact() {
    let mut a = MemoryStore::new();
    let mut b = MemoryStore::new();
    let mut c = MemoryStore::new();
    generate::generate(&mut a, 5000, 1, |_| {}).unwrap();
    generate::generate(&mut b, 5000, 1, |_| {}).unwrap();
    generate::generate(&mut c, 5000, 2, |_| {}).unwrap();
    assert_eq!(a.len(), 5000);
    assert_eq!(a, b);
    assert_ne!(a, c);
    let text: String = a.iter().map(|(_, v)| v).collect();
    for tag in ["__fixed__", "__big_int__", "__time__", "__bytes__"] {
        assert!(text.contains(tag), "{tag} missing");
    }
    assert!(a.iter().any(|(k, _)| k.starts_with("__n.")));
    assert!(a.iter().any(|(k, _)| k.starts_with("__latest_block.")));
    // Every value has a canonical form (the generator never writes __delta__).
    statesnap::store::root::root_of_unsorted(a.iter()).unwrap();
    // Through HDF5, the same state.
    let tmp = tempfile::tempdir().unwrap();
    let mut h = XianHdf5Store::create(&tmp.path().join("g")).unwrap();
    generate::generate(&mut h, 5000, 1, |_| {}).unwrap();
    let from_hdf5 = all_entries(&h);
    let from_mem: Vec<(String, String)> = a.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    assert_eq!(from_hdf5, from_mem);
}

#[test]
fn not_a_home_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let e = XianHdf5Store::open(tmp.path()).err().unwrap().to_string();
    assert!(e.contains("not a Xian state home"), "{e}");
    std::fs::write(tmp.path().join("f"), b"x").unwrap();
    let e = XianHdf5Store::create(tmp.path()).err().unwrap().to_string();
    assert!(e.contains("not empty"), "{e}");
}
