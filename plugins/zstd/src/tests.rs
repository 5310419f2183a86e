use super::*;
use statesnap_plugin_sdk::sample::{self, Rng};
use statesnap_plugin_sdk::testing::{self, decode, encode, params, Entries};

fn small() -> Vec<(String, String)> {
    params(&[("chunk_bytes", "20000"), ("block_bytes", "4096")])
}

#[test]
fn round_trip_many_chunks() {
    let entries = sample::xian_like(5000, 1);
    let p = small();
    let chunks = encode::<Zstd>(&entries, &p, 10_000).unwrap();
    assert!(chunks.len() > 10, "{} chunks", chunks.len());
    assert!(chunks.iter().all(|c| c.len() <= 20_000));
    // Chunks are filled close to the target: all but the last within one block of it.
    assert!(chunks[..chunks.len() - 1].iter().all(|c| c.len() > 15_000));
    for max in [1, 100, 4096, 1 << 20] {
        assert_eq!(decode::<Zstd>(&chunks, &p, max).unwrap(), entries, "max_bytes {max}");
    }
}

#[test]
fn each_chunk_decodes_on_its_own() {
    testing::assert_chunks_decode_alone::<Zstd>(&small());
}

#[test]
fn deterministic_whatever_the_batches() {
    testing::assert_deterministic_over_batches::<Zstd>(&small());
}

#[test]
fn empty_state_is_one_header_only_chunk() {
    let chunks = encode::<Zstd>(&[], &[], 1000).unwrap();
    assert_eq!(chunks, vec![b"SSZ1\0\0\0\0".to_vec()]);
    assert!(decode::<Zstd>(&chunks, &[], 1000).unwrap().is_empty());
    // Empty keys and values are entries too.
    let odd: Entries = vec![(Vec::new(), Vec::new()), (b"a".to_vec(), Vec::new())];
    assert_eq!(
        decode::<Zstd>(&encode::<Zstd>(&odd, &[], 1).unwrap(), &[], 1).unwrap(),
        odd
    );
}

#[test]
fn large_entries() {
    let mut rng = Rng::new(4);
    // A 3 MB value between small ones: its chunk may exceed chunk_bytes, never MAX_CHUNK.
    let mut entries = sample::xian_like(200, 4);
    entries.insert(100, (b"con_big.blob:x".to_vec(), vec![b'7'; 3 << 20]));
    entries.insert(150, (b"con_big.noise:y".to_vec(), rng.bytes(3 << 20)));
    entries.sort();
    let p = small();
    let chunks = encode::<Zstd>(&entries, &p, 1 << 16).unwrap();
    assert!(chunks.iter().all(|c| c.len() <= MAX_CHUNK as usize));
    assert!(chunks.iter().any(|c| c.len() > 3 << 20));
    assert_eq!(decode::<Zstd>(&chunks, &p, 1 << 16).unwrap(), entries);

    // Incompressible entries that cannot fit in a chunk are refused, cleanly.
    let huge = vec![(b"con.huge".to_vec(), rng.bytes(MAX_CHUNK as usize + 1000))];
    assert!(matches!(
        encode::<Zstd>(&huge, &[], 1 << 20),
        Err(PluginError::InvalidInput(_))
    ));
    // As is one larger than a block may be (the reader would refuse to decode it).
    let huge = vec![(b"con.huge".to_vec(), vec![b'0'; MAX_BLOCK_RAW])];
    assert!(matches!(
        encode::<Zstd>(&huge, &[], 1 << 20),
        Err(PluginError::InvalidInput(_))
    ));
}

#[test]
fn batches_follow_max_bytes() {
    let entries = sample::xian_like(2000, 5);
    let chunks = encode::<Zstd>(&entries, &[], 1 << 16).unwrap();
    let mut r = Zstd::reader(&[]).unwrap();
    r.feed(&chunks[0]).unwrap();
    let mut n = 0;
    while let Some(b) = r.next(0).unwrap() {
        assert_eq!(statesnap_plugin_sdk::entries(&b).count(), 1);
        n += 1;
        if n == 10 {
            break;
        }
    }
    // A chunk cannot be fed before the last one was read, and finish notices.
    assert!(r.finish().is_err());
    assert!(r.feed(&chunks[0]).is_err());
    while r.next(1 << 20).unwrap().is_some() {}
    r.finish().unwrap();
}

#[test]
fn damaged_input_is_an_error_never_a_panic_nor_wrong_entries() {
    let entries = sample::xian_like(1500, 6);
    let p = small();
    let chunks = encode::<Zstd>(&entries, &p, 10_000).unwrap();
    testing::assert_robust::<Zstd>(&entries, &chunks, &p, 1500, 6);
    // Every truncation of a chunk is an error.
    let one = encode::<Zstd>(&entries[..200], &[], 1 << 20).unwrap();
    for cut in 1..one[0].len() {
        assert!(
            decode::<Zstd>(&[one[0][..cut].to_vec()], &[], 1 << 20).is_err(),
            "cut {cut}"
        );
    }
    assert!(decode::<Zstd>(&[b"garbage garbage".to_vec()], &[], 100).is_err());
    // A frame that claims a huge window is refused before any allocation.
    let mut w = one[0].clone();
    w[8 + 4 + 4 + 1] = 0xF8; // window descriptor of the first frame: exponent 31
    assert!(decode::<Zstd>(&[w], &[], 100).is_err());
}

#[test]
fn writer_refuses_malformed_batches_and_bad_params() {
    testing::assert_refuses_misuse::<Zstd>(&[
        params(&[("nope", "1")]),
        params(&[("chunk_bytes", "99999999999")]),
        params(&[("chunk_bytes", "15000001")]),
        params(&[("block_bytes", "ten")]),
    ]);
}

#[test]
fn description_matches_the_defaults() {
    let d = description();
    assert_eq!((d.name.as_str(), d.format), ("zstd", 1));
    testing::assert_description_matches_defaults::<Zstd>();
}

/// A longer run of the damage test: `cargo test --release -p statesnap-plugin-zstd -- --ignored`.
#[test]
#[ignore]
fn long_fuzz() {
    testing::long_fuzz::<Zstd>(&params(&[("chunk_bytes", "5000"), ("block_bytes", "1024")]));
}

/// Whatever the state holds (users choose much of it), the writer must not
/// panic: few-symbol alphabets, runs, noise, tiny and large values.
#[test]
fn writer_survives_odd_data() {
    let mut rng = Rng::new(8);
    for alphabet in [1u64, 2, 3, 4, 16, 256] {
        for value_len in [0usize, 1, 7, 100, 5000, 200_000] {
            let n = (400_000 / (value_len + 20)).clamp(2, 300);
            let entries: Entries = (0..n)
                .map(|i| {
                    let mut v = Vec::with_capacity(value_len);
                    while v.len() < value_len {
                        let sym = b'a' + (rng.below(alphabet) as u8);
                        let longest = if rng.below(2) == 0 { 1 } else { 40 };
                        let run = 1 + rng.below(longest) as usize;
                        v.extend(std::iter::repeat_n(sym, run.min(value_len - v.len())));
                    }
                    (format!("k{i:06}").into_bytes(), v)
                })
                .collect();
            for block in ["256", "4096", "1048576"] {
                let p = params(&[("chunk_bytes", "50000"), ("block_bytes", block)]);
                let chunks = encode::<Zstd>(&entries, &p, 1 << 16).unwrap();
                assert_eq!(decode::<Zstd>(&chunks, &p, 1 << 16).unwrap(), entries);
            }
        }
    }
}
