//! Xian's HDF5 state home (docs/XIAN.md §1) as a [`StateStore`].
//!
//! Where keys live and how unexpressible keys are escaped: [`super::key_layout`].
//! `value` is written as a variable-length UTF-8 string attribute, as h5py
//! writes a Python `str`; reading also accepts variable-length ASCII and the
//! fixed-length byte strings (`S<n>`) older Xian versions wrote. Xian's
//! `block` attribute is neither read nor written (docs/XIAN.md §1.2).
//!
//! Speed (docs/BENCHMARKS.md §6, §7): the file being written stays open together with the
//! groups of the last key written, so sorted batches reuse them; files read
//! by `get` stay open; new files use the 1.8 file format (as compact as the
//! latest, without its crash-sensitive open-for-write flag); per-key work
//! calls the HDF5 C API directly (one group open, one attribute read).
//!
//! The sorted walk (`entries`), fast and bounded on every HDF5 file format
//! and group size: [`walk`].

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::ffi::{c_char, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context};
use hdf5::file::{CacheDecreaseMode, FileAccessBuilder, LibraryVersion, MetadataCacheConfig};
use hdf5::File;
use hdf5_sys::h5::{hbool_t, herr_t, H5free_memory};
use hdf5_sys::h5a::{
    H5Aclose, H5Acreate2, H5Adelete, H5Aexists, H5Aget_space, H5Aget_type, H5Aopen, H5Aread, H5Awrite,
};
use hdf5_sys::h5f::{H5F_scope_t, H5Fclose, H5Fflush, H5Fopen, H5F_ACC_RDWR};
use hdf5_sys::h5g::{H5Gclose, H5Gcreate2, H5Gopen2};
use hdf5_sys::h5i::hid_t;
use hdf5_sys::h5l::H5Lexists;
use hdf5_sys::h5p::{
    H5Pcreate, H5Pset, H5Pset_char_encoding, H5Pset_obj_track_times, H5P_CLS_GROUP_CREATE, H5P_CLS_LINK_CREATE,
    H5P_DEFAULT,
};
use hdf5_sys::h5s::{H5S_class_t, H5Sclose, H5Screate, H5Sget_simple_extent_npoints};
use hdf5_sys::h5t::{
    H5T_class_t, H5T_cset_t, H5Tclose, H5Tcopy, H5Tget_class, H5Tget_cset, H5Tget_size, H5Tis_variable_str,
    H5Tset_cset, H5Tset_size, H5T_C_S1, H5T_VARIABLE,
};

use super::key_layout::{key_path, KeyPath, DIRS};
use super::{Entry, StateStore};

mod lock;
mod spill;
mod walk;

use lock::{lock, Access, LockedFile};

const VALUE: &CStr = c"value";
/// Files kept open for `get` before the cache is emptied.
const MAX_READERS: usize = 64;

/// A file by directory (`run_state/` or not) and stored name.
type FileId = (bool, String);

/// A Xian-layout HDF5 home.
pub struct XianHdf5Store {
    home: PathBuf,
    /// The one file open for writing: one at a time bounds HDF5's per-file caches.
    writer: Option<Writer>,
    /// Files opened read-only by `get`.
    readers: RefCell<HashMap<FileId, LockedFile>>,
    /// Files written and closed since the last flush, to fsync.
    unsynced: BTreeSet<PathBuf>,
    /// Whether a file was created since the last flush (its directory needs an fsync).
    created: bool,
}

impl XianHdf5Store {
    /// Opens an existing home.
    pub fn open(home: &Path) -> anyhow::Result<Self> {
        if !home.is_dir() {
            bail!("{} is not a Xian state home: no such directory", home.display());
        }
        if !DIRS.iter().any(|d| home.join(d).is_dir()) {
            bail!(
                "{} is not a Xian state home: it has neither contract_state/ nor run_state/",
                home.display()
            );
        }
        Ok(Self::at(home))
    }

    /// Creates a new home in a missing or empty directory.
    pub fn create(home: &Path) -> anyhow::Result<Self> {
        if home.exists() && std::fs::read_dir(home)?.next().is_some() {
            bail!(
                "cannot create a state home in {}: the directory is not empty",
                home.display()
            );
        }
        for d in DIRS {
            let dir = home.join(d);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        Ok(Self::at(home))
    }

    fn at(home: &Path) -> Self {
        XianHdf5Store {
            home: home.to_path_buf(),
            writer: None,
            readers: RefCell::default(),
            unsynced: BTreeSet::new(),
            created: false,
        }
    }

    pub(crate) fn home(&self) -> &Path {
        &self.home
    }

    fn path(&self, p: &KeyPath) -> PathBuf {
        self.home.join(p.dir()).join(&p.file)
    }

    /// The writer for `p`'s file, opening (or, when `create`, creating) it.
    fn writer(&mut self, p: &KeyPath, create: bool) -> anyhow::Result<Option<&mut Writer>> {
        let id = (p.run_state, p.file.clone());
        if self.writer.as_ref().is_none_or(|w| w.id != id) {
            if let Some(old) = self.writer.take() {
                self.unsynced.insert(old.path.clone());
            }
            // HDF5 cannot open a file for writing while it is open read-only.
            self.readers.get_mut().remove(&id);
            let path = self.path(p);
            let context = || format!("opening {} for writing", path.display());
            let file = if path.exists() {
                open_locked(&path, Access::Write, || {
                    File::with_options().with_fapl(file_access).open_rw(&path)
                })
                .with_context(context)?
            } else if create {
                self.created = true;
                let file = File::with_options()
                    .with_fapl(|f| file_access(f).libver_bounds(LibraryVersion::V18, LibraryVersion::V18))
                    .create_excl(&path)
                    .with_context(context)?;
                LockedFile::new(file, lock(&path, Access::Write)?)
            } else {
                return Ok(None);
            };
            self.writer = Some(Writer {
                id,
                path,
                file,
                chain: Vec::new(),
            });
        }
        Ok(self.writer.as_mut())
    }

    fn write_one(&mut self, p: &KeyPath, value: Option<&str>) -> anyhow::Result<()> {
        let value = value
            .map(CString::new)
            .transpose()
            .map_err(|_| anyhow!("the value contains a NUL character, which an HDF5 string cannot hold"))?;
        let Some(w) = self.writer(p, value.is_some())? else {
            return Ok(()); // deleting from a missing file
        };
        let Some((group, fresh)) = w.descend(&p.groups, value.is_some())? else {
            return Ok(()); // deleting a missing key
        };
        // SAFETY: under HDF5's lock (`h5sync`); `group` is open (held by the
        // writer's chain or its file, both alive here); the ids of `types()`
        // live as long as the process; `VALUE` and `v` are NUL-terminated and
        // outlive the calls; a variable-length string's memory form is one
        // `*const c_char`, which is what `H5Awrite` reads through `&ptr`.
        h5sync(|| unsafe {
            if !fresh && check(H5Aexists(group, VALUE.as_ptr()))? > 0 {
                check(H5Adelete(group, VALUE.as_ptr()))?;
            }
            if let Some(v) = &value {
                let t = types();
                let attr = Id::new(
                    H5Acreate2(group, VALUE.as_ptr(), t.vlen_utf8, t.scalar, H5P_DEFAULT, H5P_DEFAULT),
                    H5Aclose,
                )?;
                let ptr = v.as_ptr();
                check(H5Awrite(attr.0, t.vlen_utf8, (&raw const ptr).cast()))?;
            }
            Ok(())
        })
    }

    /// A read handle on `p`'s file, `None` when it does not exist.
    fn reader(&self, p: &KeyPath) -> anyhow::Result<Option<LockedFile>> {
        let id = (p.run_state, p.file.clone());
        if let Some(w) = self.writer.as_ref().filter(|w| w.id == id) {
            return Ok(Some(w.file.clone()));
        }
        let mut readers = self.readers.borrow_mut();
        if let Some(f) = readers.get(&id) {
            return Ok(Some(f.clone()));
        }
        let path = self.path(p);
        if !path.exists() {
            return Ok(None);
        }
        if readers.len() >= MAX_READERS {
            readers.clear();
        }
        let file = open_read(&path)?;
        readers.insert(id, file.clone());
        Ok(Some(file))
    }
}

impl XianHdf5Store {
    /// [`StateStore::entries`] sorting each group's children in batches of
    /// `batch` items (two per child): for tests of the batch boundaries.
    #[doc(hidden)]
    pub fn entries_in_batches(
        &self,
        batch: usize,
    ) -> anyhow::Result<Box<dyn Iterator<Item = anyhow::Result<Entry>> + '_>> {
        Ok(Box::new(walk::Walk::new(&self.home, batch)?))
    }
}

/// `file, group /a/b` of a key, for errors.
fn location(home: &Path, p: &KeyPath) -> String {
    format!(
        "{}, group /{}",
        home.join(p.dir()).join(&p.file).display(),
        p.groups.join("/")
    )
}

impl XianHdf5Store {
    /// Hands every write so far to the operating system without waiting for
    /// the disk: the files on disk are then consistent and survive the
    /// process being killed (not a power cut; [`StateStore::flush`] covers that).
    pub(crate) fn flush_to_os(&mut self) -> anyhow::Result<()> {
        if let Some(w) = &self.writer {
            // SAFETY: under HDF5's lock; the file id is open (owned by `w.file`)
            // and `H5Fflush` takes no pointers.
            h5sync(|| unsafe { check(H5Fflush(w.file.id(), H5F_scope_t::H5F_SCOPE_LOCAL)) })
                .with_context(|| format!("flushing {}", w.path.display()))?;
            self.unsynced.insert(w.path.clone());
        }
        Ok(())
    }
}

impl StateStore for XianHdf5Store {
    fn get(&self, key: &str) -> anyhow::Result<Option<String>> {
        let p = key_path(key)?;
        let ctx = || format!("reading key {key:?} from {}", location(&self.home, &p));
        let Some(file) = self.reader(&p).with_context(ctx)? else {
            return Ok(None);
        };
        let mut group = None;
        for name in &p.groups {
            let parent = group.as_ref().map_or(file.id(), |g: &Id| g.0);
            let name = CString::new(name.as_str()).expect("keys with NUL are refused");
            // SAFETY: under HDF5's lock; `parent` is open (the file, or the
            // group `Id` held in `group`), `name` is NUL-terminated and
            // outlives the calls, and the opened group is owned by an `Id`.
            let child = h5sync(|| unsafe {
                if check(H5Lexists(parent, name.as_ptr(), H5P_DEFAULT))? == 0 {
                    return Ok(None);
                }
                Id::new(H5Gopen2(parent, name.as_ptr(), H5P_DEFAULT), H5Gclose).map(Some)
            })
            .with_context(ctx)?;
            match child {
                Some(c) => group = Some(c),
                None => return Ok(None),
            }
        }
        read_value(group.as_ref().map_or(file.id(), |g| g.0)).with_context(ctx)
    }

    fn entries(&self) -> anyhow::Result<Box<dyn Iterator<Item = anyhow::Result<Entry>> + '_>> {
        self.entries_in_batches(walk::BATCH)
    }

    fn write_batch(&mut self, batch: &[(String, Option<String>)]) -> anyhow::Result<()> {
        for (key, value) in batch {
            let p = key_path(key)?;
            self.write_one(&p, value.as_deref())
                .with_context(|| format!("writing key {key:?} to {}", location(&self.home, &p)))?;
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.flush_to_os()?;
        let sync = |path: &Path| {
            std::fs::File::open(path)
                .and_then(|f| f.sync_all())
                .with_context(|| format!("syncing {} to disk", path.display()))
        };
        for path in std::mem::take(&mut self.unsynced) {
            sync(&path)?;
        }
        if std::mem::take(&mut self.created) {
            for d in DIRS {
                sync(&self.home.join(d))?;
            }
        }
        Ok(())
    }
}

/// The file being written and the groups of the last key written.
struct Writer {
    id: FileId,
    path: PathBuf,
    /// (stored name, open group) from the file's root down.
    chain: Vec<(String, Id)>,
    /// Last: HDF5 closes the file once its groups are closed, and only then
    /// may its lock go.
    file: LockedFile,
}

impl Writer {
    /// The group at `groups`, created when missing and `create`; with
    /// whether it was created just now (so it has no attributes yet).
    fn descend(&mut self, groups: &[String], create: bool) -> anyhow::Result<Option<(hid_t, bool)>> {
        let keep = self.chain.iter().zip(groups).take_while(|((a, _), b)| a == *b).count();
        self.chain.truncate(keep);
        let mut fresh = false;
        for name in &groups[keep..] {
            let parent = self.chain.last().map_or(self.file.id(), |(_, g)| g.0);
            let c = CString::new(name.as_str()).expect("keys with NUL are refused");
            // SAFETY: under HDF5's lock; `parent` is open (the file, or a
            // group held in `self.chain`), `c` is NUL-terminated and outlives
            // the calls, the property lists of `types()` live as long as the
            // process, and the opened or created group is owned by an `Id`.
            let group = h5sync(|| unsafe {
                // Below a group created just now nothing exists yet.
                if !fresh && check(H5Lexists(parent, c.as_ptr(), H5P_DEFAULT))? > 0 {
                    return Id::new(H5Gopen2(parent, c.as_ptr(), H5P_DEFAULT), H5Gclose).map(Some);
                }
                if !create {
                    return Ok(None);
                }
                fresh = true;
                let t = types();
                Id::new(H5Gcreate2(parent, c.as_ptr(), t.lcpl, t.gcpl, H5P_DEFAULT), H5Gclose).map(Some)
            })?;
            let Some(group) = group else { return Ok(None) };
            self.chain.push((name.clone(), group));
        }
        Ok(Some((self.chain.last().map_or(self.file.id(), |(_, g)| g.0), fresh)))
    }
}

/// An HDF5 id opened here, closed on drop.
struct Id(hid_t, unsafe extern "C" fn(hid_t) -> herr_t);

impl Id {
    /// Takes ownership of `id`, or fails with HDF5's error when it is invalid.
    fn new(id: hid_t, close: unsafe extern "C" fn(hid_t) -> herr_t) -> anyhow::Result<Self> {
        Ok(Id(hdf5::h5check(id)?, close))
    }
}

impl Drop for Id {
    fn drop(&mut self) {
        // SAFETY: under HDF5's lock; `self.0` is a valid id (checked by
        // `Id::new`) owned by this `Id` alone, and `self.1` is the close
        // function of its kind, called once, here.
        h5sync(|| unsafe { (self.1)(self.0) });
    }
}

/// Fails with HDF5's error message when `ret` is negative.
fn check(ret: i32) -> anyhow::Result<i32> {
    Ok(hdf5::h5check(ret)?)
}

/// Runs raw HDF5 calls under the binding's library lock.
fn h5sync<T>(f: impl FnOnce() -> T) -> T {
    hdf5::sync::sync(f)
}

/// Datatypes and property lists made once and shared by every call.
struct Types {
    vlen_utf8: hid_t,
    vlen_ascii: hid_t,
    scalar: hid_t,
    /// Link names in UTF-8, as h5py writes them.
    lcpl: hid_t,
    /// No modification times in group headers: smaller files, no clock calls.
    gcpl: hid_t,
}

fn types() -> &'static Types {
    static TYPES: OnceLock<Types> = OnceLock::new();
    TYPES.get_or_init(|| {
        // SAFETY: under HDF5's lock; the calls take no pointers, only ids
        // made here or HDF5's predefined ones (`H5T_C_S1` and the property
        // list classes, initialised by the binding when first read); a call
        // that fails returns a negative id, which the assertion below refuses.
        h5sync(|| unsafe {
            let vlen = |cset| {
                let t = H5Tcopy(*H5T_C_S1);
                H5Tset_size(t, H5T_VARIABLE);
                H5Tset_cset(t, cset);
                t
            };
            let lcpl = H5Pcreate(*H5P_CLS_LINK_CREATE);
            H5Pset_char_encoding(lcpl, H5T_cset_t::H5T_CSET_UTF8);
            let gcpl = H5Pcreate(*H5P_CLS_GROUP_CREATE);
            H5Pset_obj_track_times(gcpl, 0);
            let t = Types {
                vlen_utf8: vlen(H5T_cset_t::H5T_CSET_UTF8),
                vlen_ascii: vlen(H5T_cset_t::H5T_CSET_ASCII),
                scalar: H5Screate(H5S_class_t::H5S_SCALAR),
                lcpl,
                gcpl,
            };
            assert!(
                [t.vlen_utf8, t.vlen_ascii, t.scalar, t.lcpl, t.gcpl]
                    .iter()
                    .all(|&id| id >= 0),
                "HDF5 could not make its basic string types and property lists"
            );
            t
        })
    })
}

/// HDF5's metadata cache, one per open file. By default it grows whenever
/// its hit rate is low, which a walk over millions of object headers always
/// has; here it stays at 1 MiB and grows only to fit one large entry (a
/// flash increase): a symbol-table group's local name heap, which h5py's
/// default format keeps in one piece per group (tens of MiB for hundreds of
/// thousands of children) and which every lookup by name in that group
/// reads. A cache too small for it re-reads the whole heap per lookup.
///
/// Once grown, the cache would fill with the object headers a walk visits
/// once each, several times their file size in memory apiece (622 MiB of
/// RSS at 1M keys of an h5py home). So entries not used for one short epoch
/// are evicted and the cache shrinks back by what they took (age-out, with
/// no hit-rate condition and no cap on the decrease): what a walk keeps
/// using, the heap of the group being listed, stays; the rest goes.
fn small_cache(fapl: &mut FileAccessBuilder) -> &mut FileAccessBuilder {
    let config = MetadataCacheConfig {
        set_initial_size: true,
        // Small: entries take several times their file size in memory, and
        // a streaming walk reuses few of them (8 MiB cost ~100 MB of RSS).
        initial_size: 1 << 20,
        min_size: 1 << 20,
        max_size: 128 << 20, // the most HDF5 1.10 allows
        // Never grow for a low hit rate, only for an entry too large to fit.
        lower_hr_threshold: 0.0,
        decr_mode: CacheDecreaseMode::AgeOut,
        epoch_length: 1000,
        epochs_before_eviction: 1,
        apply_max_decrement: false,
        ..MetadataCacheConfig::default()
    };
    fapl.mdc_config(&config)
}

fn open_read(path: &Path) -> anyhow::Result<LockedFile> {
    open_locked(path, Access::Read, || {
        File::with_options().with_fapl(file_access).open(path)
    })
    .with_context(|| format!("opening {}", path.display()))
}

/// Locks an existing file for `access`, then opens it with `open` (see
/// [`after_crash_recovery`]).
fn open_locked(path: &Path, access: Access, open: impl Fn() -> hdf5::Result<File>) -> anyhow::Result<LockedFile> {
    let lock = lock(path, access)?;
    Ok(LockedFile::new(after_crash_recovery(path, open)?, lock))
}

/// Access properties of every file opened here: [`small_cache`], and no
/// locking by HDF5 (see [`lock`]).
fn file_access(fapl: &mut FileAccessBuilder) -> &mut FileAccessBuilder {
    small_cache(fapl).file_locking(false)
}

/// Opens with `open`; if that fails because the file is still marked open
/// for writing, clears the mark and tries once more.
///
/// Files in HDF5's 1.10 format (superblock v3, which h5py writes with
/// `libver="latest"`) carry a "file is open for writing" flag that a killed
/// process never clears, after which HDF5 refuses every open. The node's
/// write-ahead log, not HDF5, is what makes its state durable, so reopening
/// such a file is the right recovery. (Files statesnap creates use the 1.8
/// format, which has no such flag and is just as compact.) The caller holds
/// the file's lock.
fn after_crash_recovery(path: &Path, open: impl Fn() -> hdf5::Result<File>) -> hdf5::Result<File> {
    match open() {
        Err(e) if e.to_string().contains("h5clear") => {
            tracing::warn!(file = %path.display(), "clearing the open-for-write mark a killed process left");
            clear_status_flags(path);
            open()
        }
        other => other,
    }
}

/// What `h5clear -s` does: open with the `clear_status_flags` access
/// property and close again. Failures surface on the following open.
fn clear_status_flags(path: &Path) {
    let Ok(name) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return;
    };
    let Ok(fapl) = FileAccessBuilder::new().file_locking(false).finish() else {
        return;
    };
    // SAFETY: under HDF5's lock; `name` and the property name are
    // NUL-terminated and outlive the calls; `fapl` is a valid access list
    // (owned by `fapl`, alive here); the `clear_status_flags` property is an
    // `hbool_t`, which `H5Pset` copies from `&clear`; the file id is used
    // only after it was checked valid, and closed once.
    h5sync(|| unsafe {
        let mut clear: hbool_t = 1;
        if H5Pset(fapl.id(), c"clear_status_flags".as_ptr(), (&raw mut clear).cast()) >= 0 {
            let fid = H5Fopen(name.as_ptr(), H5F_ACC_RDWR, fapl.id());
            if fid >= 0 {
                H5Fclose(fid);
            }
        }
    });
}

/// The `value` attribute of the object `loc` in either string form, `None`
/// when it has none.
fn read_value(loc: hid_t) -> anyhow::Result<Option<String>> {
    // SAFETY: under HDF5's lock; `loc` is an open object (the caller holds
    // it) and every id opened here is checked and owned by an `Id`; the
    // attribute holds exactly one string (checked), and `H5Aread` writes
    // into memory of its memory type's size: one `*mut c_char` for a
    // variable-length string (a NUL-terminated string HDF5 allocated, copied
    // and then freed with `H5free_memory`), `H5Tget_size` bytes otherwise.
    let bytes = h5sync(|| unsafe {
        if check(H5Aexists(loc, VALUE.as_ptr()))? == 0 {
            return Ok(None);
        }
        let attr = Id::new(H5Aopen(loc, VALUE.as_ptr(), H5P_DEFAULT), H5Aclose)?;
        let ftype = Id::new(H5Aget_type(attr.0), H5Tclose)?;
        let class = H5Tget_class(ftype.0);
        if class != H5T_class_t::H5T_STRING {
            bail!("attribute `value` is {class:?}, not a string");
        }
        let space = Id::new(H5Aget_space(attr.0), H5Sclose)?;
        let n = H5Sget_simple_extent_npoints(space.0);
        if n != 1 {
            bail!("attribute `value` holds {n} strings, not one");
        }
        if check(H5Tis_variable_str(ftype.0))? > 0 {
            let mtype = match H5Tget_cset(ftype.0) {
                H5T_cset_t::H5T_CSET_UTF8 => types().vlen_utf8,
                _ => types().vlen_ascii,
            };
            let mut ptr: *mut c_char = std::ptr::null_mut();
            check(H5Aread(attr.0, mtype, (&raw mut ptr).cast::<c_void>()))?;
            if ptr.is_null() {
                return Ok(Some(Vec::new()));
            }
            let bytes = CStr::from_ptr(ptr).to_bytes().to_vec();
            H5free_memory(ptr.cast());
            Ok(Some(bytes))
        } else {
            let mut buf = vec![0u8; H5Tget_size(ftype.0)];
            check(H5Aread(attr.0, ftype.0, buf.as_mut_ptr().cast()))?;
            // `S<n>` pads with NULs.
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            buf.truncate(end);
            Ok(Some(buf))
        }
    })?;
    bytes
        .map(|b| String::from_utf8(b).map_err(|_| anyhow!("attribute `value` is not UTF-8 text")))
        .transpose()
}

fn path_or_root(path: &str) -> &str {
    if path.is_empty() {
        "/"
    } else {
        path
    }
}
