//! State sync, restoring side: CometBFT offers snapshots and feeds chunks;
//! this decides each answer (design.md §2, §8).
//!
//! Everything a peer sends is untrusted. An offer is checked against the app
//! hash CometBFT's light client trusts for its height before anything runs;
//! each chunk's SHA-256 is checked against the manifest before the plugin
//! sees it (a bad one is refetched and its sender rejected); the restored
//! state's root must equal the trusted app hash, or nothing is kept.
//!
//! A snapshot whose plugin this node lacks is accepted only if it is
//! self-describing (`snapshot::approval`): its proof that the trusted state
//! approves the plugin is checked at the offer, and the plugin, shipped as
//! chunk 0, must hash to the approved SHA-256 before it is compiled.

use std::sync::Arc;

use super::metrics::Metrics;
use crate::plugin::PluginRegistry;
use crate::snapshot::{admit, Admission, AwaitingPlugin, Manifest, RestoreError, RestoreSummary, Restorer};
use crate::store::root::StateRoot;
use crate::store::treap::MerkleTreap;
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
    /// The last chunk: the state is restored and verified.
    Done(Box<Restored>),
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

/// A finished, verified restore, ready to become the node's state.
pub struct Restored {
    pub height: u64,
    pub app_hash: StateRoot,
    pub chain_id: String,
    pub entries: u64,
    pub staging: std::path::PathBuf,
    /// The restored state's Merkle treap.
    pub index: MerkleTreap,
}

impl std::fmt::Debug for Restored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Restored")
            .field("height", &self.height)
            .field("app_hash", &hex::encode(self.app_hash))
            .field("entries", &self.entries)
            .field("staging", &self.staging)
            .finish()
    }
}

/// Where a restore stands.
enum Stage {
    /// Self-describing snapshot, plugin not local: its first chunks bring it.
    AwaitingPlugin {
        pending: Box<AwaitingPlugin>,
        /// The plugin's chunks so far, each as the manifest lists it.
        parts: Vec<Vec<u8>>,
        staging: std::path::PathBuf,
        /// The layout of the home being restored into.
        kind: StoreKind,
    },
    Restoring(Box<Restorer>),
}

/// The restore in flight, if any.
pub(crate) struct StateSync {
    registry: Arc<PluginRegistry>,
    metrics: Arc<Metrics>,
    session: Option<Session>,
}

struct Session {
    stage: Stage,
    height: u64,
    chunks: u32,
    started: std::time::Instant,
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

    /// Decides on an offer. `expected_chain_id` empty: any chain (the
    /// trusted app hash still decides); `current_height`: the node's height.
    pub(crate) fn offer(
        &mut self,
        offer: &Offer,
        expected_chain_id: &str,
        current_height: u64,
        staging: &std::path::Path,
        kind: StoreKind,
    ) -> OfferAnswer {
        // A new offer replaces any restore in flight (its staging home goes).
        self.session = None;
        let answer = self.try_offer(offer, expected_chain_id, current_height, staging, kind);
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

    fn try_offer(
        &mut self,
        offer: &Offer,
        expected_chain_id: &str,
        current_height: u64,
        staging: &std::path::Path,
        kind: StoreKind,
    ) -> OfferAnswer {
        let manifest = match Manifest::decode(&offer.metadata) {
            Ok(m) => m,
            Err(e) => return OfferAnswer::Reject(format!("its metadata is not a valid manifest: {e:#}")),
        };
        if manifest.hash().as_slice() != offer.hash.as_slice() {
            return OfferAnswer::Reject("its hash is not the SHA-256 of its metadata".into());
        }
        if (manifest.height, manifest.format, manifest.chunks.len() as u64)
            != (offer.height, offer.format, offer.chunks as u64)
        {
            return OfferAnswer::Reject(format!(
                "its metadata says height {}, format {}, {} chunks, but the offer says height {}, format {}, {} chunks",
                manifest.height,
                manifest.format,
                manifest.chunks.len(),
                offer.height,
                offer.format,
                offer.chunks
            ));
        }
        if !expected_chain_id.is_empty() && manifest.chain_id != expected_chain_id {
            return OfferAnswer::Reject(format!(
                "it is a snapshot of chain {:?}, not {expected_chain_id:?}",
                manifest.chain_id
            ));
        }
        if offer.height <= current_height {
            return OfferAnswer::Reject(format!(
                "its height {} is not above this node's height {current_height}",
                offer.height
            ));
        }
        let trusted: StateRoot = match offer.trusted_app_hash.as_slice().try_into() {
            Ok(h) => h,
            Err(_) => {
                return OfferAnswer::Reject(format!(
                    "the trusted app hash has {} bytes, not 32",
                    offer.trusted_app_hash.len()
                ))
            }
        };
        let claimed = manifest.app_hash;
        let (height, chunks) = (manifest.height, offer.chunks);
        let admitted = match admit(manifest, trusted, &self.registry) {
            Ok(Admission::Ready(a)) => a,
            Ok(Admission::AwaitingPlugin(pending)) => {
                let m = pending.manifest();
                tracing::info!(
                    height = m.height,
                    format = m.format,
                    plugin = %m.plugin.name,
                    sha256 = %hex::encode(m.plugin.sha256),
                    plugin_chunks = m.plugin_chunks(),
                    "state sync: the snapshot's plugin is not local, but the trusted state approves it; it arrives in its first chunks"
                );
                self.start_metrics(chunks);
                self.session = Some(Session {
                    stage: Stage::AwaitingPlugin {
                        pending: Box::new(pending),
                        parts: Vec::new(),
                        staging: staging.to_path_buf(),
                        kind,
                    },
                    height,
                    chunks,
                    started: std::time::Instant::now(),
                    fuel_reported: 0,
                });
                return OfferAnswer::Accept;
            }
            Err(RestoreError::AppHashMismatch { .. }) => {
                return OfferAnswer::Reject(format!(
                    "it claims app hash {}, but the light client trusts {} for height {}",
                    hex::encode(claimed),
                    hex::encode(trusted),
                    offer.height
                ))
            }
            Err(e @ RestoreError::Approval(_)) => {
                self.metrics.refused_plugins.inc();
                return OfferAnswer::Reject(e.to_string());
            }
            Err(RestoreError::PluginUnavailable(why)) => return OfferAnswer::RejectFormat(why),
            Err(e) => return OfferAnswer::Reject(e.to_string()),
        };
        let decoder = match admitted.plugin().reader(&admitted.manifest().params) {
            Ok(r) => Box::new(r),
            Err(e) => return OfferAnswer::Reject(format!("its plugin refuses its parameters: {e}")),
        };
        match Restorer::begin(admitted, decoder, staging, kind) {
            Ok(restorer) => {
                self.start_metrics(chunks);
                self.session = Some(Session {
                    stage: Stage::Restoring(Box::new(restorer.with_index())),
                    height,
                    chunks,
                    started: std::time::Instant::now(),
                    fuel_reported: 0,
                });
                OfferAnswer::Accept
            }
            Err(e) => OfferAnswer::Abort(format!("cannot start the restore: {e}")),
        }
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

    /// Chunk `index` of a self-describing snapshot whose plugin is not
    /// local: a part of the plugin. Its bytes must hash to what the manifest
    /// lists (else another peer is asked); once all parts are here, the whole
    /// must hash to the approved SHA-256, and only then is it compiled and
    /// the parts applied.
    fn load_plugin(&mut self, index: u32, chunk: &[u8], sender: &str) -> Result<(), ChunkAnswer> {
        let session = self.session.as_mut().expect("checked by the caller");
        let Stage::AwaitingPlugin {
            pending,
            parts,
            staging,
            kind,
        } = &mut session.stage
        else {
            return Ok(());
        };
        let manifest = pending.manifest();
        let expected = parts.len() as u32;
        if index != expected {
            return Err(ChunkAnswer::Retry {
                refetch: vec![expected],
                reject_senders: Vec::new(),
                reason: format!("chunk {index} arrived before chunk {expected} (the plugin)"),
            });
        }
        let got = crate::plugin::sha256(chunk);
        if Some(&got) != manifest.chunks.get(index as usize) {
            let reject_senders = bad_chunk_from(&self.metrics, sender);
            return Err(ChunkAnswer::Retry {
                refetch: vec![index],
                reject_senders,
                reason: format!(
                    "chunk {index} (the shipped plugin) from peer {sender:?} hashes to {}, not the {} the manifest lists",
                    hex::encode(got),
                    hex::encode(manifest.chunks[index as usize])
                ),
            });
        }
        parts.push(chunk.to_vec());
        if parts.len() < manifest.plugin_chunks() as usize {
            return Ok(());
        }
        let parts = std::mem::take(parts);
        let begin = || -> Result<Restorer, RestoreError> {
            let admitted = pending.with_plugin(&self.registry, &parts.concat())?;
            let decoder = Box::new(admitted.plugin().reader(&admitted.manifest().params)?);
            self.metrics.shipped_plugins_loaded.inc();
            tracing::info!(
                plugin = admitted.plugin().label(),
                chunks = parts.len(),
                "state sync: loaded the approved plugin shipped in the snapshot"
            );
            let mut restorer = Restorer::begin(admitted, decoder, staging, *kind)?.with_index();
            // The parts before this one; this one is applied as any chunk.
            for (i, part) in parts[..parts.len() - 1].iter().enumerate() {
                restorer.apply_chunk(i as u32, part)?;
                self.metrics.restore_bytes.inc_by(part.len() as i64);
            }
            Ok(restorer)
        };
        match begin() {
            Ok(restorer) => {
                session.stage = Stage::Restoring(Box::new(restorer));
                Ok(())
            }
            Err(e) => {
                self.session = None;
                Err(self.failed(e, sender))
            }
        }
    }

    /// Applies chunk `index` from peer `sender`.
    pub(crate) fn apply(&mut self, index: u32, chunk: &[u8], sender: &str) -> ChunkAnswer {
        let started = std::time::Instant::now();
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
            ChunkAnswer::Done(r) => tracing::info!(
                height = r.height,
                entries = r.entries,
                app_hash = %hex::encode(r.app_hash),
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
        if let Stage::AwaitingPlugin { .. } = session.stage {
            if let Err(answer) = self.load_plugin(index, chunk, sender) {
                return answer;
            }
        }
        let session = self.session.as_mut().expect("still in flight");
        let Stage::Restoring(restorer) = &mut session.stage else {
            return ChunkAnswer::Accept; // a part of the plugin, held until the rest arrives
        };
        let next = restorer.next_chunk();
        if index < next {
            return ChunkAnswer::Accept; // already applied
        }
        let result = restorer.apply_chunk(index, chunk);
        let fuel = restorer.fuel_used();
        self.metrics.plugin_fuel_used.inc_by(fuel - session.fuel_reported);
        session.fuel_reported = fuel;
        match result {
            Ok(()) => {
                self.metrics.restore_chunks_applied.set(i64::from(index) + 1);
                self.metrics.restore_bytes.inc_by(chunk.len() as i64);
                let before = self.metrics.restore_entries.get().max(0) as u64;
                self.metrics
                    .restore_entries_written
                    .inc_by(restorer.entries().saturating_sub(before));
                self.metrics.restore_entries.set(restorer.entries() as i64);
                tracing::debug!(index, chunks = session.chunks, sender, "state sync: applied a chunk");
                if index + 1 < session.chunks {
                    return ChunkAnswer::Accept;
                }
                let session = self.session.take().expect("checked above");
                let (height, started) = (session.height, session.started);
                let Stage::Restoring(restorer) = session.stage else {
                    unreachable!("restoring")
                };
                let manifest = restorer.manifest().clone();
                match restorer.finish() {
                    Ok(summary) => {
                        let seconds = started.elapsed().as_secs_f64();
                        self.metrics.restore_seconds.set(seconds);
                        tracing::info!(
                            height,
                            seconds = format!("{seconds:.2}"),
                            "state sync: all chunks applied"
                        );
                        ChunkAnswer::Done(Box::new(restored(&manifest, summary)))
                    }
                    Err(e) => self.failed(e, sender),
                }
            }
            Err(e @ (RestoreError::ChunkHash { .. } | RestoreError::Oversized { .. })) => {
                let reject_senders = bad_chunk_from(&self.metrics, sender);
                ChunkAnswer::Retry {
                    refetch: vec![index],
                    reject_senders,
                    reason: format!("chunk {index} from peer {sender:?} refused: {e}"),
                }
            }
            Err(RestoreError::ChunkOrder { expected, .. }) => ChunkAnswer::Retry {
                refetch: vec![expected],
                reject_senders: Vec::new(),
                reason: format!("chunk {index} arrived before chunk {expected}"),
            },
            Err(e) => {
                self.session = None;
                self.failed(e, sender)
            }
        }
    }

    /// A failure after the chunk hashes matched: the snapshot itself is bad,
    /// unless the failure is this node's own (its disk). A chunk whose range
    /// proof fails was forged by whoever made the snapshot: its sender is
    /// rejected too.
    fn failed(&mut self, e: RestoreError, sender: &str) -> ChunkAnswer {
        self.metrics.restore_chunks_applied.set(0);
        match e {
            RestoreError::Store(_) => ChunkAnswer::Abort(format!("{e} (check the disk; nothing was kept)")),
            RestoreError::Proof { .. } => {
                self.metrics.forged_chunks.inc();
                ChunkAnswer::RejectSnapshot {
                    reason: e.to_string(),
                    reject_senders: rejected(&self.metrics, sender),
                }
            }
            other => ChunkAnswer::RejectSnapshot {
                reason: other.to_string(),
                reject_senders: Vec::new(),
            },
        }
    }
}

fn restored(manifest: &Manifest, summary: RestoreSummary) -> Restored {
    Restored {
        height: manifest.height,
        app_hash: summary.root,
        chain_id: manifest.chain_id.clone(),
        entries: summary.entries,
        staging: summary.staging,
        index: summary.index.expect("the restore was begun with an index"),
    }
}

/// Counts a chunk that did not match its hash; the peers to reject.
fn bad_chunk_from(metrics: &Metrics, sender: &str) -> Vec<String> {
    metrics.rejected_chunks.inc();
    rejected(metrics, sender)
}

/// Counts a rejected peer; the peers to reject.
fn rejected(metrics: &Metrics, sender: &str) -> Vec<String> {
    if sender.is_empty() {
        return Vec::new();
    }
    metrics.rejected_senders.inc();
    vec![sender.to_string()]
}
