//! Trust from CometBFT's light client: the app hash a snapshot must restore
//! to, and the trust anchor of CometBFT's own state sync, each taken from a
//! header that tendermint-light-client verified and that every given RPC
//! server agrees on.
//!
//! Blocking (the light client's reader runs each request on a thread of its
//! own): from async code, call it through `spawn_blocking`.
//!
//! * `rpc`: one RPC server, read with timeouts.
//! * `light`: the light client (anchor and forward verification).
//! * `config`: CometBFT's `[statesync]` section.
//! * `error`: [`TrustError`].

use std::time::Duration;

mod config;
mod error;
mod light;
mod rpc;

pub use config::{go_duration, statesync_section, write_statesync_section};
pub use error::TrustError;

use light::Verifier;
use rpc::{header_hash, Deadline, Rpc};
use tendermint_light_client::verifier::types::LightBlock;

/// Blocks below the first RPC's latest that an automatic anchor is taken
/// at, so that the other servers (a block or two behind) already have it.
const AUTO_MARGIN: u64 = 2;

/// Where trust starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustAnchor {
    /// A recent header that every RPC server agrees on (at least 2 servers).
    Auto,
    /// The header at `height`, which must hash to `hash` (from a source the
    /// operator trusts).
    Pinned { height: u64, hash: [u8; 32] },
}

/// How to trust: the RPC servers (the first is the light client's primary,
/// the others are witnesses it is cross-checked against), the anchor, the
/// trust period, and how long to wait for blocks and each read.
#[derive(Debug, Clone)]
pub struct TrustSpec {
    pub rpcs: Vec<String>,
    pub anchor: TrustAnchor,
    pub period: Duration,
    pub timeout: Duration,
}

/// An app hash taken from a verified header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedAppHash {
    pub chain_id: String,
    /// The height whose resulting state has this app hash.
    pub snapshot_height: u64,
    /// The header that commits to it (`snapshot_height + 1`).
    pub header_height: u64,
    pub app_hash: [u8; 32],
    pub header_hash: [u8; 32],
}

/// What CometBFT's `[statesync]` section needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateSyncParams {
    /// `enable`: true for a node that state-syncs over p2p; false for one
    /// bootstrapped out of band (`statesnap join`), which only needs the
    /// light client's settings.
    pub enable: bool,
    pub rpc_servers: Vec<String>,
    pub trust_height: u64,
    pub trust_hash: [u8; 32],
    pub trust_period: Duration,
}

/// The app hash of the state after block `height` (a snapshot's height),
/// from the header at `height + 1` verified by the light client from the
/// anchor; waits (bounded by `spec.timeout`) for `height + 1` to exist.
/// `chain_id`: when `Some`, the header's chain must equal it.
///
/// With [`TrustAnchor::Auto`] the anchor is the first server's header at
/// `min(latest - 2, height)`, which every other server must have with the
/// same hash (the light client verifies forward only, so the anchor is at or
/// below the target). The verified header's hash is checked against every
/// other server too.
pub fn app_hash_after(spec: &TrustSpec, height: u64, chain_id: Option<&str>) -> Result<TrustedAppHash, TrustError> {
    if height == 0 {
        return Err(TrustError::BadRequest(
            "height 0 has no state a snapshot could hold".into(),
        ));
    }
    let rpcs = connect(spec, matches!(spec.anchor, TrustAnchor::Auto))?;
    let deadline = Deadline::after(spec.timeout);
    let primary = &rpcs[0];
    let target = height + 1;
    primary.wait_for(target, &deadline)?;
    let anchor = match spec.anchor {
        TrustAnchor::Auto => {
            let latest = primary.latest_height()?;
            auto_anchor(&rpcs, latest.saturating_sub(AUTO_MARGIN).min(height).max(1), &deadline)?
        }
        TrustAnchor::Pinned { height: pinned, hash } => {
            if pinned > target {
                return Err(TrustError::BadRequest(format!(
                    "the pinned trust height {pinned} is above the header that holds height {height}'s app hash \
                     ({target}): the light client verifies forward only; pin a height at or below {target}"
                )));
            }
            pinned_anchor(primary, pinned, &hash)?
        }
    };
    check_chain(primary, &anchor, chain_id)?;
    let verified = Verifier::new(primary, anchor, spec.period)?.verify_to(target)?;
    check_chain(primary, &verified, chain_id)?;
    let header = &verified.signed_header.header;
    let header_hash = header_hash(&verified.signed_header);
    cross_check(&rpcs, target, &header_hash, &deadline)?;
    let app_hash = header.app_hash.as_bytes();
    Ok(TrustedAppHash {
        chain_id: header.chain_id.to_string(),
        snapshot_height: height,
        header_height: target,
        app_hash: app_hash.try_into().map_err(|_| TrustError::BadAppHash {
            height: target,
            len: app_hash.len(),
        })?,
        header_hash,
    })
}

/// Parameters for CometBFT's `[statesync]` section anchored at the header
/// [`app_hash_after`] has verified and cross-checked (height + 1): no second
/// round of verification. `statesnap join` gives them to CometBFT's
/// bootstrap, whose light client then checks the snapshot's height from there.
pub fn statesync_params_at(spec: &TrustSpec, verified: &TrustedAppHash) -> StateSyncParams {
    StateSyncParams {
        enable: true,
        rpc_servers: spec.rpcs.iter().map(|url| rpc::normalize_url(url)).collect(),
        trust_height: verified.header_height,
        trust_hash: verified.header_hash,
        trust_period: spec.period,
    }
}

/// Parameters for CometBFT's `[statesync]` section, chosen and cross-checked
/// the same way: [`TrustAnchor::Auto`] gives the first server's header at its
/// latest height minus 2, which every other server has with the same hash;
/// [`TrustAnchor::Pinned`] gives a header just as recent verified forward
/// from the pinned one (the pin itself when it is newer), cross-checked the
/// same way. At least 2 servers, as CometBFT requires.
pub fn statesync_params(spec: &TrustSpec) -> Result<StateSyncParams, TrustError> {
    let rpcs = connect(spec, true)?;
    let deadline = Deadline::after(spec.timeout);
    let primary = &rpcs[0];
    let recent = primary.latest_height()?.saturating_sub(AUTO_MARGIN).max(1);
    let (trust_height, trust_hash) = match spec.anchor {
        TrustAnchor::Auto => {
            let anchor = auto_anchor(&rpcs, recent, &deadline)?;
            let hash = header_hash(&anchor.signed_header);
            // Refuses an anchor already outside the trust period.
            Verifier::new(primary, anchor, spec.period)?;
            (recent, hash)
        }
        TrustAnchor::Pinned { height: pinned, hash } => {
            let anchor = pinned_anchor(primary, pinned, &hash)?;
            let target = recent.max(pinned);
            let verified = Verifier::new(primary, anchor, spec.period)?.verify_to(target)?;
            let hash = header_hash(&verified.signed_header);
            cross_check(&rpcs, target, &hash, &deadline)?;
            (target, hash)
        }
    };
    Ok(StateSyncParams {
        enable: true,
        rpc_servers: rpcs.iter().map(|r| r.url.clone()).collect(),
        trust_height,
        trust_hash,
        trust_period: spec.period,
    })
}

/// A reader of every server; `need_two`: refuse fewer than two.
fn connect(spec: &TrustSpec, need_two: bool) -> Result<Vec<Rpc>, TrustError> {
    let needed = if need_two { 2 } else { 1 };
    if spec.rpcs.len() < needed {
        return Err(TrustError::TooFewRpcs {
            needed,
            given: spec.rpcs.len(),
            why: if need_two {
                "to cross-check the trust anchor (and CometBFT's state sync needs 2 rpc_servers)"
            } else {
                "to read headers from"
            },
        });
    }
    // A zero timeout would fail every read at once.
    let timeout = spec.timeout.max(Duration::from_secs(1));
    spec.rpcs.iter().map(|u| Rpc::connect(u, timeout)).collect()
}

/// The first server's light block at `height`, after every other server
/// gave a header at `height` with the same hash.
fn auto_anchor(rpcs: &[Rpc], height: u64, deadline: &Deadline) -> Result<LightBlock, TrustError> {
    let anchor = rpcs[0].light_block(height)?;
    cross_check(rpcs, height, &header_hash(&anchor.signed_header), deadline)?;
    Ok(anchor)
}

/// The primary's light block at `height`, which must hash to `expected`.
fn pinned_anchor(primary: &Rpc, height: u64, expected: &[u8; 32]) -> Result<LightBlock, TrustError> {
    let anchor = primary.light_block(height)?;
    let found = header_hash(&anchor.signed_header);
    if &found != expected {
        return Err(TrustError::TrustHashMismatch {
            height,
            url: primary.url.clone(),
            expected: hex::encode_upper(expected),
            found: hex::encode_upper(found),
        });
    }
    Ok(anchor)
}

/// Every server but the first must have the header at `height` hashing to
/// `expected` (the first's); waits for the ones still behind.
fn cross_check(rpcs: &[Rpc], height: u64, expected: &[u8; 32], deadline: &Deadline) -> Result<(), TrustError> {
    for other in &rpcs[1..] {
        other.wait_for(height, deadline)?;
        let found = header_hash(&other.signed_header(height)?);
        if &found != expected {
            return Err(TrustError::Disagree {
                height,
                url_a: rpcs[0].url.clone(),
                hash_a: hex::encode_upper(expected),
                url_b: other.url.clone(),
                hash_b: hex::encode_upper(found),
            });
        }
    }
    Ok(())
}

fn check_chain(primary: &Rpc, block: &LightBlock, expected: Option<&str>) -> Result<(), TrustError> {
    let header = &block.signed_header.header;
    match expected {
        Some(want) if header.chain_id.as_str() != want => Err(TrustError::ChainIdMismatch {
            height: header.height.value(),
            url: primary.url.clone(),
            expected: want.to_string(),
            found: header.chain_id.to_string(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(rpcs: &[&str], anchor: TrustAnchor) -> TrustSpec {
        TrustSpec {
            rpcs: rpcs.iter().map(|s| s.to_string()).collect(),
            anchor,
            period: Duration::from_secs(3600),
            timeout: Duration::from_secs(2),
        }
    }

    /// A loopback port nothing listens on.
    fn closed_port() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        format!("127.0.0.1:{}", addr.port())
    }

    #[test]
    fn auto_needs_two_servers() {
        let err = app_hash_after(&spec(&["http://127.0.0.1:1"], TrustAnchor::Auto), 5, None).unwrap_err();
        assert!(
            matches!(
                err,
                TrustError::TooFewRpcs {
                    needed: 2,
                    given: 1,
                    ..
                }
            ),
            "{err}"
        );
        let pinned = TrustAnchor::Pinned {
            height: 1,
            hash: [0; 32],
        };
        let err = statesync_params(&spec(&["http://127.0.0.1:1"], pinned)).unwrap_err();
        assert!(err.to_string().contains("2 rpc_servers"), "{err}");
    }

    #[test]
    fn an_unreachable_server_is_named() {
        let url = closed_port();
        let err = statesync_params(&spec(&[&url, "http://127.0.0.1:1"], TrustAnchor::Auto)).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, TrustError::Unreachable { .. }), "{text}");
        assert!(text.contains(&format!("http://{url}")), "{text}");
    }

    #[test]
    fn a_silent_server_times_out() {
        // Accepts connections and never answers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let started = std::time::Instant::now();
        let err = statesync_params(&spec(&[&url, &url], TrustAnchor::Auto)).unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, TrustError::Unreachable { .. }) && text.contains(&url),
            "{text}"
        );
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
        drop(listener);
    }

    #[test]
    fn urls_are_normalised_and_checked() {
        assert_eq!(rpc::normalize_url("tcp://127.0.0.1:26657/"), "http://127.0.0.1:26657");
        assert_eq!(rpc::normalize_url(" 127.0.0.1:26657"), "http://127.0.0.1:26657");
        let err = app_hash_after(&spec(&["ftp://x", "http://y:1"], TrustAnchor::Auto), 5, None).unwrap_err();
        assert!(matches!(err, TrustError::BadUrl { .. }), "{err}");
    }
}
