//! The chain's genesis `app_state` (in CometBFT's genesis.json) and what
//! InitChain does with it.
//!
//! ```json
//! "app_state": {
//!   "import_home": "/path/to/a/xian/state/home",
//!   "entries": [{"key": "currency.balances:alice", "stored": "{\"__fixed__\":\"100\"}"}]
//! }
//! ```
//! Both are optional: the home's entries are imported first (all of them,
//! run-state keys included), then `entries` are written over them. The
//! validator set from genesis is kept in state under
//! `statesnap.validators:<ed25519 public key hex>` (its voting power), so it
//! is covered by the app hash and travels inside snapshots.

use std::path::PathBuf;

use anyhow::Context;
use serde::Deserialize;

use crate::protocol::tx::RESERVED_CONTRACT;

/// The state key of a validator's voting power.
pub(crate) fn validator_key(pub_key: &[u8; 32]) -> String {
    format!("{RESERVED_CONTRACT}.validators:{}", hex::encode(pub_key))
}

/// `app_state` of the genesis file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AppState {
    #[serde(default)]
    pub import_home: Option<PathBuf>,
    #[serde(default)]
    pub entries: Vec<GenesisEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisEntry {
    pub key: String,
    pub stored: String,
}

impl AppState {
    /// Parses InitChain's `app_state_bytes` (empty or `null`: nothing).
    pub fn parse(bytes: &[u8]) -> anyhow::Result<AppState> {
        let text = std::str::from_utf8(bytes).context("the genesis app_state is not UTF-8")?;
        let text = text.trim();
        if text.is_empty() || text == "null" {
            return Ok(AppState::default());
        }
        serde_json::from_str(text).context(
            "the genesis app_state is not a statesnap app state \
             ({\"import_home\": PATH, \"entries\": [{\"key\": …, \"stored\": …}]}, both optional)",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_genesis_files_hold() {
        assert_eq!(AppState::parse(b"").unwrap(), AppState::default());
        assert_eq!(AppState::parse(b"null").unwrap(), AppState::default());
        assert_eq!(AppState::parse(b"{}").unwrap(), AppState::default());
        let s = AppState::parse(br#"{"import_home":"/x","entries":[{"key":"a.b","stored":"1"}]}"#).unwrap();
        assert_eq!(s.import_home, Some(PathBuf::from("/x")));
        assert_eq!(s.entries[0].key, "a.b");
        let err = format!("{:#}", AppState::parse(br#"{"entrys":[]}"#).unwrap_err());
        assert!(err.contains("entrys"), "{err}");
        assert_eq!(
            validator_key(&[0xab; 32]),
            format!("statesnap.validators:{}", "ab".repeat(32))
        );
    }
}
