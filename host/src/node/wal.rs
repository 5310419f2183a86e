//! The write-ahead log: every committed block's writes, made durable before
//! Commit returns.
//!
//! The HDF5 files are written in place and only made durable (fsync) every
//! `checkpoint_interval` blocks; between checkpoints this log is what makes a
//! committed block survive a crash. On start the node replays the records
//! above its last checkpoint (writes are idempotent: set or delete), so a
//! crash after Commit loses nothing and a crash before it loses only the
//! block CometBFT will replay anyway.
//!
//! A record is `u32le length ‖ first 8 bytes of SHA-256(body) ‖ body`, the
//! body a postcard [`WalRecord`]. A torn or corrupt tail (a crash mid-append)
//! is cut off: that block had not been committed.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One committed block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WalRecord {
    pub height: u64,
    pub app_hash: [u8; 32],
    /// Ascending keys; `None` deletes.
    pub writes: Vec<(String, Option<String>)>,
}

/// An open write-ahead log.
pub(crate) struct Wal {
    path: PathBuf,
    file: File,
}

const HEADER: usize = 12;

impl Wal {
    /// Opens (creating if missing) the log at `path` and returns the records
    /// it holds. A damaged tail is truncated away.
    pub fn open(path: &Path) -> anyhow::Result<(Wal, Vec<WalRecord>)> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .with_context(|| format!("opening the write-ahead log {}", path.display()))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .with_context(|| format!("reading the write-ahead log {}", path.display()))?;
        let (records, good) = parse(&bytes);
        if good < bytes.len() {
            tracing::warn!(
                log = %path.display(),
                dropped_bytes = bytes.len() - good,
                "the write-ahead log ends in a partial record (a crash while committing); dropping it"
            );
            file.set_len(good as u64)
                .and_then(|_| file.sync_all())
                .with_context(|| format!("truncating {}", path.display()))?;
            file.seek(SeekFrom::End(0))?;
        }
        Ok((
            Wal {
                path: path.to_path_buf(),
                file,
            },
            records,
        ))
    }

    /// Appends one record and waits until it is on disk.
    pub(crate) fn append(&mut self, record: &WalRecord) -> anyhow::Result<()> {
        let body = postcard::to_stdvec(record).expect("a record always serializes");
        let len = u32::try_from(body.len()).context("a block's writes exceed 4 GiB")?;
        let mut frame = Vec::with_capacity(HEADER + body.len());
        frame.extend_from_slice(&len.to_le_bytes());
        frame.extend_from_slice(&Sha256::digest(&body)[..8]);
        frame.extend_from_slice(&body);
        self.file
            .write_all(&frame)
            .and_then(|_| self.file.sync_data())
            .with_context(|| {
                format!(
                    "writing block {} to {} (is the disk full?)",
                    record.height,
                    self.path.display()
                )
            })
    }

    /// Empties the log (after a checkpoint made its records redundant).
    pub(crate) fn reset(&mut self) -> anyhow::Result<()> {
        self.file
            .set_len(0)
            .and_then(|_| self.file.sync_all())
            .with_context(|| format!("emptying {}", self.path.display()))
    }
}

/// The whole records at the start of `bytes`, and how many bytes they span.
fn parse(bytes: &[u8]) -> (Vec<WalRecord>, usize) {
    let mut records = Vec::new();
    let mut pos = 0;
    while let Some(header) = bytes.get(pos..pos + HEADER) {
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let Some(body) = bytes.get(pos + HEADER..pos + HEADER + len) else {
            break;
        };
        if Sha256::digest(body)[..8] != header[4..] {
            break;
        }
        let Ok(record) = postcard::from_bytes::<WalRecord>(body) else {
            break;
        };
        records.push(record);
        pos += HEADER + len;
    }
    (records, pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(height: u64) -> WalRecord {
        WalRecord {
            height,
            app_hash: [height as u8; 32],
            writes: vec![("a.b".into(), Some(height.to_string())), ("a.c".into(), None)],
        }
    }

    #[test]
    fn records_survive_reopening_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (mut wal, found) = Wal::open(&path).unwrap();
        assert!(found.is_empty());
        wal.append(&record(1)).unwrap();
        wal.append(&record(2)).unwrap();
        drop(wal);
        let full = std::fs::read(&path).unwrap();
        // A crash in the middle of the third append.
        let (mut wal, _) = Wal::open(&path).unwrap();
        wal.append(&record(3)).unwrap();
        drop(wal);
        let with_third = std::fs::read(&path).unwrap();
        std::fs::write(&path, &with_third[..with_third.len() - 5]).unwrap();
        let (mut wal, found) = Wal::open(&path).unwrap();
        assert_eq!(found, vec![record(1), record(2)]);
        assert_eq!(std::fs::read(&path).unwrap(), full, "the torn record was cut off");
        // Appending after the cut continues cleanly.
        wal.append(&record(3)).unwrap();
        drop(wal);
        assert_eq!(Wal::open(&path).unwrap().1, vec![record(1), record(2), record(3)]);
        // A flipped byte in a body ends the log there.
        let mut bytes = std::fs::read(&path).unwrap();
        let second = HEADER + postcard::to_stdvec(&record(1)).unwrap().len();
        bytes[second + HEADER + 2] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let (mut wal, found) = Wal::open(&path).unwrap();
        assert_eq!(found, vec![record(1)]);
        wal.reset().unwrap();
        drop(wal);
        assert!(Wal::open(&path).unwrap().1.is_empty());
    }
}
