//! Trust from CometBFT's light client (statesnap_transport::trust) against a
//! real local network of statesnap validators on CometBFT 0.39.3: the app
//! hash after a height from a verified header, refusals when an RPC lies or
//! the pinned hash is wrong, and `statesnap statesync-config` writing a
//! section CometBFT accepts. Needs cometbft (scripts/setup.sh installs it).

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use serde_json::Value;

use common::net::{options, require_cometbft, Network};
use statesnap_harness::testnet::{CometBft, CometBftRelease};
use statesnap_transport::trust::{app_hash_after, TrustAnchor, TrustError, TrustSpec};

const CHAIN: &str = "light-client-test";

fn spec(rpcs: &[&str], anchor: TrustAnchor) -> TrustSpec {
    TrustSpec {
        rpcs: rpcs.iter().map(|s| s.to_string()).collect(),
        anchor,
        period: Duration::from_secs(168 * 3600),
        timeout: Duration::from_secs(60),
    }
}

/// Two validators, both RPCs honest, with transactions so that app hashes
/// change from block to block.
fn network() -> Network {
    require_cometbft();
    Network::start(&options(CHAIN, 2))
}

fn rpc_url(net: &Network, node: &str) -> String {
    net.node(node).unwrap().rpc_url()
}

#[test]
fn the_app_hash_after_a_height_comes_from_a_verified_header() {
    let net = network();
    let load = net.start_load(CHAIN, &["node0", "node1"], 10.0);
    net.wait_for_height("node1", 8);
    let stats = load.finish();
    assert!(stats.accepted > 0, "the load sent transactions: {stats:?}");
    let (rpc0, rpc1) = (rpc_url(&net, "node0"), rpc_url(&net, "node1"));

    // node1's app says what its state after h is; the light client reads
    // node0 first.
    let (h, app_hash_hex) = net.app_status("node1");
    let trusted = app_hash_after(&spec(&[&rpc0, &rpc1], TrustAnchor::Auto), h, Some(CHAIN)).unwrap();
    let next = net.header("node0", h + 1);
    assert_eq!(trusted.chain_id, CHAIN);
    assert_eq!((trusted.snapshot_height, trusted.header_height), (h, h + 1));
    assert_eq!(
        hex::encode(trusted.app_hash),
        app_hash_hex,
        "node1's app hash after {h}"
    );
    assert_eq!(trusted.app_hash.to_vec(), next.app_hash, "header {} on node0", h + 1);
    assert_eq!(trusted.header_hash.to_vec(), next.block_hash);
    // The other node's app agrees with the header too.
    net.assert_same_app_hash("node0", "node1");

    // Pinned at block 2, verified forward; one RPC is enough then.
    let two = net.header("node0", 2);
    let pinned = TrustAnchor::Pinned {
        height: 2,
        hash: two.block_hash.clone().try_into().unwrap(),
    };
    let from_pin = app_hash_after(&spec(&[&rpc1], pinned.clone()), h, Some(CHAIN)).unwrap();
    assert_eq!(from_pin, trusted);
    assert_eq!(
        app_hash_after(&spec(&[&rpc0, &rpc1], pinned), h, None).unwrap(),
        trusted
    );

    // A wrong pinned hash is refused, naming both hashes.
    let wrong = TrustAnchor::Pinned {
        height: 2,
        hash: [0x11; 32],
    };
    let err = app_hash_after(&spec(&[&rpc0, &rpc1], wrong), h, Some(CHAIN)).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, TrustError::TrustHashMismatch { height: 2, .. }), "{text}");
    assert!(text.contains("trust hash is wrong"), "{text}");
    assert!(text.contains(&"11".repeat(32)), "{text}");
    assert!(text.contains(&hex::encode_upper(&two.block_hash)), "{text}");

    // Another chain's id is refused.
    let err = app_hash_after(&spec(&[&rpc0, &rpc1], TrustAnchor::Auto), h, Some("another-chain")).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, TrustError::ChainIdMismatch { .. }), "{text}");
    assert!(text.contains("another-chain") && text.contains(CHAIN), "{text}");

    // A height far ahead is waited for, up to the timeout.
    let short = TrustSpec {
        timeout: Duration::from_secs(3),
        ..spec(&[&rpc0, &rpc1], TrustAnchor::Auto)
    };
    let err = app_hash_after(&short, h + 100_000, None).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, TrustError::Timeout { .. }), "{text}");
    assert!(text.contains(&format!("waiting for block {}", h + 100_001)), "{text}");

    // Auto needs a second RPC to cross-check against.
    let err = app_hash_after(&spec(&[&rpc0], TrustAnchor::Auto), h, None).unwrap_err();
    assert!(matches!(err, TrustError::TooFewRpcs { .. }), "{err}");
}

#[test]
fn an_rpc_that_lies_about_a_header_is_refused() {
    let net = network();
    let honest = rpc_url(&net, "node0");
    let h = net.wait_for_height("node0", 6);
    let target = h + 1;
    // node1's RPC behind a proxy that alters the app hash of header h+1.
    let liar = lying_proxy(&rpc_url(&net, "node1"), BTreeSet::from([target]));
    let real = net.header("node0", target);

    // As a witness: the cross-check finds it out.
    let err = app_hash_after(&spec(&[&honest, &liar], TrustAnchor::Auto), h, Some(CHAIN)).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, TrustError::Disagree { height, .. } if height == target),
        "{text}"
    );
    assert!(
        text.contains(&honest) && text.contains(&liar) && text.contains(&hex::encode_upper(&real.block_hash)),
        "the error names both RPCs and the honest hash: {text}"
    );

    // As the primary: its header does not hash to what the validators signed.
    let err = app_hash_after(&spec(&[&liar, &honest], TrustAnchor::Auto), h, Some(CHAIN)).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(&err, TrustError::VerificationFailed { height, url, .. } if *height == target && *url == liar),
        "{text}"
    );
    assert!(text.contains("refused the header"), "{text}");

    // Pinned below the lie, with the liar as the only RPC: refused too.
    let pin = net.header("node0", 2);
    let pinned = TrustAnchor::Pinned {
        height: 2,
        hash: pin.block_hash.try_into().unwrap(),
    };
    let err = app_hash_after(&spec(&[&liar], pinned), h, None).unwrap_err();
    assert!(matches!(err, TrustError::VerificationFailed { .. }), "{err}");

    // The same heights the liar does not lie about are trusted.
    let before = app_hash_after(&spec(&[&honest, &liar], TrustAnchor::Auto), h - 2, Some(CHAIN)).unwrap();
    assert_eq!(before.app_hash.to_vec(), net.header("node0", h - 1).app_hash);
}

#[test]
fn statesync_config_writes_a_section_cometbft_accepts() {
    let net = network();
    net.wait_for_height("node0", 5);
    let rpcs = format!("{},{}", rpc_url(&net, "node0"), rpc_url(&net, "node1"));
    for release in [CometBftRelease::V039, CometBftRelease::V038] {
        let cometbft = CometBft::discover_release(release).unwrap();
        let home = net.scratch().join(format!("joiner-{release:?}"));
        cometbft.init_home(&home).unwrap();
        let config = home.join("config/config.toml");
        let before = std::fs::read_to_string(&config).unwrap();

        let out = std::process::Command::new(env!("CARGO_BIN_EXE_statesnap"))
            .args(["statesync-config", "--rpc", &rpcs, "--trust-period", "72h", "--write"])
            .arg(&config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.contains("wrote [statesync] into"), "{stderr}");
        assert!(out.stdout.is_empty(), "--write prints nothing on stdout");

        let after = std::fs::read_to_string(&config).unwrap();
        let comments = |t: &str| t.lines().filter(|l| l.trim_start().starts_with('#')).count();
        assert_eq!(comments(&before), comments(&after), "every comment is kept");
        let old: toml::Table = toml::from_str(&before).unwrap();
        let new: toml::Table = toml::from_str(&after).unwrap();
        for section in ["p2p", "rpc", "consensus", "mempool"] {
            assert_eq!(old[section], new[section], "[{section}] is untouched");
        }
        let s = &new["statesync"];
        assert_eq!(s["enable"].as_bool(), Some(true));
        assert_eq!(s["rpc_servers"].as_str(), Some(rpcs.as_str()));
        assert_eq!(s["trust_period"].as_str(), Some("72h0m0s"));
        assert_eq!(
            s["discovery_time"], old["statesync"]["discovery_time"],
            "other keys are kept"
        );
        let height = s["trust_height"].as_integer().unwrap() as u64;
        assert!(height >= 3, "a recent height: {height}");
        let header = net.header("node0", height);
        assert_eq!(
            s["trust_hash"].as_str(),
            Some(hex::encode_upper(&header.block_hash).as_str())
        );

        // CometBFT validates its config (the [statesync] section included)
        // before any command.
        cometbft
            .node_id(&home)
            .unwrap_or_else(|e| panic!("cometbft {release:?} refuses the config: {e:#}"));
    }

    // Printed rather than written: the same section on stdout.
    let out = common::statesnap_ok(&["statesync-config", "--rpc", &rpcs]);
    let printed: toml::Table = toml::from_str(&out).unwrap();
    assert_eq!(printed["statesync"]["trust_period"].as_str(), Some("168h0m0s"));

    // One RPC is refused: CometBFT needs two.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_statesnap"))
        .args(["statesync-config", "--rpc", &rpc_url(&net, "node0")])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("2 rpc_servers"), "{stderr}");
}

/// An RPC server on loopback that forwards every request to `backend` and
/// replaces the app hash in the header of each height in `lie_at` in
/// `commit`, `block` and `header` answers. Returns its URL.
fn lying_proxy(backend: &str, lie_at: BTreeSet<u64>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let backend = backend.trim_start_matches("http://").to_string();
    // Runs until the test process ends.
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let (backend, lie_at) = (backend.clone(), lie_at.clone());
            std::thread::spawn(move || {
                let _ = forward(client, &backend, &lie_at);
            });
        }
    });
    url
}

/// One request: read, forward (HTTP/1.0, so the answer is unchunked and
/// ends at EOF), tamper, answer, close.
fn forward(mut client: TcpStream, backend: &str, lie_at: &BTreeSet<u64>) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let (request_line, body) = read_request(&mut client)?;
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or("POST"), parts.next().unwrap_or("/"));

    let mut upstream = TcpStream::connect(backend)?;
    upstream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        upstream,
        "{method} {path} HTTP/1.0\r\nHost: {backend}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )?;
    upstream.write_all(&body)?;
    let mut answer = Vec::new();
    upstream.read_to_end(&mut answer)?;
    let split = find(&answer, b"\r\n\r\n").map_or(answer.len(), |i| i + 4);
    let mut reply = answer[split..].to_vec();

    let rpc_method = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["method"].as_str().map(str::to_string))
        .unwrap_or_else(|| path.trim_start_matches('/').split('?').next().unwrap_or("").to_string());
    if let Ok(mut v) = serde_json::from_slice::<Value>(&reply) {
        let header = match rpc_method.as_str() {
            "commit" => v.pointer_mut("/result/signed_header/header"),
            "block" => v.pointer_mut("/result/block/header"),
            "header" => v.pointer_mut("/result/header"),
            _ => None,
        };
        if let Some(header) = header {
            let height = header["height"].as_str().and_then(|s| s.parse::<u64>().ok());
            if height.is_some_and(|h| lie_at.contains(&h)) {
                header["app_hash"] = Value::String("5A".repeat(32));
                reply = serde_json::to_vec(&v).unwrap();
            }
        }
    }
    write!(
        client,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reply.len()
    )?;
    client.write_all(&reply)?;
    client.flush()
}

/// The request line and body of one HTTP request (Content-Length bodies only).
fn read_request(client: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        let n = client.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = client.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = head.lines().next().unwrap_or("").to_string();
    Ok((line, buf[head_end..head_end + length].to_vec()))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
