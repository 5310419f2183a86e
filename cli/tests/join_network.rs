//! `statesnap join` on a real network of two validators: the validators
//! publish their snapshots (`snapshot_publish`) to a directory a plain HTTP
//! server serves; a new node joins from that URL with the light client over both
//! validators' RPC (the app hash of H from header H+1), its state restored
//! and checkpointed, CometBFT's empty stores bootstrapped at H by
//! `cometbft-bootstrap` (CometBFT's `node.BootstrapState`) with state sync
//! off; started, it block-syncs from H+1 to the validators' height and app
//! hash under load. Refused: another state's snapshot claiming H (nothing
//! written), a wrong app hash given to the tool (the stores stay empty), a
//! second join of the same home. Run on CometBFT v0.39.3 and v0.38.26, each
//! with the tool built for it (scripts/setup.sh installs both).

mod common;

use std::sync::Mutex;

use common::net::{options, require_cometbft, Network};
use common::statesnap_ok;
use statesnap_harness::object_server::StaticHttpServer;
use statesnap_harness::testnet::{CometBft, CometBftRelease, JoinOptions, TestnetOptions};
use statesnap_transport::bootstrap::{bootstrap_cometbft, find_bootstrap_tool, BootstrapError, FailureKind};
use statesnap_transport::location::Location;

/// One network at a time: the machine's cores are shared.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn a_node_joined_out_of_band_catches_up_on_0_39() {
    joined_node_catches_up(CometBftRelease::V039, "bootstrap-039", true);
}

#[test]
fn a_node_joined_out_of_band_catches_up_on_0_38() {
    joined_node_catches_up(CometBftRelease::V038, "bootstrap-038", false);
}

fn joined_node_catches_up(release: CometBftRelease, chain: &str, refusals: bool) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    require_cometbft();
    let cometbft = CometBft::discover_release(release).unwrap();
    // The tool built for this release, beside its binary.
    let tool = find_bootstrap_tool(Some(&cometbft.path)).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(tool, cometbft.path.with_file_name("cometbft-bootstrap"));
    // Every validator publishes its snapshots (`snapshot_publish`) to a
    // directory a plain HTTP server serves.
    let published = tempfile::tempdir().unwrap();
    let site = published.path().join("site");
    let opts = TestnetOptions {
        snapshot_interval: 10,
        snapshot_keep_recent: 5,
        genesis_keys: 2_000,
        cometbft: release,
        snapshot_publish: format!("file://{}", site.display()),
        ..options(chain, 2)
    };
    let mut net = Network::start(&opts);
    let load = net.start_load(chain, &["node0", "node1"], 10.0);

    // The newest published snapshot (height H), and the app hash after H
    // (in header H+1); the light client needs H+2.
    let height = net.poll("node0", "a published snapshot", || {
        let location = Location::parse(site.to_str().unwrap(), false).ok()?;
        Some(
            statesnap_transport::publish::list(&location)
                .ok()?
                .snapshots
                .first()?
                .height,
        )
    });
    // Either validator may have written the index first: node0's own count
    // is waited for on node0.
    net.poll("node0", "node0 counting a published snapshot", || {
        (net.metric("node0", "statesnap_snapshots_published_total") >= 1.0).then_some(())
    });
    let http = StaticHttpServer::start(&site).unwrap();
    let app_hash: [u8; 32] = net.header("node0", height + 1).app_hash.try_into().unwrap();
    net.wait_for_height("node0", height + 2);

    // A new node, never started: the light client reads both validators.
    let join = JoinOptions {
        rpc_servers: vec!["node0".into(), "node1".into()],
        ..JoinOptions::default()
    };
    let joiner = net.add_node("joiner", &join).unwrap().clone();
    let rpcs = format!(
        "{},{}",
        net.node("node0").unwrap().rpc_url(),
        net.node("node1").unwrap().rpc_url()
    );
    let join_args = |from: &str| -> Vec<String> {
        [
            "join",
            "--from",
            from,
            "--trust-rpc",
            &rpcs,
            "--cometbft-home",
            joiner.cometbft_home.to_str().unwrap(),
            "--home",
            joiner.statesnap_home.to_str().unwrap(),
            "--cometbft",
            cometbft.path.to_str().unwrap(),
            "--height",
            &height.to_string(),
        ]
        .map(String::from)
        .to_vec()
    };
    let state = joiner.statesnap_home.join("state");

    if refusals {
        // Another state's snapshot claiming height H on this chain: the
        // light client's app hash refuses it, and nothing is written.
        let forged_home = net.scratch().join("forged-state");
        statesnap_ok(&[
            "state",
            "generate",
            "--home",
            forged_home.to_str().unwrap(),
            "--keys",
            "500",
        ]);
        let forged = net.scratch().join("forged");
        statesnap_ok(&[
            "snapshot",
            "create",
            "--home",
            forged_home.to_str().unwrap(),
            "--height",
            &height.to_string(),
            "--chain-id",
            chain,
            "--out",
            forged.to_str().unwrap(),
        ]);
        let forged_site = net.scratch().join("forged-site");
        statesnap_ok(&[
            "snapshot",
            "publish",
            forged.to_str().unwrap(),
            "--to",
            forged_site.to_str().unwrap(),
        ]);
        // A third party's snapshot checked against the light client: refused.
        let verify = |from: &str| {
            statesnap_out(
                &[
                    "snapshot",
                    "verify",
                    from,
                    "--trust-rpc",
                    &rpcs,
                    "--height",
                    &height.to_string(),
                ]
                .map(String::from),
            )
        };
        let out = verify(forged_site.to_str().unwrap());
        assert!(!out.status.success(), "a forged snapshot was verified");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("trusted app hash"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The validators' own: every chunk, proof and the root hold.
        let out = verify(&http.url());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let verified: serde_json::Value =
            serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
        assert_eq!(verified["app_hash"], hex::encode(app_hash));
        assert!(
            verified["trusted_from"].as_str().unwrap().starts_with("light client"),
            "{verified}"
        );
        let out = statesnap_out(&join_args(forged_site.to_str().unwrap()));
        assert!(!out.status.success(), "a forged snapshot was joined");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&hex::encode(app_hash)),
            "names the trusted app hash: {stderr}"
        );
        assert!(
            !state.exists() || statesnap::store::home::is_vacant(&state),
            "no state written"
        );
        // CometBFT's stores stay empty (checked by the tool, which
        // refuses otherwise): the join below bootstraps them.

        // The tool alone, given a wrong app hash: refused by the light
        // client's word, nothing written.
        let mut wrong = app_hash;
        wrong[0] ^= 1;
        let err = bootstrap_cometbft(&tool, &joiner.cometbft_home, height, &wrong).unwrap_err();
        let e = err
            .downcast_ref::<BootstrapError>()
            .unwrap_or_else(|| panic!("{err:#}"));
        assert_eq!(e.kind, FailureKind::AppHashMismatch, "{err:#}");
        assert!(e.message.starts_with("app hash mismatch: "), "{}", e.message);
        for hash in [app_hash, wrong] {
            assert!(e.message.contains(&hex::encode_upper(hash)), "{}", e.message);
        }
    }

    // The join: trusted app hash, restore from the HTTP mirror, checkpoint,
    // CometBFT bootstrapped at H with state sync off.
    let joined: serde_json::Value =
        serde_json::from_str(statesnap_ok(&join_args(&http.url())).lines().last().unwrap()).unwrap();
    assert_eq!(joined["height"], height);
    assert_eq!(joined["app_hash"], hex::encode(app_hash));
    assert!(joined["fetch"]["fetched"].as_u64().unwrap() >= 1, "{joined}");
    // (The 0.39 run verified the snapshot from the same server first.)
    let verified_chunks = if refusals {
        joined["fetch"]["fetched"].as_u64().unwrap()
    } else {
        0
    };
    assert_eq!(
        http.chunk_gets(),
        joined["fetch"]["fetched"].as_u64().unwrap() + verified_chunks
    );
    let config = std::fs::read_to_string(joiner.cometbft_home.join("config/config.toml")).unwrap();
    let config: toml::Table = config.parse().unwrap();
    assert_eq!(config["statesync"]["enable"].as_bool(), Some(false));
    assert!(config["statesync"]["trust_height"].as_integer().unwrap() > 0);
    if refusals {
        let out = statesnap_out(&join_args(&http.url()));
        assert!(!out.status.success(), "a second join of the same home");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("stores not empty"), "{stderr}");
    }

    // Started, it block-syncs from H+1 and executes the load's blocks.
    net.start_node("joiner", &[]).unwrap();
    let target = net.caught_up("node0") + 5;
    net.wait_for_height("node0", target);
    net.wait_for_height("joiner", target);
    net.assert_same_app_hash("joiner", "node0");
    let stats = load.finish();
    assert!(stats.accepted > 0, "{stats:?}");
    let target = net.caught_up("node0");
    net.wait_for_height("joiner", target);
    net.assert_same_app_hash("joiner", "node0");
    let status = net.rpc("joiner").status().unwrap();
    assert_eq!(
        status.earliest_block_height,
        height + 1,
        "its first block is the one after the snapshot"
    );
    assert_eq!(
        net.metric("joiner", "statesnap_restored_snapshot_height"),
        0.0,
        "no state sync"
    );
    assert!(!net.log("joiner").contains("genesis loaded"), "no InitChain");
}

fn statesnap_out(args: &[String]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_statesnap"))
        .args(args)
        .output()
        .unwrap()
}
