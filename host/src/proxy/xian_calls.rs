//! The calls the proxy answers in front of Xian's node: the snapshot calls
//! of statesnap's formats, and the observation of each committed block.
//!
//! **Format numbers.** Xian's node has its own state sync, format 1, and
//! statesnap's reference formats are numbered from 1 too. In front of an
//! app, statesnap's snapshots go on the wire as [`FORMAT_OFFSET`] + their
//! plugin's format (1001 for zstd): a snapshot call for a format at or above
//! the offset is statesnap's, any other goes on to the app. A node without
//! the proxy answers REJECT_FORMAT to statesnap's formats and keeps working
//! beside proxied nodes; at the same height CometBFT prefers the higher
//! format, so a proxied joiner tries statesnap's snapshot first.
//!
//! **Restoring** goes through the node's `StateSync` (the same
//! `RestoreSession` and the same answers as statesnap's own node) into a
//! staging copy of Xian's storage home. When the root checks out, the block
//! marker is written into it (height and app hash from the trusted
//! manifest, the block time from the manifest's `block_time_nanos`), the app
//! is stopped, the staging home swapped in, and the app started on it before
//! the last chunk is answered, so CometBFT's next Info reaches the app on its
//! restored home.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prost::Message;
use tendermint_proto::v0_38::abci::{
    request, response, response_offer_snapshot, ResponseApplySnapshotChunk, ResponseListSnapshots,
    ResponseLoadSnapshotChunk, ResponseOfferSnapshot, Snapshot,
};

use super::app_process::AppProcess;
use super::marker::{mark_restored_home, BlockMarker};
use super::wire::{decode_request, decode_response, encode_response, kind};
use super::xian_snapshots::XianSnapshots;
use super::Handler;
use crate::abci::{chunk_response, offer_response};
use crate::node::metrics::Metrics;
use crate::node::statesync::{ChunkAnswer, Offer, StateSync, Target};
use crate::plugin::PluginRegistry;
use crate::snapshot::Verified;
use crate::store::xian_lmdb::XianLmdbStore;
use crate::store::StoreKind;

/// statesnap's format `f` goes on the wire as `FORMAT_OFFSET + f`.
pub const FORMAT_OFFSET: u32 = 1000;

/// At most this many of statesnap's snapshots are listed, leaving room in
/// CometBFT's ten for the app's own.
const LISTED: usize = 5;

/// The handler in front of Xian's node.
pub struct XianCalls {
    snapshots: Arc<XianSnapshots>,
    statesync: Mutex<StateSync>,
    metrics: Arc<Metrics>,
    /// The supervised app, which a restore restarts (`None`: no `--run`, so
    /// the proxy cannot restore and refuses statesnap's formats).
    app: Option<Arc<AppProcess>>,
    /// The height of the block being executed (from its FinalizeBlock).
    executing: AtomicU64,
    /// Test only: a wait before each restored chunk (a slow disk).
    #[cfg(feature = "test-hooks")]
    chunk_delay_ms: u64,
}

impl XianCalls {
    pub fn new(
        snapshots: Arc<XianSnapshots>,
        registry: Arc<PluginRegistry>,
        metrics: Arc<Metrics>,
        app: Option<Arc<AppProcess>>,
    ) -> Self {
        XianCalls {
            snapshots,
            statesync: Mutex::new(StateSync::new(registry, metrics.clone())),
            metrics,
            app,
            executing: AtomicU64::new(0),
            #[cfg(feature = "test-hooks")]
            chunk_delay_ms: 0,
        }
    }

    /// Test only: wait this long before applying each restored chunk, so a
    /// test can interrupt a restore in the middle.
    #[cfg(feature = "test-hooks")]
    pub fn set_chunk_delay_ms(&mut self, ms: u64) {
        if ms > 0 {
            tracing::warn!(ms, "TEST MODE: every restored chunk waits");
        }
        self.chunk_delay_ms = ms;
    }

    fn offer(&self, req: tendermint_proto::v0_38::abci::RequestOfferSnapshot) -> ResponseOfferSnapshot {
        use response_offer_snapshot::Result as R;
        let answer = |r: R| ResponseOfferSnapshot { result: r as i32 };
        let Some(s) = req.snapshot else {
            return answer(R::Reject);
        };
        if self.app.is_none() {
            tracing::warn!(
                height = s.height,
                format = s.format,
                "state sync: refusing statesnap's format: restoring needs the proxy to run the app (--run)"
            );
            return answer(R::RejectFormat);
        }
        let home = &self.snapshots.settings().home;
        let height = match live_height(home) {
            Ok(h) => h,
            Err(e) => {
                tracing::error!("state sync: cannot read the app's home: {e:#}");
                return answer(R::Abort);
            }
        };
        let offer = Offer {
            height: s.height,
            format: s.format - FORMAT_OFFSET,
            chunks: s.chunks,
            hash: s.hash.to_vec(),
            metadata: s.metadata.to_vec(),
            trusted_app_hash: req.app_hash.to_vec(),
        };
        let target = Target {
            chain_id: &self.snapshots.settings().chain_id,
            height,
            home,
            store: StoreKind::Lmdb,
            treap: false,
        };
        offer_response(self.statesync.lock().expect("state sync lock").offer(&offer, &target))
    }

    fn apply(&self, req: tendermint_proto::v0_38::abci::RequestApplySnapshotChunk) -> ResponseApplySnapshotChunk {
        #[cfg(feature = "test-hooks")]
        std::thread::sleep(std::time::Duration::from_millis(self.chunk_delay_ms));
        let answer = self
            .statesync
            .lock()
            .expect("state sync lock")
            .apply(req.index, &req.chunk, &req.sender);
        let answer = match answer {
            ChunkAnswer::Done(verified) => match self.install(*verified) {
                Ok(()) => ChunkAnswer::Accept,
                Err(e) => ChunkAnswer::Abort(format!("installing the restored home failed: {e:#}")),
            },
            other => other,
        };
        if let ChunkAnswer::Abort(why) = &answer {
            tracing::error!("state sync: {why}");
        }
        chunk_response(answer)
    }

    /// Writes the block marker into the verified staging home, then swaps
    /// it in with the app stopped, and starts the app on it.
    fn install(&self, verified: Verified) -> anyhow::Result<()> {
        let marker = mark_restored_home(&verified)?;
        let app = self.app.as_ref().expect("offers are refused without --run");
        let snapshots = &self.snapshots;
        app.with_app_stopped(|| {
            snapshots.close_home();
            verified.install()
        })??;
        self.metrics.restored_snapshot_height.set(marker.height as i64);
        tracing::info!(
            height = marker.height,
            app_hash = %hex::encode(marker.app_hash),
            "state sync: the restored home is in place and the app restarted on it"
        );
        Ok(())
    }

    fn list_merged(&self, app_answer: Vec<u8>) -> Vec<u8> {
        let Ok(response::Value::ListSnapshots(mut listed)) = decode_response(&app_answer) else {
            return app_answer;
        };
        match self.snapshots.list(LISTED) {
            Ok(ours) => listed.snapshots.extend(ours.into_iter().map(|l| Snapshot {
                height: l.manifest.height,
                format: FORMAT_OFFSET + l.manifest.format,
                chunks: l.manifest.chunks.len() as u32,
                hash: l.manifest.hash().to_vec().into(),
                metadata: l.metadata.into(),
            })),
            Err(e) => tracing::warn!("not listing statesnap's snapshots: {e:#}"),
        }
        encode_response(response::Value::ListSnapshots(ResponseListSnapshots {
            snapshots: listed.snapshots,
        }))
    }
}

/// The height the live home says it holds (0 without a home or a marker).
fn live_height(home: &std::path::Path) -> anyhow::Result<u64> {
    if !crate::store::xian_lmdb::is_lmdb_home(home) {
        return Ok(0);
    }
    let store = XianLmdbStore::open_read_only(home)?;
    Ok(BlockMarker::read(&store)?.map_or(0, |m| m.height))
}

/// A FinalizeBlock request, reduced to the field the proxy reads (the
/// rest, transactions included, is skipped unread).
#[derive(Clone, PartialEq, Message)]
struct FinalizeHeight {
    #[prost(message, optional, tag = "20")]
    finalize_block: Option<HeightOnly>,
}

#[derive(Clone, PartialEq, Message)]
struct HeightOnly {
    #[prost(int64, tag = "5")]
    height: i64,
}

impl Handler for XianCalls {
    fn answer(&self, kind: u32, frame: &[u8]) -> Option<Vec<u8>> {
        match kind {
            kind::FINALIZE_BLOCK => {
                if let Ok(FinalizeHeight {
                    finalize_block: Some(b),
                }) = FinalizeHeight::decode(frame)
                {
                    self.executing.store(b.height.max(0) as u64, Ordering::SeqCst);
                }
                None
            }
            kind::OFFER_SNAPSHOT | kind::LOAD_SNAPSHOT_CHUNK | kind::APPLY_SNAPSHOT_CHUNK => self.snapshot_call(frame),
            _ => None,
        }
    }

    fn app_answered(&self, kind: u32, answer: Vec<u8>) -> Vec<u8> {
        match kind {
            kind::COMMIT => {
                // The app has written the block; CometBFT has not yet seen
                // the answer, so the next block cannot have started.
                let height = self.executing.swap(0, Ordering::SeqCst);
                if height > 0 {
                    self.snapshots.committed(height);
                }
                answer
            }
            kind::LIST_SNAPSHOTS => self.list_merged(answer),
            _ => answer,
        }
    }
}

impl XianCalls {
    /// A snapshot call of statesnap's formats is answered here; any other
    /// goes on to the app. A chunk is statesnap's while its restore runs.
    fn snapshot_call(&self, frame: &[u8]) -> Option<Vec<u8>> {
        let call = match decode_request(frame) {
            Ok(call) => call,
            Err(e) => {
                tracing::warn!("forwarding a snapshot call the proxy cannot read: {e}");
                return None;
            }
        };
        let value = match call {
            request::Value::OfferSnapshot(req) => {
                let ours = req.snapshot.as_ref().is_some_and(|s| s.format >= FORMAT_OFFSET);
                if !ours {
                    // The app's own restore begins: any of ours is over.
                    self.statesync.lock().expect("state sync lock").cancel();
                    return None;
                }
                response::Value::OfferSnapshot(self.offer(req))
            }
            request::Value::LoadSnapshotChunk(req) if req.format >= FORMAT_OFFSET => {
                response::Value::LoadSnapshotChunk(ResponseLoadSnapshotChunk {
                    chunk: self
                        .snapshots
                        .load_chunk(req.height, req.format - FORMAT_OFFSET, req.chunk)
                        .into(),
                })
            }
            request::Value::ApplySnapshotChunk(req) => {
                if !self.statesync.lock().expect("state sync lock").restoring() {
                    return None;
                }
                response::Value::ApplySnapshotChunk(self.apply(req))
            }
            _ => return None,
        };
        Some(encode_response(value))
    }
}
