//! `statesnap proxy` forwarding on a real CometBFT network: three validators
//! whose CometBFT reaches its statesnap app only through the proxy, on a
//! unix socket, under transaction load. Everything the app does goes through
//! the proxy's raw frames: consensus, CheckTx, queries, its snapshots listed
//! and served to a joiner, and the joiner's own restore (also behind a
//! proxy), which must end at the validators' app hash. Then kill -9 of a
//! validator's proxy: CometBFT stops as when its app dies, and the node,
//! restarted, comes back at the network's height and app hash.

mod common;

use common::net::{many_chunks, require_cometbft, Network};
use statesnap::store::StoreKind;
use statesnap_harness::testnet::{JoinOptions, TestnetOptions};

const CHAIN: &str = "proxy-chain";

#[test]
fn a_network_behind_proxies_runs_serves_snapshots_and_survives_a_killed_proxy() {
    require_cometbft();
    let opts = TestnetOptions {
        proxy: true,
        ..many_chunks(CHAIN, 5_000, StoreKind::Lmdb)
    };
    let mut net = Network::start(&opts);
    let config = std::fs::read_to_string(net.node("node0").unwrap().cometbft_home.join("config/config.toml")).unwrap();
    assert!(
        config.contains("proxy_app = \"unix://"),
        "CometBFT reaches its app through the proxy's socket"
    );

    let load = net.start_load(CHAIN, &["node0", "node1"], 20.0);

    // Snapshots made by the apps, listed through the proxies.
    net.wait_for_height("node0", 12);
    net.poll("node1", "a snapshot listed through node1's proxy", || {
        (!net.snapshots("node1").is_empty()).then_some(())
    });

    // A joiner behind its own proxy restores one of them.
    net.add_node("joiner", &JoinOptions::default()).unwrap();
    net.start_node("joiner", &[]).unwrap();
    net.wait_for_sync("joiner");
    let restored_at = net.metric("joiner", "statesnap_restored_snapshot_height");
    assert!(restored_at >= 10.0, "the joiner restored a snapshot (at {restored_at})");
    net.assert_same_app_hash("joiner", "node0");

    // kill -9 of node1's proxy under load: its CometBFT loses the app and
    // stops; restarted, the node catches up with the network's app hash.
    let before = net.app_status("node1").0;
    net.kill_proxy("node1").unwrap();
    net.poll("node1", "node1's CometBFT to stop without its app", || {
        (!net.is_running("node1").1).then_some(())
    });
    net.stop_node("node1").unwrap();
    net.start_node("node1", &[]).unwrap();
    net.wait_for_height("node1", before + 5);
    net.assert_same_app_hash("node1", "node0");

    let report = load.finish();
    assert!(report.accepted > 0, "the load went through the proxies: {report:?}");
    let proxy_log = std::fs::read_to_string(&net.node("node0").unwrap().proxy_log).unwrap();
    assert!(
        proxy_log.contains("statesnap: proxy listening on unix://"),
        "node0's proxy ran: {proxy_log}"
    );
}
