//! Starting a new node at a snapshot's height without CometBFT's p2p state
//! sync: the application's state is restored offline (a snapshot fetched
//! from anywhere, checked against the trusted app hash), then CometBFT's
//! empty stores are filled to match with `cometbft-bootstrap`
//! (`tools/cometbft-bootstrap`: CometBFT's own `node.BootstrapState`, built
//! per CometBFT release by `scripts/install-cometbft-bootstrap.sh` and
//! installed beside each `cometbft` binary), and the node is started with
//! `[statesync] enable = false`: it block-syncs from the snapshot's height.
//!
//! What each side needs, for height H with app hash A (the app hash after
//! block H, which header H+1 carries):
//!
//! * **CometBFT**: a new home (`cometbft init`, the chain's genesis, peers)
//!   whose `config.toml` has `[statesync] rpc_servers` (two), `trust_height`,
//!   `trust_hash` and `trust_period` (`enable` may be false), and whose
//!   `data/` CometBFT has never run on. [`bootstrap_cometbft`] runs the tool:
//!   the light client verifies headers H, H+1 and H+2 (so H must be at most
//!   the chain's height minus 2), the app hash it gives for H must equal A,
//!   and the state of H and the commit of H are written.
//! * **statesnap's node** (`statesnap start`): `<home>/state/` holding the
//!   state of H (`statesnap snapshot restore --home <home>/state`) and the
//!   node's checkpoint saying chain, H and A (written into the verified
//!   staging home by `checkpoint_restored_home`),
//!   so that ABCI Info answers H and A. Without it Info says height 0, and
//!   CometBFT would call InitChain and then halt on the app hash.
//! * **Xian's node behind `statesnap proxy`**: the restored storage home
//!   with Xian's block marker `__latest_block` naming H, A and block H's
//!   time (`mark_restored_home`), from which xian-abci answers Info.
//!
//! `statesnap join` ([`crate::join`]) does all of it.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// The tool's file name.
pub const TOOL_NAME: &str = "cometbft-bootstrap";
/// The variable naming the tool's binary, used alone when set.
pub const TOOL_ENV: &str = "STATESNAP_COMETBFT_BOOTSTRAP";
/// Where `scripts/install-xian.sh` puts CometBFT v0.39.3 (and
/// `scripts/install-cometbft-bootstrap.sh` the tool built for it) unless
/// `$STATESNAP_COMETBFT_039_DIR` says otherwise.
pub const DEFAULT_COMETBFT_039_DIR: &str = "/var/lib/statesnap/cometbft-0.39.3";
/// How long [`bootstrap_cometbft`] lets the tool's light client work.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
const INSTALL_HINT: &str = "run scripts/install-cometbft-bootstrap.sh (scripts/setup.sh runs it), \
     or set STATESNAP_COMETBFT_BOOTSTRAP to the binary";
/// The prefix of the tool's one-line error on stderr.
const ERROR_PREFIX: &str = "cometbft-bootstrap: error: ";

/// What made the tool fail (the category its error line starts with).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Bad arguments.
    Usage,
    /// `config.toml` or the genesis is missing or wrong, or `[statesync]`
    /// lacks what the light client needs.
    Config,
    /// A store could not be opened (CometBFT running on the home?).
    Stores,
    /// The home already has a state or blocks; nothing was changed.
    StoresNotEmpty,
    /// The light client could not give the state of the height (servers
    /// unreachable or disagreeing, a wrong trust hash, a height too recent).
    LightClient,
    /// The chain's app hash at the height is not the one given.
    AppHashMismatch,
    /// CometBFT's `BootstrapState` failed after the checks (a store write,
    /// a panic): the stores may hold part of the state, and a retry needs a
    /// new home.
    Cometbft,
    /// The tool did not finish in time and was killed.
    Timeout,
    /// The tool gave no error line this module knows.
    Other,
}

impl FailureKind {
    fn from_category(category: &str) -> FailureKind {
        match category {
            "usage" => FailureKind::Usage,
            "config" => FailureKind::Config,
            "stores" => FailureKind::Stores,
            "stores not empty" => FailureKind::StoresNotEmpty,
            "light client" => FailureKind::LightClient,
            "app hash mismatch" => FailureKind::AppHashMismatch,
            "cometbft" => FailureKind::Cometbft,
            _ => FailureKind::Other,
        }
    }
}

/// A failed bootstrap: what failed and the tool's own words. Carried in the
/// [`anyhow::Error`] of [`bootstrap_cometbft`] (`downcast_ref`).
#[derive(Debug, thiserror::Error)]
#[error("{tool} could not bootstrap the CometBFT home {home} at height {height}: {message}", tool = TOOL_NAME, home = .home.display())]
pub struct BootstrapError {
    pub kind: FailureKind,
    /// The tool's error line without its prefix (or what happened to it).
    pub message: String,
    pub home: PathBuf,
    pub height: u64,
}

/// Runs `tool` (`cometbft-bootstrap`) on `cometbft_home` for `height` and
/// `app_hash` (the state the application already holds), with
/// [`DEFAULT_TIMEOUT`]. On failure the error is a [`BootstrapError`]; every
/// kind but [`FailureKind::Cometbft`] (and a timeout during the writes,
/// which take milliseconds after the light client's work) is found before
/// anything is written, so the call can be made again.
pub fn bootstrap_cometbft(tool: &Path, cometbft_home: &Path, height: u64, app_hash: &[u8; 32]) -> anyhow::Result<()> {
    run_tool(tool, cometbft_home, height, app_hash, DEFAULT_TIMEOUT, false)
}

/// Checks, writing nothing, that [`bootstrap_cometbft`] would succeed now:
/// the config, the stores empty (the tool creates empty ones when there
/// are none), and the light client's app hash for `height` equal to
/// `app_hash`. Run before the app's state is restored, so that a join
/// that cannot finish touches nothing.
pub fn check_cometbft_home(tool: &Path, cometbft_home: &Path, height: u64, app_hash: &[u8; 32]) -> anyhow::Result<()> {
    run_tool(tool, cometbft_home, height, app_hash, DEFAULT_TIMEOUT, true)
}

/// [`bootstrap_cometbft`] with the tool's time limit: it gets `timeout`
/// (its `--timeout`, which bounds the light client) and is killed 30 s
/// after that.
pub fn bootstrap_cometbft_with_timeout(
    tool: &Path,
    cometbft_home: &Path,
    height: u64,
    app_hash: &[u8; 32],
    timeout: Duration,
) -> anyhow::Result<()> {
    run_tool(tool, cometbft_home, height, app_hash, timeout, false)
}

fn run_tool(
    tool: &Path,
    cometbft_home: &Path,
    height: u64,
    app_hash: &[u8; 32],
    timeout: Duration,
    check: bool,
) -> anyhow::Result<()> {
    let failed = |kind, message: String| BootstrapError {
        kind,
        message,
        home: cometbft_home.to_path_buf(),
        height,
    };
    if height == 0 {
        return Err(failed(FailureKind::Usage, "the height must be at least 1".into()).into());
    }
    let mut command = Command::new(tool);
    command
        .arg("--home")
        .arg(cometbft_home)
        .arg("--height")
        .arg(height.to_string())
        .arg("--app-hash")
        .arg(hex::encode_upper(app_hash))
        .arg("--timeout")
        .arg(format!("{}ms", timeout.as_millis().max(1)));
    if check {
        command.arg("--check");
    }
    let run = run_with_deadline(command, timeout + Duration::from_secs(30))
        .with_context(|| format!("running {} ({INSTALL_HINT})", tool.display()))?;
    let Some(status) = run.status else {
        return Err(failed(
            FailureKind::Timeout,
            format!(
                "it was still running after {} s and was killed{}",
                (timeout + Duration::from_secs(30)).as_secs(),
                tail_note(&run.stdout, &run.stderr)
            ),
        )
        .into());
    };
    if status.success() && check {
        return Ok(());
    }
    if status.success() {
        tracing::info!(
            home = %cometbft_home.display(),
            height,
            app_hash = %hex::encode(app_hash),
            "CometBFT bootstrapped at the snapshot's height"
        );
        return Ok(());
    }
    let last = String::from_utf8_lossy(&run.stderr)
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("")
        .to_string();
    let err = match last.strip_prefix(ERROR_PREFIX) {
        Some(rest) => {
            let kind = KNOWN_CATEGORIES
                .iter()
                .find(|c| rest.starts_with(&format!("{c}: ")))
                .map_or(FailureKind::Other, |c| FailureKind::from_category(c));
            failed(kind, rest.to_string())
        }
        None => failed(
            FailureKind::Other,
            format!("it exited with {status}{}", tail_note(&run.stdout, &run.stderr)),
        ),
    };
    Err(err.into())
}

/// The categories the tool's error line starts with, longest first (one
/// is a prefix of another).
const KNOWN_CATEGORIES: &[&str] = &[
    "stores not empty",
    "app hash mismatch",
    "light client",
    "cometbft",
    "config",
    "stores",
    "usage",
];

/// The last lines of the tool's output, for an error that has no line of its own.
fn tail_note(stdout: &[u8], stderr: &[u8]) -> String {
    let mut lines: Vec<String> = [stdout, stderr]
        .iter()
        .flat_map(|b| {
            String::from_utf8_lossy(b)
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|l| !l.trim().is_empty())
        .collect();
    if lines.is_empty() {
        return String::new();
    }
    let keep = lines.split_off(lines.len().saturating_sub(5));
    format!("; its last output: {}", keep.join(" | "))
}

struct Finished {
    /// `None`: killed at the deadline.
    status: Option<std::process::ExitStatus>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Runs `command` with its output collected, killing it at `deadline`.
fn run_with_deadline(mut command: Command, deadline: Duration) -> anyhow::Result<Finished> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Each pipe is read on a thread of its own; after a kill, a grandchild
    // may still hold a pipe open, so the reads are waited for a little only.
    let collect = |pipe: Option<Box<dyn Read + Send>>| {
        let (send, receive) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut out = Vec::new();
            if let Some(mut p) = pipe {
                // Output lost to a read error is only lost context.
                let _ = p.read_to_end(&mut out);
            }
            let _ = send.send(out);
        });
        receive
    };
    let stdout = collect(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = collect(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if started.elapsed() > deadline {
            // Already gone is fine; reaped below either way.
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let patience = if status.is_some() {
        Duration::from_secs(30)
    } else {
        Duration::from_secs(1)
    };
    Ok(Finished {
        status,
        stdout: stdout.recv_timeout(patience).unwrap_or_default(),
        stderr: stderr.recv_timeout(patience).unwrap_or_default(),
    })
}

/// Finds `cometbft-bootstrap`: `$STATESNAP_COMETBFT_BOOTSTRAP` (alone when
/// set), else beside `cometbft_binary` (the one built for that binary's
/// release), else the install directories (`$STATESNAP_COMETBFT_039_DIR` or
/// [`DEFAULT_COMETBFT_039_DIR`], then Go's bin directories: the v0.39.3
/// build first), else `PATH`. Without `cometbft_binary` the release is
/// whichever is found first: pass the binary the node runs.
pub fn find_bootstrap_tool(cometbft_binary: Option<&Path>) -> anyhow::Result<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let mut install_dirs =
        vec![var("STATESNAP_COMETBFT_039_DIR").map_or_else(|| PathBuf::from(DEFAULT_COMETBFT_039_DIR), PathBuf::from)];
    if let Some(gobin) = var("GOBIN") {
        install_dirs.push(PathBuf::from(gobin));
    }
    if let Some(gopath) = var("GOPATH") {
        install_dirs.extend(std::env::split_paths(&gopath).map(|p| p.join("bin")));
    }
    if let Some(home) = var("HOME") {
        install_dirs.push(PathBuf::from(home).join("go").join("bin"));
    }
    find_in(var(TOOL_ENV), cometbft_binary, &install_dirs, var("PATH"))
}

/// [`find_bootstrap_tool`] over explicit places.
fn find_in(
    env: Option<OsString>,
    cometbft_binary: Option<&Path>,
    install_dirs: &[PathBuf],
    path: Option<OsString>,
) -> anyhow::Result<PathBuf> {
    if let Some(env) = env {
        let tool = PathBuf::from(env);
        if !is_executable(&tool) {
            bail!(
                "{TOOL_ENV} is set to {}, which is not an executable file: {INSTALL_HINT}",
                tool.display()
            );
        }
        return Ok(tool);
    }
    let path_dirs: Vec<PathBuf> = path.map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    let mut candidates = Vec::new();
    if let Some(binary) = cometbft_binary {
        // A bare name is the one PATH finds.
        let binary = if binary.components().count() == 1 {
            path_dirs
                .iter()
                .map(|d| d.join(binary))
                .find(|p| is_executable(p))
                .unwrap_or_else(|| binary.to_path_buf())
        } else {
            binary.to_path_buf()
        };
        if let Some(dir) = binary.parent() {
            candidates.push(dir.join(TOOL_NAME));
        }
        // Beside the file a link names, too.
        if let Some(dir) = binary.canonicalize().ok().as_deref().and_then(Path::parent) {
            candidates.push(dir.join(TOOL_NAME));
        }
    }
    candidates.extend(install_dirs.iter().map(|d| d.join(TOOL_NAME)));
    candidates.extend(path_dirs.iter().map(|d| d.join(TOOL_NAME)));
    if let Some(found) = candidates.iter().find(|c| is_executable(c)) {
        return Ok(found.clone());
    }
    let mut looked: Vec<String> = Vec::new();
    for c in candidates.iter().filter_map(|c| c.parent()) {
        let c = c.display().to_string();
        if !looked.contains(&c) {
            looked.push(c);
        }
    }
    bail!(
        "no {TOOL_NAME} found ({TOOL_ENV} is not set; looked in {}): {INSTALL_HINT}",
        if looked.is_empty() {
            "no directory".to_string()
        } else {
            looked.join(", ")
        }
    )
}

/// Whether `path` is a file someone may execute (the harness's finders use it too).
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn executable(path: &Path) {
        std::fs::write(path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn the_tool_is_found_beside_cometbft_before_the_install_dirs_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let (beside, install, on_path) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("c"));
        for d in [&beside, &install, &on_path] {
            std::fs::create_dir(d).unwrap();
            executable(&d.join(TOOL_NAME));
        }
        let path = Some(on_path.clone().into_os_string());
        let cometbft = beside.join("cometbft");
        let installs = [install.clone()];
        assert_eq!(
            find_in(None, Some(&cometbft), &installs, path.clone()).unwrap(),
            beside.join(TOOL_NAME)
        );
        assert_eq!(
            find_in(None, None, &installs, path.clone()).unwrap(),
            install.join(TOOL_NAME)
        );
        assert_eq!(find_in(None, None, &[], path.clone()).unwrap(), on_path.join(TOOL_NAME));
        // The variable wins, and must name an executable.
        let chosen = on_path.join(TOOL_NAME).into_os_string();
        assert_eq!(
            find_in(Some(chosen), Some(&cometbft), &installs, path.clone()).unwrap(),
            on_path.join(TOOL_NAME)
        );
        let err = find_in(Some(dir.path().join("nope").into()), None, &installs, None).unwrap_err();
        assert!(format!("{err:#}").contains(TOOL_ENV), "{err:#}");
        // Not executable: skipped; nothing: the install script is named.
        std::fs::set_permissions(install.join(TOOL_NAME), std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = find_in(None, None, &installs, None).unwrap_err();
        assert!(format!("{err:#}").contains("install-cometbft-bootstrap.sh"), "{err:#}");
    }

    #[test]
    fn the_tools_error_line_becomes_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let tool = dir.path().join(TOOL_NAME);
        std::fs::write(
            &tool,
            "#!/bin/sh\necho 'some log' \necho \"cometbft-bootstrap: error: app hash mismatch: the app hash returned \
             by the light client does not match\" >&2\nexit 1\n",
        )
        .unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = bootstrap_cometbft(&tool, dir.path(), 7, &[1; 32]).unwrap_err();
        let e = err.downcast_ref::<BootstrapError>().unwrap();
        assert_eq!(e.kind, FailureKind::AppHashMismatch);
        assert!(
            e.message.starts_with("app hash mismatch: the app hash"),
            "{}",
            e.message
        );
        assert!(err.to_string().contains("at height 7"), "{err}");

        std::fs::write(&tool, "#!/bin/sh\necho \"$@\" > \"$(dirname \"$0\")/args\"\n").unwrap();
        bootstrap_cometbft(&tool, dir.path(), 7, &[0xab; 32]).unwrap();
        let args = std::fs::read_to_string(dir.path().join("args")).unwrap();
        assert!(
            args.contains(&format!("--height 7 --app-hash {}", "AB".repeat(32))),
            "{args}"
        );

        std::fs::write(&tool, "#!/bin/sh\necho oops >&2\nexit 3\n").unwrap();
        let err = bootstrap_cometbft(&tool, dir.path(), 7, &[1; 32]).unwrap_err();
        let e = err.downcast_ref::<BootstrapError>().unwrap();
        assert_eq!(e.kind, FailureKind::Other);
        assert!(e.message.contains("oops"), "{}", e.message);

        std::fs::write(&tool, "#!/bin/sh\nsleep 30\n").unwrap();
        let err = run_with_deadline(Command::new(&tool), Duration::from_millis(200)).unwrap();
        assert!(err.status.is_none());
    }
}
