//! The `gzip` format (format 2): the seed design. The framed entries form one
//! gzip stream (deflate via the pure-Rust miniz_oxide backend; header with
//! mtime 0, no name, so the bytes are deterministic), cut into fixed chunks of
//! `chunk_bytes`. Chunks do not decode on their own: the reader carries the
//! stream and any partial entry from one chunk to the next.

use std::io::Write;

use flate2::{Compression, Crc, Decompress, FlushDecompress, GzBuilder, Status};
use statesnap_plugin_sdk::{param_u64, Description, Format, FormatReader, FormatWriter, PluginError};

const KNOWN: &[&str] = &["chunk_bytes", "level"];
const DEFAULT_CHUNK: u64 = 10_000_000;
const DEFAULT_LEVEL: u64 = 6;
const MAX_CHUNK: u64 = 15_000_000;
/// An entry larger than this is refused while decoding (bounds memory).
const MAX_ENTRY: usize = 64 << 20;

/// The gzip format.
pub struct Gzip;

impl Format for Gzip {
    type Writer = Writer;
    type Reader = Reader;

    fn describe() -> Description {
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

    fn writer(params: &[(String, String)]) -> Result<Writer, PluginError> {
        let chunk_bytes = param_u64(params, KNOWN, "chunk_bytes", DEFAULT_CHUNK, 1000..=MAX_CHUNK)? as usize;
        let level = param_u64(params, KNOWN, "level", DEFAULT_LEVEL, 0..=9)? as u32;
        let encoder = GzBuilder::new().mtime(0).write(Vec::new(), Compression::new(level));
        Ok(Writer {
            chunk_bytes,
            encoder: Some(encoder),
        })
    }

    fn reader(params: &[(String, String)]) -> Result<Reader, PluginError> {
        param_u64(params, KNOWN, "chunk_bytes", DEFAULT_CHUNK, 1000..=MAX_CHUNK)?;
        param_u64(params, KNOWN, "level", DEFAULT_LEVEL, 0..=9)?;
        Ok(Reader {
            input: Vec::new(),
            raw: Vec::new(),
            header_done: false,
            ended: false,
            inflate: Decompress::new(false),
            crc: Crc::new(),
        })
    }
}

fn bad(what: &str) -> PluginError {
    PluginError::InvalidInput(what.to_string())
}

/// Entries in, fixed-size chunks of one gzip stream out.
pub struct Writer {
    chunk_bytes: usize,
    encoder: Option<flate2::write::GzEncoder<Vec<u8>>>,
}

impl Writer {
    fn encoder(&mut self) -> Result<&mut flate2::write::GzEncoder<Vec<u8>>, PluginError> {
        self.encoder
            .as_mut()
            .ok_or_else(|| PluginError::Internal("writer already finished".into()))
    }
}

/// Cuts whole `size`-byte chunks off the front of `buf`.
fn take_chunks(buf: &mut Vec<u8>, size: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut start = 0;
    while buf.len() - start >= size {
        out.push(buf[start..start + size].to_vec());
        start += size;
    }
    buf.drain(..start);
    out
}

impl FormatWriter for Writer {
    fn write(&mut self, batch: &[u8]) -> Result<Vec<Vec<u8>>, PluginError> {
        if statesnap_plugin_sdk::whole_entries_len(batch) != batch.len() {
            return Err(bad("batch does not hold whole framed entries"));
        }
        let size = self.chunk_bytes;
        let enc = self.encoder()?;
        enc.write_all(batch).map_err(|e| PluginError::Internal(e.to_string()))?;
        Ok(take_chunks(enc.get_mut(), size))
    }

    fn finish(&mut self) -> Result<Vec<Vec<u8>>, PluginError> {
        let enc = self
            .encoder
            .take()
            .ok_or_else(|| PluginError::Internal("writer already finished".into()))?;
        let mut rest = enc.finish().map_err(|e| PluginError::Internal(e.to_string()))?;
        let mut out = take_chunks(&mut rest, self.chunk_bytes);
        if !rest.is_empty() {
            out.push(rest);
        }
        Ok(out)
    }
}

/// Chunks in, entries out; inflates incrementally across chunk boundaries.
pub struct Reader {
    /// Compressed bytes not yet inflated.
    input: Vec<u8>,
    /// Inflated bytes not yet returned (may end in a partial entry).
    raw: Vec<u8>,
    header_done: bool,
    ended: bool,
    inflate: Decompress,
    crc: Crc,
}

impl Reader {
    /// Inflates up to about `want` more bytes; false when no progress is possible.
    fn inflate_some(&mut self, want: usize) -> Result<bool, PluginError> {
        if !self.header_done {
            if self.input.len() < 10 {
                return Ok(false);
            }
            if self.input[..3] != [0x1f, 0x8b, 8] {
                return Err(bad("not a gzip stream"));
            }
            if self.input[3] != 0 {
                return Err(bad("gzip header flags are not supported by this format"));
            }
            self.input.drain(..10);
            self.header_done = true;
        }
        if self.ended || self.input.is_empty() {
            return Ok(false);
        }
        let before_in = self.inflate.total_in();
        let start = self.raw.len();
        self.raw.reserve(want.max(64 * 1024));
        let status = self
            .inflate
            .decompress_vec(&self.input, &mut self.raw, FlushDecompress::None)
            .map_err(|e| bad(&format!("corrupt deflate data: {e}")))?;
        let used = (self.inflate.total_in() - before_in) as usize;
        self.input.drain(..used);
        self.crc.update(&self.raw[start..]);
        if status == Status::StreamEnd {
            self.ended = true;
        }
        Ok(used > 0 || self.raw.len() > start)
    }
}

impl FormatReader for Reader {
    fn feed(&mut self, chunk: &[u8]) -> Result<(), PluginError> {
        if self.ended && self.input.len() + chunk.len() > 8 {
            return Err(bad("data after the end of the gzip stream"));
        }
        self.input.extend_from_slice(chunk);
        Ok(())
    }

    fn next(&mut self, max_bytes: u32) -> Result<Option<Vec<u8>>, PluginError> {
        let max = (max_bytes as usize).max(1);
        loop {
            let whole = statesnap_plugin_sdk::whole_entries_len(&self.raw);
            if whole >= max {
                return Ok(Some(self.raw.drain(..whole).collect()));
            }
            if self.raw.len() > max + MAX_ENTRY {
                return Err(bad("an entry is larger than 64 MiB"));
            }
            if !self.inflate_some(max)? {
                return Ok(if whole > 0 {
                    Some(self.raw.drain(..whole).collect())
                } else {
                    None
                });
            }
        }
    }

    fn finish(&mut self) -> Result<(), PluginError> {
        if !self.ended {
            return Err(bad("the gzip stream is truncated"));
        }
        if !self.raw.is_empty() {
            return Err(bad("the stream ends inside an entry"));
        }
        if self.input.len() != 8 {
            return Err(bad("the gzip trailer is missing or followed by extra data"));
        }
        let crc = u32::from_le_bytes(self.input[..4].try_into().expect("4 bytes"));
        let size = u32::from_le_bytes(self.input[4..].try_into().expect("4 bytes"));
        if crc != self.crc.sum() || size != self.crc.amount() {
            return Err(bad("gzip checksum mismatch"));
        }
        Ok(())
    }
}

#[cfg(target_arch = "wasm32")]
statesnap_plugin_sdk::export_format!(crate::Gzip, "../../wit");

#[cfg(test)]
mod tests {
    use super::*;
    use statesnap_plugin_sdk::push_entry;

    type Entries = Vec<(Vec<u8>, Vec<u8>)>;

    fn sample(n: usize) -> Entries {
        (0..n)
            .map(|i| {
                (
                    format!("con_t.balances:{:064x}", i * 104729).into_bytes(),
                    format!("{}", i * 977).into_bytes(),
                )
            })
            .collect()
    }

    fn encode(entries: &[(Vec<u8>, Vec<u8>)], params: &[(String, String)]) -> Vec<Vec<u8>> {
        let mut w = Gzip::writer(params).unwrap();
        let mut chunks = Vec::new();
        for part in entries.chunks(333) {
            let mut batch = Vec::new();
            for (k, v) in part {
                push_entry(&mut batch, k, v);
            }
            chunks.extend(w.write(&batch).unwrap());
        }
        chunks.extend(w.finish().unwrap());
        chunks
    }

    fn decode(chunks: &[Vec<u8>]) -> Result<Entries, PluginError> {
        let mut r = Gzip::reader(&[]).unwrap();
        let mut out = Vec::new();
        for c in chunks {
            r.feed(c)?;
            while let Some(b) = r.next(7000)? {
                for e in statesnap_plugin_sdk::entries(&b) {
                    let (k, v) = e.unwrap();
                    out.push((k.to_vec(), v.to_vec()));
                }
            }
        }
        r.finish()?;
        Ok(out)
    }

    #[test]
    fn round_trip_fixed_chunks_deterministic() {
        let entries = sample(5000);
        let params = vec![("chunk_bytes".to_string(), "10000".to_string())];
        let chunks = encode(&entries, &params);
        assert!(chunks.len() > 5);
        assert!(chunks[..chunks.len() - 1].iter().all(|c| c.len() == 10000));
        assert_eq!(decode(&chunks).unwrap(), entries);
        assert_eq!(encode(&entries, &params), chunks);
    }

    #[test]
    fn empty_state_and_big_entry() {
        let chunks = encode(&[], &[]);
        assert_eq!(chunks.len(), 1);
        assert!(decode(&chunks).unwrap().is_empty());
        let big = vec![(b"con.big".to_vec(), vec![b'y'; 3 << 20])];
        assert_eq!(
            decode(&encode(&big, &[("chunk_bytes".into(), "1000".into())])).unwrap(),
            big
        );
    }

    #[test]
    fn truncation_and_garbage_are_errors() {
        let params = vec![("chunk_bytes".to_string(), "10000".to_string())];
        let chunks = encode(&sample(3000), &params);
        assert!(decode(&chunks[..chunks.len() - 1]).is_err());
        let mut flipped = chunks.clone();
        flipped[1][500] ^= 0x10;
        assert!(decode(&flipped).is_err());
        let mut extra = chunks.clone();
        extra.push(vec![1, 2, 3]);
        assert!(decode(&extra).is_err());
        assert!(decode(&[b"garbage garbage".to_vec()]).is_err());
    }
}
