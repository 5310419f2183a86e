//! The `key` and `tx` commands.

use std::path::Path;
use std::process::Output;

use assert_cmd::Command;
use ed25519_dalek::SigningKey;

use statesnap::protocol::account_key;

const CHAIN: &str = "statesnap-test";

fn key() -> SigningKey {
    account_key::derive(42, 0)
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
