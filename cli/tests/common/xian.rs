//! The Xian network tests' shared pieces: a guard that stops a network,
//! waits that print the node's logs, and reads of a node's app.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use statesnap::node::metrics::read_metric;
use statesnap::snapshot::{list_snapshots, Manifest};
use statesnap_harness::xian::{XianNet, XianTools};

pub const TIMEOUT: Duration = Duration::from_secs(300);

/// Fails the test with the way to install Xian's node when it is missing.
pub fn require_xian() {
    if let Err(e) = XianTools::discover() {
        panic!("this test runs Xian's real node: install it with scripts/install-xian.sh (scripts/setup.sh runs it). {e:#}");
    }
}

/// A short temporary directory (the nodes' unix sockets live under it).
pub fn short_tempdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir_in("/tmp").unwrap()
}

/// Stops the network in a directory when the test ends, passing or not;
/// keeps its files when it failed.
pub struct Guard(pub Option<tempfile::TempDir>, pub PathBuf);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Err(e) = XianNet::open(&self.1).and_then(|net| net.stop()) {
            eprintln!("stopping the Xian network: {e:#}");
        }
        if std::thread::panicking() {
            if let Some(tmp) = self.0.take() {
                eprintln!("the network's files are kept in {}", tmp.keep().display());
            }
        }
    }
}

/// Polls `f` until it gives a value; on timeout fails with node `node`'s logs.
pub fn wait<T>(what: &str, net: &XianNet, node: usize, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            net.node(node).log_tails()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A snapshot in a proxy's directory: its height, manifest and every file's bytes.
pub type Taken = (u64, Manifest, Vec<(String, Vec<u8>)>);

/// The snapshots in a proxy's directory.
pub fn snapshots(dir: &Path) -> Vec<Taken> {
    list_snapshots(dir)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|s| {
            let manifest = s.manifest().ok()?;
            // The proxy may prune a snapshot while it is read: one that
            // vanishes midway is skipped, not a failure.
            let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(s.path())
                .ok()?
                .map(|e| {
                    let e = e.ok()?;
                    Some((
                        e.file_name().to_string_lossy().into_owned(),
                        std::fs::read(e.path()).ok()?,
                    ))
                })
                .collect::<Option<_>>()?;
            files.sort();
            Some((manifest.height, manifest, files))
        })
        .collect()
}

/// The app's own Info answer through CometBFT's RPC: (height, app hash hex).
pub fn abci_info(net: &XianNet, node: usize) -> (u64, String) {
    let Ok(v) = net.node(node).rpc().call("abci_info", serde_json::json!({})) else {
        return (0, String::new());
    };
    let r = &v["response"];
    let height = r["last_block_height"]
        .as_str()
        .and_then(|h| h.parse().ok())
        .unwrap_or(0);
    let hash = r["last_block_app_hash"].as_str().unwrap_or_default();
    let hash = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, hash).unwrap_or_default();
    (height, hex::encode(hash))
}

/// Waits until node `node`'s app has committed a height above `above`, then
/// checks its app hash (its own Info answer) against the header validator
/// `reference` recorded for it.
pub fn assert_app_hash_matches(net: &XianNet, node: usize, reference: usize, above: u64) -> u64 {
    let (height, hash) = wait(&format!("node{node}'s app past height {above}"), net, node, || {
        let (h, hash) = abci_info(net, node);
        (h > above).then_some((h, hash))
    });
    net.node(reference)
        .wait_for_height(net.supervisor(), height + 1, TIMEOUT)
        .unwrap();
    let header = net.node(reference).rpc().header(Some(height + 1)).unwrap();
    assert_eq!(
        hash,
        hex::encode(&header.app_hash),
        "node{node}'s app hash at height {height} against node{reference}'s header"
    );
    height
}

/// A metric of node `node`'s proxy (0 when absent or unreadable).
pub fn metric(net: &XianNet, node: usize, name: &str) -> f64 {
    net.metrics(node)
        .ok()
        .and_then(|text| read_metric(&text, name))
        .unwrap_or(0.0)
}
