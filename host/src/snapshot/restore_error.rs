//! Why a restore was refused, and whose fault that is.
//!
//! Every case leaves the live home untouched. [`RestoreError::fault`] sorts
//! the cases into what a caller does next: refetch a chunk from another
//! sender, drop the snapshot, skip its format, or stop (this node's own
//! failure). State sync maps a fault to its ABCI answer; the offline restore
//! just reports the error.

use std::path::PathBuf;

use super::approval::ApprovalError;
use super::entries::EntryError;
use super::manifest::{ManifestError, MAX_CHUNK_BYTES};
use crate::plugin::PluginError;
use crate::store::range_proof::ProofError;

/// Height, format and chunk count, as an offer or a manifest states them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotShape {
    pub height: u64,
    pub format: u32,
    pub chunks: u64,
}

impl std::fmt::Display for SnapshotShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "height {}, format {}, {} chunks",
            self.height, self.format, self.chunks
        )
    }
}

/// Why a restore was refused.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    // The offer and its manifest.
    #[error("the snapshot's manifest is invalid: {0}")]
    Manifest(#[from] ManifestError),
    #[error(
        "the offered snapshot hash {} is not the SHA-256 of its metadata ({})",
        hex::encode(offered),
        hex::encode(actual)
    )]
    OfferedHash { offered: Vec<u8>, actual: [u8; 32] },
    #[error("the manifest says {manifest}, but the offer says {offered}")]
    OfferMismatch {
        manifest: SnapshotShape,
        offered: SnapshotShape,
    },
    #[error(
        "the snapshot claims app hash {}, but the trusted app hash is {}: refusing it",
        hex::encode(claimed),
        hex::encode(trusted)
    )]
    AppHashMismatch { claimed: [u8; 32], trusted: [u8; 32] },
    #[error("the manifest says format {manifest}, but its plugin {plugin} makes format {plugin_format}")]
    FormatMismatch {
        manifest: u32,
        plugin: String,
        plugin_format: u32,
    },
    #[error("the snapshot's plugin is refused before it runs: {0}")]
    Approval(#[from] ApprovalError),
    #[error(
        "the snapshot was made by plugin {name} {version} (SHA-256 {}) for format {format}, which this host does not have \
         and the snapshot does not ship with an approval; give the plugin's .wasm (--plugin FILE.wasm, or \
         plugin_dir for a node)",
        hex::encode(sha256)
    )]
    PluginUnavailable {
        name: String,
        version: String,
        sha256: [u8; 32],
        format: u32,
    },
    #[error("the snapshot's plugin cannot be loaded here: {0:#}")]
    PluginLoad(anyhow::Error),
    #[error(
        "the shipped plugin hashes to {}, not the approved {}: the snapshot is forged",
        hex::encode(got),
        hex::encode(expected)
    )]
    ShippedPlugin { expected: [u8; 32], got: [u8; 32] },
    #[error(transparent)]
    Plugin(#[from] PluginError),

    // Chunks.
    #[error("chunk {index} arrived, but chunk {expected} is the next one expected")]
    ChunkOrder { index: u32, expected: u32 },
    #[error(
        "chunk {index} has SHA-256 {}, but the manifest lists {}: the chunk is corrupt or forged; fetch it again \
         from another peer",
        hex::encode(got),
        hex::encode(expected)
    )]
    ChunkHash {
        index: u32,
        expected: [u8; 32],
        got: [u8; 32],
    },
    #[error(
        "chunk {index} is {len} bytes, over the {limit} bytes it may have (a chunk is at most {MAX_CHUNK_BYTES} \
         bytes, and the manifest's snapshot size leaves no more): refused unread"
    )]
    Oversized { index: u32, len: u64, limit: u64 },
    #[error(
        "chunk {index} matches the manifest, but {source}: the snapshot is forged (its manifest is the serving \
         peer's word); none of this chunk's entries were written"
    )]
    Proof { index: u32, source: ProofError },
    #[error("chunk {chunk}: {source}")]
    Entry { chunk: u32, source: EntryError },
    #[error("chunk {chunk}: entries are not in strictly ascending key order: {key:?} came after {previous:?}")]
    EntryOrder { chunk: u32, previous: String, key: String },
    #[error(
        "chunk {chunk} takes the state past the manifest's {manifest_entries} entries of {manifest_bytes} bytes (at \
         {entries} entries of {bytes} bytes): the snapshot lies about its size; stopped before writing more"
    )]
    PastManifest {
        chunk: u32,
        entries: u64,
        bytes: u64,
        manifest_entries: u64,
        manifest_bytes: u64,
    },
    #[error(
        "chunk {chunk} decodes to more than {limit} bytes of entries, more than is held before a chunk's proof is \
         checked (no honest snapshot has such a chunk)"
    )]
    ChunkEntriesTooLarge { chunk: u32, limit: usize },

    // The end.
    #[error("only {applied} of {total} chunks were applied")]
    Incomplete { applied: u32, total: u32 },
    #[error(
        "the manifest promises {manifest_entries} entries of {manifest_bytes} bytes but the chunks held {entries} of \
         {bytes}"
    )]
    CountMismatch {
        entries: u64,
        bytes: u64,
        manifest_entries: u64,
        manifest_bytes: u64,
    },
    #[error(
        "the restored state's root is {}, not the trusted app hash {}: the snapshot does not hold the trusted state, \
         so nothing was kept",
        hex::encode(got),
        hex::encode(expected)
    )]
    RootMismatch { expected: [u8; 32], got: [u8; 32] },

    // This host: its files, its disk.
    #[error("the snapshot's files cannot be used: {0:#}")]
    Unreadable(anyhow::Error),
    #[error("cannot restore here: {reason:#}; refusing to replace {}", home.display())]
    NotAHome { home: PathBuf, reason: anyhow::Error },
    #[error(
        "cannot restore here: the snapshot's state is {needed} bytes of keys and values, but only {free} bytes are \
         free on the file system of {}; free space there (or restore elsewhere) and try again",
        dir.display()
    )]
    NoSpace { needed: u64, free: u64, dir: PathBuf },
    #[error("writing the staging home failed: {0:#}")]
    Store(anyhow::Error),
}

/// Whose fault a refused restore is, and so what to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// This chunk's bytes are wrong (hash, size): fetch it again, from
    /// another sender; the snapshot may still be good.
    BadChunk,
    /// A chunk out of turn: send `expected` next.
    OutOfTurn { expected: u32 },
    /// A chunk that matches the manifest is proven not to be the trusted
    /// state: whoever made the snapshot forged it; drop it and its sender.
    Forged,
    /// The snapshot cannot be restored (its manifest, plugin or entries);
    /// try another.
    BadSnapshot,
    /// No plugin for its format here: skip this format.
    UnknownFormat,
    /// This host failed (its disk, its files): stop; no peer is to blame.
    Local,
}

impl RestoreError {
    /// Whose fault this is.
    pub fn fault(&self) -> Fault {
        use RestoreError::*;
        match self {
            ChunkHash { .. } | Oversized { .. } => Fault::BadChunk,
            ChunkOrder { expected, .. } => Fault::OutOfTurn { expected: *expected },
            Proof { .. } => Fault::Forged,
            PluginUnavailable { .. } | PluginLoad(_) => Fault::UnknownFormat,
            Unreadable(_) | NotAHome { .. } | NoSpace { .. } | Store(_) => Fault::Local,
            Manifest(_)
            | OfferedHash { .. }
            | OfferMismatch { .. }
            | AppHashMismatch { .. }
            | FormatMismatch { .. }
            | Approval(_)
            | ShippedPlugin { .. }
            | Plugin(_)
            | Entry { .. }
            | EntryOrder { .. }
            | PastManifest { .. }
            | ChunkEntriesTooLarge { .. }
            | Incomplete { .. }
            | CountMismatch { .. }
            | RootMismatch { .. } => Fault::BadSnapshot,
        }
    }
}
