//! The simplest format: each batch of entries is a chunk, as framed. Not for
//! production (no compression, chunk size follows the host's batches); it is
//! the base of the test plugins and a starting point for plugin authors.

use crate::{FormatReader, FormatWriter, PluginError};

/// Writes each batch as one chunk (and one empty chunk for an empty state).
#[derive(Default)]
pub struct IdentityWriter {
    chunks: u64,
}

impl FormatWriter for IdentityWriter {
    fn write(&mut self, batch: &[u8]) -> Result<Vec<Vec<u8>>, PluginError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        self.chunks += 1;
        Ok(vec![batch.to_vec()])
    }

    fn finish(&mut self) -> Result<Vec<Vec<u8>>, PluginError> {
        Ok(if self.chunks == 0 { vec![Vec::new()] } else { Vec::new() })
    }
}

/// Returns each fed chunk's entries, checking the framing, in batches of
/// about `max_bytes`.
#[derive(Default)]
pub struct IdentityReader {
    pending: Vec<u8>,
    pos: usize,
}

impl FormatReader for IdentityReader {
    fn feed(&mut self, chunk: &[u8]) -> Result<(), PluginError> {
        if self.pos < self.pending.len() {
            return Err(PluginError::InvalidInput(
                "a chunk was fed before the previous one was read".into(),
            ));
        }
        if crate::whole_entries_len(chunk) != chunk.len() {
            return Err(PluginError::InvalidInput(
                "chunk does not hold whole framed entries".into(),
            ));
        }
        self.pending.clear();
        self.pending.extend_from_slice(chunk);
        self.pos = 0;
        Ok(())
    }

    fn next(&mut self, max_bytes: u32) -> Result<Option<Vec<u8>>, PluginError> {
        let rest = &self.pending[self.pos..];
        let n = crate::whole_entries_len_upto(rest, (max_bytes as usize).max(1));
        if n == 0 {
            return Ok(None);
        }
        self.pos += n;
        Ok(Some(rest[..n].to_vec()))
    }

    fn finish(&mut self) -> Result<(), PluginError> {
        if self.pos < self.pending.len() {
            return Err(PluginError::InvalidInput("entries left unread".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{decode, encode};
    use crate::{Description, Format};

    struct Identity;

    impl Format for Identity {
        type Writer = IdentityWriter;
        type Reader = IdentityReader;
        fn describe() -> Description {
            unreachable!()
        }
        fn writer(_: &[(String, String)]) -> Result<IdentityWriter, PluginError> {
            Ok(IdentityWriter::default())
        }
        fn reader(_: &[(String, String)]) -> Result<IdentityReader, PluginError> {
            Ok(IdentityReader::default())
        }
    }

    #[test]
    fn round_trip() {
        let entries = crate::sample::xian_like(1000, 1);
        let chunks = encode::<Identity>(&entries, &[], 10_000).unwrap();
        assert!(chunks.len() > 5);
        for max in [0, 1, 500, 1 << 20] {
            assert_eq!(decode::<Identity>(&chunks, &[], max).unwrap(), entries);
        }
        assert_eq!(encode::<Identity>(&[], &[], 10).unwrap(), vec![Vec::<u8>::new()]);
        assert!(decode::<Identity>(&[vec![1, 0, 0, 0]], &[], 10).is_err());
    }
}
