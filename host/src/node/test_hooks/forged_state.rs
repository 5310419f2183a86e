//! Test only: the state a hostile validator would serve under the trusted
//! app hash. Every entry is the real one except the value of the last
//! consensus entry, so every chunk but the last holds genuine entries and
//! only the range proofs (made from this state's treap) can give it away.

use std::collections::VecDeque;

use crate::store::root::is_consensus_key;
use crate::store::value::is_null;
use crate::store::{Entry, StateStore};

/// A read-only view of `inner` with its last consensus entry's value altered.
pub(super) struct ForgedState<'a>(pub &'a dyn StateStore);

impl StateStore for ForgedState<'_> {
    fn get(&self, key: &str) -> anyhow::Result<Option<String>> {
        self.0.get(key)
    }

    fn entries(&self) -> anyhow::Result<Box<dyn Iterator<Item = anyhow::Result<Entry>> + '_>> {
        Ok(Box::new(AlterLast {
            inner: self.0.entries()?,
            held: VecDeque::new(),
            done: false,
        }))
    }

    fn write_batch(&mut self, _: &[(String, Option<String>)]) -> anyhow::Result<()> {
        anyhow::bail!("a forged state is read-only")
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Holds the entries from the latest consensus entry on, until another
/// consensus entry comes (release them) or the stream ends (alter the first).
struct AlterLast<'a> {
    inner: Box<dyn Iterator<Item = anyhow::Result<Entry>> + 'a>,
    held: VecDeque<Entry>,
    done: bool,
}

fn counts(e: &Entry) -> bool {
    is_consensus_key(&e.key) && !is_null(&e.stored)
}

impl Iterator for AlterLast<'_> {
    type Item = anyhow::Result<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            // Release what is held once a later consensus entry shows it is
            // not the last (the front is the held consensus entry).
            if self.done || self.held.len() > 1 && counts(self.held.back().expect("held")) {
                if let Some(e) = self.held.pop_front() {
                    return Some(Ok(e));
                }
                if self.done {
                    return None;
                }
            }
            match self.inner.next() {
                Some(Ok(e)) => {
                    if self.held.is_empty() && !counts(&e) {
                        return Some(Ok(e));
                    }
                    self.held.push_back(e);
                }
                Some(Err(e)) => return Some(Err(e)),
                None => {
                    self.done = true;
                    if let Some(last) = self.held.front_mut() {
                        last.stored = if last.stored == "1" { "2".into() } else { "1".into() };
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    #[test]
    fn only_the_last_consensus_value_differs() {
        let mut real = MemoryStore::default();
        let writes: Vec<(String, Option<String>)> = [("a", "7"), ("b", "1"), ("c", "9"), ("zz", "3")]
            .iter()
            .map(|(k, v)| (k.to_string(), Some(v.to_string())))
            .chain([("__n.x".to_string(), Some("5".to_string()))])
            .collect();
        real.write_batch(&writes).unwrap();
        let read = |s: &dyn StateStore| -> Vec<(String, String)> {
            s.entries()
                .unwrap()
                .map(|e| e.map(|e| (e.key, e.stored)).unwrap())
                .collect()
        };
        let (got, want) = (read(&ForgedState(&real)), read(&real));
        assert_eq!(got.len(), want.len());
        let differ: Vec<_> = got.iter().zip(&want).filter(|(g, w)| g != w).collect();
        assert_eq!(differ.len(), 1, "{got:?}");
        assert_eq!(differ[0].1 .0, "zz");
        assert_eq!(differ[0].0 .1, "1");
    }
}
