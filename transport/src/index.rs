//! The index of a location: which snapshots are published there, by height
//! and format. Written last by `publish`, so every snapshot it lists has its
//! manifest and chunks in place. A reader trusts none of it: it only says
//! which manifest to fetch.

use serde::{Deserialize, Serialize};

use statesnap::snapshot::Manifest;

use crate::location::Location;
use crate::objects::{read_bounded, ReadError, INDEX_OBJECT, MAX_INDEX_BYTES};

/// The index layout version this build writes and reads.
pub const INDEX_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    pub version: u32,
    /// Highest height first, then highest format.
    pub snapshots: Vec<IndexEntry>,
}

/// One published snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    pub chain_id: String,
    pub height: u64,
    pub format: u32,
    /// The snapshot hash (SHA-256 of the manifest), hex.
    pub hash: String,
    /// The app hash the snapshot claims, hex.
    pub app_hash: String,
    pub chunks: u32,
    pub snapshot_bytes: u64,
    pub entries: u64,
    /// "name version" of the plugin that made it.
    pub plugin: String,
    /// The manifest's object name.
    pub manifest: String,
}

impl IndexEntry {
    pub fn of(manifest: &Manifest, manifest_object: String) -> IndexEntry {
        IndexEntry {
            chain_id: manifest.chain_id.clone(),
            height: manifest.height,
            format: manifest.format,
            hash: hex::encode(manifest.hash()),
            app_hash: hex::encode(manifest.app_hash),
            chunks: manifest.chunks.len() as u32,
            snapshot_bytes: manifest.snapshot_bytes,
            entries: manifest.entries,
            plugin: format!("{} {}", manifest.plugin.name, manifest.plugin.version),
            manifest: manifest_object,
        }
    }

    /// The snapshot hash as bytes.
    pub fn hash_bytes(&self) -> anyhow::Result<[u8; 32]> {
        let bytes =
            hex::decode(&self.hash).map_err(|e| anyhow::anyhow!("index: hash `{}` is not hex: {e}", self.hash))?;
        bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("index: hash `{}` is not 32 bytes", self.hash))
    }
}

impl Default for Index {
    fn default() -> Self {
        Index {
            version: INDEX_VERSION,
            snapshots: Vec::new(),
        }
    }
}

impl Index {
    /// Adds `entry` unless a snapshot with its hash is listed; true if added.
    pub fn add(&mut self, entry: IndexEntry) -> bool {
        if self.snapshots.iter().any(|e| e.hash == entry.hash) {
            return false;
        }
        self.snapshots.push(entry);
        self.snapshots
            .sort_by(|a, b| (b.height, b.format, &b.hash).cmp(&(a.height, a.format, &a.hash)));
        true
    }

    /// The snapshot wanted: at `height` (else the newest) and `format` (else
    /// the highest at that height).
    pub fn select(&self, height: Option<u64>, format: Option<u32>) -> Option<&IndexEntry> {
        self.snapshots
            .iter()
            .filter(|e| height.is_none_or(|h| e.height == h))
            .find(|e| format.is_none_or(|f| e.format == f))
    }

    fn parse(bytes: &[u8], loc: &Location) -> anyhow::Result<Index> {
        let index: Index = serde_json::from_slice(bytes)
            .map_err(|e| anyhow::anyhow!("{loc}: {INDEX_OBJECT} is not a statesnap index: {e}"))?;
        if index.version != INDEX_VERSION {
            anyhow::bail!(
                "{loc}: {INDEX_OBJECT} has layout version {}, this statesnap reads {INDEX_VERSION}: upgrade statesnap",
                index.version
            );
        }
        Ok(index)
    }

    /// The index at `loc`: `None` when there is none yet.
    pub async fn read(loc: &Location) -> anyhow::Result<Option<Index>> {
        match read_bounded(loc, INDEX_OBJECT, MAX_INDEX_BYTES).await {
            Ok(bytes) => Ok(Some(Self::parse(&bytes, loc)?)),
            Err(ReadError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("an index always serializes");
        bytes.push(b'\n');
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(height: u64, format: u32, hash: &str) -> IndexEntry {
        IndexEntry {
            chain_id: "c".into(),
            height,
            format,
            hash: hash.into(),
            app_hash: "00".into(),
            chunks: 1,
            snapshot_bytes: 1,
            entries: 1,
            plugin: "zstd 1".into(),
            manifest: format!("manifests/{hash}.bin"),
        }
    }

    #[test]
    fn newest_first_no_duplicates_and_selection() {
        let mut index = Index::default();
        assert!(index.add(entry(10, 1, "a")));
        assert!(index.add(entry(20, 1, "b")));
        assert!(index.add(entry(20, 2, "c")));
        assert!(!index.add(entry(20, 2, "c")));
        let order: Vec<_> = index.snapshots.iter().map(|e| e.hash.as_str()).collect();
        assert_eq!(order, ["c", "b", "a"]);
        assert_eq!(index.select(None, None).unwrap().hash, "c");
        assert_eq!(index.select(None, Some(1)).unwrap().hash, "b");
        assert_eq!(index.select(Some(10), None).unwrap().hash, "a");
        assert!(index.select(Some(11), None).is_none());
        let back: Index = serde_json::from_slice(&index.encode()).unwrap();
        assert_eq!(back, index);
    }
}
