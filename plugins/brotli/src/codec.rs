//! One brotli stream in, one out, through the `brotli` crate's no-std API.

use alloc_no_stdlib::Allocator;
use brotli::enc::backward_references::BrotliEncoderMode;
use brotli::enc::encode::{BrotliEncoderMaxCompressedSize, BrotliEncoderOperation, BrotliEncoderStateStruct};
use brotli::enc::interface::PredictionModeContextMap;
use brotli::enc::{BrotliAlloc, InputPair, InputReferenceMut, StaticCommand};
use brotli::{BrotliDecompressStream, BrotliResult, BrotliState};

use crate::{bad, PluginError};

/// Largest window (log2) the writer uses and the reader accepts: 4 MiB.
pub const MAX_WINDOW_BITS: u32 = 22;
/// Brotli's window is `2^bits - 16` bytes.
const WINDOW_GAP: usize = 16;

/// The heap, for the brotli crate (whose own impl of its allocator trait for
/// `StandardAlloc` needs its `std` feature).
#[derive(Default, Clone, Copy)]
pub struct Heap;

impl<T: Clone + Default> Allocator<T> for Heap {
    type AllocatedMemory = <alloc_stdlib::StandardAlloc as Allocator<T>>::AllocatedMemory;

    fn alloc_cell(&mut self, len: usize) -> Self::AllocatedMemory {
        alloc_stdlib::StandardAlloc::default().alloc_cell(len)
    }

    fn free_cell(&mut self, data: Self::AllocatedMemory) {
        alloc_stdlib::StandardAlloc::default().free_cell(data)
    }
}

impl BrotliAlloc for Heap {}

fn no_metablock_callback(
    _: &mut PredictionModeContextMap<InputReferenceMut>,
    _: &mut [StaticCommand],
    _: InputPair,
    _: &mut Heap,
) {
}

/// The smallest window that holds `len` bytes, between brotli's least (10)
/// and [`MAX_WINDOW_BITS`].
fn window_bits(len: usize) -> u32 {
    (10..MAX_WINDOW_BITS)
        .find(|&bits| (1usize << bits) - WINDOW_GAP >= len)
        .unwrap_or(MAX_WINDOW_BITS)
}

/// Appends `data` compressed as one brotli stream at `quality` to `out`.
pub fn compress(data: &[u8], quality: u32, out: &mut Vec<u8>) -> Result<(), PluginError> {
    let mut s = BrotliEncoderStateStruct::new(Heap);
    s.params.quality = quality as i32;
    s.params.lgwin = window_bits(data.len()) as i32;
    s.params.size_hint = data.len();
    s.params.mode = BrotliEncoderMode::BROTLI_MODE_GENERIC;
    // Brotli's built-in dictionary (English and markup words) finds nearly
    // nothing in state entries (166 bytes of 7.4 MB on 200,000 Xian-like
    // entries) and searching it takes a sixth of the time.
    s.params.use_dictionary = false;
    let start = out.len();
    out.resize(start + BrotliEncoderMaxCompressedSize(data.len()) + 64, 0);
    let (mut available_in, mut in_offset) = (data.len(), 0);
    let mut out_offset = start;
    let mut available_out = out.len() - out_offset;
    let mut total_out = None;
    let mut no_callback = no_metablock_callback;
    loop {
        let before = (in_offset, out_offset);
        if !s.compress_stream(
            BrotliEncoderOperation::BROTLI_OPERATION_FINISH,
            &mut available_in,
            data,
            &mut in_offset,
            &mut available_out,
            out,
            &mut out_offset,
            &mut total_out,
            &mut no_callback,
        ) {
            return Err(PluginError::Internal("the brotli encoder failed".into()));
        }
        if s.is_finished() {
            break;
        }
        if available_out == 0 {
            // Cannot happen with the maximum compressed size, but be safe.
            let grow = out.len();
            out.resize(out.len() + grow, 0);
            available_out += grow;
        } else if before == (in_offset, out_offset) {
            return Err(PluginError::Internal("the brotli encoder made no progress".into()));
        }
    }
    out.truncate(out_offset);
    Ok(())
}

/// The window (log2) a brotli stream declares in its first bits (RFC 7932
/// 9.1), `None` for the large-window extension or too short a stream.
fn declared_window_bits(data: &[u8]) -> Option<u32> {
    let bits = u16::from_le_bytes([*data.first()?, data.get(1).copied().unwrap_or(0)]);
    if bits & 1 == 0 {
        return Some(16);
    }
    let n = u32::from((bits >> 1) & 7);
    if n != 0 {
        return Some(17 + n);
    }
    match u32::from((bits >> 4) & 7) {
        0 => Some(17),
        1 => None, // large window
        m => Some(8 + m),
    }
}

/// Decodes the brotli stream `data` into `out`, which must come to exactly
/// `raw_len` bytes; `out` is cleared first.
pub fn decompress(data: &[u8], raw_len: usize, out: &mut Vec<u8>) -> Result<(), PluginError> {
    out.clear();
    match declared_window_bits(data) {
        Some(bits) if bits <= MAX_WINDOW_BITS => {}
        Some(bits) => return Err(bad(format!("a brotli stream asks for a 2^{bits}-byte window"))),
        None => return Err(bad("not a brotli stream of this format")),
    }
    out.resize(raw_len, 0);
    let mut state = BrotliState::new_strict(Heap, Heap, Heap);
    let (mut available_in, mut in_offset) = (data.len(), 0);
    let (mut available_out, mut out_offset) = (raw_len, 0);
    let mut total_out = 0;
    let result = BrotliDecompressStream(
        &mut available_in,
        &mut in_offset,
        data,
        &mut available_out,
        &mut out_offset,
        out,
        &mut total_out,
        &mut state,
    );
    match result {
        BrotliResult::ResultSuccess if out_offset != raw_len => Err(bad("a brotli stream is shorter than stated")),
        BrotliResult::ResultSuccess if in_offset != data.len() => Err(bad("data after the end of a brotli stream")),
        BrotliResult::ResultSuccess => Ok(()),
        BrotliResult::NeedsMoreOutput => Err(bad("a brotli stream is longer than stated")),
        BrotliResult::NeedsMoreInput => Err(bad("truncated brotli stream")),
        BrotliResult::ResultFailure => Err(bad("bad brotli stream")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_bits_hold_the_stream() {
        assert_eq!(window_bits(0), 10);
        assert_eq!(window_bits(1008), 10);
        assert_eq!(window_bits(1009), 11);
        assert_eq!(window_bits(1 << 20), 21);
        assert_eq!(window_bits(100 << 20), MAX_WINDOW_BITS);
        for (len, q) in [(0, 10), (1, 10), (5000, 11), (3 << 20, 5), (5 << 20, 1)] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let mut c = Vec::new();
            compress(&data, q, &mut c).unwrap();
            assert_eq!(declared_window_bits(&c), Some(window_bits(len)), "{len}");
            let mut d = Vec::new();
            decompress(&c, len, &mut d).unwrap();
            assert_eq!(d, data);
            if len > 0 {
                assert!(decompress(&c, len - 1, &mut d).is_err());
            }
            assert!(decompress(&c, len + 1, &mut d).is_err());
            assert!(decompress(&c[..c.len() - 1], len, &mut d).is_err());
            c.push(0);
            assert!(decompress(&c, len, &mut d).is_err());
        }
    }
}
