//! The host's framing of a state chunk: the plugin's bytes, then the range
//! proof of every entry restored once this chunk is decoded, then a trailer.
//!
//! `plugin bytes ‖ proof ‖ u32le(proof length) ‖ "SSRP"`
//!
//! The proof goes last because it is known only once the whole state has been
//! read (`RangeProver`), while the plugin's bytes are written as they come.
//! The manifest's SHA-256 of a chunk covers all of it, proof included. A
//! self-describing snapshot's chunk 0 (the plugin) is not framed.

use crate::store::range_proof::{ProofError, RangeProof};

const MAGIC: &[u8; 4] = b"SSRP";
const TRAILER: usize = 4 + 4;

/// What follows a chunk's plugin bytes.
pub(crate) fn trailer(proof: &RangeProof) -> Vec<u8> {
    let mut out = proof.encode();
    out.extend_from_slice(&(out.len() as u32).to_le_bytes());
    out.extend_from_slice(MAGIC);
    out
}

/// Splits a framed chunk into the plugin's bytes and the range proof.
pub(crate) fn open(chunk: &[u8]) -> Result<(&[u8], RangeProof), ProofError> {
    let Some(body_len) = chunk.len().checked_sub(TRAILER) else {
        return Err(ProofError::Malformed(format!(
            "the chunk is {} bytes, too short for its {TRAILER}-byte trailer",
            chunk.len()
        )));
    };
    let (body, tail) = chunk.split_at(body_len);
    if &tail[4..] != MAGIC {
        return Err(ProofError::Malformed(
            "the chunk does not end with a range proof trailer (\"SSRP\")".into(),
        ));
    }
    let proof_len = u32::from_le_bytes(tail[..4].try_into().expect("4 bytes")) as usize;
    let Some(plugin_len) = body.len().checked_sub(proof_len) else {
        return Err(ProofError::Malformed(format!(
            "the trailer says the proof is {proof_len} bytes, but the chunk holds {} before it",
            body.len()
        )));
    };
    let (plugin, proof) = body.split_at(plugin_len);
    Ok((plugin, RangeProof::decode(proof)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::range_proof::SuffixNode;

    #[test]
    fn a_frame_round_trips_and_damage_is_refused() {
        let proof = RangeProof {
            entries: 9,
            suffix: vec![SuffixNode {
                above: 2,
                leaf: [1; 32],
                right: [2; 32],
            }],
        };
        let mut chunk = b"plugin bytes".to_vec();
        chunk.extend(trailer(&proof));
        let (plugin, got) = open(&chunk).unwrap();
        assert_eq!((plugin, &got), (&b"plugin bytes"[..], &proof));
        for len in 0..chunk.len() {
            assert!(open(&chunk[..len]).is_err(), "truncated to {len}");
        }
        let mut bad = chunk.clone();
        let n = bad.len();
        bad[n - 6] ^= 0x40; // proof length
        assert!(open(&bad).is_err());
    }
}
