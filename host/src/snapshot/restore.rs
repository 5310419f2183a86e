//! Restoring a snapshot into a staging home, checked every step of the way,
//! and swapping it in only once its state root equals the trusted app hash.
//!
//! [`Restorer`] takes chunks one at a time (from files, or from CometBFT's
//! ApplySnapshotChunk); decoding and root hashing run on the caller's thread
//! while a writer thread fills the staging home, so the store's time hides the
//! rest. A chunk's entries reach the writer only once the chunk's range proof
//! shows them, with all before them, to be the trusted state's (`frame`,
//! `range_proof`): a forged snapshot is caught at its first state chunk, not
//! after its last. Dropping an unfinished restorer removes its staging home.

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use anyhow::Context;
use crossbeam_channel::{bounded, Sender};
use indicatif::ProgressBar;
use sha2::{Digest, Sha256};

use super::admit::{admit, Admission, Admitted};
use super::codec::{ChunkDecoder, DECODE_BATCH_BYTES, MAX_CHUNK_ENTRY_BYTES};
use super::entries::state_entry;
use super::frame;
use super::layout::SnapshotDir;
use super::manifest::{Manifest, MAX_CHUNK_BYTES};
use crate::plugin::{Plugin, PluginError, PluginRegistry};
use crate::store::home::{detect, is_vacant};
use crate::store::range_proof::ProofError;
use crate::store::root::{leaf_hash, priority, RootBuilder, RootError};
use crate::store::treap::{MerkleTreap, TreapBuilder};
use crate::store::{HomeStore, StateStore, StoreKind};

/// Why a restore was refused. Each case leaves the live home untouched.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("snapshot metadata is invalid: {0}")]
    Manifest(String),
    #[error("the snapshot claims app hash {claimed}, but the trusted app hash is {trusted}: refusing it")]
    AppHashMismatch { claimed: String, trusted: String },
    #[error("chunk {index} has SHA-256 {got}, but the manifest lists {expected}: the chunk is corrupt or forged; fetch it again from another peer")]
    ChunkHash { index: u32, expected: String, got: String },
    #[error("chunk {index} is {len} bytes, over the {limit} bytes it may have (a chunk is at most {} bytes, and the manifest's snapshot size leaves no more): refused unread", MAX_CHUNK_BYTES)]
    Oversized { index: u32, len: u64, limit: u64 },
    #[error("the snapshot's files cannot be used: {0}")]
    Unreadable(String),
    #[error("chunk {index} arrived, but chunk {expected} is the next one expected")]
    ChunkOrder { index: u32, expected: u32 },
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error("chunk {index} matches the manifest, but {source}: the snapshot is forged (its manifest is the serving peer's word); none of this chunk's entries were written")]
    Proof { index: u32, source: ProofError },
    #[error("the snapshot's entries are invalid: {0}")]
    Entries(String),
    #[error("the restored state's root is {got}, not the trusted app hash {expected}: the snapshot does not hold the trusted state, so nothing was kept")]
    RootMismatch { expected: String, got: String },
    #[error("writing the staging home failed: {0:#}")]
    Store(anyhow::Error),
    #[error("cannot restore here: {0}")]
    Target(String),
    #[error("the snapshot's plugin is refused before it runs: {0}")]
    Approval(#[from] super::approval::ApprovalError),
    #[error("the snapshot's plugin is not available: {0}")]
    PluginUnavailable(String),
}

/// What a finished restore produced.
#[derive(Clone)]
pub struct RestoreSummary {
    pub root: [u8; 32],
    pub entries: u64,
    pub state_bytes: u64,
    pub chunks: u32,
    /// The staging home holding the verified state.
    pub staging: PathBuf,
    /// The restored state's Merkle treap, when asked for with [`Restorer::with_index`].
    pub index: Option<MerkleTreap>,
}

impl std::fmt::Debug for RestoreSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestoreSummary")
            .field("root", &hex::encode(self.root))
            .field("entries", &self.entries)
            .field("state_bytes", &self.state_bytes)
            .field("chunks", &self.chunks)
            .field("staging", &self.staging)
            .field("index", &self.index.as_ref().map(|i| i.len()))
            .finish()
    }
}

type WriteBatch = Vec<(String, Option<String>)>;

/// A restore in progress. Feed chunks in index order with
/// [`apply_chunk`](Self::apply_chunk), then call [`finish`](Self::finish).
pub struct Restorer {
    manifest: Manifest,
    decoder: Box<dyn ChunkDecoder>,
    root: RootBuilder,
    next: u32,
    entries: u64,
    state_bytes: u64,
    /// Bytes of the chunks applied so far.
    chunk_bytes: u64,
    staging: PathBuf,
    pending: WriteBatch,
    pending_bytes: usize,
    writes: Option<Sender<WriteBatch>>,
    writer: Option<JoinHandle<anyhow::Result<()>>>,
    keep: bool,
    index: Option<IndexThread>,
}

/// Keys with their priority and leaf hash, on their way to the index thread.
type IndexBatch = Vec<(String, [u8; 32], [u8; 32])>;

/// Builds the restored state's Merkle treap on a thread of its own, from the
/// hashes the restore computes anyway: a node's restore then adds neither
/// hashing nor tree building to the time CometBFT waits on ApplySnapshotChunk.
struct IndexThread {
    tx: Option<Sender<IndexBatch>>,
    handle: Option<JoinHandle<MerkleTreap>>,
    pending: IndexBatch,
}

impl IndexThread {
    fn spawn() -> Self {
        let (tx, rx) = bounded::<IndexBatch>(4);
        let handle = std::thread::Builder::new()
            .name("restore-index".into())
            .spawn(move || {
                let mut builder = TreapBuilder::new();
                for batch in rx {
                    for (key, prio, leaf) in batch {
                        builder.push_prioritized(&key, prio, leaf);
                    }
                }
                builder.finish()
            })
            .expect("spawning the restore index thread");
        IndexThread {
            tx: Some(tx),
            handle: Some(handle),
            pending: Vec::new(),
        }
    }

    fn send(&mut self) -> Result<(), RestoreError> {
        let batch = std::mem::take(&mut self.pending);
        match &self.tx {
            Some(tx) if tx.send(batch).is_ok() => Ok(()),
            _ => Err(RestoreError::Store(anyhow::anyhow!(
                "the restore's index thread stopped"
            ))),
        }
    }

    fn finish(mut self) -> Result<MerkleTreap, RestoreError> {
        self.tx = None;
        self.handle
            .take()
            .expect("joined once")
            .join()
            .map_err(|_| RestoreError::Store(anyhow::anyhow!("the restore's index thread panicked")))
    }
}

impl Restorer {
    /// Starts restoring an admitted snapshot ([`super::admit`]: its app hash
    /// is the trusted one, its plugin approved) into a fresh staging home of
    /// layout `kind` at `staging` (anything already there is removed).
    pub fn begin(
        admitted: Admitted,
        decoder: Box<dyn ChunkDecoder>,
        staging: &Path,
        kind: StoreKind,
    ) -> Result<Self, RestoreError> {
        let manifest = admitted.into_manifest();
        if staging.exists() {
            std::fs::remove_dir_all(staging)
                .with_context(|| format!("removing stale staging home {}", staging.display()))
                .map_err(RestoreError::Store)?;
        }
        check_free_space(&manifest, staging)?;
        let (tx, rx) = bounded::<WriteBatch>(4);
        let dir = staging.to_path_buf();
        let writer = std::thread::Builder::new()
            .name("restore-writer".into())
            .spawn(move || -> anyhow::Result<()> {
                let mut store = HomeStore::create(&dir, kind)?;
                // Synced once at the end: a failed restore is thrown away.
                store.set_bulk(true);
                for batch in rx {
                    store.write_batch(&batch)?;
                }
                store.flush()
            })
            .expect("spawning the restore writer thread");
        Ok(Restorer {
            manifest,
            decoder,
            root: RootBuilder::new(),
            next: 0,
            entries: 0,
            state_bytes: 0,
            chunk_bytes: 0,
            staging: staging.to_path_buf(),
            pending: Vec::new(),
            pending_bytes: 0,
            writes: Some(tx),
            writer: Some(writer),
            keep: false,
            index: None,
        })
    }

    /// Also builds the restored state's Merkle treap (what a node keeps to
    /// update its app hash block by block), in the same pass.
    pub(crate) fn with_index(mut self) -> Self {
        self.index = Some(IndexThread::spawn());
        self
    }

    /// Wasm fuel the plugin has spent on this restore so far.
    pub(crate) fn fuel_used(&self) -> u64 {
        self.decoder.fuel_used()
    }

    pub(crate) fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Index of the next chunk expected.
    pub(crate) fn next_chunk(&self) -> u32 {
        self.next
    }

    /// Entries restored so far.
    pub(crate) fn entries(&self) -> u64 {
        self.entries
    }

    /// Bytes the manifest leaves for the chunks still to come: the bound on
    /// the next chunk's size.
    pub(crate) fn snapshot_bytes_left(&self) -> u64 {
        self.manifest.snapshot_bytes.saturating_sub(self.chunk_bytes)
    }

    /// Checks chunk `index` against the manifest, decodes it, checks its range
    /// proof, and only then writes its entries. A chunk with a wrong hash is
    /// refused before the plugin sees it and leaves the restore as it was, so
    /// the right chunk can still be applied; a failed proof ends the restore.
    pub(crate) fn apply_chunk(&mut self, index: u32, chunk: &[u8]) -> Result<(), RestoreError> {
        if index != self.next {
            return Err(RestoreError::ChunkOrder {
                index,
                expected: self.next,
            });
        }
        let Some(expected) = self.manifest.chunks.get(index as usize) else {
            return Err(RestoreError::ChunkOrder {
                index,
                expected: self.next,
            });
        };
        let left = self.snapshot_bytes_left().min(MAX_CHUNK_BYTES as u64);
        if chunk.len() as u64 > left {
            return Err(RestoreError::Oversized {
                index,
                len: chunk.len() as u64,
                limit: left,
            });
        }
        let got: [u8; 32] = Sha256::digest(chunk).into();
        if &got != expected {
            return Err(RestoreError::ChunkHash {
                index,
                expected: hex::encode(expected),
                got: hex::encode(got),
            });
        }
        self.chunk_bytes += chunk.len() as u64;
        if index < self.manifest.plugin_chunks() {
            // The shipped plugin (checked whole against the approved hash
            // before `begin`): the caller loaded it to make the decoder.
            self.next = index + 1;
            return Ok(());
        }
        let (plugin_bytes, proof) = frame::open(chunk).map_err(|source| RestoreError::Proof { index, source })?;
        self.decoder.feed(plugin_bytes)?;
        while let Some(batch) = self.decoder.next_batch(DECODE_BATCH_BYTES)? {
            self.take_entries(index, &batch)?;
        }
        proof
            .verify(&self.root, &self.manifest.app_hash)
            .map_err(|source| RestoreError::Proof { index, source })?;
        if !self.pending.is_empty() {
            self.send_pending()?;
        }
        self.next += 1;
        Ok(())
    }

    /// Checks and holds a batch of chunk `chunk`'s entries until its proof is checked.
    fn take_entries(&mut self, chunk: u32, batch: &[u8]) -> Result<(), RestoreError> {
        for item in statesnap_plugin_sdk::entries(batch) {
            let (key, value) = item.map_err(|e| RestoreError::Entries(format!("the plugin returned a {e}")))?;
            let entry = state_entry(key, value).map_err(RestoreError::Entries)?;
            let (key, value) = (entry.key, entry.value);
            let prio = priority(key.as_bytes());
            let leaf = leaf_hash(key.as_bytes(), &entry.canonical);
            match self.root.push_prioritized(key, prio, leaf) {
                Ok(()) => {}
                Err(RootError::OutOfOrder { previous, key }) => {
                    return Err(RestoreError::Entries(format!(
                        "entries are not in strictly ascending key order: {key:?} came after {previous:?}"
                    )))
                }
                Err(e) => return Err(RestoreError::Entries(e.to_string())),
            }
            if let Some(index) = &mut self.index {
                index.pending.push((key.to_string(), prio, leaf));
            }
            self.entries += 1;
            self.state_bytes += (key.len() + value.len()) as u64;
            // A snapshot that holds more than its manifest says is refused
            // at once, before the excess reaches the disk.
            if self.entries > self.manifest.entries || self.state_bytes > self.manifest.state_bytes {
                return Err(RestoreError::Entries(format!(
                    "chunk {chunk} takes the state past the manifest's {} entries of {} bytes \
                     (at {} entries of {} bytes): the snapshot lies about its size; stopped before writing more",
                    self.manifest.entries, self.manifest.state_bytes, self.entries, self.state_bytes
                )));
            }
            self.pending_bytes += key.len() + value.len();
            if self.pending_bytes > MAX_CHUNK_ENTRY_BYTES {
                return Err(RestoreError::Entries(format!(
                    "chunk {chunk} decodes to more than {MAX_CHUNK_ENTRY_BYTES} bytes of entries, more than is held \
                     before a chunk's proof is checked (no honest snapshot has such a chunk)"
                )));
            }
            self.pending.push((key.to_string(), Some(value.to_string())));
        }
        Ok(())
    }

    fn send_pending(&mut self) -> Result<(), RestoreError> {
        if let Some(index) = &mut self.index {
            index.send()?;
        }
        let batch = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let tx = self.writes.as_ref().expect("writer open until finish");
        if tx.send(batch).is_err() {
            // The writer stopped: its error says why.
            return Err(self
                .join_writer()
                .err()
                .unwrap_or_else(|| RestoreError::Store(anyhow::anyhow!("the staging writer stopped unexpectedly"))));
        }
        Ok(())
    }

    fn join_writer(&mut self) -> Result<(), RestoreError> {
        self.writes = None;
        match self.writer.take() {
            Some(h) => h
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the staging writer panicked")))
                .map_err(RestoreError::Store),
            None => Ok(()),
        }
    }

    /// Ends the restore after the last chunk: the state root must equal the
    /// trusted app hash. On success the staging home holds the verified state;
    /// move it into place with [`swap_into_place`].
    pub(crate) fn finish(mut self) -> Result<RestoreSummary, RestoreError> {
        let total = self.manifest.chunks.len() as u32;
        if self.next != total {
            return Err(RestoreError::Entries(format!(
                "only {} of {total} chunks were applied",
                self.next
            )));
        }
        self.decoder.finish()?;
        if !self.pending.is_empty() {
            self.send_pending()?;
        }
        self.join_writer()?;
        let root = std::mem::take(&mut self.root).finish();
        if root != self.manifest.app_hash {
            return Err(RestoreError::RootMismatch {
                expected: hex::encode(self.manifest.app_hash),
                got: hex::encode(root),
            });
        }
        if self.entries != self.manifest.entries || self.state_bytes != self.manifest.state_bytes {
            return Err(RestoreError::Entries(format!(
                "the manifest promises {} entries of {} bytes but the chunks held {} of {}",
                self.manifest.entries, self.manifest.state_bytes, self.entries, self.state_bytes
            )));
        }
        let index = match self.index.take() {
            Some(thread) => Some(thread.finish()?),
            None => None,
        };
        self.keep = true;
        Ok(RestoreSummary {
            root,
            entries: self.entries,
            state_bytes: self.state_bytes,
            chunks: total,
            staging: self.staging.clone(),
            index,
        })
    }
}

impl Drop for Restorer {
    fn drop(&mut self) {
        let _ = self.join_writer();
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.staging);
        }
    }
}

/// Refuses a restore whose state cannot fit: its keys and values alone are
/// `state_bytes`, a lower bound of what any store needs for them, so this never
/// refuses a restore that could succeed (and a manifest that lies low is
/// stopped by the entry and byte counts as the chunks arrive).
fn check_free_space(manifest: &Manifest, staging: &Path) -> Result<(), RestoreError> {
    let dir = crate::durable::parent_of(staging);
    let free = crate::durable::free_bytes(dir).map_err(RestoreError::Store)?;
    if manifest.state_bytes > free {
        return Err(RestoreError::Target(format!(
            "the snapshot's state is {} bytes of keys and values, but only {free} bytes are free on the file system of {}; \
             free space there (or restore elsewhere) and try again",
            manifest.state_bytes,
            dir.display()
        )));
    }
    Ok(())
}

/// The staging home used when restoring into `home`: a hidden sibling, so the
/// final rename stays on one file system.
pub fn staging_path(home: &Path) -> PathBuf {
    sibling(home, "restore-staging")
}

fn sibling(home: &Path, what: &str) -> PathBuf {
    let name = home
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "home".into());
    home.with_file_name(format!(".{name}.statesnap-{what}"))
}

/// Makes a verified staging home the live `home`. The old home, if any, is
/// moved aside first and removed last.
pub fn swap_into_place(staging: &Path, home: &Path) -> anyhow::Result<()> {
    recover_interrupted_swap(home)?;
    let old = sibling(home, "replaced");
    let had_home = home.exists();
    if had_home {
        std::fs::rename(home, &old).with_context(|| format!("moving {} aside", home.display()))?;
    }
    if let Err(e) = std::fs::rename(staging, home) {
        if had_home {
            let _ = std::fs::rename(&old, home);
        }
        return Err(e).with_context(|| format!("moving the restored state into {}", home.display()));
    }
    // The renames are durable only once their directory is: without this a
    // crash could bring back the old home, or no home, after the node has
    // answered that the restore is done.
    crate::durable::sync_dir(crate::durable::parent_of(home))?;
    if had_home {
        std::fs::remove_dir_all(&old).with_context(|| format!("removing the replaced home {}", old.display()))?;
    }
    Ok(())
}

/// Makes the decoder for a snapshot's plugin: normally the plugin itself.
pub type DecoderChoice = fn(&Plugin, &[(String, String)]) -> Result<Box<dyn ChunkDecoder>, PluginError>;

/// The plugin's own reader, in its sandbox.
pub fn plugin_decoder(plugin: &Plugin, params: &[(String, String)]) -> Result<Box<dyn ChunkDecoder>, PluginError> {
    Ok(Box::new(plugin.reader(params)?))
}

/// Finishes a swap a killed process left half done: the home moved aside but
/// the new one not yet in place means the old home comes back; both present
/// means only the removal of the old one was left.
pub fn recover_interrupted_swap(home: &Path) -> anyhow::Result<()> {
    let old = sibling(home, "replaced");
    if !old.exists() {
        return Ok(());
    }
    if home.exists() {
        std::fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))
    } else {
        std::fs::rename(&old, home).with_context(|| format!("putting {} back as {}", old.display(), home.display()))
    }
}

/// Refuses to replace a directory that is not a state home: a mistyped
/// `--home` must never cost a user their files.
/// Returns the layout of the home being replaced (`None` when there is none).
fn check_replaceable(home: &Path) -> Result<Option<StoreKind>, RestoreError> {
    if is_vacant(home) {
        return Ok(None);
    }
    detect(home)
        .map(Some)
        .map_err(|e| RestoreError::Target(format!("{e:#}; refusing to replace it")))
}

/// Restores the snapshot in `dir` into `home`, trusting only `trusted` as the
/// app hash. On any failure `home` is left exactly as it was.
pub fn restore_dir(
    dir: &Path,
    home: &Path,
    trusted: [u8; 32],
    registry: &PluginRegistry,
    progress: &ProgressBar,
) -> Result<RestoreSummary, RestoreError> {
    restore_dir_with(dir, home, None, trusted, registry, plugin_decoder, progress)
}

/// [`restore_dir`] with a choice of layout (`None`: the replaced home's, or
/// [`StoreKind::default`] for a new home) and of decoder (benchmarks use the
/// native codec).
pub fn restore_dir_with(
    dir: &Path,
    home: &Path,
    kind: Option<StoreKind>,
    trusted: [u8; 32],
    registry: &PluginRegistry,
    make_decoder: DecoderChoice,
    progress: &ProgressBar,
) -> Result<RestoreSummary, RestoreError> {
    recover_interrupted_swap(home).map_err(RestoreError::Store)?;
    let kind = kind.or(check_replaceable(home)?).unwrap_or_default();
    let snap = SnapshotDir::open(dir).map_err(|e| RestoreError::Manifest(format!("{e:#}")))?;
    let manifest = snap.manifest().map_err(|e| RestoreError::Manifest(format!("{e:#}")))?;
    // The first chunks of a self-describing snapshot are its plugin: read
    // once, used to admit the snapshot, then applied like any chunk.
    let mut plugin_parts = Vec::new();
    let admitted = match admit(manifest, trusted, registry)? {
        Admission::Ready(a) => a,
        Admission::AwaitingPlugin(pending) => {
            let mut left = pending.manifest().snapshot_bytes;
            for index in 0..pending.manifest().plugin_chunks() {
                let part = snap
                    .read_chunk(index, left)
                    .map_err(|e| RestoreError::Unreadable(format!("{e:#}")))?;
                left = left.saturating_sub(part.len() as u64);
                plugin_parts.push(part);
            }
            pending.with_plugin(registry, &plugin_parts.concat())?
        }
    };
    let mut plugin_parts = plugin_parts.into_iter();
    let decoder = make_decoder(admitted.plugin(), &admitted.manifest().params)?;
    let staging = staging_path(home);
    let chunks = admitted.manifest().chunks.len() as u32;
    progress.set_length(chunks as u64);
    let mut restorer = Restorer::begin(admitted, decoder, &staging, kind)?;
    for index in 0..chunks {
        let chunk = match plugin_parts.next() {
            Some(part) => part,
            None => snap
                .read_chunk(index, restorer.snapshot_bytes_left())
                .map_err(|e| RestoreError::Unreadable(format!("{e:#}")))?,
        };
        restorer.apply_chunk(index, &chunk)?;
        progress.inc(1);
    }
    let summary = restorer.finish()?;
    swap_into_place(&summary.staging, home).map_err(RestoreError::Store)?;
    Ok(summary)
}
