//! Real servers for the transport tests and benchmarks: an S3-compatible
//! object store ([`SeaweedS3`], SeaweedFS's `weed`) and a plain HTTP/1.1
//! static file server with fault knobs ([`StaticHttpServer`], a mirror).
//!
//! # SeaweedS3
//!
//! `scripts/install-seaweedfs.sh` (run by `scripts/setup.sh`) builds `weed`
//! into [`DEFAULT_WEED_DIR`]; [`weed_binary`] finds it through
//! `$STATESNAP_WEED` (the binary), `$STATESNAP_WEED_DIR/weed`, the default
//! directory, then `weed` on `PATH`.
//!
//! [`SeaweedS3::start`] runs one `weed server` (master, volume server, filer
//! and S3 gateway in one process) on 127.0.0.1 only, with its data, its log
//! (`weed.log`) and its configuration in the directory it is given, and
//! returns once an object can be written (about 10 s: the embedded filer waits
//! that long before it joins the cluster). Without an identity configuration
//! the gateway accepts every request, anonymous or signed with any
//! credentials. An S3 client needs (see [`SeaweedS3::s3_env`]):
//!
//! ```text
//! AWS_ENDPOINT_URL=http://127.0.0.1:PORT   (SeaweedS3::endpoint; path-style requests)
//! AWS_ALLOW_HTTP=true                      (plain HTTP)
//! AWS_REGION=us-east-1                     (any region; it is only signed)
//! AWS_ACCESS_KEY_ID=statesnap              (any non-empty value: without one a
//! AWS_SECRET_ACCESS_KEY=statesnap           client looks for instance credentials)
//! ```
//!
//! Dropping it kills its process group (SIGTERM, then SIGKILL after half a
//! second: weed takes more than 10 s to stop on SIGTERM), and a watchdog in
//! the same group kills it if the process that started it dies without
//! dropping it (a test killed on timeout leaves no `weed` behind).
//!
//! # StaticHttpServer
//!
//! Serves a directory over HTTP/1.1 (GET and HEAD, single `Range: bytes=`
//! ranges, 404 for anything that is not a file under the root), with knobs
//! that make it a bad mirror (corrupt chunk bodies, a delay per request, a 500
//! every Nth request) and counters of what was asked.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use statesnap_transport::bootstrap::is_executable;

// ---- finding weed ---------------------------------------------------------------------------------

/// The SeaweedFS release `scripts/install-seaweedfs.sh` builds.
pub const WEED_RELEASE: &str = "4.53";
/// Where `scripts/install-seaweedfs.sh` installs `weed` when
/// `$STATESNAP_WEED_DIR` is unset.
pub const DEFAULT_WEED_DIR: &str = "/var/lib/statesnap/seaweedfs-4.53";
const WEED_HINT: &str =
    "run scripts/install-seaweedfs.sh (scripts/setup.sh runs it), or set STATESNAP_WEED to a weed binary";

/// The access key id [`SeaweedS3::s3_env`] suggests (any value is accepted).
pub const S3_ACCESS_KEY_ID: &str = "statesnap";
/// The secret access key [`SeaweedS3::s3_env`] suggests (any value is accepted).
pub const S3_SECRET_ACCESS_KEY: &str = "statesnap";
/// The region [`SeaweedS3::s3_env`] suggests (any value is accepted).
pub const S3_REGION: &str = "us-east-1";

/// SeaweedFS's `weed`: `$STATESNAP_WEED`, else `$STATESNAP_WEED_DIR/weed`
/// (else [`DEFAULT_WEED_DIR`]`/weed`), else `weed` on `PATH`. Fails, naming
/// the install script, when there is none.
pub fn weed_binary() -> anyhow::Result<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    weed_binary_in(var("STATESNAP_WEED"), var("STATESNAP_WEED_DIR"), var("PATH"))
}

/// [`weed_binary`] from explicit values of `$STATESNAP_WEED`,
/// `$STATESNAP_WEED_DIR` and `$PATH`.
pub fn weed_binary_in(
    weed: Option<OsString>,
    weed_dir: Option<OsString>,
    path: Option<OsString>,
) -> anyhow::Result<PathBuf> {
    if let Some(weed) = weed {
        let weed = PathBuf::from(weed);
        if !is_executable(&weed) {
            bail!(
                "STATESNAP_WEED is {}, which is not an executable file: {WEED_HINT}",
                weed.display()
            );
        }
        return Ok(weed);
    }
    let dir = weed_dir.map_or_else(|| PathBuf::from(DEFAULT_WEED_DIR), PathBuf::from);
    let installed = dir.join("weed");
    if is_executable(&installed) {
        return Ok(installed);
    }
    if let Some(path) = path {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("weed");
            if is_executable(&candidate) {
                return Ok(candidate);
            }
        }
    }
    bail!(
        "SeaweedFS's weed is not installed (not in {} nor on PATH): {WEED_HINT}",
        dir.display()
    )
}

// ---- SeaweedS3 -------------------------------------------------------------------------------------

/// Loopback only.
const HOST: &str = "127.0.0.1";
/// Ports are taken in blocks of ten (eight are used) from this range, below
/// the kernel's ephemeral ports, as `testnet` does.
const PORT_RANGE: std::ops::Range<u16> = 20_000..32_000;
const PORT_BLOCK: u16 = 10;
/// How long `start` waits for an object to be writable.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long weed gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_millis(500);
/// Attempts with fresh ports when another process took one first.
const START_ATTEMPTS: usize = 3;
const PROBE_BUCKET: &str = "statesnap-ready-probe";

/// Blocks handed out in this process and not yet released (two servers
/// started at the same moment never pick the same block).
static RESERVED_BLOCKS: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// The ports of one `weed server`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WeedPorts {
    base: u16,
}

impl WeedPorts {
    fn master(self) -> u16 {
        self.base
    }
    fn master_grpc(self) -> u16 {
        self.base + 1
    }
    fn volume(self) -> u16 {
        self.base + 2
    }
    fn volume_grpc(self) -> u16 {
        self.base + 3
    }
    fn filer(self) -> u16 {
        self.base + 4
    }
    fn filer_grpc(self) -> u16 {
        self.base + 5
    }
    fn s3(self) -> u16 {
        self.base + 6
    }
    fn s3_grpc(self) -> u16 {
        self.base + 7
    }

    /// A block of ten ports free right now on 127.0.0.1 and not reserved by
    /// this process, reserved until [`release`](Self::release).
    fn reserve() -> anyhow::Result<WeedPorts> {
        use rand::Rng;
        let mut rng = rand::rng();
        for _ in 0..200 {
            let base = rng.random_range(PORT_RANGE.start..PORT_RANGE.end - PORT_BLOCK) / PORT_BLOCK * PORT_BLOCK;
            let mut reserved = RESERVED_BLOCKS.lock().unwrap_or_else(|e| e.into_inner());
            let reserved = reserved.get_or_insert_with(HashSet::new);
            if reserved.contains(&base) {
                continue;
            }
            if (base..base + PORT_BLOCK).all(|port| TcpListener::bind((HOST, port)).is_ok()) {
                reserved.insert(base);
                return Ok(WeedPorts { base });
            }
        }
        bail!(
            "found no free block of {PORT_BLOCK} ports between {} and {} on {HOST}",
            PORT_RANGE.start,
            PORT_RANGE.end
        )
    }

    fn release(self) {
        let mut reserved = RESERVED_BLOCKS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(reserved) = reserved.as_mut() {
            reserved.remove(&self.base);
        }
    }

    /// The Unix sockets weed creates in /tmp for its gRPC services, named by port.
    fn grpc_sockets(self) -> [PathBuf; 4] {
        [
            format!("/tmp/seaweedfs-master-grpc-{}.sock", self.master_grpc()),
            format!("/tmp/seaweedfs-volume-grpc-{}.sock", self.volume_grpc()),
            format!("/tmp/seaweedfs-filer-grpc-{}.sock", self.filer_grpc()),
            format!("/tmp/seaweedfs-s3-grpc-{}.sock", self.s3_grpc()),
        ]
        .map(PathBuf::from)
    }
}

/// A running `weed server` with its S3 gateway on 127.0.0.1, for tests and
/// benchmarks. Dropping it stops it (see the [module](self) documentation).
#[derive(Debug)]
pub struct SeaweedS3 {
    weed: Child,
    /// `sh` in weed's process group, killing the group when this pipe closes.
    watchdog: Child,
    watchdog_pipe: Option<ChildStdin>,
    ports: WeedPorts,
    dir: PathBuf,
    log: PathBuf,
    agent: ureq::Agent,
    stopped: bool,
}

impl SeaweedS3 {
    /// Starts `weed server` with its files in `dir` (created if missing:
    /// `data/`, `weed.log`, `master.toml`), using [`weed_binary`]. Returns
    /// once an object can be written; fails, with the end of the log, when
    /// that takes more than two minutes or weed exits.
    pub fn start(dir: &Path) -> anyhow::Result<SeaweedS3> {
        Self::start_with(&weed_binary()?, dir)
    }

    /// [`start`](Self::start) with the `weed` binary `weed`.
    pub fn start_with(weed: &Path, dir: &Path) -> anyhow::Result<SeaweedS3> {
        std::fs::create_dir_all(dir.join("data"))
            .with_context(|| format!("creating the SeaweedFS directory {}", dir.display()))?;
        let dir = dir
            .canonicalize()
            .with_context(|| format!("resolving {}", dir.display()))?;
        // Read from the working directory: one volume per bucket to start
        // with (instead of 7), and no hold on the first volume id.
        std::fs::write(
            dir.join("master.toml"),
            "# written by statesnap's harness (object_server.rs)\n\
             [master.volume_growth]\ncopy_1 = 1\nallocation_deferral = \"0s\"\n",
        )
        .context("writing master.toml")?;
        let mut last_error = None;
        for attempt in 1..=START_ATTEMPTS {
            let ports = WeedPorts::reserve()?;
            let started = Self::start_once(weed, &dir, ports);
            if started.is_err() {
                ports.release();
            }
            match started {
                Ok(server) => return Ok(server),
                Err(StartError::PortTaken(e)) if attempt < START_ATTEMPTS => {
                    tracing::debug!("weed lost a port to another process, trying other ports: {e:#}");
                    last_error = Some(e);
                }
                Err(StartError::PortTaken(e) | StartError::Other(e)) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("weed did not start")))
    }

    fn start_once(weed: &Path, dir: &Path, ports: WeedPorts) -> Result<SeaweedS3, StartError> {
        let log = dir.join("weed.log");
        let other = StartError::Other;
        let mut log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))
            .map_err(other)?;
        let args = weed_args(dir, ports);
        writeln!(
            log_file,
            "=== statesnap harness starting {} {}",
            weed.display(),
            args.join(" ")
        )
        .context("writing the log")
        .map_err(other)?;
        let log_start = log_file.metadata().map(|m| m.len()).unwrap_or(0);
        let weed_child = Command::new(weed)
            .args(&args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().context("opening the log").map_err(other)?)
            .stderr(log_file)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", weed.display()))
            .map_err(other)?;
        let pgid = weed_child.id();
        // The watchdog joins weed's process group and kills it when its
        // standard input closes: when this process exits, however it exits.
        let watchdog = Command::new("/bin/sh")
            .args(["-c", "read -r _; kill -s KILL -- -\"$0\"", &pgid.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(pgid as i32)
            .spawn();
        let mut watchdog = match watchdog {
            Ok(w) => w,
            Err(e) => {
                kill_group(pgid, libc::SIGKILL);
                let mut weed_child = weed_child;
                let _ = weed_child.wait();
                return Err(other(
                    anyhow::Error::new(e).context("starting weed's watchdog (/bin/sh)"),
                ));
            }
        };
        let watchdog_pipe = watchdog.stdin.take();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(30)))
            .http_status_as_error(false)
            .build()
            .into();
        let mut server = SeaweedS3 {
            weed: weed_child,
            watchdog,
            watchdog_pipe,
            ports,
            dir: dir.to_path_buf(),
            log,
            agent,
            stopped: false,
        };
        match server.wait_ready(log_start) {
            Ok(()) => Ok(server),
            Err(e) => {
                server.shutdown();
                Err(e)
            }
        }
    }

    /// Waits until a probe object can be written and deleted.
    fn wait_ready(&mut self, log_start: u64) -> Result<(), StartError> {
        let started = Instant::now();
        let deadline = started + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.weed.try_wait() {
                let tail = log_tail(&self.log, log_start, 30);
                let e = anyhow::anyhow!(
                    "weed exited ({status}) while starting; the end of {}:\n{tail}",
                    self.log.display()
                );
                return Err(if tail.contains("address already in use") {
                    StartError::PortTaken(e)
                } else {
                    StartError::Other(e)
                });
            }
            let last = match self.probe() {
                Ok(()) => {
                    tracing::debug!(
                        "weed answers S3 on {} after {:.1} s",
                        self.endpoint(),
                        started.elapsed().as_secs_f64()
                    );
                    return Ok(());
                }
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() >= deadline {
                return Err(StartError::Other(anyhow::anyhow!(
                    "weed's S3 gateway on {} could not store an object within {} s (last: {last}); the end of {}:\n{}",
                    self.endpoint(),
                    START_TIMEOUT.as_secs(),
                    self.log.display(),
                    log_tail(&self.log, log_start, 30)
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Creates the probe bucket, writes, reads and deletes an object in it,
    /// and deletes the bucket.
    fn probe(&self) -> anyhow::Result<()> {
        let bucket = format!("{}/{PROBE_BUCKET}", self.endpoint());
        self.create_bucket(PROBE_BUCKET)?;
        let object = format!("{bucket}/probe");
        let status = self.agent.put(&object).send(&b"ready"[..])?.status().as_u16();
        if status != 200 {
            bail!("PUT {object} answered {status}");
        }
        let mut response = self.agent.get(&object).call()?;
        let body = response.body_mut().read_to_string()?;
        if response.status() != 200 || body != "ready" {
            bail!("GET {object} answered {} `{body}`", response.status());
        }
        for url in [&object, &bucket] {
            let status = self.agent.delete(url).call()?.status().as_u16();
            if !matches!(status, 200 | 204) {
                bail!("DELETE {url} answered {status}");
            }
        }
        Ok(())
    }

    /// The S3 endpoint, `http://127.0.0.1:PORT` (path-style: buckets are
    /// the first segment of the path).
    pub fn endpoint(&self) -> String {
        format!("http://{HOST}:{}", self.ports.s3())
    }

    /// The S3 gateway's port.
    pub fn port(&self) -> u16 {
        self.ports.s3()
    }

    /// The environment an S3 client (`object_store`'s
    /// `AmazonS3Builder::from_env`, the AWS CLI, `statesnap`) needs to use
    /// this server: endpoint, plain HTTP, a region and dummy credentials.
    pub fn s3_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
            ("AWS_REGION", S3_REGION.to_string()),
            ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY_ID.to_string()),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET_ACCESS_KEY.to_string()),
        ]
    }

    /// Creates bucket `name` (an unsigned `PUT /name`). Creating a bucket
    /// that already exists succeeds.
    pub fn create_bucket(&self, name: &str) -> anyhow::Result<()> {
        let url = format!("{}/{name}", self.endpoint());
        let mut response = self
            .agent
            .put(&url)
            .send_empty()
            .with_context(|| format!("PUT {url}"))?;
        let status = response.status().as_u16();
        if status == 200 {
            return Ok(());
        }
        let body = response.body_mut().read_to_string().unwrap_or_default();
        if status == 409 && body.contains("BucketAlreadyOwnedByYou") {
            return Ok(());
        }
        bail!("creating bucket `{name}`: PUT {url} answered {status}: {body}")
    }

    /// The directory weed keeps its files in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// weed's log.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// weed's process id, which is also its process group's.
    pub fn pid(&self) -> u32 {
        self.weed.id()
    }

    /// Stops weed now (what dropping it does) and checks that nothing of
    /// its process group is left.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown();
        let pgid = self.weed.id();
        if group_alive(pgid) {
            bail!("processes of weed's group {pgid} survived SIGKILL");
        }
        Ok(())
    }

    fn shutdown(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let pgid = self.weed.id();
        if matches!(self.weed.try_wait(), Ok(None)) {
            kill_group(pgid, libc::SIGTERM);
            wait_group_gone(&mut self.weed, pgid, STOP_GRACE);
        }
        kill_group(pgid, libc::SIGKILL);
        if !wait_group_gone(&mut self.weed, pgid, Duration::from_secs(10)) {
            tracing::warn!("weed's process group {pgid} is still there 10 s after SIGKILL");
        }
        drop(self.watchdog_pipe.take());
        let _ = self.weed.wait();
        let _ = self.watchdog.wait();
        for socket in self.ports.grpc_sockets() {
            let _ = std::fs::remove_file(socket);
        }
        self.ports.release();
    }
}

impl Drop for SeaweedS3 {
    fn drop(&mut self) {
        self.shutdown();
    }
}

enum StartError {
    /// weed exited because one of its ports was taken meanwhile.
    PortTaken(anyhow::Error),
    Other(anyhow::Error),
}

fn weed_args(dir: &Path, ports: WeedPorts) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "server".into(),
        format!("-dir={}", dir.join("data").display()),
        format!("-ip={HOST}"),
        format!("-ip.bind={HOST}"),
        format!("-master.port={}", ports.master()),
        format!("-master.port.grpc={}", ports.master_grpc()),
        "-master.telemetry=false".into(),
        // Volumes are sparse files grown on demand: a small size limit and a
        // generous count keep the disk use to what is stored.
        "-master.volumeSizeLimitMB=128".into(),
        format!("-volume.port={}", ports.volume()),
        format!("-volume.port.grpc={}", ports.volume_grpc()),
        "-volume.max=400".into(),
        format!("-filer.port={}", ports.filer()),
        format!("-filer.port.grpc={}", ports.filer_grpc()),
        "-s3".into(),
        format!("-s3.port={}", ports.s3()),
        format!("-s3.port.grpc={}", ports.s3_grpc()),
        "-s3.port.iceberg=0".into(),
        "-s3.port.lance=0".into(),
    ];
    // The filer's and the gateway's local sockets go in `dir` when the path
    // fits a socket address (otherwise weed puts them in /tmp by port).
    for (flag, name) in [("filer", "filer.sock"), ("s3", "s3.sock")] {
        let path = dir.join(name);
        if path.as_os_str().len() < 100 {
            args.push(format!("-{flag}.localSocket={}", path.display()));
        }
    }
    args
}

/// Sends `signal` to process group `pgid`.
fn kill_group(pgid: u32, signal: libc::c_int) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return;
    };
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) takes plain integers; a negative pid names the group
    // of a process this module started (and has not yet reaped).
    unsafe {
        libc::kill(-pgid, signal);
    }
}

/// Waits until no live (non-zombie) process is in group `pgid`, reaping
/// `leader` meanwhile; false on timeout.
fn wait_group_gone(leader: &mut Child, pgid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let _ = leader.try_wait();
        if !group_alive(pgid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a live (non-zombie) process is in process group `pgid`.
pub(crate) fn group_alive(pgid: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let name = entry.file_name();
        let Some(pid) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else {
            return false;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        // `pid (comm) STATE PPID PGRP …`; comm may hold spaces and parentheses.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let pgrp = fields.nth(1).and_then(|p| p.parse::<u32>().ok());
        pgrp == Some(pgid) && !matches!(state, Some("Z" | "X"))
    })
}

/// The last `lines` lines of `path` written after byte `from`.
fn log_tail(path: &Path, from: u64, lines: usize) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(path) {
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let start = from.max(len.saturating_sub(64 * 1024));
        if file.seek(SeekFrom::Start(start)).is_ok() {
            let mut bytes = Vec::new();
            let _ = file.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---- StaticHttpServer ------------------------------------------------------------------------------

/// How a [`StaticHttpServer`] starts; every knob but `threads` can also be
/// changed while it runs.
#[derive(Debug, Clone)]
pub struct StaticHttpOptions {
    /// Worker threads: how many requests are answered at the same time.
    pub threads: usize,
    /// Flip one byte of every response body whose path contains `/chunks/`.
    pub corrupt: bool,
    /// Wait this long before answering each request.
    pub delay_per_request: Duration,
    /// Answer 500 to every Nth request (the Nth, 2Nth, …; counted over GETs and HEADs).
    pub fail_every: Option<u32>,
}

impl Default for StaticHttpOptions {
    fn default() -> Self {
        StaticHttpOptions {
            threads: 8,
            corrupt: false,
            delay_per_request: Duration::ZERO,
            fail_every: None,
        }
    }
}

/// What the workers share: the knobs and the counters.
#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    corrupt: AtomicBool,
    delay_nanos: AtomicU64,
    /// 0: never.
    fail_every: AtomicU32,
    requests: AtomicU64,
    gets: AtomicU64,
    heads: AtomicU64,
    chunk_gets: AtomicU64,
    failures_injected: AtomicU64,
    bytes_served: AtomicU64,
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
    /// GET requests per decoded path.
    gets_by_path: Mutex<BTreeMap<String, u64>>,
}

/// A plain HTTP/1.1 server of the files under a directory on 127.0.0.1, with
/// fault knobs and counters (a mirror, good or bad). Dropping it stops it.
///
/// GET and HEAD of a file under the root answer 200 with its length as
/// `Content-Length` (or 206 for a satisfiable single `Range: bytes=a-b`,
/// `a-` or `-n`, 416 for an unsatisfiable one); a path that is not a file
/// under the root answers 404, one with a `..` or `.` segment 400, other
/// methods 405. Paths are percent-decoded; the query is ignored.
pub struct StaticHttpServer {
    shared: Arc<Shared>,
    server: Option<Arc<tiny_http::Server>>,
    /// The listening socket (a second descriptor of the server's), to shut
    /// it down on drop: tiny_http closes its own asynchronously.
    listener: TcpListener,
    workers: Vec<JoinHandle<()>>,
    addr: SocketAddr,
    root: PathBuf,
}

impl StaticHttpServer {
    /// Serves `root` with the default options (8 threads, no faults).
    pub fn start(root: &Path) -> anyhow::Result<StaticHttpServer> {
        Self::start_with(root, StaticHttpOptions::default())
    }

    /// Serves `root` on a free port of 127.0.0.1.
    pub fn start_with(root: &Path, options: StaticHttpOptions) -> anyhow::Result<StaticHttpServer> {
        let root = root
            .canonicalize()
            .with_context(|| format!("the directory to serve, {}", root.display()))?;
        if !root.is_dir() {
            bail!("{} is not a directory", root.display());
        }
        let listener = TcpListener::bind((HOST, 0)).with_context(|| format!("listening on {HOST}"))?;
        let addr = listener.local_addr().context("the HTTP server's address")?;
        let server = tiny_http::Server::from_listener(listener.try_clone().context("duplicating the listener")?, None)
            .map_err(|e| anyhow::anyhow!("starting the HTTP server on {addr}: {e}"))?;
        let server = Arc::new(server);
        let shared = Arc::new(Shared::default());
        shared.corrupt.store(options.corrupt, Ordering::SeqCst);
        shared
            .delay_nanos
            .store(duration_nanos(options.delay_per_request), Ordering::SeqCst);
        shared
            .fail_every
            .store(options.fail_every.unwrap_or(0), Ordering::SeqCst);
        let workers = (0..options.threads.max(1))
            .map(|i| {
                let server = Arc::clone(&server);
                let shared = Arc::clone(&shared);
                let root = root.clone();
                std::thread::Builder::new()
                    .name(format!("static-http-{i}"))
                    .spawn(move || worker(&server, &shared, &root))
                    .context("starting an HTTP worker thread")
            })
            .collect::<anyhow::Result<Vec<_>>>();
        let mut this = StaticHttpServer {
            shared,
            server: Some(server),
            listener,
            workers: Vec::new(),
            addr,
            root,
        };
        this.workers = workers?;
        Ok(this)
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The directory it serves (canonical).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Flip one byte of every body whose path contains `/chunks/` (or stop).
    pub fn set_corrupt(&self, corrupt: bool) {
        self.shared.corrupt.store(corrupt, Ordering::SeqCst);
    }

    /// Wait this long before answering each request.
    pub fn set_delay_per_request(&self, delay: Duration) {
        self.shared.delay_nanos.store(duration_nanos(delay), Ordering::SeqCst);
    }

    /// Answer 500 to every Nth request from now on (`None`: never).
    pub fn set_fail_every(&self, every: Option<u32>) {
        self.shared.fail_every.store(every.unwrap_or(0), Ordering::SeqCst);
    }

    /// Requests received (every method, failed ones included).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// GET requests received (failed ones included).
    pub fn gets(&self) -> u64 {
        self.shared.gets.load(Ordering::SeqCst)
    }

    /// HEAD requests received (failed ones included).
    pub fn heads(&self) -> u64 {
        self.shared.heads.load(Ordering::SeqCst)
    }

    /// GET requests of paths containing `/chunks/` (failed and ranged ones
    /// included: each counts once).
    pub fn chunk_gets(&self) -> u64 {
        self.shared.chunk_gets.load(Ordering::SeqCst)
    }

    /// GET requests of paths starting with `prefix` (a decoded path such as
    /// `/snap/manifest.json` or `/snap/chunks/`).
    pub fn gets_under(&self, prefix: &str) -> u64 {
        let by_path = self.shared.gets_by_path.lock().unwrap_or_else(|e| e.into_inner());
        by_path
            .range(prefix.to_string()..)
            .take_while(|(path, _)| path.starts_with(prefix))
            .map(|(_, n)| n)
            .sum()
    }

    /// GET requests per decoded path.
    pub fn gets_by_path(&self) -> BTreeMap<String, u64> {
        self.shared
            .gets_by_path
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Requests answered 500 by `fail_every`.
    pub fn failures_injected(&self) -> u64 {
        self.shared.failures_injected.load(Ordering::SeqCst)
    }

    /// Body bytes sent (as they were meant to be sent; a client that hangs
    /// up early still counts them).
    pub fn bytes_served(&self) -> u64 {
        self.shared.bytes_served.load(Ordering::SeqCst)
    }

    /// The most requests that were being answered at the same time.
    pub fn peak_in_flight(&self) -> u64 {
        self.shared.peak_in_flight.load(Ordering::SeqCst)
    }

    /// Sets every counter back to zero (the `fail_every` sequence too).
    pub fn reset_counters(&self) {
        let s = &self.shared;
        for counter in [
            &s.requests,
            &s.gets,
            &s.heads,
            &s.chunk_gets,
            &s.failures_injected,
            &s.bytes_served,
            &s.peak_in_flight,
        ] {
            counter.store(0, Ordering::SeqCst);
        }
        s.gets_by_path.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

impl std::fmt::Debug for StaticHttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticHttpServer")
            .field("addr", &self.addr)
            .field("root", &self.root)
            .field("threads", &self.workers.len())
            .field("shared", &self.shared)
            .finish()
    }
}

impl Drop for StaticHttpServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(server) = &self.server {
            for _ in 0..self.workers.len() {
                server.unblock();
            }
        }
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
        // The last reference: tiny_http flags its accept thread to stop.
        drop(self.server.take());
        use std::os::fd::AsRawFd;
        // SAFETY: shutdown(2) on a descriptor this struct owns (the listener
        // stays open until the struct is gone); it makes the socket refuse
        // connections now, and wakes tiny_http's accept thread.
        unsafe {
            libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR);
        }
    }
}

fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn worker(server: &tiny_http::Server, shared: &Shared, root: &Path) {
    loop {
        match server.recv() {
            Ok(request) => {
                let in_flight = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                shared.peak_in_flight.fetch_max(in_flight, Ordering::SeqCst);
                answer(request, shared, root);
                shared.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
            Err(_) if shared.stop.load(Ordering::SeqCst) => return,
            Err(e) => {
                tracing::debug!("static HTTP server: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
    }
}

fn header(name: &str, value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("ASCII header")
}

fn plain(status: u16, text: &str) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    tiny_http::Response::from_string(format!("{text}\n"))
        .with_status_code(status)
        .with_header(header("Content-Type", "text/plain; charset=utf-8"))
}

fn answer(request: tiny_http::Request, shared: &Shared, root: &Path) {
    let seq = shared.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let method = request.method().clone();
    let is_get = method == tiny_http::Method::Get;
    let is_head = method == tiny_http::Method::Head;
    let decoded = request_path(request.url());
    if is_get {
        shared.gets.fetch_add(1, Ordering::SeqCst);
        if let Some(path) = &decoded {
            if path.contains("/chunks/") {
                shared.chunk_gets.fetch_add(1, Ordering::SeqCst);
            }
            *shared
                .gets_by_path
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(path.clone())
                .or_insert(0) += 1;
        }
    } else if is_head {
        shared.heads.fetch_add(1, Ordering::SeqCst);
    }
    let delay = shared.delay_nanos.load(Ordering::SeqCst);
    if delay > 0 {
        sleep_unless_stopped(Duration::from_nanos(delay), shared);
    }
    let every = u64::from(shared.fail_every.load(Ordering::SeqCst));
    let outcome = if every > 0 && seq.is_multiple_of(every) {
        shared.failures_injected.fetch_add(1, Ordering::SeqCst);
        request.respond(plain(500, "injected failure"))
    } else if !is_get && !is_head {
        request.respond(plain(405, "only GET and HEAD").with_header(header("Allow", "GET, HEAD")))
    } else {
        match decoded {
            None => request.respond(plain(400, "bad path")),
            Some(path) => serve_file(request, shared, root, &path),
        }
    };
    if let Err(e) = outcome {
        tracing::debug!("static HTTP server: answering: {e}");
    }
}

/// Sleeps `delay` in slices, returning early when the server stops.
fn sleep_unless_stopped(delay: Duration, shared: &Shared) {
    let deadline = Instant::now() + delay;
    while !shared.stop.load(Ordering::SeqCst) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// The percent-decoded path of a request target (without its query); `None`
/// when it does not start with `/`, is not UTF-8 once decoded, or has a `.`
/// or `..` segment, a backslash or a NUL.
fn request_path(target: &str) -> Option<String> {
    let raw = target.split(['?', '#']).next().unwrap_or("");
    if !raw.starts_with('/') {
        return None;
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let path = String::from_utf8(out).ok()?;
    if path.contains(['\\', '\0']) || path.split('/').any(|seg| seg == "." || seg == "..") {
        return None;
    }
    Some(path)
}

/// The file under `root` that `path` names, if it is a file there (symbolic
/// links may not lead out of the root).
fn resolve(root: &Path, path: &str) -> Option<(PathBuf, std::fs::Metadata)> {
    let mut full = root.to_path_buf();
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        full.push(segment);
    }
    let full = full.canonicalize().ok()?;
    if !full.starts_with(root) {
        return None;
    }
    let meta = std::fs::metadata(&full).ok()?;
    meta.is_file().then_some((full, meta))
}

/// A byte range requested with `Range`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RangeRequest {
    /// No usable range: the whole file.
    Whole,
    /// Bytes `start..=end`.
    Part { start: u64, end: u64 },
    /// A range wholly past the end of the file.
    Unsatisfiable,
}

/// Parses a `Range` header value for a file of `len` bytes. A malformed or
/// multi-range value is ignored (the whole file is sent, as RFC 9110 allows).
fn parse_range(value: &str, len: u64) -> RangeRequest {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeRequest::Whole;
    };
    if spec.contains(',') {
        return RangeRequest::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    let number = |s: &str| s.parse::<u64>().ok();
    match (first.is_empty(), last.is_empty()) {
        // `-n`: the last n bytes.
        (true, false) => match number(last) {
            None => RangeRequest::Whole,
            Some(0) => RangeRequest::Unsatisfiable,
            Some(_) if len == 0 => RangeRequest::Unsatisfiable,
            Some(n) => RangeRequest::Part {
                start: len.saturating_sub(n),
                end: len - 1,
            },
        },
        (false, _) => {
            let Some(start) = number(first) else {
                return RangeRequest::Whole;
            };
            let end = if last.is_empty() {
                u64::MAX
            } else {
                match number(last) {
                    Some(end) if end >= start => end,
                    _ => return RangeRequest::Whole,
                }
            };
            if start >= len {
                RangeRequest::Unsatisfiable
            } else {
                RangeRequest::Part {
                    start,
                    end: end.min(len - 1),
                }
            }
        }
        (true, true) => RangeRequest::Whole,
    }
}

fn serve_file(request: tiny_http::Request, shared: &Shared, root: &Path, path: &str) -> std::io::Result<()> {
    let Some((file_path, meta)) = resolve(root, path) else {
        return request.respond(plain(404, "not found"));
    };
    let Ok(mut file) = File::open(&file_path) else {
        return request.respond(plain(404, "not found"));
    };
    let len = meta.len();
    let range = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Range"))
        .map_or(RangeRequest::Whole, |h| parse_range(h.value.as_str(), len));
    let (status, start, count) = match range {
        RangeRequest::Whole => (200, 0, len),
        RangeRequest::Part { start, end } => (206, start, end - start + 1),
        RangeRequest::Unsatisfiable => {
            return request.respond(
                plain(416, "range not satisfiable").with_header(header("Content-Range", &format!("bytes */{len}"))),
            );
        }
    };
    if file.seek(SeekFrom::Start(start)).is_err() {
        return request.respond(plain(500, "seek failed"));
    }
    let Ok(body_len) = usize::try_from(count) else {
        return request.respond(plain(500, "file too large"));
    };
    let corrupt = shared.corrupt.load(Ordering::SeqCst) && path.contains("/chunks/");
    let flip_at = corrupt.then_some(count / 2).filter(|_| count > 0);
    let body = FlipReader {
        inner: file.take(count),
        position: 0,
        flip_at,
    };
    let mut response = tiny_http::Response::new(
        tiny_http::StatusCode(status),
        vec![
            header("Content-Type", "application/octet-stream"),
            header("Accept-Ranges", "bytes"),
        ],
        body,
        Some(body_len),
        None,
    )
    // Always `Content-Length`, never chunked (tiny_http chunks bodies of 32 KiB and more).
    .with_chunked_threshold(usize::MAX);
    if status == 206 {
        response.add_header(header(
            "Content-Range",
            &format!("bytes {start}-{}/{len}", start + count - 1),
        ));
    }
    if let Ok(modified) = meta.modified() {
        response.add_header(header("Last-Modified", &httpdate::fmt_http_date(modified)));
    }
    if request.method() == &tiny_http::Method::Get {
        shared.bytes_served.fetch_add(count, Ordering::SeqCst);
    }
    request.respond(response)
}

/// Passes bytes through, inverting the one at `flip_at`.
struct FlipReader<R> {
    inner: R,
    position: u64,
    flip_at: Option<u64>,
}

impl<R: Read> Read for FlipReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(at) = self.flip_at {
            if at >= self.position && at < self.position + n as u64 {
                buf[(at - self.position) as usize] ^= 0xff;
            }
        }
        self.position += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_parsed_like_rfc_9110() {
        use RangeRequest::*;
        assert_eq!(parse_range("bytes=0-9", 100), Part { start: 0, end: 9 });
        assert_eq!(parse_range("bytes=90-200", 100), Part { start: 90, end: 99 });
        assert_eq!(parse_range("bytes=10-", 100), Part { start: 10, end: 99 });
        assert_eq!(parse_range("bytes=-10", 100), Part { start: 90, end: 99 });
        assert_eq!(parse_range("bytes=-1000", 100), Part { start: 0, end: 99 });
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-0", 0), Unsatisfiable);
        assert_eq!(parse_range("bytes=5-1", 100), Whole);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Whole);
        assert_eq!(parse_range("items=0-1", 100), Whole);
        assert_eq!(parse_range("bytes=x-1", 100), Whole);
    }

    #[test]
    fn request_paths_are_decoded_and_dot_segments_refused() {
        assert_eq!(request_path("/a/b%20c.txt?x=1").as_deref(), Some("/a/b c.txt"));
        assert_eq!(request_path("/").as_deref(), Some("/"));
        for bad in [
            "/../etc/passwd",
            "/a/%2e%2e/b",
            "/a/./b",
            "a/b",
            "/a%5cb",
            "/a%00",
            "/%zz",
            "/%ff",
        ] {
            assert_eq!(request_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_flip_reader_inverts_one_byte() {
        let data: Vec<u8> = (0..=255).collect();
        let mut out = Vec::new();
        let mut reader = FlipReader {
            inner: std::io::Cursor::new(data.clone()).chain(std::io::Cursor::new(data.clone())),
            position: 0,
            flip_at: Some(300),
        };
        reader.read_to_end(&mut out).unwrap();
        let differing: Vec<usize> = (0..out.len()).filter(|&i| out[i] != data[i % 256]).collect();
        assert_eq!(differing, vec![300]);
    }

    #[test]
    fn weed_is_found_by_variable_directory_then_path() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("weed");
        std::fs::write(&bin, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let none = dir.path().join("none");
        assert_eq!(weed_binary_in(Some(bin.clone().into()), None, None).unwrap(), bin);
        assert!(weed_binary_in(Some(none.clone().into()), None, None).is_err());
        assert_eq!(weed_binary_in(None, Some(dir.path().into()), None).unwrap(), bin);
        assert_eq!(
            weed_binary_in(None, Some(none.clone().into()), Some(dir.path().into())).unwrap(),
            bin
        );
        let err = weed_binary_in(None, Some(none.into()), None).unwrap_err().to_string();
        assert!(err.contains("install-seaweedfs.sh"), "{err}");
    }
}
