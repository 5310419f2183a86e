//! What every node of the chain must read and write alike besides the state's
//! layouts: signed state-patch transactions (`tx`), the account key files that
//! sign them (`account_key`) and governance's records in state (`gov_records`).

pub mod account_key;
pub mod gov_records;
pub mod tx;
