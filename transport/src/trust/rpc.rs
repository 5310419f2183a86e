//! One RPC server as the trust code reads it: headers and light blocks
//! through the light client's own I/O component (`ProdIo`), every read under
//! a timeout, every failure naming the server.

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tendermint::block::signed_header::SignedHeader;
use tendermint::block::Height;
use tendermint_light_client::components::io::{AtHeight, IoError, IoErrorDetail, ProdIo};
use tendermint_light_client::verifier::types::{LightBlock, PeerId};
use tendermint_rpc::client::CompatMode;
use tendermint_rpc::{HttpClient, HttpClientUrl};

use super::TrustError;

/// How often a wait for a block asks again.
const POLL: Duration = Duration::from_millis(250);

/// An RPC server: its URL (as given, normalised) and the light client's
/// reader of it.
pub(super) struct Rpc {
    pub url: String,
    io: ProdIo,
}

impl Rpc {
    /// A reader of `url` whose every read gives up after `timeout`.
    pub fn connect(url: &str, timeout: Duration) -> Result<Rpc, TrustError> {
        let url = normalize_url(url);
        let bad = |reason: String| TrustError::BadUrl {
            url: url.clone(),
            reason,
        };
        let parsed: HttpClientUrl = url.parse().map_err(|e| bad(format!("{e}")))?;
        // CometBFT 0.38 and 0.39 both speak the 0.38 RPC dialect.
        let client = HttpClient::builder(parsed)
            .compat_mode(CompatMode::V0_38)
            .timeout(timeout)
            .build()
            .map_err(|e| bad(format!("{e}")))?;
        // The light client only uses the peer id to label where a block came
        // from; one derived from the URL keeps the servers apart in its store.
        let digest = Sha256::digest(url.as_bytes());
        let mut id = [0u8; 20];
        id.copy_from_slice(&digest[..20]);
        let io = ProdIo::new(PeerId::new(id), client, Some(timeout));
        Ok(Rpc { url, io })
    }

    /// The light client's reader of this server.
    pub fn io(&self) -> ProdIo {
        self.io.clone()
    }

    pub fn peer_id(&self) -> PeerId {
        self.io.peer_id()
    }

    /// The height of the latest block this server has a commit for.
    pub fn latest_height(&self) -> Result<u64, TrustError> {
        let header = self
            .io
            .fetch_signed_header(AtHeight::Highest)
            .map_err(|e| self.failed("the latest commit", e))?;
        Ok(header.header.height.value())
    }

    /// The header at `height` and the commit that signs it.
    pub fn signed_header(&self, height: u64) -> Result<SignedHeader, TrustError> {
        self.io
            .fetch_signed_header(AtHeight::At(to_height(height)?))
            .map_err(|e| self.failed(&format!("the header at height {height}"), e))
    }

    /// The header at `height` with its commit and validator sets.
    pub fn light_block(&self, height: u64) -> Result<LightBlock, TrustError> {
        use tendermint_light_client::components::io::Io;
        self.io
            .fetch_light_block(AtHeight::At(to_height(height)?))
            .map_err(|e| self.failed(&format!("the light block at height {height}"), e))
    }

    /// Waits until this server has a commit for block `height`; gives up at
    /// `deadline`.
    pub fn wait_for(&self, height: u64, deadline: &Deadline) -> Result<(), TrustError> {
        loop {
            let latest = self.latest_height()?;
            if latest >= height {
                return Ok(());
            }
            let left = deadline.left();
            if left.is_zero() {
                return Err(TrustError::Timeout {
                    url: self.url.clone(),
                    height,
                    latest,
                    waited: deadline.limit,
                });
            }
            std::thread::sleep(POLL.min(left));
        }
    }

    pub fn failed(&self, what: &str, e: IoError) -> TrustError {
        let reason = match e.detail() {
            IoErrorDetail::Timeout(t) => format!("no answer within {:?}", t.duration),
            IoErrorDetail::HeightTooHigh(h) => {
                format!("it has no block {} yet (its latest is {})", h.height, h.latest_height)
            }
            _ => error_text(&e),
        };
        TrustError::Unreachable {
            url: self.url.clone(),
            what: what.to_string(),
            reason,
        }
    }
}

/// When a whole operation must be done by.
pub(super) struct Deadline {
    at: Instant,
    pub limit: Duration,
}

impl Deadline {
    pub fn after(limit: Duration) -> Deadline {
        Deadline {
            at: Instant::now() + limit,
            limit,
        }
    }

    pub fn left(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }
}

/// The hash of a header, computed from its fields (never the one an RPC
/// says it has: a server that alters a field shows up here).
pub(super) fn header_hash(header: &SignedHeader) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(header.header.hash().as_bytes());
    out
}

/// `http://host:port` for `host:port`, `tcp://host:port` and trailing slashes.
pub(super) fn normalize_url(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    match url.strip_prefix("tcp://") {
        Some(rest) => format!("http://{rest}"),
        None if !url.contains("://") => format!("http://{url}"),
        None => url.to_string(),
    }
}

/// An error of the light client or its RPC client as one line: their
/// errors print an eyre report (a "Caused by" list, then a location and,
/// with RUST_BACKTRACE set, a backtrace); this keeps the messages only.
pub(super) fn error_text(e: &impl std::fmt::Display) -> String {
    let text = e.to_string();
    let report = text.split("\nLocation:").next().unwrap_or_default();
    let report = report.split("\nStack backtrace:").next().unwrap_or_default();
    let messages: Vec<&str> = report
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "Caused by:")
        .map(|l| match l.split_once(": ") {
            Some((n, rest)) if n.chars().all(|c| c.is_ascii_digit()) => rest,
            _ => l,
        })
        .collect();
    messages.join(": ")
}

pub(super) fn to_height(height: u64) -> Result<Height, TrustError> {
    match Height::try_from(height) {
        Ok(h) if height > 0 => Ok(h),
        _ => Err(TrustError::BadRequest(format!("{height} is not a block height"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_reports_become_one_line() {
        let report = "rpc error\n\nCaused by:\n   0: HTTP error\n   1: error sending request for url (http://x/)\n\n\
                      Location:\n    src/a.rs:10:9\n\nStack backtrace:\n   0: default_with\n";
        assert_eq!(
            error_text(&report),
            "rpc error: HTTP error: error sending request for url (http://x/)"
        );
        assert_eq!(error_text(&"height 5: too high"), "height 5: too high");
    }
}
