//! The snapshot manifest: what a snapshot holds and the SHA-256 of each chunk.
//! Its postcard encoding is CometBFT's snapshot `metadata`, and its SHA-256 is
//! the snapshot `hash`.

use serde::{Deserialize, Serialize};

use super::approval::{Approval, ApprovalError, Claim};
use crate::plugin::sha256;
use crate::protocol::gov_records::FormatApproval;
use crate::protocol::tx::MAX_UPLOADED_PLUGIN_BYTES;

/// The manifest layout version this host writes and reads (2 added `approval`;
/// 3: every state chunk ends with its range proof, see `frame`; 4: the
/// approval gives the shipped plugin's length, which may fill several chunks).
pub const MANIFEST_VERSION: u32 = 4;

/// The layout version of a manifest that also carries its block's time
/// (`block_time_nanos`, which a restored Xian home needs); the same as
/// [`MANIFEST_VERSION`] with that one field appended, so manifests without
/// it keep their bytes and hashes.
pub const MANIFEST_VERSION_BLOCK_TIME: u32 = 5;

/// CometBFT refuses snapshot advertisements over 4,000,000 bytes; the manifest
/// must leave room for the rest of the message.
pub const MAX_METADATA_BYTES: usize = 3_900_000;

/// CometBFT refuses chunk messages over 16,000,000 bytes, so no chunk of any
/// snapshot is larger: every chunk read is bounded by this.
pub const MAX_CHUNK_BYTES: usize = 16_000_000;

/// The plugin that made a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginRef {
    pub sha256: [u8; 32],
    pub name: String,
    pub version: String,
}

/// Everything a restoring node needs to check a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub chain_id: String,
    pub height: u64,
    /// The state root at `height`: what the snapshot must restore to.
    pub app_hash: [u8; 32],
    /// CometBFT snapshot format number (the plugin's).
    pub format: u32,
    pub plugin: PluginRef,
    /// The plugin parameters the snapshot was made with.
    pub params: Vec<(String, String)>,
    /// SHA-256 of each chunk, in order.
    pub chunks: Vec<[u8; 32]>,
    /// Number of entries (consensus keys) in the snapshot.
    pub entries: u64,
    /// Bytes of keys and stored values in the snapshot.
    pub state_bytes: u64,
    /// Bytes of all chunks together.
    pub snapshot_bytes: u64,
    /// Present when the plugin is approved by governance in the snapshot's
    /// state: the proof of that approval, and the first chunks are the
    /// plugin's wasm (a self-describing snapshot, see `approval`).
    pub approval: Option<Approval>,
    /// The time of block `height`, in nanoseconds since the Unix epoch, for
    /// an app that keeps it beside its state (Xian's block marker). Present
    /// exactly when `version` is [`MANIFEST_VERSION_BLOCK_TIME`]. Not covered
    /// by the app hash: the serving peer's word, like the rest of the
    /// manifest until the state is checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_time_nanos: Option<u64>,
}

impl Manifest {
    /// How many leading chunks hold the shipped plugin (0: none shipped).
    pub fn plugin_chunks(&self) -> u32 {
        self.approval.as_ref().map_or(0, Approval::plugin_chunks)
    }

    /// The canonical encoding (postcard).
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("a manifest always serializes")
    }

    /// The snapshot hash: SHA-256 of the encoding.
    pub fn hash(&self) -> [u8; 32] {
        sha256(&self.encode())
    }

    /// Checks the approval this self-describing manifest carries against
    /// `trusted`, the app hash of its height (see [`Approval::verify`]).
    pub(crate) fn verify_approval(
        &self,
        approval: &Approval,
        trusted: &[u8; 32],
    ) -> Result<FormatApproval, ApprovalError> {
        let claim = Claim {
            format: self.format,
            height: self.height,
            plugin_sha256: &self.plugin.sha256,
            chunks: &self.chunks,
        };
        approval.verify(&claim, trusted)
    }

    /// Decodes and sanity-checks untrusted metadata. Only the canonical
    /// encoding is accepted, so one manifest has exactly one hash.
    pub fn decode(bytes: &[u8]) -> Result<Self, ManifestError> {
        if bytes.len() > MAX_METADATA_BYTES {
            return Err(ManifestError::TooLarge { len: bytes.len() });
        }
        let version = postcard::take_from_bytes::<u32>(bytes)
            .map_err(|e| ManifestError::NotAManifest(e.to_string()))?
            .0;
        let m: Manifest = match version {
            // A version-4 manifest is a version-5 one without the block
            // time: decoded with an absent (`None`) one appended.
            MANIFEST_VERSION => postcard::from_bytes(&[bytes, &[0]].concat()),
            MANIFEST_VERSION_BLOCK_TIME => postcard::from_bytes(bytes),
            version => return Err(ManifestError::Version { version }),
        }
        .map_err(|e| ManifestError::Malformed(e.to_string()))?;
        if m.encode() != bytes {
            return Err(ManifestError::NotCanonical);
        }
        if m.block_time_nanos.is_some() != (version == MANIFEST_VERSION_BLOCK_TIME) {
            return Err(ManifestError::BlockTime { version });
        }
        if m.chunks.is_empty() {
            return Err(ManifestError::NoChunks);
        }
        if m.snapshot_bytes > m.chunks.len() as u64 * MAX_CHUNK_BYTES as u64 {
            return Err(ManifestError::SizeBeyondChunks {
                snapshot_bytes: m.snapshot_bytes,
                chunks: m.chunks.len(),
            });
        }
        if let Some(a) = &m.approval {
            if a.plugin_bytes == 0 || a.plugin_bytes > MAX_UPLOADED_PLUGIN_BYTES {
                return Err(ManifestError::ShippedPluginSize { bytes: a.plugin_bytes });
            }
            if m.chunks.len() <= a.plugin_chunks() as usize {
                return Err(ManifestError::NoStateChunks {
                    plugin_chunks: a.plugin_chunks(),
                });
            }
        }
        Ok(m)
    }
}

/// Why untrusted metadata is not a manifest this host accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is {len} bytes, over the limit of {MAX_METADATA_BYTES}")]
    TooLarge { len: usize },
    #[error("manifest is not a statesnap manifest: {0}")]
    NotAManifest(String),
    #[error(
        "manifest version {version} is not supported (this host reads versions {MANIFEST_VERSION} and \
         {MANIFEST_VERSION_BLOCK_TIME}); upgrade statesnap"
    )]
    Version { version: u32 },
    #[error("manifest is malformed: {0}")]
    Malformed(String),
    #[error(
        "manifest version {version} must carry a block time exactly when it is version {MANIFEST_VERSION_BLOCK_TIME}"
    )]
    BlockTime { version: u32 },
    #[error("manifest is not in canonical encoding (trailing or non-minimal bytes)")]
    NotCanonical,
    #[error("manifest lists no chunks")]
    NoChunks,
    #[error(
        "manifest claims {snapshot_bytes} snapshot bytes in {chunks} chunks, more than chunks of at most \
         {MAX_CHUNK_BYTES} bytes can hold"
    )]
    SizeBeyondChunks { snapshot_bytes: u64, chunks: usize },
    #[error("manifest ships a plugin of {bytes} bytes; a shipped plugin is 1 to {MAX_UPLOADED_PLUGIN_BYTES} bytes")]
    ShippedPluginSize { bytes: u64 },
    #[error("manifest ships a plugin in {plugin_chunks} chunks but lists no state chunks after it")]
    NoStateChunks { plugin_chunks: u32 },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            version: MANIFEST_VERSION,
            chain_id: "xian-1".into(),
            height: 42,
            app_hash: [7; 32],
            format: 1,
            plugin: PluginRef {
                sha256: [1; 32],
                name: "zstd".into(),
                version: "1.0.0".into(),
            },
            params: vec![("level".into(), "3".into())],
            chunks: vec![[2; 32], [3; 32]],
            entries: 10,
            state_bytes: 1000,
            snapshot_bytes: 300,
            approval: None,
            block_time_nanos: None,
        }
    }

    #[test]
    fn a_block_time_makes_version_5_and_leaves_version_4_bytes_alone() {
        let v4 = sample();
        let v4_bytes = v4.encode();
        let mut v5 = v4.clone();
        v5.version = MANIFEST_VERSION_BLOCK_TIME;
        v5.block_time_nanos = Some(1_765_000_000_123_456_789);
        let v5_bytes = v5.encode();
        assert_eq!(
            &v5_bytes[1..v4_bytes.len()],
            &v4_bytes[1..],
            "the same fields, then the time"
        );
        assert_eq!(Manifest::decode(&v4_bytes).unwrap(), v4);
        assert_eq!(Manifest::decode(&v5_bytes).unwrap(), v5);
        let mut no_time = v4.clone();
        no_time.version = MANIFEST_VERSION_BLOCK_TIME;
        assert!(matches!(
            Manifest::decode(&no_time.encode()),
            Err(ManifestError::Malformed(_))
        ));
        let mut v4_with_time = v5.clone();
        v4_with_time.version = MANIFEST_VERSION;
        assert_eq!(
            Manifest::decode(&v4_with_time.encode()),
            Err(ManifestError::BlockTime { version: 4 })
        );
    }

    #[test]
    fn round_trip_and_strictness() {
        let m = sample();
        let bytes = m.encode();
        assert_eq!(Manifest::decode(&bytes).unwrap(), m);
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(Manifest::decode(&trailing), Err(ManifestError::NotCanonical));
        assert!(matches!(
            Manifest::decode(&bytes[..bytes.len() - 3]),
            Err(ManifestError::Malformed(_))
        ));
        let mut v1 = m.clone();
        v1.version = 1;
        assert_eq!(
            Manifest::decode(&v1.encode()),
            Err(ManifestError::Version { version: 1 })
        );
        assert_ne!(m.hash(), v1.hash());
    }

    #[test]
    fn a_snapshot_size_no_chunks_can_hold_is_refused() {
        let mut m = sample();
        m.snapshot_bytes = 2 * MAX_CHUNK_BYTES as u64;
        assert!(Manifest::decode(&m.encode()).is_ok());
        m.snapshot_bytes += 1;
        let e = Manifest::decode(&m.encode()).unwrap_err();
        assert_eq!(
            e,
            ManifestError::SizeBeyondChunks {
                snapshot_bytes: m.snapshot_bytes,
                chunks: 2
            }
        );
        assert!(
            e.to_string()
                .contains("more than chunks of at most 16000000 bytes can hold"),
            "{e}"
        );
    }
}
