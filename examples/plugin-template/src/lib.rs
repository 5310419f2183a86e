//! A statesnap format plugin, as small as one can be. It packs entries into
//! chunks of up to `chunk_bytes` bytes, unchanged and uncompressed; replace
//! the encoding with your own.
//!
//! Build and check it:
//! ```sh
//! cargo build --release --target wasm32-wasip2 -p statesnap-plugin-template
//! statesnap plugin check target/wasm32-wasip2/release/statesnap_plugin_template.wasm
//! ```
//!
//! The rules the host enforces: same entries in, same bytes out; at least one
//! chunk; each chunk under 16,000,000 bytes; errors returned, not panicked.

use statesnap_plugin_sdk::identity::IdentityReader;
use statesnap_plugin_sdk::{param_u64, Description, Format, FormatWriter, PluginError};

pub struct Template;

const KNOWN: &[&str] = &["chunk_bytes"];

impl Format for Template {
    type Writer = Writer;
    // Chunks hold framed entries as they are, so the sdk's identity reader
    // decodes them; a real format brings its own reader.
    type Reader = IdentityReader;

    fn describe() -> Description {
        Description {
            name: "template".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            // Pick a format number no other plugin of your network uses.
            format: 100,
            params: vec![("chunk_bytes".into(), "4000000".into())],
            summary: "uncompressed entries packed into chunks (a template)".into(),
        }
    }

    fn writer(params: &[(String, String)]) -> Result<Writer, PluginError> {
        let chunk_bytes = param_u64(params, KNOWN, "chunk_bytes", 4_000_000, 1024..=15_000_000)? as usize;
        Ok(Writer {
            chunk_bytes,
            current: Vec::new(),
            chunks: 0,
        })
    }

    fn reader(_params: &[(String, String)]) -> Result<IdentityReader, PluginError> {
        Ok(IdentityReader::default())
    }
}

pub struct Writer {
    chunk_bytes: usize,
    current: Vec<u8>,
    chunks: u64,
}

impl FormatWriter for Writer {
    fn write(&mut self, batch: &[u8]) -> Result<Vec<Vec<u8>>, PluginError> {
        let mut out = Vec::new();
        for entry in statesnap_plugin_sdk::entries(batch) {
            let (key, value) = entry.map_err(|e| PluginError::InvalidInput(e.to_string()))?;
            let size = statesnap_plugin_sdk::framed_len(key, value);
            if !self.current.is_empty() && self.current.len() + size > self.chunk_bytes {
                out.push(std::mem::take(&mut self.current));
                self.chunks += 1;
            }
            statesnap_plugin_sdk::push_entry(&mut self.current, key, value);
        }
        Ok(out)
    }

    fn finish(&mut self) -> Result<Vec<Vec<u8>>, PluginError> {
        if self.current.is_empty() && self.chunks > 0 {
            return Ok(Vec::new());
        }
        Ok(vec![std::mem::take(&mut self.current)])
    }
}

#[cfg(target_arch = "wasm32")]
statesnap_plugin_sdk::export_format!(crate::Template, "../../wit");
