//! The command line as users and scripts drive it.

mod common;

use std::process::Output;

use assert_cmd::Command;
use common::*;

fn statesnap(args: &[&str]) -> Output {
    Command::cargo_bin("statesnap").unwrap().args(args).output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = statesnap(args);
    assert!(
        out.status.success(),
        "statesnap {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn last_json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

fn p(path: &std::path::Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn state_root_and_export_match_the_fixture() {
    let home = fixture_home();
    let out = ok(&["state", "root", "--home", p(&home)]);
    assert_eq!(out.lines().last().unwrap(), hex::encode(fixture_root()));
    let exported = ok(&["state", "export", "--home", p(&home)]);
    let expected = std::fs::read_to_string(fixtures().join("xian-hdf5-small.entries.jsonl")).unwrap();
    let parse = |s: &str| -> Vec<serde_json::Value> { s.lines().map(|l| serde_json::from_str(l).unwrap()).collect() };
    assert_eq!(parse(&exported), parse(&expected));
}

#[test]
fn import_generate_create_verify_restore() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    // import the fixture's entries file: same root as the fixture
    let imported = t.join("imported");
    ok(&[
        "state",
        "import",
        "--home",
        p(&imported),
        "--jsonl",
        p(&fixtures().join("xian-hdf5-small.entries.jsonl")),
    ]);
    assert_eq!(
        ok(&["state", "root", "--home", p(&imported)]).trim(),
        hex::encode(fixture_root())
    );

    let home = t.join("gen");
    ok(&["state", "generate", "--home", p(&home), "--keys", "3000", "--seed", "5"]);
    let root = ok(&["state", "root", "--home", p(&home)]).trim().to_string();
    for plugin in ["zstd", "gzip", "brotli"] {
        let out = t.join(format!("snaps-{plugin}"));
        let created = last_json(&ok(&[
            "snapshot",
            "create",
            "--home",
            p(&home),
            "--height",
            "12",
            "--out",
            p(&out),
            "--plugin",
            plugin,
        ]));
        assert_eq!(created["height"], 12);
        assert_eq!(created["app_hash"], root.as_str());
        assert!(created["chunks"].as_u64().unwrap() >= 1);
        assert!(created["bytes"].as_u64().unwrap() > 0);
        assert_eq!(created["hash"].as_str().unwrap().len(), 64);
        let verified = last_json(&ok(&["snapshot", "verify", p(&out)]));
        assert_eq!(verified["hash"], created["hash"]);

        // A wrong app hash: non-zero exit, a message, and the home untouched.
        let target = t.join(format!("target-{plugin}"));
        copy_tree(&fixture_home(), &target);
        let before = tree(&target);
        let wrong = hex::encode([0x11u8; 32]);
        let out_wrong = statesnap(&[
            "snapshot",
            "restore",
            "--from",
            p(&out),
            "--home",
            p(&target),
            "--app-hash",
            &wrong,
        ]);
        assert!(!out_wrong.status.success());
        let err = String::from_utf8_lossy(&out_wrong.stderr);
        assert!(err.contains("trusted app hash"), "{err}");
        assert_eq!(tree(&target), before);

        let restored = last_json(&ok(&[
            "snapshot",
            "restore",
            "--from",
            p(&out),
            "--home",
            p(&target),
            "--app-hash",
            &root,
        ]));
        assert_eq!(restored["app_hash"], root.as_str());
        assert_eq!(ok(&["state", "root", "--home", p(&target)]).trim(), root);
        assert!(no_leftovers(&target));
    }
}

#[test]
fn bad_arguments_say_what_is_wrong() {
    let out = statesnap(&[
        "snapshot",
        "restore",
        "--from",
        "/nonexistent",
        "--home",
        "/tmp/x",
        "--app-hash",
        "zz",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a hex hash"));
    let out = statesnap(&["state", "root", "--home", "/nonexistent/home"]);
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).is_empty());
    let out = statesnap(&["snapshot", "verify", "/nonexistent/snap"]);
    assert!(!out.status.success());
}

#[test]
fn plugin_commands() {
    let list = ok(&["plugin", "list"]);
    assert!(
        list.contains("zstd") && list.contains("gzip") && list.contains("brotli"),
        "{list}"
    );
    let zstd = wasm("statesnap-plugin-zstd");
    let info: serde_json::Value = serde_json::from_str(&ok(&["plugin", "inspect", p(&zstd)])).unwrap();
    assert_eq!(info["name"], "zstd");
    assert_eq!(info["contract"], "statesnap:plugin@1");
    assert_eq!(info["sha256"].as_str().unwrap().len(), 64);
    let check = ok(&["plugin", "check", p(&zstd), "--keys", "1000"]);
    assert!(check.contains("passed"), "{check}");
    let out = statesnap(&["plugin", "check", p(&testplugin("nondet")), "--keys", "500"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("hidden state"));
    // By default the check is the chain's (its keys and fuel, whatever this
    // host's limits), and it says what a proposal would get.
    let chain = ok(&["plugin", "check", p(&zstd)]);
    assert!(
        chain.contains("as the chain checks a proposal: 1000 generated keys, 10000000000 fuel per call"),
        "{chain}"
    );
    assert!(chain.contains("verdict: a proposal of this plugin passes"), "{chain}");
    assert!(
        chain.contains("the costliest") && !chain.contains("thorough"),
        "{chain}"
    );
    let out = statesnap(&["--plugin-fuel", "1000000", "plugin", "check", p(&zstd), "--thorough"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("verdict: a proposal of this plugin passes"), "{said}");
    assert!(
        said.contains("thorough: 5000 generated keys") && said.contains("[FAIL]"),
        "{said}"
    );
    let out = statesnap(&["plugin", "check", p(&testplugin("nondet"))]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("verdict: a proposal of this plugin is refused: it fails the conformance check `deterministic`"),
        "{said}"
    );
    let out = statesnap(&["plugin", "inspect", p(&testplugin("v2"))]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("contract 2.0.0"));
}

/// What the binary embeds is the committed artifact byte for byte, whatever
/// profile built it (these tests run a release build; `cargo build` makes a
/// debug one): `plugin export` of each built-in equals plugins/dist/.
#[test]
fn the_binary_embeds_the_committed_plugin_artifacts() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["zstd", "gzip", "brotli"] {
        let out = tmp.path().join(format!("{name}.wasm"));
        ok(&["plugin", "export", name, "--out", p(&out)]);
        let dist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../plugins/dist/{name}.wasm"));
        assert!(std::fs::read(&out).unwrap() == std::fs::read(&dist).unwrap(), "{name}");
    }
}

#[test]
fn the_plugin_template_passes_the_check_and_round_trips() {
    let template = wasm("statesnap-plugin-template");
    let check = ok(&["plugin", "check", p(&template), "--keys", "2000"]);
    assert!(check.contains("passed"), "{check}");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("snaps");
    let created = last_json(&ok(&[
        "snapshot",
        "create",
        "--home",
        p(&fixture_home()),
        "--height",
        "3",
        "--out",
        p(&out),
        "--plugin",
        p(&template),
        "--param",
        "chunk_bytes=5000",
    ]));
    assert_eq!(created["format"], 100);
    assert!(created["chunks"].as_u64().unwrap() > 3);
    let home = tmp.path().join("home");
    let root = hex::encode(fixture_root());
    // The snapshot's plugin is not built in: restore needs it given.
    let out_missing = statesnap(&[
        "snapshot",
        "restore",
        "--from",
        p(&out),
        "--home",
        p(&home),
        "--app-hash",
        &root,
    ]);
    assert!(!out_missing.status.success());
    assert!(String::from_utf8_lossy(&out_missing.stderr).contains("--plugin"));
    ok(&[
        "snapshot",
        "restore",
        "--from",
        p(&out),
        "--home",
        p(&home),
        "--app-hash",
        &root,
        "--plugin",
        p(&template),
    ]);
    assert_eq!(ok(&["state", "root", "--home", p(&home)]).trim(), root);
}

#[test]
fn gov_commands_refuse_bad_input_before_the_network() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("key.json");
    ok(&["key", "new", "--out", p(&key)]);
    let err = |args: &[&str]| {
        let out = statesnap(args);
        assert!(!out.status.success(), "statesnap {args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // Nothing listens on port 9: each error must come before any network call.
    let rpc = "http://127.0.0.1:9";
    let missing = tmp.path().join("missing.wasm");
    let e = err(&[
        "gov",
        "propose",
        "--plugin",
        p(&missing),
        "--format",
        "3",
        "--rpc",
        rpc,
        "--key",
        p(&key),
    ]);
    assert!(e.contains("reading plugin file"), "{e}");
    let nondet = testplugin("nondet");
    let e = err(&[
        "gov",
        "propose",
        "--plugin",
        p(&nondet),
        "--format",
        "9",
        "--rpc",
        rpc,
        "--key",
        p(&key),
    ]);
    assert!(e.contains("would be refused") && e.contains("conformance"), "{e}");
    let gzip = tmp.path().join("gzip.wasm");
    let out = ok(&["plugin", "export", "gzip", "--out", p(&gzip)]);
    assert!(out.contains("format 2"), "{out}");
    let e = err(&[
        "gov",
        "propose",
        "--plugin",
        p(&gzip),
        "--format",
        "3",
        "--rpc",
        rpc,
        "--key",
        p(&key),
    ]);
    assert!(e.contains("makes format 2, not 3"), "{e}");
    let e = err(&[
        "gov",
        "propose",
        "--plugin",
        p(&gzip),
        "--format",
        "2",
        "--activation-delay",
        "0",
        "--rpc",
        rpc,
        "--key",
        p(&key),
    ]);
    assert!(e.contains("activation delay is 0 blocks"), "{e}");
    // Then the network: a clear error naming the address.
    let e = err(&["gov", "status", "--rpc", rpc]);
    assert!(e.contains("127.0.0.1:9"), "{e}");
    let e = err(&["plugin", "export", "nope", "--out", p(&gzip)]);
    assert!(e.contains("no plugin named `nope`"), "{e}");
}

fn err(args: &[&str]) -> String {
    let out = statesnap(args);
    assert!(!out.status.success(), "statesnap {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn one_home_flag_for_both_layouts_and_convert() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let root = hex::encode(fixture_root());
    let jsonl = fixtures().join("xian-hdf5-small.entries.jsonl");
    let expected = std::fs::read_to_string(&jsonl).unwrap();
    let parse = |s: &str| -> Vec<serde_json::Value> { s.lines().map(|l| serde_json::from_str(l).unwrap()).collect() };
    // A new home is LMDB unless --store says otherwise.
    let lmdb = t.join("lmdb-home");
    ok(&["state", "import", "--home", p(&lmdb), "--jsonl", p(&jsonl)]);
    assert!(lmdb.join("lmdb/data.mdb").is_file());
    let hdf5 = t.join("hdf5-home");
    ok(&[
        "state",
        "import",
        "--home",
        p(&hdf5),
        "--jsonl",
        p(&jsonl),
        "--store",
        "hdf5",
    ]);
    assert!(hdf5.join("contract_state").is_dir());
    for home in [&lmdb, &hdf5] {
        assert_eq!(ok(&["state", "root", "--home", p(home)]).trim(), root);
        assert_eq!(parse(&ok(&["state", "export", "--home", p(home)])), parse(&expected));
    }
    // Importing into an existing home keeps its layout; a conflicting --store is refused.
    let e = err(&[
        "state",
        "import",
        "--home",
        p(&hdf5),
        "--jsonl",
        p(&jsonl),
        "--store",
        "lmdb",
    ]);
    assert!(e.contains("existing hdf5 home") && e.contains("state convert"), "{e}");

    // convert both ways: same root, same export, a JSON line.
    let back = t.join("converted");
    let out = last_json(&ok(&[
        "state",
        "convert",
        "--from",
        p(&lmdb),
        "--to",
        p(&back),
        "--store",
        "hdf5",
    ]));
    assert_eq!(out["entries"], 400);
    assert_eq!(out["root"], root.as_str());
    assert_eq!((out["from"].as_str(), out["to"].as_str()), (Some("lmdb"), Some("hdf5")));
    assert!(out["seconds"].as_f64().is_some());
    let again = t.join("again");
    ok(&[
        "state",
        "convert",
        "--from",
        p(&back),
        "--to",
        p(&again),
        "--store",
        "lmdb",
    ]);
    assert!(again.join("lmdb/data.mdb").is_file());
    assert_eq!(parse(&ok(&["state", "export", "--home", p(&again)])), parse(&expected));
    // A non-vacant target is refused and left alone.
    let e = err(&[
        "state",
        "convert",
        "--from",
        p(&lmdb),
        "--to",
        p(&hdf5),
        "--store",
        "lmdb",
    ]);
    assert!(e.contains("already holds an hdf5 state home"), "{e}");
    let full = t.join("full");
    std::fs::create_dir_all(&full).unwrap();
    std::fs::write(full.join("notes.txt"), b"keep").unwrap();
    let e = err(&[
        "state",
        "convert",
        "--from",
        p(&lmdb),
        "--to",
        p(&full),
        "--store",
        "lmdb",
    ]);
    assert!(e.contains("not empty"), "{e}");
    assert_eq!(std::fs::read(full.join("notes.txt")).unwrap(), b"keep");
    let e = err(&["state", "generate", "--home", p(&full), "--keys", "10"]);
    assert!(e.contains("not empty"), "{e}");
    let e = err(&["state", "copy", "--from", p(&lmdb), "--to", p(&hdf5)]);
    assert!(e.contains("already holds"), "{e}");
    // Unknown --store.
    let e = err(&[
        "state",
        "generate",
        "--home",
        p(&t.join("x")),
        "--keys",
        "10",
        "--store",
        "rocksdb",
    ]);
    assert!(
        e.contains("unknown store") && e.contains("lmdb") && e.contains("hdf5"),
        "{e}"
    );
    // Both layouts, neither.
    let both = t.join("both");
    copy_tree(&hdf5, &both);
    copy_tree(&lmdb.join("lmdb"), &both.join("lmdb"));
    let e = err(&["state", "root", "--home", p(&both)]);
    assert!(e.contains("holds both"), "{e}");
    let e = err(&[
        "snapshot",
        "create",
        "--home",
        p(&both),
        "--height",
        "1",
        "--out",
        p(&t.join("s")),
    ]);
    assert!(e.contains("holds both"), "{e}");
    let e = err(&["state", "export", "--home", p(&full)]);
    assert!(e.contains("neither") && e.contains("lmdb/data.mdb"), "{e}");

    // generate / copy / restore with --store.
    let g = t.join("gen-hdf5");
    ok(&[
        "state",
        "generate",
        "--home",
        p(&g),
        "--keys",
        "2000",
        "--store",
        "hdf5",
    ]);
    assert!(g.join("contract_state").is_dir());
    let groot = ok(&["state", "root", "--home", p(&g)]).trim().to_string();
    let c = t.join("copy-lmdb");
    let copied = last_json(&ok(&[
        "state",
        "copy",
        "--from",
        p(&g),
        "--to",
        p(&c),
        "--store",
        "lmdb",
    ]));
    assert_eq!(copied["entries"], 2000);
    assert_eq!(ok(&["state", "root", "--home", p(&c)]).trim(), groot);
    let snaps = t.join("snaps");
    let created = last_json(&ok(&[
        "snapshot",
        "create",
        "--home",
        p(&c),
        "--height",
        "4",
        "--out",
        p(&snaps),
    ]));
    let dir = created["dir"].as_str().unwrap().to_string();
    // A new home: LMDB by default, or --store.
    let r1 = t.join("r1");
    let restored = last_json(&ok(&[
        "snapshot",
        "restore",
        "--from",
        &dir,
        "--home",
        p(&r1),
        "--app-hash",
        &groot,
    ]));
    assert_eq!(restored["store"], "lmdb");
    let r2 = t.join("r2");
    ok(&[
        "snapshot",
        "restore",
        "--from",
        &dir,
        "--home",
        p(&r2),
        "--app-hash",
        &groot,
        "--store",
        "hdf5",
    ]);
    assert!(r2.join("run_state").is_dir());
    // An existing home keeps its layout unless --store is given.
    ok(&[
        "snapshot",
        "restore",
        "--from",
        &dir,
        "--home",
        p(&r2),
        "--app-hash",
        &groot,
    ]);
    assert!(r2.join("run_state").is_dir() && !r2.join("lmdb").exists());
    ok(&[
        "snapshot",
        "restore",
        "--from",
        &dir,
        "--home",
        p(&r2),
        "--app-hash",
        &groot,
        "--store",
        "lmdb",
    ]);
    assert!(r2.join("lmdb/data.mdb").is_file() && !r2.join("run_state").exists());
    assert_eq!(ok(&["state", "root", "--home", p(&r2)]).trim(), groot);
    let e = err(&[
        "snapshot",
        "restore",
        "--from",
        &dir,
        "--home",
        p(&r2),
        "--app-hash",
        &groot,
        "--store",
        "x",
    ]);
    assert!(e.contains("unknown store"), "{e}");
}

#[test]
fn bench_from_h5py_fails_clearly_without_the_script() {
    let tmp = tempfile::tempdir().unwrap();
    let e = err(&[
        "bench",
        "--keys",
        "100",
        "--source",
        "h5py",
        "--h5py-script",
        p(&tmp.path().join("missing.py")),
        "--dir",
        p(tmp.path()),
    ]);
    assert!(e.contains("--source h5py needs python3 with h5py"), "{e}");
}

/// A host failure is not a verdict: when this machine cannot run a plugin
/// (here the OS refuses the memory an instance reserves, under `ulimit -v`),
/// `plugin check` and the governance check `gov propose` runs say it is this
/// host failing, and never that the plugin fails the check (which, in a
/// node, would be recorded in state as a refusal other nodes do not share).
#[test]
fn a_host_failure_is_an_error_not_a_verdict_on_the_plugin() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("key.json");
    ok(&["key", "new", "--out", p(&key)]);
    let zstd = wasm("statesnap-plugin-zstd");
    let bin = env!("CARGO_BIN_EXE_statesnap");
    let limited = |args: &[&str]| {
        // 3 GB of address space: enough to start, not for a wasm instance's
        // 4 GiB reservation.
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg("ulimit -v 3000000 && exec \"$0\" \"$@\"")
            .arg(bin)
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "statesnap {args:?} succeeded under ulimit");
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (out, err) = limited(&["plugin", "check", p(&zstd), "--keys", "100"]);
    assert!(err.contains("this host failed while running plugin"), "{err}");
    assert!(!out.contains("[FAIL]") && !err.contains("trapped"), "{out}{err}");

    let (_, err) = limited(&[
        "gov",
        "propose",
        "--plugin",
        p(&zstd),
        "--format",
        "1",
        "--rpc",
        "http://127.0.0.1:9",
        "--key",
        p(&key),
    ]);
    assert!(err.contains("could not run the conformance check"), "{err}");
    assert!(!err.contains("would be refused"), "{err}");
}

/// Durability of the swap: after renaming the restored home into place, a
/// restore syncs the directory holding it, so a crash right after cannot
/// bring the replaced home back (or leave no home) once the restore said it
/// was done. Observed with strace: after the last rename, the parent is
/// opened and that descriptor fsynced.
#[test]
fn a_restore_syncs_the_homes_directory_after_the_swap() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let home = dir.join("home");
    let snaps = dir.join("snaps");
    let target = dir.join("restored");
    ok(&["state", "generate", "--home", p(&home), "--keys", "2000"]);
    ok(&[
        "snapshot",
        "create",
        "--home",
        p(&home),
        "--height",
        "1",
        "--out",
        p(&snaps),
    ]);
    let root = ok(&["state", "root", "--home", p(&home)]).trim().to_string();
    let restore = [
        "snapshot",
        "restore",
        "--from",
        p(&snaps),
        "--home",
        p(&target),
        "--app-hash",
        &root,
    ];
    ok(&restore); // a first restore, so the second replaces a home
    let trace = dir.join("trace");
    let out = std::process::Command::new("strace")
        .args(["-f", "-e", "trace=openat,fsync,rename,renameat,renameat2", "-o"])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_statesnap"))
        .args(restore)
        .output()
        .expect("strace is installed by scripts/setup.sh");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<String> = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let into_place = format!("\"{}\")", target.display());
    let swap = lines
        .iter()
        .rposition(|l| l.contains("rename") && l.contains(&into_place))
        .unwrap_or_else(|| panic!("no rename into {}:\n{}", target.display(), lines.join("\n")));
    let open_parent = format!("openat(AT_FDCWD, \"{}\", ", dir.display());
    let fd = lines[swap..]
        .iter()
        .find(|l| l.contains(&open_parent))
        .and_then(|l| l.rsplit("= ").next())
        .unwrap_or_else(|| panic!("the parent is not opened after the swap:\n{}", lines[swap..].join("\n")))
        .trim()
        .to_string();
    assert!(
        lines[swap..]
            .iter()
            .any(|l| l.contains(&format!("fsync({fd})")) && l.ends_with("= 0")),
        "the parent directory is not fsynced after the swap:\n{}",
        lines[swap..].join("\n")
    );
}

/// The C plugin (examples/plugin-c), built by its script as the test command
/// does: it passes the chain's check, round-trips a generated state and the
/// h5py-written fixture through the host with byte-identical snapshots
/// across runs, and is refused cleanly when it passes a limit.
/// Builds an example plugin with its build script into `out`.
fn build_example_plugin(script: &str, out: &std::path::Path) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(script);
    let built = std::process::Command::new(&script).arg(out).output().unwrap();
    assert!(
        built.status.success(),
        "{}: {}",
        script.display(),
        String::from_utf8_lossy(&built.stderr)
    );
}

/// What every example plugin must show: it round-trips a generated state and
/// the h5py fixture through the host, and two runs give the same snapshot.
/// `pre` are the global options that find it, `plugin` names it. Returns the
/// generated home.
fn example_plugin_round_trips(tmp: &std::path::Path, pre: &[&str], plugin: &str, format: u64) -> std::path::PathBuf {
    let run = |args: &[&str]| ok(&[pre, args].concat());
    let generated = tmp.join("generated");
    ok(&["state", "generate", "--home", p(&generated), "--keys", "20000"]);
    for (name, home) in [("generated", generated.clone()), ("h5py fixture", fixture_home())] {
        let root = ok(&["state", "root", "--home", p(&home)]).trim().to_string();
        let slug = name.replace(' ', "-");
        let mut hashes = Vec::new();
        for n in 0..2 {
            let out = tmp.join(format!("snaps-{slug}-{n}"));
            let made = last_json(&run(&[
                "snapshot",
                "create",
                "--home",
                p(&home),
                "--height",
                "5",
                "--out",
                p(&out),
                "--plugin",
                plugin,
                "--param",
                "chunk_bytes=100000",
            ]));
            assert_eq!(made["format"], format, "{name}");
            assert_eq!(made["app_hash"].as_str().unwrap(), root, "{name}");
            hashes.push(made["hash"].as_str().unwrap().to_string());
        }
        assert_eq!(hashes[0], hashes[1], "{name}: two runs give the same snapshot");
        let restored = tmp.join(format!("restored-{slug}"));
        let from = tmp.join(format!("snaps-{slug}-0"));
        // Restore finds the snapshot's plugin by SHA-256 among those it
        // knows (built in, --plugin-dir); a file is named with --plugin.
        let file = if plugin.ends_with(".wasm") {
            &["--plugin", plugin][..]
        } else {
            &[]
        };
        let args = [
            "snapshot",
            "restore",
            "--from",
            p(&from),
            "--home",
            p(&restored),
            "--app-hash",
            &root,
        ];
        run(&[&args[..], file].concat());
        assert_eq!(ok(&["state", "root", "--home", p(&restored)]).trim(), root, "{name}");
    }
    generated
}

/// A refused `snapshot create` of `home`: says `why` and leaves no snapshot.
fn assert_create_refused(tmp: &std::path::Path, pre: &[&str], home: &std::path::Path, plugin: &str, why: &str) {
    let out = tmp.join("refused");
    let args = [
        "snapshot",
        "create",
        "--home",
        p(home),
        "--height",
        "5",
        "--out",
        p(&out),
        "--plugin",
        plugin,
    ];
    let refused = statesnap(&[pre, &args[..]].concat());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{said}");
    assert!(said.contains(why), "{said}");
    assert!(
        !out.exists() || std::fs::read_dir(&out).unwrap().count() == 0,
        "no snapshot left"
    );
}

#[test]
fn the_c_plugin_passes_the_check_and_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let plugin = tmp.path().join("raw-c.wasm");
    build_example_plugin("examples/plugin-c/build.sh", &plugin);
    let check = ok(&["plugin", "check", p(&plugin)]);
    assert!(check.contains("raw-c 0.1.0 makes format 101"), "{check}");
    assert!(check.contains("verdict: a proposal of this plugin passes"), "{check}");

    let generated = example_plugin_round_trips(tmp.path(), &[], p(&plugin), 101);
    // Over the output limit (1 MiB per call, a chunk of 8 MB): a clear error, no snapshot.
    assert_create_refused(
        tmp.path(),
        &["--plugin-output-mib", "1"],
        &generated,
        p(&plugin),
        "output",
    );
}

#[test]
fn the_python_plugin_passes_the_check_and_round_trips_from_the_plugin_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("plugins");
    std::fs::create_dir(&dir).unwrap();
    build_example_plugin("examples/plugin-python/build.sh", &dir.join("jsonl-py.wasm"));
    let pre = ["--plugin-dir", p(&dir)];
    let listed = ok(&[&pre[..], &["plugin", "list"]].concat());
    assert!(listed.contains("jsonl-py"), "{listed}");
    let check = ok(&[&pre[..], &["plugin", "check", "jsonl-py"]].concat());
    assert!(check.contains("jsonl-py 1.0.0 makes format 102"), "{check}");
    assert!(check.contains("verdict: a proposal of this plugin passes"), "{check}");

    let generated = example_plugin_round_trips(tmp.path(), &pre, "jsonl-py", 102);
    // An interpreter spends fuel fast: with 10^8 per call a batch runs out, a clear error, no snapshot.
    assert_create_refused(
        tmp.path(),
        &[&pre[..], &["--plugin-fuel", "100000000"]].concat(),
        &generated,
        "jsonl-py",
        "fuel",
    );
}

/// The compile cache only saves time: a command served from it makes the
/// same snapshot bytes and spends the same fuel as one that compiles; a cache
/// that cannot be opened is a warning, not a failure.
#[test]
fn the_compile_cache_changes_nothing_but_time() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let home = t.join("gen");
    ok(&["state", "generate", "--home", p(&home), "--keys", "2000", "--seed", "9"]);
    let cache = t.join("cache");
    let run = |name: &str, cache_args: &[&str]| {
        let out = t.join(name);
        let args = [
            cache_args,
            &[
                "snapshot",
                "create",
                "--home",
                p(&home),
                "--height",
                "3",
                "--out",
                p(&out),
                "--plugin",
                "brotli",
            ],
        ]
        .concat();
        ok(&args);
        let check = ok(&[cache_args, &["plugin", "check", "brotli"]].concat());
        // The fuel figures (not the times, which vary).
        let words: Vec<&str> = check.split_whitespace().collect();
        let fuel: Vec<String> = words
            .windows(2)
            .filter(|w| w[1].starts_with("fuel"))
            .map(|w| w[0].to_string())
            .collect();
        assert!(!fuel.is_empty(), "{check}");
        (tree(&out), fuel)
    };
    let compiled = run("none", &["--no-compile-cache"]);
    assert!(!cache.exists());
    let cold = run("cold", &["--compile-cache", p(&cache)]);
    let stored = cache_entries(&cache);
    assert!(!stored.is_empty(), "the first command fills the cache");
    let warm = run("warm", &["--compile-cache", p(&cache)]);
    assert_eq!(cache_entries(&cache), stored, "the second command compiles nothing new");
    assert_eq!(cold.1, compiled.1, "the fuel spent");
    assert_eq!(warm.1, compiled.1, "the fuel spent");
    assert!(cold.0 == compiled.0 && warm.0 == compiled.0, "the snapshots differ");

    // A cache that cannot be made: the command still works, and says so.
    let file = t.join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let out = statesnap(&["--compile-cache", p(&file.join("sub")), "plugin", "list"]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("compiling plugins without a cache") && err.contains("--no-compile-cache"),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("brotli"));
    let out = statesnap(&["--compile-cache", "x", "--no-compile-cache", "plugin", "list"]);
    assert!(!out.status.success(), "the two options conflict");
}

/// The names of the files under `dir` (recursively), but not wasmtime's
/// usage counters (`.stats`), which a cache hit updates.
fn cache_entries(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    tree(dir)
        .into_keys()
        .filter(|f| f.extension().is_none_or(|e| e != "stats"))
        .collect()
}
