//! `statesnap plugin …`

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Subcommand;
use serde_json::json;

use statesnap::plugin::{check::check, CONTRACT_VERSION};

use super::PluginArgs;

#[derive(Subcommand, Debug)]
pub enum PluginCommand {
    /// List the plugins this host knows (built-in and --plugin-dir).
    List,
    /// Print a plugin's name, version, format, SHA-256 and contract version.
    Inspect { file: PathBuf },
    /// Write a known plugin's wasm (e.g. a built-in, to propose it with `gov propose`).
    Export {
        /// A built-in name, or the name a --plugin-dir plugin describes.
        name: String,
        /// Where to write the .wasm file.
        #[arg(long, value_name = "FILE.wasm")]
        out: PathBuf,
    },
    /// Conformance check for plugin authors: round trip, determinism, limits.
    Check {
        file: PathBuf,
        /// Keys in the generated test state.
        #[arg(long, default_value_t = 5000)]
        keys: u64,
    },
}

pub fn run(cmd: PluginCommand, args: &PluginArgs) -> anyhow::Result<()> {
    let mut registry = args.registry()?;
    match cmd {
        PluginCommand::List => {
            for (p, origin) in registry.list()?.iter().zip(registry.origins()) {
                let d = p.description();
                println!(
                    "{:<8} {:<8} format {:<3} sha256 {}  {}  ({origin})",
                    d.name,
                    d.version,
                    d.format,
                    hex::encode(p.sha256()),
                    d.summary
                );
            }
        }
        PluginCommand::Inspect { file } => {
            let p = registry.add_file(&file)?;
            let d = p.description();
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "name": d.name,
                    "version": d.version,
                    "format": d.format,
                    "summary": d.summary,
                    "params": d.params.iter().map(|(n, v)| (n.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
                    "sha256": hex::encode(p.sha256()),
                    "contract": format!("statesnap:plugin@{}", CONTRACT_VERSION.split('.').next().unwrap_or("1")),
                    "bytes": p.size(),
                }))?
            );
        }
        PluginCommand::Export { name, out } => {
            let p = registry.resolve(&name)?;
            let bytes = registry
                .wasm(&p.sha256())
                .ok_or_else(|| anyhow::anyhow!("the bytes of plugin {name} are not available"))?;
            std::fs::write(&out, bytes).with_context(|| format!("writing {}", out.display()))?;
            let d = p.description();
            println!(
                "wrote {} ({} {}, format {}, {} bytes, sha256 {})",
                out.display(),
                d.name,
                d.version,
                d.format,
                bytes.len(),
                hex::encode(p.sha256())
            );
        }
        PluginCommand::Check { file, keys } => {
            let p = registry.add_file(&file)?;
            let report = check(&p, keys)?;
            println!("plugin check: {}", report.plugin);
            for i in &report.items {
                println!(
                    "  [{}] {:<14} {}",
                    if i.passed { "ok" } else { "FAIL" },
                    i.name,
                    i.detail
                );
            }
            println!(
                "  encode {:.3}s, {} fuel; decode {:.3}s, {} fuel; {} keys -> {} chunks, {} bytes",
                report.encode_seconds,
                report.encode_fuel,
                report.decode_seconds,
                report.decode_fuel,
                report.keys,
                report.chunks,
                report.snapshot_bytes
            );
            if !report.passed() {
                bail!("{} failed conformance", report.plugin);
            }
            println!("passed");
        }
    }
    Ok(())
}
