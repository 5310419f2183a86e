//! Applying one transaction to a state: the rules every node runs the same
//! way in CheckTx and FinalizeBlock.
//!
//! The transaction's own checks (signature, chain id, keys and values) are in
//! [`crate::chain::tx`]; this adds the one rule that needs the state: the
//! account's nonce, and the governance rules (`super::governance`). A
//! transaction either applies entirely or not at all.

use super::governance::{self, GovContext};
use crate::chain::tx::{self, Action, Op, TxError};

/// Keys written by a transaction, in ascending order; `None` deletes.
pub type Writes = Vec<(String, Option<String>)>;

/// Applies `bytes` on top of the state `read` shows, in a block whose
/// governance context is `gov`. `Ok(Err(_))` is a transaction the rules
/// refuse (its code goes to the block); `Err(_)` is the node failing to read
/// its own state, which must stop the node, not the transaction.
pub fn apply_tx(
    bytes: &[u8],
    chain_id: &str,
    gov: &GovContext<'_>,
    mut read: impl FnMut(&str) -> anyhow::Result<Option<String>>,
) -> anyhow::Result<Result<Writes, TxError>> {
    let tx = match tx::decode_and_verify(bytes).and_then(|tx| tx.validate(chain_id).map(|_| tx)) {
        Ok(tx) => tx,
        Err(e) => return Ok(Err(e)),
    };
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
        Action::Propose(p) => match governance::propose(p, &body.account, gov, &mut read)? {
            Ok(w) => w.into_iter().map(|(k, v)| (k, Some(v))).collect(),
            Err(e) => return Ok(Err(e)),
        },
        Action::Vote(id) => match governance::vote(*id, &body.account, gov, &mut read)? {
            Ok(w) => w.into_iter().map(|(k, v)| (k, Some(v))).collect(),
            Err(e) => return Ok(Err(e)),
        },
    };
    writes.push((nonce_key, Some(tx::nonce_stored(current + 1))));
    writes.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Ok(writes))
}
