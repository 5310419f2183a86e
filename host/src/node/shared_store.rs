//! The state store shared by the chain (which writes at Commit) and the
//! snapshot views (which read), behind one lock, and the guard that hands it out.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{anyhow, bail};

use crate::store::HomeStore;

/// The store shared by the chain (writes at Commit) and snapshot views
/// (reads). `None` only while a restored state takes its place.
pub(crate) type SharedStore = Arc<Mutex<Option<HomeStore>>>;

/// The locked shared store.
pub struct StoreGuard<'a>(MutexGuard<'a, Option<HomeStore>>);

impl Deref for StoreGuard<'_> {
    type Target = HomeStore;

    fn deref(&self) -> &HomeStore {
        self.0.as_ref().expect("checked by lock()")
    }
}

impl DerefMut for StoreGuard<'_> {
    fn deref_mut(&mut self) -> &mut HomeStore {
        self.0.as_mut().expect("checked by lock()")
    }
}

/// Locks the shared store.
pub fn lock(store: &SharedStore) -> anyhow::Result<StoreGuard<'_>> {
    let guard = lock_slot(store)?;
    if guard.is_none() {
        bail!("the state store is closed: a restored state failed to take its place (see the log)");
    }
    Ok(StoreGuard(guard))
}

/// Locks the slot itself, to close or replace the store.
pub(crate) fn lock_slot(store: &SharedStore) -> anyhow::Result<MutexGuard<'_, Option<HomeStore>>> {
    store
        .lock()
        .map_err(|_| anyhow!("the state store lock is poisoned (an earlier panic)"))
}
