//! `statesnap state …`: working with a state home offline (root, export,
//! import, generate, copy, convert).
//!
//! Every `--home` may hold either of Xian's layouts (LMDB `lmdb/`, or HDF5
//! `contract_state/` + `run_state/`): reading commands recognise it, commands
//! that create a home take `--store lmdb|hdf5` (default lmdb).

use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::json;

use statesnap::store::copy::{copy_entries, BATCH};
use statesnap::store::home::{ensure_vacant, is_vacant};
use statesnap::store::root::{is_consensus_key, state_root_of};
use statesnap::store::{convert, generate, Entry, HomeStore, StateStore, StoreKind};
use statesnap_harness::bench::peak_rss_bytes;
use statesnap_harness::progress;

/// `--store`: the layout of a home to create.
pub fn parse_store(s: &str) -> Result<StoreKind, String> {
    s.parse::<StoreKind>().map_err(|e| e.to_string())
}

#[derive(Subcommand, Debug)]
pub enum StateCommand {
    /// Print the state root (xian-state-root-v2) of a home as hex, on the last line.
    Root {
        /// A state home of either layout (opened read-only: a running node's home may be given).
        #[arg(long)]
        home: PathBuf,
    },
    /// Write every entry as JSON lines {"key":…,"stored":…}, sorted by key.
    Export {
        /// A state home of either layout (opened read-only).
        #[arg(long)]
        home: PathBuf,
        /// Write to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Read JSON lines {"key":…,"stored":…} into a home (created if missing or empty).
    Import {
        #[arg(long)]
        home: PathBuf,
        #[arg(long)]
        jsonl: PathBuf,
        /// Layout of a new home: lmdb (Xian's current store) or hdf5. An existing home keeps its own.
        #[arg(long, value_parser = parse_store)]
        store: Option<StoreKind>,
    },
    /// Generate a realistic Xian-like state of N keys into a new home.
    Generate(GenerateArgs),
    /// Copy every entry of one home into a new home, timing only the writes
    /// (the bare-store baseline of `statesnap bench`).
    Copy(CopyArgs),
    /// Migrate a home to a new home of another layout, streamed, checking the
    /// result has the source's state root; prints a JSON line.
    Convert {
        /// The home to read (either layout; opened read-only).
        #[arg(long)]
        from: PathBuf,
        /// A missing or empty directory for the new home.
        #[arg(long)]
        to: PathBuf,
        /// Layout of the new home: lmdb or hdf5.
        #[arg(long, value_parser = parse_store)]
        store: StoreKind,
    },
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[arg(long)]
    home: PathBuf,
    #[arg(long)]
    keys: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Layout of the new home: lmdb or hdf5.
    #[arg(long, value_parser = parse_store, default_value = "lmdb")]
    store: StoreKind,
    /// Print a JSON line with the key count and seconds.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct CopyArgs {
    #[arg(long)]
    from: PathBuf,
    #[arg(long)]
    to: PathBuf,
    /// Layout of the new home: lmdb or hdf5.
    #[arg(long, value_parser = parse_store, default_value = "lmdb")]
    store: StoreKind,
    /// Read all consensus entries into memory first, so only writing is timed.
    #[arg(long)]
    preload: bool,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Line {
    key: String,
    stored: String,
}

/// A new home for `cmd`: refuses a directory that is not missing or empty.
fn create_new(home: &Path, kind: StoreKind, flag: &str) -> anyhow::Result<HomeStore> {
    ensure_vacant(home, flag)?;
    HomeStore::create(home, kind)
}

pub fn run(cmd: StateCommand) -> anyhow::Result<()> {
    match cmd {
        StateCommand::Root { home } => root(&home),
        StateCommand::Export { home, out } => export(&home, out.as_deref()),
        StateCommand::Import { home, jsonl, store } => import(&home, &jsonl, store),
        StateCommand::Generate(a) => generate(&a),
        StateCommand::Copy(a) => copy(&a),
        StateCommand::Convert { from, to, store } => convert_home(&from, &to, store),
    }
}

/// `state root`: the home's state root, as hex.
fn root(home: &Path) -> anyhow::Result<()> {
    let store = HomeStore::open_read_only(home)?;
    let bar = progress::bar(None, "hashing", "keys");
    let (root, _) = state_root_of(&store, || bar.inc(1))?;
    bar.finish_and_clear();
    println!("{}", hex::encode(root));
    Ok(())
}

/// `state export`: every entry as a JSON line, to `out` or stdout.
fn export(home: &Path, out: Option<&Path>) -> anyhow::Result<()> {
    let store = HomeStore::open_read_only(home)?;
    let sink: Box<dyn Write> = match out {
        Some(p) => Box::new(std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut w = BufWriter::new(sink);
    for e in store.entries()? {
        let e = e?;
        serde_json::to_writer(
            &mut w,
            &Line {
                key: e.key,
                stored: e.stored,
            },
        )?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    Ok(())
}

/// `state import`: the JSON lines of `jsonl` into `home`, sorted a batch at a time.
fn import(home: &Path, jsonl: &Path, store: Option<StoreKind>) -> anyhow::Result<()> {
    let file = std::fs::File::open(jsonl).with_context(|| format!("opening {}", jsonl.display()))?;
    let mut target = import_target(home, store)?;
    let bar = progress::bar(None, "importing", "keys");
    let mut batch = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", jsonl.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let l: Line = serde_json::from_str(&line).with_context(|| {
            format!(
                "{} line {}: expected {{\"key\":…,\"stored\":…}}",
                jsonl.display(),
                n + 1
            )
        })?;
        batch.push((l.key, Some(l.stored)));
        if batch.len() >= BATCH {
            batch.sort();
            target.write_batch(&batch)?;
            bar.inc(batch.len() as u64);
            batch.clear();
        }
    }
    batch.sort();
    target.write_batch(&batch)?;
    bar.inc(batch.len() as u64);
    target.flush()?;
    bar.finish_and_clear();
    Ok(())
}

/// The home `state import` writes into: a new one of layout `store` (default
/// lmdb) when `home` is missing or empty, else the existing home, which
/// `store`, if given, must match.
fn import_target(home: &Path, store: Option<StoreKind>) -> anyhow::Result<HomeStore> {
    if is_vacant(home) {
        return HomeStore::create(home, store.unwrap_or_default());
    }
    let existing = HomeStore::open(home)?;
    if let Some(want) = store.filter(|k| *k != existing.kind()) {
        bail!(
            "{} is an existing {} home; --store {want} only chooses the layout of a new home \
             (convert it with `statesnap state convert`, or import into an empty directory)",
            home.display(),
            existing.kind()
        );
    }
    Ok(existing)
}

/// `state generate`: a generated state in a new home.
fn generate(a: &GenerateArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut target = create_new(&a.home, a.store, "--home")?;
    let bar = progress::bar(Some(a.keys), "generating", "keys");
    generate::generate(&mut target, a.keys, a.seed, |n| bar.set_position(n))?;
    target.flush()?;
    bar.finish_and_clear();
    if a.json {
        println!(
            "{}",
            json!({"keys": a.keys, "store": a.store, "seconds": started.elapsed().as_secs_f64()})
        );
    }
    Ok(())
}

/// `state copy`: every entry (with `--preload`, every consensus entry, read
/// into memory first) into a new home, timing the writes; prints a JSON line.
fn copy(a: &CopyArgs) -> anyhow::Result<()> {
    let source = HomeStore::open_read_only(&a.from)?;
    let mut target = create_new(&a.to, a.store, "--to")?;
    // Like a restore's staging home: synced once, at the end.
    target.set_bulk(true);
    let started;
    let entries = if a.preload {
        let all: Vec<Entry> = source
            .entries()?
            .filter(|e| e.as_ref().map(|e| is_consensus_key(&e.key)).unwrap_or(true))
            .collect::<anyhow::Result<_>>()?;
        drop(source);
        started = Instant::now();
        copy_entries(all.into_iter().map(Ok), &mut target, BATCH, |_| {})?
    } else {
        started = Instant::now();
        copy_entries(source.entries()?, &mut target, BATCH, |_| {})?
    };
    target.flush()?;
    drop(target);
    println!(
        "{}",
        json!({"entries": entries, "store": a.store, "seconds": started.elapsed().as_secs_f64(), "peak_rss_bytes": peak_rss_bytes()})
    );
    Ok(())
}

/// `state convert`: `from` into a new home `to` of layout `store`, root-checked; prints a JSON line.
fn convert_home(from: &Path, to: &Path, store: StoreKind) -> anyhow::Result<()> {
    let bar = progress::bar(None, "converting", "keys");
    let report = convert::convert(from, to, store, |n| bar.set_position(n))?;
    bar.finish_and_clear();
    println!(
        "{}",
        json!({
            "from": report.from,
            "to": report.to,
            "entries": report.entries,
            "root": hex::encode(report.root),
            "seconds": report.seconds,
            "peak_rss_bytes": peak_rss_bytes(),
        })
    );
    Ok(())
}
