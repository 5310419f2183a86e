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
    let chunks = encode::<Brotli>(&entries, &p, 10_000).unwrap();
    assert!(chunks.len() > 10, "{} chunks", chunks.len());
    assert!(chunks.iter().all(|c| c.len() <= 20_000));
    // Chunks are filled close to the target: all but the last within one block of it.
    assert!(chunks[..chunks.len() - 1].iter().all(|c| c.len() > 15_000));
    for max in [1, 100, 4096, 1 << 20] {
        assert_eq!(decode::<Brotli>(&chunks, &p, max).unwrap(), entries, "max_bytes {max}");
    }
}

#[test]
fn smaller_than_the_default_format() {
    let entries = sample::xian_like(20_000, 9);
    let size = |chunks: Vec<Vec<u8>>| chunks.iter().map(Vec::len).sum::<usize>();
    let ours = size(encode::<Brotli>(&entries, &[], 1 << 20).unwrap());
    let zstd = size(encode::<statesnap_plugin_zstd::Zstd>(&entries, &[], 1 << 20).unwrap());
    // 0.85 when this test was written.
    assert!((ours as f64) < zstd as f64 * 0.88, "{ours} bytes against zstd's {zstd}");
}

#[test]
fn each_chunk_decodes_on_its_own() {
    testing::assert_chunks_decode_alone::<Brotli>(&small());
}

#[test]
fn deterministic_whatever_the_batches() {
    testing::assert_deterministic_over_batches::<Brotli>(&small());
}

#[test]
fn every_quality_round_trips() {
    let entries = sample::xian_like(1500, 10);
    let mut sizes = Vec::new();
    for q in 0..=11 {
        let q = q.to_string();
        let p = params(&[("quality", &q), ("block_bytes", "65536")]);
        let chunks = encode::<Brotli>(&entries, &p, 1 << 16).unwrap();
        assert_eq!(decode::<Brotli>(&chunks, &p, 1 << 16).unwrap(), entries, "quality {q}");
        // The reader does not need to know the quality.
        assert_eq!(decode::<Brotli>(&chunks, &[], 1 << 16).unwrap(), entries, "quality {q}");
        sizes.push(chunks.iter().map(Vec::len).sum::<usize>());
    }
    assert!(sizes[10] < sizes[1], "{sizes:?}");
}

#[test]
fn empty_state_is_one_header_only_chunk() {
    let chunks = encode::<Brotli>(&[], &[], 1000).unwrap();
    assert_eq!(chunks, vec![b"SSB1\0\0\0\0".to_vec()]);
    assert!(decode::<Brotli>(&chunks, &[], 1000).unwrap().is_empty());
    // Empty keys and values are entries too, and so are bytes that are not UTF-8.
    let odd: Entries = vec![
        (Vec::new(), Vec::new()),
        (b"a".to_vec(), Vec::new()),
        (b"a\xff00112233445566aa".to_vec(), b"\xff\xfe12\x00".to_vec()),
        (b"b".to_vec(), b"ABCDEF0123456789abcdef0".to_vec()),
    ];
    assert_eq!(
        decode::<Brotli>(&encode::<Brotli>(&odd, &[], 1).unwrap(), &[], 1).unwrap(),
        odd
    );
}

#[test]
fn large_entries() {
    let mut rng = Rng::new(4);
    // 3 MB values between small ones: their chunk may exceed chunk_bytes, never MAX_CHUNK.
    let mut entries = sample::xian_like(200, 4);
    entries.insert(100, (b"con_big.blob:x".to_vec(), vec![b'7'; 3 << 20]));
    entries.insert(150, (b"con_big.noise:y".to_vec(), rng.bytes(3 << 20)));
    let hex: Vec<u8> = rng
        .bytes(2 << 20)
        .iter()
        .map(|b| b"0123456789abcdef"[usize::from(b & 15)])
        .collect();
    entries.insert(170, (b"con_big.hex:z".to_vec(), hex));
    entries.sort();
    let p = small();
    let chunks = encode::<Brotli>(&entries, &p, 1 << 16).unwrap();
    assert!(chunks.iter().all(|c| c.len() <= MAX_CHUNK as usize));
    assert!(chunks.iter().any(|c| c.len() > 3 << 20));
    assert_eq!(decode::<Brotli>(&chunks, &p, 1 << 16).unwrap(), entries);

    // An entry larger than this format takes is refused, cleanly (the reader
    // would refuse it too); one of exactly the limit is not.
    let huge = vec![(b"con.huge".to_vec(), vec![b'0'; MAX_ENTRY - 7])];
    assert!(matches!(
        encode::<Brotli>(&huge, &[], 1 << 20),
        Err(PluginError::InvalidInput(_))
    ));
    let limit = vec![(b"con.huge".to_vec(), rng.bytes(MAX_ENTRY - 8))];
    let chunks = encode::<Brotli>(&limit, &[], 1 << 20).unwrap();
    assert_eq!(decode::<Brotli>(&chunks, &[], 1 << 20).unwrap(), limit);
    // The largest entry, made of the runs that expand most, still fits a block.
    let mut worst = Vec::with_capacity(MAX_ENTRY);
    while worst.len() + 3 < MAX_ENTRY {
        worst.extend_from_slice(b"12x");
    }
    let worst = vec![(b"k".to_vec(), worst)];
    let chunks = encode::<Brotli>(&worst, &[], 1 << 20).unwrap();
    assert_eq!(decode::<Brotli>(&chunks, &[], 1 << 20).unwrap(), worst);
}

/// The streams of one block of `entries` (which must fit in one).
fn one_block(entries: &[(Vec<u8>, Vec<u8>)]) -> Streams {
    let mut w = Writer::new(&params(&[("block_bytes", "2097152")])).unwrap();
    let mut out = Vec::new();
    for (k, v) in entries {
        w.add(k, v, &mut out).unwrap();
    }
    assert!(out.is_empty());
    std::mem::take(&mut w.block)
}

#[test]
fn the_work_budget() {
    // A block of Xian-like entries at the default quality: quality 10 for
    // lengths, runs and key text, 8 for the value text, 1 for hex and digits.
    let mut entries = sample::xian_like(20_000, 11);
    let mut block = one_block(&entries);
    while block.raw_len() > 1 << 20 {
        entries.truncate(entries.len() * 9 / 10);
        block = one_block(&entries);
    }
    assert!(block.raw_len() > 900_000, "{}", block.raw_len());
    assert_eq!(stream_qualities(&block, 10), [10, 10, 10, 8, 1, 1]);
    assert_eq!(stream_qualities(&block, 5), [5, 5, 5, 5, 1, 1]);
    assert_eq!(stream_qualities(&block, 0), [0; STREAMS]);
    // Few-letter text, whose worst case quality 10 cannot afford.
    let mut rng = Rng::new(12);
    let text: Entries = (0..16)
        .map(|i| {
            (
                format!("k{i:02}").into_bytes(),
                (0..65536).map(|_| b"gh"[rng.below(2) as usize]).collect(),
            )
        })
        .collect();
    let q = stream_qualities(&one_block(&text), 10);
    assert!(q[VALUE_TEXT] < 10 && q[VALUE_TEXT] >= FLOOR_QUALITY, "{q:?}");
    // Tiny blocks cannot afford the qualities whose setup costs most.
    let q = stream_qualities(&one_block(&entries[..5]), 11);
    assert!(q.iter().all(|&q| q < 5), "{q:?}");
    // Whatever the stream lengths, the work stays within the budget, but for
    // streams at the floor quality.
    for _ in 0..2000 {
        let mut block = Streams::default();
        for s in block.streams.iter_mut() {
            let bits = rng.below(22);
            s.resize(rng.below(1 << bits) as usize, 0);
        }
        block.entry_bytes = rng.below(2 * block.raw_len() as u64 + 1) as usize;
        let quality = rng.below(12) as u32;
        let q = stream_qualities(&block, quality);
        let work = |i: usize| WORK_FIXED[q[i] as usize] + block.streams[i].len() as u64 * WORK[q[i] as usize];
        let over_floor: u64 = (0..STREAMS).filter(|&i| q[i] > FLOOR_QUALITY).map(work).sum();
        assert!(over_floor <= BUDGET_PER_BYTE * block.entry_bytes.min(BUDGET_CAP_BYTES) as u64);
        assert!(q.iter().all(|&q| q <= quality));
    }
}

#[test]
fn batches_follow_max_bytes() {
    let entries = sample::xian_like(2000, 5);
    let chunks = encode::<Brotli>(&entries, &[], 1 << 16).unwrap();
    let mut r = Brotli::reader(&[]).unwrap();
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

/// Offset of stream `index`'s header (raw length) in a one-block chunk.
fn stream_header(chunk: &[u8], index: usize) -> usize {
    let mut at = CHUNK_HEADER + BLOCK_HEADER;
    for _ in 0..index {
        let compressed = u32::from_le_bytes(chunk[at + 4..at + 8].try_into().unwrap()) as usize;
        at += 8 + compressed;
    }
    at
}

#[test]
fn damaged_input_is_an_error_never_a_panic_nor_wrong_entries() {
    let entries = sample::xian_like(1500, 6);
    let p = small();
    let chunks = encode::<Brotli>(&entries, &p, 10_000).unwrap();
    testing::assert_robust::<Brotli>(&entries, &chunks, &p, 1500, 6);
    // Every truncation of a chunk is an error.
    let one = encode::<Brotli>(&entries[..200], &[], 1 << 20).unwrap();
    assert_eq!(one.len(), 1);
    for cut in 1..one[0].len() {
        assert!(
            decode::<Brotli>(&[one[0][..cut].to_vec()], &[], 1 << 20).is_err(),
            "cut {cut}"
        );
    }
    assert!(decode::<Brotli>(&[b"garbage garbage".to_vec()], &[], 100).is_err());
    // A checksum mismatch is noticed even when the streams decode.
    let mut c = one[0].clone();
    c[CHUNK_HEADER] ^= 1;
    let err = decode::<Brotli>(&[c], &[], 100).unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");
    // A stream stated longer than a block may be is refused before decoding.
    let mut c = one[0].clone();
    let at = stream_header(&c, VALUE_TEXT);
    c[at..at + 4].copy_from_slice(&(MAX_BLOCK_RAW as u32).to_le_bytes());
    let err = decode::<Brotli>(&[c], &[], 100).unwrap_err();
    assert!(err.to_string().contains("more than"), "{err}");
    // A stream that asks for a window larger than 4 MiB is refused.
    let mut c = one[0].clone();
    let at = stream_header(&c, KEY_TEXT) + 8;
    c[at] = (c[at] & !0x0f) | 0x0b; // WBITS 17 + 5 = 22: allowed
    assert!(!decode::<Brotli>(&[c.clone()], &[], 100)
        .err()
        .is_some_and(|e| e.to_string().contains("window")));
    c[at] = (c[at] & !0x0f) | 0x0f; // WBITS 17 + 7 = 24
    let err = decode::<Brotli>(&[c], &[], 100).unwrap_err();
    assert!(err.to_string().contains("window"), "{err}");
}

/// A bomb: streams that are valid brotli and decode to far more than they
/// take, made by hand, are stopped by the stated lengths, and stated lengths
/// are bounded before any decoding.
#[test]
fn decompression_bombs_are_bounded() {
    let mut block = vec![0u8; BLOCK_HEADER];
    let mut crc = crc32fast::Hasher::new();
    let zeros = vec![0u8; 60 << 20];
    for i in 0..STREAMS {
        let raw: &[u8] = if i == VALUE_TEXT { &zeros } else { &[] };
        crc.update(raw);
        let mut c = Vec::new();
        codec::compress(raw, 1, &mut c).unwrap();
        // State less than the stream holds: decoding stops at the stated length.
        let stated = if i == VALUE_TEXT { 1 << 20 } else { 0 };
        block.extend_from_slice(&(stated as u32).to_le_bytes());
        block.extend_from_slice(&(c.len() as u32).to_le_bytes());
        block.extend_from_slice(&c);
    }
    block[..4].copy_from_slice(&crc.finalize().to_le_bytes());
    let mut chunk = b"SSB1\x01\0\0\0".to_vec();
    chunk.extend_from_slice(&block);
    assert!(chunk.len() < 100_000, "{}", chunk.len());
    let err = decode::<Brotli>(&[chunk], &[], 1 << 20).unwrap_err();
    assert!(err.to_string().contains("longer than stated"), "{err}");
}

#[test]
fn writer_refuses_malformed_batches_and_bad_params() {
    testing::assert_refuses_misuse::<Brotli>(&[
        params(&[("nope", "1")]),
        params(&[("chunk_bytes", "99999999999")]),
        params(&[("chunk_bytes", "15000001")]),
        params(&[("block_bytes", "ten")]),
        params(&[("block_bytes", "4095")]),
        params(&[("block_bytes", "2097153")]),
        params(&[("quality", "12")]),
        params(&[("quality", "-1")]),
        params(&[("lgwin", "22")]),
    ]);
}

#[test]
fn description_matches_the_defaults() {
    let d = description();
    assert_eq!((d.name.as_str(), d.format), ("brotli", 3));
    testing::assert_description_matches_defaults::<Brotli>();
}

/// A longer run of the damage test: `cargo test --release -p statesnap-plugin-brotli -- --ignored`.
#[test]
#[ignore]
fn long_fuzz() {
    testing::long_fuzz::<Brotli>(&params(&[("chunk_bytes", "5000"), ("block_bytes", "4096")]));
}

/// Whatever the state holds (users choose much of it), the writer must not
/// panic: few-symbol alphabets, runs, noise, tiny and large values, hex and
/// digits.
#[test]
fn writer_survives_odd_data() {
    let mut rng = Rng::new(8);
    for alphabet in [
        &b"a"[..],
        b"ab",
        b"a1",
        b"0123456789",
        b"0123456789abcdef:",
        b"9f",
        b"\xff\x00",
    ] {
        for value_len in [0usize, 1, 7, 100, 5000, 200_000] {
            let n = (400_000 / (value_len + 20)).clamp(2, 300);
            let entries: Entries = (0..n)
                .map(|i| {
                    let mut v = Vec::with_capacity(value_len);
                    while v.len() < value_len {
                        let sym = alphabet[rng.below(alphabet.len() as u64) as usize];
                        let longest = if rng.below(2) == 0 { 1 } else { 40 };
                        let run = 1 + rng.below(longest) as usize;
                        v.extend(std::iter::repeat_n(sym, run.min(value_len - v.len())));
                    }
                    (format!("k{i:06}").into_bytes(), v)
                })
                .collect();
            for block in ["4096", "65536", "1048576"] {
                let p = params(&[("chunk_bytes", "50000"), ("block_bytes", block)]);
                let chunks = encode::<Brotli>(&entries, &p, 1 << 16).unwrap();
                assert_eq!(decode::<Brotli>(&chunks, &p, 1 << 16).unwrap(), entries);
            }
        }
    }
}
