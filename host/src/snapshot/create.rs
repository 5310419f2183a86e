//! Creating a snapshot: state entries in ascending order → plugin → chunks,
//! hashed and written to a temporary directory that is renamed into place last.
//!
//! Three stages run at once: this thread reads the store and streams the state
//! root, one thread runs the encoder, one hashes and writes chunks. Memory stays
//! bounded by the channels between them, whatever the state's size.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use crossbeam_channel::bounded;
use indicatif::ProgressBar;
use sha2::{Digest, Sha256};

use super::approval::Approval;
use super::codec::ChunkEncoder;
use super::layout::{chunk_path, dir_name, manifest_path, TMP_PREFIX};
use super::manifest::{Manifest, PluginRef, MANIFEST_VERSION};
use crate::durable::{sync_dir, write_synced};
use crate::store::root::RootBuilder;
use crate::store::StateStore;

/// What to put in the manifest besides what the state and plugin give.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    pub chain_id: String,
    pub height: u64,
    /// Plugin parameters, already resolved against its defaults.
    pub params: Vec<(String, String)>,
    /// Size of the entry batches handed to the encoder.
    pub batch_bytes: usize,
    /// Make the snapshot self-describing: chunk 0 is this plugin wasm (the
    /// encoder's plugin) and the manifest carries this approval.
    pub ship: Option<(std::sync::Arc<Vec<u8>>, Approval)>,
}

impl CreateOptions {
    pub fn new(chain_id: &str, height: u64, params: Vec<(String, String)>) -> Self {
        CreateOptions {
            chain_id: chain_id.to_string(),
            height,
            params,
            batch_bytes: 1 << 20,
            ship: None,
        }
    }
}

/// The result of [`create`].
#[derive(Debug, Clone)]
pub struct CreateReport {
    pub manifest: Manifest,
    pub hash: [u8; 32],
    pub dir: PathBuf,
    pub seconds: f64,
    /// Wasm fuel the plugin spent (0 for a native codec).
    pub fuel_used: u64,
}

/// Creates snapshot `<out_root>/<height>-<format>/` of `store` with `encoder`.
pub fn create(
    store: &dyn StateStore,
    encoder: Box<dyn ChunkEncoder>,
    plugin: PluginRef,
    format: u32,
    opts: &CreateOptions,
    out_root: &Path,
    progress: &ProgressBar,
) -> anyhow::Result<CreateReport> {
    let started = Instant::now();
    let final_dir = out_root.join(dir_name(opts.height, format));
    if final_dir.exists() {
        bail!(
            "snapshot {} already exists; remove it or choose another --out",
            final_dir.display()
        );
    }
    std::fs::create_dir_all(out_root).with_context(|| format!("creating {}", out_root.display()))?;
    let tmp = out_root.join(format!(
        "{TMP_PREFIX}{}-{}",
        dir_name(opts.height, format),
        std::process::id()
    ));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing stale {}", tmp.display()))?;
    }
    std::fs::create_dir(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    if let Some((wasm, _)) = &opts.ship {
        if crate::plugin::sha256(wasm) != plugin.sha256 {
            bail!("the plugin to ship is not the plugin that encodes the snapshot (a bug)");
        }
    }

    let result = build(store, encoder, opts, &tmp, progress);
    let (root, entries, state_bytes, chunks, snapshot_bytes, fuel_used) = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    let manifest = Manifest {
        version: MANIFEST_VERSION,
        chain_id: opts.chain_id.clone(),
        height: opts.height,
        app_hash: root,
        format,
        plugin,
        params: opts.params.clone(),
        chunks,
        entries,
        state_bytes,
        snapshot_bytes,
        approval: opts.ship.as_ref().map(|(_, a)| a.clone()),
    };
    let finish = || -> anyhow::Result<()> {
        write_synced(&manifest_path(&tmp), &manifest.encode())?;
        std::fs::rename(&tmp, &final_dir)
            .with_context(|| format!("moving {} into place as {}", tmp.display(), final_dir.display()))?;
        sync_dir(out_root)
    };
    if let Err(e) = finish() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    Ok(CreateReport {
        hash: manifest.hash(),
        manifest,
        dir: final_dir,
        seconds: started.elapsed().as_secs_f64(),
        fuel_used,
    })
}

/// Root, entries, state bytes, chunk hashes, snapshot bytes, fuel.
type Built = ([u8; 32], u64, u64, Vec<[u8; 32]>, u64, u64);

fn build(
    store: &dyn StateStore,
    mut encoder: Box<dyn ChunkEncoder>,
    opts: &CreateOptions,
    dir: &Path,
    progress: &ProgressBar,
) -> anyhow::Result<Built> {
    std::thread::scope(|s| {
        let (batch_tx, batch_rx) = bounded::<Vec<u8>>(4);
        let (chunk_tx, chunk_rx) = bounded::<Vec<u8>>(2);
        let encode = s.spawn(move || -> anyhow::Result<u64> {
            for batch in batch_rx {
                for chunk in encoder.write(&batch)? {
                    if chunk_tx.send(chunk).is_err() {
                        return Ok(encoder.fuel_used()); // the chunk writer failed; its error is reported
                    }
                }
            }
            for chunk in encoder.finish()? {
                if chunk_tx.send(chunk).is_err() {
                    break;
                }
            }
            Ok(encoder.fuel_used())
        });
        let shipped = opts.ship.as_ref().map(|(wasm, _)| wasm.clone());
        let write = s.spawn(move || -> anyhow::Result<(Vec<[u8; 32]>, u64)> {
            let mut hashes = Vec::new();
            let mut bytes = 0u64;
            // A self-describing snapshot's chunk 0 is its plugin.
            let shipped = shipped.map(|w| w.as_ref().clone());
            for chunk in shipped.into_iter().chain(chunk_rx) {
                let index = u32::try_from(hashes.len()).context("too many chunks")?;
                hashes.push(Sha256::digest(&chunk).into());
                bytes += chunk.len() as u64;
                write_synced(&chunk_path(dir, index), &chunk)?;
            }
            Ok((hashes, bytes))
        });

        let read = (|| -> anyhow::Result<([u8; 32], u64, u64)> {
            let mut root = RootBuilder::new();
            let mut batch = Vec::with_capacity(opts.batch_bytes + 4096);
            let (mut entries, mut state_bytes) = (0u64, 0u64);
            for entry in store.entries()? {
                let entry = entry?;
                progress.inc(1);
                // Only what the app hash covers goes into a snapshot.
                if !root.push(&entry.key, &entry.stored)? {
                    continue;
                }
                statesnap_plugin_sdk::push_entry(&mut batch, entry.key.as_bytes(), entry.stored.as_bytes());
                entries += 1;
                state_bytes += (entry.key.len() + entry.stored.len()) as u64;
                if batch.len() >= opts.batch_bytes && batch_tx.send(std::mem::take(&mut batch)).is_err() {
                    break; // the encoder failed; its error is reported below
                }
            }
            if !batch.is_empty() {
                let _ = batch_tx.send(batch);
            }
            Ok((root.finish(), entries, state_bytes))
        })();
        drop(batch_tx);
        let encoded = encode.join().expect("encoder thread panicked");
        let written = write.join().expect("chunk writer thread panicked");
        let (root, entries, state_bytes) = read?;
        let fuel_used = encoded?;
        let (chunks, snapshot_bytes) = written?;
        if chunks.len() <= usize::from(opts.ship.is_some()) {
            bail!("the plugin produced no chunks; a format must produce at least one chunk, even for an empty state");
        }
        Ok((root, entries, state_bytes, chunks, snapshot_bytes, fuel_used))
    })
}
