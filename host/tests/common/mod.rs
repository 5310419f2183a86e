//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod node;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use statesnap::plugin::{Limits, PluginEngine, PluginRegistry};
use statesnap::store::root::is_consensus_key;
use statesnap::store::{HomeStore, StateStore, StoreKind};

/// Each named test fn (taking a [`StoreKind`]), once per store, as
/// `<test>::lmdb` and `<test>::hdf5`, so a failure names its store. Bring it
/// in with `#[macro_use] mod common;`.
#[allow(unused_macros)]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn lmdb() {
                super::$name(statesnap::store::StoreKind::Lmdb)
            }
            #[test]
            fn hdf5() {
                super::$name(statesnap::store::StoreKind::Hdf5)
            }
        }
    )*};
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// The small h5py-written fixture home.
pub fn fixture_home() -> PathBuf {
    fixtures().join("xian-hdf5-small")
}

/// The fixture's state in a home of `kind`: for HDF5 the h5py-written
/// fixture itself (read it, don't write it); for LMDB its conversion, by the
/// library's `store::convert`, into a new home `dir/fixture-lmdb`.
pub fn fixture_home_as(kind: StoreKind, dir: &Path) -> PathBuf {
    match kind {
        StoreKind::Hdf5 => fixture_home(),
        StoreKind::Lmdb => {
            let home = dir.join("fixture-lmdb");
            let report = statesnap::store::convert::convert(&fixture_home(), &home, kind, |_| {}).unwrap();
            assert_eq!((report.from, report.to), (StoreKind::Hdf5, StoreKind::Lmdb));
            assert_eq!(report.root, fixture_root(), "the converted fixture keeps its root");
            assert_eq!(HomeStore::open_read_only(&home).unwrap().kind(), StoreKind::Lmdb);
            home
        }
    }
}

pub fn fixture_root() -> [u8; 32] {
    let hex_root = std::fs::read_to_string(fixtures().join("xian-hdf5-small.root")).unwrap();
    hex::decode(hex_root.trim()).unwrap().try_into().unwrap()
}

/// A plugin's wasm file, by crate name: a built-in's committed artifact
/// (`plugins/dist/`, what the binary embeds), or a test fixture or the
/// template, built for wasm32-wasip2 on first use.
pub fn wasm(crate_name: &str) -> PathBuf {
    if let Some(name) = crate_name.strip_prefix("statesnap-plugin-") {
        let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../plugins/dist/{name}.wasm"));
        if dist.is_file() {
            return dist;
        }
    }
    fixture_plugin_dir().join(format!("{}.wasm", crate_name.replace('-', "_")))
}

/// Builds every test-fixture plugin (`tests/plugins/*`) and the plugin
/// template once per test process, with the same settings the built-ins are
/// built with, in `<target>/plugins` (a target directory of its own: sharing
/// the outer build's would wait on its lock). Cargo's lock serialises test
/// processes that build at once.
fn fixture_plugin_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
        let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("plugins");
        let mut packages = Vec::new();
        for parent in ["tests/plugins", "examples"] {
            let mut dirs: Vec<PathBuf> = std::fs::read_dir(root.join(parent))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.join("Cargo.toml").is_file())
                .collect();
            dirs.sort();
            for dir in dirs {
                let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
                let name = manifest
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("name = "))
                    .unwrap_or_else(|| panic!("no package name in {}", dir.display()));
                packages.push(name.trim_matches('"').to_string());
            }
        }
        let mut cmd = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.current_dir(&root)
            .args([
                "build",
                "--locked",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--target-dir",
            ])
            .arg(&target)
            .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
            .env("CARGO_PROFILE_RELEASE_STRIP", "true")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_TARGET_DIR");
        for p in &packages {
            cmd.args(["-p", p]);
        }
        let out = cmd.output().expect("could not run cargo to build the test plugins");
        assert!(
            out.status.success(),
            "building the test plugins ({}) for wasm32-wasip2 failed; scripts/setup.sh installs the target:\n{}",
            packages.join(", "),
            String::from_utf8_lossy(&out.stderr)
        );
        target.join("wasm32-wasip2/release")
    })
    .clone()
}

pub fn testplugin(name: &str) -> PathBuf {
    wasm(&format!("statesnap-testplugin-{name}"))
}

pub fn registry() -> PluginRegistry {
    registry_with(Limits::default())
}

pub fn registry_with(limits: Limits) -> PluginRegistry {
    PluginRegistry::new(PluginEngine::new(limits).unwrap(), true)
}

/// Every consensus entry of a home, in order.
pub fn consensus_entries(home: &Path) -> Vec<(String, String)> {
    let store = HomeStore::open_read_only(home).unwrap();
    store
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| is_consensus_key(&e.key) && e.stored != "null")
        .map(|e| (e.key, e.stored))
        .collect()
}

/// Every file under `dir` with its bytes: equal before and after means the
/// directory was left exactly as it was.
pub fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    if !dir.exists() {
        return out;
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.insert(p.strip_prefix(dir).unwrap().to_path_buf(), b"<dir>".to_vec());
                stack.push(p);
            } else {
                out.insert(p.strip_prefix(dir).unwrap().to_path_buf(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// Copies a directory tree.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let target = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_tree(&p, &target);
        } else {
            std::fs::copy(&p, &target).unwrap();
        }
    }
}

/// No staging or replaced-home leftovers next to `home`.
pub fn no_leftovers(home: &Path) -> bool {
    let parent = home.parent().unwrap();
    std::fs::read_dir(parent)
        .unwrap()
        .all(|e| !e.unwrap().file_name().to_string_lossy().contains(".statesnap-"))
}

/// Parses JSON lines `{"key":…,"stored":…}` (the export format).
pub fn parse_jsonl(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["key"].as_str().unwrap().to_string(),
                v["stored"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Every entry of a store, in its order.
pub fn all_entries(store: &dyn StateStore) -> Vec<(String, String)> {
    store
        .entries()
        .unwrap()
        .map(|e| e.map(|e| (e.key, e.stored)).unwrap())
        .collect()
}

/// `wasm` with a custom section of `extra` pseudo-random (incompressible)
/// bytes appended: the same plugin, another SHA-256, any size.
pub fn padded_plugin(wasm: &[u8], extra: usize) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            out.push(if n == 0 { byte } else { byte | 0x80 });
            if n == 0 {
                break;
            }
        }
    }
    let name = b"statesnap-test-padding";
    let mut payload = Vec::with_capacity(extra);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    while payload.len() < extra {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        payload.extend_from_slice(&x.to_le_bytes());
    }
    payload.truncate(extra);
    let mut out = wasm.to_vec();
    out.push(0); // custom section
    leb(1 + name.len() + payload.len(), &mut out);
    leb(name.len(), &mut out);
    out.extend_from_slice(name);
    out.extend_from_slice(&payload);
    out
}
