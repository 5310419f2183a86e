//! Preparing a testnet node's CometBFT: finding the `cometbft` binary,
//! `cometbft init`, node ids, and the `config.toml` edits a loopback testnet
//! needs (made with `toml_edit`, so CometBFT's comments stay).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde::{Deserialize, Serialize};
use statesnap_transport::trust::go_duration;
use toml_edit::{DocumentMut, Item, Value};

/// The CometBFT release statesnap is built and tested against.
pub const COMETBFT_VERSION: &str = "0.38.26";
/// The ABCI 2.0 release line statesnap speaks.
const COMETBFT_SERIES: &str = "0.38.";
const INSTALL_HINT: &str = "run scripts/install-cometbft.sh (it installs cometbft v0.38.26 with `go install`), \
     or set COMETBFT to the binary";

/// A `cometbft` binary known to be of the 0.38 series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CometBft {
    pub path: PathBuf,
    pub version: String,
}

/// Where to look for the binary, in order.
#[derive(Debug, Clone, Default)]
pub struct SearchPlaces {
    /// `$COMETBFT`: used alone when set.
    pub env: Option<OsString>,
    /// `$PATH`.
    pub path: Option<OsString>,
    /// `bin` directories from `go env GOBIN GOPATH`, then `~/go/bin`.
    pub go_bins: Vec<PathBuf>,
}

impl SearchPlaces {
    /// The places of this process's environment.
    pub fn from_env() -> SearchPlaces {
        let mut go_bins = Vec::new();
        if let Ok(out) = Command::new("go").args(["env", "GOBIN", "GOPATH"]).output() {
            let text = String::from_utf8_lossy(&out.stdout);
            let mut lines = text.lines();
            if let Some(gobin) = lines.next().filter(|l| !l.trim().is_empty()) {
                go_bins.push(PathBuf::from(gobin.trim()));
            }
            if let Some(gopath) = lines.next() {
                go_bins.extend(std::env::split_paths(gopath.trim()).map(|p| p.join("bin")));
            }
        }
        if let Some(home) = std::env::var_os("HOME") {
            go_bins.push(PathBuf::from(home).join("go").join("bin"));
        }
        SearchPlaces {
            env: std::env::var_os("COMETBFT").filter(|v| !v.is_empty()),
            path: std::env::var_os("PATH"),
            go_bins,
        }
    }

    /// Candidate files, most preferred first.
    fn candidates(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = Vec::new();
        if let Some(p) = &self.path {
            out.extend(std::env::split_paths(p).map(|d| d.join("cometbft")));
        }
        out.extend(self.go_bins.iter().map(|d| d.join("cometbft")));
        out.dedup();
        out
    }
}

/// Which CometBFT release a testnet runs. Both speak ABCI 2.0 (0.39 keeps
/// 0.38's messages); 0.39.3 is what Xian's own deployment builds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum CometBftRelease {
    /// v0.38.26, from Go's bin directory (scripts/install-cometbft.sh).
    #[serde(rename = "0.38")]
    #[value(name = "0.38")]
    V038,
    /// v0.39.3, from its own directory (scripts/install-xian.sh).
    #[default]
    #[serde(rename = "0.39")]
    #[value(name = "0.39")]
    V039,
}

/// Where scripts/install-xian.sh puts CometBFT v0.39.3 unless
/// `$STATESNAP_COMETBFT_039_DIR` says otherwise.
pub const DEFAULT_COMETBFT_039_DIR: &str = "/var/lib/statesnap/cometbft-0.39.3";
/// What the v0.39.3 binary reports as its version.
pub const COMETBFT_039_REPORTS: &str = "0.39.0";
const INSTALL_039_HINT: &str =
    "run scripts/install-xian.sh (scripts/setup.sh runs it), or set COMETBFT_039 to the binary";

impl CometBft {
    /// Finds the binary: `$COMETBFT`, else `cometbft` on `PATH`, else Go's bin directory.
    pub fn discover() -> anyhow::Result<CometBft> {
        Self::discover_in(&SearchPlaces::from_env())
    }

    /// Finds the binary of `release`: for 0.38, [`discover`](Self::discover);
    /// for 0.39, `$COMETBFT_039`, else `$STATESNAP_COMETBFT_039_DIR/cometbft`,
    /// else [`DEFAULT_COMETBFT_039_DIR`]`/cometbft`.
    pub fn discover_release(release: CometBftRelease) -> anyhow::Result<CometBft> {
        match release {
            CometBftRelease::V038 => Self::discover(),
            CometBftRelease::V039 => {
                let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
                Self::discover_039(var("COMETBFT_039"), var("STATESNAP_COMETBFT_039_DIR"))
            }
        }
    }

    /// CometBFT v0.39.3 from the explicit values of `$COMETBFT_039` and
    /// `$STATESNAP_COMETBFT_039_DIR`.
    pub fn discover_039(binary: Option<OsString>, dir: Option<OsString>) -> anyhow::Result<CometBft> {
        let path = match binary {
            Some(bin) => PathBuf::from(bin),
            None => dir
                .map_or_else(|| PathBuf::from(DEFAULT_COMETBFT_039_DIR), PathBuf::from)
                .join("cometbft"),
        };
        if !path.is_file() {
            bail!("no CometBFT v0.39.3 at {}: {INSTALL_039_HINT}", path.display());
        }
        let out = Command::new(&path)
            .arg("version")
            .output()
            .with_context(|| format!("running {} version: {INSTALL_039_HINT}", path.display()))?;
        let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() || version != COMETBFT_039_REPORTS {
            bail!(
                "{} reports version `{version}`, not CometBFT v0.39.3's {COMETBFT_039_REPORTS}: {INSTALL_039_HINT}",
                path.display()
            );
        }
        Ok(CometBft { path, version })
    }

    /// [`discover`](Self::discover) over explicit places. A candidate of
    /// another release line is skipped (and named if nothing else is found).
    pub fn discover_in(places: &SearchPlaces) -> anyhow::Result<CometBft> {
        if let Some(env) = &places.env {
            let path = PathBuf::from(env);
            if !path.is_file() {
                bail!(
                    "COMETBFT is set to {}, which is not a file: {INSTALL_HINT}",
                    path.display()
                );
            }
            return Self::checked(path);
        }
        let mut rejected = Vec::new();
        for candidate in places.candidates() {
            if !candidate.is_file() {
                continue;
            }
            match Self::checked(candidate.clone()) {
                Ok(found) => return Ok(found),
                Err(e) => rejected.push(format!("{e:#}")),
            }
        }
        if rejected.is_empty() {
            bail!("cometbft not found (not in COMETBFT, on PATH or in Go's bin directory): {INSTALL_HINT}");
        }
        bail!("no usable cometbft: {}", rejected.join("; "))
    }

    /// Runs `version` and keeps the binary when it is of the 0.38 series.
    fn checked(path: PathBuf) -> anyhow::Result<CometBft> {
        let out = Command::new(&path)
            .arg("version")
            .output()
            .with_context(|| format!("running {} version: {INSTALL_HINT}", path.display()))?;
        let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() || !version.starts_with(COMETBFT_SERIES) {
            bail!(
                "{} is version `{version}`, statesnap needs CometBFT {COMETBFT_SERIES}x (ABCI 2.0): {INSTALL_HINT}",
                path.display()
            );
        }
        Ok(CometBft { path, version })
    }

    /// `cometbft init --home HOME`: keys, a default config.toml and genesis.
    pub fn init_home(&self, home: &Path) -> anyhow::Result<()> {
        self.run(&["init", "--home"], home)
            .with_context(|| format!("initialising the CometBFT home {}", home.display()))?;
        Ok(())
    }

    /// The node id (`cometbft show-node-id`), 40 hex digits.
    pub fn node_id(&self, home: &Path) -> anyhow::Result<String> {
        let out = self.run(&["show-node-id", "--home"], home)?;
        let id = out.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or("");
        if id.len() != 40 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
            bail!(
                "cometbft show-node-id --home {} printed `{out}`, not a node id",
                home.display()
            );
        }
        Ok(id.to_string())
    }

    fn run(&self, args: &[&str], home: &Path) -> anyhow::Result<String> {
        let out = Command::new(&self.path)
            .args(args)
            .arg(home)
            .output()
            .with_context(|| format!("running {}", self.path.display()))?;
        if !out.status.success() {
            bail!(
                "`{} {} {}` failed: {}",
                self.path.display(),
                args.join(" "),
                home.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// The genesis validator entry `cometbft init` wrote for this home's key.
pub fn generated_validator(home: &Path) -> anyhow::Result<serde_json::Value> {
    let genesis = read_json(&genesis_path(home))?;
    genesis["validators"]
        .get(0)
        .cloned()
        .ok_or_else(|| anyhow!("{} lists no validator", genesis_path(home).display()))
}

pub fn config_path(home: &Path) -> PathBuf {
    home.join("config").join("config.toml")
}

pub fn genesis_path(home: &Path) -> PathBuf {
    home.join("config").join("genesis.json")
}

pub fn read_json(path: &Path) -> anyhow::Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

/// State sync settings of a joining node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateSyncSettings {
    /// Two (or more) RPC urls the light client checks headers against.
    pub rpc_servers: Vec<String>,
    pub trust_height: u64,
    /// The block hash at `trust_height`, upper-case hex.
    pub trust_hash: String,
}

/// What a node's `config.toml` is set to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSettings {
    pub moniker: String,
    /// `tcp://127.0.0.1:PORT` for statesnap, or a built-in app such as `kvstore`.
    pub proxy_app: String,
    pub p2p_laddr: String,
    pub rpc_laddr: String,
    /// `id@host:port`, comma separated.
    pub persistent_peers: String,
    /// Peer exchange: false keeps the node to its persistent peers.
    pub pex: bool,
    pub block_time: Duration,
    pub prometheus_laddr: String,
    pub state_sync: Option<StateSyncSettings>,
}

/// `[p2p] send_rate` and `recv_rate` of testnet nodes, in bytes per second.
pub const P2P_RATE: i64 = 100_000_000;

/// Rewrites the settings a loopback testnet needs in `<home>/config/config.toml`.
pub fn edit_config(home: &Path, s: &NodeSettings) -> anyhow::Result<()> {
    rewrite_config(home, |edit| {
        edit.set(None, "moniker", s.moniker.as_str().into())?;
        edit.set(None, "proxy_app", s.proxy_app.as_str().into())?;
        edit.set(Some("rpc"), "laddr", s.rpc_laddr.as_str().into())?;
        edit.set(Some("p2p"), "laddr", s.p2p_laddr.as_str().into())?;
        edit.set(Some("p2p"), "persistent_peers", s.persistent_peers.as_str().into())?;
        edit.set(Some("p2p"), "pex", s.pex.into())?;
        edit.set(Some("p2p"), "addr_book_strict", false.into())?;
        edit.set(Some("p2p"), "allow_duplicate_ip", true.into())?;
        // CometBFT's 5 MB/s per connection would be the floor of every restore
        // here (43 MB of snapshot at 1M keys: 8.4 s from one peer); loopback
        // carries far more.
        edit.set(Some("p2p"), "send_rate", P2P_RATE.into())?;
        edit.set(Some("p2p"), "recv_rate", P2P_RATE.into())?;
        // Loopback has no latency: short round timeouts recover fast from a
        // missed proposal; timeout_commit sets the block time.
        for (key, value) in [
            ("timeout_propose", "1s"),
            ("timeout_propose_delta", "200ms"),
            ("timeout_prevote", "300ms"),
            ("timeout_prevote_delta", "100ms"),
            ("timeout_precommit", "300ms"),
            ("timeout_precommit_delta", "100ms"),
        ] {
            edit.set(Some("consensus"), key, value.into())?;
        }
        edit.set(Some("consensus"), "timeout_commit", go_duration(s.block_time).into())?;
        edit.set(Some("instrumentation"), "prometheus", true.into())?;
        edit.set(
            Some("instrumentation"),
            "prometheus_listen_addr",
            s.prometheus_laddr.as_str().into(),
        )?;
        if let Some(sync) = &s.state_sync {
            edit.state_sync(sync)?;
        }
        Ok(())
    })
}

/// Enables state sync in `<home>/config/config.toml` with `sync`'s servers
/// and trust, keeping the rest of the file (any node's CometBFT home).
pub fn configure_state_sync(home: &Path, sync: &StateSyncSettings) -> anyhow::Result<()> {
    rewrite_config(home, |edit| edit.state_sync(sync))
}

/// Sets `[statesync] enable` in `<home>/config/config.toml`, keeping the
/// rest of the file (comments included).
pub fn set_state_sync(home: &Path, enable: bool) -> anyhow::Result<()> {
    rewrite_config(home, |edit| edit.set(Some("statesync"), "enable", enable.into()))
}

/// Reads `<home>/config/config.toml`, applies `edit` (which keeps comments
/// around what it changes), and replaces the file atomically
/// ([`statesnap_transport::toml_file::rewrite`]).
fn rewrite_config(home: &Path, edit: impl FnOnce(&mut Editor) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let path = config_path(home);
    statesnap_transport::toml_file::rewrite(&path, |doc| edit(&mut Editor { doc, path: &path }))
}

struct Editor<'a> {
    doc: &'a mut DocumentMut,
    path: &'a Path,
}

impl Editor<'_> {
    /// Sets `[section] key = value`, keeping the comments around the old value.
    fn set(&mut self, section: Option<&str>, key: &str, value: Value) -> anyhow::Result<()> {
        let table = match section {
            None => self.doc.as_table_mut(),
            Some(name) => self.doc.get_mut(name).and_then(Item::as_table_mut).ok_or_else(|| {
                anyhow!(
                    "{} has no [{name}] table: is it CometBFT's config.toml?",
                    self.path.display()
                )
            })?,
        };
        statesnap_transport::toml_file::set_keeping_comments(table, key, value);
        Ok(())
    }

    /// `[statesync]`: enabled, with the light client's servers and trust.
    fn state_sync(&mut self, sync: &StateSyncSettings) -> anyhow::Result<()> {
        let height = i64::try_from(sync.trust_height).context("trust height too large")?;
        self.set(Some("statesync"), "enable", true.into())?;
        self.set(
            Some("statesync"),
            "rpc_servers",
            sync.rpc_servers.join(",").as_str().into(),
        )?;
        self.set(Some("statesync"), "trust_height", height.into())?;
        self.set(Some("statesync"), "trust_hash", sync.trust_hash.as_str().into())?;
        self.set(Some("statesync"), "trust_period", "168h0m0s".into())?;
        self.set(Some("statesync"), "discovery_time", "5s".into())?;
        self.set(Some("statesync"), "chunk_request_timeout", "15s".into())?;
        self.set(Some("statesync"), "chunk_fetchers", "4".into())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binary_points_to_the_install_script() {
        let empty = tempfile::tempdir().unwrap();
        let places = SearchPlaces {
            env: None,
            path: Some(empty.path().as_os_str().to_owned()),
            go_bins: vec![empty.path().join("go/bin")],
        };
        let err = format!("{:#}", CometBft::discover_in(&places).unwrap_err());
        assert!(err.contains("scripts/install-cometbft.sh"), "{err}");

        let places = SearchPlaces {
            env: Some(empty.path().join("nope").into_os_string()),
            ..places
        };
        let err = format!("{:#}", CometBft::discover_in(&places).unwrap_err());
        assert!(
            err.contains("COMETBFT is set") && err.contains("install-cometbft.sh"),
            "{err}"
        );
    }

    #[test]
    fn a_binary_of_another_release_is_skipped_and_named() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("cometbft");
        std::fs::write(&fake, "#!/bin/sh\necho 0.37.4\n").unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let places = SearchPlaces {
            env: None,
            path: Some(dir.path().as_os_str().to_owned()),
            go_bins: vec![],
        };
        let err = format!("{:#}", CometBft::discover_in(&places).unwrap_err());
        assert!(err.contains("0.37.4") && err.contains("install-cometbft.sh"), "{err}");

        std::fs::write(&fake, "#!/bin/sh\necho 0.38.26\n").unwrap();
        let found = CometBft::discover_in(&places).unwrap();
        assert_eq!((found.path, found.version.as_str()), (fake, "0.38.26"));
    }

    #[test]
    fn edits_keep_comments_and_fail_clearly_on_a_foreign_file() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(home.path().join("config")).unwrap();
        let original = "# top\nmoniker = \"x\"\nproxy_app = \"tcp://127.0.0.1:26658\"\n\
            [rpc]\n# where RPC listens\nladdr = \"tcp://127.0.0.1:26657\" # trailing\n\
            [p2p]\nladdr = \"\"\n[consensus]\n[instrumentation]\n[statesync]\n# sync?\nenable = false\n";
        std::fs::write(config_path(home.path()), original).unwrap();
        let settings = NodeSettings {
            moniker: "node1".into(),
            proxy_app: "kvstore".into(),
            p2p_laddr: "tcp://127.0.0.1:1".into(),
            rpc_laddr: "tcp://127.0.0.1:2".into(),
            persistent_peers: "a@127.0.0.1:3".into(),
            pex: false,
            block_time: Duration::from_millis(250),
            prometheus_laddr: "127.0.0.1:4".into(),
            state_sync: Some(StateSyncSettings {
                rpc_servers: vec!["http://127.0.0.1:2".into(), "http://127.0.0.1:12".into()],
                trust_height: 7,
                trust_hash: "AB".into(),
            }),
        };
        edit_config(home.path(), &settings).unwrap();
        let text = std::fs::read_to_string(config_path(home.path())).unwrap();
        assert!(
            text.contains("# where RPC listens\nladdr = \"tcp://127.0.0.1:2\" # trailing"),
            "{text}"
        );
        assert!(text.contains("# sync?\nenable = true"), "{text}");
        let parsed: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(parsed["consensus"]["timeout_commit"].as_str(), Some("250ms"));
        assert_eq!(parsed["statesync"]["trust_height"].as_integer(), Some(7));
        assert_eq!(parsed["p2p"]["pex"].as_bool(), Some(false));
        assert_eq!(
            parsed["statesync"]["rpc_servers"].as_str(),
            Some("http://127.0.0.1:2,http://127.0.0.1:12")
        );

        std::fs::write(config_path(home.path()), "moniker = \"x\"\n").unwrap();
        let err = format!("{:#}", edit_config(home.path(), &settings).unwrap_err());
        assert!(err.contains("no [rpc] table"), "{err}");
    }
}
