use super::*;
use statesnap_plugin_sdk::sample::{self, Rng};
use statesnap_plugin_sdk::testing::{self, decode, encode, params};

fn small() -> Vec<(String, String)> {
    params(&[("chunk_bytes", "10000")])
}

#[test]
fn round_trip_fixed_chunks() {
    let entries = sample::xian_like(5000, 1);
    let p = small();
    let chunks = encode::<Gzip>(&entries, &p, 7000).unwrap();
    assert!(chunks.len() > 10, "{} chunks", chunks.len());
    assert!(chunks[..chunks.len() - 1].iter().all(|c| c.len() == 10_000));
    assert!(!chunks.last().unwrap().is_empty() && chunks.last().unwrap().len() <= 10_000);
    for max in [1, 100, 4096, 1 << 20] {
        assert_eq!(decode::<Gzip>(&chunks, &p, max).unwrap(), entries, "max_bytes {max}");
    }
    // The stream is plain gzip.
    let mut all = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&chunks.concat()[..]), &mut all).unwrap();
    assert_eq!(all, sample::batches(&entries, usize::MAX).concat());
}

#[test]
fn deterministic_whatever_the_batches() {
    let entries = sample::xian_like(4000, 3);
    let p = small();
    let a = encode::<Gzip>(&entries, &p, 1).unwrap();
    assert_eq!(a, encode::<Gzip>(&entries, &p, 5000).unwrap());
    assert_eq!(a, encode::<Gzip>(&entries, &p, 100_003).unwrap());
    assert_eq!(a, encode::<Gzip>(&entries, &p, 1 << 30).unwrap());
    for level in ["0", "6", "9"] {
        let p = params(&[("chunk_bytes", "10000"), ("level", level)]);
        let chunks = encode::<Gzip>(&entries, &p, 3000).unwrap();
        assert_eq!(chunks, encode::<Gzip>(&entries, &p, 64 << 10).unwrap());
        assert_eq!(decode::<Gzip>(&chunks, &p, 3000).unwrap(), entries);
    }
    // The header is fixed: no name, mtime 0, OS 255.
    assert_eq!(a[0][..8], HEADER_START);
    assert_eq!(a[0][9], 255);
}

#[test]
fn empty_state_is_one_chunk() {
    let chunks = encode::<Gzip>(&[], &[], 1000).unwrap();
    assert_eq!(chunks.len(), 1);
    assert!(decode::<Gzip>(&chunks, &[], 1000).unwrap().is_empty());
}

#[test]
fn large_entries() {
    let mut rng = Rng::new(4);
    let mut entries = sample::xian_like(200, 4);
    entries.insert(100, (b"con_big.blob:x".to_vec(), vec![b'7'; 3 << 20]));
    entries.insert(150, (b"con_big.noise:y".to_vec(), rng.bytes(3 << 20)));
    entries.sort();
    let p = params(&[("chunk_bytes", "100000")]);
    let chunks = encode::<Gzip>(&entries, &p, 1 << 16).unwrap();
    assert!(chunks.len() > 30);
    assert_eq!(decode::<Gzip>(&chunks, &p, 1 << 16).unwrap(), entries);
    let huge = vec![(b"con.huge".to_vec(), vec![b'0'; MAX_ENTRY])];
    assert!(matches!(
        encode::<Gzip>(&huge, &[], 1 << 20),
        Err(PluginError::InvalidInput(_))
    ));
}

#[test]
fn reader_memory_follows_max_bytes() {
    // Highly compressible entries: a 10 kB chunk inflates to megabytes, but a
    // batch is never much more than max_bytes.
    let entries: Vec<_> = (0..20_000)
        .map(|i| (format!("con.k:{i:08}").into_bytes(), vec![b'0'; 200]))
        .collect();
    let chunks = encode::<Gzip>(&entries, &small(), 1 << 16).unwrap();
    let mut r = Gzip::reader(&[]).unwrap();
    r.feed(&chunks[0]).unwrap();
    let b = r.next(1000).unwrap().unwrap();
    assert!(b.len() < 1000 + 230, "{}", b.len());
    assert!(r.raw.capacity() < 1 << 20, "{}", r.raw.capacity());
}

#[test]
fn damaged_input_is_an_error_never_a_panic_nor_wrong_entries() {
    let entries = sample::xian_like(1500, 6);
    let p = small();
    let chunks = encode::<Gzip>(&entries, &p, 10_000).unwrap();
    testing::assert_robust::<Gzip>(&entries, &chunks, &p, 1500, 6);
    // Truncated streams, missing chunks, trailing data.
    assert!(decode::<Gzip>(&chunks[..chunks.len() - 1], &p, 1000).is_err());
    let mut extra = chunks.clone();
    extra.push(vec![1, 2, 3]);
    assert!(decode::<Gzip>(&extra, &p, 1000).is_err());
    let mut last = chunks.clone();
    last.last_mut().unwrap().push(0);
    assert!(decode::<Gzip>(&last, &p, 1000).is_err());
    let one = encode::<Gzip>(&entries[..100], &[], 1 << 20).unwrap();
    for cut in 0..one[0].len() {
        assert!(
            decode::<Gzip>(&[one[0][..cut].to_vec()], &[], 1 << 20).is_err(),
            "cut {cut}"
        );
    }
    assert!(decode::<Gzip>(&[b"garbage garbage".to_vec()], &[], 100).is_err());
}

#[test]
fn an_entry_claiming_a_huge_size_is_refused_early() {
    let mut framed = Vec::new();
    framed.extend_from_slice(&3u32.to_le_bytes());
    framed.extend_from_slice(b"abc");
    framed.extend_from_slice(&u32::MAX.to_le_bytes());
    let mut enc = GzBuilder::new().mtime(0).write(Vec::new(), Compression::new(1));
    enc.write_all(&framed).unwrap();
    let chunk = enc.finish().unwrap();
    let mut r = Gzip::reader(&[]).unwrap();
    r.feed(&chunk).unwrap();
    assert!(matches!(r.next(100), Err(PluginError::InvalidInput(_))));
}

#[test]
fn writer_refuses_malformed_batches_and_bad_params() {
    testing::assert_refuses_misuse::<Gzip>(&[
        params(&[("nope", "1")]),
        params(&[("chunk_bytes", "999")]),
        params(&[("chunk_bytes", "15000001")]),
        params(&[("level", "10")]),
    ]);
}

#[test]
fn description_matches_the_defaults() {
    let d = description();
    assert_eq!((d.name.as_str(), d.format), ("gzip", 2));
    testing::assert_description_matches_defaults::<Gzip>();
}

/// A longer run of the damage test: `cargo test --release -p statesnap-plugin-gzip -- --ignored`.
#[test]
#[ignore]
fn long_fuzz() {
    testing::long_fuzz::<Gzip>(&params(&[("chunk_bytes", "1000")]));
}
