//! `statesnap join`: a new node starts at a published snapshot's height,
//! its state fetched from anywhere and checked against the light client's
//! app hash, CometBFT bootstrapped to match; no p2p state sync.

use std::path::PathBuf;

use clap::Args;

use statesnap_harness::progress;
use statesnap_transport::bootstrap::find_bootstrap_tool;
use statesnap_transport::join::{join, JoinApp, JoinPlan};

use super::snapshot::{locations, SourceArgs};
use super::trust::TrustArgs;
use super::PluginArgs;

#[derive(Args, Debug)]
pub struct JoinArgs {
    /// Where the snapshot is published: s3://BUCKET/PREFIX, http(s)://HOST/PATH
    /// or a published directory; given again, mirrors of it.
    #[arg(long, required = true)]
    from: Vec<String>,
    #[command(flatten)]
    trust: TrustArgs,
    /// The new node's CometBFT home (`cometbft init`, the chain's genesis and
    /// peers in place, never started).
    #[arg(long, value_name = "DIR")]
    cometbft_home: PathBuf,
    /// The app's home: statesnap's node home, or for `--app xian` Xian's
    /// storage home (the directory holding lmdb/, the proxy's --xian-home).
    #[arg(long, value_name = "DIR")]
    home: PathBuf,
    /// The application the node runs.
    #[arg(long, value_enum, default_value_t = JoinApp::Statesnap)]
    app: JoinApp,
    /// The CometBFT binary the node runs: the bootstrap tool built for its
    /// release is taken from beside it (default: $STATESNAP_COMETBFT_BOOTSTRAP,
    /// then the installed ones, then PATH).
    #[arg(long, value_name = "BIN")]
    cometbft: Option<PathBuf>,
    #[command(flatten)]
    source: SourceArgs,
}

pub fn run(a: &JoinArgs, plugins: &PluginArgs) -> anyhow::Result<()> {
    let spec = a
        .trust
        .spec()?
        .ok_or_else(|| anyhow::anyhow!("a join takes its app hash from the light client: give --trust-rpc URL,URL"))?;
    let sources = locations(a.from.iter())?;
    let tool = find_bootstrap_tool(a.cometbft.as_deref())?;
    let registry = plugins.registry()?;
    let bar = progress::byte_bar("restoring");
    let plan = JoinPlan {
        sources: &sources,
        height: a.source.height,
        format: a.source.format,
        trust: &spec,
        app: a.app,
        home: &a.home,
        cometbft_home: &a.cometbft_home,
        bootstrap_tool: &tool,
        // The join keeps its download beside the home it restores into.
        fetch: a.source.fetch_options(None),
    };
    let report = join(&plan, &registry, &bar)?;
    bar.finish_and_clear();
    eprintln!(
        "statesnap: the node is ready at height {}: start {} and CometBFT (`cometbft start --home {}`); it block-syncs from there",
        report.height,
        match a.app {
            JoinApp::Statesnap => format!("`statesnap start --home {}`", a.home.display()),
            JoinApp::Xian => "the proxy and Xian's node".to_string(),
        },
        a.cometbft_home.display()
    );
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
