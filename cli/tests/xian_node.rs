//! Xian's real node: a network of three validators, each `xian-abci` 0.9.3
//! (PyPI `xian-tech-abci`, Python 3.14 in the root file system of
//! `scripts/install-xian.sh`) behind CometBFT v0.39.3, started by the
//! harness from the project's genesis bundle. A signed `currency.transfer`
//! changes a balance, and statesnap's state root over a node's live LMDB
//! home equals the app hash CometBFT recorded for that height.
//!
//! Needs the tools `scripts/install-xian.sh` installs (`scripts/setup.sh`
//! runs it) and root (the root file system is entered with chroot); fails,
//! saying so, without them.

mod common;

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use common::xian::{require_xian, short_tempdir, Guard};
use serde_json::Value;
use statesnap::store::{HomeStore, StateStore};
use statesnap_harness::testnet::free_base_port;
use statesnap_harness::xian::{XianNet, XianNetOptions};

const TIMEOUT: Duration = Duration::from_secs(120);

/// `__latest_block` of a live home: (height, app hash hex), read from its own
/// read transaction.
fn latest_block(home: &Path) -> (u64, String) {
    let store = HomeStore::open_read_only(home).unwrap();
    let text = store
        .get("__latest_block")
        .unwrap()
        .unwrap_or_else(|| panic!("{} has no __latest_block", home.display()));
    let v: Value = serde_json::from_str(&text).unwrap();
    (
        v["height"].as_u64().unwrap(),
        v["hash"].as_str().unwrap().to_lowercase(),
    )
}

/// `statesnap state root --home HOME`, the last line of its output.
fn statesnap_root(home: &Path) -> String {
    let out = Command::cargo_bin("statesnap")
        .unwrap()
        .args(["state", "root", "--home"])
        .arg(home)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_lowercase()
}

#[test]
fn a_transfer_on_real_xian_validators_and_statesnap_root_is_the_app_hash() {
    let started = Instant::now();
    require_xian();
    // Short: the nodes' unix sockets live under it.
    let tmp = short_tempdir("xn");
    let opts = XianNetOptions {
        validators: 3,
        chain_id: "xian-node-test".into(),
        base_port: free_base_port(3).unwrap(),
        block_time_ms: 300,
        genesis_keys: 50,
        ..XianNetOptions::default()
    };
    let net = XianNet::init(&tmp.path().join("net"), &opts).unwrap();
    let _guard = Guard(Some(tmp), net.dir().to_path_buf());
    net.start().unwrap();
    eprintln!("network up after {:?}", started.elapsed());

    // Block 1's header carries the genesis state's root (InitChain's app hash).
    let node1 = net.node(1);
    let header1 = node1.rpc().header(Some(1)).unwrap();
    assert_eq!(hex::encode(&header1.app_hash), net.genesis_app_hash());

    let to = "5e".repeat(32);
    assert_eq!(net.balance(1, &to).unwrap(), "0");
    let tx = net.transfer(0, net.founder_private_key(), &to, "12.5").unwrap();
    assert_eq!(tx.sender, net.node(0).validator_public_key);
    // Node 1 has committed block H once it has block H+1.
    node1.wait_for_height(net.supervisor(), tx.height + 1, TIMEOUT).unwrap();
    assert_eq!(net.balance(1, &to).unwrap(), "12.5");

    // statesnap's root over node 1's live LMDB home, read between two
    // readings of the height marker that agree (no commit in between).
    let home = node1.storage_home();
    let deadline = Instant::now() + TIMEOUT;
    let (height, marker_hash, root) = loop {
        let before = latest_block(&home);
        let root = statesnap_root(&home);
        let after = latest_block(&home);
        if before == after {
            break (before.0, before.1, root);
        }
        assert!(
            Instant::now() < deadline,
            "node1 committed during every read of its state"
        );
    };
    assert!(
        height >= tx.height,
        "the state read is from height {height}, before the transfer's {}",
        tx.height
    );
    assert_eq!(
        root, marker_hash,
        "statesnap's root against xian's own __latest_block hash at height {height}"
    );
    node1.wait_for_height(net.supervisor(), height + 1, TIMEOUT).unwrap();
    let header = node1.rpc().header(Some(height + 1)).unwrap();
    assert_eq!(
        root,
        hex::encode(&header.app_hash),
        "statesnap's root of node1's state at height {height} against the app hash in header {}",
        height + 1
    );
    // Every validator agrees on that block.
    for node in net.nodes() {
        node.wait_for_height(net.supervisor(), height + 1, TIMEOUT).unwrap();
        assert_eq!(
            node.rpc().header(Some(height + 1)).unwrap().app_hash,
            header.app_hash,
            "{}",
            node.name
        );
    }

    net.stop().unwrap();
    for node in net.nodes() {
        assert_eq!(node.running(net.supervisor()).unwrap(), (false, false), "{}", node.name);
    }
    eprintln!("passed after {:?}", started.elapsed());
}

/// Relays every connection made to `front` to a new connection to `back`,
/// bytes both ways, on threads that end with the connections.
fn relay(front: &Path, back: &Path) {
    let listener = UnixListener::bind(front).unwrap();
    let back = back.to_path_buf();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(client) = conn else { return };
            let app = UnixStream::connect(&back).unwrap();
            for (mut from, mut to) in [(client.try_clone().unwrap(), app.try_clone().unwrap()), (app, client)] {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
}

/// What the proxy step builds on: xian-abci listens on app.sock while
/// CometBFT dials proxy.sock, and blocks and transactions pass through
/// whatever joins them (here a plain byte relay).
#[test]
fn cometbft_reaches_xian_abci_through_another_socket() {
    require_xian();
    let tmp = short_tempdir("xp");
    let opts = XianNetOptions {
        validators: 1,
        chain_id: "xian-proxy-test".into(),
        base_port: free_base_port(1).unwrap(),
        block_time_ms: 300,
        proxy_sockets: true,
        ..XianNetOptions::default()
    };
    let net = XianNet::init(&tmp.path().join("net"), &opts).unwrap();
    let _guard = Guard(Some(tmp), net.dir().to_path_buf());
    let node = net.node(0);
    assert_eq!(net.cometbft_socket(node), node.proxy_socket());
    assert!(
        net.start().is_err(),
        "start() refuses a network whose CometBFT needs a proxy"
    );
    net.start_apps().unwrap();
    relay(&node.proxy_socket(), &node.app_socket());
    net.start_cometbfts().unwrap();
    node.wait_for_height(net.supervisor(), 2, TIMEOUT).unwrap();
    let to = "7a".repeat(32);
    let tx = net.transfer(0, net.founder_private_key(), &to, "3").unwrap();
    node.wait_for_height(net.supervisor(), tx.height + 1, TIMEOUT).unwrap();
    assert_eq!(net.balance(0, &to).unwrap(), "3");
    let config = std::fs::read_to_string(node.cometbft_home().join("config/config.toml")).unwrap();
    assert!(
        config.contains(&format!("unix://{}", node.app_socket().display())),
        "config.toml's proxy_app is xian-abci's socket"
    );
    assert!(std::fs::read_to_string(node.cometbft_log())
        .unwrap()
        .contains(&format!("--proxy_app unix://{}", node.proxy_socket().display())));
}
