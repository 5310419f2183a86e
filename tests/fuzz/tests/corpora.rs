//! Every saved fuzz input (`fuzz/corpus/<target>/`: the seeds and whatever
//! the fuzzer kept, including inputs that once found a bug) runs through its
//! target here, on stable Rust, in the default test run: a fixed bug stays
//! fixed. Also: the canonicaliser agrees with the shared vectors on every
//! value the `value` corpus was seeded with.

use std::path::{Path, PathBuf};

use statesnap::store::root::leaf_hash;
use statesnap::store::value::canonical_bytes;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

#[test]
fn every_corpus_input_runs_through_its_target_without_panicking() {
    for (target, run) in statesnap_fuzz::TARGETS {
        let dir = corpus_dir(target);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("corpus {} is missing ({e}): the seeds are committed", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(
            files.len() >= 2,
            "corpus {} holds {} inputs",
            dir.display(),
            files.len()
        );
        for file in files {
            let data = std::fs::read(&file).unwrap();
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "target {target} panicked on {}", file.display());
        }
    }
}

#[test]
fn the_canonicaliser_agrees_with_the_shared_vectors() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/vectors/xian-state-root-v2.json"),
    )
    .unwrap();
    let vectors: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut checked = 0;
    for case in vectors["cases"].as_array().unwrap() {
        for e in case["entries"].as_array().unwrap() {
            if !e["consensus"].as_bool().unwrap() {
                continue;
            }
            let key = e["key"].as_str().unwrap();
            let stored = e["stored"].as_str().unwrap();
            let Some(canonical) = canonical_bytes(stored).unwrap() else {
                continue;
            };
            assert_eq!(
                hex::encode(leaf_hash(key.as_bytes(), &canonical)),
                e["leaf"].as_str().unwrap(),
                "{key}"
            );
            statesnap_fuzz::value(stored.as_bytes());
            checked += 1;
        }
    }
    assert!(checked > 50, "{checked} vector values");
}
