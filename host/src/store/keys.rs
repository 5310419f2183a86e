//! Where a state key lives in Xian's HDF5 layout (xian-compat.md §1), and the
//! escaping rule for keys the layout cannot express as-is.
//!
//! `<file>.<variable>`: the part before the first `.` names the file (in
//! `run_state/` when it starts with `__`, else `contract_state/`); the
//! variable's `:`-separated segments are nested groups in that file. A key with
//! no `.` keeps its value on the file's root group.
//!
//! **Escaping.** A file name or segment that is empty, is `.` or `..`, contains
//! `/`, or starts with `%`, is
//! written as `%` followed by the name with `%` → `%25` and `/` → `%2F`. A name
//! that starts with `%` is read back by dropping the `%` and percent-decoding
//! the rest. Names Xian itself writes never start with `%`, so they are stored
//! exactly as Xian stores them; the rule only changes names Xian could not
//! have written, and it round-trips every UTF-8 key without NUL.

use std::borrow::Cow;

/// The location of a key: directory, file name and group names, all encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPath {
    /// `run_state/` (true) or `contract_state/` (false).
    pub run_state: bool,
    /// The encoded file name.
    pub file: String,
    /// Encoded group names from the file's root; empty for a key with no `.`.
    pub groups: Vec<String>,
}

impl KeyPath {
    pub fn dir(&self) -> &'static str {
        if self.run_state {
            "run_state"
        } else {
            "contract_state"
        }
    }
}

/// A key the layout cannot hold even with escaping.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("key {0:?} contains a NUL character, which HDF5 names cannot hold")]
pub struct KeyError(pub String);

/// Maps a state key to its location.
pub fn key_path(key: &str) -> Result<KeyPath, KeyError> {
    if key.contains('\0') {
        return Err(KeyError(key.to_string()));
    }
    let (file, groups) = match key.split_once('.') {
        Some((file, var)) => (file, var.split(':').map(|s| encode_name(s).into_owned()).collect()),
        None => (key, Vec::new()),
    };
    Ok(KeyPath {
        run_state: file.starts_with("__"),
        file: encode_name(file).into_owned(),
        groups,
    })
}

/// The name under which a file name or segment is stored.
pub fn encode_name(name: &str) -> Cow<'_, str> {
    let needs = name.is_empty() || name == "." || name == ".." || name.contains('/') || name.starts_with('%');
    if !needs {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() + 4);
    out.push('%');
    for c in name.chars() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            _ => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The file name or segment a stored name stands for.
pub fn decode_name(stored: &str) -> Cow<'_, str> {
    let Some(rest) = stored.strip_prefix('%') else {
        return Cow::Borrowed(stored);
    };
    let bytes = rest.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 3 <= bytes.len() {
            let (hi, lo) = (bytes[i + 1], bytes[i + 2]);
            if hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit() {
                let hex = |b: u8| (b as char).to_digit(16).expect("hex digit") as u8;
                out.push(hex(hi) << 4 | hex(lo));
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    Cow::Owned(String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_keys_map_as_xian_does() {
        let p = key_path("currency.balances:alice:bob").unwrap();
        assert_eq!((p.run_state, p.file.as_str()), (false, "currency"));
        assert_eq!(p.groups, ["balances", "alice", "bob"]);
        let p = key_path("__n.abc").unwrap();
        assert_eq!((p.run_state, p.dir(), p.file.as_str()), (true, "run_state", "__n"));
        assert_eq!(p.groups, ["abc"]);
        assert_eq!(key_path("con.a.b:c.d").unwrap().groups, ["a.b", "c.d"]);
    }

    #[test]
    fn escaping_round_trips() {
        for name in [
            "", ".", "..", "a/b", "%", "%41", "50%", "/", "%2F", "é/ü", "plain", "a:b",
        ] {
            let enc = encode_name(name);
            assert!(
                !enc.contains('/') && !enc.is_empty() && enc != "." && enc != "..",
                "{name:?} -> {enc:?}"
            );
            assert_eq!(decode_name(&enc), name, "{name:?} -> {enc:?}");
        }
        assert_eq!(encode_name("plain"), "plain");
        assert_eq!(encode_name("50%"), "50%");
        assert_eq!(key_path("nodot").unwrap().groups, Vec::<String>::new());
        assert_eq!(key_path("f.").unwrap().groups, ["%"]);
        assert_eq!(key_path("f.a::b").unwrap().groups, ["a", "%", "b"]);
        assert!(key_path("f.a\0").is_err());
    }
}
