//! The `brotli` format (format 3): about 15% smaller snapshots than the
//! default format 1 on Xian-like states, for more work when creating them.
//!
//! # Layout
//!
//! Entries are gathered into *blocks* of about `block_bytes` (default 1 MiB)
//! of the streams below. Each key is front-coded against the previous key of
//! its block (`shared` bytes in common, then a suffix). The key suffix and the
//! value are each split into *text* and *runs*: a run is a stretch of at
//! least 8 lowercase hex digits holding a letter (Xian's 64-digit account
//! keys, hashes), stored as packed nibbles, or of at least 2 decimal digits
//! (balances, nonces, big integers, times), stored as they are; the text is
//! what is left. A block is six streams:
//!
//! 0. lengths: per entry, LEB128 varints `shared`, `key text length`,
//!    `value text length`;
//! 1. runs: for the key suffix, then for the value, the number of runs, then
//!    per run the varints `gap` (text bytes between the previous run, or the
//!    start, and this one) and `code` (`2 × length + 1` for a hex run, its
//!    length in digits, or `2 × length` for a decimal run);
//! 2. key text and 3. value text, concatenated;
//! 4. hex runs, two digits a byte (high nibble first; an odd run ends with a
//!    zero low nibble);
//! 5. decimal runs, as ASCII digits.
//!
//! Each stream is compressed on its own as a brotli stream (RFC 7932). The
//! split is where most of the gain comes from: the hex stream holds the
//! state's random account bytes at 8 bits a byte, which no codec can shrink,
//! and keeps them out of the others' way; the digits are mostly random too, and
//! brotli's entropy coder takes them to about 3.5 bits a digit (3.32 for
//! uniform digits); what is left in the text, runs and lengths streams is
//! mostly repeated structure (`currency.balances:`, `{"__fixed__":"`).
//!
//! On the wire a block is the `u32le` CRC-32 of its six raw streams (one after
//! the other), then per stream `u32le raw length, u32le compressed length,
//! brotli stream`. A chunk is the magic `SSB1`, the `u32le` number of blocks it
//! holds, and those whole blocks; it is cut before it would exceed
//! `chunk_bytes` (default 10,000,000), so every chunk ends at an entry boundary
//! and decodes on its own. A block never spans chunks; a block larger than
//! `chunk_bytes` (one huge entry) gets a chunk of its own, which may not exceed
//! 15,000,000 bytes.
//!
//! # Compression and the work budget
//!
//! The codec is the pure-Rust `brotli` crate (C libraries do not build for
//! wasm32-wasip2 here), without its `std` feature, so its cost model takes
//! logarithms from its own tables rather than the platform's libm and the
//! output is the same natively and in wasm. The window is the smallest that
//! holds the stream, at most 4 MiB (`codec::MAX_WINDOW_BITS`): blocks are
//! independent, so a larger one would find nothing more.
//!
//! `quality` (default 10) is what the lengths, runs and text streams are
//! compressed at; the hex and digit streams use at most quality 1, as higher
//! ones gain nothing there (see `DIGIT_QUALITY`). Brotli's work per byte
//! depends on the data: qualities 10 and 11 (its optimal parse) cost up to 16
//! and 33 times quality 5 on random text of a few letters, more than a plugin
//! call's fuel for one host batch. So every block has a work budget,
//! `BUDGET_PER_BYTE` units per byte of its entries as the host framed them
//! (counting at most `BUDGET_CAP_BYTES`), and each stream, in
//! `BUDGET_ORDER`, gets the quality asked for if the budget still affords
//! that quality's worst cost (`WORK`, `WORK_FIXED`), else the highest it
//! affords, at least `FLOOR_QUALITY`. The choice depends only on lengths,
//! so it is the same whatever the batches. On Xian-like entries at quality 10
//! the budget covers quality 10 for the lengths, runs and key text and 8 for
//! the value text.
//!
//! By the worst cases of those tables, a call given a host batch of 1 MiB
//! (it seals at most its own entries and the rest of one block) does at most
//! about 14 billion units of work, and one given a `MAX_ENTRY` entry about
//! 13 billion, under the host's 20 billion per call. The most measured, on the
//! costliest inputs found (random text of two to four letters, runs of digits,
//! random bytes, entries of 8 MiB, blocks of 4 KiB to 2 MiB, quality 10 and
//! 11), was 5.7 billion; about 3 billion on Xian-like entries.
//!
//! # Reading
//!
//! The reader decodes one block at a time (its raw streams are bounded by
//! `MAX_BLOCK_RAW`, checked before decoding: a decompression bomb stops
//! there) and returns entries in batches of about `max_bytes`, so its memory
//! is one chunk plus one decoded block plus one entry, whatever the state's
//! size. Decoding needs no parameters. Malformed input is an error, never a
//! panic: stream lengths, brotli streams (which must decode to exactly their
//! stated length and use a window of at most 4 MiB), varints, runs, digits
//! and the CRC-32 are all checked.

#[cfg(test)]
use statesnap_plugin_sdk::chunks::CHUNK_HEADER;
use statesnap_plugin_sdk::chunks::{ChunkCursor, ChunkPacker};
use statesnap_plugin_sdk::param_u64;
use statesnap_plugin_sdk::varint::{get as get_varint, put as put_varint};
pub use statesnap_plugin_sdk::{Description, Format, FormatReader, FormatWriter, PluginError};

mod codec;
mod runs;

const KNOWN: &[&str] = &["chunk_bytes", "block_bytes", "quality"];
const DEFAULT_CHUNK: u64 = 10_000_000;
const DEFAULT_BLOCK: u64 = 1 << 20;
const DEFAULT_QUALITY: u64 = 10;
/// Largest `block_bytes`. Larger blocks gain nothing: blocks are compressed
/// independently but each already holds thousands of entries, and the work
/// budget stops growing at [`BUDGET_CAP_BYTES`].
const MAX_BLOCK_PARAM: u64 = 2 << 20;
/// No chunk may be larger (CometBFT's 16,000,000-byte message limit, less room).
pub const MAX_CHUNK: u64 = 15_000_000;
/// Largest entry (key and value together) either side accepts. Its block is
/// compressed in the call that gets it, so its size bounds that call's work.
pub const MAX_ENTRY: usize = 8 << 20;
/// Largest raw size of a block (its six streams together). The writer never
/// makes a larger one and the reader refuses to decode one: it bounds a
/// decompression bomb. A block of one [`MAX_ENTRY`] entry fits (see
/// `runs::max_split_len`).
pub const MAX_BLOCK_RAW: usize = 24 << 20;
/// Worst encoder work per byte at each quality: wasm fuel (about one unit per
/// instruction) per byte, measured on the inputs that cost most (random text
/// of a few letters: quality 10 and 11 spend up to 22 and 45 billion units a
/// MiB on it, against 2 to 3 billion on Xian-like entries), plus 15%.
const WORK: [u64; 12] = [300, 350, 500, 550, 550, 1600, 1900, 2800, 4500, 8900, 25_000, 52_000];
/// Work to start a stream at each quality, whatever its length (qualities 5
/// to 9 set up large hash tables: 33 million units, measured on 256-byte blocks).
const WORK_FIXED: [u64; 12] = [
    100_000, 150_000, 400_000, 500_000, 1_000_000, 40_000_000, 40_000_000, 40_000_000, 40_000_000, 40_000_000,
    16_000_000, 16_000_000,
];
/// A block's work budget, per byte of its entries (as the host frames them:
/// not the streams, which runs of digits can make larger) up to
/// [`BUDGET_CAP_BYTES`].
const BUDGET_PER_BYTE: u64 = 6000;
const BUDGET_CAP_BYTES: usize = 1 << 20;
/// A stream the budget cannot afford at any higher quality gets this one.
const FLOOR_QUALITY: u32 = 1;
/// The order in which streams draw on the budget: the cheap ones first, then
/// by gain per unit of work on Xian-like entries.
const BUDGET_ORDER: [usize; STREAMS] = [HEX, DIGITS, KEY_TEXT, LENGTHS, RUNS, VALUE_TEXT];
/// Most quality for the hex stream (random bytes: higher ones find nothing).
const HEX_QUALITY: u32 = 1;
/// Most quality for the digit stream. On random digits qualities 2 to 9 find
/// short matches that cost more than the digits and come out 5 to 9% larger
/// than quality 1; 10 and 11 are 3% smaller than 1 for 40 times the work.
const DIGIT_QUALITY: u32 = 1;
/// The first bytes of every chunk.
const MAGIC: [u8; 4] = *b"SSB1";
/// Block header: the CRC-32 of its raw streams.
const BLOCK_HEADER: usize = 4;

/// The streams of a block, in their order on the wire.
const LENGTHS: usize = 0;
const RUNS: usize = 1;
const KEY_TEXT: usize = 2;
const VALUE_TEXT: usize = 3;
const HEX: usize = 4;
const DIGITS: usize = 5;
const STREAMS: usize = 6;

/// The brotli format.
pub struct Brotli;

/// What this plugin is (see [`Format::describe`]).
pub fn description() -> Description {
    Description {
        name: "brotli".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        format: 3,
        params: vec![
            ("chunk_bytes".into(), DEFAULT_CHUNK.to_string()),
            ("block_bytes".into(), DEFAULT_BLOCK.to_string()),
            ("quality".into(), DEFAULT_QUALITY.to_string()),
        ],
        summary: "prefix-coded keys; hex and digit runs split from the text; six brotli streams per block; \
                  chunks of whole blocks, each decodable on its own"
            .into(),
    }
}

struct Params {
    chunk_bytes: usize,
    block_bytes: usize,
    quality: u32,
}

fn params(params: &[(String, String)]) -> Result<Params, PluginError> {
    let chunk_bytes = param_u64(params, KNOWN, "chunk_bytes", DEFAULT_CHUNK, 1000..=MAX_CHUNK)? as usize;
    let block_bytes = param_u64(params, KNOWN, "block_bytes", DEFAULT_BLOCK, 4096..=MAX_BLOCK_PARAM)? as usize;
    let quality = param_u64(params, KNOWN, "quality", DEFAULT_QUALITY, 0..=11)? as u32;
    Ok(Params {
        chunk_bytes,
        block_bytes,
        quality,
    })
}

impl Format for Brotli {
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

/// The raw streams of a block.
#[derive(Default)]
struct Streams {
    streams: [Vec<u8>; STREAMS],
    /// The size of the block's entries as the host framed them.
    entry_bytes: usize,
}

impl Streams {
    fn raw_len(&self) -> usize {
        self.streams.iter().map(Vec::len).sum()
    }

    fn clear(&mut self) {
        self.streams.iter_mut().for_each(Vec::clear);
        self.entry_bytes = 0;
    }

    fn is_empty(&self) -> bool {
        self.streams[LENGTHS].is_empty()
    }
}

/// The quality each stream of `block` is compressed at: the one asked for
/// (at most [`HEX_QUALITY`] and [`DIGIT_QUALITY`] for those streams) if the
/// block's work budget still affords it, else the highest it affords, else
/// [`FLOOR_QUALITY`]. Depends only on lengths, so it is the same whatever the
/// batches.
fn stream_qualities(block: &Streams, quality: u32) -> [u32; STREAMS] {
    let mut budget = BUDGET_PER_BYTE * block.entry_bytes.min(BUDGET_CAP_BYTES) as u64;
    let mut out = [0; STREAMS];
    for index in BUDGET_ORDER {
        let wanted = match index {
            HEX => quality.min(HEX_QUALITY),
            DIGITS => quality.min(DIGIT_QUALITY),
            _ => quality,
        };
        let work = |q: u32| WORK_FIXED[q as usize] + block.streams[index].len() as u64 * WORK[q as usize];
        let floor = FLOOR_QUALITY.min(wanted);
        let q = (floor..=wanted).rev().find(|&q| work(q) <= budget).unwrap_or(floor);
        budget = budget.saturating_sub(work(q));
        out[index] = q;
    }
    out
}

/// Entries in, chunks out.
pub struct Writer {
    block_bytes: usize,
    quality: u32,
    block: Streams,
    prev_key: Vec<u8>,
    /// The runs of the key or value being split (their count goes first).
    scratch: Vec<u8>,
    chunks: ChunkPacker,
    finished: bool,
}

impl Writer {
    /// Starts a snapshot with the given parameters (defaults for those absent).
    pub fn new(p: &[(String, String)]) -> Result<Self, PluginError> {
        let p = params(p)?;
        Ok(Writer {
            block_bytes: p.block_bytes.min(p.chunk_bytes),
            quality: p.quality,
            block: Streams::default(),
            prev_key: Vec::new(),
            scratch: Vec::new(),
            chunks: ChunkPacker::new(MAGIC, p.chunk_bytes, MAX_CHUNK as usize),
            finished: false,
        })
    }

    /// Compresses the block being filled and adds it to the chunk, first
    /// finishing the chunk if the block would make it exceed `chunk_bytes`.
    fn seal_block(&mut self, out: &mut Vec<Vec<u8>>) -> Result<(), PluginError> {
        if self.block.is_empty() {
            return Ok(());
        }
        let qualities = stream_qualities(&self.block, self.quality);
        let mut crc = crc32fast::Hasher::new();
        let mut sealed = Vec::with_capacity(self.block.raw_len() / 2 + 64);
        sealed.extend_from_slice(&[0; BLOCK_HEADER]);
        for (stream, quality) in self.block.streams.iter().zip(qualities) {
            crc.update(stream);
            sealed.extend_from_slice(&(stream.len() as u32).to_le_bytes());
            let len_at = sealed.len();
            sealed.extend_from_slice(&[0; 4]);
            codec::compress(stream, quality, &mut sealed)?;
            let compressed = (sealed.len() - len_at - 4) as u32;
            sealed[len_at..len_at + 4].copy_from_slice(&compressed.to_le_bytes());
        }
        sealed[..BLOCK_HEADER].copy_from_slice(&crc.finalize().to_le_bytes());
        self.block.clear();
        self.prev_key.clear();
        self.chunks.add(&sealed, out)
    }

    fn add(&mut self, key: &[u8], value: &[u8], out: &mut Vec<Vec<u8>>) -> Result<(), PluginError> {
        let size = key.len() + value.len();
        if size > MAX_ENTRY {
            return Err(PluginError::InvalidInput(format!(
                "an entry of {size} bytes is larger than this format's {MAX_ENTRY}-byte limit"
            )));
        }
        if self.block.raw_len() + runs::max_split_len(size) > MAX_BLOCK_RAW {
            self.seal_block(out)?;
        }
        let shared = key.iter().zip(&self.prev_key).take_while(|(a, b)| a == b).count();
        let [_, runs, key_text, value_text, hex, digits] = &mut self.block.streams;
        let key_text_len = runs::split(&key[shared..], key_text, runs, hex, digits, &mut self.scratch);
        let value_text_len = runs::split(value, value_text, runs, hex, digits, &mut self.scratch);
        let lengths = &mut self.block.streams[LENGTHS];
        put_varint(lengths, shared as u64);
        put_varint(lengths, key_text_len as u64);
        put_varint(lengths, value_text_len as u64);
        self.block.entry_bytes += statesnap_plugin_sdk::framed_len(key, value);
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

/// Chunks in, entries out, one block decoded at a time.
pub struct Reader {
    chunk: ChunkCursor,
    block: Streams,
    /// Read positions in the decoded block's streams.
    pos: [usize; STREAMS],
    prev_key: Vec<u8>,
}

/// Takes `n` bytes off `buf` at `pos`.
fn take<'a>(buf: &'a [u8], pos: &mut usize, n: usize, what: &str) -> Result<&'a [u8], PluginError> {
    let out = buf
        .get(*pos..pos.saturating_add(n))
        .ok_or_else(|| bad(format!("chunk ends inside {what}")))?;
    *pos += n;
    Ok(out)
}

fn u32_at(buf: &[u8], pos: &mut usize, what: &str) -> Result<usize, PluginError> {
    let b = take(buf, pos, 4, what)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

impl Reader {
    /// Starts reading a snapshot made with the given parameters.
    pub fn new(p: &[(String, String)]) -> Result<Self, PluginError> {
        params(p)?;
        Ok(Reader {
            chunk: ChunkCursor::new(MAGIC, "brotli"),
            block: Streams::default(),
            pos: [0; STREAMS],
            prev_key: Vec::new(),
        })
    }

    fn block_pending(&self) -> bool {
        self.pos[LENGTHS] < self.block.streams[LENGTHS].len()
    }

    /// Decodes the chunk's next block; false when the chunk is used up.
    fn next_block(&mut self) -> Result<bool, PluginError> {
        if !self.chunk.start_block()? {
            return Ok(false);
        }
        let mut block = std::mem::take(&mut self.block);
        let result = (|| {
            let chunk = &self.chunk.chunk;
            let pos = &mut self.chunk.pos;
            let crc = u32_at(chunk, pos, "a block header")? as u32;
            let mut left = MAX_BLOCK_RAW;
            let mut hasher = crc32fast::Hasher::new();
            for stream in block.streams.iter_mut() {
                let raw_len = u32_at(chunk, pos, "a stream header")?;
                let compressed_len = u32_at(chunk, pos, "a stream header")?;
                if raw_len > left {
                    return Err(bad(format!("a block decodes to more than {MAX_BLOCK_RAW} bytes")));
                }
                left -= raw_len;
                let data = take(chunk, pos, compressed_len, "a brotli stream")?;
                codec::decompress(data, raw_len, stream)?;
                hasher.update(stream);
            }
            if hasher.finalize() != crc {
                return Err(bad("block checksum mismatch"));
            }
            if block.is_empty() {
                return Err(bad("empty block"));
            }
            Ok(())
        })();
        self.block = block;
        self.pos = [0; STREAMS];
        self.prev_key.clear();
        if result.is_err() {
            self.block.clear();
        }
        result.map(|()| true)
    }

    /// Decodes the next entry of the current block into `out`.
    fn next_entry(&mut self, out: &mut Vec<u8>) -> Result<(), PluginError> {
        let s = &self.block.streams;
        let p = &mut self.pos;
        let mut lens = [0usize; 3];
        for l in &mut lens {
            let v = get_varint(&s[LENGTHS], &mut p[LENGTHS]).ok_or_else(|| bad("truncated entry lengths"))?;
            *l = usize::try_from(v).map_err(|_| bad("entry length out of range"))?;
        }
        let [shared, key_text_len, value_text_len] = lens;
        if shared > self.prev_key.len() {
            return Err(bad("an entry shares more of its key than the previous key has"));
        }
        self.prev_key.truncate(shared);
        runs::join(s, p, KEY_TEXT, key_text_len, MAX_ENTRY - shared, &mut self.prev_key)?;
        let key = &self.prev_key;
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key);
        let len_at = out.len();
        out.extend_from_slice(&[0; 4]);
        runs::join(s, p, VALUE_TEXT, value_text_len, MAX_ENTRY - key.len(), out)?;
        let value_len = (out.len() - len_at - 4) as u32;
        out[len_at..len_at + 4].copy_from_slice(&value_len.to_le_bytes());
        if p[LENGTHS] == s[LENGTHS].len() && (1..STREAMS).any(|i| p[i] != s[i].len()) {
            return Err(bad("a stream is longer than the block's entries"));
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
statesnap_plugin_sdk::export_format!(crate::Brotli, "../../wit");

#[cfg(test)]
mod tests;
