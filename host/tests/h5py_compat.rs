//! What statesnap writes, h5py (the library Xian nodes used) reads back the
//! same: keys, values and order. Needs python3 with h5py (scripts/setup.sh
//! installs it).

mod common;

use std::process::Command;

use common::{fixtures, parse_jsonl};
use statesnap::store::{generate, StateStore, XianHdf5Store};

#[test]
fn h5py_reads_what_statesnap_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let mut store = XianHdf5Store::create(&home).unwrap();
    generate::generate(&mut store, 3000, 11, |_| {}).unwrap();
    let mut tricky: Vec<(String, Option<String>)> = [
        ("con_x.balances:alice", "1"),
        ("con_x.balances:alice:bob", "{\"__fixed__\":\"1.5\"}"),
        ("con_x.balances", "\"parent with value\""),
        ("con_x.a::b", "\"empty segment\""),
        ("con_x.trailing:", "\"trailing colon\""),
        ("con_x.slash:a/b", "\"slash in a segment\""),
        ("con_x.pct:%41", "\"percent first\""),
        ("con_x.dots:..", "\"dot dot\""),
        ("con_x.uni:ключ:鍵", "\"ünïcödé\""),
        ("nodot", "\"no dot at all\""),
        ("sl/ash.k", "\"slash in a file name\""),
        (".x", "\"empty file name\""),
        ("__n.abc", "3"),
        ("__latest_block.height", "99"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), Some(v.to_string())))
    .collect();
    tricky.sort();
    store.write_batch(&tricky).unwrap();
    store.flush().unwrap();
    drop(store);

    let ours: Vec<(String, String)> = XianHdf5Store::open(&home)
        .unwrap()
        .entries()
        .unwrap()
        .map(|e| e.map(|e| (e.key, e.stored)).unwrap())
        .collect();
    for (k, v) in &tricky {
        assert!(ours.contains(&(k.clone(), v.clone().unwrap())), "{k} not read back");
    }

    let script = fixtures().join("../compat/h5py_export.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(&home)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "h5py export failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs = parse_jsonl(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(theirs.len(), ours.len());
    assert_eq!(theirs, ours);
}

/// A writer killed with the file open (here h5py, with the 1.10 format Xian's
/// nodes could write) leaves HDF5's open-for-write mark behind, after which
/// HDF5 refuses every open; the store clears the mark and carries on.
#[test]
fn a_file_a_killed_writer_left_open_reopens() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir_all(home.join("contract_state")).unwrap();
    let file = home.join("contract_state/currency");
    let script = r#"
import h5py, os, signal, sys
f = h5py.File(sys.argv[1], "w", libver="latest")
f.create_group("balances/alice").attrs["value"] = "5"
f.flush()
os.kill(os.getpid(), signal.SIGKILL)
"#;
    let status = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&file)
        .status()
        .unwrap();
    assert!(!status.success(), "the writer was meant to die");
    let refused = Command::new("python3")
        .args(["-c", "import h5py, sys; h5py.File(sys.argv[1], 'r')"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!refused.status.success(), "h5py should refuse the marked file");

    let mut store = XianHdf5Store::open(&home).unwrap();
    assert_eq!(store.get("currency.balances:alice").unwrap().as_deref(), Some("5"));
    store
        .write_batch(&[("currency.balances:bob".to_string(), Some("7".to_string()))])
        .unwrap();
    store.flush().unwrap();
    drop(store);
    let all: Vec<_> = XianHdf5Store::open(&home)
        .unwrap()
        .entries()
        .unwrap()
        .map(|e| e.unwrap().key)
        .collect();
    assert_eq!(all, ["currency.balances:alice", "currency.balances:bob"]);
}
