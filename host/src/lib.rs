//! statesnap: CometBFT state sync for Xian-layout state, with snapshot formats
//! defined by sandboxed WebAssembly plugins. This crate is the engine and the
//! node; the `statesnap` binary (`cli/`) and the benchmarks, demos and local
//! test networks (`harness/`) are built on it.
//!
//! * [`store`]: the state store trait, Xian's LMDB and HDF5 layouts, stored
//!   values and the `xian-state-root-v2` state root;
//! * [`plugin`]: the wasmtime runtime that runs format plugins under hard limits;
//! * [`snapshot`]: manifests, and creating, verifying and restoring snapshots;
//! * [`protocol`]: the chain's transactions, key files and governance records;
//! * [`node`]: the ABCI application, and [`abci`] its protocol layer;
//! * [`proxy`]: statesnap in front of another ABCI app (Xian's node).

pub mod abci;
mod durable;
pub mod node;
pub mod plugin;
pub mod protocol;
pub mod proxy;
pub mod snapshot;
pub mod store;
