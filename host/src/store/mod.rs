//! Xian's state: its two home layouts behind one [`StateStore`], its values,
//! and the state root and proofs over it.

pub mod convert;
pub mod copy;
pub mod generate;
pub mod home;
pub mod key_layout;
pub mod memory;
pub mod prng;
pub mod range_proof;
pub mod root;
pub mod treap;
pub mod value;
pub mod xian_hdf5;
pub mod xian_lmdb;

pub use home::{HomeStore, StoreKind};
pub use root::{is_consensus_key, RootBuilder, StateRoot};
pub use xian_hdf5::XianHdf5Store;
pub use xian_lmdb::XianLmdbStore;

/// One state entry: a UTF-8 key and its stored JSON text (docs/XIAN.md §2).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    pub key: String,
    pub stored: String,
}

/// A key/value state store.
pub trait StateStore {
    /// The stored value of `key`, or `None` if it has none.
    fn get(&self, key: &str) -> anyhow::Result<Option<String>>;

    /// Every entry that has a value, in ascending key order (bytewise UTF-8).
    fn entries(&self) -> anyhow::Result<Box<dyn Iterator<Item = anyhow::Result<Entry>> + '_>>;

    /// Applies a batch of writes: `Some(stored)` sets a key, `None` deletes it.
    /// Callers get the best speed with keys in ascending order.
    fn write_batch(&mut self, batch: &[(String, Option<String>)]) -> anyhow::Result<()>;

    /// Makes every write so far durable.
    fn flush(&mut self) -> anyhow::Result<()>;
}
