//! The `gzip` format (format 2): the seed design.
//!
//! The framed entries (exactly as the host passes them) form one gzip stream,
//! cut into fixed chunks of `chunk_bytes` (default 10,000,000; the last chunk
//! is shorter). Chunks do not decode on their own: the reader carries the
//! inflate state and any partial entry from one chunk to the next.
//!
//! Deflate is flate2 over the pure-Rust miniz_oxide backend, at `level`
//! (default 1: on Xian-like entries miniz_oxide's level 1 both compresses
//! better and runs about 5 times faster than levels 2 to 9; see the zstd
//! crate's `examples/measure.rs`). The gzip header is fixed (no name, mtime 0,
//! OS 255) and the encoder is fed in fixed 64 KiB pieces whatever the host's
//! batches, so the bytes depend only on the entries and the parameters.
//!
//! The reader inflates only as much as the next batch needs, so its memory is
//! one chunk plus about `max_bytes` plus one entry; `finish` checks the gzip
//! trailer (CRC-32 and length) and fails on a truncated stream or trailing data.

use std::io::Write;

use flate2::{Compression, Crc, Decompress, FlushDecompress, GzBuilder, Status};
use statesnap_plugin_sdk::{param_u64, whole_entries_len, whole_entries_len_upto};
pub use statesnap_plugin_sdk::{Description, Format, FormatReader, FormatWriter, PluginError};

const KNOWN: &[&str] = &["chunk_bytes", "level"];
const DEFAULT_CHUNK: u64 = 10_000_000;
const DEFAULT_LEVEL: u64 = 1;
/// No chunk may be larger (CometBFT's 16,000,000-byte message limit, less room).
pub const MAX_CHUNK: u64 = 15_000_000;
/// The largest framed entry either side accepts (bounds the reader's memory).
pub const MAX_ENTRY: usize = 64 << 20;
/// The encoder is fed in pieces of this size, so its output cannot depend on
/// how the host happened to batch the entries.
const PIECE: usize = 64 << 10;
/// gzip header: magic, deflate, no flags, mtime 0 (the XFL and OS bytes follow).
const HEADER_START: [u8; 8] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0];

/// The gzip format.
pub struct Gzip;

/// What this plugin is (see [`Format::describe`]).
pub fn description() -> Description {
    Description {
        name: "gzip".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        format: 2,
        params: vec![
            ("chunk_bytes".into(), DEFAULT_CHUNK.to_string()),
            ("level".into(), DEFAULT_LEVEL.to_string()),
        ],
        summary: "one gzip stream of the framed entries cut into fixed-size chunks (the seed's format)".into(),
    }
}

fn params(params: &[(String, String)]) -> Result<(usize, u32), PluginError> {
    let chunk_bytes = param_u64(params, KNOWN, "chunk_bytes", DEFAULT_CHUNK, 1000..=MAX_CHUNK)? as usize;
    let level = param_u64(params, KNOWN, "level", DEFAULT_LEVEL, 0..=9)? as u32;
    Ok((chunk_bytes, level))
}

impl Format for Gzip {
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

fn internal(e: std::io::Error) -> PluginError {
    PluginError::Internal(e.to_string())
}

/// Entries in, fixed-size chunks of one gzip stream out.
pub struct Writer {
    chunk_bytes: usize,
    /// Framed entries not yet given to the encoder (less than `PIECE` bytes between calls).
    pending: Vec<u8>,
    encoder: Option<flate2::write::GzEncoder<Vec<u8>>>,
}

/// Cuts whole `size`-byte chunks off the front of `buf`.
fn take_chunks(buf: &mut Vec<u8>, size: usize) -> Vec<Vec<u8>> {
    let whole = buf.len() / size * size;
    let out = buf[..whole].chunks(size).map(<[u8]>::to_vec).collect();
    buf.drain(..whole);
    out
}

impl Writer {
    /// Starts a snapshot with the given parameters (defaults for those absent).
    pub fn new(p: &[(String, String)]) -> Result<Self, PluginError> {
        let (chunk_bytes, level) = params(p)?;
        let encoder = GzBuilder::new()
            .mtime(0)
            .operating_system(255)
            .write(Vec::new(), Compression::new(level));
        Ok(Writer {
            chunk_bytes,
            pending: Vec::new(),
            encoder: Some(encoder),
        })
    }

    fn encoder(&mut self) -> Result<&mut flate2::write::GzEncoder<Vec<u8>>, PluginError> {
        self.encoder
            .as_mut()
            .ok_or_else(|| PluginError::Internal("writer already finished".into()))
    }
}

impl FormatWriter for Writer {
    fn write(&mut self, batch: &[u8]) -> Result<Vec<Vec<u8>>, PluginError> {
        self.encoder()?;
        for e in statesnap_plugin_sdk::entries(batch) {
            let (k, v) = e.map_err(|e| bad(e.to_string()))?;
            if statesnap_plugin_sdk::framed_len(k, v) > MAX_ENTRY {
                return Err(bad(format!(
                    "an entry is larger than this format's {MAX_ENTRY}-byte limit"
                )));
            }
        }
        let mut pending = std::mem::take(&mut self.pending);
        let mut input = batch;
        if !pending.is_empty() {
            let fill = (PIECE - pending.len()).min(input.len());
            pending.extend_from_slice(&input[..fill]);
            input = &input[fill..];
        }
        let size = self.chunk_bytes;
        let enc = self.encoder()?;
        if pending.len() == PIECE {
            enc.write_all(&pending).map_err(internal)?;
            pending.clear();
        }
        let whole = input.len() / PIECE * PIECE;
        for piece in input[..whole].chunks(PIECE) {
            enc.write_all(piece).map_err(internal)?;
        }
        pending.extend_from_slice(&input[whole..]);
        let chunks = take_chunks(enc.get_mut(), size);
        self.pending = pending;
        Ok(chunks)
    }

    fn finish(&mut self) -> Result<Vec<Vec<u8>>, PluginError> {
        let mut enc = self
            .encoder
            .take()
            .ok_or_else(|| PluginError::Internal("writer already finished".into()))?;
        enc.write_all(&std::mem::take(&mut self.pending)).map_err(internal)?;
        let mut rest = enc.finish().map_err(internal)?;
        let mut out = take_chunks(&mut rest, self.chunk_bytes);
        if !rest.is_empty() {
            out.push(rest);
        }
        Ok(out)
    }
}

/// The framed length a partial entry declares, as far as it is known: its key
/// and value lengths once present, else what it holds so far.
fn declared_len(partial: &[u8]) -> usize {
    let u32_at = |at: usize| {
        partial
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let Some(key_len) = u32_at(0) else {
        return partial.len();
    };
    let value_at = key_len.saturating_add(4);
    match value_at.checked_add(4).and_then(|_| u32_at(value_at)) {
        Some(value_len) => value_at.saturating_add(4).saturating_add(value_len),
        None => partial.len().max(value_at.saturating_add(4)),
    }
}

/// Chunks in, entries out; inflates incrementally across chunk boundaries.
pub struct Reader {
    /// Compressed bytes fed; `input[in_pos..]` is not inflated yet.
    input: Vec<u8>,
    in_pos: usize,
    /// Inflated bytes not yet returned (may end in a partial entry).
    raw: Vec<u8>,
    header_done: bool,
    ended: bool,
    inflate: Decompress,
    crc: Crc,
}

impl Reader {
    /// Starts reading a snapshot made with the given parameters.
    pub fn new(p: &[(String, String)]) -> Result<Self, PluginError> {
        params(p)?;
        Ok(Reader {
            input: Vec::new(),
            in_pos: 0,
            raw: Vec::new(),
            header_done: false,
            ended: false,
            inflate: Decompress::new(false),
            crc: Crc::new(),
        })
    }

    /// Inflates about `want` more bytes (at least 64 KiB); false when no
    /// progress is possible until more input arrives.
    fn inflate_some(&mut self, want: usize) -> Result<bool, PluginError> {
        if !self.header_done {
            let rest = &self.input[self.in_pos..];
            if rest.len() < 10 {
                return Ok(false);
            }
            if rest[..3] != HEADER_START[..3] {
                return Err(bad("not a gzip stream"));
            }
            if rest[..8] != HEADER_START {
                return Err(bad("gzip header has flags or an mtime, which this format never writes"));
            }
            self.in_pos += 10;
            self.header_done = true;
        }
        if self.ended || self.in_pos == self.input.len() {
            return Ok(false);
        }
        let before_in = self.inflate.total_in();
        let start = self.raw.len();
        self.raw.reserve(want.max(64 << 10));
        let status = self
            .inflate
            .decompress_vec(&self.input[self.in_pos..], &mut self.raw, FlushDecompress::None)
            .map_err(|e| bad(format!("corrupt deflate data: {e}")))?;
        let used = (self.inflate.total_in() - before_in) as usize;
        self.in_pos += used;
        self.crc.update(&self.raw[start..]);
        if status == Status::StreamEnd {
            self.ended = true;
        }
        Ok(used > 0 || self.raw.len() > start || self.ended)
    }

    fn trailer(&self) -> &[u8] {
        &self.input[self.in_pos..]
    }
}

impl FormatReader for Reader {
    fn feed(&mut self, chunk: &[u8]) -> Result<(), PluginError> {
        if self.ended && self.trailer().len() + chunk.len() > 8 {
            return Err(bad("data after the end of the gzip stream"));
        }
        self.input.drain(..self.in_pos);
        self.in_pos = 0;
        self.input.extend_from_slice(chunk);
        Ok(())
    }

    fn next(&mut self, max_bytes: u32) -> Result<Option<Vec<u8>>, PluginError> {
        let max = (max_bytes as usize).max(1);
        loop {
            let n = whole_entries_len_upto(&self.raw, max);
            if n >= max {
                return Ok(Some(self.raw.drain(..n).collect()));
            }
            if declared_len(&self.raw[n..]) > MAX_ENTRY {
                return Err(bad(format!("an entry is larger than {MAX_ENTRY} bytes")));
            }
            if !self.inflate_some(max - n)? {
                return Ok((n > 0).then(|| self.raw.drain(..n).collect()));
            }
        }
    }

    fn finish(&mut self) -> Result<(), PluginError> {
        if !self.ended {
            return Err(bad("the gzip stream is truncated"));
        }
        if whole_entries_len(&self.raw) != self.raw.len() {
            return Err(bad("the stream ends inside an entry"));
        }
        if !self.raw.is_empty() {
            return Err(bad("entries left unread"));
        }
        let t = self.trailer();
        if t.len() != 8 {
            return Err(bad("the gzip trailer is missing or followed by extra data"));
        }
        let crc = u32::from_le_bytes([t[0], t[1], t[2], t[3]]);
        let size = u32::from_le_bytes([t[4], t[5], t[6], t[7]]);
        if crc != self.crc.sum() || size != self.crc.amount() {
            return Err(bad("gzip checksum mismatch"));
        }
        Ok(())
    }
}

#[cfg(target_arch = "wasm32")]
statesnap_plugin_sdk::export_format!(crate::Gzip, "../../wit");

#[cfg(test)]
mod tests;
