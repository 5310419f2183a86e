//! The Merkle treap saved on a clean shutdown, so the next start does not
//! have to read the whole state to rebuild it (35 s for 1M keys; loading the
//! file takes about a second).
//!
//! `statesnap-index.bin` in the state home: the magic `SSINDEX1`, the
//! height (u64le), the app hash, the entry count (u64le), the entries
//! `u32le key length ‖ key ‖ leaf hash` in key order, and the SHA-256 of
//! everything before it. It is written and read as a stream (memory: the
//! treap, not the file). It is used once: the node deletes it when it loads
//! it, so a later change to the state (a crash, a restore, an operator's
//! edit) can never be paired with a stale treap. It is trusted only when its
//! height and app hash are the checkpoint's and the rebuilt treap's root is
//! that app hash.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};

use crate::store::treap::{MerkleTreap, TreapBuilder};

pub const FILE: &str = "statesnap-index.bin";

const MAGIC: &[u8; 8] = b"SSINDEX1";
/// No stored key is longer (HDF5 names and file names bound them far below).
const MAX_KEY_BYTES: usize = 1 << 20;

/// Writes `treap` (the state of `height`) durably next to the state.
pub fn save(state: &Path, treap: &MerkleTreap, height: u64) -> anyhow::Result<()> {
    let path = state.join(FILE);
    let tmp = state.join(format!(".{FILE}.tmp"));
    let file = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut out = HashingWriter {
        inner: BufWriter::new(file),
        hash: Sha256::new(),
    };
    let result = (|| -> std::io::Result<()> {
        out.write_all(MAGIC)?;
        out.write_all(&height.to_le_bytes())?;
        out.write_all(&treap.root_hash())?;
        out.write_all(&treap.len().to_le_bytes())?;
        for (key, leaf) in treap.iter() {
            let len = u32::try_from(key.len()).map_err(|_| std::io::Error::other("a key over 4 GiB"))?;
            out.write_all(&len.to_le_bytes())?;
            out.write_all(key.as_bytes())?;
            out.write_all(&leaf)?;
        }
        let digest = out.hash.clone().finalize();
        out.inner.write_all(&digest)?;
        let file = out.inner.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()
    })();
    result.with_context(|| format!("writing {} (is the disk full?)", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("moving {} into place", path.display()))?;
    crate::durable::sync_dir(state)
}

/// Loads and removes the saved treap, if there is one for exactly this
/// `height` and `app_hash`. `Ok(None)`: none, or not usable (the reason is
/// logged); the caller rebuilds from the state.
pub fn take(state: &Path, height: u64, app_hash: [u8; 32]) -> anyhow::Result<Option<MerkleTreap>> {
    let path = state.join(FILE);
    if !path.exists() {
        return Ok(None);
    }
    let loaded = load(&path, height, app_hash);
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    match loaded {
        Ok(treap) => Ok(Some(treap)),
        Err(e) => {
            tracing::warn!(file = %path.display(), "not using the saved treap: {e:#}");
            Ok(None)
        }
    }
}

fn load(path: &Path, height: u64, app_hash: [u8; 32]) -> anyhow::Result<MerkleTreap> {
    let mut input = HashingReader {
        inner: BufReader::new(std::fs::File::open(path)?),
        hash: Sha256::new(),
    };
    let mut magic = [0u8; 8];
    input.read_exact(&mut magic)?;
    if &magic != MAGIC {
        bail!("it is not a saved statesnap treap (version 1)");
    }
    let (saved_height, saved_hash) = (input.u64()?, input.hash32()?);
    if (saved_height, saved_hash) != (height, app_hash) {
        bail!(
            "it is of height {saved_height} ({}), the state of height {height} ({})",
            hex::encode(saved_hash),
            hex::encode(app_hash)
        );
    }
    let entries = input.u64()?;
    let mut builder = TreapBuilder::new();
    let mut key = Vec::new();
    for _ in 0..entries {
        let mut len = [0u8; 4];
        input.read_exact(&mut len)?;
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_KEY_BYTES {
            bail!("a key length of {len} bytes: the file is damaged");
        }
        key.resize(len, 0);
        input.read_exact(&mut key)?;
        let key = std::str::from_utf8(&key).context("a key is not UTF-8")?;
        builder.push(key, input.hash32()?)?;
    }
    let digest = input.hash.clone().finalize();
    let mut stored = [0u8; 32];
    input.inner.read_exact(&mut stored)?;
    if digest.as_slice() != stored {
        bail!("its checksum does not match (damaged or partly written)");
    }
    if input.inner.read(&mut [0u8; 1])? != 0 {
        bail!("it has bytes after its checksum");
    }
    let treap = builder.finish();
    if treap.root_hash() != app_hash {
        bail!("its entries do not give the app hash");
    }
    Ok(treap)
}

/// Hashes everything read through it.
struct HashingReader {
    inner: BufReader<std::fs::File>,
    hash: Sha256,
}

impl HashingReader {
    fn u64(&mut self) -> std::io::Result<u64> {
        let mut b = [0u8; 8];
        self.read_exact(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn hash32(&mut self) -> std::io::Result<[u8; 32]> {
        let mut b = [0u8; 32];
        self.read_exact(&mut b)?;
        Ok(b)
    }
}

impl Read for HashingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// Hashes everything written through it.
struct HashingWriter {
    inner: BufWriter<std::fs::File>,
    hash: Sha256,
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn treap(n: u32) -> MerkleTreap {
        let mut t = MerkleTreap::new();
        for i in 0..n {
            t.set(&format!("con.k:{i}"), i.to_string().as_bytes());
        }
        t
    }

    #[test]
    fn saved_once_loaded_once_and_only_for_its_state() {
        let dir = tempfile::tempdir().unwrap();
        let t = treap(500);
        save(dir.path(), &t, 7).unwrap();
        let back = take(dir.path(), 7, t.root_hash()).unwrap().unwrap();
        assert_eq!((back.root_hash(), back.len()), (t.root_hash(), 500));
        assert!(take(dir.path(), 7, t.root_hash()).unwrap().is_none(), "used once");

        save(dir.path(), &t, 7).unwrap();
        assert!(take(dir.path(), 8, t.root_hash()).unwrap().is_none(), "another height");
        assert!(!dir.path().join(FILE).exists(), "a stale treap file is removed too");

        save(dir.path(), &t, 7).unwrap();
        let path = dir.path().join(FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(take(dir.path(), 7, t.root_hash()).unwrap().is_none(), "damaged");
    }
}
