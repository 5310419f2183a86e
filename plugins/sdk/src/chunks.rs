//! The chunk container the block-based reference formats share: a chunk is
//! a 4-byte magic, the `u32le` number of blocks it holds, and those whole
//! blocks. A chunk is cut before a block would take it over `chunk_bytes`, so
//! every chunk decodes on its own; a block larger than that gets a chunk of
//! its own, which may not exceed the format's hard limit. What a block holds
//! is the format's business.

use crate::PluginError;

/// Bytes of a chunk's header: the magic and the block count.
pub const CHUNK_HEADER: usize = 8;

/// Writer side: packs sealed blocks into chunks.
pub struct ChunkPacker {
    magic: [u8; 4],
    chunk_bytes: usize,
    max_chunk: usize,
    /// The chunk being filled: header, then blocks.
    chunk: Vec<u8>,
    blocks_in_chunk: u32,
    chunks: u64,
}

impl ChunkPacker {
    /// Chunks starting with `magic`, cut at `chunk_bytes`, never over `max_chunk`.
    pub fn new(magic: [u8; 4], chunk_bytes: usize, max_chunk: usize) -> Self {
        ChunkPacker {
            magic,
            chunk_bytes,
            max_chunk,
            chunk: Vec::new(),
            blocks_in_chunk: 0,
            chunks: 0,
        }
    }

    /// Adds a sealed block, first finishing the chunk (into `out`) if the
    /// block would make it exceed `chunk_bytes`.
    pub fn add(&mut self, sealed: &[u8], out: &mut Vec<Vec<u8>>) -> Result<(), PluginError> {
        if CHUNK_HEADER + sealed.len() > self.max_chunk {
            return Err(PluginError::InvalidInput(format!(
                "an entry compresses to {} bytes, more than the {}-byte chunk limit",
                sealed.len(),
                self.max_chunk
            )));
        }
        if self.blocks_in_chunk > 0 && self.chunk.len() + sealed.len() > self.chunk_bytes {
            self.push_chunk(out);
        }
        if self.chunk.is_empty() {
            self.chunk.reserve(CHUNK_HEADER + sealed.len().max(self.chunk_bytes));
            self.chunk.extend_from_slice(&self.magic);
            self.chunk.extend_from_slice(&[0; 4]);
        }
        self.chunk.extend_from_slice(sealed);
        self.blocks_in_chunk += 1;
        Ok(())
    }

    /// The last chunk; every snapshot has at least one, even of an empty state.
    pub fn finish(&mut self, out: &mut Vec<Vec<u8>>) {
        if self.blocks_in_chunk > 0 || self.chunks == 0 {
            self.push_chunk(out);
        }
    }

    fn push_chunk(&mut self, out: &mut Vec<Vec<u8>>) {
        let mut chunk = std::mem::take(&mut self.chunk);
        if chunk.is_empty() {
            chunk.extend_from_slice(&self.magic);
            chunk.extend_from_slice(&[0; 4]);
        }
        chunk[4..8].copy_from_slice(&self.blocks_in_chunk.to_le_bytes());
        out.push(chunk);
        self.blocks_in_chunk = 0;
        self.chunks += 1;
    }
}

/// Reader side: the chunk being read and where its blocks stand.
pub struct ChunkCursor {
    magic: [u8; 4],
    /// The format's name, for errors.
    format: &'static str,
    /// The chunk fed last.
    pub chunk: Vec<u8>,
    /// Read position in `chunk`.
    pub pos: usize,
    /// Blocks of the chunk not started yet.
    blocks_left: u32,
    fed: bool,
}

impl ChunkCursor {
    pub fn new(magic: [u8; 4], format: &'static str) -> Self {
        ChunkCursor {
            magic,
            format,
            chunk: Vec::new(),
            pos: 0,
            blocks_left: 0,
            fed: false,
        }
    }

    fn unread(&self) -> bool {
        self.blocks_left > 0 || self.pos < self.chunk.len()
    }

    /// Takes the next chunk; `block_pending`: the reader still has entries
    /// of a decoded block (then the previous chunk was not read yet).
    pub fn feed(&mut self, chunk: &[u8], block_pending: bool) -> Result<(), PluginError> {
        if self.unread() || block_pending {
            return Err(bad("a chunk was fed before the previous one was read"));
        }
        if chunk.len() < CHUNK_HEADER || chunk[..4] != self.magic {
            return Err(bad(format!(
                "not a chunk of the {} format (no {} header)",
                self.format,
                String::from_utf8_lossy(&self.magic)
            )));
        }
        self.blocks_left = u32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
        self.chunk.clear();
        self.chunk.extend_from_slice(chunk);
        self.pos = CHUNK_HEADER;
        self.fed = true;
        Ok(())
    }

    /// Whether another block starts at `pos` (it is then counted as started);
    /// false when the chunk is used up, an error if bytes follow its last block.
    pub fn start_block(&mut self) -> Result<bool, PluginError> {
        if self.blocks_left == 0 {
            if self.pos < self.chunk.len() {
                return Err(bad("data after the chunk's last block"));
            }
            return Ok(false);
        }
        self.blocks_left -= 1;
        Ok(true)
    }

    /// The end of the snapshot: everything fed was read.
    pub fn finish(&self, block_pending: bool) -> Result<(), PluginError> {
        if !self.fed {
            return Err(bad("no chunk was fed"));
        }
        if self.unread() || block_pending {
            return Err(bad("input left over after the last chunk"));
        }
        Ok(())
    }
}

fn bad(what: impl Into<String>) -> PluginError {
    PluginError::InvalidInput(what.into())
}
