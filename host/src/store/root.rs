//! The `xian-state-root-v2` state root (docs/XIAN.md §3), which is the app
//! hash.
//!
//! The root is the hash of the unique treap over the consensus keys: a binary
//! search tree by key bytes that is a min-heap by `priority(key)`. A treap is a
//! Cartesian tree, so it can be built from keys arriving in ascending order
//! with a stack holding only its right spine; subtrees that leave the spine
//! never change again and are kept as their hash. Memory is proportional to the
//! tree's depth, not to the number of keys.

use sha2::{Digest, Sha256};

use super::range_proof::SuffixNode;
use super::value::{canonical_bytes, ValueError};

/// A state root.
pub type StateRoot = [u8; 32];

const LEAF: &[u8] = b"xian-state-root-v2:leaf:";
const PRIORITY: &[u8] = b"xian-state-root-v2:priority:";
const NODE: &[u8] = b"xian-state-root-v2:node:";
const EMPTY: &[u8] = b"xian-state-root-v2:empty";

/// The hash of an empty subtree, and the root of a state with no consensus keys.
pub fn empty_root() -> StateRoot {
    Sha256::digest(EMPTY).into()
}

/// Whether the state root covers `key`: every key not starting with `__`,
/// plus account nonces (`__n.`).
pub fn is_consensus_key(key: &str) -> bool {
    !key.starts_with("__") || key.starts_with("__n.")
}

/// `SHA256("…:leaf:" ‖ u64be(len k) ‖ k ‖ u64be(len v) ‖ v)`.
pub fn leaf_hash(key: &[u8], canonical_value: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(LEAF);
    h.update((key.len() as u64).to_be_bytes());
    h.update(key);
    h.update((canonical_value.len() as u64).to_be_bytes());
    h.update(canonical_value);
    h.finalize().into()
}

/// `SHA256("…:priority:" ‖ k)`, compared as a 256-bit big-endian integer
/// (which byte-wise comparison of the arrays is).
pub fn priority(key: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(PRIORITY);
    h.update(key);
    h.finalize().into()
}

/// `SHA256("…:node:" ‖ H(left) ‖ leaf ‖ H(right))`, with `empty_root()` as the
/// hash of a missing child.
pub(crate) fn node_hash(left: &[u8; 32], leaf: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(NODE);
    h.update(left);
    h.update(leaf);
    h.update(right);
    h.finalize().into()
}

/// Why an entry could not be added to the root.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error("keys are not in strictly ascending order: {key:?} came after {previous:?}")]
    OutOfOrder { previous: String, key: String },
    #[error("the value of {key:?} cannot be hashed: {source}")]
    Value {
        key: String,
        #[source]
        source: ValueError,
    },
}

/// A node on the right spine: its priority, leaf hash, the hash of its
/// finished left subtree, and what the spine's owner keeps with it. Its right
/// child is the next node on the stack.
pub(crate) struct SpineNode<T> {
    pub(crate) priority: [u8; 32],
    pub(crate) leaf: [u8; 32],
    pub(crate) left: [u8; 32],
    pub(crate) data: T,
}

/// The right spine of the treap over leaves pushed in ascending key order,
/// top down, from which its root is folded: the one implementation of the
/// stack that [`RootBuilder`] and [`RangeProver`](super::range_proof::RangeProver)
/// keep. Subtrees that leave the spine never change again and are kept as
/// their hash.
pub(crate) struct Spine<T> {
    nodes: Vec<SpineNode<T>>,
    empty: [u8; 32],
}

impl<T> Spine<T> {
    pub(crate) fn new() -> Self {
        Spine {
            nodes: Vec::new(),
            empty: empty_root(),
        }
    }

    /// How many nodes, from the top, stay on the spine when a leaf of
    /// `priority` is pushed: those with a priority not larger than its
    /// (priorities grow down the spine; on a tie the earlier, smaller key
    /// stays above).
    fn kept(&self, priority: &[u8; 32]) -> usize {
        self.nodes
            .iter()
            .rposition(|n| n.priority <= *priority)
            .map_or(0, |i| i + 1)
    }

    /// The node a leaf of `priority` would be pushed below: its parent, or
    /// `None` when it would become the root.
    pub(crate) fn parent(&self, priority: &[u8; 32]) -> Option<&SpineNode<T>> {
        self.nodes[..self.kept(priority)].last()
    }

    /// Pushes the next leaf. Spine nodes with a larger priority go below it:
    /// they become its left subtree, finished, and are folded into one hash.
    /// Each node leaving the spine is shown to `finished`, bottom up, with
    /// the hash of its right subtree, now final.
    pub(crate) fn push(
        &mut self,
        priority: [u8; 32],
        leaf: [u8; 32],
        data: T,
        mut finished: impl FnMut(&T, &[u8; 32]),
    ) {
        let keep = self.kept(&priority);
        let mut left = self.empty;
        for below in self.nodes.drain(keep..).rev() {
            finished(&below.data, &left);
            left = node_hash(&below.left, &below.leaf, &left);
        }
        self.nodes.push(SpineNode {
            priority,
            leaf,
            left,
            data,
        });
    }

    /// The spine, top down.
    pub(crate) fn nodes(&self) -> &[SpineNode<T>] {
        &self.nodes
    }

    /// The hash of an empty subtree.
    pub(crate) fn empty(&self) -> [u8; 32] {
        self.empty
    }

    /// The root of the tree: the spine folded from the bottom, each node
    /// shown to `finished` with the hash of its right subtree.
    pub(crate) fn finish(self, mut finished: impl FnMut(&T, &[u8; 32])) -> StateRoot {
        let mut right = self.empty;
        for node in self.nodes.into_iter().rev() {
            finished(&node.data, &right);
            right = node_hash(&node.left, &node.leaf, &right);
        }
        right
    }
}

/// Streams the state root over entries in strictly ascending key order.
pub struct RootBuilder {
    spine: Spine<()>,
    previous: Option<String>,
    included: u64,
}

impl Default for RootBuilder {
    fn default() -> Self {
        RootBuilder {
            spine: Spine::new(),
            previous: None,
            included: 0,
        }
    }
}

impl RootBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one entry. Keys the root does not cover and null values are
    /// skipped (`Ok(false)`); included entries return `Ok(true)`.
    pub fn push(&mut self, key: &str, stored: &str) -> Result<bool, RootError> {
        self.check_order(key)?;
        if !is_consensus_key(key) {
            return Ok(false);
        }
        match canonical_bytes(stored) {
            Ok(Some(v)) => {
                self.insert(key, &v);
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(source) => Err(RootError::Value {
                key: key.to_string(),
                source,
            }),
        }
    }

    /// Feeds a consensus entry whose canonical value bytes are known.
    pub fn push_canonical(&mut self, key: &str, canonical: &[u8]) -> Result<(), RootError> {
        self.check_order(key)?;
        self.insert(key, canonical);
        Ok(())
    }

    /// Feeds a consensus entry whose leaf hash is known.
    pub fn push_leaf(&mut self, key: &str, leaf: [u8; 32]) -> Result<(), RootError> {
        self.check_order(key)?;
        self.insert_leaf(priority(key.as_bytes()), leaf);
        Ok(())
    }

    /// Feeds a consensus entry whose priority and leaf hash are known (a
    /// caller that needs them for something else too hashes once).
    pub fn push_prioritized(&mut self, key: &str, priority: [u8; 32], leaf: [u8; 32]) -> Result<(), RootError> {
        self.check_order(key)?;
        self.insert_leaf(priority, leaf);
        Ok(())
    }

    fn check_order(&mut self, key: &str) -> Result<(), RootError> {
        if let Some(prev) = &self.previous {
            if key.as_bytes() <= prev.as_bytes() {
                return Err(RootError::OutOfOrder {
                    previous: prev.clone(),
                    key: key.to_string(),
                });
            }
        }
        match &mut self.previous {
            Some(prev) => {
                prev.clear();
                prev.push_str(key);
            }
            None => self.previous = Some(key.to_string()),
        }
        Ok(())
    }

    fn insert(&mut self, key: &str, canonical: &[u8]) {
        self.insert_leaf(priority(key.as_bytes()), leaf_hash(key.as_bytes(), canonical));
    }

    fn insert_leaf(&mut self, priority: [u8; 32], leaf: [u8; 32]) {
        self.spine.push(priority, leaf, (), |_, _| {});
        self.included += 1;
    }

    /// Leaves added so far.
    pub fn included(&self) -> u64 {
        self.included
    }

    /// Nodes on the right spine of the tree fed so far.
    pub fn spine_len(&self) -> usize {
        self.spine.nodes().len()
    }

    /// The root of the tree made of everything fed so far and, after it in
    /// key order, a subtree given by its left spine (top down), each node
    /// placed below `above` nodes of this tree's right spine: the merge of the
    /// two treaps (see `range_proof`). `above` must not decrease down the
    /// suffix nor exceed [`spine_len`](Self::spine_len).
    pub fn root_with_suffix(&self, suffix: &[SuffixNode]) -> StateRoot {
        // Fold the merged chain from the bottom: a prefix node's right child
        // and a suffix node's left child are the rest of the chain below it.
        let spine = self.spine.nodes();
        let mut below = self.spine.empty();
        let mut prefix = spine.len();
        for node in suffix.iter().rev() {
            let above = (node.above as usize).min(prefix);
            for p in spine[above..prefix].iter().rev() {
                below = node_hash(&p.left, &p.leaf, &below);
            }
            prefix = above;
            below = node_hash(&below, &node.leaf, &node.right);
        }
        for p in spine[..prefix].iter().rev() {
            below = node_hash(&p.left, &p.leaf, &below);
        }
        below
    }

    /// The root of everything fed.
    pub fn finish(self) -> StateRoot {
        self.spine.finish(|_, _| {})
    }
}

/// The state root of a whole store, read in key order, and its entry count;
/// `progress` is told each entry read.
pub fn state_root_of(store: &dyn super::StateStore, mut progress: impl FnMut()) -> anyhow::Result<(StateRoot, u64)> {
    let mut root = RootBuilder::new();
    let mut entries = 0u64;
    for e in store.entries()? {
        let e = e?;
        root.push(&e.key, &e.stored)?;
        entries += 1;
        progress();
    }
    Ok((root.finish(), entries))
}

/// The root over entries in any order (sorts a copy): for tests and small states.
pub fn root_of_unsorted<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<StateRoot, RootError> {
    let mut sorted: Vec<(&str, &str)> = entries.into_iter().collect();
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut b = RootBuilder::new();
    for (k, v) in sorted {
        b.push(k, v)?;
    }
    Ok(b.finish())
}
