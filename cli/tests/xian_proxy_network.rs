//! Xian's real node behind `statesnap proxy`: four validators, three of them
//! `xian-abci` 0.9.3 run by its proxy (`--run`) behind CometBFT v0.39.3, the
//! fourth plain Xian without a proxy, under a stream of signed transfers. The
//! proxies snapshot the live Xian homes every 10 blocks, byte-identical
//! across validators; a home restored from one is what Xian's own
//! `LMDBStore` and state-root code read back. A fourth Xian node joins by
//! state sync through its own proxy: its xian-abci starts on the restored
//! home, catches up, reports the validators' app hash, and executes a
//! transfer sent to it. The validator without a proxy signs every block.
//!
//! Needs the tools of `scripts/install-xian.sh` (`scripts/setup.sh` runs it)
//! and root; fails, saying so, without them.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use common::xian::{abci_info, assert_app_hash_matches, require_xian, short_tempdir, snapshots, wait, Guard, TIMEOUT};
use statesnap::store::root::state_root_of;
use statesnap::store::HomeStore;
use statesnap_harness::testnet::free_base_port;
use statesnap_harness::xian::{ProxyOptions, XianNet, XianNetOptions};

const INTERVAL: u64 = 10;
/// The validator that runs Xian's node without a proxy.
const PLAIN: usize = 3;
const PROXIED: [usize; 3] = [0, 1, 2];

#[test]
fn xian_validators_behind_proxies_snapshot_and_a_new_xian_node_joins_through_its_proxy() {
    require_xian();
    let started = Instant::now();
    let tmp = short_tempdir("xs");
    let opts = XianNetOptions {
        validators: 4,
        chain_id: "xian-statesnap".into(),
        base_port: free_base_port(6).unwrap(),
        block_time_ms: 300,
        genesis_keys: 3_000,
        statesnap: Some(ProxyOptions {
            statesnap_bin: env!("CARGO_BIN_EXE_statesnap").into(),
            snapshot_interval: INTERVAL,
            snapshot_keep_recent: 4,
            extra_args: vec!["--param".into(), "chunk_bytes=40000".into()],
            node_args: Vec::new(),
            without_proxy: vec![PLAIN],
        }),
        ..XianNetOptions::default()
    };
    let mut net = XianNet::init(&tmp.path().join("net"), &opts).unwrap();
    let _guard = Guard(Some(tmp), net.dir().to_path_buf());
    net.start().unwrap();
    eprintln!("network up after {:?}", started.elapsed());

    // Transfers from the founder, one after another, for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = {
        let net = XianNet::open(net.dir()).unwrap();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut done, mut last_height) = (0u64, 0u64);
            while !stop.load(Ordering::SeqCst) {
                let to = format!("{:064x}", 0xa11ce + done);
                if let Ok(tx) = net.transfer(done as usize % 3, net.founder_private_key(), &to, "1") {
                    done += 1;
                    last_height = tx.height;
                }
            }
            (done, last_height)
        })
    };

    // Each proxy snapshots its validator's home; at a height all of them
    // have, the snapshots are the same bytes.
    let common = wait("a snapshot height every proxied validator has", &net, 0, || {
        let all: Vec<_> = PROXIED
            .iter()
            .map(|&i| snapshots(&net.node(i).snapshot_dir()))
            .collect();
        all[0]
            .iter()
            .find(|(h, _, _)| all[1..].iter().all(|l| l.iter().any(|(o, _, _)| o == h)))
            .map(|(h, _, _)| (*h, all.clone()))
    });
    let (height, all) = common;
    let pick = |i: usize| all[i].iter().find(|(h, _, _)| *h == height).unwrap().clone();
    let (_, manifest, files) = pick(0);
    for i in 1..PROXIED.len() {
        assert_eq!(
            pick(i).2,
            files,
            "node{i}'s snapshot of height {height} differs from node0's"
        );
    }
    assert!(
        !net.node(PLAIN).snapshot_dir().exists(),
        "the validator without a proxy makes no statesnap snapshot"
    );
    assert!(
        manifest.chunks.len() > 2,
        "a snapshot in several chunks ({})",
        manifest.chunks.len()
    );
    assert!(
        manifest.block_time_nanos.is_some(),
        "the manifest carries the block time"
    );
    eprintln!(
        "snapshot of height {height}: {} chunks, {} entries, identical on the 3 proxied validators",
        manifest.chunks.len(),
        manifest.entries
    );

    // Restored offline into a new home, the snapshot is what Xian's own code
    // reads: the same entries and root.
    let restored = net.dir().join("restored");
    let dir = net.node(0).snapshot_dir().join(format!("{height}-1"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_statesnap"))
        .args(["snapshot", "restore", "--from"])
        .arg(&dir)
        .arg("--home")
        .arg(&restored)
        .args(["--app-hash", &hex::encode(manifest.app_hash)])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let xian = net.read_home_with_xian(&restored).unwrap();
    assert_eq!(
        xian.root,
        hex::encode(manifest.app_hash),
        "Xian's root of the restored home"
    );
    assert_eq!(
        xian.consensus_entries, manifest.entries,
        "Xian's count of the restored entries"
    );
    let (root, entries) = state_root_of(&HomeStore::open_read_only(&restored).unwrap(), || {}).unwrap();
    assert_eq!(
        (hex::encode(root), entries),
        (xian.root.clone(), xian.consensus_entries)
    );

    // A new Xian node joins by state sync through its proxy.
    let joiner = net.add_node(true).unwrap();
    net.start_node(joiner).unwrap();
    let node = net.node(joiner).clone();
    let synced = wait("the joiner to catch up", &net, joiner, || {
        let s = node.rpc().status().ok()?;
        (!s.catching_up && s.latest_block_height > height).then_some(s.latest_block_height)
    });
    let proxy_log = std::fs::read_to_string(node.proxy_log()).unwrap();
    assert!(
        proxy_log.contains("the restored home is in place and the app restarted on it"),
        "the joiner restored a statesnap snapshot:\n{}",
        node.log_tails()
    );
    let status = node.rpc().status().unwrap();
    assert!(
        status.earliest_block_height > 1,
        "the joiner did not replay from block 1"
    );

    // Its xian-abci reports, through Info, the validators' app hash.
    let (info_height, info_hash) = wait(
        "the joiner's app to answer Info past the snapshot",
        &net,
        joiner,
        || {
            let (h, hash) = abci_info(&net, joiner);
            (h > synced).then_some((h, hash))
        },
    );
    net.node(0)
        .wait_for_height(net.supervisor(), info_height + 1, TIMEOUT)
        .unwrap();
    let header = net.node(0).rpc().header(Some(info_height + 1)).unwrap();
    assert_eq!(
        info_hash,
        hex::encode(&header.app_hash),
        "the joiner's app hash at height {info_height} is the validators'"
    );

    // The load ends (its sender is the founder too: one nonce sequence).
    stop.store(true, Ordering::SeqCst);
    let (transfers, last_height) = sent.join().unwrap();
    assert!(transfers > 0, "transfers went through during the test");

    // A transfer sent to the joiner executes (once the joiner has committed
    // the load's last transfer: it reads the sender's nonce from its state).
    node.wait_for_height(net.supervisor(), last_height + 1, TIMEOUT)
        .unwrap();
    let to = "7e".repeat(32);
    let tx = net.transfer(joiner, net.founder_private_key(), &to, "2.5").unwrap();
    node.wait_for_height(net.supervisor(), tx.height + 1, TIMEOUT).unwrap();
    assert_eq!(net.balance(joiner, &to).unwrap(), "2.5");
    net.node(1)
        .wait_for_height(net.supervisor(), tx.height + 1, TIMEOUT)
        .unwrap();
    assert_eq!(net.balance(1, &to).unwrap(), "2.5");

    // The validator without a proxy validates beside the proxied ones: it
    // signed recent commits (of four equal validators a commit needs three,
    // so one signature may be missing from any one commit), and its own app
    // computes the network's app hash.
    let last = net.node(0).rpc().status().unwrap().latest_block_height;
    let plain_address = net.node(PLAIN).validator_address();
    let signed = (last.saturating_sub(9)..=last).filter(|h| *h > 1).any(|h| {
        let commit = net
            .node(0)
            .rpc()
            .call("commit", serde_json::json!({"height": h.to_string()}))
            .unwrap();
        commit["signed_header"]["commit"]["signatures"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["validator_address"].as_str() == Some(plain_address.as_str()))
    });
    assert!(signed, "node{PLAIN} (no proxy) signed one of the commits up to {last}");
    assert_app_hash_matches(&net, PLAIN, 0, synced);

    eprintln!("passed after {:?} ({transfers} transfers)", started.elapsed());
}
