//! State sync, restoring side: CometBFT offers snapshots and feeds chunks;
//! a [`RestoreSession`] does the restore, and this maps what it says to the
//! ABCI answers (and the node's metrics and logs).
//!
//! Everything a peer sends is untrusted: the session checks an offer against
//! the app hash CometBFT's light client trusts for its height, each chunk
//! against the manifest before the plugin sees it, each state chunk's range
//! proof before its entries are written, and the root at the end (see
//! `snapshot::restore`). What the node adds: the offer must be for its chain
//! and above its height. How a refusal is answered follows from whose
//! [`Fault`] it is:
//!
//! | fault           | OfferSnapshot | ApplySnapshotChunk                                  |
//! |-----------------|---------------|-----------------------------------------------------|
//! | `BadChunk`      | REJECT        | RETRY: refetch the chunk, reject its sender         |
//! | `OutOfTurn`     | REJECT        | RETRY: refetch the chunk expected                   |
//! | `Forged`        | REJECT        | REJECT_SNAPSHOT, reject the sender                  |
//! | `BadSnapshot`   | REJECT        | REJECT_SNAPSHOT                                     |
//! | `UnknownFormat` | REJECT_FORMAT | REJECT_SNAPSHOT                                     |
//! | `Local`         | ABORT         | ABORT                                               |

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::metrics::Metrics;
use crate::plugin::PluginRegistry;
use crate::snapshot::{Applied, Fault, RestoreError, RestoreOptions, RestoreSession, SnapshotOffer, Verified};
use crate::store::StoreKind;

/// A snapshot CometBFT offers, with the app hash it trusts for that height.
#[derive(Debug, Clone)]
pub struct Offer {
    pub height: u64,
    pub format: u32,
    pub chunks: u32,
    pub hash: Vec<u8>,
    pub metadata: Vec<u8>,
    pub trusted_app_hash: Vec<u8>,
}

/// The answer to an offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OfferAnswer {
    Accept,
    /// Local failure: stop state sync.
    Abort(String),
    /// This snapshot is unusable; try another.
    Reject(String),
    /// No plugin for this format here; skip snapshots of this format.
    RejectFormat(String),
}

/// The answer to a chunk.
#[derive(Debug)]
pub enum ChunkAnswer {
    Accept,
    /// The last chunk: the state is restored and verified, ready to install.
    Done(Box<Verified>),
    /// Local failure: stop state sync.
    Abort(String),
    /// Fetch these chunks again, and stop asking these peers.
    Retry {
        refetch: Vec<u32>,
        reject_senders: Vec<String>,
        reason: String,
    },
    /// The snapshot is bad; try another (its staging home is gone), and stop
    /// asking these peers (those who served a chunk proven forged).
    RejectSnapshot {
        reason: String,
        reject_senders: Vec<String>,
    },
}

/// Where the node restores to.
#[derive(Debug, Clone)]
pub(crate) struct Target<'a> {
    /// The node's chain (empty: any chain; the trusted app hash still decides).
    pub chain_id: &'a str,
    /// The node's height: an offer must be above it.
    pub height: u64,
    /// The node's state home, which the restore replaces.
    pub home: &'a Path,
    pub store: StoreKind,
    /// Also build the restored state's Merkle treap (a statesnap node keeps
    /// one; a proxy in front of another app does not).
    pub treap: bool,
}

/// The restore in flight, if any.
pub(crate) struct StateSync {
    registry: Arc<PluginRegistry>,
    metrics: Arc<Metrics>,
    session: Option<Session>,
}

struct Session {
    restore: RestoreSession,
    started: Instant,
    fuel_reported: u64,
}

impl StateSync {
    pub fn new(registry: Arc<PluginRegistry>, metrics: Arc<Metrics>) -> Self {
        StateSync {
            registry,
            metrics,
            session: None,
        }
    }

    /// Whether a restore is in flight.
    pub(crate) fn restoring(&self) -> bool {
        self.session.is_some()
    }

    /// Ends the restore in flight, if any (its staging home goes).
    pub(crate) fn cancel(&mut self) {
        self.session = None;
    }

    /// Decides on an offer.
    pub(crate) fn offer(&mut self, offer: &Offer, target: &Target<'_>) -> OfferAnswer {
        // A new offer replaces any restore in flight (its staging home goes).
        self.session = None;
        let answer = match self.begin(offer, target) {
            Ok(restore) => {
                self.start_metrics(offer.chunks);
                if restore.awaiting_plugin() {
                    let m = restore.manifest();
                    tracing::info!(
                        height = m.height,
                        format = m.format,
                        plugin = %m.plugin.name,
                        sha256 = %hex::encode(m.plugin.sha256),
                        plugin_chunks = m.plugin_chunks(),
                        "state sync: the snapshot's plugin is not local, but the trusted state approves it; it arrives in its first chunks"
                    );
                }
                self.session = Some(Session {
                    restore,
                    started: Instant::now(),
                    fuel_reported: 0,
                });
                OfferAnswer::Accept
            }
            Err(Refusal::Node(why)) => OfferAnswer::Reject(why),
            Err(Refusal::Restore(RestoreError::AppHashMismatch { claimed, trusted })) => OfferAnswer::Reject(format!(
                "it claims app hash {}, but the light client trusts {} for height {}",
                hex::encode(claimed),
                hex::encode(trusted),
                offer.height
            )),
            Err(Refusal::Restore(e)) => {
                if matches!(e, RestoreError::Approval(_)) {
                    self.metrics.refused_plugins.inc();
                }
                offer_answer(&e)
            }
        };
        match &answer {
            OfferAnswer::Accept => {
                tracing::info!(
                    height = offer.height,
                    format = offer.format,
                    chunks = offer.chunks,
                    "state sync: accepted a snapshot"
                );
            }
            OfferAnswer::Reject(why) | OfferAnswer::RejectFormat(why) => {
                self.metrics.rejected_snapshots.inc();
                tracing::warn!(
                    height = offer.height,
                    format = offer.format,
                    "state sync: refused a snapshot: {why}"
                );
            }
            OfferAnswer::Abort(why) => tracing::error!(height = offer.height, "state sync: aborting: {why}"),
        }
        answer
    }

    fn begin(&self, offer: &Offer, target: &Target<'_>) -> Result<RestoreSession, Refusal> {
        let manifest = SnapshotOffer {
            height: offer.height,
            format: offer.format,
            chunks: offer.chunks,
            hash: &offer.hash,
            metadata: &offer.metadata,
        }
        .manifest()?;
        if !target.chain_id.is_empty() && manifest.chain_id != target.chain_id {
            return Err(Refusal::Node(format!(
                "it is a snapshot of chain {:?}, not {:?}",
                manifest.chain_id, target.chain_id
            )));
        }
        if offer.height <= target.height {
            return Err(Refusal::Node(format!(
                "its height {} is not above this node's height {}",
                offer.height, target.height
            )));
        }
        let trusted: [u8; 32] = offer.trusted_app_hash.as_slice().try_into().map_err(|_| {
            Refusal::Node(format!(
                "the trusted app hash has {} bytes, not 32",
                offer.trusted_app_hash.len()
            ))
        })?;
        let options = RestoreOptions {
            store: Some(target.store),
            treap: target.treap,
            ..RestoreOptions::default()
        };
        Ok(RestoreSession::begin(
            manifest,
            trusted,
            &self.registry,
            target.home,
            options,
        )?)
    }

    fn start_metrics(&self, chunks: u32) {
        self.metrics.restore_chunks_total.set(chunks as i64);
        self.metrics.restore_chunks_applied.set(0);
        self.metrics.restore_entries.set(0);
        self.metrics.restore_bytes.set(0);
        self.metrics.restore_apply_seconds.set(0.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.metrics.restore_started_unixtime.set(now);
    }

    /// Applies chunk `index` from peer `sender`.
    pub(crate) fn apply(&mut self, index: u32, chunk: &[u8], sender: &str) -> ChunkAnswer {
        let started = Instant::now();
        let answer = self.try_apply(index, chunk, sender);
        let apply = &self.metrics.restore_apply_seconds;
        apply.set(apply.get() + started.elapsed().as_secs_f64());
        match &answer {
            ChunkAnswer::Retry { reason, .. } => {
                tracing::warn!(index, sender, "state sync: refetching a chunk: {reason}")
            }
            ChunkAnswer::RejectSnapshot { reason, reject_senders } => {
                self.metrics.rejected_snapshots.inc();
                tracing::warn!(index, ?reject_senders, "state sync: rejecting the snapshot: {reason}")
            }
            ChunkAnswer::Abort(why) => tracing::error!(index, "state sync: aborting: {why}"),
            ChunkAnswer::Done(v) => tracing::info!(
                height = v.manifest().height,
                entries = v.summary().entries,
                app_hash = %hex::encode(v.summary().root),
                "state sync: restored and verified the state"
            ),
            ChunkAnswer::Accept => {}
        }
        answer
    }

    fn try_apply(&mut self, index: u32, chunk: &[u8], sender: &str) -> ChunkAnswer {
        let Some(session) = self.session.as_mut() else {
            return ChunkAnswer::Abort("a chunk arrived, but no snapshot was accepted".into());
        };
        if session.restore.wanted().is_some_and(|wanted| index < wanted) {
            return ChunkAnswer::Accept; // applied before (CometBFT refetched it)
        }
        let result = session.restore.apply(index, chunk);
        let fuel = session.restore.fuel_used();
        self.metrics.plugin_fuel_used.inc_by(fuel - session.fuel_reported);
        session.fuel_reported = fuel;
        let applied = match result {
            Ok(applied) => applied,
            Err(e) => {
                if !matches!(e.fault(), Fault::BadChunk | Fault::OutOfTurn { .. }) {
                    // The restore is over: its staging home goes with it.
                    self.session = None;
                    self.metrics.restore_chunks_applied.set(0);
                }
                return chunk_answer(&e, index, sender, &self.metrics);
            }
        };
        self.metrics.restore_chunks_applied.set(i64::from(index) + 1);
        self.metrics.restore_bytes.inc_by(chunk.len() as i64);
        let entries = session.restore.entries();
        let before = self.metrics.restore_entries.get().max(0) as u64;
        self.metrics
            .restore_entries_written
            .inc_by(entries.saturating_sub(before));
        self.metrics.restore_entries.set(entries as i64);
        tracing::debug!(index, sender, "state sync: applied a chunk");
        match applied {
            Applied::Accepted { .. } => ChunkAnswer::Accept,
            Applied::PluginLoaded { .. } => {
                self.metrics.shipped_plugins_loaded.inc();
                ChunkAnswer::Accept
            }
            Applied::Complete => {
                let session = self.session.take().expect("checked above");
                match session.restore.finish() {
                    Ok(verified) => {
                        let seconds = session.started.elapsed().as_secs_f64();
                        self.metrics.restore_seconds.set(seconds);
                        tracing::info!(
                            height = verified.manifest().height,
                            seconds = format!("{seconds:.2}"),
                            "state sync: all chunks applied"
                        );
                        ChunkAnswer::Done(Box::new(verified))
                    }
                    Err(e) => {
                        self.metrics.restore_chunks_applied.set(0);
                        chunk_answer(&e, index, sender, &self.metrics)
                    }
                }
            }
        }
    }
}

/// Why the node refuses an offer: its own conditions, or the session's.
enum Refusal {
    Node(String),
    Restore(RestoreError),
}

impl From<RestoreError> for Refusal {
    fn from(e: RestoreError) -> Self {
        Refusal::Restore(e)
    }
}

/// The answer to an offer the restore session refused.
fn offer_answer(e: &RestoreError) -> OfferAnswer {
    match e.fault() {
        Fault::UnknownFormat => OfferAnswer::RejectFormat(e.to_string()),
        Fault::Local => OfferAnswer::Abort(format!("cannot start the restore: {e}")),
        Fault::BadChunk | Fault::OutOfTurn { .. } | Fault::Forged | Fault::BadSnapshot => {
            OfferAnswer::Reject(e.to_string())
        }
    }
}

/// The answer to chunk `index` from `sender`, which the session refused
/// (counted in `metrics`).
fn chunk_answer(e: &RestoreError, index: u32, sender: &str, metrics: &Metrics) -> ChunkAnswer {
    match e.fault() {
        Fault::BadChunk => {
            metrics.rejected_chunks.inc();
            ChunkAnswer::Retry {
                refetch: vec![index],
                reject_senders: rejected(metrics, sender),
                reason: format!("chunk {index} from peer {sender:?} refused: {e}"),
            }
        }
        Fault::OutOfTurn { expected } => ChunkAnswer::Retry {
            refetch: vec![expected],
            reject_senders: Vec::new(),
            reason: format!("chunk {index} arrived before chunk {expected}"),
        },
        Fault::Forged => {
            metrics.forged_chunks.inc();
            ChunkAnswer::RejectSnapshot {
                reason: e.to_string(),
                reject_senders: rejected(metrics, sender),
            }
        }
        Fault::BadSnapshot | Fault::UnknownFormat => ChunkAnswer::RejectSnapshot {
            reason: e.to_string(),
            reject_senders: Vec::new(),
        },
        Fault::Local => ChunkAnswer::Abort(format!("{e} (check the disk; nothing was kept)")),
    }
}

/// Counts a rejected peer; the peers to reject.
fn rejected(metrics: &Metrics, sender: &str) -> Vec<String> {
    if sender.is_empty() {
        return Vec::new();
    }
    metrics.rejected_senders.inc();
    vec![sender.to_string()]
}

#[cfg(test)]
mod tests;
