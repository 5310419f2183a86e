//! A frozen view of the committed state at one height, for building a
//! snapshot in the background while later blocks keep changing the live
//! state.
//!
//! The view holds the Merkle treap of height H (a persistent structure, so
//! keeping it costs nothing until blocks change the live one) for the set of
//! keys. Its values come, by store:
//!
//! * **LMDB**: from a read transaction opened at H, a consistent view of its
//!   own that later commits do not change (and do not wait for);
//! * **HDF5**, which has no such thing: from the live store. Every commit
//!   after H first records, in the view's [`BeforeImages`], the height-H
//!   value of each key it is about to overwrite or delete. A value read for
//!   the view is the recorded one if there is one, else the store's, which
//!   has not changed since H.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::bail;

use super::shared_store::{lock, SharedStore};

use crate::store::treap::MerkleTreap;
use crate::store::xian_lmdb::LmdbSnapshot;
use crate::store::{is_consensus_key, Entry, StateStore};

/// Height-H values of keys changed after H (`None`: the key had no value).
#[derive(Debug, Default)]
pub(crate) struct BeforeImages {
    pub height: u64,
    values: Mutex<HashMap<String, Option<String>>>,
}

impl BeforeImages {
    pub fn new(height: u64) -> Self {
        BeforeImages {
            height,
            values: Mutex::default(),
        }
    }

    /// Records the current values of `keys` (about to be overwritten) unless a
    /// value is already recorded: the first one is the height-H value.
    pub(crate) fn capture(&self, store: &dyn StateStore, keys: &[(String, Option<String>)]) -> anyhow::Result<()> {
        let mut values = self.values.lock().expect("before-images lock");
        for (key, _) in keys {
            if !values.contains_key(key) {
                values.insert(key.clone(), store.get(key)?);
            }
        }
        Ok(())
    }
}

/// The committed state of one height, readable while the chain moves on.
pub struct StateView {
    pub height: u64,
    pub app_hash: [u8; 32],
    treap: MerkleTreap,
    source: Source,
}

/// Where a view's values come from.
enum Source {
    /// The live store, behind the values later commits replaced (HDF5).
    Live {
        before: Arc<BeforeImages>,
        store: SharedStore,
    },
    /// A read transaction opened at the view's height (LMDB).
    Frozen(LmdbSnapshot),
}

/// Keys read from the store per lock: short enough not to hold up a commit.
const READ_BATCH: usize = 256;

impl StateView {
    /// A view over the live store and the before-images later commits record.
    pub(crate) fn live(treap: MerkleTreap, before: Arc<BeforeImages>, store: SharedStore, app_hash: [u8; 32]) -> Self {
        StateView {
            height: before.height,
            app_hash,
            treap,
            source: Source::Live { before, store },
        }
    }

    /// A view over a read transaction opened at `height`.
    pub(crate) fn frozen(treap: MerkleTreap, snapshot: LmdbSnapshot, height: u64, app_hash: [u8; 32]) -> Self {
        StateView {
            height,
            app_hash,
            treap,
            source: Source::Frozen(snapshot),
        }
    }

    /// The view's Merkle treap: its keys, and proofs against its app hash.
    pub(crate) fn treap(&self) -> &MerkleTreap {
        &self.treap
    }

    /// Number of consensus keys in the view.
    pub(crate) fn keys(&self) -> u64 {
        self.treap.len()
    }

    /// The height-H values of `keys`, all of which the live view holds.
    fn read_batch(&self, before: &BeforeImages, store: &SharedStore, keys: Vec<String>) -> anyhow::Result<Vec<Entry>> {
        let store = lock(store)?;
        let before = before.values.lock().expect("before-images lock");
        keys.into_iter()
            .map(|key| {
                let value = match before.get(&key) {
                    Some(v) => v.clone(),
                    None => store.get(&key)?,
                };
                match value {
                    Some(stored) => Ok(Entry { key, stored }),
                    None => bail!(
                        "key {key:?} of the height-{} view has no value in the store: the view is inconsistent (a bug)",
                        self.height
                    ),
                }
            })
            .collect()
    }
}

impl StateStore for StateView {
    fn get(&self, key: &str) -> anyhow::Result<Option<String>> {
        if self.treap.get(key).is_none() {
            return Ok(None);
        }
        match &self.source {
            Source::Live { before, store } => Ok(self
                .read_batch(before, store, vec![key.to_string()])?
                .pop()
                .map(|e| e.stored)),
            Source::Frozen(snapshot) => snapshot.get(key),
        }
    }

    /// The view's consensus entries in ascending key order: from the live
    /// store in small batches, so commits are never held up for long, or
    /// from the read transaction's cursor.
    fn entries(&self) -> anyhow::Result<Box<dyn Iterator<Item = anyhow::Result<Entry>> + '_>> {
        let (before, store) = match &self.source {
            Source::Live { before, store } => (before, store),
            Source::Frozen(snapshot) => {
                let consensus = |e: &anyhow::Result<Entry>| e.as_ref().map_or(true, |e| is_consensus_key(&e.key));
                return Ok(Box::new(snapshot.entries()?.filter(consensus)));
            }
        };
        let mut keys = self.treap.iter().map(|(k, _)| k.to_string());
        let mut batch = std::vec::IntoIter::default();
        let mut failed = false;
        Ok(Box::new(std::iter::from_fn(move || loop {
            if failed {
                return None;
            }
            if let Some(e) = batch.next() {
                return Some(Ok(e));
            }
            let next: Vec<String> = keys.by_ref().take(READ_BATCH).collect();
            if next.is_empty() {
                return None;
            }
            match self.read_batch(before, store, next) {
                Ok(entries) => batch = entries.into_iter(),
                Err(e) => {
                    failed = true;
                    return Some(Err(e));
                }
            }
        })))
    }

    fn write_batch(&mut self, _batch: &[(String, Option<String>)]) -> anyhow::Result<()> {
        bail!("a state view is read-only")
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}
