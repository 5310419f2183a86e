//! The Merkle treap saved on a clean shutdown, so the next start does not
//! have to read the whole state to rebuild it (42 s for 1M keys; loading the
//! file takes about a second).
//!
//! `statesnap-index.bin` in the state home: a postcard header (version,
//! height, app hash, entry count), the entries `(key, leaf hash)` in key
//! order, and the SHA-256 of everything before it. It is used once: the node
//! deletes it when it loads it, so a later change to the state (a crash, a
//! restore, an operator's edit) can never be paired with a stale index. It
//! is trusted only when its height and app hash are the checkpoint's and the
//! rebuilt treap's root is that app hash.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::treap::{MerkleTreap, TreapBuilder};

pub const FILE: &str = "statesnap-index.bin";
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Header {
    version: u32,
    height: u64,
    app_hash: [u8; 32],
    entries: u64,
}

/// Writes `treap` (the state of `height`) durably next to the state.
pub fn save(state: &Path, treap: &MerkleTreap, height: u64) -> anyhow::Result<()> {
    let path = state.join(FILE);
    let tmp = state.join(format!(".{FILE}.tmp"));
    let file = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut out = HashingWriter {
        inner: BufWriter::new(file),
        hash: Sha256::new(),
    };
    let header = Header {
        version: VERSION,
        height,
        app_hash: treap.root_hash(),
        entries: treap.len(),
    };
    let result = (|| -> std::io::Result<()> {
        out.write_all(&postcard::to_stdvec(&header).expect("a header serializes"))?;
        for (key, leaf) in treap.iter() {
            out.write_all(&postcard::to_stdvec(&(key, leaf)).expect("an entry serializes"))?;
        }
        let digest = out.hash.clone().finalize();
        out.inner.write_all(&digest)?;
        let file = out.inner.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()
    })();
    result.with_context(|| format!("writing {} (is the disk full?)", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("moving {} into place", path.display()))?;
    crate::snapshot::sync_dir(state)
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
            tracing::warn!(file = %path.display(), "not using the saved index: {e:#}");
            Ok(None)
        }
    }
}

fn load(path: &Path, height: u64, app_hash: [u8; 32]) -> anyhow::Result<MerkleTreap> {
    let mut bytes = Vec::new();
    BufReader::new(std::fs::File::open(path)?).read_to_end(&mut bytes)?;
    if bytes.len() < 32 {
        bail!("it is truncated");
    }
    let (body, digest) = bytes.split_at(bytes.len() - 32);
    if Sha256::digest(body).as_slice() != digest {
        bail!("its checksum does not match (damaged or partly written)");
    }
    let (header, mut rest): (Header, &[u8]) = postcard::take_from_bytes(body)?;
    if header.version != VERSION {
        bail!("it has version {}, not {VERSION}", header.version);
    }
    if (header.height, header.app_hash) != (height, app_hash) {
        bail!(
            "it is of height {} ({}), the state of height {height} ({})",
            header.height,
            hex::encode(header.app_hash),
            hex::encode(app_hash)
        );
    }
    let mut builder = TreapBuilder::new();
    for _ in 0..header.entries {
        let ((key, leaf), next): ((&str, [u8; 32]), &[u8]) = postcard::take_from_bytes(rest)?;
        builder.push(key, leaf)?;
        rest = next;
    }
    if !rest.is_empty() {
        bail!("it has bytes after its last entry");
    }
    let treap = builder.finish();
    if treap.root_hash() != app_hash {
        bail!("its entries do not give the app hash");
    }
    Ok(treap)
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
        assert!(!dir.path().join(FILE).exists(), "a stale index is removed too");

        save(dir.path(), &t, 7).unwrap();
        let path = dir.path().join(FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(take(dir.path(), 7, t.root_hash()).unwrap().is_none(), "damaged");
    }
}
