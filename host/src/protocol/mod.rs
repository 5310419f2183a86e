//! The chain's transactions: the signed state-patch format and its stateless
//! checks, account key files, and the governance registry in state.

pub mod account_key;
pub mod gov_records;
pub mod tx;
