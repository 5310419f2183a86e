//! Snapshots on disk: one directory `<height>-<format>/` per snapshot with
//! `manifest.bin` and one file per chunk. A snapshot is built under a
//! temporary name and renamed into place last, so a crash never leaves a half
//! snapshot that gets listed.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::manifest::{Manifest, MAX_CHUNK_BYTES, MAX_METADATA_BYTES};

const MANIFEST_FILE: &str = "manifest.bin";
/// Prefix of directories still being written (never listed).
pub(crate) const TMP_PREFIX: &str = ".tmp-";

/// A finished snapshot directory.
#[derive(Debug, Clone)]
pub struct SnapshotDir {
    path: PathBuf,
}

impl SnapshotDir {
    /// Opens a snapshot directory. `path` may also be a directory holding
    /// exactly one snapshot (what `snapshot create --out` was given).
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        // Any manifest.bin names the snapshot; reading it checks it is a
        // plain file of bounded size.
        if path.join(MANIFEST_FILE).exists() {
            return Ok(SnapshotDir {
                path: path.to_path_buf(),
            });
        }
        if !path.is_dir() {
            bail!(
                "{} is not a directory: give the snapshot directory (the one holding {MANIFEST_FILE})",
                path.display()
            );
        }
        let found = list_snapshots(path)?;
        match found.as_slice() {
            [only] => Ok(only.clone()),
            [] => bail!(
                "{} holds no snapshot ({MANIFEST_FILE} not found in it or its subdirectories)",
                path.display()
            ),
            many => bail!(
                "{} holds {} snapshots; name one: {}",
                path.display(),
                many.len(),
                many.iter()
                    .map(|s| s.path.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The manifest's bytes; a refusal is a [`SnapshotFileError`].
    pub fn manifest_bytes(&self) -> anyhow::Result<Vec<u8>> {
        Ok(read_bounded(
            &self.path.join(MANIFEST_FILE),
            MAX_METADATA_BYTES as u64,
            SnapshotFile::Manifest,
        )?)
    }

    pub fn manifest(&self) -> anyhow::Result<Manifest> {
        Manifest::decode(&self.manifest_bytes()?).with_context(|| format!("in {}", self.path.display()))
    }

    pub fn chunk_path(&self, index: u32) -> PathBuf {
        chunk_path(&self.path, index)
    }

    /// Chunk `index`, refused unread when it is larger than any chunk can
    /// be ([`MAX_CHUNK_BYTES`]) or than `limit` (what the manifest leaves
    /// for it), and never read past the bound whatever the file claims. A
    /// refusal is a [`SnapshotFileError`].
    pub fn read_chunk(&self, index: u32, limit: u64) -> anyhow::Result<Vec<u8>> {
        let bound = limit.min(MAX_CHUNK_BYTES as u64);
        Ok(read_bounded(
            &self.chunk_path(index),
            bound,
            SnapshotFile::Chunk(index),
        )?)
    }
}

/// One file of a snapshot directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotFile {
    Manifest,
    Chunk(u32),
}

impl std::fmt::Display for SnapshotFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotFile::Manifest => f.write_str("the manifest"),
            SnapshotFile::Chunk(index) => write!(f, "chunk {index}"),
        }
    }
}

/// Why a snapshot file was not read: refused unread (not a plain file, or
/// larger than it may be), or the read failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    #[error(
        "{file} ({}) is not a regular file but a {kind}: snapshot files are plain files; the snapshot is malformed",
        path.display()
    )]
    NotAFile {
        file: SnapshotFile,
        path: PathBuf,
        /// "directory", "character device", "named pipe", …
        kind: &'static str,
    },
    #[error(
        "{file} ({}) is {size} bytes, over the limit of {limit} bytes (a chunk is at most {MAX_CHUNK_BYTES} bytes, \
         CometBFT's limit, and no more than the manifest's snapshot size leaves): the snapshot is malformed; \
         nothing more of it was read",
        path.display()
    )]
    TooLarge {
        file: SnapshotFile,
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("reading {file} ({})", path.display())]
    Read {
        file: SnapshotFile,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Reads a snapshot file of at most `limit` bytes. The file must be a
/// regular file (a chunk linked to a device or a pipe never ends); its size is
/// checked before reading, and the read stops one byte past the limit in
/// case the file grows meanwhile.
fn read_bounded(path: &Path, limit: u64, file: SnapshotFile) -> Result<Vec<u8>, SnapshotFileError> {
    use std::io::Read;
    let read_failed = |source| SnapshotFileError::Read {
        file,
        path: path.to_path_buf(),
        source,
    };
    let too_large = |size| SnapshotFileError::TooLarge {
        file,
        path: path.to_path_buf(),
        size,
        limit,
    };
    let opened = std::fs::File::open(path).map_err(read_failed)?;
    let meta = opened.metadata().map_err(read_failed)?;
    if !meta.is_file() {
        return Err(SnapshotFileError::NotAFile {
            file,
            path: path.to_path_buf(),
            kind: file_kind(&meta.file_type()),
        });
    }
    if meta.len() > limit {
        return Err(too_large(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    opened.take(limit + 1).read_to_end(&mut bytes).map_err(read_failed)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

fn file_kind(t: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "directory"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_fifo() {
        "named pipe"
    } else if t.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

pub fn chunk_path(dir: &Path, index: u32) -> PathBuf {
    dir.join(format!("chunk-{index:06}"))
}

pub(crate) fn manifest_path(dir: &Path) -> PathBuf {
    dir.join(MANIFEST_FILE)
}

/// The directory name of a snapshot.
pub(crate) fn dir_name(height: u64, format: u32) -> String {
    format!("{height}-{format}")
}

/// Finished snapshots directly under `root`, highest height first (then
/// highest format).
pub fn list_snapshots(root: &Path) -> anyhow::Result<Vec<SnapshotDir>> {
    let mut found: Vec<(u64, u32, SnapshotDir)> = Vec::new();
    let rd = match std::fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", root.display())),
    };
    for entry in rd {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        let Some((h, f)) = name.split_once('-') else { continue };
        let (Ok(h), Ok(f)) = (h.parse::<u64>(), f.parse::<u32>()) else {
            continue;
        };
        if entry.path().join(MANIFEST_FILE).is_file() {
            found.push((h, f, SnapshotDir { path: entry.path() }));
        }
    }
    found.sort_by_key(|s| std::cmp::Reverse((s.0, s.1)));
    Ok(found.into_iter().map(|(_, _, d)| d).collect())
}

/// Removes snapshots under `root` beyond the `keep` newest heights (every
/// format of a kept height is kept).
pub fn prune(root: &Path, keep: u32) -> anyhow::Result<()> {
    let mut heights = Vec::new();
    for snap in list_snapshots(root)? {
        let height = snap.manifest()?.height;
        if !heights.contains(&height) {
            heights.push(height);
        }
        if heights.len() > keep.max(1) as usize {
            tracing::info!(height, dir = %snap.path().display(), "snapshot: pruned");
            std::fs::remove_dir_all(snap.path()).with_context(|| format!("removing {}", snap.path().display()))?;
        }
    }
    Ok(())
}

/// Removes the directories under `root` of snapshots left unfinished (never
/// listed, but taking space): all of them at start, or only those this
/// process was writing (their names end in its pid) after a failed job.
pub fn remove_unfinished(root: &Path, this_process_only: bool) -> anyhow::Result<()> {
    let suffix = format!("-{}", std::process::id());
    for entry in std::fs::read_dir(root).with_context(|| format!("listing {}", root.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with(TMP_PREFIX) && (!this_process_only || name.ends_with(&suffix)) {
            tracing::info!(dir = %entry.path().display(), "removing an unfinished snapshot");
            std::fs::remove_dir_all(entry.path()).with_context(|| format!("removing {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Chunk `index` of snapshot (`height`, `format`) under `root`, as a peer is
/// served it: `None` when there is no such snapshot or chunk (CometBFT's
/// convention is then an empty chunk), or when it cannot be read (logged).
pub fn serve_chunk(root: &Path, height: u64, format: u32, index: u32) -> Option<Vec<u8>> {
    let snap = SnapshotDir::open(&root.join(dir_name(height, format))).ok()?;
    match snap.read_chunk(index, MAX_CHUNK_BYTES as u64) {
        Ok(chunk) => Some(chunk),
        Err(e) => {
            tracing::warn!(height, format, index, "not serving a chunk: {e:#}");
            None
        }
    }
}
