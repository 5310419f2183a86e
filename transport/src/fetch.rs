//! Restoring (or only checking) a snapshot from published locations: the
//! index and manifest are read from the first location that has them, the
//! chunks fetched in parallel from all of them (mirrors), each checked
//! against the manifest's SHA-256 on arrival, and fed in order to the host's
//! [`RestoreSession`], which checks its range proof before anything is
//! written and the root against the trusted app hash at the end.
//!
//! Memory stays bounded whatever the snapshot's size: at most `parallel`
//! chunks are in flight, and fetched chunks waiting for their turn are
//! capped by a byte budget. A chunk that fails or arrives corrupt is asked
//! again, of the next mirror first. Each checked chunk is also kept in a
//! download directory beside the home until the restore is installed, so a
//! restore that was killed fetches, when run again, only what is missing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use indicatif::ProgressBar;
use tokio::sync::mpsc;

use statesnap::plugin::{sha256, PluginRegistry};
use statesnap::snapshot::{
    Manifest, RestoreOptions, RestoreSession, RestoreSummary, Verified, MAX_CHUNK_BYTES, MAX_METADATA_BYTES,
};

use crate::index::{Index, IndexEntry};
use crate::location::Location;
use crate::objects::{chunk_object, read_bounded, ReadError, INDEX_OBJECT};

/// A published snapshot chosen from a location's index, with its manifest.
#[derive(Debug, Clone)]
pub struct RemoteSnapshot {
    pub entry: IndexEntry,
    pub manifest: Manifest,
    pub hash: [u8; 32],
}

/// Finds the snapshot at `height` (else the newest) and `format` (else the
/// highest) in the index of the first of `sources` that has an index, and
/// reads its manifest from the first source that serves it intact.
pub fn find(sources: &[Location], height: Option<u64>, format: Option<u32>) -> anyhow::Result<RemoteSnapshot> {
    crate::runtime()?.block_on(find_async(sources, height, format))
}

async fn find_async(sources: &[Location], height: Option<u64>, format: Option<u32>) -> anyhow::Result<RemoteSnapshot> {
    if sources.is_empty() {
        bail!("no location to fetch from: give --from");
    }
    let mut problems = Vec::new();
    let mut index = None;
    for loc in sources {
        match Index::read(loc).await {
            Ok(Some(found)) => {
                index = Some(found);
                break;
            }
            Ok(None) => problems.push(format!("{loc} has no {INDEX_OBJECT}")),
            Err(e) => problems.push(format!("{e:#}")),
        }
    }
    let Some(index) = index else {
        bail!("no published snapshot index could be read: {}", problems.join("; "));
    };
    let Some(entry) = index.select(height, format).cloned() else {
        let listed: Vec<String> = index
            .snapshots
            .iter()
            .map(|e| format!("{}-{}", e.height, e.format))
            .collect();
        bail!(
            "no published snapshot{}{}; listed (height-format): {}",
            height.map(|h| format!(" at height {h}")).unwrap_or_default(),
            format.map(|f| format!(" of format {f}")).unwrap_or_default(),
            if listed.is_empty() {
                "none".to_string()
            } else {
                listed.join(", ")
            }
        );
    };
    let hash = entry.hash_bytes()?;
    for loc in sources {
        match read_bounded(loc, &entry.manifest, MAX_METADATA_BYTES as u64).await {
            Ok(bytes) if sha256(&bytes) == hash => {
                let manifest = Manifest::decode(&bytes).with_context(|| format!("{loc}: {}", entry.manifest))?;
                return Ok(RemoteSnapshot { entry, manifest, hash });
            }
            Ok(_) => problems.push(format!(
                "{loc}: {} does not hash to the snapshot hash {}",
                entry.manifest, entry.hash
            )),
            Err(e) => problems.push(e.to_string()),
        }
    }
    bail!(
        "the manifest of snapshot {} could not be read: {}",
        entry.hash,
        problems.join("; ")
    )
}

/// How chunks are fetched.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Chunks in flight at once.
    pub parallel: usize,
    /// Bytes of fetched chunks that may wait for their turn.
    pub buffer_bytes: u64,
    /// Rounds over every source before a chunk is given up.
    pub rounds: u32,
    /// Where checked chunks are kept until the restore is installed (resume);
    /// `None`: nowhere.
    pub download_dir: Option<PathBuf>,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            parallel: 8,
            buffer_bytes: 64 << 20,
            rounds: 3,
            download_dir: None,
        }
    }
}

/// One source's share of a fetch.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SourceStats {
    pub location: String,
    /// Chunks it served that matched the manifest.
    pub chunks: u64,
    pub bytes: u64,
    /// Chunks it served that did not match (refused).
    pub corrupt: u64,
    /// Requests that failed (network, missing object, too large).
    pub failed: u64,
}

/// What a fetch did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FetchReport {
    /// Chunks fetched from the sources.
    pub fetched: u64,
    /// Chunks taken from the download directory of an earlier, interrupted run.
    pub reused: u64,
    pub bytes_fetched: u64,
    pub sources: Vec<SourceStats>,
    pub seconds: f64,
}

/// A restore from published locations, run to the end.
pub struct RemoteRestore {
    pub summary: RestoreSummary,
    pub fetch: FetchReport,
}

/// The download directory used when restoring into `home`: a hidden sibling.
pub fn download_dir(home: &Path) -> PathBuf {
    let name = home
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "home".into());
    home.with_file_name(format!(".{name}.statesnap-download"))
}

/// One transfer: the snapshot, where its chunks come from, how, and the
/// bar that shows it.
pub struct Transfer<'a> {
    pub snap: &'a RemoteSnapshot,
    pub sources: &'a [Location],
    pub opts: &'a FetchOptions,
    pub progress: &'a ProgressBar,
}

/// Restores the transfer's snapshot into `home`, trusting only `trusted`,
/// and installs it after `prepare` has had the verified staging home (for
/// records kept beside the state, such as a node's checkpoint). The download
/// directory (`opts.download_dir`, normally [`download_dir`]) is kept when
/// the fetch fails or the process is killed, and removed once the state is
/// installed or the snapshot proved bad.
pub fn restore(
    t: &Transfer,
    trusted: [u8; 32],
    registry: &PluginRegistry,
    home: &Path,
    options: RestoreOptions,
    prepare: impl FnOnce(&Verified) -> anyhow::Result<()>,
) -> anyhow::Result<RemoteRestore> {
    let (verified, fetch) = run(t, trusted, registry, home, options)?;
    prepare(&verified)?;
    let summary = verified.install()?;
    if let Some(dir) = &t.opts.download_dir {
        remove_dir(dir);
    }
    Ok(RemoteRestore { summary, fetch })
}

/// Checks the transfer's snapshot as a restore would (every chunk, entry,
/// range proof, and the root against `trusted`) without writing a home or
/// keeping a download.
pub fn check(
    t: &Transfer,
    trusted: [u8; 32],
    registry: &PluginRegistry,
) -> anyhow::Result<(RestoreSummary, FetchReport)> {
    let nowhere = tempfile::tempdir().context("making a temporary directory")?;
    let options = RestoreOptions {
        check_only: true,
        ..RestoreOptions::default()
    };
    let opts = FetchOptions {
        download_dir: None,
        ..t.opts.clone()
    };
    let t = Transfer { opts: &opts, ..*t };
    let (verified, fetch) = run(&t, trusted, registry, &nowhere.path().join("home"), options)?;
    Ok((verified.summary().clone(), fetch))
}

fn run(
    t: &Transfer,
    trusted: [u8; 32],
    registry: &PluginRegistry,
    home: &Path,
    options: RestoreOptions,
) -> anyhow::Result<(Verified, FetchReport)> {
    let Transfer {
        snap,
        sources,
        opts,
        progress,
    } = *t;
    if sources.is_empty() {
        bail!("no location to fetch from: give --from");
    }
    let mut session = RestoreSession::begin(snap.manifest.clone(), trusted, registry, home, options)?;
    let cache = match &opts.download_dir {
        Some(dir) => Some(DownloadDir::open(dir, &snap.hash)?),
        None => None,
    };
    progress.set_length(snap.manifest.snapshot_bytes);
    let started = Instant::now();
    let runtime = crate::runtime()?;
    let shared = Arc::new(Shared {
        sources: sources.to_vec(),
        stats: Mutex::new(
            sources
                .iter()
                .map(|l| SourceStats {
                    location: l.to_string(),
                    ..SourceStats::default()
                })
                .collect(),
        ),
        cache,
        rounds: opts.rounds.max(1),
    });
    let outcome = drive(&mut session, snap, &shared, runtime.handle(), opts, progress);
    let stats = shared.stats.lock().expect("stats lock").clone();
    let mut report = outcome?;
    report.sources = stats;
    report.bytes_fetched = report.sources.iter().map(|s| s.bytes).sum();
    report.seconds = started.elapsed().as_secs_f64();
    match session.finish() {
        Ok(verified) => Ok((verified, report)),
        Err(e) => {
            // Every chunk matched the manifest: the snapshot itself is bad,
            // and so is its download.
            if let Some(dir) = &opts.download_dir {
                remove_dir(dir);
            }
            Err(e.into())
        }
    }
}

/// What the fetch tasks share.
struct Shared {
    sources: Vec<Location>,
    stats: Mutex<Vec<SourceStats>>,
    cache: Option<DownloadDir>,
    rounds: u32,
}

/// A fetched chunk: its index, bytes, and whether it came from the download directory.
type Arrival = anyhow::Result<(u32, Bytes, bool)>;

/// Feeds `session` in order while keeping the fetches ahead of it.
fn drive(
    session: &mut RestoreSession,
    snap: &RemoteSnapshot,
    shared: &Arc<Shared>,
    runtime: &tokio::runtime::Handle,
    opts: &FetchOptions,
    progress: &ProgressBar,
) -> anyhow::Result<FetchReport> {
    let total = snap.manifest.chunks.len() as u32;
    let (tx, mut rx) = mpsc::unbounded_channel::<Arrival>();
    // Dropped on return, which aborts the fetches still running (an error
    // ended the restore).
    let mut fetches = tokio::task::JoinSet::new();
    let mut report = FetchReport::default();
    let mut next_to_start = 0u32;
    let mut in_flight = 0usize;
    let mut waiting: BTreeMap<u32, Bytes> = BTreeMap::new();
    let mut waiting_bytes = 0u64;
    // The largest chunk seen so far sizes the room a new fetch needs; the
    // manifest's average until one arrives.
    let mut largest = snap.manifest.snapshot_bytes.div_ceil(u64::from(total)).max(1);
    while let Some(wanted) = session.wanted() {
        // Chunks are started in order, so the one wanted next is always in
        // flight or waiting: the loop cannot stall on the budget.
        while next_to_start < total
            && in_flight < opts.parallel.max(1)
            && (in_flight + waiting.len() == 0 || waiting_bytes + (in_flight as u64 + 1) * largest <= opts.buffer_bytes)
        {
            let index = next_to_start;
            let expected = snap.manifest.chunks[index as usize];
            let shared = Arc::clone(shared);
            let tx = tx.clone();
            fetches.spawn_on(
                async move {
                    let _ = tx.send(fetch_chunk(&shared, index, expected).await);
                },
                runtime,
            );
            next_to_start += 1;
            in_flight += 1;
        }
        if let Some(chunk) = waiting.remove(&wanted) {
            waiting_bytes -= chunk.len() as u64;
            tracing::debug!(index = wanted, "applying chunk");
            session
                .apply(wanted, &chunk)
                .with_context(|| format!("applying chunk {wanted} of snapshot {}", snap.entry.hash))?;
            progress.inc(chunk.len() as u64);
            continue;
        }
        let Some(arrival) = rx.blocking_recv() else {
            bail!("the chunk fetchers stopped unexpectedly");
        };
        in_flight -= 1;
        let (index, bytes, reused) = arrival?;
        if reused {
            report.reused += 1;
        } else {
            report.fetched += 1;
        }
        largest = largest.max(bytes.len() as u64);
        waiting_bytes += bytes.len() as u64;
        waiting.insert(index, bytes);
    }
    Ok(report)
}

/// Chunk `index`: from the download directory when an earlier run kept it
/// intact, else from the sources in turn (the next one first), checked
/// against `expected` before it is accepted or kept.
async fn fetch_chunk(shared: &Shared, index: u32, expected: [u8; 32]) -> Arrival {
    if let Some(cache) = &shared.cache {
        if let Some(bytes) = cache.take(index, &expected).await {
            return Ok((index, bytes, true));
        }
    }
    let name = chunk_object(&expected);
    let n = shared.sources.len();
    let mut last_errors: Vec<String> = vec![String::new(); n];
    for attempt in 0..shared.rounds as usize * n {
        if attempt > 0 && attempt % n == 0 {
            // A whole round failed: wait before the next.
            let round = (attempt / n) as u32;
            tokio::time::sleep(Duration::from_millis(500 << round.min(4))).await;
        }
        let source = (index as usize + attempt) % n;
        let loc = &shared.sources[source];
        match read_bounded(loc, &name, MAX_CHUNK_BYTES as u64).await {
            Ok(bytes) if sha256(&bytes) == expected => {
                tracing::debug!(index, source = %loc, bytes = bytes.len(), "chunk fetched");
                {
                    let mut stats = shared.stats.lock().expect("stats lock");
                    stats[source].chunks += 1;
                    stats[source].bytes += bytes.len() as u64;
                }
                if let Some(cache) = &shared.cache {
                    cache.keep(index, &bytes).await;
                }
                return Ok((index, bytes, false));
            }
            Ok(bytes) => {
                tracing::warn!(
                    index,
                    source = %loc,
                    "chunk {index} from {loc} ({} bytes) does not match the manifest's SHA-256: refused, asking another source",
                    bytes.len()
                );
                shared.stats.lock().expect("stats lock")[source].corrupt += 1;
                last_errors[source] = format!("{loc}: served a corrupt copy");
            }
            Err(e) => {
                tracing::warn!(index, source = %loc, "chunk {index}: {e}");
                shared.stats.lock().expect("stats lock")[source].failed += 1;
                last_errors[source] = match e {
                    ReadError::NotFound { .. } => format!("{loc}: does not have it"),
                    e => e.to_string(),
                };
            }
        }
    }
    bail!(
        "chunk {index} ({name}) could not be fetched intact from any source after {} rounds: {}",
        shared.rounds,
        last_errors.join("; ")
    )
}

/// Chunks checked on arrival, kept beside the home so that a restore run
/// again after a kill does not fetch them twice. Not synced: a torn file
/// fails its hash when read back and is fetched again.
struct DownloadDir {
    dir: PathBuf,
}

impl DownloadDir {
    /// The download directory for snapshot `hash` under `root`; what
    /// `root` holds for any other snapshot is removed.
    fn open(root: &Path, hash: &[u8; 32]) -> anyhow::Result<Self> {
        let name = hex::encode(hash);
        if root.exists() {
            for entry in std::fs::read_dir(root).with_context(|| format!("listing {}", root.display()))? {
                let entry = entry?;
                if entry.file_name().to_string_lossy() != name {
                    tracing::info!(dir = %entry.path().display(), "removing the download of another snapshot");
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating the download directory {}", dir.display()))?;
        Ok(DownloadDir { dir })
    }

    fn path(&self, index: u32) -> PathBuf {
        self.dir.join(format!("chunk-{index:06}"))
    }

    /// Chunk `index` if kept intact (a bad copy is removed).
    async fn take(&self, index: u32, expected: &[u8; 32]) -> Option<Bytes> {
        let path = self.path(index);
        let meta = tokio::fs::metadata(&path).await.ok()?;
        if !meta.is_file() || meta.len() > MAX_CHUNK_BYTES as u64 {
            let _ = tokio::fs::remove_file(&path).await;
            return None;
        }
        let bytes = tokio::fs::read(&path).await.ok()?;
        if &sha256(&bytes) == expected {
            Some(Bytes::from(bytes))
        } else {
            let _ = tokio::fs::remove_file(&path).await;
            None
        }
    }

    /// Keeps a checked chunk (best effort: a full disk only costs a resume).
    async fn keep(&self, index: u32, bytes: &Bytes) {
        let path = self.path(index);
        let tmp = path.with_extension("tmp");
        let kept = async {
            tokio::fs::write(&tmp, bytes).await?;
            tokio::fs::rename(&tmp, &path).await
        }
        .await;
        if let Err(e) = kept {
            tracing::warn!("not keeping chunk {index} for a resume ({}): {e}", path.display());
            let _ = tokio::fs::remove_file(&tmp).await;
        }
    }
}

fn remove_dir(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!("removing the download directory {}: {e}", dir.display());
        }
    }
}
