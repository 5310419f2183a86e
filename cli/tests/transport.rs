//! Snapshots over real transports: published to a real S3-compatible server
//! (SeaweedFS, installed by `scripts/setup.sh`) and to a directory served by
//! a plain HTTP server, then listed, restored and checked from there; a
//! corrupt mirror, and a restore killed midway that fetches, when run
//! again, only what it did not have.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt;
use serde_json::Value;

use statesnap_harness::object_server::{SeaweedS3, StaticHttpOptions, StaticHttpServer};

fn command(env: &[(&str, String)], args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::cargo_bin("statesnap").unwrap();
    cmd.args(args).envs(env.iter().map(|(k, v)| (k, v)));
    cmd
}

fn run(env: &[(&str, String)], args: &[&str]) -> Output {
    command(env, args).output().unwrap()
}

fn ok(env: &[(&str, String)], args: &[&str]) -> String {
    let out = run(env, args);
    assert!(
        out.status.success(),
        "statesnap {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn refused(env: &[(&str, String)], args: &[&str]) -> String {
    let out = run(env, args);
    assert!(!out.status.success(), "statesnap {args:?} should have failed");
    String::from_utf8(out.stderr).unwrap()
}

fn json(stdout: &str) -> Value {
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A generated state of `keys` keys, snapshotted at `height` in small
/// chunks; its root and the snapshot's JSON line.
struct Made {
    root: String,
    snaps: PathBuf,
    created: Value,
}

fn make(dir: &Path, keys: u32, height: u64) -> Made {
    let home = dir.join("gen");
    if !home.exists() {
        ok(
            &[],
            &[
                "state",
                "generate",
                "--home",
                p(&home),
                "--keys",
                &keys.to_string(),
                "--seed",
                "7",
            ],
        );
    }
    let root = ok(&[], &["state", "root", "--home", p(&home)]).trim().to_string();
    let snaps = dir.join(format!("snaps-{height}"));
    let created = json(&ok(
        &[],
        &[
            "snapshot",
            "create",
            "--home",
            p(&home),
            "--height",
            &height.to_string(),
            "--out",
            p(&snaps),
            "--param",
            "chunk_bytes=100000",
        ],
    ));
    assert!(created["chunks"].as_u64().unwrap() >= 8, "{created}");
    Made { root, snaps, created }
}

/// [`make`], published to `dir/site` (for a plain HTTP server).
fn make_published(dir: &Path, keys: u32, height: u64) -> (Made, PathBuf) {
    let made = make(dir, keys, height);
    let site = dir.join("site");
    ok(&[], &["snapshot", "publish", p(&made.snaps), "--to", p(&site)]);
    (made, site)
}

fn download_files(home: &Path) -> usize {
    let name = home.file_name().unwrap().to_string_lossy();
    let dir = home.with_file_name(format!(".{name}.statesnap-download"));
    walk(&dir)
        .iter()
        .filter(|f| f.file_name().unwrap().to_string_lossy().starts_with("chunk-") && f.extension().is_none())
        .count()
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn publish_list_restore_and_verify_through_s3_and_http() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let made = make(t, 40_000, 12);
    let chunks = made.created["chunks"].as_u64().unwrap();

    let s3 = SeaweedS3::start(&t.join("weed")).unwrap();
    s3.create_bucket("snaps").unwrap();
    let env = s3.s3_env();
    let url = "s3://snaps/chain-a";
    let first = json(&ok(&env, &["snapshot", "publish", p(&made.snaps), "--to", url]));
    assert_eq!(first["uploaded"].as_u64(), Some(chunks), "{first}");
    assert_eq!(first["indexed"], true);
    // Again: content-addressed, nothing is sent twice and the index keeps one entry.
    let again = json(&ok(&env, &["snapshot", "publish", p(&made.snaps), "--to", url]));
    assert_eq!(again["uploaded"], 0, "{again}");
    assert_eq!(again["present"].as_u64(), Some(chunks));
    assert_eq!(again["indexed"], false);
    // The same state at another height: its chunks are stored once.
    let later = make(t, 40_000, 13);
    let second = json(&ok(&env, &["snapshot", "publish", p(&later.snaps), "--to", url]));
    assert_eq!(second["indexed"], true);
    assert_eq!(second["uploaded"], 0, "identical chunks are not stored twice: {second}");

    let listed: Vec<Value> = ok(&env, &["snapshot", "list", url])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["height"], 13, "newest first");
    assert_eq!(listed[1]["hash"], made.created["hash"]);

    let home = t.join("from-s3");
    let restored = json(&ok(
        &env,
        &[
            "snapshot",
            "restore",
            "--from",
            url,
            "--home",
            p(&home),
            "--height",
            "12",
            "--app-hash",
            &made.root,
        ],
    ));
    assert_eq!(restored["app_hash"], made.root.as_str());
    assert_eq!(restored["height"], 12);
    assert_eq!(restored["fetch"]["fetched"].as_u64(), Some(chunks));
    assert_eq!(ok(&[], &["state", "root", "--home", p(&home)]).trim(), made.root);
    assert_eq!(download_files(&home), 0, "the download is removed once installed");

    // A directory published for a plain HTTP server.
    let site = t.join("site");
    ok(
        &[],
        &[
            "snapshot",
            "publish",
            p(&made.snaps),
            "--to",
            &format!("file://{}", p(&site)),
        ],
    );
    let http = StaticHttpServer::start(&site).unwrap();
    let home = t.join("from-http");
    let restored = json(&ok(
        &[],
        &[
            "snapshot",
            "restore",
            "--from",
            &http.url(),
            "--home",
            p(&home),
            "--app-hash",
            &made.root,
            "--parallel",
            "4",
        ],
    ));
    assert_eq!(restored["app_hash"], made.root.as_str());
    assert_eq!(http.chunk_gets(), chunks);

    // verify: every chunk and the root against the app hash, nothing written.
    let checked = json(&ok(&[], &["snapshot", "verify", &http.url(), "--app-hash", &made.root]));
    assert_eq!(checked["ok"], true);
    assert_eq!(checked["entries"], made.created["entries"]);
    let wrong = hex::encode([0x42u8; 32]);
    let e = refused(&[], &["snapshot", "verify", &http.url(), "--app-hash", &wrong]);
    assert!(e.contains("app hash"), "{e}");
    let e = refused(
        &env,
        &[
            "snapshot",
            "restore",
            "--from",
            url,
            "--home",
            p(&t.join("wrong")),
            "--app-hash",
            &wrong,
        ],
    );
    assert!(e.contains("app hash"), "{e}");
    assert!(!t.join("wrong").exists(), "a refused restore leaves no home");
    let e = refused(&[], &["snapshot", "list", p(t)]);
    assert!(e.contains("nothing was published there"), "{e}");
    s3.stop().unwrap();
}

#[test]
fn a_corrupt_mirror_is_refused_and_the_other_serves() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (made, site) = make_published(t, 30_000, 5);
    let chunks = made.created["chunks"].as_u64().unwrap();
    let bad = StaticHttpServer::start_with(
        &site,
        StaticHttpOptions {
            corrupt: true,
            ..StaticHttpOptions::default()
        },
    )
    .unwrap();
    let good = StaticHttpServer::start(&site).unwrap();
    let home = t.join("home");
    let out = run(
        &[],
        &[
            "snapshot",
            "restore",
            "--from",
            &bad.url(),
            "--from",
            &good.url(),
            "--home",
            p(&home),
            "--app-hash",
            &made.root,
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let restored = json(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(restored["app_hash"], made.root.as_str());
    let sources = restored["fetch"]["sources"].as_array().unwrap();
    assert!(sources[0]["corrupt"].as_u64().unwrap() > 0, "{restored}");
    assert_eq!(sources[0]["chunks"], 0);
    assert_eq!(sources[1]["chunks"].as_u64(), Some(chunks));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not match the manifest's SHA-256"));
    // Only the corrupt mirror: refused, with the reason, and no home.
    let e = refused(
        &[],
        &[
            "snapshot",
            "restore",
            "--from",
            &bad.url(),
            "--home",
            p(&t.join("none")),
            "--app-hash",
            &made.root,
        ],
    );
    assert!(
        e.contains("could not be fetched intact") && e.contains("corrupt"),
        "{e}"
    );
    assert!(!t.join("none").exists());
}

#[test]
fn a_killed_restore_resumes_and_fetches_only_what_it_lacks() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (made, site) = make_published(t, 40_000, 9);
    let chunks = made.created["chunks"].as_u64().unwrap();
    let http = StaticHttpServer::start_with(
        &site,
        StaticHttpOptions {
            delay_per_request: Duration::from_millis(400),
            ..StaticHttpOptions::default()
        },
    )
    .unwrap();
    let home = t.join("home");
    let args = [
        "snapshot",
        "restore",
        "--from",
        &http.url(),
        "--home",
        p(&home),
        "--app-hash",
        &made.root,
        "--parallel",
        "2",
    ];
    let mut child = command(&[], &args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while download_files(&home) < 3 {
        assert!(Instant::now() < deadline, "the restore kept no chunk in 60 s");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the restore ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!home.exists(), "nothing is installed by a killed restore");
    let kept = download_files(&home) as u64;
    assert!(kept >= 3 && kept < chunks, "kept {kept} of {chunks}");

    http.set_delay_per_request(Duration::ZERO);
    http.reset_counters();
    let resumed = json(&ok(&[], &args));
    assert_eq!(resumed["app_hash"], made.root.as_str());
    assert_eq!(resumed["fetch"]["reused"].as_u64(), Some(kept), "{resumed}");
    assert_eq!(resumed["fetch"]["fetched"].as_u64(), Some(chunks - kept), "{resumed}");
    assert_eq!(
        http.chunk_gets(),
        chunks - kept,
        "the resumed run fetched no chunk it had"
    );
    assert_eq!(ok(&[], &["state", "root", "--home", p(&home)]).trim(), made.root);
    assert_eq!(download_files(&home), 0);
}
