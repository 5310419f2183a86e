//! `statesnap start`: run the node as CometBFT's ABCI application.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use statesnap::abci::AbciApp;
use statesnap::node::{config::CONFIG_FILE, Metrics, Node, NodeConfig, TestHooks};

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
    /// Test only: serve every snapshot chunk corrupted.
    #[arg(long, hide = true)]
    pub test_corrupt_chunks: bool,
    /// Test only: wait this many milliseconds before applying each restored chunk.
    #[arg(long, hide = true, default_value_t = 0)]
    pub test_chunk_delay_ms: u64,
    /// Test only: advertise self-describing snapshots with forged approvals.
    #[arg(long, hide = true)]
    pub test_forge_approvals: bool,
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
    let hooks = TestHooks {
        corrupt_chunks: args.test_corrupt_chunks,
        chunk_delay_ms: args.test_chunk_delay_ms,
        forge_approvals: args.test_forge_approvals,
        panic_snapshot_at: None,
    };
    let node = Arc::new(Node::open(&args.home, config, plugins.registry()?, metrics, hooks)?);
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

/// On SIGTERM or SIGINT: save the state and its index (a fast next start),
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
