//! Faults around Xian's real node behind `statesnap proxy`, on a network of
//! three validators under a stream of transfers (CometBFT v0.39.3,
//! `xian-abci` 0.9.3, each run by its proxy):
//!
//! * a forging proxy (test hook): it builds its snapshots from a forged
//!   state under the real app hash, and they are the newest; a joining Xian
//!   node refuses the forgery at its first chunk, rejects the forger and
//!   syncs from the honest validators' snapshot;
//! * kill -9 of a joiner's proxy in the middle of its restore: the home is
//!   untouched, and restarted, the node syncs, with nothing left behind;
//! * kill -9 of a joiner's xian-abci in the middle of its restore: its proxy
//!   starts it again and the restore completes;
//! * kill -9 of a validator's proxy, and of a validator's xian-abci, under
//!   load: each comes back at the network's height and app hash, and a
//!   transfer made before the kill is still there.
//!
//! Needs the tools of `scripts/install-xian.sh` and the test hooks.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::xian::{assert_app_hash_matches, metric, require_xian, short_tempdir, snapshots, wait, Guard, TIMEOUT};
use statesnap_harness::testnet::free_base_port;
use statesnap_harness::xian::{ProxyOptions, XianNet, XianNetOptions};

const HONEST: [usize; 2] = [0, 1];
const FORGER: usize = 2;

fn staging_left(net: &XianNet, node: usize) -> bool {
    let home = net.node(node).storage_home();
    let parent = home.parent().unwrap();
    std::fs::read_dir(parent)
        .unwrap()
        .any(|e| e.unwrap().file_name().to_string_lossy().contains(".statesnap-"))
}

#[test]
fn xian_nodes_refuse_a_forging_proxy_and_survive_kills_of_proxy_and_app() {
    require_xian();
    let started = Instant::now();
    let tmp = short_tempdir("xf");
    let opts = XianNetOptions {
        validators: 3,
        chain_id: "xian-faults".into(),
        base_port: free_base_port(6).unwrap(),
        block_time_ms: 300,
        genesis_keys: 3_000,
        statesnap: Some(ProxyOptions {
            statesnap_bin: env!("CARGO_BIN_EXE_statesnap").into(),
            snapshot_interval: 10,
            snapshot_keep_recent: 10,
            extra_args: vec!["--param".into(), "chunk_bytes=40000".into()],
            node_args: vec![(FORGER, vec!["--test-forge-states".into()])],
            without_proxy: Vec::new(),
        }),
        ..XianNetOptions::default()
    };
    let mut net = XianNet::init(&tmp.path().join("net"), &opts).unwrap();
    let _guard = Guard(Some(tmp), net.dir().to_path_buf());
    net.start().unwrap();

    // Transfers from the founder through node0 for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let net = XianNet::open(net.dir()).unwrap();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut done = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let to = format!("{:064x}", 0xbeef + done.len());
                if let Ok(tx) = net.transfer(0, net.founder_private_key(), &to, "1") {
                    done.push((to, tx.height));
                } else {
                    std::thread::sleep(Duration::from_millis(300));
                }
            }
            done
        })
    };

    // The honest validators make their height-10 snapshot, then stop making
    // more (they keep serving it): the forger's are the newest.
    for node in HONEST {
        wait(&format!("node{node}'s height-10 snapshot"), &net, node, || {
            snapshots(&net.node(node).snapshot_dir())
                .iter()
                .any(|(h, _, _)| *h == 10)
                .then_some(())
        });
    }
    for node in HONEST {
        net.stop_node(node).unwrap();
        net.set_proxy_args(node, vec!["--snapshot-interval".into(), "0".into()])
            .unwrap();
        net.start_node(node).unwrap();
    }
    let forged_height = wait("a forged snapshot above height 10", &net, FORGER, || {
        let newest = snapshots(&net.node(FORGER).snapshot_dir()).first().map(|s| s.0)?;
        (newest > 10).then_some(newest)
    });
    eprintln!("forged snapshot at height {forged_height} ({:?})", started.elapsed());

    // A joiner tries the forgery first, refuses it at its first chunk,
    // rejects the forger and restores the honest height-10 snapshot.
    let joiner = net.add_node(true).unwrap();
    net.start_node(joiner).unwrap();
    wait("the joiner to restore", &net, joiner, || {
        (metric(&net, joiner, "statesnap_restored_snapshot_height") > 0.0).then_some(())
    });
    assert_eq!(metric(&net, joiner, "statesnap_restored_snapshot_height"), 10.0);
    assert!(
        metric(&net, joiner, "statesnap_forged_chunks_total") >= 1.0,
        "the forgery was caught by its range proof\n{}",
        net.node(joiner).log_tails()
    );
    assert!(metric(&net, joiner, "statesnap_rejected_senders_total") >= 1.0);
    assert_app_hash_matches(&net, joiner, 0, 10);
    net.stop_node(joiner).unwrap();

    // A second joiner, slowed down, killed with SIGKILL mid-restore.
    let crasher = net.add_node(true).unwrap();
    net.set_proxy_args(crasher, vec!["--test-chunk-delay-ms".into(), "400".into()])
        .unwrap();
    net.start_node(crasher).unwrap();
    let (applied, total) = wait("the crasher's restore under way", &net, crasher, || {
        let applied = metric(&net, crasher, "statesnap_restore_chunks_applied");
        let total = metric(&net, crasher, "statesnap_restore_chunks_total");
        (applied >= 1.0 && applied < total).then_some((applied, total))
    });
    net.kill_proxy(crasher).unwrap();
    assert!(
        staging_left(&net, crasher),
        "killed after {applied} of {total} chunks: a staging home is left"
    );
    net.stop_node(crasher).unwrap();
    net.set_proxy_args(crasher, Vec::new()).unwrap();
    net.start_node(crasher).unwrap();
    wait("the crasher to restore after its restart", &net, crasher, || {
        (metric(&net, crasher, "statesnap_restored_snapshot_height") > 0.0).then_some(())
    });
    assert_app_hash_matches(&net, crasher, 0, 10);
    assert!(!staging_left(&net, crasher), "no staging home is left");
    net.stop_node(crasher).unwrap();

    // A third joiner, slowed down: kill -9 of its xian-abci mid-restore. Its
    // proxy starts the app again, and the restore (answered by the proxy)
    // goes on; a CometBFT that lost a request with the app stops, and is
    // started again.
    let app_killed = net.add_node(true).unwrap();
    net.set_proxy_args(app_killed, vec!["--test-chunk-delay-ms".into(), "400".into()])
        .unwrap();
    net.start_node(app_killed).unwrap();
    wait("the third joiner's restore under way", &net, app_killed, || {
        let applied = metric(&net, app_killed, "statesnap_restore_chunks_applied");
        let total = metric(&net, app_killed, "statesnap_restore_chunks_total");
        (applied >= 1.0 && applied < total).then_some(())
    });
    let pid = net
        .proxied_app_pid(app_killed)
        .unwrap()
        .expect("the third joiner's proxy runs xian-abci");
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    wait(
        "the third joiner to restore after its app was killed",
        &net,
        app_killed,
        || {
            if !net.node(app_killed).running(net.supervisor()).unwrap().0 {
                net.start_cometbft(app_killed).unwrap();
            }
            (metric(&net, app_killed, "statesnap_restored_snapshot_height") > 0.0).then_some(())
        },
    );
    assert_ne!(
        net.proxied_app_pid(app_killed).unwrap(),
        Some(pid),
        "the killed xian-abci was replaced"
    );
    assert_app_hash_matches(&net, app_killed, 0, 10);
    assert!(!staging_left(&net, app_killed), "no staging home is left");
    net.stop_node(app_killed).unwrap();

    // kill -9 of node1's proxy under load: its xian-abci loses its
    // connections and exits, its CometBFT loses its app and stops.
    let before = assert_app_hash_matches(&net, 1, 0, 0);
    net.kill_proxy(1).unwrap();
    wait("node1's CometBFT to stop without its app", &net, 1, || {
        (!net.node(1).running(net.supervisor()).unwrap().0).then_some(())
    });
    net.stop_node(1).unwrap();
    net.start_node(1).unwrap();
    assert_app_hash_matches(&net, 1, 0, before + 3);

    // kill -9 of node0's xian-abci under load: its proxy starts it again;
    // CometBFT, if it lost a request with it, stops and is started again.
    let before = assert_app_hash_matches(&net, 0, 1, 0);
    let pid = net.proxied_app_pid(0).unwrap().expect("node0's proxy runs xian-abci");
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    wait("node0's proxy to restart xian-abci", &net, 0, || {
        net.proxied_app_pid(0).unwrap().filter(|p| *p != pid)
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && net.node(0).running(net.supervisor()).unwrap().0 {
        std::thread::sleep(Duration::from_millis(100));
    }
    if !net.node(0).running(net.supervisor()).unwrap().0 {
        net.start_cometbft(0).unwrap();
    }
    assert_app_hash_matches(&net, 0, 1, before + 3);

    stop.store(true, Ordering::SeqCst);
    let done = load.join().unwrap();
    assert!(!done.is_empty(), "transfers went through");
    // Nothing lost: every transfer made is on every validator.
    let (to, height) = done.last().unwrap().clone();
    for node in [0, 1] {
        net.node(node)
            .wait_for_height(net.supervisor(), height + 1, TIMEOUT)
            .unwrap();
        assert_eq!(net.balance(node, &to).unwrap(), "1", "node{node}");
    }
    let (first_to, _) = &done[0];
    assert_eq!(
        net.balance(1, first_to).unwrap(),
        "1",
        "the first transfer, on the killed node1"
    );
    eprintln!("passed after {:?} ({} transfers)", started.elapsed(), done.len());
}
