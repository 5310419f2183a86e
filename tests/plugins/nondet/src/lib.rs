//! Test fixture plugin `nondet`: output depends on hidden state: a global counter of writers made is written into the first chunk, so two snapshots made in one instance differ.
//! Otherwise the trivial identity format of `statesnap_plugin_sdk::identity`.

use statesnap_plugin_sdk::identity::{IdentityReader, IdentityWriter};
use statesnap_plugin_sdk::{Description, Format, FormatReader, FormatWriter, PluginError};

pub struct Plugin;

fn describe() -> Description {
    Description {
        name: "nondet".into(),
        version: "0.1.0".into(),
        format: 905,
        params: Vec::new(),
        summary: "test fixture: non-deterministic".into(),
    }
}

use std::sync::atomic::{AtomicU64, Ordering};

static WRITERS: AtomicU64 = AtomicU64::new(0);

pub struct W {
    inner: IdentityWriter,
    stamp: Option<u64>,
}

impl FormatWriter for W {
    fn write(&mut self, batch: &[u8]) -> Result<Vec<Vec<u8>>, PluginError> {
        let mut chunks = self.inner.write(batch)?;
        if let (Some(stamp), Some(first)) = (self.stamp, chunks.first_mut()) {
            // A valid extra entry whose value changes from writer to writer.
            let mut stamped = Vec::new();
            statesnap_plugin_sdk::push_entry(&mut stamped, b"!stamp", stamp.to_string().as_bytes());
            stamped.extend_from_slice(first);
            *first = stamped;
            self.stamp = None;
        }
        Ok(chunks)
    }
    fn finish(&mut self) -> Result<Vec<Vec<u8>>, PluginError> {
        self.inner.finish()
    }
}

/// Drops the stamp entry again, so the round trip itself is right.
#[derive(Default)]
pub struct R(IdentityReader);

impl FormatReader for R {
    fn feed(&mut self, chunk: &[u8]) -> Result<(), PluginError> {
        self.0.feed(chunk)
    }
    fn next(&mut self, max: u32) -> Result<Option<Vec<u8>>, PluginError> {
        let Some(batch) = self.0.next(max)? else {
            return Ok(None);
        };
        let mut out = Vec::new();
        for e in statesnap_plugin_sdk::entries(&batch) {
            let (k, v) = e.map_err(|e| PluginError::InvalidInput(e.to_string()))?;
            if k != b"!stamp" {
                statesnap_plugin_sdk::push_entry(&mut out, k, v);
            }
        }
        Ok(Some(out))
    }
    fn finish(&mut self) -> Result<(), PluginError> {
        Ok(())
    }
}

impl Format for Plugin {
    type Writer = W;
    type Reader = R;
    fn describe() -> Description {
        describe()
    }
    fn writer(_: &[(String, String)]) -> Result<W, PluginError> {
        let stamp = WRITERS.fetch_add(1, Ordering::Relaxed);
        Ok(W {
            inner: IdentityWriter::default(),
            stamp: Some(stamp),
        })
    }
    fn reader(_: &[(String, String)]) -> Result<R, PluginError> {
        Ok(R::default())
    }
}

#[cfg(target_arch = "wasm32")]
statesnap_plugin_sdk::export_format!(crate::Plugin, "../../../wit");
