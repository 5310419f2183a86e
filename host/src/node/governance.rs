//! Governance of snapshot formats: what a `Propose` or `Vote` transaction
//! does to the registry in state (`chain::registry`), and the conformance
//! check every node runs on a proposed plugin.
//!
//! * Only validators may propose and vote: the signing account must have a
//!   positive power under `statesnap.validators:<key>` in state, so the
//!   signing key is the validator's consensus key (`priv_validator_key.json`).
//! * A proposal is refused unless its plugin passes the conformance check
//!   (round trip, determinism, limits on a small generated state). The check
//!   is deterministic: fixed input, fuel and memory limits that are constants
//!   of this binary (never a node's own settings) and no clocks, so every
//!   node reaches the same verdict. Verdicts are cached by SHA-256, so the
//!   check runs once per node however often CheckTx sees the proposal.
//! * A proposal passes when its yes votes carry more than 2/3 of the total
//!   voting power; its format is then approved from `height + activation_delay`.
//!   Votes after `expires_height` are refused: the proposal has expired.
//! * A format number is approved once; new code takes a new number.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::chain::registry::{
    self, format_key, passes, plugin_key, plugin_writes, proposal_count_key, proposal_key, vote_key, FormatApproval,
    PluginMeta, ProposalRecord, STATUS_PASSED, STATUS_VOTING,
};
use crate::chain::tx::{Proposal, TxError};
use crate::plugin::{check, Description, PluginEngine};
use crate::store::treap::MerkleTreap;

pub use crate::plugin::check::{CHAIN_CHECK_FUEL_PER_CALL as CHECK_FUEL_PER_CALL, CHAIN_CHECK_KEYS as CHECK_KEYS};

/// The validator set as state holds it: public key hex → voting power.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidatorSet {
    pub powers: BTreeMap<String, u64>,
}

impl ValidatorSet {
    /// Reads `statesnap.validators:*` from a state whose keys `treap` lists.
    pub fn read(
        treap: &MerkleTreap,
        mut get: impl FnMut(&str) -> anyhow::Result<Option<String>>,
    ) -> anyhow::Result<Self> {
        let prefix = registry::validators_prefix();
        let mut powers = BTreeMap::new();
        for key in treap.keys_with_prefix(&prefix) {
            let power = get(key)?.and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(0);
            if power > 0 {
                powers.insert(key[prefix.len()..].to_string(), power);
            }
        }
        Ok(ValidatorSet { powers })
    }

    pub(crate) fn power(&self, account: &[u8; 32]) -> u64 {
        self.powers.get(&hex::encode(account)).copied().unwrap_or(0)
    }

    pub(crate) fn total(&self) -> u64 {
        self.powers.values().sum()
    }
}

/// The chain's verdict on a proposed plugin: its description if it passes
/// the conformance check, else why not. The same on every node.
pub(crate) type Verdict = Result<Description, String>;

/// The conformance check, with its consensus limits and its verdicts cached.
pub struct Conformance {
    engine: PluginEngine,
    verdicts: Mutex<HashMap<[u8; 32], Verdict>>,
}

impl Conformance {
    pub fn new() -> anyhow::Result<Self> {
        Ok(Conformance {
            engine: PluginEngine::new(check::chain_limits())?,
            verdicts: Mutex::default(),
        })
    }

    /// The chain's verdict on `wasm`. `Err(_)` is this host failing (its
    /// engine could not compile or run valid code: out of memory, say),
    /// which another node would not share: it is never a verdict, never
    /// cached, and the caller must treat it as its own error.
    pub fn verdict(&self, wasm: &[u8]) -> anyhow::Result<Verdict> {
        let sha = crate::plugin::sha256(wasm);
        if let Some(v) = self.verdicts.lock().expect("verdict cache lock").get(&sha) {
            return Ok(v.clone());
        }
        let verdict = match self.run(wasm) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(
                    sha256 = %hex::encode(sha),
                    "governance: this node failed to run the conformance check (not a verdict on the plugin): {e:#}"
                );
                return Err(e);
            }
        };
        match &verdict {
            Ok(d) => {
                tracing::info!(plugin = %d.name, format = d.format, sha256 = %hex::encode(sha), "governance: proposed plugin passed the conformance check")
            }
            Err(why) => {
                tracing::warn!(sha256 = %hex::encode(sha), "governance: proposed plugin failed the conformance check: {why}")
            }
        }
        self.verdicts
            .lock()
            .expect("verdict cache lock")
            .insert(sha, verdict.clone());
        Ok(verdict)
    }

    fn run(&self, wasm: &[u8]) -> anyhow::Result<Verdict> {
        let plugin = match self.engine.load(wasm, "proposed plugin") {
            Ok(p) => p,
            Err(e) if e.is_host_failure() => return Err(e.into()),
            Err(e) => return Ok(Err(e.to_string())),
        };
        let report = check::check(&plugin, CHECK_KEYS)?;
        Ok(report.verdict().map(|()| plugin.description().clone()))
    }
}

/// What the governance rules need besides the transaction and the state.
pub struct GovContext<'a> {
    /// The height of the block the transaction runs in.
    pub height: u64,
    pub validators: &'a ValidatorSet,
    /// FinalizeBlock (log what happens), not CheckTx (a dry run).
    pub executing: bool,
}

type Read<'r> = dyn FnMut(&str) -> anyhow::Result<Option<String>> + 'r;

/// A registry record in state, parsed; `Err(_)` of the outer result is the
/// node failing to read its own state.
fn read_record<T>(
    read: &mut Read<'_>,
    key: &str,
    parse: fn(&str, &str) -> Result<T, registry::RecordError>,
) -> anyhow::Result<Result<Option<T>, TxError>> {
    Ok(match read(key)? {
        None => Ok(None),
        Some(stored) => parse(key, &stored)
            .map(Some)
            .map_err(|e| TxError::RegistryCorrupt(e.to_string())),
    })
}

/// The writes of a `Propose` by `proposer`, whose plugin (unpacked) is
/// `wasm` and the chain's verdict on it `verdict` (`execute::prepare`).
pub fn propose(
    proposal: &Proposal,
    wasm: &[u8],
    verdict: &Verdict,
    proposer: &[u8; 32],
    ctx: &GovContext<'_>,
    read: &mut Read<'_>,
) -> anyhow::Result<Result<Vec<(String, String)>, TxError>> {
    if ctx.validators.power(proposer) == 0 {
        return Ok(Err(TxError::NotValidator(hex::encode(proposer))));
    }
    let approved = match read_record(read, &format_key(proposal.format), FormatApproval::parse)? {
        Ok(a) => a,
        Err(e) => return Ok(Err(e)),
    };
    if let Some(a) = approved {
        return Ok(Err(TxError::FormatTaken(format!(
            "format {} is already approved (plugin {} {}, proposal {}); a new plugin needs a new format number",
            proposal.format, a.name, a.version, a.proposal
        ))));
    }
    let description = match verdict {
        Ok(d) => d.clone(),
        Err(why) => return Ok(Err(TxError::PluginRefused(why.clone()))),
    };
    if description.format != proposal.format {
        return Ok(Err(TxError::PluginRefused(format!(
            "the proposal is for format {}, but the plugin {} {} makes format {}",
            proposal.format, description.name, description.version, description.format
        ))));
    }
    let id = match read(&proposal_count_key())? {
        None => 1,
        Some(s) => match s.trim().parse::<u64>() {
            Ok(n) => n + 1,
            Err(_) => {
                return Ok(Err(TxError::RegistryCorrupt(format!(
                    "the proposal counter holds {s:?}"
                ))))
            }
        },
    };
    let sha = crate::plugin::sha256(wasm);
    let record = ProposalRecord {
        activation_delay: proposal.activation_delay,
        activation_height: 0,
        expires_height: ctx.height + proposal.expires_after,
        format: proposal.format,
        id,
        name: description.name.clone(),
        passed_height: 0,
        proposer: hex::encode(proposer),
        sha256: hex::encode(sha),
        status: STATUS_VOTING.into(),
        submitted_height: ctx.height,
        total_power: ctx.validators.total(),
        version: description.version.clone(),
        votes: 0,
        yes_power: 0,
    };
    let mut writes = vec![
        (proposal_count_key(), id.to_string()),
        (proposal_key(id), record.stored()),
    ];
    if read(&plugin_key(&sha))?.is_none() {
        let meta = PluginMeta {
            bytes: wasm.len() as u64,
            format: description.format,
            name: description.name,
            pieces: wasm.len().div_ceil(registry::PIECE_BYTES) as u64,
            version: description.version,
        };
        writes.extend(plugin_writes(&sha, wasm, &meta));
    }
    Ok(Ok(writes))
}

/// The writes of a `Vote` for proposal `id` by `voter`.
pub fn vote(
    id: u64,
    voter: &[u8; 32],
    ctx: &GovContext<'_>,
    read: &mut Read<'_>,
) -> anyhow::Result<Result<Vec<(String, String)>, TxError>> {
    let power = ctx.validators.power(voter);
    if power == 0 {
        return Ok(Err(TxError::NotValidator(hex::encode(voter))));
    }
    let refuse = |e: TxError| Ok(Err(e));
    let mut record = match read_record(read, &proposal_key(id), ProposalRecord::parse)? {
        Ok(Some(r)) => r,
        Ok(None) => {
            return refuse(TxError::NoSuchProposal(format!(
                "there is no proposal {id}; `statesnap gov status` lists them"
            )))
        }
        Err(e) => return Ok(Err(e)),
    };
    if record.status == STATUS_PASSED {
        return refuse(TxError::ProposalPassed(format!(
            "proposal {id} already passed at height {}; format {} activates at height {}",
            record.passed_height, record.format, record.activation_height
        )));
    }
    if ctx.height > record.expires_height {
        return refuse(TxError::ProposalExpired(format!(
            "proposal {id} expired at height {} without passing; propose again",
            record.expires_height
        )));
    }
    let key = vote_key(id, voter);
    if read(&key)?.is_some() {
        return refuse(TxError::AlreadyVoted(format!(
            "validator {} already voted for proposal {id}",
            hex::encode(voter)
        )));
    }
    record.votes += 1;
    record.yes_power += power;
    record.total_power = ctx.validators.total();
    let mut writes = vec![(key, power.to_string())];
    if passes(record.yes_power, record.total_power) {
        match read_record(read, &format_key(record.format), FormatApproval::parse)? {
            Ok(None) => {}
            Ok(Some(a)) => {
                return refuse(TxError::FormatTaken(format!(
                    "format {} was approved meanwhile by proposal {}; proposal {id} can no longer pass",
                    record.format, a.proposal
                )))
            }
            Err(e) => return Ok(Err(e)),
        }
        record.status = STATUS_PASSED.into();
        record.passed_height = ctx.height;
        record.activation_height = ctx.height + record.activation_delay;
        let approval = FormatApproval {
            activation_height: record.activation_height,
            name: record.name.clone(),
            proposal: id,
            sha256: record.sha256.clone(),
            version: record.version.clone(),
        };
        if ctx.executing {
            tracing::info!(
                proposal = id,
                format = record.format,
                plugin = %record.name,
                activation_height = record.activation_height,
                "governance: proposal passed"
            );
        }
        writes.push((format_key(record.format), approval.stored()));
    }
    writes.push((proposal_key(id), record.stored()));
    Ok(Ok(writes))
}

/// Every approved format in a state whose keys `treap` lists, by format number.
pub(crate) fn approved_formats(
    treap: &MerkleTreap,
    mut get: impl FnMut(&str) -> anyhow::Result<Option<String>>,
) -> anyhow::Result<Vec<(u32, FormatApproval)>> {
    let prefix = registry::formats_prefix();
    let mut out = Vec::new();
    for key in treap.keys_with_prefix(&prefix) {
        let Ok(format) = key[prefix.len()..].parse::<u32>() else {
            continue;
        };
        if let Some(stored) = get(key)? {
            out.push((format, FormatApproval::parse(key, &stored)?));
        }
    }
    Ok(out)
}

/// Most proposals `/gov` lists (the newest).
pub(crate) const STATUS_PROPOSALS: u64 = 100;

/// The `/gov` query's answer: validators, proposals (newest last) with their
/// status at `height`, and approved formats.
pub(crate) fn status_json(
    treap: &MerkleTreap,
    mut get: impl FnMut(&str) -> anyhow::Result<Option<String>>,
    height: u64,
) -> anyhow::Result<serde_json::Value> {
    use serde_json::json;
    let validators = ValidatorSet::read(treap, &mut get)?;
    let count = match get(&proposal_count_key())? {
        Some(s) => s.trim().parse::<u64>().unwrap_or(0),
        None => 0,
    };
    let mut proposals = Vec::new();
    for id in count.saturating_sub(STATUS_PROPOSALS) + 1..=count {
        let key = proposal_key(id);
        if let Some(stored) = get(&key)? {
            let record = ProposalRecord::parse(&key, &stored)?;
            let mut v = serde_json::to_value(&record)?;
            v["status"] = json!(record.status_at(height));
            proposals.push(v);
        }
    }
    let formats: Vec<_> = approved_formats(treap, &mut get)?
        .into_iter()
        .map(|(format, a)| {
            json!({"format": format, "name": a.name, "version": a.version, "sha256": a.sha256,
                   "proposal": a.proposal, "activation_height": a.activation_height,
                   "active": a.activation_height <= height})
        })
        .collect();
    Ok(json!({
        "height": height,
        "total_power": validators.total(),
        "validators": validators.powers,
        "proposals": proposals,
        "formats": formats,
    }))
}
