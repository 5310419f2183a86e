//! The Xian stores, LMDB and HDF5: reading h5py's fixture (both string
//! forms; for LMDB, its conversion), writing and reading back every escaping
//! case, key order, deletes, the generator, copying entries in batches.
//! Each store-facing test runs once per store (`<test>::lmdb`, `<test>::hdf5`).

#[macro_use]
mod common;

use common::*;
use statesnap::store::copy::{copy_entries, CopyError};
use statesnap::store::memory::MemoryStore;
use statesnap::store::{generate, Entry, HomeStore, StateStore, StoreKind, XianHdf5Store, XianLmdbStore};

on_both_stores!(
    writes_read_back_in_key_order_with_escapes_and_deletes,
    generated_state_is_deterministic_and_exact,
    not_a_home_is_a_clear_error,
    copy_entries_writes_every_entry_in_batches,
);

/// `store` holds exactly the fixture's entries file, in order, and answers gets.
fn check_fixture_entries(store: &dyn StateStore, what: &str) {
    let expected = parse_jsonl(&std::fs::read_to_string(fixtures().join("xian-hdf5-small.entries.jsonl")).unwrap());
    assert_eq!(expected.len(), 400);
    assert_eq!(all_entries(store), expected, "{what}");
    for (k, v) in expected.iter().step_by(37) {
        assert_eq!(store.get(k).unwrap().as_deref(), Some(v.as_str()), "{what}: {k}");
    }
    assert_eq!(store.get("currency.balances:nobody").unwrap(), None, "{what}");
    assert_eq!(store.get("no_such_contract.x").unwrap(), None, "{what}");
}

/// HDF5 only: the fixture is h5py's own files.
#[test]
fn fixture_reads_as_its_entries_file() {
    let store = XianHdf5Store::open(&fixture_home()).unwrap();
    check_fixture_entries(&store, "h5py fixture");
}

/// The LMDB counterpart: the fixture converted into an LMDB home reads the same.
#[test]
fn fixture_converted_to_lmdb_reads_as_its_entries_file() {
    let tmp = tempfile::tempdir().unwrap();
    let home = fixture_home_as(StoreKind::Lmdb, tmp.path());
    let store = XianLmdbStore::open_read_only(&home).unwrap();
    check_fixture_entries(&store, "fixture converted to LMDB");
    drop(store);
    let store = XianLmdbStore::open(&home).unwrap();
    check_fixture_entries(&store, "fixture converted to LMDB, opened read-write");
}

fn writes_read_back_in_key_order_with_escapes_and_deletes(kind: StoreKind) {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = HomeStore::create(&tmp.path().join("h"), kind).unwrap();
    assert_eq!(store.kind(), kind);
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
    assert_eq!(all_entries(&store), expected, "{kind}");
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
    let store = HomeStore::open(&tmp.path().join("h")).unwrap();
    assert_eq!(store.kind(), kind, "the home reopens as {kind}");
    assert_eq!(store.get("x.a").unwrap().as_deref(), Some("\"new\""), "{kind}");
    assert_eq!(store.get("x.a:b").unwrap(), None, "{kind}");
    assert_eq!(store.get("x.zz").unwrap(), None, "{kind}");
    assert_eq!(
        store.get("x.a:b:c").unwrap().as_deref(),
        Some(format!("{}", 3).as_str()),
        "{kind}"
    );
    expected.retain(|(k, _)| k != "x.a:b");
    for (k, v) in expected.iter_mut() {
        if k == "x.a" {
            *v = "\"new\"".into();
        }
    }
    assert_eq!(all_entries(&store), expected, "{kind}: after overwrite and delete");
    match kind {
        StoreKind::Hdf5 => assert!(std::fs::read_dir(tmp.path().join("h/run_state")).unwrap().count() == 2),
        StoreKind::Lmdb => assert!(tmp.path().join("h/lmdb/data.mdb").is_file()),
    }
}

fn generated_state_is_deterministic_and_exact(kind: StoreKind) {
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
    let root = statesnap::store::root::root_of_unsorted(a.iter()).unwrap();
    // Through the store, the same state, and read back from disk.
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("g");
    let mut h = HomeStore::create(&home, kind).unwrap();
    generate::generate(&mut h, 5000, 1, |_| {}).unwrap();
    let from_mem: Vec<(String, String)> = a.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    assert_eq!(all_entries(&h), from_mem, "{kind}");
    h.flush().unwrap();
    drop(h);
    let h = HomeStore::open_read_only(&home).unwrap();
    assert_eq!(h.kind(), kind);
    assert_eq!(all_entries(&h), from_mem, "{kind}: reopened");
    assert_eq!(
        statesnap::store::root::root_of_unsorted(all_entries(&h).iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .unwrap(),
        root,
        "{kind}: the same root"
    );
}

fn not_a_home_is_a_clear_error(kind: StoreKind) {
    let tmp = tempfile::tempdir().unwrap();
    let (e, want) = match kind {
        StoreKind::Hdf5 => (XianHdf5Store::open(tmp.path()).err(), "not a Xian state home"),
        StoreKind::Lmdb => (XianLmdbStore::open(tmp.path()).err(), "not an LMDB state home"),
    };
    let e = e.unwrap().to_string();
    assert!(e.contains(want), "{kind}: {e}");
    if kind == StoreKind::Lmdb {
        let e = XianLmdbStore::open_read_only(tmp.path()).err().unwrap().to_string();
        assert!(e.contains(want), "{kind} read-only: {e}");
    }
    // Whichever store, a directory with neither layout is not a home.
    let e = HomeStore::open(tmp.path()).err().unwrap().to_string();
    assert!(e.contains("not a Xian state home"), "{kind}: {e}");
    std::fs::write(tmp.path().join("f"), b"x").unwrap();
    let e = match kind {
        StoreKind::Hdf5 => XianHdf5Store::create(tmp.path()).err(),
        StoreKind::Lmdb => XianLmdbStore::create(tmp.path()).err(),
    };
    let e = e.unwrap().to_string();
    assert!(e.contains("not empty"), "{kind}: {e}");
    let e = HomeStore::create(tmp.path(), kind).err().unwrap().to_string();
    assert!(e.contains("not empty"), "{kind}: {e}");
    assert_eq!(
        std::fs::read(tmp.path().join("f")).unwrap(),
        b"x",
        "{kind}: the file is left alone"
    );
}

/// A child process started while the store has a file open inherits HDF5's
/// descriptor of it (HDF5 opens files without close-on-exec) but must not
/// keep the file locked once the store closed it: HDF5's own lock, on that
/// descriptor, did, failing every open with "unable to lock file" until the
/// child exited. The store locks through a descriptor no child inherits.
#[test]
fn a_child_process_does_not_keep_an_hdf5_file_locked() {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = XianHdf5Store::create(tmp.path()).unwrap();
    store
        .write_batch(&[("con_a.b".to_string(), Some("1".to_string()))])
        .unwrap();
    assert_eq!(store.get("con_a.b").unwrap().as_deref(), Some("1"));
    let mut child = std::process::Command::new("sleep").arg("600").spawn().unwrap();
    store.flush().unwrap();
    drop(store);
    let mut store = XianHdf5Store::open(tmp.path()).unwrap();
    let written = store.write_batch(&[("con_a.c".to_string(), Some("2".to_string()))]);
    child.kill().unwrap();
    child.wait().unwrap();
    written.expect("the child must not hold the file locked");
    assert_eq!(store.get("con_a.c").unwrap().as_deref(), Some("2"));
}

/// `store::copy`: every entry lands in the new home, a batch at a time, with
/// the running count after each batch.
fn copy_entries_writes_every_entry_in_batches(kind: StoreKind) {
    let tmp = tempfile::tempdir().unwrap();
    let mut source = MemoryStore::new();
    generate::generate(&mut source, 250, 3, |_| {}).unwrap();
    let n = source.len() as u64;
    assert!(!n.is_multiple_of(100), "the test wants a last, partial batch");
    let mut target = HomeStore::create(&tmp.path().join("h"), kind).unwrap();
    let mut counts = Vec::new();
    let copied = copy_entries(source.entries().unwrap(), &mut target, 100, |c| counts.push(c)).unwrap();
    target.flush().unwrap();
    assert_eq!(copied, n, "{kind}");
    let mut want: Vec<u64> = (1..=n / 100).map(|b| b * 100).collect();
    want.push(n);
    assert_eq!(counts, want, "{kind}");
    assert_eq!(all_entries(&target), all_entries(&source), "{kind}");
}

/// A store that refuses every write.
struct Refusing;

impl StateStore for Refusing {
    fn get(&self, _: &str) -> anyhow::Result<Option<String>> {
        Ok(None)
    }

    fn entries(&self) -> anyhow::Result<Box<dyn Iterator<Item = anyhow::Result<Entry>> + '_>> {
        Ok(Box::new(std::iter::empty()))
    }

    fn write_batch(&mut self, _: &[(String, Option<String>)]) -> anyhow::Result<()> {
        anyhow::bail!("refused")
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// A copy stops at the first failure and says which side failed; the full
/// batches before a read failure are written.
#[test]
fn copy_entries_stops_at_a_failed_read_or_write() {
    let mut source = MemoryStore::new();
    generate::generate(&mut source, 50, 4, |_| {}).unwrap();
    let failing = source
        .entries()
        .unwrap()
        .take(25)
        .chain(std::iter::once(Err(anyhow::anyhow!("disk on fire"))));
    let mut target = MemoryStore::new();
    match copy_entries(failing, &mut target, 10, |_| {}) {
        Err(CopyError::Read(e)) => assert_eq!(e.to_string(), "disk on fire"),
        other => panic!("expected a read error, got {other:?}"),
    }
    assert_eq!(target.len(), 20);

    match copy_entries(source.entries().unwrap(), &mut Refusing, 10, |_| {}) {
        Err(CopyError::Write(e)) => assert_eq!(e.to_string(), "refused"),
        other => panic!("expected a write error, got {other:?}"),
    }
    // Into anyhow::Error, the error itself, not a wrapper.
    let e: anyhow::Error = copy_entries(source.entries().unwrap(), &mut Refusing, 10, |_| {})
        .unwrap_err()
        .into();
    assert_eq!(format!("{e:#}"), "refused");
}
