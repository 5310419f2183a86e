//! The `zstd` format (format 1), statesnap's default.
//!
//! # Layout
//!
//! Entries are gathered into *blocks* of about `block_bytes` raw bytes
//! (default 1 MiB). A block is three streams, each compressed as its own zstd
//! frame (with the zstd content checksum):
//!
//! 1. lengths: per entry, LEB128 varints `shared`, `suffix length`,
//!    `value length`, where `shared` is the length of the prefix the key shares
//!    with the previous key of the block (0 for the block's first entry);
//! 2. key suffixes, concatenated;
//! 3. values, concatenated.
//!
//! Splitting the streams lets each zstd block hold one kind of data (digits and
//! small integers, hex-heavy keys, JSON), which ruzstd's simple entropy coder
//! handles much better than interleaved rows (ratio 2.67 instead of 2.23 on
//! Xian-like entries, see `examples/measure.rs`).
//!
//! On the wire a block is `u32le length, frame` three times. A chunk is the
//! magic `SSZ1`, the `u32le` number of blocks it holds, and those whole blocks;
//! it is cut before it would exceed `chunk_bytes` (default 10,000,000), so
//! every chunk ends at an entry boundary and decodes on its own, and a chunk
//! cut short is noticed even at a block boundary.
//! A block never spans chunks; a block larger than `chunk_bytes` (one huge
//! entry) gets a chunk of its own, which may not exceed 15,000,000 bytes.
//!
//! # Compression level
//!
//! The codec is the pure-Rust `ruzstd` (C zstd does not build for
//! wasm32-wasip2 here). Its encoder implements only `Uncompressed` and
//! `Fastest` (about zstd level 1; `Default`, `Better` and `Best` are declared
//! but unimplemented and panic), so this format uses `Fastest`. The frames are
//! standard zstd and any zstd decoder reads them.
//!
//! # Reading
//!
//! The reader decodes one block at a time (bounded by `MAX_BLOCK_RAW`) and
//! returns entries in batches of about `max_bytes`, so its memory is one chunk
//! plus one decoded block, whatever the state's size. Malformed input is an
//! error, never a panic: frame lengths, varints, stream lengths and each
//! frame's checksum are checked.

use std::io::Read;

use statesnap_plugin_sdk::chunks::{ChunkCursor, ChunkPacker};
use statesnap_plugin_sdk::param_u64;
use statesnap_plugin_sdk::varint::{get as get_varint, put as put_varint};
pub use statesnap_plugin_sdk::{Description, Format, FormatReader, FormatWriter, PluginError};

const KNOWN: &[&str] = &["chunk_bytes", "block_bytes"];
const DEFAULT_CHUNK: u64 = 10_000_000;
const DEFAULT_BLOCK: u64 = 1 << 20;
/// No chunk may be larger (CometBFT's 16,000,000-byte message limit, less room).
pub const MAX_CHUNK: u64 = 15_000_000;
/// Largest raw size of a block (its three streams together). The writer never
/// makes a larger one (so one entry may be up to this size) and the reader
/// refuses to decode one: it bounds a decompression bomb.
pub const MAX_BLOCK_RAW: usize = 64 << 20;
/// Largest window a frame may ask the decoder for (ruzstd's `Fastest` uses 128 KiB).
const MAX_WINDOW: u64 = 4 << 20;
/// The first bytes of every chunk.
const MAGIC: [u8; 4] = *b"SSZ1";
const LEVEL: ruzstd::encoding::CompressionLevel = ruzstd::encoding::CompressionLevel::Fastest;

/// The zstd format.
pub struct Zstd;

/// What this plugin is (see [`Format::describe`]).
pub fn description() -> Description {
    Description {
        name: "zstd".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        format: 1,
        params: vec![
            ("chunk_bytes".into(), DEFAULT_CHUNK.to_string()),
            ("block_bytes".into(), DEFAULT_BLOCK.to_string()),
        ],
        summary: "prefix-coded keys, lengths and values as separate zstd streams in blocks; \
                  chunks of whole blocks, each decodable on its own"
            .into(),
    }
}

struct Params {
    chunk_bytes: usize,
    block_bytes: usize,
}

fn params(params: &[(String, String)]) -> Result<Params, PluginError> {
    let chunk_bytes = param_u64(params, KNOWN, "chunk_bytes", DEFAULT_CHUNK, 1000..=MAX_CHUNK)? as usize;
    let block_bytes = param_u64(params, KNOWN, "block_bytes", DEFAULT_BLOCK, 256..=(16 << 20))? as usize;
    Ok(Params {
        chunk_bytes,
        block_bytes,
    })
}

impl Format for Zstd {
    type Writer = Writer;
    type Reader = Reader;

    fn describe() -> Description {
        description()
    }

    fn writer(params: &[(String, String)]) -> Result<Writer, PluginError> {
        Writer::new(params)
    }

    fn reader(params: &[(String, String)]) -> Result<Reader, PluginError> {
        Reader::new(params)
    }
}

fn bad(what: impl Into<String>) -> PluginError {
    PluginError::InvalidInput(what.into())
}

/// The raw streams of the block being filled.
#[derive(Default)]
struct Streams {
    lengths: Vec<u8>,
    keys: Vec<u8>,
    values: Vec<u8>,
}

impl Streams {
    fn raw_len(&self) -> usize {
        self.lengths.len() + self.keys.len() + self.values.len()
    }

    fn clear(&mut self) {
        self.lengths.clear();
        self.keys.clear();
        self.values.clear();
    }
}

/// Entries in, chunks out.
pub struct Writer {
    block_bytes: usize,
    block: Streams,
    prev_key: Vec<u8>,
    chunks: ChunkPacker,
    finished: bool,
}

impl Writer {
    /// Starts a snapshot with the given parameters (defaults for those absent).
    pub fn new(p: &[(String, String)]) -> Result<Self, PluginError> {
        let p = params(p)?;
        Ok(Writer {
            block_bytes: p.block_bytes.min(p.chunk_bytes),
            block: Streams::default(),
            prev_key: Vec::new(),
            chunks: ChunkPacker::new(MAGIC, p.chunk_bytes, MAX_CHUNK as usize),
            finished: false,
        })
    }

    /// Compresses the block being filled and adds it to the chunk, first
    /// finishing the chunk if the block would make it exceed `chunk_bytes`.
    fn seal_block(&mut self, out: &mut Vec<Vec<u8>>) -> Result<(), PluginError> {
        if self.block.lengths.is_empty() {
            return Ok(());
        }
        let mut sealed = Vec::with_capacity(self.block.raw_len() / 2 + 64);
        for stream in [&self.block.lengths, &self.block.keys, &self.block.values] {
            let frame = ruzstd::encoding::compress_to_vec(&stream[..], LEVEL);
            sealed.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            sealed.extend_from_slice(&frame);
        }
        self.block.clear();
        self.prev_key.clear();
        self.chunks.add(&sealed, out)
    }

    fn add(&mut self, key: &[u8], value: &[u8], out: &mut Vec<Vec<u8>>) -> Result<(), PluginError> {
        // Varints take at most 30 bytes for three lengths.
        let size = key.len() + value.len() + 30;
        if size > MAX_BLOCK_RAW {
            return Err(PluginError::InvalidInput(format!(
                "an entry of {} bytes is larger than this format's {MAX_BLOCK_RAW}-byte limit",
                key.len() + value.len()
            )));
        }
        if self.block.raw_len() + size > MAX_BLOCK_RAW {
            self.seal_block(out)?;
        }
        let shared = key.iter().zip(&self.prev_key).take_while(|(a, b)| a == b).count();
        put_varint(&mut self.block.lengths, shared as u64);
        put_varint(&mut self.block.lengths, (key.len() - shared) as u64);
        put_varint(&mut self.block.lengths, value.len() as u64);
        self.block.keys.extend_from_slice(&key[shared..]);
        self.block.values.extend_from_slice(value);
        self.prev_key.clear();
        self.prev_key.extend_from_slice(key);
        if self.block.raw_len() >= self.block_bytes {
            self.seal_block(out)?;
        }
        Ok(())
    }
}

impl FormatWriter for Writer {
    fn write(&mut self, batch: &[u8]) -> Result<Vec<Vec<u8>>, PluginError> {
        if self.finished {
            return Err(PluginError::Internal("write after finish".into()));
        }
        let mut out = Vec::new();
        for item in statesnap_plugin_sdk::entries(batch) {
            let (key, value) = item.map_err(|e| bad(e.to_string()))?;
            self.add(key, value, &mut out)?;
        }
        Ok(out)
    }

    fn finish(&mut self) -> Result<Vec<Vec<u8>>, PluginError> {
        if std::mem::replace(&mut self.finished, true) {
            return Err(PluginError::Internal("finish called twice".into()));
        }
        let mut out = Vec::new();
        self.seal_block(&mut out)?;
        self.chunks.finish(&mut out);
        Ok(out)
    }
}

/// Decodes one zstd frame of `data` (which must hold exactly that frame) into
/// `out`, refusing more than `limit` bytes and checking the content checksum.
fn decode_frame(data: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), PluginError> {
    out.clear();
    let mut src = data;
    let mut decoder = ruzstd::decoding::StreamingDecoder::new_with_max_window_size(&mut src, MAX_WINDOW)
        .map_err(|e| bad(format!("bad zstd frame: {e}")))?;
    (&mut decoder)
        .take(limit as u64 + 1)
        .read_to_end(out)
        .map_err(|e| bad(format!("bad zstd frame: {e}")))?;
    if out.len() > limit {
        return Err(bad(format!("a block decodes to more than {MAX_BLOCK_RAW} bytes")));
    }
    let frame = &decoder.decoder;
    if !frame.is_finished() {
        return Err(bad("truncated zstd frame"));
    }
    match (frame.get_checksum_from_data(), frame.get_calculated_checksum()) {
        (Some(stored), Some(computed)) if stored == computed => {}
        (Some(_), Some(_)) => return Err(bad("zstd frame checksum mismatch")),
        _ => return Err(bad("zstd frame has no content checksum")),
    }
    drop(decoder);
    if !src.is_empty() {
        return Err(bad("data after the end of a zstd frame"));
    }
    Ok(())
}

/// Chunks in, entries out, one block decoded at a time.
pub struct Reader {
    chunk: ChunkCursor,
    block: Streams,
    /// Read positions in the decoded block's three streams.
    pos: [usize; 3],
    prev_key: Vec<u8>,
}

impl Reader {
    /// Starts reading a snapshot made with the given parameters.
    pub fn new(p: &[(String, String)]) -> Result<Self, PluginError> {
        params(p)?;
        Ok(Reader {
            chunk: ChunkCursor::new(MAGIC, "zstd"),
            block: Streams::default(),
            pos: [0; 3],
            prev_key: Vec::new(),
        })
    }

    fn block_pending(&self) -> bool {
        self.pos[0] < self.block.lengths.len()
    }

    /// Takes the next `u32le length, frame` off the chunk.
    fn next_frame(&mut self) -> Result<&[u8], PluginError> {
        let rest = &self.chunk.chunk[self.chunk.pos..];
        if rest.len() < 4 {
            return Err(bad("chunk ends inside a block"));
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let frame = rest
            .get(4..4 + len)
            .ok_or_else(|| bad("chunk ends inside a zstd frame"))?;
        self.chunk.pos += 4 + len;
        Ok(frame)
    }

    /// Decodes the chunk's next block; false when the chunk is used up.
    fn next_block(&mut self) -> Result<bool, PluginError> {
        if !self.chunk.start_block()? {
            return Ok(false);
        }
        let mut streams = std::mem::take(&mut self.block);
        let result = (|| {
            let mut left = MAX_BLOCK_RAW;
            for stream in [&mut streams.lengths, &mut streams.keys, &mut streams.values] {
                let frame = self.next_frame()?;
                decode_frame(frame, left, stream)?;
                left -= stream.len();
            }
            if streams.lengths.is_empty() {
                return Err(bad("empty block"));
            }
            Ok(())
        })();
        self.block = streams;
        self.pos = [0; 3];
        self.prev_key.clear();
        if result.is_err() {
            self.block.clear();
        }
        result.map(|()| true)
    }

    /// Decodes the next entry of the current block into `out`.
    fn next_entry(&mut self, out: &mut Vec<u8>) -> Result<(), PluginError> {
        let b = &self.block;
        let p = &mut self.pos;
        let mut lens = [0usize; 3];
        for l in &mut lens {
            *l = get_varint(&b.lengths, &mut p[0]).ok_or_else(|| bad("truncated entry lengths"))? as usize;
        }
        let [shared, suffix_len, value_len] = lens;
        if shared > self.prev_key.len() {
            return Err(bad("an entry shares more of its key than the previous key has"));
        }
        let suffix = b
            .keys
            .get(p[1]..p[1].saturating_add(suffix_len))
            .ok_or_else(|| bad("key stream too short"))?;
        let value = b
            .values
            .get(p[2]..p[2].saturating_add(value_len))
            .ok_or_else(|| bad("value stream too short"))?;
        if shared + suffix.len() > u32::MAX as usize || value.len() > u32::MAX as usize {
            return Err(bad("entry too large"));
        }
        p[1] += suffix_len;
        p[2] += value_len;
        self.prev_key.truncate(shared);
        self.prev_key.extend_from_slice(suffix);
        statesnap_plugin_sdk::push_entry(out, &self.prev_key, value);
        if p[0] == b.lengths.len() && (p[1] != b.keys.len() || p[2] != b.values.len()) {
            return Err(bad("key or value stream longer than the block's entries"));
        }
        Ok(())
    }
}

impl FormatReader for Reader {
    fn feed(&mut self, chunk: &[u8]) -> Result<(), PluginError> {
        self.chunk.feed(chunk, self.block_pending())
    }

    fn next(&mut self, max_bytes: u32) -> Result<Option<Vec<u8>>, PluginError> {
        let max = (max_bytes as usize).max(1);
        let mut out = Vec::new();
        while out.len() < max {
            if !self.block_pending() && !self.next_block()? {
                break;
            }
            self.next_entry(&mut out)?;
        }
        Ok(if out.is_empty() { None } else { Some(out) })
    }

    fn finish(&mut self) -> Result<(), PluginError> {
        self.chunk.finish(self.block_pending())
    }
}

#[cfg(target_arch = "wasm32")]
statesnap_plugin_sdk::export_format!(crate::Zstd, "../../wit");

#[cfg(test)]
mod tests;
