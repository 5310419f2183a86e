//! A small blocking client for CometBFT's JSON-RPC (the calls the CLI, the
//! testnet and the tests use).
//!
//! CometBFT writes 64-bit integers as JSON strings and binary data as base64
//! (query values, transactions) or upper-case hex (hashes); this module turns
//! them into Rust types so callers never see the wire encoding.

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use base64::Engine as _;
use serde_json::{json, Value};

/// A CometBFT node's RPC endpoint, e.g. `http://127.0.0.1:26657`.
#[derive(Debug, Clone)]
pub struct RpcClient {
    url: String,
    agent: ureq::Agent,
}

/// What `/status` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub node_id: String,
    pub chain_id: String,
    pub latest_block_height: u64,
    pub latest_app_hash: Vec<u8>,
    pub earliest_block_height: u64,
    pub catching_up: bool,
}

/// What `/abci_query` returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryResult {
    pub code: u32,
    pub log: String,
    pub value: Vec<u8>,
    pub height: u64,
}

/// What `/broadcast_tx_sync` returns: the CheckTx result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BroadcastResult {
    pub code: u32,
    pub log: String,
    /// The transaction hash (SHA-256), hex.
    pub hash: String,
}

/// A block header's fields the tools compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub height: u64,
    /// The app hash *after* the previous block (CometBFT puts the result of
    /// block H-1 in header H).
    pub app_hash: Vec<u8>,
    /// The block's own hash (the `trust_hash` a state-syncing node needs).
    pub block_hash: Vec<u8>,
}

impl RpcClient {
    /// A client for `url` (`http://host:port`; `tcp://` is read as `http://`).
    pub fn new(url: &str) -> Self {
        let url = url.trim_end_matches('/');
        let url = match url.strip_prefix("tcp://") {
            Some(rest) => format!("http://{rest}"),
            None if !url.contains("://") => format!("http://{url}"),
            None => url.to_string(),
        };
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(30)))
            .http_status_as_error(false)
            .build()
            .into();
        RpcClient { url, agent }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Calls JSON-RPC method `method` and returns its `result`.
    pub fn call(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let mut resp = self
            .agent
            .post(&self.url)
            .send_json(&body)
            .with_context(|| format!("calling {method} on {} (is the node running?)", self.url))?;
        let status = resp.status();
        let reply: Value = resp
            .body_mut()
            .read_json()
            .with_context(|| format!("{method} on {}: HTTP {status} with a body that is not JSON", self.url))?;
        if let Some(err) = reply.get("error") {
            let msg = err.get("data").or_else(|| err.get("message")).unwrap_or(err);
            bail!("{method} on {} failed: {}", self.url, text(msg));
        }
        reply
            .get("result")
            .cloned()
            .ok_or_else(|| anyhow!("{method} on {}: the reply has no result", self.url))
    }

    pub fn status(&self) -> anyhow::Result<Status> {
        let r = self.call("status", json!({}))?;
        let sync = &r["sync_info"];
        Ok(Status {
            node_id: text(&r["node_info"]["id"]),
            chain_id: text(&r["node_info"]["network"]),
            latest_block_height: int(&sync["latest_block_height"])?,
            latest_app_hash: hex_field(&sync["latest_app_hash"])?,
            earliest_block_height: int(&sync["earliest_block_height"])?,
            catching_up: sync["catching_up"].as_bool().unwrap_or(false),
        })
    }

    /// ABCI Query at the latest committed height.
    pub fn abci_query(&self, path: &str, data: &[u8]) -> anyhow::Result<QueryResult> {
        let r = self.call("abci_query", json!({"path": path, "data": hex::encode(data)}))?;
        let resp = &r["response"];
        Ok(QueryResult {
            code: resp["code"].as_u64().unwrap_or(0) as u32,
            log: text(&resp["log"]),
            value: match resp["value"].as_str() {
                Some(b64) => base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .context("abci_query: value is not base64")?,
                None => Vec::new(),
            },
            height: int(&resp["height"]).unwrap_or(0),
        })
    }

    /// Submits a transaction and waits for its CheckTx result only.
    pub fn broadcast_tx_sync(&self, tx: &[u8]) -> anyhow::Result<BroadcastResult> {
        let b64 = base64::engine::general_purpose::STANDARD.encode(tx);
        let r = self.call("broadcast_tx_sync", json!({"tx": b64}))?;
        Ok(BroadcastResult {
            code: r["code"].as_u64().unwrap_or(0) as u32,
            log: text(&r["log"]),
            hash: text(&r["hash"]).to_lowercase(),
        })
    }

    /// The header of block `height` (the latest when `None`).
    pub fn header(&self, height: Option<u64>) -> anyhow::Result<Header> {
        let params = match height {
            Some(h) => json!({"height": h.to_string()}),
            None => json!({}),
        };
        let r = self.call("block", params)?;
        let header = &r["block"]["header"];
        Ok(Header {
            height: int(&header["height"])?,
            app_hash: hex_field(&header["app_hash"])?,
            block_hash: hex_field(&r["block_id"]["hash"])?,
        })
    }

    /// The time in the header of every block from `from` to `to` (inclusive),
    /// in height order (CometBFT's `blockchain` call, 20 blocks a request).
    pub fn block_times(&self, from: u64, to: u64) -> anyhow::Result<Vec<(u64, std::time::SystemTime)>> {
        let mut out = Vec::new();
        let mut low = from.max(1);
        while low <= to {
            let high = to.min(low + 19);
            let r = self.call(
                "blockchain",
                json!({"minHeight": low.to_string(), "maxHeight": high.to_string()}),
            )?;
            let metas = r["block_metas"].as_array().context("blockchain: no block_metas")?;
            let mut got: Vec<(u64, std::time::SystemTime)> = metas
                .iter()
                .map(|m| {
                    let header = &m["header"];
                    let time = humantime::parse_rfc3339(&text(&header["time"]))
                        .with_context(|| format!("a block time: {}", header["time"]))?;
                    Ok((int(&header["height"])?, time))
                })
                .collect::<anyhow::Result<_>>()?;
            if got.len() as u64 != high - low + 1 {
                bail!("blockchain {low}..{high}: the node gave {} blocks", got.len());
            }
            got.sort_by_key(|(h, _)| *h);
            out.extend(got);
            low = high + 1;
        }
        Ok(out)
    }

    /// Number of peers the node is connected to.
    pub fn peer_count(&self) -> anyhow::Result<u64> {
        int(&self.call("net_info", json!({}))?["n_peers"])
    }
}

/// A JSON string's text, or the JSON itself for other values.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// An integer CometBFT may write as a string.
fn int(v: &Value) -> anyhow::Result<u64> {
    match v {
        Value::String(s) => s.parse().map_err(|_| anyhow!("`{s}` is not an integer")),
        Value::Number(n) => n.as_u64().ok_or_else(|| anyhow!("`{n}` is not a non-negative integer")),
        other => bail!("expected an integer, found {other}"),
    }
}

fn hex_field(v: &Value) -> anyhow::Result<Vec<u8>> {
    let s = text(v);
    hex::decode(&s).map_err(|e| anyhow!("`{s}` is not hex: {e}"))
}

/// The body of a plain HTTP GET of `url` (a `/metrics` page), within 10 s.
pub fn get_text(url: &str) -> anyhow::Result<String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    Ok(agent.get(url).call()?.body_mut().read_to_string()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_fields() {
        assert_eq!(RpcClient::new("tcp://127.0.0.1:26657").url(), "http://127.0.0.1:26657");
        assert_eq!(RpcClient::new("127.0.0.1:1/").url(), "http://127.0.0.1:1");
        assert_eq!(int(&json!("42")).unwrap(), 42);
        assert_eq!(int(&json!(7)).unwrap(), 7);
        assert!(int(&json!("x")).is_err());
        assert_eq!(hex_field(&json!("0AFF")).unwrap(), vec![10, 255]);
        assert_eq!(hex_field(&json!("")).unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn a_node_that_is_not_there_is_a_clear_error() {
        let err = RpcClient::new("http://127.0.0.1:9").status().unwrap_err();
        assert!(format!("{err:#}").contains("is the node running"), "{err:#}");
    }
}
