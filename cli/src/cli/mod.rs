//! The command line's arguments and the dispatch of each subcommand to its
//! group's file, which only turns arguments into library calls and results
//! into output.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use statesnap::plugin::{Limits, PluginEngine, PluginRegistry};

mod gov;
mod join;
mod key;
mod node;
mod plugin;
mod proxy;
mod snapshot;
mod state;
mod testnet;
mod trust;
mod tx;

#[derive(Parser, Debug)]
#[command(
    name = "statesnap",
    version,
    about = "CometBFT state sync for Xian-layout state, with snapshot formats as sandboxed wasm plugins"
)]
pub struct Cli {
    /// Log more (-v: info, -vv: debug, -vvv: trace; `statesnap start` logs at info by default). Logs go to stderr.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(flatten)]
    pub plugins: PluginArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Where plugins come from and the limits they run under.
#[derive(Args, Debug, Clone)]
pub struct PluginArgs {
    /// Load every *.wasm plugin in this directory too.
    #[arg(long, global = true, value_name = "DIR")]
    pub plugin_dir: Option<PathBuf>,
    /// Do not use the plugins built into the binary.
    #[arg(long, global = true)]
    pub no_built_in_plugins: bool,
    /// Fuel one plugin call may use.
    #[arg(long, global = true, value_name = "FUEL", default_value_t = Limits::default().fuel_per_call)]
    pub plugin_fuel: u64,
    /// Memory one plugin instance may use, in MiB.
    #[arg(long, global = true, value_name = "MIB", default_value_t = (Limits::default().memory_bytes >> 20) as u64)]
    pub plugin_memory_mib: u64,
    /// Output one plugin call may return, in MiB.
    #[arg(long, global = true, value_name = "MIB", default_value_t = (Limits::default().output_bytes_per_call >> 20) as u64)]
    pub plugin_output_mib: u64,
    /// Keep compiled plugin code here, so the next command skips compiling
    /// (default: $STATESNAP_COMPILE_CACHE, else $XDG_CACHE_HOME/statesnap/compiled,
    /// else ~/.cache/statesnap/compiled). Its files run as native code: keep it
    /// as private as the binary.
    #[arg(long, global = true, value_name = "DIR", conflicts_with = "no_compile_cache")]
    pub compile_cache: Option<PathBuf>,
    /// Compile every plugin afresh in each command.
    #[arg(long, global = true)]
    pub no_compile_cache: bool,
}

impl PluginArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            fuel_per_call: self.plugin_fuel,
            memory_bytes: (self.plugin_memory_mib as usize) << 20,
            output_bytes_per_call: (self.plugin_output_mib as usize) << 20,
            ..Limits::default()
        }
    }

    /// Where compiled plugin code is kept, if anywhere.
    pub fn compile_cache_dir(&self) -> Option<PathBuf> {
        if self.no_compile_cache {
            return None;
        }
        let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let dir = self
            .compile_cache
            .clone()
            .or_else(|| env("STATESNAP_COMPILE_CACHE"))
            .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("statesnap/compiled")))
            .or_else(|| env("HOME").map(|d| d.join(".cache/statesnap/compiled")))?;
        Some(std::path::absolute(&dir).unwrap_or(dir))
    }

    /// The engine: with the compile cache when one can be opened (a cache
    /// that cannot is a warning, never a failure: it only saves time).
    pub fn engine(&self, limits: Limits) -> anyhow::Result<PluginEngine> {
        if let Some(dir) = self.compile_cache_dir() {
            match PluginEngine::with_compile_cache(limits, &dir) {
                Ok(engine) => return Ok(engine),
                Err(e) => tracing::warn!(
                    "compiling plugins without a cache: {e:#} (choose another with --compile-cache DIR, or pass --no-compile-cache)"
                ),
            }
        }
        PluginEngine::new(limits)
    }

    pub fn registry(&self) -> anyhow::Result<PluginRegistry> {
        let engine = self.engine(self.limits())?;
        let mut reg = PluginRegistry::new(engine, !self.no_built_in_plugins);
        if let Some(dir) = &self.plugin_dir {
            reg.add_dir(dir)?;
        }
        Ok(reg)
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Read, write, generate and hash Xian-layout state homes.
    #[command(subcommand)]
    State(state::StateCommand),
    /// Create, verify, inspect and restore snapshots.
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCommand),
    /// List, inspect and check format plugins.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Governance of snapshot formats: propose a plugin, vote, show status.
    #[command(subcommand)]
    Gov(gov::GovCommand),
    /// Measure create and restore with each built-in plugin against native and bare-store baselines.
    Bench(statesnap_harness::bench::BenchArgs),
    /// Generate a state, snapshot it with each built-in plugin, restore and verify it (offline).
    Demo(statesnap_harness::bench::DemoArgs),
    /// The main demo: a local CometBFT network under load, and a new node joining by state sync.
    DemoNetwork(statesnap_harness::demo_network::DemoNetworkArgs),
    /// Run the node: CometBFT's ABCI application (state machine, snapshots, state sync).
    Start(node::StartArgs),
    /// Run in front of another ABCI app (Xian's node): forward its calls, take and serve statesnap snapshots of its state, restore it by state sync.
    #[command(args_override_self = true)]
    Proxy(proxy::ProxyArgs),
    /// Start a new node at a published snapshot's height: fetch and check its state against the light client's app hash, bootstrap CometBFT there (no p2p state sync).
    Join(join::JoinArgs),
    /// Watch a node joining by state sync; if no usable snapshot comes in time, switch its CometBFT to block sync.
    JoinFallback(node::FallbackArgs),
    /// Measure block times while a background snapshot runs, in process.
    BenchNode(statesnap_harness::bench_node::BenchNodeArgs),
    /// Measure joining a local CometBFT network by state sync vs block sync, and restores from 1 vs 3 peers.
    BenchNetwork(statesnap_harness::bench_network::BenchNetworkArgs),
    /// Measure restores from a local S3 server and an HTTP server (1, 4, 16 chunks in flight) against the offline restore.
    BenchTransport(statesnap_harness::bench_transport::BenchTransportArgs),
    /// Build, sign and broadcast state-patch transactions; generate load.
    #[command(subcommand)]
    Tx(tx::TxCommand),
    /// Create and show account key files.
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// Run a local CometBFT network: start, stop, status, join.
    #[command(subcommand)]
    Testnet(testnet::TestnetCommand),
    /// Print (or --write into a config.toml) CometBFT's [statesync] section, its trust height and hash checked with the light client against every --rpc.
    StatesyncConfig(trust::StatesyncConfigArgs),
}

/// Publishes the snapshots made under `dir` to `to` in the background
/// (`snapshot_publish`, `--snapshot-publish`), counted in `metrics`; `None`
/// when `to` is empty. Keep the publisher alive as long as the node runs.
pub fn snapshot_publisher(
    to: &str,
    dir: PathBuf,
    metrics: &std::sync::Arc<statesnap::node::Metrics>,
) -> anyhow::Result<Option<statesnap_transport::publisher::Publisher>> {
    if to.trim().is_empty() {
        return Ok(None);
    }
    let location = statesnap_transport::location::Location::parse(to, true)
        .map_err(|e| anyhow::anyhow!("snapshot_publish = {to:?}: {e:#}"))?;
    let metrics = metrics.clone();
    let publisher = statesnap_transport::publisher::Publisher::spawn(
        dir,
        location,
        Box::new(move |outcome| match outcome {
            Ok(_) => {
                metrics.snapshots_published.inc();
            }
            Err(_) => {
                metrics.snapshot_publish_failures.inc();
            }
        }),
    )?;
    Ok(Some(publisher))
}

pub fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    // tiny_http runs only the benches' static HTTP server, whose shutdown
    // (waking its accept loop) it reports as an error.
    let filter = tracing_subscriber::EnvFilter::try_from_env("STATESNAP_LOG")
        .unwrap_or_else(|_| format!("{default},tiny_http=off").into());
    // Colours only on a terminal: a node's log file must stay greppable.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .try_init();
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::State(c) => state::run(c),
        Command::Snapshot(c) => snapshot::run(c, &cli.plugins),
        Command::Plugin(c) => plugin::run(c, &cli.plugins),
        Command::Bench(a) => statesnap_harness::bench::bench(&a, &cli.plugins.registry()?),
        Command::Demo(a) => statesnap_harness::bench::demo(&a, &cli.plugins.registry()?),
        Command::DemoNetwork(a) => statesnap_harness::demo_network::demo_network(&a),
        Command::Start(a) => node::start(a, &cli.plugins),
        Command::Proxy(a) => proxy::run(a, &cli.plugins),
        Command::Join(a) => join::run(&a, &cli.plugins),
        Command::JoinFallback(a) => node::join_fallback(a),
        Command::BenchNode(a) => statesnap_harness::bench_node::bench_node(&a, || cli.plugins.registry()),
        Command::BenchNetwork(a) => statesnap_harness::bench_network::bench_network(&a),
        Command::BenchTransport(a) => statesnap_harness::bench_transport::bench_transport(&a),
        Command::Tx(c) => tx::run(c),
        Command::Gov(c) => gov::run(c),
        Command::Key(c) => key::run(c),
        Command::Testnet(c) => testnet::run(c),
        Command::StatesyncConfig(a) => trust::statesync_config(a),
    }
}

/// Parses a 32-byte hash given in hex.
pub fn parse_hash(s: &str) -> anyhow::Result<[u8; 32]> {
    let s = s.trim();
    let bytes = hex::decode(s).map_err(|e| anyhow::anyhow!("`{s}` is not a hex hash: {e}"))?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| anyhow::anyhow!("`{s}` is {} bytes; an app hash is 32 bytes (64 hex digits)", b.len()))
}

/// Parses `name=value`.
pub fn parse_param(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .ok_or_else(|| format!("`{s}` is not NAME=VALUE"))
}
