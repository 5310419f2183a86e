//! The node's configuration: `<home>/config.toml`.
//!
//! Every key is optional; a missing file or key takes the default below.
//! `statesnap start` writes a commented default file when the home has none.

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// File name of the configuration inside a node home.
pub const CONFIG_FILE: &str = "config.toml";

/// What `<home>/config.toml` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// The chain this node belongs to; state sync refuses snapshots of other
    /// chains. Empty: learned from InitChain (a node that joins by state sync
    /// gets no InitChain, so set it there).
    pub chain_id: String,
    /// The store of a new state home: `lmdb` (Xian's current layout) or
    /// `hdf5`. An existing state home keeps the store it has.
    pub store: crate::store::StoreKind,
    /// Where the ABCI server listens: CometBFT's `proxy_app`, without `tcp://`.
    pub abci_listen: String,
    /// Where Prometheus metrics are served (`GET /metrics`). Empty: off.
    pub metrics_listen: String,
    /// Take a snapshot every this many blocks; 0: never.
    pub snapshot_interval: u64,
    /// How many of the most recent snapshots to keep.
    pub snapshot_keep_recent: u32,
    /// The snapshot format plugin until governance approves one: a built-in
    /// name (`zstd`, `gzip`, `brotli`) or a `.wasm` file. Empty: only approved formats.
    pub snapshot_plugin: String,
    /// Plugin parameters, e.g. `chunk_bytes = "10000000"`.
    pub snapshot_params: std::collections::BTreeMap<String, String>,
    /// Directory of extra `*.wasm` plugins (for restoring formats that are not built in). Empty: none.
    pub plugin_dir: String,
    /// HDF5 only: make the on-disk state durable (fsync) every this many
    /// blocks; the write-ahead log covers the blocks in between. (LMDB
    /// commits each block in one synced transaction.)
    pub checkpoint_interval: u64,
    /// After a new format activates, keep making the previous one for this
    /// many more snapshot intervals, so nodes that lack the new plugin can
    /// still sync.
    pub format_overlap: u64,
    /// Publish every snapshot this node makes to this location
    /// (`s3://BUCKET/PREFIX`, `file:///DIR`), in the background with
    /// retries. Empty: off. Done by the `statesnap` binary, not the engine.
    pub snapshot_publish: String,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            chain_id: String::new(),
            store: crate::store::StoreKind::Lmdb,
            abci_listen: "127.0.0.1:26658".into(),
            metrics_listen: "127.0.0.1:26660".into(),
            snapshot_interval: 1000,
            snapshot_keep_recent: 2,
            snapshot_plugin: "zstd".into(),
            snapshot_params: Default::default(),
            plugin_dir: String::new(),
            checkpoint_interval: 100,
            format_overlap: 2,
            snapshot_publish: String::new(),
        }
    }
}

const HEADER: &str = "\
# statesnap node configuration. Every key is optional; see docs/NODE.md.
#
# chain_id             the chain this node belongs to (state sync refuses other chains)
# store                the store of a new state home: \"lmdb\" (Xian's current layout) or \"hdf5\";
#                      an existing state home keeps its own
# abci_listen          where CometBFT's proxy_app connects (host:port)
# metrics_listen       Prometheus metrics address (GET /metrics); \"\" turns them off
# snapshot_interval    take a snapshot every this many blocks (0: never)
# snapshot_keep_recent keep this many most recent snapshots
# snapshot_plugin      snapshot format until governance approves one: a built-in name
#                      (zstd, gzip, brotli) or a .wasm file; \"\": only governance-approved formats
# plugin_dir           extra *.wasm plugins, for restoring formats that are not built in
# checkpoint_interval  HDF5 only: fsync the state every this many blocks (a write-ahead log covers
#                      the rest); LMDB commits every block in one synced transaction
# format_overlap       after a new format activates, keep making the previous one this many intervals
# snapshot_publish     publish every snapshot made to s3://BUCKET/PREFIX or file:///DIR (\"\": off);
#                      S3 endpoint and credentials from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, …
# [snapshot_params]    plugin parameters, e.g. chunk_bytes = \"10000000\"

";

impl NodeConfig {
    /// Reads `<home>/config.toml`; the defaults when the file is missing.
    pub fn load(home: &Path) -> anyhow::Result<Self> {
        let path = home.join(CONFIG_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        toml::from_str(&text).with_context(|| format!("{} is not a valid statesnap configuration", path.display()))
    }

    /// Writes `<home>/config.toml` (with a comment saying what each key means).
    pub fn write(&self, home: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(home).with_context(|| format!("creating {}", home.display()))?;
        let path = home.join(CONFIG_FILE);
        let body = toml::to_string(self).expect("a config always serializes");
        std::fs::write(&path, format!("{HEADER}{body}")).with_context(|| format!("writing {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_and_unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(NodeConfig::load(dir.path()).unwrap(), NodeConfig::default());
        let mut c = NodeConfig {
            chain_id: "x".into(),
            snapshot_interval: 20,
            ..NodeConfig::default()
        };
        c.snapshot_params.insert("chunk_bytes".into(), "100000".into());
        c.write(dir.path()).unwrap();
        assert_eq!(NodeConfig::load(dir.path()).unwrap(), c);
        std::fs::write(dir.path().join(CONFIG_FILE), "snapshot_intervall = 3\n").unwrap();
        let err = format!("{:#}", NodeConfig::load(dir.path()).unwrap_err());
        assert!(err.contains("snapshot_intervall"), "{err}");
    }
}
