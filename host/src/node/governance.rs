//! Governance of snapshot formats: what each governance transaction
//! (`Propose`, `Upload`, `Vote`) does to the registry in state
//! (`protocol::gov_records`), including the conformance check of a proposed
//! plugin.
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
//! * A plugin too large for one transaction is proposed by hash
//!   ([`propose_by_hash`]): the proposal names its SHA-256, size and the
//!   SHA-256 of each piece, and anyone then uploads the pieces
//!   ([`upload`]), each checked on arrival. The conformance check runs when
//!   the last piece arrives; the format is approved once the vote has
//!   passed and the code is complete, from that height plus the delay.
//! * Code in state that no approval uses is bounded and temporary: at most
//!   [`MAX_PENDING_PROPOSALS`] proposals and [`MAX_PENDING_BYTES`] of
//!   code, and [`sweep`] deletes the code of proposals that expire or are
//!   superseded at the end of every block.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::plugin::check::{self, Refusal};
use crate::plugin::{Description, PluginEngine};
use crate::protocol::gov_records::{
    self, format_key, passes, pending_code_key, plugin_key, plugin_piece_key, plugin_writes, proposal_count_key,
    proposal_key, upload_key, vote_key, FormatApproval, PendingCode, PluginMeta, ProposalRecord, UploadRecord,
    PIECE_BYTES, STATUS_EXPIRED, STATUS_PASSED, STATUS_SUPERSEDED, STATUS_VOTING,
};
use crate::protocol::tx::{HashProposal, Proposal, TxError, Upload};
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
        let prefix = gov_records::validators_prefix();
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
pub type Verdict = Result<Description, Refusal>;

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
            Err(e) => return Ok(Err(Refusal::Load(e))),
        };
        let report = check::check(&plugin, CHECK_KEYS)?;
        Ok(report.verdict().map(|()| plugin.description().clone()))
    }
}

/// Most proposals whose code is in state but not approved.
pub const MAX_PENDING_PROPOSALS: usize = 8;
/// Most bytes of plugin code in state that no approval uses (counting each
/// proposal by hash at its full size from the moment it is proposed).
pub const MAX_PENDING_BYTES: u64 = 64 << 20;

/// What the governance rules need besides the transaction and the state.
pub struct GovContext<'a> {
    /// The height of the block the transaction runs in.
    pub height: u64,
    pub validators: &'a ValidatorSet,
    /// FinalizeBlock (log what happens), not CheckTx (a dry run).
    pub executing: bool,
    /// The check a plugin uploaded by hash gets once its last piece arrives.
    pub conformance: &'a Conformance,
}

type Read<'r> = dyn FnMut(&str) -> anyhow::Result<Option<String>> + 'r;

/// A registry record in state, parsed; `Err(_)` of the outer result is the
/// node failing to read its own state.
fn read_record<T>(
    read: &mut Read<'_>,
    key: &str,
    parse: fn(&str, &str) -> Result<T, gov_records::RecordError>,
) -> anyhow::Result<Result<Option<T>, TxError>> {
    Ok(match read(key)? {
        None => Ok(None),
        Some(stored) => parse(key, &stored)
            .map(Some)
            .map_err(|e| TxError::RegistryCorrupt(e.to_string())),
    })
}

/// Proposal `id`'s record, or the refusal that it does not exist.
fn read_proposal(read: &mut Read<'_>, id: u64) -> anyhow::Result<Result<ProposalRecord, TxError>> {
    Ok(match read_record(read, &proposal_key(id), ProposalRecord::parse)? {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err(TxError::NoSuchProposal(format!(
            "there is no proposal {id}; `statesnap gov status` lists them"
        ))),
        Err(e) => Err(e),
    })
}

/// Refuses a proposal for `format` when that format is already approved.
fn format_free(read: &mut Read<'_>, format: u32) -> anyhow::Result<Result<(), TxError>> {
    Ok(match read_record(read, &format_key(format), FormatApproval::parse)? {
        Ok(None) => Ok(()),
        Ok(Some(a)) => Err(TxError::FormatTaken(format!(
            "format {format} is already approved (plugin {} {}, proposal {}); a new plugin needs a new format number",
            a.name, a.version, a.proposal
        ))),
        Err(e) => Err(e),
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
    if let Err(e) = format_free(read, proposal.format)? {
        return Ok(Err(e));
    }
    let description = match verdict {
        Ok(d) => d.clone(),
        Err(why) => return Ok(Err(TxError::PluginRefused(why.to_string()))),
    };
    if description.format != proposal.format {
        return Ok(Err(TxError::PluginRefused(format!(
            "the proposal is for format {}, but the plugin {} {} makes format {}",
            proposal.format, description.name, description.version, description.format
        ))));
    }
    let sha = crate::plugin::sha256(wasm);
    let opening = Opening {
        format: proposal.format,
        sha256: &sha,
        bytes: wasm.len() as u64,
        name: &description.name,
        version: &description.version,
        activation_delay: proposal.activation_delay,
        expires_after: proposal.expires_after,
    };
    let (_, mut writes) = match open_proposal(&opening, proposer, ctx, read)? {
        Ok(o) => o,
        Err(e) => return Ok(Err(e)),
    };
    if read(&plugin_key(&sha))?.is_none() {
        let meta = PluginMeta {
            bytes: wasm.len() as u64,
            format: description.format,
            name: description.name,
            pieces: gov_records::storage_pieces(wasm.len() as u64),
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
    let mut record = match read_proposal(read, id)? {
        Ok(r) => r,
        Err(e) => return Ok(Err(e)),
    };
    if record.status == STATUS_PASSED {
        return refuse(TxError::ProposalPassed(format!(
            "proposal {id} already passed at height {}; format {} activates at height {}",
            record.passed_height, record.format, record.activation_height
        )));
    }
    if record.status == STATUS_SUPERSEDED {
        return refuse(TxError::FormatTaken(format!(
            "format {} was approved by another proposal; proposal {id} can no longer pass",
            record.format
        )));
    }
    if ctx.height > record.expires_height || record.status == STATUS_EXPIRED {
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
        let uploads = match read_record(read, &upload_key(id), UploadRecord::parse)? {
            Ok(u) => u,
            Err(e) => return Ok(Err(e)),
        };
        if uploads.is_some_and(|u| !u.complete) {
            // Approved once the last piece arrives (`upload`).
            if ctx.executing {
                tracing::info!(
                    proposal = id,
                    format = record.format,
                    "governance: proposal passed; its code is not complete yet"
                );
            }
        } else {
            match approve(&mut record, ctx, read)? {
                Ok(w) => writes.extend(w),
                Err(e) => return Ok(Err(e)),
            }
        }
    }
    writes.push((proposal_key(id), record.stored()));
    Ok(Ok(writes))
}

/// The writes approving `record`'s format from `ctx.height` plus its delay
/// (its vote passed and its code is complete), and its leaving the pending list.
fn approve(
    record: &mut ProposalRecord,
    ctx: &GovContext<'_>,
    read: &mut Read<'_>,
) -> anyhow::Result<Result<Vec<(String, String)>, TxError>> {
    record.activation_height = ctx.height + record.activation_delay;
    let approval = FormatApproval {
        activation_height: record.activation_height,
        name: record.name.clone(),
        proposal: record.id,
        sha256: record.sha256.clone(),
        version: record.version.clone(),
    };
    if ctx.executing {
        tracing::info!(
            proposal = record.id,
            format = record.format,
            plugin = %record.name,
            activation_height = record.activation_height,
            "governance: format approved"
        );
    }
    let mut pending = match read_pending(read)? {
        Ok(p) => p,
        Err(e) => return Ok(Err(e)),
    };
    pending.retain(|p| p.id != record.id);
    Ok(Ok(vec![
        (format_key(record.format), approval.stored()),
        (pending_code_key(), gov_records::pending_stored(&pending)),
    ]))
}

/// The pending-code list in state.
fn read_pending(read: &mut Read<'_>) -> anyhow::Result<Result<Vec<PendingCode>, TxError>> {
    let key = pending_code_key();
    let stored = read(&key)?;
    Ok(gov_records::parse_pending(&key, stored.as_deref()).map_err(|e| TxError::RegistryCorrupt(e.to_string())))
}

/// The pending list's write with proposal `id` (code of `bytes`) added, or
/// the refusal when that would pass a limit.
fn admit_pending(read: &mut Read<'_>, id: u64, bytes: u64) -> anyhow::Result<Result<(String, String), TxError>> {
    let mut pending = match read_pending(read)? {
        Ok(p) => p,
        Err(e) => return Ok(Err(e)),
    };
    let held: u64 = pending.iter().map(|p| p.bytes).sum();
    if pending.len() >= MAX_PENDING_PROPOSALS {
        return Ok(Err(TxError::PendingLimit(format!(
            "{} proposals already hold code in state that is not approved (at most {MAX_PENDING_PROPOSALS}); \
             propose again once one passes or expires",
            pending.len()
        ))));
    }
    if held + bytes > MAX_PENDING_BYTES {
        return Ok(Err(TxError::PendingLimit(format!(
            "proposals already hold {held} bytes of code in state that is not approved, and this plugin's {bytes} \
             would pass the limit of {MAX_PENDING_BYTES}; propose again once one passes or expires"
        ))));
    }
    pending.push(PendingCode { bytes, id });
    Ok(Ok((pending_code_key(), gov_records::pending_stored(&pending))))
}

/// Registry keys and the values a rule writes to them.
type RegistryWrites = Vec<(String, String)>;

/// What a new proposal records about its plugin and its schedule.
struct Opening<'a> {
    format: u32,
    sha256: &'a [u8; 32],
    /// The plugin's length: what it holds in state, or will.
    bytes: u64,
    name: &'a str,
    version: &'a str,
    activation_delay: u64,
    expires_after: u64,
}

/// The writes that open a proposal by `proposer` (its id, its record, its
/// place in the pending list), or the refusal when the pending limits are
/// reached. Returns the new id too.
fn open_proposal(
    o: &Opening<'_>,
    proposer: &[u8; 32],
    ctx: &GovContext<'_>,
    read: &mut Read<'_>,
) -> anyhow::Result<Result<(u64, RegistryWrites), TxError>> {
    let id = match next_proposal_id(read)? {
        Ok(id) => id,
        Err(e) => return Ok(Err(e)),
    };
    let pending = match admit_pending(read, id, o.bytes)? {
        Ok(w) => w,
        Err(e) => return Ok(Err(e)),
    };
    let record = ProposalRecord {
        activation_delay: o.activation_delay,
        activation_height: 0,
        expires_height: ctx.height + o.expires_after,
        format: o.format,
        id,
        name: o.name.to_string(),
        passed_height: 0,
        proposer: hex::encode(proposer),
        sha256: hex::encode(o.sha256),
        status: STATUS_VOTING.into(),
        submitted_height: ctx.height,
        total_power: ctx.validators.total(),
        version: o.version.to_string(),
        votes: 0,
        yes_power: 0,
    };
    Ok(Ok((
        id,
        vec![
            (proposal_count_key(), id.to_string()),
            (proposal_key(id), record.stored()),
            pending,
        ],
    )))
}

/// The next proposal id.
fn next_proposal_id(read: &mut Read<'_>) -> anyhow::Result<Result<u64, TxError>> {
    Ok(match read(&proposal_count_key())? {
        None => Ok(1),
        Some(s) => s
            .trim()
            .parse::<u64>()
            .map(|n| n + 1)
            .map_err(|_| TxError::RegistryCorrupt(format!("the proposal counter holds {s:?}"))),
    })
}

/// The writes of a `ProposeHash` by `proposer`: a proposal for the plugin
/// `p` names, whose bytes are then uploaded ([`upload`]).
pub fn propose_by_hash(
    p: &HashProposal,
    proposer: &[u8; 32],
    ctx: &GovContext<'_>,
    read: &mut Read<'_>,
) -> anyhow::Result<Result<Vec<(String, String)>, TxError>> {
    if ctx.validators.power(proposer) == 0 {
        return Ok(Err(TxError::NotValidator(hex::encode(proposer))));
    }
    if let Err(e) = format_free(read, p.format)? {
        return Ok(Err(e));
    }
    let opening = Opening {
        format: p.format,
        sha256: &p.sha256,
        bytes: p.bytes,
        // Known once the code is complete and has described itself.
        name: "",
        version: "",
        activation_delay: p.activation_delay,
        expires_after: p.expires_after,
    };
    let (id, mut writes) = match open_proposal(&opening, proposer, ctx, read)? {
        Ok(o) => o,
        Err(e) => return Ok(Err(e)),
    };
    let uploads = UploadRecord {
        bytes: p.bytes,
        complete: false,
        piece_bytes: p.piece_bytes,
        piece_sha256: p.piece_sha256.iter().map(hex::encode).collect(),
        received: "0".repeat(p.piece_sha256.len()),
    };
    writes.push((upload_key(id), uploads.stored()));
    Ok(Ok(writes))
}

/// The writes of an `Upload` (from any account): piece `u.index` of the
/// plugin proposal `u.proposal` names by hash. The last piece completes the
/// code: the whole plugin must hash to the proposal's SHA-256 and pass the
/// conformance check (run here, once per plugin per node: its verdict is
/// cached), and if the vote has passed the format is approved.
pub fn upload(
    u: &Upload,
    ctx: &GovContext<'_>,
    read: &mut Read<'_>,
) -> anyhow::Result<Result<Vec<(String, String)>, TxError>> {
    let id = u.proposal;
    let refuse = |e: TxError| Ok(Err(e));
    let mut record = match read_proposal(read, id)? {
        Ok(r) => r,
        Err(e) => return Ok(Err(e)),
    };
    let ukey = upload_key(id);
    let mut uploads = match read_record(read, &ukey, UploadRecord::parse)? {
        Ok(Some(r)) => r,
        Ok(None) if record.status == STATUS_VOTING || record.status == STATUS_PASSED => {
            return refuse(TxError::UploadRefused(format!(
                "proposal {id} carried its plugin itself; it takes no uploads"
            )))
        }
        Ok(None) => {
            return refuse(TxError::ProposalExpired(format!(
                "proposal {id} is {}; its code was removed from state",
                record.status
            )))
        }
        Err(e) => return Ok(Err(e)),
    };
    if uploads.complete {
        return refuse(TxError::UploadRefused(format!(
            "the plugin of proposal {id} is complete; it takes no more uploads"
        )));
    }
    if ctx.height > record.expires_height {
        return refuse(TxError::ProposalExpired(format!(
            "proposal {id} expired at height {} before its code was complete; propose again",
            record.expires_height
        )));
    }
    let pieces = uploads.piece_sha256.len();
    let index = u.index as usize;
    if index >= pieces {
        return refuse(TxError::UploadRefused(format!(
            "proposal {id}'s plugin has pieces 0 to {}; there is no piece {index}",
            pieces - 1
        )));
    }
    if uploads.received.as_bytes()[index] == b'1' {
        return refuse(TxError::UploadRefused(format!(
            "piece {index} of proposal {id} already arrived ({} of {pieces} have)",
            uploads.arrived()
        )));
    }
    let got = hex::encode(crate::plugin::sha256(&u.bytes));
    if got != uploads.piece_sha256[index] {
        return refuse(TxError::UploadMismatch(format!(
            "piece {index} of proposal {id} ({} bytes) hashes to {got}, not the approved {}: \
             upload the bytes of the plugin the proposal names",
            u.bytes.len(),
            uploads.piece_sha256[index]
        )));
    }
    let sha = match record_sha(&record) {
        Ok(s) => s,
        Err(e) => return Ok(Err(e)),
    };
    // Upload pieces are a multiple of the storage piece, so this one's
    // storage pieces start here.
    let first = index as u64 * u64::from(uploads.piece_bytes) / PIECE_BYTES as u64;
    let mut writes: Vec<(String, String)> = u
        .bytes
        .chunks(PIECE_BYTES)
        .enumerate()
        .map(|(j, piece)| {
            (
                plugin_piece_key(&sha, first + j as u64),
                gov_records::piece_stored(piece),
            )
        })
        .collect();
    let mut received = uploads.received.into_bytes();
    received[index] = b'1';
    uploads.received = String::from_utf8(received).expect("0s and 1s");
    if uploads.arrived() == pieces {
        match complete(&mut record, &uploads, &sha, &writes, ctx, read)? {
            Ok(w) => writes.extend(w),
            Err(e) => return Ok(Err(e)),
        }
        uploads.complete = true;
    }
    writes.push((ukey, uploads.stored()));
    writes.push((proposal_key(id), record.stored()));
    Ok(Ok(writes))
}

fn record_sha(record: &ProposalRecord) -> Result<[u8; 32], TxError> {
    let mut sha = [0u8; 32];
    hex::decode_to_slice(&record.sha256, &mut sha)
        .map_err(|_| TxError::RegistryCorrupt(format!("proposal {} has SHA-256 {:?}", record.id, record.sha256)))?;
    Ok(sha)
}

/// The last piece arrived: reassembles the plugin (the pieces in state and
/// `new`, this upload's), checks it and, if the vote passed, approves it.
fn complete(
    record: &mut ProposalRecord,
    uploads: &UploadRecord,
    sha: &[u8; 32],
    new: &[(String, String)],
    ctx: &GovContext<'_>,
    read: &mut Read<'_>,
) -> anyhow::Result<Result<Vec<(String, String)>, TxError>> {
    let id = record.id;
    let mut wasm = Vec::with_capacity(uploads.bytes as usize);
    for i in 0..gov_records::storage_pieces(uploads.bytes) {
        let key = plugin_piece_key(sha, i);
        let stored = match new.iter().find(|(k, _)| *k == key) {
            Some((_, v)) => Some(v.clone()),
            None => read(&key)?,
        };
        let Some(stored) = stored else {
            return Ok(Err(TxError::RegistryCorrupt(format!(
                "every piece of proposal {id} arrived, but {key} is not in state"
            ))));
        };
        match gov_records::piece_bytes(&key, &stored) {
            Ok(b) => wasm.extend(b),
            Err(e) => return Ok(Err(TxError::RegistryCorrupt(e.to_string()))),
        }
    }
    let got = crate::plugin::sha256(&wasm);
    if &got != sha {
        return Ok(Err(TxError::UploadMismatch(format!(
            "every piece of proposal {id} arrived as the proposal named it, but together they hash to {}, \
             not the proposed {}: the proposal's piece hashes are wrong and it cannot complete; propose again",
            hex::encode(got),
            record.sha256
        ))));
    }
    let description = match ctx.conformance.verdict(&wasm)? {
        Ok(d) => d,
        Err(why) => return Ok(Err(TxError::PluginRefused(why.to_string()))),
    };
    if description.format != record.format {
        return Ok(Err(TxError::PluginRefused(format!(
            "proposal {id} is for format {}, but the uploaded plugin {} {} makes format {}",
            record.format, description.name, description.version, description.format
        ))));
    }
    record.name = description.name.clone();
    record.version = description.version.clone();
    let mut writes = Vec::new();
    if read(&plugin_key(sha))?.is_none() {
        let meta = PluginMeta {
            bytes: uploads.bytes,
            format: description.format,
            name: description.name,
            pieces: gov_records::storage_pieces(uploads.bytes),
            version: description.version,
        };
        writes.push((plugin_key(sha), meta.stored()));
    }
    if ctx.executing {
        tracing::info!(proposal = id, plugin = %record.name, bytes = uploads.bytes, "governance: uploaded plugin complete and checked");
    }
    if record.status == STATUS_PASSED {
        match read_record(read, &format_key(record.format), FormatApproval::parse)? {
            Ok(None) => {}
            Ok(Some(a)) => {
                return Ok(Err(TxError::FormatTaken(format!(
                    "format {} was approved meanwhile by proposal {}; proposal {id} can no longer complete",
                    record.format, a.proposal
                ))))
            }
            Err(e) => return Ok(Err(e)),
        }
        match approve(record, ctx, read)? {
            Ok(w) => writes.extend(w),
            Err(e) => return Ok(Err(e)),
        }
    }
    Ok(Ok(writes))
}

/// End of block `height`: for every proposal with code pending, if it
/// expired or another proposal got its format, marks it so and deletes
/// its code (unless an approval or another pending proposal uses the same
/// plugin). Deletions are `None`. A malformed registry is left alone (and
/// logged): the same on every node.
pub fn sweep(height: u64, read: &mut Read<'_>) -> anyhow::Result<Vec<(String, Option<String>)>> {
    let pending = match read_pending(read)? {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("governance: not sweeping pending code: {e}");
            return Ok(Vec::new());
        }
    };
    let mut keep = Vec::new();
    let mut gone = Vec::new();
    for entry in pending {
        let record = match read_record(read, &proposal_key(entry.id), ProposalRecord::parse)? {
            Ok(Some(r)) => r,
            _ => {
                keep.push((entry, None));
                continue;
            }
        };
        let approval = read_record(read, &format_key(record.format), FormatApproval::parse)?
            .ok()
            .flatten();
        let status = match &approval {
            Some(a) if a.proposal == record.id => None, // approved: leaves the list, keeps its code
            Some(_) => Some(STATUS_SUPERSEDED),
            None if height > record.expires_height => Some(STATUS_EXPIRED),
            None => {
                keep.push((entry, Some(record)));
                continue;
            }
        };
        gone.push((entry, record, status, approval));
    }
    if gone.is_empty() {
        return Ok(Vec::new());
    }
    let mut writes: Vec<(String, Option<String>)> = Vec::new();
    let kept_shas: Vec<String> = keep
        .iter()
        .filter_map(|(_, r)| r.as_ref().map(|r| r.sha256.clone()))
        .collect();
    for (entry, mut record, status, approval) in gone {
        let Some(status) = status else { continue };
        record.status = status.into();
        tracing::info!(
            proposal = record.id,
            status,
            "governance: removing the code of a proposal that {status}"
        );
        let used = approval.is_some_and(|a| a.sha256 == record.sha256) || kept_shas.contains(&record.sha256);
        if !used {
            if let Ok(sha) = record_sha(&record) {
                let mut keys = vec![plugin_key(&sha)];
                keys.extend((0..gov_records::storage_pieces(entry.bytes)).map(|i| plugin_piece_key(&sha, i)));
                for key in keys {
                    if read(&key)?.is_some() {
                        writes.push((key, None));
                    }
                }
            }
        }
        if read(&upload_key(record.id))?.is_some() {
            writes.push((upload_key(record.id), None));
        }
        writes.push((proposal_key(record.id), Some(record.stored())));
    }
    let kept: Vec<PendingCode> = keep.into_iter().map(|(e, _)| e).collect();
    writes.push((pending_code_key(), Some(gov_records::pending_stored(&kept))));
    Ok(writes)
}

/// Every approved format in a state whose keys `treap` lists, by format number.
pub(crate) fn approved_formats(
    treap: &MerkleTreap,
    mut get: impl FnMut(&str) -> anyhow::Result<Option<String>>,
) -> anyhow::Result<Vec<(u32, FormatApproval)>> {
    let prefix = gov_records::formats_prefix();
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
            let ukey = upload_key(id);
            if let Some(stored) = get(&ukey)? {
                let u = UploadRecord::parse(&ukey, &stored)?;
                v["upload"] = json!({"bytes": u.bytes, "piece_bytes": u.piece_bytes, "pieces": u.piece_sha256.len(),
                                     "arrived": u.arrived(), "received": u.received, "complete": u.complete});
            }
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
    let pending_key = pending_code_key();
    let pending = gov_records::parse_pending(&pending_key, get(&pending_key)?.as_deref())?;
    Ok(json!({
        "height": height,
        "pending_code": {"proposals": pending.iter().map(|p| p.id).collect::<Vec<_>>(),
                         "bytes": pending.iter().map(|p| p.bytes).sum::<u64>(),
                         "max_proposals": MAX_PENDING_PROPOSALS, "max_bytes": MAX_PENDING_BYTES},
        "total_power": validators.total(),
        "validators": validators.powers,
        "proposals": proposals,
        "formats": formats,
    }))
}
