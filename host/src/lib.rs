//! statesnap: CometBFT state sync for Xian-layout state, with snapshot formats
//! defined by sandboxed WebAssembly plugins.
//!
//! * [`store`]: the state store trait, Xian's HDF5 layout, stored values and
//!   the `xian-state-root-v2` state root;
//! * [`plugin`]: the wasmtime runtime that runs format plugins under hard limits;
//! * [`snapshot`]: manifests, and creating, verifying and restoring snapshots.

pub mod abci;
pub mod bench;
pub mod bench_network;
pub mod bench_node;
pub mod chain;
pub mod demo_network;
mod durable;
pub mod node;
pub mod plugin;
pub mod progress;
pub mod rpc;
pub mod snapshot;
pub mod store;
pub mod testnet;
