//! Range proofs over the `xian-state-root-v2` treap: that the first `n`
//! entries of a state in key order are exactly its entries up to the `n`-th
//! key, checkable against the state root alone.
//!
//! Split the treap `T` between its `n`-th and `n+1`-th keys: `T` is the merge
//! of `P`, the treap of the first `n` keys, and `S`, the treap of the rest.
//! Merging walks `P`'s right spine and `S`'s left spine, interleaving their
//! nodes by priority. A verifier that holds the first `n` entries has `P`
//! (its right spine, with the hash of each spine node's left subtree, is what
//! [`RootBuilder`] keeps). The proof is `S`'s left spine, top down: for each
//! node its leaf hash, the hash of its right subtree and how many nodes of
//! `P`'s spine are above it in the merge. Merging the two gives `T`'s root; if it is the trusted root, collision resistance makes
//! the tree the verifier computed the real one, in which every node of `P`
//! precedes every node of the proof's subtrees in key order: so the `n`
//! entries are in the state and no state key lies between or below them.
//! The merge positions, not the suffix keys' priorities, are what the proof
//! carries: any change to them changes the tree, so a proof has one encoding.
//!
//! A spine's expected length is about `ln(N - n)` nodes (15 at a million
//! keys), so a proof is about 1 KB whatever the chunk holds.
//!
//! [`RangeProver`] makes the proofs for chosen split points in one forward
//! pass over the entries, with memory for the right spine and the proofs only.

use super::root::{priority, RootBuilder, Spine, StateRoot};

/// One node of the suffix's left spine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SuffixNode {
    /// Nodes of the prefix's right spine above this one in the merged tree.
    pub above: u32,
    /// The node's leaf hash.
    pub leaf: [u8; 32],
    /// The hash of its right subtree.
    pub right: [u8; 32],
}

/// A proof that the first `entries` entries are the state's first `entries`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RangeProof {
    /// How many entries, from the first, the proof covers.
    pub entries: u64,
    /// The left spine of the treap of the remaining entries, top down.
    pub suffix: Vec<SuffixNode>,
}

/// Version byte of [`RangeProof::encode`].
const PROOF_VERSION: u8 = 1;
/// Version, entries, node count.
const HEADER: usize = 1 + 8 + 4;
const NODE: usize = 4 + 32 + 32;

/// Why a proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("the range proof is malformed: {0}")]
    Malformed(String),
    #[error(
        "the range proof covers {claimed} entries, but {have} entries have been received: it proves nothing about them"
    )]
    Count { claimed: u64, have: u64 },
    #[error("the range proof's node {0} is placed above its predecessor or below the prefix's spine: no merge has it")]
    Misplaced(usize),
    #[error(
        "the entries received so far and the range proof give state root {}, not the trusted {}: the entries are \
         not the trusted state's",
        hex::encode(got),
        hex::encode(trusted)
    )]
    Root { got: [u8; 32], trusted: [u8; 32] },
}

impl RangeProof {
    /// `version u8 ‖ entries u64le ‖ nodes u32le ‖ nodes × (above u32le ‖ leaf ‖ right)`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.push(PROOF_VERSION);
        out.extend_from_slice(&self.entries.to_le_bytes());
        out.extend_from_slice(&(self.suffix.len() as u32).to_le_bytes());
        for n in &self.suffix {
            out.extend_from_slice(&n.above.to_le_bytes());
            out.extend_from_slice(&n.leaf);
            out.extend_from_slice(&n.right);
        }
        out
    }

    pub fn encoded_len(&self) -> usize {
        HEADER + NODE * self.suffix.len()
    }

    /// Decodes exactly `bytes` (no trailing data).
    pub fn decode(bytes: &[u8]) -> Result<Self, ProofError> {
        if bytes.len() < HEADER {
            return Err(ProofError::Malformed(format!(
                "{} bytes, shorter than its {HEADER}-byte header",
                bytes.len()
            )));
        }
        if bytes[0] != PROOF_VERSION {
            return Err(ProofError::Malformed(format!(
                "version {} (this host reads version {PROOF_VERSION})",
                bytes[0]
            )));
        }
        let entries = u64::from_le_bytes(bytes[1..9].try_into().expect("8 bytes"));
        let nodes = u32::from_le_bytes(bytes[9..13].try_into().expect("4 bytes")) as usize;
        let body = &bytes[HEADER..];
        if body.len() != nodes.saturating_mul(NODE) {
            return Err(ProofError::Malformed(format!(
                "it says {nodes} spine nodes ({} bytes) but holds {} bytes",
                nodes.saturating_mul(NODE),
                body.len()
            )));
        }
        let suffix = body
            .chunks_exact(NODE)
            .map(|n| SuffixNode {
                above: u32::from_le_bytes(n[..4].try_into().expect("4 bytes")),
                leaf: n[4..36].try_into().expect("32 bytes"),
                right: n[36..].try_into().expect("32 bytes"),
            })
            .collect();
        Ok(RangeProof { entries, suffix })
    }

    /// Checks the proof against `trusted` for the entries fed to `prefix`
    /// (which must be all of them, in order, from the first).
    pub fn verify(&self, prefix: &RootBuilder, trusted: &StateRoot) -> Result<(), ProofError> {
        if self.entries != prefix.included() {
            return Err(ProofError::Count {
                claimed: self.entries,
                have: prefix.included(),
            });
        }
        let depth = prefix.spine_len();
        if let Some(i) = (0..self.suffix.len()).find(|&i| {
            self.suffix[i].above as usize > depth || (i > 0 && self.suffix[i].above < self.suffix[i - 1].above)
        }) {
            return Err(ProofError::Misplaced(i));
        }
        let got = prefix.root_with_suffix(&self.suffix);
        if &got != trusted {
            return Err(ProofError::Root { got, trusted: *trusted });
        }
        Ok(())
    }
}

/// What the prover keeps with each node of its right spine.
struct ProverNode {
    /// Its 1-based position in the entries.
    ordinal: u64,
    /// Its slot in `RangeProver::suffix_nodes`, if it is on some split's spine.
    slot: Option<usize>,
}

/// A suffix-spine node; its right subtree's hash comes once it is finished.
struct OpenNode {
    priority: [u8; 32],
    leaf: [u8; 32],
    right: Option<[u8; 32]>,
}

/// A proof point: its entry count, the prefix's spine priorities there (top
/// down), and the slots of its suffix spine (bottom up, as they arrive).
struct Split {
    entries: u64,
    prefix: Vec<[u8; 32]>,
    suffix: Vec<usize>,
}

/// Streams the state root over entries in ascending key order, and makes a
/// [`RangeProof`] at each point marked with [`split`](Self::split).
///
/// A node `k` is on the suffix spine of the split after entry `n` exactly when
/// `k`'s left subtree contains that gap: when `k` is pushed, its left subtree
/// spans the gaps after the entry below it on the spine, so `k` joins every
/// split at or after that entry. A node's right subtree is finished when it
/// leaves the spine (or at the end), which fills in the hash it owes.
/// Memory: the spine plus the proofs themselves.
pub struct RangeProver {
    spine: Spine<ProverNode>,
    pushed: u64,
    splits: Vec<Split>,
    suffix_nodes: Vec<OpenNode>,
}

impl Default for RangeProver {
    fn default() -> Self {
        RangeProver {
            spine: Spine::new(),
            pushed: 0,
            splits: Vec::new(),
            suffix_nodes: Vec::new(),
        }
    }
}

impl RangeProver {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the next entry (keys must ascend: the caller checks the order).
    pub fn push(&mut self, key: &[u8], leaf: [u8; 32]) {
        let prio = priority(key);
        self.pushed += 1;
        // The node's suffix slot: it joins every split at or after the entry
        // it will sit below.
        let below = self.spine.parent(&prio).map_or(0, |n| n.data.ordinal);
        let mut slot = None;
        for split in self.splits.iter_mut().rev() {
            if split.entries < below {
                break;
            }
            let s = *slot.get_or_insert_with(|| {
                self.suffix_nodes.push(OpenNode {
                    priority: prio,
                    leaf,
                    right: None,
                });
                self.suffix_nodes.len() - 1
            });
            split.suffix.push(s);
        }
        let node = ProverNode {
            ordinal: self.pushed,
            slot,
        };
        let suffix_nodes = &mut self.suffix_nodes;
        self.spine
            .push(prio, leaf, node, |node, right| fill_right(suffix_nodes, node, right));
    }

    /// Entries pushed so far.
    pub fn pushed(&self) -> u64 {
        self.pushed
    }

    /// Marks a proof point after the entries pushed so far.
    pub fn split(&mut self) {
        self.splits.push(Split {
            entries: self.pushed,
            prefix: self.spine.nodes().iter().map(|n| n.priority).collect(),
            suffix: Vec::new(),
        });
    }

    /// The state root and each split's proof, in the order they were marked.
    pub fn finish(mut self) -> (StateRoot, Vec<RangeProof>) {
        let suffix_nodes = &mut self.suffix_nodes;
        let root = self.spine.finish(|node, right| fill_right(suffix_nodes, node, right));
        let nodes = &self.suffix_nodes;
        let proofs = self
            .splits
            .into_iter()
            .map(|split| RangeProof {
                entries: split.entries,
                suffix: split
                    .suffix
                    .iter()
                    .rev()
                    .map(|&s| {
                        let node = &nodes[s];
                        // A prefix node is above on a tie: it has the smaller key.
                        let above = split.prefix.partition_point(|p| *p <= node.priority);
                        SuffixNode {
                            above: above as u32,
                            leaf: node.leaf,
                            right: node.right.expect("every spine node leaves the spine by the end"),
                        }
                    })
                    .collect(),
            })
            .collect();
        (root, proofs)
    }
}

/// A node leaving the spine: its right subtree's hash, now final, is what it
/// owes the suffix spines it is on.
fn fill_right(suffix_nodes: &mut [OpenNode], node: &ProverNode, right: &[u8; 32]) {
    if let Some(slot) = node.slot {
        suffix_nodes[slot].right = Some(*right);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::root::leaf_hash;
    use crate::store::treap::TreapBuilder;

    fn entries(n: usize) -> Vec<(String, [u8; 32])> {
        let mut keys: Vec<String> = (0..n)
            .map(|i| format!("currency.balances:{:05}", i * 7919 % 100_003))
            .collect();
        keys.sort();
        keys.into_iter()
            .map(|k| {
                let leaf = leaf_hash(k.as_bytes(), format!("{}", k.len()).as_bytes());
                (k, leaf)
            })
            .collect()
    }

    /// Proves every split of a state with `n` entries; checks each proof against
    /// the treap's own split and against the verifier.
    fn check_all_splits(n: usize) {
        let es = entries(n);
        let mut prover = RangeProver::new();
        prover.split();
        for (k, leaf) in &es {
            prover.push(k.as_bytes(), *leaf);
            prover.split();
        }
        let (root, proofs) = prover.finish();
        let mut tree = TreapBuilder::new();
        for (k, leaf) in &es {
            tree.push(k, *leaf).unwrap();
        }
        let tree = tree.finish();
        assert_eq!(root, tree.root_hash());
        let mut prefix = RootBuilder::new();
        for (i, proof) in proofs.iter().enumerate() {
            assert_eq!(proof.entries, i as u64);
            let after = i.checked_sub(1).map(|j| es[j].0.as_str());
            let spine: Vec<_> = proof.suffix.iter().map(|n| (n.leaf, n.right)).collect();
            assert_eq!(spine, tree.suffix_spine(after), "split {i}");
            proof.verify(&prefix, &root).unwrap();
            assert_eq!(RangeProof::decode(&proof.encode()).unwrap(), *proof);
            if let Some((k, leaf)) = es.get(i) {
                prefix.push_leaf(k, *leaf).unwrap();
            }
        }
    }

    #[test]
    fn every_split_of_small_states_is_proven() {
        for n in 0..40 {
            check_all_splits(n);
        }
        check_all_splits(2000);
    }

    #[test]
    fn wrong_prefixes_and_altered_proofs_are_refused() {
        let es = entries(500);
        let mut prover = RangeProver::new();
        for (k, leaf) in &es[..200] {
            prover.push(k.as_bytes(), *leaf);
        }
        prover.split();
        for (k, leaf) in &es[200..] {
            prover.push(k.as_bytes(), *leaf);
        }
        let (root, proofs) = prover.finish();
        let proof = &proofs[0];
        assert!(proof.suffix.len() > 1);
        let prefix = |skip: Option<usize>, alter: Option<usize>| {
            let mut b = RootBuilder::new();
            for (i, (k, leaf)) in es[..200].iter().enumerate() {
                if Some(i) == skip {
                    continue;
                }
                let mut leaf = *leaf;
                if Some(i) == alter {
                    leaf[0] ^= 1;
                }
                b.push_leaf(k, leaf).unwrap();
            }
            b
        };
        proof.verify(&prefix(None, None), &root).unwrap();
        // A missing entry, an altered value.
        assert!(matches!(
            proof.verify(&prefix(Some(17), None), &root),
            Err(ProofError::Count { .. })
        ));
        let mut short = proof.clone();
        short.entries -= 1;
        assert!(matches!(
            short.verify(&prefix(Some(17), None), &root),
            Err(ProofError::Root { .. })
        ));
        assert!(matches!(
            proof.verify(&prefix(None, Some(3)), &root),
            Err(ProofError::Root { .. })
        ));
        // A proof node altered, dropped, or two swapped.
        for i in 0..proof.suffix.len() {
            for field in 0..3 {
                let mut p = proof.clone();
                let n = &mut p.suffix[i];
                match field {
                    0 if n.above > 0 => n.above -= 1,
                    0 => n.above += 1,
                    1 => n.leaf[31] ^= 1,
                    _ => n.right[31] ^= 1,
                }
                assert!(p.verify(&prefix(None, None), &root).is_err(), "node {i} field {field}");
            }
            let mut p = proof.clone();
            p.suffix.remove(i);
            assert!(p.verify(&prefix(None, None), &root).is_err());
        }
        let mut p = proof.clone();
        p.suffix.swap(0, 1);
        assert!(p.verify(&prefix(None, None), &root).is_err());
        let mut p = proof.clone();
        p.suffix[0].above = 1000;
        assert_eq!(p.verify(&prefix(None, None), &root), Err(ProofError::Misplaced(0)));
        // Truncated or padded encodings.
        let bytes = proof.encode();
        for len in [0, 5, 12, bytes.len() - 1] {
            assert!(matches!(
                RangeProof::decode(&bytes[..len]),
                Err(ProofError::Malformed(_))
            ));
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(RangeProof::decode(&long), Err(ProofError::Malformed(_))));
    }
}
