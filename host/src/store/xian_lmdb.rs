//! Xian's current LMDB state home (docs/XIAN.md §6) as a [`StateStore`].
//!
//! The layout is Xian's exactly: one environment in `<home>/lmdb/`
//! (`data.mdb`, `lock.mdb`), the unnamed database, key = the state key's
//! UTF-8 bytes, value = the stored JSON text. LMDB orders keys bytewise,
//! which is the order of the state root and of snapshots, so reading in key
//! order is a cursor walk.
//!
//! * Writes: one write transaction per batch; a key above the database's
//!   last key is put with `MDB_APPEND` (sorted bulk loads skip the B-tree
//!   search and fill pages completely). A full map (`MDB_MAP_FULL`) is
//!   doubled and the batch retried, as Xian does.
//! * Durability: every commit is synced (Xian's `sync` and `metasync`),
//!   except in bulk mode ([`XianLmdbStore::set_bulk`]), where commits are
//!   only handed to the OS and [`StateStore::flush`] syncs once: a bulk load
//!   (restore staging, import, convert) is thrown away on failure anyway.
//! * Reads: [`XianLmdbStore::snapshot`] is an owned read transaction, a
//!   consistent view of one commit that does not block writers (in this
//!   process or another: a running Xian node's home can be read).

use std::collections::HashMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use anyhow::{anyhow, bail, Context};
use heed::types::Bytes;
use heed::{CommitOrAbort, Database, Env, EnvFlags, EnvOpenOptions, PutFlags, RoTxn, WithoutTls};

use super::{Entry, StateStore};

/// The environment's directory inside a home.
pub(crate) const LMDB_DIR: &str = "lmdb";
/// Xian's initial map size; doubled whenever the map is full.
const INITIAL_MAP_SIZE: usize = 4 << 30;
/// LMDB's compiled-in key limit (`MDB_MAXKEYSIZE`), the same in Python's `lmdb`.
pub(crate) const MAX_KEY_BYTES: usize = 511;
/// Entries copied out of a read transaction per cursor seek.
const READ_BATCH: usize = 1024;

type Db = Database<'static, Bytes, Bytes>;

/// One open environment, shared by every store and snapshot of its path in
/// this process (LMDB allows one `Env` per path and process).
struct Shared {
    env: Env<WithoutTls>,
    db: Db,
    read_only: bool,
    path: PathBuf,
}

/// Environments open in this process, by canonical path.
fn registry() -> &'static Mutex<HashMap<PathBuf, Weak<Shared>>> {
    static OPEN: std::sync::OnceLock<Mutex<HashMap<PathBuf, Weak<Shared>>>> = std::sync::OnceLock::new();
    OPEN.get_or_init(Mutex::default)
}

/// A Xian-layout LMDB home.
pub struct XianLmdbStore {
    home: PathBuf,
    shared: Arc<Shared>,
    bulk: bool,
}

/// Whether `home` holds an LMDB state (`home/lmdb/data.mdb`).
pub(crate) fn is_lmdb_home(home: &Path) -> bool {
    home.join(LMDB_DIR).join("data.mdb").is_file()
}

impl XianLmdbStore {
    /// Opens an existing home for reading and writing.
    pub fn open(home: &Path) -> anyhow::Result<Self> {
        Self::open_existing(home, false)
    }

    /// Opens an existing home read-only: nothing is ever written, and a
    /// process writing the same home (a running Xian node) is not held up.
    pub fn open_read_only(home: &Path) -> anyhow::Result<Self> {
        Self::open_existing(home, true)
    }

    fn open_existing(home: &Path, read_only: bool) -> anyhow::Result<Self> {
        if !is_lmdb_home(home) {
            bail!(
                "{} is not an LMDB state home: {} does not exist",
                home.display(),
                home.join(LMDB_DIR).join("data.mdb").display()
            );
        }
        Ok(XianLmdbStore {
            home: home.to_path_buf(),
            shared: open_env(&home.join(LMDB_DIR), read_only)?,
            bulk: false,
        })
    }

    /// Creates a new home in a missing or empty directory.
    pub fn create(home: &Path) -> anyhow::Result<Self> {
        if home.exists() && std::fs::read_dir(home)?.next().is_some() {
            bail!(
                "cannot create a state home in {}: the directory is not empty",
                home.display()
            );
        }
        let dir = home.join(LMDB_DIR);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let store = XianLmdbStore {
            home: home.to_path_buf(),
            shared: open_env(&dir, false)?,
            bulk: false,
        };
        // The directory entries of the new environment survive a power cut.
        crate::durable::sync_dir(&dir)?;
        crate::durable::sync_dir(home)?;
        Ok(store)
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    /// Bulk mode: commits are not synced one by one; [`StateStore::flush`]
    /// syncs them all. For loads that are discarded when they fail.
    pub(crate) fn set_bulk(&mut self, bulk: bool) {
        self.bulk = bulk;
    }

    /// A consistent read-only view of the state as of now; later writes do
    /// not show in it. It holds an LMDB reader slot (and keeps the pages it
    /// sees from being reused) until dropped.
    pub fn snapshot(&self) -> anyhow::Result<LmdbSnapshot> {
        Ok(LmdbSnapshot {
            txn: read_txn(&self.shared)?,
            shared: self.shared.clone(),
        })
    }

    /// Bytes of the environment's data file.
    pub fn disk_bytes(&self) -> anyhow::Result<u64> {
        Ok(self.shared.env.real_disk_size()?)
    }

    /// One write transaction: `Ok(Err(_))` when the map is full.
    fn try_write(&self, batch: &[(String, Option<String>)]) -> anyhow::Result<Result<(), heed::Error>> {
        let s = &*self.shared;
        let attempt = || -> Result<(), heed::Error> {
            let mut txn = s.env.write_txn()?;
            // Keys above the last one are appended: no search, full pages.
            let db_last: Option<Vec<u8>> = s.db.last(&txn)?.map(|(k, _)| k.to_vec());
            let mut floor: Option<&[u8]> = db_last.as_deref();
            let mut appending = true;
            for (key, value) in batch {
                let key = key.as_bytes();
                match value {
                    Some(v) => {
                        if appending && floor.is_none_or(|l| key > l) {
                            s.db.put_with_flags(&mut txn, PutFlags::APPEND, key, v.as_bytes())?;
                            floor = Some(key);
                        } else {
                            appending = false;
                            s.db.put(&mut txn, key, v.as_bytes())?;
                        }
                    }
                    None => {
                        s.db.delete(&mut txn, key)?;
                    }
                }
            }
            txn.commit()
        };
        match attempt() {
            Err(heed::Error::Mdb(heed::MdbError::MapFull)) => Ok(Err(heed::Error::Mdb(heed::MdbError::MapFull))),
            Err(e) => Err(e).with_context(|| format!("writing to {}", s.path.display())),
            Ok(()) => Ok(Ok(())),
        }
    }

    /// Doubles the map while it is less than twice the data file, when it
    /// can. LMDB cannot resize while a snapshot holds a read transaction,
    /// and a full map then fails the write; kept this far ahead, a write made
    /// during a snapshot (a block, while the node builds one) would have to
    /// double the state to run out of room.
    fn grow_ahead(&self) -> anyhow::Result<()> {
        if Arc::strong_count(&self.shared) > 1 {
            return Ok(()); // a snapshot is open: the next write tries again
        }
        while (self.disk_bytes()?.saturating_mul(2)) as usize > self.shared.env.info().map_size {
            self.grow()?;
        }
        Ok(())
    }

    /// Doubles the map, as Xian does when LMDB reports it full.
    fn grow(&self) -> anyhow::Result<()> {
        let s = &*self.shared;
        // LMDB may only resize while this process has no transaction open;
        // snapshots hold read transactions.
        if Arc::strong_count(&self.shared) > 1 {
            bail!(
                "the LMDB map of {} is full ({} MiB) while a snapshot of it is being read; \
                 it grows once the snapshot is done (try again then)",
                s.path.display(),
                s.env.info().map_size >> 20
            );
        }
        let new = s.env.info().map_size.saturating_mul(2);
        tracing::info!(dir = %s.path.display(), map_mib = new >> 20, "growing the LMDB map");
        // SAFETY: no transaction of this environment is open in this process
        // (checked above: every snapshot holds a reference; writes are done).
        unsafe { s.env.resize(new) }.with_context(|| format!("growing the LMDB map of {}", s.path.display()))
    }
}

/// Opens (or shares) the environment in `dir`.
fn open_env(dir: &Path, read_only: bool) -> anyhow::Result<Arc<Shared>> {
    let path = dir
        .canonicalize()
        .with_context(|| format!("opening {}", dir.display()))?;
    let mut open = registry().lock().expect("LMDB registry lock");
    if let Some(shared) = open.get(&path).and_then(Weak::upgrade) {
        if shared.read_only && !read_only {
            bail!(
                "{} is already open read-only in this process; close it before writing",
                path.display()
            );
        }
        return Ok(shared);
    }
    let data = path.join("data.mdb");
    let existing = std::fs::metadata(&data).map(|m| m.len()).unwrap_or(0);
    let mut options = EnvOpenOptions::new().read_txn_without_tls();
    // The map must cover the file; room to grow beyond it avoids early resizes.
    options.map_size(map_size_for(existing)).max_dbs(1);
    let mut flags = EnvFlags::empty();
    if read_only {
        flags |= EnvFlags::READ_ONLY;
    }
    // SAFETY: LMDB's own lock file coordinates every process that opens the
    // environment; this process opens it once (the registry above).
    let env = unsafe { options.flags(flags).open(&path) }.map_err(|e| env_error(&path, e, read_only))?;
    let db = if read_only {
        let rtxn = env.read_txn()?;
        env.open_databases_and_commit(rtxn, |dbo, rtxn| {
            dbo.open_database::<Bytes, Bytes>(rtxn, None)
                .map(CommitOrAbort::<_, ()>::Commit)
        })
        .map_err(anyhow::Error::from)?
        .unwrap_commit()
        .ok_or_else(|| anyhow!("{} has no main database", path.display()))?
    } else {
        let wtxn = env.write_txn()?;
        env.create_databases_and_commit(wtxn, |dbo, wtxn| {
            dbo.create_database::<Bytes, Bytes>(wtxn, None)
                .map(CommitOrAbort::<_, ()>::Commit)
        })
        .map_err(anyhow::Error::from)?
        .unwrap_commit()
    };
    let shared = Arc::new(Shared {
        env,
        db,
        read_only,
        path: path.clone(),
    });
    open.retain(|_, w| w.strong_count() > 0);
    open.insert(path, Arc::downgrade(&shared));
    Ok(shared)
}

/// Test-only override of the initial map size (0: Xian's 4 GiB).
static INITIAL_MAP_OVERRIDE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Tests only: environments opened from now on in this process start with a
/// map of `bytes` (rounded up to a power of two) instead of 4 GiB, so a
/// small state exercises the doubling on `MDB_MAP_FULL`. 0 restores 4 GiB.
#[doc(hidden)]
pub fn set_initial_map_size_for_tests(bytes: usize) {
    INITIAL_MAP_OVERRIDE.store(bytes, std::sync::atomic::Ordering::SeqCst);
}

/// The map size of the open environment in `home`'s process view (for tests).
#[doc(hidden)]
pub fn map_size(store: &XianLmdbStore) -> usize {
    store.shared.env.info().map_size
}

/// Tests only: opens a write transaction, puts `entries`, runs `hold` with
/// the transaction still open (uncommitted), then commits.
#[doc(hidden)]
pub fn hold_write_txn_for_tests(
    store: &XianLmdbStore,
    entries: &[(&str, &str)],
    hold: impl FnOnce(),
) -> anyhow::Result<()> {
    let s = &*store.shared;
    let mut txn = s.env.write_txn()?;
    for (k, v) in entries {
        s.db.put(&mut txn, k.as_bytes(), v.as_bytes())?;
    }
    hold();
    txn.commit()?;
    Ok(())
}

/// Xian's 4 GiB, or the next power of two at least twice the data file.
fn map_size_for(file_bytes: u64) -> usize {
    let want = (file_bytes.saturating_mul(2) as usize).next_power_of_two();
    let initial = match INITIAL_MAP_OVERRIDE.load(std::sync::atomic::Ordering::SeqCst) {
        0 => INITIAL_MAP_SIZE,
        n => n.next_power_of_two(),
    };
    want.max(initial)
}

/// The LMDB version statesnap links, e.g. "0.9.36" (the 0.9 release line
/// Python's `lmdb` bundles: vendor/lmdb-sys/README.md).
pub(crate) fn heed_version() -> String {
    let v = heed::lmdb_version();
    format!("{}.{}.{}", v.major, v.minor, v.patch)
}

fn env_error(path: &Path, e: heed::Error, read_only: bool) -> anyhow::Error {
    let hint = match &e {
        heed::Error::Mdb(heed::MdbError::Invalid) => {
            " (data.mdb is not an LMDB 0.9 environment, or it is damaged)".to_string()
        }
        heed::Error::Mdb(heed::MdbError::VersionMismatch) => format!(
            ": the environment is of another LMDB version than statesnap's {} (LMDB 0.9, data and lock \
             format 1, as Xian's node writes them). Either data.mdb was written by LMDB 1.0 (for example \
             Python's `lmdb` with lib_version=1), which LMDB 0.9 cannot read, or a process linked with \
             another LMDB build has {} open: stop that process and try again",
            heed_version(),
            path.display()
        ),
        heed::Error::Io(io) if io.kind() == std::io::ErrorKind::PermissionDenied && read_only => {
            " (even a reader needs write access to lock.mdb)".to_string()
        }
        _ => String::new(),
    };
    anyhow!("opening the LMDB environment {}: {e}{hint}", path.display())
}

/// A read transaction, adopting a map another process grew.
fn read_txn(shared: &Arc<Shared>) -> anyhow::Result<RoTxn<'static, WithoutTls>> {
    match shared.env.clone().static_read_txn() {
        Err(heed::Error::Mdb(heed::MdbError::MapResized)) => {
            // SAFETY: size 0 adopts the size another process set; LMDB
            // allows it when the resize error is reported.
            unsafe { shared.env.resize(0) }?;
            Ok(shared.env.clone().static_read_txn()?)
        }
        other => other.with_context(|| format!("reading {}", shared.path.display())),
    }
}

/// A stored value as text: Xian writes UTF-8.
fn text(key: &[u8], value: &[u8], path: &Path) -> anyhow::Result<String> {
    String::from_utf8(value.to_vec()).map_err(|_| {
        anyhow!(
            "the value of key {:?} in {} is not UTF-8 text",
            String::from_utf8_lossy(key),
            path.display()
        )
    })
}

/// Checks a key LMDB can hold: 1 to 511 bytes.
fn check_key(key: &str) -> anyhow::Result<()> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        bail!(
            "key {:?} is {} bytes; an LMDB home holds keys of 1 to {MAX_KEY_BYTES} bytes (LMDB's key limit, \
             the same for Xian's node)",
            key.chars().take(80).collect::<String>(),
            key.len()
        );
    }
    Ok(())
}

impl StateStore for XianLmdbStore {
    fn get(&self, key: &str) -> anyhow::Result<Option<String>> {
        let txn = read_txn(&self.shared)?;
        get_in(&self.shared, &txn, key)
    }

    fn entries(&self) -> anyhow::Result<Box<dyn Iterator<Item = anyhow::Result<Entry>> + '_>> {
        Ok(Box::new(self.snapshot()?.into_entries()))
    }

    fn write_batch(&mut self, batch: &[(String, Option<String>)]) -> anyhow::Result<()> {
        if self.shared.read_only {
            bail!("{} was opened read-only", self.home.display());
        }
        for (key, _) in batch {
            check_key(key)?;
        }
        if self.bulk {
            // SAFETY: heed asks that one thread at a time set flags and that
            // `NO_SYNC` be used knowingly. Bulk mode is only set on a new
            // home that one load writes alone (restore staging, genesis,
            // import, conversion), and this writer (`&mut self`) sets it
            // outside any write transaction; `NO_SYNC` only defers
            // durability, which `flush` restores with one sync before the
            // home is used.
            unsafe { self.shared.env.set_flags(EnvFlags::NO_SYNC, heed::FlagSetMode::Enable) }?;
        }
        let result = loop {
            match self.try_write(batch) {
                Ok(Err(_map_full)) => self.grow()?,
                Ok(Ok(())) => break self.grow_ahead(),
                Err(e) => break Err(e),
            }
        };
        if self.bulk {
            // SAFETY: as for `Enable` above; the batch's write transaction
            // has been committed or aborted by now.
            unsafe { self.shared.env.set_flags(EnvFlags::NO_SYNC, heed::FlagSetMode::Disable) }?;
        }
        result
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        if self.shared.read_only {
            return Ok(());
        }
        self.shared
            .env
            .force_sync()
            .with_context(|| format!("syncing {} to disk", self.shared.path.display()))
    }
}

fn get_in(shared: &Shared, txn: &RoTxn<'static, WithoutTls>, key: &str) -> anyhow::Result<Option<String>> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Ok(None); // LMDB cannot hold it, so it has no value
    }
    let value = shared
        .db
        .get(txn, key.as_bytes())
        .with_context(|| format!("reading key {key:?} from {}", shared.path.display()))?;
    value.map(|v| text(key.as_bytes(), v, &shared.path)).transpose()
}

/// A consistent read-only view of an LMDB home at one commit.
pub struct LmdbSnapshot {
    txn: RoTxn<'static, WithoutTls>,
    shared: Arc<Shared>,
}

impl LmdbSnapshot {
    /// The entries after `after` (all when `None`), at most `limit`, in key order.
    /// Also widens `touched` to cover the mapped bytes the batch was read from.
    fn batch_after(&self, after: Option<&[u8]>, limit: usize, touched: &mut Touched) -> anyhow::Result<Vec<Entry>> {
        let s = &*self.shared;
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let range =
            s.db.range(&self.txn, &(lower, Bound::Unbounded))
                .with_context(|| format!("reading {}", s.path.display()))?;
        let mut out = Vec::with_capacity(limit.min(READ_BATCH));
        for item in range.take(limit) {
            let (k, v) = item.with_context(|| format!("reading {}", s.path.display()))?;
            touched.cover(k);
            touched.cover(v);
            let key = String::from_utf8(k.to_vec()).map_err(|_| {
                anyhow!(
                    "a key in {} is not UTF-8: {:?}",
                    s.path.display(),
                    String::from_utf8_lossy(k)
                )
            })?;
            out.push(Entry {
                stored: text(k, v, &s.path)?,
                key,
            });
        }
        Ok(out)
    }

    /// The view's entries in key order, owning the view.
    pub(crate) fn into_entries(self) -> Walk<LmdbSnapshot> {
        Walk::new(self)
    }
}

/// The span of LMDB's memory map a walk has read from since it last let go
/// of it. Keys and values a read transaction returns point into the map, one
/// contiguous mapping of the data file, so the span lies within it.
#[derive(Default)]
struct Touched(Option<(usize, usize)>);

impl Touched {
    fn cover(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return; // an empty slice's address need not be in the map
        }
        let (lo, hi) = (bytes.as_ptr() as usize, bytes.as_ptr() as usize + bytes.len());
        self.0 = Some(self.0.map_or((lo, hi), |(l, h)| (l.min(lo), h.max(hi))));
    }

    /// Unmaps the span's pages from this process (not from the page cache:
    /// the next access maps them again, with the same contents, as LMDB's
    /// map is a shared file mapping it only reads). A walk touches every page
    /// of the file once; without this its resident set would grow to the
    /// whole file (375 MB at 3M keys) although it allocates little.
    fn release(&mut self, map_size: usize) {
        let Some((lo, hi)) = self.0.take() else { return };
        if hi - lo > map_size {
            return; // cannot be one span of the map: leave memory alone
        }
        #[cfg(target_os = "linux")]
        {
            // SAFETY: sysconf has no preconditions.
            let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as usize;
            let start = lo - lo % page;
            // SAFETY: [start, hi) lies within LMDB's mapping of the data file
            // (see above; the mapping starts on a page boundary, so `start`
            // is in it too); MADV_DONTNEED on a shared file mapping only drops
            // page-table entries.
            unsafe { libc::madvise(start as *mut libc::c_void, hi - start, libc::MADV_DONTNEED) };
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (lo, hi);
    }
}

/// Entries of a snapshot in key order, copied out a batch per cursor seek
/// (a borrowed cursor cannot live beside the transaction it borrows).
pub(crate) struct Walk<S> {
    snapshot: S,
    batch: std::vec::IntoIter<Entry>,
    last: Option<Vec<u8>>,
    done: bool,
    /// Batches read since the mapped pages were last released.
    since_release: usize,
    touched: Touched,
}

/// Batches between releases of the mapped pages (about 10 MB of the file).
const RELEASE_EVERY: usize = 64;

impl<S: std::borrow::Borrow<LmdbSnapshot>> Walk<S> {
    fn new(snapshot: S) -> Self {
        Walk {
            snapshot,
            batch: Vec::new().into_iter(),
            last: None,
            done: false,
            since_release: 0,
            touched: Touched::default(),
        }
    }
}

impl<S: std::borrow::Borrow<LmdbSnapshot>> Iterator for Walk<S> {
    type Item = anyhow::Result<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            if let Some(e) = self.batch.next() {
                return Some(Ok(e));
            }
            self.since_release += 1;
            if self.since_release == RELEASE_EVERY {
                self.since_release = 0;
                self.touched.release(self.snapshot.borrow().shared.env.info().map_size);
            }
            match self
                .snapshot
                .borrow()
                .batch_after(self.last.as_deref(), READ_BATCH, &mut self.touched)
            {
                Ok(b) if b.is_empty() => self.done = true,
                Ok(b) => {
                    // The next seek starts after this batch's last key.
                    self.last = b.last().map(|e| e.key.as_bytes().to_vec());
                    self.batch = b.into_iter();
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

impl StateStore for LmdbSnapshot {
    fn get(&self, key: &str) -> anyhow::Result<Option<String>> {
        get_in(&self.shared, &self.txn, key)
    }

    fn entries(&self) -> anyhow::Result<Box<dyn Iterator<Item = anyhow::Result<Entry>> + '_>> {
        Ok(Box::new(Walk::new(self)))
    }

    fn write_batch(&mut self, _batch: &[(String, Option<String>)]) -> anyhow::Result<()> {
        bail!("an LMDB snapshot is read-only")
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}
