//! Migrating a state home from one layout to the other (`statesnap state
//! convert`), streamed: entries go from a read-only view of the source to a
//! new home in sorted batches, and the result's state root is checked
//! against the source's.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context};

use super::copy::{copy_entries, CopyError, BATCH};
use super::home::{detect, ensure_vacant};
use super::root::{state_root_of, RootBuilder};
use super::{HomeStore, StateRoot, StateStore, StoreKind};

/// What a conversion did.
#[derive(Debug, Clone)]
pub struct ConvertReport {
    pub from: StoreKind,
    pub to: StoreKind,
    /// Entries copied (every entry with a value, consensus or not).
    pub entries: u64,
    /// The state root of the source, which the result was checked to have.
    pub root: StateRoot,
    pub seconds: f64,
}

/// Copies every entry of the home `from` (either layout, opened read-only)
/// into a new home `to` of layout `kind`, then checks that the new home's
/// state root equals the source's. `to` must be missing or empty; on any
/// failure it is removed again. `progress` gets the number of entries
/// copied so far.
pub fn convert(
    from: &Path,
    to: &Path,
    kind: StoreKind,
    mut progress: impl FnMut(u64),
) -> anyhow::Result<ConvertReport> {
    let started = Instant::now();
    let from_kind = detect(from)?;
    ensure_vacant(to, "--to")?;
    if same_dir(from, to) {
        bail!("--from and --to are the same directory ({})", from.display());
    }
    let existed = to.exists();
    match copy_and_check(from, to, kind, &mut progress) {
        Ok((entries, root)) => Ok(ConvertReport {
            from: from_kind,
            to: kind,
            entries,
            root,
            seconds: started.elapsed().as_secs_f64(),
        }),
        Err(e) => {
            // Leave `to` as it was found: missing, or empty.
            let _ = std::fs::remove_dir_all(to);
            if existed {
                let _ = std::fs::create_dir_all(to);
            }
            Err(e)
        }
    }
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn copy_and_check(
    from: &Path,
    to: &Path,
    kind: StoreKind,
    progress: &mut dyn FnMut(u64),
) -> anyhow::Result<(u64, StateRoot)> {
    let source = HomeStore::open_read_only(from)?;
    let mut target = HomeStore::create(to, kind)?;
    // A conversion that fails is removed, so commits need not be synced one by one.
    target.set_bulk(true);
    let mut root = RootBuilder::new();
    // Each entry is hashed on its way into the new home.
    let hashed = source.entries()?.map(|e| {
        let e = e.with_context(|| format!("reading {}", from.display()))?;
        root.push(&e.key, &e.stored)
            .with_context(|| format!("hashing the state of {}", from.display()))?;
        Ok(e)
    });
    let entries = copy_entries(hashed, &mut target, BATCH, progress).map_err(|e| match e {
        CopyError::Read(e) => e,
        CopyError::Write(e) => e.context(format!("writing {}", to.display())),
    })?;
    target.flush()?;
    drop(target);
    drop(source);
    let want = root.finish();
    // The result, read back from disk, must hash to the same root.
    let written = HomeStore::open_read_only(to)?;
    let (got, n) = state_root_of(&written, || {})?;
    if got != want || n != entries {
        bail!(
            "the converted home {} does not match its source: root {} with {n} entries, expected {} with {entries}",
            to.display(),
            hex::encode(got),
            hex::encode(want)
        );
    }
    Ok((entries, want))
}
