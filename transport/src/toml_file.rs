//! Editing a TOML file in place (CometBFT's `config.toml`): the document is
//! edited with `toml_edit`, so every comment and key the edit does not touch
//! stays as it was, and written back atomically.

use std::io::Write as _;
use std::path::Path;

use anyhow::{anyhow, Context};
use toml_edit::{DocumentMut, Item, Table, Value};

/// Reads the TOML file at `path`, applies `edit`, and writes the result
/// beside it and renames it over, synced, with the old file's permissions:
/// a crash leaves the old file or the new one, never half of one.
pub fn rewrite(path: &Path, edit: impl FnOnce(&mut DocumentMut) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut doc: DocumentMut = text
        .parse()
        .with_context(|| format!("{} is not valid TOML", path.display()))?;
    edit(&mut doc)?;
    write_atomically(path, doc.to_string().as_bytes())
}

/// Sets `table[key] = value`, keeping the comments around an old value.
pub fn set_keeping_comments(table: &mut Table, key: &str, value: Value) {
    match table.get_mut(key) {
        Some(Item::Value(old)) => {
            let decor = old.decor().clone();
            *old = value;
            *old.decor_mut() = decor;
        }
        _ => table[key] = Item::Value(value),
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("{} is not a file", path.display()))?;
    let tmp = path.with_file_name(format!(
        ".{}.statesnap-{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        if let Ok(meta) = std::fs::metadata(path) {
            file.set_permissions(meta.permissions())?;
        }
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    // The rename itself is durable once the directory is synced.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}
