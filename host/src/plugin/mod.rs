//! Everything the host does with a format plugin: finding it (`registry`),
//! running it under hard limits in a sandbox (`runtime`, `sandbox`, `limits`)
//! and checking its conformance (`check`).
//!
//! A plugin is a WebAssembly component exporting `statesnap:plugin/format`
//! (see `wit/plugin.wit`). It is identified by the SHA-256 of its bytes and
//! compiled once per process. Every call into it is bounded by fuel, a memory
//! cap and an output cap; a trap or an exhausted limit becomes a
//! [`PluginError`] naming the plugin, never a crash of the host.

pub mod check;
mod error;
mod limits;
mod registry;
mod runtime;
mod sandbox;

pub use error::{PluginError, RejectKind};
pub use limits::Limits;
pub use registry::{PluginRegistry, BUILT_IN};
pub use runtime::{Description, Plugin, PluginEngine, PluginReader, PluginWriter, CONTRACT_VERSION};

/// Hex SHA-256 of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha256(bytes))
}

/// SHA-256 of some bytes.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).into()
}
