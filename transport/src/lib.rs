//! statesnap snapshots over any transport: published to object storage,
//! HTTP servers and directories ([`publish`]), restored or checked from
//! them with chunks fetched in parallel from mirrors ([`fetch`]), with the
//! app hash taken from CometBFT's light client ([`trust`]) and CometBFT
//! bootstrapped at the snapshot's height ([`bootstrap`]).
//!
//! Every byte fetched is untrusted: a chunk is checked against the
//! manifest's SHA-256 on arrival and by the host's [`RestoreSession`]
//! (range proof, root against the trusted app hash) before it is written.
//!
//! [`RestoreSession`]: statesnap::snapshot::RestoreSession

pub mod bootstrap;
pub mod fetch;
pub mod index;
pub mod join;
pub mod location;
pub mod objects;
pub mod publish;
pub mod publisher;
pub mod trust;

/// The runtime of one transfer: I/O only (the restore's CPU work stays on
/// the caller's thread).
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("statesnap-transfer")
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("starting the transfer runtime: {e}"))
}
