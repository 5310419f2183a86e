//! The light client proper: trusting an anchor header and verifying forward
//! from it, with tendermint-light-client's own verifier, and its errors told
//! as [`TrustError`]s.

use std::time::Duration;

use tendermint_light_client::builder::error::{Error as BuilderError, ErrorDetail as BuilderErrorDetail};
use tendermint_light_client::builder::LightClientBuilder;
use tendermint_light_client::components::clock::SystemClock;
use tendermint_light_client::components::scheduler;
use tendermint_light_client::errors::{Error as LightError, ErrorDetail as LightErrorDetail};
use tendermint_light_client::instance::Instance;
use tendermint_light_client::store::memory::MemoryStore;
use tendermint_light_client::verifier::errors::VerificationErrorDetail;
use tendermint_light_client::verifier::options::Options;
use tendermint_light_client::verifier::predicates::ProdPredicates;
use tendermint_light_client::verifier::types::{LightBlock, TrustThreshold};
use tendermint_light_client::verifier::ProdVerifier;

use super::rpc::{error_text, to_height, Rpc};
use super::TrustError;

/// How far a header's time may be ahead of this machine's clock (CometBFT's
/// light client allows the same).
const CLOCK_DRIFT: Duration = Duration::from_secs(10);

/// A light client reading from `primary`, trusting `anchor` (which must be
/// within `period` of now, with validator sets matching its header).
pub(super) struct Verifier<'a> {
    primary: &'a Rpc,
    instance: Instance,
    period: Duration,
}

impl<'a> Verifier<'a> {
    pub fn new(primary: &'a Rpc, anchor: LightBlock, period: Duration) -> Result<Verifier<'a>, TrustError> {
        let options = Options {
            trust_threshold: TrustThreshold::ONE_THIRD,
            trusting_period: period,
            clock_drift: CLOCK_DRIFT,
        };
        let height = anchor.height().value();
        let time = anchor.signed_header.header.time;
        let instance = LightClientBuilder::custom(
            primary.peer_id(),
            options,
            Box::new(MemoryStore::new()),
            Box::new(primary.io()),
            Box::new(SystemClock),
            Box::new(ProdVerifier::default()),
            Box::new(scheduler::basic_bisecting_schedule),
            Box::new(ProdPredicates),
        )
        .trust_light_block(anchor)
        .map_err(|e| anchor_error(primary, height, &time.to_rfc3339(), period, e))?
        .build();
        Ok(Verifier {
            primary,
            instance,
            period,
        })
    }

    /// The header at `target`, verified from the anchor (sequentially or by
    /// skipping, as the light client's scheduler decides).
    pub fn verify_to(&mut self, target: u64) -> Result<LightBlock, TrustError> {
        let Instance { light_client, state } = &mut self.instance;
        light_client
            .verify_to_target(to_height(target)?, state)
            .map_err(|e| self.verify_error(target, e))
    }

    fn verify_error(&self, target: u64, e: LightError) -> TrustError {
        let url = self.primary.url.clone();
        match e.detail() {
            LightErrorDetail::Io(_) => TrustError::Unreachable {
                url,
                what: format!("the headers from the trusted one to height {target}"),
                reason: error_text(&e),
            },
            LightErrorDetail::TrustedStateOutsideTrustingPeriod(d) => TrustError::OutsideTrustPeriod {
                height: d.trusted_state.height().value(),
                time: d.trusted_state.signed_header.header.time.to_rfc3339(),
                period: self.period,
            },
            LightErrorDetail::TargetLowerThanTrustedState(d) => TrustError::BadRequest(format!(
                "the trusted header ({}) is above the header to verify ({}): the light client only verifies \
                 forward; trust a height at or below {target}",
                d.trusted_height, d.target_height
            )),
            LightErrorDetail::InvalidLightBlock(d) => match &d.source {
                VerificationErrorDetail::ChainIdMismatch(c) => TrustError::ChainIdMismatch {
                    height: target,
                    url,
                    expected: c.expected.clone(),
                    found: c.got.clone(),
                },
                other => TrustError::VerificationFailed {
                    height: target,
                    url,
                    reason: other.to_string(),
                },
            },
            _ => TrustError::VerificationFailed {
                height: target,
                url,
                reason: error_text(&e),
            },
        }
    }
}

fn anchor_error(primary: &Rpc, height: u64, time: &str, period: Duration, e: BuilderError) -> TrustError {
    match e.detail() {
        BuilderErrorDetail::InvalidLightBlock(d)
            if matches!(d.source, VerificationErrorDetail::NotWithinTrustPeriod(_)) =>
        {
            TrustError::OutsideTrustPeriod {
                height,
                time: time.to_string(),
                period,
            }
        }
        BuilderErrorDetail::InvalidLightBlock(d) => TrustError::VerificationFailed {
            height,
            url: primary.url.clone(),
            reason: d.source.to_string(),
        },
        _ => TrustError::VerificationFailed {
            height,
            url: primary.url.clone(),
            reason: error_text(&e),
        },
    }
}
