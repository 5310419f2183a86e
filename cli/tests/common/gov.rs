//! Governance helpers of the network tests: the `statesnap gov` commands
//! against a node of a running testnet. Each waits first for that node to
//! have committed every height the test has seen (see [`super::net`]): the
//! node's CheckTx and the command's reads are of that node's state.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use statesnap_harness::testnet::{JoinOptions, Testnet, TestnetOptions};

use super::net::Network;

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

/// `statesnap gov status --json` through `node`; its height counts as seen.
pub fn gov_status(net: &Network, node: &str) -> Value {
    net.caught_up(node);
    let url = net.node(node).unwrap().rpc_url();
    let (ok, out, err) = statesnap(&["gov", "status", "--rpc", &url, "--json"]);
    assert!(ok, "{err}");
    let status: Value = serde_json::from_str(&out).unwrap();
    net.saw(status["height"].as_u64().expect("gov status has a height"));
    status
}

/// `statesnap gov vote` for `proposal` with `key`, sent through `node`.
pub fn vote(net: &Network, node: &str, key: &Path, proposal: u64) -> (bool, String) {
    let id = proposal.to_string();
    send_through(
        net,
        node,
        &["gov", "vote", "--proposal", &id, "--key", key.to_str().unwrap()],
    )
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
pub fn propose(net: &Network, node: &str, p: &Propose) -> (bool, String) {
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
        "--key",
        key.to_str().unwrap(),
    ];
    send_through(net, node, &[&args[..], p.extra].concat())
}

/// `statesnap gov upload` of `wasm` for `proposal`, signed with `key`, sent through `node`.
pub fn upload(net: &Network, node: &str, proposal: u64, wasm: &Path, key: &Path) -> (bool, String) {
    let id = proposal.to_string();
    send_through(
        net,
        node,
        &[
            "gov",
            "upload",
            "--proposal",
            &id,
            "--plugin",
            wasm.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    )
}

/// Runs `statesnap gov …` with `--rpc` of `node`, once `node` has
/// committed every height the test has seen. The heights its transactions
/// committed at count as seen.
fn send_through(net: &Network, node: &str, args: &[&str]) -> (bool, String) {
    net.caught_up(node);
    let url = net.node(node).unwrap().rpc_url();
    let (ok, out, err) = statesnap(&[args, &["--rpc", &url]].concat());
    if ok {
        match committed_height(&out, &err) {
            Some(h) => net.saw(h),
            // (Nothing parsed: the command waited for its transactions'
            // blocks on `node`, so `node`'s height now is past them.)
            None => {
                net.app_status(node);
            }
        }
    }
    (ok, format!("{out}{err}"))
}

/// The highest block height a gov command's transactions committed at: the
/// `height` of its JSON lines (propose, vote) and its `uploaded piece …
/// at height H` lines (upload).
fn committed_height(stdout: &str, stderr: &str) -> Option<u64> {
    let answers = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok()?["height"].as_u64());
    let pieces = stderr
        .lines()
        .filter(|l| l.starts_with("gov: uploaded piece"))
        .filter_map(|l| l.split(" at height ").nth(1)?.split(' ').next()?.parse().ok());
    answers.chain(pieces).max()
}

/// The governance tests take a snapshot every this many blocks.
pub const INTERVAL: u64 = 5;

/// The governance tests' network, started: four validators (three of
/// four pass a proposal) on `chain`, zstd snapshots every [`INTERVAL`]
/// blocks, `keep_recent` kept, a genesis state of `genesis_keys` keys.
pub fn four_validators(chain: &str, keep_recent: u32, genesis_keys: u64) -> Network {
    Network::start(&TestnetOptions {
        snapshot_interval: INTERVAL,
        snapshot_keep_recent: keep_recent,
        snapshot_plugin: "zstd".into(),
        genesis_keys,
        ..super::net::options(chain, 4)
    })
}

/// Adds a node that joins by state sync with no plugin at all (a binary
/// without built-in plugins, no configured format), and starts it: it can
/// only restore a snapshot that ships its plugin.
pub fn join_without_plugins(net: &mut Network, name: &str, join: &JoinOptions) {
    net.add_node(name, join).unwrap();
    net.edit_config(name, |c| c.snapshot_plugin = String::new());
    net.start_node(name, &["--no-built-in-plugins".to_string()]).unwrap();
}
