//! Test fixture plugin `unsorted`: a correct writer whose reader swaps each pair of consecutive entries (entries out of order).
//! Otherwise the trivial identity format of `statesnap_plugin_sdk::identity`.

use statesnap_plugin_sdk::identity::{IdentityReader, IdentityWriter};
use statesnap_plugin_sdk::{Description, Format, FormatReader, PluginError};

pub struct Plugin;

fn describe() -> Description {
    Description {
        name: "unsorted".into(),
        version: "0.1.0".into(),
        format: 906,
        params: Vec::new(),
        summary: "test fixture: entries out of order".into(),
    }
}

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
        let entries: Vec<(&[u8], &[u8])> = statesnap_plugin_sdk::entries(&batch)
            .collect::<Result<_, _>>()
            .map_err(|e| PluginError::InvalidInput(e.to_string()))?;
        let mut out = Vec::new();
        for pair in entries.chunks(2) {
            for (k, v) in pair.iter().rev() {
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
    type Writer = IdentityWriter;
    type Reader = R;
    fn describe() -> Description {
        describe()
    }
    fn writer(_: &[(String, String)]) -> Result<IdentityWriter, PluginError> {
        Ok(IdentityWriter::default())
    }
    fn reader(_: &[(String, String)]) -> Result<R, PluginError> {
        Ok(R::default())
    }
}

#[cfg(target_arch = "wasm32")]
statesnap_plugin_sdk::export_format!(crate::Plugin, "../../../wit");
