//! Account keys and their files, in CometBFT's `priv_validator_key.json`
//! format, so a validator signs governance votes with its consensus key and
//! the same tools read both.
//!
//! A key file:
//!
//! ```json
//! {
//!   "address": "<HEX of the first 20 bytes of SHA-256(public key)>",
//!   "pub_key": {"type": "tendermint/PubKeyEd25519", "value": "<base64, 32 bytes>"},
//!   "priv_key": {"type": "tendermint/PrivKeyEd25519", "value": "<base64, 64 bytes: seed ‖ public key>"}
//! }
//! ```

use std::io::Write;
use std::path::Path;

use base64::Engine as _;
use ed25519_dalek::{SigningKey, VerifyingKey};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const PUB_TYPE: &str = "tendermint/PubKeyEd25519";
const PRIV_TYPE: &str = "tendermint/PrivKeyEd25519";

/// Why a key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("reading key file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("writing key file {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("key file {path} already exists; choose another --out or remove it first")]
    Exists { path: String },
    #[error("key file is not CometBFT priv_validator_key.json JSON: {0}")]
    Json(String),
    #[error(
        "key type {found:?} is not supported: statesnap accounts are ed25519 keys ({expected:?}), as CometBFT's default"
    )]
    WrongType { found: String, expected: &'static str },
    #[error("{field} is not valid base64 of {len} bytes: {reason}")]
    Encoding {
        field: &'static str,
        len: usize,
        reason: String,
    },
    #[error("key file is inconsistent: {0}; the file is damaged or was edited, use an intact copy")]
    Mismatch(&'static str),
}

#[derive(Serialize, Deserialize)]
struct KeyFileJson {
    address: String,
    pub_key: TypedValue,
    priv_key: TypedValue,
}

#[derive(Serialize, Deserialize)]
struct TypedValue {
    #[serde(rename = "type")]
    kind: String,
    value: String,
}

/// A new random key (from the operating system's randomness, via `rand`'s thread RNG).
pub fn generate() -> SigningKey {
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    SigningKey::from_bytes(&seed)
}

/// A key derived from `seed` and `index`: the same pair always gives the same
/// key. For load generators and tests only: anyone who knows the seed has it.
pub fn derive(seed: u64, index: u64) -> SigningKey {
    let mut h = Sha256::new();
    h.update(b"statesnap-derived-key-v1:");
    h.update(seed.to_be_bytes());
    h.update(index.to_be_bytes());
    SigningKey::from_bytes(&h.finalize().into())
}

/// The account id in state: lowercase hex of the public key.
pub fn account_hex(key: &VerifyingKey) -> String {
    hex::encode(key.as_bytes())
}

/// CometBFT's address: upper-case hex of the first 20 bytes of SHA-256(public key).
pub fn address(key: &VerifyingKey) -> String {
    hex::encode_upper(&Sha256::digest(key.as_bytes())[..20])
}

/// The key file's JSON text (pretty, as CometBFT writes it).
pub fn to_json(key: &SigningKey) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let vk = key.verifying_key();
    let file = KeyFileJson {
        address: address(&vk),
        pub_key: TypedValue {
            kind: PUB_TYPE.into(),
            value: b64.encode(vk.as_bytes()),
        },
        priv_key: TypedValue {
            kind: PRIV_TYPE.into(),
            value: b64.encode(key.to_keypair_bytes()),
        },
    };
    serde_json::to_string_pretty(&file).expect("a struct of strings encodes as JSON")
}

/// Reads key file JSON text, checking that its parts agree.
pub fn from_json(text: &str) -> Result<SigningKey, KeyFileError> {
    // Look at the types first so another key type gets a type error, not a JSON one.
    let raw: serde_json::Value = serde_json::from_str(text).map_err(|e| KeyFileError::Json(e.to_string()))?;
    for (field, expected) in [("priv_key", PRIV_TYPE), ("pub_key", PUB_TYPE)] {
        if let Some(found) = raw.get(field).and_then(|v| v.get("type")).and_then(|t| t.as_str()) {
            if found != expected {
                return Err(KeyFileError::WrongType {
                    found: found.to_string(),
                    expected,
                });
            }
        }
    }
    let file: KeyFileJson = serde_json::from_value(raw).map_err(|e| KeyFileError::Json(e.to_string()))?;
    let keypair: [u8; 64] = decode_b64("priv_key.value", &file.priv_key.value)?;
    let public: [u8; 32] = decode_b64("pub_key.value", &file.pub_key.value)?;
    let key = SigningKey::from_keypair_bytes(&keypair)
        .map_err(|_| KeyFileError::Mismatch("the private key's public half does not match its seed"))?;
    let vk = key.verifying_key();
    if vk.as_bytes() != &public {
        return Err(KeyFileError::Mismatch("pub_key is not the private key's public key"));
    }
    if !file.address.eq_ignore_ascii_case(&address(&vk)) {
        return Err(KeyFileError::Mismatch("address is not derived from pub_key"));
    }
    Ok(key)
}

/// Reads a key file.
pub fn read(path: &Path) -> Result<SigningKey, KeyFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Read {
        path: path.display().to_string(),
        source,
    })?;
    from_json(&text).map_err(|e| match e {
        KeyFileError::Json(reason) => KeyFileError::Json(format!("{}: {reason}", path.display())),
        other => other,
    })
}

/// Writes a new key file readable only by its owner (mode 0600); refuses to
/// replace an existing file.
pub fn write_new(path: &Path, key: &SigningKey) -> Result<(), KeyFileError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let path_text = path.display().to_string();
    let mut file = options.open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            KeyFileError::Exists {
                path: path_text.clone(),
            }
        } else {
            KeyFileError::Write {
                path: path_text.clone(),
                source,
            }
        }
    })?;
    let mut text = to_json(key);
    text.push('\n');
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|source| KeyFileError::Write {
            path: path_text,
            source,
        })
}

fn decode_b64<const N: usize>(field: &'static str, text: &str) -> Result<[u8; N], KeyFileError> {
    let err = |reason: String| KeyFileError::Encoding { field, len: N, reason };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| err(e.to_string()))?;
    let len = bytes.len();
    bytes.try_into().map_err(|_| err(format!("it is {len} bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_keys_are_stable_and_distinct() {
        assert_eq!(derive(1, 0).to_bytes(), derive(1, 0).to_bytes());
        assert_ne!(derive(1, 0).to_bytes(), derive(1, 1).to_bytes());
        assert_ne!(derive(1, 0).to_bytes(), derive(2, 0).to_bytes());
        assert_ne!(generate().to_bytes(), generate().to_bytes());
    }

    #[test]
    fn json_round_trip() {
        let key = derive(9, 9);
        let back = from_json(&to_json(&key)).unwrap();
        assert_eq!(back.to_bytes(), key.to_bytes());
        assert_eq!(address(&key.verifying_key()).len(), 40);
        assert_eq!(account_hex(&key.verifying_key()).len(), 64);
    }
}
