//! The conformance check a format plugin must pass, as governance runs it on
//! every proposed plugin and `statesnap plugin check` shows it. A plugin
//! passes when it describes itself validly, round-trips a generated state
//! exactly, gives byte-identical output every time (also when an instance is
//! reused), and stays within the host's limits.

use std::time::Instant;

use serde::Serialize;

use super::runtime::Plugin;
use super::PluginError;
use crate::store::generate::generate;
use crate::store::memory::MemoryStore;
use crate::store::root::is_consensus_key;
use crate::store::StateStore;

/// Keys of the generated state the chain's conformance check round-trips
/// (governance runs it on every proposed plugin: a consensus constant).
pub const CHAIN_CHECK_KEYS: u64 = 1000;
/// Fuel one plugin call may use in the chain's check: plenty for the small
/// check state, and it bounds what a hostile plugin costs.
pub const CHAIN_CHECK_FUEL_PER_CALL: u64 = 10_000_000_000;
/// The limits the chain's check runs a plugin under: the host's defaults,
/// with [`CHAIN_CHECK_FUEL_PER_CALL`].
pub fn chain_limits() -> super::Limits {
    super::Limits {
        fuel_per_call: CHAIN_CHECK_FUEL_PER_CALL,
        ..super::Limits::default()
    }
}

/// The seed of the checked state ([`generate`], version
/// [`GENERATOR_VERSION`](crate::store::generate::GENERATOR_VERSION)).
const CHECK_SEED: u64 = 7;

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
    /// The first encode's calls (write, finish) and the first decode's (feed, next batch, finish).
    pub encode_calls: CallCosts,
    pub decode_calls: CallCosts,
    pub items: Vec<CheckItem>,
}

/// What the calls of one pass cost: the fuel limit is per call, so the
/// costliest call is what a limit would stop.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CallCosts {
    pub calls: u64,
    pub max_fuel: u64,
    pub max_seconds: f64,
}

impl CallCosts {
    /// Records one call that used `fuel` and began at `started`.
    fn record(&mut self, fuel: u64, started: Instant) {
        self.calls += 1;
        self.max_fuel = self.max_fuel.max(fuel);
        self.max_seconds = self.max_seconds.max(started.elapsed().as_secs_f64());
    }
}

impl CheckReport {
    pub fn passed(&self) -> bool {
        self.items.iter().all(|i| i.passed)
    }

    /// What governance decides on a plugin with this report: `Err` says why
    /// a proposal of it is refused.
    pub fn verdict(&self) -> Result<(), String> {
        match self.items.iter().find(|i| !i.passed) {
            None => Ok(()),
            Some(failed) => Err(format!(
                "it fails the conformance check `{}`: {} (run `statesnap plugin check FILE.wasm`)",
                failed.name, failed.detail
            )),
        }
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

fn encode(
    writer: &mut super::PluginWriter,
    batches: &[Vec<u8>],
    costs: &mut CallCosts,
) -> Result<Vec<Vec<u8>>, PluginError> {
    let mut chunks = Vec::new();
    for b in batches {
        let (fuel, started) = (writer.fuel_used(), Instant::now());
        let written = writer.write(b);
        costs.record(writer.fuel_used().saturating_sub(fuel), started);
        chunks.extend(written?);
    }
    let (fuel, started) = (writer.fuel_used(), Instant::now());
    let last = writer.finish();
    costs.record(writer.fuel_used().saturating_sub(fuel), started);
    chunks.extend(last?);
    Ok(chunks)
}

fn record(items: &mut Vec<CheckItem>, name: &'static str, result: Result<String, String>) {
    let (passed, detail) = match result {
        Ok(d) => (true, d),
        Err(d) => (false, d),
    };
    items.push(CheckItem { name, passed, detail });
}

/// The entries a reader gave back, and the fuel it spent.
type Decoded = (Vec<(String, String)>, u64);

/// A plugin failure as a failed check item, unless it is the host failing:
/// that is not a finding about the plugin, so it ends the check as an error.
fn finding(e: PluginError) -> anyhow::Result<String> {
    if e.is_host_failure() {
        Err(e.into())
    } else {
        Ok(e.to_string())
    }
}

/// Runs the conformance checks on `plugin` with a generated state of `keys`
/// keys. `Err(_)` is this host failing ([`PluginError::is_host_failure`]),
/// never a finding about the plugin.
pub fn check(plugin: &Plugin, keys: u64) -> anyhow::Result<CheckReport> {
    let (batches, expected) = sample_batches(keys, CHECK_SEED)?;
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
        encode_calls: CallCosts::default(),
        decode_calls: CallCosts::default(),
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
    let mut encode_calls = CallCosts::default();
    let first = plugin.writer(&params).and_then(|mut w| {
        let chunks = encode(&mut w, &batches, &mut encode_calls)?;
        Ok((chunks, w))
    });
    report.encode_calls = encode_calls;
    report.encode_seconds = started.elapsed().as_secs_f64();
    let (chunks, used_writer) = match first {
        Ok(r) => r,
        Err(e) => {
            item("encode", Err(finding(e)?));
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
    let mut ignored = CallCosts::default();
    let reused = used_writer
        .another(&params)
        .and_then(|mut w| encode(&mut w, &batches, &mut ignored));
    let fresh = plugin
        .writer(&params)
        .and_then(|mut w| encode(&mut w, &batches, &mut ignored));
    let deterministic = match (reused, fresh) {
        (Ok(a), Ok(b)) if a == chunks && b == chunks => Ok("three runs gave identical chunks".into()),
        (Ok(a), Ok(_)) if a != chunks => {
            Err("a second snapshot in the same instance differs: output depends on hidden state".into())
        }
        (Ok(_), Ok(_)) => Err("two fresh instances gave different chunks".into()),
        (Err(e), _) | (_, Err(e)) => Err(format!("a repeated run failed: {}", finding(e)?)),
    };
    item("deterministic", deterministic);

    // Decode and compare with the input.
    let started = Instant::now();
    // Inner errors are findings; the outer one is the host failing.
    let mut decode_calls = CallCosts::default();
    let decoded = (|| -> anyhow::Result<Result<Decoded, String>> {
        let costs = &mut decode_calls;
        let mut r = match plugin.reader(&params) {
            Ok(r) => r,
            Err(e) => return Ok(Err(finding(e)?)),
        };
        let mut out = Vec::new();
        for c in &chunks {
            let (fuel, started) = (r.fuel_used(), Instant::now());
            let fed = r.feed(c);
            costs.record(r.fuel_used().saturating_sub(fuel), started);
            if let Err(e) = fed {
                return Ok(Err(finding(e)?));
            }
            loop {
                let (fuel, started) = (r.fuel_used(), Instant::now());
                let next = r.next_batch(1 << 20);
                costs.record(r.fuel_used().saturating_sub(fuel), started);
                let b = match next {
                    Ok(Some(b)) => b,
                    Ok(None) => break,
                    Err(e) => return Ok(Err(finding(e)?)),
                };
                for item in statesnap_plugin_sdk::entries(&b) {
                    let (k, v) = match item {
                        Ok(kv) => kv,
                        Err(e) => return Ok(Err(e.to_string())),
                    };
                    out.push((
                        String::from_utf8_lossy(k).into_owned(),
                        String::from_utf8_lossy(v).into_owned(),
                    ));
                }
            }
        }
        let (fuel, started) = (r.fuel_used(), Instant::now());
        let finished = r.finish();
        costs.record(r.fuel_used().saturating_sub(fuel), started);
        if let Err(e) = finished {
            return Ok(Err(finding(e)?));
        }
        Ok(Ok((out, r.fuel_used())))
    })()?;
    report.decode_calls = decode_calls;
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

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;
    use crate::plugin::{Limits, PluginEngine, BUILT_IN};

    /// The chain's check state, pinned: the SHA-256 of the exact framed
    /// batches every node hands a proposed plugin. If this fails the
    /// generator changed, and with it every node's verdict on every plugin:
    /// that is a new GENERATOR_VERSION and a coordinated upgrade, never a
    /// silent change.
    #[test]
    fn the_chain_check_state_is_pinned() {
        let (batches, entries) = sample_batches(CHAIN_CHECK_KEYS, CHECK_SEED).unwrap();
        let mut h = Sha256::new();
        for b in &batches {
            h.update((b.len() as u64).to_be_bytes());
            h.update(b);
        }
        assert_eq!(crate::store::generate::GENERATOR_VERSION, 1);
        assert_eq!(entries.len(), GOLDEN_CHECK_ENTRIES);
        assert_eq!(hex::encode(h.finalize()), GOLDEN_CHECK_STATE_SHA256);
    }

    /// The fuel each built-in plugin spends on the chain's check, pinned: the
    /// verdict depends on fuel (a plugin over the limit is refused), so the
    /// fuel a plugin uses must not drift with the wasmtime version or the
    /// host's build. Fails when wasmtime's fuel accounting or a built-in
    /// (plugins/dist) changes: re-pin only knowing that.
    #[test]
    fn the_fuel_of_each_built_in_on_the_chain_check_is_pinned() {
        let engine = PluginEngine::new(Limits {
            fuel_per_call: CHAIN_CHECK_FUEL_PER_CALL,
            ..Limits::default()
        })
        .unwrap();
        let mut got = Vec::new();
        for (name, wasm) in BUILT_IN {
            let plugin = engine.load(wasm, name).unwrap();
            let report = check(&plugin, CHAIN_CHECK_KEYS).unwrap();
            assert!(report.passed(), "{name}: {:?}", report.items);
            got.push((name.to_string(), report.encode_fuel, report.decode_fuel));
        }
        let want: Vec<(String, u64, u64)> = GOLDEN_FUEL.iter().map(|(n, e, d)| (n.to_string(), *e, *d)).collect();
        assert_eq!(got, want);
    }

    const GOLDEN_CHECK_ENTRIES: usize = 997;
    const GOLDEN_CHECK_STATE_SHA256: &str = "d98ee9292762c50dd640281424e9477ebeb6bb316bf97f62fc0efed6680602cc";
    const GOLDEN_FUEL: &[(&str, u64, u64)] = &[
        ("zstd", 28_791_731, 12_456_575),
        ("gzip", 19_518_247, 11_032_861),
        ("brotli", 256_601_061, 11_658_688),
    ];
}
