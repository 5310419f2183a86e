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

/// Returns each fed chunk's entries, checking the framing.
#[derive(Default)]
pub struct IdentityReader {
    pending: Option<Vec<u8>>,
}

impl FormatReader for IdentityReader {
    fn feed(&mut self, chunk: &[u8]) -> Result<(), PluginError> {
        if crate::whole_entries_len(chunk) != chunk.len() {
            return Err(PluginError::InvalidInput(
                "chunk does not hold whole framed entries".into(),
            ));
        }
        self.pending = Some(chunk.to_vec());
        Ok(())
    }

    fn next(&mut self, _max_bytes: u32) -> Result<Option<Vec<u8>>, PluginError> {
        Ok(self.pending.take().filter(|c| !c.is_empty()))
    }

    fn finish(&mut self) -> Result<(), PluginError> {
        Ok(())
    }
}
