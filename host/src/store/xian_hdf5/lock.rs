//! Locks on a home's HDF5 files, so no two processes write one at once.
//!
//! HDF5 locks (`flock`) through a descriptor it opens without close-on-exec,
//! so a child process started meanwhile by any thread (a test, the bench, a
//! proxy's restarted app) inherits the descriptor and with it the lock,
//! which then outlives this process's close: every open fails with "unable
//! to lock file" until that child exits. So HDF5's own locking is off, and
//! the lock is taken here instead, in the modes HDF5 uses (shared to read,
//! exclusive to write), on a descriptor Rust opens close-on-exec. Xian's
//! node and h5py, which lock through HDF5, see it as they would HDF5's.
//!
//! A `flock` belongs to one open descriptor, not to the process, and HDF5
//! opens a file once however often this process opens it; so this process
//! takes one lock per file too, shared by every handle on it.

use std::collections::HashMap;
use std::fs::TryLockError;
use std::ops::Deref;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdf5::File;

/// How long [`lock`] waits for a conflicting lock to go.
///
/// The wait is for this process's own children: one forked by any thread
/// holds copies of every descriptor until it runs its program, so a lock
/// this process released just before can stay held for that moment.
const LOCK_WAIT: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    Read,
    Write,
}

/// This process's lock on one file.
pub(super) struct FileLock {
    file: std::fs::File,
    /// Whether the lock is (or was upgraded to) exclusive. Read and set
    /// only under the registry's lock ([`held`]).
    exclusive: AtomicBool,
}

/// The locks this process holds, by file (device, inode).
type Held = HashMap<(u64, u64), Weak<FileLock>>;

fn held() -> &'static Mutex<Held> {
    static HELD: OnceLock<Mutex<Held>> = OnceLock::new();
    HELD.get_or_init(Mutex::default)
}

/// The lock on `path` for `access`: this process's lock on it when it
/// holds one (upgraded to exclusive for a write), else a new one. Fails
/// when another process holds a conflicting lock for longer than
/// [`LOCK_WAIT`]. On a file system without locks (`flock` unsupported) it
/// goes on without one, as HDF5 would.
pub(super) fn lock(path: &Path, access: Access) -> anyhow::Result<Arc<FileLock>> {
    let opening = || format!("opening {}", path.display());
    let meta = std::fs::metadata(path).with_context(opening)?;
    let id = (meta.dev(), meta.ino());
    // Held while locking, so two threads wanting the same file share one lock.
    let mut held = held().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(existing) = held.get(&id).and_then(Weak::upgrade) {
        if access == Access::Write && !existing.exclusive.load(Ordering::Relaxed) {
            if let Err(e) = acquire(&existing.file, path, Access::Write) {
                // Linux drops a lock before converting it: take the shared one back.
                let _ = existing.file.try_lock_shared();
                return Err(e);
            }
            existing.exclusive.store(true, Ordering::Relaxed);
        }
        return Ok(existing);
    }
    let file = std::fs::File::open(path).with_context(opening)?;
    acquire(&file, path, access)?;
    let lock = Arc::new(FileLock {
        file,
        exclusive: AtomicBool::new(access == Access::Write),
    });
    held.retain(|_, l| l.strong_count() > 0);
    held.insert(id, Arc::downgrade(&lock));
    Ok(lock)
}

/// Takes (or converts) `file`'s lock, waiting up to [`LOCK_WAIT`].
fn acquire(file: &std::fs::File, path: &Path, access: Access) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let locked = match access {
            Access::Read => file.try_lock_shared(),
            Access::Write => file.try_lock(),
        };
        match locked {
            Ok(()) => return Ok(()),
            Err(TryLockError::WouldBlock) if start.elapsed() < LOCK_WAIT => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(TryLockError::WouldBlock) => bail!(
                "{} is locked by another process (a running Xian node, h5py or another statesnap): \
                 stop it, or work on a copy of the home",
                path.display()
            ),
            Err(TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => return Ok(()),
            Err(TryLockError::Error(e)) => return Err(e).with_context(|| format!("locking {}", path.display())),
        }
    }
}

/// An open HDF5 file with this process's lock on it.
#[derive(Clone)]
pub(super) struct LockedFile {
    file: File,
    /// Declared after `file`, so released after it is closed.
    _lock: Arc<FileLock>,
}

impl LockedFile {
    pub(super) fn new(file: File, lock: Arc<FileLock>) -> Self {
        LockedFile { file, _lock: lock }
    }
}

impl Deref for LockedFile {
    type Target = File;
    fn deref(&self) -> &File {
        &self.file
    }
}
