//! Snapshots on disk: one directory `<height>-<format>/` per snapshot with
//! `manifest.bin` and one file per chunk. A snapshot is built under a
//! temporary name and renamed into place last, so a crash never leaves a half
//! snapshot that gets listed.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::manifest::Manifest;

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
        if path.join(MANIFEST_FILE).is_file() {
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

    pub fn manifest_bytes(&self) -> anyhow::Result<Vec<u8>> {
        let p = self.path.join(MANIFEST_FILE);
        std::fs::read(&p).with_context(|| format!("reading {}", p.display()))
    }

    pub fn manifest(&self) -> anyhow::Result<Manifest> {
        Manifest::decode(&self.manifest_bytes()?).with_context(|| format!("in {}", self.path.display()))
    }

    pub fn chunk_path(&self, index: u32) -> PathBuf {
        chunk_path(&self.path, index)
    }

    pub fn read_chunk(&self, index: u32) -> anyhow::Result<Vec<u8>> {
        let p = self.chunk_path(index);
        std::fs::read(&p).with_context(|| format!("reading chunk {index} ({})", p.display()))
    }
}

pub(crate) fn chunk_path(dir: &Path, index: u32) -> PathBuf {
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
