//! Deterministic Xian-like sample entries, for plugin tests and codec
//! measurements (no dependencies, the same on every host).
//!
//! The mix follows the host's state generator: currency and token balances
//! keyed by 64-hex-digit accounts, nonces, approvals, DAO proposal records,
//! masternode votes and token metadata, with values in Xian's stored JSON forms
//! (`__fixed__`, `__big_int__`, `__time__`, `__bytes__`, strings, lists, dicts).

/// A small deterministic generator (SplitMix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(n);
        out
    }
}

fn hex(rng: &mut Rng, digits: usize) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    (0..digits).map(|_| HEX[rng.below(16) as usize] as char).collect()
}

fn fixed(rng: &mut Rng) -> String {
    format!(
        "{{\"__fixed__\":\"{}.{:08}\"}}",
        rng.below(10_000_000),
        rng.below(100_000_000)
    )
}

fn big_int(rng: &mut Rng) -> String {
    let sign = if rng.below(5) == 0 { "-" } else { "" };
    format!(
        "{{\"__big_int__\":\"{sign}{}{:012}\"}}",
        10_000_000_000 + rng.below(89_999_999_999),
        rng.below(1_000_000_000_000)
    )
}

fn time(rng: &mut Rng) -> String {
    let us = if rng.below(2) == 0 { 1 + rng.below(999_999) } else { 0 };
    format!(
        "{{\"__time__\":[{},{},{},{},{},{},{us}]}}",
        2019 + rng.below(8),
        1 + rng.below(12),
        1 + rng.below(28),
        rng.below(24),
        rng.below(60),
        rng.below(60)
    )
}

const WORDS: [&str; 8] = [
    "upgrade",
    "treasury",
    "grant",
    "r\\u00e9seau",
    "\\u6295\\u7968",
    "launch",
    "fee \\\"cut\\\"",
    "path/to\\\\x",
];

fn text(rng: &mut Rng) -> String {
    let n = 1 + rng.below(4);
    let words: Vec<&str> = (0..n).map(|_| WORDS[rng.below(WORDS.len() as u64) as usize]).collect();
    format!("\"{}\"", words.join(" "))
}

fn proposal_value(rng: &mut Rng) -> String {
    match rng.below(6) {
        0 => text(rng),
        1 => time(rng),
        2 => format!("{{\"__bytes__\":\"{}\"}}", hex(rng, 24)),
        3 => format!(
            "{{\"yes\":{},\"no\":{},\"voters\":[{},{}],\"weight\":{}}}",
            rng.below(1000),
            rng.below(1000),
            text(rng),
            text(rng),
            fixed(rng)
        ),
        4 => big_int(rng),
        _ => format!("[{},{},null]", rng.below(2) == 0, rng.below(2000) as i64 - 1000),
    }
}

fn metadata(rng: &mut Rng) -> String {
    format!(
        "{{\"name\":{},\"decimals\":{},\"created\":{},\"supply\":{}}}",
        text(rng),
        rng.below(19),
        time(rng),
        big_int(rng)
    )
}

/// One Xian-like entry (key and stored JSON value).
fn entry(rng: &mut Rng, tokens: u64) -> (String, String) {
    let acct = hex(rng, 64);
    match rng.below(100) {
        0..=39 => (format!("currency.balances:{acct}"), fixed(rng)),
        40..=59 => (format!("__n.{acct}"), rng.below(100_000).to_string()),
        60..=79 => (format!("con_token_{}.balances:{acct}", rng.below(tokens)), fixed(rng)),
        80..=87 => {
            let t = rng.below(tokens);
            let spender = hex(rng, 40);
            (format!("con_token_{t}.approvals:{acct}:{spender}"), fixed(rng))
        }
        88..=95 => {
            let f = ["title", "state", "votes", "created", "payload", "author"][rng.below(6) as usize];
            (format!("con_dao.proposals:{}:{f}", &acct[..16]), proposal_value(rng))
        }
        96..=97 => (
            format!("masternodes.votes:{}:{acct}", rng.below(64)),
            (rng.below(2) == 0).to_string(),
        ),
        _ => (
            format!("con_token_{}.metadata:{}", rng.below(tokens), &acct[..12]),
            metadata(rng),
        ),
    }
}

/// `n` distinct Xian-like entries in ascending key order (bytewise), the
/// same for the same `n` and `seed`.
pub fn xian_like(n: usize, seed: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut rng = Rng::new(seed);
    let tokens = (n as u64 / 20_000).clamp(1, 40);
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(n);
    while out.len() < n {
        let (k, v) = entry(&mut rng, tokens);
        out.push((k.into_bytes(), v.into_bytes()));
        if out.len() == n {
            out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            out.dedup_by(|a, b| a.0 == b.0);
        }
    }
    out
}

/// Frames `entries` into batches of about `batch_bytes` each, as the host
/// sends them to a writer.
pub fn batches(entries: &[(Vec<u8>, Vec<u8>)], batch_bytes: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    for (k, v) in entries {
        crate::push_entry(&mut cur, k, v);
        if cur.len() >= batch_bytes {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn sorted_distinct_deterministic() {
        let a = super::xian_like(5000, 7);
        assert_eq!(a.len(), 5000);
        assert!(a.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(a, super::xian_like(5000, 7));
        assert_ne!(a, super::xian_like(5000, 8));
    }
}
