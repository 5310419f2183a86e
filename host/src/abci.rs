//! The ABCI 2.0 adapter: CometBFT's protobuf requests to [`Node`] calls and
//! back. No logic of its own.
//!
//! CometBFT opens four connections (consensus, mempool, query, snapshot);
//! tendermint-abci serves each on its own thread with a clone of this
//! adapter, all sharing one node.
//!
//! A failure the node cannot answer within ABCI (its disk failing during
//! Commit, a block for the wrong height) ends the process with the error:
//! carrying on would make this node's state diverge. CometBFT stops with it,
//! and on restart the write-ahead log and CometBFT's replay bring both back
//! to the last committed block.

use std::sync::Arc;

use tendermint_abci::Application;
use tendermint_proto::v0_38::abci::{
    response_apply_snapshot_chunk, response_offer_snapshot, response_process_proposal, ExecTxResult,
    RequestApplySnapshotChunk, RequestCheckTx, RequestFinalizeBlock, RequestInfo, RequestInitChain,
    RequestLoadSnapshotChunk, RequestOfferSnapshot, RequestPrepareProposal, RequestProcessProposal, RequestQuery,
    ResponseApplySnapshotChunk, ResponseCheckTx, ResponseCommit, ResponseFinalizeBlock, ResponseInfo,
    ResponseInitChain, ResponseListSnapshots, ResponseLoadSnapshotChunk, ResponseOfferSnapshot,
    ResponsePrepareProposal, ResponseProcessProposal, ResponseQuery, Snapshot,
};
use tendermint_proto::v0_38::crypto::public_key::Sum;

use crate::node::{ChunkAnswer, Node, Offer, OfferAnswer, TxOutcome};

/// The node as a tendermint-abci application.
#[derive(Clone)]
pub struct AbciApp {
    node: Arc<Node>,
}

impl AbciApp {
    pub fn new(node: Arc<Node>) -> Self {
        AbciApp { node }
    }

    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }
}

/// Ends the process: the node cannot go on without diverging.
fn fatal(what: &str, e: anyhow::Error) -> ! {
    tracing::error!("{what} failed: {e:#}");
    eprintln!("statesnap: fatal: {what} failed: {e:#}");
    std::process::exit(2)
}

fn exec_result(o: TxOutcome) -> ExecTxResult {
    ExecTxResult {
        code: o.code,
        log: o.log,
        ..Default::default()
    }
}

impl Application for AbciApp {
    fn info(&self, _request: RequestInfo) -> ResponseInfo {
        let (height, app_hash) = self.node.info();
        ResponseInfo {
            data: "statesnap".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            app_version: 1,
            last_block_height: height as i64,
            last_block_app_hash: if height == 0 { Vec::new() } else { app_hash.to_vec() }.into(),
        }
    }

    fn init_chain(&self, request: RequestInitChain) -> ResponseInitChain {
        let validators: Vec<([u8; 32], i64)> = request
            .validators
            .iter()
            .map(|v| match v.pub_key.as_ref().and_then(|k| k.sum.as_ref()) {
                Some(Sum::Ed25519(bytes)) => match <[u8; 32]>::try_from(bytes.as_slice()) {
                    Ok(key) => (key, v.power),
                    Err(_) => fatal(
                        "InitChain",
                        anyhow::anyhow!("a validator's ed25519 key is not 32 bytes"),
                    ),
                },
                _ => fatal(
                    "InitChain",
                    anyhow::anyhow!("statesnap supports only ed25519 validator keys"),
                ),
            })
            .collect();
        let initial_height = request.initial_height.max(1) as u64;
        match self
            .node
            .init_chain(&request.chain_id, initial_height, &request.app_state_bytes, &validators)
        {
            Ok(app_hash) => ResponseInitChain {
                app_hash: app_hash.to_vec().into(),
                ..Default::default()
            },
            Err(e) => fatal("InitChain", e),
        }
    }

    fn query(&self, request: RequestQuery) -> ResponseQuery {
        let a = self.node.query(&request.path, &request.data);
        ResponseQuery {
            code: a.code.wire(),
            log: a.log,
            key: request.data,
            value: a.value.into(),
            height: a.height as i64,
            ..Default::default()
        }
    }

    fn check_tx(&self, request: RequestCheckTx) -> ResponseCheckTx {
        let o = self.node.check_tx(&request.tx);
        ResponseCheckTx {
            code: o.code,
            log: o.log,
            ..Default::default()
        }
    }

    fn prepare_proposal(&self, request: RequestPrepareProposal) -> ResponsePrepareProposal {
        let max = request.max_tx_bytes.max(0) as u64;
        ResponsePrepareProposal {
            txs: self.node.prepare_proposal(&request.txs, max),
        }
    }

    fn process_proposal(&self, request: RequestProcessProposal) -> ResponseProcessProposal {
        let status = if self.node.process_proposal(&request.txs) {
            response_process_proposal::ProposalStatus::Accept
        } else {
            response_process_proposal::ProposalStatus::Reject
        };
        ResponseProcessProposal { status: status as i32 }
    }

    fn finalize_block(&self, request: RequestFinalizeBlock) -> ResponseFinalizeBlock {
        let height = request.height.max(0) as u64;
        match self.node.finalize_block(height, &request.txs) {
            Ok((outcomes, app_hash)) => ResponseFinalizeBlock {
                tx_results: outcomes.into_iter().map(exec_result).collect(),
                app_hash: app_hash.to_vec().into(),
                ..Default::default()
            },
            Err(e) => fatal("FinalizeBlock", e),
        }
    }

    fn commit(&self) -> ResponseCommit {
        match self.node.commit() {
            Ok(_) => ResponseCommit { retain_height: 0 },
            Err(e) => fatal("Commit", e),
        }
    }

    fn list_snapshots(&self) -> ResponseListSnapshots {
        ResponseListSnapshots {
            snapshots: self
                .node
                .list_snapshots()
                .into_iter()
                .map(|s| Snapshot {
                    height: s.height,
                    format: s.format,
                    chunks: s.chunks,
                    hash: s.hash.to_vec().into(),
                    metadata: s.metadata.into(),
                })
                .collect(),
        }
    }

    fn offer_snapshot(&self, request: RequestOfferSnapshot) -> ResponseOfferSnapshot {
        use response_offer_snapshot::Result as R;
        let Some(s) = request.snapshot else {
            return ResponseOfferSnapshot {
                result: R::Reject as i32,
            };
        };
        let offer = Offer {
            height: s.height,
            format: s.format,
            chunks: s.chunks,
            hash: s.hash.to_vec(),
            metadata: s.metadata.to_vec(),
            trusted_app_hash: request.app_hash.to_vec(),
        };
        offer_response(self.node.offer_snapshot(&offer))
    }

    fn load_snapshot_chunk(&self, request: RequestLoadSnapshotChunk) -> ResponseLoadSnapshotChunk {
        ResponseLoadSnapshotChunk {
            chunk: self
                .node
                .load_snapshot_chunk(request.height, request.format, request.chunk)
                .into(),
        }
    }

    fn apply_snapshot_chunk(&self, request: RequestApplySnapshotChunk) -> ResponseApplySnapshotChunk {
        chunk_response(
            self.node
                .apply_snapshot_chunk(request.index, &request.chunk, &request.sender),
        )
    }
}

/// The answer to an offer, on the wire.
pub(crate) fn offer_response(answer: OfferAnswer) -> ResponseOfferSnapshot {
    use response_offer_snapshot::Result as R;
    let result = match answer {
        OfferAnswer::Accept => R::Accept,
        OfferAnswer::Abort(_) => R::Abort,
        OfferAnswer::Reject(_) => R::Reject,
        OfferAnswer::RejectFormat(_) => R::RejectFormat,
    };
    ResponseOfferSnapshot { result: result as i32 }
}

/// The answer to a chunk, on the wire (`Done`: the restored state is
/// installed by then, so it is an Accept).
pub(crate) fn chunk_response(answer: ChunkAnswer) -> ResponseApplySnapshotChunk {
    use response_apply_snapshot_chunk::Result as R;
    let (result, refetch_chunks, reject_senders) = match answer {
        ChunkAnswer::Accept | ChunkAnswer::Done(_) => (R::Accept, Vec::new(), Vec::new()),
        ChunkAnswer::Abort(_) => (R::Abort, Vec::new(), Vec::new()),
        ChunkAnswer::Retry {
            refetch,
            reject_senders,
            ..
        } => (R::Retry, refetch, reject_senders),
        ChunkAnswer::RejectSnapshot { reject_senders, .. } => (R::RejectSnapshot, Vec::new(), reject_senders),
    };
    ResponseApplySnapshotChunk {
        result: result as i32,
        refetch_chunks,
        reject_senders,
    }
}
