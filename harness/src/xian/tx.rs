//! Transactions and reads through Xian's own SDK (`xian-tech-py`, in the
//! root file system): a signed `currency.transfer`, a balance, and a steady
//! load of transfers from accounts the founder funds (`xian_net.py load`).

use anyhow::{bail, Context};
use serde::Deserialize;

use super::genesis::{last_json_object, run_tool, tool_command};
use super::XianNet;

/// A transfer that is final.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Transfer {
    /// The sender's account (its public key in hex).
    pub sender: String,
    pub tx_hash: String,
    /// The block that holds it.
    pub height: u64,
}

#[derive(Deserialize)]
struct Output {
    sender: String,
    tx_hash: Option<String>,
    success: bool,
    height: Option<u64>,
    message: Option<String>,
}

pub(super) fn transfer(
    net: &XianNet,
    rpc: &str,
    private_key: &str,
    to: &str,
    amount: &str,
) -> anyhow::Result<Transfer> {
    let args = [
        "transfer",
        "--rpc",
        rpc,
        "--key",
        private_key,
        "--to",
        to,
        "--amount",
        amount,
    ]
    .map(String::from);
    let v = run_tool(net.tools(), net.dir(), &args)?;
    let out: Output = serde_json::from_value(v.clone()).with_context(|| format!("xian_net.py transfer printed {v}"))?;
    match (out.success, out.tx_hash, out.height) {
        (true, Some(tx_hash), Some(height)) => Ok(Transfer {
            sender: out.sender,
            tx_hash,
            height,
        }),
        _ => bail!(
            "the transfer did not succeed: {v} ({})",
            out.message.unwrap_or_default()
        ),
    }
}

pub(super) fn balance(net: &XianNet, rpc: &str, address: &str) -> anyhow::Result<String> {
    let args = ["balance", "--rpc", rpc, "--address", address].map(String::from);
    let v = run_tool(net.tools(), net.dir(), &args)?;
    v["balance"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("xian_net.py balance printed {v}"))
}

/// What a Xian load did (`xian_net.py load`'s totals).
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
pub struct XianLoadStats {
    /// Seconds of load (after the senders were funded).
    pub seconds: f64,
    pub sent: u64,
    /// Transfers the node's CheckTx accepted.
    pub accepted: u64,
    /// Transfers CheckTx refused (a stale nonce after a node restart, …).
    pub refused: u64,
    /// Broadcasts that failed (a node down).
    pub errors: u64,
    pub funded_senders: u64,
    /// Accepted transfers per second.
    pub rate: f64,
    pub last_problem: Option<String>,
}

/// How a Xian load runs.
#[derive(Debug, Clone)]
pub struct XianLoadConfig {
    /// Transfers per second, over all senders.
    pub rate: f64,
    /// How long; `None`: until [`XianLoad::stop`].
    pub duration: Option<std::time::Duration>,
    /// Accounts sending in parallel (each in nonce order, through one node).
    pub senders: usize,
    /// Seed of the senders' keys and the recipients.
    pub seed: u64,
    /// Nodes the senders spread over.
    pub nodes: Vec<usize>,
}

/// A running `xian_net.py load`.
/// Dropped unfinished, it is killed.
pub struct XianLoad {
    child: Option<std::process::Child>,
}

pub(super) fn start_load(net: &XianNet, cfg: &XianLoadConfig, inherit_stderr: bool) -> anyhow::Result<XianLoad> {
    if cfg.nodes.is_empty() {
        bail!("a Xian load needs at least one node to send through");
    }
    let rpcs: Vec<String> = cfg.nodes.iter().map(|&i| net.node(i).rpc_url()).collect();
    let args = [
        "load".to_string(),
        "--rpc".into(),
        rpcs.join(","),
        "--key".into(),
        net.founder_private_key().to_string(),
        "--rate".into(),
        cfg.rate.to_string(),
        "--duration".into(),
        cfg.duration.map_or(0.0, |d| d.as_secs_f64()).to_string(),
        "--senders".into(),
        cfg.senders.to_string(),
        "--seed".into(),
        cfg.seed.to_string(),
    ];
    let mut cmd = tool_command(net.tools(), net.dir(), &args);
    cmd.stdout(std::process::Stdio::piped());
    cmd.stderr(if inherit_stderr {
        std::process::Stdio::inherit()
    } else {
        std::process::Stdio::null()
    });
    let child = cmd
        .spawn()
        .context("starting xian_net.py load in the Xian root file system")?;
    Ok(XianLoad { child: Some(child) })
}

impl XianLoad {
    /// Ends the load now (SIGTERM) and gives its totals.
    pub fn stop(mut self) -> anyhow::Result<XianLoadStats> {
        if let Some(child) = self.child.as_mut() {
            if child.try_wait()?.is_none() {
                std::process::Command::new("kill")
                    .args(["-s", "TERM", &child.id().to_string()])
                    .status()
                    .context("running kill")?;
            }
        }
        self.finish()
    }

    /// Whether the load still runs (it ends by itself after its duration,
    /// or when it fails: then [`finish`](Self::finish) says why).
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits until the load has run its duration, and gives its totals.
    pub fn finish(mut self) -> anyhow::Result<XianLoadStats> {
        let child = self.child.take().context("the load has ended")?;
        let out = child.wait_with_output().context("waiting for xian_net.py load")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let Some(v) = last_json_object(&stdout) else {
            bail!("xian_net.py load ended ({}) without its totals: {stdout}", out.status);
        };
        if let Some(e) = v.get("error") {
            bail!("xian_net.py load failed: {e}");
        }
        serde_json::from_value(v.clone()).with_context(|| format!("xian_net.py load printed {v}"))
    }
}

impl Drop for XianLoad {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
