//! The snapshot-format registry in chain state: where governance keeps
//! proposals, votes, approved formats and plugin code, under the reserved
//! `statesnap` contract. Being state, all of it is covered by the app hash
//! and travels inside every snapshot.
//!
//! ```text
//! statesnap.proposal_count             the last proposal id (JSON integer)
//! statesnap.proposals:<id>             ProposalRecord (JSON object)
//! statesnap.votes:<id>:<validator hex> the voting power the vote counted (JSON integer)
//! statesnap.formats:<format>           FormatApproval (JSON object): the approved plugin
//! statesnap.plugins:<sha256 hex>       PluginMeta (JSON object)
//! statesnap.plugins:<sha256 hex>:<i>   piece i of the plugin's wasm, as a JSON hex string
//! statesnap.uploads:<id>               UploadRecord (JSON object): a proposal by hash's pieces
//! statesnap.pending_code               PendingCode list (JSON array): proposals whose code is
//!                                      in state but not approved, by id
//! ```
//!
//! Code in state that no approval uses is temporary: a proposal's code
//! enters `pending_code` when it is proposed (inline) or its first piece
//! arrives (by hash), and leaves it when its format is approved, or when
//! the proposal expires or is superseded, and then the code is deleted
//! (`node::governance::sweep`).
//!
//! Records are plain JSON objects with their fields in sorted order (their
//! stored text is already Xian's canonical form). Plugin code is cut into
//! [`PIECE_BYTES`] pieces so no single value is large.

use serde::{Deserialize, Serialize};

use super::tx::RESERVED_CONTRACT;

/// Bytes of plugin wasm per stored piece (its hex text is twice as long).
pub(crate) const PIECE_BYTES: usize = 16 * 1024;

pub(crate) fn proposal_count_key() -> String {
    format!("{RESERVED_CONTRACT}.proposal_count")
}

pub(crate) fn proposal_key(id: u64) -> String {
    format!("{RESERVED_CONTRACT}.proposals:{id}")
}

pub(crate) fn vote_key(id: u64, validator: &[u8; 32]) -> String {
    format!("{RESERVED_CONTRACT}.votes:{id}:{}", hex::encode(validator))
}

/// Prefix of every approved format's key.
pub(crate) fn formats_prefix() -> String {
    format!("{RESERVED_CONTRACT}.formats:")
}

pub fn format_key(format: u32) -> String {
    format!("{}{format}", formats_prefix())
}

pub(crate) fn plugin_key(sha256: &[u8; 32]) -> String {
    format!("{RESERVED_CONTRACT}.plugins:{}", hex::encode(sha256))
}

pub(crate) fn plugin_piece_key(sha256: &[u8; 32], piece: u64) -> String {
    format!("{}:{piece}", plugin_key(sha256))
}

pub(crate) fn upload_key(id: u64) -> String {
    format!("{RESERVED_CONTRACT}.uploads:{id}")
}

pub(crate) fn pending_code_key() -> String {
    format!("{RESERVED_CONTRACT}.pending_code")
}

/// Prefix of every validator's key (its value: the voting power).
pub(crate) fn validators_prefix() -> String {
    format!("{RESERVED_CONTRACT}.validators:")
}

/// Why a registry value could not be read.
#[derive(Debug, thiserror::Error)]
#[error("registry value under {key:?} is malformed: {reason}")]
pub struct RecordError {
    pub key: String,
    pub reason: String,
}

fn parse<T: for<'de> Deserialize<'de>>(key: &str, stored: &str) -> Result<T, RecordError> {
    serde_json::from_str(stored).map_err(|e| RecordError {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

fn to_stored<T: Serialize>(record: &T) -> String {
    serde_json::to_string(record).expect("registry records serialize")
}

/// An approved snapshot format: what `statesnap.formats:<format>` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormatApproval {
    /// The first height whose snapshots are made in this format.
    pub activation_height: u64,
    pub name: String,
    /// The proposal that approved it.
    pub proposal: u64,
    /// SHA-256 of the plugin's wasm, lowercase hex.
    pub sha256: String,
    pub version: String,
}

impl FormatApproval {
    pub fn parse(key: &str, stored: &str) -> Result<Self, RecordError> {
        parse(key, stored)
    }

    pub fn stored(&self) -> String {
        to_stored(self)
    }

    /// The plugin's SHA-256 as bytes (`None` if the hex is malformed).
    pub(crate) fn sha256_bytes(&self) -> Option<[u8; 32]> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(&self.sha256, &mut out).ok()?;
        Some(out)
    }
}

/// A proposal's state: what `statesnap.proposals:<id>` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProposalRecord {
    /// Blocks between passing and activation.
    pub activation_delay: u64,
    /// Height the format activates at (0 until the proposal passes).
    pub activation_height: u64,
    /// Last height at which a vote counts.
    pub expires_height: u64,
    pub format: u32,
    pub id: u64,
    pub name: String,
    /// Height the proposal passed at (0 until it does).
    pub passed_height: u64,
    /// The proposing validator's public key, hex.
    pub proposer: String,
    pub sha256: String,
    /// `voting` or `passed`; a `voting` proposal past `expires_height` has expired.
    pub status: String,
    pub submitted_height: u64,
    /// The validator set's total power at the last vote (or the proposal).
    pub total_power: u64,
    pub version: String,
    pub votes: u64,
    pub yes_power: u64,
}

pub(crate) const STATUS_VOTING: &str = "voting";
pub(crate) const STATUS_PASSED: &str = "passed";
/// Written by the sweep once an expired proposal's code is removed.
pub(crate) const STATUS_EXPIRED: &str = "expired";
/// Written by the sweep when another proposal got the format first.
pub(crate) const STATUS_SUPERSEDED: &str = "superseded";

impl ProposalRecord {
    pub fn parse(key: &str, stored: &str) -> Result<Self, RecordError> {
        parse(key, stored)
    }

    pub(crate) fn stored(&self) -> String {
        to_stored(self)
    }

    /// `voting`, `passed`, `expired` or `superseded`, as of `height`.
    pub(crate) fn status_at(&self, height: u64) -> &'static str {
        if self.status == STATUS_PASSED {
            STATUS_PASSED
        } else if self.status == STATUS_SUPERSEDED {
            STATUS_SUPERSEDED
        } else if height > self.expires_height || self.status == STATUS_EXPIRED {
            "expired"
        } else {
            STATUS_VOTING
        }
    }
}

/// Whether `yes` is more than 2/3 of `total`.
pub fn passes(yes: u64, total: u64) -> bool {
    total > 0 && u128::from(yes) * 3 > u128::from(total) * 2
}

/// What `statesnap.plugins:<sha256>` holds: enough to reassemble the code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PluginMeta {
    pub bytes: u64,
    pub format: u32,
    pub name: String,
    pub pieces: u64,
    pub version: String,
}

impl PluginMeta {
    pub fn parse(key: &str, stored: &str) -> Result<Self, RecordError> {
        parse(key, stored)
    }

    pub(crate) fn stored(&self) -> String {
        to_stored(self)
    }
}

/// A proposal by hash's uploads: what `statesnap.uploads:<id>` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UploadRecord {
    /// Length of the plugin's wasm.
    pub bytes: u64,
    /// Whether every piece arrived and the whole plugin passed its checks.
    pub complete: bool,
    /// Length of every piece but the last.
    pub piece_bytes: u32,
    /// SHA-256 of each piece, lowercase hex.
    pub piece_sha256: Vec<String>,
    /// One character per piece: `1` once it arrived, else `0`.
    pub received: String,
}

impl UploadRecord {
    pub fn parse(key: &str, stored: &str) -> Result<Self, RecordError> {
        let r: UploadRecord = parse(key, stored)?;
        if r.received.len() != r.piece_sha256.len() || r.received.bytes().any(|b| b != b'0' && b != b'1') {
            return Err(RecordError {
                key: key.to_string(),
                reason: "`received` does not hold one 0 or 1 per piece".into(),
            });
        }
        Ok(r)
    }

    pub(crate) fn stored(&self) -> String {
        to_stored(self)
    }

    /// How many pieces arrived.
    pub(crate) fn arrived(&self) -> usize {
        self.received.bytes().filter(|&b| b == b'1').count()
    }
}

/// One proposal whose code is in state but not approved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PendingCode {
    /// The plugin's length (what it holds, or will, in state).
    pub bytes: u64,
    pub id: u64,
}

/// Parses `statesnap.pending_code` (absent: empty).
pub(crate) fn parse_pending(key: &str, stored: Option<&str>) -> Result<Vec<PendingCode>, RecordError> {
    stored.map_or(Ok(Vec::new()), |s| parse(key, s))
}

/// The stored form of the pending list.
pub(crate) fn pending_stored(list: &[PendingCode]) -> String {
    to_stored(&list)
}

/// How many storage pieces a plugin of `bytes` has.
pub(crate) fn storage_pieces(bytes: u64) -> u64 {
    bytes.div_ceil(PIECE_BYTES as u64)
}

/// The stored form of one storage piece of plugin code.
pub(crate) fn piece_stored(piece: &[u8]) -> String {
    to_stored(&hex::encode(piece))
}

/// The bytes of one stored piece.
pub(crate) fn piece_bytes(key: &str, stored: &str) -> Result<Vec<u8>, RecordError> {
    let text: String = parse(key, stored)?;
    hex::decode(text).map_err(|e| RecordError {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

/// The writes that store `wasm` under its SHA-256: its meta and its pieces.
pub(crate) fn plugin_writes(sha256: &[u8; 32], wasm: &[u8], meta: &PluginMeta) -> Vec<(String, String)> {
    let mut out = vec![(plugin_key(sha256), meta.stored())];
    for (i, piece) in wasm.chunks(PIECE_BYTES).enumerate() {
        out.push((plugin_piece_key(sha256, i as u64), piece_stored(piece)));
    }
    out
}

/// Reassembles a plugin stored by [`plugin_writes`], reading keys with `get`,
/// and checks its SHA-256.
pub(crate) fn read_plugin(
    sha256: &[u8; 32],
    mut get: impl FnMut(&str) -> anyhow::Result<Option<String>>,
) -> anyhow::Result<Vec<u8>> {
    let key = plugin_key(sha256);
    let Some(stored) = get(&key)? else {
        anyhow::bail!(
            "the state has no plugin with SHA-256 {} (no {key})",
            hex::encode(sha256)
        );
    };
    let meta = PluginMeta::parse(&key, &stored)?;
    let mut wasm = Vec::with_capacity(meta.bytes as usize);
    for i in 0..meta.pieces {
        let key = plugin_piece_key(sha256, i);
        let stored = get(&key)?.ok_or_else(|| anyhow::anyhow!("the state lacks piece {key} of a plugin"))?;
        wasm.extend(piece_bytes(&key, &stored)?);
    }
    if crate::plugin::sha256(&wasm) != *sha256 {
        anyhow::bail!(
            "the plugin stored under {} does not hash to its SHA-256: the state is corrupt",
            hex::encode(sha256)
        );
    }
    Ok(wasm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::value::canonical_bytes;
    use std::collections::HashMap;

    #[test]
    fn records_are_canonical_json_and_round_trip() {
        let a = FormatApproval {
            activation_height: 40,
            name: "brotli".into(),
            proposal: 1,
            sha256: "ab".repeat(32),
            version: "1.0.0".into(),
        };
        let stored = a.stored();
        // Fields are declared in sorted order, so the stored text is canonical.
        assert_eq!(&canonical_bytes(&stored).unwrap().unwrap()[..], stored.as_bytes());
        assert_eq!(FormatApproval::parse("k", &stored).unwrap(), a);
        assert_eq!(a.sha256_bytes(), Some([0xab; 32]));
        assert!(FormatApproval::parse("k", r#"{"x":1}"#).is_err());
        assert!(passes(3, 4) && !passes(2, 3) && passes(7, 10) && !passes(0, 0) && !passes(2, 4));

        let u = UploadRecord {
            bytes: 40_000,
            complete: false,
            piece_bytes: 16384,
            piece_sha256: vec!["ab".repeat(32), "cd".repeat(32), "ef".repeat(32)],
            received: "010".into(),
        };
        let stored = u.stored();
        assert_eq!(&canonical_bytes(&stored).unwrap().unwrap()[..], stored.as_bytes());
        assert_eq!(UploadRecord::parse("k", &stored).unwrap(), u);
        assert_eq!(u.arrived(), 1);
        let short = UploadRecord {
            received: "01".into(),
            ..u
        };
        assert!(UploadRecord::parse("k", &short.stored()).is_err(), "one flag per piece");
        let list = vec![PendingCode { bytes: 5, id: 2 }, PendingCode { bytes: 7, id: 9 }];
        let stored = pending_stored(&list);
        assert_eq!(&canonical_bytes(&stored).unwrap().unwrap()[..], stored.as_bytes());
        assert_eq!(parse_pending("k", Some(&stored)).unwrap(), list);
        assert_eq!(parse_pending("k", None).unwrap(), []);
    }

    #[test]
    fn plugin_code_round_trips_through_pieces() {
        let wasm: Vec<u8> = (0..40_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let sha = crate::plugin::sha256(&wasm);
        let meta = PluginMeta {
            bytes: wasm.len() as u64,
            format: 3,
            name: "x".into(),
            pieces: wasm.len().div_ceil(PIECE_BYTES) as u64,
            version: "1".into(),
        };
        let writes: HashMap<String, String> = plugin_writes(&sha, &wasm, &meta).into_iter().collect();
        assert_eq!(writes.len(), 1 + 3);
        for v in writes.values() {
            assert!(canonical_bytes(v).unwrap().is_some());
        }
        let got = read_plugin(&sha, |k| Ok(writes.get(k).cloned())).unwrap();
        assert_eq!(got, wasm);
        let mut broken = writes.clone();
        broken.insert(plugin_piece_key(&sha, 1), "\"00\"".into());
        let err = read_plugin(&sha, |k| Ok(broken.get(k).cloned())).unwrap_err();
        assert!(err.to_string().contains("corrupt"), "{err}");
    }
}
