//! `statesnap snapshot …`: a snapshot's life, from making it to restoring
//! it (create, verify, inspect, restore), and publishing it (publish, list)
//! to object storage, HTTP servers and directories that restores and
//! checks fetch from.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args, Subcommand};
use serde_json::json;

use statesnap::plugin::Plugin;
#[cfg(feature = "native-codecs")]
use statesnap::snapshot::native;
use statesnap::snapshot::{
    self, ChunkEncoder, CreateOptions, DecoderChoice, Manifest, PluginRef, RestoreOptions, SnapshotDir,
};
use statesnap::store::{HomeStore, StoreKind};
use statesnap_harness::bench::peak_rss_bytes;
use statesnap_harness::progress;
use statesnap_transport::fetch::{self, FetchOptions, Transfer};
use statesnap_transport::location::Location;
use statesnap_transport::publish::PublishOptions;

use super::trust::TrustArgs;
use super::{parse_hash, parse_param, PluginArgs};

#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Snapshot a home at a height into <OUT>/<height>-<format>/; prints one JSON line.
    Create(CreateArgs),
    /// Check a snapshot: a directory's manifest and chunk hashes, or a
    /// published snapshot (URL) in full against a trusted app hash.
    Verify(VerifyArgs),
    /// Print a snapshot's manifest as JSON.
    Inspect { dir: PathBuf },
    /// Restore a snapshot into a home; succeeds only if the root equals the trusted app hash.
    Restore(RestoreArgs),
    /// Copy a snapshot to s3://BUCKET/PREFIX, an http(s) server's directory or a local one; prints one JSON line.
    Publish(PublishArgs),
    /// List the snapshots published at a location (its index), one JSON line each.
    List { from: String },
}

/// Which published snapshot, and how its chunks are fetched.
#[derive(Args, Debug)]
pub struct SourceArgs {
    /// Height of the published snapshot (default: the newest).
    #[arg(long)]
    pub(super) height: Option<u64>,
    /// Format of the published snapshot (default: the highest at that height).
    #[arg(long)]
    pub(super) format: Option<u32>,
    /// Chunks fetched at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=256))]
    parallel: u64,
}

impl SourceArgs {
    /// How chunks are fetched, kept in `download_dir` for a resume (if any).
    pub(super) fn fetch_options(&self, download_dir: Option<PathBuf>) -> FetchOptions {
        FetchOptions {
            parallel: self.parallel as usize,
            download_dir,
            ..FetchOptions::default()
        }
    }
}

/// The app hash a snapshot must have: given, or from the light client.
#[derive(Args, Debug)]
pub struct TrustedHashArgs {
    /// The trusted app hash (hex) the restored state must have.
    #[arg(long, conflicts_with = "trust_rpc", required_unless_present = "trust_rpc")]
    app_hash: Option<String>,
    #[command(flatten)]
    trust: TrustArgs,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// A snapshot directory, or a published location (s3://…, https://…, a published directory).
    from: String,
    /// More locations holding the same snapshot (mirrors).
    #[arg(long = "mirror")]
    mirrors: Vec<String>,
    /// The trusted app hash (hex): with a published snapshot, every chunk, proof and the root are checked against it.
    #[arg(long, conflicts_with = "trust_rpc")]
    app_hash: Option<String>,
    #[command(flatten)]
    trust: TrustArgs,
    #[command(flatten)]
    source: SourceArgs,
    /// A plugin file to use if the snapshot's plugin is not built in (repeatable).
    #[arg(long)]
    plugin: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub struct PublishArgs {
    /// The snapshot directory (or a directory holding exactly one snapshot).
    dir: PathBuf,
    /// s3://BUCKET/PREFIX (endpoint and credentials from AWS_ENDPOINT_URL, AWS_REGION,
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), file:///DIR or a directory to serve over HTTP.
    #[arg(long)]
    to: String,
    /// Chunks uploaded at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=256))]
    parallel: u64,
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
    /// A snapshot directory, or a published location: s3://BUCKET/PREFIX,
    /// http(s)://HOST/PATH or a published directory. Given again: mirrors of
    /// the same snapshot, chunks are fetched from all of them.
    #[arg(long, required = true)]
    from: Vec<String>,
    /// The home to restore into: missing, empty, or an existing state home of either layout (replaced).
    #[arg(long)]
    home: PathBuf,
    #[command(flatten)]
    trusted: TrustedHashArgs,
    #[command(flatten)]
    source: SourceArgs,
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
        SnapshotCommand::Verify(a) => verify(&a, plugins),
        SnapshotCommand::Inspect { dir } => inspect(&dir),
        SnapshotCommand::Restore(a) => restore(&a, plugins),
        SnapshotCommand::Publish(a) => publish(&a),
        SnapshotCommand::List { from } => list(&from),
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

/// `snapshot verify`: a directory's manifest and every chunk hash, or a
/// published snapshot in full; prints a JSON line.
fn verify(a: &VerifyArgs, plugins: &PluginArgs) -> anyhow::Result<()> {
    let local = Path::new(&a.from);
    if a.mirrors.is_empty() && local.is_dir() && !is_published(local) {
        if a.app_hash.is_some() || !a.trust.trust_rpc.is_empty() {
            anyhow::bail!(
                "{} is a snapshot directory: here its chunk hashes and proofs are checked without an app hash; \
                 to check its root against one, restore it (snapshot restore --from {} --home …) or publish it \
                 and verify the published copy",
                a.from,
                a.from
            );
        }
        return verify_dir(local);
    }
    let started = Instant::now();
    if let Some(hex) = &a.app_hash {
        parse_hash(hex)?;
    }
    let sources = locations(std::iter::once(&a.from).chain(&a.mirrors))?;
    let snap = fetch::find(&sources, a.source.height, a.source.format)?;
    let trusted = trusted_app_hash(a.app_hash.as_deref(), &a.trust, &snap.manifest)?.ok_or_else(|| {
        anyhow::anyhow!(
            "a published snapshot is checked against a trusted app hash: give --app-hash HEX or --trust-rpc URL,URL"
        )
    })?;
    let registry = registry_with(plugins, &a.plugin)?;
    let bar = progress::byte_bar("checking");
    let opts = a.source.fetch_options(None);
    let transfer = Transfer {
        snap: &snap,
        sources: &sources,
        opts: &opts,
        progress: &bar,
    };
    let (summary, report) = fetch::check(&transfer, trusted.hash, &registry)?;
    bar.finish_and_clear();
    println!(
        "{}",
        json!({
            "ok": true,
            "height": snap.manifest.height,
            "format": snap.manifest.format,
            "chunks": summary.chunks,
            "hash": hex::encode(snap.hash),
            "app_hash": hex::encode(summary.root),
            "trusted_from": trusted.from,
            "entries": summary.entries,
            "fetch": report,
            "seconds": started.elapsed().as_secs_f64(),
            "peak_rss_bytes": peak_rss_bytes(),
        })
    );
    Ok(())
}

/// Whether `dir` is a published location (it has an index), not a snapshot directory.
fn is_published(dir: &Path) -> bool {
    dir.join(statesnap_transport::objects::INDEX_OBJECT).is_file()
}

pub(super) fn locations<'a>(given: impl Iterator<Item = &'a String>) -> anyhow::Result<Vec<Location>> {
    given.map(|g| Location::parse(g, false)).collect()
}

fn registry_with(plugins: &PluginArgs, files: &[PathBuf]) -> anyhow::Result<statesnap::plugin::PluginRegistry> {
    let mut registry = plugins.registry()?;
    for p in files {
        registry.add_file(p)?;
    }
    Ok(registry)
}

/// A trusted app hash and where it came from.
struct Trusted {
    hash: [u8; 32],
    from: String,
}

/// The app hash `snap` must restore to: given with --app-hash, or from the
/// header at its height + 1, verified by the light client.
fn trusted_app_hash(given: Option<&str>, trust: &TrustArgs, manifest: &Manifest) -> anyhow::Result<Option<Trusted>> {
    if let Some(hex) = given {
        return Ok(Some(Trusted {
            hash: parse_hash(hex)?,
            from: "--app-hash".into(),
        }));
    }
    let Some(spec) = trust.spec()? else { return Ok(None) };
    let t = statesnap_transport::trust::app_hash_after(&spec, manifest.height, Some(&manifest.chain_id))?;
    eprintln!(
        "trusted app hash {} of height {} from the light client (header {} at height {})",
        hex::encode(t.app_hash),
        t.snapshot_height,
        hex::encode(t.header_hash),
        t.header_height
    );
    Ok(Some(Trusted {
        hash: t.app_hash,
        from: format!(
            "light client, header {} at height {}",
            hex::encode(t.header_hash),
            t.header_height
        ),
    }))
}

/// `snapshot publish`: prints a JSON line.
fn publish(a: &PublishArgs) -> anyhow::Result<()> {
    let snap = SnapshotDir::open(&a.dir)?;
    let to = Location::parse(&a.to, true)?;
    let bar = progress::byte_bar("publishing");
    let report = statesnap_transport::publish::publish(
        &snap,
        &to,
        PublishOptions {
            parallel: a.parallel as usize,
        },
        &bar,
    )?;
    bar.finish_and_clear();
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// `snapshot list`: the index, one JSON line per snapshot.
fn list(from: &str) -> anyhow::Result<()> {
    let index = statesnap_transport::publish::list(&Location::parse(from, false)?)?;
    for entry in &index.snapshots {
        println!("{}", serde_json::to_string(entry)?);
    }
    Ok(())
}

/// `snapshot verify DIR`: the manifest and every chunk hash.
fn verify_dir(dir: &Path) -> anyhow::Result<()> {
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
    // A malformed hash is a usage error, reported before anything is read.
    if let Some(hex) = &a.trusted.app_hash {
        parse_hash(hex)?;
    }
    let registry = registry_with(plugins, &a.plugin)?;
    let options = RestoreOptions {
        store: a.store,
        decoder: if a.native {
            native_decoder()?
        } else {
            snapshot::plugin_decoder
        },
        ..RestoreOptions::default()
    };
    let local = Path::new(&a.from[0]);
    if a.from.len() == 1 && local.is_dir() && !is_published(local) {
        return restore_dir(a, local, &registry, options, started);
    }
    let sources = locations(a.from.iter())?;
    let snap = fetch::find(&sources, a.source.height, a.source.format)?;
    let trusted = trusted_app_hash(a.trusted.app_hash.as_deref(), &a.trusted.trust, &snap.manifest)?
        .ok_or_else(|| anyhow::anyhow!("give the trusted app hash: --app-hash HEX or --trust-rpc URL,URL"))?;
    let bar = progress::byte_bar("restoring");
    let opts = a.source.fetch_options(Some(fetch::download_dir(&a.home)));
    let transfer = Transfer {
        snap: &snap,
        sources: &sources,
        opts: &opts,
        progress: &bar,
    };
    let done = fetch::restore(&transfer, trusted.hash, &registry, &a.home, options, |_| Ok(()))?;
    bar.finish_and_clear();
    let summary = done.summary;
    println!(
        "{}",
        json!({
            "ok": true,
            "home": a.home.display().to_string(),
            "store": statesnap::store::home::detect(&a.home).ok(),
            "height": snap.manifest.height,
            "format": snap.manifest.format,
            "hash": hex::encode(snap.hash),
            "app_hash": hex::encode(summary.root),
            "trusted_from": trusted.from,
            "entries": summary.entries,
            "chunks": summary.chunks,
            "fetch": done.fetch,
            "seconds": started.elapsed().as_secs_f64(),
            "peak_rss_bytes": peak_rss_bytes(),
        })
    );
    Ok(())
}

/// `snapshot restore --from DIR` of a snapshot directory.
fn restore_dir(
    a: &RestoreArgs,
    dir: &Path,
    registry: &statesnap::plugin::PluginRegistry,
    options: RestoreOptions,
    started: Instant,
) -> anyhow::Result<()> {
    let trusted = match &a.trusted.app_hash {
        Some(hex) => parse_hash(hex)?,
        None => {
            let manifest = SnapshotDir::open(dir)?.manifest()?;
            trusted_app_hash(None, &a.trusted.trust, &manifest)?
                .expect("clap requires --app-hash or --trust-rpc")
                .hash
        }
    };
    let bar = progress::bar(Some(0), "restoring", "chunks");
    let summary = snapshot::restore_dir(dir, &a.home, trusted, registry, options, &bar)?;
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
