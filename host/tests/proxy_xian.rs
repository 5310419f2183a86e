//! The proxy's Xian side in process, on LMDB homes laid out as Xian's node
//! writes them (state plus the `__latest_block` marker): snapshots taken at a
//! Commit and checked against the marker, listed at format 1000+f beside the
//! app's own, served; and a restore through the proxy's answers into a new
//! home with the app (a stand-in process, `sleep`) stopped and restarted
//! around the swap, the marker written from the manifest.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use tendermint_proto::v0_38::abci::{
    request, response, response_apply_snapshot_chunk, response_offer_snapshot, Request, RequestApplySnapshotChunk,
    RequestCommit, RequestLoadSnapshotChunk, RequestOfferSnapshot, Response, ResponseCommit, ResponseListSnapshots,
    Snapshot,
};

use statesnap::node::Metrics;
use statesnap::plugin::{Limits, Plugin, PluginEngine, PluginRegistry};
use statesnap::proxy::app_process::AppProcess;
use statesnap::proxy::marker::{BlockMarker, MARKER_KEY};
use statesnap::proxy::wire::kind;
use statesnap::proxy::xian_calls::{XianCalls, FORMAT_OFFSET};
use statesnap::proxy::xian_snapshots::{XianSnapshotSettings, XianSnapshots};
use statesnap::proxy::{AppSocket, Endpoint, Handler};
use statesnap::snapshot::{Manifest, MANIFEST_VERSION_BLOCK_TIME};
use statesnap::store::generate::generate;
use statesnap::store::root::state_root_of;
use statesnap::store::xian_lmdb::XianLmdbStore;
use statesnap::store::StateStore;

const CHAIN: &str = "xian-proxy-test";
const NANOS: u64 = 1_765_000_000_123_456_789;

/// The built-in plugins, and zstd from them.
fn registry() -> (Arc<PluginRegistry>, Arc<Plugin>) {
    let mut registry = PluginRegistry::new(PluginEngine::new(Limits::default()).unwrap(), true);
    let zstd = registry.resolve("zstd").unwrap();
    (Arc::new(registry), zstd)
}

/// A Xian home of `keys` generated keys whose marker says `height` and the
/// state's root (or `wrong_hash`).
fn xian_home(home: &Path, keys: u64, height: u64, wrong_hash: bool) -> [u8; 32] {
    let mut store = XianLmdbStore::create(home).unwrap();
    generate(&mut store, keys, 7, |_| {}).unwrap();
    let (root, _) = state_root_of(&store, || {}).unwrap();
    let marker = BlockMarker {
        height,
        app_hash: if wrong_hash { [0xee; 32] } else { root },
        nanos: NANOS,
    };
    store
        .write_batch(&[(MARKER_KEY.to_string(), Some(marker.render()))])
        .unwrap();
    store.flush().unwrap();
    root
}

fn settings(home: &Path, dir: &Path, plugin: &Arc<Plugin>) -> XianSnapshotSettings {
    let plugin = plugin.clone();
    let params = plugin
        .resolve_params(&[("chunk_bytes".into(), "20000".into())])
        .unwrap();
    XianSnapshotSettings {
        home: home.to_path_buf(),
        dir: dir.to_path_buf(),
        interval: 5,
        keep_recent: 2,
        plugin,
        params,
        chain_id: CHAIN.into(),
    }
}

fn frame(value: request::Value) -> Vec<u8> {
    Request { value: Some(value) }.encode_to_vec()
}

fn answer_of(bytes: Vec<u8>) -> response::Value {
    Response::decode(bytes.as_slice()).unwrap().value.unwrap()
}

fn finalize(height: i64) -> Vec<u8> {
    frame(request::Value::FinalizeBlock(
        tendermint_proto::v0_38::abci::RequestFinalizeBlock {
            height,
            txs: vec![vec![1u8; 100].into()],
            ..Default::default()
        },
    ))
}

fn commit_answer() -> Vec<u8> {
    Response {
        value: Some(response::Value::Commit(ResponseCommit::default())),
    }
    .encode_to_vec()
}

/// Drives one block through the handler: FinalizeBlock forwarded, then the
/// app's Commit answer.
fn block(calls: &dyn Handler, height: i64) {
    assert!(
        calls.answer(kind::FINALIZE_BLOCK, &finalize(height)).is_none(),
        "forwarded"
    );
    assert!(calls
        .answer(kind::COMMIT, &frame(request::Value::Commit(RequestCommit {})))
        .is_none());
    let back = calls.app_answered(kind::COMMIT, commit_answer());
    assert_eq!(back, commit_answer(), "the Commit answer passes unchanged");
}

fn listed(calls: &dyn Handler, app_own: Vec<Snapshot>) -> Vec<Snapshot> {
    let app_answer = Response {
        value: Some(response::Value::ListSnapshots(ResponseListSnapshots {
            snapshots: app_own,
        })),
    }
    .encode_to_vec();
    match answer_of(calls.app_answered(kind::LIST_SNAPSHOTS, app_answer)) {
        response::Value::ListSnapshots(l) => l.snapshots,
        other => panic!("{other:?}"),
    }
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn snapshots_of_a_xian_home_are_taken_at_commit_listed_served_and_restored_into_a_new_home() {
    let tmp = tempfile::tempdir().unwrap();
    let (registry, zstd) = registry();
    let serving_home = tmp.path().join("serving/xian");
    let root = xian_home(&serving_home, 3_000, 10, false);
    let metrics = Arc::new(Metrics::new());
    let snapshots = Arc::new(
        XianSnapshots::new(
            settings(&serving_home, &tmp.path().join("serving/snaps"), &zstd),
            metrics.clone(),
        )
        .unwrap(),
    );
    let server = XianCalls::new(snapshots.clone(), registry.clone(), metrics.clone(), None);

    // Height 9 is not due; height 10 is (interval 5): its snapshot is made
    // from the home as committed, and its root is the marker's hash.
    block(&server, 9);
    block(&server, 10);
    snapshots.wait_idle();
    let app_own = Snapshot {
        height: 8,
        format: 1,
        chunks: 1,
        hash: vec![9u8; 32].into(),
        metadata: b"xian".to_vec().into(),
    };
    let list = listed(&server, vec![app_own.clone()]);
    assert_eq!(list.len(), 2, "the app's own snapshot and statesnap's: {list:?}");
    assert_eq!(list[0], app_own, "the app's list comes first, unchanged");
    let ours = list[1].clone();
    assert_eq!((ours.height, ours.format), (10, FORMAT_OFFSET + 1));
    let manifest = Manifest::decode(&ours.metadata).unwrap();
    assert_eq!(manifest.app_hash, root);
    assert_eq!(manifest.version, MANIFEST_VERSION_BLOCK_TIME);
    assert_eq!(manifest.block_time_nanos, Some(NANOS));
    assert!(manifest.chunks.len() > 1, "several chunks: {}", manifest.chunks.len());

    // Chunks of statesnap's format are served by the proxy; the app's
    // format goes on to the app.
    let load = |format: u32, chunk: u32| {
        frame(request::Value::LoadSnapshotChunk(RequestLoadSnapshotChunk {
            height: 10,
            format,
            chunk,
        }))
    };
    assert!(server.answer(kind::LOAD_SNAPSHOT_CHUNK, &load(1, 0)).is_none());
    let chunks: Vec<Vec<u8>> = (0..manifest.chunks.len() as u32)
        .map(
            |i| match answer_of(server.answer(kind::LOAD_SNAPSHOT_CHUNK, &load(ours.format, i)).unwrap()) {
                response::Value::LoadSnapshotChunk(c) => c.chunk.to_vec(),
                other => panic!("{other:?}"),
            },
        )
        .collect();

    // A new node: its proxy runs the app (a stand-in that just waits).
    let joining_home = tmp.path().join("joining/xian");
    let socket = Arc::new(AppSocket::new(
        Endpoint::Unix(tmp.path().join("none.sock")),
        Duration::from_secs(1),
    ));
    let app = AppProcess::start(vec!["sleep".into(), "600".into()], socket).unwrap();
    let first_pid = app.pid().unwrap();
    let joining = XianCalls::new(
        Arc::new(
            XianSnapshots::new(
                settings(&joining_home, &tmp.path().join("joining/snaps"), &zstd),
                Arc::new(Metrics::new()),
            )
            .unwrap(),
        ),
        registry.clone(),
        Arc::new(Metrics::new()),
        Some(app.clone()),
    );
    let offer = |app_hash: [u8; 32]| {
        frame(request::Value::OfferSnapshot(RequestOfferSnapshot {
            snapshot: Some(ours.clone()),
            app_hash: app_hash.to_vec().into(),
        }))
    };
    let offered = |app_hash| match answer_of(joining.answer(kind::OFFER_SNAPSHOT, &offer(app_hash)).unwrap()) {
        response::Value::OfferSnapshot(o) => o.result,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        offered([1; 32]),
        response_offer_snapshot::Result::Reject as i32,
        "not the trusted app hash"
    );
    assert_eq!(offered(root), response_offer_snapshot::Result::Accept as i32);
    for (i, chunk) in chunks.iter().enumerate() {
        let apply = frame(request::Value::ApplySnapshotChunk(RequestApplySnapshotChunk {
            index: i as u32,
            chunk: chunk.clone().into(),
            sender: "peer".into(),
        }));
        match answer_of(joining.answer(kind::APPLY_SNAPSHOT_CHUNK, &apply).unwrap()) {
            response::Value::ApplySnapshotChunk(a) => {
                assert_eq!(
                    a.result,
                    response_apply_snapshot_chunk::Result::Accept as i32,
                    "chunk {i}"
                )
            }
            other => panic!("{other:?}"),
        }
    }
    // After the last chunk the restore is over: a further chunk is the app's.
    assert!(joining
        .answer(
            kind::APPLY_SNAPSHOT_CHUNK,
            &frame(request::Value::ApplySnapshotChunk(RequestApplySnapshotChunk::default()))
        )
        .is_none());

    // The app was stopped and started again around the swap.
    assert_eq!(app.starts(), 2);
    let second_pid = wait_for("the restarted app", || app.pid());
    assert_ne!(first_pid, second_pid);
    app.shutdown();

    // The restored home: the state's root and the marker Xian's node reads.
    let restored = XianLmdbStore::open_read_only(&joining_home).unwrap();
    assert_eq!(state_root_of(&restored, || {}).unwrap().0, root);
    let marker = BlockMarker::read(&restored).unwrap().unwrap();
    assert_eq!((marker.height, marker.app_hash, marker.nanos), (10, root, NANOS));
}

#[test]
fn a_home_whose_marker_disagrees_with_its_state_is_not_served() {
    let tmp = tempfile::tempdir().unwrap();
    let (registry, zstd) = registry();
    let home = tmp.path().join("xian");
    xian_home(&home, 500, 5, true);
    let metrics = Arc::new(Metrics::new());
    let snapshots =
        Arc::new(XianSnapshots::new(settings(&home, &tmp.path().join("snaps"), &zstd), metrics.clone()).unwrap());
    let calls = XianCalls::new(snapshots.clone(), registry, metrics.clone(), None);
    block(&calls, 5);
    snapshots.wait_idle();
    assert!(listed(&calls, Vec::new()).is_empty(), "nothing listed");
    assert_eq!(metrics.snapshots_failed.get(), 1);
    // A marker naming another height than the block committed: refused too.
    block(&calls, 10);
    snapshots.wait_idle();
    assert_eq!(metrics.snapshots_failed.get(), 2);
    assert!(listed(&calls, Vec::new()).is_empty());
}

#[test]
fn without_run_the_proxy_refuses_to_restore_statesnap_formats() {
    let tmp = tempfile::tempdir().unwrap();
    let (registry, zstd) = registry();
    let home = tmp.path().join("xian");
    let snapshots = Arc::new(
        XianSnapshots::new(
            settings(&home, &tmp.path().join("snaps"), &zstd),
            Arc::new(Metrics::new()),
        )
        .unwrap(),
    );
    let calls = XianCalls::new(snapshots, registry, Arc::new(Metrics::new()), None);
    let offer = |format| {
        frame(request::Value::OfferSnapshot(RequestOfferSnapshot {
            snapshot: Some(Snapshot {
                height: 10,
                format,
                chunks: 1,
                hash: vec![1u8; 32].into(),
                metadata: vec![4u8].into(),
            }),
            app_hash: vec![0u8; 32].into(),
        }))
    };
    assert!(
        calls.answer(kind::OFFER_SNAPSHOT, &offer(1)).is_none(),
        "the app's format goes on"
    );
    match answer_of(calls.answer(kind::OFFER_SNAPSHOT, &offer(FORMAT_OFFSET + 1)).unwrap()) {
        response::Value::OfferSnapshot(o) => assert_eq!(o.result, response_offer_snapshot::Result::RejectFormat as i32),
        other => panic!("{other:?}"),
    }
    assert!(!home.exists(), "nothing written");
}
