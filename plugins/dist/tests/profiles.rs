//! Two builds that differ only in profile embed byte-identical plugins, and
//! they are the committed artifacts.

use std::path::{Path, PathBuf};
use std::process::Command;

fn dist() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Builds the `dump` example under `profile` and runs it into `out`.
fn dump_with(profile: &str, target: &Path, out: &Path) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--locked",
            "-q",
            "-p",
            "statesnap-builtins",
            "--example",
            "dump",
            "--profile",
            profile,
        ])
        .arg("--target-dir")
        .arg(target)
        .current_dir(dist())
        .status()
        .expect("running cargo");
    assert!(status.success(), "building the dump example ({profile})");
    let dir = if profile == "dev" { "debug" } else { profile };
    std::fs::create_dir_all(out).unwrap();
    let status = Command::new(target.join(dir).join("examples/dump"))
        .arg(out)
        .status()
        .unwrap();
    assert!(status.success(), "running the dump example ({profile})");
}

#[test]
fn builds_that_differ_in_profile_embed_the_committed_bytes() {
    let tmp = std::env::temp_dir().join(format!("statesnap-builtins-{}", std::process::id()));
    let target = dist().join("../../target/builtins-profiles");
    for profile in ["dev", "release"] {
        let out = tmp.join(profile);
        dump_with(profile, &target, &out);
        for (name, _) in statesnap_builtins::BUILT_IN {
            let embedded = std::fs::read(out.join(format!("{name}.wasm"))).unwrap();
            let committed = std::fs::read(dist().join(format!("{name}.wasm"))).unwrap();
            assert!(
                embedded == committed,
                "{name}.wasm as embedded by a {profile} build differs from plugins/dist/"
            );
        }
    }
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn the_lock_names_every_built_in_in_order() {
    let locked = statesnap_builtins::locked();
    let names: Vec<String> = statesnap_builtins::BUILT_IN
        .iter()
        .map(|(n, _)| format!("{n}.wasm"))
        .collect();
    let files: Vec<&str> = locked.iter().map(|(f, _)| *f).collect();
    assert_eq!(files, names);
}
