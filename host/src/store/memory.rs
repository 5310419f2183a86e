//! An in-memory store: for plugin conformance checks, tests and benchmarks.

use std::collections::BTreeMap;

use super::{Entry, StateStore};

/// A `StateStore` kept in a sorted map.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MemoryStore {
    map: BTreeMap<String, String>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.map.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl StateStore for MemoryStore {
    fn get(&self, key: &str) -> anyhow::Result<Option<String>> {
        Ok(self.map.get(key).cloned())
    }

    fn entries(&self) -> anyhow::Result<Box<dyn Iterator<Item = anyhow::Result<Entry>> + '_>> {
        // BTreeMap<String> orders by bytes, which is the key order we need.
        Ok(Box::new(self.map.iter().map(|(k, v)| {
            Ok(Entry {
                key: k.clone(),
                stored: v.clone(),
            })
        })))
    }

    fn write_batch(&mut self, batch: &[(String, Option<String>)]) -> anyhow::Result<()> {
        for (k, v) in batch {
            match v {
                Some(v) => self.map.insert(k.clone(), v.clone()),
                None => self.map.remove(k),
            };
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}
