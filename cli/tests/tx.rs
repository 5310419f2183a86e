//! Signed state-patch transactions, key files, the `tx` / `key` commands, and
//! the load generator against an in-memory chain.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use assert_cmd::Command;
use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha256};

use statesnap::protocol::account_key::{self, KeyFileError};
use statesnap::protocol::tx::{
    code, decode_and_verify, Action, Op, Proposal, SignedTx, Tx, TxBody, TxError, MAX_GOV_TX_BYTES, MAX_OPS,
    MAX_PLUGIN_BYTES, MAX_TX_BYTES, SIGN_DOMAIN,
};
use statesnap_harness::load::{run_load, CheckResult, Clock, LoadConfig, LoadStats, Submitter};

const CHAIN: &str = "statesnap-test";

fn key() -> SigningKey {
    account_key::derive(42, 0)
}

fn set(key: &str, stored: &str) -> Op {
    Op::Set {
        key: key.into(),
        stored: stored.into(),
    }
}

fn del(key: &str) -> Op {
    Op::Delete { key: key.into() }
}

fn body(ops: Vec<Op>) -> TxBody {
    TxBody {
        chain_id: CHAIN.into(),
        account: key().verifying_key().to_bytes(),
        nonce: 7,
        action: Action::Patch(ops),
    }
}

fn signed(ops: Vec<Op>) -> Tx {
    Tx::sign(body(ops), &key()).unwrap()
}

/// Signs the stateless checks' verdict on a patch: its code, 0 when valid.
fn verdict(ops: Vec<Op>) -> u32 {
    let tx = signed(ops);
    let decoded = decode_and_verify(tx.bytes()).and_then(|t| t.validate(CHAIN).map(|()| t));
    decoded.map_or_else(|e| e.code(), |_| code::OK)
}

fn transfer() -> Vec<Op> {
    vec![
        set("currency.balances:alice", r#"{"__fixed__":"12.5"}"#),
        set("currency.balances:bob", r#"{"__fixed__":"0.5"}"#),
        del("con_token_1.allowances:alice:bob"),
    ]
}

// ---- the format --------------------------------------------------------------------------------

#[test]
fn sign_encode_decode_round_trip() {
    let tx = signed(transfer());
    let back = decode_and_verify(tx.bytes()).unwrap();
    assert_eq!(back, tx);
    assert_eq!(back.body(), &body(transfer()));
    assert_eq!(back.nonce(), 7);
    assert_eq!(back.chain_id(), CHAIN);
    assert_eq!(back.account_hex(), hex::encode(key().verifying_key().to_bytes()));
    assert_eq!(back.hash(), <[u8; 32]>::from(Sha256::digest(tx.bytes())));
    assert_eq!(back.validate(CHAIN), Ok(()));
    // A different nonce is a different transaction with a different hash.
    let mut other = body(transfer());
    other.nonce = 8;
    assert_ne!(Tx::sign(other, &key()).unwrap().hash(), tx.hash());
}

#[test]
fn every_stateless_rule_is_refused_with_its_code() {
    assert_eq!(verdict(transfer()), code::OK);
    assert_eq!(verdict(vec![del("a.b")]), code::OK);

    // chain id
    let tx = signed(transfer());
    let err = tx.validate("other-chain").unwrap_err();
    assert_eq!(err.code(), code::WRONG_CHAIN_ID);
    assert!(err.to_string().contains("other-chain"), "{err}");

    // empty, too many ops, too many bytes
    assert_eq!(verdict(vec![]), code::EMPTY);
    let many: Vec<Op> = (0..=MAX_OPS).map(|i| set(&format!("c.k:{i}"), "1")).collect();
    assert_eq!(verdict(many[..MAX_OPS].to_vec()), code::OK);
    assert_eq!(verdict(many), code::TOO_LARGE);
    let big = "\"".to_string() + &"x".repeat(30_000) + "\"";
    let huge = vec![set("c.a", &big), set("c.b", &big), set("c.c", &big)];
    let tx = signed(huge);
    assert!(tx.bytes().len() > MAX_TX_BYTES);
    assert_eq!(tx.validate(CHAIN).unwrap_err().code(), code::TOO_LARGE);
    // Decoding allows governance-sized transactions; validation limits patches.
    let decoded = decode_and_verify(tx.bytes()).unwrap();
    assert_eq!(decoded.validate(CHAIN).unwrap_err().code(), code::TOO_LARGE);
    assert_eq!(
        decode_and_verify(&vec![0u8; MAX_GOV_TX_BYTES + 1]).unwrap_err().code(),
        code::TOO_LARGE
    );

    // keys
    assert_eq!(
        verdict(vec![set("c.k", "1"), del("c.k")]),
        code::INVALID_KEY,
        "a key twice"
    );
    for reserved in [
        "__n.abcd",
        "__latest_block.height",
        "__",
        "statesnap.validators:x",
        "statesnap",
    ] {
        assert_eq!(verdict(vec![set(reserved, "1")]), code::RESERVED_KEY, "{reserved}");
        assert_eq!(verdict(vec![del(reserved)]), code::RESERVED_KEY, "{reserved}");
    }
    assert_eq!(
        verdict(vec![set("statesnapx.a", "1")]),
        code::OK,
        "only the exact file name is reserved"
    );
    assert_eq!(verdict(vec![set("c.a\0b", "1")]), code::INVALID_KEY, "NUL");
    let long_file = format!("{}.x", "f".repeat(256));
    assert_eq!(
        verdict(vec![set(&long_file, "1")]),
        code::INVALID_KEY,
        "file name over 255 bytes"
    );
    let long_key = format!("c.{}", "k".repeat(1023));
    assert_eq!(verdict(vec![set(&long_key[..1024], "1")]), code::OK);
    assert_eq!(
        verdict(vec![set(&long_key, "1")]),
        code::TOO_LARGE,
        "key over 1024 bytes"
    );

    // values
    assert_eq!(verdict(vec![set("c.k", "\"a\0b\"")]), code::INVALID_VALUE, "NUL");
    assert_eq!(
        verdict(vec![set("c.k", "null")]),
        code::INVALID_VALUE,
        "null: use Delete"
    );
    assert_eq!(verdict(vec![set("c.k", "{")]), code::INVALID_VALUE, "not JSON");
    assert_eq!(verdict(vec![set("c.k", "")]), code::INVALID_VALUE, "empty");
    assert_eq!(verdict(vec![set("c.k", r#"{"__delta__":[1,2]}"#)]), code::INVALID_VALUE);
    assert_eq!(verdict(vec![set("c.k", r#"{"__fixed__":"x"}"#)]), code::INVALID_VALUE);
    let at_limit = "\"".to_string() + &"v".repeat(32 * 1024 - 2) + "\"";
    assert_eq!(verdict(vec![set("c.k", &at_limit)]), code::OK);
    let over = "\"".to_string() + &"v".repeat(32 * 1024 - 1) + "\"";
    assert_eq!(verdict(vec![set("c.k", &over)]), code::TOO_LARGE, "value over 32 KiB");
    for ok in [
        r#"{"__time__":[2025,1,2,3,4,5,6]}"#,
        r#"{"__big_int__":"123456789012345678901234567890"}"#,
        r#"{"a":[1,2.5,"x"],"b":true}"#,
    ] {
        assert_eq!(verdict(vec![set("c.k", ok)]), code::OK, "{ok}");
    }
}

#[test]
fn codes_are_distinct_and_messages_say_what_to_do() {
    let errors = [
        TxError::Malformed("x".into()),
        TxError::BadSignature("x".into()),
        TxError::WrongChainId {
            expected: "a".into(),
            got: "b".into(),
        },
        TxError::BadNonce { expected: 2, got: 1 },
        TxError::ReservedKey {
            key: "__x".into(),
            reason: "r",
        },
        TxError::InvalidKey {
            key: "k".into(),
            reason: "r".into(),
        },
        TxError::InvalidValue {
            key: "k".into(),
            reason: "r".into(),
        },
        TxError::TooLarge {
            what: "w".into(),
            size: 2,
            max: 1,
        },
        TxError::Empty,
    ];
    let mut codes: Vec<u32> = errors.iter().map(|e| e.code()).collect();
    assert_eq!(codes, (1..=9).collect::<Vec<_>>());
    codes.dedup();
    assert_eq!(codes.len(), errors.len());
    let nonce = TxError::BadNonce { expected: 2, got: 1 }.to_string();
    assert!(nonce.contains("next nonce 2") && nonce.contains("nonce 2"), "{nonce}");
}

#[test]
fn a_flipped_byte_anywhere_is_refused() {
    let tx = signed(transfer());
    let wire = tx.bytes();
    for i in 0..wire.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut bad = wire.to_vec();
            bad[i] ^= mask;
            match decode_and_verify(&bad) {
                Ok(t) => panic!("byte {i} ^ {mask:#x} was accepted: {t:?}"),
                Err(e) => assert!(
                    [code::MALFORMED, code::BAD_SIGNATURE].contains(&e.code()),
                    "byte {i}: {e}"
                ),
            }
        }
    }
    for len in 0..wire.len() {
        assert_eq!(
            decode_and_verify(&wire[..len]).unwrap_err().code(),
            code::MALFORMED,
            "prefix {len}"
        );
    }
}

#[test]
fn non_canonical_encodings_are_refused() {
    let tx = signed(transfer());
    let wire = tx.bytes().to_vec();

    // trailing bytes
    let mut trailing = wire.clone();
    trailing.push(0);
    let err = decode_and_verify(&trailing).unwrap_err();
    assert_eq!(err.code(), code::MALFORMED);
    assert!(err.to_string().contains("after the end"), "{err}");

    // an overlong body length (same value, one more byte)
    let signed_tx: SignedTx = postcard::from_bytes(&wire).unwrap();
    let len = signed_tx.body.len();
    assert!(
        (128..16384).contains(&len),
        "the test assumes a two-byte length, body is {len}"
    );
    let mut overlong = vec![(len as u8 & 0x7f) | 0x80, ((len >> 7) as u8) | 0x80, 0];
    overlong.extend_from_slice(&signed_tx.body);
    overlong.extend_from_slice(&signed_tx.signature);
    let err = decode_and_verify(&overlong).unwrap_err();
    assert_eq!(err.code(), code::MALFORMED);
    assert!(err.to_string().contains("canonical"), "{err}");

    // a body with an overlong nonce, correctly signed: still refused
    let nonce_at = 1 + CHAIN.len() + 32;
    assert_eq!(signed_tx.body[nonce_at], 7);
    let mut body = signed_tx.body.clone();
    body.splice(nonce_at..=nonce_at, [0x87, 0x00]);
    assert_eq!(decode_and_verify(&resign(body)).unwrap_err().code(), code::MALFORMED);

    // a correctly signed body with trailing bytes
    let mut body = signed_tx.body.clone();
    body.push(0);
    assert_eq!(decode_and_verify(&resign(body)).unwrap_err().code(), code::MALFORMED);

    // the unmodified body re-signed the same way is accepted (the helper is sound)
    assert!(decode_and_verify(&resign(signed_tx.body)).is_ok());
}

/// Wire bytes of `body` signed by `key()` as the format says, without checks.
fn resign(body: Vec<u8>) -> Vec<u8> {
    let mut msg = SIGN_DOMAIN.to_vec();
    msg.extend_from_slice(&body);
    let signature = key().sign(&msg).to_bytes();
    SignedTx { body, signature }.to_bytes()
}

#[test]
fn signatures_by_other_keys_or_weak_keys_are_refused() {
    let tx = signed(transfer());
    let mut signed_tx: SignedTx = postcard::from_bytes(tx.bytes()).unwrap();
    let mut msg = SIGN_DOMAIN.to_vec();
    msg.extend_from_slice(&signed_tx.body);
    signed_tx.signature = account_key::derive(42, 1).sign(&msg).to_bytes();
    assert_eq!(
        decode_and_verify(&signed_tx.to_bytes()).unwrap_err().code(),
        code::BAD_SIGNATURE
    );
    // Signed without the domain prefix.
    let signed_tx = SignedTx {
        signature: key().sign(&signed_tx.body).to_bytes(),
        body: signed_tx.body,
    };
    assert_eq!(
        decode_and_verify(&signed_tx.to_bytes()).unwrap_err().code(),
        code::BAD_SIGNATURE
    );
    // The identity point as the account (a weak key): strict verification refuses it.
    let mut weak = body(transfer());
    weak.account = [0; 32];
    weak.account[0] = 1;
    let body_bytes = postcard::to_stdvec(&weak).unwrap();
    let forged = SignedTx {
        body: body_bytes,
        signature: [0; 64],
    };
    assert_eq!(
        decode_and_verify(&forged.to_bytes()).unwrap_err().code(),
        code::BAD_SIGNATURE
    );
    // Signing a body for another account is refused up front.
    assert_eq!(Tx::sign(weak, &key()).unwrap_err().code(), code::BAD_SIGNATURE);
}

// ---- key files -----------------------------------------------------------------------------------

/// Written by `cometbft init` (v0.38.26).
const COMETBFT_SAMPLE: &str = r#"{
  "address": "F81722C54296088ADC7009B6E8671DF9B61C79D5",
  "pub_key": {
    "type": "tendermint/PubKeyEd25519",
    "value": "HzlOyxn6eEObUaDccISykcg2UwbQcsN+nsWWY/eHooQ="
  },
  "priv_key": {
    "type": "tendermint/PrivKeyEd25519",
    "value": "txy2EKz6gD3jUP+IIPY1KkrMOUIHujRkWssGy6pxVUAfOU7LGfp4Q5tRoNxwhLKRyDZTBtByw36exZZj94eihA=="
  }
}"#;

#[test]
fn key_file_round_trip_mode_and_no_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.json");
    let key = account_key::generate();
    account_key::write_new(&path, &key).unwrap();
    assert_eq!(account_key::read(&path).unwrap().to_bytes(), key.to_bytes());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let err = account_key::write_new(&path, &account_key::generate()).unwrap_err();
    assert!(matches!(err, KeyFileError::Exists { .. }), "{err}");
    assert_eq!(
        account_key::read(&path).unwrap().to_bytes(),
        key.to_bytes(),
        "the file is unchanged"
    );
    // The JSON has CometBFT's shape.
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(v["pub_key"]["type"], "tendermint/PubKeyEd25519");
    assert_eq!(v["priv_key"]["type"], "tendermint/PrivKeyEd25519");
    assert_eq!(v["address"], account_key::address(&key.verifying_key()));
}

fn check_cometbft_key(text: &str) {
    let key = account_key::from_json(text).unwrap();
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    let pub_b64 = base64::engine::general_purpose::STANDARD
        .decode(v["pub_key"]["value"].as_str().unwrap())
        .unwrap();
    assert_eq!(key.verifying_key().to_bytes().as_slice(), pub_b64.as_slice());
    assert_eq!(
        account_key::address(&key.verifying_key()),
        v["address"].as_str().unwrap()
    );
    // Our writer produces the same JSON as CometBFT (modulo the trailing newline).
    assert_eq!(account_key::to_json(&key), text.trim_end());
}

#[test]
fn a_cometbft_sample_key_file_reads() {
    check_cometbft_key(COMETBFT_SAMPLE);
}

fn cometbft() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("cometbft"));
    let gopath = std::process::Command::new("go")
        .args(["env", "GOPATH"])
        .output()
        .ok()
        .map(|o| Path::new(String::from_utf8_lossy(&o.stdout).trim()).join("bin/cometbft"));
    on_path.chain(gopath).find(|p| p.is_file())
}

#[test]
fn a_key_file_from_cometbft_init_reads() {
    let Some(bin) = cometbft() else {
        eprintln!("cometbft not found on PATH or in $(go env GOPATH)/bin: only the fixed sample is checked");
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(&bin)
        .args(["init", "--home"])
        .arg(home.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let path = home.path().join("config/priv_validator_key.json");
    check_cometbft_key(&std::fs::read_to_string(&path).unwrap());
    account_key::read(&path).unwrap();
}

#[test]
fn wrong_key_types_and_damaged_files_are_refused_clearly() {
    let secp = COMETBFT_SAMPLE
        .replace("tendermint/PubKeyEd25519", "tendermint/PubKeySecp256k1")
        .replace("tendermint/PrivKeyEd25519", "tendermint/PrivKeySecp256k1");
    let err = account_key::from_json(&secp).unwrap_err().to_string();
    assert!(err.contains("Secp256k1") && err.contains("ed25519"), "{err}");

    let bls = COMETBFT_SAMPLE.replace("tendermint/PubKeyEd25519", "cometbft/PubKeyBls12_381");
    let err = account_key::from_json(&bls).unwrap_err().to_string();
    assert!(err.contains("Bls12_381"), "{err}");

    // pub_key of another key
    let other = account_key::to_json(&account_key::derive(1, 1));
    let other_pub: serde_json::Value = serde_json::from_str(&other).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(COMETBFT_SAMPLE).unwrap();
    v["pub_key"]["value"] = other_pub["pub_key"]["value"].clone();
    let err = account_key::from_json(&v.to_string()).unwrap_err();
    assert!(matches!(err, KeyFileError::Mismatch(_)), "{err}");

    // the private key's public half swapped
    let mut v: serde_json::Value = serde_json::from_str(COMETBFT_SAMPLE).unwrap();
    v["priv_key"] = other_pub["priv_key"].clone();
    let err = account_key::from_json(&v.to_string()).unwrap_err();
    assert!(matches!(err, KeyFileError::Mismatch(_)), "{err}");

    // wrong address
    let mut v: serde_json::Value = serde_json::from_str(COMETBFT_SAMPLE).unwrap();
    v["address"] = "00".repeat(20).into();
    assert!(matches!(
        account_key::from_json(&v.to_string()),
        Err(KeyFileError::Mismatch(_))
    ));

    // a 32-byte private key, not base64, not JSON
    let mut v: serde_json::Value = serde_json::from_str(COMETBFT_SAMPLE).unwrap();
    v["priv_key"]["value"] = base64::engine::general_purpose::STANDARD.encode([1u8; 32]).into();
    let err = account_key::from_json(&v.to_string()).unwrap_err().to_string();
    assert!(err.contains("64 bytes") && err.contains("32 bytes"), "{err}");
    let mut v: serde_json::Value = serde_json::from_str(COMETBFT_SAMPLE).unwrap();
    v["priv_key"]["value"] = "!!".into();
    assert!(matches!(
        account_key::from_json(&v.to_string()),
        Err(KeyFileError::Encoding { .. })
    ));
    assert!(matches!(account_key::from_json("{"), Err(KeyFileError::Json(_))));

    // a missing file names its path
    let err = account_key::read(Path::new("/nonexistent/k.json"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/k.json"), "{err}");
}

// ---- the command line -----------------------------------------------------------------------------

fn statesnap(args: &[&str]) -> Output {
    Command::cargo_bin("statesnap").unwrap().args(args).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn key_new_and_show_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("acct.json");
    let p = path.to_str().unwrap();
    let out = statesnap(&["key", "new", "--out", p]);
    assert!(out.status.success(), "{}", stderr(&out));
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let out = statesnap(&["key", "show", p]);
    assert!(out.status.success(), "{}", stderr(&out));
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(created, shown);
    let key = account_key::read(&path).unwrap();
    assert_eq!(shown["account"], account_key::account_hex(&key.verifying_key()));
    assert_eq!(shown["address"], account_key::address(&key.verifying_key()));

    let out = statesnap(&["key", "new", "--out", p]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    assert_eq!(account_key::read(&path).unwrap().to_bytes(), key.to_bytes());
}

fn key_file(dir: &Path) -> String {
    let path = dir.join("k.json");
    account_key::write_new(&path, &key()).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn tx_patch_against_an_unreachable_node_names_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let k = key_file(dir.path());
    let url = "http://127.0.0.1:9";
    let out = statesnap(&["tx", "patch", "--rpc", url, "--key", &k, "--set", "c.k=1"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("127.0.0.1:9"), "{}", stderr(&out));
    // With chain id and nonce given, the broadcast is what fails.
    let out = statesnap(&[
        "tx",
        "patch",
        "--rpc",
        url,
        "--key",
        &k,
        "--set",
        "c.k=1",
        "--chain-id",
        CHAIN,
        "--nonce",
        "0",
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("broadcast_tx_sync") && err.contains("127.0.0.1:9"),
        "{err}"
    );
}

#[test]
fn tx_patch_argument_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let k = key_file(dir.path());
    let url = "http://127.0.0.1:9";
    let out = statesnap(&["tx", "patch", "--rpc", url, "--key", &k, "--set", "no-equals-sign"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("is not KEY=STORED"), "{}", stderr(&out));

    let out = statesnap(&["tx", "patch", "--rpc", url, "--key", &k]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--set"), "{}", stderr(&out));

    // Refused locally, before any network call (the URL is never contacted).
    let out = statesnap(&["tx", "patch", "--rpc", url, "--key", &k, "--set", "__n.x=1"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("reserved"), "{}", stderr(&out));
    let out = statesnap(&["tx", "patch", "--rpc", url, "--key", &k, "--set", "c.k=null"]);
    assert!(stderr(&out).contains("delete"), "{}", stderr(&out));

    let out = statesnap(&[
        "tx",
        "patch",
        "--rpc",
        url,
        "--key",
        "/nonexistent.json",
        "--delete",
        "c.k",
    ]);
    assert!(stderr(&out).contains("/nonexistent.json"), "{}", stderr(&out));
}

// ---- the load generator against an in-memory chain ---------------------------------------------

/// A clock that only moves when told: sleeping jumps to the wake-up time.
#[derive(Default)]
struct FakeClock(AtomicU64);

impl FakeClock {
    fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_nanos() as u64, Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::SeqCst))
    }

    fn sleep_until(&self, t: Duration) {
        self.0.fetch_max(t.as_nanos() as u64, Ordering::SeqCst);
    }
}

/// What the chain does to a submission besides its checks.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    None,
    /// Another client uses account 0's nonce right after its 3rd accepted transaction.
    BumpAccount0,
    /// Every 5th submission is refused for a reason other than the nonce.
    RefuseEvery5th,
    /// The 10th submission gets no answer (and is not applied).
    Drop10th,
}

/// A chain in memory: checks each transaction as the node will (stateless
/// rules, then the nonce), and applies accepted ones to the nonces.
struct FakeChain {
    nonces: Mutex<HashMap<[u8; 32], u64>>,
    /// Accepted nonces per account, in order.
    accepted: Mutex<HashMap<[u8; 32], Vec<u64>>>,
    submissions: AtomicU64,
    nonce_queries: AtomicU64,
    fault: Fault,
}

impl FakeChain {
    fn new(fault: Fault) -> Self {
        FakeChain {
            nonces: Mutex::default(),
            accepted: Mutex::default(),
            submissions: AtomicU64::new(0),
            nonce_queries: AtomicU64::new(0),
            fault,
        }
    }
}

/// One node of the fake chain: records which accounts it saw.
struct FakeNode<'a> {
    chain: &'a FakeChain,
    seen: Mutex<Vec<[u8; 32]>>,
    clock: Option<&'a FakeClock>,
    /// Fake time each submission takes.
    latency: Duration,
    /// Submission number `n` takes this much fake time.
    stall: Option<(u64, Duration)>,
    /// Set `stop` after this many accepted transactions.
    stop_after: Option<(u64, &'a AtomicBool)>,
}

impl<'a> FakeNode<'a> {
    fn new(chain: &'a FakeChain) -> Self {
        FakeNode {
            chain,
            seen: Mutex::default(),
            clock: None,
            latency: Duration::ZERO,
            stall: None,
            stop_after: None,
        }
    }
}

impl Submitter for FakeNode<'_> {
    fn nonce(&self, account: &[u8; 32]) -> anyhow::Result<u64> {
        self.chain.nonce_queries.fetch_add(1, Ordering::SeqCst);
        Ok(self.chain.nonces.lock().unwrap().get(account).copied().unwrap_or(0))
    }

    fn submit(&self, bytes: &[u8]) -> anyhow::Result<CheckResult> {
        let n = self.chain.submissions.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(clock) = self.clock {
            clock.advance(self.latency);
            match self.stall {
                Some((at, d)) if at == n => clock.advance(d),
                _ => {}
            }
        }
        let refuse = |e: TxError| {
            Ok(CheckResult {
                code: e.code(),
                log: e.to_string(),
            })
        };
        let tx = match decode_and_verify(bytes).and_then(|t| t.validate(CHAIN).map(|()| t)) {
            Ok(tx) => tx,
            Err(e) => return refuse(e),
        };
        self.seen.lock().unwrap().push(*tx.account());
        match self.chain.fault {
            Fault::RefuseEvery5th if n % 5 == 0 => {
                return refuse(TxError::InvalidValue {
                    key: "k".into(),
                    reason: "injected".into(),
                })
            }
            Fault::Drop10th if n == 10 => anyhow::bail!("injected: no answer"),
            _ => {}
        }
        let mut nonces = self.chain.nonces.lock().unwrap();
        let next = nonces.entry(*tx.account()).or_insert(0);
        if let Err(e) = tx.check_nonce(*next) {
            return refuse(e);
        }
        *next += 1;
        let mut accepted = self.chain.accepted.lock().unwrap();
        let list = accepted.entry(*tx.account()).or_default();
        list.push(tx.nonce());
        if self.chain.fault == Fault::BumpAccount0 && tx.account() == &account(0) && list.len() == 3 {
            *next += 1;
        }
        let total: usize = accepted.values().map(Vec::len).sum();
        if let Some((limit, stop)) = self.stop_after {
            if total as u64 >= limit {
                stop.store(true, Ordering::SeqCst);
            }
        }
        Ok(CheckResult {
            code: code::OK,
            log: String::new(),
        })
    }
}

const SEED: u64 = 11;

fn account(i: u64) -> [u8; 32] {
    account_key::derive(SEED, i).verifying_key().to_bytes()
}

fn config(rate: f64, secs: u64, accounts: usize) -> LoadConfig {
    LoadConfig {
        accounts,
        seed: SEED,
        progress_every: Duration::from_millis(500),
        ..LoadConfig::new(CHAIN, rate, Duration::from_secs(secs))
    }
}

fn one_worker(cfg: LoadConfig) -> LoadConfig {
    LoadConfig {
        workers_per_submitter: 1,
        ..cfg
    }
}

fn run(cfg: &LoadConfig, nodes: &[FakeNode], clock: &FakeClock) -> (LoadStats, Vec<LoadStats>) {
    let stop = AtomicBool::new(false);
    let mut progress = Vec::new();
    let stats = run_load(cfg, nodes, clock, &stop, |s| progress.push(s.clone())).unwrap();
    (stats, progress)
}

#[test]
fn load_sends_rate_times_duration_with_consecutive_nonces() {
    let chain = FakeChain::new(Fault::None);
    let nodes = [FakeNode::new(&chain), FakeNode::new(&chain)];
    let clock = FakeClock::default();
    let cfg = config(200.0, 2, 10);
    let (stats, progress) = run(&cfg, &nodes, &clock);
    assert_eq!(
        (stats.sent, stats.accepted, stats.refused, stats.errors),
        (400, 400, 0, 0)
    );
    assert_eq!(stats.seconds, 2.0);
    assert_eq!(stats.rate, 200.0);
    assert_eq!(stats.last_problem, None);
    // Progress every 0.5 s of the run's clock, counts never decreasing.
    assert_eq!(progress.len(), 3, "{progress:?}");
    assert!(progress.windows(2).all(|w| w[0].sent <= w[1].sent));
    // Round robin: 40 transactions per account, nonces 0..40 in order, each nonce fetched once.
    let accepted = chain.accepted.lock().unwrap();
    for i in 0..10 {
        assert_eq!(accepted[&account(i)], (0..40).collect::<Vec<u64>>(), "account {i}");
    }
    assert_eq!(chain.nonce_queries.load(Ordering::SeqCst), 10);
    // Each account always uses the same node: account i -> worker i % 4 -> node (i % 4) % 2.
    for (n, node) in nodes.iter().enumerate() {
        let seen = node.seen.lock().unwrap();
        assert_eq!(seen.len(), 200);
        assert!(seen
            .iter()
            .all(|a| (0..10).any(|i| account(i) == *a && i as usize % 2 == n)));
    }
}

#[test]
fn load_starts_from_the_nonces_in_state() {
    let chain = FakeChain::new(Fault::None);
    chain.nonces.lock().unwrap().insert(account(1), 41);
    let nodes = [FakeNode::new(&chain)];
    let (stats, _) = run(&config(10.0, 1, 2), &nodes, &FakeClock::default());
    assert_eq!((stats.sent, stats.accepted), (10, 10));
    assert_eq!(
        chain.accepted.lock().unwrap()[&account(1)],
        (41..46).collect::<Vec<u64>>()
    );
}

#[test]
fn load_refetches_a_nonce_after_a_nonce_refusal() {
    let chain = FakeChain::new(Fault::BumpAccount0);
    let nodes = [FakeNode::new(&chain)];
    let (stats, _) = run(&config(50.0, 2, 5), &nodes, &FakeClock::default());
    assert_eq!(
        (stats.sent, stats.accepted, stats.refused, stats.errors),
        (100, 99, 1, 0)
    );
    assert!(stats
        .last_problem
        .unwrap()
        .contains(&format!("CheckTx code {}", code::BAD_NONCE)));
    assert_eq!(chain.nonce_queries.load(Ordering::SeqCst), 5 + 1);
    // Account 0: nonces 0,1,2, then 3 was taken by someone else, then 4 onwards.
    let accepted = chain.accepted.lock().unwrap();
    let mut expected: Vec<u64> = (0..3).collect();
    expected.extend(4..20);
    assert_eq!(accepted[&account(0)], expected);
}

#[test]
fn load_reuses_the_nonce_of_a_tx_refused_for_another_reason() {
    let chain = FakeChain::new(Fault::RefuseEvery5th);
    let nodes = [FakeNode::new(&chain)];
    let (stats, _) = run(&config(50.0, 2, 3), &nodes, &FakeClock::default());
    assert_eq!(
        (stats.sent, stats.accepted, stats.refused, stats.errors),
        (100, 80, 20, 0)
    );
    assert_eq!(chain.nonce_queries.load(Ordering::SeqCst), 3, "no nonce was lost");
    for (i, list) in chain.accepted.lock().unwrap().iter() {
        assert!(list.iter().enumerate().all(|(k, &n)| k as u64 == n), "{i:?}: {list:?}");
    }
}

#[test]
fn load_refetches_a_nonce_after_a_failed_broadcast() {
    let chain = FakeChain::new(Fault::Drop10th);
    let nodes = [FakeNode::new(&chain)];
    let (stats, _) = run(&config(20.0, 1, 4), &nodes, &FakeClock::default());
    assert_eq!(
        (stats.sent, stats.accepted, stats.refused, stats.errors),
        (20, 19, 0, 1)
    );
    assert_eq!(chain.nonce_queries.load(Ordering::SeqCst), 4 + 1);
    assert!(stats.last_problem.unwrap().contains("injected"));
}

#[test]
fn load_stops_when_asked() {
    let chain = FakeChain::new(Fault::None);
    let stop = AtomicBool::new(false);
    let mut node = FakeNode::new(&chain);
    node.stop_after = Some((50, &stop));
    let cfg = one_worker(config(100.0, 3600, 5));
    let stats = run_load(&cfg, &[node], &FakeClock::default(), &stop, |_| {}).unwrap();
    // One worker, a queue of at most ceil(100 / 1 / 10) = 10: at most that many after the 50th.
    assert!((50..=61).contains(&stats.sent), "{stats:?}");
    assert_eq!(stats.accepted, stats.sent);
}

#[test]
fn a_slow_node_slows_the_load_without_a_queue_or_an_overrun() {
    let chain = FakeChain::new(Fault::None);
    let clock = FakeClock::default();
    let mut node = FakeNode::new(&chain);
    node.clock = Some(&clock);
    node.latency = Duration::from_millis(50); // 20 tx/s at most, asked for 100
    let cfg = one_worker(config(100.0, 5, 5));
    let (stats, _) = run(&cfg, &[node], &clock);
    // Never ahead of the schedule (transaction k not before k / rate) ...
    assert!(stats.sent as f64 <= 100.0 * stats.seconds + 1.0, "{stats:?}");
    // ... at most what the node took in 5 s (100) plus what was under way when the time was up:
    // the worker's queue (10), the one in its hands and the one the pacer was handing over; so the
    // run ends at most 12 × 50 ms after its time.
    assert!(stats.sent <= 100 + 12, "{stats:?}");
    assert!(stats.seconds <= 5.0 + 12.0 * 0.05 + 1e-9, "{stats:?}");
    assert_eq!(stats.accepted, stats.sent);
}

#[test]
fn a_stalled_node_gets_at_most_one_second_of_backlog() {
    let chain = FakeChain::new(Fault::None);
    let clock = FakeClock::default();
    let mut node = FakeNode::new(&chain);
    node.clock = Some(&clock);
    node.stall = Some((1, Duration::from_secs(3)));
    let cfg = one_worker(config(100.0, 5, 5));
    let (stats, _) = run(&cfg, &[node], &clock);
    // 500 are due in 5 s. During the 3 s stall only the queue (10) and the one in hand were
    // taken; afterwards one second of backlog (100) goes at once and the rest on schedule:
    // about 500 - 200 skipped. Sending the whole backlog would give 500, dropping all of it 200.
    assert!((280..=320).contains(&stats.sent), "{stats:?}");
    assert_eq!(stats.accepted, stats.sent);
}

#[test]
fn load_configuration_errors_are_clear() {
    let chain = FakeChain::new(Fault::None);
    let clock = FakeClock::default();
    let stop = AtomicBool::new(false);
    let nodes = [FakeNode::new(&chain)];
    let err =
        |cfg: LoadConfig, nodes: &[FakeNode]| run_load(&cfg, nodes, &clock, &stop, |_| {}).unwrap_err().to_string();
    assert!(err(config(0.0, 1, 1), &nodes).contains("rate"));
    assert!(err(config(f64::NAN, 1, 1), &nodes).contains("rate"));
    assert!(err(config(1.0, 1, 0), &nodes).contains("account"));
    assert!(err(config(1.0, 1, 1), &[]).contains("RPC URL"));
    assert_eq!(chain.submissions.load(Ordering::SeqCst), 0);
}

// ---- figures (not checks) -------------------------------------------------------------------------

/// Accepts everything; nonces start at 0.
struct NullNode;

impl Submitter for NullNode {
    fn nonce(&self, _: &[u8; 32]) -> anyhow::Result<u64> {
        Ok(0)
    }

    fn submit(&self, _: &[u8]) -> anyhow::Result<CheckResult> {
        Ok(CheckResult {
            code: code::OK,
            log: String::new(),
        })
    }
}

/// A real node over RPC, without nonce queries (so any ABCI app, e.g. kvstore, will do).
struct RpcNoNonce(statesnap_harness::load::RpcSubmitter);

impl Submitter for RpcNoNonce {
    fn nonce(&self, _: &[u8; 32]) -> anyhow::Result<u64> {
        Ok(0)
    }

    fn submit(&self, tx: &[u8]) -> anyhow::Result<CheckResult> {
        self.0.submit(tx)
    }
}

/// Throughput figures, printed, not asserted:
/// `cargo test --release -p statesnap-cli --test tx -- --ignored --nocapture throughput`.
/// With `STATESNAP_TX_BENCH_RPC=URL[,URL…]` it also broadcasts to running CometBFT nodes for 5 s.
#[test]
#[ignore]
fn throughput() {
    use std::time::Instant;
    let keys_: Vec<SigningKey> = (0..50).map(|i| account_key::derive(SEED, i)).collect();
    let pool: Vec<String> = keys_
        .iter()
        .map(|k| account_key::account_hex(&k.verifying_key()))
        .collect();
    let mut rng = statesnap::store::prng::Prng::new(1);
    let n = 20_000;
    let bodies: Vec<(usize, TxBody)> = (0..n)
        .map(|i| {
            let from = i % pool.len();
            let ops = statesnap_harness::load::typical_ops(&mut rng, from, &pool);
            let body = TxBody {
                chain_id: CHAIN.into(),
                account: keys_[from].verifying_key().to_bytes(),
                nonce: i as u64,
                action: Action::Patch(ops),
            };
            (from, body)
        })
        .collect();
    let t = Instant::now();
    let txs: Vec<Tx> = bodies
        .into_iter()
        .map(|(f, b)| Tx::sign(b, &keys_[f]).unwrap())
        .collect();
    let sign = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for tx in &txs {
        decode_and_verify(tx.bytes()).unwrap().validate(CHAIN).unwrap();
    }
    let check = t.elapsed().as_secs_f64();
    let bytes: usize = txs.iter().map(|t| t.bytes().len()).sum();
    println!(
        "typical txs: {:.0} bytes on average; sign {:.0}/s; decode_and_verify + validate {:.0}/s (one core)",
        bytes as f64 / n as f64,
        n as f64 / sign,
        n as f64 / check
    );

    let stop = AtomicBool::new(false);
    let clock = statesnap_harness::load::SystemClock::start();
    let cfg = one_worker(config(1e6, 2, 50));
    let s = run_load(&cfg, &[NullNode], &clock, &stop, |_| {}).unwrap();
    println!("generator, 1 worker, null node: {:.0} tx/s", s.rate);

    if let Ok(urls) = std::env::var("STATESNAP_TX_BENCH_RPC") {
        let nodes: Vec<RpcNoNonce> = urls
            .split(',')
            .map(|u| {
                RpcNoNonce(statesnap_harness::load::RpcSubmitter(
                    statesnap_harness::rpc::RpcClient::new(u),
                ))
            })
            .collect();
        for workers in [1, 2, 4] {
            let cfg = LoadConfig {
                workers_per_submitter: workers,
                ..config(1e6, 5, 50)
            };
            let clock = statesnap_harness::load::SystemClock::start();
            let s = run_load(&cfg, &nodes, &clock, &stop, |_| {}).unwrap();
            println!(
                "broadcast_tx_sync to {urls}, {workers} worker(s) per node: {:.0} tx/s ({} accepted, {} refused, {} errors)",
                s.rate, s.accepted, s.refused, s.errors
            );
        }
    }
}

#[test]
fn governance_transactions_round_trip_and_follow_their_stateless_rules() {
    let sign = |action: Action| {
        let mut b = body(vec![]);
        b.action = action;
        Tx::sign(b, &key()).unwrap()
    };
    let proposal = |plugin: Vec<u8>, activation_delay: u64, expires_after: u64| {
        Action::Propose(Proposal::new(3, &plugin, activation_delay, expires_after))
    };
    // Random bytes do not compress: the transaction is larger than any patch.
    let mut noise = vec![0u8; 300_000];
    let mut x = 1u64;
    for b in noise.iter_mut() {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        *b = (x >> 56) as u8;
    }
    let ok = sign(proposal(noise.clone(), 10, 100));
    assert!(ok.bytes().len() > MAX_TX_BYTES, "a plugin is larger than any patch");
    let back = decode_and_verify(ok.bytes()).unwrap();
    assert_eq!(back.body(), ok.body());
    back.validate(CHAIN).unwrap();
    let Action::Propose(p) = back.action() else { panic!() };
    assert_eq!(p.plugin().unwrap(), noise, "the plugin survives compression");
    let vote = sign(Action::Vote(4));
    assert_eq!(decode_and_verify(vote.bytes()).unwrap().action(), &Action::Vote(4));
    vote.validate(CHAIN).unwrap();

    let code_of = |a: Action| sign(a).validate(CHAIN).unwrap_err().code();
    // What the plugin unpacks to is checked where the node unpacks it, once
    // per transaction (`execute::prepare`), not by `validate`.
    let unpacked_code_of = |a: Action| {
        let tx = sign(a);
        tx.validate(CHAIN).unwrap();
        let Action::Propose(p) = tx.action() else { panic!() };
        p.plugin().unwrap_err().code()
    };
    assert_eq!(unpacked_code_of(proposal(vec![], 10, 100)), code::PLUGIN_REFUSED);
    // A compressed bomb: small on the wire, over the limit unpacked.
    assert_eq!(
        unpacked_code_of(proposal(vec![1; MAX_PLUGIN_BYTES + 1], 10, 100)),
        code::TOO_LARGE
    );
    // Too large on the wire.
    let mut big = noise.clone();
    big.extend(noise.iter().map(|b| b ^ 0x5a));
    big.extend(noise.iter().map(|b| b.rotate_left(3)));
    assert_eq!(code_of(proposal(big, 10, 100)), code::TOO_LARGE);
    let junk = Action::Propose(Proposal {
        format: 3,
        plugin_gzip: vec![1, 2, 3],
        activation_delay: 10,
        expires_after: 100,
    });
    assert_eq!(unpacked_code_of(junk), code::MALFORMED);
    assert_eq!(code_of(proposal(vec![1; 10], 0, 100)), code::GOVERNANCE);
    assert_eq!(code_of(proposal(vec![1; 10], 10, 0)), code::GOVERNANCE);
    assert_eq!(code_of(proposal(vec![1; 10], 10, u64::MAX)), code::GOVERNANCE);
}
