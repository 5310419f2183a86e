//! Restoring a snapshot: one [`RestoreSession`] owns the whole of it, from
//! the manifest to the swap, for every caller (the node's state sync, the
//! offline `snapshot restore`, a proxy in front of another app).
//!
//! 1. [`RestoreSession::begin`] admits the manifest against the trusted app
//!    hash (`admit`) and, when its plugin is here, starts the staging home.
//! 2. [`RestoreSession::apply`] takes chunks in order. Each is checked
//!    against the manifest (turn, size, SHA-256) before anything reads it.
//!    The leading chunks of a self-describing snapshot are its plugin: held
//!    until complete, checked whole against the approved SHA-256, then
//!    compiled. A state chunk is decoded by the plugin, its entries checked
//!    (consensus keys, canonical values, strictly ascending) and held until
//!    the chunk's range proof shows them to be the trusted state's first
//!    entries; only then are they written. A forged snapshot is caught at its
//!    first state chunk.
//! 3. [`RestoreSession::finish`] requires every chunk, the manifest's counts
//!    and a state root equal to the trusted app hash: a [`Verified`] staging
//!    home, which [`Verified::install`] swaps in for the live home.
//!
//! Dropping a session or an uninstalled [`Verified`] removes the staging
//! home; the live home is untouched until the swap.

use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use sha2::{Digest, Sha256};

use super::admit::{admit, Admission, Admitted, AwaitingPlugin};
use super::codec::{ChunkDecoder, DECODE_BATCH_BYTES, MAX_CHUNK_ENTRY_BYTES};
use super::entries::{state_entry, EntryError};
use super::frame;
use super::manifest::{Manifest, MAX_CHUNK_BYTES};
use super::restore_error::{RestoreError, SnapshotShape};
use super::snapshot_dir::SnapshotDir;
use super::staging::{recover_interrupted_swap, replaceable_layout, staging_path, StagingHome, TreapBatch, WriteBatch};
use crate::plugin::{Plugin, PluginEngine, PluginError, PluginRegistry};
use crate::store::root::{leaf_hash, priority, RootBuilder, RootError};
use crate::store::treap::MerkleTreap;
use crate::store::StoreKind;

/// Makes the decoder for a snapshot's plugin: normally the plugin itself.
pub type DecoderChoice = fn(&Plugin, &[(String, String)]) -> Result<Box<dyn ChunkDecoder>, PluginError>;

/// The plugin's own reader, in its sandbox.
pub fn plugin_decoder(plugin: &Plugin, params: &[(String, String)]) -> Result<Box<dyn ChunkDecoder>, PluginError> {
    Ok(Box::new(plugin.reader(params)?))
}

/// How a restore writes.
#[derive(Clone, Copy)]
pub struct RestoreOptions {
    /// The staging home's layout; `None`: the replaced home's, or
    /// [`StoreKind::default`] for a new home.
    pub store: Option<StoreKind>,
    /// Also build the restored state's Merkle treap (what a node keeps to
    /// update its app hash block by block), in the same pass.
    pub treap: bool,
    /// The decoder (benchmarks use the native codec).
    pub decoder: DecoderChoice,
    /// Only check: every chunk, entry, proof and the root are verified as in
    /// a restore, but no staging home is written (`snapshot verify` of a
    /// remote snapshot); the [`Verified`] it ends with cannot be installed.
    pub check_only: bool,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            store: None,
            treap: false,
            decoder: plugin_decoder,
            check_only: false,
        }
    }
}

/// A snapshot as CometBFT offers it (OfferSnapshot's fields).
#[derive(Debug, Clone, Copy)]
pub struct SnapshotOffer<'a> {
    pub height: u64,
    pub format: u32,
    pub chunks: u32,
    pub hash: &'a [u8],
    pub metadata: &'a [u8],
}

impl SnapshotOffer<'_> {
    /// The offered manifest, once it decodes, hashes to the offered hash and
    /// agrees with the offer's height, format and chunk count.
    pub fn manifest(&self) -> Result<Manifest, RestoreError> {
        let manifest = Manifest::decode(self.metadata)?;
        let actual = manifest.hash();
        if actual.as_slice() != self.hash {
            return Err(RestoreError::OfferedHash {
                offered: self.hash.to_vec(),
                actual,
            });
        }
        let stated = SnapshotShape {
            height: manifest.height,
            format: manifest.format,
            chunks: manifest.chunks.len() as u64,
        };
        let offered = SnapshotShape {
            height: self.height,
            format: self.format,
            chunks: u64::from(self.chunks),
        };
        if stated != offered {
            return Err(RestoreError::OfferMismatch {
                manifest: stated,
                offered,
            });
        }
        Ok(manifest)
    }
}

/// What [`RestoreSession::apply`] made of a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Applied (or applied before); `next` is the chunk wanted next.
    Accepted { next: u32 },
    /// With this chunk the shipped plugin is complete, approved and compiled.
    PluginLoaded { next: u32 },
    /// Every chunk is in: call [`RestoreSession::finish`].
    Complete,
}

/// A restore in progress.
pub struct RestoreSession {
    manifest: Manifest,
    home: PathBuf,
    kind: StoreKind,
    options: RestoreOptions,
    next: u32,
    /// Bytes of the chunks accepted so far.
    chunk_bytes: u64,
    stage: Stage,
}

enum Stage {
    /// Self-describing snapshot, plugin not local: its first chunks bring it.
    AwaitingPlugin {
        pending: Box<AwaitingPlugin>,
        engine: PluginEngine,
        parts: Vec<Vec<u8>>,
    },
    Decoding(Box<Decoding>),
}

/// The state side of a restore: decoder, root, counts, the staging home.
struct Decoding {
    decoder: Box<dyn ChunkDecoder>,
    root: RootBuilder,
    entries: u64,
    state_bytes: u64,
    /// The current chunk's checked entries, held until its proof is checked.
    held: WriteBatch,
    held_hashes: TreapBatch,
    held_bytes: usize,
    staging: StagingHome,
}

impl RestoreSession {
    /// Starts restoring `manifest` into `home`, trusting only `trusted` as
    /// its app hash. Refuses a manifest that does not claim `trusted`, whose
    /// plugin is neither here nor shipped with a proven approval, or a
    /// `home` that exists but is not a state home.
    pub fn begin(
        manifest: Manifest,
        trusted: [u8; 32],
        registry: &PluginRegistry,
        home: &Path,
        options: RestoreOptions,
    ) -> Result<Self, RestoreError> {
        recover_interrupted_swap(home).map_err(RestoreError::Store)?;
        let kind = match options.store {
            Some(kind) => {
                replaceable_layout(home)?;
                kind
            }
            None => replaceable_layout(home)?.unwrap_or_default(),
        };
        let (manifest, stage) = match admit(manifest, trusted, registry)? {
            Admission::Ready(admitted) => {
                let manifest = admitted.manifest().clone();
                let decoding = Decoding::start(admitted, home, kind, &options)?;
                (manifest, Stage::Decoding(Box::new(decoding)))
            }
            Admission::AwaitingPlugin(pending) => (
                pending.manifest().clone(),
                Stage::AwaitingPlugin {
                    pending: Box::new(pending),
                    engine: registry.engine().clone(),
                    parts: Vec::new(),
                },
            ),
        };
        Ok(RestoreSession {
            manifest,
            home: home.to_path_buf(),
            kind,
            options,
            next: 0,
            chunk_bytes: 0,
            stage,
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The chunk wanted next, or `None` once every chunk is in.
    pub fn wanted(&self) -> Option<u32> {
        (self.next < self.chunk_count()).then_some(self.next)
    }

    fn chunk_count(&self) -> u32 {
        self.manifest.chunks.len() as u32
    }

    /// Whether the snapshot's plugin is still to arrive in its first chunks.
    pub fn awaiting_plugin(&self) -> bool {
        matches!(self.stage, Stage::AwaitingPlugin { .. })
    }

    /// Entries decoded and proven so far.
    pub fn entries(&self) -> u64 {
        match &self.stage {
            Stage::Decoding(d) => d.entries,
            Stage::AwaitingPlugin { .. } => 0,
        }
    }

    /// Wasm fuel the plugin has spent on this restore so far.
    pub fn fuel_used(&self) -> u64 {
        match &self.stage {
            Stage::Decoding(d) => d.decoder.fuel_used(),
            Stage::AwaitingPlugin { .. } => 0,
        }
    }

    /// Bytes the manifest leaves for the chunks still to come: the bound on
    /// the next chunk's size (read no more than this from an untrusted source).
    pub fn bytes_left(&self) -> u64 {
        self.manifest.snapshot_bytes.saturating_sub(self.chunk_bytes)
    }

    /// Applies chunk `index`. A chunk with a wrong hash or size is refused
    /// before anything reads it and leaves the session as it was, so the
    /// right chunk can still be applied; so does a chunk out of turn. Any
    /// other error ends the restore: drop the session.
    pub fn apply(&mut self, index: u32, chunk: &[u8]) -> Result<Applied, RestoreError> {
        if index < self.next {
            return Ok(Applied::Accepted { next: self.next });
        }
        self.check(index, chunk)?;
        self.chunk_bytes += chunk.len() as u64;
        self.next = index + 1;
        let mut loaded = false;
        if index < self.manifest.plugin_chunks() {
            if let Stage::AwaitingPlugin { parts, .. } = &mut self.stage {
                parts.push(chunk.to_vec());
                if self.next == self.manifest.plugin_chunks() {
                    self.load_plugin()?;
                    loaded = true;
                }
            }
            // A local plugin: its shipped copy is checked and skipped.
        } else {
            let Stage::Decoding(decoding) = &mut self.stage else {
                unreachable!("the plugin is loaded by its last chunk, before any state chunk")
            };
            decoding.apply(index, chunk, &self.manifest)?;
        }
        Ok(match self.wanted() {
            None => Applied::Complete,
            Some(next) if loaded => Applied::PluginLoaded { next },
            Some(next) => Applied::Accepted { next },
        })
    }

    /// Turn, size bound and SHA-256 of chunk `index`.
    fn check(&self, index: u32, chunk: &[u8]) -> Result<(), RestoreError> {
        let Some(expected) = self.manifest.chunks.get(index as usize).filter(|_| index == self.next) else {
            return Err(RestoreError::ChunkOrder {
                index,
                expected: self.next,
            });
        };
        let limit = self.bytes_left().min(MAX_CHUNK_BYTES as u64);
        if chunk.len() as u64 > limit {
            return Err(RestoreError::Oversized {
                index,
                len: chunk.len() as u64,
                limit,
            });
        }
        let got: [u8; 32] = Sha256::digest(chunk).into();
        if &got != expected {
            return Err(RestoreError::ChunkHash {
                index,
                expected: *expected,
                got,
            });
        }
        Ok(())
    }

    /// The shipped plugin's parts are all here: the whole must hash to the
    /// approved SHA-256 before it is compiled.
    fn load_plugin(&mut self) -> Result<(), RestoreError> {
        let Stage::AwaitingPlugin { pending, engine, parts } = &mut self.stage else {
            return Ok(());
        };
        let admitted = pending.with_plugin(engine, &parts.concat())?;
        tracing::info!(
            plugin = admitted.plugin().label(),
            chunks = parts.len(),
            "restore: loaded the approved plugin shipped in the snapshot"
        );
        let decoding = Decoding::start(admitted, &self.home, self.kind, &self.options)?;
        self.stage = Stage::Decoding(Box::new(decoding));
        Ok(())
    }

    /// Ends the restore after the last chunk: the manifest's counts, and the
    /// state root must equal the trusted app hash.
    pub fn finish(self) -> Result<Verified, RestoreError> {
        let total = self.chunk_count();
        let Stage::Decoding(mut d) = self.stage else {
            return Err(RestoreError::Incomplete {
                applied: self.next,
                total,
            });
        };
        if self.next != total {
            return Err(RestoreError::Incomplete {
                applied: self.next,
                total,
            });
        }
        d.decoder.finish()?;
        d.release()?;
        let treap = d.staging.finish()?;
        let root = std::mem::take(&mut d.root).finish();
        if root != self.manifest.app_hash {
            return Err(RestoreError::RootMismatch {
                expected: self.manifest.app_hash,
                got: root,
            });
        }
        if d.entries != self.manifest.entries || d.state_bytes != self.manifest.state_bytes {
            return Err(RestoreError::CountMismatch {
                entries: d.entries,
                bytes: d.state_bytes,
                manifest_entries: self.manifest.entries,
                manifest_bytes: self.manifest.state_bytes,
            });
        }
        Ok(Verified {
            summary: RestoreSummary {
                root,
                entries: d.entries,
                state_bytes: d.state_bytes,
                chunks: total,
                home: self.home,
            },
            manifest: self.manifest,
            treap,
            staging: d.staging,
        })
    }
}

impl Decoding {
    fn start(admitted: Admitted, home: &Path, kind: StoreKind, options: &RestoreOptions) -> Result<Self, RestoreError> {
        let decoder = (options.decoder)(admitted.plugin(), &admitted.manifest().params)?;
        let staging = if options.check_only {
            StagingHome::discarding(&staging_path(home))
        } else {
            StagingHome::create(
                &staging_path(home),
                kind,
                admitted.manifest().state_bytes,
                options.treap,
            )?
        };
        Ok(Decoding {
            decoder,
            root: RootBuilder::new(),
            entries: 0,
            state_bytes: 0,
            held: Vec::new(),
            held_hashes: Vec::new(),
            held_bytes: 0,
            staging,
        })
    }

    /// Decodes a state chunk whose bytes match the manifest, checks its
    /// entries and its range proof, and only then writes them.
    fn apply(&mut self, index: u32, chunk: &[u8], manifest: &Manifest) -> Result<(), RestoreError> {
        let (plugin_bytes, proof) = frame::open(chunk).map_err(|source| RestoreError::Proof { index, source })?;
        self.decoder.feed(plugin_bytes)?;
        while let Some(batch) = self.decoder.next_batch(DECODE_BATCH_BYTES)? {
            self.hold(index, &batch, manifest)?;
        }
        proof
            .verify(&self.root, &manifest.app_hash)
            .map_err(|source| RestoreError::Proof { index, source })?;
        self.release()
    }

    /// Checks a batch of chunk `chunk`'s entries and holds them until its proof is checked.
    fn hold(&mut self, chunk: u32, batch: &[u8], manifest: &Manifest) -> Result<(), RestoreError> {
        for item in statesnap_plugin_sdk::entries(batch) {
            let (key, value) = item.map_err(|e| RestoreError::Entry {
                chunk,
                source: EntryError::Batch(e.to_string()),
            })?;
            let entry = state_entry(key, value).map_err(|source| RestoreError::Entry { chunk, source })?;
            let (key, value) = (entry.key, entry.value);
            let prio = priority(key.as_bytes());
            let leaf = leaf_hash(key.as_bytes(), &entry.canonical);
            match self.root.push_prioritized(key, prio, leaf) {
                Ok(()) => {}
                Err(RootError::OutOfOrder { previous, key }) => {
                    return Err(RestoreError::EntryOrder { chunk, previous, key })
                }
                Err(RootError::Value { key, source }) => {
                    return Err(RestoreError::Entry {
                        chunk,
                        source: EntryError::Value { key, source },
                    })
                }
            }
            self.entries += 1;
            self.state_bytes += (key.len() + value.len()) as u64;
            // A snapshot that holds more than its manifest says is refused
            // at once, before the excess reaches the disk.
            if self.entries > manifest.entries || self.state_bytes > manifest.state_bytes {
                return Err(RestoreError::PastManifest {
                    chunk,
                    entries: self.entries,
                    bytes: self.state_bytes,
                    manifest_entries: manifest.entries,
                    manifest_bytes: manifest.state_bytes,
                });
            }
            self.held_bytes += key.len() + value.len();
            if self.held_bytes > MAX_CHUNK_ENTRY_BYTES {
                return Err(RestoreError::ChunkEntriesTooLarge {
                    chunk,
                    limit: MAX_CHUNK_ENTRY_BYTES,
                });
            }
            if self.staging.builds_treap() {
                self.held_hashes.push((key.to_string(), prio, leaf));
            }
            self.held.push((key.to_string(), Some(value.to_string())));
        }
        Ok(())
    }

    /// Sends the held entries, now proven, to the staging home.
    fn release(&mut self) -> Result<(), RestoreError> {
        if self.held.is_empty() {
            return Ok(());
        }
        self.held_bytes = 0;
        let writes = std::mem::take(&mut self.held);
        let hashes = std::mem::take(&mut self.held_hashes);
        self.staging.send(writes, hashes)
    }
}

/// What a finished restore produced.
#[derive(Debug, Clone)]
pub struct RestoreSummary {
    pub root: [u8; 32],
    pub entries: u64,
    pub state_bytes: u64,
    pub chunks: u32,
    /// The home the state is (or will be, once installed) in.
    pub home: PathBuf,
}

/// A staging home holding the trusted state, not yet the live home.
pub struct Verified {
    manifest: Manifest,
    summary: RestoreSummary,
    treap: Option<MerkleTreap>,
    staging: StagingHome,
}

impl std::fmt::Debug for Verified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verified")
            .field("height", &self.manifest.height)
            .field("summary", &self.summary)
            .field("staging", &self.staging.path())
            .finish()
    }
}

impl Verified {
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn summary(&self) -> &RestoreSummary {
        &self.summary
    }

    /// The staging home, for records the caller keeps beside the state (a
    /// node's checkpoint) before [`install`](Self::install).
    pub fn staging(&self) -> &Path {
        self.staging.path()
    }

    /// The restored state's Merkle treap, when the session was asked for it
    /// ([`RestoreOptions::treap`]); taken once.
    pub fn take_treap(&mut self) -> Option<MerkleTreap> {
        self.treap.take()
    }

    /// Makes the staging home the live home: the old home is moved aside,
    /// the staging home renamed into its place, the directory synced, and
    /// the old home removed. On failure the old home is back in place.
    /// Close anything that holds the live home open first.
    pub fn install(self) -> Result<RestoreSummary, RestoreError> {
        self.staging.install(&self.summary.home)?;
        Ok(self.summary)
    }
}

/// Restores the snapshot in `dir` into `home`, trusting only `trusted` as the
/// app hash. On any failure `home` is left exactly as it was.
pub fn restore_dir(
    dir: &Path,
    home: &Path,
    trusted: [u8; 32],
    registry: &PluginRegistry,
    options: RestoreOptions,
    progress: &ProgressBar,
) -> Result<RestoreSummary, RestoreError> {
    let unreadable = |e: anyhow::Error| RestoreError::Unreadable(e);
    let snap = SnapshotDir::open(dir).map_err(unreadable)?;
    let manifest = Manifest::decode(&snap.manifest_bytes().map_err(unreadable)?)?;
    progress.set_length(manifest.chunks.len() as u64);
    let mut session = RestoreSession::begin(manifest, trusted, registry, home, options)?;
    while let Some(index) = session.wanted() {
        let chunk = snap.read_chunk(index, session.bytes_left()).map_err(unreadable)?;
        session.apply(index, &chunk)?;
        progress.inc(1);
    }
    session.finish()?.install()
}
