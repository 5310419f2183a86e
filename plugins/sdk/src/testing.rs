//! Helpers for a format's native unit tests: run a [`Format`] over entries and
//! back, and check it against damaged input.
//!
//! ```ignore
//! let entries = statesnap_plugin_sdk::sample::xian_like(5000, 1);
//! let chunks = testing::encode::<MyFormat>(&entries, &[], 64 << 10).unwrap();
//! assert_eq!(testing::decode::<MyFormat>(&chunks, &[], 4096).unwrap(), entries);
//! testing::assert_robust::<MyFormat>(&entries, &chunks, &[], 500, 1);
//! ```

use crate::sample::Rng;
use crate::{Format, FormatReader, FormatWriter, PluginError};

/// Entries as `(key, value)` pairs.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Parameters from `name=value` pairs.
pub fn params(kv: &[(&str, &str)]) -> Vec<(String, String)> {
    kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Encodes `entries` with a fresh writer, in batches of about `batch_bytes`.
pub fn encode<F: Format>(
    entries: &[(Vec<u8>, Vec<u8>)],
    params: &[(String, String)],
    batch_bytes: usize,
) -> Result<Vec<Vec<u8>>, PluginError> {
    let mut w = F::writer(params)?;
    let mut chunks = Vec::new();
    for batch in crate::sample::batches(entries, batch_bytes) {
        chunks.extend(w.write(&batch)?);
    }
    chunks.extend(w.finish()?);
    Ok(chunks)
}

/// Every chunk of a generated state decodes on its own (small `params`
/// make many chunks), and together they give the state back.
pub fn assert_chunks_decode_alone<F: Format>(params: &[(String, String)]) {
    let entries = crate::sample::xian_like(3000, 2);
    let chunks = encode::<F>(&entries, params, 10_000).unwrap();
    let mut all = Vec::new();
    for c in &chunks {
        let part = decode::<F>(std::slice::from_ref(c), params, 5000).unwrap();
        assert!(!part.is_empty());
        all.extend(part);
    }
    assert_eq!(all, entries);
}

/// The chunks do not depend on how the host batches the entries, and with
/// the default parameters a small state is one chunk, the same every time.
pub fn assert_deterministic_over_batches<F: Format>(params: &[(String, String)]) {
    let entries = crate::sample::xian_like(4000, 3);
    let a = encode::<F>(&entries, params, 1).unwrap();
    let b = encode::<F>(&entries, params, 7777).unwrap();
    let c = encode::<F>(&entries, params, 1 << 30).unwrap();
    assert_eq!(a, b);
    assert_eq!(a, c);
    let d1 = encode::<F>(&entries, &[], 1 << 16).unwrap();
    assert_eq!(d1, encode::<F>(&entries, &[], 1 << 16).unwrap());
    assert_eq!(d1.len(), 1);
}

/// Decodes `chunks` with a fresh reader as the host does (feed, then `next`
/// until `None`, then `finish`), pulling batches of `max_bytes`. Checks each
/// batch is well framed and, when it holds more than one entry, not much larger
/// than `max_bytes`.
pub fn decode<F: Format>(
    chunks: &[Vec<u8>],
    params: &[(String, String)],
    max_bytes: u32,
) -> Result<Entries, PluginError> {
    let mut r = F::reader(params)?;
    let mut out = Vec::new();
    for chunk in chunks {
        r.feed(chunk)?;
        while let Some(batch) = r.next(max_bytes)? {
            assert!(!batch.is_empty(), "next returned an empty batch instead of None");
            let mut n = 0;
            let mut last = 0;
            for e in crate::entries(&batch) {
                let (k, v) = e.expect("a reader returned a malformed batch");
                last = crate::framed_len(k, v);
                out.push((k.to_vec(), v.to_vec()));
                n += 1;
            }
            assert!(
                n == 1 || batch.len() - last < (max_bytes as usize).max(1),
                "batch of {} bytes for max_bytes {max_bytes}",
                batch.len()
            );
        }
    }
    r.finish()?;
    Ok(out)
}

/// One damaged copy of `chunks`: a few bytes of one chunk flipped, overwritten,
/// inserted or removed, or the chunk truncated. The chunk count is unchanged.
pub fn damage(chunks: &[Vec<u8>], rng: &mut Rng) -> Vec<Vec<u8>> {
    let mut out = chunks.to_vec();
    let candidates: Vec<usize> = (0..out.len()).filter(|&i| !out[i].is_empty()).collect();
    if candidates.is_empty() {
        let len = 1 + rng.below(64) as usize;
        out.push(rng.bytes(len));
        return out;
    }
    let c = &mut out[candidates[rng.below(candidates.len() as u64) as usize]];
    let at = rng.below(c.len() as u64) as usize;
    match rng.below(6) {
        0 | 1 => c[at] ^= 1 << rng.below(8),
        2 => {
            for i in at..(at + 1 + rng.below(16) as usize).min(c.len()) {
                c[i] = rng.next_u64() as u8;
            }
        }
        3 => c.insert(at, rng.next_u64() as u8),
        4 => {
            c.remove(at);
        }
        _ => c.truncate(at),
    }
    out
}

/// Checks a format against damaged and garbage input: decoding `n` damaged
/// copies of `chunks` (the encoding of `entries`) must fail or give back
/// exactly `entries`, never other entries and never a panic; random bytes,
/// and chunks dropped, repeated or swapped must not panic.
pub fn assert_robust<F: Format>(
    entries: &[(Vec<u8>, Vec<u8>)],
    chunks: &[Vec<u8>],
    params: &[(String, String)],
    n: usize,
    seed: u64,
) {
    let mut rng = Rng::new(seed);
    for i in 0..n {
        let damaged = damage(chunks, &mut rng);
        if let Ok(got) = decode::<F>(&damaged, params, 1 + rng.below(50_000) as u32) {
            assert!(got == entries, "damaged copy {i} decoded to different entries");
        }
    }
    for _ in 0..n / 4 + 1 {
        let junk: Vec<Vec<u8>> = (0..1 + rng.below(3))
            .map(|_| {
                let len = rng.below(4096) as usize;
                rng.bytes(len)
            })
            .collect();
        let _ = decode::<F>(&junk, params, 1 + rng.below(50_000) as u32);
    }
    if chunks.len() > 1 {
        let mut dropped = chunks.to_vec();
        dropped.remove(rng.below(chunks.len() as u64) as usize);
        let _ = decode::<F>(&dropped, params, 4096);
        let mut repeated = chunks.to_vec();
        repeated.insert(1, chunks[0].clone());
        let _ = decode::<F>(&repeated, params, 4096);
        let mut swapped = chunks.to_vec();
        swapped.swap(0, 1);
        let _ = decode::<F>(&swapped, params, 4096);
    }
}

/// Checks the contract every format keeps at its edges: a malformed batch is
/// refused, each of `bad_params` is refused by both the writer and the
/// reader, and a finished writer refuses more work.
pub fn assert_refuses_misuse<F: Format>(bad_params: &[Vec<(String, String)>]) {
    let mut w = F::writer(&[]).expect("the default params are valid");
    assert!(
        matches!(w.write(&[5, 0, 0, 0, b'a']), Err(PluginError::InvalidInput(_))),
        "a malformed batch was not refused"
    );
    for bad in bad_params {
        assert!(
            matches!(F::writer(bad), Err(PluginError::InvalidParams(_))),
            "writer took {bad:?}"
        );
        assert!(
            matches!(F::reader(bad), Err(PluginError::InvalidParams(_))),
            "reader took {bad:?}"
        );
    }
    let mut w = F::writer(&[]).expect("the default params are valid");
    w.finish().expect("finishing an empty writer");
    assert!(w.write(&[]).is_err(), "write after finish was accepted");
    assert!(w.finish().is_err(), "a second finish was accepted");
}

/// Checks that writing with the params `describe` lists, spelled out, gives
/// the same bytes as writing with no params: the description tells the truth
/// about the defaults.
pub fn assert_description_matches_defaults<F: Format>() {
    let d = F::describe();
    let entries = crate::sample::xian_like(500, 7);
    assert_eq!(
        encode::<F>(&entries, &d.params, 1 << 16).unwrap(),
        encode::<F>(&entries, &[], 1 << 16).unwrap(),
        "the described params are not the defaults"
    );
}

/// A longer run of [`assert_robust`] over states of several sizes, for a
/// format's ignored `long_fuzz` test.
pub fn long_fuzz<F: Format>(params: &[(String, String)]) {
    for seed in 0..20 {
        let entries = crate::sample::xian_like(300 + seed as usize * 50, seed);
        let chunks = encode::<F>(&entries, params, 4096).unwrap();
        assert_robust::<F>(&entries, &chunks, params, 10_000, seed);
    }
}
