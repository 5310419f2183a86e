//! Real Xian networks on loopback: N validators, each Xian's own node
//! (`xian-abci` 0.9.3 from PyPI, in the Debian sid root file system of
//! `scripts/install-xian.sh`) behind CometBFT v0.39.3, started from the
//! project's own genesis contract bundle (`harness/xian/configs/`).
//!
//! * [`install`]: finding the installed tools; entering the root file system.
//! * [`genesis`]: a network's files: keys, one genesis, every node's home.
//! * [`node`]: one node's files and processes (and how xian-abci picks its
//!   ABCI socket, so that a proxy can sit between it and CometBFT).
//! * [`tx`]: a signed `currency.transfer`, a balance, and a steady load of
//!   transfers, through Xian's SDK.
//!
//! A network lives in a directory (keep its path short: unix sockets are
//! under it):
//!
//! ```text
//! DIR/xian-net.json        options, nodes, keys (XianNet::open reads it)
//! DIR/xian-chroot.sh       the wrapper that enters the root file system
//! DIR/xian_net.py          the helper run with the root file system's Python
//! DIR/configs/contracts/   the genesis bundle (contracts_<network>.json, *.s.py)
//! DIR/nodeI/               xian-abci's $HOME
//!     .cometbft/           CometBFT's home (config/, data/) and xian/ (Xian's
//!                          storage home: lmdb/ is the state, a statesnap --home)
//!     app.sock             xian-abci's ABCI socket; proxy.sock: CometBFT's, with proxy_sockets
//!     cometbft.log, xian-abci.log, *.pid
//! ```
//!
//! The directory is mounted at its own path inside the root file system
//! (in a private mount namespace of each process, so nothing stays mounted).

pub mod genesis;
pub mod install;
pub mod node;
pub mod tx;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::testnet::process::Supervisor;
pub use install::XianTools;
pub use node::{ProxyOptions, XianNode};
pub use tx::{Transfer, XianLoad, XianLoadConfig, XianLoadStats};

/// Version of `xian-net.json`.
const FILE_VERSION: u32 = 1;
const FILE: &str = "xian-net.json";
/// How long xian-abci may take to open its socket.
const APP_START: Duration = Duration::from_secs(60);
/// How long a node may take to its first block after start.
const FIRST_BLOCK: Duration = Duration::from_secs(120);
/// SIGTERM to SIGKILL.
const GRACE: Duration = Duration::from_secs(10);

/// How a Xian network is set up. Saved in `xian-net.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XianNetOptions {
    pub validators: usize,
    pub chain_id: String,
    /// Node `i` listens on `base_port + 10*i + …` (the layout of [`crate::testnet::Ports`]).
    pub base_port: u16,
    /// CometBFT's `timeout_commit`, in milliseconds; blocks come this often,
    /// empty or not.
    pub block_time_ms: u64,
    /// Extra accounts with balances in the genesis state (`currency.balances:<hex>`).
    pub genesis_keys: u64,
    /// A configs directory in Xian's layout (`contracts/contracts_<network>.json`
    /// and the `*.s.py` it lists); `None`: the project's bundle.
    pub configs: Option<PathBuf>,
    /// Which `contracts_<network>.json` of the configs directory.
    pub network: String,
    /// CometBFT connects to each node's `proxy.sock` instead of xian-abci's
    /// `app.sock`: something else (a proxy) must join the two.
    pub proxy_sockets: bool,
    /// `statesnap proxy` joins them, running xian-abci (implies `proxy_sockets`).
    #[serde(default)]
    pub statesnap: Option<ProxyOptions>,
}

impl Default for XianNetOptions {
    fn default() -> Self {
        XianNetOptions {
            validators: 1,
            chain_id: "statesnap-xian".into(),
            base_port: 26600,
            block_time_ms: 500,
            genesis_keys: 0,
            configs: None,
            network: "statesnap".into(),
            proxy_sockets: false,
            statesnap: None,
        }
    }
}

/// What `xian-net.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetFile {
    version: u32,
    options: XianNetOptions,
    /// The founder's private key (validator 0's), who holds the whole genesis supply.
    founder_private_key: String,
    genesis_app_hash: String,
    nodes: Vec<XianNode>,
}

/// What Xian's `xian-state-snapshot export` printed: the archive it wrote
/// and the height it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateSnapshotExport {
    pub path: PathBuf,
    pub height: u64,
}

/// One successful `xian-state-snapshot export` on a live node.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportRun {
    pub export: StateSnapshotExport,
    /// Wall time and peak RSS of the run that succeeded.
    pub seconds: f64,
    pub peak_rss_bytes: u64,
    /// Runs it took (see [`XianNet::export_state_snapshot`]).
    pub attempts: u32,
}

/// Runs of `xian-state-snapshot export` before giving up.
const EXPORT_ATTEMPTS: u32 = 5;
/// What Xian's exporter says when a block committed while it read.
const EXPORT_RACE: &str = "exported state root does not match latest block app hash";

impl StateSnapshotExport {
    /// Reads the `output_path=… height=…` fields of the command's output.
    pub fn parse(stdout: &str) -> anyhow::Result<StateSnapshotExport> {
        let field = |name: &str| {
            stdout
                .split_whitespace()
                .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
        };
        let path = field("output_path").with_context(|| format!("no output_path in {stdout:?}"))?;
        let height = field("height")
            .and_then(|h| h.parse().ok())
            .with_context(|| format!("no height in {stdout:?}"))?;
        Ok(StateSnapshotExport {
            path: path.into(),
            height,
        })
    }
}

/// A storage home as Xian's own code reads it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct XianReading {
    /// Every key, consensus or not.
    pub keys: u64,
    /// The entries the state root covers.
    pub consensus_entries: u64,
    /// The state root, lowercase hex.
    pub root: String,
    /// `__latest_block`, as Xian decodes it.
    pub marker: Option<serde_json::Value>,
}

/// A Xian network in a directory and the processes this program started for it.
#[derive(Debug)]
pub struct XianNet {
    dir: PathBuf,
    file: NetFile,
    tools: XianTools,
    supervisor: Supervisor,
}

impl XianNet {
    /// Writes a new network into `dir` (missing or empty): keys, genesis,
    /// every node's home. Starts nothing. On failure the directory is removed.
    pub fn init(dir: &Path, opts: &XianNetOptions) -> anyhow::Result<XianNet> {
        let tools = XianTools::discover()?;
        let made = genesis::init(dir, opts, &tools)?;
        let net = XianNet {
            dir: made.dir,
            file: NetFile {
                version: FILE_VERSION,
                options: opts.clone(),
                founder_private_key: made.founder_private_key,
                genesis_app_hash: made.genesis_app_hash,
                nodes: made.nodes,
            },
            tools,
            supervisor: Supervisor::default(),
        };
        if let Err(e) = net.save() {
            let _ = std::fs::remove_dir_all(&net.dir);
            return Err(e);
        }
        Ok(net)
    }

    /// Reads the network in `dir`.
    pub fn open(dir: &Path) -> anyhow::Result<XianNet> {
        let path = dir.join(FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {} (no Xian network there?)", path.display()))?;
        let file: NetFile = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a Xian network description", path.display()))?;
        if file.version != FILE_VERSION {
            bail!(
                "{} is of version {}, this program reads {FILE_VERSION}",
                path.display(),
                file.version
            );
        }
        Ok(XianNet {
            dir: dir.canonicalize()?,
            file,
            tools: XianTools::discover()?,
            supervisor: Supervisor::default(),
        })
    }

    fn save(&self) -> anyhow::Result<()> {
        let path = self.dir.join(FILE);
        let tmp = self.dir.join(format!("{FILE}.tmp"));
        std::fs::write(&tmp, serde_json::to_string_pretty(&self.file)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn options(&self) -> &XianNetOptions {
        &self.file.options
    }

    pub fn nodes(&self) -> &[XianNode] {
        &self.file.nodes
    }

    pub fn node(&self, index: usize) -> &XianNode {
        &self.file.nodes[index]
    }

    pub fn tools(&self) -> &XianTools {
        &self.tools
    }

    pub fn supervisor(&self) -> &Supervisor {
        &self.supervisor
    }

    /// The account holding the genesis supply (validator 0's key).
    pub fn founder_private_key(&self) -> &str {
        &self.file.founder_private_key
    }

    /// The genesis state's root (genesis.json's `app_hash`), lowercase hex.
    pub fn genesis_app_hash(&self) -> &str {
        &self.file.genesis_app_hash
    }

    /// The wrapper script of this network.
    pub fn chroot_script(&self) -> PathBuf {
        self.dir.join(genesis::CHROOT_SCRIPT)
    }

    /// The socket CometBFT of `node` connects to.
    pub fn cometbft_socket(&self, node: &XianNode) -> PathBuf {
        let proxied = match &self.file.options.statesnap {
            Some(proxy) => proxy.proxied(node.index),
            None => self.file.options.proxy_sockets,
        };
        if proxied {
            node.proxy_socket()
        } else {
            node.app_socket()
        }
    }

    /// Starts xian-abci of every node and waits for their sockets.
    pub fn start_apps(&self) -> anyhow::Result<()> {
        for node in self.nodes() {
            node.start_app(
                &self.supervisor,
                &self.tools,
                &self.chroot_script(),
                &self.dir,
                APP_START,
            )?;
        }
        Ok(())
    }

    /// Starts CometBFT of every node (the apps, and any proxy, must be up).
    pub fn start_cometbfts(&self) -> anyhow::Result<()> {
        for node in self.nodes() {
            node.start_cometbft(&self.supervisor, &self.tools, &self.cometbft_socket(node))?;
        }
        Ok(())
    }

    /// Starts every node (apps first) and waits until each has made block 1.
    /// With `proxy_sockets`, start the apps, then the proxies, then
    /// [`start_cometbfts`](Self::start_cometbfts) instead.
    pub fn start(&self) -> anyhow::Result<()> {
        if let Some(proxy) = &self.file.options.statesnap {
            let started = self.start_proxied(proxy);
            if started.is_err() {
                let _ = self.stop();
            }
            return started;
        }
        if self.file.options.proxy_sockets {
            bail!("this network's CometBFTs connect to proxy.sock: start the apps, the proxies, then the CometBFTs");
        }
        let started = self.start_apps().and_then(|()| self.start_cometbfts()).and_then(|()| {
            for node in self.nodes() {
                node.wait_for_height(&self.supervisor, 1, FIRST_BLOCK)?;
            }
            Ok(())
        });
        if started.is_err() {
            let _ = self.stop();
        }
        started
    }

    /// Every validator behind its proxy: the proxies (which start the
    /// apps), then the CometBFTs; waits for block 1 everywhere.
    fn start_proxied(&self, proxy: &ProxyOptions) -> anyhow::Result<()> {
        for node in self.nodes() {
            self.start_proxy_or_app(node, proxy)?;
        }
        self.start_cometbfts()?;
        for node in self.nodes() {
            node.wait_for_height(&self.supervisor, 1, FIRST_BLOCK)?;
        }
        Ok(())
    }

    fn start_proxy_or_app(&self, node: &XianNode, proxy: &ProxyOptions) -> anyhow::Result<()> {
        if !proxy.proxied(node.index) {
            return node.start_app(
                &self.supervisor,
                &self.tools,
                &self.chroot_script(),
                &self.dir,
                APP_START,
            );
        }
        node.start_proxy(
            &self.supervisor,
            &self.tools,
            &self.chroot_script(),
            &self.dir,
            &self.file.options.chain_id,
            proxy,
        )
    }

    /// Starts one node (its app, or its proxy, then its CometBFT); does not wait for blocks.
    pub fn start_node(&self, index: usize) -> anyhow::Result<()> {
        let node = self.node(index);
        match &self.file.options.statesnap {
            Some(proxy) => self.start_proxy_or_app(node, proxy)?,
            None => node.start_app(
                &self.supervisor,
                &self.tools,
                &self.chroot_script(),
                &self.dir,
                APP_START,
            )?,
        }
        node.start_cometbft(&self.supervisor, &self.tools, &self.cometbft_socket(node))
    }

    /// Stops one node: CometBFT first, then its proxy or xian-abci.
    pub fn stop_node(&self, index: usize) -> anyhow::Result<()> {
        let node = self.node(index);
        node.stop_cometbft(&self.supervisor, GRACE)?;
        node.stop_proxy(&self.supervisor, GRACE)?;
        node.stop_app(&self.supervisor, GRACE)
    }

    /// Adds a full node that joins by state sync (trusting a recent block of
    /// validator 0, checked against two validators' RPC) or by block sync;
    /// starts nothing. Returns its index.
    pub fn add_node(&mut self, state_sync: bool) -> anyhow::Result<usize> {
        let index = self.file.nodes.len();
        let name = crate::testnet::paths::node_name(index);
        let validators: Vec<&XianNode> = self.nodes().iter().filter(|n| !n.joined).collect();
        let peers: Vec<String> = validators
            .iter()
            .map(|n| format!("{}@{}:{}", n.node_id, crate::testnet::paths::HOST, n.ports.p2p))
            .collect();
        let genesis = validators[0].cometbft_home().join("config").join("genesis.json");
        let sync = if state_sync {
            let rpc = validators[0].rpc();
            let height = rpc.status()?.latest_block_height.saturating_sub(2).max(1);
            let header = rpc.header(Some(height))?;
            Some(crate::testnet::cometbft::StateSyncSettings {
                rpc_servers: validators.iter().take(2).map(|n| n.rpc_url()).collect(),
                trust_height: height,
                trust_hash: hex::encode_upper(&header.block_hash),
            })
        } else {
            None
        };
        let node = genesis::join(
            &self.dir,
            &self.tools,
            &self.file.options,
            &name,
            index,
            &genesis,
            &peers,
        )?;
        if let Some(sync) = &sync {
            crate::testnet::cometbft::configure_state_sync(&node.cometbft_home(), sync)?;
        }
        self.file.nodes.push(node);
        self.save()?;
        Ok(index)
    }

    /// Replaces the extra proxy arguments of node `index` (from its next start).
    pub fn set_proxy_args(&mut self, index: usize, args: Vec<String>) -> anyhow::Result<()> {
        let Some(proxy) = self.file.options.statesnap.as_mut() else {
            bail!("this network runs no statesnap proxy");
        };
        proxy.node_args.retain(|(i, _)| *i != index);
        proxy.node_args.push((index, args));
        self.save()
    }

    /// Runs node `index` without a proxy from its next start (CometBFT talks
    /// to its xian-abci directly): a Xian node that does not run statesnap.
    pub fn run_without_proxy(&mut self, index: usize) -> anyhow::Result<()> {
        let Some(proxy) = self.file.options.statesnap.as_mut() else {
            bail!("this network runs no statesnap proxy: every node is without one already");
        };
        if !proxy.without_proxy.contains(&index) {
            proxy.without_proxy.push(index);
        }
        self.save()
    }

    /// Starts only the CometBFT of node `index` (its app or proxy runs).
    pub fn start_cometbft(&self, index: usize) -> anyhow::Result<()> {
        let node = self.node(index);
        node.start_cometbft(&self.supervisor, &self.tools, &self.cometbft_socket(node))
    }

    /// The pid of the xian-abci that node `index`'s proxy runs.
    pub fn proxied_app_pid(&self, index: usize) -> anyhow::Result<Option<u32>> {
        let Some(proxy) = self.node(index).proxy_pid_running(&self.supervisor)? else {
            return Ok(None);
        };
        Ok(node::children_of(proxy).into_iter().next())
    }

    /// Xian's own operator command `xian-state-snapshot ARGS…` (format-1
    /// snapshots: `export`, `list`, `import`) on node `index`'s storage
    /// home, in the root file system. Its pid is the command's.
    pub fn state_snapshot_command(&self, index: usize, args: &[&str]) -> std::process::Command {
        let home = self.node(index).dir.to_string_lossy().into_owned();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        self.tools.chroot_command(
            &self.chroot_script(),
            &[&self.dir],
            &[("HOME", &home)],
            "xian-state-snapshot",
            &args,
        )
    }

    /// Runs Xian's operator command `xian-state-snapshot export` on node
    /// `index` while the node runs. Xian's exporter reads the block marker
    /// and the state apart, not in one read transaction, and refuses when a
    /// block committed in between (their roots differ): such a run is
    /// repeated, up to 5 runs, as an operator would.
    pub fn export_state_snapshot(&self, index: usize) -> anyhow::Result<ExportRun> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let started = std::time::Instant::now();
            let mut cmd = self.state_snapshot_command(index, &["export"]);
            cmd.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            let child = cmd.spawn().context("running xian-state-snapshot export")?;
            let pid = child.id();
            let sampler = crate::node_usage::ProcessSampler::start(move || vec![("export".to_string(), pid)]);
            let out = child.wait_with_output()?;
            let seconds = started.elapsed().as_secs_f64();
            let peak_rss_bytes = sampler.finish().get("export").map_or(0, |p| p.peak_rss_bytes);
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            if out.status.success() {
                return Ok(ExportRun {
                    export: StateSnapshotExport::parse(&stdout)
                        .context("reading what xian-state-snapshot export printed")?,
                    seconds,
                    peak_rss_bytes,
                    attempts: attempt,
                });
            }
            if !stderr.contains(EXPORT_RACE) || attempt == EXPORT_ATTEMPTS {
                bail!(
                    "xian-state-snapshot export on node{index} failed ({}, run {attempt}): {stdout}\n{stderr}",
                    out.status
                );
            }
            eprintln!("xian-state-snapshot export on node{index}: a block committed while it read; running it again");
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// The text node `index`'s proxy serves at `/metrics`.
    pub fn metrics(&self, index: usize) -> anyhow::Result<String> {
        let url = self.node(index).metrics_url();
        crate::rpc::get_text(&url).with_context(|| format!("reading {url} (is the proxy of node{index} running?)"))
    }

    /// SIGKILLs the proxy of node `index` (a crash, for tests); the
    /// xian-abci it ran exits when its connections close, and CometBFT
    /// when it loses its app.
    pub fn kill_proxy(&self, index: usize) -> anyhow::Result<()> {
        self.node(index).stop_proxy(&self.supervisor, Duration::ZERO)
    }

    /// Stops every CometBFT, then every proxy and xian-abci (which exits when
    /// CometBFT closes its connection; the other way round CometBFT would
    /// see its app vanish).
    pub fn stop(&self) -> anyhow::Result<()> {
        let mut first_error = None;
        for node in self.nodes() {
            if let Err(e) = node.stop_cometbft(&self.supervisor, GRACE) {
                first_error.get_or_insert(e);
            }
        }
        for node in self.nodes() {
            if let Err(e) = node
                .stop_proxy(&self.supervisor, GRACE)
                .and_then(|()| node.stop_app(&self.supervisor, GRACE))
            {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Sends a signed `currency.transfer` of `amount` from the account of
    /// `private_key` to `to` through `node`'s RPC, and waits until it is final.
    pub fn transfer(&self, node: usize, private_key: &str, to: &str, amount: &str) -> anyhow::Result<Transfer> {
        tx::transfer(self, &self.node(node).rpc_url(), private_key, to, amount)
    }

    /// Starts a steady stream of signed transfers (see [`XianLoadConfig`]):
    /// its senders are funded by the founder first. `progress`: its progress
    /// lines go to this process's stderr.
    pub fn start_load(&self, cfg: &XianLoadConfig, progress: bool) -> anyhow::Result<XianLoad> {
        tx::start_load(self, cfg, progress)
    }

    /// A storage home (under the network directory) as Xian's own code reads
    /// it: `LMDBStore` for the entries, `xian.state_root` for the root.
    pub fn read_home_with_xian(&self, home: &Path) -> anyhow::Result<XianReading> {
        let v = genesis::run_tool(
            &self.tools,
            &self.dir,
            &[
                "read-home".to_string(),
                "--home".into(),
                home.to_string_lossy().into_owned(),
            ],
        )?;
        serde_json::from_value(v.clone()).with_context(|| format!("xian_net.py read-home printed {v}"))
    }

    /// `currency.balances:<address>` as `node` answers it (decimal text; "0" when none).
    pub fn balance(&self, node: usize, address: &str) -> anyhow::Result<String> {
        tx::balance(self, &self.node(node).rpc_url(), address)
    }
}
