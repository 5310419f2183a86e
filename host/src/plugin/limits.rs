//! The hard limits every plugin call runs under.

/// Bounds applied to each call into a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Fuel (roughly, wasm instructions) one call may use. Deterministic:
    /// the same call runs out at the same point on every host.
    pub fuel_per_call: u64,
    /// Largest linear memory a plugin instance may grow to, in bytes.
    pub memory_bytes: usize,
    /// Most bytes one call may return (all chunks or entries together). This is
    /// what stops a decompression bomb before it reaches the host.
    pub output_bytes_per_call: usize,
    /// Largest chunk a writer may produce: CometBFT's 16,000,000-byte message
    /// limit less room for the message's own framing.
    pub max_chunk_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel_per_call: 20_000_000_000,
            memory_bytes: 256 << 20,
            output_bytes_per_call: 64 << 20,
            max_chunk_bytes: 15_990_000,
        }
    }
}
