//! Self-describing snapshots: a snapshot in a governance-approved format ships
//! its plugin with a proof that the chain approved it.
//!
//! The plugin's wasm is the snapshot's first chunks (chunk 0, and more for a
//! plugin over [`PLUGIN_PART_BYTES`]: the wasm cut into chunks of that size),
//! and its manifest carries a Merkle membership proof that the state at the
//! snapshot's height approves the plugin's SHA-256 for the snapshot's format
//! (`statesnap.formats:<format>` in the registry, `protocol::gov_records`).
//!
//! A restoring node that lacks the plugin checks the proof against the app
//! hash its light client trusts before it runs anything: only a plugin the
//! chain itself approved can ever run, wherever the snapshot came from.

use serde::{Deserialize, Serialize};

use crate::protocol::gov_records::{format_key, FormatApproval};
use crate::store::treap::MembershipProof;
use crate::store::value::canonical_bytes;

/// Bytes of shipped plugin per chunk: like a plugin's own chunks, CometBFT's
/// 16,000,000-byte chunk message less room for the message's framing.
pub const PLUGIN_PART_BYTES: usize = 15_990_000;

/// The proof a self-describing manifest carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// The registry key: `statesnap.formats:<format>`.
    pub key: String,
    /// Its stored value at the snapshot's height (a [`FormatApproval`]).
    pub stored: String,
    /// Membership of (key, value) in the state whose root is the app hash.
    pub proof: MembershipProof,
    /// Length of the shipped plugin's wasm: it fills the first
    /// [`Approval::plugin_chunks`] chunks.
    pub plugin_bytes: u64,
}

/// Why a shipped plugin is refused. Each is decided before the plugin runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalError {
    #[error("the approval proof is for {got:?}, not {expected:?}: it does not approve this snapshot's format")]
    OtherFormat { expected: String, got: String },
    #[error(
        "the approval proof does not verify against the trusted app hash {}: it is forged or from another state",
        hex::encode(trusted)
    )]
    Forged { trusted: [u8; 32] },
    #[error("the proven approval record is malformed: {0}")]
    Record(String),
    /// `approved` is the SHA-256 as the state's record gives it (hex text).
    #[error(
        "the state approves plugin {approved} for format {format}, but the snapshot names plugin {}",
        hex::encode(named)
    )]
    OtherPlugin {
        format: u32,
        approved: String,
        named: [u8; 32],
    },
    #[error("format {format} activates at height {activation}, after the snapshot's height {height}")]
    NotYetActive { format: u32, activation: u64, height: u64 },
    #[error(
        "chunk 0 must be the shipped plugin (SHA-256 {}), but the manifest lists {} for it",
        hex::encode(plugin),
        hex::encode(listed)
    )]
    PluginChunk { plugin: [u8; 32], listed: [u8; 32] },
    #[error("the manifest ships a plugin of {bytes} bytes in {chunks} chunks, but lists {listed} chunks in all: no state chunk follows")]
    NoStateChunks { bytes: u64, chunks: u32, listed: usize },
}

/// What a self-describing manifest claims about its plugin
/// (`Manifest::verify_approval` makes it from the manifest).
pub struct Claim<'a> {
    pub format: u32,
    pub height: u64,
    pub plugin_sha256: &'a [u8; 32],
    /// The SHA-256 the manifest lists for each chunk.
    pub chunks: &'a [[u8; 32]],
}

impl Approval {
    /// How many chunks the shipped plugin fills (1 up to [`PLUGIN_PART_BYTES`]).
    pub fn plugin_chunks(&self) -> u32 {
        self.plugin_bytes.div_ceil(PLUGIN_PART_BYTES as u64).max(1) as u32
    }

    /// Checks the approval of `claim` against `trusted`, the app hash of the
    /// snapshot's height. On success the plugin claimed (which chunk 0 must
    /// hash to) is approved by the chain for this format.
    pub fn verify(&self, claim: &Claim<'_>, trusted: &[u8; 32]) -> Result<FormatApproval, ApprovalError> {
        verify(claim, self, trusted)
    }
}

fn verify(manifest: &Claim<'_>, approval: &Approval, trusted: &[u8; 32]) -> Result<FormatApproval, ApprovalError> {
    let expected = format_key(manifest.format);
    if approval.key != expected {
        return Err(ApprovalError::OtherFormat {
            expected,
            got: approval.key.clone(),
        });
    }
    let canonical = match canonical_bytes(&approval.stored) {
        Ok(Some(c)) => c,
        Ok(None) => return Err(ApprovalError::Record("it is null".into())),
        Err(e) => return Err(ApprovalError::Record(e.to_string())),
    };
    if !approval.proof.verify(&approval.key, &canonical, trusted) {
        return Err(ApprovalError::Forged { trusted: *trusted });
    }
    let record =
        FormatApproval::parse(&approval.key, &approval.stored).map_err(|e| ApprovalError::Record(e.to_string()))?;
    if record.sha256 != hex::encode(manifest.plugin_sha256) {
        return Err(ApprovalError::OtherPlugin {
            format: manifest.format,
            approved: record.sha256,
            named: *manifest.plugin_sha256,
        });
    }
    if record.activation_height > manifest.height {
        return Err(ApprovalError::NotYetActive {
            format: manifest.format,
            activation: record.activation_height,
            height: manifest.height,
        });
    }
    let chunks = approval.plugin_chunks();
    if manifest.chunks.len() <= chunks as usize {
        return Err(ApprovalError::NoStateChunks {
            bytes: approval.plugin_bytes,
            chunks,
            listed: manifest.chunks.len(),
        });
    }
    // A plugin in one chunk is that chunk; one in several is checked whole
    // once they have arrived (`admit::AwaitingPlugin::with_plugin`).
    // (The manifest lists more chunks than the plugin fills: chunk 0 is there.)
    if chunks == 1 && &manifest.chunks[0] != manifest.plugin_sha256 {
        return Err(ApprovalError::PluginChunk {
            plugin: *manifest.plugin_sha256,
            listed: manifest.chunks[0],
        });
    }
    Ok(record)
}
