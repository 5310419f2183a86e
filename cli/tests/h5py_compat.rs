//! What statesnap writes, h5py (the library Xian nodes used) reads back the
//! same: keys, values and order. Needs python3 with h5py (scripts/setup.sh
//! installs it).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{fixtures, parse_jsonl, statesnap_ok};
use statesnap::store::{generate, StateStore, XianHdf5Store};

/// scripts/xian-h5py-home.py: homes written with h5py as Xian's driver did.
fn generator() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/xian-h5py-home.py")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("the command runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn h5py_export(home: &Path) -> Vec<(String, String)> {
    parse_jsonl(&run(Command::new("python3")
        .arg(fixtures().join("../compat/h5py_export.py"))
        .arg(home)))
}

/// The keys of a home, in order.
fn keys(home: &Path) -> Vec<String> {
    let store = XianHdf5Store::open(home).unwrap();
    store.entries().unwrap().map(|e| e.unwrap().key).collect()
}

/// h5py opening `file` read-only, as a process of its own.
fn h5py_open(file: &Path) -> std::process::Output {
    Command::new("python3")
        .args(["-c", "import h5py, sys; h5py.File(sys.argv[1], 'r')"])
        .arg(file)
        .output()
        .unwrap()
}

fn walk(home: &Path, batch: Option<usize>) -> Vec<(String, String)> {
    let store = XianHdf5Store::open(home).unwrap();
    let entries = match batch {
        Some(b) => store.entries_in_batches(b),
        None => store.entries(),
    };
    entries
        .unwrap()
        .map(|e| e.map(|e| (e.key, e.stored)).unwrap())
        .collect()
}

fn write_jsonl(path: &Path, entries: &[(String, String)]) {
    let text: String = entries
        .iter()
        .map(|(k, v)| serde_json::json!({"key": k, "stored": v}).to_string() + "\n")
        .collect();
    std::fs::write(path, text).unwrap();
}

/// A home as Xian's HDF5 driver wrote it (h5py's default "earliest" format:
/// symbol-table groups, both string forms of `value`) reads the same through
/// statesnap's walk, `get` and state root as through h5py.
#[test]
fn an_h5py_written_home_reads_as_h5py_reads_it() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("h5py");
    run(Command::new("python3")
        .arg(generator())
        .arg("--home")
        .arg(&home)
        .args(["--keys", "4000", "--seed", "9"]));
    let ours = walk(&home, None);
    assert_eq!(ours.len(), 4000);
    assert_eq!(ours, h5py_export(&home));
    // Small batches cross many batch boundaries in the large groups.
    assert_eq!(walk(&home, Some(97)), ours);

    let store = XianHdf5Store::open(&home).unwrap();
    for (k, v) in ours.iter().step_by(7) {
        assert_eq!(store.get(k).unwrap().as_ref(), Some(v), "{k}");
    }
    assert_eq!(store.get("currency.balances:nobody").unwrap(), None);
    drop(store);

    let jsonl = tmp.path().join("entries.jsonl");
    write_jsonl(&jsonl, &ours);
    let imported = tmp.path().join("imported");
    statesnap_ok(&[
        "state".as_ref(),
        "import".as_ref(),
        "--home".as_ref(),
        imported.as_os_str(),
        "--jsonl".as_ref(),
        jsonl.as_os_str(),
    ]);
    let root = |h: &Path| {
        statesnap_ok(&["state".as_ref(), "root".as_ref(), "--home".as_ref(), h.as_os_str()])
            .trim()
            .to_string()
    };
    assert_eq!(root(&home), root(&imported));
}

/// Sibling names whose stored, decoded and key orders all differ (`a` <
/// `a0` < `a0:…` < `a:…`; escaped names `:`, `:..`, `:a:b` decode to ``,
/// `..`, `a/b`), many of them, so small batches split them everywhere. All
/// ASCII: one non-ASCII link name turns an h5py default-format group into a
/// new-style one (a symbol table cannot record UTF-8); those go to `uni`.
fn wide_entries() -> Vec<(String, String)> {
    let mut names: Vec<String> = [
        "a", "a0", "a00", "a/b", "", "..", ".", "a-", "a.b", "b", "~", "0", "9z", "/", "a/", "%41", " ", "A",
    ]
    .map(String::from)
    .to_vec();
    names.extend((0..400u32).map(|i| format!("{:x}", i.wrapping_mul(2_654_435_761) >> 20)));
    names.sort();
    names.dedup();
    let mut entries = vec![("con_w.kids".to_string(), "\"the parent\"".to_string())];
    for (i, n) in names.iter().enumerate() {
        if i % 5 != 1 {
            entries.push((format!("con_w.kids:{n}"), i.to_string()));
        }
        if i % 3 == 0 {
            entries.push((format!("con_w.kids:{n}:x"), format!("{{\"__fixed__\":\"{i}.5\"}}")));
        }
        if i % 7 == 0 {
            entries.push((format!("con_w.kids:{n}:{n}:"), "true".to_string()));
        }
        if i % 4 == 0 {
            entries.push((format!("con_w.kids{n}"), "null".to_string()));
        }
    }
    for (i, n) in ["é", "🚀", "e", "a", "", "é:x"].iter().enumerate() {
        entries.push((format!("con_w.uni:{n}"), i.to_string()));
    }
    entries.extend(
        [
            ("nodot", "1"),
            (".x", "2"),
            ("sl/ash.k", "3"),
            ("con_w", "4"),
            ("con_w0.a", "5"),
            ("__n.z", "6"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    entries.sort();
    entries.dedup_by(|a, b| a.0 == b.0);
    entries
}

/// Prints how group `/kids` of a file stores its links, from its object
/// header messages: `stab` (symbol table, 0x11) or `links` (link info, 0x02).
const LINK_STORAGE: &str = r#"
import h5py, sys
with h5py.File(sys.argv[1], "r") as f:
    present = h5py.h5o.get_info(f["kids"].id).hdr.mesg.present
    print("stab" if present & (1 << 0x11) else "links" if present & (1 << 0x02) else "?")
"#;

/// The wide group walks in exact key order at every batch size, in files of
/// each HDF5 group format: h5py's default (symbol tables), h5py's
/// `libver="latest"` and statesnap's 1.8 format (compact and dense links).
#[test]
fn many_tricky_siblings_walk_in_key_order_in_every_file_format() {
    let tmp = tempfile::tempdir().unwrap();
    let expected = wide_entries();
    let jsonl = tmp.path().join("wide.jsonl");
    write_jsonl(&jsonl, &expected);
    let mut homes = Vec::new();
    for libver in ["default", "latest"] {
        let home = tmp.path().join(format!("h5py-{libver}"));
        run(Command::new("python3")
            .arg(generator())
            .arg("--home")
            .arg(&home)
            .arg("--from-jsonl")
            .arg(&jsonl)
            .args(["--libver", libver]));
        assert_eq!(h5py_export(&home), expected, "h5py wrote {libver}");
        // The wide group is a symbol table in h5py's default format, links in the latest.
        let kind = run(Command::new("python3")
            .arg("-c")
            .arg(LINK_STORAGE)
            .arg(home.join("contract_state/con_w")));
        let expect = if libver == "default" { "stab" } else { "links" };
        assert_eq!(kind.trim(), expect, "{libver}");
        homes.push(home);
    }
    let ours = tmp.path().join("statesnap");
    let mut store = XianHdf5Store::create(&ours).unwrap();
    let batch: Vec<_> = expected.iter().map(|(k, v)| (k.clone(), Some(v.clone()))).collect();
    store.write_batch(&batch).unwrap();
    store.flush().unwrap();
    drop(store);
    homes.push(ours);

    for home in &homes {
        for batch in [None, Some(1), Some(2), Some(3), Some(10), Some(64), Some(1000)] {
            assert_eq!(
                walk(home, batch),
                expected,
                "{} in batches of {batch:?}",
                home.display()
            );
        }
        let store = XianHdf5Store::open(home).unwrap();
        for (k, v) in &expected {
            assert_eq!(store.get(k).unwrap().as_ref(), Some(v), "{k} in {}", home.display());
        }
    }
}

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
    let refused = h5py_open(&file);
    assert!(!refused.status.success(), "h5py should refuse the marked file");

    let mut store = XianHdf5Store::open(&home).unwrap();
    assert_eq!(store.get("currency.balances:alice").unwrap().as_deref(), Some("5"));
    store
        .write_batch(&[("currency.balances:bob".to_string(), Some("7".to_string()))])
        .unwrap();
    store.flush().unwrap();
    drop(store);
    assert_eq!(keys(&home), ["currency.balances:alice", "currency.balances:bob"]);
}

/// The store's lock on a file (its own, not HDF5's: see
/// xian_store.rs's a_child_process_does_not_keep_an_hdf5_file_locked)
/// works both ways with h5py, which locks through HDF5.
#[test]
fn files_are_locked_against_h5py_both_ways() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let mut store = XianHdf5Store::create(&home).unwrap();
    store
        .write_batch(&[("currency.balances:alice".to_string(), Some("5".to_string()))])
        .unwrap();
    store.flush().unwrap();
    drop(store);

    // h5py holds the file open for writing: statesnap is refused, saying why.
    let file = home.join("contract_state/currency");
    let mut h5py = Command::new("python3")
        .args([
            "-c",
            "import h5py, sys\nf = h5py.File(sys.argv[1], 'r+')\nprint('open', flush=True)\nsys.stdin.read()",
        ])
        .arg(&file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(h5py.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "open", "h5py did not open the file");
    let refused = XianHdf5Store::open(&home).unwrap().get("currency.balances:alice");
    drop(h5py.stdin.take()); // h5py closes the file and exits
    assert!(h5py.wait().unwrap().success());
    let err = format!("{:#}", refused.expect_err("read while h5py writes"));
    assert!(err.contains("locked by another process"), "{err}");

    // statesnap holds it open for writing: h5py is refused.
    let mut store = XianHdf5Store::open(&home).unwrap();
    store
        .write_batch(&[("currency.balances:carol".to_string(), Some("9".to_string()))])
        .unwrap();
    let out = h5py_open(&file);
    assert!(!out.status.success(), "h5py opened a file statesnap is writing");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unable to lock file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    store.flush().unwrap();
    drop(store);
    assert_eq!(keys(&home), ["currency.balances:alice", "currency.balances:carol"]);
}
