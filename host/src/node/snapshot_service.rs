//! The node's own snapshots: taken every `snapshot_interval` blocks in the
//! background from a frozen view, pruned to the `snapshot_keep_recent`
//! newest heights, advertised to peers and served chunk by chunk.
//!
//! At most one snapshot job runs at a time; a height that comes due while
//! one is still running is skipped with a warning (as the Cosmos SDK does),
//! so a slow disk never queues up work or memory. Which formats a job makes
//! is decided by `formats` from the state of its height.
//!
//! Jobs are supervised: an error or a panic in one is logged and counted,
//! its unfinished output removed, and the next interval runs as usual.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::Context;
use indicatif::ProgressBar;

use super::formats::{FormatPlanner, Producer};
use super::metrics::Metrics;
use super::view::StateView;
use crate::plugin::{Plugin, PluginEngine};
use crate::snapshot::{self, list_snapshots, CreateOptions, Manifest, PluginRef};

/// CometBFT lists at most this many snapshots from a peer.
pub(crate) const MAX_ADVERTISED: usize = 10;

/// A snapshot as advertised to CometBFT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertised {
    pub height: u64,
    pub format: u32,
    pub chunks: u32,
    pub hash: [u8; 32],
    pub metadata: Vec<u8>,
}

/// Takes, keeps and serves this node's snapshots.
pub(crate) struct SnapshotService {
    dir: PathBuf,
    interval: u64,
    keep_recent: u32,
    /// Decides each job's formats.
    planner: Arc<FormatPlanner>,
    metrics: Arc<Metrics>,
    busy: Arc<AtomicBool>,
    worker: Mutex<Option<JoinHandle<()>>>,
    #[cfg(feature = "test-hooks")]
    hooks: super::TestHooks,
}

/// How a node takes its snapshots (from its `config.toml`).
pub(crate) struct SnapshotSettings {
    /// Where the snapshots go.
    pub dir: PathBuf,
    /// Every this many blocks (0: never).
    pub interval: u64,
    /// How many of the newest heights are kept.
    pub keep_recent: u32,
    /// The configured plugin, and its parameters (resolved against the
    /// plugin's defaults at start, so a bad parameter fails then).
    pub plugin: Option<Arc<Plugin>>,
    pub params: Vec<(String, String)>,
    /// Blocks during which a newly approved format is made beside the old one.
    pub format_overlap: u64,
}

impl SnapshotService {
    /// A service taking snapshots as `settings` say, with the configured
    /// plugin and the formats governance approves.
    pub(crate) fn new(settings: SnapshotSettings, engine: PluginEngine, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let SnapshotSettings {
            dir,
            interval,
            keep_recent,
            plugin,
            params,
            format_overlap,
        } = settings;
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        snapshot::remove_unfinished(&dir, false)?;
        let configured = match plugin {
            Some(plugin) => {
                let params = plugin
                    .resolve_params(&params)
                    .with_context(|| format!("snapshot_params for plugin {}", plugin.label()))?;
                Some((plugin, params))
            }
            None => None,
        };
        Ok(SnapshotService {
            dir,
            interval,
            keep_recent: keep_recent.max(1),
            planner: Arc::new(FormatPlanner {
                configured,
                engine,
                overlap: format_overlap,
                interval,
                metrics: metrics.clone(),
            }),
            metrics,
            busy: Arc::default(),
            worker: Mutex::default(),
            #[cfg(feature = "test-hooks")]
            hooks: super::TestHooks::default(),
        })
    }

    /// Test only: the faults this node's snapshots commit.
    #[cfg(feature = "test-hooks")]
    pub(crate) fn set_hooks(&mut self, hooks: super::TestHooks) {
        self.hooks = hooks;
    }

    /// Whether a snapshot is due after committing `height`.
    pub(crate) fn due(&self, height: u64) -> bool {
        self.interval > 0 && height > 0 && height.is_multiple_of(self.interval)
    }

    /// Builds a snapshot of `view` in the background, unless one is running.
    pub(crate) fn start(&self, view: StateView, chain_id: String) {
        if self.busy.swap(true, Ordering::SeqCst) {
            tracing::warn!(
                height = view.height,
                "skipping this snapshot: the previous one is still being built (raise snapshot_interval?)"
            );
            return;
        }
        let job = Job {
            dir: self.dir.clone(),
            keep_recent: self.keep_recent,
            planner: self.planner.clone(),
            metrics: self.metrics.clone(),
            #[cfg(feature = "test-hooks")]
            hooks: self.hooks,
        };
        let idle = Idle(self.busy.clone());
        let handle = std::thread::Builder::new()
            .name(format!("snapshot-{}", view.height))
            .spawn(move || {
                let _idle = idle;
                job.supervised(&view, &chain_id);
            })
            .expect("spawning the snapshot thread");
        let mut worker = self.worker.lock().expect("snapshot worker lock");
        if let Some(previous) = worker.replace(handle) {
            let _ = previous.join();
        }
    }

    /// Whether a snapshot is being built.
    pub(crate) fn busy(&self) -> bool {
        self.busy.load(Ordering::SeqCst)
    }

    /// Waits for the snapshot being built, if any.
    pub(crate) fn wait_idle(&self) {
        if let Some(handle) = self.worker.lock().expect("snapshot worker lock").take() {
            let _ = handle.join();
        }
    }

    /// The newest snapshots, highest height first, as CometBFT wants them.
    pub(crate) fn list(&self) -> anyhow::Result<Vec<Advertised>> {
        let mut out = Vec::new();
        for snap in list_snapshots(&self.dir)?.into_iter().take(MAX_ADVERTISED) {
            #[allow(unused_mut)]
            let mut metadata = snap.manifest_bytes()?;
            #[allow(unused_mut)]
            let mut manifest = Manifest::decode(&metadata).with_context(|| format!("in {}", snap.path().display()))?;
            #[cfg(feature = "test-hooks")]
            if self.hooks.forge_approvals {
                manifest = super::test_hooks::forge_approval(manifest, self.interval);
                metadata = manifest.encode();
            }
            out.push(Advertised {
                height: manifest.height,
                format: manifest.format,
                chunks: manifest.chunks.len() as u32,
                hash: manifest.hash(),
                metadata,
            });
        }
        Ok(out)
    }

    /// Chunk `index` of snapshot (`height`, `format`); empty when there is
    /// no such snapshot or chunk (CometBFT's convention, not an error).
    pub(crate) fn load_chunk(&self, height: u64, format: u32, index: u32) -> Vec<u8> {
        #[cfg(feature = "test-hooks")]
        let format = if self.hooks.forge_approvals {
            super::test_hooks::served_format(format)
        } else {
            format
        };
        #[allow(unused_mut)]
        let Some(mut chunk) = snapshot::serve_chunk(&self.dir, height, format, index) else {
            return Vec::new();
        };
        self.metrics.chunks_served.inc();
        #[cfg(feature = "test-hooks")]
        if self.hooks.corrupt_chunks {
            super::test_hooks::corrupt(&mut chunk);
        }
        chunk
    }
}

/// Marks a snapshot service idle when its job's thread ends, however it ends.
pub(crate) struct Idle(pub(crate) Arc<AtomicBool>);

impl Drop for Idle {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// What the background thread needs.
struct Job {
    dir: PathBuf,
    keep_recent: u32,
    planner: Arc<FormatPlanner>,
    metrics: Arc<Metrics>,
    #[cfg(feature = "test-hooks")]
    hooks: super::TestHooks,
}

impl Job {
    /// Runs the job; a panic anywhere in it (a bug: plugin failures are
    /// errors, not panics) is logged and counted, and the snapshot it left
    /// unfinished is removed, so the node keeps snapshotting.
    fn supervised(&self, view: &StateView, chain_id: &str) {
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run(view, chain_id)));
        if let Err(panic) = ran {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".into());
            self.metrics.snapshot_jobs_panicked.inc();
            self.metrics.snapshots_failed.inc();
            tracing::error!(
                height = view.height,
                "snapshot: the job panicked ({what}); its unfinished snapshot is removed and the next interval runs as usual"
            );
            if let Err(e) = snapshot::remove_unfinished(&self.dir, true) {
                tracing::warn!("snapshot: removing the unfinished snapshot failed: {e:#}");
            }
        }
    }

    fn run(&self, view: &StateView, chain_id: &str) {
        let producers = match self.planner.plan(view) {
            Ok(p) => p,
            Err(e) => {
                self.metrics.snapshots_failed.inc();
                tracing::error!(
                    height = view.height,
                    "snapshot: cannot choose the formats to make: {e:#}"
                );
                return;
            }
        };
        for producer in &producers {
            self.run_one(view, chain_id, producer);
        }
        if let Err(e) = snapshot::prune(&self.dir, self.keep_recent) {
            tracing::warn!("snapshot: pruning old snapshots failed: {e:#}");
        }
    }

    fn run_one(&self, view: &StateView, chain_id: &str, producer: &Producer) {
        let height = view.height;
        tracing::info!(
            height,
            keys = view.keys(),
            plugin = producer.plugin.label(),
            self_describing = producer.ship.is_some(),
            "snapshot: started"
        );
        match self.create(view, chain_id, producer) {
            Ok(report) => {
                self.metrics.snapshot_created(&report);
            }
            Err(e) => {
                self.metrics.snapshots_failed.inc();
                tracing::error!(height, "snapshot: failed: {e:#}");
            }
        }
    }

    fn create(&self, view: &StateView, chain_id: &str, producer: &Producer) -> anyhow::Result<snapshot::CreateReport> {
        let d = producer.plugin.description();
        let plugin = PluginRef {
            sha256: producer.plugin.sha256(),
            name: d.name.clone(),
            version: d.version.clone(),
        };
        #[allow(unused_mut)]
        let mut codec = snapshot::Codec::plugin(&producer.plugin, &producer.params)?;
        let mut opts = CreateOptions::new(chain_id, view.height, producer.params.clone());
        opts.ship = producer.ship.clone();
        #[cfg(feature = "test-hooks")]
        {
            use super::test_hooks::{create_forged, PanicsMidway};
            if self.hooks.panic_snapshot_at == Some(view.height) {
                codec.encoder = Box::new(PanicsMidway {
                    inner: codec.encoder,
                    writes: 0,
                });
            }
            if self.hooks.forge_states {
                return create_forged(&self.dir, view, view.app_hash, codec, plugin, d.format, &opts);
            }
        }
        let report = snapshot::create(view, codec, plugin, d.format, &opts, &self.dir, &ProgressBar::hidden())?;
        if report.manifest.app_hash != view.app_hash {
            let _ = std::fs::remove_dir_all(&report.dir);
            anyhow::bail!(
                "the snapshot's state root {} is not the app hash {} of height {} (a bug); removed it",
                hex::encode(report.manifest.app_hash),
                hex::encode(view.app_hash),
                view.height
            );
        }
        Ok(report)
    }
}
