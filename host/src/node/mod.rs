//! The ABCI node: the chain's state machine, its snapshots and state sync,
//! behind one [`Node`] whose methods are the ABCI calls in plain Rust types
//! (`crate::abci` only translates protobuf to these).
//!
//! A node home holds:
//!
//! ```text
//! <home>/config.toml   the node's settings (NodeConfig)
//! <home>/state/        the Xian-layout state (LMDB `lmdb/`, or HDF5 with its write-ahead log) and its checkpoint record
//! <home>/snapshots/    <height>-<format>/ snapshot directories
//! ```

pub mod chain;
pub mod checkpoint;
pub mod config;
pub mod execute;
pub mod formats;
pub mod genesis;
pub mod governance;
pub mod metrics;
pub mod shared_store;
pub mod snapshot_service;
pub mod statesync;
#[cfg(feature = "test-hooks")]
pub mod test_hooks;
pub mod treap_file;
pub mod view;
pub mod wal;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use anyhow::{bail, Context};
use serde_json::json;

pub use chain::{Chain, TxOutcome};
pub use config::NodeConfig;
pub use metrics::Metrics;
pub use snapshot_service::Advertised;
pub use statesync::{ChunkAnswer, Offer, OfferAnswer};
#[cfg(feature = "test-hooks")]
pub use test_hooks::TestHooks;

use crate::plugin::PluginRegistry;
use crate::protocol::tx;
use genesis::AppState;
use governance::{Conformance, GovContext};
use snapshot_service::{SnapshotService, SnapshotSettings};
use statesync::StateSync;

/// The state home inside a node home.
pub fn state_dir(home: &Path) -> PathBuf {
    home.join("state")
}

/// The snapshot directory inside a node home.
pub fn snapshots_dir(home: &Path) -> PathBuf {
    home.join("snapshots")
}

/// What a Query found: its ABCI result code, [`QueryCode::wire`] on the
/// wire (the numbers are part of the node's interface: never renumber).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryCode {
    /// The answer is in the value (the stored value, or JSON).
    Found = 0,
    /// `/key`: the key has no value.
    NoValue = 1,
    /// Not a path this node answers.
    UnknownPath = 2,
    /// The node failed to answer (its own error, in the log).
    NodeFailed = 3,
}

impl QueryCode {
    /// The code as ABCI carries it.
    pub fn wire(self) -> u32 {
        self as u32
    }

    /// The code an answer carried, if it is one of these.
    pub fn from_wire(code: u32) -> Option<Self> {
        [
            QueryCode::Found,
            QueryCode::NoValue,
            QueryCode::UnknownPath,
            QueryCode::NodeFailed,
        ]
        .into_iter()
        .find(|c| c.wire() == code)
    }
}

/// The answer to a Query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryAnswer {
    pub code: QueryCode,
    pub log: String,
    pub value: Vec<u8>,
    pub height: u64,
}

/// A running node.
pub struct Node {
    config: NodeConfig,
    chain: Mutex<Chain>,
    snapshots: SnapshotService,
    statesync: Mutex<StateSync>,
    /// Next nonce per account among transactions CheckTx let into the
    /// mempool since the last commit.
    mempool_nonces: Mutex<HashMap<String, u64>>,
    registry: Arc<PluginRegistry>,
    /// Governance's plugin conformance check (and its cached verdicts).
    conformance: Conformance,
    metrics: Arc<Metrics>,
    block_started: Mutex<Option<Instant>>,
    #[cfg(feature = "test-hooks")]
    hooks: TestHooks,
}

impl Node {
    /// Opens the node in `home`: its state (recovering from a crash if
    /// needed), its snapshot plugin and its snapshots.
    pub fn open(
        home: &Path,
        config: NodeConfig,
        registry: PluginRegistry,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Node> {
        Self::open_inner(home, config, registry, metrics)
    }

    /// [`open`](Self::open), for a node under test that commits the faults
    /// `hooks` names.
    #[cfg(feature = "test-hooks")]
    pub fn open_with_hooks(
        home: &Path,
        config: NodeConfig,
        registry: PluginRegistry,
        metrics: Arc<Metrics>,
        hooks: TestHooks,
    ) -> anyhow::Result<Node> {
        hooks.announce();
        let mut node = Self::open_inner(home, config, registry, metrics)?;
        node.snapshots.set_hooks(hooks);
        node.hooks = hooks;
        Ok(node)
    }

    fn open_inner(
        home: &Path,
        config: NodeConfig,
        mut registry: PluginRegistry,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Node> {
        if !config.plugin_dir.is_empty() {
            registry.add_dir(Path::new(&config.plugin_dir))?;
        }
        let plugin = if config.snapshot_plugin.is_empty() {
            None
        } else {
            Some(registry.resolve(&config.snapshot_plugin).context(
                "snapshot_plugin in config.toml (set it to \"\" to make only formats approved by governance)",
            )?)
        };
        let chain = Chain::open(&state_dir(home), config.checkpoint_interval, config.store)?;
        if chain.store_kind() != config.store {
            tracing::info!(
                configured = %config.store,
                found = %chain.store_kind(),
                "the state home already exists with another store; it keeps its own"
            );
        }
        if !config.chain_id.is_empty() && !chain.chain_id().is_empty() && chain.chain_id() != config.chain_id {
            bail!(
                "config.toml says chain_id {:?}, but the state in {} belongs to chain {:?}",
                config.chain_id,
                state_dir(home).display(),
                chain.chain_id()
            );
        }
        let snapshots = SnapshotService::new(
            SnapshotSettings {
                dir: snapshots_dir(home),
                interval: config.snapshot_interval,
                keep_recent: config.snapshot_keep_recent,
                plugin,
                params: config
                    .snapshot_params
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                format_overlap: config.format_overlap,
            },
            registry.engine().clone(),
            metrics.clone(),
        )?;
        metrics.height.set(chain.height() as i64);
        metrics.state_keys.set(chain.keys() as i64);
        tracing::info!(
            height = chain.height(),
            app_hash = %hex::encode(chain.app_hash()),
            keys = chain.keys(),
            "node: state loaded"
        );
        let registry = Arc::new(registry);
        Ok(Node {
            config,
            chain: Mutex::new(chain),
            snapshots,
            statesync: Mutex::new(StateSync::new(registry.clone(), metrics.clone())),
            mempool_nonces: Mutex::default(),
            registry,
            conformance: Conformance::new()?,
            metrics,
            block_started: Mutex::default(),
            #[cfg(feature = "test-hooks")]
            hooks: TestHooks::default(),
        })
    }

    fn chain(&self) -> MutexGuard<'_, Chain> {
        self.chain
            .lock()
            .expect("the chain lock is poisoned by an earlier panic")
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Info: the last committed height and its app hash.
    pub fn info(&self) -> (u64, [u8; 32]) {
        let chain = self.chain();
        (chain.height(), chain.app_hash())
    }

    /// InitChain: loads the genesis state; returns its app hash.
    pub fn init_chain(
        &self,
        chain_id: &str,
        initial_height: u64,
        app_state: &[u8],
        validators: &[([u8; 32], i64)],
    ) -> anyhow::Result<[u8; 32]> {
        if !self.config.chain_id.is_empty() && self.config.chain_id != chain_id {
            bail!(
                "genesis is for chain {chain_id:?}, but config.toml says chain_id {:?}",
                self.config.chain_id
            );
        }
        let app_state = AppState::parse(app_state)?;
        let mut chain = self.chain();
        let app_hash = chain.init_chain(chain_id, initial_height, &app_state, validators)?;
        self.metrics.height.set(chain.height() as i64);
        self.metrics.state_keys.set(chain.keys() as i64);
        tracing::info!(chain_id, keys = chain.keys(), app_hash = %hex::encode(app_hash), "node: genesis loaded");
        Ok(app_hash)
    }

    /// CheckTx: whether a transaction may enter the mempool. Nonces count the
    /// account's transactions already admitted since the last commit.
    pub fn check_tx(&self, bytes: &[u8]) -> TxOutcome {
        // The heavy part (signature, unpacking and checking a proposed
        // plugin) runs before the chain lock is taken, so blocks never wait
        // on it.
        let result = match execute::prepare(bytes, &self.chain_id(), &self.conformance) {
            Ok(Ok(prepared)) => {
                let chain = self.chain();
                let mut nonces = self.mempool_nonces.lock().expect("mempool lock");
                chain.validator_set().and_then(|validators| {
                    let gov = GovContext {
                        height: chain.height() + 1,
                        validators: &validators,
                        executing: false,
                        conformance: &self.conformance,
                    };
                    let result = execute::apply(&prepared, &gov, |key| match nonces.get(key) {
                        Some(n) => Ok(Some(n.to_string())),
                        None => chain.get(key),
                    })?;
                    if let Ok(writes) = &result {
                        // The nonce is the one run-state key a transaction writes.
                        for (key, value) in writes {
                            if let (true, Some(n)) =
                                (key.starts_with("__n."), value.as_ref().and_then(|v| v.parse().ok()))
                            {
                                nonces.insert(key.clone(), n);
                            }
                        }
                    }
                    Ok(result)
                })
            }
            Ok(Err(e)) => Ok(Err(e)),
            Err(e) => Err(e),
        };
        match result {
            Ok(Ok(_)) => TxOutcome {
                code: 0,
                log: String::new(),
            },
            Ok(Err(e)) => TxOutcome {
                code: e.code(),
                log: e.to_string(),
            },
            Err(e) => TxOutcome {
                code: tx::code::NODE_FAILURE,
                log: format!("this node failed to check the transaction (not a verdict on it): {e:#}"),
            },
        }
    }

    /// PrepareProposal: the mempool's transactions in order, as many as fit.
    pub(crate) fn prepare_proposal<T: AsRef<[u8]> + Clone>(&self, txs: &[T], max_tx_bytes: u64) -> Vec<T> {
        let mut total = 0u64;
        let mut out = Vec::new();
        for tx in txs {
            let len = tx.as_ref().len() as u64;
            if total + len > max_tx_bytes {
                break;
            }
            if tx::decode_and_verify(tx.as_ref()).is_ok() {
                total += len;
                out.push(tx.clone());
            }
        }
        out
    }

    /// The chain's id (the lock is held only to copy it).
    fn chain_id(&self) -> String {
        self.chain().chain_id().to_string()
    }

    /// ProcessProposal: accept a block only if every transaction in it is
    /// well formed and signed for this chain (nonces are checked when it
    /// runs: a stale one is refused there, not the block), and this node can
    /// reach the verdict on every plugin it proposes. A node that cannot (its
    /// engine fails on valid code) votes against the block rather than halt
    /// in FinalizeBlock; the verdicts it reaches are cached for FinalizeBlock.
    pub fn process_proposal<T: AsRef<[u8]>>(&self, txs: &[T]) -> bool {
        let chain_id = self.chain_id();
        txs.iter()
            .all(|tx| match execute::prepare(tx.as_ref(), &chain_id, &self.conformance) {
                Ok(Ok(_)) => true,
                Ok(Err(_)) => false,
                Err(e) => {
                    tracing::error!(
                        "ProcessProposal: rejecting the block, this node cannot check a transaction in it: {e:#}"
                    );
                    false
                }
            })
    }

    /// FinalizeBlock: executes a block; returns each transaction's outcome
    /// and the new app hash. `Err(_)` is this node failing (its disk, or its
    /// engine on a proposed plugin): it cannot compute the block and stops.
    pub fn finalize_block<T: AsRef<[u8]>>(&self, height: u64, txs: &[T]) -> anyhow::Result<(Vec<TxOutcome>, [u8; 32])> {
        *self.block_started.lock().expect("timer lock") = Some(Instant::now());
        // Signatures and conformance checks first, outside the chain lock.
        let chain_id = self.chain_id();
        let prepared = txs
            .iter()
            .map(|tx| execute::prepare(tx.as_ref(), &chain_id, &self.conformance))
            .collect::<anyhow::Result<Vec<_>>>()
            .context("checking the block's transactions")?;
        let outcome = self.chain().finalize_block(height, &prepared, &self.conformance)?;
        let applied = outcome.0.iter().filter(|o| o.code == 0).count() as u64;
        self.metrics.txs_applied.inc_by(applied);
        self.metrics.txs_refused.inc_by(outcome.0.len() as u64 - applied);
        Ok(outcome)
    }

    /// Commit: makes the block durable, then starts a snapshot when one is due.
    pub fn commit(&self) -> anyhow::Result<u64> {
        let mut chain = self.chain();
        let height = chain.commit()?;
        self.mempool_nonces.lock().expect("mempool lock").clear();
        if self.snapshots.due(height) {
            self.snapshot(&mut chain);
        }
        self.metrics.height.set(height as i64);
        self.metrics.state_keys.set(chain.keys() as i64);
        if let Some(started) = self.block_started.lock().expect("timer lock").take() {
            self.metrics.block_seconds.observe(started.elapsed().as_secs_f64());
        }
        Ok(height)
    }

    /// Starts a background snapshot of the last committed height now,
    /// whatever the interval (benchmarks; an operator command later).
    pub fn snapshot_now(&self) {
        self.snapshot(&mut self.chain());
    }

    fn snapshot(&self, chain: &mut Chain) {
        match chain.view() {
            Ok(view) => self.snapshots.start(view, chain.chain_id().to_string()),
            Err(e) => tracing::error!(
                height = chain.height(),
                "snapshot: cannot open a view of the state: {e:#}"
            ),
        }
    }

    /// Query: `/key` (data: the key) → its stored value; `/status`, `/gov`
    /// (governance: validators, proposals, approved formats), `/snapshots`,
    /// `/plugins` → JSON.
    pub fn query(&self, path: &str, data: &[u8]) -> QueryAnswer {
        let height = self.chain().height();
        let answer = |code: QueryCode, log: String, value: Vec<u8>| QueryAnswer {
            code,
            log,
            value,
            height,
        };
        let result: anyhow::Result<QueryAnswer> = (|| match path {
            "/key" | "key" => {
                let key = std::str::from_utf8(data).context("the key is not UTF-8")?;
                Ok(match self.chain().get(key)? {
                    Some(stored) => answer(QueryCode::Found, String::new(), stored.into_bytes()),
                    None => answer(QueryCode::NoValue, format!("key {key:?} has no value"), Vec::new()),
                })
            }
            "/status" => {
                let chain = self.chain();
                let status = json!({
                    "chain_id": chain.chain_id(),
                    "height": chain.height(),
                    "app_hash": hex::encode(chain.app_hash()),
                    "keys": chain.keys(),
                });
                Ok(answer(QueryCode::Found, String::new(), status.to_string().into_bytes()))
            }
            "/gov" => {
                let chain = self.chain();
                let store = shared_store::lock(chain.store())?;
                let status = governance::status_json(
                    chain.treap(),
                    |k| crate::store::StateStore::get(&*store, k),
                    chain.height(),
                )?;
                Ok(answer(QueryCode::Found, String::new(), serde_json::to_vec(&status)?))
            }
            "/snapshots" => {
                let list: Vec<_> = self
                    .snapshots
                    .list()?
                    .into_iter()
                    .map(|s| {
                        json!({"height": s.height, "format": s.format, "chunks": s.chunks, "hash": hex::encode(s.hash)})
                    })
                    .collect();
                Ok(answer(QueryCode::Found, String::new(), serde_json::to_vec(&list)?))
            }
            "/plugins" => {
                let mut list = Vec::new();
                for (p, origin) in self.registry.list()?.iter().zip(self.registry.origins()) {
                    let d = p.description();
                    list.push(json!({"name": d.name, "version": d.version, "format": d.format,
                        "sha256": hex::encode(p.sha256()), "origin": origin}));
                }
                Ok(answer(QueryCode::Found, String::new(), serde_json::to_vec(&list)?))
            }
            other => Ok(answer(
                QueryCode::UnknownPath,
                format!(
                    "unknown query path {other:?}: use /key (data: the key), /status, /gov, /snapshots or /plugins"
                ),
                Vec::new(),
            )),
        })();
        result.unwrap_or_else(|e| answer(QueryCode::NodeFailed, format!("{e:#}"), Vec::new()))
    }

    /// ListSnapshots.
    pub fn list_snapshots(&self) -> Vec<Advertised> {
        self.snapshots.list().unwrap_or_else(|e| {
            tracing::error!("listing snapshots failed: {e:#}");
            Vec::new()
        })
    }

    /// LoadSnapshotChunk.
    pub fn load_snapshot_chunk(&self, height: u64, format: u32, index: u32) -> Vec<u8> {
        self.snapshots.load_chunk(height, format, index)
    }

    /// OfferSnapshot.
    pub fn offer_snapshot(&self, offer: &Offer) -> OfferAnswer {
        let (chain_id, height, home, store) = {
            let chain = self.chain();
            let chain_id = if chain.chain_id().is_empty() {
                self.config.chain_id.clone()
            } else {
                chain.chain_id().to_string()
            };
            (
                chain_id,
                chain.height(),
                chain.state_dir().to_path_buf(),
                chain.store_kind(),
            )
        };
        let target = statesync::Target {
            chain_id: &chain_id,
            height,
            home: &home,
            store,
            treap: true,
        };
        self.statesync.lock().expect("state sync lock").offer(offer, &target)
    }

    /// ApplySnapshotChunk. After the last chunk the restored state becomes
    /// the node's state.
    pub fn apply_snapshot_chunk(&self, index: u32, chunk: &[u8], sender: &str) -> ChunkAnswer {
        #[cfg(feature = "test-hooks")]
        if self.hooks.chunk_delay_ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(self.hooks.chunk_delay_ms));
        }
        let answer = self
            .statesync
            .lock()
            .expect("state sync lock")
            .apply(index, chunk, sender);
        let ChunkAnswer::Done(verified) = answer else {
            return answer;
        };
        let height = verified.manifest().height;
        let mut chain = self.chain();
        match chain.install_restored(*verified) {
            Ok(()) => {
                self.metrics.restored_snapshot_height.set(height as i64);
                self.metrics.height.set(height as i64);
                self.metrics.state_keys.set(chain.keys() as i64);
                tracing::info!(height, "state sync: the restored state is now this node's state");
                ChunkAnswer::Accept
            }
            Err(e) => ChunkAnswer::Abort(format!("installing the restored state failed: {e:#}")),
        }
    }

    /// Whether a background snapshot is being built.
    pub fn snapshot_in_progress(&self) -> bool {
        self.snapshots.busy()
    }

    /// A clean stop (SIGTERM): the state made durable and its Merkle treap saved
    /// for a fast restart. Takes the chain lock, so a block being committed
    /// finishes first; a snapshot being built is abandoned (its unfinished
    /// directory is removed at the next start).
    pub fn shutdown(&self) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut chain = self.chain();
        chain.shutdown()?;
        tracing::info!(
            height = chain.height(),
            seconds = format!("{:.2}", started.elapsed().as_secs_f64()),
            "node: state saved; stopping"
        );
        Ok(())
    }

    /// Waits for a background snapshot to finish (tests, clean shutdown).
    pub fn wait_for_snapshots(&self) {
        self.snapshots.wait_idle();
    }
}

#[cfg(test)]
mod tests {
    use super::QueryCode;

    /// The codes are the node's interface (clients read them from
    /// CometBFT's RPC): their numbers never change.
    #[test]
    fn query_codes_keep_their_wire_numbers() {
        let all = [
            QueryCode::Found,
            QueryCode::NoValue,
            QueryCode::UnknownPath,
            QueryCode::NodeFailed,
        ];
        assert_eq!(all.map(QueryCode::wire), [0, 1, 2, 3]);
        for c in all {
            assert_eq!(QueryCode::from_wire(c.wire()), Some(c));
        }
        assert_eq!(QueryCode::from_wire(4), None);
    }
}
