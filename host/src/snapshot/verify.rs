//! Verifying a snapshot directory without restoring it: the manifest decodes,
//! every chunk is present and matches its SHA-256, every state chunk ends
//! with a well-formed range proof whose entry counts rise to the manifest's,
//! and nothing else is there. (Whether the proofs hold against an app hash
//! is for a restore to find: that needs the plugin to decode the entries.)

use std::path::Path;

use anyhow::bail;
use sha2::{Digest, Sha256};

use super::frame;
use super::manifest::Manifest;
use super::snapshot_dir::SnapshotDir;

/// The result of a successful [`verify`].
#[derive(Debug, Clone)]
pub struct VerifyReport {
    pub manifest: Manifest,
    pub hash: [u8; 32],
    pub bytes: u64,
}

/// Checks the manifest and every chunk hash of the snapshot in `dir`.
pub fn verify(dir: &Path) -> anyhow::Result<VerifyReport> {
    let snap = SnapshotDir::open(dir)?;
    let manifest = snap.manifest()?;
    let mut bytes = 0u64;
    let mut proven = 0u64;
    for (index, expected) in manifest.chunks.iter().enumerate() {
        let chunk = snap.read_chunk(index as u32, manifest.snapshot_bytes.saturating_sub(bytes))?;
        let got: [u8; 32] = Sha256::digest(&chunk).into();
        if &got != expected {
            bail!(
                "chunk {index} ({}) has SHA-256 {}, but the manifest lists {}: the chunk is corrupt",
                snap.chunk_path(index as u32).display(),
                hex::encode(got),
                hex::encode(expected)
            );
        }
        bytes += chunk.len() as u64;
        if index < manifest.plugin_chunks() as usize {
            continue; // the shipped plugin
        }
        let (_, proof) = frame::open(&chunk).map_err(|e| anyhow::anyhow!("chunk {index}: {e}"))?;
        if proof.entries < proven || proof.entries > manifest.entries {
            bail!(
                "chunk {index}'s range proof covers {} entries, after {proven} and of the manifest's {}: the proofs are not in order",
                proof.entries,
                manifest.entries
            );
        }
        proven = proof.entries;
    }
    if proven != manifest.entries {
        bail!(
            "the last chunk's range proof covers {proven} entries, not the manifest's {}",
            manifest.entries
        );
    }
    if bytes != manifest.snapshot_bytes {
        bail!(
            "the chunks hold {bytes} bytes, but the manifest says {}",
            manifest.snapshot_bytes
        );
    }
    let extra = snap.chunk_path(manifest.chunks.len() as u32);
    if extra.exists() {
        bail!("{} is not listed in the manifest", extra.display());
    }
    Ok(VerifyReport {
        hash: manifest.hash(),
        manifest,
        bytes,
    })
}
