//! The node's record of the last durable state: chain, height, app hash.
//!
//! * **HDF5 homes**: `statesnap-node.json` at the root of the state home
//!   (beside `contract_state/` and `run_state/`, where Xian's tools do not
//!   look), naming what the HDF5 files hold once fsynced.
//! * **LMDB homes**: the value of the run-state key [`KEY`], written in the
//!   same transaction as the block it describes, so the record and the state
//!   can never disagree. `__` keys are outside the app hash, never in a
//!   snapshot, and refused in transactions.
//!
//! Either way it lives inside the state home, so a restored snapshot and its
//! record are swapped in together, by one rename.

use std::path::Path;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::snapshot::Verified;
use crate::store::{HomeStore, StateStore};

pub const FILE: &str = "statesnap-node.json";
/// The LMDB key of the record.
pub const KEY: &str = "__statesnap.node";
const VERSION: u32 = 1;

/// A durable state: chain, height, app hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    pub version: u32,
    pub chain_id: String,
    pub height: u64,
    /// Hex.
    pub app_hash: String,
}

impl Checkpoint {
    pub(crate) fn new(chain_id: &str, height: u64, app_hash: [u8; 32]) -> Self {
        Checkpoint {
            version: VERSION,
            chain_id: chain_id.to_string(),
            height,
            app_hash: hex::encode(app_hash),
        }
    }

    pub fn app_hash(&self) -> anyhow::Result<[u8; 32]> {
        hex::decode(&self.app_hash)
            .ok()
            .and_then(|b| b.try_into().ok())
            .with_context(|| format!("`{}` is not a 32-byte hex app hash", self.app_hash))
    }

    /// The checkpoint of `store`'s home, if it has one.
    pub fn load(store: &HomeStore) -> anyhow::Result<Option<Checkpoint>> {
        match store {
            HomeStore::Hdf5(s) => Self::read(s.home()),
            HomeStore::Lmdb(s) => {
                let where_ = || format!("key {KEY} in {}", s.home().display());
                store
                    .get(KEY)
                    .with_context(where_)?
                    .map(|text| Self::parse(&text, &where_()))
                    .transpose()
            }
        }
    }

    /// Records the checkpoint in `store`'s home (LMDB: one synced transaction).
    pub(crate) fn save(&self, store: &mut HomeStore) -> anyhow::Result<()> {
        match store {
            HomeStore::Hdf5(s) => self.write(s.home()),
            HomeStore::Lmdb(_) => {
                store.write_batch(&[self.entry()])?;
                store.flush()
            }
        }
    }

    /// The record as the LMDB entry to commit with a block's writes.
    pub(crate) fn entry(&self) -> (String, Option<String>) {
        let text = serde_json::to_string(self).expect("a checkpoint serializes");
        (KEY.to_string(), Some(text))
    }

    /// The checkpoint file of the HDF5 state home `state`, if it has one.
    pub fn read(state: &Path) -> anyhow::Result<Option<Checkpoint>> {
        let path = state.join(FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Self::parse(&text, &path.display().to_string()).map(Some)
    }

    fn parse(text: &str, source: &str) -> anyhow::Result<Checkpoint> {
        let c: Checkpoint = serde_json::from_str(text).with_context(|| format!("{source} is damaged"))?;
        if c.version != VERSION {
            bail!(
                "{source} has version {}; this statesnap reads version {VERSION}",
                c.version
            );
        }
        c.app_hash()?;
        Ok(c)
    }

    /// Writes the checkpoint durably and atomically (temporary file, fsync, rename).
    pub(crate) fn write(&self, state: &Path) -> anyhow::Result<()> {
        let path = state.join(FILE);
        let tmp = state.join(format!(".{FILE}.tmp"));
        let text = serde_json::to_string_pretty(self).expect("a checkpoint serializes");
        crate::durable::write_synced(&tmp, text.as_bytes())?;
        std::fs::rename(&tmp, &path).with_context(|| format!("moving {} into place", path.display()))?;
        crate::durable::sync_dir(state)
    }
}

/// Writes the checkpoint of a restored snapshot's height into its verified
/// staging home, before it is installed: a node started on the home then
/// answers Info with that height and app hash (the trusted ones the state
/// was checked against).
pub fn checkpoint_restored_home(verified: &Verified) -> anyhow::Result<()> {
    let m = verified.manifest();
    Checkpoint::new(&m.chain_id, m.height, m.app_hash).save(&mut HomeStore::open(verified.staging())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Checkpoint::read(dir.path()).unwrap(), None);
        let c = Checkpoint::new("xian", 42, [3; 32]);
        c.write(dir.path()).unwrap();
        assert_eq!(Checkpoint::read(dir.path()).unwrap(), Some(c.clone()));
        assert_eq!(c.app_hash().unwrap(), [3; 32]);
        std::fs::write(dir.path().join(FILE), "{").unwrap();
        assert!(format!("{:#}", Checkpoint::read(dir.path()).unwrap_err()).contains("damaged"));
    }
}
