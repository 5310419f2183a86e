//! STAND-IN (replaced by the real persistent Merkle treap when it lands):
//! same API, naive O(n) root.

use std::collections::BTreeMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::root::{empty_root, leaf_hash, priority, RootError, StateRoot};

#[derive(Clone, Default)]
pub struct MerkleTreap {
    map: Arc<BTreeMap<String, [u8; 32]>>,
}

fn node_hash(l: &[u8; 32], leaf: &[u8; 32], r: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"xian-state-root-v2:node:");
    h.update(l);
    h.update(leaf);
    h.update(r);
    h.finalize().into()
}

impl MerkleTreap {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn len(&self) -> u64 {
        self.map.len() as u64
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    pub fn root_hash(&self) -> StateRoot {
        let empty = empty_root();
        let mut spine: Vec<([u8; 32], [u8; 32], [u8; 32])> = Vec::new();
        for (k, leaf) in self.map.iter() {
            let p = priority(k.as_bytes());
            let mut left = empty;
            while spine.last().is_some_and(|t| t.0 > p) {
                let t = spine.pop().unwrap();
                left = node_hash(&t.2, &t.1, &left);
            }
            spine.push((p, *leaf, left));
        }
        let mut right = empty;
        for n in spine.into_iter().rev() {
            right = node_hash(&n.2, &n.1, &right);
        }
        right
    }
    pub fn get(&self, key: &str) -> Option<[u8; 32]> {
        self.map.get(key).copied()
    }
    pub fn insert(&mut self, key: &str, leaf: [u8; 32]) {
        Arc::make_mut(&mut self.map).insert(key.to_string(), leaf);
    }
    pub fn set(&mut self, key: &str, canonical_value: &[u8]) {
        self.insert(key, leaf_hash(key.as_bytes(), canonical_value));
    }
    pub fn remove(&mut self, key: &str) -> bool {
        Arc::make_mut(&mut self.map).remove(key).is_some()
    }
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8; 32])> + '_ {
        self.map.iter().map(|(k, v)| (k.as_str(), v))
    }
}

#[derive(Default)]
pub struct TreapBuilder {
    map: BTreeMap<String, [u8; 32]>,
    last: Option<String>,
}

impl TreapBuilder {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn push(&mut self, key: &str, leaf: [u8; 32]) -> Result<(), RootError> {
        if let Some(p) = &self.last {
            if key.as_bytes() <= p.as_bytes() {
                return Err(RootError::OutOfOrder {
                    previous: p.clone(),
                    key: key.to_string(),
                });
            }
        }
        self.last = Some(key.to_string());
        self.map.insert(key.to_string(), leaf);
        Ok(())
    }
    pub fn finish(self) -> MerkleTreap {
        MerkleTreap {
            map: Arc::new(self.map),
        }
    }
}
