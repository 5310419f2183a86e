//! Where the tools of a Xian network are, and running a command inside the
//! Xian root file system.
//!
//! `scripts/install-xian.sh` installs both: a Debian sid root file system
//! with Python 3.14 and Xian's node in `/opt/xian-venv` (Debian 12 has no
//! Python 3.14, and sid's packages must never enter the host), and CometBFT
//! v0.39.3 in a directory of its own (its binary reports `0.39.0`), beside
//! the 0.38.26 `cometbft` the statesnap node uses.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// The root file system when `$STATESNAP_XIAN_ROOT` is unset.
pub const DEFAULT_ROOT: &str = "/var/lib/statesnap/xian-sid";
/// The file install-xian.sh writes last, when the root file system is complete.
const STAMP: &str = ".statesnap-xian-stamp";
/// The virtual environment inside the root file system.
pub const VENV_PYTHON: &str = "/opt/xian-venv/bin/python";
const HINT: &str = "run scripts/install-xian.sh (scripts/setup.sh runs it)";

/// The wrapper that enters the root file system (also the committed
/// `scripts/xian-chroot.sh`): embedded, so the binary needs no checkout.
const CHROOT_SCRIPT: &str = include_str!("../../../scripts/xian-chroot.sh");

/// The installed tools of a Xian network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XianTools {
    /// The Debian sid root file system with Xian's node.
    pub root: PathBuf,
    /// CometBFT v0.39.3.
    pub cometbft: PathBuf,
}

impl XianTools {
    /// Finds them: `$STATESNAP_XIAN_ROOT` (else [`DEFAULT_ROOT`]);
    /// `$COMETBFT_039` (the binary), else `$STATESNAP_COMETBFT_039_DIR/cometbft`
    /// (else [`crate::testnet::cometbft::DEFAULT_COMETBFT_039_DIR`]). Fails, naming the install script, when
    /// either is missing or incomplete.
    pub fn discover() -> anyhow::Result<XianTools> {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        Self::discover_in(
            var("STATESNAP_XIAN_ROOT"),
            var("COMETBFT_039"),
            var("STATESNAP_COMETBFT_039_DIR"),
        )
    }

    /// [`discover`](Self::discover) from explicit values of the three variables.
    pub fn discover_in(
        root: Option<OsString>,
        cometbft: Option<OsString>,
        cometbft_dir: Option<OsString>,
    ) -> anyhow::Result<XianTools> {
        let root = root.map_or_else(|| PathBuf::from(DEFAULT_ROOT), PathBuf::from);
        if !root.join(STAMP).is_file() {
            if root.is_dir() {
                bail!(
                    "the Xian root file system {} is incomplete (no {STAMP}): {HINT}",
                    root.display()
                );
            }
            bail!("no Xian root file system at {}: {HINT}", root.display());
        }
        // A symbolic link to the root file system's own python3.14 (which
        // only resolves inside it).
        if std::fs::symlink_metadata(root.join(VENV_PYTHON.trim_start_matches('/'))).is_err() {
            bail!("{} has no {VENV_PYTHON}: {HINT}", root.display());
        }
        let cometbft = crate::testnet::CometBft::discover_039(cometbft, cometbft_dir)
            .with_context(|| format!("Xian's node runs with CometBFT v0.39.3: {HINT}"))?
            .path;
        Ok(XianTools { root, cometbft })
    }

    /// A command that runs `program args…` inside the root file system
    /// through `script` (a copy of the wrapper, [`write_chroot_script`]), in
    /// a private mount namespace where each of `binds` is mounted at its own
    /// path, with a clean environment plus `envs`. The process it starts
    /// becomes `program` itself (every step execs), so its pid is
    /// `program`'s and its command line ends with `program args…`.
    pub fn chroot_command(
        &self,
        script: &Path,
        binds: &[&Path],
        envs: &[(&str, &str)],
        program: &str,
        args: &[String],
    ) -> Command {
        let mut cmd = Command::new("bash");
        cmd.arg(script).arg("--root").arg(&self.root);
        for dir in binds {
            cmd.arg("--bind").arg(dir);
        }
        for (name, value) in envs {
            cmd.arg("--env").arg(format!("{name}={value}"));
        }
        cmd.arg("--").arg(program).args(args);
        cmd
    }
}

/// Writes the wrapper that enters the root file system to `path` (mode 755).
pub fn write_chroot_script(path: &Path) -> anyhow::Result<()> {
    std::fs::write(path, CHROOT_SCRIPT).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .with_context(|| format!("making {} executable", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_root_names_the_install_script() {
        let dir = tempfile::tempdir().unwrap();
        let err = XianTools::discover_in(Some(dir.path().join("none").into()), None, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no Xian root file system") && err.contains("install-xian.sh"),
            "{err}"
        );
        let err = XianTools::discover_in(Some(dir.path().into()), None, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("incomplete") && err.contains("install-xian.sh"), "{err}");
    }

    #[test]
    fn the_chroot_command_binds_and_sets_what_it_is_given() {
        let tools = XianTools {
            root: PathBuf::from("/r"),
            cometbft: PathBuf::from("/c"),
        };
        let cmd = tools.chroot_command(
            Path::new("/w/x.sh"),
            &[Path::new("/w")],
            &[("HOME", "/w/n0")],
            "xian-abci",
            &["/w/n0".into()],
        );
        let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(
            args,
            [
                "/w/x.sh",
                "--root",
                "/r",
                "--bind",
                "/w",
                "--env",
                "HOME=/w/n0",
                "--",
                "xian-abci",
                "/w/n0"
            ]
        );
    }
}
