//! Real CometBFT networks on loopback: N validators, each a `cometbft`
//! process plus a `statesnap start` process (or CometBFT's built-in `kvstore`
//! app), and full nodes that join later by state sync or block sync. The
//! end-to-end tests and `statesnap testnet` use it.
//!
//! ```text
//! statesnap testnet start --validators N --dir DIR [--chain-id ID] [--base-port P]
//!     [--snapshot-interval N] [--keep-recent N] [--param K=V]… [--block-time 500ms]
//!     [--genesis-keys N] [--app statesnap|kvstore]
//!         initialise DIR (when new) and start every node; waits for height 1 and
//!         prints each node's RPC and metrics URLs
//! statesnap testnet status --dir DIR    per node: running?, height, app hash, catching up, peers
//! statesnap testnet join --dir DIR [--name NAME] [--block-sync]
//!         add a full node that joins by state sync (default) or block sync, and start it
//! statesnap testnet stop --dir DIR      SIGTERM every process (SIGKILL after 10 s)
//! ```
//!
//! The files are described in [`layout`]. Processes are detached (own process
//! group, output appended to `DIR/<name>/*.log`) and found again by their pid
//! files, so a testnet outlives the command that started it.
//!
//! CometBFT 0.38 is needed: `scripts/install-cometbft.sh` installs it; the
//! binary is `$COMETBFT`, else `cometbft` on `PATH`, else Go's bin directory.

pub mod cometbft;
pub mod genesis_file;
pub mod paths;
pub mod process;
mod run;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde::{Deserialize, Serialize};

use crate::rpc::RpcClient;
use statesnap::node::NodeConfig;
use statesnap::store::StoreKind;

pub use cometbft::{CometBft, CometBftRelease};
pub use genesis_file::GenesisEntry;
pub use paths::{free_base_port, Ports};

use cometbft::{NodeSettings, StateSyncSettings};
use paths::HOST;
use process::Supervisor;

/// Version of `testnet.json`.
const FILE_VERSION: u32 = 1;

/// Which ABCI application a node's CometBFT talks to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AppKind {
    /// `statesnap start`, over ABCI on TCP.
    #[default]
    Statesnap,
    /// CometBFT's built-in in-memory key/value app (no statesnap process):
    /// exercises the network machinery without the statesnap node.
    Kvstore,
}

/// How a testnet is set up. Saved in `testnet.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestnetOptions {
    /// Number of validators (each with power 10).
    pub validators: usize,
    pub chain_id: String,
    /// Node `i` listens on `base_port + 10*i + 0..5` (see [`layout`]).
    pub base_port: u16,
    /// statesnap takes a snapshot every this many blocks (0: never).
    pub snapshot_interval: u64,
    pub snapshot_keep_recent: u32,
    /// The snapshot format plugin (a built-in name or a `.wasm` file).
    pub snapshot_plugin: String,
    pub snapshot_params: BTreeMap<String, String>,
    /// Every node publishes its snapshots here (`snapshot_publish`); empty: none.
    #[serde(default)]
    pub snapshot_publish: String,
    /// CometBFT's `timeout_commit`: the pause between blocks.
    #[serde(with = "duration_text")]
    pub block_time: Duration,
    /// Generate a Xian-like state of this many keys into `DIR/genesis-state`
    /// and import it at genesis; 0: none.
    pub genesis_keys: u64,
    /// Entries put in genesis `app_state.entries`.
    pub genesis_entries: Vec<GenesisEntry>,
    /// The validators' state store (a joining node may use another).
    #[serde(default)]
    pub store: StoreKind,
    pub app: AppKind,
    /// The CometBFT release the nodes run (testnets written before this
    /// option ran 0.38).
    #[serde(default = "legacy_release")]
    pub cometbft: CometBftRelease,
    /// Each node's CometBFT reaches its statesnap app through `statesnap
    /// proxy` (forwarding only) on a unix socket, as a Xian node's would.
    #[serde(default)]
    pub proxy: bool,
    /// The `statesnap` binary that runs the nodes (the CLI passes its own
    /// executable; tests pass `env!("CARGO_BIN_EXE_statesnap")`).
    pub statesnap_bin: PathBuf,
}

impl Default for TestnetOptions {
    fn default() -> Self {
        TestnetOptions {
            validators: 3,
            chain_id: "statesnap-testnet".into(),
            base_port: 26600,
            snapshot_interval: 10,
            snapshot_keep_recent: 2,
            snapshot_plugin: "zstd".into(),
            snapshot_params: BTreeMap::new(),
            snapshot_publish: String::new(),
            block_time: Duration::from_millis(500),
            genesis_keys: 0,
            genesis_entries: Vec::new(),
            store: StoreKind::default(),
            app: AppKind::Statesnap,
            cometbft: CometBftRelease::default(),
            proxy: false,
            statesnap_bin: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("statesnap")),
        }
    }
}

/// One node of a testnet: what it is, where it listens, where its files are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    /// Position in the port layout.
    pub index: usize,
    pub validator: bool,
    /// A full node that joined by state sync (false: genesis validator or block sync).
    pub state_sync: bool,
    /// CometBFT's node id (the `id` of `id@host:port`).
    pub node_id: String,
    pub ports: Ports,
    pub cometbft_home: PathBuf,
    pub statesnap_home: PathBuf,
    pub cometbft_log: PathBuf,
    pub statesnap_log: PathBuf,
    pub cometbft_pid: PathBuf,
    pub statesnap_pid: PathBuf,
    /// With [`TestnetOptions::proxy`]: where the proxy listens
    /// (`unix://DIR/<name>/abci.sock`, CometBFT's `proxy_app`), its log and pid file.
    #[serde(default)]
    pub proxy_listen: PathBuf,
    #[serde(default)]
    pub proxy_log: PathBuf,
    #[serde(default)]
    pub proxy_pid: PathBuf,
}

/// What a new node is: a genesis validator, or a full node that joins by
/// state sync or by block sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Validator,
    StateSync,
    BlockSync,
}

impl NodeInfo {
    fn new(dir: &Path, name: &str, index: usize, ports: Ports, role: Role) -> NodeInfo {
        let base = paths::node_dir(dir, name);
        NodeInfo {
            name: name.to_string(),
            index,
            validator: role == Role::Validator,
            state_sync: role == Role::StateSync,
            node_id: String::new(),
            ports,
            cometbft_home: base.join("cometbft"),
            statesnap_home: base.join("statesnap"),
            cometbft_log: base.join("cometbft.log"),
            statesnap_log: base.join("statesnap.log"),
            cometbft_pid: base.join("cometbft.pid"),
            statesnap_pid: base.join("statesnap.pid"),
            proxy_listen: PathBuf::from(format!("unix://{}", base.join("abci.sock").display())),
            proxy_log: base.join("proxy.log"),
            proxy_pid: base.join("proxy.pid"),
        }
    }

    /// CometBFT's RPC, e.g. `http://127.0.0.1:26601`.
    pub fn rpc_url(&self) -> String {
        format!("http://{HOST}:{}", self.ports.rpc)
    }

    /// statesnap's Prometheus endpoint.
    pub fn metrics_url(&self) -> String {
        format!("http://{HOST}:{}/metrics", self.ports.metrics)
    }

    /// CometBFT's own Prometheus endpoint.
    pub fn prometheus_url(&self) -> String {
        format!("http://{HOST}:{}/metrics", self.ports.prometheus)
    }

    /// `id@127.0.0.1:port`, as `persistent_peers` lists it.
    pub fn p2p_address(&self) -> String {
        format!("{}@{HOST}:{}", self.node_id, self.ports.p2p)
    }

    /// What the node is, in a word or two.
    pub fn role(&self) -> &'static str {
        match (self.validator, self.state_sync) {
            (true, _) => "validator",
            (false, true) => "state sync",
            (false, false) => "block sync",
        }
    }
}

/// How [`Testnet::add_node`] joins a full node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinOptions {
    /// Join by state sync; false: block sync from genesis.
    pub state_sync: bool,
    /// The node whose RPC gives the trust height (its latest) and that block's hash.
    pub trust_from: String,
    /// The light client's RPC servers: node names or URLs. Empty: the first
    /// two validators (the one validator twice when there is only one).
    pub rpc_servers: Vec<String>,
    /// The only peers to connect to (node names), with peer exchange off.
    /// Empty: every validator, peer exchange on.
    pub peers: Vec<String>,
    /// The joining node's state store; `None`: the validators'.
    pub store: Option<StoreKind>,
}

impl Default for JoinOptions {
    fn default() -> Self {
        JoinOptions {
            state_sync: true,
            trust_from: paths::node_name(0),
            rpc_servers: Vec::new(),
            peers: Vec::new(),
            store: None,
        }
    }
}

/// What `testnet.json` holds.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestnetFile {
    version: u32,
    options: TestnetOptions,
    nodes: Vec<NodeInfo>,
}

/// A testnet in a directory: its options, its nodes and the processes this
/// program started for it.
#[derive(Debug)]
pub struct Testnet {
    dir: PathBuf,
    options: TestnetOptions,
    nodes: Vec<NodeInfo>,
    supervisor: Supervisor,
    cometbft: OnceLock<CometBft>,
}

impl Testnet {
    /// Writes every node's homes, keys, configs and the shared genesis into
    /// `dir` (new or empty), and `dir/testnet.json`. Starts nothing. On
    /// failure the directory is removed again.
    pub fn init(dir: &Path, opts: &TestnetOptions) -> anyhow::Result<Testnet> {
        if opts.validators == 0 {
            bail!("a testnet needs at least one validator");
        }
        genesis_file::check_chain_id(&opts.chain_id)?;
        Ports::for_node(opts.base_port, opts.validators - 1)?;
        if dir.exists()
            && std::fs::read_dir(dir)
                .with_context(|| format!("reading {}", dir.display()))?
                .next()
                .is_some()
        {
            if dir.join(paths::TESTNET_FILE).is_file() {
                bail!(
                    "{} already holds a testnet: start it with `statesnap testnet start --dir {0}` \
                     (Testnet::open), or pick a new directory",
                    dir.display()
                );
            }
            bail!(
                "{} is not empty: pick a new (or empty) directory for the testnet",
                dir.display()
            );
        }
        let cometbft = CometBft::discover_release(opts.cometbft)?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let dir = dir
            .canonicalize()
            .with_context(|| format!("resolving {}", dir.display()))?;
        let mut net = Testnet {
            dir: dir.clone(),
            options: opts.clone(),
            nodes: Vec::new(),
            supervisor: Supervisor::default(),
            cometbft: OnceLock::from(cometbft),
        };
        match net.write_validators() {
            Ok(()) => Ok(net),
            Err(e) => {
                // Best effort: the error that matters is `e`.
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    fn write_validators(&mut self) -> anyhow::Result<()> {
        let cometbft = self.cometbft()?.clone();
        let import_home = if self.options.genesis_keys > 0 {
            let home = self.dir.join(paths::GENESIS_STATE_DIR);
            genesis_file::generate_state(&home, self.options.genesis_keys)?;
            Some(home)
        } else {
            None
        };
        let mut generated = Vec::new();
        for index in 0..self.options.validators {
            let name = paths::node_name(index);
            let ports = Ports::for_node(self.options.base_port, index)?;
            let mut node = NodeInfo::new(&self.dir, &name, index, ports, Role::Validator);
            cometbft.init_home(&node.cometbft_home)?;
            node.node_id = cometbft.node_id(&node.cometbft_home)?;
            generated.push((name, cometbft::generated_validator(&node.cometbft_home)?));
            self.nodes.push(node);
        }
        let template = cometbft::read_json(&cometbft::genesis_path(&self.nodes[0].cometbft_home))?;
        let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let app_state = genesis_file::app_state(&self.options.genesis_entries, import_home.as_deref())?;
        let genesis = genesis_file::build(&template, &self.options.chain_id, &now, &generated, app_state)?;
        let genesis_text = serde_json::to_string_pretty(&genesis)?;
        for node in &self.nodes {
            let path = cometbft::genesis_path(&node.cometbft_home);
            std::fs::write(&path, &genesis_text).with_context(|| format!("writing {}", path.display()))?;
            let peers: Vec<String> = self
                .nodes
                .iter()
                .filter(|other| other.name != node.name)
                .map(NodeInfo::p2p_address)
                .collect();
            cometbft::edit_config(&node.cometbft_home, &self.settings(node, peers.join(","), None))?;
            self.write_node_ports(node, self.options.store)?;
        }
        self.save()
    }

    /// Reads the testnet in `dir` (its `testnet.json`).
    pub fn open(dir: &Path) -> anyhow::Result<Testnet> {
        let path = dir.join(paths::TESTNET_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "{} has no {}: create a testnet there with `statesnap testnet start --validators N --dir {0}`",
                dir.display(),
                paths::TESTNET_FILE
            ),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let file: TestnetFile =
            serde_json::from_str(&text).with_context(|| format!("{} is not a testnet description", path.display()))?;
        if file.version != FILE_VERSION {
            bail!(
                "{} is version {}, this statesnap reads version {FILE_VERSION}",
                path.display(),
                file.version
            );
        }
        Ok(Testnet {
            dir: dir
                .canonicalize()
                .with_context(|| format!("resolving {}", dir.display()))?,
            options: file.options,
            nodes: file.nodes,
            supervisor: Supervisor::default(),
            cometbft: OnceLock::new(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn options(&self) -> &TestnetOptions {
        &self.options
    }

    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    pub fn node(&self, name: &str) -> anyhow::Result<&NodeInfo> {
        self.nodes.iter().find(|n| n.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
            anyhow!(
                "the testnet in {} has no node `{name}` (it has {})",
                self.dir.display(),
                names.join(", ")
            )
        })
    }

    /// A name for the next node: `nodeN` with N its port index.
    pub fn next_node_name(&self) -> String {
        paths::node_name(self.next_index())
    }

    fn next_index(&self) -> usize {
        self.nodes.iter().map(|n| n.index + 1).max().unwrap_or(0)
    }

    /// Adds a non-validator full node: its homes, configs and the testnet's
    /// genesis, saved in `testnet.json`. Does not start it. For state sync the
    /// trust height and hash come from `join.trust_from`'s RPC, which must run.
    pub fn add_node(&mut self, name: &str, join: &JoinOptions) -> anyhow::Result<&NodeInfo> {
        paths::check_node_name(name)?;
        if self.nodes.iter().any(|n| n.name == name) {
            bail!("the testnet already has a node `{name}`: pick another name");
        }
        let index = self.next_index();
        let ports = Ports::for_node(self.options.base_port, index)?;
        let state_sync = if join.state_sync {
            Some(self.state_sync_settings(join)?)
        } else {
            None
        };
        let cometbft = self.cometbft()?.clone();
        let role = if join.state_sync {
            Role::StateSync
        } else {
            Role::BlockSync
        };
        let mut node = NodeInfo::new(&self.dir, name, index, ports, role);
        let written = (|| {
            cometbft.init_home(&node.cometbft_home)?;
            node.node_id = cometbft.node_id(&node.cometbft_home)?;
            let source = cometbft::genesis_path(&self.validator(0)?.cometbft_home);
            let target = cometbft::genesis_path(&node.cometbft_home);
            std::fs::copy(&source, &target)
                .with_context(|| format!("copying {} to {}", source.display(), target.display()))?;
            let peers: Vec<String> = if join.peers.is_empty() {
                self.validators().map(NodeInfo::p2p_address).collect()
            } else {
                join.peers
                    .iter()
                    .map(|p| self.node(p).map(NodeInfo::p2p_address))
                    .collect::<anyhow::Result<_>>()?
            };
            let mut settings = self.settings(&node, peers.join(","), state_sync);
            settings.pex = join.peers.is_empty();
            cometbft::edit_config(&node.cometbft_home, &settings)?;
            self.write_node_ports(&node, join.store.unwrap_or(self.options.store))
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_dir_all(paths::node_dir(&self.dir, name));
            return Err(e);
        }
        self.nodes.push(node);
        self.save()?;
        self.node(name)
    }

    /// Waits for a node joining by state sync to get its first block; if it
    /// goes `patience` without one and without restore progress (no usable
    /// snapshot: CometBFT 0.38 would keep looking forever), restarts it with
    /// state sync off so that it joins by block sync. See [`crate::fallback`].
    pub fn join_or_fall_back(
        &mut self,
        name: &str,
        patience: Duration,
        tell: impl FnMut(&str),
    ) -> anyhow::Result<crate::fallback::Verdict> {
        let node = self.node(name)?.clone();
        let watch = crate::fallback::Watch {
            rpc: self.rpc(name)?,
            metrics_url: (self.options.app == AppKind::Statesnap).then(|| node.metrics_url()),
            patience,
            every: Duration::from_millis(250),
        };
        let verdict = crate::fallback::watch(&watch, tell)?;
        if let crate::fallback::Verdict::NoSnapshot { .. } = verdict {
            self.stop_node(name)?;
            crate::fallback::disable_state_sync(&node.cometbft_home)?;
            if let Some(n) = self.nodes.iter_mut().find(|n| n.name == name) {
                n.state_sync = false;
            }
            self.save()?;
            self.start_node(name, &[])?;
        }
        Ok(verdict)
    }

    /// The light client's settings: a recent trusted header and two RPC servers.
    fn state_sync_settings(&self, join: &JoinOptions) -> anyhow::Result<StateSyncSettings> {
        let rpc = self.rpc(&join.trust_from)?;
        let status = rpc.status().with_context(|| {
            format!(
                "reading the trust height from {} (start the testnet first)",
                join.trust_from
            )
        })?;
        if status.latest_block_height == 0 {
            bail!(
                "{} has no blocks yet: wait for height 1 before joining by state sync",
                join.trust_from
            );
        }
        let header = rpc.header(Some(status.latest_block_height))?;
        let mut servers = Vec::new();
        for server in &join.rpc_servers {
            servers.push(if server.contains("://") {
                server.clone()
            } else {
                self.node(server)?.rpc_url()
            });
        }
        if servers.is_empty() {
            servers = self.validators().take(2).map(NodeInfo::rpc_url).collect();
        }
        if servers.len() == 1 {
            // CometBFT wants two; with one validator the witness is the primary.
            servers.push(servers[0].clone());
        }
        Ok(StateSyncSettings {
            rpc_servers: servers,
            trust_height: header.height,
            trust_hash: hex::encode_upper(&header.block_hash),
        })
    }

    fn validators(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.iter().filter(|n| n.validator)
    }

    fn validator(&self, i: usize) -> anyhow::Result<&NodeInfo> {
        self.validators()
            .nth(i)
            .ok_or_else(|| anyhow!("the testnet has no validator {i}"))
    }

    /// CometBFT's `config.toml` settings of `node`.
    fn settings(
        &self,
        node: &NodeInfo,
        persistent_peers: String,
        state_sync: Option<StateSyncSettings>,
    ) -> NodeSettings {
        NodeSettings {
            moniker: node.name.clone(),
            proxy_app: match self.options.app {
                AppKind::Statesnap if self.options.proxy => node.proxy_listen.display().to_string(),
                AppKind::Statesnap => format!("tcp://{HOST}:{}", node.ports.abci),
                AppKind::Kvstore => "kvstore".into(),
            },
            p2p_laddr: format!("tcp://{HOST}:{}", node.ports.p2p),
            rpc_laddr: format!("tcp://{HOST}:{}", node.ports.rpc),
            persistent_peers,
            pex: true,
            block_time: self.options.block_time,
            prometheus_laddr: format!("{HOST}:{}", node.ports.prometheus),
            state_sync,
        }
    }

    /// The statesnap node's `config.toml` (ports are filled in per node).
    fn node_config(&self) -> NodeConfig {
        NodeConfig {
            chain_id: self.options.chain_id.clone(),
            snapshot_interval: self.options.snapshot_interval,
            snapshot_keep_recent: self.options.snapshot_keep_recent,
            snapshot_plugin: self.options.snapshot_plugin.clone(),
            snapshot_params: self.options.snapshot_params.clone(),
            snapshot_publish: self.options.snapshot_publish.clone(),
            ..NodeConfig::default()
        }
    }

    fn write_node_ports(&self, node: &NodeInfo, store: StoreKind) -> anyhow::Result<()> {
        NodeConfig {
            store,
            abci_listen: format!("{HOST}:{}", node.ports.abci),
            metrics_listen: format!("{HOST}:{}", node.ports.metrics),
            ..self.node_config()
        }
        .write(&node.statesnap_home)
    }

    /// Writes `testnet.json` (atomically: a temporary file renamed over it).
    fn save(&self) -> anyhow::Result<()> {
        let file = TestnetFile {
            version: FILE_VERSION,
            options: self.options.clone(),
            nodes: self.nodes.clone(),
        };
        let path = self.dir.join(paths::TESTNET_FILE);
        let tmp = self.dir.join(format!(".{}.tmp", paths::TESTNET_FILE));
        std::fs::write(&tmp, serde_json::to_string_pretty(&file)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
    }

    /// The `cometbft` binary, found once.
    fn cometbft(&self) -> anyhow::Result<&CometBft> {
        if let Some(found) = self.cometbft.get() {
            return Ok(found);
        }
        let found = CometBft::discover_release(self.options.cometbft)?;
        Ok(self.cometbft.get_or_init(|| found))
    }

    pub fn rpc(&self, name: &str) -> anyhow::Result<RpcClient> {
        Ok(RpcClient::new(&self.node(name)?.rpc_url()))
    }
}

fn legacy_release() -> CometBftRelease {
    CometBftRelease::V038
}

/// Durations in `testnet.json` as text (`500ms`).
mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}
