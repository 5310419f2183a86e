//! Transactions and reads through Xian's own SDK (`xian-tech-py`, in the
//! root file system): a signed `currency.transfer`, and a balance.

use anyhow::{bail, Context};
use serde::Deserialize;

use super::genesis::run_tool;
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
