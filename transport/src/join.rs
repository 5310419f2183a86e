//! `statesnap join`: a new node starts at a published snapshot's height
//! without CometBFT's p2p state sync. The app hash comes from the light
//! client (the header after the snapshot's height), the state is restored
//! from the published locations and checked against it, the record the app
//! answers Info from is written beside the state (statesnap's checkpoint,
//! or Xian's block marker) before the state is swapped in, and CometBFT's
//! empty stores are bootstrapped at that height (`cometbft-bootstrap`). The
//! node then block-syncs from there.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use indicatif::ProgressBar;

use statesnap::plugin::PluginRegistry;
use statesnap::snapshot::{RestoreOptions, Verified};

use crate::bootstrap::{bootstrap_cometbft, check_cometbft_home};
use crate::fetch::{self, FetchOptions, FetchReport, RemoteSnapshot, Transfer};
use crate::location::Location;
use crate::trust::{self, TrustSpec};

/// Which application the node runs, and so what its home is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JoinApp {
    /// statesnap's own node: `--home` is the node home (`statesnap start --home`).
    Statesnap,
    /// Xian's node behind `statesnap proxy`: `--home` is Xian's storage home
    /// (the directory holding `lmdb/`, the proxy's `--xian-home`).
    Xian,
}

/// What a join needs.
pub struct JoinPlan<'a> {
    pub sources: &'a [Location],
    pub height: Option<u64>,
    pub format: Option<u32>,
    pub trust: &'a TrustSpec,
    pub app: JoinApp,
    pub home: &'a Path,
    pub cometbft_home: &'a Path,
    /// The `cometbft-bootstrap` built for the CometBFT release the node runs.
    pub bootstrap_tool: &'a Path,
    pub fetch: FetchOptions,
}

/// What a join did, with the time of each step.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JoinReport {
    pub app: JoinApp,
    pub height: u64,
    pub format: u32,
    pub hash: String,
    pub app_hash: String,
    pub header_hash: String,
    pub entries: u64,
    pub fetch: FetchReport,
    pub trust_seconds: f64,
    pub restore_seconds: f64,
    pub bootstrap_seconds: f64,
    pub seconds: f64,
}

/// The state home a join restores into.
fn state_home(app: JoinApp, home: &Path) -> PathBuf {
    match app {
        JoinApp::Statesnap => statesnap::node::state_dir(home),
        JoinApp::Xian => home.to_path_buf(),
    }
}

/// Refuses what is not a CometBFT home (its stores are checked by the tool).
fn require_cometbft_home(cometbft_home: &Path) -> anyhow::Result<()> {
    let config = cometbft_home.join("config/config.toml");
    if !config.is_file() {
        bail!(
            "{} is not a CometBFT home (no config/config.toml): run `cometbft init --home {}` and put the chain's \
             genesis and peers in it first",
            cometbft_home.display(),
            cometbft_home.display()
        );
    }
    Ok(())
}

/// Runs the join; `progress` shows the restore.
pub fn join(plan: &JoinPlan, registry: &PluginRegistry, progress: &ProgressBar) -> anyhow::Result<JoinReport> {
    let started = Instant::now();
    require_cometbft_home(plan.cometbft_home)?;
    let snap: RemoteSnapshot = fetch::find(plan.sources, plan.height, plan.format)?;
    let trusted = trust::app_hash_after(plan.trust, snap.manifest.height, Some(&snap.manifest.chain_id))?;
    // CometBFT's bootstrap reads the light client's settings from the
    // config: the same servers, anchored at the header just verified.
    let params = trust::StateSyncParams {
        enable: false,
        ..trust::statesync_params_at(plan.trust, &trusted)
    };
    trust::write_statesync_section(&plan.cometbft_home.join("config/config.toml"), &params)?;
    // Everything the bootstrap will need, before the app's state is touched:
    // CometBFT's stores empty, its light client agreeing on the app hash.
    check_cometbft_home(
        plan.bootstrap_tool,
        plan.cometbft_home,
        snap.manifest.height,
        &trusted.app_hash,
    )?;
    let trust_seconds = started.elapsed().as_secs_f64();

    let restoring = Instant::now();
    let home = state_home(plan.app, plan.home);
    if let Some(parent) = home.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let opts = FetchOptions {
        download_dir: Some(fetch::download_dir(&home)),
        ..plan.fetch.clone()
    };
    let transfer = Transfer {
        snap: &snap,
        sources: plan.sources,
        opts: &opts,
        progress,
    };
    let options = RestoreOptions {
        // Xian's node reads LMDB only.
        store: (plan.app == JoinApp::Xian).then_some(statesnap::store::StoreKind::Lmdb),
        ..RestoreOptions::default()
    };
    let app = plan.app;
    let restored = fetch::restore(
        &transfer,
        trusted.app_hash,
        registry,
        &home,
        options,
        |v: &Verified| match app {
            JoinApp::Statesnap => statesnap::node::checkpoint::checkpoint_restored_home(v),
            JoinApp::Xian => statesnap::proxy::marker::mark_restored_home(v).map(drop),
        },
    )?;
    let restore_seconds = restoring.elapsed().as_secs_f64();

    let bootstrapping = Instant::now();
    bootstrap_cometbft(
        plan.bootstrap_tool,
        plan.cometbft_home,
        snap.manifest.height,
        &trusted.app_hash,
    )?;
    Ok(JoinReport {
        app: plan.app,
        height: snap.manifest.height,
        format: snap.manifest.format,
        hash: hex::encode(snap.hash),
        app_hash: hex::encode(trusted.app_hash),
        header_hash: hex::encode(trusted.header_hash),
        entries: restored.summary.entries,
        fetch: restored.fetch,
        trust_seconds,
        restore_seconds,
        bootstrap_seconds: bootstrapping.elapsed().as_secs_f64(),
        seconds: started.elapsed().as_secs_f64(),
    })
}
