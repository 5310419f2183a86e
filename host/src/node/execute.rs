//! Applying one transaction to a state: the rules every node runs the same
//! way in CheckTx and FinalizeBlock.
//!
//! The transaction's own checks (signature, chain id, keys and values) are in
//! [`crate::protocol::tx`]; this adds the one rule that needs the state: the
//! account's nonce, and the governance rules (`super::governance`). A
//! transaction either applies entirely or not at all.
//!
//! One piece of heavy work stays inside the lock: the upload that completes
//! a plugin proposed by hash runs the conformance check on the plugin as
//! state holds it (only [`apply`] can know it completes). It is once per
//! plugin per node: the verdict is cached by SHA-256.

use super::governance::{self, Conformance, GovContext, Verdict};
use crate::protocol::tx::{self, Action, Op, Tx, TxError};

/// Keys written by a transaction, in ascending order; `None` deletes.
pub type Writes = Vec<(String, Option<String>)>;

/// A transaction checked on its own, before any state is read or lock taken:
/// decoded, its signature verified, its stateless rules checked and, for a
/// proposal, its plugin unpacked once and its conformance verdict reached.
/// That is all the heavy work of a transaction, so the node does it outside
/// the chain lock ([`prepare`]) and [`apply`] only reads and writes state
/// (but for the upload that completes a plugin, module header).
pub struct Prepared {
    tx: Tx,
    /// A proposal's plugin wasm and the chain's verdict on it.
    plugin: Option<(Vec<u8>, Verdict)>,
}

/// Prepares `bytes` for a chain called `chain_id`. `Ok(Err(_))` is a
/// transaction the rules refuse; `Err(_)` is this host failing (its plugin
/// engine could not compile or run the proposed plugin): not a verdict, and
/// the caller must not answer for the chain with it.
pub fn prepare(bytes: &[u8], chain_id: &str, conformance: &Conformance) -> anyhow::Result<Result<Prepared, TxError>> {
    let tx = match tx::decode_and_verify(bytes).and_then(|tx| tx.validate(chain_id).map(|_| tx)) {
        Ok(tx) => tx,
        Err(e) => return Ok(Err(e)),
    };
    let plugin = match &tx.body().action {
        Action::Propose(p) => {
            let wasm = match p.plugin() {
                Ok(w) => w,
                Err(e) => return Ok(Err(e)),
            };
            let verdict = conformance.verdict(&wasm)?;
            Some((wasm, verdict))
        }
        _ => None,
    };
    Ok(Ok(Prepared { tx, plugin }))
}

/// Applies a prepared transaction on top of the state `read` shows, in a
/// block whose governance context is `gov`. `Ok(Err(_))` is a transaction
/// the rules refuse (its code goes to the block); `Err(_)` is the node
/// failing to read its own state, which must stop the node, not the
/// transaction.
pub(crate) fn apply(
    prepared: &Prepared,
    gov: &GovContext<'_>,
    mut read: impl FnMut(&str) -> anyhow::Result<Option<String>>,
) -> anyhow::Result<Result<Writes, TxError>> {
    let tx = &prepared.tx;
    let body = tx.body();
    let nonce_key = tx::nonce_key(&body.account);
    // A nonce the state holds in another form (a corrupt genesis, say) is the
    // same on every node, so refusing the transaction stays deterministic.
    let current = match tx::parse_nonce(read(&nonce_key)?.as_deref()) {
        Ok(n) => n,
        Err(e) => {
            return Ok(Err(TxError::InvalidValue {
                key: nonce_key,
                reason: e.to_string(),
            }))
        }
    };
    if let Err(e) = tx.check_nonce(current) {
        return Ok(Err(e));
    }
    let mut writes: Writes = match &body.action {
        Action::Patch(ops) => ops
            .iter()
            .map(|op| match op {
                Op::Set { key, stored } => (key.clone(), Some(stored.clone())),
                Op::Delete { key } => (key.clone(), None),
            })
            .collect(),
        Action::Propose(p) => {
            let (wasm, verdict) = prepared.plugin.as_ref().expect("a prepared proposal has its plugin");
            match governance::propose(p, wasm, verdict, &body.account, gov, &mut read)? {
                Ok(w) => w.into_iter().map(|(k, v)| (k, Some(v))).collect(),
                Err(e) => return Ok(Err(e)),
            }
        }
        Action::Vote(id) => match governance::vote(*id, &body.account, gov, &mut read)? {
            Ok(w) => w.into_iter().map(|(k, v)| (k, Some(v))).collect(),
            Err(e) => return Ok(Err(e)),
        },
        Action::ProposeHash(p) => match governance::propose_by_hash(p, &body.account, gov, &mut read)? {
            Ok(w) => w.into_iter().map(|(k, v)| (k, Some(v))).collect(),
            Err(e) => return Ok(Err(e)),
        },
        Action::Upload(u) => match governance::upload(u, gov, &mut read)? {
            Ok(w) => w.into_iter().map(|(k, v)| (k, Some(v))).collect(),
            Err(e) => return Ok(Err(e)),
        },
    };
    writes.push((nonce_key, Some(tx::nonce_stored(current + 1))));
    writes.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Ok(writes))
}
