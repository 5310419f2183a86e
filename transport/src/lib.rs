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
pub mod toml_file;
pub mod trust;

/// The runtime every transfer of this process runs its I/O on (the
/// restore's CPU work stays on the caller's thread). One for the process:
/// an HTTP client keeps idle connections in a pool, and a connection opened
/// on a runtime since dropped would be reused and never answer (a request
/// then waited for its 60 s timeout).
pub(crate) fn runtime() -> anyhow::Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime);
    }
    let built = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("statesnap-transfer")
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("starting the transfer runtime: {e}"))?;
    // A racing caller's runtime is dropped unused (outside any runtime).
    Ok(RUNTIME.get_or_init(|| built))
}
