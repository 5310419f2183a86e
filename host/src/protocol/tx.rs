//! Signed state-patch transactions: the wire format, signing and the
//! stateless checks the node runs in CheckTx, ProcessProposal and
//! FinalizeBlock (it adds the stateful nonce check with [`Tx::check_nonce`]).
//!
//! # Wire format (`statesnap-tx-v1`)
//!
//! ```text
//! wire bytes = postcard(SignedTx { body: Vec<u8>, signature: [u8; 64] })
//! body       = postcard(TxBody { chain_id: String, account: [u8; 32], nonce: u64, action: Action })
//! Action     = Patch(Vec<Op>)                                  (variant 0)
//!            | Propose(Proposal)                               (variant 1, governance)
//!            | Vote(u64)                                       (variant 2, governance: a proposal id)
//!            | ProposeHash(HashProposal)                       (variant 3, governance)
//!            | Upload(Upload)                                  (variant 4, anyone)
//! Proposal   = { format: u32, plugin_gzip: Vec<u8>, activation_delay: u64, expires_after: u64 }
//!              (plugin_gzip: the plugin's wasm, gzip-compressed: plugins
//!              are mostly tables and code that compress 2-3x, and a
//!              proposal must fit CometBFT's default request limits)
//! HashProposal = { format: u32, sha256: [u8; 32], bytes: u64, piece_bytes: u32,
//!                  piece_sha256: Vec<[u8; 32]>, activation_delay: u64, expires_after: u64 }
//!              (a plugin approved by its hash; its bytes follow in uploads
//!              of `piece_bytes` each, the last one shorter)
//! Upload     = { proposal: u64, index: u32, bytes: Vec<u8> }  (piece `index` of a HashProposal's plugin)
//! Op         = Set { key: String, stored: String }            (variant 0)
//!            | Delete { key: String }                          (variant 1)
//! signature  = ed25519(account's key, b"statesnap-tx-v1:" ‖ body), verified strictly
//! tx hash    = SHA-256(wire bytes), as CometBFT hashes transactions
//! ```
//!
//! `account` is the ed25519 public key; in state it is written as lowercase
//! hex (as Xian does), and its nonce lives under `__n.<account hex>` as a JSON
//! integer: the number of transactions applied from the account. A transaction
//! is valid only when its `nonce` equals that number (0 when the key is absent).
//!
//! Decoding is canonical: both layers must re-encode to exactly the bytes
//! received (no overlong varints, no trailing bytes), so a transaction has
//! one encoding and therefore one hash.
//!
//! # Stateless rules ([`Tx::validate`])
//!
//! The chain id matches. A governance transaction (see `node::governance`
//! for what it does) is at most [`MAX_GOV_TX_BYTES`], carries a plugin of 1 to
//! [`MAX_PLUGIN_BYTES`] (at most [`MAX_PLUGIN_GZIP_BYTES`] compressed) and an
//! activation delay and expiry of 1 to [`MAX_GOV_BLOCKS`] blocks. A proposal
//! by hash names a plugin of 1 to [`MAX_UPLOADED_PLUGIN_BYTES`], cut into at
//! most [`MAX_UPLOAD_PIECES`] pieces of a multiple of 16 KiB up to
//! [`MAX_UPLOAD_PIECE_BYTES`], with one SHA-256 per piece; an upload carries
//! 1 to [`MAX_UPLOAD_PIECE_BYTES`]. A patch has 1 to [`MAX_OPS`] ops; the wire bytes are at
//! most [`MAX_TX_BYTES`]; no key appears twice; a key is at most
//! [`MAX_KEY_BYTES`], does not start with `__` (the run-state namespace, whose
//! nonces the node manages), does not belong to the reserved `statesnap`
//! contract (the node's own records), and can be stored in the HDF5 layout; a
//! `Set` value is at most [`MAX_VALUE_BYTES`], holds no NUL, and has canonical
//! bytes that are not null (the state root must be able to hash it; remove a
//! key with `Delete`).

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::{key_layout::key_path, value::canonical_bytes};

/// Prefix of the signed message: binds a signature to this format and version.
pub const SIGN_DOMAIN: &[u8] = b"statesnap-tx-v1:";
/// Most ops one patch may carry.
pub const MAX_OPS: usize = 256;
/// Largest state-patch transaction, in wire bytes.
pub const MAX_TX_BYTES: usize = 64 * 1024;
/// Largest compressed plugin a proposal may carry. With CometBFT's defaults a
/// proposal must fit `rpc.max_body_bytes` (1,000,000 bytes of JSON, where the
/// transaction travels as base64) and `mempool.max_tx_bytes` (1 MiB).
pub(crate) const MAX_PLUGIN_GZIP_BYTES: usize = 700 * 1024;
/// Largest plugin (its wasm, uncompressed) a proposal may carry.
pub const MAX_PLUGIN_BYTES: usize = 8 << 20;
/// Largest governance transaction, in wire bytes: the plugin and room for the rest.
pub const MAX_GOV_TX_BYTES: usize = MAX_PLUGIN_GZIP_BYTES + 4096;
/// Largest plugin a proposal may approve by hash (then uploaded in pieces).
pub const MAX_UPLOADED_PLUGIN_BYTES: u64 = 32 << 20;
/// Largest upload piece: it must fit one transaction under CometBFT's
/// default limits, as base64 in JSON (1,000,000 bytes).
pub const MAX_UPLOAD_PIECE_BYTES: u32 = 512 * 1024;
/// Upload pieces are a multiple of this (how state stores plugin code).
pub const UPLOAD_PIECE_UNIT: u32 = super::gov_records::PIECE_BYTES as u32;
/// Most pieces a plugin approved by hash may be cut into.
pub const MAX_UPLOAD_PIECES: usize = 256;
/// Longest activation delay or voting period, in blocks.
pub(crate) const MAX_GOV_BLOCKS: u64 = 10_000_000;
/// Longest key, in UTF-8 bytes.
pub(crate) const MAX_KEY_BYTES: usize = 1024;
/// Longest stored value, in UTF-8 bytes.
pub(crate) const MAX_VALUE_BYTES: usize = 32 * 1024;
/// Contract (file part of a key) that holds the node's own records.
pub(crate) const RESERVED_CONTRACT: &str = "statesnap";

/// Stable result codes: what CheckTx / FinalizeBlock return for each [`TxError`].
pub mod code {
    pub const OK: u32 = 0;
    pub const MALFORMED: u32 = 1;
    pub const BAD_SIGNATURE: u32 = 2;
    pub const WRONG_CHAIN_ID: u32 = 3;
    pub const BAD_NONCE: u32 = 4;
    pub const RESERVED_KEY: u32 = 5;
    pub const INVALID_KEY: u32 = 6;
    pub const INVALID_VALUE: u32 = 7;
    pub const TOO_LARGE: u32 = 8;
    pub const EMPTY: u32 = 9;
    pub const NOT_VALIDATOR: u32 = 10;
    /// A proposal's activation delay or expiry is out of range.
    pub const GOVERNANCE: u32 = 11;
    pub const PLUGIN_REFUSED: u32 = 12;
    /// The proposal's format number is already approved.
    pub const FORMAT_TAKEN: u32 = 13;
    /// A vote for a proposal that does not exist.
    pub const NO_SUCH_PROPOSAL: u32 = 14;
    /// A vote for a proposal that already passed.
    pub const PROPOSAL_PASSED: u32 = 15;
    /// A vote after the proposal's expiry height.
    pub const PROPOSAL_EXPIRED: u32 = 16;
    /// A second vote of a validator on one proposal.
    pub const ALREADY_VOTED: u32 = 17;
    /// The governance registry in state is malformed (never for valid state).
    pub(crate) const REGISTRY_CORRUPT: u32 = 18;
    /// An upload whose bytes do not hash to the approved SHA-256 (of its
    /// piece, or, when it completes the plugin, of the whole plugin).
    pub const UPLOAD_MISMATCH: u32 = 19;
    /// An upload the proposal does not take: an inline proposal, a piece
    /// index out of range, or a piece already uploaded.
    pub const UPLOAD_REFUSED: u32 = 20;
    /// Too many proposals hold code in state that is not yet approved, or
    /// too many bytes of it: wait for one to pass or expire.
    pub const PENDING_LIMIT: u32 = 21;
    /// A proposal by hash for a plugin over [`super::MAX_UPLOADED_PLUGIN_BYTES`].
    pub const PLUGIN_TOO_LARGE: u32 = 22;
    /// A proposal by hash cut into more than [`super::MAX_UPLOAD_PIECES`] pieces.
    pub const TOO_MANY_PIECES: u32 = 23;
    /// CheckTx only, never in a block: this node failed to check the
    /// transaction (its disk, or its plugin engine on valid code).
    pub(crate) const NODE_FAILURE: u32 = 99;
}

/// What the signature covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxBody {
    pub chain_id: String,
    /// The account's ed25519 public key.
    pub account: [u8; 32],
    pub nonce: u64,
    pub action: Action,
}

/// What a transaction does. Variant order is part of the wire format: only append.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Set and delete state keys, applied in order.
    Patch(Vec<Op>),
    /// Propose approving a snapshot format plugin (signed by a validator).
    Propose(Proposal),
    /// Vote for the proposal with this id (signed by a validator).
    Vote(u64),
    /// Propose approving a plugin by its SHA-256 (signed by a validator);
    /// its bytes follow in [`Action::Upload`]s.
    ProposeHash(HashProposal),
    /// Upload one piece of a plugin proposed by hash (anyone may).
    Upload(Upload),
}

/// A governance proposal by hash: make the plugin whose wasm hashes to
/// `sha256` the snapshot format `format`. The proposal names each piece's
/// SHA-256, so every upload is checked on arrival; the conformance check
/// runs when the last piece arrives, and the format is approved once the
/// vote has passed and the code is complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashProposal {
    pub format: u32,
    /// SHA-256 of the plugin's whole wasm.
    pub sha256: [u8; 32],
    /// Length of the plugin's wasm.
    pub bytes: u64,
    /// Length of every piece but the last (a multiple of [`UPLOAD_PIECE_UNIT`]).
    pub piece_bytes: u32,
    /// SHA-256 of each piece, in order.
    pub piece_sha256: Vec<[u8; 32]>,
    pub activation_delay: u64,
    pub expires_after: u64,
}

impl HashProposal {
    /// The proposal of `wasm` cut into pieces of `piece_bytes`.
    pub fn new(format: u32, wasm: &[u8], piece_bytes: u32, activation_delay: u64, expires_after: u64) -> Self {
        HashProposal {
            format,
            sha256: Sha256::digest(wasm).into(),
            bytes: wasm.len() as u64,
            piece_bytes,
            piece_sha256: wasm
                .chunks(piece_bytes.max(1) as usize)
                .map(|p| Sha256::digest(p).into())
                .collect(),
            activation_delay,
            expires_after,
        }
    }

    /// How many pieces the plugin is cut into.
    pub fn pieces(&self) -> u64 {
        self.bytes.div_ceil(u64::from(self.piece_bytes.max(1)))
    }
}

/// One piece of a plugin proposed by hash.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upload {
    /// The proposal (by hash) whose plugin this is a piece of.
    pub proposal: u64,
    /// The piece's index, from 0.
    pub index: u32,
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload")
            .field("proposal", &self.proposal)
            .field("index", &self.index)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

/// A governance proposal: make a plugin the snapshot format `format`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// The format number; it must be the one the plugin describes.
    pub format: u32,
    /// The plugin's wasm component, gzip-compressed ([`Proposal::new`]).
    pub plugin_gzip: Vec<u8>,
    /// Blocks between the proposal passing and the format activating.
    pub activation_delay: u64,
    /// Blocks after the proposal's own during which votes count.
    pub expires_after: u64,
}

impl Proposal {
    /// A proposal carrying `wasm` (compressed here).
    pub fn new(format: u32, wasm: &[u8], activation_delay: u64, expires_after: u64) -> Self {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(wasm).expect("compressing into memory");
        Proposal {
            format,
            plugin_gzip: gz.finish().expect("compressing into memory"),
            activation_delay,
            expires_after,
        }
    }

    /// The plugin's wasm, decompressed, refused beyond [`MAX_PLUGIN_BYTES`]
    /// (a compressed bomb stops there).
    pub fn plugin(&self) -> Result<Vec<u8>, TxError> {
        use std::io::Read;
        let mut wasm = Vec::new();
        flate2::read::GzDecoder::new(self.plugin_gzip.as_slice())
            .take(MAX_PLUGIN_BYTES as u64 + 1)
            .read_to_end(&mut wasm)
            .map_err(|e| TxError::Malformed(format!("the proposal's plugin is not valid gzip: {e}")))?;
        if wasm.len() > MAX_PLUGIN_BYTES {
            return Err(TxError::TooLarge {
                what: "the proposed plugin, uncompressed (bytes)".into(),
                size: wasm.len(),
                max: MAX_PLUGIN_BYTES,
            });
        }
        if wasm.is_empty() {
            return Err(TxError::PluginRefused("the proposal carries no plugin bytes".into()));
        }
        Ok(wasm)
    }
}

impl std::fmt::Debug for Proposal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proposal")
            .field("format", &self.format)
            .field("plugin_gzip_bytes", &self.plugin_gzip.len())
            .field("activation_delay", &self.activation_delay)
            .field("expires_after", &self.expires_after)
            .finish()
    }
}

/// One state change. Variant order is part of the wire format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Write `stored` (Xian's stored JSON text) under `key`.
    Set { key: String, stored: String },
    /// Remove `key` (a no-op when it has no value).
    Delete { key: String },
}

impl Op {
    pub fn key(&self) -> &str {
        match self {
            Op::Set { key, .. } | Op::Delete { key } => key,
        }
    }
}

/// The outer wire structure: a body and its signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedTx {
    /// `postcard(TxBody)`, kept as bytes so the signature covers exactly what was sent.
    pub body: Vec<u8>,
    #[serde(with = "bytes64")]
    pub signature: [u8; 64],
}

impl SignedTx {
    /// The wire bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("postcard encodes a struct of a byte vector and a byte array")
    }
}

/// Why a transaction is refused. [`TxError::code`] is the ABCI result code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    #[error("malformed transaction: {0}; encode it as statesnap-tx-v1 (postcard SignedTx {{ body, signature }})")]
    Malformed(String),
    #[error("bad signature: {0}; sign \"statesnap-tx-v1:\" followed by the body with the account's ed25519 key")]
    BadSignature(String),
    #[error("transaction is for chain {got:?} but this chain is {expected:?}: build it with chain id {expected:?}")]
    WrongChainId { expected: String, got: String },
    #[error("nonce {got} is not the account's next nonce {expected}: query __n.<account> and sign again with nonce {expected}")]
    BadNonce { expected: u64, got: u64 },
    #[error("key {key:?} is reserved ({reason}): a state patch may not write it")]
    ReservedKey { key: String, reason: &'static str },
    #[error("key {key:?} is invalid: {reason}")]
    InvalidKey { key: String, reason: String },
    #[error("value for key {key:?} is invalid: {reason}")]
    InvalidValue { key: String, reason: String },
    #[error("{what} is {size}, more than the limit of {max}: split the patch into several transactions")]
    TooLarge { what: String, size: usize, max: usize },
    #[error("the patch has no operations: add at least one set or delete")]
    Empty,
    #[error("account {0} is not a validator: governance transactions are signed with a validator's consensus key (its priv_validator_key.json)")]
    NotValidator(String),
    #[error("{0}")]
    Governance(String),
    #[error("the plugin is refused: {0}")]
    PluginRefused(String),
    #[error("{0}")]
    FormatTaken(String),
    #[error("{0}")]
    NoSuchProposal(String),
    #[error("{0}")]
    ProposalPassed(String),
    #[error("{0}")]
    ProposalExpired(String),
    #[error("{0}")]
    AlreadyVoted(String),
    #[error("the governance registry in state is malformed: {0}")]
    RegistryCorrupt(String),
    #[error("{0}")]
    UploadMismatch(String),
    #[error("{0}")]
    UploadRefused(String),
    #[error("{0}")]
    PendingLimit(String),
    #[error("the plugin is {size} bytes, over the {max} bytes a proposal by hash may approve")]
    PluginTooLarge { size: u64, max: u64 },
    #[error(
        "the plugin is cut into {pieces} pieces, more than {max}: use larger pieces (up to {} bytes)",
        MAX_UPLOAD_PIECE_BYTES
    )]
    TooManyPieces { pieces: u64, max: usize },
}

impl TxError {
    /// The stable result code (never [`code::OK`]).
    pub fn code(&self) -> u32 {
        match self {
            TxError::Malformed(_) => code::MALFORMED,
            TxError::BadSignature(_) => code::BAD_SIGNATURE,
            TxError::WrongChainId { .. } => code::WRONG_CHAIN_ID,
            TxError::BadNonce { .. } => code::BAD_NONCE,
            TxError::ReservedKey { .. } => code::RESERVED_KEY,
            TxError::InvalidKey { .. } => code::INVALID_KEY,
            TxError::InvalidValue { .. } => code::INVALID_VALUE,
            TxError::TooLarge { .. } => code::TOO_LARGE,
            TxError::Empty => code::EMPTY,
            TxError::NotValidator(_) => code::NOT_VALIDATOR,
            TxError::Governance(_) => code::GOVERNANCE,
            TxError::PluginRefused(_) => code::PLUGIN_REFUSED,
            TxError::FormatTaken(_) => code::FORMAT_TAKEN,
            TxError::NoSuchProposal(_) => code::NO_SUCH_PROPOSAL,
            TxError::ProposalPassed(_) => code::PROPOSAL_PASSED,
            TxError::ProposalExpired(_) => code::PROPOSAL_EXPIRED,
            TxError::AlreadyVoted(_) => code::ALREADY_VOTED,
            TxError::RegistryCorrupt(_) => code::REGISTRY_CORRUPT,
            TxError::UploadMismatch(_) => code::UPLOAD_MISMATCH,
            TxError::UploadRefused(_) => code::UPLOAD_REFUSED,
            TxError::PendingLimit(_) => code::PENDING_LIMIT,
            TxError::PluginTooLarge { .. } => code::PLUGIN_TOO_LARGE,
            TxError::TooManyPieces { .. } => code::TOO_MANY_PIECES,
        }
    }
}

/// A nonce value in state that is not a non-negative JSON integer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stored nonce {0:?} is not a non-negative JSON integer: the state under __n. is corrupt")]
pub struct NonceValueError(pub String);

/// A transaction whose encoding and signature have been checked (or that was
/// just signed), with its wire bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tx {
    body: TxBody,
    wire: Vec<u8>,
}

impl Tx {
    /// Signs `body` with `key`. Refused when `body.account` is not `key`'s
    /// public key (nobody could verify the signature). Does not validate: the
    /// node does, so tests can build refused transactions too.
    pub fn sign(body: TxBody, key: &SigningKey) -> Result<Tx, TxError> {
        if body.account != key.verifying_key().to_bytes() {
            return Err(TxError::BadSignature(
                "the body's account is not the signing key's public key".into(),
            ));
        }
        let body_bytes =
            postcard::to_stdvec(&body).map_err(|e| TxError::Malformed(format!("encoding the body: {e}")))?;
        let signature = key.sign(&signed_message(&body_bytes)).to_bytes();
        let wire = SignedTx {
            body: body_bytes,
            signature,
        }
        .to_bytes();
        Ok(Tx { body, wire })
    }

    /// Decodes wire bytes canonically and verifies the signature (strict
    /// ed25519). Bytes over [`MAX_GOV_TX_BYTES`] are refused before decoding.
    pub fn decode_and_verify(bytes: &[u8]) -> Result<Tx, TxError> {
        check_tx_size(bytes.len(), MAX_GOV_TX_BYTES)?;
        let signed: SignedTx = decode_canonical(bytes, "transaction")?;
        let body: TxBody = decode_canonical(&signed.body, "transaction body")?;
        let key = VerifyingKey::from_bytes(&body.account)
            .map_err(|_| TxError::BadSignature("the account is not a valid ed25519 public key".into()))?;
        key.verify_strict(&signed_message(&signed.body), &Signature::from_bytes(&signed.signature))
            .map_err(|_| TxError::BadSignature("the signature does not verify for the account".into()))?;
        Ok(Tx {
            body,
            wire: bytes.to_vec(),
        })
    }

    /// The stateless rules (module header), for a chain called `chain_id`.
    pub fn validate(&self, chain_id: &str) -> Result<(), TxError> {
        if self.body.chain_id != chain_id {
            return Err(TxError::WrongChainId {
                expected: chain_id.to_string(),
                got: self.body.chain_id.clone(),
            });
        }
        match &self.body.action {
            Action::Patch(ops) => {
                check_tx_size(self.wire.len(), MAX_TX_BYTES)?;
                check_patch(ops)
            }
            Action::Propose(p) => {
                check_tx_size(self.wire.len(), MAX_GOV_TX_BYTES)?;
                check_proposal(p)
            }
            Action::Vote(_) => check_tx_size(self.wire.len(), MAX_TX_BYTES),
            Action::ProposeHash(p) => {
                check_tx_size(self.wire.len(), MAX_TX_BYTES)?;
                check_hash_proposal(p)
            }
            Action::Upload(u) => {
                check_tx_size(self.wire.len(), MAX_GOV_TX_BYTES)?;
                if u.bytes.is_empty() || u.bytes.len() > MAX_UPLOAD_PIECE_BYTES as usize {
                    return Err(TxError::UploadRefused(format!(
                        "the upload carries {} bytes; a piece is 1 to {MAX_UPLOAD_PIECE_BYTES}",
                        u.bytes.len()
                    )));
                }
                Ok(())
            }
        }
    }

    /// The stateful rule: `expected` is the account's nonce in state ([`parse_nonce`]).
    pub fn check_nonce(&self, expected: u64) -> Result<(), TxError> {
        if self.body.nonce == expected {
            Ok(())
        } else {
            Err(TxError::BadNonce {
                expected,
                got: self.body.nonce,
            })
        }
    }

    /// SHA-256 of the wire bytes: the hash CometBFT reports for this transaction.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(&self.wire).into()
    }

    pub fn body(&self) -> &TxBody {
        &self.body
    }

    pub fn chain_id(&self) -> &str {
        &self.body.chain_id
    }

    pub fn account(&self) -> &[u8; 32] {
        &self.body.account
    }

    /// The account as state writes it: lowercase hex of the public key.
    pub fn account_hex(&self) -> String {
        hex::encode(self.body.account)
    }

    pub fn nonce(&self) -> u64 {
        self.body.nonce
    }

    pub fn action(&self) -> &Action {
        &self.body.action
    }

    /// The wire bytes (what is broadcast and hashed).
    pub fn bytes(&self) -> &[u8] {
        &self.wire
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.wire
    }
}

/// [`Tx::decode_and_verify`], as a free function.
pub fn decode_and_verify(bytes: &[u8]) -> Result<Tx, TxError> {
    Tx::decode_and_verify(bytes)
}

/// The state key holding `account`'s nonce: `__n.<lowercase hex>`.
pub fn nonce_key(account: &[u8; 32]) -> String {
    format!("__n.{}", hex::encode(account))
}

/// The account's nonce from the value stored under [`nonce_key`]: 0 when absent.
pub fn parse_nonce(stored: Option<&str>) -> Result<u64, NonceValueError> {
    match stored {
        None => Ok(0),
        Some(s) => serde_json::from_str::<u64>(s).map_err(|_| NonceValueError(s.to_string())),
    }
}

/// The stored form of nonce `n` (what the node writes under [`nonce_key`]).
pub(crate) fn nonce_stored(n: u64) -> String {
    n.to_string()
}

fn signed_message(body: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(SIGN_DOMAIN.len() + body.len());
    msg.extend_from_slice(SIGN_DOMAIN);
    msg.extend_from_slice(body);
    msg
}

fn check_tx_size(len: usize, max: usize) -> Result<(), TxError> {
    if len > max {
        return Err(TxError::TooLarge {
            what: "the transaction (bytes)".into(),
            size: len,
            max,
        });
    }
    Ok(())
}

/// The rules on a proposal alone (sizes and ranges); the node unpacks the
/// plugin ([`Proposal::plugin`], once) and adds the stateful rules and the
/// plugin's conformance check.
pub fn check_proposal(p: &Proposal) -> Result<(), TxError> {
    if p.plugin_gzip.len() > MAX_PLUGIN_GZIP_BYTES {
        return Err(TxError::TooLarge {
            what:
                "the proposed plugin, compressed (bytes; build it with `strip = true` and opt-level \"s\" to shrink it)"
                    .into(),
            size: p.plugin_gzip.len(),
            max: MAX_PLUGIN_GZIP_BYTES,
        });
    }
    check_gov_blocks(p.activation_delay, p.expires_after)
}

fn check_gov_blocks(activation_delay: u64, expires_after: u64) -> Result<(), TxError> {
    for (what, n) in [("activation delay", activation_delay), ("expiry", expires_after)] {
        if n == 0 || n > MAX_GOV_BLOCKS {
            return Err(TxError::Governance(format!(
                "the {what} is {n} blocks; it must be 1 to {MAX_GOV_BLOCKS}"
            )));
        }
    }
    Ok(())
}

/// The rules on a proposal by hash alone: its size, its pieces and its ranges.
pub fn check_hash_proposal(p: &HashProposal) -> Result<(), TxError> {
    if p.bytes == 0 {
        return Err(TxError::PluginRefused("the proposal names a plugin of 0 bytes".into()));
    }
    if p.bytes > MAX_UPLOADED_PLUGIN_BYTES {
        return Err(TxError::PluginTooLarge {
            size: p.bytes,
            max: MAX_UPLOADED_PLUGIN_BYTES,
        });
    }
    if p.piece_bytes == 0 || !p.piece_bytes.is_multiple_of(UPLOAD_PIECE_UNIT) || p.piece_bytes > MAX_UPLOAD_PIECE_BYTES
    {
        return Err(TxError::Governance(format!(
            "pieces of {} bytes: a piece must be a multiple of {UPLOAD_PIECE_UNIT} bytes, up to {MAX_UPLOAD_PIECE_BYTES}",
            p.piece_bytes
        )));
    }
    if p.pieces() > MAX_UPLOAD_PIECES as u64 {
        return Err(TxError::TooManyPieces {
            pieces: p.pieces(),
            max: MAX_UPLOAD_PIECES,
        });
    }
    if p.piece_sha256.len() as u64 != p.pieces() {
        return Err(TxError::Governance(format!(
            "the proposal lists {} piece hashes, but {} bytes in pieces of {} make {} pieces",
            p.piece_sha256.len(),
            p.bytes,
            p.piece_bytes,
            p.pieces()
        )));
    }
    check_gov_blocks(p.activation_delay, p.expires_after)
}

/// Decodes `bytes` as `T` and requires that re-encoding gives the same bytes.
fn decode_canonical<T: Serialize + for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T, TxError> {
    let (value, rest): (T, _) =
        postcard::take_from_bytes(bytes).map_err(|e| TxError::Malformed(format!("{what} does not decode: {e}")))?;
    if !rest.is_empty() {
        return Err(TxError::Malformed(format!(
            "{} bytes after the end of the {what}",
            rest.len()
        )));
    }
    let again =
        postcard::to_stdvec(&value).map_err(|e| TxError::Malformed(format!("{what} does not re-encode: {e}")))?;
    if again != bytes {
        return Err(TxError::Malformed(format!(
            "{what} is not canonically encoded (e.g. an overlong length or number)"
        )));
    }
    Ok(value)
}

/// The rules on a patch's ops alone (count, keys, values), e.g. to refuse a
/// patch before fetching a chain id and nonce for it.
pub fn check_patch(ops: &[Op]) -> Result<(), TxError> {
    if ops.is_empty() {
        return Err(TxError::Empty);
    }
    if ops.len() > MAX_OPS {
        return Err(TxError::TooLarge {
            what: "the number of ops".into(),
            size: ops.len(),
            max: MAX_OPS,
        });
    }
    let mut seen = std::collections::HashSet::with_capacity(ops.len());
    for op in ops {
        let key = op.key();
        check_key(key)?;
        if !seen.insert(key) {
            return Err(TxError::InvalidKey {
                key: key.to_string(),
                reason: "it appears twice in the patch; keep only the last op on it".into(),
            });
        }
        if let Op::Set { key, stored } = op {
            check_value(key, stored)?;
        }
    }
    Ok(())
}

/// A key a patch may write.
pub(crate) fn check_key(key: &str) -> Result<(), TxError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(TxError::TooLarge {
            what: format!("key {:?}… (bytes)", truncate(key, 40)),
            size: key.len(),
            max: MAX_KEY_BYTES,
        });
    }
    if key.starts_with("__") {
        return Err(TxError::ReservedKey {
            key: key.to_string(),
            reason: "keys starting with `__` are run state; nonces are managed by the node",
        });
    }
    let file = key.split_once('.').map_or(key, |(file, _)| file);
    if file == RESERVED_CONTRACT {
        return Err(TxError::ReservedKey {
            key: key.to_string(),
            reason: "the `statesnap` contract holds the node's own records",
        });
    }
    key_path(key).map_err(|e| TxError::InvalidKey {
        key: key.to_string(),
        reason: e.to_string(),
    })?;
    Ok(())
}

/// A stored value a patch may write under `key`.
pub(crate) fn check_value(key: &str, stored: &str) -> Result<(), TxError> {
    if stored.len() > MAX_VALUE_BYTES {
        return Err(TxError::TooLarge {
            what: format!("the value for key {key:?} (bytes)"),
            size: stored.len(),
            max: MAX_VALUE_BYTES,
        });
    }
    let invalid = |reason: String| TxError::InvalidValue {
        key: key.to_string(),
        reason,
    };
    if stored.contains('\0') {
        return Err(invalid(
            "it contains a NUL character, which the HDF5 layout cannot store".into(),
        ));
    }
    match canonical_bytes(stored) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(invalid("it is JSON null; remove a key with a delete op instead".into())),
        Err(e) => Err(invalid(e.to_string())),
    }
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Serde for `[u8; 64]` (serde's own array impls stop at 32): a 64-tuple of
/// bytes, which postcard writes as 64 raw bytes.
mod bytes64 {
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::ser::SerializeTuple;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(64)?;
        for b in bytes {
            t.serialize_element(b)?;
        }
        t.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = [u8; 64];
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("64 bytes")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<[u8; 64], A::Error> {
                let mut out = [0u8; 64];
                for (i, b) in out.iter_mut().enumerate() {
                    *b = seq.next_element()?.ok_or_else(|| A::Error::invalid_length(i, &self))?;
                }
                Ok(out)
            }
        }
        d.deserialize_tuple(64, V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    fn body(ops: Vec<Op>) -> TxBody {
        TxBody {
            chain_id: "test".into(),
            account: key().verifying_key().to_bytes(),
            nonce: 3,
            action: Action::Patch(ops),
        }
    }

    fn set(key: &str, stored: &str) -> Op {
        Op::Set {
            key: key.into(),
            stored: stored.into(),
        }
    }

    #[test]
    fn wire_layout_is_as_documented() {
        let tx = Tx::sign(body(vec![set("a.b", "1")]), &key()).unwrap();
        let signed: SignedTx = postcard::from_bytes(tx.bytes()).unwrap();
        // body = chain id (len 4 + "test"), 32 account bytes, nonce 3, Patch (0), 1 op, Set (0), "a.b", "1"
        let mut expected = vec![4];
        expected.extend_from_slice(b"test");
        expected.extend_from_slice(&key().verifying_key().to_bytes());
        expected.extend_from_slice(&[3, 0, 1, 0, 3, b'a', b'.', b'b', 1, b'1']);
        assert_eq!(signed.body, expected);
        // wire = body length, body, 64 signature bytes
        assert_eq!(tx.bytes().len(), 1 + expected.len() + 64);
        assert_eq!(tx.bytes()[0] as usize, expected.len());
        let mut msg = SIGN_DOMAIN.to_vec();
        msg.extend_from_slice(&expected);
        key()
            .verifying_key()
            .verify_strict(&msg, &Signature::from_bytes(&signed.signature))
            .unwrap();
    }

    #[test]
    fn signing_with_another_key_is_refused() {
        let other = SigningKey::from_bytes(&[8u8; 32]);
        assert_eq!(Tx::sign(body(vec![]), &other).unwrap_err().code(), code::BAD_SIGNATURE);
    }

    #[test]
    fn nonces() {
        assert_eq!(nonce_key(&[0xab; 32]), format!("__n.{}", "ab".repeat(32)));
        assert_eq!(parse_nonce(None), Ok(0));
        assert_eq!(parse_nonce(Some("17")), Ok(17));
        assert_eq!(parse_nonce(Some(&nonce_stored(u64::MAX))), Ok(u64::MAX));
        for bad in ["-1", "1.0", "\"3\"", "null", "", "01", "18446744073709551616"] {
            assert!(parse_nonce(Some(bad)).is_err(), "{bad}");
        }
        let tx = Tx::sign(body(vec![set("a.b", "1")]), &key()).unwrap();
        assert_eq!(tx.check_nonce(3), Ok(()));
        assert_eq!(tx.check_nonce(4), Err(TxError::BadNonce { expected: 4, got: 3 }));
        assert_eq!(tx.check_nonce(4).unwrap_err().code(), code::BAD_NONCE);
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("aé", 2), "a");
        assert_eq!(truncate("ab", 40), "ab");
    }

    #[test]
    fn uploads_and_proposals_by_hash_have_their_documented_variants_and_rules() {
        let wasm: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
        let p = HashProposal::new(5, &wasm, 16 * 1024, 3, 9);
        assert_eq!(p.pieces(), 3);
        assert_eq!(p.piece_sha256[2], <[u8; 32]>::from(Sha256::digest(&wasm[32768..])));
        assert_eq!(check_hash_proposal(&p), Ok(()));
        let encoded = postcard::to_stdvec(&Action::ProposeHash(p.clone())).unwrap();
        assert_eq!(encoded[0], 3, "ProposeHash is variant 3");
        let upload = Action::Upload(Upload {
            proposal: 1,
            index: 0,
            bytes: vec![1, 2],
        });
        assert_eq!(
            postcard::to_stdvec(&upload).unwrap(),
            [4, 1, 0, 2, 1, 2],
            "Upload is variant 4"
        );

        let mut odd = p.clone();
        odd.piece_bytes = 20_000;
        assert_eq!(check_hash_proposal(&odd).unwrap_err().code(), code::GOVERNANCE);
        let mut missing = p.clone();
        missing.piece_sha256.pop();
        assert_eq!(check_hash_proposal(&missing).unwrap_err().code(), code::GOVERNANCE);
        let mut huge = p.clone();
        huge.bytes = MAX_UPLOADED_PLUGIN_BYTES + 1;
        assert_eq!(check_hash_proposal(&huge).unwrap_err().code(), code::PLUGIN_TOO_LARGE);
        let mut empty = p;
        empty.bytes = 0;
        assert_eq!(check_hash_proposal(&empty).unwrap_err().code(), code::PLUGIN_REFUSED);
    }
}
