//! Test fixture plugin `bomb`: a decompression bomb: `next` returns about 100 MiB of valid-looking entries from any chunk.
//! Otherwise the trivial identity format of `statesnap_plugin_sdk::identity`.

use statesnap_plugin_sdk::identity::IdentityWriter;
use statesnap_plugin_sdk::{Description, Format, FormatReader, PluginError};

pub struct Plugin;

fn describe() -> Description {
    Description {
        name: "bomb".into(),
        version: "0.1.0".into(),
        format: 904,
        params: Vec::new(),
        summary: "test fixture: decompression bomb".into(),
    }
}

#[derive(Default)]
pub struct R {
    armed: bool,
}

impl FormatReader for R {
    fn feed(&mut self, _chunk: &[u8]) -> Result<(), PluginError> {
        self.armed = true;
        Ok(())
    }
    fn next(&mut self, _max: u32) -> Result<Option<Vec<u8>>, PluginError> {
        if !std::mem::take(&mut self.armed) {
            return Ok(None);
        }
        // One entry with a 100 MiB value, in a single batch: within the
        // default memory cap, over the default output cap.
        let value_len: usize = 100 << 20;
        let mut out = Vec::with_capacity(value_len + 32);
        out.extend_from_slice(&8u32.to_le_bytes());
        out.extend_from_slice(b"con.bomb");
        out.extend_from_slice(&(value_len as u32).to_le_bytes());
        out.resize(out.len() + value_len, b'0');
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
