//! What every entry a plugin decodes must be, for the restore and for the
//! self-check of a snapshot being created alike.

use crate::store::root::is_consensus_key;
use crate::store::value::canonical_bytes;

/// A decoded entry that may enter a state: UTF-8, a key the app hash covers,
/// and a value with canonical bytes (not null).
pub(crate) struct StateEntry<'a> {
    pub key: &'a str,
    pub value: &'a str,
    pub canonical: Vec<u8>,
}

/// Checks one decoded entry; the error says what is wrong with it.
pub(crate) fn state_entry<'a>(key: &'a [u8], value: &'a [u8]) -> Result<StateEntry<'a>, String> {
    let key = std::str::from_utf8(key).map_err(|_| format!("a key is not UTF-8: {}", String::from_utf8_lossy(key)))?;
    let value = std::str::from_utf8(value).map_err(|_| format!("the value of {key} is not UTF-8"))?;
    if !is_consensus_key(key) {
        return Err(format!(
            "entry {key} is not a consensus key: the app hash does not cover it, so it will not be written"
        ));
    }
    match canonical_bytes(value) {
        Ok(Some(canonical)) => Ok(StateEntry { key, value, canonical }),
        Ok(None) => Err(format!("entry {key} has a null value, which no state holds")),
        Err(e) => Err(format!("the value of {key:?} cannot be hashed: {e}")),
    }
}
