//! Compression ratio, speed and heap of the native brotli format against the
//! zstd and gzip formats on Xian-like entries (`statesnap_plugin_sdk::sample`),
//! in one run so the figures can be compared with each other:
//!
//! ```sh
//! cargo run --release -p statesnap-plugin-brotli --example compare -- [entries] [seed] [params...]
//! ```
//! Each `params` argument is one extra brotli configuration, such as
//! `quality=11,block_bytes=4194304`. Speeds are framed-entry megabytes per
//! second (input for the writer, output for the reader), best of two runs,
//! one thread; "heap" is the most heap the writer or reader held at once
//! (a wasm instance's linear memory grows to about that).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use statesnap_plugin_sdk::{sample, Format, FormatReader, FormatWriter};

struct Counting;

static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed on unchanged to `System`, which upholds
// `GlobalAlloc`'s contract; the counters only observe the sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = NOW.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: the caller upholds `alloc`'s contract for `layout`.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        NOW.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `System` with `layout` (every
        // allocation of this allocator is), as the caller guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` and returns its result, time and the heap it added at its peak.
fn measured<T>(f: impl FnOnce() -> T) -> (T, Duration, usize) {
    let base = NOW.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let t = Instant::now();
    let r = f();
    (r, t.elapsed(), PEAK.load(Ordering::Relaxed) - base)
}

fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (T, Duration, usize) {
    let mut best = (None, Duration::MAX, 0);
    for _ in 0..runs {
        let (r, d, heap) = measured(&mut f);
        best = (Some(r), best.1.min(d), best.2.max(heap));
    }
    (best.0.expect("at least one run"), best.1, best.2)
}

fn measure<F: Format>(label: &str, params: &[(String, String)], batches: &[Vec<u8>], raw: usize) {
    // The batches are held by the caller: the writer's heap is its own.
    let (chunks, enc, enc_heap) = best_of(2, || {
        let mut w = F::writer(params).expect("writer");
        let mut chunks = Vec::new();
        for b in batches {
            chunks.extend(w.write(b).expect("write"));
        }
        chunks.extend(w.finish().expect("finish"));
        chunks
    });
    let chunk_bytes: usize = chunks.iter().map(Vec::len).sum();
    let enc_heap = enc_heap - chunk_bytes.min(enc_heap);
    let (decoded, dec, dec_heap) = best_of(2, || {
        let mut r = F::reader(params).expect("reader");
        let mut n = 0usize;
        for c in &chunks {
            r.feed(c).expect("feed");
            while let Some(b) = r.next(4 << 20).expect("next") {
                n += b.len();
            }
        }
        r.finish().expect("reader finish");
        n
    });
    assert_eq!(decoded, raw, "{label}: round trip lost bytes");
    let mbps = |d: Duration| raw as f64 / 1e6 / d.as_secs_f64();
    let mib = |b: usize| b as f64 / (1 << 20) as f64;
    println!(
        "{label:<34} {chunk_bytes:>11} B  ratio {:>5.3}  write {:>6.1} MB/s heap {:>5.1} MiB  read {:>6.1} MB/s heap {:>5.1} MiB",
        raw as f64 / chunk_bytes as f64,
        mbps(enc),
        mib(enc_heap),
        mbps(dec),
        mib(dec_heap),
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(200_000, |a| a.parse().expect("entries"));
    let seed: u64 = args.next().map_or(1, |a| a.parse().expect("seed"));
    let extra: Vec<String> = args.collect();
    let entries = sample::xian_like(n, seed);
    // The host sends 1 MiB batches.
    let batches = sample::batches(&entries, 1 << 20);
    let raw: usize = batches.iter().map(Vec::len).sum();
    println!("{n} Xian-like entries, {raw} framed bytes (seed {seed})");
    let p = |s: &str| -> Vec<(String, String)> {
        s.split(',')
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').expect("name=value");
                (k.to_string(), v.to_string())
            })
            .collect()
    };
    measure::<statesnap_plugin_zstd::Zstd>("zstd (format 1, defaults)", &[], &batches, raw);
    measure::<statesnap_plugin_gzip::Gzip>("gzip (format 2, defaults)", &[], &batches, raw);
    if extra.is_empty() {
        measure::<statesnap_plugin_brotli::Brotli>("brotli (format 3, defaults)", &[], &batches, raw);
        for q in ["5", "8", "9", "11"] {
            let label = format!("brotli quality {q}");
            measure::<statesnap_plugin_brotli::Brotli>(&label, &p(&format!("quality={q}")), &batches, raw);
        }
        let blocks = "block_bytes=262144";
        measure::<statesnap_plugin_brotli::Brotli>("brotli 256 KiB blocks", &p(blocks), &batches, raw);
        let blocks = "block_bytes=2097152";
        measure::<statesnap_plugin_brotli::Brotli>("brotli 2 MiB blocks", &p(blocks), &batches, raw);
    }
    for e in &extra {
        measure::<statesnap_plugin_brotli::Brotli>(&format!("brotli {e}"), &p(e), &batches, raw);
    }
}
