//! Running a node: `statesnap start` (the ABCI application CometBFT drives)
//! and `statesnap join-fallback` (block sync when no snapshot comes).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use statesnap::abci::AbciApp;
use statesnap::node::{config::CONFIG_FILE, Metrics, Node, NodeConfig};

use super::PluginArgs;

#[derive(Args, Debug)]
pub struct StartArgs {
    /// The node home: config.toml, state/, snapshots/ (created if missing).
    #[arg(long)]
    pub home: PathBuf,
    /// Listen for CometBFT here (HOST:PORT); overrides abci_listen in config.toml.
    #[arg(long, value_name = "HOST:PORT")]
    pub abci: Option<String>,
    /// Serve Prometheus metrics here (HOST:PORT, "" for none); overrides metrics_listen.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics: Option<String>,
    #[cfg(feature = "test-hooks")]
    #[command(flatten)]
    pub faults: FaultArgs,
}

/// Faults for tests to watch peers refuse (feature `test-hooks`: only in
/// binaries the test command builds, never in a release build).
#[cfg(feature = "test-hooks")]
#[derive(Args, Debug)]
pub struct FaultArgs {
    /// Test only: serve every snapshot chunk corrupted.
    #[arg(long)]
    pub test_corrupt_chunks: bool,
    /// Test only: wait this many milliseconds before applying each restored chunk.
    #[arg(long, default_value_t = 0)]
    pub test_chunk_delay_ms: u64,
    /// Test only: advertise self-describing snapshots with forged approvals.
    #[arg(long)]
    pub test_forge_approvals: bool,
    /// Test only: build snapshots of a forged state claiming the real app hash.
    #[arg(long)]
    pub test_forge_states: bool,
}

/// `statesnap join-fallback`: CometBFT 0.38 never gives up on state sync
/// (cometbft#3878); run this beside a joining node to move it to block sync
/// when no usable snapshot comes.
#[derive(Args, Debug)]
pub struct FallbackArgs {
    /// CometBFT's home: `config/config.toml` there gets `[statesync] enable = false`.
    #[arg(long, value_name = "DIR")]
    pub cometbft_home: PathBuf,
    /// CometBFT's RPC.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:26657")]
    pub rpc: String,
    /// statesnap's metrics, to see a restore in progress ("" to judge by CometBFT alone).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:26660/metrics")]
    pub metrics: String,
    /// How long without a block and without restore progress before falling back.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = humantime::parse_duration)]
    pub after: std::time::Duration,
    /// A shell command that restarts CometBFT after the edit (e.g.
    /// "systemctl restart cometbft"); without it, restart CometBFT yourself.
    #[arg(long, value_name = "COMMAND")]
    pub then: Option<String>,
}

pub fn join_fallback(args: FallbackArgs) -> anyhow::Result<()> {
    use statesnap_harness::fallback::{disable_state_sync, watch, Verdict, Watch};
    let config = args.cometbft_home.join("config").join("config.toml");
    anyhow::ensure!(
        config.is_file(),
        "{} not found: give CometBFT's home with --cometbft-home",
        config.display()
    );
    let w = Watch {
        rpc: statesnap_harness::rpc::RpcClient::new(&args.rpc),
        metrics_url: (!args.metrics.is_empty()).then(|| args.metrics.clone()),
        patience: args.after,
        every: std::time::Duration::from_secs(1),
    };
    match watch(&w, |line| eprintln!("statesnap: {line}"))? {
        Verdict::Synced { height } => {
            println!("the node has blocks (height {height}): nothing to do");
            Ok(())
        }
        Verdict::NoSnapshot { waited } => {
            disable_state_sync(&args.cometbft_home)?;
            println!(
                "no usable snapshot and no restore progress for {}: set [statesync] enable = false in {}",
                humantime::format_duration(std::time::Duration::from_secs(waited.as_secs())),
                config.display()
            );
            match args.then {
                Some(cmd) => {
                    let status = std::process::Command::new("sh")
                        .arg("-c")
                        .arg(&cmd)
                        .status()
                        .with_context(|| format!("running {cmd:?}"))?;
                    anyhow::ensure!(status.success(), "{cmd:?} failed ({status}): restart CometBFT yourself");
                    println!("ran {cmd:?}: the node now joins by block sync from genesis");
                }
                None => println!("restart CometBFT (statesnap may keep running): it joins by block sync from genesis"),
            }
            Ok(())
        }
    }
}

pub fn start(args: StartArgs, plugins: &PluginArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.home).with_context(|| format!("creating {}", args.home.display()))?;
    if !args.home.join(CONFIG_FILE).exists() {
        NodeConfig::default().write(&args.home)?;
        eprintln!(
            "statesnap: wrote a default configuration to {}",
            args.home.join(CONFIG_FILE).display()
        );
    }
    let mut config = NodeConfig::load(&args.home)?;
    if let Some(a) = args.abci {
        config.abci_listen = a;
    }
    if let Some(m) = args.metrics {
        config.metrics_listen = m;
    }
    let abci_addr = config.abci_listen.trim_start_matches("tcp://").to_string();
    let metrics = Arc::new(Metrics::new());
    if !config.metrics_listen.is_empty() {
        metrics.serve(&config.metrics_listen)?;
    }
    let _publisher = super::snapshot_publisher(
        &config.snapshot_publish,
        statesnap::node::snapshots_dir(&args.home),
        &metrics,
    )?;
    #[cfg(not(feature = "test-hooks"))]
    let node = Node::open(&args.home, config, plugins.registry()?, metrics)?;
    #[cfg(feature = "test-hooks")]
    let node = Node::open_with_hooks(
        &args.home,
        config,
        plugins.registry()?,
        metrics,
        statesnap::node::TestHooks {
            corrupt_chunks: args.faults.test_corrupt_chunks,
            chunk_delay_ms: args.faults.test_chunk_delay_ms,
            forge_approvals: args.faults.test_forge_approvals,
            panic_snapshot_at: None,
            forge_states: args.faults.test_forge_states,
        },
    )?;
    let node = Arc::new(node);
    stop_cleanly_on_signals(node.clone())?;
    let server = tendermint_abci::ServerBuilder::default()
        .bind(&abci_addr, AbciApp::new(node))
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("listening for CometBFT on {abci_addr} (is the port in use? set abci_listen)"))?;
    tracing::info!(addr = %abci_addr, "node: waiting for CometBFT");
    eprintln!("statesnap: ABCI application listening on {abci_addr}");
    server
        .listen()
        .map_err(|e| anyhow::anyhow!("the ABCI server stopped: {e}"))
}

/// On SIGTERM or SIGINT: save the state and its Merkle treap (a fast next start),
/// then exit. A second signal while saving exits at once.
fn stop_cleanly_on_signals(node: Arc<Node>) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT]).context("installing signal handlers")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                tracing::info!(signal, "node: stopping");
                std::thread::spawn(move || {
                    if signals.forever().next().is_some() {
                        std::process::exit(130);
                    }
                });
                let code = match node.shutdown() {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!("statesnap: saving the state on the way out failed: {e:#}");
                        1
                    }
                };
                std::process::exit(code);
            }
        })
        .context("starting the signal thread")?;
    Ok(())
}
