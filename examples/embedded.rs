//! Using statesnap as a library: generate a state, snapshot it with the
//! default plugin, and restore it into a new home, trusting only the app hash.
//!
//! Run with: `cargo run --release --example embedded`

use indicatif::ProgressBar;
use statesnap::plugin::{Limits, PluginEngine, PluginRegistry};
use statesnap::snapshot::{self, CreateOptions, PluginRef};
use statesnap::store::{generate, StateStore, XianHdf5Store};

fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let home = dir.path().join("state");
    let mut store = XianHdf5Store::create(&home)?;
    generate::generate(&mut store, 20_000, 1, |_| {})?;
    store.flush()?;

    let mut registry = PluginRegistry::new(PluginEngine::new(Limits::default())?, true);
    let plugin = registry.resolve("zstd")?;
    let d = plugin.description();
    let params = d.params.clone();
    let report = snapshot::create(
        &store,
        snapshot::Codec::plugin(&plugin, &params)?,
        PluginRef {
            sha256: plugin.sha256(),
            name: d.name.clone(),
            version: d.version.clone(),
        },
        d.format,
        &CreateOptions::new("example", 1, params),
        &dir.path().join("snapshots"),
        &ProgressBar::hidden(),
    )?;
    let m = &report.manifest;
    println!(
        "snapshot {} at height {}: {} entries in {} chunks, {} bytes, app hash {}",
        hex::encode(report.hash),
        m.height,
        m.entries,
        m.chunks.len(),
        m.snapshot_bytes,
        hex::encode(m.app_hash)
    );

    // A new node trusts only the app hash its light client gives it.
    let trusted = m.app_hash;
    let target = dir.path().join("restored");
    let summary = snapshot::restore_dir(
        &report.dir,
        &target,
        trusted,
        &registry,
        Default::default(),
        &ProgressBar::hidden(),
    )?;
    println!(
        "restored {} entries; root {} matches the trusted app hash",
        summary.entries,
        hex::encode(summary.root)
    );
    Ok(())
}
