//! What statesnap is measured and shown with, kept out of the engine and run
//! by the `statesnap` binary (`cli/`).
//!
//! It holds the benchmarks (`bench`, `bench_node`, `bench_network`, and
//! `bench_xian` for Xian's real node), the
//! demos (`bench`, `demo_network`), local CometBFT test networks (`testnet`,
//! with `node_usage` and the block-sync `fallback`), the CometBFT RPC client
//! (`rpc`), the transaction load generator (`load`), progress bars
//! (`progress`), and the real servers the transport tests fetch from
//! (`object_server`: SeaweedFS's S3 gateway and a static HTTP mirror with
//! fault knobs).

pub mod bench;
pub mod bench_join;
pub mod bench_network;
pub mod bench_node;
pub mod bench_transport;
pub mod bench_xian;
pub mod demo_network;
pub mod fallback;
pub mod load;
pub mod node_usage;
pub mod object_server;
pub mod progress;
pub mod rpc;
pub mod testnet;
pub mod xian;
