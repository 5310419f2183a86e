//! Running a testnet's nodes: start, stop, kill, wait for heights, read metrics.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::paths::HOST;
use super::process::{log_tail, ProcessSpec};
use super::{AppKind, NodeInfo, Testnet};

/// How long a process gets to exit on SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long statesnap may take to listen for ABCI.
const APP_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long CometBFT may take to serve RPC: it first replays blocks to the app
/// (InitChain imports the genesis state), so this is generous.
const COMETBFT_START_TIMEOUT: Duration = Duration::from_secs(300);
/// Lines of a log quoted in an error.
const LOG_TAIL_LINES: usize = 15;
const POLL: Duration = Duration::from_millis(100);

/// Which of a node's two processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proc {
    App,
    /// `statesnap proxy` between CometBFT and the app ([`TestnetOptions::proxy`]).
    Proxy,
    CometBft,
}

impl Testnet {
    /// Starts every node (validators first, then joined nodes, in order).
    /// Refuses when one is running; on failure stops the ones it started.
    pub fn start_all(&self) -> anyhow::Result<()> {
        for node in &self.nodes {
            if self.any_running(node) {
                bail!(
                    "{} is already running: stop the testnet first (`statesnap testnet stop --dir {}`)",
                    node.name,
                    self.dir.display()
                );
            }
        }
        for (i, node) in self.nodes.iter().enumerate() {
            if let Err(e) = self.start_node(&node.name, &[]) {
                for started in &self.nodes[..i] {
                    let _ = self.stop_node(&started.name);
                }
                return Err(e.context("starting the testnet (the nodes already started were stopped again)"));
            }
        }
        Ok(())
    }

    /// Starts one node: `statesnap start` first (with `extra_statesnap_args`)
    /// and waits for its ABCI port, then `cometbft start`, waiting for its RPC
    /// port. A node whose pid file names a live process is an error.
    pub fn start_node(&self, name: &str, extra_statesnap_args: &[String]) -> anyhow::Result<()> {
        let node = self.node(name)?;
        if self.any_running(node) {
            bail!(
                "{name} is already running: stop it first (`statesnap testnet stop --dir {}` stops every node)",
                self.dir.display()
            );
        }
        let uses_app = self.options.app == AppKind::Statesnap;
        for (what, port) in node.ports.named() {
            if !uses_app && (what == "abci" || what == "metrics") {
                continue;
            }
            if std::net::TcpListener::bind((HOST, port)).is_err() {
                bail!(
                    "port {port} ({what} of {name}) is already in use on {HOST}: stop whatever holds it (another \
                     testnet?), or make a new testnet with another --base-port"
                );
            }
        }
        let cometbft = self.cometbft()?.path.clone();
        if uses_app {
            let bin = &self.options.statesnap_bin;
            if !bin.is_file() {
                bail!(
                    "the statesnap binary {} does not exist: rebuild it (cargo build --release -p statesnap-cli)",
                    bin.display()
                );
            }
            let mut args = vec!["start".to_string(), "--home".into(), path_arg(&node.statesnap_home)?];
            args.extend(extra_statesnap_args.iter().cloned());
            let pid = self.supervisor.spawn(&self.spec(node, Proc::App, bin, args))?;
            if let Err(e) = self.wait_for_port(node, Proc::App, pid, node.ports.abci, APP_START_TIMEOUT) {
                let _ = self.kill_app(name);
                return Err(e);
            }
            if self.uses(Proc::Proxy) {
                let args = vec![
                    "proxy".to_string(),
                    "--listen".into(),
                    path_arg(&node.proxy_listen)?,
                    "--app".into(),
                    format!("tcp://{HOST}:{}", node.ports.abci),
                ];
                let pid = self.supervisor.spawn(&self.spec(node, Proc::Proxy, bin, args))?;
                if let Err(e) = self.wait_for_proxy(node, pid) {
                    let _ = self.kill_node(name);
                    return Err(e);
                }
            }
        } else if !extra_statesnap_args.is_empty() {
            bail!("statesnap arguments were given for {name}, but this testnet runs CometBFT's kvstore app");
        }
        let args = vec!["start".to_string(), "--home".into(), path_arg(&node.cometbft_home)?];
        let pid = self
            .supervisor
            .spawn(&self.spec(node, Proc::CometBft, &cometbft, args))?;
        if let Err(e) = self.wait_for_port(node, Proc::CometBft, pid, node.ports.rpc, COMETBFT_START_TIMEOUT) {
            let _ = self.kill_node(name);
            return Err(e);
        }
        Ok(())
    }

    /// Stops every node (SIGTERM, SIGKILL after 10 s), joined nodes first.
    /// Keeps going past a failure and reports all of them.
    pub fn stop_all(&self) -> anyhow::Result<()> {
        let errors: Vec<String> = self
            .nodes
            .iter()
            .rev()
            .filter_map(|n| self.stop_node(&n.name).err().map(|e| format!("{e:#}")))
            .collect();
        if !errors.is_empty() {
            bail!("could not stop every process: {}", errors.join("; "));
        }
        Ok(())
    }

    /// Stops one node: CometBFT first (so it does not see its app vanish),
    /// then statesnap. Removes the pid files.
    pub fn stop_node(&self, name: &str) -> anyhow::Result<()> {
        self.end(self.node(name)?, Proc::CometBft, STOP_GRACE)?;
        if self.uses(Proc::Proxy) {
            self.end(self.node(name)?, Proc::Proxy, STOP_GRACE)?;
        }
        self.end(self.node(name)?, Proc::App, STOP_GRACE)
    }

    /// SIGKILLs only the proxy of `name` (a crash, for tests); CometBFT then
    /// exits by itself, as when its app dies.
    pub fn kill_proxy(&self, name: &str) -> anyhow::Result<()> {
        self.end(self.node(name)?, Proc::Proxy, Duration::ZERO)
    }

    /// SIGKILLs only the statesnap process of `name` (a crash, for tests).
    /// CometBFT 0.38 then exits by itself when it notices the broken ABCI
    /// connection; call [`stop_node`](Self::stop_node) (or wait for
    /// `is_running(name).1` to turn false) before starting the node again.
    pub fn kill_app(&self, name: &str) -> anyhow::Result<()> {
        self.end(self.node(name)?, Proc::App, Duration::ZERO)
    }

    /// SIGKILLs both processes of `name`.
    pub fn kill_node(&self, name: &str) -> anyhow::Result<()> {
        let node = self.node(name)?;
        self.end(node, Proc::CometBft, Duration::ZERO)?;
        if self.uses(Proc::Proxy) {
            self.end(node, Proc::Proxy, Duration::ZERO)?;
        }
        self.end(node, Proc::App, Duration::ZERO)
    }

    /// Whether `name`'s statesnap and CometBFT processes run (false for an unknown node).
    pub fn is_running(&self, name: &str) -> (bool, bool) {
        match self.node(name) {
            Ok(node) => (self.running(node, Proc::App), self.running(node, Proc::CometBft)),
            Err(_) => (false, false),
        }
    }

    /// The pid of `name`'s statesnap and CometBFT processes, when running.
    pub fn pids(&self, name: &str) -> anyhow::Result<(Option<u32>, Option<u32>)> {
        let node = self.node(name)?;
        let pid = |p| {
            let (file, marker) = files(node, p);
            self.supervisor.live_pid(file, marker)
        };
        Ok((pid(Proc::App)?, pid(Proc::CometBft)?))
    }

    /// The text statesnap serves at `/metrics` on `name`.
    pub fn metrics(&self, name: &str) -> anyhow::Result<String> {
        let node = self.node(name)?;
        if self.options.app == AppKind::Kvstore {
            bail!("{name} runs CometBFT's kvstore app, which has no statesnap metrics");
        }
        let url = node.metrics_url();
        crate::rpc::get_text(&url).with_context(|| format!("reading {url} (is {name}'s statesnap running?)"))
    }

    /// Waits until `name` reports a latest height of at least `height`;
    /// returns that height. Fails early when one of its processes is gone.
    pub fn wait_for_height(&self, name: &str, height: u64, timeout: Duration) -> anyhow::Result<u64> {
        self.wait_for(name, timeout, &format!("height {height}"), |s| {
            (s.latest_block_height >= height).then_some(s.latest_block_height)
        })
    }

    /// Waits until `name` has finished catching up (state or block sync) and
    /// has a block; returns its height.
    pub fn wait_for_sync(&self, name: &str, timeout: Duration) -> anyhow::Result<u64> {
        self.wait_for(name, timeout, "the end of catching up", |s| {
            (!s.catching_up && s.latest_block_height > 0).then_some(s.latest_block_height)
        })
    }

    fn wait_for(
        &self,
        name: &str,
        timeout: Duration,
        goal: &str,
        done: impl Fn(&crate::rpc::Status) -> Option<u64>,
    ) -> anyhow::Result<u64> {
        let node = self.node(name)?;
        let rpc = self.rpc(name)?;
        let deadline = Instant::now() + timeout;
        loop {
            let last = match rpc.status() {
                Ok(status) => match done(&status) {
                    Some(h) => return Ok(h),
                    None => format!(
                        "at height {}, catching up: {}",
                        status.latest_block_height, status.catching_up
                    ),
                },
                Err(e) => format!("{e:#}"),
            };
            for proc in [Proc::CometBft, Proc::Proxy, Proc::App] {
                if self.uses(proc) && !self.running(node, proc) {
                    bail!(
                        "{} stopped while waiting for {goal}; {}",
                        label(node, proc),
                        tail_message(log_of(node, proc))
                    );
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "{name} did not reach {goal} within {} ({last}); see {}",
                    humantime::format_duration(timeout),
                    node.cometbft_log.display()
                );
            }
            std::thread::sleep(POLL * 2);
        }
    }

    /// Waits until `port` accepts connections, failing early when `pid` exits.
    fn wait_for_port(&self, node: &NodeInfo, proc: Proc, pid: u32, port: u16, timeout: Duration) -> anyhow::Result<()> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + timeout;
        let marker = files(node, proc).1;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
                return Ok(());
            }
            if !self.supervisor.is_alive(pid, marker) {
                bail!(
                    "{} exited while starting; {}",
                    label(node, proc),
                    tail_message(log_of(node, proc))
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not listen on {addr} within {}; {}",
                    label(node, proc),
                    humantime::format_duration(timeout),
                    tail_message(log_of(node, proc))
                );
            }
            std::thread::sleep(POLL);
        }
    }

    fn end(&self, node: &NodeInfo, proc: Proc, grace: Duration) -> anyhow::Result<()> {
        let (pid_file, marker) = files(node, proc);
        self.supervisor.stop(&label(node, proc), pid_file, marker, grace)
    }

    fn running(&self, node: &NodeInfo, proc: Proc) -> bool {
        let (pid_file, marker) = files(node, proc);
        matches!(self.supervisor.live_pid(pid_file, marker), Ok(Some(_)))
    }

    fn any_running(&self, node: &NodeInfo) -> bool {
        self.running(node, Proc::App)
            || self.running(node, Proc::CometBft)
            || (self.uses(Proc::Proxy) && self.running(node, Proc::Proxy))
    }

    fn uses(&self, proc: Proc) -> bool {
        match proc {
            Proc::CometBft => true,
            Proc::App => self.options.app == AppKind::Statesnap,
            Proc::Proxy => self.options.app == AppKind::Statesnap && self.options.proxy,
        }
    }

    /// Waits until the proxy's socket accepts connections.
    fn wait_for_proxy(&self, node: &NodeInfo, pid: u32) -> anyhow::Result<()> {
        let socket = node.proxy_listen.display().to_string();
        let socket = socket.trim_start_matches("unix://");
        let deadline = Instant::now() + APP_START_TIMEOUT;
        loop {
            if std::os::unix::net::UnixStream::connect(socket).is_ok() {
                return Ok(());
            }
            if !self.supervisor.is_alive(pid, &node.proxy_listen) {
                bail!(
                    "{} exited while starting; {}",
                    label(node, Proc::Proxy),
                    tail_message(log_of(node, Proc::Proxy))
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not listen on {socket} within {}; {}",
                    label(node, Proc::Proxy),
                    humantime::format_duration(APP_START_TIMEOUT),
                    tail_message(log_of(node, Proc::Proxy))
                );
            }
            std::thread::sleep(POLL);
        }
    }

    fn spec<'a>(&self, node: &'a NodeInfo, proc: Proc, program: &'a Path, args: Vec<String>) -> ProcessSpec<'a> {
        let (pid_file, marker) = files(node, proc);
        ProcessSpec {
            label: label(node, proc),
            program,
            args,
            log: log_of(node, proc),
            pid_file,
            marker,
        }
    }
}

/// A process's pid file and the home its command line names.
fn files(node: &NodeInfo, proc: Proc) -> (&Path, &Path) {
    match proc {
        Proc::App => (&node.statesnap_pid, &node.statesnap_home),
        Proc::Proxy => (&node.proxy_pid, &node.proxy_listen),
        Proc::CometBft => (&node.cometbft_pid, &node.cometbft_home),
    }
}

fn log_of(node: &NodeInfo, proc: Proc) -> &Path {
    match proc {
        Proc::App => &node.statesnap_log,
        Proc::Proxy => &node.proxy_log,
        Proc::CometBft => &node.cometbft_log,
    }
}

fn label(node: &NodeInfo, proc: Proc) -> String {
    match proc {
        Proc::App => format!("statesnap process of {}", node.name),
        Proc::Proxy => format!("statesnap proxy of {}", node.name),
        Proc::CometBft => format!("cometbft process of {}", node.name),
    }
}

fn tail_message(log: &Path) -> String {
    format!("last lines of {}:\n{}", log.display(), log_tail(log, LOG_TAIL_LINES))
}

/// A path as a command-line argument (the pid check compares it byte for byte).
fn path_arg(path: &Path) -> anyhow::Result<String> {
    path.to_str().map(str::to_string).with_context(|| {
        format!(
            "{} is not UTF-8: use a testnet directory with a plain name",
            path.display()
        )
    })
}
