//! `statesnap proxy`: statesnap in front of another ABCI app (Xian's node):
//! arguments to a `statesnap::proxy::Proxy`, and signals to a clean stop.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use statesnap::node::Metrics;
use statesnap::proxy::app_process::AppProcess;
use statesnap::proxy::endpoint::Endpoint;
use statesnap::proxy::wire::DEFAULT_MAX_FRAME_BYTES;
use statesnap::proxy::xian_calls::XianCalls;
use statesnap::proxy::xian_snapshots::{XianSnapshotSettings, XianSnapshots};
use statesnap::proxy::{Handler, Passthrough, Proxy, ProxySettings};

use super::{parse_param, PluginArgs};

#[derive(Args, Debug)]
pub struct ProxyArgs {
    /// Where CometBFT connects (its `proxy_app`): unix://PATH or tcp://HOST:PORT.
    #[arg(long, value_name = "ADDR", value_parser = parse_endpoint)]
    pub listen: Endpoint,
    /// The app's own ABCI socket: unix://PATH or tcp://HOST:PORT.
    #[arg(long, value_name = "ADDR", value_parser = parse_endpoint)]
    pub app: Endpoint,
    /// Xian's storage home (the directory holding lmdb/, ~/.cometbft/xian for
    /// Xian's node): the proxy snapshots it and restores into it. Without
    /// it the proxy only forwards.
    #[arg(long, value_name = "DIR")]
    pub xian_home: Option<PathBuf>,
    /// The chain id written into snapshot manifests (CometBFT's genesis chain_id).
    #[arg(long, value_name = "ID")]
    pub chain_id: Option<String>,
    /// Where statesnap's snapshots go (default: DIR/statesnap-snapshots beside --xian-home).
    #[arg(long, value_name = "DIR")]
    pub snapshot_dir: Option<PathBuf>,
    /// Take a snapshot every this many blocks (0: never).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub snapshot_interval: u64,
    /// Keep the snapshots of this many of the newest heights.
    #[arg(long, value_name = "K", default_value_t = 2)]
    pub snapshot_keep_recent: u32,
    /// The format plugin snapshots are made with (a built-in name, or a file).
    #[arg(long, value_name = "PLUGIN", default_value = "zstd")]
    pub plugin: String,
    /// A plugin parameter (repeatable).
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
    /// Serve Prometheus metrics here (HOST:PORT).
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics: Option<String>,
    /// Publish every snapshot made to s3://BUCKET/PREFIX or file:///DIR, in the
    /// background with retries (S3 endpoint and credentials from AWS_ENDPOINT_URL,
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).
    #[arg(long, value_name = "URL")]
    pub snapshot_publish: Option<String>,
    /// The largest ABCI message accepted from either side, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = (DEFAULT_MAX_FRAME_BYTES >> 20) as u64)]
    pub max_message_mib: u64,
    /// How long to keep trying to reach the app while it starts.
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = humantime::parse_duration)]
    pub app_patience: Duration,
    /// Run the app: start this command, restart it when it exits and after a
    /// restore, stop it on exit. Everything after --run is the command.
    #[arg(long, value_name = "CMD", num_args = 1.., allow_hyphen_values = true, trailing_var_arg = true)]
    pub run: Vec<String>,
    #[cfg(feature = "test-hooks")]
    #[command(flatten)]
    pub faults: ProxyFaultArgs,
}

/// Faults for tests to watch peers refuse (feature `test-hooks`: only in
/// binaries the test command builds, never in a release build).
#[cfg(feature = "test-hooks")]
#[derive(Args, Debug)]
pub struct ProxyFaultArgs {
    /// Test only: build snapshots of a forged state claiming the real app hash.
    #[arg(long)]
    pub test_forge_states: bool,
    /// Test only: serve every snapshot chunk corrupted.
    #[arg(long)]
    pub test_corrupt_chunks: bool,
    /// Test only: wait this many milliseconds before applying each restored chunk.
    #[arg(long, default_value_t = 0)]
    pub test_chunk_delay_ms: u64,
}

fn parse_endpoint(s: &str) -> Result<Endpoint, String> {
    s.parse()
}

pub fn run(args: ProxyArgs, plugins: &PluginArgs) -> anyhow::Result<()> {
    let settings = ProxySettings {
        listen: args.listen.clone(),
        app: args.app.clone(),
        max_frame_bytes: (args.max_message_mib as usize) << 20,
        app_patience: args.app_patience,
    };
    let metrics = Arc::new(Metrics::new());
    if let Some(addr) = &args.metrics {
        metrics.serve(addr)?;
    }
    if let Some(home) = &args.xian_home {
        // A restore killed between its two renames left the home aside:
        // put it back (or finish the swap) before the app opens it.
        statesnap::snapshot::recover_interrupted_swap(home)
            .with_context(|| format!("recovering {} after an interrupted restore", home.display()))?;
    }
    let socket = Arc::new(statesnap::proxy::AppSocket::new(args.app.clone(), args.app_patience));
    let app = if args.run.is_empty() {
        None
    } else {
        Some(AppProcess::start(args.run.clone(), socket.clone())?)
    };
    let mut publisher = None;
    let handler: Arc<dyn Handler> = match &args.xian_home {
        None => Arc::new(Passthrough),
        Some(home) => {
            let chain_id = args
                .chain_id
                .clone()
                .context("--xian-home needs --chain-id (the chain id in CometBFT's genesis)")?;
            let mut registry = plugins.registry()?;
            let plugin = registry.resolve(&args.plugin)?;
            let params = plugin
                .resolve_params(&args.params)
                .with_context(|| format!("--param for plugin {}", plugin.label()))?;
            let home = std::path::absolute(home)?;
            let dir = match &args.snapshot_dir {
                Some(d) => d.clone(),
                None => home
                    .parent()
                    .context("--xian-home has no parent directory: give --snapshot-dir")?
                    .join("statesnap-snapshots"),
            };
            if let Some(to) = &args.snapshot_publish {
                publisher = super::snapshot_publisher(to, dir.clone(), &metrics)?;
            }
            #[allow(unused_mut)]
            let mut snapshots = XianSnapshots::new(
                XianSnapshotSettings {
                    home,
                    dir,
                    interval: args.snapshot_interval,
                    keep_recent: args.snapshot_keep_recent,
                    plugin,
                    params,
                    chain_id,
                },
                metrics.clone(),
            )?;
            #[cfg(feature = "test-hooks")]
            snapshots.set_hooks(statesnap::node::TestHooks {
                forge_states: args.faults.test_forge_states,
                corrupt_chunks: args.faults.test_corrupt_chunks,
                ..Default::default()
            });
            let snapshots = Arc::new(snapshots);
            #[allow(unused_mut)]
            let mut calls = XianCalls::new(snapshots, Arc::new(registry), metrics, app.clone());
            #[cfg(feature = "test-hooks")]
            calls.set_chunk_delay_ms(args.faults.test_chunk_delay_ms);
            Arc::new(calls)
        }
    };
    if args.snapshot_publish.is_some() && publisher.is_none() {
        anyhow::bail!("--snapshot-publish needs --xian-home: without it the proxy takes no snapshots");
    }
    let proxy = Proxy::with_socket(&settings, socket, handler)?;
    stop_app_on_signals(app)?;
    eprintln!(
        "statesnap: proxy listening on {} for the app at {}",
        settings.listen, settings.app
    );
    proxy.serve()
}

/// On SIGTERM or SIGINT: stop the supervised app, then exit.
fn stop_app_on_signals(app: Option<Arc<AppProcess>>) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT]).context("installing signal handlers")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                tracing::info!(signal, "proxy: stopping");
                if let Some(app) = app {
                    app.shutdown();
                }
                std::process::exit(0);
            }
        })
        .context("starting the signal thread")?;
    Ok(())
}
