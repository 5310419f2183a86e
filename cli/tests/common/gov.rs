//! Governance helpers of the network tests: the `statesnap gov` commands
//! against a node of a running testnet.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use statesnap_harness::testnet::Testnet;

/// Runs the statesnap binary: (success, stdout, stderr).
pub fn statesnap(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_statesnap"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the statesnap binary: (success, stdout then stderr).
pub fn statesnap_joined(args: &[&str]) -> (bool, String) {
    let (ok, out, err) = statesnap(args);
    (ok, format!("{out}{err}"))
}

/// The validator key of `node`.
pub fn key_file(net: &Testnet, node: &str) -> PathBuf {
    net.node(node)
        .unwrap()
        .cometbft_home
        .join("config/priv_validator_key.json")
}

/// `statesnap gov status --json` through `node`.
pub fn gov_status(net: &Testnet, node: &str) -> Value {
    let url = net.node(node).unwrap().rpc_url();
    let (ok, out, err) = statesnap(&["gov", "status", "--rpc", &url, "--json"]);
    assert!(ok, "{err}");
    serde_json::from_str(&out).unwrap()
}

/// `statesnap gov vote` for `proposal` with `key`, sent through `node`.
pub fn vote(net: &Testnet, node: &str, key: &Path, proposal: u64) -> (bool, String) {
    let url = net.node(node).unwrap().rpc_url();
    let id = proposal.to_string();
    statesnap_joined(&[
        "gov",
        "vote",
        "--proposal",
        &id,
        "--rpc",
        &url,
        "--key",
        key.to_str().unwrap(),
    ])
}

/// What a proposal asks for.
pub struct Propose<'a> {
    pub wasm: &'a Path,
    pub format: u32,
    pub activation_delay: u64,
    pub expires_after: u64,
    /// More options (`--by-hash`, `--no-upload`, ...).
    pub extra: &'a [&'a str],
}

/// `statesnap gov propose` from `node`'s validator, sent through `node`.
pub fn propose(net: &Testnet, node: &str, p: &Propose) -> (bool, String) {
    let url = net.node(node).unwrap().rpc_url();
    let key = key_file(net, node);
    let (format, delay, expires) = (
        p.format.to_string(),
        p.activation_delay.to_string(),
        p.expires_after.to_string(),
    );
    let args = [
        "gov",
        "propose",
        "--plugin",
        p.wasm.to_str().unwrap(),
        "--format",
        &format,
        "--activation-delay",
        &delay,
        "--expires-after",
        &expires,
        "--rpc",
        &url,
        "--key",
        key.to_str().unwrap(),
    ];
    statesnap_joined(&[&args[..], p.extra].concat())
}

/// (height, format) of every snapshot a node advertises.
pub fn advertised(net: &Testnet, node: &str) -> BTreeSet<(u64, u32)> {
    let q = net.rpc(node).unwrap().abci_query("/snapshots", b"").unwrap();
    let list: Vec<Value> = serde_json::from_slice(&q.value).unwrap();
    list.iter()
        .map(|s| (s["height"].as_u64().unwrap(), s["format"].as_u64().unwrap() as u32))
        .collect()
}
