//! Copying state entries into a store in write batches: what converting a
//! home (`convert`), importing a genesis home (the node's InitChain) and
//! `statesnap state copy` all do.

use super::{Entry, StateStore};

/// Entries written per write batch (one LMDB transaction / one HDF5 pass).
pub const BATCH: usize = 10_000;

/// Where a copy stopped: reading an entry or writing a batch. Converts into
/// the error it holds, so `?` works in a function returning `anyhow::Result`;
/// match on it to say which side failed.
#[derive(Debug)]
pub enum CopyError {
    /// The entries' iterator returned this error.
    Read(anyhow::Error),
    /// The target store refused a batch.
    Write(anyhow::Error),
}

impl From<CopyError> for anyhow::Error {
    fn from(e: CopyError) -> Self {
        match e {
            CopyError::Read(e) | CopyError::Write(e) => e,
        }
    }
}

/// Writes `entries` into `to` (each one set, in the order given: ascending
/// keys write fastest), `batch` entries per write batch. After each batch is
/// written, `progress` gets the number of entries written so far. Returns
/// that number. Does not flush `to`.
///
/// `entries` is an iterator so that callers can pass a store's
/// [`entries`](StateStore::entries) as they are, entries already in memory,
/// or entries they look at on the way (a conversion hashes them).
pub fn copy_entries<I>(
    entries: I,
    to: &mut dyn StateStore,
    batch: usize,
    mut progress: impl FnMut(u64),
) -> Result<u64, CopyError>
where
    I: IntoIterator<Item = anyhow::Result<Entry>>,
{
    let batch = batch.max(1);
    let mut pending: Vec<(String, Option<String>)> = Vec::with_capacity(batch);
    let mut written = 0u64;
    let mut write = |pending: &mut Vec<(String, Option<String>)>| -> Result<(), CopyError> {
        to.write_batch(pending).map_err(CopyError::Write)?;
        written += pending.len() as u64;
        pending.clear();
        progress(written);
        Ok(())
    };
    for entry in entries {
        let Entry { key, stored } = entry.map_err(CopyError::Read)?;
        pending.push((key, Some(stored)));
        if pending.len() == batch {
            write(&mut pending)?;
        }
    }
    if !pending.is_empty() {
        write(&mut pending)?;
    }
    Ok(written)
}
