//! Starting detached processes and stopping them again by pid file.
//!
//! A process runs in its own process group with stdout and stderr appended to
//! a log file, so it outlives the command that started it. Its pid goes to a
//! pid file; a pid counts as the process only while `/proc/<pid>/cmdline`
//! names the expected home directory (a recycled pid is never signalled) and
//! the process is not a zombie.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// How one process is identified and where its files are.
#[derive(Debug, Clone)]
pub struct ProcessSpec<'a> {
    /// For messages: e.g. `cometbft of node1`.
    pub label: String,
    pub program: &'a Path,
    pub args: Vec<String>,
    pub log: &'a Path,
    pub pid_file: &'a Path,
    /// An argument the process's command line must contain to be ours (its home).
    pub marker: &'a Path,
}

/// The processes this program started (kept to reap them when they exit, so
/// a long-lived caller such as a test does not accumulate zombies).
#[derive(Debug, Default)]
pub struct Supervisor {
    children: Mutex<HashMap<u32, Child>>,
}

/// How often waits poll.
const POLL: Duration = Duration::from_millis(50);

impl Supervisor {
    /// Starts `spec` detached. Fails when its pid file names a live process.
    pub fn spawn(&self, spec: &ProcessSpec) -> anyhow::Result<u32> {
        if let Some(pid) = self.live_pid(spec.pid_file, spec.marker)? {
            bail!(
                "the {} is already running (pid {pid}, from {}): stop it first",
                spec.label,
                spec.pid_file.display()
            );
        }
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(spec.log)
            .with_context(|| format!("opening the log {}", spec.log.display()))?;
        writeln!(
            log,
            "=== {} starting at {}: {} {}",
            spec.label,
            humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
            spec.program.display(),
            spec.args.join(" ")
        )?;
        let child = Command::new(spec.program)
            .args(&spec.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting the {} ({})", spec.label, spec.program.display()))?;
        let pid = child.id();
        self.lock().insert(pid, child);
        write_pid_file(spec.pid_file, pid)?;
        Ok(pid)
    }

    /// The pid in `pid_file` when that process is alive and ours.
    pub fn live_pid(&self, pid_file: &Path, marker: &Path) -> anyhow::Result<Option<u32>> {
        let Some(pid) = read_pid_file(pid_file)? else {
            return Ok(None);
        };
        Ok(self.is_alive(pid, marker).then_some(pid))
    }

    /// Whether `pid` is a running (not zombie) process whose command line names `marker`.
    pub fn is_alive(&self, pid: u32, marker: &Path) -> bool {
        let mut children = self.lock();
        if let Some(child) = children.get_mut(&pid) {
            // Our own child: only `wait` knows when it is gone (a dying
            // multi-threaded process shows as a zombie before it can be
            // reaped), and its pid cannot be reused until it is reaped.
            if matches!(child.try_wait(), Ok(None)) {
                return true;
            }
            children.remove(&pid);
            return false;
        }
        drop(children);
        process_is_ours(pid, marker)
    }

    /// Sends `signal` (a name such as `TERM` or `KILL`) to the process group
    /// `pid` leads (anything the process started goes too).
    pub fn signal(&self, pid: u32, signal: &str) -> anyhow::Result<()> {
        // A non-zero exit means the group is already gone, which is what we want.
        Command::new("kill")
            .args(["-s", signal, "--", &format!("-{pid}")])
            .stderr(Stdio::null())
            .status()
            .context("running kill")?;
        Ok(())
    }

    /// Waits until `pid` has exited; false on timeout.
    pub fn wait_exit(&self, pid: u32, marker: &Path, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.is_alive(pid, marker) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Stops the process of `pid_file`: SIGTERM, then SIGKILL after `grace`
    /// (at once when `grace` is zero). Removes the pid file. Nothing to do
    /// when it is not running.
    pub fn stop(&self, label: &str, pid_file: &Path, marker: &Path, grace: Duration) -> anyhow::Result<()> {
        if let Some(pid) = self.live_pid(pid_file, marker)? {
            if grace > Duration::ZERO {
                self.signal(pid, "TERM")?;
            }
            if grace == Duration::ZERO || !self.wait_exit(pid, marker, grace) {
                self.signal(pid, "KILL")?;
                if !self.wait_exit(pid, marker, Duration::from_secs(10)) {
                    bail!("the {label} (pid {pid}) did not exit after SIGKILL");
                }
            }
        }
        remove_pid_file(pid_file)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Child>> {
        // A panic while holding the lock leaves the map usable.
        self.children.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The pid in a pid file; `None` when there is no file.
pub fn read_pid_file(path: &Path) -> anyhow::Result<Option<u32>> {
    match std::fs::read_to_string(path) {
        Ok(text) => text.trim().parse().map(Some).with_context(|| {
            format!(
                "{} does not hold a pid: delete it if no process is running",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn write_pid_file(path: &Path, pid: u32) -> anyhow::Result<()> {
    let tmp = path.with_extension("pid.tmp");
    std::fs::write(&tmp, format!("{pid}\n")).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

fn remove_pid_file(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Whether `pid` runs, is not a zombie, and names `marker` in its command line.
/// Without `/proc` only existence is checked (`kill -0`).
fn process_is_ours(pid: u32, marker: &Path) -> bool {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    if !Path::new("/proc/self").exists() {
        return Command::new("kill")
            .args(["-0", &pid.to_string()])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    }
    let Ok(stat) = std::fs::read_to_string(proc_dir.join("stat")) else {
        return false;
    };
    // `pid (comm) STATE …`; comm may hold spaces and parentheses.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    if matches!(state, Some('Z' | 'X' | 'x') | None) {
        return false;
    }
    let Ok(cmdline) = std::fs::read(proc_dir.join("cmdline")) else {
        return false;
    };
    let marker = marker.as_os_str().as_encoded_bytes();
    cmdline.split(|b| *b == 0).any(|arg| arg == marker)
}

/// The last `lines` lines of a log (for error messages).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
    let mut text = String::new();
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).is_ok() {
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawn_stop_and_refuse_a_second_start() {
        let dir = tempfile::tempdir().unwrap();
        // A script is run as `/bin/sh SCRIPT`, so its path is the marker; it
        // leaves a child behind that the group signal must end too.
        let marker = dir.path().join("home");
        std::fs::write(&marker, "#!/bin/sh\necho hello\nsleep 300 &\nwait\n").unwrap();
        std::fs::set_permissions(&marker, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let log = dir.path().join("p.log");
        let pid_file = dir.path().join("p.pid");
        let spec = ProcessSpec {
            label: "sleeper".into(),
            program: &marker,
            args: vec![],
            log: &log,
            pid_file: &pid_file,
            marker: &marker,
        };
        let sup = Supervisor::default();
        let pid = sup.spawn(&spec).unwrap();
        assert_eq!(read_pid_file(&pid_file).unwrap(), Some(pid));
        assert!(sup.wait_until(|| log_tail(&log, 1) == "hello"));
        assert!(sup.is_alive(pid, &marker));
        // Another program (no child handle) goes by /proc: the pid is ours only with our marker.
        let other_program = Supervisor::default();
        assert!(other_program.is_alive(pid, &marker));
        assert!(!other_program.is_alive(pid, &dir.path().join("other")));
        let err = sup.spawn(&spec).unwrap_err().to_string();
        assert!(
            err.contains("already running") && err.contains(&pid.to_string()),
            "{err}"
        );

        sup.stop("sleeper", &pid_file, &marker, Duration::from_secs(5)).unwrap();
        assert!(!sup.is_alive(pid, &marker));
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "the child was reaped");
        assert!(
            sup.wait_until(|| !group_has_members(pid)),
            "the script's own child got the signal too"
        );
        assert!(!pid_file.exists());
        // Stopping what is not running is fine.
        sup.stop("sleeper", &pid_file, &marker, Duration::from_secs(5)).unwrap();
        assert!(std::fs::read_to_string(&log)
            .unwrap()
            .contains("=== sleeper starting at"));
    }

    #[test]
    fn a_garbled_pid_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("x.pid");
        assert_eq!(read_pid_file(&pid_file).unwrap(), None);
        std::fs::write(&pid_file, "twelve").unwrap();
        let err = read_pid_file(&pid_file).unwrap_err().to_string();
        assert!(err.contains("does not hold a pid"), "{err}");
    }

    /// Whether any process is still in process group `pgid`.
    fn group_has_members(pgid: u32) -> bool {
        std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            // Fields after `(comm)`: state, ppid, pgrp.
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .map(|(_, r)| r.split_whitespace().collect())
                .unwrap_or_default();
            fields.get(2) == Some(&pgid.to_string().as_str()) && fields.first() != Some(&"Z")
        })
    }

    impl Supervisor {
        fn wait_until(&self, mut f: impl FnMut() -> bool) -> bool {
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if f() {
                    return true;
                }
                std::thread::sleep(POLL);
            }
            false
        }
    }
}
