//! The `zstd` format (format 1), statesnap's default.
//!
//! Entries are encoded compactly (each key as the length of the prefix it
//! shares with the previous key, then the rest; lengths as LEB128 varints) into
//! frames of about `frame_bytes`, each compressed as an independent zstd frame
//! (pure-Rust `ruzstd`, its `Fastest` level, roughly zstd level 1: the only
//! level it implements). A chunk is a sequence of `u32le length, frame`, cut
//! before it would exceed `chunk_bytes`, so chunks end at entry boundaries and
//! each decodes on its own.

use statesnap_plugin_sdk::{param_u64, Description, Format, FormatReader, FormatWriter, PluginError};

const KNOWN: &[&str] = &["chunk_bytes", "frame_bytes"];
const DEFAULT_CHUNK: u64 = 10_000_000;
const DEFAULT_FRAME: u64 = 1 << 20;
/// No chunk may be larger (CometBFT's 16,000,000-byte message limit, less room).
const MAX_CHUNK: u64 = 15_000_000;
/// A decoded frame larger than this is refused (bounds a decompression bomb).
const MAX_FRAME_DECODED: usize = 64 << 20;

/// The zstd format.
pub struct Zstd;

impl Format for Zstd {
    type Writer = Writer;
    type Reader = Reader;

    fn describe() -> Description {
        Description {
            name: "zstd".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            format: 1,
            params: vec![
                ("chunk_bytes".into(), DEFAULT_CHUNK.to_string()),
                ("frame_bytes".into(), DEFAULT_FRAME.to_string()),
            ],
            summary: "prefix-compressed entries in independent zstd frames; chunks cut at entry boundaries".into(),
        }
    }

    fn writer(params: &[(String, String)]) -> Result<Writer, PluginError> {
        let chunk_bytes = param_u64(params, KNOWN, "chunk_bytes", DEFAULT_CHUNK, 1000..=MAX_CHUNK)? as usize;
        let frame_bytes = param_u64(params, KNOWN, "frame_bytes", DEFAULT_FRAME, 256..=(16 << 20))? as usize;
        Ok(Writer {
            chunk_bytes,
            frame_bytes: frame_bytes.min(chunk_bytes),
            raw: Vec::new(),
            prev_key: Vec::new(),
            chunk: Vec::new(),
            chunks: 0,
        })
    }

    fn reader(params: &[(String, String)]) -> Result<Reader, PluginError> {
        param_u64(params, KNOWN, "chunk_bytes", DEFAULT_CHUNK, 1000..=MAX_CHUNK)?;
        param_u64(params, KNOWN, "frame_bytes", DEFAULT_FRAME, 256..=(16 << 20))?;
        Ok(Reader::default())
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn bad(what: &str) -> PluginError {
    PluginError::InvalidInput(what.to_string())
}

/// Entries in, chunks out.
pub struct Writer {
    chunk_bytes: usize,
    frame_bytes: usize,
    /// Encoded entries of the frame being filled.
    raw: Vec<u8>,
    prev_key: Vec<u8>,
    /// Frames of the chunk being filled.
    chunk: Vec<u8>,
    chunks: u64,
}

impl Writer {
    fn seal_frame(&mut self, out: &mut Vec<Vec<u8>>) -> Result<(), PluginError> {
        if self.raw.is_empty() {
            return Ok(());
        }
        let frame = ruzstd::encoding::compress_to_vec(&self.raw[..], ruzstd::encoding::CompressionLevel::Fastest);
        self.raw.clear();
        self.prev_key.clear();
        if 4 + frame.len() > MAX_CHUNK as usize {
            return Err(bad("an entry is too large to fit in one chunk even compressed"));
        }
        if !self.chunk.is_empty() && self.chunk.len() + 4 + frame.len() > self.chunk_bytes {
            out.push(std::mem::take(&mut self.chunk));
            self.chunks += 1;
        }
        self.chunk.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        self.chunk.extend_from_slice(&frame);
        Ok(())
    }
}

impl FormatWriter for Writer {
    fn write(&mut self, batch: &[u8]) -> Result<Vec<Vec<u8>>, PluginError> {
        let mut out = Vec::new();
        for item in statesnap_plugin_sdk::entries(batch) {
            let (key, value) = item.map_err(|e| bad(&e.to_string()))?;
            let shared = key.iter().zip(&self.prev_key).take_while(|(a, b)| a == b).count();
            put_varint(&mut self.raw, shared as u64);
            put_varint(&mut self.raw, (key.len() - shared) as u64);
            self.raw.extend_from_slice(&key[shared..]);
            put_varint(&mut self.raw, value.len() as u64);
            self.raw.extend_from_slice(value);
            self.prev_key.clear();
            self.prev_key.extend_from_slice(key);
            if self.raw.len() >= self.frame_bytes {
                self.seal_frame(&mut out)?;
            }
        }
        Ok(out)
    }

    fn finish(&mut self) -> Result<Vec<Vec<u8>>, PluginError> {
        let mut out = Vec::new();
        self.seal_frame(&mut out)?;
        // Every snapshot has at least one chunk, even of an empty state.
        if !self.chunk.is_empty() || self.chunks == 0 {
            out.push(std::mem::take(&mut self.chunk));
            self.chunks += 1;
        }
        Ok(out)
    }
}

/// Chunks in, entries out, one frame decoded at a time.
#[derive(Default)]
pub struct Reader {
    chunk: Vec<u8>,
    chunk_pos: usize,
    frame: Vec<u8>,
    frame_pos: usize,
    prev_key: Vec<u8>,
}

impl Reader {
    /// Decodes the next frame of the chunk; false when the chunk is used up.
    fn next_frame(&mut self) -> Result<bool, PluginError> {
        let rest = &self.chunk[self.chunk_pos..];
        if rest.is_empty() {
            return Ok(false);
        }
        if rest.len() < 4 {
            return Err(bad("chunk ends inside a frame length"));
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let compressed = rest.get(4..4 + len).ok_or_else(|| bad("chunk ends inside a frame"))?;
        let mut decoder =
            ruzstd::decoding::StreamingDecoder::new(compressed).map_err(|e| bad(&format!("bad zstd frame: {e}")))?;
        self.frame.clear();
        use std::io::Read;
        (&mut decoder)
            .take(MAX_FRAME_DECODED as u64 + 1)
            .read_to_end(&mut self.frame)
            .map_err(|e| bad(&format!("bad zstd frame: {e}")))?;
        if self.frame.len() > MAX_FRAME_DECODED {
            return Err(bad("a frame decodes to more than 64 MiB"));
        }
        self.chunk_pos += 4 + len;
        self.frame_pos = 0;
        self.prev_key.clear();
        Ok(true)
    }
}

impl FormatReader for Reader {
    fn feed(&mut self, chunk: &[u8]) -> Result<(), PluginError> {
        if self.chunk_pos < self.chunk.len() || self.frame_pos < self.frame.len() {
            return Err(bad("a chunk was fed before the previous one was read"));
        }
        self.chunk.clear();
        self.chunk.extend_from_slice(chunk);
        self.chunk_pos = 0;
        Ok(())
    }

    fn next(&mut self, max_bytes: u32) -> Result<Option<Vec<u8>>, PluginError> {
        let mut out = Vec::new();
        while out.len() < max_bytes as usize {
            if self.frame_pos >= self.frame.len() && !self.next_frame()? {
                break;
            }
            let f = &self.frame;
            let mut pos = self.frame_pos;
            let shared = get_varint(f, &mut pos).ok_or_else(|| bad("truncated entry"))? as usize;
            let suffix_len = get_varint(f, &mut pos).ok_or_else(|| bad("truncated entry"))? as usize;
            if shared > self.prev_key.len() {
                return Err(bad("entry shares more of the key than the previous key has"));
            }
            let suffix = f
                .get(pos..pos.saturating_add(suffix_len))
                .ok_or_else(|| bad("truncated key"))?;
            pos += suffix_len;
            let value_len = get_varint(f, &mut pos).ok_or_else(|| bad("truncated entry"))? as usize;
            let value = f
                .get(pos..pos.saturating_add(value_len))
                .ok_or_else(|| bad("truncated value"))?;
            pos += value_len;
            self.prev_key.truncate(shared);
            self.prev_key.extend_from_slice(suffix);
            statesnap_plugin_sdk::push_entry(&mut out, &self.prev_key, value);
            self.frame_pos = pos;
        }
        Ok(if out.is_empty() { None } else { Some(out) })
    }

    fn finish(&mut self) -> Result<(), PluginError> {
        if self.chunk_pos < self.chunk.len() || self.frame_pos < self.frame.len() {
            return Err(bad("input left over after the last chunk"));
        }
        Ok(())
    }
}

#[cfg(target_arch = "wasm32")]
statesnap_plugin_sdk::export_format!(crate::Zstd, "../../wit");

#[cfg(test)]
mod tests {
    use super::*;
    use statesnap_plugin_sdk::push_entry;

    type Entries = Vec<(Vec<u8>, Vec<u8>)>;

    fn sample(n: usize) -> Entries {
        (0..n)
            .map(|i| {
                (
                    format!("currency.balances:{:064x}", i * 7919).into_bytes(),
                    format!("{{\"__fixed__\":\"{}.{}\"}}", i * 31, i % 97).into_bytes(),
                )
            })
            .collect()
    }

    fn encode(entries: &[(Vec<u8>, Vec<u8>)], params: &[(String, String)]) -> Vec<Vec<u8>> {
        let mut w = Zstd::writer(params).unwrap();
        let mut chunks = Vec::new();
        for part in entries.chunks(500) {
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
        let mut r = Zstd::reader(&[]).unwrap();
        let mut out = Vec::new();
        for c in chunks {
            r.feed(c)?;
            while let Some(b) = r.next(10_000)? {
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
    fn round_trip_many_chunks_deterministic() {
        let entries = sample(5000);
        let params = vec![("chunk_bytes".to_string(), "4000".to_string())];
        let chunks = encode(&entries, &params);
        assert!(chunks.len() > 3, "{} chunks", chunks.len());
        assert!(chunks.iter().all(|c| c.len() <= 4000));
        assert_eq!(decode(&chunks).unwrap(), entries);
        assert_eq!(encode(&entries, &params), chunks);
        // Each chunk decodes on its own.
        assert!(!decode(&chunks[1..2]).unwrap().is_empty());
    }

    #[test]
    fn empty_state_and_big_entry() {
        let chunks = encode(&[], &[]);
        assert_eq!(chunks.len(), 1);
        assert!(decode(&chunks).unwrap().is_empty());
        let big = vec![(b"con.big".to_vec(), vec![b'x'; 3 << 20])];
        assert_eq!(decode(&encode(&big, &[])).unwrap(), big);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let chunks = encode(&sample(300), &[]);
        let mut x = 12345u64;
        for _ in 0..200 {
            let mut c = chunks[0].clone();
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let at = (x >> 33) as usize % c.len();
            c[at] ^= 1 << (x % 8);
            let _ = decode(&[c]);
            let cut = (x >> 20) as usize % chunks[0].len();
            assert!(decode(&[chunks[0][..cut].to_vec()]).is_err() || cut == 0);
        }
        assert!(Zstd::writer(&[("nope".into(), "1".into())]).is_err());
        assert!(Zstd::writer(&[("chunk_bytes".into(), "99999999999".into())]).is_err());
    }
}
