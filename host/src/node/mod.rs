//! The ABCI node: the chain's state machine, its snapshots and state sync,
//! wired to CometBFT.

pub mod config;

pub use config::NodeConfig;
