//! What the statesnap host and its format plugins share: entry-batch framing,
//! the [`Format`] traits a plugin implements natively, and [`export_format!`],
//! which turns such a type into the WebAssembly component of `wit/plugin.wit`.
//!
//! Entries cross the plugin boundary in batches, never one call per entry. A
//! batch is a byte buffer of entries, each framed as
//! `u32le key-length, key bytes, u32le value-length, value bytes`.

/// Appends one framed entry to `out`.
pub fn push_entry(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
}

/// The framed size of an entry.
pub fn framed_len(key: &[u8], value: &[u8]) -> usize {
    8 + key.len() + value.len()
}

/// A malformed batch: where it went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    /// Byte offset in the batch of the entry that could not be read.
    pub offset: usize,
    /// What was wrong.
    pub reason: &'static str,
}

impl core::fmt::Display for FrameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "malformed entry batch at byte {}: {}", self.offset, self.reason)
    }
}

impl std::error::Error for FrameError {}

/// Iterates the entries of a batch as `(key, value)` byte slices.
pub fn entries(batch: &[u8]) -> Entries<'_> {
    Entries { batch, pos: 0 }
}

/// Iterator over a batch's entries; see [`entries`].
pub struct Entries<'a> {
    batch: &'a [u8],
    pos: usize,
}

impl<'a> Entries<'a> {
    fn field(&mut self, what: &'static str) -> Result<&'a [u8], FrameError> {
        let start = self.pos;
        let rest = &self.batch[self.pos..];
        if rest.len() < 4 {
            return Err(FrameError {
                offset: start,
                reason: what,
            });
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if rest.len() - 4 < len {
            return Err(FrameError {
                offset: start,
                reason: what,
            });
        }
        self.pos += 4 + len;
        Ok(&rest[4..4 + len])
    }

    /// Bytes of the batch not yet consumed.
    pub fn remaining(&self) -> &'a [u8] {
        &self.batch[self.pos..]
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<(&'a [u8], &'a [u8]), FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.batch.len() {
            return None;
        }
        let start = self.pos;
        let item = self
            .field("truncated key")
            .and_then(|k| self.field("truncated value").map(|v| (k, v)));
        Some(item.map_err(|e| {
            // Report the entry's offset, and stop after the first error.
            self.pos = self.batch.len();
            FrameError { offset: start, ..e }
        }))
    }
}

/// Length of the longest prefix of `buf` made of whole framed entries.
///
/// Readers of a byte stream cut at arbitrary places (like the gzip format) use
/// it to return whole entries and keep the tail for the next chunk.
pub fn whole_entries_len(buf: &[u8]) -> usize {
    whole_entries_len_upto(buf, usize::MAX)
}

/// Like [`whole_entries_len`], but stops after the first entry that brings the
/// prefix to `max` bytes or more: the length of a batch of "about `max`
/// bytes" (a single larger entry makes it larger). 0 if `buf` does not start
/// with a whole entry.
pub fn whole_entries_len_upto(buf: &[u8], max: usize) -> usize {
    let mut pos = 0;
    while pos < max {
        match whole_entry_len(&buf[pos..]) {
            Some(len) => pos += len,
            None => break,
        }
    }
    pos
}

/// The framed length of the entry `buf` starts with, if `buf` holds all of it.
/// (Checked arithmetic: lengths near `u32::MAX` must not wrap on wasm32.)
fn whole_entry_len(buf: &[u8]) -> Option<usize> {
    let u32_at = |at: usize| -> Option<usize> {
        let b = buf.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let value_at = u32_at(0)?.checked_add(4)?;
    let total = value_at.checked_add(4)?.checked_add(u32_at(value_at)?)?;
    (total <= buf.len()).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let mut b = Vec::new();
        push_entry(&mut b, b"a.x", b"1");
        push_entry(&mut b, b"b.y", b"\"two\"");
        let got: Vec<_> = entries(&b).collect::<Result<_, _>>().unwrap();
        assert_eq!(got, vec![(&b"a.x"[..], &b"1"[..]), (&b"b.y"[..], &b"\"two\""[..])]);
        assert_eq!(whole_entries_len(&b), b.len());
        assert_eq!(whole_entries_len(&b[..b.len() - 1]), framed_len(b"a.x", b"1"));
        let first = framed_len(b"a.x", b"1");
        assert_eq!(whole_entries_len_upto(&b, 0), 0);
        assert_eq!(whole_entries_len_upto(&b, 1), first);
        assert_eq!(whole_entries_len_upto(&b, first), first);
        assert_eq!(whole_entries_len_upto(&b, first + 1), b.len());
        assert_eq!(whole_entries_len_upto(&b[..first - 1], 1), 0);
        let err = entries(&b[..b.len() - 1]).nth(1).unwrap().unwrap_err();
        assert_eq!(err.offset, framed_len(b"a.x", b"1"));
    }
}

pub mod chunks;
mod format;
pub mod identity;
pub mod sample;
pub mod testing;
pub mod varint;

pub use format::{param_u64, Description, Format, FormatReader, FormatWriter, PluginError};
