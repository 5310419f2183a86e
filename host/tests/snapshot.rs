//! Create / verify / restore, end to end through the library, with every
//! built-in plugin; and every way a snapshot must be refused. Where the store
//! matters (the source and target homes, the staging home a refused restore
//! must remove), each test runs once per store: `<test>::lmdb`, `<test>::hdf5`.

#[macro_use]
mod common;

use std::path::{Path, PathBuf};

use common::*;
use indicatif::ProgressBar;
use statesnap::plugin::check::{CheckFailure, CheckName, Refusal};
use statesnap::plugin::{Limits, Plugin, PluginError, PluginRegistry};
use statesnap::snapshot::{
    self, CreateOptions, CreateReport, Manifest, PluginRef, RestoreError, SnapshotDir, SnapshotFile, SnapshotFileError,
};
use statesnap::store::range_proof::ProofError;
use statesnap::store::{generate, HomeStore, StateStore, StoreKind};

on_both_stores!(
    round_trip_fixture_with_each_built_in,
    round_trip_generated_100k_with_each_built_in_and_determinism,
    flipped_byte_in_any_chunk_is_refused,
    truncated_chunk_is_refused,
    swapped_chunks_are_refused,
    wrong_app_hash_is_refused,
    right_chunk_hashes_but_another_state_is_refused_at_the_first_chunk,
    entries_out_of_order_are_refused,
    never_replaces_a_directory_that_is_not_a_home,
    an_interrupted_swap_is_recovered,
);

fn hidden() -> ProgressBar {
    ProgressBar::hidden()
}

/// Creates a snapshot of `home` with `plugin` (parameters overridden by `params`).
fn create(home: &Path, plugin: &Plugin, params: &[(&str, &str)], out: &Path) -> CreateReport {
    try_create(home, plugin, params, out).unwrap()
}

fn try_create(home: &Path, plugin: &Plugin, params: &[(&str, &str)], out: &Path) -> anyhow::Result<CreateReport> {
    let store = statesnap::store::HomeStore::open_read_only(home)?;
    let overrides: Vec<(String, String)> = params.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    let params = plugin.resolve_params(&overrides)?;
    let d = plugin.description();
    snapshot::create(
        &store,
        snapshot::Codec::plugin(plugin, &params)?,
        PluginRef {
            sha256: plugin.sha256(),
            name: d.name.clone(),
            version: d.version.clone(),
        },
        d.format,
        &CreateOptions::new("test-chain", 7, params),
        out,
        &hidden(),
    )
}

/// Restores into `home` as `kind` (`None`: the layout of the home replaced,
/// or LMDB for a new one, as the CLI does without `--store`).
fn restore(
    reg: &PluginRegistry,
    dir: &Path,
    home: &Path,
    kind: Option<StoreKind>,
    trusted: [u8; 32],
) -> Result<snapshot::RestoreSummary, RestoreError> {
    let options = snapshot::RestoreOptions {
        store: kind,
        ..Default::default()
    };
    snapshot::restore_dir(dir, home, trusted, reg, options, &hidden())
}

/// The layout of the existing home `home`.
fn kind_of(home: &Path) -> StoreKind {
    HomeStore::open_read_only(home).unwrap().kind()
}

fn generated_home(dir: &Path, keys: u64, seed: u64, kind: StoreKind) -> PathBuf {
    let home = dir.join(format!("gen-{keys}-{seed}-{kind}"));
    let mut store = HomeStore::create(&home, kind).unwrap();
    store.set_bulk(true);
    generate::generate(&mut store, keys, seed, |_| {}).unwrap();
    store.flush().unwrap();
    home
}

fn built_in(reg: &mut PluginRegistry, name: &str) -> std::sync::Arc<Plugin> {
    reg.resolve(name).unwrap()
}

/// The fixture's state in a `kind` home (the h5py fixture, or its LMDB
/// conversion) → snapshot → a new `kind` home: the fixture's root and entries.
fn round_trip_fixture_with_each_built_in(kind: StoreKind) {
    let tmp = tempfile::tempdir().unwrap();
    let source = fixture_home_as(kind, tmp.path());
    let mut reg = registry();
    let expected = consensus_entries(&fixture_home());
    assert!(expected.len() > 100);
    assert_eq!(
        consensus_entries(&source),
        expected,
        "{kind}: the source holds the fixture"
    );
    for name in ["zstd", "gzip", "brotli"] {
        let plugin = built_in(&mut reg, name);
        let report = create(&source, &plugin, &[], &tmp.path().join(format!("snaps-{name}")));
        assert_eq!(
            report.manifest.app_hash,
            fixture_root(),
            "{kind}/{name}: snapshot app hash is the fixture root"
        );
        assert_eq!(report.manifest.entries, expected.len() as u64, "{kind}/{name}");
        snapshot::verify(&report.dir).unwrap();
        let home = tmp.path().join(format!("restored-{name}"));
        let summary = restore(&reg, &report.dir, &home, Some(kind), fixture_root()).unwrap();
        assert_eq!(summary.root, fixture_root(), "{kind}/{name}");
        assert_eq!(summary.entries, expected.len() as u64, "{kind}/{name}");
        assert_eq!(kind_of(&home), kind, "{kind}/{name}: restored as {kind}");
        assert_eq!(
            consensus_entries(&home),
            expected,
            "{kind}/{name}: restored entries equal the original"
        );
        assert!(no_leftovers(&home), "{kind}/{name}");
    }
}

/// 100k generated entries in a `kind` home → snapshot (twice, identical) →
/// a new `kind` home, with each built-in plugin.
fn round_trip_generated_100k_with_each_built_in_and_determinism(kind: StoreKind) {
    let tmp = tempfile::tempdir().unwrap();
    let home = generated_home(tmp.path(), 100_000, 3, kind);
    let expected = consensus_entries(&home);
    // Both stores' runs hold the same state: the generator's, as in memory.
    let mut mem = statesnap::store::memory::MemoryStore::new();
    generate::generate(&mut mem, 100_000, 3, |_| {}).unwrap();
    let root = statesnap::store::root::root_of_unsorted(mem.iter()).unwrap();
    assert_eq!(
        statesnap::store::root::root_of_unsorted(expected.iter().map(|(k, v)| (k.as_str(), v.as_str()))).unwrap(),
        root,
        "{kind}: the generated home holds the generator's state"
    );
    let mut reg = registry();
    for name in ["zstd", "gzip", "brotli"] {
        let plugin = built_in(&mut reg, name);
        // Small chunks so the state spans several of them.
        let params = [("chunk_bytes", "1000000")];
        let a = create(&home, &plugin, &params, &tmp.path().join(format!("a-{name}")));
        let b = create(&home, &plugin, &params, &tmp.path().join(format!("b-{name}")));
        assert!(
            a.manifest.chunks.len() > 2,
            "{kind}/{name}: {} chunks",
            a.manifest.chunks.len()
        );
        assert_eq!(a.hash, b.hash, "{kind}/{name}: two creates give the same snapshot hash");
        assert_eq!(a.manifest, b.manifest, "{kind}/{name}");
        assert_eq!(
            a.manifest.app_hash, root,
            "{kind}/{name}: the snapshot's app hash is the state root"
        );
        let target = tmp.path().join(format!("restored-{name}"));
        let summary = restore(&reg, &a.dir, &target, Some(kind), a.manifest.app_hash).unwrap();
        assert_eq!(summary.root, root, "{kind}/{name}");
        assert_eq!(summary.entries, expected.len() as u64, "{kind}/{name}");
        assert_eq!(kind_of(&target), kind, "{kind}/{name}: restored as {kind}");
        assert_eq!(
            consensus_entries(&target),
            expected,
            "{kind}/{name}: restored state exports identically"
        );
        std::fs::remove_dir_all(&target).unwrap();
    }
}

/// A snapshot with several chunks, and an existing home of layout `kind` to
/// restore over.
struct Scene {
    _tmp: tempfile::TempDir,
    reg: PluginRegistry,
    snap: PathBuf,
    manifest: Manifest,
    home: PathBuf,
    kind: StoreKind,
}

fn scene(kind: StoreKind) -> Scene {
    let tmp = tempfile::tempdir().unwrap();
    let mut reg = registry();
    let plugin = built_in(&mut reg, "zstd");
    let report = create(
        &fixture_home(),
        &plugin,
        &[("chunk_bytes", "4000")],
        &tmp.path().join("snaps"),
    );
    assert!(
        report.manifest.chunks.len() >= 3,
        "{} chunks",
        report.manifest.chunks.len()
    );
    // The node's current home: some other state that must survive a refused restore.
    let home = tmp.path().join("home");
    let mut store = HomeStore::create(&home, kind).unwrap();
    generate::generate(&mut store, 500, 9, |_| {}).unwrap();
    store.flush().unwrap();
    drop(store);
    assert_eq!(kind_of(&home), kind);
    Scene {
        snap: report.dir.clone(),
        manifest: report.manifest,
        home,
        kind,
        reg,
        _tmp: tmp,
    }
}

impl Scene {
    /// Restores (staging a home of the scene's layout), expects a refusal, and
    /// checks the home was left exactly as it was.
    fn refused(&self, trusted: [u8; 32]) -> RestoreError {
        let kind = self.kind;
        let before = tree(&self.home);
        let err = restore(&self.reg, &self.snap, &self.home, Some(kind), trusted)
            .expect_err(&format!("{kind}: restore must be refused"));
        assert_eq!(
            tree(&self.home),
            before,
            "{kind}: home changed by a refused restore ({err})"
        );
        assert!(no_leftovers(&self.home), "{kind}: staging left behind after: {err}");
        err
    }

    fn chunk(&self, i: u32) -> PathBuf {
        SnapshotDir::open(&self.snap).unwrap().chunk_path(i)
    }

    /// After a refusal the same process still restores a good snapshot; with
    /// no layout given, the replaced home's is kept.
    fn still_healthy(&self) {
        let kind = self.kind;
        let good = self.snap.parent().unwrap().join("good");
        let mut reg = registry();
        let plugin = built_in(&mut reg, "gzip");
        let report = create(&fixture_home(), &plugin, &[], &good);
        restore(&self.reg, &report.dir, &self.home, None, fixture_root()).unwrap();
        assert_eq!(kind_of(&self.home), kind, "{kind}: the replaced home's layout is kept");
        assert_eq!(
            consensus_entries(&self.home),
            consensus_entries(&fixture_home()),
            "{kind}"
        );
        assert!(no_leftovers(&self.home), "{kind}");
    }
}

fn flipped_byte_in_any_chunk_is_refused(kind: StoreKind) {
    let s = scene(kind);
    for i in 0..s.manifest.chunks.len() as u32 {
        let path = s.chunk(i);
        let original = std::fs::read(&path).unwrap();
        let mut bad = original.clone();
        let at = bad.len() / 2;
        bad[at] ^= 0x01;
        std::fs::write(&path, &bad).unwrap();
        match s.refused(fixture_root()) {
            RestoreError::ChunkHash { index, .. } => assert_eq!(index, i),
            e => panic!("{kind}: chunk {i}: unexpected error {e}"),
        }
        std::fs::write(&path, &original).unwrap();
    }
    s.still_healthy();
}

fn truncated_chunk_is_refused(kind: StoreKind) {
    let s = scene(kind);
    let path = s.chunk(1);
    let data = std::fs::read(&path).unwrap();
    std::fs::write(&path, &data[..data.len() - 10]).unwrap();
    let e = s.refused(fixture_root());
    assert!(matches!(e, RestoreError::ChunkHash { index: 1, .. }), "{kind}: {e}");
}

fn swapped_chunks_are_refused(kind: StoreKind) {
    let s = scene(kind);
    let (a, b) = (s.chunk(0), s.chunk(1));
    let (da, db) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    std::fs::write(&a, &db).unwrap();
    std::fs::write(&b, &da).unwrap();
    let e = s.refused(fixture_root());
    assert!(matches!(e, RestoreError::ChunkHash { index: 0, .. }), "{kind}: {e}");
}

fn wrong_app_hash_is_refused(kind: StoreKind) {
    let s = scene(kind);
    let mut wrong = fixture_root();
    wrong[0] ^= 0xff;
    let e = s.refused(wrong);
    assert!(
        matches!(e, RestoreError::AppHashMismatch { claimed, trusted } if claimed == fixture_root() && trusted == wrong),
        "{kind}: {e}"
    );
    s.still_healthy();
}

/// Rewrites a snapshot's manifest (its hash changes, as a forger's would).
fn rewrite_manifest(dir: &Path, edit: impl FnOnce(&mut Manifest)) -> Manifest {
    let snap = SnapshotDir::open(dir).unwrap();
    let mut m = snap.manifest().unwrap();
    edit(&mut m);
    std::fs::write(snap.path().join("manifest.bin"), m.encode()).unwrap();
    m
}

fn right_chunk_hashes_but_another_state_is_refused_at_the_first_chunk(kind: StoreKind) {
    let s = scene(kind);
    let mut other = fixture_root();
    other[31] ^= 0x55;
    // The forger claims the chunks hold the state `other`, and the node
    // trusts `other`: the first chunk's range proof gives the real root.
    rewrite_manifest(&s.snap, |m| m.app_hash = other);
    let e = s.refused(other);
    match e {
        RestoreError::Proof {
            index: 0,
            source: ProofError::Root { got, trusted },
        } => {
            assert_eq!(trusted, other, "{kind}");
            assert_ne!(got, trusted, "{kind}");
        }
        e => panic!("{kind}: unexpected {e}"),
    }
    s.still_healthy();
}

fn entries_out_of_order_are_refused(kind: StoreKind) {
    let tmp = tempfile::tempdir().unwrap();
    let mut reg = registry();
    let unsorted = reg.add_file(&testplugin("unsorted")).unwrap();
    // Creating reads the snapshot back, so it refuses to make one.
    let out = tmp.path().join("create");
    let e = format!("{:#}", try_create(&fixture_home(), &unsorted, &[], &out).unwrap_err());
    assert!(e.contains("out of order"), "{kind}: {e}");
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        0,
        "{kind}: no partial snapshot"
    );
    // A peer's snapshot read by it is refused.
    let snap = tmp.path().join("snap");
    snapshot_for_reader(&mut reg, &unsorted, &snap);
    let home = tmp.path().join("home");
    let e = restore(&reg, &snap, &home, Some(kind), fixture_root()).unwrap_err();
    assert!(matches!(e, RestoreError::EntryOrder { chunk: 0, .. }), "{kind}: {e}");
    assert!(!home.exists() && no_leftovers(&home), "{kind}");
}

/// A snapshot made by a well-behaved plugin whose manifest is retargeted at
/// `hostile`: the hostile plugin then runs as the reader.
fn snapshot_for_reader(reg: &mut PluginRegistry, hostile: &Plugin, out: &Path) -> Manifest {
    // The template writes and reads the identity format the fixtures read.
    let honest = reg.add_file(&common::wasm("statesnap-plugin-template")).unwrap();
    let report = create(&fixture_home(), &honest, &[], out);
    let d = hostile.description().clone();
    rewrite_manifest(&report.dir, |m| {
        m.plugin = PluginRef {
            sha256: hostile.sha256(),
            name: d.name,
            version: d.version,
        };
        m.format = d.format;
        m.params = d.params;
    })
}

/// Runs the hostile plugin `name` as writer and as reader: each fails with a
/// [`PluginError`] that `expect` accepts and that names the plugin.
fn hostile_case(name: &str, limits: Limits, expect: impl Fn(&PluginError) -> bool) {
    let tmp = tempfile::tempdir().unwrap();
    let mut reg = registry_with(limits);
    let plugin = reg.add_file(&testplugin(name)).unwrap();
    // Creating with it fails cleanly (in its writer, or in its reader, which
    // creating runs too) and leaves no snapshot behind.
    let out = tmp.path().join("create");
    let e = try_create(&fixture_home(), &plugin, &[], &out).expect_err(name);
    match e.downcast_ref::<PluginError>() {
        Some(pe) => {
            assert!(expect(pe), "{name}: create error: {e:#}");
            assert_eq!(pe.plugin(), plugin.label(), "{name}: the error names the plugin");
        }
        None => panic!("{name}: create error: {e:#}"),
    }
    assert!(snapshot::list_snapshots(&out).unwrap().is_empty());
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        0,
        "{name}: no partial snapshot"
    );
    // Restoring with it as the reader fails cleanly and leaves the home as it was.
    let snap = tmp.path().join("snap");
    snapshot_for_reader(&mut reg, &plugin, &snap);
    let home = tmp.path().join("home");
    copy_tree(&fixture_home(), &home);
    let before = tree(&home);
    match restore(&reg, &snap, &home, None, fixture_root()).unwrap_err() {
        RestoreError::Plugin(pe) => {
            assert!(expect(&pe), "{name}: restore error: {pe}");
            assert_eq!(pe.plugin(), plugin.label(), "{name}: the error names the plugin");
        }
        e => panic!("{name}: restore error: {e}"),
    }
    assert_eq!(tree(&home), before);
    assert!(no_leftovers(&home));
    // The process is healthy: a good restore still works.
    let good = tmp.path().join("good");
    let zstd = reg.resolve("zstd").unwrap();
    let report = create(&fixture_home(), &zstd, &[], &good);
    restore(&reg, &report.dir, &home, None, fixture_root()).unwrap();
}

fn small_limits() -> Limits {
    Limits {
        fuel_per_call: 500_000_000,
        memory_bytes: 64 << 20,
        ..Limits::default()
    }
}

#[test]
fn trapping_plugin_is_refused() {
    hostile_case("trap", Limits::default(), |e| matches!(e, PluginError::Trap { .. }));
}

#[test]
fn looping_plugin_runs_out_of_fuel() {
    hostile_case(
        "spin",
        small_limits(),
        |e| matches!(e, PluginError::OutOfFuel { limit, .. } if *limit == small_limits().fuel_per_call),
    );
}

#[test]
fn unbounded_allocation_hits_the_memory_limit() {
    hostile_case(
        "hog",
        small_limits(),
        |e| matches!(e, PluginError::MemoryLimit { limit, .. } if *limit == small_limits().memory_bytes),
    );
}

#[test]
fn decompression_bomb_is_stopped_by_the_output_cap() {
    hostile_case(
        "bomb",
        Limits::default(),
        |e| matches!(e, PluginError::OutputLimit { size, limit, .. } if size > limit),
    );
}

#[test]
fn decompression_bomb_is_stopped_by_the_memory_cap() {
    hostile_case("bomb", small_limits(), |e| matches!(e, PluginError::MemoryLimit { .. }));
}

#[test]
fn plugin_for_another_contract_major_is_refused() {
    let mut reg = registry();
    let e = reg.add_file(&testplugin("v2")).unwrap_err();
    assert!(
        matches!(
            e.downcast_ref::<PluginError>(),
            Some(PluginError::IncompatibleContract { found, supported, .. }) if found == "2.0.0" && supported == "1.x"
        ),
        "{e:#}"
    );
}

#[test]
fn garbage_is_not_a_plugin() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("junk.wasm");
    std::fs::write(&f, b"\0asm garbage").unwrap();
    let e = registry().add_file(&f).unwrap_err();
    assert!(
        matches!(e.downcast_ref::<PluginError>(), Some(PluginError::NotAComponent { .. })),
        "{e:#}"
    );
}

#[test]
fn conformance_check_passes_built_ins_and_fails_nondeterminism() {
    let mut reg = registry();
    for name in ["zstd", "gzip", "brotli"] {
        let p = reg.resolve(name).unwrap();
        let report = statesnap::plugin::check::check(&p, 2000).unwrap();
        assert!(report.passed(), "{name}: {:?}", report.items);
        assert!(report.encode_fuel > 0 && report.decode_fuel > 0);
    }
    let nondet = reg.add_file(&testplugin("nondet")).unwrap();
    let report = statesnap::plugin::check::check(&nondet, 2000).unwrap();
    assert!(!report.passed());
    let det = report
        .items
        .iter()
        .find(|i| i.name == CheckName::Deterministic)
        .unwrap();
    assert_eq!(det.outcome, Err(CheckFailure::HiddenState), "{det:?}");
    let verdict = report.verdict().unwrap_err();
    assert_eq!(verdict, Refusal::Check(CheckFailure::HiddenState));
    // What a proposal of it is told, and the CLI prints.
    assert_eq!(
        verdict.to_string(),
        "it fails the conformance check `deterministic`: a second snapshot in the same instance differs: output \
         depends on hidden state (run `statesnap plugin check FILE.wasm`)"
    );
}

/// Refused before any store is touched: one store is enough.
#[test]
fn plugin_from_an_unknown_snapshot_is_named() {
    let s = scene(StoreKind::Hdf5);
    rewrite_manifest(&s.snap, |m| m.plugin.sha256 = [9; 32]);
    let e = s.refused(fixture_root());
    assert!(
        matches!(e, RestoreError::PluginUnavailable { sha256, .. } if sha256 == [9; 32]),
        "{e}"
    );
}

fn never_replaces_a_directory_that_is_not_a_home(kind: StoreKind) {
    let s = scene(kind);
    let precious = s.snap.parent().unwrap().join("precious");
    std::fs::create_dir_all(&precious).unwrap();
    std::fs::write(precious.join("notes.txt"), b"keep me").unwrap();
    let before = tree(&precious);
    for target in [Some(kind), None] {
        let e = restore(&s.reg, &s.snap, &precious, target, fixture_root()).unwrap_err();
        assert!(
            matches!(&e, RestoreError::NotAHome { home, .. } if home == &precious),
            "{kind}: {e}"
        );
        assert!(e.to_string().contains("not a Xian state home"), "{kind}: {e}");
        assert_eq!(tree(&precious), before, "{kind}: the directory is left as it was");
        assert!(no_leftovers(&precious), "{kind}");
    }
    assert_eq!(std::fs::read(precious.join("notes.txt")).unwrap(), b"keep me");
}

fn an_interrupted_swap_is_recovered(kind: StoreKind) {
    let s = scene(kind);
    // A process killed between moving the home aside and moving the new one in.
    let before = tree(&s.home);
    let aside = s.home.with_file_name(".home.statesnap-replaced");
    std::fs::rename(&s.home, &aside).unwrap();
    restore(&s.reg, &s.snap, &s.home, Some(kind), [0; 32]).unwrap_err();
    assert_eq!(tree(&s.home), before, "{kind}: the old home is back");
    assert!(no_leftovers(&s.home), "{kind}");
    assert_eq!(kind_of(&s.home), kind);
    // And a good restore over it then replaces it.
    s.still_healthy();
}

/// The h5py-written fixture (HDF5) → snapshot → LMDB home → snapshot → HDF5
/// home: the same root, the same entries, the same snapshot hash throughout.
#[test]
fn round_trip_across_stores_keeps_root_entries_and_snapshot_hash() {
    let tmp = tempfile::tempdir().unwrap();
    let mut reg = registry();
    let plugin = built_in(&mut reg, "zstd");
    let expected = consensus_entries(&fixture_home());
    let a = create(&fixture_home(), &plugin, &[], &tmp.path().join("a"));
    let lmdb = tmp.path().join("lmdb");
    let s = restore(&reg, &a.dir, &lmdb, Some(StoreKind::Lmdb), fixture_root()).unwrap();
    assert_eq!(s.root, fixture_root());
    assert_eq!(HomeStore::open_read_only(&lmdb).unwrap().kind(), StoreKind::Lmdb);
    assert_eq!(consensus_entries(&lmdb), expected);
    let b = create(&lmdb, &plugin, &[], &tmp.path().join("b"));
    assert_eq!(b.hash, a.hash, "the LMDB home snapshots identically");
    let hdf5 = tmp.path().join("hdf5");
    restore(&reg, &b.dir, &hdf5, Some(StoreKind::Hdf5), fixture_root()).unwrap();
    assert_eq!(HomeStore::open_read_only(&hdf5).unwrap().kind(), StoreKind::Hdf5);
    assert_eq!(consensus_entries(&hdf5), expected);
    let c = create(&hdf5, &plugin, &[], &tmp.path().join("c"));
    assert_eq!(c.hash, a.hash);
    assert_eq!(c.manifest.app_hash, fixture_root());
}

/// Bounded reads: a chunk (or manifest) that is a link to a device never
/// ends, and the restore and the verifier refuse it without reading it.
#[test]
fn a_snapshot_file_that_never_ends_is_refused_unread() {
    let s = scene(StoreKind::Lmdb);
    let chunk = s.chunk(1);
    let saved = std::fs::read(&chunk).unwrap();
    std::fs::remove_file(&chunk).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &chunk).unwrap();
    let device = |e: &SnapshotFileError, want: SnapshotFile| matches!(e, SnapshotFileError::NotAFile { file, kind: "character device", .. } if *file == want);
    match s.refused(fixture_root()) {
        RestoreError::Unreadable(e) => assert!(
            e.downcast_ref().is_some_and(|e| device(e, SnapshotFile::Chunk(1))),
            "{e:#}"
        ),
        e => panic!("{e}"),
    }
    let e = snapshot::verify(&s.snap).unwrap_err();
    assert!(
        e.downcast_ref().is_some_and(|e| device(e, SnapshotFile::Chunk(1))),
        "{e:#}"
    );
    std::fs::remove_file(&chunk).unwrap();
    std::fs::write(&chunk, saved).unwrap();

    let manifest = s.snap.join("manifest.bin");
    std::fs::remove_file(&manifest).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &manifest).unwrap();
    match s.refused(fixture_root()) {
        RestoreError::Unreadable(e) => assert!(
            e.downcast_ref().is_some_and(|e| device(e, SnapshotFile::Manifest)),
            "{e:#}"
        ),
        e => panic!("{e}"),
    }
}

/// A chunk file larger than the manifest's snapshot size, or than any chunk
/// may be (CometBFT's 16,000,000 bytes), is refused by its size, unread: a
/// sparse 3 GB file costs nothing to refuse.
#[test]
fn an_oversized_chunk_is_refused_by_its_size() {
    let s = scene(StoreKind::Lmdb);
    let grow = |len: u64| {
        let f = std::fs::OpenOptions::new().write(true).open(s.chunk(0)).unwrap();
        f.set_len(len).unwrap();
    };
    // Chunk 0 of `size` bytes, refused over `limit`.
    let too_large = |e: &anyhow::Error, size: u64, limit: u64| {
        matches!(
            e.downcast_ref(),
            Some(SnapshotFileError::TooLarge { file: SnapshotFile::Chunk(0), size: s, limit: l, .. })
                if (*s, *l) == (size, limit)
        )
    };
    let refused_unread = |size: u64, limit: u64| match s.refused(fixture_root()) {
        RestoreError::Unreadable(e) => assert!(too_large(&e, size, limit), "{e:#}"),
        e => panic!("{e}"),
    };
    grow(3_000_000_000);
    refused_unread(3_000_000_000, s.manifest.snapshot_bytes);
    let e = snapshot::verify(&s.snap).unwrap_err();
    assert!(too_large(&e, 3_000_000_000, s.manifest.snapshot_bytes), "{e:#}");

    // A manifest that allows more than a chunk may hold: the chunk limit holds.
    let chunks = s.manifest.chunks.len() as u64;
    rewrite_manifest(&s.snap, |m| {
        m.snapshot_bytes = chunks * snapshot::MAX_CHUNK_BYTES as u64
    });
    grow(20_000_000);
    refused_unread(20_000_000, snapshot::MAX_CHUNK_BYTES as u64);
}

/// A snapshot whose chunks hold more entries or bytes than its manifest says
/// is stopped in the chunk where the count is passed, not after the last.
#[test]
fn a_snapshot_holding_more_than_its_manifest_says_is_stopped_at_once() {
    let s = scene(StoreKind::Lmdb);
    let honest = s.manifest.clone();
    rewrite_manifest(&s.snap, |m| m.entries = 5);
    let e = s.refused(fixture_root());
    assert!(
        matches!(
            e,
            RestoreError::PastManifest {
                chunk: 0,
                entries: 6,
                manifest_entries: 5,
                ..
            }
        ),
        "{e}"
    );

    rewrite_manifest(&s.snap, |m| {
        *m = Manifest {
            state_bytes: 100,
            ..honest.clone()
        }
    });
    let e = s.refused(fixture_root());
    assert!(
        matches!(
            e,
            RestoreError::PastManifest {
                chunk: 0,
                manifest_bytes: 100,
                ..
            }
        ),
        "{e}"
    );
}

/// A snapshot whose state cannot fit on the disk is refused before anything
/// is written.
#[test]
fn a_state_larger_than_the_free_disk_is_refused_before_writing() {
    let s = scene(StoreKind::Lmdb);
    rewrite_manifest(&s.snap, |m| m.state_bytes = 1 << 60);
    let e = s.refused(fixture_root());
    assert!(
        matches!(e, RestoreError::NoSpace { needed, .. } if needed == 1 << 60),
        "{e}"
    );
}
