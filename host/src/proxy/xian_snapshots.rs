//! The proxy's own snapshots of the live Xian home: taken every `interval`
//! blocks in the background from an LMDB read transaction opened when the
//! app has committed the block (before CometBFT sees the Commit answer, so
//! before the next block can write), kept `keep_recent` heights deep, listed
//! and served chunk by chunk.
//!
//! A snapshot is served only once its state root, computed while it is
//! made, equals the app hash in the home's block marker: the marker is the
//! app's own word for what it committed.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::Context;
use indicatif::ProgressBar;

use super::marker::BlockMarker;
use crate::node::metrics::Metrics;
use crate::node::snapshot_service::Idle;
use crate::plugin::Plugin;
use crate::snapshot::{self, list_snapshots, CreateOptions, Manifest, PluginRef};
use crate::store::xian_lmdb::{LmdbSnapshot, XianLmdbStore};

/// How the proxy takes its snapshots.
#[derive(Clone)]
pub struct XianSnapshotSettings {
    /// Xian's storage home (the directory holding `lmdb/`).
    pub home: PathBuf,
    /// Where the snapshots go.
    pub dir: PathBuf,
    /// Every this many blocks (0: never).
    pub interval: u64,
    /// How many of the newest heights are kept.
    pub keep_recent: u32,
    /// The format plugin, and its parameters resolved against its defaults.
    pub plugin: Arc<Plugin>,
    pub params: Vec<(String, String)>,
    /// The chain id written into every manifest.
    pub chain_id: String,
}

/// A snapshot as listed: its manifest and the manifest's bytes.
pub struct Listed {
    pub manifest: Manifest,
    pub metadata: Vec<u8>,
}

/// Takes, keeps and serves the proxy's snapshots.
pub struct XianSnapshots {
    settings: XianSnapshotSettings,
    metrics: Arc<Metrics>,
    /// The live home, opened read-only when first needed (the app creates
    /// it) and dropped when a restore replaces it.
    store: Mutex<Option<XianLmdbStore>>,
    busy: Arc<AtomicBool>,
    worker: Mutex<Option<JoinHandle<()>>>,
    #[cfg(feature = "test-hooks")]
    hooks: crate::node::TestHooks,
}

impl XianSnapshots {
    pub fn new(settings: XianSnapshotSettings, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&settings.dir).with_context(|| format!("creating {}", settings.dir.display()))?;
        snapshot::remove_unfinished(&settings.dir, false)?;
        Ok(XianSnapshots {
            settings,
            metrics,
            store: Mutex::default(),
            busy: Arc::default(),
            worker: Mutex::default(),
            #[cfg(feature = "test-hooks")]
            hooks: crate::node::TestHooks::default(),
        })
    }

    /// Test only: the faults this proxy's snapshots commit (forged states,
    /// corrupt chunks).
    #[cfg(feature = "test-hooks")]
    pub fn set_hooks(&mut self, hooks: crate::node::TestHooks) {
        hooks.announce();
        self.hooks = hooks;
    }

    pub fn settings(&self) -> &XianSnapshotSettings {
        &self.settings
    }

    /// Whether a snapshot is due once `height` is committed.
    pub fn due(&self, height: u64) -> bool {
        self.settings.interval > 0 && height > 0 && height.is_multiple_of(self.settings.interval)
    }

    /// Forgets the open home (a restore is about to replace it).
    pub fn close_home(&self) {
        self.wait_idle();
        *self.store.lock().expect("home lock") = None;
    }

    /// The app has committed `height`: opens a read view of the home now
    /// and builds its snapshot in the background, unless one is running.
    pub fn committed(&self, height: u64) {
        self.metrics.height.set(height as i64);
        if !self.due(height) {
            return;
        }
        if self.busy.swap(true, Ordering::SeqCst) {
            tracing::warn!(
                height,
                "skipping this snapshot: the previous one is still being built (raise --snapshot-interval?)"
            );
            return;
        }
        let idle = Idle(self.busy.clone());
        let (view, marker) = match self.view_at(height) {
            Ok(v) => v,
            Err(e) => {
                self.metrics.snapshots_failed.inc();
                tracing::error!(height, "snapshot: cannot read the app's home: {e:#}");
                return;
            }
        };
        let job = Job {
            settings: self.settings.clone(),
            metrics: self.metrics.clone(),
            #[cfg(feature = "test-hooks")]
            hooks: self.hooks,
        };
        let handle = std::thread::Builder::new()
            .name(format!("snapshot-{height}"))
            .spawn(move || {
                let _idle = idle;
                job.supervised(view, marker);
            })
            .expect("spawning the snapshot thread");
        if let Some(previous) = self.worker.lock().expect("snapshot worker lock").replace(handle) {
            let _ = previous.join();
        }
    }

    /// A read view of the home and its marker, which must say `height`.
    fn view_at(&self, height: u64) -> anyhow::Result<(LmdbSnapshot, BlockMarker)> {
        let mut store = self.store.lock().expect("home lock");
        if store.is_none() {
            *store = Some(XianLmdbStore::open_read_only(&self.settings.home)?);
        }
        let view = store.as_ref().expect("opened above").snapshot()?;
        let marker = BlockMarker::read(&view)?.with_context(|| {
            format!(
                "the home {} has no {} marker after a commit: is the app Xian's node?",
                self.settings.home.display(),
                super::marker::MARKER_KEY
            )
        })?;
        marker.expect_height(height)?;
        Ok((view, marker))
    }

    /// Waits for the snapshot being built, if any.
    pub fn wait_idle(&self) {
        if let Some(handle) = self.worker.lock().expect("snapshot worker lock").take() {
            let _ = handle.join();
        }
    }

    /// The newest snapshots, highest height first, at most `max`.
    pub fn list(&self, max: usize) -> anyhow::Result<Vec<Listed>> {
        let mut out = Vec::new();
        for snap in list_snapshots(&self.settings.dir)?.into_iter().take(max) {
            let metadata = snap.manifest_bytes()?;
            let manifest = Manifest::decode(&metadata).with_context(|| format!("in {}", snap.path().display()))?;
            out.push(Listed { manifest, metadata });
        }
        Ok(out)
    }

    /// Chunk `index` of snapshot (`height`, plugin `format`); empty when
    /// there is no such snapshot or chunk (CometBFT's convention).
    pub fn load_chunk(&self, height: u64, format: u32, index: u32) -> Vec<u8> {
        match snapshot::serve_chunk(&self.settings.dir, height, format, index) {
            #[allow(unused_mut)]
            Some(mut chunk) => {
                self.metrics.chunks_served.inc();
                #[cfg(feature = "test-hooks")]
                if self.hooks.corrupt_chunks {
                    crate::node::test_hooks::corrupt(&mut chunk);
                }
                chunk
            }
            None => Vec::new(),
        }
    }
}

struct Job {
    settings: XianSnapshotSettings,
    metrics: Arc<Metrics>,
    #[cfg(feature = "test-hooks")]
    hooks: crate::node::TestHooks,
}

impl Job {
    /// Runs the job; an error or a panic is logged and counted, and what it
    /// left unfinished removed, so the next interval runs as usual.
    fn supervised(&self, view: LmdbSnapshot, marker: BlockMarker) {
        let height = marker.height;
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run(&view, &marker)));
        let failed = match ran {
            Ok(Ok(report)) => {
                self.metrics.snapshot_created(&report);
                false
            }
            Ok(Err(e)) => {
                tracing::error!(height, "snapshot: failed: {e:#}");
                true
            }
            Err(_) => {
                self.metrics.snapshot_jobs_panicked.inc();
                tracing::error!(height, "snapshot: the job panicked; the next interval runs as usual");
                true
            }
        };
        if failed {
            self.metrics.snapshots_failed.inc();
            if let Err(e) = snapshot::remove_unfinished(&self.settings.dir, true) {
                tracing::warn!("snapshot: removing the unfinished snapshot failed: {e:#}");
            }
        }
        if let Err(e) = snapshot::prune(&self.settings.dir, self.settings.keep_recent) {
            tracing::warn!("snapshot: pruning old snapshots failed: {e:#}");
        }
    }

    fn run(&self, view: &LmdbSnapshot, marker: &BlockMarker) -> anyhow::Result<snapshot::CreateReport> {
        let s = &self.settings;
        let d = s.plugin.description();
        let plugin = PluginRef {
            sha256: s.plugin.sha256(),
            name: d.name.clone(),
            version: d.version.clone(),
        };
        let codec = snapshot::Codec::plugin(&s.plugin, &s.params)?;
        let mut opts = CreateOptions::new(&s.chain_id, marker.height, s.params.clone());
        opts.block_time_nanos = Some(marker.nanos);
        tracing::info!(height = marker.height, plugin = s.plugin.label(), "snapshot: started");
        #[cfg(feature = "test-hooks")]
        if self.hooks.forge_states {
            return crate::node::test_hooks::create_forged(
                &s.dir,
                view,
                marker.app_hash,
                codec,
                plugin,
                d.format,
                &opts,
            );
        }
        let report = snapshot::create(view, codec, plugin, d.format, &opts, &s.dir, &ProgressBar::hidden())?;
        if report.manifest.app_hash != marker.app_hash {
            let _ = std::fs::remove_dir_all(&report.dir);
            anyhow::bail!(
                "the state root {} of height {} is not the app hash {} the app recorded; not serving it \
                 (is the home written by another version of Xian's node?)",
                hex::encode(report.manifest.app_hash),
                marker.height,
                hex::encode(marker.app_hash)
            );
        }
        Ok(report)
    }
}
