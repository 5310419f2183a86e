//! `snapshot publish`: copies a finished snapshot to a location, chunks
//! first, then the manifest, then the index, so that a reader never finds a
//! listed snapshot with a missing part. Chunks already there (same name, so
//! same content, and same size) are not sent again.

use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use indicatif::ProgressBar;

use statesnap::snapshot::{Manifest, SnapshotDir, MAX_CHUNK_BYTES};

use crate::index::{Index, IndexEntry};
use crate::location::Location;
use crate::objects::{chunk_object, exists_with_size, manifest_object, write, INDEX_OBJECT};

/// How a publish runs.
#[derive(Debug, Clone, Copy)]
pub struct PublishOptions {
    /// Chunks uploaded at once.
    pub parallel: usize,
}

impl Default for PublishOptions {
    fn default() -> Self {
        PublishOptions { parallel: 8 }
    }
}

/// What a publish did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PublishReport {
    pub location: String,
    pub height: u64,
    pub format: u32,
    pub hash: String,
    pub chunks: u32,
    /// Chunks written by this publish.
    pub uploaded: u32,
    /// Chunks that were there already.
    pub present: u32,
    pub bytes_uploaded: u64,
    /// Whether the index gained the snapshot (false: it was listed).
    pub indexed: bool,
    pub seconds: f64,
}

/// Publishes the snapshot in `dir` to `to`.
pub fn publish(
    dir: &SnapshotDir,
    to: &Location,
    opts: PublishOptions,
    progress: &ProgressBar,
) -> anyhow::Result<PublishReport> {
    crate::runtime()?.block_on(publish_async(dir, to, opts, progress))
}

async fn publish_async(
    dir: &SnapshotDir,
    to: &Location,
    opts: PublishOptions,
    progress: &ProgressBar,
) -> anyhow::Result<PublishReport> {
    let started = Instant::now();
    let manifest_bytes = dir.manifest_bytes()?;
    let manifest = Manifest::decode(&manifest_bytes).with_context(|| format!("in {}", dir.path().display()))?;
    let hash = manifest.hash();
    progress.set_length(manifest.snapshot_bytes);
    // The chunks, checked against the manifest before they leave: a
    // publisher never spreads a corrupt copy.
    let outcomes: Vec<(bool, u64)> = futures::stream::iter(manifest.chunks.iter().enumerate())
        .map(|(index, expected)| async move {
            let index = index as u32;
            let chunk = tokio::task::block_in_place(|| dir.read_chunk(index, MAX_CHUNK_BYTES as u64))?;
            let got = statesnap::plugin::sha256(&chunk);
            if &got != expected {
                anyhow::bail!(
                    "chunk {index} of {} does not match its manifest hash: the snapshot is corrupt; not published",
                    dir.path().display()
                );
            }
            let len = chunk.len() as u64;
            let name = chunk_object(expected);
            let present = exists_with_size(to, &name, len)
                .await
                .with_context(|| format!("{to}: checking {name}"))?;
            if !present {
                write(to, &name, Bytes::from(chunk)).await?;
            }
            progress.inc(len);
            Ok((!present, len))
        })
        .buffer_unordered(opts.parallel.max(1))
        .try_collect()
        .await?;
    let manifest_name = manifest_object(&hash);
    write(to, &manifest_name, Bytes::from(manifest_bytes)).await?;
    // The index last: read, add, write back. Two publishers writing the
    // same index at once may lose one entry (its objects stay; publishing
    // again lists it): S3 offers no portable compare-and-swap.
    let mut index = Index::read(to).await?.unwrap_or_default();
    let indexed = index.add(IndexEntry::of(&manifest, manifest_name));
    if indexed {
        write(to, INDEX_OBJECT, Bytes::from(index.encode())).await?;
    }
    let uploaded: Vec<_> = outcomes.iter().filter(|(sent, _)| *sent).collect();
    Ok(PublishReport {
        location: to.to_string(),
        height: manifest.height,
        format: manifest.format,
        hash: hex::encode(hash),
        chunks: manifest.chunks.len() as u32,
        uploaded: uploaded.len() as u32,
        present: (outcomes.len() - uploaded.len()) as u32,
        bytes_uploaded: uploaded.iter().map(|(_, len)| len).sum(),
        indexed,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The index of `from` (an error when it has none).
pub fn list(from: &Location) -> anyhow::Result<Index> {
    crate::runtime()?
        .block_on(Index::read(from))?
        .ok_or_else(|| anyhow::anyhow!("{from} has no {INDEX_OBJECT}: nothing was published there"))
}
