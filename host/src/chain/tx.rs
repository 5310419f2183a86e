//! STAND-IN (replaced by the real transaction module when it lands).

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Set { key: String, stored: String },
    Delete { key: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    Patch(Vec<Op>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxBody {
    pub chain_id: String,
    pub account: [u8; 32],
    pub nonce: u64,
    pub action: Action,
}

#[derive(Serialize, Deserialize)]
struct SignedTx {
    body: Vec<u8>,
    #[serde(with = "serde_sig")]
    signature: [u8; 64],
}

mod serde_sig {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let v: Vec<u8> = Vec::deserialize(d)?;
        v.try_into()
            .map_err(|_| serde::de::Error::custom("signature is not 64 bytes"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    #[error("malformed transaction: {0}")]
    Malformed(String),
    #[error("bad signature")]
    BadSignature,
    #[error("wrong chain id: {got} (expected {expected})")]
    WrongChain { expected: String, got: String },
    #[error("bad nonce: expected {expected}, got {got}")]
    BadNonce { expected: u64, got: u64 },
    #[error("reserved key {0}")]
    ReservedKey(String),
    #[error("invalid value for {0}: {1}")]
    InvalidValue(String, String),
}

impl TxError {
    pub fn code(&self) -> u32 {
        match self {
            TxError::Malformed(_) => 1,
            TxError::BadSignature => 2,
            TxError::WrongChain { .. } => 3,
            TxError::BadNonce { .. } => 4,
            TxError::ReservedKey(_) => 5,
            TxError::InvalidValue(..) => 7,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Tx {
    body: TxBody,
}

const DOMAIN: &[u8] = b"statesnap-tx-v1:";

pub fn sign(body: &TxBody, key: &SigningKey) -> Vec<u8> {
    let b = postcard::to_stdvec(body).unwrap();
    let mut msg = DOMAIN.to_vec();
    msg.extend_from_slice(&b);
    let signature = key.sign(&msg).to_bytes();
    postcard::to_stdvec(&SignedTx { body: b, signature }).unwrap()
}

pub fn decode_and_verify(bytes: &[u8]) -> Result<Tx, TxError> {
    let s: SignedTx = postcard::from_bytes(bytes).map_err(|e| TxError::Malformed(e.to_string()))?;
    let body: TxBody = postcard::from_bytes(&s.body).map_err(|e| TxError::Malformed(e.to_string()))?;
    let vk = VerifyingKey::from_bytes(&body.account).map_err(|_| TxError::BadSignature)?;
    let mut msg = DOMAIN.to_vec();
    msg.extend_from_slice(&s.body);
    vk.verify(&msg, &Signature::from_bytes(&s.signature))
        .map_err(|_| TxError::BadSignature)?;
    Ok(Tx { body })
}

impl Tx {
    pub fn body(&self) -> &TxBody {
        &self.body
    }
    pub fn validate(&self, chain_id: &str) -> Result<(), TxError> {
        if self.body.chain_id != chain_id {
            return Err(TxError::WrongChain {
                expected: chain_id.into(),
                got: self.body.chain_id.clone(),
            });
        }
        let Action::Patch(ops) = &self.body.action;
        for op in ops {
            let key = match op {
                Op::Set { key, .. } | Op::Delete { key } => key,
            };
            if key.starts_with("__") || key.starts_with("statesnap.") {
                return Err(TxError::ReservedKey(key.clone()));
            }
            if let Op::Set { key, stored } = op {
                match crate::store::value::canonical_bytes(stored) {
                    Ok(Some(_)) => {}
                    _ => return Err(TxError::InvalidValue(key.clone(), "bad".into())),
                }
            }
        }
        Ok(())
    }
}

pub fn nonce_key(account: &[u8; 32]) -> String {
    format!("__n.{}", hex::encode(account))
}

pub fn parse_nonce(stored: &str) -> Result<u64, TxError> {
    stored
        .trim()
        .parse()
        .map_err(|_| TxError::Malformed(format!("nonce {stored}")))
}
