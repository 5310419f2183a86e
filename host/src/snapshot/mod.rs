//! Snapshots: the manifest, their directories, and creating, verifying and
//! restoring them.
//!
//! The host, not the plugin, makes a snapshot trustworthy: it hashes every
//! chunk into the manifest, checks each chunk before the plugin sees it,
//! requires entries in strictly ascending key order, recomputes the state root
//! while writing into a staging home, and swaps that home in only when the root
//! equals the trusted app hash. `admit` decides whether a manifest may be
//! restored at all, for the network and the offline restore alike.

mod admit;
pub mod approval;
mod codec;
mod create;
mod entries;
mod frame;
mod layout;
mod manifest;
#[cfg(feature = "native-codecs")]
pub mod native;
mod restore;
mod verify;

pub use admit::{admit, Admission, Admitted, AwaitingPlugin};
pub use approval::{Approval, ApprovalError, PLUGIN_PART_BYTES};
pub use codec::{ChunkDecoder, ChunkEncoder, MAX_CHUNK_ENTRY_BYTES};
pub use create::{create, Codec, CreateOptions, CreateReport};
pub use layout::{list_snapshots, SnapshotDir};
pub(crate) use layout::{manifest_path, TMP_PREFIX};
pub use manifest::{Manifest, PluginRef, MANIFEST_VERSION, MAX_CHUNK_BYTES, MAX_METADATA_BYTES};
pub use restore::{
    plugin_decoder, recover_interrupted_swap, restore_dir, restore_dir_with, staging_path, swap_into_place,
    DecoderChoice, RestoreError, RestoreSummary, Restorer,
};
pub use verify::{verify, VerifyReport};
