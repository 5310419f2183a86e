//! A frozen view of the committed state at one height, for building a
//! snapshot in the background while later blocks keep changing the live
//! state.
//!
//! The view holds the Merkle treap of height H (a persistent structure, so
//! keeping it costs nothing until blocks change the live one) for the set of
//! keys, and reads values from the live HDF5 store. Every commit after H first
//! records, in the view's [`BeforeImages`], the height-H value of each key it
//! is about to overwrite or delete. A value read for the view is the recorded
//! one if there is one, else the store's, which has not changed since H.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail};

use crate::store::treap::MerkleTreap;
use crate::store::{Entry, StateStore, XianHdf5Store};

/// The store shared by the chain (writes at Commit) and snapshot views (reads).
pub type SharedStore = Arc<Mutex<XianHdf5Store>>;

/// Locks the shared store.
pub fn lock(store: &SharedStore) -> anyhow::Result<std::sync::MutexGuard<'_, XianHdf5Store>> {
    store
        .lock()
        .map_err(|_| anyhow!("the state store lock is poisoned (an earlier panic)"))
}

/// Height-H values of keys changed after H (`None`: the key had no value).
#[derive(Debug, Default)]
pub struct BeforeImages {
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
    pub fn capture(&self, store: &XianHdf5Store, keys: &[(String, Option<String>)]) -> anyhow::Result<()> {
        let mut values = self.values.lock().expect("before-images lock");
        for (key, _) in keys {
            if !values.contains_key(key) {
                values.insert(key.clone(), store.get(key)?);
            }
        }
        Ok(())
    }

    /// Keys recorded so far (what the view costs in memory).
    pub fn len(&self) -> usize {
        self.values.lock().expect("before-images lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The committed state of one height, readable while the chain moves on.
pub struct StateView {
    pub height: u64,
    pub app_hash: [u8; 32],
    treap: MerkleTreap,
    before: Arc<BeforeImages>,
    store: SharedStore,
}

/// Keys read from the store per lock: short enough not to hold up a commit.
const READ_BATCH: usize = 256;

impl StateView {
    pub fn new(treap: MerkleTreap, before: Arc<BeforeImages>, store: SharedStore, app_hash: [u8; 32]) -> Self {
        StateView {
            height: before.height,
            app_hash,
            treap,
            before,
            store,
        }
    }

    /// The view's Merkle treap: its keys, and proofs against its app hash.
    pub fn treap(&self) -> &MerkleTreap {
        &self.treap
    }

    /// Number of consensus keys in the view.
    pub fn len(&self) -> u64 {
        self.treap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.treap.is_empty()
    }

    /// The height-H values of `keys`, all of which the view holds.
    fn read_batch(&self, keys: Vec<String>) -> anyhow::Result<Vec<Entry>> {
        let store = lock(&self.store)?;
        let before = self.before.values.lock().expect("before-images lock");
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
        Ok(self.read_batch(vec![key.to_string()])?.pop().map(|e| e.stored))
    }

    /// The view's consensus entries in ascending key order, read in small
    /// batches so commits are never held up for long.
    fn entries(&self) -> anyhow::Result<Box<dyn Iterator<Item = anyhow::Result<Entry>> + '_>> {
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
            match self.read_batch(next) {
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
