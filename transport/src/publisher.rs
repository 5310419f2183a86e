//! Publishing a node's snapshots as they are made (`snapshot_publish`): a
//! thread of its own watches the node's snapshot directory and publishes
//! every finished snapshot it has not published yet, retrying a failure
//! with back-off. Snapshot directories appear by rename when complete, so
//! what is listed is whole; one pruned while it is being published fails
//! that attempt and is forgotten.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;

use statesnap::snapshot::list_snapshots;

use crate::location::Location;
use crate::publish::{publish, PublishOptions, PublishReport};

/// How often the snapshot directory is looked at.
const POLL: Duration = Duration::from_secs(2);
/// Attempts per snapshot before it is given up (logged).
const ATTEMPTS: u32 = 6;

/// What the publisher tells its owner (metrics, logs) after each attempt.
pub type OnAttempt = Box<dyn Fn(Result<&PublishReport, &anyhow::Error>) + Send>;

/// The background publisher; stopped when dropped.
pub struct Publisher {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

/// One snapshot's publishing so far.
struct Progress {
    attempts: u32,
    next_try: Instant,
    done: bool,
}

impl Publisher {
    /// Publishes the snapshots under `snapshots` to `to`.
    pub fn spawn(snapshots: PathBuf, to: Location, on_attempt: OnAttempt) -> anyhow::Result<Publisher> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let handle = std::thread::Builder::new()
            .name("snapshot-publisher".into())
            .spawn(move || {
                tracing::info!(to = %to, dir = %snapshots.display(), "snapshot publisher: started");
                let mut seen: HashMap<PathBuf, Progress> = HashMap::new();
                while !stopping.load(Ordering::Relaxed) {
                    round(&snapshots, &to, &mut seen, &on_attempt, &stopping);
                    std::thread::sleep(POLL);
                }
            })
            .map_err(|e| anyhow::anyhow!("spawning the snapshot publisher: {e}"))?;
        Ok(Publisher {
            stop,
            handle: Some(handle),
        })
    }
}

/// Publishes, oldest first, what is due.
fn round(
    snapshots: &std::path::Path,
    to: &Location,
    seen: &mut HashMap<PathBuf, Progress>,
    on_attempt: &OnAttempt,
    stop: &AtomicBool,
) {
    let listed = match list_snapshots(snapshots) {
        Ok(listed) => listed,
        Err(e) => {
            tracing::warn!("snapshot publisher: listing {}: {e:#}", snapshots.display());
            return;
        }
    };
    seen.retain(|path, _| listed.iter().any(|s| s.path() == path));
    for snap in listed.iter().rev() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let entry = seen.entry(snap.path().to_path_buf()).or_insert(Progress {
            attempts: 0,
            next_try: Instant::now(),
            done: false,
        });
        if entry.done || entry.attempts >= ATTEMPTS || Instant::now() < entry.next_try {
            continue;
        }
        entry.attempts += 1;
        match publish(snap, to, PublishOptions::default(), &ProgressBar::hidden()) {
            Ok(report) => {
                entry.done = true;
                tracing::info!(
                    height = report.height,
                    format = report.format,
                    uploaded = report.uploaded,
                    present = report.present,
                    seconds = report.seconds,
                    to = %to,
                    "snapshot: published"
                );
                on_attempt(Ok(&report));
            }
            Err(e) => {
                let wait = Duration::from_secs(2u64 << entry.attempts.min(6));
                entry.next_try = Instant::now() + wait;
                if entry.attempts >= ATTEMPTS {
                    tracing::error!(
                        dir = %snap.path().display(),
                        "snapshot: publishing to {to} failed {ATTEMPTS} times, giving this snapshot up: {e:#}"
                    );
                } else {
                    tracing::warn!(
                        dir = %snap.path().display(),
                        "snapshot: publishing to {to} failed (attempt {}, again in {}s): {e:#}",
                        entry.attempts,
                        wait.as_secs()
                    );
                }
                on_attempt(Err(&e));
            }
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}
