//! Helpers of the tests that run a real CometBFT network.

use std::time::{Duration, Instant};

use serde_json::Value;
use statesnap::node::metrics::read_metric;
use statesnap_harness::testnet::{CometBft, Testnet};

/// Fails the test with the way to install CometBFT when it is missing.
pub fn require_cometbft() {
    if let Err(e) = CometBft::discover() {
        panic!("this test runs real CometBFT: install it with scripts/install-cometbft.sh (scripts/setup.sh runs it). {e:#}");
    }
}

/// Stops the network when the test ends, passing or not.
pub struct Running(pub Testnet);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.stop_all();
    }
}

/// A statesnap metric of `node`; NaN when it cannot be read.
pub fn metric(net: &Testnet, node: &str, name: &str) -> f64 {
    read_metric(&net.metrics(node).unwrap_or_default(), name).unwrap_or(f64::NAN)
}

/// Calls `f` until it gives a value; fails the test after `timeout`.
pub fn poll<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The node's own view of its state: (height, app hash hex).
pub fn app_status(net: &Testnet, node: &str) -> (u64, String) {
    let q = net.rpc(node).unwrap().abci_query("/status", b"").unwrap();
    let v: Value = serde_json::from_slice(&q.value).unwrap();
    (
        v["height"].as_u64().unwrap(),
        v["app_hash"].as_str().unwrap().to_string(),
    )
}

/// Asserts that `node`'s app hash after its height is the one `reference`
/// committed to in the next block's header.
pub fn assert_same_app_hash(net: &Testnet, node: &str, reference: &str, timeout: Duration) {
    let (h, app_hash) = app_status(net, node);
    net.wait_for_height(reference, h + 1, timeout).unwrap();
    let header = net.rpc(reference).unwrap().header(Some(h + 1)).unwrap();
    assert_eq!(
        hex::encode(header.app_hash),
        app_hash,
        "{node}: app hash after height {h}"
    );
}
