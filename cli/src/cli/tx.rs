//! `statesnap tx …`: sending signed state-patch transactions to a node, one
//! patch or a steady load.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine as _;
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use statesnap::protocol::account_key;
use statesnap::protocol::tx::{check_patch, Action, Op, Tx, TxBody};
use statesnap_harness::load::{fetch_nonce, run_load, LoadConfig, LoadStats, RpcSubmitter, SystemClock};
use statesnap_harness::rpc::RpcClient;
use statesnap_harness::xian::{XianLoadConfig, XianNet};

#[derive(Subcommand, Debug)]
pub enum TxCommand {
    /// Sign a state patch with a key file and broadcast it (CheckTx result as one JSON line).
    Patch(PatchArgs),
    /// Send typical Xian writes from a pool of deterministic accounts at a steady rate
    /// (state patches to statesnap nodes; with --xian DIR, signed Xian transfers to Xian's node).
    Load(LoadArgs),
}

#[derive(Args, Debug)]
pub struct PatchArgs {
    /// The node's RPC address, e.g. http://127.0.0.1:26657.
    #[arg(long)]
    rpc: String,
    /// The account's key file (CometBFT priv_validator_key.json format).
    #[arg(long)]
    key: PathBuf,
    /// Write STORED (Xian stored JSON text) under KEY. Repeatable.
    #[arg(long = "set", value_name = "KEY=STORED", value_parser = parse_set)]
    sets: Vec<(String, String)>,
    /// Remove KEY. Repeatable.
    #[arg(long = "delete", value_name = "KEY")]
    deletes: Vec<String>,
    /// Chain id (default: the node's, from /status).
    #[arg(long)]
    chain_id: Option<String>,
    /// Nonce (default: the account's next nonce, queried from the node).
    #[arg(long)]
    nonce: Option<u64>,
    /// Also wait until the transaction is in a block and report its result.
    #[arg(long)]
    wait: bool,
    /// Give up waiting after this long (with --wait).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    wait_timeout: Duration,
    /// Send even if the patch breaks the stateless rules (to test a node's refusals).
    #[arg(long)]
    skip_local_checks: bool,
}

#[derive(Args, Debug)]
pub struct LoadArgs {
    /// RPC addresses, comma-separated; each account always uses the same one.
    #[arg(
        long,
        value_delimiter = ',',
        required_unless_present = "xian",
        conflicts_with = "xian"
    )]
    rpc: Vec<String>,
    /// A Xian network made by `testnet start --app xian`: send signed
    /// `currency.transfer`s (Xian's SDK) through every node, from --accounts
    /// senders the founder funds first, each transfer to a new account.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["workers", "chain_id"])]
    xian: Option<PathBuf>,
    /// Transactions per second.
    #[arg(long)]
    rate: f64,
    /// How long to run, e.g. 30s or 2m.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Accounts in the pool.
    #[arg(long, default_value_t = 50)]
    accounts: usize,
    /// Seed of the account keys and the transaction contents.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Concurrent broadcasts per RPC address.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Chain id (default: the first node's, from /status).
    #[arg(long)]
    chain_id: Option<String>,
}

pub fn run(cmd: TxCommand) -> anyhow::Result<()> {
    match cmd {
        TxCommand::Patch(a) => patch(a),
        TxCommand::Load(a) => load(a),
    }
}

fn patch(a: PatchArgs) -> anyhow::Result<()> {
    let key = account_key::read(&a.key)?;
    let mut ops: Vec<Op> = a
        .sets
        .into_iter()
        .map(|(key, stored)| Op::Set { key, stored })
        .collect();
    ops.extend(a.deletes.into_iter().map(|key| Op::Delete { key }));
    if ops.is_empty() {
        bail!("nothing to do: give at least one --set KEY=STORED or --delete KEY");
    }
    if !a.skip_local_checks {
        check_patch(&ops)?; // before any network call
    }
    let rpc = RpcClient::new(&a.rpc);
    let chain_id = match a.chain_id {
        Some(id) => id,
        None => {
            rpc.status()
                .context("finding the chain id (or give --chain-id)")?
                .chain_id
        }
    };
    let account = key.verifying_key().to_bytes();
    let nonce = match a.nonce {
        Some(n) => n,
        None => fetch_nonce(&rpc, &account).context("finding the account's nonce (or give --nonce)")?,
    };
    let body = TxBody {
        chain_id: chain_id.clone(),
        account,
        nonce,
        action: Action::Patch(ops),
    };
    let tx = Tx::sign(body, &key)?;
    if !a.skip_local_checks {
        tx.validate(&chain_id)?;
    }
    let r = rpc.broadcast_tx_sync(tx.bytes())?;
    let mut line = json!({
        "hash": hex::encode(tx.hash()),
        "code": r.code,
        "log": r.log,
        "account": tx.account_hex(),
        "nonce": nonce,
    });
    if r.code != 0 {
        println!("{line}");
        bail!(
            "the node refused the transaction in CheckTx (code {}): {}",
            r.code,
            or_no_log(&r.log)
        );
    }
    if a.wait {
        let InBlock { height, code, log } = wait_for(&rpc, tx.bytes(), a.wait_timeout)?;
        line["height"] = json!(height);
        line["exec_code"] = json!(code);
        line["exec_log"] = json!(log);
        println!("{line}");
        if code != 0 {
            bail!(
                "the transaction is in block {height} but failed (code {code}): {}",
                or_no_log(&log)
            );
        }
    } else {
        println!("{line}");
    }
    Ok(())
}

/// A transaction in a block: the block's height and the transaction's
/// execution result there.
pub(super) struct InBlock {
    pub(super) height: u64,
    /// 0: executed; else the code it was refused with.
    pub(super) code: u64,
    pub(super) log: String,
}

/// Polls `/tx` until the transaction `tx` is in a block. Every few seconds it also asks the node to check the
/// transaction again (`/check_tx`): a transaction the mempool dropped on a
/// recheck (a proposal that expired meanwhile, say) never reaches a block,
/// and its refusal is reported instead of waiting out the timeout.
pub(super) fn wait_for(rpc: &RpcClient, tx: &[u8], timeout: Duration) -> anyhow::Result<InBlock> {
    let start = Instant::now();
    let hash: [u8; 32] = Sha256::digest(tx).into();
    // JSON-RPC (POST) takes byte parameters as base64; only the GET form takes 0x-hex.
    let b64 = base64::engine::general_purpose::STANDARD;
    let params = json!({"hash": b64.encode(hash), "prove": false});
    let mut last_recheck = Instant::now();
    loop {
        match rpc.call("tx", params.clone()) {
            Ok(r) => {
                let height = match &r["height"] {
                    Value::String(s) => s.parse().ok(),
                    v => v.as_u64(),
                }
                .with_context(|| format!("/tx on {}: no block height in {r}", rpc.url()))?;
                let result = &r["tx_result"];
                let log = result["log"].as_str().unwrap_or_default().to_string();
                return Ok(InBlock {
                    height,
                    code: result["code"].as_u64().unwrap_or(0),
                    log,
                });
            }
            Err(e) if format!("{e:#}").contains("not found") => {}
            Err(e) => return Err(e),
        }
        if last_recheck.elapsed() >= RECHECK_EVERY {
            last_recheck = Instant::now();
            if let Ok(r) = rpc.call("check_tx", json!({"tx": b64.encode(tx)})) {
                let code = r["code"].as_u64().unwrap_or(0);
                // A bad nonce may just mean it was committed since the /tx call.
                if code != 0 && code != u64::from(statesnap::protocol::tx::code::BAD_NONCE) {
                    bail!(
                        "transaction {} was accepted, but the node now refuses it (code {code}): {}; \
                         it was dropped from the mempool and will not be in a block",
                        hex::encode(hash),
                        or_no_log(r["log"].as_str().unwrap_or_default())
                    );
                }
            }
        }
        if start.elapsed() >= timeout {
            bail!(
                "transaction {} was accepted but is not in a block after {}; check the node or wait longer (--wait-timeout)",
                hex::encode(hash),
                humantime::format_duration(timeout)
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// How often [`wait_for`] asks the node to check a waiting transaction again.
const RECHECK_EVERY: Duration = Duration::from_secs(3);

fn load(a: LoadArgs) -> anyhow::Result<()> {
    if let Some(dir) = &a.xian {
        return xian_load(dir, &a);
    }
    let submitters: Vec<RpcSubmitter> = a.rpc.iter().map(|u| RpcSubmitter(RpcClient::new(u))).collect();
    let Some(first) = submitters.first() else {
        bail!("give at least one --rpc URL");
    };
    let chain_id = match a.chain_id {
        Some(id) => id,
        None => {
            first
                .0
                .status()
                .context("finding the chain id (or give --chain-id)")?
                .chain_id
        }
    };
    let cfg = LoadConfig {
        accounts: a.accounts,
        seed: a.seed,
        workers_per_submitter: a.workers,
        ..LoadConfig::new(&chain_id, a.rate, a.duration)
    };
    let stop = AtomicBool::new(false);
    let stats = run_load(&cfg, &submitters, &SystemClock::start(), &stop, |s| {
        eprintln!("{}", progress_line(s))
    })?;
    println!("{}", serde_json::to_string(&stats)?);
    if stats.accepted == 0 && (stats.sent > 0 || stats.errors > 0) {
        bail!(
            "no transaction was accepted; last problem: {}",
            stats.last_problem.as_deref().unwrap_or("none recorded")
        );
    }
    Ok(())
}

fn xian_load(dir: &std::path::Path, a: &LoadArgs) -> anyhow::Result<()> {
    if !a.rate.is_finite() || a.rate <= 0.0 || a.accounts == 0 {
        bail!("--rate must be positive and --accounts at least 1");
    }
    let net = XianNet::open(dir)?;
    let cfg = XianLoadConfig {
        rate: a.rate,
        duration: Some(a.duration),
        senders: a.accounts,
        seed: a.seed,
        nodes: (0..net.nodes().len()).collect(),
    };
    eprintln!(
        "load: funding {} senders from the founder, then {} transfers/s for {:?} through {} nodes",
        cfg.senders,
        cfg.rate,
        a.duration,
        cfg.nodes.len()
    );
    let stats = net.start_load(&cfg, true)?.finish()?;
    println!("{}", serde_json::to_string(&stats)?);
    if stats.accepted == 0 {
        bail!(
            "no transfer was accepted; last problem: {}",
            stats.last_problem.as_deref().unwrap_or("none recorded")
        );
    }
    Ok(())
}

fn progress_line(s: &LoadStats) -> String {
    let mut line = format!(
        "load: {:.0}s sent {} accepted {} refused {} errors {} ({:.1} tx/s)",
        s.seconds, s.sent, s.accepted, s.refused, s.errors, s.rate
    );
    if let Some(p) = &s.last_problem {
        line.push_str(&format!("; last problem: {p}"));
    }
    line
}

pub(super) fn or_no_log(log: &str) -> &str {
    if log.is_empty() {
        "(the node gave no log)"
    } else {
        log
    }
}

/// Parses `KEY=STORED` (split at the first `=`).
fn parse_set(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, stored)) if !key.is_empty() => Ok((key.to_string(), stored.to_string())),
        _ => Err(format!(
            "`{s}` is not KEY=STORED; write e.g. --set 'currency.balances:alice={{\"__fixed__\":\"1.5\"}}'"
        )),
    }
}
