//! Where a testnet keeps its files and which ports each node listens on.
//!
//! ```text
//! DIR/testnet.json                 options and nodes (what `Testnet::open` reads)
//! DIR/genesis-state/               the generated Xian state imported at genesis (--genesis-keys)
//! DIR/<name>/cometbft/             the node's CometBFT home
//! DIR/<name>/statesnap/            the node's statesnap home
//! DIR/<name>/{cometbft,statesnap}.log
//! DIR/<name>/{cometbft,statesnap}.pid
//! ```
//!
//! Node `i` owns ports `base_port + 10*i + 0..5`: p2p, rpc, abci, statesnap
//! metrics, CometBFT prometheus, all on 127.0.0.1.

use std::net::TcpListener;
use std::path::{Path, PathBuf};

use anyhow::bail;
use serde::{Deserialize, Serialize};

/// The file describing a testnet.
pub const TESTNET_FILE: &str = "testnet.json";
/// The directory of the Xian state generated for genesis.
pub const GENESIS_STATE_DIR: &str = "genesis-state";
/// Ports reserved per node (five are used; the rest leave room).
pub const PORTS_PER_NODE: u16 = 10;
/// Every node listens on loopback only.
pub const HOST: &str = "127.0.0.1";

/// The ports one node listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ports {
    /// CometBFT peer-to-peer.
    pub p2p: u16,
    /// CometBFT RPC.
    pub rpc: u16,
    /// statesnap's ABCI server (CometBFT's `proxy_app`).
    pub abci: u16,
    /// statesnap's Prometheus metrics.
    pub metrics: u16,
    /// CometBFT's Prometheus metrics.
    pub prometheus: u16,
}

impl Ports {
    /// The ports of node `index` in a testnet starting at `base_port`.
    pub fn for_node(base_port: u16, index: usize) -> anyhow::Result<Ports> {
        let offset = u32::from(PORTS_PER_NODE).saturating_mul(u32::try_from(index).unwrap_or(u32::MAX));
        let first = u32::from(base_port).saturating_add(offset);
        let highest_base = u32::from(u16::MAX).saturating_sub(offset + 4);
        if base_port < 1024 || first.saturating_add(4) > u32::from(u16::MAX) {
            if highest_base < 1024 {
                bail!("node {index} has no room for its ports: too many nodes for the ports between 1024 and 65535");
            }
            bail!(
                "node {index} would need ports {first}..={} from base port {base_port}: \
                 choose a --base-port between 1024 and {highest_base}",
                first.saturating_add(4),
            );
        }
        let port = |offset: u32| (first + offset) as u16;
        Ok(Ports {
            p2p: port(0),
            rpc: port(1),
            abci: port(2),
            metrics: port(3),
            prometheus: port(4),
        })
    }

    /// Each port with what it is for (for messages).
    pub fn named(&self) -> [(&'static str, u16); 5] {
        [
            ("p2p", self.p2p),
            ("rpc", self.rpc),
            ("abci", self.abci),
            ("metrics", self.metrics),
            ("prometheus", self.prometheus),
        ]
    }

    /// Fails, naming the port, when one of them is taken on 127.0.0.1.
    pub fn check_free(&self, node: &str) -> anyhow::Result<()> {
        for (what, port) in self.named() {
            if TcpListener::bind((HOST, port)).is_err() {
                bail!(
                    "port {port} ({what} of {node}) is already in use on {HOST}: another testnet may be running \
                     (stop it with `statesnap testnet stop --dir …`), or initialise a new one with another --base-port"
                );
            }
        }
        Ok(())
    }
}

/// A base port whose first `nodes` port blocks are free right now, picked at
/// random below the kernel's ephemeral range, so parallel tests rarely collide.
pub fn free_base_port(nodes: usize) -> anyhow::Result<u16> {
    use rand::Rng;
    let mut rng = rand::rng();
    if nodes > 1000 {
        bail!("{nodes} nodes need more ports than the range 20000..32000 holds");
    }
    let span = PORTS_PER_NODE * nodes.max(1) as u16;
    for _ in 0..200 {
        let base = rng.random_range(20_000..32_000 - span) / PORTS_PER_NODE * PORTS_PER_NODE;
        let free = (0..nodes.max(1)).all(|i| {
            Ports::for_node(base, i)
                .map(|p| p.check_free("probe").is_ok())
                .unwrap_or(false)
        });
        if free {
            return Ok(base);
        }
    }
    bail!("found no free block of {span} ports between 20000 and 32000 on {HOST}")
}

/// The directory of node `name`.
pub fn node_dir(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// The name of node `index` (`node0`, `node1`, …).
pub fn node_name(index: usize) -> String {
    format!("node{index}")
}

/// Node names become directory names and CometBFT monikers: keep them plain.
pub fn check_node_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && name != GENESIS_STATE_DIR;
    if !ok {
        bail!("`{name}` is not a usable node name: use 1 to 64 letters, digits, `-` or `_`");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_blocks_of_ten_and_stay_in_range() {
        let p = Ports::for_node(26600, 2).unwrap();
        assert_eq!(
            p,
            Ports {
                p2p: 26620,
                rpc: 26621,
                abci: 26622,
                metrics: 26623,
                prometheus: 26624
            }
        );
        assert!(Ports::for_node(65531, 0).is_ok());
        assert!(Ports::for_node(65532, 0).is_err());
        assert!(Ports::for_node(2000, usize::MAX).is_err());
        assert!(Ports::for_node(65000, 100).is_err());
        assert!(Ports::for_node(80, 0).is_err());
    }

    #[test]
    fn node_names_are_checked() {
        assert!(check_node_name("node7").is_ok());
        assert!(check_node_name("late-joiner_2").is_ok());
        for bad in ["", "../x", "a b", "genesis-state", "node/1"] {
            assert!(check_node_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_taken_port_is_named() {
        let held = TcpListener::bind((HOST, 0)).unwrap();
        let port = held.local_addr().unwrap().port();
        let ports = Ports {
            p2p: port,
            rpc: port,
            abci: port,
            metrics: port,
            prometheus: port,
        };
        let err = ports.check_free("node3").unwrap_err().to_string();
        assert!(
            err.contains(&port.to_string()) && err.contains("node3") && err.contains("--base-port"),
            "{err}"
        );
    }
}
