//! A persistent Merkle treap over the consensus keys: the `xian-state-root-v2`
//! tree (docs/XIAN.md §3) kept in memory, so that the app hash after a block
//! costs what the block wrote, not what the state holds.
//!
//! * **Same tree as [`RootBuilder`](super::root::RootBuilder).** The treap over
//!   a key set is unique (BST by key bytes, min-heap by `priority(key)`), and
//!   every node caches its subtree hash, so [`MerkleTreap::root_hash`] is O(1)
//!   and equals the streamed root over the same entries. An insert or remove
//!   changes one root-to-leaf path (plus, for the split or merge it needs, the
//!   spines below it) and rehashes just that: O(depth) hashes, depth ≈ 2·ln n.
//! * **Persistent.** Nodes are immutable once shared: [`Clone`] copies one
//!   `Arc`, and later writes copy only the nodes on their path (a node owned by
//!   one tree alone is updated in place, through `Arc::make_mut`). A clone is
//!   thus a frozen view of the keys at a height, for a snapshot built in the
//!   background or for membership proofs, while blocks keep changing the live
//!   tree; its cost is the nodes the later blocks rewrite.
//! * **Iterative.** Priorities are hashes of keys that users choose, so an
//!   attacker can grind keys into a chain far deeper than 2·ln n. Every walk
//!   (insert, remove, split, merge, iteration, proofs, building and `Drop`)
//!   keeps its path in a heap-allocated stack, never on the call stack, so depth
//!   costs time and memory but cannot overflow the stack and crash the node.
//! * **Memory.** A node is 104 bytes (key pointer, 8 priority bytes, leaf hash,
//!   subtree hash, two children) plus the `Arc` counts: one 128-byte
//!   allocation, and the key's own allocation. Measured at 1M Xian-like keys
//!   of 82 bytes: 224 bytes of RSS per key, i.e. 128 + the key's allocation
//!   (96 bytes), or 142 bytes + the key's bytes (`cargo test --release -p
//!   statesnap --test treap -- --ignored --nocapture`). Frozen views cost
//!   only the nodes written since they were taken.
//!
//! The first 8 bytes of the priority decide almost every heap comparison;
//! only on a tie is the full priority recomputed from the key (ties then go to
//! the smaller key, as in `RootBuilder`).

use std::cmp::Ordering;
use std::fmt;
use std::iter::FusedIterator;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::root::{leaf_hash, node_hash, priority, RootError, StateRoot};

/// `empty_root()`, the hash of a missing child, as a constant (a test checks it).
const EMPTY: [u8; 32] = [
    0x1b, 0x8c, 0xce, 0xd7, 0x27, 0xc3, 0x7a, 0x3d, 0x8c, 0x77, 0x0c, 0x4e, 0x67, 0xe9, 0xc2, 0xe7, 0x98, 0xa1, 0x45,
    0xdd, 0x6b, 0x96, 0x08, 0x6f, 0x39, 0x8f, 0xad, 0x3c, 0x54, 0xe7, 0xcc, 0xc0,
];

type Link = Option<Arc<Node>>;

/// One key of the tree and the subtree below it.
#[derive(Clone)]
struct Node {
    key: Box<str>,
    /// The first 8 bytes of `priority(key)`, big-endian.
    prio: u64,
    leaf: [u8; 32],
    /// The hash of the subtree rooted here.
    hash: [u8; 32],
    left: Link,
    right: Link,
}

/// Which child of a node a path goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Side {
    Left,
    Right,
}

impl Node {
    /// A node whose hash is not computed yet (the builder fills it in once the
    /// subtree is final).
    fn unhashed(key: &str, prio: &[u8; 32], leaf: [u8; 32], left: Link, right: Link) -> Node {
        Node {
            key: key.into(),
            prio: prefix(prio),
            leaf,
            hash: EMPTY,
            left,
            right,
        }
    }

    fn new(key: &str, prio: &[u8; 32], leaf: [u8; 32], left: Link, right: Link) -> Node {
        let mut node = Node::unhashed(key, prio, leaf, left, right);
        node.rehash();
        node
    }

    fn child(&self, side: Side) -> &Link {
        match side {
            Side::Left => &self.left,
            Side::Right => &self.right,
        }
    }

    fn child_mut(&mut self, side: Side) -> &mut Link {
        match side {
            Side::Left => &mut self.left,
            Side::Right => &mut self.right,
        }
    }

    fn rehash(&mut self) {
        self.hash = node_hash(link_hash(&self.left), &self.leaf, link_hash(&self.right));
    }
}

impl Drop for Node {
    /// Unlinks uniquely owned descendants into a heap stack: the default drop
    /// would recurse once per level and overflow on a deep chain.
    fn drop(&mut self) {
        let mut stack: Vec<Arc<Node>> = Vec::new();
        stack.extend(self.left.take());
        stack.extend(self.right.take());
        while let Some(child) = stack.pop() {
            // Shared children only lose a reference; another tree keeps them.
            if let Some(mut node) = Arc::into_inner(child) {
                stack.extend(node.left.take());
                stack.extend(node.right.take());
            }
        }
    }
}

fn link_hash(link: &Link) -> &[u8; 32] {
    link.as_ref().map_or(&EMPTY, |node| &node.hash)
}

fn prefix(prio: &[u8; 32]) -> u64 {
    let mut head = [0u8; 8];
    head.copy_from_slice(&prio[..8]);
    u64::from_be_bytes(head)
}

/// Whether the key `key` with priority `prio` belongs above `node`: a smaller
/// priority, then (on a full tie, as in `RootBuilder`) the smaller key.
fn is_above(key: &str, prio: &[u8; 32], node: &Node) -> bool {
    match prefix(prio).cmp(&node.prio) {
        Ordering::Less => true,
        Ordering::Greater => false,
        Ordering::Equal => (*prio, key.as_bytes()) < (priority(node.key.as_bytes()), node.key.as_bytes()),
    }
}

fn node_is_above(a: &Node, b: &Node) -> bool {
    match a.prio.cmp(&b.prio) {
        Ordering::Less => true,
        Ordering::Greater => false,
        Ordering::Equal => is_above(&a.key, &priority(a.key.as_bytes()), b),
    }
}

/// Nodes taken out of a tree on the way down: each made unique (copied if a
/// frozen view shares it) and holding everything but its child on `Side`,
/// which the walk continues into.
#[derive(Default)]
struct Detached(Vec<(Arc<Node>, Side)>);

impl Detached {
    /// Takes `node`'s child on `side` out and keeps `node`; returns the child.
    fn descend(&mut self, mut node: Arc<Node>, side: Side) -> Link {
        let child = Arc::make_mut(&mut node).child_mut(side).take();
        self.0.push((node, side));
        child
    }

    /// Puts `child` into the last node kept, rehashes it, and so on up to the
    /// first; returns the first (or `child` if none was kept).
    fn reattach(self, child: Link) -> Link {
        self.relink(child, true)
    }

    /// `reattach` for a `child` whose hash did not change: no rehashing.
    fn restore(self, child: Link) -> Link {
        self.relink(child, false)
    }

    fn relink(self, mut child: Link, rehash: bool) -> Link {
        for (mut node, side) in self.0.into_iter().rev() {
            let unique = Arc::make_mut(&mut node);
            *unique.child_mut(side) = child;
            if rehash {
                unique.rehash();
            }
            child = Some(node);
        }
        child
    }
}

/// Splits a treap into the keys below `key` and the keys above it (`key`
/// itself must not be in it).
fn split(mut link: Link, key: &str) -> (Link, Link) {
    // Nodes below `key` chain through their right children, those above
    // through their left children.
    let (mut lower, mut upper) = (Detached::default(), Detached::default());
    while let Some(node) = link {
        link = if node.key.as_bytes() < key.as_bytes() {
            lower.descend(node, Side::Right)
        } else {
            upper.descend(node, Side::Left)
        };
    }
    (lower.reattach(None), upper.reattach(None))
}

/// Joins two treaps where every key of `lower` is below every key of `upper`.
fn merge(mut lower: Link, mut upper: Link) -> Link {
    let mut picked = Detached::default();
    loop {
        match (lower, upper) {
            (Some(l), Some(u)) => {
                if node_is_above(&l, &u) {
                    lower = picked.descend(l, Side::Right);
                    upper = Some(u);
                } else {
                    upper = picked.descend(u, Side::Left);
                    lower = Some(l);
                }
            }
            (rest, None) | (None, rest) => return picked.reattach(rest),
        }
    }
}

/// The `xian-state-root-v2` tree of a state, updated key by key.
///
/// `Clone` is O(1) and gives a frozen view: later changes to either tree do
/// not show in the other. Keys are not filtered: callers insert consensus keys
/// (`is_consensus_key`) with non-null values only.
#[derive(Clone, Default)]
pub struct MerkleTreap {
    root: Link,
    len: u64,
}

impl fmt::Debug for MerkleTreap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MerkleTreap")
            .field("len", &self.len)
            .field("root_hash", &hex::encode(self.root_hash()))
            .finish()
    }
}

impl MerkleTreap {
    pub fn new() -> Self {
        Self::default()
    }

    /// Keys in the tree.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.root.is_none()
    }

    /// The state root: equal to `RootBuilder` over the same entries. O(1).
    pub fn root_hash(&self) -> StateRoot {
        *link_hash(&self.root)
    }

    /// The leaf hash of `key`, if the tree has it.
    pub fn get(&self, key: &str) -> Option<[u8; 32]> {
        let mut link = self.root.as_deref();
        while let Some(node) = link {
            link = match key.as_bytes().cmp(node.key.as_bytes()) {
                Ordering::Less => node.left.as_deref(),
                Ordering::Greater => node.right.as_deref(),
                Ordering::Equal => return Some(node.leaf),
            };
        }
        None
    }

    /// Sets `key` to the canonical value bytes `canonical_value`.
    pub fn set(&mut self, key: &str, canonical_value: &[u8]) {
        self.insert(key, leaf_hash(key.as_bytes(), canonical_value));
    }

    /// Inserts `key` with leaf hash `leaf`, or replaces its leaf. O(depth).
    pub fn insert(&mut self, key: &str, leaf: [u8; 32]) {
        self.insert_prioritized(key, &priority(key.as_bytes()), leaf);
    }

    fn insert_prioritized(&mut self, key: &str, prio: &[u8; 32], leaf: [u8; 32]) {
        let mut path = Detached::default();
        let mut link = self.root.take();
        let subtree = loop {
            let Some(mut node) = link else {
                self.len += 1;
                break Arc::new(Node::new(key, prio, leaf, None, None));
            };
            let order = key.as_bytes().cmp(node.key.as_bytes());
            if order == Ordering::Equal {
                if node.leaf == leaf {
                    self.root = path.restore(Some(node));
                    return;
                }
                let unique = Arc::make_mut(&mut node);
                unique.leaf = leaf;
                unique.rehash();
                break node;
            }
            if is_above(key, prio, &node) {
                // The new key takes this node's place; the subtree splits
                // around it into its children.
                let (left, right) = split(Some(node), key);
                self.len += 1;
                break Arc::new(Node::new(key, prio, leaf, left, right));
            }
            let side = if order == Ordering::Less {
                Side::Left
            } else {
                Side::Right
            };
            link = path.descend(node, side);
        };
        self.root = path.reattach(Some(subtree));
    }

    /// Removes `key`; returns whether it was there. O(depth).
    pub fn remove(&mut self, key: &str) -> bool {
        // Checked first so that removing an absent key copies no path.
        if self.get(key).is_none() {
            return false;
        }
        let mut path = Detached::default();
        let mut link = self.root.take();
        let subtree = loop {
            let Some(node) = link else { break None };
            link = match key.as_bytes().cmp(node.key.as_bytes()) {
                Ordering::Less => path.descend(node, Side::Left),
                Ordering::Greater => path.descend(node, Side::Right),
                Ordering::Equal => {
                    let (left, right) = match Arc::try_unwrap(node) {
                        Ok(mut owned) => (owned.left.take(), owned.right.take()),
                        Err(shared) => (shared.left.clone(), shared.right.clone()),
                    };
                    self.len -= 1;
                    break merge(left, right);
                }
            };
        };
        self.root = path.reattach(subtree);
        true
    }

    /// Every `(key, leaf hash)` in ascending key order.
    pub fn iter(&self) -> Iter<'_> {
        let mut iter = Iter { stack: Vec::new() };
        iter.push_left_spine(self.root.as_deref());
        iter
    }

    /// The `(key, leaf hash)` pairs with keys `>= start`, ascending: a batched
    /// walk resumes with `range_from(last_key)` and skips `last_key`.
    pub fn range_from(&self, start: &str) -> Iter<'_> {
        let mut stack = Vec::new();
        let mut link = self.root.as_deref();
        while let Some(node) = link {
            if node.key.as_bytes() >= start.as_bytes() {
                stack.push(node);
                link = node.left.as_deref();
            } else {
                link = node.right.as_deref();
            }
        }
        Iter { stack }
    }

    /// The keys starting with `prefix`, ascending.
    pub(crate) fn keys_with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.range_from(prefix)
            .map(|(k, _)| k)
            .take_while(move |k| k.starts_with(prefix))
    }

    /// A proof that `key` is in the tree with its current leaf, checkable
    /// against `root_hash()` alone; `None` if the key is absent.
    pub fn prove(&self, key: &str) -> Option<MembershipProof> {
        let mut path: Vec<(&Node, Side)> = Vec::new();
        let mut link = self.root.as_deref();
        while let Some(node) = link {
            let side = match key.as_bytes().cmp(node.key.as_bytes()) {
                Ordering::Less => Side::Left,
                Ordering::Greater => Side::Right,
                Ordering::Equal => {
                    let ancestors = path
                        .iter()
                        .rev()
                        .map(|&(ancestor, from)| ProofStep {
                            leaf: ancestor.leaf,
                            sibling: *link_hash(ancestor.child(other(from))),
                            from,
                        })
                        .collect();
                    return Some(MembershipProof {
                        left: *link_hash(&node.left),
                        right: *link_hash(&node.right),
                        ancestors,
                    });
                }
            };
            path.push((node, side));
            link = node.child(side).as_deref();
        }
        None
    }
}

impl MerkleTreap {
    /// The left spine, top down, of the subtree of keys after `after` (all keys
    /// for `None`): the [`RangeProof`](super::range_proof::RangeProof) of the
    /// keys up to `after`, read off the tree (the prover's test oracle).
    /// Each node as (leaf hash, right subtree hash).
    pub fn suffix_spine(&self, after: Option<&str>) -> Vec<([u8; 32], [u8; 32])> {
        let mut spine = Vec::new();
        let mut link = self.root.as_deref();
        while let Some(node) = link {
            if after.is_none_or(|a| node.key.as_bytes() > a.as_bytes()) {
                spine.push((node.leaf, *link_hash(&node.right)));
                link = node.left.as_deref();
            } else {
                link = node.right.as_deref();
            }
        }
        spine
    }
}

fn other(side: Side) -> Side {
    match side {
        Side::Left => Side::Right,
        Side::Right => Side::Left,
    }
}

/// In-order iteration with an explicit stack of the nodes still to visit.
pub struct Iter<'a> {
    stack: Vec<&'a Node>,
}

impl<'a> Iter<'a> {
    fn push_left_spine(&mut self, mut link: Option<&'a Node>) {
        while let Some(node) = link {
            self.stack.push(node);
            link = node.left.as_deref();
        }
    }
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, [u8; 32]);

    fn next(&mut self) -> Option<Self::Item> {
        let node = self.stack.pop()?;
        self.push_left_spine(node.right.as_deref());
        Some((&node.key, node.leaf))
    }
}

impl FusedIterator for Iter<'_> {}

impl<'a> IntoIterator for &'a MerkleTreap {
    type Item = (&'a str, [u8; 32]);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// Builds a [`MerkleTreap`] in O(n) from keys in strictly ascending order,
/// holding the right spine as `RootBuilder` does.
#[derive(Default)]
pub struct TreapBuilder {
    /// The right spine from the root down, each with its full priority; a
    /// node's right child is the next one. Left subtrees are final.
    spine: Vec<(Node, [u8; 32])>,
    len: u64,
}

impl TreapBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `key` with leaf hash `leaf`; `key` must be above every key added before.
    pub fn push(&mut self, key: &str, leaf: [u8; 32]) -> Result<(), RootError> {
        if let Some((last, _)) = self.spine.last() {
            // The last key added is always the bottom of the right spine.
            if key.as_bytes() <= last.key.as_bytes() {
                return Err(RootError::OutOfOrder {
                    previous: last.key.to_string(),
                    key: key.to_string(),
                });
            }
        }
        self.push_prioritized(key, priority(key.as_bytes()), leaf);
        Ok(())
    }

    /// Adds `key` with its priority and leaf hash; the caller has checked
    /// that `key` is above every key added before.
    pub(crate) fn push_prioritized(&mut self, key: &str, prio: [u8; 32], leaf: [u8; 32]) {
        // Spine nodes with a larger priority go below the new node and become
        // its left subtree, which is then final (an equal priority stays above,
        // as in `RootBuilder`).
        let keep = self.spine.iter().rposition(|(_, p)| *p <= prio).map_or(0, |i| i + 1);
        let left = fold_spine(self.spine.drain(keep..).map(|(node, _)| node));
        self.spine.push((Node::unhashed(key, &prio, leaf, left, None), prio));
        self.len += 1;
    }

    /// Keys added so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(mut self) -> MerkleTreap {
        let root = fold_spine(self.spine.drain(..).map(|(node, _)| node));
        MerkleTreap { root, len: self.len }
    }
}

/// Links a run of right-spine nodes (top first) into one subtree, hashing
/// each node now that everything below it is final.
fn fold_spine(nodes: impl DoubleEndedIterator<Item = Node>) -> Link {
    let mut below: Link = None;
    for mut node in nodes.rev() {
        node.right = below;
        node.rehash();
        below = Some(Arc::new(node));
    }
    below
}

/// Proof that a key has a value in the state with a given root: the key's
/// node's child hashes and, nearest first, each ancestor's leaf hash, the
/// hash of its other child and the side the path came from. About
/// 64 + 65·depth bytes postcard-serialised.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipProof {
    left: [u8; 32],
    right: [u8; 32],
    ancestors: Vec<ProofStep>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct ProofStep {
    leaf: [u8; 32],
    sibling: [u8; 32],
    /// The ancestor's child the path came up from.
    from: Side,
}

impl MembershipProof {
    /// Whether `key` has the canonical value bytes `canonical_value` in the
    /// state whose root is `root`.
    pub fn verify(&self, key: &str, canonical_value: &[u8], root: &StateRoot) -> bool {
        self.verify_leaf(&leaf_hash(key.as_bytes(), canonical_value), root)
    }

    /// Whether a leaf with hash `leaf` is in the tree whose root is `root`.
    pub(crate) fn verify_leaf(&self, leaf: &[u8; 32], root: &StateRoot) -> bool {
        let mut hash = node_hash(&self.left, leaf, &self.right);
        for step in &self.ancestors {
            hash = match step.from {
                Side::Left => node_hash(&hash, &step.leaf, &step.sibling),
                Side::Right => node_hash(&step.sibling, &step.leaf, &hash),
            };
        }
        &hash == root
    }

    /// The key's depth in the tree (0 for the root).
    pub fn depth(&self) -> usize {
        self.ancestors.len()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::store::root::empty_root;

    #[test]
    fn constants_and_sizes() {
        assert_eq!(EMPTY, empty_root());
        assert_eq!(std::mem::size_of::<Node>(), 104);
        fn send_sync<T: Send + Sync>() {}
        send_sync::<MerkleTreap>();
    }

    /// A test priority whose first 8 bytes are `n` and the rest zero: far
    /// below every real key's priority for small `n`.
    fn low_priority(n: u64) -> [u8; 32] {
        let mut p = [0u8; 32];
        p[..8].copy_from_slice(&n.to_be_bytes());
        p
    }

    fn chain_key(i: usize) -> String {
        format!("deep.{i:07}")
    }

    /// The tree as the definition builds it from `(priority, leaf)` per key.
    fn rebuilt(model: &BTreeMap<String, ([u8; 32], [u8; 32])>) -> MerkleTreap {
        let mut b = TreapBuilder::new();
        for (key, (prio, leaf)) in model {
            b.push_prioritized(key, *prio, *leaf);
        }
        b.finish()
    }

    fn depth(treap: &MerkleTreap) -> usize {
        let mut deepest = 0;
        let mut stack: Vec<(&Node, usize)> = treap.root.as_deref().map(|n| (n, 1)).into_iter().collect();
        while let Some((node, d)) = stack.pop() {
            deepest = deepest.max(d);
            stack.extend(node.left.as_deref().map(|n| (n, d + 1)));
            stack.extend(node.right.as_deref().map(|n| (n, d + 1)));
        }
        deepest
    }

    /// A V of 200,000 test-priority keys: the middle key on top, the lower
    /// half a chain down right spines, the upper half down left spines, their
    /// priorities interleaved so that removing the top merges them into one
    /// chain of the whole depth. Insert, split, merge, iteration, proofs and
    /// drop all walk it on a 256 KiB stack.
    fn deep_treap_work() {
        const N: usize = 200_000;
        let middle = N / 2;
        let mut model = BTreeMap::new();
        for i in 0..N {
            let prio = match i.cmp(&middle) {
                Ordering::Equal => 1,
                Ordering::Less => 2 + 2 * i as u64,
                Ordering::Greater => 3 + 2 * (N - i) as u64,
            };
            model.insert(
                chain_key(i),
                (low_priority(prio), leaf_hash(chain_key(i).as_bytes(), b"1")),
            );
        }
        let mut treap = rebuilt(&model);
        assert_eq!(treap.len(), N as u64);
        assert!(depth(&treap) >= N / 2, "depth {}", depth(&treap));

        let keys: Vec<&str> = treap.iter().map(|(k, _)| k).collect();
        assert_eq!(keys.len(), N);
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(treap.range_from(&chain_key(N - 3)).count(), 3);

        let deepest = chain_key(middle - 1);
        let proof = treap.prove(&deepest).expect("deepest key proves");
        assert!(proof.depth() >= N / 2 - 1);
        assert!(proof.verify(&deepest, b"1", &treap.root_hash()));
        assert!(!proof.verify(&deepest, b"2", &treap.root_hash()));

        let frozen = treap.clone();
        // A real key goes below every test priority: to the bottom of a chain.
        let bottom = format!("{}x", chain_key(middle / 2));
        treap.insert(&bottom, [7; 32]);
        model.insert(bottom.clone(), (priority(bottom.as_bytes()), [7; 32]));
        assert_eq!(treap.root_hash(), rebuilt(&model).root_hash());
        // Removing the old top merges the two chains.
        assert!(treap.remove(&chain_key(middle)));
        model.remove(&chain_key(middle));
        assert_eq!(treap.root_hash(), rebuilt(&model).root_hash());
        assert!(depth(&treap) >= N - 10, "depth {}", depth(&treap));
        // A key above every test priority splits the merged chain in two.
        let top = format!("{}x", chain_key(middle / 3));
        treap.insert_prioritized(&top, &low_priority(0), [8; 32]);
        model.insert(top.clone(), (low_priority(0), [8; 32]));
        assert_eq!(treap.root_hash(), rebuilt(&model).root_hash());
        assert_eq!(treap.len(), model.len() as u64);
        assert!(treap.iter().map(|(k, _)| k).eq(model.keys().map(String::as_str)));

        // The frozen view is untouched, and dropping either tree (shared or
        // not) walks the chains without recursion.
        assert_eq!(frozen.len(), N as u64);
        assert!(proof.verify(&deepest, b"1", &frozen.root_hash()));
        drop(frozen);
        drop(treap);
    }

    #[test]
    fn deep_treap_on_a_small_stack() {
        let worker = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(deep_treap_work)
            .expect("spawn the small-stack thread");
        worker
            .join()
            .expect("the deep-treap work finished without a panic or overflow");
    }

    /// BST and heap order and every cached hash, checked node by node.
    fn check_invariants(treap: &MerkleTreap) {
        let mut count = 0u64;
        let mut stack: Vec<&Node> = treap.root.as_deref().into_iter().collect();
        while let Some(node) = stack.pop() {
            count += 1;
            assert_eq!(node.prio, prefix(&priority(node.key.as_bytes())));
            let fresh = node_hash(link_hash(&node.left), &node.leaf, link_hash(&node.right));
            assert_eq!(node.hash, fresh, "cached hash of {:?}", node.key);
            for (child, side) in [(&node.left, Side::Left), (&node.right, Side::Right)] {
                if let Some(child) = child.as_deref() {
                    assert!(node_is_above(node, child), "heap order at {:?}", node.key);
                    assert_eq!(child.key < node.key, side == Side::Left, "key order at {:?}", node.key);
                    stack.push(child);
                }
            }
        }
        assert_eq!(count, treap.len());
        // Ascending in-order keys make the local key checks global.
        let keys: Vec<&str> = treap.iter().map(|(k, _)| k).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn random_writes_keep_the_invariants() {
        let mut treap = MerkleTreap::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for step in 0..3000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = format!("k{}", x % 300);
            if x.is_multiple_of(3) {
                treap.remove(&key);
            } else {
                treap.set(&key, &step.to_be_bytes());
            }
            if step % 100 == 0 {
                check_invariants(&treap);
            }
        }
        check_invariants(&treap);
    }
}
