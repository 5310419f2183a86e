//! `statesnap state …`

use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use std::time::Instant;

use serde_json::json;

use statesnap::bench::peak_rss_bytes;
use statesnap::progress;
use statesnap::store::root::{is_consensus_key, RootBuilder};
use statesnap::store::{generate, HomeStore, StateStore, XianHdf5Store};

#[derive(Subcommand, Debug)]
pub enum StateCommand {
    /// Print the state root (xian-state-root-v2) of a home as hex, on the last line.
    Root {
        #[arg(long)]
        home: PathBuf,
    },
    /// Write every entry as JSON lines {"key":…,"stored":…}, sorted by key.
    Export {
        #[arg(long)]
        home: PathBuf,
        /// Write to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Read JSON lines {"key":…,"stored":…} into a home (created if missing).
    Import {
        #[arg(long)]
        home: PathBuf,
        #[arg(long)]
        jsonl: PathBuf,
    },
    /// Generate a realistic Xian-like state of N keys into a new home.
    Generate {
        #[arg(long)]
        home: PathBuf,
        #[arg(long)]
        keys: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Print a JSON line with the key count and seconds.
        #[arg(long)]
        json: bool,
    },
    /// Copy every entry of one home into a new home, timing only the writes
    /// (the bare-store baseline of `statesnap bench`).
    Copy {
        #[arg(long)]
        from: PathBuf,
        #[arg(long)]
        to: PathBuf,
        /// Read all consensus entries into memory first, so only writing is timed.
        #[arg(long)]
        preload: bool,
    },
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Line {
    key: String,
    stored: String,
}

pub fn run(cmd: StateCommand) -> anyhow::Result<()> {
    match cmd {
        StateCommand::Root { home } => {
            let store = HomeStore::open_read_only(&home)?;
            let bar = progress::bar(None, "hashing", "keys");
            let mut root = RootBuilder::new();
            for e in store.entries()? {
                let e = e?;
                root.push(&e.key, &e.stored)?;
                bar.inc(1);
            }
            bar.finish_and_clear();
            println!("{}", hex::encode(root.finish()));
        }
        StateCommand::Export { home, out } => {
            let store = HomeStore::open_read_only(&home)?;
            let sink: Box<dyn Write> = match &out {
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
        }
        StateCommand::Import { home, jsonl } => {
            let mut store = XianHdf5Store::open_or_create(&home)?;
            let file = std::fs::File::open(&jsonl).with_context(|| format!("opening {}", jsonl.display()))?;
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
                if batch.len() >= 10_000 {
                    batch.sort();
                    store.write_batch(&batch)?;
                    bar.inc(batch.len() as u64);
                    batch.clear();
                }
            }
            batch.sort();
            store.write_batch(&batch)?;
            bar.inc(batch.len() as u64);
            store.flush()?;
            bar.finish_and_clear();
        }
        StateCommand::Generate { home, keys, seed, json } => {
            let started = Instant::now();
            let mut store = XianHdf5Store::create(&home)?;
            let bar = progress::bar(Some(keys), "generating", "keys");
            generate::generate(&mut store, keys, seed, |n| bar.set_position(n))?;
            store.flush()?;
            bar.finish_and_clear();
            if json {
                println!("{}", json!({"keys": keys, "seconds": started.elapsed().as_secs_f64()}));
            }
        }
        StateCommand::Copy { from, to, preload } => {
            let source = HomeStore::open_read_only(&from)?;
            let mut target = XianHdf5Store::create(&to)?;
            let mut entries = 0u64;
            let started;
            if preload {
                let all: Vec<(String, Option<String>)> = source
                    .entries()?
                    .filter(|e| e.as_ref().map(|e| is_consensus_key(&e.key)).unwrap_or(true))
                    .map(|e| e.map(|e| (e.key, Some(e.stored))))
                    .collect::<anyhow::Result<_>>()?;
                started = Instant::now();
                for batch in all.chunks(10_000) {
                    target.write_batch(batch)?;
                    entries += batch.len() as u64;
                }
            } else {
                started = Instant::now();
                let mut batch = Vec::with_capacity(10_000);
                for e in source.entries()? {
                    let e = e?;
                    batch.push((e.key, Some(e.stored)));
                    if batch.len() == 10_000 {
                        target.write_batch(&batch)?;
                        entries += batch.len() as u64;
                        batch.clear();
                    }
                }
                target.write_batch(&batch)?;
                entries += batch.len() as u64;
            }
            target.flush()?;
            drop(target);
            println!(
                "{}",
                json!({"entries": entries, "seconds": started.elapsed().as_secs_f64(), "peak_rss_bytes": peak_rss_bytes()})
            );
        }
    }
    Ok(())
}
