//! `statesnap bench-transport`: restoring a snapshot from a real local
//! S3-compatible server (SeaweedFS) and from a plain HTTP server, with 1, 4
//! and 16 chunks in flight, against the offline restore of the same
//! snapshot from its directory. Every restore runs as its own `statesnap`
//! process, so each reports its own time and peak memory. With `--join`:
//! an out-of-band join of a new node instead ([`crate::bench_join`]).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use serde_json::{json, Value};

use crate::bench::{child, child_with_env, s, work_dir};
use crate::object_server::{SeaweedS3, StaticHttpServer};
use crate::progress;
use statesnap::store::{generate, HomeStore, StateStore, StoreKind};

/// Arguments of `statesnap bench-transport`.
#[derive(clap::Args, Debug)]
pub struct BenchTransportArgs {
    /// Keys in the generated state.
    #[arg(long, default_value_t = 1_000_000)]
    pub keys: u64,
    /// Chunks in flight, one run each (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    pub parallel: Vec<u64>,
    /// The snapshot's plugin.
    #[arg(long, default_value = "zstd")]
    pub plugin: String,
    /// Plugin parameter NAME=VALUE (repeatable), e.g. chunk_bytes=4000000.
    #[arg(long = "param")]
    pub params: Vec<String>,
    /// Work directory (default: a temporary directory, removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Instead: time an out-of-band `statesnap join` of a new node to a
    /// local network whose genesis state has --keys keys (trust, restore,
    /// bootstrap, first block) against the offline restore of the same
    /// snapshot.
    #[arg(long)]
    pub join: bool,
}

fn secs(v: &Value) -> f64 {
    v["seconds"].as_f64().unwrap_or(f64::NAN)
}

fn rss_mib(v: &Value) -> f64 {
    v["peak_rss_bytes"].as_f64().unwrap_or(f64::NAN) / (1024.0 * 1024.0)
}

pub fn bench_transport(args: &BenchTransportArgs) -> anyhow::Result<()> {
    let (dir, _guard) = work_dir(&args.dir)?;
    if args.join {
        return crate::bench_join::bench_join(args.keys, &args.plugin, &args.params, &dir);
    }
    let home = dir.join("source");
    eprintln!("bench-transport: generating {} keys", args.keys);
    if !home.exists() {
        let mut store = HomeStore::create(&home, StoreKind::Lmdb)?;
        store.set_bulk(true);
        let bar = progress::bar(Some(args.keys), "generating", "keys");
        generate::generate(&mut store, args.keys, args.seed, |n| bar.set_position(n))?;
        store.flush()?;
        bar.finish_and_clear();
    }
    let snaps = dir.join("snapshots");
    let _ = std::fs::remove_dir_all(&snaps);
    let mut create = vec![
        "snapshot",
        "create",
        "--home",
        s(&home),
        "--height",
        "1",
        "--out",
        s(&snaps),
        "--plugin",
        &args.plugin,
    ];
    for p in &args.params {
        create.extend(["--param", p.as_str()]);
    }
    let created = child(&create)?;
    let root = created["app_hash"]
        .as_str()
        .context("snapshot create printed no app_hash")?
        .to_string();
    eprintln!(
        "bench-transport: snapshot of {} chunks, {:.1} MiB",
        created["chunks"],
        created["bytes"].as_f64().unwrap_or(0.0) / (1024.0 * 1024.0)
    );
    // The published copies (made below): a bucket of a local SeaweedFS, and a directory
    // a plain HTTP server serves.
    // A new server each run: weed refuses to grow volumes on the state an
    // earlier server left.
    let weed = dir.join("weed");
    let _ = std::fs::remove_dir_all(&weed);
    let s3 = SeaweedS3::start(&weed)?;
    s3.create_bucket("bench")?;
    let env = s3.s3_env();
    let target = dir.join("restored");
    let restore = |from: &[&str], parallel: Option<u64>| -> anyhow::Result<Value> {
        let _ = std::fs::remove_dir_all(&target);
        let mut a = vec!["snapshot", "restore", "--home", s(&target), "--app-hash", root.as_str()];
        for f in from {
            a.extend(["--from", f]);
        }
        let p = parallel.map(|p| p.to_string());
        if let Some(p) = &p {
            a.extend(["--parallel", p.as_str()]);
        }
        let out = child_with_env(&a, &env)?;
        anyhow::ensure!(
            out["app_hash"] == root.as_str(),
            "a restore ended with another root: {out}"
        );
        Ok(out)
    };
    let snap_dir = created["dir"]
        .as_str()
        .context("snapshot create printed no dir")?
        .to_string();
    let offline = restore(&[snap_dir.as_str()], None)?;
    eprintln!("bench-transport: offline restore {:.2} s", secs(&offline));

    let started = Instant::now();
    let published = child_with_env(&["snapshot", "publish", &snap_dir, "--to", "s3://bench/chain"], &env)?;
    let publish_s3_s = started.elapsed().as_secs_f64();
    let site = dir.join("site");
    let _ = std::fs::remove_dir_all(&site);
    child(&["snapshot", "publish", &snap_dir, "--to", s(&site)])?;
    let http = StaticHttpServer::start(&site)?;

    let mut rows = Vec::new();
    for &p in &args.parallel {
        for (name, url) in [("s3", "s3://bench/chain".to_string()), ("http", http.url())] {
            let out = restore(&[url.as_str()], Some(p))?;
            eprintln!(
                "bench-transport: {name} parallel {p}: {:.2} s ({:.2}x offline), peak RSS {:.0} MiB",
                secs(&out),
                secs(&out) / secs(&offline),
                rss_mib(&out)
            );
            rows.push((name, p, out));
        }
    }
    println!();
    println!(
        "restore of {} keys ({} chunks, {:.1} MiB of snapshot, plugin {}):",
        args.keys,
        created["chunks"],
        created["bytes"].as_f64().unwrap_or(0.0) / (1024.0 * 1024.0),
        args.plugin
    );
    println!(
        "{:<22} {:>9} {:>10} {:>13}",
        "from", "seconds", "x offline", "peak RSS MiB"
    );
    println!(
        "{:<22} {:>9.2} {:>10.2} {:>13.0}",
        "directory (offline)",
        secs(&offline),
        1.0,
        rss_mib(&offline)
    );
    for (name, p, out) in &rows {
        println!(
            "{:<22} {:>9.2} {:>10.2} {:>13.0}",
            format!("{name}, {p} in flight"),
            secs(out),
            secs(out) / secs(&offline),
            rss_mib(out)
        );
    }
    println!("publish to S3: {publish_s3_s:.2} s");
    println!(
        "{}",
        json!({
            "keys": args.keys,
            "chunks": created["chunks"],
            "snapshot_bytes": created["bytes"],
            "offline": { "seconds": secs(&offline), "peak_rss_bytes": offline["peak_rss_bytes"] },
            "publish_s3": { "seconds": publish_s3_s, "report": published },
            "restores": rows.iter().map(|(name, p, out)| json!({
                "from": name, "parallel": p, "seconds": secs(out),
                "ratio": secs(out) / secs(&offline), "peak_rss_bytes": out["peak_rss_bytes"],
            })).collect::<Vec<_>>(),
        })
    );
    s3.stop()?;
    Ok(())
}
