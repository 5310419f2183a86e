//! The published layout and bounded reads and writes of its objects.
//!
//! ```text
//! <location>/index.json                 the snapshots published here (`Index`)
//! <location>/manifests/<sha256>.bin     a manifest, named by the snapshot hash
//! <location>/chunks/<sha256>            a chunk, named by its own SHA-256
//! ```
//! Chunks and manifests are content-addressed: publishing again writes
//! nothing new, and a chunk two snapshots share is stored once. Nothing read
//! from a location is trusted: every read is bounded, and a chunk is checked
//! against the manifest's hash, the manifest against the app hash.

use bytes::Bytes;
use futures::StreamExt;
use object_store::{ObjectStoreExt, PutPayload};

use crate::location::Location;

/// The index object's name.
pub const INDEX_OBJECT: &str = "index.json";

/// The largest index read: about 40,000 snapshots' entries.
pub const MAX_INDEX_BYTES: u64 = 16 << 20;

pub fn chunk_object(sha256: &[u8; 32]) -> String {
    format!("chunks/{}", hex::encode(sha256))
}

pub fn manifest_object(snapshot_hash: &[u8; 32]) -> String {
    format!("manifests/{}.bin", hex::encode(snapshot_hash))
}

/// Why an object was not read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{location} has no object {name}")]
    NotFound { location: String, name: String },
    #[error("{location}: {name} is over the limit of {limit} bytes: refused unread")]
    TooLarge { location: String, name: String, limit: u64 },
    #[error("{location}: reading {name}: {source}")]
    Transport {
        location: String,
        name: String,
        source: object_store::Error,
    },
}

/// Reads object `name` of at most `limit` bytes: refused before the body
/// when the store announces more, and never buffered past the limit
/// whatever the server sends.
pub async fn read_bounded(loc: &Location, name: &str, limit: u64) -> Result<Bytes, ReadError> {
    let path = loc.object(name);
    let failed = |source| ReadError::Transport {
        location: loc.to_string(),
        name: name.to_string(),
        source,
    };
    let too_large = || ReadError::TooLarge {
        location: loc.to_string(),
        name: name.to_string(),
        limit,
    };
    let got = match loc.store().get(&path).await {
        Ok(got) => got,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(ReadError::NotFound {
                location: loc.to_string(),
                name: name.to_string(),
            })
        }
        Err(e) => return Err(failed(e)),
    };
    if got.meta.size > limit || got.range.end.saturating_sub(got.range.start) > limit {
        return Err(too_large());
    }
    let mut body = Vec::with_capacity(got.meta.size as usize);
    let mut stream = got.into_stream();
    while let Some(part) = stream.next().await {
        let part = part.map_err(failed)?;
        if body.len() as u64 + part.len() as u64 > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&part);
    }
    Ok(Bytes::from(body))
}

/// Whether object `name` exists with exactly `size` bytes.
pub async fn exists_with_size(loc: &Location, name: &str, size: u64) -> Result<bool, object_store::Error> {
    match loc.store().head(&loc.object(name)).await {
        Ok(meta) => Ok(meta.size == size),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Writes object `name`.
pub async fn write(loc: &Location, name: &str, bytes: Bytes) -> anyhow::Result<()> {
    loc.store()
        .put(&loc.object(name), PutPayload::from_bytes(bytes))
        .await
        .map_err(|e| anyhow::anyhow!("{loc}: writing {name}: {e}"))?;
    Ok(())
}
