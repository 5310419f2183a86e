//! The chain's transactions and the tools that make them: the signed
//! state-patch format and its stateless checks, account key files, and a load
//! generator.

pub mod keys;
pub mod load;
pub mod registry;
pub mod tx;
