//! The staging home a restore writes into, beside the home it will replace,
//! and the swap that makes it the live home.
//!
//! [`StagingHome`] takes the verified entries of each chunk and writes them on
//! a thread of its own (the store's time hides the decoding and hashing on
//! the caller's thread); when asked, a second thread builds the restored
//! state's Merkle treap from the hashes the restore computed anyway. Dropping
//! a staging home that was not kept removes it.

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use anyhow::Context;
use crossbeam_channel::{bounded, Sender};

use super::restore_error::RestoreError;
use crate::store::home::{detect, is_vacant};
use crate::store::treap::{MerkleTreap, TreapBuilder};
use crate::store::{HomeStore, StateStore, StoreKind};

/// Writes of one batch: key and stored value.
pub(crate) type WriteBatch = Vec<(String, Option<String>)>;

/// Keys with their priority and leaf hash, on their way to the treap thread.
pub(crate) type TreapBatch = Vec<(String, [u8; 32], [u8; 32])>;

/// A staging home being filled.
pub(crate) struct StagingHome {
    path: PathBuf,
    writes: Option<Sender<WriteBatch>>,
    writer: Option<JoinHandle<anyhow::Result<()>>>,
    treap: Option<TreapThread>,
    keep: bool,
    /// Writes nothing: the entries are checked and dropped (a check-only
    /// restore); there is no directory to remove or install.
    discard: bool,
}

impl StagingHome {
    /// Starts a fresh staging home of layout `kind` at `path` (anything
    /// already there is removed), after checking that `state_bytes` of keys
    /// and values can fit on its file system. `treap`: also build the
    /// restored state's Merkle treap.
    pub(crate) fn create(path: &Path, kind: StoreKind, state_bytes: u64, treap: bool) -> Result<Self, RestoreError> {
        if path.exists() {
            std::fs::remove_dir_all(path)
                .with_context(|| format!("removing stale staging home {}", path.display()))
                .map_err(RestoreError::Store)?;
        }
        check_free_space(state_bytes, path)?;
        let (tx, rx) = bounded::<WriteBatch>(4);
        let dir = path.to_path_buf();
        let writer = std::thread::Builder::new()
            .name("restore-writer".into())
            .spawn(move || -> anyhow::Result<()> {
                let mut store = HomeStore::create(&dir, kind)?;
                // Synced once at the end: a failed restore is thrown away.
                store.set_bulk(true);
                for batch in rx {
                    store.write_batch(&batch)?;
                }
                store.flush()
            })
            .map_err(|e| RestoreError::Store(anyhow::anyhow!("spawning the restore writer thread: {e}")))?;
        Ok(StagingHome {
            path: path.to_path_buf(),
            writes: Some(tx),
            writer: Some(writer),
            treap: if treap { Some(TreapThread::spawn()?) } else { None },
            keep: false,
            discard: false,
        })
    }

    /// A staging home that writes nothing and creates nothing at `path`.
    pub(crate) fn discarding(path: &Path) -> Self {
        StagingHome {
            path: path.to_path_buf(),
            writes: None,
            writer: None,
            treap: None,
            keep: true,
            discard: true,
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the treap is being built (entries need their hashes sent).
    pub(crate) fn builds_treap(&self) -> bool {
        self.treap.is_some()
    }

    /// Hands a verified batch to the writer (and its hashes to the treap thread).
    pub(crate) fn send(&mut self, writes: WriteBatch, hashes: TreapBatch) -> Result<(), RestoreError> {
        if self.discard {
            return Ok(());
        }
        if let Some(treap) = &self.treap {
            treap.send(hashes)?;
        }
        let tx = self.writes.as_ref().expect("writer open until finish");
        if tx.send(writes).is_err() {
            // The writer stopped: its error says why.
            return Err(self
                .join_writer()
                .err()
                .unwrap_or_else(|| RestoreError::Store(anyhow::anyhow!("the staging writer stopped unexpectedly"))));
        }
        Ok(())
    }

    fn join_writer(&mut self) -> Result<(), RestoreError> {
        self.writes = None;
        match self.writer.take() {
            Some(h) => h
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the staging writer panicked")))
                .map_err(RestoreError::Store),
            None => Ok(()),
        }
    }

    /// Waits for every write to be durable in the staging home; its treap, if built.
    pub(crate) fn finish(&mut self) -> Result<Option<MerkleTreap>, RestoreError> {
        self.join_writer()?;
        match self.treap.take() {
            Some(thread) => thread.finish().map(Some),
            None => Ok(None),
        }
    }

    /// Makes the staging home the live `home` (see [`swap_into_place`]); it
    /// is no longer removed on drop.
    pub(crate) fn install(mut self, home: &Path) -> Result<(), RestoreError> {
        if self.discard {
            return Err(RestoreError::Store(anyhow::anyhow!(
                "a check-only restore wrote no state to install into {}",
                home.display()
            )));
        }
        self.keep = true;
        if let Err(e) = swap_into_place(&self.path, home) {
            self.keep = false;
            return Err(RestoreError::Store(e));
        }
        Ok(())
    }
}

impl Drop for StagingHome {
    fn drop(&mut self) {
        let _ = self.join_writer();
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Builds the restored state's Merkle treap on a thread of its own, from the
/// hashes the restore computes anyway: a node's restore then adds neither
/// hashing nor tree building to the time CometBFT waits on ApplySnapshotChunk.
struct TreapThread {
    tx: Option<Sender<TreapBatch>>,
    handle: Option<JoinHandle<MerkleTreap>>,
}

impl TreapThread {
    fn spawn() -> Result<Self, RestoreError> {
        let (tx, rx) = bounded::<TreapBatch>(4);
        let handle = std::thread::Builder::new()
            .name("restore-treap".into())
            .spawn(move || {
                let mut builder = TreapBuilder::new();
                for batch in rx {
                    for (key, prio, leaf) in batch {
                        builder.push_prioritized(&key, prio, leaf);
                    }
                }
                builder.finish()
            })
            .map_err(|e| RestoreError::Store(anyhow::anyhow!("spawning the restore treap thread: {e}")))?;
        Ok(TreapThread {
            tx: Some(tx),
            handle: Some(handle),
        })
    }

    fn send(&self, batch: TreapBatch) -> Result<(), RestoreError> {
        match &self.tx {
            Some(tx) if tx.send(batch).is_ok() => Ok(()),
            _ => Err(RestoreError::Store(anyhow::anyhow!(
                "the restore's treap thread stopped"
            ))),
        }
    }

    fn finish(mut self) -> Result<MerkleTreap, RestoreError> {
        self.tx = None;
        self.handle
            .take()
            .expect("joined once")
            .join()
            .map_err(|_| RestoreError::Store(anyhow::anyhow!("the restore's treap thread panicked")))
    }
}

/// Refuses a restore whose state cannot fit: its keys and values alone are
/// `state_bytes`, a lower bound of what any store needs for them, so this never
/// refuses a restore that could succeed (and a manifest that lies low is
/// stopped by the entry and byte counts as the chunks arrive).
fn check_free_space(state_bytes: u64, staging: &Path) -> Result<(), RestoreError> {
    let dir = crate::durable::parent_of(staging);
    let free = crate::durable::free_bytes(dir).map_err(RestoreError::Store)?;
    if state_bytes > free {
        return Err(RestoreError::NoSpace {
            needed: state_bytes,
            free,
            dir: dir.to_path_buf(),
        });
    }
    Ok(())
}

/// The staging home used when restoring into `home`: a hidden sibling, so the
/// final rename stays on one file system.
pub fn staging_path(home: &Path) -> PathBuf {
    sibling(home, "restore-staging")
}

fn sibling(home: &Path, what: &str) -> PathBuf {
    let name = home
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "home".into());
    home.with_file_name(format!(".{name}.statesnap-{what}"))
}

/// Makes a verified staging home the live `home`. The old home, if any, is
/// moved aside first and removed last.
pub(crate) fn swap_into_place(staging: &Path, home: &Path) -> anyhow::Result<()> {
    recover_interrupted_swap(home)?;
    let old = sibling(home, "replaced");
    let had_home = home.exists();
    if had_home {
        std::fs::rename(home, &old).with_context(|| format!("moving {} aside", home.display()))?;
    }
    if let Err(e) = std::fs::rename(staging, home) {
        if had_home {
            let _ = std::fs::rename(&old, home);
        }
        return Err(e).with_context(|| format!("moving the restored state into {}", home.display()));
    }
    // The renames are durable only once their directory is: without this a
    // crash could bring back the old home, or no home, after the node has
    // answered that the restore is done.
    crate::durable::sync_dir(crate::durable::parent_of(home))?;
    if had_home {
        std::fs::remove_dir_all(&old).with_context(|| format!("removing the replaced home {}", old.display()))?;
    }
    Ok(())
}

/// Finishes a swap a killed process left half done: the home moved aside but
/// the new one not yet in place means the old home comes back; both present
/// means only the removal of the old one was left.
pub fn recover_interrupted_swap(home: &Path) -> anyhow::Result<()> {
    let old = sibling(home, "replaced");
    if !old.exists() {
        return Ok(());
    }
    if home.exists() {
        std::fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))
    } else {
        std::fs::rename(&old, home).with_context(|| format!("putting {} back as {}", old.display(), home.display()))
    }
}

/// Refuses to replace a directory that is not a state home: a mistyped
/// `--home` must never cost a user their files.
/// Returns the layout of the home being replaced (`None` when there is none).
pub(crate) fn replaceable_layout(home: &Path) -> Result<Option<StoreKind>, RestoreError> {
    if is_vacant(home) {
        return Ok(None);
    }
    detect(home).map(Some).map_err(|reason| RestoreError::NotAHome {
        home: home.to_path_buf(),
        reason,
    })
}
