//! Real CometBFT networks on loopback (CometBFT's kvstore app, so these run
//! before the statesnap node exists). They need cometbft 0.38:
//! `scripts/install-cometbft.sh` (which `scripts/setup.sh` runs) installs it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use assert_cmd::Command;
use serde_json::Value;

use common::net::{options, require_cometbft, Network, StopOnDrop, TIMEOUT};
use statesnap::node::NodeConfig;
use statesnap::store::{StateStore, XianHdf5Store};
use statesnap_harness::testnet::{
    free_base_port, AppKind, CometBft, CometBftRelease, GenesisEntry, JoinOptions, Ports, Testnet, TestnetOptions,
};

/// A network of `validators` running CometBFT's kvstore app.
fn kvstore(validators: usize) -> TestnetOptions {
    TestnetOptions {
        block_time: Duration::from_millis(200),
        app: AppKind::Kvstore,
        ..options("testnet-test", validators)
    }
}

fn toml_of(path: &Path) -> toml::Table {
    toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn cometbft_config(home: &Path) -> toml::Table {
    toml_of(&home.join("config/config.toml"))
}

fn json_of(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn peers_of(config: &toml::Table) -> BTreeSet<String> {
    let list = config["p2p"]["persistent_peers"].as_str().unwrap();
    list.split(',').filter(|p| !p.is_empty()).map(str::to_string).collect()
}

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn init_writes_configs_one_genesis_and_node_configs() {
    require_cometbft();
    let cometbft = CometBft::discover_release(CometBftRelease::default()).unwrap();
    let entries = vec![GenesisEntry {
        key: "con_hello.greeting".into(),
        stored: "\"hi\"".into(),
    }];
    let opts = TestnetOptions {
        chain_id: "init-test".into(),
        snapshot_interval: 7,
        snapshot_keep_recent: 3,
        snapshot_params: BTreeMap::from([("chunk_bytes".to_string(), "100000".to_string())]),
        block_time: Duration::from_millis(250),
        genesis_keys: 50,
        genesis_entries: entries.clone(),
        base_port: 41000,
        ..kvstore(3)
    };
    let net = Network::init(&opts);
    let dir = net.dir().to_path_buf();
    assert_eq!(dir, net.scratch().join("net").canonicalize().unwrap());
    assert_eq!(net.nodes().len(), 3);

    let mut all_ports = BTreeSet::new();
    let mut genesis_texts = BTreeSet::new();
    for (i, node) in net.nodes().iter().enumerate() {
        assert_eq!(node.name, format!("node{i}"));
        assert!(node.validator && !node.state_sync);
        assert_eq!(node.ports, Ports::for_node(41000, i).unwrap());
        assert_eq!(node.ports.rpc, 41000 + 10 * i as u16 + 1, "ports as documented");
        for (_, port) in node.ports.named() {
            assert!(all_ports.insert(port), "port {port} used twice");
        }
        assert_eq!(node.cometbft_home, dir.join(&node.name).join("cometbft"));
        assert_eq!(node.statesnap_home, dir.join(&node.name).join("statesnap"));
        assert_eq!(node.node_id, cometbft.node_id(&node.cometbft_home).unwrap());

        let config_text = std::fs::read_to_string(node.cometbft_home.join("config/config.toml")).unwrap();
        assert!(
            config_text.contains("# TCP or UNIX socket address of the ABCI application"),
            "CometBFT's comments are kept"
        );
        let config = cometbft_config(&node.cometbft_home);
        assert_eq!(config["moniker"].as_str(), Some(node.name.as_str()));
        assert_eq!(config["proxy_app"].as_str(), Some("kvstore"));
        let rpc_laddr = format!("tcp://127.0.0.1:{}", node.ports.rpc);
        let p2p_laddr = format!("tcp://127.0.0.1:{}", node.ports.p2p);
        let prometheus = format!("127.0.0.1:{}", node.ports.prometheus);
        assert_eq!(config["rpc"]["laddr"].as_str(), Some(rpc_laddr.as_str()));
        assert_eq!(config["p2p"]["laddr"].as_str(), Some(p2p_laddr.as_str()));
        assert_eq!(config["p2p"]["addr_book_strict"].as_bool(), Some(false));
        assert_eq!(config["p2p"]["allow_duplicate_ip"].as_bool(), Some(true));
        assert_eq!(config["consensus"]["timeout_commit"].as_str(), Some("250ms"));
        assert_eq!(config["instrumentation"]["prometheus"].as_bool(), Some(true));
        assert_eq!(
            config["instrumentation"]["prometheus_listen_addr"].as_str(),
            Some(prometheus.as_str())
        );
        assert_eq!(config["statesync"]["enable"].as_bool(), Some(false));
        let others: BTreeSet<String> = net
            .nodes()
            .iter()
            .filter(|o| o.name != node.name)
            .map(|o| format!("{}@127.0.0.1:{}", o.node_id, o.ports.p2p))
            .collect();
        assert_eq!(peers_of(&config), others, "persistent peers are the other validators");

        genesis_texts.insert(std::fs::read_to_string(node.cometbft_home.join("config/genesis.json")).unwrap());

        let nc = NodeConfig::load(&node.statesnap_home).unwrap();
        assert_eq!(nc.chain_id, "init-test");
        assert_eq!(nc.abci_listen, format!("127.0.0.1:{}", node.ports.abci));
        assert_eq!(nc.metrics_listen, format!("127.0.0.1:{}", node.ports.metrics));
        assert_eq!((nc.snapshot_interval, nc.snapshot_keep_recent), (7, 3));
        assert_eq!(nc.snapshot_params, opts.snapshot_params);
        assert_eq!(nc.snapshot_plugin, "zstd");
    }

    assert_eq!(genesis_texts.len(), 1, "every node has the same genesis");
    let genesis: Value = serde_json::from_str(genesis_texts.first().unwrap()).unwrap();
    assert_eq!(genesis["chain_id"], "init-test");
    let validators = genesis["validators"].as_array().unwrap();
    assert_eq!(validators.len(), 3);
    for (node, v) in net.nodes().iter().zip(validators) {
        let key = json_of(&node.cometbft_home.join("config/priv_validator_key.json"));
        assert_eq!(v["pub_key"], key["pub_key"], "{}'s key is in genesis", node.name);
        assert_eq!(v["power"], "10");
    }
    let app_state = &genesis["app_state"];
    assert_eq!(app_state["entries"], serde_json::to_value(&entries).unwrap());
    let import_home = dir.join("genesis-state");
    assert_eq!(app_state["import_home"].as_str(), Some(import_home.to_str().unwrap()));
    let imported = XianHdf5Store::open(&import_home).unwrap();
    assert_eq!(imported.entries().unwrap().count(), 50);

    let reopened = Testnet::open(&dir).unwrap();
    assert_eq!(reopened.nodes(), net.nodes());
    assert_eq!(reopened.options(), net.options());

    let err = format!("{:#}", Testnet::init(&dir, &opts).unwrap_err());
    assert!(err.contains("already holds a testnet"), "{err}");
    let stray = net.scratch().join("stray");
    std::fs::create_dir(&stray).unwrap();
    std::fs::write(stray.join("notes.txt"), "mine").unwrap();
    let err = format!("{:#}", Testnet::init(&stray, &opts).unwrap_err());
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(
        std::fs::read_to_string(stray.join("notes.txt")).unwrap(),
        "mine",
        "a refused dir is untouched"
    );

    let err = format!("{:#}", net.metrics("node0").unwrap_err());
    assert!(err.contains("kvstore"), "{err}");
    let err = format!("{:#}", net.node("node9").unwrap_err());
    assert!(err.contains("node0, node1, node2"), "{err}");
}

#[test]
fn kvstore_network_agrees_restarts_syncs_a_joiner_and_stops_clean() {
    require_cometbft();
    let mut net = Network::start(&kvstore(3));
    for node in ["node0", "node1", "node2"] {
        assert!(net.wait_for_height(node, 3) >= 3);
        assert_eq!(net.is_running(node), (false, true), "kvstore runs inside cometbft");
    }
    let reference = net.header("node0", 3);
    assert_eq!(reference.height, 3);
    assert_eq!(reference.block_hash.len(), 32);
    for node in ["node1", "node2"] {
        assert_eq!(net.header(node, 3), reference, "{node} agrees");
    }
    let err = format!("{:#}", net.start_node("node0", &[]).unwrap_err());
    assert!(err.contains("already running"), "{err}");

    // All three validators are needed for more than 2/3 of the power: the chain
    // stalls without node2 and goes on once it is back.
    let (_, old_pid) = net.pids("node2").unwrap();
    net.kill_node("node2").unwrap();
    assert_eq!(net.is_running("node2"), (false, false));
    let old_pid = old_pid.unwrap();
    assert!(
        !process_exists(old_pid),
        "{:?}",
        std::fs::read_to_string(format!("/proc/{old_pid}/stat"))
    );
    net.start_node("node2", &[]).unwrap();
    let height = net.caught_up("node0");
    net.wait_for_height("node2", height + 2);

    // A block-sync full node catches up with the validators.
    let full = net
        .add_node(
            "full",
            &JoinOptions {
                state_sync: false,
                ..JoinOptions::default()
            },
        )
        .unwrap()
        .clone();
    assert!(!full.validator && !full.state_sync);
    let config = cometbft_config(&full.cometbft_home);
    assert_eq!(config["statesync"]["enable"].as_bool(), Some(false));
    let validators: BTreeSet<String> = net.nodes()[..3].iter().map(|n| n.p2p_address()).collect();
    assert_eq!(peers_of(&config), validators);
    net.start_node("full", &[]).unwrap();
    let target = net.caught_up("node0");
    net.wait_for_sync("full");
    net.wait_for_height("full", target);
    assert_eq!(net.header("full", 3), reference);

    // A state-sync joiner's config names a header the validators committed.
    let synced = net.add_node("synced", &JoinOptions::default()).unwrap().clone();
    assert!(synced.state_sync);
    let sync = &cometbft_config(&synced.cometbft_home)["statesync"];
    assert_eq!(sync["enable"].as_bool(), Some(true));
    let servers = format!("{},{}", net.nodes()[0].rpc_url(), net.nodes()[1].rpc_url());
    assert_eq!(sync["rpc_servers"].as_str(), Some(servers.as_str()));
    assert_eq!(sync["trust_period"].as_str(), Some("168h0m0s"));
    assert_eq!(sync["discovery_time"].as_str(), Some("5s"));
    assert_eq!(sync["chunk_request_timeout"].as_str(), Some("15s"));
    assert_eq!(sync["chunk_fetchers"].as_str(), Some("4"));
    let trust_height = sync["trust_height"].as_integer().unwrap() as u64;
    assert!(trust_height >= 3);
    // (The trust height is node0's: node1 may not have stored that block yet.)
    let trusted = net.header("node1", trust_height);
    assert_eq!(
        sync["trust_hash"].as_str(),
        Some(hex::encode_upper(&trusted.block_hash).as_str())
    );
    let reopened = Testnet::open(net.dir()).unwrap();
    assert_eq!(reopened.nodes(), net.nodes(), "joined nodes are saved");
    assert!(
        net.add_node("full", &JoinOptions::default()).is_err(),
        "names are unique"
    );

    let mut pids = Vec::new();
    for node in net.nodes() {
        if let (_, Some(pid)) = net.pids(&node.name).unwrap() {
            pids.push(pid);
        }
    }
    assert_eq!(pids.len(), 4, "three validators and the block-sync node run");
    net.stop_all().unwrap();
    for pid in pids {
        assert!(!process_exists(pid), "pid {pid} is gone after stop_all");
    }
    for node in net.nodes() {
        assert_eq!(net.is_running(&node.name), (false, false));
        assert!(!node.cometbft_pid.exists() && !node.statesnap_pid.exists());
    }
}

#[test]
fn a_port_in_use_is_named_with_what_to_do() {
    require_cometbft();
    let net = Network::init(&kvstore(1));
    let rpc = net.nodes()[0].ports.rpc;
    let _held = std::net::TcpListener::bind(("127.0.0.1", rpc)).unwrap();
    let err = format!("{:#}", net.start_all().unwrap_err());
    assert!(
        err.contains(&format!("port {rpc}")) && err.contains("--base-port"),
        "{err}"
    );
    assert_eq!(net.is_running("node0"), (false, false));
}

#[test]
fn an_app_that_exits_at_once_is_reported_with_its_log() {
    require_cometbft();
    let net = Network::init(&TestnetOptions {
        app: AppKind::Statesnap,
        ..kvstore(1)
    });
    let err = format!(
        "{:#}",
        net.start_node("node0", &["--no-such-flag".to_string()]).unwrap_err()
    );
    assert!(
        err.contains("statesnap process of node0 exited while starting"),
        "{err}"
    );
    assert!(
        err.contains("statesnap.log") && err.contains("error"),
        "the log is quoted: {err}"
    );
    assert_eq!(
        net.is_running("node0"),
        (false, false),
        "cometbft is not started without its app"
    );
}

#[test]
fn cli_starts_reports_joins_and_stops() {
    require_cometbft();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let _guard = StopOnDrop(dir.clone());
    let base = free_base_port(2).unwrap().to_string();
    let dir_arg = dir.to_str().unwrap();
    let statesnap = || Command::cargo_bin("statesnap").unwrap();

    let out = statesnap()
        .args([
            "testnet",
            "start",
            "--validators",
            "1",
            "--app",
            "kvstore",
            "--block-time",
            "200ms",
        ])
        .args(["--base-port", &base, "--dir", dir_arg])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rpc_url = format!("http://127.0.0.1:{}", base.parse::<u16>().unwrap() + 1);
    assert!(stdout.contains("node0") && stdout.contains(&rpc_url), "{stdout}");
    assert!(stdout.contains(&format!(
        "statesnap testnet stop --dir {}",
        dir.canonicalize().unwrap().display()
    )));

    let out = statesnap()
        .args(["testnet", "join", "--block-sync", "--dir", dir_arg])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("node1 joined by block sync"));
    let net = Testnet::open(&dir).unwrap();
    net.wait_for_sync("node1", TIMEOUT).unwrap();

    let out = statesnap()
        .args(["testnet", "status", "--dir", dir_arg])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    let node1 = stdout.lines().find(|l| l.starts_with("node1")).unwrap_or_default();
    assert!(node1.contains("block sync") && node1.contains("running"), "{stdout}");

    let out = statesnap()
        .args(["testnet", "stop", "--dir", dir_arg])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(net.is_running("node0"), (false, false));
    assert_eq!(net.is_running("node1"), (false, false));
    let out = statesnap()
        .args(["testnet", "status", "--dir", dir_arg])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("stopped"));
}
