//! Creating a snapshot: state entries in ascending order → plugin → chunks,
//! each ending with its range proof, hashed and written to a temporary
//! directory that is renamed into place last.
//!
//! Three stages run at once: this thread reads the store, one thread runs the
//! encoder, and one writes each chunk and decodes it again with the plugin's
//! reader, as a restoring node will: the entries it gets back are the ones
//! the state root and the range proofs are made from, so the snapshot is
//! checked to restore before anyone fetches it, and each proof covers exactly
//! the entries a node holds once it has decoded that chunk. The proofs are
//! complete only when the last entry is in (`RangeProver`), so each chunk's
//! trailer is appended at the end. Memory stays bounded by the channels
//! between the stages and the proofs, whatever the state's size.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use crossbeam_channel::{bounded, Sender};
use indicatif::ProgressBar;
use sha2::{Digest, Sha256};

use super::approval::Approval;
use super::codec::{ChunkDecoder, Codec, DECODE_BATCH_BYTES, MAX_CHUNK_ENTRY_BYTES};
use super::entries::state_entry;
use super::frame;
use super::manifest::{Manifest, PluginRef, MANIFEST_VERSION, MANIFEST_VERSION_BLOCK_TIME, MAX_CHUNK_BYTES};
use super::snapshot_dir::{chunk_path, dir_name, manifest_path, TMP_PREFIX};
use crate::durable::{sync_dir, write_synced};
use crate::store::range_proof::RangeProver;
use crate::store::root::{is_consensus_key, leaf_hash};
use crate::store::value::is_null;
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
    /// The block's time, for an app that keeps it beside its state (a Xian
    /// home behind the proxy); makes a version-5 manifest.
    pub block_time_nanos: Option<u64>,
}

impl CreateOptions {
    pub fn new(chain_id: &str, height: u64, params: Vec<(String, String)>) -> Self {
        CreateOptions {
            chain_id: chain_id.to_string(),
            height,
            params,
            batch_bytes: 1 << 20,
            ship: None,
            block_time_nanos: None,
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
    /// Wasm fuel the plugin spent encoding and decoding (0 for a native codec).
    pub fuel_used: u64,
}

/// Creates snapshot `<out_root>/<height>-<format>/` of `store` with `encoder`.
pub fn create(
    store: &dyn StateStore,
    codec: Codec,
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
    if let Some((wasm, approval)) = &opts.ship {
        if crate::plugin::sha256(wasm) != plugin.sha256 || approval.plugin_bytes != wasm.len() as u64 {
            bail!("the plugin to ship is not the plugin that encodes the snapshot (a bug)");
        }
    }

    let built = match build(store, codec, opts, &tmp, progress) {
        Ok(b) => b,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    let manifest = Manifest {
        version: match opts.block_time_nanos {
            None => MANIFEST_VERSION,
            Some(_) => MANIFEST_VERSION_BLOCK_TIME,
        },
        chain_id: opts.chain_id.clone(),
        height: opts.height,
        app_hash: built.root,
        format,
        plugin,
        params: opts.params.clone(),
        chunks: built.chunks,
        entries: built.entries,
        state_bytes: built.state_bytes,
        snapshot_bytes: built.snapshot_bytes,
        approval: opts.ship.as_ref().map(|(_, a)| a.clone()),
        block_time_nanos: opts.block_time_nanos,
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
        fuel_used: built.fuel_used,
    })
}

/// What [`build`] made, for the manifest.
struct Built {
    /// The state root of the entries decoded from the chunks.
    root: [u8; 32],
    entries: u64,
    state_bytes: u64,
    /// Every chunk's hash, in order.
    chunks: Vec<[u8; 32]>,
    snapshot_bytes: u64,
    /// Wasm fuel the plugin spent encoding and decoding.
    fuel_used: u64,
}

/// What the read stage handed to the encoder.
struct Read {
    entries: u64,
    state_bytes: u64,
    /// SHA-256 of the framed entries, every batch in order.
    digest: [u8; 32],
}

/// What the chunk stage made: the chunks' hashes and bytes, and what the
/// entries decoded from them add up to.
struct Written {
    hashes: Vec<[u8; 32]>,
    bytes: u64,
    root: [u8; 32],
    entries: u64,
    digest: [u8; 32],
    fuel: u64,
}

fn build(
    store: &dyn StateStore,
    codec: Codec,
    opts: &CreateOptions,
    dir: &Path,
    progress: &ProgressBar,
) -> anyhow::Result<Built> {
    let Codec { mut encoder, decoder } = codec;
    std::thread::scope(|s| {
        let (batch_tx, batch_rx) = bounded::<Vec<u8>>(4);
        let (chunk_tx, chunk_rx) = bounded::<Vec<u8>>(2);
        let encode = s.spawn(move || -> anyhow::Result<u64> {
            for batch in batch_rx {
                for chunk in encoder.write(&batch)? {
                    if chunk_tx.send(chunk).is_err() {
                        return Ok(encoder.fuel_used()); // the chunk stage failed; its error is reported
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
        let write = s.spawn(move || write_chunks(dir, shipped.as_deref().map(Vec::as_slice), chunk_rx, decoder));

        // Reading ends by dropping `batch_tx`: the encoder finishes.
        let read = read_entries(store, opts.batch_bytes, batch_tx, progress);
        let encoded = encode.join().expect("encoder thread panicked");
        let written = write.join().expect("chunk writer thread panicked");
        let Read {
            entries,
            state_bytes,
            digest,
        } = read?;
        let encode_fuel = encoded?;
        let w = written?;
        let shipped_chunks = opts.ship.as_ref().map_or(0, |(_, a)| a.plugin_chunks() as usize);
        if w.hashes.len() <= shipped_chunks {
            bail!("the plugin produced no chunks; a format must produce at least one chunk, even for an empty state");
        }
        if w.entries != entries || w.digest != digest {
            bail!(
                "the plugin does not read back what it wrote: {entries} entries went in, {} came out of its reader{} \
                 (a bug in the plugin; no snapshot was made)",
                w.entries,
                if w.entries == entries {
                    ", with different bytes"
                } else {
                    ""
                }
            );
        }
        Ok(Built {
            root: w.root,
            entries,
            state_bytes,
            chunks: w.hashes,
            snapshot_bytes: w.bytes,
            fuel_used: encode_fuel + w.fuel,
        })
    })
}

/// The read stage: the consensus entries of `store`, framed, to the encoder
/// in batches of about `batch_bytes`. Stops early, without an error, when
/// the encoder has gone (its error is the one reported).
fn read_entries(
    store: &dyn StateStore,
    batch_bytes: usize,
    batches: Sender<Vec<u8>>,
    progress: &ProgressBar,
) -> anyhow::Result<Read> {
    let mut digest = Sha256::new();
    let mut batch = Vec::with_capacity(batch_bytes + 4096);
    let (mut entries, mut state_bytes) = (0u64, 0u64);
    for entry in store.entries()? {
        let entry = entry?;
        progress.inc(1);
        // Only what the app hash covers goes into a snapshot.
        if !is_consensus_key(&entry.key) || is_null(&entry.stored) {
            continue;
        }
        statesnap_plugin_sdk::push_entry(&mut batch, entry.key.as_bytes(), entry.stored.as_bytes());
        entries += 1;
        state_bytes += (entry.key.len() + entry.stored.len()) as u64;
        if batch.len() >= batch_bytes {
            digest.update(&batch);
            if batches.send(std::mem::take(&mut batch)).is_err() {
                break; // the encoder failed; its error is reported
            }
        }
    }
    if !batch.is_empty() {
        digest.update(&batch);
        let _ = batches.send(batch);
    }
    Ok(Read {
        entries,
        state_bytes,
        digest: digest.finalize().into(),
    })
}

/// The chunk stage: writes each chunk, decodes it into the prover, and at the
/// end appends each chunk's proof and syncs it.
fn write_chunks(
    dir: &Path,
    shipped: Option<&[u8]>,
    chunks: crossbeam_channel::Receiver<Vec<u8>>,
    mut decoder: Box<dyn ChunkDecoder>,
) -> anyhow::Result<Written> {
    let mut hashes = Vec::new();
    let mut bytes = 0u64;
    // A self-describing snapshot's first chunks are its plugin, unframed.
    if let Some(wasm) = shipped {
        for (index, part) in wasm.chunks(super::approval::PLUGIN_PART_BYTES).enumerate() {
            hashes.push(Sha256::digest(part).into());
            bytes += part.len() as u64;
            write_synced(&chunk_path(dir, index as u32), part)?;
        }
    }
    let first = hashes.len();
    let mut prover = RangeProver::new();
    let mut digest = Sha256::new();
    let mut previous = String::new();
    let mut open = Vec::new(); // each state chunk's hash so far and size
    for chunk in chunks {
        let index = u32::try_from(first + open.len()).context("too many chunks")?;
        let path = chunk_path(dir, index);
        std::fs::write(&path, &chunk).with_context(|| format!("writing {} (is the disk full?)", path.display()))?;
        decoder.feed(&chunk)?;
        let mut decoded = 0usize;
        while let Some(batch) = decoder.next_batch(DECODE_BATCH_BYTES)? {
            decoded += batch.len();
            if decoded > MAX_CHUNK_ENTRY_BYTES {
                bail!(
                    "chunk {index} decodes to more than {MAX_CHUNK_ENTRY_BYTES} bytes of entries, more than a restoring \
                     node holds before checking its proof; use a smaller chunk_bytes"
                );
            }
            digest.update(&batch);
            for item in statesnap_plugin_sdk::entries(&batch) {
                let (key, value) = item.map_err(|e| anyhow::anyhow!("the plugin's reader returned a {e}"))?;
                let entry = state_entry(key, value)
                    .map_err(|e| anyhow::anyhow!("the plugin's reader returned an entry that is not valid: {e}"))?;
                if prover.pushed() > 0 && previous.as_bytes() >= entry.key.as_bytes() {
                    bail!("the plugin's reader returned {:?} out of order", entry.key);
                }
                prover.push(entry.key.as_bytes(), leaf_hash(entry.key.as_bytes(), &entry.canonical));
                previous.clear();
                previous.push_str(entry.key);
            }
        }
        prover.split();
        let mut hash = Sha256::new();
        hash.update(&chunk);
        open.push((hash, chunk.len()));
    }
    decoder.finish()?;
    let entries = prover.pushed();
    let (root, proofs) = prover.finish();
    for (i, ((mut hash, len), proof)) in open.into_iter().zip(&proofs).enumerate() {
        let index = (first + i) as u32;
        let trailer = frame::trailer(proof);
        if len + trailer.len() > MAX_CHUNK_BYTES {
            bail!(
                "chunk {index} would be {} bytes with its range proof, over the {MAX_CHUNK_BYTES} bytes a chunk may have; \
                 use a smaller chunk_bytes",
                len + trailer.len()
            );
        }
        let path = chunk_path(dir, index);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        std::io::Write::write_all(&mut file, &trailer)
            .and_then(|_| file.sync_all())
            .with_context(|| format!("writing {} (is the disk full?)", path.display()))?;
        hash.update(&trailer);
        hashes.push(hash.finalize().into());
        bytes += (len + trailer.len()) as u64;
    }
    Ok(Written {
        hashes,
        bytes,
        root,
        entries,
        digest: digest.finalize().into(),
        fuel: decoder.fuel_used(),
    })
}
