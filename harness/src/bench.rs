//! The engine offline, measured and shown: `statesnap bench` (speed, size and
//! memory against baselines) and `statesnap demo` (each built-in plugin's
//! snapshot and restore).
//!
//! The bench runs each measured step as a child process of this same binary so
//! every step's peak RSS is its own, and reports ratios against baselines
//! measured in the same run (the same codec linked natively; writing the same
//! entries to a fresh home with no snapshot work), because machines are noisy.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context};
use serde_json::Value;

use crate::progress;
use statesnap::plugin::PluginRegistry;
use statesnap::snapshot::{self, CreateOptions, PluginRef};
use statesnap::store::{generate, StateStore, StoreKind, XianHdf5Store};

/// Arguments of `statesnap bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Keys in the generated state.
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// Work directory (default: a temporary directory, removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Plugins to measure (default: every built-in).
    #[arg(long = "plugin")]
    pub plugins: Vec<String>,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Store to measure: lmdb or hdf5 (repeat for both: then their ratios are printed too).
    #[arg(long = "store", value_parser = parse_store)]
    pub stores: Vec<StoreKind>,
    /// Where the source state comes from: `generated` (statesnap's generator, written
    /// into each store) or `h5py` (an HDF5 home written by h5py with its defaults, via
    /// scripts/xian-h5py-home.py; converted for the LMDB runs).
    #[arg(long, value_enum, default_value_t = Source::Generated)]
    pub source: Source,
    /// The h5py generator script (`--source h5py`).
    #[arg(long, value_name = "FILE", default_value = H5PY_SCRIPT)]
    pub h5py_script: PathBuf,
}

/// The default h5py home generator, in this source tree.
pub const H5PY_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/xian-h5py-home.py");

/// Where `statesnap bench` gets its source state.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Generated,
    H5py,
}

fn parse_store(s: &str) -> Result<StoreKind, String> {
    s.parse::<StoreKind>().map_err(|e| e.to_string())
}

/// Arguments of `statesnap demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Keys in the generated state.
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// Work directory (default: a temporary directory, removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// Peak resident memory of this process so far, in bytes (Linux).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// `dir` (created), or a temporary directory removed when the returned guard drops.
pub fn work_dir(dir: &Option<PathBuf>) -> anyhow::Result<(PathBuf, Option<tempfile::TempDir>)> {
    match dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            Ok((d.clone(), None))
        }
        None => {
            let t = tempfile::Builder::new().prefix("statesnap-").tempdir()?;
            Ok((t.path().to_path_buf(), Some(t)))
        }
    }
}

/// Runs this binary with `args`; returns the last stdout line parsed as JSON.
pub(crate) fn child(args: &[&str]) -> anyhow::Result<Value> {
    child_with_env(args, &[])
}

/// [`child`] with these environment variables set for it.
pub(crate) fn child_with_env(args: &[&str], env: &[(&str, String)]) -> anyhow::Result<Value> {
    let exe = std::env::current_exe()?;
    let out = Command::new(&exe)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .with_context(|| format!("running {}", exe.display()))?;
    if !out.status.success() {
        bail!(
            "`statesnap {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or("");
    serde_json::from_str(last).with_context(|| format!("`statesnap {}` printed {last:?}", args.join(" ")))
}

fn f(v: &Value, k: &str) -> f64 {
    v.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

fn mib(bytes: f64) -> f64 {
    bytes / (1024.0 * 1024.0)
}

/// One store's measurements.
struct StoreRun {
    kind: StoreKind,
    /// Seconds to produce the source home in this store.
    source_s: f64,
    bare: Value,
    /// (plugin, mode, create, restore)
    rows: Vec<(String, &'static str, Value, Value)>,
}

/// Makes the h5py-written source home (`--source h5py`).
fn h5py_home(args: &BenchArgs, home: &Path) -> anyhow::Result<f64> {
    let started = Instant::now();
    let out = Command::new("python3")
        .arg(&args.h5py_script)
        .args([
            "--home",
            s(home),
            "--keys",
            &args.keys.to_string(),
            "--seed",
            &args.seed.to_string(),
        ])
        .output()
        .with_context(|| "running python3 (needed for --source h5py; install it with h5py: scripts/setup.sh)")?;
    if !out.status.success() {
        bail!(
            "`python3 {} --home {} --keys {} --seed {}` failed ({}): {}\n\
             --source h5py needs python3 with h5py (scripts/setup.sh) and the script (--h5py-script FILE)",
            args.h5py_script.display(),
            home.display(),
            args.keys,
            args.seed,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(started.elapsed().as_secs_f64())
}

/// The codec modes measured: wasm, and the native baseline when the binary
/// has it (feature `native-codecs`).
fn modes() -> &'static [bool] {
    if cfg!(feature = "native-codecs") {
        &[false, true]
    } else {
        &[false]
    }
}

pub fn bench(args: &BenchArgs, registry: &PluginRegistry) -> anyhow::Result<()> {
    if !cfg!(feature = "native-codecs") {
        eprintln!(
            "bench: no native baseline in this build (build with `cargo build --release -p statesnap-cli --features native-codecs` for it)"
        );
    }
    let (dir, _tmp) = work_dir(&args.dir)?;
    let keys = args.keys.to_string();
    let seed = args.seed.to_string();
    let plugins: Vec<String> = if args.plugins.is_empty() {
        statesnap::plugin::BUILT_IN.iter().map(|(n, _)| n.to_string()).collect()
    } else {
        args.plugins.clone()
    };
    let stores: Vec<StoreKind> = if args.stores.is_empty() {
        vec![StoreKind::Lmdb]
    } else {
        let mut v = args.stores.clone();
        v.dedup();
        v
    };
    let _ = registry;

    let h5py = dir.join("h5py");
    let mut h5py_s = 0.0;
    if args.source == Source::H5py {
        eprintln!("bench: writing {} keys with h5py into {}", args.keys, h5py.display());
        let _ = std::fs::remove_dir_all(&h5py);
        h5py_s = h5py_home(args, &h5py)?;
    }

    let mut runs = Vec::new();
    for &kind in &stores {
        let home = dir.join(format!("state-{kind}"));
        let _ = std::fs::remove_dir_all(&home);
        let started = Instant::now();
        let source_home = match (args.source, kind) {
            (Source::H5py, StoreKind::Hdf5) => h5py.clone(),
            (Source::H5py, StoreKind::Lmdb) => {
                eprintln!("bench: converting the h5py home to {kind}");
                child(&[
                    "state",
                    "convert",
                    "--from",
                    s(&h5py),
                    "--to",
                    s(&home),
                    "--store",
                    kind.name(),
                ])?;
                home.clone()
            }
            (Source::Generated, _) => {
                eprintln!("bench: generating {} keys in {}", args.keys, home.display());
                child(&[
                    "state",
                    "generate",
                    "--home",
                    s(&home),
                    "--keys",
                    &keys,
                    "--seed",
                    &seed,
                    "--store",
                    kind.name(),
                    "--json",
                ])?;
                home.clone()
            }
        };
        let source_s = started.elapsed().as_secs_f64() + if source_home == h5py { h5py_s } else { 0.0 };

        eprintln!("bench: {kind} baseline: writing the same entries to a fresh {kind} home");
        let bare_home = dir.join(format!("bare-{kind}"));
        let _ = std::fs::remove_dir_all(&bare_home);
        let bare = child(&[
            "state",
            "copy",
            "--from",
            s(&source_home),
            "--to",
            s(&bare_home),
            "--store",
            kind.name(),
            "--preload",
        ])?;
        let _ = std::fs::remove_dir_all(&bare_home);

        let mut rows = Vec::new();
        for name in &plugins {
            for &native in modes() {
                let mode = if native { "native" } else { "wasm" };
                eprintln!("bench: {kind} {name} ({mode}): create");
                let out = dir.join(format!("snap-{kind}-{name}-{mode}"));
                let _ = std::fs::remove_dir_all(&out);
                let mut a = vec![
                    "snapshot",
                    "create",
                    "--home",
                    s(&source_home),
                    "--height",
                    "1",
                    "--out",
                    s(&out),
                    "--plugin",
                    name,
                ];
                if native {
                    a.push("--native");
                }
                let created = child(&a)?;
                eprintln!("bench: {kind} {name} ({mode}): restore");
                let target = dir.join(format!("restored-{kind}-{name}-{mode}"));
                let _ = std::fs::remove_dir_all(&target);
                let app_hash = created["app_hash"].as_str().unwrap_or_default().to_string();
                let mut a = vec![
                    "snapshot",
                    "restore",
                    "--from",
                    s(&out),
                    "--home",
                    s(&target),
                    "--app-hash",
                    &app_hash,
                    "--store",
                    kind.name(),
                ];
                if native {
                    a.push("--native");
                }
                let restored = child(&a)?;
                let _ = std::fs::remove_dir_all(&target);
                let _ = std::fs::remove_dir_all(&out);
                rows.push((name.clone(), mode, created, restored));
            }
        }
        let _ = std::fs::remove_dir_all(&home);
        runs.push(StoreRun {
            kind,
            source_s,
            bare,
            rows,
        });
    }

    let first = runs.first().and_then(|r| r.rows.first());
    let state_mb = first.map(|r| f(&r.2, "state_bytes") / 1e6).unwrap_or(0.0);
    let entries = first.map(|r| f(&r.2, "entries")).unwrap_or(f64::NAN);
    let source = match args.source {
        Source::Generated => "generated",
        Source::H5py => "h5py-written",
    };
    println!(
        "statesnap bench: {} keys (seed {}, {source}), {entries} consensus entries, {state_mb:.1} MB of consensus state",
        args.keys, args.seed
    );
    for run in &runs {
        let kind = run.kind;
        let bare_s = f(&run.bare, "seconds");
        println!();
        println!("store {kind}: source home made in {:.1}s", run.source_s);
        println!(
            "baseline bare {kind} write of the same entries: {bare_s:.2}s ({:.0} keys/s, {:.1} MB/s), peak RSS {:.0} MiB",
            entries / bare_s,
            state_mb / bare_s,
            mib(f(&run.bare, "peak_rss_bytes"))
        );
        println!(
            "{:<6} {:<7} {:>9} {:>10} {:>12} {:>8} | {:>9} {:>10} {:>8} {:>8}",
            "plugin", "codec", "create s", "keys/s", "bytes", "RSS MiB", "restore s", "keys/s", "RSS MiB", "vs bare"
        );
        for (name, mode, c, r) in &run.rows {
            let (cs, rs) = (f(c, "seconds"), f(r, "seconds"));
            println!(
                "{:<6} {:<7} {:>9.2} {:>10.0} {:>12} {:>8.0} | {:>9.2} {:>10.0} {:>8.0} {:>7.2}x",
                name,
                mode,
                cs,
                entries / cs,
                f(c, "bytes") as u64,
                mib(f(c, "peak_rss_bytes")),
                rs,
                entries / rs,
                mib(f(r, "peak_rss_bytes")),
                rs / bare_s
            );
        }
        for name in &plugins {
            let get = |mode: &str| run.rows.iter().find(|r| &r.0 == name && r.1 == mode);
            if let (Some(w), Some(n)) = (get("wasm"), get("native")) {
                let same = w.2["hash"] == n.2["hash"];
                println!(
                    "{kind} {name}: wasm/native throughput: create {:.2}x, restore {:.2}x; restore/bare write {:.2}x; wasm and native snapshots {}",
                    f(&n.2, "seconds") / f(&w.2, "seconds"),
                    f(&n.3, "seconds") / f(&w.3, "seconds"),
                    f(&w.3, "seconds") / bare_s,
                    if same { "identical" } else { "DIFFER" }
                );
            }
        }
    }
    let by = |k: StoreKind| runs.iter().find(|r| r.kind == k);
    if let (Some(l), Some(h)) = (by(StoreKind::Lmdb), by(StoreKind::Hdf5)) {
        println!();
        println!(
            "lmdb vs hdf5 (time ratios, lower is faster): bare write {:.3}x",
            f(&l.bare, "seconds") / f(&h.bare, "seconds")
        );
        for (lr, hr) in l.rows.iter().zip(&h.rows) {
            println!(
                "{} {}: create {:.3}x, restore {:.3}x; same snapshot hash: {}",
                lr.0,
                lr.1,
                f(&lr.2, "seconds") / f(&hr.2, "seconds"),
                f(&lr.3, "seconds") / f(&hr.3, "seconds"),
                if lr.2["hash"] == hr.2["hash"] { "yes" } else { "NO" }
            );
        }
    }
    Ok(())
}

/// A work path as an argument (work paths are UTF-8).
pub(crate) fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// Generates a state, snapshots it with each built-in plugin, verifies and
/// restores each, checks the restored state, and prints sizes and speeds.
pub fn demo(args: &DemoArgs, registry: &PluginRegistry) -> anyhow::Result<()> {
    let (dir, _tmp) = work_dir(&args.dir)?;
    let home = dir.join("state");
    let _ = std::fs::remove_dir_all(&home);
    println!("statesnap demo in {}", dir.display());
    let started = Instant::now();
    let mut store = XianHdf5Store::create(&home)?;
    let bar = progress::bar(Some(args.keys), "generating", "keys");
    generate::generate(&mut store, args.keys, 1, |n| bar.set_position(n))?;
    store.flush()?;
    bar.finish_and_clear();
    println!(
        "generated {} keys in {:.1}s",
        args.keys,
        started.elapsed().as_secs_f64()
    );

    for (name, _) in statesnap::plugin::BUILT_IN {
        let plugin = registry
            .by_sha256(&statesnap::plugin::sha256(
                statesnap::plugin::BUILT_IN.iter().find(|(n, _)| n == name).unwrap().1,
            ))?
            .context("built-in plugin missing")?;
        let d = plugin.description();
        let params = d.params.clone();
        let out = dir.join(format!("snapshots-{name}"));
        let _ = std::fs::remove_dir_all(&out);
        let bar = progress::bar(Some(args.keys), "snapshot", "keys");
        let report = snapshot::create(
            &store,
            snapshot::Codec::plugin(&plugin, &params)?,
            PluginRef {
                sha256: plugin.sha256(),
                name: d.name.clone(),
                version: d.version.clone(),
            },
            d.format,
            &CreateOptions::new("demo", 1, params.clone()),
            &out,
            &bar,
        )?;
        bar.finish_and_clear();
        let m = &report.manifest;
        snapshot::verify(&report.dir)?;
        let target = dir.join(format!("restored-{name}"));
        let _ = std::fs::remove_dir_all(&target);
        let started = Instant::now();
        let bar = progress::bar(None, "restoring", "chunks");
        let summary = snapshot::restore_dir(&report.dir, &target, m.app_hash, registry, Default::default(), &bar)?;
        bar.finish_and_clear();
        let restore_s = started.elapsed().as_secs_f64();
        let restored = XianHdf5Store::open(&target)?;
        let same = restored
            .entries()?
            .zip(store.entries()?.filter(|e| {
                e.as_ref()
                    .map(|e| statesnap::store::root::is_consensus_key(&e.key))
                    .unwrap_or(true)
            }))
            .all(|(a, b)| matches!((a, b), (Ok(a), Ok(b)) if a == b));
        let mb = m.state_bytes as f64 / 1e6;
        println!(
            "{name:<6} format {}: {} entries, {:.1} MB -> {} chunks, {:.1} MB ({:.1}x smaller); create {:.2}s ({:.1} MB/s), restore {:.2}s ({:.1} MB/s); root {} {}",
            m.format,
            m.entries,
            mb,
            m.chunks.len(),
            m.snapshot_bytes as f64 / 1e6,
            m.state_bytes as f64 / m.snapshot_bytes as f64,
            report.seconds,
            mb / report.seconds,
            restore_s,
            mb / restore_s,
            &hex::encode(summary.root)[..16],
            if same { "verified, restored state identical" } else { "MISMATCH" }
        );
        if !same {
            bail!("the restored state differs from the original");
        }
    }
    Ok(())
}
