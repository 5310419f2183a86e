//! Account key files: CometBFT's `priv_validator_key.json` format, read and
//! written.

use std::path::{Path, PathBuf};

use base64::Engine as _;

use statesnap::protocol::account_key::{self, KeyFileError};

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
