//! Sorting a group's items in bounded memory when HDF5 lists them in no
//! useful order (link storage: compact and dense groups, hash order).
//!
//! One pass over the group feeds `Runs`; every `batch` items are sorted and
//! written to an anonymous temporary file (a run), and the runs are merged
//! lazily as the walk asks for items. A group that fits one batch never
//! touches the disk. Memory is one batch while listing, then one buffered
//! reader and one item per run (at most 64 runs: more are merged into one):
//! about 20 MiB for the default batch, however many children the group has
//! (a million children make 16 runs), where the
//! alternatives were holding every item (360 MB for a 1.2M-child group) or
//! reading the whole group once per batch (2.8x slower at 1M keys).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};

use anyhow::{bail, Context};

use super::walk::Item;

/// Collects the items of one pass.
pub(super) struct Runs {
    batch: usize,
    pending: Vec<Item>,
    files: Vec<File>,
}

impl Runs {
    pub(super) fn new(batch: usize) -> Runs {
        Runs {
            batch,
            pending: Vec::new(),
            files: Vec::new(),
        }
    }

    pub(super) fn push(&mut self, item: Item) -> anyhow::Result<()> {
        self.pending.push(item);
        if self.pending.len() >= self.batch {
            self.spill()?;
        }
        Ok(())
    }

    fn spill(&mut self) -> anyhow::Result<()> {
        self.pending.sort_unstable();
        let run = write_run(self.pending.drain(..).map(Ok))?;
        self.files.push(run);
        if self.files.len() == MAX_RUNS {
            self.merge_runs()?;
        }
        Ok(())
    }

    /// Merges the runs into one, so the open files stay few whatever the
    /// group's size against the batch (each merge reads and writes the
    /// items once more; with the default batch that is past 8M children).
    fn merge_runs(&mut self) -> anyhow::Result<()> {
        let mut merged = Sorted::merge(std::mem::take(&mut self.files))?;
        let run = write_run(std::iter::from_fn(|| merged.next().transpose()))?;
        self.files.push(run);
        Ok(())
    }

    /// The items in ascending order.
    pub(super) fn finish(mut self) -> anyhow::Result<Sorted> {
        if self.files.is_empty() {
            self.pending.sort_unstable();
            return Ok(Sorted::Memory(self.pending.into()));
        }
        if !self.pending.is_empty() {
            self.spill()?;
        }
        Sorted::merge(self.files)
    }
}

/// Runs open at once, at most.
const MAX_RUNS: usize = 64;

/// A group's items, handed out in ascending order.
pub(super) enum Sorted {
    Memory(VecDeque<Item>),
    Merge {
        runs: Vec<BufReader<File>>,
        /// The smallest unread item of each run that has one, and its run.
        heads: BinaryHeap<Reverse<(Item, usize)>>,
    },
}

impl Sorted {
    pub(super) fn empty() -> Sorted {
        Sorted::Memory(VecDeque::new())
    }

    fn merge(files: Vec<File>) -> anyhow::Result<Sorted> {
        let mut runs = Vec::with_capacity(files.len());
        let mut heads = BinaryHeap::with_capacity(files.len());
        for (i, file) in files.into_iter().enumerate() {
            let mut run = BufReader::with_capacity(64 << 10, file);
            if let Some(item) = read_item(&mut run)? {
                heads.push(Reverse((item, i)));
            }
            runs.push(run);
        }
        Ok(Sorted::Merge { runs, heads })
    }

    pub(super) fn is_empty(&self) -> bool {
        match self {
            Sorted::Memory(items) => items.is_empty(),
            Sorted::Merge { heads, .. } => heads.is_empty(),
        }
    }

    pub(super) fn next(&mut self) -> anyhow::Result<Option<Item>> {
        match self {
            Sorted::Memory(items) => Ok(items.pop_front()),
            Sorted::Merge { runs, heads } => {
                let Some(Reverse((item, i))) = heads.pop() else {
                    return Ok(None);
                };
                if let Some(next) = read_item(&mut runs[i])? {
                    heads.push(Reverse((next, i)));
                }
                Ok(Some(item))
            }
        }
    }
}

/// Writes sorted items to a new temporary file, rewound for reading.
fn write_run(items: impl Iterator<Item = anyhow::Result<Item>>) -> anyhow::Result<File> {
    let mut file = tempfile::tempfile().context("creating a temporary file to sort a large group in")?;
    let mut out = BufWriter::new(&mut file);
    for item in items {
        write_item(&mut out, &item?)?;
    }
    out.flush()
        .context("writing a large group's sorted run to a temporary file")?;
    drop(out);
    file.seek(SeekFrom::Start(0))?;
    Ok(file)
}

const SUBTREE: u8 = 1;
const ADDR: u8 = 2;
const STORED: u8 = 4;

fn write_item(out: &mut impl Write, item: &Item) -> anyhow::Result<()> {
    let flags = (item.subtree as u8) | (item.addr.is_some() as u8 * ADDR) | (item.stored.is_some() as u8 * STORED);
    let mut write = || -> std::io::Result<()> {
        out.write_all(&[flags])?;
        write_str(out, &item.key)?;
        if let Some(addr) = item.addr {
            out.write_all(&addr.to_le_bytes())?;
        }
        if let Some(stored) = &item.stored {
            write_str(out, stored)?;
        }
        Ok(())
    };
    write().context("writing a large group's sorted run to a temporary file")
}

fn write_str(out: &mut impl Write, s: &str) -> std::io::Result<()> {
    out.write_all(&(s.len() as u32).to_le_bytes())?;
    out.write_all(s.as_bytes())
}

fn read_item(run: &mut impl Read) -> anyhow::Result<Option<Item>> {
    let mut flags = [0u8];
    match run.read(&mut flags).context("reading a sorted run back")? {
        0 => return Ok(None),
        _ if flags[0] & !(SUBTREE | ADDR | STORED) != 0 => bail!("a sorted run is damaged (flags {})", flags[0]),
        _ => {}
    }
    let key = read_str(run)?;
    let addr = if flags[0] & ADDR != 0 {
        let mut b = [0u8; 8];
        run.read_exact(&mut b).context("reading a sorted run back")?;
        Some(u64::from_le_bytes(b))
    } else {
        None
    };
    let stored = if flags[0] & STORED != 0 {
        Some(read_str(run)?)
    } else {
        None
    };
    Ok(Some(Item {
        key,
        subtree: flags[0] & SUBTREE != 0,
        addr,
        stored,
    }))
}

fn read_str(run: &mut impl Read) -> anyhow::Result<Box<str>> {
    let mut len = [0u8; 4];
    run.read_exact(&mut len).context("reading a sorted run back")?;
    // Runs are this process's own files; names are bounded by HDF5 (64 KiB).
    let len = u32::from_le_bytes(len) as usize;
    if len > 1 << 20 {
        bail!("a sorted run is damaged (a name of {len} bytes)");
    }
    let mut bytes = vec![0u8; len];
    run.read_exact(&mut bytes).context("reading a sorted run back")?;
    String::from_utf8(bytes)
        .map(String::into_boxed_str)
        .map_err(|_| anyhow::anyhow!("a sorted run is damaged (a name that is not UTF-8)"))
}
