//! One `--home` for both of Xian's layouts: which store a directory holds,
//! and a [`StateStore`] over whichever it is.
//!
//! * `DIR/lmdb/data.mdb`: an LMDB home (Xian's current nodes, docs/XIAN.md §6);
//! * `DIR/contract_state/` or `DIR/run_state/`: an HDF5 home (docs/XIAN.md §1);
//! * neither, or both, is an error that says what was found.
//!
//! New homes take a [`StoreKind`]; the default is LMDB, Xian's current layout.

use std::path::Path;

use anyhow::bail;

use super::key_layout::DIRS;
use super::xian_lmdb::{is_lmdb_home, LMDB_DIR};
use super::{Entry, StateStore, XianHdf5Store, XianLmdbStore};

/// A home's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// `lmdb/`: Xian's current store.
    #[default]
    Lmdb,
    /// `contract_state/` + `run_state/`: Xian's HDF5-era layout.
    Hdf5,
}

impl StoreKind {
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::Lmdb => "lmdb",
            StoreKind::Hdf5 => "hdf5",
        }
    }
}

impl std::fmt::Display for StoreKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for StoreKind {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "lmdb" => Ok(StoreKind::Lmdb),
            "hdf5" => Ok(StoreKind::Hdf5),
            other => bail!("unknown store {other:?}: expected `lmdb` or `hdf5`"),
        }
    }
}

/// The layout of the existing home `home`.
pub fn detect(home: &Path) -> anyhow::Result<StoreKind> {
    if !home.is_dir() {
        bail!("{} is not a Xian state home: no such directory", home.display());
    }
    let lmdb = is_lmdb_home(home);
    let hdf5 = DIRS.iter().any(|d| home.join(d).is_dir());
    match (lmdb, hdf5) {
        (true, false) => Ok(StoreKind::Lmdb),
        (false, true) => Ok(StoreKind::Hdf5),
        (true, true) => bail!(
            "{} holds both an LMDB state ({LMDB_DIR}/data.mdb) and an HDF5 state (contract_state/ or run_state/); \
             a home holds one: move one of them away",
            home.display()
        ),
        (false, false) if home.join(LMDB_DIR).is_dir() => bail!(
            "{} has an {LMDB_DIR}/ directory without data.mdb: not an LMDB environment",
            home.display()
        ),
        (false, false) => bail!(
            "{} is not a Xian state home: it has neither {LMDB_DIR}/data.mdb (LMDB) nor contract_state/ or \
             run_state/ (HDF5)",
            home.display()
        ),
    }
}

/// Whether `dir` is missing or empty (where a new home may be created).
pub fn is_vacant(dir: &Path) -> bool {
    !dir.exists() || std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none())
}

/// Fails unless `dir` is missing or empty (where a new home may go), saying
/// what is there; `flag` names the option that gave the directory.
pub fn ensure_vacant(dir: &Path, flag: &str) -> anyhow::Result<()> {
    if is_vacant(dir) {
        return Ok(());
    }
    let what = match detect(dir) {
        Ok(k) => format!("it already holds an {k} state home"),
        Err(_) => "it is not empty".to_string(),
    };
    bail!(
        "cannot create a state home in {}: {what}; give a missing or empty directory as {flag}",
        dir.display()
    )
}

/// A state home of either layout.
pub enum HomeStore {
    Lmdb(XianLmdbStore),
    Hdf5(XianHdf5Store),
}

impl HomeStore {
    /// Opens an existing home of either layout for reading and writing.
    pub fn open(home: &Path) -> anyhow::Result<Self> {
        Ok(match detect(home)? {
            StoreKind::Lmdb => HomeStore::Lmdb(XianLmdbStore::open(home)?),
            StoreKind::Hdf5 => HomeStore::Hdf5(XianHdf5Store::open(home)?),
        })
    }

    /// Opens an existing home for reading only (an LMDB home of a running
    /// node is read from a consistent view without holding it up).
    pub fn open_read_only(home: &Path) -> anyhow::Result<Self> {
        Ok(match detect(home)? {
            StoreKind::Lmdb => HomeStore::Lmdb(XianLmdbStore::open_read_only(home)?),
            StoreKind::Hdf5 => HomeStore::Hdf5(XianHdf5Store::open(home)?),
        })
    }

    /// Creates a new home of layout `kind` in a missing or empty directory.
    pub fn create(home: &Path, kind: StoreKind) -> anyhow::Result<Self> {
        Ok(match kind {
            StoreKind::Lmdb => HomeStore::Lmdb(XianLmdbStore::create(home)?),
            StoreKind::Hdf5 => HomeStore::Hdf5(XianHdf5Store::create(home)?),
        })
    }

    /// Opens `home` whatever its layout, or creates it as `kind` when the
    /// directory is missing or empty.
    pub(crate) fn open_or_create(home: &Path, kind: StoreKind) -> anyhow::Result<Self> {
        if is_vacant(home) {
            Self::create(home, kind)
        } else {
            Self::open(home)
        }
    }

    pub fn kind(&self) -> StoreKind {
        match self {
            HomeStore::Lmdb(_) => StoreKind::Lmdb,
            HomeStore::Hdf5(_) => StoreKind::Hdf5,
        }
    }

    pub fn home(&self) -> &Path {
        match self {
            HomeStore::Lmdb(s) => s.home(),
            HomeStore::Hdf5(s) => s.home(),
        }
    }

    /// For a load that is thrown away when it fails (a restore's staging
    /// home, an import, a conversion): LMDB commits are synced once, at
    /// [`StateStore::flush`], instead of one by one. HDF5 is unaffected.
    pub fn set_bulk(&mut self, bulk: bool) {
        if let HomeStore::Lmdb(s) = self {
            s.set_bulk(bulk);
        }
    }

    fn inner(&self) -> &dyn StateStore {
        match self {
            HomeStore::Lmdb(s) => s,
            HomeStore::Hdf5(s) => s,
        }
    }

    fn inner_mut(&mut self) -> &mut dyn StateStore {
        match self {
            HomeStore::Lmdb(s) => s,
            HomeStore::Hdf5(s) => s,
        }
    }
}

impl StateStore for HomeStore {
    fn get(&self, key: &str) -> anyhow::Result<Option<String>> {
        self.inner().get(key)
    }

    fn entries(&self) -> anyhow::Result<Box<dyn Iterator<Item = anyhow::Result<Entry>> + '_>> {
        self.inner().entries()
    }

    fn write_batch(&mut self, batch: &[(String, Option<String>)]) -> anyhow::Result<()> {
        self.inner_mut().write_batch(batch)
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.inner_mut().flush()
    }
}
