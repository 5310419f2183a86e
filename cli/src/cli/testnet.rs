//! `statesnap testnet …`: local CometBFT networks (see `statesnap_harness::testnet`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;

use statesnap::store::StoreKind;
use statesnap_harness::fallback::Verdict;
use statesnap_harness::testnet::{AppKind, CometBftRelease, JoinOptions, Testnet, TestnetOptions};
use statesnap_harness::xian::{ProxyOptions, XianNet, XianNetOptions};

/// The file that marks a directory as a Xian network (`statesnap_harness::xian`).
const XIAN_NET_FILE: &str = "xian-net.json";

/// The ABCI app of `testnet start --app`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AppChoice {
    /// `statesnap start`, over ABCI on TCP.
    Statesnap,
    /// CometBFT's built-in in-memory key/value app (no statesnap process).
    Kvstore,
    /// Xian's own node (xian-abci 0.9.3 in the root file system of
    /// scripts/install-xian.sh) on CometBFT v0.39.3, from the project's
    /// genesis bundle; the snapshot and store options do not apply.
    Xian,
}

/// How long `start` waits for every node to commit block 1.
const FIRST_BLOCK_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Subcommand, Debug)]
pub enum TestnetCommand {
    /// Initialise DIR (when it is new) and start every node; waits for block 1.
    Start {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Number of validators (for a new DIR).
        #[arg(long, value_name = "N", default_value_t = TestnetOptions::default().validators)]
        validators: usize,
        #[arg(long, default_value_t = TestnetOptions::default().chain_id)]
        chain_id: String,
        /// Node i listens on BASE+10i .. BASE+10i+4 (p2p, rpc, abci, metrics, prometheus).
        #[arg(long, value_name = "PORT", default_value_t = TestnetOptions::default().base_port)]
        base_port: u16,
        /// Take a snapshot every N blocks (0: never).
        #[arg(long, value_name = "N", default_value_t = TestnetOptions::default().snapshot_interval)]
        snapshot_interval: u64,
        /// Keep this many most recent snapshots.
        #[arg(long, value_name = "N", default_value_t = TestnetOptions::default().snapshot_keep_recent)]
        keep_recent: u32,
        /// Snapshot format plugin: a built-in name or a .wasm file.
        #[arg(long, value_name = "NAME|FILE", default_value_t = TestnetOptions::default().snapshot_plugin)]
        snapshot_plugin: String,
        /// A snapshot plugin parameter (repeatable).
        #[arg(long = "param", value_name = "K=V", value_parser = super::parse_param)]
        params: Vec<(String, String)>,
        /// The pause between blocks (CometBFT's timeout_commit), e.g. 500ms or 2s.
        #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = humantime::parse_duration)]
        block_time: Duration,
        /// Generate a Xian-like state of N keys and import it at genesis.
        #[arg(long, value_name = "N", default_value_t = 0)]
        genesis_keys: u64,
        /// The ABCI app: statesnap, CometBFT's built-in kvstore (no statesnap
        /// process), or xian (Xian's real node).
        #[arg(long, value_enum, default_value_t = AppChoice::Statesnap)]
        app: AppChoice,
        /// The validators' state store: lmdb (Xian's current layout) or hdf5.
        #[arg(long, value_name = "lmdb|hdf5", default_value = "lmdb")]
        store: StoreKind,
        /// The CometBFT release the nodes run (0.39: v0.39.3, 0.38: v0.38.26).
        #[arg(long, value_enum, default_value = "0.39")]
        cometbft: CometBftRelease,
        /// Put `statesnap proxy` between each CometBFT and its statesnap app
        /// (on a unix socket), as in front of Xian's node.
        #[arg(long)]
        proxy: bool,
        /// With --app xian: a configs directory in Xian's layout
        /// (contracts/contracts_statesnap.json and its *.s.py) instead of the
        /// project's genesis bundle.
        #[arg(long, value_name = "DIR")]
        xian_configs: Option<PathBuf>,
    },
    /// Stop every node of DIR.
    Stop {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Per node: running?, height, app hash, catching up, peers.
    Status {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Add a full node that joins by state sync (or block sync) and start it.
    Join {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Its name (default: the next nodeN).
        #[arg(long)]
        name: Option<String>,
        /// Replay every block from genesis instead of restoring a snapshot.
        #[arg(long)]
        block_sync: bool,
        /// Its state store (default: the validators').
        #[arg(long, value_name = "lmdb|hdf5")]
        store: Option<StoreKind>,
        /// Wait for the node to sync; if it goes this long with no block and
        /// no restore progress (no usable snapshot), restart it by block sync.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, conflicts_with = "block_sync")]
        block_sync_after: Option<Duration>,
    },
}

pub fn run(cmd: TestnetCommand) -> anyhow::Result<()> {
    match cmd {
        TestnetCommand::Start {
            dir,
            validators,
            chain_id,
            base_port,
            snapshot_interval,
            keep_recent,
            snapshot_plugin,
            params,
            block_time,
            genesis_keys,
            app,
            store,
            cometbft,
            proxy,
            xian_configs,
        } => {
            let app = match app {
                AppChoice::Statesnap => AppKind::Statesnap,
                AppChoice::Kvstore => AppKind::Kvstore,
                AppChoice::Xian => {
                    // Every validator's xian-abci behind its statesnap proxy,
                    // which snapshots with the plugin and parameters given.
                    let mut extra_args = vec!["--plugin".to_string(), snapshot_plugin];
                    for (k, v) in params {
                        extra_args.extend(["--param".to_string(), format!("{k}={v}")]);
                    }
                    let opts = XianNetOptions {
                        validators,
                        chain_id,
                        base_port,
                        block_time_ms: block_time.as_millis().try_into().unwrap_or(u64::MAX),
                        genesis_keys,
                        configs: xian_configs,
                        statesnap: Some(ProxyOptions {
                            statesnap_bin: std::env::current_exe().context("finding the statesnap executable")?,
                            snapshot_interval,
                            snapshot_keep_recent: keep_recent,
                            extra_args,
                            node_args: Vec::new(),
                            without_proxy: Vec::new(),
                        }),
                        ..XianNetOptions::default()
                    };
                    return start_xian(&dir, &opts);
                }
            };
            if dir.join(XIAN_NET_FILE).is_file() {
                return start_xian(&dir, &XianNetOptions::default());
            }
            let net = if dir.join("testnet.json").is_file() {
                eprintln!("using the existing testnet in {} (its options are kept)", dir.display());
                Testnet::open(&dir)?
            } else {
                let opts = TestnetOptions {
                    validators,
                    chain_id,
                    base_port,
                    snapshot_interval,
                    snapshot_keep_recent: keep_recent,
                    snapshot_plugin,
                    snapshot_params: params.into_iter().collect::<BTreeMap<_, _>>(),
                    block_time,
                    genesis_keys,
                    app,
                    store,
                    cometbft,
                    proxy,
                    statesnap_bin: std::env::current_exe().context("finding the statesnap executable")?,
                    ..TestnetOptions::default()
                };
                eprintln!("initialising a testnet of {validators} validators in {}", dir.display());
                Testnet::init(&dir, &opts)?
            };
            net.start_all()?;
            let mut heights = BTreeMap::new();
            for node in net.nodes() {
                let height = net
                    .wait_for_height(&node.name, 1, FIRST_BLOCK_TIMEOUT)
                    .with_context(|| {
                        format!(
                            "the nodes are running; stop them with `statesnap testnet stop --dir {}`",
                            net.dir().display()
                        )
                    })?;
                heights.insert(node.name.clone(), height);
            }
            emit(&format!(
                "{}\nstop it with: statesnap testnet stop --dir {}\n",
                table(&net, &heights),
                net.dir().display()
            ));
        }
        TestnetCommand::Stop { dir } if dir.join(XIAN_NET_FILE).is_file() => {
            let net = XianNet::open(&dir)?;
            net.stop()?;
            emit(&format!("stopped every node of {}\n", net.dir().display()));
        }
        TestnetCommand::Status { dir } if dir.join(XIAN_NET_FILE).is_file() => {
            emit(&xian_status(&XianNet::open(&dir)?)?)
        }
        TestnetCommand::Stop { dir } => {
            let net = Testnet::open(&dir)?;
            net.stop_all()?;
            emit(&format!("stopped every node of {}\n", net.dir().display()));
        }
        TestnetCommand::Status { dir } => emit(&status(&Testnet::open(&dir)?)),
        TestnetCommand::Join {
            dir,
            name,
            block_sync,
            store,
            block_sync_after,
        } => {
            if dir.join(XIAN_NET_FILE).is_file() {
                anyhow::ensure!(
                    name.is_none() && store.is_none() && block_sync_after.is_none(),
                    "a Xian network's joiner takes only --block-sync (its name is the next nodeN, its store Xian's LMDB)"
                );
                return join_xian(&dir, !block_sync);
            }
            let mut net = Testnet::open(&dir)?;
            let name = name.unwrap_or_else(|| net.next_node_name());
            let join = JoinOptions {
                state_sync: !block_sync,
                trust_from: first_running_validator(&net)?,
                store,
                ..JoinOptions::default()
            };
            let node = net.add_node(&name, &join)?.clone();
            net.start_node(&name, &[])?;
            let mut text = format!(
                "{} joined by {}\n  rpc      {}\n",
                node.name,
                node.role(),
                node.rpc_url()
            );
            if net.options().app == AppKind::Statesnap {
                text += &format!("  metrics  {}\n", node.metrics_url());
            }
            text += &format!("  logs     {}\n", node.cometbft_log.display());
            text += &format!(
                "watch it with: statesnap testnet status --dir {}\n",
                net.dir().display()
            );
            emit(&text);
            if let Some(patience) = block_sync_after {
                emit(&format!(
                    "waiting for {name} to sync (block sync after {} without a snapshot)\n",
                    humantime::format_duration(patience)
                ));
                match net.join_or_fall_back(&name, patience, |line| eprintln!("{name}: {line}"))? {
                    Verdict::Synced { height } => emit(&format!("{name} is syncing, at height {height}\n")),
                    Verdict::NoSnapshot { waited } => emit(&format!(
                        "{name}: no usable snapshot in {}; restarted with state sync off: it joins by block sync from genesis\n",
                        humantime::format_duration(Duration::from_secs(waited.as_secs()))
                    )),
                }
            }
        }
    }
    Ok(())
}

/// `testnet start --app xian`: a new Xian network in `dir` (or the one there), started.
fn start_xian(dir: &std::path::Path, opts: &XianNetOptions) -> anyhow::Result<()> {
    let net = if dir.join(XIAN_NET_FILE).is_file() {
        eprintln!(
            "using the existing Xian network in {} (its options are kept)",
            dir.display()
        );
        XianNet::open(dir)?
    } else {
        eprintln!(
            "initialising a Xian network of {} validators in {}",
            opts.validators,
            dir.display()
        );
        XianNet::init(dir, opts)?
    };
    net.start()?;
    emit(&format!(
        "{}\nthe founder's key (holds the genesis supply): {}\nstop it with: statesnap testnet stop --dir {}\n",
        xian_status(&net)?,
        net.founder_private_key(),
        net.dir().display()
    ));
    Ok(())
}

/// `testnet join` on a Xian network: a full node behind its own proxy,
/// joining by state sync (or block sync); waits until it has caught up.
fn join_xian(dir: &std::path::Path, state_sync: bool) -> anyhow::Result<()> {
    let mut net = XianNet::open(dir)?;
    let index = net.add_node(state_sync)?;
    net.start_node(index)?;
    let node = net.node(index).clone();
    eprintln!("{} started; waiting for it to catch up", node.name);
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    loop {
        if let Ok(s) = node.rpc().status() {
            if !s.catching_up && s.latest_block_height > 0 {
                break;
            }
        }
        let (cometbft, app) = node.running(net.supervisor())?;
        anyhow::ensure!(
            cometbft && app,
            "{} stopped while catching up\n{}",
            node.name,
            node.log_tails()
        );
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "{} did not catch up within 10 minutes\n{}",
            node.name,
            node.log_tails()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    emit(&xian_status(&net)?);
    Ok(())
}

fn xian_status(net: &XianNet) -> anyhow::Result<String> {
    let mut text = format!(
        "{:<8} {:<9} {:<9} {:<24} {:>7} {:<10}\n",
        "node", "xian-abci", "cometbft", "rpc", "height", "app hash"
    );
    let word = |up: bool| if up { "running" } else { "stopped" };
    for node in net.nodes() {
        let (cometbft, app) = node.running(net.supervisor())?;
        let status = node.rpc().status().ok().filter(|_| cometbft);
        let (height, hash): (String, String) = match &status {
            Some(s) => (
                s.latest_block_height.to_string(),
                hex::encode(&s.latest_app_hash).chars().take(8).collect(),
            ),
            None => ("-".into(), "-".into()),
        };
        text += &format!(
            "{:<8} {:<9} {:<9} {:<24} {:>7} {:<10}\n",
            node.name,
            word(app),
            word(cometbft),
            node.rpc_url(),
            height,
            hash
        );
    }
    let app_log = if net.options().statesnap.is_some() {
        "proxy (with xian-abci's output)"
    } else {
        "xian-abci"
    };
    text += &format!(
        "\nlogs: {}/<node>/{{cometbft,{app_log}}}.log; state (a statesnap --home): {}/<node>/.cometbft/xian\n",
        net.dir().display(),
        net.dir().display()
    );
    Ok(text)
}

/// The validator a joining node takes its trust height from.
fn first_running_validator(net: &Testnet) -> anyhow::Result<String> {
    net.nodes()
        .iter()
        .find(|n| n.validator && net.is_running(&n.name).1)
        .map(|n| n.name.clone())
        .with_context(|| {
            format!(
                "no validator of {} is running: start the testnet first (`statesnap testnet start --dir {0}`)",
                net.dir().display()
            )
        })
}

/// Writes to stdout; a closed pipe (`… | head`) is not an error.
fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

fn table(net: &Testnet, heights: &BTreeMap<String, u64>) -> String {
    let metrics = net.options().app == AppKind::Statesnap;
    let mut text = format!(
        "{:<8} {:<11} {:<24} {:<32} {:>6}\n",
        "node", "role", "rpc", "metrics", "height"
    );
    for node in net.nodes() {
        let metrics_url = if metrics { node.metrics_url() } else { "-".into() };
        let height = heights.get(&node.name).map_or("-".into(), u64::to_string);
        text += &format!(
            "{:<8} {:<11} {:<24} {:<32} {:>6}\n",
            node.name,
            node.role(),
            node.rpc_url(),
            metrics_url,
            height
        );
    }
    text
}

fn status(net: &Testnet) -> String {
    let mut text = format!(
        "{:<8} {:<11} {:<9} {:<9} {:>7} {:<10} {:<9} {:>5}\n",
        "node", "role", "app", "cometbft", "height", "app hash", "catching", "peers"
    );
    let uses_app = net.options().app == AppKind::Statesnap;
    for node in net.nodes() {
        let (app, cometbft) = net.is_running(&node.name);
        let word = |up: bool| if up { "running" } else { "stopped" };
        let app_word = if uses_app { word(app) } else { "kvstore" };
        let rpc = net.rpc(&node.name).ok().filter(|_| cometbft);
        let status = rpc.as_ref().and_then(|r| r.status().ok());
        let peers = rpc.as_ref().and_then(|r| r.peer_count().ok());
        let (height, hash, catching): (String, String, String) = match &status {
            Some(s) => (
                s.latest_block_height.to_string(),
                hex::encode(&s.latest_app_hash).chars().take(8).collect(),
                s.catching_up.to_string(),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        text += &format!(
            "{:<8} {:<11} {:<9} {:<9} {:>7} {:<10} {:<9} {:>5}\n",
            node.name,
            node.role(),
            app_word,
            word(cometbft),
            height,
            hash,
            catching,
            peers.map_or("-".into(), |p| p.to_string())
        );
    }
    text += &format!("\nlogs: {}/<node>/{{cometbft,statesnap}}.log\n", net.dir().display());
    text
}
