//! What every entry a plugin decodes must be, for the restore and for the
//! self-check of a snapshot being created alike.

use crate::store::root::is_consensus_key;
use crate::store::value::{canonical_bytes, ValueError};

/// A decoded entry that may enter a state: UTF-8, a key the app hash covers,
/// and a value with canonical bytes (not null).
pub(crate) struct StateEntry<'a> {
    pub key: &'a str,
    pub value: &'a str,
    pub canonical: Vec<u8>,
}

/// Why a decoded entry may not enter a state.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EntryError {
    #[error("the plugin returned a {0}")]
    Batch(String),
    #[error("a key is not UTF-8: {lossy}")]
    KeyNotUtf8 { lossy: String },
    #[error("the value of {key} is not UTF-8")]
    ValueNotUtf8 { key: String },
    #[error("entry {key} is not a consensus key: the app hash does not cover it, so it will not be written")]
    NotConsensus { key: String },
    #[error("entry {key} has a null value, which no state holds")]
    Null { key: String },
    #[error("the value of {key:?} cannot be hashed: {source}")]
    Value { key: String, source: ValueError },
}

/// Checks one decoded entry.
pub(crate) fn state_entry<'a>(key: &'a [u8], value: &'a [u8]) -> Result<StateEntry<'a>, EntryError> {
    let key = std::str::from_utf8(key).map_err(|_| EntryError::KeyNotUtf8 {
        lossy: String::from_utf8_lossy(key).into_owned(),
    })?;
    let value = std::str::from_utf8(value).map_err(|_| EntryError::ValueNotUtf8 { key: key.into() })?;
    if !is_consensus_key(key) {
        return Err(EntryError::NotConsensus { key: key.into() });
    }
    match canonical_bytes(value) {
        Ok(Some(canonical)) => Ok(StateEntry { key, value, canonical }),
        Ok(None) => Err(EntryError::Null { key: key.into() }),
        Err(source) => Err(EntryError::Value {
            key: key.into(),
            source,
        }),
    }
}
