//! The sorted, streaming walk over a home: every key with a value, in
//! ascending key order, in memory bounded by the batch size and the nesting
//! depth, whatever a group's child count or the file format.
//!
//! Order: among siblings, each child `c` stands for two items, its own value
//! (sort key `c`) and its subtree (sort key `c:`, as every key below it
//! starts so; `c.` for a file's variables). Decoded names never contain the
//! separator, so sorting the items bytewise and expanding them in order
//! yields ascending keys (`x` < `x0` < `x0:…` < `x:…`).
//!
//! Speed on every HDF5 file format (docs/BENCHMARKS.md §7):
//!
//! * A group's items are produced in batches of at most `batch` items: each
//!   batch is one native-order pass over the group's links (`H5Literate`,
//!   which reads a symbol-table group's name heap once per pass) keeping the
//!   `batch` smallest items above the last one handed out in a bounded heap.
//!   Native order is bytewise stored-name order in symbol-table groups
//!   (h5py's default format), so there a pass stops as soon as no later name
//!   can make the batch. Compact and dense groups (link storage, hash
//!   order) are listed in one pass and sorted in runs of `batch` items
//!   spilled to temporary files and merged (spill.rs).
//! * Each child is opened by the object address its link carries
//!   (`H5Oopen_by_addr`), never by name: a lookup by name in a large
//!   symbol-table group goes through its name heap, which a bounded metadata
//!   cache keeps evicting and re-reading (the 519 s of the issue).
//! * A child opened for its value stays open for its subtree item when that
//!   comes next, and `H5Gget_info` (no iteration) says whether it has any
//!   children; at most two handles are open per level.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::ffi::{c_char, c_void, CStr, CString};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use hdf5_sys::h5::{haddr_t, herr_t, hsize_t, H5_index_t, H5_iter_order_t};
use hdf5_sys::h5g::{H5G_info_t, H5G_storage_type_t, H5Gget_info};
use hdf5_sys::h5i::{hid_t, H5I_type_t, H5Iget_type};
use hdf5_sys::h5l::{H5L_info_t, H5L_type_t, H5Literate};
use hdf5_sys::h5o::{H5Oclose, H5Oopen, H5Oopen_by_addr};
use hdf5_sys::h5p::H5P_DEFAULT;

use super::spill::{Runs, Sorted};
use super::{check, h5sync, open_read, path_or_root, read_value, Id, LockedFile};
use crate::store::key_layout::{decode_file, decode_group, is_run_state, DIRS};
use crate::store::Entry;

/// Items per batch: two per child, each about 150 bytes, so a frame holds
/// at most about 20 MiB.
pub const BATCH: usize = 1 << 17;

/// The walk; see the module documentation.
pub(crate) struct Walk {
    /// Frames from the top (the files) down to the group being listed; empty when done.
    stack: Vec<Frame>,
    batch: usize,
}

impl Walk {
    pub fn new(home: &Path, batch: usize) -> anyhow::Result<Walk> {
        assert!(batch > 0, "a batch holds at least one item");
        Ok(Walk {
            stack: vec![Frame::top(home)?],
            batch,
        })
    }

    fn step(&mut self) -> anyhow::Result<Option<Entry>> {
        while let Some(frame) = self.stack.last_mut() {
            let Some(item) = frame.next(self.batch)? else {
                self.stack.pop();
                continue;
            };
            if item.subtree {
                if let Some(below) = frame.descend(&item)? {
                    self.stack.push(below);
                }
            } else if let Some(entry) = frame.visit(&item)? {
                return Ok(Some(entry));
            }
        }
        Ok(None)
    }
}

impl Iterator for Walk {
    type Item = anyhow::Result<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.step() {
            Ok(e) => e.map(Ok),
            Err(e) => {
                self.stack.clear(); // stop after an error
                Some(Err(e))
            }
        }
    }
}

/// One of the two items of a child (a file at the top, else a group).
pub(super) struct Item {
    /// The decoded name, followed by the separator for the subtree item.
    pub(super) key: Box<str>,
    pub(super) subtree: bool,
    /// The child's object address (hard links); other links are opened by name.
    pub(super) addr: Option<haddr_t>,
    /// The stored name when it differs from the decoded one.
    pub(super) stored: Option<Box<str>>,
}

impl Item {
    fn name(&self) -> &str {
        &self.key[..self.key.len() - self.subtree as usize]
    }

    fn stored(&self) -> &str {
        self.stored.as_deref().unwrap_or(self.name())
    }
}

impl PartialEq for Item {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Item {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key.as_bytes().cmp(other.key.as_bytes())
    }
}

/// An open child: a file (at the top) or a group.
enum Open {
    File(LockedFile),
    Group(Id),
}

impl Open {
    fn id(&self) -> hid_t {
        match self {
            Open::File(f) => f.id(),
            Open::Group(g) => g.0,
        }
    }
}

/// The items of one group (or, at the top, of the files), handed out in order.
struct Frame {
    /// The group listed; `None` at the top.
    group: Option<Id>,
    file_path: PathBuf,
    /// The group's stored path in the file, for errors.
    path: String,
    /// Key prefix of the children: "" at the top, `f.` or `f.a:b:` below.
    prefix: String,
    sep: u8,
    /// Native order is bytewise stored-name order (symbol-table groups), so a pass can stop early.
    sorted_natively: bool,
    /// The items of the current batch (or, for link storage, of the group).
    items: Sorted,
    /// The last item of the last batch: the next pass selects above it.
    after: Option<Box<str>>,
    /// No items are left beyond `batch`.
    exhausted: bool,
    /// The child last opened for its value, kept for its subtree item.
    held: Option<(Box<str>, Open)>,
    /// The file the group is in (`None` at the top); keeps it open. Last:
    /// HDF5 closes the file once its groups are closed, and only then may
    /// its lock go.
    file: Option<LockedFile>,
}

impl Frame {
    /// The files of both directories, all in one batch (a home has few).
    fn top(home: &Path) -> anyhow::Result<Frame> {
        let mut items = Vec::new();
        for dir in DIRS {
            let d = home.join(dir);
            if !d.is_dir() {
                continue;
            }
            for e in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
                let path = e.with_context(|| format!("listing {}", d.display()))?.path();
                let stored = path.file_name().expect("listed entries have names").to_string_lossy();
                // Stored file names never start with '.': editor or system files.
                if stored.starts_with('.') || !path.is_file() {
                    continue;
                }
                let name = decode_file(&stored).with_context(|| format!("in {}", d.display()))?;
                if DIRS[is_run_state(&name) as usize] != dir {
                    bail!(
                        "{}: a file named {name:?} belongs in {}/, not {dir}/",
                        path.display(),
                        DIRS[is_run_state(&name) as usize]
                    );
                }
                // Stored as `dir/name`, the path below the home.
                let stored: Box<str> = format!("{dir}/{stored}").into();
                for subtree in [false, true] {
                    let key = if subtree { format!("{name}.") } else { name.to_string() };
                    items.push(Item {
                        key: key.into(),
                        subtree,
                        addr: None,
                        stored: Some(stored.clone()),
                    });
                }
            }
        }
        items.sort_unstable();
        Ok(Frame {
            group: None,
            file: None,
            file_path: home.to_path_buf(),
            path: String::new(),
            prefix: String::new(),
            sep: b'.',
            sorted_natively: false,
            items: Sorted::Memory(items.into()),
            after: None,
            exhausted: true,
            held: None,
        })
    }

    /// The next item, running a pass over the group when the batch is used up.
    fn next(&mut self, batch: usize) -> anyhow::Result<Option<Item>> {
        if self.items.is_empty() && !self.exhausted {
            // Link storage iterates in hash order: a pass per batch would
            // read the whole group each time, so it is listed in one pass
            // and sorted in runs of a batch each (spill.rs).
            let listed = if self.sorted_natively {
                self.refill(batch)
            } else {
                self.list_all(batch)
            };
            listed.with_context(|| {
                format!(
                    "listing {}, group {}",
                    self.file_path.display(),
                    path_or_root(&self.path)
                )
            })?;
        }
        self.items.next()
    }

    /// One pass over a group in link storage: all its items, sorted in runs.
    fn list_all(&mut self, batch: usize) -> anyhow::Result<()> {
        let group = self.group.as_ref().expect("the top frame is one batch").0;
        let mut list = List {
            runs: Runs::new(batch),
            sep: self.sep,
        };
        iterate_links(group, &mut list)?;
        self.exhausted = true;
        self.items = list.runs.finish()?;
        Ok(())
    }

    /// One native-order pass keeping the `cap` smallest items above `after`.
    fn refill(&mut self, cap: usize) -> anyhow::Result<()> {
        let group = self.group.as_ref().expect("the top frame is one batch").0;
        let mut pass = Pass {
            after: self.after.as_deref().map(str::as_bytes),
            cap,
            sep: self.sep,
            sorted_natively: self.sorted_natively,
            heap: BinaryHeap::with_capacity(cap.min(4096)),
            scratch: Vec::new(),
        };
        iterate_links(group, &mut pass)?;
        self.exhausted = pass.heap.len() < cap;
        let items = pass.heap.into_sorted_vec();
        self.after = items.last().map(|i| i.key.clone());
        self.items = Sorted::Memory(items.into());
        Ok(())
    }

    /// The child's stored path in its file, for errors.
    fn child_path(&self, item: &Item) -> String {
        format!("{}/{}", self.path, item.stored())
    }

    /// Opens `item`'s child: its file at the top, else its group by address.
    fn open(&self, item: &Item) -> anyhow::Result<Open> {
        let Some(parent) = &self.group else {
            let path = self.file_path.join(item.stored());
            return Ok(Open::File(open_read(&path)?));
        };
        let ctx = || format!("opening {}, group {}", self.file_path.display(), self.child_path(item));
        // SAFETY: under HDF5's lock; `parent` is this frame's open group,
        // `addr` the object address HDF5 gave for one of its hard links (so
        // an object of the same file), `name` NUL-terminated and alive for
        // the call; the opened object is owned by an `Id` before use.
        let id = h5sync(|| unsafe {
            let id = match item.addr {
                Some(addr) => H5Oopen_by_addr(parent.0, addr),
                None => {
                    let name = CString::new(item.stored()).expect("HDF5 names hold no NUL");
                    H5Oopen(parent.0, name.as_ptr(), H5P_DEFAULT)
                }
            };
            let id = Id::new(id, H5Oclose)?;
            if H5Iget_type(id.0) != H5I_type_t::H5I_GROUP {
                bail!("it is not a group");
            }
            Ok(id)
        })
        .with_context(ctx)?;
        Ok(Open::Group(id))
    }

    /// The value item: the child's own value, if it has one.
    fn visit(&mut self, item: &Item) -> anyhow::Result<Option<Entry>> {
        self.held = None; // close the previous child first
        let child = self.open(item)?;
        let key = format!("{}{}", self.prefix, item.name());
        let value = read_value(child.id()).with_context(|| self.key_context(&key, item))?;
        self.held = Some((item.name().into(), child));
        Ok(value.map(|stored| Entry { key, stored }))
    }

    fn key_context(&self, key: &str, item: &Item) -> String {
        match self.group {
            Some(_) => format!(
                "reading key {key:?} from {}, group {}",
                self.file_path.display(),
                self.child_path(item)
            ),
            None => format!(
                "reading key {key:?} from {}, group /",
                self.file_path.join(item.stored()).display()
            ),
        }
    }

    /// The subtree item: a frame for the child's children, `None` when it has none.
    fn descend(&mut self, item: &Item) -> anyhow::Result<Option<Frame>> {
        let child = match self.held.take() {
            Some((name, open)) if *name == *item.name() => open,
            _ => self.open(item)?,
        };
        let (file, file_path, path, prefix) = match &child {
            Open::File(f) => (
                f.clone(),
                self.file_path.join(item.stored()),
                String::new(),
                format!("{}.", item.name()),
            ),
            Open::Group(_) => (
                self.file.clone().expect("group frames hold their file"),
                self.file_path.clone(),
                self.child_path(item),
                format!("{}{}:", self.prefix, item.name()),
            ),
        };
        // SAFETY: `H5G_info_t` is a C struct of integers and an enum whose
        // zero is a variant (`H5G_STORAGE_TYPE_SYMBOL_TABLE`), so all-zero
        // bytes are a valid value; `H5Gget_info` then fills it in.
        let mut info: H5G_info_t = unsafe { std::mem::zeroed() };
        // SAFETY: under HDF5's lock; `child` is open and `info` a writable
        // `H5G_info_t` for the call to fill in.
        h5sync(|| unsafe { check(H5Gget_info(child.id(), &mut info)) })
            .with_context(|| format!("listing {}, group {}", file_path.display(), path_or_root(&path)))?;
        if info.nlinks == 0 {
            return Ok(None);
        }
        let group = match child {
            Open::Group(id) => id,
            // The root group, as its own handle, so the frame owns one kind of id.
            // SAFETY: under HDF5's lock; `f` is an open file and the name a
            // NUL-terminated literal; the result is owned by an `Id`.
            Open::File(f) => h5sync(|| unsafe { Id::new(H5Oopen(f.id(), c"/".as_ptr(), H5P_DEFAULT), H5Oclose) })?,
        };
        Ok(Some(Frame {
            group: Some(group),
            file: Some(file),
            file_path,
            path,
            prefix,
            sep: b':',
            sorted_natively: info.storage_type == H5G_storage_type_t::H5G_STORAGE_TYPE_SYMBOL_TABLE,
            items: Sorted::empty(),
            after: None,
            exhausted: false,
            held: None,
        }))
    }
}

/// The state of one pass over a symbol-table group.
struct Pass<'a> {
    after: Option<&'a [u8]>,
    cap: usize,
    sep: u8,
    sorted_natively: bool,
    /// The smallest items seen so far above `after`, largest on top.
    heap: BinaryHeap<Item>,
    scratch: Vec<u8>,
}

impl LinkVisitor for Pass<'_> {
    /// Considers one link; `false` stops the pass.
    fn offer(&mut self, stored: &[u8], info: &H5L_info_t) -> anyhow::Result<bool> {
        let stored = link_name(stored)?;
        if self.sorted_natively && self.beyond_batch(stored) {
            return Ok(false);
        }
        let decoded = decode_group(stored)?;
        let addr = link_addr(info);
        self.scratch.clear();
        self.scratch.extend_from_slice(decoded.as_bytes());
        for subtree in [false, true] {
            if subtree {
                self.scratch.push(self.sep);
            }
            if self.wants(&self.scratch) {
                if self.heap.len() == self.cap {
                    self.heap.pop();
                }
                let key = String::from_utf8(self.scratch.clone()).expect("decoded names are UTF-8");
                let stored = (*decoded != *stored).then(|| stored.into());
                self.heap.push(Item {
                    key: key.into(),
                    subtree,
                    addr,
                    stored,
                });
            }
        }
        Ok(true)
    }
}

impl Pass<'_> {
    /// Whether `key` is above `after` and below the largest item of a full heap.
    fn wants(&self, key: &[u8]) -> bool {
        self.after.is_none_or(|a| key > a)
            && (self.heap.len() < self.cap || self.heap.peek().is_some_and(|top| key < top.key.as_bytes()))
    }

    /// In bytewise stored-name order: whether neither this link nor any
    /// later one can enter the full heap. Escaped names (starting `:`)
    /// decode to other places in the order, so only a name past all of
    /// them (first byte above `:`) can tell; an unescaped name's items
    /// (`c`, `c:`) are never below the name itself.
    fn beyond_batch(&self, stored: &str) -> bool {
        let s = stored.as_bytes();
        self.heap.len() == self.cap
            && s.first().is_some_and(|&b| b > b':')
            && self.heap.peek().is_some_and(|top| s > top.key.as_bytes())
    }
}

/// A link's stored name, which must be UTF-8.
fn link_name(stored: &[u8]) -> anyhow::Result<&str> {
    std::str::from_utf8(stored).map_err(|_| anyhow!("group name {:?} is not UTF-8", String::from_utf8_lossy(stored)))
}

/// The object address a hard link carries (other links are opened by name).
fn link_addr(info: &H5L_info_t) -> Option<haddr_t> {
    (info.type_ == H5L_type_t::H5L_TYPE_HARD).then(|| {
        let mut u = info.u;
        // SAFETY: HDF5 fills the union `u` with the object address for a
        // hard link (checked just above), so that is the member read.
        unsafe { *u.address() }
    })
}

/// What a pass over a group's links does with each link.
trait LinkVisitor {
    /// Considers one link (its stored name); `false` stops the pass.
    fn offer(&mut self, stored: &[u8], info: &H5L_info_t) -> anyhow::Result<bool>;
}

/// One pass over `group`'s links in native order, each offered to `visitor`.
fn iterate_links<V: LinkVisitor>(group: hid_t, visitor: &mut V) -> anyhow::Result<()> {
    struct Ctx<'a, V> {
        visitor: &'a mut V,
        error: Option<anyhow::Error>,
    }
    unsafe extern "C" fn visit<V: LinkVisitor>(
        _group: hid_t,
        name: *const c_char,
        info: *const H5L_info_t,
        data: *mut c_void,
    ) -> herr_t {
        // SAFETY: `data` is the `Ctx` `iterate_links` passed, alive and unaliased for the iteration.
        let ctx = unsafe { &mut *data.cast::<Ctx<V>>() };
        // SAFETY: HDF5 passes the link's name as a NUL-terminated string
        // valid for this call, which is all `name` is used for.
        let name = unsafe { CStr::from_ptr(name) }.to_bytes();
        // SAFETY: HDF5 passes a valid `H5L_info_t` for this call; the
        // reference does not outlive it.
        let info = unsafe { &*info };
        match ctx.visitor.offer(name, info) {
            Ok(true) => 0,
            Ok(false) => 1,
            Err(e) => {
                ctx.error = Some(e);
                -1
            }
        }
    }
    let mut ctx = Ctx { visitor, error: None };
    let mut idx: hsize_t = 0;
    // SAFETY: under HDF5's lock; `group` is open and `idx` writable;
    // `visit::<V>` reads the data pointer as the `Ctx<V>` it is, which
    // outlives the call and is not otherwise used during it.
    let ret = h5sync(|| unsafe {
        H5Literate(
            group,
            H5_index_t::H5_INDEX_NAME,
            H5_iter_order_t::H5_ITER_NATIVE,
            &mut idx,
            Some(visit::<V>),
            (&raw mut ctx).cast(),
        )
    });
    if let Some(e) = ctx.error {
        return Err(e);
    }
    check(ret)?;
    Ok(())
}

/// The state of a link-storage pass.
struct List {
    runs: Runs,
    sep: u8,
}

impl LinkVisitor for List {
    fn offer(&mut self, stored: &[u8], info: &H5L_info_t) -> anyhow::Result<bool> {
        let stored = link_name(stored)?;
        let decoded = decode_group(stored)?;
        let addr = link_addr(info);
        let stored: Option<Box<str>> = (*decoded != *stored).then(|| stored.into());
        let mut subtree_key = String::with_capacity(decoded.len() + 1);
        subtree_key.push_str(&decoded);
        subtree_key.push(self.sep as char);
        self.runs.push(Item {
            key: subtree_key.into(),
            subtree: true,
            addr,
            stored: stored.clone(),
        })?;
        self.runs.push(Item {
            key: decoded.into(),
            subtree: false,
            addr,
            stored,
        })?;
        Ok(true)
    }
}
