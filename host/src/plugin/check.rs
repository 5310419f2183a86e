//! `plugin check`: conformance for plugin authors. A plugin passes when it
//! describes itself validly, round-trips a generated state exactly, gives
//! byte-identical output every time (also when an instance is reused), and
//! stays within the host's limits.

use std::time::Instant;

use serde::Serialize;

use super::runtime::Plugin;
use super::PluginError;
use crate::store::generate::generate;
use crate::store::memory::MemoryStore;
use crate::store::root::is_consensus_key;
use crate::store::StateStore;

/// One check and how it went.
#[derive(Debug, Clone, Serialize)]
pub struct CheckItem {
    pub name: &'static str,
    pub passed: bool,
    pub detail: String,
}

/// The whole conformance report.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub plugin: String,
    pub keys: u64,
    pub chunks: usize,
    pub snapshot_bytes: u64,
    pub encode_seconds: f64,
    pub decode_seconds: f64,
    pub encode_fuel: u64,
    pub decode_fuel: u64,
    pub items: Vec<CheckItem>,
}

impl CheckReport {
    pub fn passed(&self) -> bool {
        self.items.iter().all(|i| i.passed)
    }
}

/// The framed consensus entries of a generated state, in batches.
type Sample = (Vec<Vec<u8>>, Vec<(String, String)>);

fn sample_batches(keys: u64, seed: u64) -> anyhow::Result<Sample> {
    let mut store = MemoryStore::new();
    generate(&mut store, keys, seed, |_| {})?;
    let mut entries = Vec::new();
    let mut batches = vec![Vec::new()];
    for e in store.entries()? {
        let e = e?;
        if !is_consensus_key(&e.key) || e.stored == "null" {
            continue;
        }
        let last = batches.last_mut().unwrap();
        statesnap_plugin_sdk::push_entry(last, e.key.as_bytes(), e.stored.as_bytes());
        if last.len() > 64 * 1024 {
            batches.push(Vec::new());
        }
        entries.push((e.key, e.stored));
    }
    Ok((batches, entries))
}

fn encode(writer: &mut super::PluginWriter, batches: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, PluginError> {
    let mut chunks = Vec::new();
    for b in batches {
        chunks.extend(writer.write(b)?);
    }
    chunks.extend(writer.finish()?);
    Ok(chunks)
}

fn record(items: &mut Vec<CheckItem>, name: &'static str, result: Result<String, String>) {
    let (passed, detail) = match result {
        Ok(d) => (true, d),
        Err(d) => (false, d),
    };
    items.push(CheckItem { name, passed, detail });
}

/// Runs the conformance checks on `plugin` with a generated state of `keys` keys.
pub fn check(plugin: &Plugin, keys: u64) -> anyhow::Result<CheckReport> {
    let (batches, expected) = sample_batches(keys, 7)?;
    let params = plugin.description().params.clone();
    let mut items = Vec::new();
    let mut report = CheckReport {
        plugin: plugin.label().to_string(),
        keys: expected.len() as u64,
        chunks: 0,
        snapshot_bytes: 0,
        encode_seconds: 0.0,
        decode_seconds: 0.0,
        encode_fuel: 0,
        decode_fuel: 0,
        items: Vec::new(),
    };
    let mut item = |name, result: Result<String, String>| record(&mut items, name, result);
    let d = plugin.description();
    item(
        "describe",
        Ok(format!("{} {} makes format {}", d.name, d.version, d.format)),
    );

    // Encode: fresh instance, then a second writer in the same instance, then
    // another fresh instance. All three must be byte-identical.
    let started = Instant::now();
    let first = plugin.writer(&params).and_then(|mut w| {
        let chunks = encode(&mut w, &batches)?;
        Ok((chunks, w))
    });
    report.encode_seconds = started.elapsed().as_secs_f64();
    let (chunks, used_writer) = match first {
        Ok(r) => r,
        Err(e) => {
            item("encode", Err(e.to_string()));
            report.items = items;
            return Ok(report);
        }
    };
    report.encode_fuel = used_writer.fuel_used();
    report.chunks = chunks.len();
    report.snapshot_bytes = chunks.iter().map(|c| c.len() as u64).sum();
    item(
        "encode",
        if chunks.is_empty() {
            Err("produced no chunks (at least one is required)".into())
        } else {
            Ok(format!(
                "{} entries into {} chunks, {} bytes",
                expected.len(),
                chunks.len(),
                report.snapshot_bytes
            ))
        },
    );
    let reused = used_writer.another(&params).and_then(|mut w| encode(&mut w, &batches));
    let fresh = plugin.writer(&params).and_then(|mut w| encode(&mut w, &batches));
    item(
        "deterministic",
        match (reused, fresh) {
            (Ok(a), Ok(b)) if a == chunks && b == chunks => Ok("three runs gave identical chunks".into()),
            (Ok(a), Ok(_)) if a != chunks => {
                Err("a second snapshot in the same instance differs: output depends on hidden state".into())
            }
            (Ok(_), Ok(_)) => Err("two fresh instances gave different chunks".into()),
            (Err(e), _) | (_, Err(e)) => Err(format!("a repeated run failed: {e}")),
        },
    );

    // Decode and compare with the input.
    let started = Instant::now();
    let decoded = (|| -> Result<(Vec<(String, String)>, u64), String> {
        let mut r = plugin.reader(&params).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for c in &chunks {
            r.feed(c).map_err(|e| e.to_string())?;
            while let Some(b) = r.next_batch(1 << 20).map_err(|e| e.to_string())? {
                for item in statesnap_plugin_sdk::entries(&b) {
                    let (k, v) = item.map_err(|e| e.to_string())?;
                    out.push((
                        String::from_utf8_lossy(k).into_owned(),
                        String::from_utf8_lossy(v).into_owned(),
                    ));
                }
            }
        }
        r.finish().map_err(|e| e.to_string())?;
        Ok((out, r.fuel_used()))
    })();
    report.decode_seconds = started.elapsed().as_secs_f64();
    item(
        "round trip",
        match decoded {
            Ok((out, fuel)) => {
                report.decode_fuel = fuel;
                if out == expected {
                    Ok(format!("{} entries decoded exactly", out.len()))
                } else {
                    let at = out
                        .iter()
                        .zip(&expected)
                        .position(|(a, b)| a != b)
                        .unwrap_or(out.len().min(expected.len()));
                    Err(format!(
                        "decoded {} entries, expected {}; first difference at entry {at}",
                        out.len(),
                        expected.len()
                    ))
                }
            }
            Err(e) => Err(e),
        },
    );
    item(
        "limits",
        Ok(format!(
            "fuel {} to encode, {} to decode (limit {} per call); chunks at most {} bytes",
            report.encode_fuel,
            report.decode_fuel,
            plugin.limits().fuel_per_call,
            plugin.limits().max_chunk_bytes
        )),
    );
    report.items = items;
    Ok(report)
}
