//! One node of a Xian network: where its files are, and starting and
//! stopping its two processes (CometBFT 0.39.3 on the host, `xian-abci` in
//! the Xian root file system).
//!
//! ## How xian-abci picks its socket, and how a proxy fits between
//!
//! `xian-abci` (0.9.3) takes no arguments. It reads `HOME` once, at import:
//! CometBFT's home is `$HOME/.cometbft`, its storage home (`STORAGE_HOME`)
//! `$HOME/.cometbft/xian`. It serves ABCI only on a unix socket, the path
//! of `proxy_app` in `$HOME/.cometbft/config/config.toml` (`unix://PATH`;
//! `/tmp/abci.sock` when empty; anything but `unix://` is refused at start).
//! It removes a stale socket file before listening. It stops serving, and
//! exits, as soon as any ABCI connection closes, so CometBFT is always
//! stopped first; a proxy in front of it must never close its connections.
//!
//! CometBFT reads the same `config.toml`, but `cometbft node --proxy_app
//! ADDR` overrides it. So [`XianNode::app_socket`] (in config.toml) is where
//! xian-abci listens, and CometBFT is started with `--proxy_app
//! unix://<cometbft_socket>`: the same path by default, or, with
//! `proxy_sockets`, [`XianNode::proxy_socket`], where something in between
//! (statesnap's proxy) listens and forwards to the app socket.
//!
//! Unix socket paths are limited to 107 bytes, so a network directory must
//! be short (checked at init). xian-abci runs in the root file system with
//! the network directory mounted at the same path, so both sides see one
//! socket file.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::bail;
use serde::{Deserialize, Serialize};

use super::install::XianTools;
use crate::rpc::{RpcClient, Status};
use crate::testnet::paths::HOST;
use crate::testnet::process::{log_tail, ProcessSpec, Supervisor};
use crate::testnet::Ports;

/// The longest unix socket path (`sun_path` holds 108 bytes with the NUL).
pub const MAX_SOCKET_PATH: usize = 107;
/// Lines of a log an error shows.
const LOG_LINES: usize = 30;
const POLL: Duration = Duration::from_millis(100);

/// One validator's files and ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct XianNode {
    pub name: String,
    pub index: usize,
    pub ports: Ports,
    /// CometBFT's node id.
    pub node_id: String,
    /// The validator's ed25519 key pair in hex: also its Xian account
    /// (the validators contract lists these public keys).
    pub validator_public_key: String,
    pub validator_private_key: String,
    /// `$HOME` of xian-abci: the node's directory.
    pub dir: PathBuf,
    /// A full node added after genesis (not a validator).
    #[serde(default)]
    pub joined: bool,
}

/// `statesnap proxy` between each node's CometBFT and its xian-abci, which
/// the proxy runs (`--run`), snapshots and restores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyOptions {
    /// The `statesnap` binary.
    pub statesnap_bin: PathBuf,
    /// A statesnap snapshot every this many blocks.
    pub snapshot_interval: u64,
    pub snapshot_keep_recent: u32,
    /// Extra arguments of every proxy (e.g. `--param chunk_bytes=…`).
    #[serde(default)]
    pub extra_args: Vec<String>,
    /// Extra arguments of one node's proxy (by node index), after `extra_args`.
    #[serde(default)]
    pub node_args: Vec<(usize, Vec<String>)>,
    /// Nodes (by index) whose CometBFT talks to xian-abci directly, without
    /// a proxy: Xian nodes that do not run statesnap.
    #[serde(default)]
    pub without_proxy: Vec<usize>,
}

impl ProxyOptions {
    /// Whether node `index` runs behind a proxy.
    pub fn proxied(&self, index: usize) -> bool {
        !self.without_proxy.contains(&index)
    }
}

impl XianNode {
    /// CometBFT's home (`$HOME/.cometbft`, where xian-abci expects it).
    pub fn cometbft_home(&self) -> PathBuf {
        self.dir.join(".cometbft")
    }

    /// Xian's storage home: its LMDB state is `lmdb/` in it, a statesnap `--home`.
    pub fn storage_home(&self) -> PathBuf {
        self.cometbft_home().join("xian")
    }

    /// Where xian-abci listens (config.toml's `proxy_app`).
    pub fn app_socket(&self) -> PathBuf {
        self.dir.join("app.sock")
    }

    /// Where CometBFT connects when a proxy sits in between.
    pub fn proxy_socket(&self) -> PathBuf {
        self.dir.join("proxy.sock")
    }

    pub fn cometbft_log(&self) -> PathBuf {
        self.dir.join("cometbft.log")
    }

    pub fn app_log(&self) -> PathBuf {
        self.dir.join("xian-abci.log")
    }

    /// The proxy's log (xian-abci's output goes there too: the proxy runs it).
    pub fn proxy_log(&self) -> PathBuf {
        self.dir.join("proxy.log")
    }

    fn proxy_pid(&self) -> PathBuf {
        self.dir.join("proxy.pid")
    }

    /// Where the proxy keeps its snapshots.
    pub fn snapshot_dir(&self) -> PathBuf {
        self.dir.join("statesnap-snapshots")
    }

    /// The proxy's Prometheus endpoint.
    pub fn metrics_url(&self) -> String {
        format!("http://{HOST}:{}/metrics", self.ports.metrics)
    }

    /// CometBFT's Prometheus page.
    pub fn prometheus_url(&self) -> String {
        format!("http://{HOST}:{}/metrics", self.ports.prometheus)
    }

    fn cometbft_pid(&self) -> PathBuf {
        self.dir.join("cometbft.pid")
    }

    fn app_pid(&self) -> PathBuf {
        self.dir.join("xian-abci.pid")
    }

    /// CometBFT's validator address of this node's key: the first 20 bytes
    /// of the SHA-256 of its ed25519 public key, upper-case hex.
    pub fn validator_address(&self) -> String {
        let key = hex::decode(&self.validator_public_key).unwrap_or_default();
        hex::encode_upper(&statesnap::plugin::sha256(&key)[..20])
    }

    /// CometBFT's RPC, e.g. `http://127.0.0.1:26601`.
    pub fn rpc_url(&self) -> String {
        format!("http://{HOST}:{}", self.ports.rpc)
    }

    pub fn rpc(&self) -> RpcClient {
        RpcClient::new(&self.rpc_url())
    }

    /// The logs' last lines, for error messages.
    pub fn log_tails(&self) -> String {
        [self.app_log(), self.proxy_log(), self.cometbft_log()]
            .iter()
            .filter(|log| log.exists())
            .map(|log| format!("--- {} (last lines) ---\n{}", log.display(), log_tail(log, LOG_LINES)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Starts xian-abci in the root file system through the wrapper
    /// `script` (`HOME` = the node's directory, `network_dir` mounted) and
    /// waits until its socket exists.
    pub fn start_app(
        &self,
        sup: &Supervisor,
        tools: &XianTools,
        script: &Path,
        network_dir: &Path,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let (program, args) = self.app_command(tools, script, network_dir);
        let _ = std::fs::remove_file(self.app_socket());
        sup.spawn(&ProcessSpec {
            label: format!("xian-abci of {}", self.name),
            program: Path::new(&program),
            args,
            log: &self.app_log(),
            pid_file: &self.app_pid(),
            marker: &self.dir,
        })?;
        let deadline = Instant::now() + timeout;
        while !self.app_socket().exists() {
            if sup.live_pid(&self.app_pid(), &self.dir)?.is_none() {
                bail!("xian-abci of {} exited at start\n{}", self.name, self.log_tails());
            }
            if Instant::now() >= deadline {
                bail!(
                    "xian-abci of {} did not create {} within {timeout:?}\n{}",
                    self.name,
                    self.app_socket().display(),
                    self.log_tails()
                );
            }
            std::thread::sleep(POLL);
        }
        Ok(())
    }

    /// The command that runs xian-abci in the root file system (`HOME` =
    /// the node's directory, `network_dir` mounted): program and arguments.
    fn app_command(&self, tools: &XianTools, script: &Path, network_dir: &Path) -> (String, Vec<String>) {
        let home = self.dir.to_string_lossy().into_owned();
        // xian-abci ignores its arguments: the home is passed only so that
        // the process's command line names it (how a pid file is checked).
        let cmd = tools.chroot_command(
            script,
            &[network_dir],
            &[("HOME", &home)],
            "xian-abci",
            std::slice::from_ref(&home),
        );
        let program = cmd.get_program().to_string_lossy().into_owned();
        (
            program,
            cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect(),
        )
    }

    /// Starts `statesnap proxy` on the node's proxy socket, running
    /// xian-abci itself (`--run`), snapshotting its home every
    /// `proxy.snapshot_interval` blocks; waits until the proxy listens.
    pub fn start_proxy(
        &self,
        sup: &Supervisor,
        tools: &XianTools,
        script: &Path,
        network_dir: &Path,
        chain_id: &str,
        proxy: &ProxyOptions,
    ) -> anyhow::Result<()> {
        let (program, app_args) = self.app_command(tools, script, network_dir);
        let storage = self.storage_home();
        let mut args: Vec<String> = vec![
            "proxy".into(),
            "--listen".into(),
            format!("unix://{}", self.proxy_socket().display()),
            "--app".into(),
            format!("unix://{}", self.app_socket().display()),
            "--xian-home".into(),
            storage.to_string_lossy().into_owned(),
            "--chain-id".into(),
            chain_id.into(),
            "--snapshot-dir".into(),
            self.snapshot_dir().to_string_lossy().into_owned(),
            "--snapshot-interval".into(),
            proxy.snapshot_interval.to_string(),
            "--snapshot-keep-recent".into(),
            proxy.snapshot_keep_recent.to_string(),
            "--metrics".into(),
            format!("{HOST}:{}", self.ports.metrics),
            "-v".into(),
        ];
        args.extend(proxy.extra_args.iter().cloned());
        for (_, extra) in proxy.node_args.iter().filter(|(i, _)| *i == self.index) {
            args.extend(extra.iter().cloned());
        }
        args.push("--run".into());
        args.push(program);
        args.extend(app_args);
        let _ = std::fs::remove_file(self.proxy_socket());
        sup.spawn(&ProcessSpec {
            label: format!("statesnap proxy of {}", self.name),
            program: &proxy.statesnap_bin,
            args,
            log: &self.proxy_log(),
            pid_file: &self.proxy_pid(),
            marker: &storage,
        })?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::os::unix::net::UnixStream::connect(self.proxy_socket()).is_err() {
            if sup.live_pid(&self.proxy_pid(), &storage)?.is_none() {
                bail!(
                    "the statesnap proxy of {} exited at start\n{}",
                    self.name,
                    self.log_tails()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "the statesnap proxy of {} does not listen\n{}",
                    self.name,
                    self.log_tails()
                );
            }
            std::thread::sleep(POLL);
        }
        Ok(())
    }

    /// Stops the proxy (SIGTERM: it stops xian-abci, then exits).
    pub fn stop_proxy(&self, sup: &Supervisor, grace: Duration) -> anyhow::Result<()> {
        sup.stop(
            &format!("statesnap proxy of {}", self.name),
            &self.proxy_pid(),
            &self.storage_home(),
            grace,
        )
    }

    /// The proxy's pid, when it runs.
    pub fn proxy_pid_running(&self, sup: &Supervisor) -> anyhow::Result<Option<u32>> {
        sup.live_pid(&self.proxy_pid(), &self.storage_home())
    }

    /// Starts CometBFT on the host, connecting to `socket` over ABCI.
    pub fn start_cometbft(&self, sup: &Supervisor, tools: &XianTools, socket: &Path) -> anyhow::Result<()> {
        let home = self.cometbft_home();
        let args = vec![
            "node".to_string(),
            "--home".to_string(),
            home.to_string_lossy().into_owned(),
            "--proxy_app".to_string(),
            format!("unix://{}", socket.display()),
        ];
        sup.spawn(&ProcessSpec {
            label: format!("cometbft of {}", self.name),
            program: &tools.cometbft,
            args,
            log: &self.cometbft_log(),
            pid_file: &self.cometbft_pid(),
            marker: &home,
        })?;
        Ok(())
    }

    /// Stops CometBFT (SIGTERM, SIGKILL after `grace`).
    pub fn stop_cometbft(&self, sup: &Supervisor, grace: Duration) -> anyhow::Result<()> {
        sup.stop(
            &format!("cometbft of {}", self.name),
            &self.cometbft_pid(),
            &self.cometbft_home(),
            grace,
        )
    }

    /// Stops xian-abci (it usually has exited already, when CometBFT closed
    /// its connections).
    pub fn stop_app(&self, sup: &Supervisor, grace: Duration) -> anyhow::Result<()> {
        sup.stop(
            &format!("xian-abci of {}", self.name),
            &self.app_pid(),
            &self.dir,
            grace,
        )
    }

    /// Whether each process is running: (cometbft, the app: xian-abci, or
    /// the proxy that runs it).
    pub fn running(&self, sup: &Supervisor) -> anyhow::Result<(bool, bool)> {
        Ok((
            sup.live_pid(&self.cometbft_pid(), &self.cometbft_home())?.is_some(),
            sup.live_pid(&self.app_pid(), &self.dir)?.is_some() || self.proxy_pid_running(sup)?.is_some(),
        ))
    }

    /// The node's live processes, labelled "cometbft", "proxy" and
    /// "xian-abci" (run by the proxy, or alone), from their pid files and
    /// the proxy's children; for sampling from another thread (no
    /// supervisor: a pid is taken as the node's while /proc has it).
    pub fn processes(&self) -> Vec<(String, u32)> {
        let live = |file: PathBuf| {
            crate::testnet::process::read_pid_file(&file)
                .ok()
                .flatten()
                .filter(|pid| Path::new(&format!("/proc/{pid}")).exists())
        };
        let mut out = Vec::new();
        if let Some(pid) = live(self.cometbft_pid()) {
            out.push(("cometbft".to_string(), pid));
        }
        if let Some(pid) = live(self.proxy_pid()) {
            out.push(("proxy".to_string(), pid));
            out.extend(children_of(pid).into_iter().map(|c| ("xian-abci".to_string(), c)));
        } else if let Some(pid) = live(self.app_pid()) {
            out.push(("xian-abci".to_string(), pid));
        }
        out
    }

    /// Waits until CometBFT reports a latest height of at least `height`.
    pub fn wait_for_height(&self, sup: &Supervisor, height: u64, timeout: Duration) -> anyhow::Result<u64> {
        self.wait_for(sup, timeout, &format!("height {height}"), |s| {
            (s.latest_block_height >= height).then_some(s.latest_block_height)
        })
    }

    /// Polls CometBFT's status until `done` gives a height (`goal` names
    /// what is awaited, for the errors); fails when either of the node's
    /// processes stops, or after `timeout`.
    pub fn wait_for(
        &self,
        sup: &Supervisor,
        timeout: Duration,
        goal: &str,
        mut done: impl FnMut(&Status) -> Option<u64>,
    ) -> anyhow::Result<u64> {
        let deadline = Instant::now() + timeout;
        let rpc = self.rpc();
        loop {
            let status = rpc.status();
            if let Some(h) = status.as_ref().ok().and_then(&mut done) {
                return Ok(h);
            }
            let seen = status.map(|s| s.latest_block_height);
            let (cometbft, app) = self.running(sup)?;
            if !cometbft || !app {
                bail!(
                    "{} stopped while waiting for {goal} (cometbft running: {cometbft}, xian-abci running: {app})\n{}",
                    self.name,
                    self.log_tails()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not reach {goal} within {timeout:?} (last status: {seen:?})\n{}",
                    self.name,
                    self.log_tails()
                );
            }
            std::thread::sleep(POLL);
        }
    }
}

/// The child processes of `pid` (every thread's `children` in /proc).
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut children = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return children;
    };
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            children.extend(text.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    children
}
