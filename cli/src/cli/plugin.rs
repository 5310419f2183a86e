//! `statesnap plugin …`: the format plugins this binary knows, for operators
//! and plugin authors (list, inspect, export, and the chain's conformance check).

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Subcommand;
use serde_json::json;

use statesnap::plugin::check::{chain_limits, check, CheckReport, CHAIN_CHECK_FUEL_PER_CALL, CHAIN_CHECK_KEYS};
use statesnap::plugin::{PluginRegistry, CONTRACT_VERSION};

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
    /// Conformance check: by default exactly the chain's (its state, keys and fuel), with the verdict a proposal would get.
    Check {
        /// A .wasm file, or the name of a built-in or --plugin-dir plugin.
        plugin: String,
        /// Also check a larger state (5,000 keys), under this host's plugin limits (--plugin-fuel …).
        #[arg(long)]
        thorough: bool,
        /// Keys in the generated state of the thorough check (implies --thorough).
        #[arg(long)]
        keys: Option<u64>,
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
        PluginCommand::Check { plugin, thorough, keys } => {
            let local = registry.resolve(&plugin)?;
            let wasm = registry
                .wasm(&local.sha256())
                .ok_or_else(|| anyhow::anyhow!("the bytes of plugin {plugin} are not available"))?
                .to_vec();
            // The chain's check: its engine limits, its state, its keys.
            let mut chain = PluginRegistry::new(args.engine(chain_limits())?, false);
            let plugin = chain.add_bytes(wasm, &plugin)?;
            let report = check(&plugin, CHAIN_CHECK_KEYS)?;
            print_report(
                &report,
                &format!(
                    "as the chain checks a proposal: {} generated keys, {} fuel per call",
                    CHAIN_CHECK_KEYS, CHAIN_CHECK_FUEL_PER_CALL
                ),
                CHAIN_CHECK_FUEL_PER_CALL,
            );
            match report.verdict() {
                Ok(()) => println!("  verdict: a proposal of this plugin passes the chain's conformance check"),
                Err(why) => println!("  verdict: a proposal of this plugin is refused: {why}"),
            }
            let mut passed = report.passed();
            if thorough || keys.is_some() {
                let keys = keys.unwrap_or(5000);
                let report = check(&local, keys)?;
                let fuel = args.limits().fuel_per_call;
                print_report(
                    &report,
                    &format!("thorough: {keys} generated keys, this host's limits ({fuel} fuel per call)"),
                    fuel,
                );
                passed &= report.passed();
            }
            if !passed {
                bail!("{} failed conformance", report.plugin);
            }
            println!("passed");
        }
    }
    Ok(())
}

fn print_report(report: &CheckReport, how: &str, fuel_limit: u64) {
    println!("plugin check: {} ({how})", report.plugin);
    for i in &report.items {
        println!(
            "  [{}] {:<14} {}",
            if i.passed() { "ok" } else { "FAIL" },
            i.name,
            i.detail()
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
    for (what, c) in [("encode", &report.encode_calls), ("decode", &report.decode_calls)] {
        println!(
            "  {what}: {} calls, the costliest {} fuel ({:.2}% of the per-call limit) and {:.4}s",
            c.calls,
            c.max_fuel,
            c.max_fuel as f64 * 100.0 / fuel_limit.max(1) as f64,
            c.max_seconds
        );
    }
}
