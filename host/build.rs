//! Builds the format plugins (reference and test fixtures) for wasm32-wasip2
//! and makes the reference ones embeddable with `include_bytes!`.
//!
//! The plugins are built by a nested `cargo` with its own target directory
//! (`<target>/plugins`): sharing the outer build's directory would make the two
//! cargo processes wait on the same lock.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Plugins embedded in the binary, by short name.
const BUILT_IN: &[&str] = &["zstd", "gzip", "brotli"];

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out.
    let target_dir = out_dir.ancestors().nth(4).unwrap().to_path_buf();
    let plugin_target = target_dir.join("plugins");

    for dir in ["wit", "plugins", "tests/plugins", "examples/plugin-template"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }

    let mut packages = Vec::new();
    for parent in ["plugins", "tests/plugins", "examples"] {
        for crate_dir in sorted_dirs(&root.join(parent)) {
            if let Some(name) = package_name(&crate_dir.join("Cargo.toml")) {
                if name != "statesnap-plugin-sdk" {
                    packages.push(name);
                }
            }
        }
    }

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args(["build", "--release", "--target", "wasm32-wasip2", "--target-dir"])
        .arg(&plugin_target);
    for p in &packages {
        cmd.args(["-p", p]);
    }
    // Plugins travel: in governance proposals (a transaction), in chain state
    // and in chunk 0 of self-describing snapshots. Without debug info they are
    // about a tenth of the size.
    cmd.env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "true");
    // The outer build's settings are not the plugins' settings.
    for (key, _) in env::vars() {
        let drop = key.starts_with("CARGO_FEATURE_")
            || key.starts_with("CARGO_CFG_")
            || key.starts_with("CARGO_PKG_")
            || matches!(
                key.as_str(),
                "RUSTFLAGS"
                    | "CARGO_ENCODED_RUSTFLAGS"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "RUSTC_WRAPPER"
                    | "CARGO_TARGET_DIR"
                    | "CARGO_BUILD_TARGET"
                    | "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "TARGET"
                    | "HOST"
                    | "OUT_DIR"
                    | "PROFILE"
                    | "OPT_LEVEL"
                    | "DEBUG"
                    | "NUM_JOBS"
            );
        if drop {
            cmd.env_remove(&key);
        }
    }
    let status = cmd.status().expect("could not run cargo to build the wasm plugins");
    if !status.success() {
        panic!(
            "building the wasm plugins failed (see above). If the error mentions the \
             wasm32-wasip2 target, run `rustup target add wasm32-wasip2` (scripts/setup.sh does it)."
        );
    }

    let wasm_dir = plugin_target.join("wasm32-wasip2").join("release");
    for short in BUILT_IN {
        let file = wasm_dir.join(format!("statesnap_plugin_{short}.wasm"));
        fs::copy(&file, out_dir.join(format!("{short}.wasm")))
            .unwrap_or_else(|e| panic!("missing built plugin {}: {e}", file.display()));
    }
    println!("cargo:rustc-env=STATESNAP_PLUGIN_WASM_DIR={}", wasm_dir.display());
}

fn sorted_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.join("Cargo.toml").is_file())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs
}

/// The `name` of a Cargo.toml's `[package]`.
fn package_name(manifest: &Path) -> Option<String> {
    let text = fs::read_to_string(manifest).ok()?;
    let mut in_package = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package {
            if let Some(rest) = line.strip_prefix("name") {
                let value = rest.trim_start().strip_prefix('=')?.trim();
                return Some(value.trim_matches('"').to_string());
            }
        }
    }
    None
}
