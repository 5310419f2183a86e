//! `statesnap snapshot …`: a snapshot's life offline, from making it to
//! restoring it (create, verify, inspect, restore).

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args, Subcommand};
use serde_json::json;

use statesnap::plugin::Plugin;
#[cfg(feature = "native-codecs")]
use statesnap::snapshot::native;
use statesnap::snapshot::{self, ChunkEncoder, CreateOptions, DecoderChoice, PluginRef, RestoreOptions, SnapshotDir};
use statesnap::store::{HomeStore, StoreKind};
use statesnap_harness::bench::peak_rss_bytes;
use statesnap_harness::progress;

use super::{parse_hash, parse_param, PluginArgs};

#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Snapshot a home at a height into <OUT>/<height>-<format>/; prints one JSON line.
    Create(CreateArgs),
    /// Check a snapshot's manifest and every chunk hash.
    Verify { dir: PathBuf },
    /// Print a snapshot's manifest as JSON.
    Inspect { dir: PathBuf },
    /// Restore a snapshot into a home; succeeds only if the root equals --app-hash.
    Restore(RestoreArgs),
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// A state home of either layout (opened read-only: a running node's LMDB home may be given).
    #[arg(long)]
    home: PathBuf,
    #[arg(long)]
    height: u64,
    /// Directory the snapshot directory is created in.
    #[arg(long)]
    out: PathBuf,
    /// A plugin name (built-in or from --plugin-dir) or a .wasm file. Default: zstd.
    #[arg(long, default_value = "zstd")]
    plugin: String,
    #[arg(long, default_value = "xian")]
    chain_id: String,
    /// Plugin parameter NAME=VALUE (repeatable), e.g. chunk_bytes=4000000.
    #[arg(long = "param", value_parser = parse_param)]
    params: Vec<(String, String)>,
    /// Benchmark baseline: run a built-in plugin's codec natively instead of in wasm.
    #[arg(long, hide = true)]
    native: bool,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    #[arg(long)]
    from: PathBuf,
    /// The home to restore into: missing, empty, or an existing state home of either layout (replaced).
    #[arg(long)]
    home: PathBuf,
    /// The trusted app hash (hex) the restored state must have.
    #[arg(long)]
    app_hash: String,
    /// A plugin file to use if the snapshot's plugin is not built in (repeatable).
    #[arg(long)]
    plugin: Vec<PathBuf>,
    /// Layout of the restored home: lmdb or hdf5. Default: the layout of the home
    /// being replaced, or lmdb for a new home.
    #[arg(long, value_parser = super::state::parse_store)]
    store: Option<StoreKind>,
    /// Benchmark baseline: run a built-in plugin's codec natively instead of in wasm.
    #[arg(long, hide = true)]
    native: bool,
}

pub fn run(cmd: SnapshotCommand, plugins: &PluginArgs) -> anyhow::Result<()> {
    match cmd {
        SnapshotCommand::Create(a) => create(&a, plugins),
        SnapshotCommand::Verify { dir } => verify(&dir),
        SnapshotCommand::Inspect { dir } => inspect(&dir),
        SnapshotCommand::Restore(a) => restore(&a, plugins),
    }
}

/// `snapshot create`: prints the snapshot's JSON line.
fn create(a: &CreateArgs, plugins: &PluginArgs) -> anyhow::Result<()> {
    let mut registry = plugins.registry()?;
    let plugin = registry.resolve(&a.plugin)?;
    let store = HomeStore::open_read_only(&a.home)?;
    let params = plugin.resolve_params(&a.params)?;
    let codec = codec(&plugin, &params, a.native)?;
    let d = plugin.description();
    let plugin_ref = PluginRef {
        sha256: plugin.sha256(),
        name: d.name.clone(),
        version: d.version.clone(),
    };
    let bar = progress::bar(None, "snapshot", "keys");
    let opts = CreateOptions::new(&a.chain_id, a.height, params);
    let report = snapshot::create(&store, codec, plugin_ref, d.format, &opts, &a.out, &bar)?;
    bar.finish_and_clear();
    let m = &report.manifest;
    println!(
        "{}",
        json!({
            "height": m.height,
            "format": m.format,
            "chunks": m.chunks.len(),
            "hash": hex::encode(report.hash),
            "bytes": m.snapshot_bytes,
            "app_hash": hex::encode(m.app_hash),
            "entries": m.entries,
            "state_bytes": m.state_bytes,
            "plugin": format!("{} {}", m.plugin.name, m.plugin.version),
            "dir": report.dir.display().to_string(),
            "seconds": report.seconds,
            "peak_rss_bytes": peak_rss_bytes(),
        })
    );
    Ok(())
}

/// The codec `snapshot create` encodes with: `plugin`'s, in wasm, or with
/// `--native` its built-in codec linked natively (the benchmark's baseline).
fn codec(plugin: &Plugin, params: &[(String, String)], native: bool) -> anyhow::Result<snapshot::Codec> {
    if native {
        Ok(snapshot::Codec {
            encoder: native_encoder(&plugin.description().name, params)?,
            decoder: native_decoder()?(plugin, params)?,
        })
    } else {
        Ok(snapshot::Codec::plugin(plugin, params)?)
    }
}

/// `snapshot verify`: the manifest and every chunk hash; prints a JSON line.
fn verify(dir: &Path) -> anyhow::Result<()> {
    let r = snapshot::verify(dir)?;
    println!(
        "{}",
        json!({
            "ok": true,
            "height": r.manifest.height,
            "format": r.manifest.format,
            "chunks": r.manifest.chunks.len(),
            "hash": hex::encode(r.hash),
            "bytes": r.bytes,
            "app_hash": hex::encode(r.manifest.app_hash),
        })
    );
    Ok(())
}

/// `snapshot inspect`: the manifest as JSON.
fn inspect(dir: &Path) -> anyhow::Result<()> {
    let snap = SnapshotDir::open(dir)?;
    let m = snap.manifest()?;
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "dir": snap.path().display().to_string(),
            "hash": hex::encode(m.hash()),
            "manifest_version": m.version,
            "chain_id": m.chain_id,
            "height": m.height,
            "app_hash": hex::encode(m.app_hash),
            "format": m.format,
            "plugin": { "name": m.plugin.name, "version": m.plugin.version, "sha256": hex::encode(m.plugin.sha256) },
            "params": m.params.iter().map(|(n, v)| (n.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "chunks": m.chunks.iter().map(hex::encode).collect::<Vec<_>>(),
            "entries": m.entries,
            "state_bytes": m.state_bytes,
            "snapshot_bytes": m.snapshot_bytes,
            // Self-describing: chunk 0 is the plugin, approved in the state by this record.
            "approval": m.approval.as_ref().map(|a| json!({
                "key": a.key, "stored": a.stored, "proof_depth": a.proof.depth(),
            })),
        }))?
    );
    Ok(())
}

/// `snapshot restore`: prints a JSON line once the home holds the restored state.
fn restore(a: &RestoreArgs, plugins: &PluginArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let trusted = parse_hash(&a.app_hash)?;
    let mut registry = plugins.registry()?;
    for p in &a.plugin {
        registry.add_file(p)?;
    }
    let bar = progress::bar(Some(0), "restoring", "chunks");
    let options = RestoreOptions {
        store: a.store,
        decoder: if a.native {
            native_decoder()?
        } else {
            snapshot::plugin_decoder
        },
        ..RestoreOptions::default()
    };
    let summary = snapshot::restore_dir(&a.from, &a.home, trusted, &registry, options, &bar)?;
    bar.finish_and_clear();
    println!(
        "{}",
        json!({
            "ok": true,
            "home": a.home.display().to_string(),
            "store": statesnap::store::home::detect(&a.home).ok(),
            "app_hash": hex::encode(summary.root),
            "entries": summary.entries,
            "chunks": summary.chunks,
            "seconds": started.elapsed().as_secs_f64(),
            "peak_rss_bytes": peak_rss_bytes(),
        })
    );
    Ok(())
}

/// The benchmark baseline's native encoder (feature `native-codecs`).
fn native_encoder(name: &str, params: &[(String, String)]) -> anyhow::Result<Box<dyn ChunkEncoder>> {
    #[cfg(feature = "native-codecs")]
    return native::encoder(name, params);
    #[cfg(not(feature = "native-codecs"))]
    {
        let _ = (name, params);
        Err(no_native_codecs())
    }
}

/// The benchmark baseline's native decoder (feature `native-codecs`).
fn native_decoder() -> anyhow::Result<DecoderChoice> {
    #[cfg(feature = "native-codecs")]
    return Ok(native::decoder);
    #[cfg(not(feature = "native-codecs"))]
    Err(no_native_codecs())
}

#[cfg(not(feature = "native-codecs"))]
fn no_native_codecs() -> anyhow::Error {
    anyhow::anyhow!(
        "--native is the benchmark's baseline, and this statesnap was built without it; \
         build with `cargo build --release -p statesnap-cli --features native-codecs`"
    )
}
