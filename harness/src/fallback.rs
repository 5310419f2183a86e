//! Falling back from state sync to block sync when no usable snapshot comes
//! (`statesnap join-fallback`, `testnet join --block-sync-after`).
//!
//! CometBFT 0.38 has no such fallback: with `discovery_time` set it keeps
//! discovering forever when no peer offers a snapshot it can use
//! (cometbft#3878), and with `discovery_time = "0s"` it logs "State sync
//! failed" and idles. What does work: restart CometBFT with
//! `[statesync] enable = false`. A state sync that never restored a snapshot
//! stores nothing (CometBFT bootstraps its state only after a restore, and
//! statesnap removes an unfinished staging home when it starts), so the
//! restarted node replays from genesis by block sync, as any new node without
//! state sync does.
//!
//! [`watch`] decides when: the node has no block yet, and no restore has
//! made progress (statesnap's `statesnap_restore_chunks_applied`) for the
//! whole patience period. [`disable_state_sync`] edits CometBFT's config.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use statesnap::node::metrics::read_metric;

use crate::rpc::RpcClient;

/// What a joining node did.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// It has blocks, or restored a snapshot of this height: state sync (or
    /// block sync) got it going.
    Synced { height: u64 },
    /// Nothing happened for `waited`: no snapshot was restored, none is being
    /// restored. Time to fall back to block sync.
    NoSnapshot { waited: Duration },
}

/// Where to look.
pub struct Watch {
    /// The node's CometBFT RPC.
    pub rpc: RpcClient,
    /// The node's statesnap metrics (`http://HOST:PORT/metrics`); `None`:
    /// judge by CometBFT alone (a restore in progress then counts as nothing).
    pub metrics_url: Option<String>,
    /// How long without a block and without restore progress before giving up.
    pub patience: Duration,
    /// How often to look.
    pub every: Duration,
}

/// Watches until the node has a block or has gone `patience` without one
/// and without restore progress. `tell` gets a line now and then.
pub fn watch(w: &Watch, mut tell: impl FnMut(&str)) -> anyhow::Result<Verdict> {
    let started = Instant::now();
    let mut last_progress = started;
    let mut applied = 0.0f64;
    let mut reached_rpc = false;
    let mut last_told = started;
    loop {
        match w.rpc.status() {
            Ok(s) if s.latest_block_height > 0 => {
                return Ok(Verdict::Synced {
                    height: s.latest_block_height,
                })
            }
            Ok(_) => reached_rpc = true,
            Err(_) => {}
        }
        if let Some(url) = &w.metrics_url {
            let (now_applied, restored) = restore_progress(url).unwrap_or((0.0, 0.0));
            if restored > 0.0 {
                // Restored; CometBFT is fetching the blocks since.
                return Ok(Verdict::Synced {
                    height: restored as u64,
                });
            }
            if now_applied > applied {
                last_progress = Instant::now();
            }
            applied = now_applied;
        }
        let idle = last_progress.elapsed();
        if idle >= w.patience {
            anyhow::ensure!(
                reached_rpc,
                "the node's RPC at {} never answered in {:?}: is CometBFT running?",
                w.rpc.url(),
                w.patience
            );
            return Ok(Verdict::NoSnapshot { waited: idle });
        }
        if last_told.elapsed() >= Duration::from_secs(10) {
            last_told = Instant::now();
            tell(&format!(
                "no block yet after {:.0?}; {} chunks of a snapshot applied; falling back to block sync after {:.0?} without progress",
                started.elapsed(),
                applied,
                w.patience
            ));
        }
        std::thread::sleep(w.every);
    }
}

/// Chunks applied in the restore in flight, and the height restored (0: none).
fn restore_progress(url: &str) -> anyhow::Result<(f64, f64)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let text = agent.get(url).call()?.body_mut().read_to_string()?;
    let read = |name| read_metric(&text, name).with_context(|| format!("no {name} metric at {url}"));
    Ok((
        read("statesnap_restore_chunks_applied")?,
        read("statesnap_restored_snapshot_height")?,
    ))
}

/// Sets `[statesync] enable = false` in `<home>/config/config.toml`,
/// keeping everything else (comments included).
pub fn disable_state_sync(cometbft_home: &Path) -> anyhow::Result<()> {
    crate::testnet::cometbft::set_state_sync(cometbft_home, false)
}
