//! Xian's HDF5 state home (xian-compat.md §1) as a [`StateStore`].
//!
//! Files are opened once and kept open; new files use the latest HDF5
//! file-format bounds (smaller, same speed). Values are written as
//! variable-length UTF-8 string attributes; both that form and fixed-length
//! byte strings (`S<n>`, written by older Xian versions) are read.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use hdf5::file::{FileAccessBuilder, MetadataCacheConfig};
use hdf5::types::{TypeDescriptor, VarLenUnicode};
use hdf5::{Attribute, File, Group};

use super::keys::{decode_name, key_path, KeyPath};
use super::{Entry, StateStore};

const DIRS: [&str; 2] = ["contract_state", "run_state"];
const VALUE: &str = "value";
const BLOCK: &str = "block";

/// A Xian-layout HDF5 home.
pub struct XianHdf5Store {
    home: PathBuf,
    /// Open files by (directory, encoded name), and whether opened writable.
    files: RefCell<HashMap<(bool, String), (File, bool)>>,
    block: Option<u64>,
}

impl XianHdf5Store {
    /// Opens an existing home.
    pub fn open(home: &Path) -> anyhow::Result<Self> {
        if !DIRS.iter().any(|d| home.join(d).is_dir()) {
            bail!(
                "{} is not a Xian state home: it has neither contract_state/ nor run_state/",
                home.display()
            );
        }
        Ok(Self::at(home))
    }

    /// Creates a new home (the directory may exist but must be empty).
    pub fn create(home: &Path) -> anyhow::Result<Self> {
        if home.exists() && std::fs::read_dir(home)?.next().is_some() {
            bail!(
                "cannot create a state home in {}: the directory is not empty",
                home.display()
            );
        }
        for d in DIRS {
            std::fs::create_dir_all(home.join(d)).with_context(|| format!("creating {}", home.join(d).display()))?;
        }
        Ok(Self::at(home))
    }

    /// Opens a home, creating it if the directory is missing or empty.
    pub fn open_or_create(home: &Path) -> anyhow::Result<Self> {
        let empty = !home.exists() || std::fs::read_dir(home)?.next().is_none();
        if empty {
            Self::create(home)
        } else {
            Self::open(home)
        }
    }

    fn at(home: &Path) -> Self {
        XianHdf5Store {
            home: home.to_path_buf(),
            files: RefCell::default(),
            block: None,
        }
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The block number written in the `block` attribute with each value
    /// (`None`: no `block` attribute).
    pub fn set_block(&mut self, block: Option<u64>) {
        self.block = block;
    }

    fn file_path(&self, run_state: bool, name: &str) -> PathBuf {
        self.home
            .join(if run_state { "run_state" } else { "contract_state" })
            .join(name)
    }

    /// The file holding `p`, opened (and created) for writing when `write`.
    fn file(&self, p: &KeyPath, write: bool) -> anyhow::Result<Option<File>> {
        let id = (p.run_state, p.file.clone());
        if let Some((f, writable)) = self.files.borrow().get(&id) {
            if *writable || !write {
                return Ok(Some(f.clone()));
            }
        }
        let path = self.file_path(p.run_state, &p.file);
        let file = if write {
            // Writes come in key order, file after file: keeping one file open
            // for writing at a time bounds HDF5's per-file metadata caches.
            self.files.borrow_mut().retain(|_, (_, writable)| !*writable);
            if path.exists() {
                File::with_options().with_fapl(small_cache).append(&path)
            } else {
                std::fs::create_dir_all(path.parent().expect("file has a parent"))?;
                File::with_options()
                    .with_fapl(|f| small_cache(f).libver_latest())
                    .create(&path)
            }
            .with_context(|| format!("opening {} for writing", path.display()))?
        } else if path.exists() {
            open_read(&path)?
        } else {
            return Ok(None);
        };
        self.files.borrow_mut().insert(id, (file.clone(), write));
        Ok(Some(file))
    }

    fn write_one(&self, cursor: &mut Cursor, key: &str, value: Option<&str>) -> anyhow::Result<()> {
        let p = key_path(key)?;
        let group = match value {
            Some(_) => Some(cursor.descend(self, &p, true)?),
            None => cursor.descend_existing(self, &p)?,
        };
        let Some(group) = group else { return Ok(()) };
        let ctx = || format!("key {key:?} in {}", self.file_path(p.run_state, &p.file).display());
        if group.attr_names().with_context(ctx)?.iter().any(|n| n == VALUE) {
            group.delete_attr(VALUE).with_context(ctx)?;
        }
        if let Some(v) = value {
            let text: VarLenUnicode = v.parse().map_err(|e| anyhow!("{e}")).with_context(ctx)?;
            group
                .new_attr::<VarLenUnicode>()
                .create(VALUE)
                .and_then(|a| a.write_scalar(&text))
                .with_context(ctx)?;
            if let Some(b) = self.block {
                if group.attr_names()?.iter().any(|n| n == BLOCK) {
                    group.delete_attr(BLOCK)?;
                }
                group
                    .new_attr::<u64>()
                    .create(BLOCK)
                    .and_then(|a| a.write_scalar(&b))
                    .with_context(ctx)?;
            }
        }
        Ok(())
    }
}

/// The groups opened for the previous key, so sorted batches reuse them.
#[derive(Default)]
struct Cursor {
    file: Option<(bool, String)>,
    /// (encoded name, group) from the file's root group down.
    chain: Vec<(String, Group)>,
}

impl Cursor {
    fn descend(&mut self, store: &XianHdf5Store, p: &KeyPath, create: bool) -> anyhow::Result<Group> {
        self.descend_inner(store, p, create)?
            .ok_or_else(|| anyhow!("group missing"))
    }

    fn descend_existing(&mut self, store: &XianHdf5Store, p: &KeyPath) -> anyhow::Result<Option<Group>> {
        self.descend_inner(store, p, false)
    }

    fn descend_inner(&mut self, store: &XianHdf5Store, p: &KeyPath, create: bool) -> anyhow::Result<Option<Group>> {
        let id = (p.run_state, p.file.clone());
        if self.file.as_ref() != Some(&id) {
            self.chain.clear();
            let Some(file) = store.file(p, create)? else {
                return Ok(None);
            };
            self.chain.push((String::new(), (*file).clone()));
            self.file = Some(id);
        } else if create {
            // A cursor opened while reading must be reopened writable.
            let writable = store.files.borrow().get(&id).map(|(_, w)| *w).unwrap_or(false);
            if !writable {
                self.file = None;
                return self.descend_inner(store, p, create);
            }
        }
        // Keep the common prefix of the previous key's groups.
        let mut keep = 1;
        while keep < self.chain.len() && keep - 1 < p.groups.len() && self.chain[keep].0 == p.groups[keep - 1] {
            keep += 1;
        }
        self.chain.truncate(keep);
        for name in &p.groups[keep - 1..] {
            let parent = &self.chain.last().expect("root group").1;
            let child = if parent.link_exists(name) {
                parent.group(name)
            } else if create {
                parent.create_group(name)
            } else {
                return Ok(None);
            }
            .with_context(|| format!("group {name:?} in {}", store.file_path(p.run_state, &p.file).display()))?;
            self.chain.push((name.clone(), child));
        }
        Ok(Some(self.chain.last().expect("root group").1.clone()))
    }
}

/// HDF5's metadata cache grows adaptively per open file up to 32 MiB by
/// default, and more while a walk touches millions of object headers; a
/// small fixed ceiling keeps memory flat whatever the state's size.
fn small_cache(fapl: &mut FileAccessBuilder) -> &mut FileAccessBuilder {
    let config = MetadataCacheConfig {
        set_initial_size: true,
        initial_size: 1 << 20,
        min_size: 1 << 20,
        max_size: 8 << 20,
        ..MetadataCacheConfig::default()
    };
    fapl.mdc_config(&config)
}

fn open_read(path: &Path) -> anyhow::Result<File> {
    File::with_options()
        .with_fapl(small_cache)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// Reads a `value` attribute in either string form.
fn read_string_attr(attr: &Attribute) -> anyhow::Result<String> {
    match attr.dtype()?.to_descriptor()? {
        TypeDescriptor::VarLenUnicode => Ok(attr.read_scalar::<VarLenUnicode>()?.as_str().to_string()),
        TypeDescriptor::VarLenAscii => Ok(attr.read_scalar::<hdf5::types::VarLenAscii>()?.as_str().to_string()),
        TypeDescriptor::FixedAscii(_) | TypeDescriptor::FixedUnicode(_) => {
            let bytes = read_fixed_raw(attr)?;
            let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
            String::from_utf8(bytes[..end].to_vec()).map_err(|_| anyhow!("the fixed-length string is not UTF-8"))
        }
        other => bail!("`value` has type {other:?}, not a string"),
    }
}

/// The bytes of a fixed-length string attribute, read in its own type (the
/// high-level API needs the length at compile time).
fn read_fixed_raw(attr: &Attribute) -> anyhow::Result<Vec<u8>> {
    use hdf5_sys::h5a::{H5Aget_type, H5Aread};
    use hdf5_sys::h5t::{H5Tclose, H5Tget_size};
    hdf5::sync::sync(|| unsafe {
        let tid = H5Aget_type(attr.id());
        if tid < 0 {
            bail!("cannot read the attribute's type");
        }
        let size = H5Tget_size(tid);
        let mut buf = vec![0u8; size];
        let status = H5Aread(attr.id(), tid, buf.as_mut_ptr().cast());
        H5Tclose(tid);
        if status < 0 {
            bail!("cannot read the fixed-length string");
        }
        Ok(buf)
    })
}

/// The stored value of a group, if it has one.
fn group_value(group: &Group) -> anyhow::Result<Option<String>> {
    if !group.attr_names()?.iter().any(|n| n == VALUE) {
        return Ok(None);
    }
    read_string_attr(&group.attr(VALUE)?).map(Some)
}

impl StateStore for XianHdf5Store {
    fn get(&self, key: &str) -> anyhow::Result<Option<String>> {
        let p = key_path(key)?;
        let mut cursor = Cursor::default();
        match cursor.descend_existing(self, &p)? {
            Some(g) => group_value(&g).with_context(|| format!("reading key {key:?}")),
            None => Ok(None),
        }
    }

    fn entries(&self) -> anyhow::Result<Box<dyn Iterator<Item = anyhow::Result<Entry>> + '_>> {
        Ok(Box::new(Entries::new(self)?))
    }

    fn write_batch(&mut self, batch: &[(String, Option<String>)]) -> anyhow::Result<()> {
        let mut cursor = Cursor::default();
        for (key, value) in batch {
            self.write_one(&mut cursor, key, value.as_deref())?;
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        for (file, writable) in self.files.borrow().values() {
            if *writable {
                file.flush().with_context(|| format!("flushing {}", file.filename()))?;
            }
        }
        Ok(())
    }
}

/// One pending step of the sorted walk. Among siblings, a child named `c`
/// stands for two items: its own value (sort key `…c`) and its subtree (sort
/// key `…c:`, every key below it starts so). Sorting those items bytewise and
/// expanding them in order yields keys in ascending order.
enum Item {
    /// A group whose own value is key `key`.
    Value { key: String, group: Group },
    /// A group whose descendants' keys all start with `prefix`.
    Subtree { prefix: String, group: Group },
}

/// A group's children as items, sorted by sort key, consumed from the front.
struct Frame {
    parent: Group,
    prefix: String,
    raw: Vec<String>,
    decoded: Vec<String>,
    /// (name index, is-subtree) in walk order.
    order: Vec<(u32, bool)>,
    next: usize,
}

impl Frame {
    fn new(parent: Group, prefix: String) -> anyhow::Result<Self> {
        let raw = parent.member_names()?;
        let decoded: Vec<String> = raw.iter().map(|n| decode_name(n).into_owned()).collect();
        let mut order: Vec<(u32, bool)> = (0..raw.len() as u32).flat_map(|i| [(i, false), (i, true)]).collect();
        order.sort_by(|a, b| sort_key(&decoded, *a).cmp(&sort_key(&decoded, *b)));
        Ok(Frame {
            parent,
            prefix,
            raw,
            decoded,
            order,
            next: 0,
        })
    }

    fn pop(&mut self) -> anyhow::Result<Option<Item>> {
        let Some(&(i, subtree)) = self.order.get(self.next) else {
            return Ok(None);
        };
        self.next += 1;
        let (raw, decoded) = (&self.raw[i as usize], &self.decoded[i as usize]);
        let group = self.parent.group(raw)?;
        Ok(Some(if subtree {
            Item::Subtree {
                prefix: format!("{}{decoded}:", self.prefix),
                group,
            }
        } else {
            Item::Value {
                key: format!("{}{decoded}", self.prefix),
                group,
            }
        }))
    }
}

/// Compares as the bytes of `name` followed by `:` for a subtree item.
fn sort_key(names: &[String], (i, subtree): (u32, bool)) -> SortKey<'_> {
    SortKey(names[i as usize].as_bytes(), subtree)
}

#[derive(PartialEq, Eq)]
struct SortKey<'a>(&'a [u8], bool);

impl Ord for SortKey<'_> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let a = self.0.iter().chain(if self.1 { &b":"[..] } else { &b""[..] });
        let b = other.0.iter().chain(if other.1 { &b":"[..] } else { &b""[..] });
        a.cmp(b)
    }
}

impl PartialOrd for SortKey<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// The sorted walk over every file of both directories.
struct Entries {
    /// Top level: (sort key, item-making info) for every file, sorted.
    files: Vec<(Vec<u8>, PathBuf, String, bool)>,
    next_file: usize,
    stack: Vec<Frame>,
}

impl Entries {
    fn new(store: &XianHdf5Store) -> anyhow::Result<Self> {
        let mut files = Vec::new();
        for dir in DIRS {
            let d = store.home.join(dir);
            if !d.is_dir() {
                continue;
            }
            for e in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
                let e = e?;
                if !e.file_type()?.is_file() {
                    continue;
                }
                let raw = e.file_name().to_string_lossy().into_owned();
                if raw.starts_with('.') {
                    continue; // editor or temp files, never a Xian contract
                }
                let decoded = decode_name(&raw).into_owned();
                // The file's own value is key `f`; its variables are `f.…`.
                files.push((decoded.as_bytes().to_vec(), e.path(), decoded.clone(), false));
                let mut sub = decoded.as_bytes().to_vec();
                sub.push(b'.');
                files.push((sub, e.path(), decoded, true));
            }
        }
        files.sort();
        Ok(Entries {
            files,
            next_file: 0,
            stack: Vec::new(),
        })
    }

    fn step(&mut self) -> anyhow::Result<Option<Entry>> {
        loop {
            if let Some(frame) = self.stack.last_mut() {
                match frame.pop()? {
                    Some(Item::Value { key, group }) => {
                        if let Some(stored) = group_value(&group).with_context(|| format!("reading key {key:?}"))? {
                            return Ok(Some(Entry { key, stored }));
                        }
                    }
                    Some(Item::Subtree { prefix, group }) => self.stack.push(Frame::new(group, prefix)?),
                    None => {
                        self.stack.pop();
                    }
                }
                continue;
            }
            let Some((_, path, decoded, subtree)) = self.files.get(self.next_file).cloned() else {
                return Ok(None);
            };
            self.next_file += 1;
            let file = open_read(&path)?;
            let root: Group = (*file).clone();
            if subtree {
                self.stack.push(Frame::new(root, format!("{decoded}."))?);
            } else if let Some(stored) = group_value(&root)? {
                return Ok(Some(Entry { key: decoded, stored }));
            }
        }
    }
}

impl Iterator for Entries {
    type Item = anyhow::Result<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.step() {
            Ok(Some(e)) => Some(Ok(e)),
            Ok(None) => None,
            Err(e) => {
                // Stop after an error.
                self.next_file = self.files.len();
                self.stack.clear();
                Some(Err(e))
            }
        }
    }
}
