//! The two sides of a format, as the snapshot pipelines see them: a plugin
//! instance, or (for benchmarks) the same codec linked natively.

use crate::plugin::{Plugin, PluginError, PluginReader, PluginWriter};

/// Bytes of decoded entries asked of a decoder per call.
pub(crate) const DECODE_BATCH_BYTES: u32 = 4 << 20;

/// Bytes of entries one chunk may decode to: a restoring node holds them in
/// memory until the chunk's range proof is checked, so restores refuse a
/// chunk that decodes to more, and `create` never makes one.
pub const MAX_CHUNK_ENTRY_BYTES: usize = 256 << 20;

/// The two sides of a format: the encoder that makes the chunks and the
/// decoder that reads them back (the self-check of `create`).
pub struct Codec {
    pub encoder: Box<dyn ChunkEncoder>,
    pub decoder: Box<dyn ChunkDecoder>,
}

impl Codec {
    /// `plugin`'s writer and reader with `params`.
    pub fn plugin(plugin: &Plugin, params: &[(String, String)]) -> Result<Self, PluginError> {
        Ok(Codec {
            encoder: Box::new(plugin.writer(params)?),
            decoder: Box::new(plugin.reader(params)?),
        })
    }
}

/// Entries in, chunks out.
pub trait ChunkEncoder: Send {
    fn write(&mut self, batch: &[u8]) -> Result<Vec<Vec<u8>>, PluginError>;
    fn finish(&mut self) -> Result<Vec<Vec<u8>>, PluginError>;
    /// Wasm fuel spent so far (0 for native codecs).
    fn fuel_used(&self) -> u64 {
        0
    }
}

/// Chunks in, entries out.
pub trait ChunkDecoder: Send {
    fn feed(&mut self, chunk: &[u8]) -> Result<(), PluginError>;
    fn next_batch(&mut self, max_bytes: u32) -> Result<Option<Vec<u8>>, PluginError>;
    fn finish(&mut self) -> Result<(), PluginError>;
    /// Wasm fuel spent so far (0 for native codecs).
    fn fuel_used(&self) -> u64 {
        0
    }
}

impl ChunkEncoder for PluginWriter {
    fn write(&mut self, batch: &[u8]) -> Result<Vec<Vec<u8>>, PluginError> {
        PluginWriter::write(self, batch)
    }
    fn finish(&mut self) -> Result<Vec<Vec<u8>>, PluginError> {
        PluginWriter::finish(self)
    }
    fn fuel_used(&self) -> u64 {
        PluginWriter::fuel_used(self)
    }
}

impl ChunkDecoder for PluginReader {
    fn feed(&mut self, chunk: &[u8]) -> Result<(), PluginError> {
        PluginReader::feed(self, chunk)
    }
    fn next_batch(&mut self, max_bytes: u32) -> Result<Option<Vec<u8>>, PluginError> {
        PluginReader::next_batch(self, max_bytes)
    }
    fn finish(&mut self) -> Result<(), PluginError> {
        PluginReader::finish(self)
    }
    fn fuel_used(&self) -> u64 {
        PluginReader::fuel_used(self)
    }
}
