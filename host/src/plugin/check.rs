//! The conformance check a format plugin must pass, as governance runs it on
//! every proposed plugin and `statesnap plugin check` shows it. A plugin
//! passes when it describes itself validly, round-trips a generated state
//! exactly, gives byte-identical output every time (also when an instance is
//! reused), and stays within the host's limits.
//!
//! The chain's verdict on a proposed plugin comes from here: a plugin that
//! does not load, or fails a check, is refused ([`Refusal`]), saying which
//! check failed and what it found ([`CheckFailure`]).

use std::time::Instant;

use serde::Serialize;
use statesnap_plugin_sdk::FrameError;

use super::runtime::Plugin;
use super::{PluginError, PluginReader, PluginWriter};
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

/// The conformance checks, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckName {
    /// The plugin describes itself (name, version, format).
    Describe,
    /// It encodes the state into at least one chunk.
    Encode,
    /// Every run gives the same chunks.
    Deterministic,
    /// Its reader gives back exactly the entries written.
    RoundTrip,
    /// The fuel it used, against the limits.
    Limits,
}

impl CheckName {
    /// The name reports and refusals give it.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckName::Describe => "describe",
            CheckName::Encode => "encode",
            CheckName::Deterministic => "deterministic",
            CheckName::RoundTrip => "round trip",
            CheckName::Limits => "limits",
        }
    }
}

impl std::fmt::Display for CheckName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, so reports can align the names (`{:<14}`).
        f.pad(self.as_str())
    }
}

impl Serialize for CheckName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// What a failed check found. [`CheckFailure::check`] says which check it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckFailure {
    /// The first encode failed (the writer could not start, or a call failed).
    #[error("{0}")]
    Encode(PluginError),
    #[error("produced no chunks (at least one is required)")]
    NoChunks,
    /// A second writer in the same instance gave other chunks than the first.
    #[error("a second snapshot in the same instance differs: output depends on hidden state")]
    HiddenState,
    #[error("two fresh instances gave different chunks")]
    FreshInstancesDiffer,
    /// Encoding again (in the same instance or a fresh one) failed.
    #[error("a repeated run failed: {0}")]
    RepeatFailed(PluginError),
    /// The reader could not start, or a call of it failed.
    #[error("{0}")]
    Decode(PluginError),
    /// The reader returned a batch that is not framed entries.
    #[error("{0}")]
    Framing(FrameError),
    /// The reader gave back other entries than were written.
    #[error("decoded {decoded} entries, expected {expected}; first difference at entry {first_difference}")]
    RoundTrip {
        decoded: usize,
        expected: usize,
        first_difference: usize,
    },
}

impl CheckFailure {
    /// The check that found this.
    pub fn check(&self) -> CheckName {
        match self {
            CheckFailure::Encode(_) | CheckFailure::NoChunks => CheckName::Encode,
            CheckFailure::HiddenState | CheckFailure::FreshInstancesDiffer | CheckFailure::RepeatFailed(_) => {
                CheckName::Deterministic
            }
            CheckFailure::Decode(_) | CheckFailure::Framing(_) | CheckFailure::RoundTrip { .. } => CheckName::RoundTrip,
        }
    }
}

/// Why the chain refuses a proposed plugin (the same on every node).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// It does not load: not a component, another contract, a bad
    /// description, ….
    #[error("{0}")]
    Load(PluginError),
    /// It loads, but fails a conformance check.
    #[error(
        "it fails the conformance check `{check}`: {failure} (run `statesnap plugin check FILE.wasm`)",
        check = .0.check(),
        failure = .0
    )]
    Check(CheckFailure),
}

/// One check and how it went: what it found when it passed, or why it failed.
#[derive(Debug, Clone)]
pub struct CheckItem {
    pub name: CheckName,
    pub outcome: Result<String, CheckFailure>,
}

impl CheckItem {
    pub fn passed(&self) -> bool {
        self.outcome.is_ok()
    }

    /// What it found, or why it failed, in words.
    pub fn detail(&self) -> String {
        match &self.outcome {
            Ok(found) => found.clone(),
            Err(failure) => failure.to_string(),
        }
    }
}

/// As `{"name", "passed", "detail"}`.
impl Serialize for CheckItem {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut item = s.serialize_struct("CheckItem", 3)?;
        item.serialize_field("name", &self.name)?;
        item.serialize_field("passed", &self.passed())?;
        item.serialize_field("detail", &self.detail())?;
        item.end()
    }
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
    /// An empty report on `plugin`, for a state of `keys` consensus keys.
    fn new(plugin: &Plugin, keys: usize) -> Self {
        CheckReport {
            plugin: plugin.label().to_string(),
            keys: keys as u64,
            chunks: 0,
            snapshot_bytes: 0,
            encode_seconds: 0.0,
            decode_seconds: 0.0,
            encode_fuel: 0,
            decode_fuel: 0,
            encode_calls: CallCosts::default(),
            decode_calls: CallCosts::default(),
            items: Vec::new(),
        }
    }

    fn push(&mut self, name: CheckName, outcome: Result<String, CheckFailure>) {
        self.items.push(CheckItem { name, outcome });
    }

    pub fn passed(&self) -> bool {
        self.items.iter().all(CheckItem::passed)
    }

    /// The first check that failed, if one did.
    pub fn failure(&self) -> Option<&CheckFailure> {
        self.items.iter().find_map(|i| i.outcome.as_ref().err())
    }

    /// What governance decides on a plugin with this report: `Err` says why
    /// a proposal of it is refused.
    pub fn verdict(&self) -> Result<(), Refusal> {
        match self.failure() {
            None => Ok(()),
            Some(failure) => Err(Refusal::Check(failure.clone())),
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

/// A plugin failure, unless it is the host failing: that is not a finding
/// about the plugin, so it ends the check as an error.
fn finding(e: PluginError) -> anyhow::Result<PluginError> {
    if e.is_host_failure() {
        Err(e.into())
    } else {
        Ok(e)
    }
}

/// What a step found: `Err` of the outer result is this host failing
/// ([`finding`]), of the inner one the plugin failing the check.
type Step<T> = anyhow::Result<Result<T, CheckFailure>>;

/// Runs the conformance checks on `plugin` with a generated state of `keys`
/// keys. `Err(_)` is this host failing ([`PluginError::is_host_failure`]),
/// never a finding about the plugin.
pub fn check(plugin: &Plugin, keys: u64) -> anyhow::Result<CheckReport> {
    let (batches, expected) = sample_batches(keys, CHECK_SEED)?;
    let params = plugin.description().params.clone();
    let mut report = CheckReport::new(plugin, expected.len());
    report.push(CheckName::Describe, Ok(describe(plugin)));
    let (chunks, used_writer) = match first_encode(plugin, &params, &batches, &mut report)? {
        Ok(encoded) => encoded,
        Err(failure) => {
            report.push(CheckName::Encode, Err(failure));
            return Ok(report);
        }
    };
    report.push(CheckName::Encode, encoded(&chunks, expected.len()));
    let deterministic = determinism(plugin, used_writer, &params, &batches, &chunks)?;
    report.push(CheckName::Deterministic, deterministic);
    let round_trip = round_trip(plugin, &params, &chunks, &expected, &mut report)?;
    report.push(CheckName::RoundTrip, round_trip);
    report.push(CheckName::Limits, Ok(limits(plugin, &report)));
    Ok(report)
}

/// The `describe` check: what the plugin says it is.
fn describe(plugin: &Plugin) -> String {
    let d = plugin.description();
    format!("{} {} makes format {}", d.name, d.version, d.format)
}

/// The first encode, in a fresh instance: its chunks and the writer that
/// made them (its instance is reused by [`determinism`]). Records its time,
/// fuel, calls, chunks and bytes in `report`.
fn first_encode(
    plugin: &Plugin,
    params: &[(String, String)],
    batches: &[Vec<u8>],
    report: &mut CheckReport,
) -> Step<(Vec<Vec<u8>>, PluginWriter)> {
    let started = Instant::now();
    let mut calls = CallCosts::default();
    let first = plugin.writer(params).and_then(|mut w| {
        let chunks = encode(&mut w, batches, &mut calls)?;
        Ok((chunks, w))
    });
    report.encode_calls = calls;
    report.encode_seconds = started.elapsed().as_secs_f64();
    let (chunks, writer) = match first {
        Ok(encoded) => encoded,
        Err(e) => return Ok(Err(CheckFailure::Encode(finding(e)?))),
    };
    report.encode_fuel = writer.fuel_used();
    report.chunks = chunks.len();
    report.snapshot_bytes = chunks.iter().map(|c| c.len() as u64).sum();
    Ok(Ok((chunks, writer)))
}

/// Writes every batch and finishes, recording each call's cost.
fn encode(writer: &mut PluginWriter, batches: &[Vec<u8>], costs: &mut CallCosts) -> Result<Vec<Vec<u8>>, PluginError> {
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

/// The `encode` check, on the first encode's chunks.
fn encoded(chunks: &[Vec<u8>], entries: usize) -> Result<String, CheckFailure> {
    if chunks.is_empty() {
        return Err(CheckFailure::NoChunks);
    }
    let bytes: usize = chunks.iter().map(Vec::len).sum();
    Ok(format!("{entries} entries into {} chunks, {bytes} bytes", chunks.len()))
}

/// The `deterministic` check: a second writer in the first one's instance,
/// and a fresh instance, must both give the first encode's `chunks`.
fn determinism(
    plugin: &Plugin,
    used_writer: PluginWriter,
    params: &[(String, String)],
    batches: &[Vec<u8>],
    chunks: &[Vec<u8>],
) -> Step<String> {
    let mut ignored = CallCosts::default();
    let reused = used_writer
        .another(params)
        .and_then(|mut w| encode(&mut w, batches, &mut ignored));
    let fresh = plugin
        .writer(params)
        .and_then(|mut w| encode(&mut w, batches, &mut ignored));
    Ok(match (reused, fresh) {
        (Ok(a), Ok(b)) if a == chunks && b == chunks => Ok("three runs gave identical chunks".into()),
        (Ok(a), Ok(_)) if a != chunks => Err(CheckFailure::HiddenState),
        (Ok(_), Ok(_)) => Err(CheckFailure::FreshInstancesDiffer),
        (Err(e), _) | (_, Err(e)) => Err(CheckFailure::RepeatFailed(finding(e)?)),
    })
}

/// The entries a reader gave back, and the fuel it spent.
type Decoded = (Vec<(String, String)>, u64);

/// The `round trip` check: a fresh reader decodes `chunks` back into exactly
/// the `expected` entries. Records the decode's time, calls and fuel in `report`.
fn round_trip(
    plugin: &Plugin,
    params: &[(String, String)],
    chunks: &[Vec<u8>],
    expected: &[(String, String)],
    report: &mut CheckReport,
) -> Step<String> {
    let started = Instant::now();
    let mut calls = CallCosts::default();
    let decoded = decode(plugin, params, chunks, &mut calls)?;
    report.decode_calls = calls;
    report.decode_seconds = started.elapsed().as_secs_f64();
    Ok(decoded.and_then(|(entries, fuel)| {
        report.decode_fuel = fuel;
        compare(&entries, expected)
    }))
}

/// Decodes `chunks` in a fresh reader, recording each call's cost.
fn decode(plugin: &Plugin, params: &[(String, String)], chunks: &[Vec<u8>], costs: &mut CallCosts) -> Step<Decoded> {
    let failed = |e: PluginError| -> Step<Decoded> { Ok(Err(CheckFailure::Decode(finding(e)?))) };
    let mut reader = match plugin.reader(params) {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    let mut entries = Vec::new();
    for chunk in chunks {
        let (fuel, started) = (reader.fuel_used(), Instant::now());
        let fed = reader.feed(chunk);
        costs.record(reader.fuel_used().saturating_sub(fuel), started);
        if let Err(e) = fed {
            return failed(e);
        }
        if let Err(failure) = drain(&mut reader, costs, &mut entries)? {
            return Ok(Err(failure));
        }
    }
    let (fuel, started) = (reader.fuel_used(), Instant::now());
    let finished = reader.finish();
    costs.record(reader.fuel_used().saturating_sub(fuel), started);
    if let Err(e) = finished {
        return failed(e);
    }
    Ok(Ok((entries, reader.fuel_used())))
}

/// Takes every batch the reader has ready, appending its entries to `entries`.
fn drain(reader: &mut PluginReader, costs: &mut CallCosts, entries: &mut Vec<(String, String)>) -> Step<()> {
    loop {
        let (fuel, started) = (reader.fuel_used(), Instant::now());
        let next = reader.next_batch(1 << 20);
        costs.record(reader.fuel_used().saturating_sub(fuel), started);
        let batch = match next {
            Ok(Some(b)) => b,
            Ok(None) => return Ok(Ok(())),
            Err(e) => return Ok(Err(CheckFailure::Decode(finding(e)?))),
        };
        for entry in statesnap_plugin_sdk::entries(&batch) {
            let (k, v) = match entry {
                Ok(kv) => kv,
                Err(e) => return Ok(Err(CheckFailure::Framing(e))),
            };
            entries.push((
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            ));
        }
    }
}

/// The decoded entries against the expected ones.
fn compare(decoded: &[(String, String)], expected: &[(String, String)]) -> Result<String, CheckFailure> {
    if decoded == expected {
        return Ok(format!("{} entries decoded exactly", decoded.len()));
    }
    let first_difference = decoded
        .iter()
        .zip(expected)
        .position(|(a, b)| a != b)
        .unwrap_or(decoded.len().min(expected.len()));
    Err(CheckFailure::RoundTrip {
        decoded: decoded.len(),
        expected: expected.len(),
        first_difference,
    })
}

/// The `limits` item: the fuel spent against the limits.
fn limits(plugin: &Plugin, report: &CheckReport) -> String {
    format!(
        "fuel {} to encode, {} to decode (limit {} per call); chunks at most {} bytes",
        report.encode_fuel,
        report.decode_fuel,
        plugin.limits().fuel_per_call,
        plugin.limits().max_chunk_bytes
    )
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
