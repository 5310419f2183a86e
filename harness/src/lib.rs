//! What statesnap is measured and shown with, kept out of the engine: the
//! benchmarks (`bench`, `bench_node`, `bench_network`), the demos, local
//! CometBFT test networks (`testnet`), the CometBFT RPC client (`rpc`), the
//! transaction load generator (`load`) and progress bars. The `statesnap`
//! binary (`cli/`) runs them.

pub mod bench;
pub mod bench_network;
pub mod bench_node;
pub mod demo_network;
pub mod fallback;
pub mod load;
pub mod node_usage;
pub mod progress;
pub mod rpc;
pub mod testnet;
