//! `statesnap gov …`: snapshot-format governance through a node's CometBFT RPC
//! (propose a plugin, upload its pieces, vote, show where things stand).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use ed25519_dalek::SigningKey;
use serde_json::{json, Value};

use statesnap::node::governance::Conformance;
use statesnap::node::QueryCode;
use statesnap::protocol::account_key;
use statesnap::protocol::tx::{
    check_hash_proposal, check_proposal, Action, HashProposal, Proposal, Tx, TxBody, TxError, Upload,
};
use statesnap_harness::load::fetch_nonce;
use statesnap_harness::rpc::RpcClient;

use super::tx::{or_no_log, wait_for, InBlock};

/// Upload pieces sent before the first is in a block: 8 pieces of 512 KiB
/// fit CometBFT's default block (21 MiB) several times over.
const UPLOAD_IN_FLIGHT: usize = 8;

#[derive(Subcommand, Debug)]
pub enum GovCommand {
    /// Propose approving a plugin as snapshot format N (signed with a validator's consensus key).
    Propose(ProposeArgs),
    /// Vote for a proposal (signed with a validator's consensus key).
    Vote(VoteArgs),
    /// Upload the missing pieces of a plugin proposed by hash (any key may sign).
    Upload(UploadArgs),
    /// Show validators, proposals and approved formats.
    Status(StatusArgs),
}

#[derive(Args, Debug)]
pub struct Common {
    /// The node's RPC address, e.g. http://127.0.0.1:26657.
    #[arg(long)]
    rpc: String,
    /// The validator's key file: its CometBFT priv_validator_key.json.
    #[arg(long)]
    key: PathBuf,
    /// Give up waiting for the transaction's block after this long.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    wait_timeout: Duration,
}

#[derive(Args, Debug)]
pub struct ProposeArgs {
    #[command(flatten)]
    common: Common,
    /// The plugin's wasm component (`statesnap plugin export NAME` writes a built-in's).
    #[arg(long, value_name = "FILE.wasm")]
    plugin: PathBuf,
    /// The format number to approve it as; it must be the one the plugin describes.
    #[arg(long, value_name = "N")]
    format: u32,
    /// Blocks between the proposal passing and the format activating.
    #[arg(long, value_name = "BLOCKS", default_value_t = 20)]
    activation_delay: u64,
    /// Votes count for this many blocks after the proposal's block; then it expires.
    #[arg(long, value_name = "BLOCKS", default_value_t = 600)]
    expires_after: u64,
    /// Propose the plugin by its SHA-256 and upload it in pieces (needed
    /// when it is over 700 KiB compressed; up to 32 MiB).
    #[arg(long)]
    by_hash: bool,
    /// With --by-hash: the size of each uploaded piece, in KiB (a multiple of 16, up to 512).
    #[arg(long, value_name = "KIB", default_value_t = 512, requires = "by_hash")]
    piece_kib: u32,
    /// With --by-hash: only propose; upload later with `statesnap gov upload`.
    #[arg(long, requires = "by_hash")]
    no_upload: bool,
}

#[derive(Args, Debug)]
pub struct UploadArgs {
    #[command(flatten)]
    common: Common,
    /// The proposal (by hash) whose plugin to upload.
    #[arg(long, value_name = "ID")]
    proposal: u64,
    /// The plugin's wasm component: the bytes the proposal names.
    #[arg(long, value_name = "FILE.wasm")]
    plugin: PathBuf,
}

#[derive(Args, Debug)]
pub struct VoteArgs {
    #[command(flatten)]
    common: Common,
    /// The proposal's id (`statesnap gov status` lists them).
    #[arg(long, value_name = "ID")]
    proposal: u64,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The node's RPC address, e.g. http://127.0.0.1:26657.
    #[arg(long)]
    rpc: String,
    /// Print the node's JSON answer as is.
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: GovCommand) -> anyhow::Result<()> {
    match cmd {
        GovCommand::Propose(a) => propose(a),
        GovCommand::Vote(a) => vote(a),
        GovCommand::Upload(a) => upload(&a.common, a.proposal, &read_plugin(&a.plugin)?),
        GovCommand::Status(a) => status(a),
    }
}

fn read_plugin(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading plugin file {}", path.display()))
}

fn propose(a: ProposeArgs) -> anyhow::Result<()> {
    let wasm = read_plugin(&a.plugin)?;
    let action = if a.by_hash {
        let p = HashProposal::new(
            a.format,
            &wasm,
            a.piece_kib.saturating_mul(1024),
            a.activation_delay,
            a.expires_after,
        );
        check_hash_proposal(&p)?;
        Action::ProposeHash(p)
    } else {
        let p = Proposal::new(a.format, &wasm, a.activation_delay, a.expires_after);
        check_proposal(&p).map_err(|e| match e {
            TxError::TooLarge { .. } => anyhow::anyhow!("{e}; or propose it by hash with --by-hash"),
            e => e.into(),
        })?;
        Action::Propose(p)
    };
    // The same check every node runs on the proposal: fail here, not on chain.
    eprintln!("gov: running the conformance check every node will run on this plugin…");
    let description = Conformance::new()?
        .verdict(&wasm)
        .context("this machine could not run the conformance check")?
        .map_err(|why| anyhow::anyhow!("the plugin would be refused: {why}"))?;
    if description.format != a.format {
        bail!(
            "the plugin {} {} makes format {}, not {}: pass --format {}",
            description.name,
            description.version,
            description.format,
            a.format,
            description.format
        );
    }
    let sha = statesnap::plugin::sha256_hex(&wasm);
    let bytes = wasm.len();
    let (rpc, height) = send(&a.common, action)?;
    let gov = query_gov(&rpc)?;
    let record = gov["proposals"]
        .as_array()
        .into_iter()
        .flatten()
        .rev()
        .find(|p| p["sha256"] == json!(sha) && p["submitted_height"] == json!(height))
        .cloned()
        .unwrap_or(Value::Null);
    println!("{}", json!({"height": height, "proposal": record}));
    eprintln!(
        "gov: proposal {} submitted at height {height}: format {} = {} {} ({bytes} bytes, sha256 {sha}); \
         validators vote with `statesnap gov vote --proposal {} …` until height {}",
        record["id"], a.format, description.name, description.version, record["id"], record["expires_height"]
    );
    if a.by_hash {
        let id = record["id"]
            .as_u64()
            .context("the node's /gov answer lacks the new proposal")?;
        if a.no_upload {
            eprintln!(
                "gov: upload its pieces before height {} with `statesnap gov upload --proposal {id} --plugin {} …`",
                record["expires_height"],
                a.plugin.display()
            );
        } else {
            upload(&a.common, id, &wasm)?;
        }
    }
    Ok(())
}

/// Uploads each piece of `wasm` that proposal `id` still lacks, one
/// transaction per piece, each waited for.
fn upload(c: &Common, id: u64, wasm: &[u8]) -> anyhow::Result<()> {
    let rpc = RpcClient::new(&c.rpc);
    let gov = query_gov(&rpc)?;
    let Some(record) = gov["proposals"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["id"] == json!(id))
    else {
        bail!("the node lists no proposal {id} (`statesnap gov status` lists them)");
    };
    let u = &record["upload"];
    let (Some(piece_bytes), Some(received)) = (u["piece_bytes"].as_u64(), u["received"].as_str()) else {
        bail!("proposal {id} carried its plugin itself: it takes no uploads");
    };
    let sha = statesnap::plugin::sha256_hex(wasm);
    if record["sha256"] != json!(sha) || u["bytes"] != json!(wasm.len()) {
        bail!(
            "proposal {id} names a plugin of {} bytes with SHA-256 {}, but this file is {} bytes with SHA-256 {sha}",
            u["bytes"],
            record["sha256"].as_str().unwrap_or("?"),
            wasm.len()
        );
    }
    let missing: Vec<usize> = received
        .bytes()
        .enumerate()
        .filter(|(_, b)| *b == b'0')
        .map(|(i, _)| i)
        .collect();
    let total = received.len();
    if missing.is_empty() {
        eprintln!("gov: proposal {id} has all {total} pieces");
        return Ok(());
    }
    // Several pieces in flight, with consecutive nonces (CheckTx admits an
    // account's next nonces in order), so that one block can take several.
    let key: SigningKey = account_key::read(&c.key)?;
    let chain_id = rpc.status().context("asking the node for its chain id")?.chain_id;
    let account = key.verifying_key().to_bytes();
    let mut nonce = fetch_nonce(&rpc, &account).context("finding the uploading key's nonce")?;
    let mut pending = missing.iter().copied();
    let mut in_flight: VecDeque<(usize, usize, Tx)> = VecDeque::new();
    let mut done = 0;
    loop {
        while in_flight.len() < UPLOAD_IN_FLIGHT {
            let Some(index) = pending.next() else { break };
            let piece = wasm
                .chunks(piece_bytes as usize)
                .nth(index)
                .context("the file has fewer pieces than the proposal")?;
            let action = Action::Upload(Upload {
                proposal: id,
                index: index as u32,
                bytes: piece.to_vec(),
            });
            let tx = sign(&key, &chain_id, nonce, action)?;
            broadcast(&rpc, &tx).with_context(|| {
                format!(
                    "sending piece {index} of {total}; pieces sent before it may still arrive: \
                     `statesnap gov upload` again sends only what is missing"
                )
            })?;
            nonce += 1;
            in_flight.push_back((index, piece.len(), tx));
        }
        let Some((index, len, tx)) = in_flight.pop_front() else {
            break;
        };
        let height =
            committed(&rpc, &tx, c.wait_timeout).with_context(|| format!("uploading piece {index} of {total}"))?;
        done += 1;
        eprintln!(
            "gov: uploaded piece {index} ({len} bytes) of proposal {id} at height {height} ({done} of {} missing pieces)",
            missing.len()
        );
    }
    let gov = query_gov(&rpc)?;
    let record = gov["proposals"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["id"] == json!(id))
        .cloned();
    println!("{}", json!({"proposal": record}));
    Ok(())
}

fn vote(a: VoteArgs) -> anyhow::Result<()> {
    let (rpc, height) = send(&a.common, Action::Vote(a.proposal))?;
    let gov = query_gov(&rpc)?;
    let record = gov["proposals"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["id"] == json!(a.proposal))
        .cloned()
        .unwrap_or(Value::Null);
    println!("{}", json!({"height": height, "proposal": record}));
    eprintln!(
        "gov: vote counted at height {height}: proposal {} has {} of {} voting power ({}){}",
        a.proposal,
        record["yes_power"],
        record["total_power"],
        record["status"].as_str().unwrap_or("?"),
        if record["status"] == "passed" {
            format!(
                "; format {} activates at height {}",
                record["format"], record["activation_height"]
            )
        } else {
            "; it passes above 2/3".into()
        }
    );
    Ok(())
}

/// Signs `action` with the key file, broadcasts it and waits for its block:
/// (the client, the block height).
fn send(c: &Common, action: Action) -> anyhow::Result<(RpcClient, u64)> {
    let key: SigningKey = account_key::read(&c.key)?;
    let rpc = RpcClient::new(&c.rpc);
    let chain_id = rpc.status().context("asking the node for its chain id")?.chain_id;
    let account = key.verifying_key().to_bytes();
    let nonce = fetch_nonce(&rpc, &account).context("finding the validator's nonce")?;
    let tx = sign(&key, &chain_id, nonce, action)?;
    broadcast(&rpc, &tx)?;
    let height = committed(&rpc, &tx, c.wait_timeout)?;
    Ok((rpc, height))
}

fn sign(key: &SigningKey, chain_id: &str, nonce: u64, action: Action) -> anyhow::Result<Tx> {
    let body = TxBody {
        chain_id: chain_id.to_string(),
        account: key.verifying_key().to_bytes(),
        nonce,
        action,
    };
    let tx = Tx::sign(body, key)?;
    tx.validate(chain_id)?;
    Ok(tx)
}

/// Sends `tx` to the mempool; an error if CheckTx refuses it.
fn broadcast(rpc: &RpcClient, tx: &Tx) -> anyhow::Result<()> {
    let r = rpc.broadcast_tx_sync(tx.bytes())?;
    if r.code != 0 {
        bail!(
            "the node refused the transaction in CheckTx (code {}): {}",
            r.code,
            or_no_log(&r.log)
        );
    }
    Ok(())
}

/// Waits for `tx` in a block: its height, or an error if the block refused it.
fn committed(rpc: &RpcClient, tx: &Tx, timeout: Duration) -> anyhow::Result<u64> {
    let InBlock { height, code, log } = wait_for(rpc, tx.bytes(), timeout)?;
    if code != 0 {
        bail!(
            "the transaction is in block {height} but was refused (code {code}): {}",
            or_no_log(&log)
        );
    }
    Ok(height)
}

fn query_gov(rpc: &RpcClient) -> anyhow::Result<Value> {
    let r = rpc.abci_query("/gov", &[])?;
    if QueryCode::from_wire(r.code) != Some(QueryCode::Found) {
        bail!("query /gov on {} failed (code {}): {}", rpc.url(), r.code, r.log);
    }
    serde_json::from_slice(&r.value).with_context(|| format!("query /gov on {}: not JSON", rpc.url()))
}

fn status(a: StatusArgs) -> anyhow::Result<()> {
    let rpc = RpcClient::new(&a.rpc);
    let gov = query_gov(&rpc)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&gov)?);
        return Ok(());
    }
    let validators = gov["validators"].as_object().cloned().unwrap_or_default();
    println!(
        "height {}: {} validators, total voting power {}",
        gov["height"],
        validators.len(),
        gov["total_power"]
    );
    println!("approved formats:");
    let formats = gov["formats"].as_array().cloned().unwrap_or_default();
    if formats.is_empty() {
        println!("  none (nodes make their configured snapshot_plugin's format)");
    }
    for f in formats {
        println!(
            "  format {:<3} {} {}  sha256 {}  proposal {}  activation height {}{}",
            f["format"],
            f["name"].as_str().unwrap_or("?"),
            f["version"].as_str().unwrap_or("?"),
            f["sha256"].as_str().unwrap_or("?"),
            f["proposal"],
            f["activation_height"],
            if f["active"] == json!(true) {
                " (active)"
            } else {
                " (pending)"
            }
        );
    }
    println!("proposals:");
    let proposals = gov["proposals"].as_array().cloned().unwrap_or_default();
    if proposals.is_empty() {
        println!("  none");
    }
    for p in proposals {
        println!(
            "  #{:<3} {:<8} format {:<3} {} {}  yes {}/{} power, {} votes  submitted {}  expires {}{}",
            p["id"],
            p["status"].as_str().unwrap_or("?"),
            p["format"],
            p["name"].as_str().unwrap_or("?"),
            p["version"].as_str().unwrap_or("?"),
            p["yes_power"],
            p["total_power"],
            p["votes"],
            p["submitted_height"],
            p["expires_height"],
            if p["status"] == "passed" {
                format!("  activates {}", p["activation_height"])
            } else {
                String::new()
            }
        );
    }
    Ok(())
}
