//! Prometheus metrics of a node, served as text on `GET /metrics`.
//!
//! Names (OpenMetrics adds `_total` to counters):
//!
//! | metric | what |
//! | --- | --- |
//! | `statesnap_height` | last committed height |
//! | `statesnap_state_keys` | consensus keys in the state |
//! | `statesnap_block_seconds` | FinalizeBlock + Commit time per block (histogram) |
//! | `statesnap_txs_applied_total`, `statesnap_txs_refused_total` | transactions in blocks |
//! | `statesnap_snapshots_created_total`, `statesnap_snapshots_failed_total` | background snapshots |
//! | `statesnap_snapshots_published_total`, `statesnap_snapshot_publish_failures_total` | publishing to `snapshot_publish` |
//! | `statesnap_snapshot_jobs_panicked_total` | snapshot jobs that panicked (also counted as failed) |
//! | `statesnap_snapshot_creation_seconds` | time to build one (histogram) |
//! | `statesnap_snapshot_last_height` | height of the newest snapshot made |
//! | `statesnap_chunks_served_total` | chunks handed to peers (LoadSnapshotChunk) |
//! | `statesnap_restore_chunks_applied`, `statesnap_restore_chunks_total`, `statesnap_restore_entries`, `statesnap_restore_bytes` | progress of the restore in flight |
//! | `statesnap_restore_entries_written_total` | entries that passed their chunk's range proof and went to a staging home, over all restores |
//! | `statesnap_restore_seconds` | time from accepting a snapshot to its verified state |
//! | `statesnap_restore_started_unixtime` | when the restore in flight (or the last) accepted its snapshot, seconds since 1970 |
//! | `statesnap_restore_apply_seconds` | of its time, what ApplySnapshotChunk took on CometBFT's ABCI connection (the rest is waiting for chunks) |
//! | `statesnap_restored_snapshot_height` | height this node state-synced to (0: never) |
//! | `statesnap_rejected_chunks_total`, `statesnap_rejected_senders_total`, `statesnap_rejected_snapshots_total` | what state sync refused |
//! | `statesnap_forged_chunks_total` | chunks that matched their manifest but failed their range proof (forged snapshots) |
//! | `statesnap_plugin_fuel_used_total` | wasm fuel spent by format plugins |
//! | `statesnap_snapshot_last_format` | format of the newest snapshot made (the active format) |
//! | `statesnap_approved_formats` | formats approved by governance in the state |
//! | `statesnap_shipped_plugins_loaded_total` | approved plugins loaded from chunk 0 of a snapshot |
//! | `statesnap_refused_plugins_total` | shipped plugins refused before running (approval not proven) |

use std::sync::Arc;

use anyhow::Context;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Every metric of a node.
pub struct Metrics {
    registry: Registry,
    pub height: Gauge,
    pub state_keys: Gauge,
    pub block_seconds: Histogram,
    pub txs_applied: Counter,
    pub txs_refused: Counter,
    pub snapshots_created: Counter,
    pub snapshots_failed: Counter,
    pub snapshots_published: Counter,
    pub snapshot_publish_failures: Counter,
    pub snapshot_jobs_panicked: Counter,
    pub snapshot_seconds: Histogram,
    pub snapshot_last_height: Gauge,
    pub chunks_served: Counter,
    pub restore_chunks_applied: Gauge,
    pub restore_chunks_total: Gauge,
    pub restore_entries: Gauge,
    pub restore_bytes: Gauge,
    pub restore_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub restore_started_unixtime: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub restore_apply_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub restored_snapshot_height: Gauge,
    pub rejected_chunks: Counter,
    pub rejected_senders: Counter,
    pub rejected_snapshots: Counter,
    pub forged_chunks: Counter,
    pub restore_entries_written: Counter,
    pub plugin_fuel_used: Counter,
    pub snapshot_last_format: Gauge,
    pub approved_formats: Gauge,
    pub shipped_plugins_loaded: Counter,
    pub refused_plugins: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("statesnap");
        let m = Metrics {
            height: Gauge::default(),
            state_keys: Gauge::default(),
            block_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            txs_applied: Counter::default(),
            txs_refused: Counter::default(),
            snapshots_created: Counter::default(),
            snapshots_failed: Counter::default(),
            snapshots_published: Counter::default(),
            snapshot_publish_failures: Counter::default(),
            snapshot_jobs_panicked: Counter::default(),
            snapshot_seconds: Histogram::new(exponential_buckets(0.05, 2.0, 16)),
            snapshot_last_height: Gauge::default(),
            chunks_served: Counter::default(),
            restore_chunks_applied: Gauge::default(),
            restore_chunks_total: Gauge::default(),
            restore_entries: Gauge::default(),
            restore_bytes: Gauge::default(),
            restore_seconds: Gauge::default(),
            restore_started_unixtime: Gauge::default(),
            restore_apply_seconds: Gauge::default(),
            restored_snapshot_height: Gauge::default(),
            rejected_chunks: Counter::default(),
            rejected_senders: Counter::default(),
            rejected_snapshots: Counter::default(),
            forged_chunks: Counter::default(),
            restore_entries_written: Counter::default(),
            plugin_fuel_used: Counter::default(),
            snapshot_last_format: Gauge::default(),
            approved_formats: Gauge::default(),
            shipped_plugins_loaded: Counter::default(),
            refused_plugins: Counter::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register("height", "Last committed height", m.height.clone());
        r.register("state_keys", "Consensus keys in the state", m.state_keys.clone());
        r.register(
            "block_seconds",
            "FinalizeBlock plus Commit time per block",
            m.block_seconds.clone(),
        );
        r.register("txs_applied", "Transactions applied in blocks", m.txs_applied.clone());
        r.register("txs_refused", "Transactions refused in blocks", m.txs_refused.clone());
        r.register("snapshots_created", "Snapshots created", m.snapshots_created.clone());
        r.register(
            "snapshots_failed",
            "Snapshot creations that failed",
            m.snapshots_failed.clone(),
        );
        r.register(
            "snapshots_published",
            "Snapshots published to snapshot_publish",
            m.snapshots_published.clone(),
        );
        r.register(
            "snapshot_publish_failures",
            "Attempts to publish a snapshot that failed (retried with back-off)",
            m.snapshot_publish_failures.clone(),
        );
        r.register(
            "snapshot_jobs_panicked",
            "Background snapshot jobs that panicked (logged, their output removed; the next interval runs)",
            m.snapshot_jobs_panicked.clone(),
        );
        r.register(
            "snapshot_creation_seconds",
            "Time to create a snapshot",
            m.snapshot_seconds.clone(),
        );
        r.register(
            "snapshot_last_height",
            "Height of the newest snapshot",
            m.snapshot_last_height.clone(),
        );
        r.register(
            "chunks_served",
            "Snapshot chunks served to peers",
            m.chunks_served.clone(),
        );
        r.register(
            "restore_chunks_applied",
            "Chunks applied in the restore in flight",
            m.restore_chunks_applied.clone(),
        );
        r.register(
            "restore_chunks_total",
            "Chunks of the snapshot being restored",
            m.restore_chunks_total.clone(),
        );
        r.register(
            "restore_entries",
            "Entries restored so far in the restore in flight",
            m.restore_entries.clone(),
        );
        r.register(
            "restore_bytes",
            "Chunk bytes applied in the restore in flight",
            m.restore_bytes.clone(),
        );
        r.register(
            "restore_seconds",
            "Time from accepting a snapshot to its verified state (the last restore)",
            m.restore_seconds.clone(),
        );
        r.register(
            "restore_started_unixtime",
            "When the restore in flight (or the last) accepted its snapshot, seconds since 1970",
            m.restore_started_unixtime.clone(),
        );
        r.register(
            "restore_apply_seconds",
            "Time the restore in flight (or the last) spent in ApplySnapshotChunk",
            m.restore_apply_seconds.clone(),
        );
        r.register(
            "restored_snapshot_height",
            "Height this node restored by state sync (0: never)",
            m.restored_snapshot_height.clone(),
        );
        r.register(
            "rejected_chunks",
            "Snapshot chunks refused (wrong hash)",
            m.rejected_chunks.clone(),
        );
        r.register(
            "rejected_senders",
            "Peers rejected for sending bad chunks",
            m.rejected_senders.clone(),
        );
        r.register("rejected_snapshots", "Snapshots refused", m.rejected_snapshots.clone());
        r.register(
            "forged_chunks",
            "Chunks that matched their manifest but failed their range proof",
            m.forged_chunks.clone(),
        );
        r.register(
            "restore_entries_written",
            "Entries that passed their chunk's range proof and went to a staging home",
            m.restore_entries_written.clone(),
        );
        r.register(
            "plugin_fuel_used",
            "Wasm fuel spent by format plugins",
            m.plugin_fuel_used.clone(),
        );
        r.register(
            "snapshot_last_format",
            "Format of the newest snapshot made",
            m.snapshot_last_format.clone(),
        );
        r.register(
            "approved_formats",
            "Snapshot formats approved by governance in the state",
            m.approved_formats.clone(),
        );
        r.register(
            "shipped_plugins_loaded",
            "Approved plugins loaded from chunk 0 of a snapshot",
            m.shipped_plugins_loaded.clone(),
        );
        r.register(
            "refused_plugins",
            "Shipped plugins refused before running: their approval was not proven",
            m.refused_plugins.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The metrics in Prometheus (OpenMetrics) text.
    /// Counts a snapshot a background job made, and logs it.
    pub(crate) fn snapshot_created(&self, report: &crate::snapshot::CreateReport) {
        let m = &report.manifest;
        self.snapshots_created.inc();
        self.snapshot_seconds.observe(report.seconds);
        self.snapshot_last_height.set(m.height as i64);
        self.plugin_fuel_used.inc_by(report.fuel_used);
        tracing::info!(
            height = m.height,
            format = m.format,
            chunks = m.chunks.len(),
            entries = m.entries,
            bytes = m.snapshot_bytes,
            seconds = format!("{:.2}", report.seconds),
            hash = %hex::encode(report.hash),
            "snapshot: created"
        );
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    /// Serves `GET /metrics` on `addr` from a background thread.
    pub fn serve(self: &Arc<Self>, addr: &str) -> anyhow::Result<()> {
        let server = tiny_http::Server::http(addr)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("serving metrics on {addr} (is the port in use? set metrics_listen)"))?;
        let metrics = Arc::clone(self);
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                for request in server.incoming_requests() {
                    let response = if request.url() == "/metrics" {
                        let header = tiny_http::Header::from_bytes(
                            &b"Content-Type"[..],
                            &b"application/openmetrics-text; version=1.0.0; charset=utf-8"[..],
                        )
                        .expect("a valid header");
                        tiny_http::Response::from_string(metrics.render()).with_header(header)
                    } else {
                        tiny_http::Response::from_string("statesnap serves /metrics\n").with_status_code(404)
                    };
                    let _ = request.respond(response);
                }
            })
            .context("starting the metrics thread")?;
        Ok(())
    }
}

/// The value of an unlabelled metric in a `/metrics` text (for tests and
/// tools); `None` when absent.
pub fn read_metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_reads_back() {
        let m = Metrics::new();
        m.height.set(42);
        m.chunks_served.inc_by(3);
        let text = m.render();
        assert_eq!(read_metric(&text, "statesnap_height"), Some(42.0));
        assert_eq!(read_metric(&text, "statesnap_chunks_served_total"), Some(3.0));
        assert_eq!(read_metric(&text, "statesnap_restored_snapshot_height"), Some(0.0));
        // Every metric is registered: each field appears in the text.
        for name in [
            "restore_bytes",
            "restore_seconds",
            "plugin_fuel_used_total",
            "block_seconds_count",
        ] {
            assert!(
                read_metric(&text, &format!("statesnap_{name}")).is_some(),
                "{name} missing"
            );
        }
        assert_eq!(read_metric(&text, "statesnap_nope"), None);
    }
}
