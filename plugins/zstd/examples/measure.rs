//! Compression ratio and speed of the native zstd and gzip codecs on
//! Xian-like entries (`statesnap_plugin_sdk::sample`), in one run so the
//! figures can be compared with each other:
//!
//! ```sh
//! cargo run --release -p statesnap-plugin-zstd --example measure -- [entries] [seed]
//! ```
//! Speeds are framed-entry megabytes per second (input for the writer, output
//! for the reader), best of three runs, one thread.

use std::time::{Duration, Instant};

use statesnap_plugin_sdk::{sample, Format, FormatReader, FormatWriter};

fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (T, Duration) {
    let mut best = Duration::MAX;
    let mut out = None;
    for _ in 0..runs {
        let t = Instant::now();
        let r = f();
        best = best.min(t.elapsed());
        out = Some(r);
    }
    (out.expect("at least one run"), best)
}

fn measure<F: Format>(label: &str, params: &[(String, String)], batches: &[Vec<u8>], raw: usize) {
    let (chunks, enc) = best_of(3, || {
        let mut w = F::writer(params).expect("writer");
        let mut chunks = Vec::new();
        for b in batches {
            chunks.extend(w.write(b).expect("write"));
        }
        chunks.extend(w.finish().expect("finish"));
        chunks
    });
    let packed: usize = chunks.iter().map(Vec::len).sum();
    let (decoded, dec) = best_of(3, || {
        let mut r = F::reader(params).expect("reader");
        let mut n = 0usize;
        for c in &chunks {
            r.feed(c).expect("feed");
            while let Some(b) = r.next(1 << 20).expect("next") {
                n += b.len();
            }
        }
        r.finish().expect("reader finish");
        n
    });
    assert_eq!(decoded, raw, "{label}: round trip lost bytes");
    let mbps = |d: Duration| raw as f64 / 1e6 / d.as_secs_f64();
    println!(
        "{label:<24} {packed:>12} B  ratio {:>5.2}  chunks {:>3}  write {:>7.1} MB/s  read {:>7.1} MB/s",
        raw as f64 / packed as f64,
        chunks.len(),
        mbps(enc),
        mbps(dec)
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(500_000, |a| a.parse().expect("entries"));
    let seed: u64 = args.next().map_or(1, |a| a.parse().expect("seed"));
    let entries = sample::xian_like(n, seed);
    let batches = sample::batches(&entries, 1 << 20);
    let raw: usize = batches.iter().map(Vec::len).sum();
    println!("{n} Xian-like entries, {raw} framed bytes (seed {seed})");
    let p = |kv: &[(&str, &str)]| -> Vec<(String, String)> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    measure::<statesnap_plugin_zstd::Zstd>("zstd (defaults)", &[], &batches, raw);
    measure::<statesnap_plugin_gzip::Gzip>("gzip (defaults, level 1)", &[], &batches, raw);
    measure::<statesnap_plugin_gzip::Gzip>("gzip level 6", &p(&[("level", "6")]), &batches, raw);
    measure::<statesnap_plugin_gzip::Gzip>("gzip level 9", &p(&[("level", "9")]), &batches, raw);
}
