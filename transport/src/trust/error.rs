//! What can go wrong when deciding whom to trust, each case saying what to do.

use std::time::Duration;

use super::config::go_duration;

/// Why a header (and so an app hash or a trust anchor) was not trusted.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("{needed} RPC servers are needed {why}, {given} given: list another node's RPC (URL,URL)")]
    TooFewRpcs {
        needed: usize,
        given: usize,
        why: &'static str,
    },
    #[error("`{url}` is not an RPC URL ({reason}): give http://HOST:PORT")]
    BadUrl { url: String, reason: String },
    #[error("no header to trust: {0}")]
    BadRequest(String),
    #[error(
        "could not read {what} from the RPC at {url}: {reason} (is the node running, and its RPC reachable from here?)"
    )]
    Unreachable { url: String, what: String, reason: String },
    #[error(
        "the RPCs disagree on the header at height {height}: {url_a} has {hash_a}, {url_b} has {hash_b}; \
         one of them serves a forged header or another chain: trust neither until you know which, and drop it from the list"
    )]
    Disagree {
        height: u64,
        url_a: String,
        hash_a: String,
        url_b: String,
        hash_b: String,
    },
    #[error(
        "the trust hash is wrong: the header at height {height} from {url} hashes to {found}, not {expected}; \
         check HEIGHT:HASH against a node you run or trust (its /block?height={height} block_id.hash)"
    )]
    TrustHashMismatch {
        height: u64,
        url: String,
        expected: String,
        found: String,
    },
    #[error(
        "the trusted header at height {height} (time {time}) is outside the trust period of {}: \
         trust a more recent header (--trust auto, or HEIGHT:HASH of a newer block), or a longer period \
         if the chain's unbonding period allows",
        go_duration(*period)
    )]
    OutsideTrustPeriod {
        height: u64,
        time: String,
        period: Duration,
    },
    #[error(
        "the light client refused the header at height {height} from {url}: {reason}; \
         that RPC serves a header its validators did not sign: do not use it"
    )]
    VerificationFailed { height: u64, url: String, reason: String },
    #[error(
        "the chain is `{found}` (the header at height {height} from {url}), not `{expected}`: \
         point the RPCs at the chain you mean to join"
    )]
    ChainIdMismatch {
        height: u64,
        url: String,
        expected: String,
        found: String,
    },
    #[error(
        "timed out after {} waiting for block {height} at {url} (its latest is {latest}): \
         is the chain making blocks? wait, or give a longer timeout",
        go_duration(*waited)
    )]
    Timeout {
        url: String,
        height: u64,
        latest: u64,
        waited: Duration,
    },
    #[error("the header at height {height} has a {len}-byte app hash; a statesnap app hash is 32 bytes: is this a statesnap chain?")]
    BadAppHash { height: u64, len: usize },
}
