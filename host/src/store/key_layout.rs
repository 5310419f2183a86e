//! Where a state key lives in Xian's HDF5 layout (docs/XIAN.md §1), and the
//! escaping rule for keys the layout cannot express as-is (§1.5).
//!
//! A key `<file>.<variable>` is split at its first `.`. The file is
//! `run_state/<file>` when its name starts with `__`, else
//! `contract_state/<file>`; the variable's `:`-separated segments are nested
//! groups in that file, and the group holds the value. A key with no `.` keeps
//! its value on the file's root group `/`.
//!
//! # Escaping
//!
//! HDF5 and the file system cannot hold every name: a group name cannot be
//! empty (`a.b::c`, `a.b:`), contain `/`, or be `.` or `..`; a file name
//! cannot be empty (`.x`) or contain `/`. Such names are stored escaped, and
//! the escape is marked by a character the layout never puts in that place,
//! so no name Xian writes can be mistaken for an escaped one:
//!
//! * a **group name** never contains `:` (it is the separator). A segment
//!   that is empty, `.`, `..` or contains `/` is stored as `:` followed by
//!   the segment with every `/` replaced by `:`. Examples: `` → `:`,
//!   `..` → `:..`, `a/b` → `:a:b`.
//! * a **file name** never contains `.` (the file name ends at the first
//!   `.`). A file name that is empty or contains `/` is stored as `%.`
//!   followed by the name with every `/` replaced by `.`. Examples:
//!   `` → `%.`, `a/b` → `%.a.b`.
//!
//! Reading reverses this. A stored name carrying the marker that is not the
//! exact escape of some name (`:abc`, `a:b`, `x.h5`) was written by neither
//! Xian nor statesnap and is an error, so the mapping between keys and
//! locations is one-to-one. Keys containing NUL cannot be stored at all
//! (HDF5 names are C strings), nor can a file name longer than 255 bytes.

use std::borrow::Cow;

/// The two directories of a home, in the order [`KeyPath::dir`] names them.
pub(crate) const DIRS: [&str; 2] = ["contract_state", "run_state"];

/// The location of a key: directory, file name and group names, all as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyPath {
    /// In `run_state/` (true) or `contract_state/` (false).
    pub run_state: bool,
    /// The stored (escaped) file name.
    pub file: String,
    /// Stored (escaped) group names from the file's root; empty for a key with no `.`.
    pub groups: Vec<String>,
}

impl KeyPath {
    pub fn dir(&self) -> &'static str {
        DIRS[self.run_state as usize]
    }
}

/// A key the layout cannot hold even escaped.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum KeyError {
    #[error("key {0:?} contains a NUL character, which HDF5 names cannot hold")]
    Nul(String),
    #[error("key {key:?}: its file name is {len} bytes, more than the 255 a file name can have")]
    FileNameTooLong { key: String, len: usize },
}

/// A stored name that neither Xian nor statesnap writes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum NameError {
    #[error("group name {0:?} contains ':' but is not an escaped name (Xian never writes ':' in a group name)")]
    Group(String),
    #[error("file name {0:?} contains '.' but is not an escaped name (Xian never writes '.' in a file name)")]
    File(String),
}

/// Whether file `name` (unescaped) lives in `run_state/`.
pub(crate) fn is_run_state(name: &str) -> bool {
    name.starts_with("__")
}

/// Maps a state key to its location.
pub(crate) fn key_path(key: &str) -> Result<KeyPath, KeyError> {
    if key.contains('\0') {
        return Err(KeyError::Nul(key.to_string()));
    }
    let (file, groups) = match key.split_once('.') {
        Some((file, var)) => (file, var.split(':').map(|s| encode_group(s).into_owned()).collect()),
        None => (key, Vec::new()),
    };
    let stored = encode_file(file);
    if stored.len() > 255 {
        return Err(KeyError::FileNameTooLong {
            key: key.to_string(),
            len: stored.len(),
        });
    }
    Ok(KeyPath {
        run_state: is_run_state(file),
        file: stored.into_owned(),
        groups,
    })
}

/// The stored name of group (variable segment) `name`.
pub(crate) fn encode_group(name: &str) -> Cow<'_, str> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        Cow::Owned(format!(":{}", name.replace('/', ":")))
    } else {
        Cow::Borrowed(name)
    }
}

/// The segment a stored group name stands for.
pub(crate) fn decode_group(stored: &str) -> Result<Cow<'_, str>, NameError> {
    if !stored.contains(':') {
        return Ok(Cow::Borrowed(stored));
    }
    let name = stored.strip_prefix(':').map(|rest| rest.replace(':', "/"));
    match name {
        Some(name) if encode_group(&name) == stored => Ok(Cow::Owned(name)),
        _ => Err(NameError::Group(stored.to_string())),
    }
}

/// The stored name of file `name`.
pub(crate) fn encode_file(name: &str) -> Cow<'_, str> {
    if name.is_empty() || name.contains('/') {
        Cow::Owned(format!("%.{}", name.replace('/', ".")))
    } else {
        Cow::Borrowed(name)
    }
}

/// The file name a stored file name stands for.
pub(crate) fn decode_file(stored: &str) -> Result<Cow<'_, str>, NameError> {
    if !stored.contains('.') {
        return Ok(Cow::Borrowed(stored));
    }
    let name = stored.strip_prefix("%.").map(|rest| rest.replace('.', "/"));
    match name {
        Some(name) if encode_file(&name) == stored => Ok(Cow::Owned(name)),
        _ => Err(NameError::File(stored.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_keys_map_as_xian_does() {
        let p = key_path("currency.balances:alice:bob").unwrap();
        assert_eq!(
            (p.run_state, p.dir(), p.file.as_str()),
            (false, "contract_state", "currency")
        );
        assert_eq!(p.groups, ["balances", "alice", "bob"]);
        let p = key_path("__n.abc").unwrap();
        assert_eq!((p.run_state, p.dir(), p.file.as_str()), (true, "run_state", "__n"));
        assert_eq!(p.groups, ["abc"]);
        // Only the first '.' splits; later ones belong to the segments.
        assert_eq!(key_path("con.a.b:c.d").unwrap().groups, ["a.b", "c.d"]);
        // Names that merely look special are stored as they are.
        assert_eq!(key_path("%x.%41:...:.a").unwrap().groups, ["%41", "...", ".a"]);
        assert_eq!(key_path("%x.y").unwrap().file, "%x");
        assert_eq!(key_path("a:b.c").unwrap().file, "a:b");
    }

    #[test]
    fn unexpressible_keys_are_escaped() {
        assert_eq!(key_path("nodot").unwrap().groups, Vec::<String>::new());
        assert_eq!(key_path("f.").unwrap().groups, [":"]);
        assert_eq!(key_path("f.a::b:").unwrap().groups, ["a", ":", "b", ":"]);
        assert_eq!(key_path("f.a/b:.:..").unwrap().groups, [":a:b", ":.", ":.."]);
        let p = key_path(".x").unwrap();
        assert_eq!((p.file.as_str(), p.groups.as_slice()), ("%.", &["x".to_string()][..]));
        assert_eq!(key_path("a/b.c").unwrap().file, "%.a.b");
        assert_eq!(key_path("__a/b.c").unwrap().dir(), "run_state");
        assert_eq!(key_path("").unwrap().file, "%.");
        assert_eq!(key_path("f.a\0"), Err(KeyError::Nul("f.a\0".into())));
        assert!(matches!(
            key_path(&format!("{}.x", "a".repeat(256))),
            Err(KeyError::FileNameTooLong { len: 256, .. })
        ));
    }

    #[test]
    fn escaping_round_trips() {
        let names = [
            "", ".", "..", "...", "/", "//", "a/b", "/a/", "./", "%", "%2F", "%.", "é/ü", "plain", "🚀",
        ];
        for name in names {
            let g = encode_group(name);
            assert!(
                !g.is_empty() && !g.contains('/') && g != "." && g != "..",
                "{name:?} -> {g:?}"
            );
            assert_eq!(decode_group(&g).unwrap(), name, "{name:?} -> {g:?}");
            if !name.contains('.') {
                let f = encode_file(name);
                assert!(
                    !f.is_empty() && !f.contains('/') && !f.starts_with('.'),
                    "{name:?} -> {f:?}"
                );
                assert_eq!(decode_file(&f).unwrap(), name, "{name:?} -> {f:?}");
            }
        }
    }

    #[test]
    fn foreign_names_are_refused() {
        for stored in [":abc", "a:b", "a:", ":a/b", "é:"] {
            assert_eq!(decode_group(stored), Err(NameError::Group(stored.into())));
        }
        for stored in ["x.h5", "%.abc", "%.a", ".hidden"] {
            assert_eq!(decode_file(stored), Err(NameError::File(stored.into())));
        }
    }
}
