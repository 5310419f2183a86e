//! The random source of generated states: SplitMix64 (Steele, Lea and Flood,
//! "Fast splittable pseudorandom number generators", 2014), written out in
//! this repository (`statesnap_plugin_sdk::sample`) rather than taken from a
//! crate. The plugin conformance check, whose verdict
//! every validator must reach alike, runs on a generated state, so the state
//! must be a function of this repository's code alone: a crate is free to
//! change its algorithms between versions (`rand` does not promise stable
//! values), this code is not. Integer arithmetic only, no floats.
//!
//! Changing anything here changes every generated state: bump
//! `generate::GENERATOR_VERSION` and the golden tests.

/// A SplitMix64 stream: the SDK's sample generator (the same algorithm the
/// plugins' own tests draw from), with the ranges the state generator needs.
#[derive(Debug, Clone)]
pub struct Prng(statesnap_plugin_sdk::sample::Rng);

impl Prng {
    pub fn new(seed: u64) -> Self {
        Prng(statesnap_plugin_sdk::sample::Rng::new(seed))
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// A number in `lo..hi` (`hi > lo`), by the high half of a 128-bit
    /// product (Lemire's method without the rejection step: its bias of at
    /// most `(hi - lo) / 2^64` does not matter here, its determinism does).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(hi > lo, "empty range {lo}..{hi}");
        lo + ((u128::from(self.next_u64()) * u128::from(hi - lo)) >> 64) as u64
    }

    /// A signed number in `lo..hi`.
    pub(crate) fn range_i64(&mut self, lo: i64, hi: i64) -> i64 {
        assert!(hi > lo, "empty range {lo}..{hi}");
        let span = hi.abs_diff(lo);
        lo.wrapping_add(self.range(0, span) as i64)
    }

    /// An index into a slice of `len` items.
    pub fn index(&mut self, len: usize) -> usize {
        self.range(0, len as u64) as usize
    }

    /// True `num` times in `den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.range(0, den) < num
    }

    pub fn bytes32(&mut self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for part in out.chunks_mut(8) {
            part.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::Prng;

    /// The published SplitMix64 sequence for seed 1234567 (the reference
    /// implementation's test vector), so the algorithm is the published one.
    #[test]
    fn splitmix64_reference_values() {
        let mut r = Prng::new(1234567);
        let got: Vec<u64> = (0..5).map(|_| r.next_u64()).collect();
        assert_eq!(
            got,
            [
                6457827717110365317,
                3203168211198807973,
                9817491932198370423,
                4593380528125082431,
                16408922859458223821
            ]
        );
    }

    #[test]
    fn ranges_stay_in_bounds() {
        let mut r = Prng::new(9);
        for _ in 0..10_000 {
            assert!((5..9).contains(&r.range(5, 9)));
            assert!((-1000..1000).contains(&r.range_i64(-1000, 1000)));
        }
        assert_eq!(Prng::new(3).range(7, 8), 7);
    }
}
