//! `statesnap bench-node`: how much a background snapshot slows block
//! production, measured in process (no CometBFT, no network noise).
//!
//! It loads a generated state of N keys as genesis, runs blocks of signed
//! transfers back to back (harsher than a real chain, which waits for its
//! block time), and compares FinalizeBlock + Commit times of normal blocks
//! with those of the blocks that run while a snapshot of the whole state is
//! being built. It also reports what the state costs the node: time to load
//! the genesis, time to restart after a crash (rebuilding the Merkle treap
//! from the state) and after a clean stop (loading the saved treap), and
//! peak RSS.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use ed25519_dalek::SigningKey;
use serde_json::json;

use crate::bench::peak_rss_bytes;
use statesnap::node::{Metrics, Node, NodeConfig};
use statesnap::plugin::PluginRegistry;
use statesnap::protocol::tx::{self, Action, Op, TxBody};
use statesnap::store::{generate, HomeStore, StateStore, StoreKind};

/// Arguments of `statesnap bench-node`.
#[derive(clap::Args, Debug)]
pub struct BenchNodeArgs {
    /// Keys in the generated genesis state.
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// Transactions per block (each a transfer: two balances and a nonce).
    #[arg(long, default_value_t = 100)]
    pub txs_per_block: u64,
    /// Blocks measured before the snapshot starts.
    #[arg(long, default_value_t = 30)]
    pub normal_blocks: u64,
    /// Snapshot format plugin.
    #[arg(long, default_value = "zstd")]
    pub plugin: String,
    /// The node's state store (the generated genesis home uses it too).
    #[arg(long, value_name = "lmdb|hdf5", default_value = "lmdb")]
    pub store: StoreKind,
    /// Work directory (default: a temporary directory, removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

const CHAIN: &str = "bench";

/// A set of block times: how many, and their median, 95th percentile and
/// maximum in seconds (NaN when there are none).
pub(crate) struct Timings {
    pub(crate) count: usize,
    pub(crate) median: f64,
    pub(crate) p95: f64,
    pub(crate) max: f64,
}

impl Timings {
    pub(crate) fn of(mut t: Vec<f64>) -> Timings {
        if t.is_empty() {
            return Timings {
                count: 0,
                median: f64::NAN,
                p95: f64::NAN,
                max: f64::NAN,
            };
        }
        t.sort_by(f64::total_cmp);
        let at = |q: f64| t[((t.len() - 1) as f64 * q).round() as usize];
        Timings {
            count: t.len(),
            median: at(0.5),
            p95: at(0.95),
            max: t[t.len() - 1],
        }
    }
}

/// Runs the benchmark; `registry` makes the plugin registries of the node
/// (opened twice: at genesis, then to time a reopen).
pub fn bench_node(args: &BenchNodeArgs, registry: impl Fn() -> anyhow::Result<PluginRegistry>) -> anyhow::Result<()> {
    let (dir, _tmp) = crate::bench::work_dir(&args.dir)?;
    let genesis = dir.join("genesis");
    let home = dir.join("node");
    for d in [&genesis, &home] {
        if d.exists() {
            std::fs::remove_dir_all(d).with_context(|| format!("removing {}", d.display()))?;
        }
    }
    eprintln!("bench-node: generating {} keys", args.keys);
    let mut store = HomeStore::create(&genesis, args.store)?;
    generate::generate(&mut store, args.keys, 1, |_| {})?;
    store.flush()?;
    drop(store);

    let snapshot_at = args.normal_blocks + 1;
    let config = NodeConfig {
        chain_id: CHAIN.into(),
        metrics_listen: String::new(),
        snapshot_interval: 0, // started by hand below, once
        snapshot_plugin: args.plugin.clone(),
        store: args.store,
        ..NodeConfig::default()
    };
    let metrics = Arc::new(Metrics::new());
    let node = Node::open(&home, config.clone(), registry()?, metrics)?;
    eprintln!("bench-node: loading the genesis state");
    let started = Instant::now();
    let app_state = json!({ "import_home": genesis }).to_string();
    node.init_chain(CHAIN, 1, app_state.as_bytes(), &[([1; 32], 10)])?;
    let genesis_s = started.elapsed().as_secs_f64();

    let accounts: Vec<SigningKey> = (0..1000u32)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[..4].copy_from_slice(&i.to_le_bytes());
            SigningKey::from_bytes(&seed)
        })
        .collect();
    let mut nonces = vec![0u64; accounts.len()];
    let mut next = 0usize;
    let mut block = |height: u64| -> anyhow::Result<f64> {
        let txs: Vec<Vec<u8>> = (0..args.txs_per_block)
            .map(|i| {
                let a = next % accounts.len();
                next += 1;
                let to = hex::encode((height * 7919 + i).to_le_bytes());
                let from = hex::encode(accounts[a].verifying_key().to_bytes());
                let body = TxBody {
                    chain_id: CHAIN.into(),
                    account: accounts[a].verifying_key().to_bytes(),
                    nonce: nonces[a],
                    action: Action::Patch(vec![
                        Op::Set {
                            key: format!("currency.balances:{from}"),
                            stored: format!("{{\"__fixed__\":\"{}.5\"}}", 1_000_000 - height),
                        },
                        Op::Set {
                            key: format!("currency.balances:{to}"),
                            stored: format!("{{\"__fixed__\":\"{height}.25\"}}"),
                        },
                    ]),
                };
                nonces[a] += 1;
                tx::Tx::sign(body, &accounts[a]).map(tx::Tx::into_bytes)
            })
            .collect::<Result<_, _>>()?;
        let started = Instant::now();
        let (outcomes, _) = node.finalize_block(height, &txs)?;
        node.commit()?;
        let took = started.elapsed().as_secs_f64();
        if let Some(bad) = outcomes.iter().find(|o| o.code != 0) {
            anyhow::bail!("a benchmark transaction was refused: {}", bad.log);
        }
        Ok(took)
    };

    eprintln!("bench-node: {} normal blocks", args.normal_blocks);
    let mut normal = Vec::new();
    for h in 1..=args.normal_blocks {
        normal.push(block(h)?);
    }
    eprintln!("bench-node: blocks while a snapshot of height {snapshot_at} is built");
    let snap_started = Instant::now();
    let first = block(snapshot_at)?;
    node.snapshot_now();
    let mut during = Vec::new();
    let mut height = snapshot_at;
    while node.snapshot_in_progress() {
        height += 1;
        during.push(block(height)?);
    }
    node.wait_for_snapshots();
    let snapshot_s = snap_started.elapsed().as_secs_f64();
    let created = node.list_snapshots().iter().any(|s| s.height == snapshot_at);
    drop(node);

    // A restart after a crash rebuilds the treap from the whole state; one
    // after a clean stop loads the treap the stop saved.
    let reopen = || -> anyhow::Result<(Node, f64)> {
        let registry = registry()?;
        let started = Instant::now();
        let node = Node::open(&home, config.clone(), registry, Arc::new(Metrics::new()))?;
        Ok((node, started.elapsed().as_secs_f64()))
    };
    let (node, reopen_s) = reopen()?;
    node.shutdown()?;
    drop(node);
    let (node, clean_reopen_s) = reopen()?;
    drop(node);

    let normal = Timings::of(normal);
    let during = Timings::of(during);
    println!(
        "statesnap bench-node: {} keys on {}, {} transfers per block, snapshot plugin {}",
        args.keys, args.store, args.txs_per_block, args.plugin
    );
    println!(
        "genesis load {genesis_s:.1}s; restart after a crash (rebuild the Merkle treap) {reopen_s:.1}s, \
         after a clean stop (saved treap) {clean_reopen_s:.1}s; peak RSS {:.0} MiB",
        peak_rss_bytes().unwrap_or(0) as f64 / 1048576.0
    );
    println!(
        "normal blocks:          {:>4}  median {:>7.1} ms  p95 {:>7.1} ms  max {:>7.1} ms",
        normal.count,
        normal.median * 1e3,
        normal.p95 * 1e3,
        normal.max * 1e3
    );
    println!(
        "during the snapshot:    {:>4}  median {:>7.1} ms  p95 {:>7.1} ms  max {:>7.1} ms  (the block that started it: {:.1} ms)",
        during.count,
        during.median * 1e3,
        during.p95 * 1e3,
        during.max * 1e3,
        first * 1e3
    );
    println!(
        "snapshot of height {snapshot_at}: {} in {snapshot_s:.1}s; during/normal: median {:.2}x, max {:.2}x",
        if created { "created" } else { "FAILED" },
        during.median / normal.median,
        during.max / normal.max
    );
    println!(
        "{}",
        json!({"keys": args.keys, "store": args.store.name(), "txs_per_block": args.txs_per_block, "genesis_seconds": genesis_s,
            "reopen_seconds": reopen_s, "clean_reopen_seconds": clean_reopen_s, "normal_median_ms": normal.median * 1e3, "normal_max_ms": normal.max * 1e3,
            "during_blocks": during.count, "during_median_ms": during.median * 1e3, "during_max_ms": during.max * 1e3,
            "snapshot_seconds": snapshot_s, "snapshot_created": created, "peak_rss_bytes": peak_rss_bytes()})
    );
    if !created {
        anyhow::bail!("the snapshot was not created; see the log (-v)");
    }
    Ok(())
}
