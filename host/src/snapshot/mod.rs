//! Snapshots: the manifest, their directories, and creating, verifying and
//! restoring them.
//!
//! The host, not the plugin, makes a snapshot trustworthy: it hashes every
//! chunk into the manifest, checks each chunk before the plugin sees it,
//! requires entries in strictly ascending key order, recomputes the state root
//! while writing into a staging home, and swaps that home in only when the root
//! equals the trusted app hash. One [`RestoreSession`] owns a restore from
//! the manifest to the swap, whoever drives it (the node's state sync, the
//! offline restore); `admit` decides whether a manifest may be restored at all.

mod admit;
pub mod approval;
mod codec;
mod create;
mod entries;
mod frame;
mod manifest;
#[cfg(feature = "native-codecs")]
pub mod native;
mod restore;
mod restore_error;
mod snapshot_dir;
mod staging;
mod verify;

pub use approval::{Approval, ApprovalError, PLUGIN_PART_BYTES};
pub use codec::{ChunkDecoder, ChunkEncoder, Codec, MAX_CHUNK_ENTRY_BYTES};
pub use create::{create, CreateOptions, CreateReport};
pub use entries::EntryError;
pub use manifest::ManifestError;
pub use manifest::{
    Manifest, PluginRef, MANIFEST_VERSION, MANIFEST_VERSION_BLOCK_TIME, MAX_CHUNK_BYTES, MAX_METADATA_BYTES,
};
pub use restore::{
    plugin_decoder, restore_dir, Applied, DecoderChoice, RestoreOptions, RestoreSession, RestoreSummary, SnapshotOffer,
    Verified,
};
pub use restore_error::{Fault, RestoreError, SnapshotShape};
#[cfg(feature = "test-hooks")]
pub(crate) use snapshot_dir::manifest_path;
#[cfg(feature = "test-hooks")]
pub(crate) use snapshot_dir::TMP_PREFIX;
pub use snapshot_dir::{
    list_snapshots, prune, remove_unfinished, serve_chunk, SnapshotDir, SnapshotFile, SnapshotFileError,
};
pub(crate) use staging::swap_into_place;
pub use staging::{recover_interrupted_swap, staging_path};
pub use verify::{verify, VerifyReport};
