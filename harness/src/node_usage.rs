//! What a node of a testnet has cost so far: bytes it received from peers
//! (CometBFT's own counters), disk its homes take, CPU its two processes
//! used. For comparing joins by state sync and by block sync. And a sampler
//! of processes that come and go (CPU and peak RSS), for Xian's joins.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use crate::testnet::Testnet;

/// A node's costs at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// Bytes received over p2p, all channels and peers.
    pub received_bytes: f64,
    /// Bytes of the node's directory (CometBFT and statesnap homes, logs).
    pub disk_bytes: u64,
    /// User + system CPU seconds of its statesnap and CometBFT processes.
    pub cpu_seconds: f64,
}

/// Measures `name` now; its processes must be running.
pub fn usage(net: &Testnet, name: &str) -> anyhow::Result<Usage> {
    let node = net.node(name)?;
    let (app, cometbft) = net.pids(name)?;
    let mut cpu_seconds = 0.0;
    for pid in [app, cometbft].into_iter().flatten() {
        cpu_seconds += cpu_seconds_of(pid)?;
    }
    let dir = node
        .cometbft_home
        .parent()
        .context("a node's CometBFT home has a parent")?;
    Ok(Usage {
        received_bytes: received_bytes(&node.prometheus_url())?,
        disk_bytes: disk_bytes(dir)?,
        cpu_seconds,
    })
}

/// Sums CometBFT's `cometbft_p2p_peer_receive_bytes_total` over its labels.
pub fn received_bytes(url: &str) -> anyhow::Result<f64> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let text = agent
        .get(url)
        .call()
        .and_then(|mut r| r.body_mut().read_to_string())
        .with_context(|| format!("reading CometBFT's metrics at {url}"))?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("cometbft_p2p_peer_receive_bytes_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// Allocated bytes under `dir` (as `du` counts: blocks, not apparent sizes,
/// so LMDB's sparse map file counts for what it holds).
pub fn disk_bytes(dir: &Path) -> anyhow::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total += meta.blocks() * 512;
            }
        }
    }
    Ok(total)
}

/// User + system CPU seconds of a live process, from `/proc/PID/stat`.
pub fn cpu_seconds_of(pid: u32) -> anyhow::Result<f64> {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces, in parentheses).
    let rest = stat.rsplit_once(')').context("a /proc stat line")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks =
        |i: usize| -> anyhow::Result<f64> { Ok(fields.get(i).context("a short /proc stat line")?.parse::<f64>()?) };
    // utime and stime are fields 14 and 15 of stat(5); `rest` starts at 3.
    Ok((ticks(11)? + ticks(12)?) / clock_ticks()?)
}

fn clock_ticks() -> anyhow::Result<f64> {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    if let Some(t) = TICKS.get() {
        return Ok(*t);
    }
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .context("running getconf CLK_TCK")?;
    let ticks = String::from_utf8_lossy(&out.stdout).trim().parse::<f64>()?;
    Ok(*TICKS.get_or_init(|| ticks))
}

/// The peak resident set size (`VmHWM`) of a live process, in bytes.
pub fn peak_rss_of(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .context("no VmHWM in /proc status")?;
    let kib: u64 = line.trim().trim_end_matches("kB").trim().parse()?;
    Ok(kib * 1024)
}

/// What a [`ProcessSampler`] saw of one kind of process (a label such as
/// "cometbft"): CPU seconds summed over every pid it had, the highest peak RSS.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SampledProcess {
    pub cpu_seconds: f64,
    pub peak_rss_bytes: u64,
}

/// Watches processes that come and go (an app restarted after a restore)
/// from a background thread: every tick it asks `pids` which processes to
/// look at, and keeps each pid's last CPU time and peak RSS. A process's
/// last fraction of a tick before it exits is not seen.
pub struct ProcessSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<std::collections::BTreeMap<String, SampledProcess>>>,
}

impl ProcessSampler {
    pub fn start(pids: impl Fn() -> Vec<(String, u32)> + Send + 'static) -> ProcessSampler {
        use std::collections::BTreeMap;
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            // (label, pid) -> (cpu seconds, peak rss)
            let mut seen: BTreeMap<(String, u32), (f64, u64)> = BTreeMap::new();
            loop {
                let last = flag.load(Ordering::SeqCst);
                for (label, pid) in pids() {
                    let (Ok(cpu), Ok(rss)) = (cpu_seconds_of(pid), peak_rss_of(pid)) else {
                        continue;
                    };
                    let entry = seen.entry((label, pid)).or_default();
                    entry.0 = entry.0.max(cpu);
                    entry.1 = entry.1.max(rss);
                }
                if last {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            let mut out: BTreeMap<String, SampledProcess> = BTreeMap::new();
            for ((label, _), (cpu, rss)) in seen {
                let p = out.entry(label).or_default();
                p.cpu_seconds += cpu;
                p.peak_rss_bytes = p.peak_rss_bytes.max(rss);
            }
            out
        });
        ProcessSampler {
            stop,
            thread: Some(thread),
        }
    }

    /// Takes a last sample and gives what was seen, by label.
    pub fn finish(mut self) -> std::collections::BTreeMap<String, SampledProcess> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or_default()
    }
}

impl Drop for ProcessSampler {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
