//! Nodes that misbehave on purpose (feature `test-hooks`): a snapshot job
//! that panics, and a validator that forges its snapshots; what the node
//! and its peers make of them.

#[macro_use]
mod common;

use std::path::Path;
use std::sync::Arc;

use common::node::*;
use statesnap::node::{ChunkAnswer, Metrics, Node, NodeConfig, OfferAnswer, TestHooks};
use statesnap::snapshot::Manifest;
use statesnap::store::{HomeStore, StoreKind};

on_both_stores!(a_snapshot_job_that_panics_leaves_nothing_and_the_next_runs);

/// Supervised snapshot jobs: a job that panics mid-way is logged and
/// counted, leaves no unfinished snapshot behind, and the next interval runs
/// (no "skipping": the service is idle).
fn a_snapshot_job_that_panics_leaves_nothing_and_the_next_runs(kind: StoreKind) {
    let tmp = tempfile::tempdir().unwrap();
    let genesis = genesis_home(tmp.path(), 20_000);
    let run = |home: &Path, config: NodeConfig, hooks: TestHooks, blocks: u64| -> (Vec<u64>, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        let node = Node::open_with_hooks(home, config, common::registry(), metrics.clone(), hooks).unwrap();
        (run_empty_blocks(&node, &genesis, blocks), metrics)
    };

    // The job of height 2 panics in its encoder after writing chunks.
    let home = tmp.path().join("panics");
    let hooks = TestHooks {
        panic_snapshot_at: Some(2),
        ..TestHooks::default()
    };
    let mut c = config(kind, 2);
    c.snapshot_params.insert("chunk_bytes".into(), "20000".into());
    let (heights, metrics) = run(&home, c, hooks, 6);
    assert_eq!(heights, [6, 4], "{kind}: heights 4 and 6 were made after 2 panicked");
    assert_eq!(metrics.snapshot_jobs_panicked.get(), 1, "{kind}");
    assert_eq!(metrics.snapshots_failed.get(), 1, "{kind}");
    assert_eq!(metrics.snapshots_created.get(), 2, "{kind}");
    assert!(
        unfinished_snapshots(&home).is_empty(),
        "{kind}: {:?}",
        unfinished_snapshots(&home)
    );
}

/// A validator that forges (its snapshots hold another state, one value
/// altered in the last chunk, with consistent chunk hashes and a manifest
/// claiming the trusted app hash) is refused at chunk 0 with nothing
/// written, whatever the built-in format; the honest snapshot of the height
/// then restores. Honest snapshots, proofs included, are byte-identical
/// between two nodes and with an offline `snapshot create` of the state.
#[test]
fn a_forging_validator_is_refused_at_chunk_0_in_every_built_in_format() {
    let kind = StoreKind::Lmdb;
    for plugin in ["zstd", "gzip", "brotli"] {
        let tmp = tempfile::tempdir().unwrap();
        let genesis = genesis_home(tmp.path(), 20_000);
        let mut c = config(kind, 2);
        c.snapshot_plugin = plugin.into();
        let run = |name: &str, hooks: TestHooks| {
            let home = tmp.path().join(name);
            let node =
                Node::open_with_hooks(&home, c.clone(), common::registry(), Arc::new(Metrics::new()), hooks).unwrap();
            let mut hashes = vec![node
                .init_chain(CHAIN, 1, &app_state(&genesis), &[([9; 32], 10)])
                .unwrap()];
            for h in 1..=2u64 {
                hashes.push(
                    block(
                        &node,
                        h,
                        &[patch(&key(6), h - 1, vec![set(&format!("con.h:{h}"), "1")])],
                    )
                    .1,
                );
                node.wait_for_snapshots();
            }
            (node, home, hashes)
        };
        let (honest, honest_home, hashes) = run("honest", TestHooks::default());
        let (other, other_home, _) = run("other", TestHooks::default());
        let forging = TestHooks {
            forge_states: true,
            ..TestHooks::default()
        };
        let (forger, _, forger_hashes) = run("forger", forging);
        assert_eq!(forger_hashes, hashes, "{plugin}: the forger runs the same chain");
        let offer = |node: &Node| offer_of(node, 2, hashes[2]);
        let (good, forged) = (offer(&honest), offer(&forger));
        assert!(forged.chunks > 2, "{plugin}: the test needs several chunks");
        assert_eq!(Manifest::decode(&forged.metadata).unwrap().app_hash, hashes[2]);
        assert_ne!(forged.hash, good.hash, "{plugin}");

        let joiner = open(&tmp.path().join("joiner"), config(kind, 0));
        let metric = |n: &str| statesnap::node::metrics::read_metric(&joiner.metrics().render(), n);
        assert_eq!(joiner.offer_snapshot(&forged), OfferAnswer::Accept, "{plugin}");
        match joiner.apply_snapshot_chunk(0, &forger.load_snapshot_chunk(2, forged.format, 0), "forger") {
            ChunkAnswer::RejectSnapshot { reason, reject_senders } => {
                assert!(
                    reason.contains("chunk 0") && reason.contains("forged"),
                    "{plugin}: {reason}"
                );
                assert_eq!(reject_senders, ["forger"], "{plugin}");
            }
            other => panic!("{plugin}: chunk 0 of a forged snapshot: {other:?}"),
        }
        assert_eq!(metric("statesnap_forged_chunks_total"), Some(1.0), "{plugin}");
        assert_eq!(metric("statesnap_restore_entries_written_total"), Some(0.0), "{plugin}");

        assert_eq!(joiner.offer_snapshot(&good), OfferAnswer::Accept, "{plugin}");
        for i in 0..good.chunks {
            let answer = joiner.apply_snapshot_chunk(i, &honest.load_snapshot_chunk(2, good.format, i), "honest");
            assert!(
                matches!(answer, ChunkAnswer::Accept | ChunkAnswer::Done(_)),
                "{plugin}: chunk {i}: {answer:?}"
            );
        }
        assert_eq!(joiner.info(), (2, hashes[2]), "{plugin}");
        let manifest = Manifest::decode(&good.metadata).unwrap();
        assert_eq!(
            metric("statesnap_restore_entries_written_total"),
            Some(manifest.entries as f64),
            "{plugin}: only the honest snapshot's entries were written"
        );

        // Byte-identical: the other honest node, and offline create of the state.
        let again = offer(&other);
        assert_eq!((&again.hash, &again.metadata), (&good.hash, &good.metadata), "{plugin}");
        drop((honest, other, forger));
        let dir = format!("2-{}", good.format);
        let offline = tmp.path().join("offline");
        let store = HomeStore::open_read_only(&honest_home.join("state")).unwrap();
        let mut reg = common::registry();
        let p = reg.resolve(plugin).unwrap();
        let params = p
            .resolve_params(&[("chunk_bytes".to_string(), "200000".to_string())])
            .unwrap();
        let d = p.description();
        statesnap::snapshot::create(
            &store,
            statesnap::snapshot::Codec::plugin(&p, &params).unwrap(),
            statesnap::snapshot::PluginRef {
                sha256: p.sha256(),
                name: d.name.clone(),
                version: d.version.clone(),
            },
            d.format,
            &statesnap::snapshot::CreateOptions::new(CHAIN, 2, params.clone()),
            &offline,
            &indicatif::ProgressBar::hidden(),
        )
        .unwrap();
        for home in [honest_home.join("snapshots"), other_home.join("snapshots")] {
            let (node_files, offline_files) = (files_of(&home.join(&dir)), files_of(&offline.join(&dir)));
            let names = |f: &[(String, Vec<u8>)]| f.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
            assert_eq!(names(&node_files), names(&offline_files), "{plugin}");
            for ((name, a), (_, b)) in node_files.iter().zip(&offline_files) {
                assert!(
                    a == b,
                    "{plugin}: {name} of {} differs from offline create's",
                    home.display()
                );
            }
        }
    }
}
