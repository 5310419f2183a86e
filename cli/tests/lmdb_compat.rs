//! Xian's LMDB layout against Python's `lmdb`, the binding Xian's node uses
//! (it bundles LMDB 0.9): homes written by Python the way Xian's driver
//! writes them read the same in statesnap and vice versa, the on-disk format
//! is LMDB 0.9's, and statesnap reads the home of a running Xian node (a
//! Python writer) without blocking it. Needs python3 with `lmdb` (scripts/setup.sh).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use statesnap::store::root::RootBuilder;
use statesnap::store::{generate, xian_lmdb, HomeStore, StateStore, XianLmdbStore};

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts")
}

fn python(args: &[&str]) -> String {
    let out = Command::new("python3").args(args).output().expect("python3 runs");
    assert!(
        out.status.success(),
        "python3 {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Writes a home with scripts/xian-lmdb-home.py (Xian's driver settings).
fn python_home(home: &Path, args: &[&str]) -> serde_json::Value {
    let script = scripts().join("xian-lmdb-home.py");
    let mut all = vec![p(&script), "--home", p(home)];
    all.extend_from_slice(args);
    let out = python(&all);
    serde_json::from_str(out.lines().last().unwrap()).unwrap()
}

/// What Python's `lmdb` reads from a home, in its key order.
fn python_export(home: &Path) -> Vec<(String, String)> {
    let script = fixtures().join("../compat/lmdb_export.py");
    parse_jsonl(&python(&[p(&script), p(home)]))
}

fn root_of(entries: &[(String, String)]) -> String {
    let mut b = RootBuilder::new();
    for (k, v) in entries {
        b.push(k, v).unwrap();
    }
    hex::encode(b.finish())
}

fn write_jsonl(path: &Path, entries: &[(String, String)]) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for (k, v) in entries {
        serde_json::to_writer(&mut f, &serde_json::json!({"key": k, "stored": v})).unwrap();
        f.write_all(b"\n").unwrap();
    }
}

/// The meta page of an LMDB 0.9 data file: page header (16 bytes), then
/// `mm_magic` = 0xBEEFC0DE and `mm_version` = 1 (MDB_DATA_VERSION).
fn assert_lmdb_09_format(home: &Path) {
    let data = std::fs::read(home.join("lmdb/data.mdb")).unwrap();
    let word = |at: usize| u32::from_le_bytes(data[at..at + 4].try_into().unwrap());
    assert_eq!(word(16), 0xBEEF_C0DE, "{}: LMDB magic", home.display());
    assert_eq!(word(20), 1, "{}: LMDB data format version", home.display());
}

#[test]
fn lmdb_versions_are_both_0_9() {
    let py = python(&[p(&fixtures().join("../compat/lmdb_export.py")), "--version"]);
    let heed = heed::lmdb_version();
    println!(
        "Python lmdb bundles LMDB {}; heed links LMDB {}.{}.{} ({})",
        py.trim(),
        heed.major,
        heed.minor,
        heed.patch,
        heed.string
    );
    // Both on LMDB's 0.9 release line: the same data format and the same
    // lock-file format (statesnap_reads_a_home_a_python_writer_is_writing
    // shows they share one environment).
    assert!(py.trim().starts_with("0.9."), "Python's LMDB is {py}");
    assert_eq!((heed.major, heed.minor), (0, 9));
    assert!(
        heed.patch < 70,
        "heed links LMDB's development branch ({}), not a 0.9 release",
        heed.string
    );
}

#[test]
fn a_home_python_writes_the_xian_way_reads_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("py");
    // Batches of 2000 in generation (unsorted) order; a 64 KiB map grows several times.
    let info = python_home(
        &home,
        &[
            "--keys",
            "20000",
            "--seed",
            "7",
            "--batch",
            "2000",
            "--map-size",
            "65536",
        ],
    );
    assert_eq!(info["keys"], 20000);
    assert!(info["map_size"].as_u64().unwrap() > 65536, "{info}");
    assert_lmdb_09_format(&home);
    let theirs = python_export(&home);
    assert_eq!(theirs.len(), 20000);

    let store = HomeStore::open_read_only(&home).unwrap();
    assert_eq!(store.kind(), statesnap::store::StoreKind::Lmdb);
    let ours = all_entries(&store);
    assert_eq!(ours, theirs, "statesnap reads exactly what Python reads");
    for (k, v) in theirs.iter().step_by(997) {
        assert_eq!(store.get(k).unwrap().as_deref(), Some(v.as_str()));
    }
    drop(store);
    let text: String = ours.iter().map(|(_, v)| v.as_str()).collect();
    for tag in ["__fixed__", "__big_int__", "__time__", "__bytes__"] {
        assert!(text.contains(tag), "{tag} missing");
    }
    assert!(ours.iter().filter(|(k, _)| k.starts_with("currency.balances:")).count() > 6000);
    assert!(ours.iter().filter(|(k, _)| k.starts_with("__n.")).count() > 3000);

    // `statesnap state root` of the LMDB home = of the same entries in an HDF5 home.
    let root = statesnap_ok(&["state", "root", "--home", p(&home)]).trim().to_string();
    assert_eq!(root, root_of(&theirs));
    let jsonl = tmp.path().join("entries.jsonl");
    write_jsonl(&jsonl, &theirs);
    let h5 = tmp.path().join("h5");
    statesnap_ok(&[
        "state",
        "import",
        "--home",
        p(&h5),
        "--jsonl",
        p(&jsonl),
        "--store",
        "hdf5",
    ]);
    assert!(h5.join("contract_state").is_dir());
    assert_eq!(statesnap_ok(&["state", "root", "--home", p(&h5)]).trim(), root);
}

#[test]
fn the_fixture_written_by_python_lmdb_has_the_fixture_root() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("py");
    let jsonl = fixtures().join("xian-hdf5-small.entries.jsonl");
    python_home(&home, &["--jsonl", p(&jsonl), "--batch", "64"]);
    let expected = parse_jsonl(&std::fs::read_to_string(&jsonl).unwrap());
    assert_eq!(all_entries(&XianLmdbStore::open_read_only(&home).unwrap()), expected);
    assert_eq!(
        statesnap_ok(&["state", "root", "--home", p(&home)]).trim(),
        hex::encode(fixture_root())
    );
    // And the h5py-written fixture itself (HDF5) agrees.
    assert_eq!(
        statesnap_ok(&["state", "root", "--home", p(&fixture_home())]).trim(),
        hex::encode(fixture_root())
    );
}

/// A new LMDB home whose map starts at `bytes` instead of Xian's 4 GiB, so
/// a small state reaches the map's growth.
fn create_with_initial_map(home: &Path, bytes: usize) -> XianLmdbStore {
    xian_lmdb::set_initial_map_size_for_tests(bytes);
    let store = XianLmdbStore::create(home);
    xian_lmdb::set_initial_map_size_for_tests(0);
    store.unwrap()
}

#[test]
fn python_reads_what_statesnap_writes_including_a_map_growth() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("ours");
    let mut store = create_with_initial_map(&home, 64 << 10);
    assert_eq!(xian_lmdb::map_size(&store), 64 << 10);
    generate::generate(&mut store, 20_000, 11, |_| {}).unwrap();
    assert!(xian_lmdb::map_size(&store) > 64 << 10, "the map grew");
    let mut tricky: Vec<(String, Option<String>)> = [
        ("con_x.uni:ключ:鍵", "\"\\u00fcn\\u00efc\\u00f6d\\u00e9\""),
        ("con_x.trailing:", "\"trailing colon\""),
        ("con_x.slash:a/b", "\"slash\""),
        ("nodot", "1"),
        ("__n.abc", "3"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), Some(v.to_string())))
    .collect();
    tricky.sort();
    store.write_batch(&tricky).unwrap();
    // Overwrites and deletes in the middle of the key space (not appends).
    let ours_before = all_entries(&store);
    let (k1, k2) = (ours_before[100].0.clone(), ours_before[5000].0.clone());
    store
        .write_batch(&[(k1.clone(), Some("\"new\"".into())), (k2.clone(), None)])
        .unwrap();
    store.flush().unwrap();
    let ours = all_entries(&store);
    assert_eq!(ours.len(), 20_000 + tricky.len() - 1);
    assert!(ours.contains(&(k1, "\"new\"".into())) && !ours.iter().any(|(k, _)| *k == k2));
    // Python reads it while this process still has it open (one lock file,
    // one reader table), and again after.
    assert_eq!(python_export(&home), ours);
    drop(store);
    assert_lmdb_09_format(&home);
    assert_eq!(python_export(&home), ours);

    // Python's driver writes on into statesnap's environment; statesnap reads it.
    let script = r#"
import lmdb, os, sys
env = lmdb.open(os.path.join(sys.argv[1], "lmdb"), map_size=4 << 30, max_dbs=1, readahead=True, writemap=False, sync=True, metasync=True)
with env.begin(write=True) as txn:
    txn.put(b"currency.balances:from_python", b'{"__fixed__":"1.5"}')
    txn.delete(b"nodot")
"#;
    python(&["-c", script, p(&home)]);
    let store = XianLmdbStore::open(&home).unwrap();
    assert_eq!(
        store.get("currency.balances:from_python").unwrap().as_deref(),
        Some("{\"__fixed__\":\"1.5\"}")
    );
    assert_eq!(store.get("nodot").unwrap(), None);
    assert_eq!(all_entries(&store).len(), ours.len());
}

/// LMDB cannot grow its map while a snapshot holds a read transaction, so
/// the store keeps the map at least twice the data file whenever it can: a
/// write made while a snapshot is open (a block during a background
/// snapshot) finds room, and the snapshot still reads its own state.
#[test]
fn the_map_stays_ahead_of_the_data_so_writes_during_a_snapshot_have_room() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("ours");
    let mut store = create_with_initial_map(&home, 1 << 20);
    let batch = |from: usize, n: usize| -> Vec<(String, Option<String>)> {
        (from..from + n)
            .map(|i| (format!("con_big.rows:{i:08}"), Some(format!("\"{}\"", "x".repeat(200)))))
            .collect()
    };
    store.write_batch(&batch(0, 3_000)).unwrap(); // ~0.7 MB
    let file = store.disk_bytes().unwrap() as usize;
    assert!(file > 1 << 19, "the data file is {file} bytes");
    assert!(
        xian_lmdb::map_size(&store) >= 2 * file,
        "the map grew ahead of the data"
    );
    let before = all_entries(&store);
    let snapshot = store.snapshot().unwrap();
    // As much again while the snapshot is open: more than the initial map held.
    store.write_batch(&batch(3_000, 3_000)).unwrap();
    assert_eq!(all_entries(&snapshot), before, "the snapshot reads its own state");
    drop(snapshot);
    assert_eq!(all_entries(&store).len(), 6_000);
    store.write_batch(&batch(6_000, 1)).unwrap();
    assert!(xian_lmdb::map_size(&store) >= 2 * store.disk_bytes().unwrap() as usize);
}

/// `state root` and `snapshot create` of `home` (into `out`, at `height`):
/// the state root, which the snapshot must carry. Callers run it while
/// another process holds a write transaction open and release it only after,
/// so these returning at all shows the readers were not held up.
fn root_and_snapshot(home: &Path, out: &Path, height: u64) -> String {
    let root = statesnap_ok(&["state", "root", "--home", p(home)]).trim().to_string();
    let height = height.to_string();
    let created = statesnap_ok(&[
        "snapshot",
        "create",
        "--home",
        p(home),
        "--height",
        &height,
        "--out",
        p(out),
    ]);
    assert!(created.contains(&root), "{created}");
    root
}

/// Run as a child process by the next test (the test binary itself, linked
/// with statesnap's LMDB): commits two keys, then holds a write transaction
/// with uncommitted changes open until stdin closes, then commits it.
#[test]
fn helper_hold_a_write_transaction() {
    let Ok(home) = std::env::var("STATESNAP_TEST_HOLD_WRITE") else {
        return; // only as the helper
    };
    let home = PathBuf::from(home);
    let mut store = XianLmdbStore::create(&home).unwrap();
    store
        .write_batch(&[
            ("currency.balances:alice".into(), Some("1".into())),
            ("currency.balances:bob".into(), Some("2".into())),
        ])
        .unwrap();
    store.flush().unwrap();
    statesnap::store::xian_lmdb::hold_write_txn_for_tests(
        &store,
        &[("currency.balances:carol", "3"), ("currency.balances:alice", "100")],
        || {
            println!("holding");
            std::io::stdout().flush().unwrap();
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut s);
        },
    )
    .unwrap();
    println!("committed");
}

#[test]
fn a_read_only_open_is_not_blocked_by_another_process_write_transaction() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("node");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_hold_a_write_transaction",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("STATESNAP_TEST_HOLD_WRITE", &home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map(|l| l.unwrap())
        .filter(|l| l.ends_with("holding") || l.ends_with("committed"));
    assert!(lines.next().unwrap().ends_with("holding"));

    // The writer holds its write transaction open (until stdin closes, below):
    // reads see the committed state and are not held up.
    let store = HomeStore::open_read_only(&home).unwrap();
    let committed = vec![
        ("currency.balances:alice".to_string(), "1".to_string()),
        ("currency.balances:bob".to_string(), "2".to_string()),
    ];
    assert_eq!(all_entries(&store), committed);
    let root = root_and_snapshot(&home, &tmp.path().join("snaps"), 1);
    assert_eq!(root, root_of(&committed));

    // The writer commits; a new read sees it, an older snapshot does not.
    let view = match &store {
        HomeStore::Lmdb(s) => s.snapshot().unwrap(),
        _ => unreachable!(),
    };
    drop(child.stdin.take());
    assert!(lines.next().unwrap().ends_with("committed"));
    assert!(child.wait().unwrap().success());
    assert_eq!(store.get("currency.balances:carol").unwrap().as_deref(), Some("3"));
    assert_eq!(store.get("currency.balances:alice").unwrap().as_deref(), Some("100"));
    assert_eq!(all_entries(&view), committed);
}

/// A Xian node's writer, the way Xian's driver writes (Python `lmdb`): on
/// "block N" it commits one transaction setting every counter key to N; on
/// "hold" it opens a write transaction and waits for "release" before
/// committing it. It answers each command when it has returned.
const PYTHON_WRITER: &str = r#"
import lmdb, os, sys
os.makedirs(os.path.join(sys.argv[1], "lmdb"), exist_ok=True)
env = lmdb.open(os.path.join(sys.argv[1], "lmdb"), map_size=4 << 30, max_dbs=1, readahead=True, writemap=False, sync=True, metasync=True)
keys = [b"con_counter.values:%04d" % i for i in range(int(sys.argv[2]))]
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "block":
        with env.begin(write=True) as txn:
            for k in keys:
                txn.put(k, cmd[1].encode())
        print("committed", cmd[1], flush=True)
    elif cmd[0] == "hold":
        txn = env.begin(write=True)
        txn.put(keys[0], b"-1")
        print("holding", flush=True)
    elif cmd[0] == "release":
        txn.commit()
        print("released", flush=True)
env.close()
"#;

/// The state PYTHON_WRITER leaves after block `n`.
fn counters_at(keys: usize, n: i64) -> Vec<(String, String)> {
    (0..keys)
        .map(|i| (format!("con_counter.values:{i:04}"), n.to_string()))
        .collect()
}

/// The point of reading Xian's own LMDB: statesnap opens the home of a
/// running Xian node (a Python process writing), shares its lock file's
/// reader table, and reads a consistent committed state while the writer
/// goes on. The writer is never blocked, and pages statesnap's read
/// transaction still sees are not reused under it: after the writer has
/// committed many more blocks, the old view still reads block 1 whole.
#[test]
fn statesnap_reads_a_home_a_python_writer_is_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("node");
    let keys = 300;
    let mut writer = Command::new("python3")
        .args(["-c", PYTHON_WRITER, p(&home), &keys.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to_writer = writer.stdin.take().unwrap();
    let mut from_writer = BufReader::new(writer.stdout.take().unwrap()).lines();
    let mut ask = |cmd: &str, answer: &str| {
        writeln!(to_writer, "{cmd}").unwrap();
        to_writer.flush().unwrap();
        assert_eq!(from_writer.next().unwrap().unwrap(), answer, "writer on {cmd:?}");
    };
    ask("block 1", "committed 1");

    let store = HomeStore::open_read_only(&home).unwrap();
    let HomeStore::Lmdb(lmdb) = &store else {
        panic!("an LMDB home")
    };
    let at_1 = lmdb.snapshot().unwrap();
    assert_eq!(all_entries(&at_1), counters_at(keys, 1));
    // The writer commits on while the read transaction is open (each
    // commit frees block 1's pages; LMDB must not reuse them under us).
    for n in 2..=40 {
        ask(&format!("block {n}"), &format!("committed {n}"));
    }
    assert_eq!(all_entries(&at_1), counters_at(keys, 1));
    assert_eq!(all_entries(&lmdb.snapshot().unwrap()), counters_at(keys, 40));

    // With a write transaction open in the writer, the commands read the
    // last committed block, at once.
    ask("hold", "holding");
    let root = root_and_snapshot(&home, &tmp.path().join("snaps"), 40);
    assert_eq!(root, root_of(&counters_at(keys, 40)));
    ask("release", "released");
    drop(at_1);
    drop(store);
    drop(to_writer);
    assert!(writer.wait().unwrap().success());
}
