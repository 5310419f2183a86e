//! A realistic Xian-like state, for demos, tests and benchmarks.
//!
//! Deterministic for a seed: currency balances and account nonces, token
//! contracts with balances, approvals and metadata, a DAO contract with nested
//! proposal records, masternode votes, and `__latest_block.*` run-state keys.
//! Values use every stored form of docs/XIAN.md §2 except `__delta__`.

use sha2::{Digest, Sha256};

use super::prng::Prng;
use super::StateStore;

/// The version of the generating algorithm. A generated state is a function
/// of `(keys, seed)` and of this code alone (its random source is
/// [`Prng`], not a crate), because the plugin conformance check, a consensus
/// verdict, runs on one; golden tests pin what version 1 yields. Any change
/// to what is generated is a new version.
pub const GENERATOR_VERSION: u32 = 1;

/// Keys written per batch.
const BATCH: usize = 10_000;

/// Writes exactly `keys` keys into `store`, calling `progress` with the
/// number written so far. Keys are sorted before writing (the store's fast path).
pub fn generate(store: &mut dyn StateStore, keys: u64, seed: u64, mut progress: impl FnMut(u64)) -> anyhow::Result<()> {
    let mut rng = Prng::new(seed);
    let mut entries: Vec<(String, Option<String>)> = Vec::with_capacity(keys as usize);
    let tokens = (keys / 20_000).clamp(1, 40);
    for i in 0..keys {
        let (key, value) = entry(&mut rng, seed, i, tokens);
        entries.push((key, Some(value)));
    }
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    entries.dedup_by(|a, b| a.0 == b.0);
    debug_assert_eq!(entries.len() as u64, keys, "generated keys are distinct");
    let mut written = 0u64;
    for batch in entries.chunks(BATCH) {
        store.write_batch(batch)?;
        written += batch.len() as u64;
        progress(written);
    }
    Ok(())
}

/// A 64-hex-digit account derived from the seed and an index: distinct per index.
fn account(seed: u64, i: u64) -> String {
    let mut h = Sha256::new();
    h.update(seed.to_be_bytes());
    h.update(i.to_be_bytes());
    hex::encode(h.finalize())
}

fn entry(rng: &mut Prng, seed: u64, i: u64, tokens: u64) -> (String, String) {
    // The first keys are the fixed run-state and contract metadata keys.
    match i {
        0 => return ("__latest_block.height".into(), rng.range(1, 50_000_000).to_string()),
        1 => {
            return (
                "__latest_block.hash".into(),
                format!("{{\"__bytes__\":\"{}\"}}", hex::encode(account(seed, i))),
            )
        }
        2 => return ("__latest_block.nanos".into(), big_int(rng)),
        3 => return ("currency.metadata:token_name".into(), "\"Xian\"".into()),
        4 => return ("currency.metadata:token_symbol".into(), "\"XIAN\"".into()),
        5 => return ("masternodes.S:members".into(), members(rng, seed)),
        _ => {}
    }
    let acct = account(seed, i);
    match rng.range(0, 100) {
        0..=39 => (format!("currency.balances:{acct}"), fixed(rng)),
        40..=59 => (format!("__n.{acct}"), rng.range(0, 100_000).to_string()),
        60..=79 => {
            let t = rng.range(0, tokens);
            (format!("con_token_{t}.balances:{acct}"), fixed(rng))
        }
        80..=87 => {
            let t = rng.range(0, tokens);
            let spender = &account(seed ^ 0x5eed, i)[..40];
            (format!("con_token_{t}.approvals:{acct}:{spender}"), fixed(rng))
        }
        88..=95 => (
            format!("con_dao.proposals:{}:{}", &acct[..16], field(rng)),
            proposal_value(rng),
        ),
        96..=97 => (format!("masternodes.votes:{}:{acct}", rng.range(0, 64)), bool_text(rng)),
        _ => (
            format!("con_token_{}.metadata:{}", rng.range(0, tokens), &acct[..12]),
            metadata(rng),
        ),
    }
}

/// A `__fixed__` decimal value, as Xian stores balances.
pub fn fixed(rng: &mut Prng) -> String {
    let whole = rng.range(0, 10_000_000);
    let frac = rng.range(0, 100_000_000);
    format!("{{\"__fixed__\":\"{whole}.{frac:08}\"}}")
}

/// A `__big_int__` value beyond the 64-bit range.
pub fn big_int(rng: &mut Prng) -> String {
    let hi = rng.range(10_000_000_000, 99_999_999_999);
    let lo = rng.range(0, 1_000_000_000_000);
    let sign = if rng.chance(1, 5) { "-" } else { "" };
    format!("{{\"__big_int__\":\"{sign}{hi}{lo:012}\"}}")
}

/// A `__time__` value, with microseconds half of the time.
pub fn time(rng: &mut Prng) -> String {
    let us = if rng.chance(1, 2) { rng.range(1, 1_000_000) } else { 0 };
    format!(
        "{{\"__time__\":[{},{},{},{},{},{},{us}]}}",
        rng.range(2019, 2027),
        rng.range(1, 13),
        rng.range(1, 29),
        rng.range(0, 24),
        rng.range(0, 60),
        rng.range(0, 60)
    )
}

fn bool_text(rng: &mut Prng) -> String {
    if rng.chance(1, 2) { "true" } else { "false" }.to_string()
}

fn field(rng: &mut Prng) -> &'static str {
    ["title", "state", "votes", "created", "payload", "author"][rng.index(6)]
}

const WORDS: [&str; 8] = [
    "upgrade",
    "treasury",
    "grant",
    "réseau",
    "投票",
    "🚀 launch",
    "fee \"cut\"",
    "path/to\\x",
];

fn text(rng: &mut Prng) -> String {
    let n = rng.range(1, 5);
    let words: Vec<&str> = (0..n).map(|_| WORDS[rng.index(WORDS.len())]).collect();
    serde_json::to_string(&words.join(" ")).expect("string encodes")
}

fn proposal_value(rng: &mut Prng) -> String {
    match rng.range(0, 6) {
        0 => text(rng),
        1 => time(rng),
        2 => format!(
            "{{\"__bytes__\":\"{}\"}}",
            hex::encode(format!("payload-{}", rng.next_u64() as u32))
        ),
        3 => format!(
            "{{\"yes\":{},\"no\":{},\"voters\":[{},{}],\"weight\":{}}}",
            rng.range(0, 1000),
            rng.range(0, 1000),
            text(rng),
            text(rng),
            fixed(rng)
        ),
        4 => big_int(rng),
        _ => format!("[{},{},{}]", bool_text(rng), rng.range_i64(-1000, 1000), "null"),
    }
}

fn metadata(rng: &mut Prng) -> String {
    format!(
        "{{\"name\":{},\"decimals\":{},\"created\":{},\"supply\":{}}}",
        text(rng),
        rng.range(0, 19),
        time(rng),
        big_int(rng)
    )
}

fn members(rng: &mut Prng, seed: u64) -> String {
    let n = rng.range(3, 8);
    let list: Vec<String> = (0..n).map(|j| format!("\"{}\"", account(seed ^ 0xabc, j))).collect();
    format!("[{}]", list.join(","))
}
