//! The chain's state machine: the committed Xian-layout state, the block
//! being executed, and their app hashes.
//!
//! * The state lives in the store (Xian's LMDB or HDF5 layout, the source of
//!   truth).
//! * A persistent Merkle treap over the consensus keys (one node per key:
//!   key, leaf hash, subtree hash) gives the app hash after each block at a
//!   cost that follows the block's writes, and frozen views for snapshots.
//! * FinalizeBlock executes into an overlay and a new treap. Commit makes
//!   the block durable, by store ([`Durability`]):
//!   * **LMDB**: the block's writes and the checkpoint record in one synced
//!     write transaction. A crash loses at most the block being committed
//!     (CometBFT replays it) and never leaves a half-written state.
//!   * **HDF5**, which has no transactions: the block is appended to the
//!     write-ahead log (durable), then written to HDF5. Every
//!     `checkpoint_interval` blocks the HDF5 files are fsynced and the log
//!     is emptied.
//! * On start the treap is rebuilt from the store (one ordered pass) and must
//!   give the recorded app hash, or the node refuses to run on damaged state.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use anyhow::{anyhow, bail, Context};

use super::checkpoint::Checkpoint;
use super::execute::{apply, Prepared, Writes};
use super::genesis::{validator_key, AppState};
use super::governance::{self, Conformance, GovContext, ValidatorSet};
use super::shared_store::{lock, lock_slot, SharedStore};
use super::treap_file;
use super::view::{BeforeImages, StateView};
use super::wal::{Wal, WalRecord};
use crate::protocol::tx::TxError;
use crate::snapshot::{recover_interrupted_swap, staging_path, swap_into_place, Verified};
use crate::store::root::{is_consensus_key, leaf_hash};
use crate::store::treap::{MerkleTreap, TreapBuilder};
use crate::store::value::canonical_bytes;
use crate::store::{copy, HomeStore, StateStore, StoreKind};

/// File name of the write-ahead log inside the state home.
pub const WAL_FILE: &str = "statesnap-wal.log";

/// One transaction's result in a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxOutcome {
    /// 0: applied; otherwise [`TxError::code`].
    pub code: u32,
    pub log: String,
}

impl TxOutcome {
    fn of(result: &Result<Writes, TxError>) -> Self {
        match result {
            Ok(_) => TxOutcome {
                code: 0,
                log: String::new(),
            },
            Err(e) => TxOutcome {
                code: e.code(),
                log: e.to_string(),
            },
        }
    }
}

/// A block executed but not yet committed.
struct PendingBlock {
    height: u64,
    writes: BTreeMap<String, Option<String>>,
    treap: MerkleTreap,
    app_hash: [u8; 32],
}

/// How committed blocks are made durable: by the store's kind.
enum Durability {
    /// LMDB: every commit is one synced transaction holding the checkpoint.
    Transactional,
    /// HDF5: a write-ahead log, and an fsync every `interval` blocks.
    Logged {
        wal: Wal,
        interval: u64,
        last_checkpoint: u64,
    },
}

/// The chain's committed state and the block in flight.
pub struct Chain {
    state_dir: PathBuf,
    store: SharedStore,
    kind: StoreKind,
    treap: MerkleTreap,
    chain_id: String,
    height: u64,
    app_hash: [u8; 32],
    durability: Durability,
    checkpoint_interval: u64,
    pending: Option<PendingBlock>,
    /// Before-images of (HDF5) snapshot views still being built.
    views: Vec<Weak<BeforeImages>>,
}

impl Chain {
    /// Opens the state home `state_dir` (creating it as `new_kind` when it
    /// is missing or empty; an existing home keeps its layout), finishing
    /// whatever a crash interrupted: a half-done swap, a leftover restore
    /// staging home, committed blocks not yet checkpointed (HDF5).
    pub fn open(state_dir: &Path, checkpoint_interval: u64, new_kind: StoreKind) -> anyhow::Result<Chain> {
        recover_interrupted_swap(state_dir)?;
        let staging = staging_path(state_dir);
        if staging.exists() {
            tracing::warn!(dir = %staging.display(), "removing the staging home of an interrupted restore");
            std::fs::remove_dir_all(&staging).with_context(|| format!("removing {}", staging.display()))?;
        }
        let mut store = HomeStore::open_or_create(state_dir, new_kind)?;
        let kind = store.kind();
        let checkpoint = Checkpoint::load(&store)?;
        let (chain_id, mut height, mut app_hash) = match &checkpoint {
            Some(c) => (c.chain_id.clone(), c.height, Some(c.app_hash()?)),
            None => (String::new(), 0, None),
        };
        // The treap saved at a clean shutdown, if it is this checkpoint's.
        let mut saved = match (&checkpoint, app_hash) {
            (Some(c), Some(hash)) => treap_file::take(state_dir, c.height, hash)?,
            _ => None,
        };
        let checkpoint_interval = checkpoint_interval.max(1);
        let mut replayed = 0;
        let durability = match kind {
            StoreKind::Lmdb => Durability::Transactional,
            StoreKind::Hdf5 => {
                let (wal, records) = Wal::open(&state_dir.join(WAL_FILE))?;
                let durable = height;
                for record in records.into_iter().filter(|r| r.height > durable) {
                    if record.height != height + 1 {
                        bail!(
                            "the write-ahead log in {} jumps from height {height} to {}: it does not belong to this state",
                            state_dir.display(),
                            record.height
                        );
                    }
                    store.write_batch(&record.writes)?;
                    if let Some(treap) = &mut saved {
                        apply_to_treap(treap, record.writes.iter().map(|(k, v)| (k, v)))?;
                    }
                    height = record.height;
                    app_hash = Some(record.app_hash);
                    replayed += 1;
                }
                if replayed > 0 {
                    tracing::info!(
                        blocks = replayed,
                        height,
                        "replayed committed blocks from the write-ahead log"
                    );
                }
                Durability::Logged {
                    wal,
                    interval: checkpoint_interval,
                    last_checkpoint: checkpoint.as_ref().map_or(0, |c| c.height),
                }
            }
        };
        let treap = match saved {
            Some(treap) => {
                tracing::info!(
                    keys = treap.len(),
                    "loaded the Merkle treap saved at the last clean shutdown"
                );
                treap
            }
            None => build_treap(&store, state_dir)?,
        };
        let app_hash = match app_hash {
            Some(expected) if expected != treap.root_hash() => bail!(
                "the state in {} does not match its recorded app hash at height {height} (recorded {}, the state \
                 gives {}): it was damaged, perhaps by a crash in the middle of a write. Move the directory away and \
                 let the node join again by state sync (or restore a snapshot with `statesnap snapshot restore`)",
                state_dir.display(),
                hex::encode(expected),
                hex::encode(treap.root_hash())
            ),
            Some(h) => h,
            None => treap.root_hash(),
        };
        let mut chain = Chain {
            state_dir: state_dir.to_path_buf(),
            store: Arc::new(Mutex::new(Some(store))),
            kind,
            treap,
            chain_id,
            height,
            app_hash,
            durability,
            checkpoint_interval,
            pending: None,
            views: Vec::new(),
        };
        if replayed > 0 {
            chain.checkpoint()?;
        }
        Ok(chain)
    }

    /// The layout of the state home.
    pub(crate) fn store_kind(&self) -> StoreKind {
        self.kind
    }

    pub fn height(&self) -> u64 {
        self.height
    }

    pub fn app_hash(&self) -> [u8; 32] {
        self.app_hash
    }

    pub(crate) fn chain_id(&self) -> &str {
        &self.chain_id
    }

    /// Number of consensus keys.
    pub(crate) fn keys(&self) -> u64 {
        self.treap.len()
    }

    pub(crate) fn store(&self) -> &SharedStore {
        &self.store
    }

    /// The validator set in the committed state.
    pub(crate) fn validator_set(&self) -> anyhow::Result<ValidatorSet> {
        let store = lock(&self.store)?;
        ValidatorSet::read(&self.treap, |k| store.get(k))
    }

    /// The committed state's Merkle treap (its keys and leaf hashes).
    pub(crate) fn treap(&self) -> &MerkleTreap {
        &self.treap
    }

    /// A committed key's stored value.
    pub fn get(&self, key: &str) -> anyhow::Result<Option<String>> {
        lock(&self.store)?.get(key)
    }

    /// InitChain: the genesis state from `app_state` and the validator set,
    /// at height `initial_height - 1`. Returns the genesis app hash. Any
    /// state a crashed earlier InitChain left is discarded first.
    pub(crate) fn init_chain(
        &mut self,
        chain_id: &str,
        initial_height: u64,
        app_state: &AppState,
        validators: &[([u8; 32], i64)],
    ) -> anyhow::Result<[u8; 32]> {
        if self.height > 0 {
            bail!(
                "InitChain was called, but this node's state is already at height {}; \
                 point CometBFT at the right statesnap home or start from an empty one",
                self.height
            );
        }
        // Start from an empty home (a crash may have left a partial genesis).
        let fresh = self.state_dir.with_file_name(format!(
            ".{}.statesnap-genesis",
            self.state_dir
                .file_name()
                .map_or("state".into(), |n| n.to_string_lossy())
        ));
        if fresh.exists() {
            std::fs::remove_dir_all(&fresh)?;
        }
        let mut store = HomeStore::create(&fresh, self.kind)?;
        // Synced once, below: a failed genesis is started again from scratch.
        store.set_bulk(true);
        if let Some(home) = &app_state.import_home {
            let source =
                HomeStore::open_read_only(home).with_context(|| "importing the genesis app_state's import_home")?;
            let n = copy::copy_entries(source.entries()?, &mut store, copy::BATCH, |n| {
                tracing::info!(keys = n, "importing the genesis home")
            })?;
            tracing::info!(keys = n, home = %home.display(), "imported the genesis home");
        }
        let mut writes: BTreeMap<String, Option<String>> = app_state
            .entries
            .iter()
            .map(|e| (e.key.clone(), Some(e.stored.clone())))
            .collect();
        for (pub_key, power) in validators {
            writes.insert(validator_key(pub_key), Some(power.to_string()));
        }
        store.write_batch(&writes.into_iter().collect::<Vec<_>>())?;
        store.flush()?;
        let treap = build_treap(&store, &fresh)?;
        let app_hash = treap.root_hash();
        let height = initial_height.saturating_sub(1);
        Checkpoint::new(chain_id, height, app_hash).save(&mut store)?;
        drop(store);
        // The old (empty or partial) home goes; the genesis home takes its place.
        self.adopt(|state_dir| swap_into_place(&fresh, state_dir), treap, chain_id, height)?;
        Ok(app_hash)
    }

    /// FinalizeBlock: executes `txs` on the committed state and returns each
    /// one's outcome and the app hash after the block. Nothing is written
    /// until [`commit`](Self::commit).
    /// Executes block `height` of transactions prepared beforehand
    /// (`execute::prepare`, outside the chain lock); a transaction its rules
    /// refused on its own is `Err` and gets its code.
    pub fn finalize_block(
        &mut self,
        height: u64,
        txs: &[Result<Prepared, TxError>],
        conformance: &Conformance,
    ) -> anyhow::Result<(Vec<TxOutcome>, [u8; 32])> {
        if height != self.height + 1 {
            bail!(
                "CometBFT asked to execute block {height}, but this node's state is at height {}: \
                 the state and CometBFT's block store disagree",
                self.height
            );
        }
        let mut overlay: BTreeMap<String, Option<String>> = BTreeMap::new();
        let mut outcomes = Vec::with_capacity(txs.len());
        {
            let store = lock(&self.store)?;
            // Transactions cannot change the validator set, so one read serves the block.
            let validators = ValidatorSet::read(&self.treap, |k| store.get(k))?;
            let gov = GovContext {
                height,
                validators: &validators,
                executing: true,
                conformance,
            };
            for tx in txs {
                let result = match tx {
                    Ok(prepared) => apply(prepared, &gov, |key| match overlay.get(key) {
                        Some(v) => Ok(v.clone()),
                        None => store.get(key),
                    })?,
                    Err(e) => Err(e.clone()),
                };
                outcomes.push(TxOutcome::of(&result));
                if let Ok(writes) = result {
                    overlay.extend(writes);
                }
            }
            // Code of proposals that expired or were superseded leaves state.
            let swept = governance::sweep(height, &mut |key: &str| match overlay.get(key) {
                Some(v) => Ok(v.clone()),
                None => store.get(key),
            })?;
            overlay.extend(swept);
        }
        let mut treap = self.treap.clone();
        apply_to_treap(&mut treap, &overlay)?;
        let app_hash = treap.root_hash();
        self.pending = Some(PendingBlock {
            height,
            writes: overlay,
            treap,
            app_hash,
        });
        Ok((outcomes, app_hash))
    }

    /// Commit: makes the executed block durable and applies it to the
    /// store (see [`Durability`]). Returns the new height.
    pub fn commit(&mut self) -> anyhow::Result<u64> {
        let block = self
            .pending
            .take()
            .ok_or_else(|| anyhow!("Commit without a FinalizeBlock before it"))?;
        let mut writes = block.writes;
        match &mut self.durability {
            Durability::Transactional => {
                // The record goes into the block's own transaction.
                let (key, value) = Checkpoint::new(&self.chain_id, block.height, block.app_hash).entry();
                writes.insert(key, value);
                let writes: Writes = writes.into_iter().collect();
                lock(&self.store)?.write_batch(&writes)?;
            }
            Durability::Logged { wal, .. } => {
                let writes: Writes = writes.into_iter().collect();
                wal.append(&WalRecord {
                    height: block.height,
                    app_hash: block.app_hash,
                    writes: writes.clone(),
                })?;
                let mut store = lock(&self.store)?;
                self.views.retain(|v| v.strong_count() > 0);
                for view in self.views.iter().filter_map(Weak::upgrade) {
                    view.capture(&*store, &writes)?;
                }
                store.write_batch(&writes)?;
                if let HomeStore::Hdf5(hdf5) = &mut *store {
                    hdf5.flush_to_os()?;
                }
            }
        }
        self.treap = block.treap;
        self.height = block.height;
        self.app_hash = block.app_hash;
        if let Durability::Logged {
            interval,
            last_checkpoint,
            ..
        } = &self.durability
        {
            if self.height - *last_checkpoint >= *interval {
                self.checkpoint()?;
            }
        }
        Ok(self.height)
    }

    /// Makes the store durable and records it (HDF5: so the log can be emptied).
    fn checkpoint(&mut self) -> anyhow::Result<()> {
        let mut store = lock(&self.store)?;
        match &mut self.durability {
            Durability::Transactional => store.flush(),
            Durability::Logged {
                wal, last_checkpoint, ..
            } => {
                store.flush()?;
                Checkpoint::new(&self.chain_id, self.height, self.app_hash).save(&mut store)?;
                wal.reset()?;
                *last_checkpoint = self.height;
                Ok(())
            }
        }
    }

    /// A clean stop: makes the state durable and saves the treap, so the
    /// next start need not rebuild it from the whole state. A block executed
    /// but not committed is dropped (CometBFT replays it).
    pub fn shutdown(&mut self) -> anyhow::Result<()> {
        self.pending = None;
        self.checkpoint()?;
        treap_file::save(&self.state_dir, &self.treap, self.height)
    }

    /// A frozen view of the committed state, for a background snapshot.
    pub fn view(&mut self) -> anyhow::Result<StateView> {
        if let HomeStore::Lmdb(lmdb) = &*lock(&self.store)? {
            let snapshot = lmdb.snapshot()?;
            return Ok(StateView::frozen(
                self.treap.clone(),
                snapshot,
                self.height,
                self.app_hash,
            ));
        }
        let before = Arc::new(BeforeImages::new(self.height));
        self.views.push(Arc::downgrade(&before));
        Ok(StateView::live(
            self.treap.clone(),
            before,
            self.store.clone(),
            self.app_hash,
        ))
    }

    /// Makes a verified restored home (a finished state sync) the node's
    /// state, with the checkpoint of its height.
    pub(crate) fn install_restored(&mut self, mut verified: Verified) -> anyhow::Result<()> {
        let treap = verified
            .take_treap()
            .context("the restore was begun without its treap (a bug)")?;
        let m = verified.manifest();
        let (chain_id, height, app_hash) = (m.chain_id.clone(), m.height, m.app_hash);
        if treap.root_hash() != app_hash {
            bail!("the restored state's treap does not give the trusted app hash (a bug)");
        }
        super::checkpoint::checkpoint_restored_home(&verified)?;
        self.adopt(|_| Ok(verified.install().map(drop)?), treap, &chain_id, height)
    }

    /// Makes the checkpointed home that `swap` moves into the state home
    /// (state of `height`, indexed by `treap`) the node's state, replacing
    /// the current one.
    fn adopt(
        &mut self,
        swap: impl FnOnce(&Path) -> anyhow::Result<()>,
        treap: MerkleTreap,
        chain_id: &str,
        height: u64,
    ) -> anyhow::Result<()> {
        let mut slot = lock_slot(&self.store)?;
        // LMDB allows one open environment per path and process: the old
        // state closes before the new one takes its place.
        *slot = None;
        let swapped = swap(&self.state_dir);
        // Reopened whether or not the swap worked (if not, the old state is back).
        let reopened = HomeStore::open(&self.state_dir);
        let store = match (swapped, reopened) {
            (Ok(()), Ok(store)) => store,
            (Err(e), reopened) => {
                *slot = reopened.ok();
                return Err(e);
            }
            (Ok(()), Err(e)) => return Err(e),
        };
        self.kind = store.kind();
        *slot = Some(store);
        drop(slot);
        self.durability = match self.kind {
            StoreKind::Lmdb => Durability::Transactional,
            StoreKind::Hdf5 => {
                let (mut wal, _) = Wal::open(&self.state_dir.join(WAL_FILE))?;
                wal.reset()?;
                Durability::Logged {
                    wal,
                    interval: self.checkpoint_interval,
                    last_checkpoint: height,
                }
            }
        };
        self.app_hash = treap.root_hash();
        self.treap = treap;
        self.chain_id = chain_id.to_string();
        self.height = height;
        self.pending = None;
        self.views.clear();
        Ok(())
    }

    /// The state home.
    pub(crate) fn state_dir(&self) -> &Path {
        &self.state_dir
    }
}

/// Applies writes (`None` deletes) to a treap: the consensus keys' leaves.
fn apply_to_treap<'a>(
    treap: &mut MerkleTreap,
    writes: impl IntoIterator<Item = (&'a String, &'a Option<String>)>,
) -> anyhow::Result<()> {
    for (key, value) in writes {
        if !is_consensus_key(key) {
            continue;
        }
        match value.as_deref().map(canonical_bytes).transpose() {
            Ok(Some(Some(canonical))) => treap.set(key, &canonical),
            Ok(_) => {
                treap.remove(key);
            }
            Err(e) => bail!("the value written to {key:?} cannot be hashed: {e}"),
        }
    }
    Ok(())
}

/// Builds the treap of a store's consensus entries in one ordered pass.
///
/// Two stages on two threads, each about half the work (10M keys: 9.8 s on
/// one thread, of which SHA-256 is 30% and the canonical JSON 15%): this
/// thread walks the store (whose handles stay on it) and hashes each
/// entry's leaf; a second one computes the priorities and builds the tree,
/// in the walk's order, so the treap is the same as from one thread.
fn build_treap(store: &dyn StateStore, dir: &Path) -> anyhow::Result<MerkleTreap> {
    /// Leaves per batch handed to the builder thread.
    const BATCH: usize = 4096;
    let (tx, rx) = crossbeam_channel::bounded::<Vec<(String, [u8; 32])>>(8);
    std::thread::scope(|scope| {
        let builder = std::thread::Builder::new()
            .name("treap-builder".into())
            .spawn_scoped(scope, move || -> anyhow::Result<MerkleTreap> {
                let mut builder = TreapBuilder::new();
                for batch in rx {
                    for (key, leaf) in batch {
                        builder.push(&key, leaf)?;
                    }
                }
                Ok(builder.finish())
            })
            .context("spawning the treap builder thread")?;
        let walked = (|| -> anyhow::Result<()> {
            let mut batch = Vec::with_capacity(BATCH);
            let mut n = 0u64;
            for entry in store.entries()? {
                let entry = entry?;
                if !is_consensus_key(&entry.key) {
                    continue;
                }
                let canonical = canonical_bytes(&entry.stored).with_context(|| {
                    format!(
                        "key {:?} in {} has a value the state root cannot hash",
                        entry.key,
                        dir.display()
                    )
                })?;
                if let Some(c) = canonical {
                    let leaf = leaf_hash(entry.key.as_bytes(), &c);
                    batch.push((entry.key, leaf));
                    n += 1;
                    if n.is_multiple_of(500_000) {
                        tracing::info!(keys = n, "indexing the state");
                    }
                    if batch.len() == BATCH
                        && tx
                            .send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)))
                            .is_err()
                    {
                        break; // the builder stopped: its error says why
                    }
                }
            }
            if !batch.is_empty() {
                let _ = tx.send(batch);
            }
            Ok(())
        })();
        drop(tx);
        let built = builder
            .join()
            .map_err(|_| anyhow::anyhow!("the treap builder thread panicked"))?;
        walked?;
        built
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::root::state_root_of;

    /// Across many batches, the two-thread build gives the state root the
    /// streamed computation gives (and so the treap of one thread).
    #[test]
    fn build_treap_gives_the_state_root() {
        let mut store = MemoryStore::new();
        crate::store::generate::generate(&mut store, 20_000, 3, |_| {}).unwrap();
        let treap = build_treap(&store, Path::new("mem")).unwrap();
        let (root, _) = state_root_of(&store, || {}).unwrap();
        assert_eq!(treap.root_hash(), root);
        assert!(treap.len() > 4096 * 3, "several batches: {}", treap.len());
    }

    /// A value the root cannot hash stops the build, naming its key.
    #[test]
    fn build_treap_refuses_an_unhashable_value() {
        let mut store = MemoryStore::new();
        crate::store::generate::generate(&mut store, 10_000, 4, |_| {}).unwrap();
        store
            .write_batch(&[("zz_last.bad".to_string(), Some("{not json".to_string()))])
            .unwrap();
        let err = format!("{:#}", build_treap(&store, Path::new("mem")).unwrap_err());
        assert!(err.contains("\"zz_last.bad\"") && err.contains("cannot hash"), "{err}");
    }
}
