//! The network tests' one set-up ([`options`], [`Network`]), and reads of a
//! node that cannot race another node.
//!
//! Each node commits a block on its own time, and CometBFT stores a block
//! (its RPC `status` shows the height) before its app has executed and
//! committed it. So after a transaction committed through node Y, or any
//! answer of Y at height h, node X may still hold its state from before h. A
//! [`Network`] keeps the highest height the test has seen committed anywhere
//! and, before it queries a node or sends a transaction through it, waits
//! until that node's app has committed that height
//! ([`Network::caught_up`]). The tests read chain state only through it
//! (its `rpc`, `query`, `wait_for_height` and the helpers of
//! [`super::gov`]), never through the plain [`Testnet`] methods they shadow.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use statesnap::node::metrics::read_metric;
use statesnap::node::NodeConfig;
use statesnap::store::StoreKind;
use statesnap_harness::rpc::{Header, QueryResult, RpcClient};
use statesnap_harness::testnet::process::log_tail;
use statesnap_harness::testnet::{free_base_port, AppKind, CometBft, CometBftRelease, Testnet, TestnetOptions};

/// How long any wait of a network test may take. Generous: it is only
/// reached when something is wrong, and the machine may be loaded (other
/// builds, other tests) so that blocks, snapshots and restores take many
/// times longer than on an idle machine.
pub const TIMEOUT: Duration = Duration::from_secs(300);
/// Nodes a test may run (validators and joiners): the ports reserved.
const MAX_NODES: usize = 8;
/// Lines of each of a node's logs that a failed wait prints.
const LOG_LINES: usize = 40;
const POLL: Duration = Duration::from_millis(100);

/// Fails the test with the way to install CometBFT when a release the
/// network tests run (0.39.3 by default, 0.38.26 for one) is missing.
pub fn require_cometbft() {
    for release in [CometBftRelease::V039, CometBftRelease::V038] {
        if let Err(e) = CometBft::discover_release(release) {
            panic!("this test runs real CometBFT: scripts/setup.sh installs both releases. {e:#}");
        }
    }
}

/// The options every network test starts from: `validators` validators on
/// free ports (room for 8 nodes), 300 ms blocks, the statesnap binary under
/// test; the rest is [`TestnetOptions::default`].
pub fn options(chain_id: &str, validators: usize) -> TestnetOptions {
    TestnetOptions {
        validators,
        chain_id: chain_id.into(),
        base_port: free_base_port(MAX_NODES).unwrap(),
        block_time: Duration::from_millis(300),
        statesnap_bin: PathBuf::from(env!("CARGO_BIN_EXE_statesnap")),
        ..TestnetOptions::default()
    }
}

/// Three validators snapshotting every 10 blocks (keeping 3) in many small
/// chunks (40 kB), so that every peer serves some and a refusal at the
/// first chunk means something; a genesis state of `genesis_keys` keys in
/// `store`.
pub fn many_chunks(chain_id: &str, genesis_keys: u64, store: StoreKind) -> TestnetOptions {
    TestnetOptions {
        snapshot_interval: 10,
        snapshot_keep_recent: 3,
        snapshot_params: [("chunk_bytes".to_string(), "40000".to_string())].into(),
        genesis_keys,
        store,
        ..options(chain_id, 3)
    }
}

/// A testnet in a temporary directory, stopped when the test ends (passing
/// or not), whose reads wait for the node read to have committed every
/// height the test has seen. Dereferences to the [`Testnet`] for what is no
/// read (starting, stopping, adding nodes, their files).
pub struct Network {
    net: Testnet,
    /// Earlier handles of the testnet ([`reload`](Self::reload)): their
    /// processes are reaped when the network stops.
    retired: Vec<Testnet>,
    scratch: tempfile::TempDir,
    /// The validators' pids when [`start`](Self::start) returned.
    started: Vec<(Option<u32>, Option<u32>)>,
    /// The highest height the test has seen committed on any node.
    seen: AtomicU64,
}

impl Network {
    /// Writes a testnet of `opts` into a new temporary directory; starts nothing.
    pub fn init(opts: &TestnetOptions) -> Network {
        let scratch = tempfile::tempdir().unwrap();
        let net = Testnet::init(&scratch.path().join("net"), opts).unwrap();
        Network {
            net,
            retired: Vec::new(),
            scratch,
            started: Vec::new(),
            seen: AtomicU64::new(0),
        }
    }

    /// [`init`](Self::init), then starts every validator and waits until
    /// each has committed block 2.
    pub fn start(opts: &TestnetOptions) -> Network {
        Network::start_with(opts, &[])
    }

    /// [`start`](Self::start), where the validators named in `args` run
    /// `statesnap start` with those extra arguments (test hooks).
    pub fn start_with(opts: &TestnetOptions, args: &[(&str, &[&str])]) -> Network {
        let mut net = Network::init(opts);
        let validators = net.validators();
        for node in &validators {
            let extra: Vec<String> = args
                .iter()
                .filter(|(n, _)| n == node)
                .flat_map(|(_, a)| a.iter().map(|s| s.to_string()))
                .collect();
            net.start_node(node, &extra).unwrap();
        }
        for node in &validators {
            net.wait_for_height(node, 2);
        }
        net.started = net.validator_pids();
        net
    }

    /// Asserts that every validator still runs the processes it was
    /// started with.
    pub fn assert_no_validator_restarted(&self) {
        assert_eq!(self.started, self.validator_pids(), "no validator restarted");
    }

    /// The temporary directory the testnet is in (`net/` below it), for the
    /// test's other files.
    pub fn scratch(&self) -> &Path {
        self.scratch.path()
    }

    /// Reads `testnet.json` again, after a command (`statesnap testnet
    /// join`) changed the testnet behind this handle.
    pub fn reload(&mut self) {
        let fresh = Testnet::open(self.net.dir()).unwrap();
        self.retired.push(std::mem::replace(&mut self.net, fresh));
    }

    /// The validators' names.
    pub fn validators(&self) -> Vec<String> {
        self.net
            .nodes()
            .iter()
            .filter(|n| n.validator)
            .map(|n| n.name.clone())
            .collect()
    }

    /// The validators' (statesnap, CometBFT) pids.
    pub fn validator_pids(&self) -> Vec<(Option<u32>, Option<u32>)> {
        let pids: Vec<_> = self.validators().iter().map(|n| self.net.pids(n).unwrap()).collect();
        assert!(
            pids.iter()
                .all(|(s, c)| c.is_some() && (s.is_some() || self.net.options().app == AppKind::Kvstore)),
            "a validator is not running: {pids:?}"
        );
        pids
    }

    /// Records that `height` was committed (a transaction's block, a
    /// node's answer): every later read of any node waits for it.
    pub fn saw(&self, height: u64) {
        self.seen.fetch_max(height, Ordering::SeqCst);
    }

    /// The highest height the test has seen committed.
    pub fn seen(&self) -> u64 {
        self.seen.load(Ordering::SeqCst)
    }

    /// Waits until `node`'s app has committed every height the test has
    /// seen; returns the height it has committed.
    pub fn caught_up(&self, node: &str) -> u64 {
        self.wait_for_height(node, self.seen())
    }

    /// Waits until `node`'s app has committed block `height` (not only
    /// stored it: the app's own `Info`), so that its state includes that
    /// block; returns the app's height. Fails early when one of the node's
    /// processes is gone, and with its logs' last lines on a timeout.
    pub fn wait_for_height(&self, node: &str, height: u64) -> u64 {
        let what = format!("{node}'s app to commit height {height}");
        let committed = self.poll(node, &what, || self.app_height(node).filter(|&h| h >= height));
        self.saw(committed);
        committed
    }

    /// Waits until `node` has finished catching up (state or block sync);
    /// returns its height.
    pub fn wait_for_sync(&self, node: &str) -> u64 {
        match self.net.wait_for_sync(node, TIMEOUT) {
            Ok(h) => h,
            Err(e) => self.fail(node, &format!("{e:#}")),
        }
    }

    /// A client of `node`'s RPC, once `node` has committed every height the
    /// test has seen.
    pub fn rpc(&self, node: &str) -> RpcClient {
        self.caught_up(node);
        self.net.rpc(node).unwrap()
    }

    /// An ABCI query of `node`, once it has committed every height the test
    /// has seen; the answer's height counts as seen.
    pub fn query(&self, node: &str, path: &str, data: &[u8]) -> QueryResult {
        let q = self
            .rpc(node)
            .abci_query(path, data)
            .unwrap_or_else(|e| self.fail(node, &format!("query {path}: {e:#}")));
        self.saw(q.height);
        q
    }

    /// The node's own view of its state: (height, app hash hex).
    pub fn app_status(&self, node: &str) -> (u64, String) {
        let q = self.query(node, "/status", b"");
        let v: Value = serde_json::from_slice(&q.value).unwrap();
        (
            v["height"].as_u64().unwrap(),
            v["app_hash"].as_str().unwrap().to_string(),
        )
    }

    /// The header of block `height` on `node`, once `node` has committed it.
    pub fn header(&self, node: &str, height: u64) -> Header {
        self.wait_for_height(node, height);
        self.rpc(node).header(Some(height)).unwrap()
    }

    /// Asserts that `node`'s app hash after its height is the one
    /// `reference` committed to in the next block's header.
    pub fn assert_same_app_hash(&self, node: &str, reference: &str) {
        let (h, app_hash) = self.app_status(node);
        let header = self.header(reference, h + 1);
        assert_eq!(
            hex::encode(header.app_hash),
            app_hash,
            "{node}: app hash after height {h}"
        );
    }

    /// Edits `node`'s statesnap `config.toml` (read when it starts).
    pub fn edit_config(&self, node: &str, edit: impl FnOnce(&mut NodeConfig)) {
        let home = &self.net.node(node).unwrap().statesnap_home;
        let mut config = NodeConfig::load(home).unwrap();
        edit(&mut config);
        config.write(home).unwrap();
    }

    /// The snapshots `node` advertises: (height, format) → hash.
    pub fn snapshots(&self, node: &str) -> BTreeMap<(u64, u32), String> {
        let q = self.query(node, "/snapshots", b"");
        assert_eq!(q.code, 0, "{node}: /snapshots: {}", q.log);
        let list: Vec<Value> = serde_json::from_slice(&q.value).unwrap();
        list.iter()
            .map(|s| {
                let format = s["format"].as_u64().unwrap() as u32;
                let hash = s["hash"].as_str().unwrap().to_string();
                ((s["height"].as_u64().unwrap(), format), hash)
            })
            .collect()
    }

    /// (height, format) of every snapshot `node` advertises.
    pub fn advertised(&self, node: &str) -> BTreeSet<(u64, u32)> {
        self.snapshots(node).into_keys().collect()
    }

    /// A statesnap metric of `node`; NaN when it cannot be read. Metrics
    /// are the node's own counters (a restore's progress, refusals), not
    /// chain state: reading them does not wait for any height.
    pub fn metric(&self, node: &str, name: &str) -> f64 {
        read_metric(&self.net.metrics(node).unwrap_or_default(), name).unwrap_or(f64::NAN)
    }

    /// `node`'s statesnap log.
    pub fn log(&self, node: &str) -> String {
        std::fs::read_to_string(&self.net.node(node).unwrap().statesnap_log).unwrap_or_default()
    }

    /// Calls `f` until it gives a value; after [`TIMEOUT`] fails the test
    /// with the last lines of `node`'s logs.
    pub fn poll<T>(&self, node: &str, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let started = Instant::now();
        loop {
            if let Some(v) = f() {
                return v;
            }
            if started.elapsed() > TIMEOUT {
                self.fail(
                    node,
                    &format!(
                        "timed out after {} waiting for {what}",
                        humantime::format_duration(TIMEOUT)
                    ),
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Fails the test with `message` and the last lines of `node`'s logs.
    pub fn fail(&self, node: &str, message: &str) -> ! {
        let mut text = message.to_string();
        if let Ok(info) = self.net.node(node) {
            let (app, cometbft) = self.net.is_running(node);
            text.push_str(&format!(
                "\n{node}: statesnap {}, cometbft {}",
                if app { "running" } else { "not running" },
                if cometbft { "running" } else { "not running" }
            ));
            for log in [&info.statesnap_log, &info.cometbft_log] {
                text.push_str(&format!(
                    "\n--- the last {LOG_LINES} lines of {}:\n{}",
                    log.display(),
                    log_tail(log, LOG_LINES)
                ));
            }
        }
        panic!("{text}");
    }

    /// The height `node`'s app says it has committed (ABCI `Info`); `None`
    /// when the node does not answer. Fails when one of its processes is gone.
    fn app_height(&self, node: &str) -> Option<u64> {
        let (app, cometbft) = self.net.is_running(node);
        if !cometbft || (!app && self.net.options().app == AppKind::Statesnap) {
            self.fail(node, &format!("{node} is not running"));
        }
        let info = self.net.rpc(node).ok()?.call("abci_info", json!({})).ok()?;
        // CometBFT leaves the field out at height 0.
        match &info["response"]["last_block_height"] {
            Value::Null => Some(0),
            Value::String(s) => s.parse().ok(),
            v => v.as_u64(),
        }
    }
}

impl Deref for Network {
    type Target = Testnet;
    fn deref(&self) -> &Testnet {
        &self.net
    }
}

impl DerefMut for Network {
    fn deref_mut(&mut self) -> &mut Testnet {
        &mut self.net
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = self.net.stop_all();
        for old in &self.retired {
            let _ = old.stop_all();
        }
        stop_testnet(self.net.dir());
        if std::thread::panicking() {
            // The nodes' logs, homes and snapshots, to see why.
            self.scratch.disable_cleanup(true);
            eprintln!(
                "the failed test's testnet is kept in {} (delete it when done)",
                self.net.dir().display()
            );
        }
    }
}

/// Stops every node of the testnet in `dir` (read from its `testnet.json`,
/// so also nodes a `statesnap testnet` command started).
pub fn stop_testnet(dir: &Path) {
    if let Ok(net) = Testnet::open(dir) {
        let _ = net.stop_all();
    }
}

/// Stops the testnet in its directory when dropped: for a testnet the
/// `statesnap testnet` commands start.
pub struct StopOnDrop(pub PathBuf);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        stop_testnet(&self.0);
    }
}

/// Transactions sent in the background, until [`Load::finish`].
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<anyhow::Result<statesnap_harness::load::LoadStats>>,
}

impl Network {
    /// Starts sending `rate` state-patch transactions a second of chain
    /// `chain` through `nodes` (CometBFT RPC), round robin.
    pub fn start_load(&self, chain: &str, nodes: &[&str], rate: f64) -> Load {
        use statesnap_harness::load::{run_load, LoadConfig, RpcSubmitter, SystemClock};
        let submitters: Vec<RpcSubmitter> = nodes.iter().map(|n| RpcSubmitter(self.net.rpc(n).unwrap())).collect();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let cfg = LoadConfig::new(chain, rate, Duration::from_secs(3600));
        let handle = std::thread::spawn(move || run_load(&cfg, &submitters, &SystemClock::start(), &flag, |_| {}));
        Load { stop, handle }
    }
}

impl Load {
    /// Stops the load; what it sent and what was accepted.
    pub fn finish(self) -> statesnap_harness::load::LoadStats {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().unwrap().unwrap()
    }
}
