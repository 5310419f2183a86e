//! The chain's transactions: the signed state-patch format and its stateless
//! checks, account key files, and the governance registry in state.

pub mod keys;
pub mod registry;
pub mod tx;
