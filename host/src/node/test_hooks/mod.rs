//! Test only (feature `test-hooks`, never in a release binary): the faults a
//! node can be told to commit, so tests can watch its peers refuse them: a
//! corrupting server, a forger of approvals or of whole states, a snapshot
//! job that panics, a slow disk.

mod forged_state;

use std::path::Path;

use anyhow::Context;
use indicatif::ProgressBar;

use crate::plugin::PluginError;
use crate::snapshot::{self, ChunkEncoder, CreateOptions, Manifest, PluginRef};
use crate::store::StateStore;
use forged_state::ForgedState;

/// What a node under test does wrong.
#[derive(Debug, Clone, Copy, Default)]
pub struct TestHooks {
    /// Serve every snapshot chunk with a byte flipped.
    pub corrupt_chunks: bool,
    /// Wait this long before applying each restored chunk (a slow disk), so
    /// tests can interrupt a restore in the middle.
    pub chunk_delay_ms: u64,
    /// Advertise self-describing snapshots with forged approvals (a hostile
    /// peer), one kind per snapshot height (see [`forge_approval`]).
    pub forge_approvals: bool,
    /// Make the background snapshot job of this height panic mid-way (in its
    /// encoder thread, after its first chunks are written).
    pub panic_snapshot_at: Option<u64>,
    /// Build every snapshot from another state (one value altered) while
    /// claiming the real app hash: a hostile validator's self-consistent
    /// forgery, which range proofs must catch at its first chunk.
    pub forge_states: bool,
}

impl TestHooks {
    /// Says in the log what this node will do wrong.
    pub(crate) fn announce(&self) {
        if self.corrupt_chunks {
            tracing::warn!("TEST MODE: serving corrupted snapshot chunks");
        }
        if self.forge_approvals {
            tracing::warn!("TEST MODE: advertising snapshots with forged plugin approvals");
        }
        if self.forge_states {
            tracing::warn!("TEST MODE: building snapshots of a forged state under the real app hash");
        }
        if let Some(height) = self.panic_snapshot_at {
            tracing::warn!(height, "TEST MODE: the snapshot job of this height will panic");
        }
        if self.chunk_delay_ms > 0 {
            tracing::warn!(ms = self.chunk_delay_ms, "TEST MODE: every restored chunk waits");
        }
    }
}

/// Format numbers a forging node advertises a "proof for another format" under.
const FORGED_FORMAT_OFFSET: u32 = 1000;

/// A self-describing snapshot's manifest with a forged approval, by height
/// in turn: a proof of a record the state does not hold, the proof offered
/// for another format number, and a chunk 0 that is not the approved plugin.
/// Peers must refuse all three.
pub(crate) fn forge_approval(mut m: Manifest, interval: u64) -> Manifest {
    let Some(approval) = m.approval.as_mut() else {
        return m;
    };
    match (m.height / interval.max(1)) % 3 {
        0 => {
            approval.stored = approval
                .stored
                .replacen("\"activation_height\":", "\"activation_height\":1", 1)
        }
        1 => m.format += FORGED_FORMAT_OFFSET,
        _ => m.chunks[0][0] ^= 0xff,
    }
    m
}

/// The format a chunk request names, undoing [`forge_approval`]'s renumbering.
pub(crate) fn served_format(format: u32) -> u32 {
    if format > FORGED_FORMAT_OFFSET {
        format - FORGED_FORMAT_OFFSET
    } else {
        format
    }
}

/// A served chunk, corrupted.
pub(crate) fn corrupt(chunk: &mut [u8]) {
    if let Some(first) = chunk.first_mut() {
        *first ^= 0xff;
    }
}

/// A snapshot of [`ForgedState`] (`state` with its last value altered)
/// whose manifest claims `app_hash`, the real app hash of `height`. Made in a
/// scratch directory of `dir` (removed at start like any unfinished
/// snapshot) and renamed into place with its manifest already rewritten, so
/// the real root is never advertised.
pub(crate) fn create_forged(
    dir: &Path,
    state: &dyn StateStore,
    app_hash: [u8; 32],
    codec: snapshot::Codec,
    plugin: PluginRef,
    format: u32,
    opts: &CreateOptions,
) -> anyhow::Result<snapshot::CreateReport> {
    let scratch = dir.join(format!("{}forge-{}", snapshot::TMP_PREFIX, std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let forged = ForgedState(state);
    let mut report = snapshot::create(&forged, codec, plugin, format, opts, &scratch, &ProgressBar::hidden())?;
    report.manifest.app_hash = app_hash;
    let bytes = report.manifest.encode();
    crate::durable::write_synced(&snapshot::manifest_path(&report.dir), &bytes)?;
    let dest = dir.join(report.dir.file_name().expect("a snapshot directory name"));
    std::fs::rename(&report.dir, &dest).with_context(|| format!("moving {} into place", dest.display()))?;
    let _ = std::fs::remove_dir_all(&scratch);
    tracing::warn!(
        height = opts.height,
        "TEST MODE: made a forged snapshot claiming the real app hash"
    );
    report.hash = report.manifest.hash();
    report.dir = dest;
    Ok(report)
}

/// An encoder that panics at its third batch, once chunks are on disk (a
/// bug in the encoding pipeline, as the supervisor sees it).
pub(crate) struct PanicsMidway {
    pub inner: Box<dyn ChunkEncoder>,
    pub writes: u32,
}

impl ChunkEncoder for PanicsMidway {
    fn write(&mut self, batch: &[u8]) -> Result<Vec<Vec<u8>>, PluginError> {
        self.writes += 1;
        if self.writes == 3 {
            panic!("test hook: the snapshot encoder panics mid-way");
        }
        self.inner.write(batch)
    }
    fn finish(&mut self) -> Result<Vec<Vec<u8>>, PluginError> {
        self.inner.finish()
    }
}
