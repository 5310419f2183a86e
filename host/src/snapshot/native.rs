//! The built-in formats' codecs linked natively: the benchmark baseline that
//! shows what running a format in wasm costs. Never used to restore real
//! snapshots: those always run the plugin whose SHA-256 the manifest names.

use statesnap_plugin_sdk::{Format, FormatReader, FormatWriter};

use super::codec::{ChunkDecoder, ChunkEncoder};
use crate::plugin::{Plugin, PluginError, RejectKind};

struct Native<T>(T, &'static str);

fn wrap(label: &'static str, call: &'static str, e: statesnap_plugin_sdk::PluginError) -> PluginError {
    let (kind, message) = match e {
        statesnap_plugin_sdk::PluginError::InvalidInput(m) => (RejectKind::InvalidInput, m),
        statesnap_plugin_sdk::PluginError::InvalidParams(m) => (RejectKind::InvalidParams, m),
        statesnap_plugin_sdk::PluginError::Internal(m) => (RejectKind::Internal, m),
    };
    PluginError::Rejected {
        plugin: label.to_string(),
        call,
        kind,
        message,
    }
}

impl<W: FormatWriter + Send> ChunkEncoder for Native<W> {
    fn write(&mut self, batch: &[u8]) -> Result<Vec<Vec<u8>>, PluginError> {
        self.0.write(batch).map_err(|e| wrap(self.1, "write", e))
    }
    fn finish(&mut self) -> Result<Vec<Vec<u8>>, PluginError> {
        self.0.finish().map_err(|e| wrap(self.1, "finish", e))
    }
}

impl<R: FormatReader + Send> ChunkDecoder for Native<R> {
    fn feed(&mut self, chunk: &[u8]) -> Result<(), PluginError> {
        self.0.feed(chunk).map_err(|e| wrap(self.1, "feed", e))
    }
    fn next_batch(&mut self, max_bytes: u32) -> Result<Option<Vec<u8>>, PluginError> {
        self.0.next(max_bytes).map_err(|e| wrap(self.1, "next", e))
    }
    fn finish(&mut self) -> Result<(), PluginError> {
        self.0.finish().map_err(|e| wrap(self.1, "finish", e))
    }
}

fn unknown(name: &str) -> anyhow::Error {
    anyhow::anyhow!("--native is only available for the built-in plugins (zstd, gzip, brotli), not `{name}`")
}

/// The native encoder of built-in format `name`.
pub fn encoder(name: &str, params: &[(String, String)]) -> anyhow::Result<Box<dyn ChunkEncoder>> {
    Ok(match name {
        "zstd" => Box::new(Native(
            statesnap_plugin_zstd::Zstd::writer(params).map_err(|e| wrap("native zstd", "new-writer", e))?,
            "native zstd",
        )),
        "gzip" => Box::new(Native(
            statesnap_plugin_gzip::Gzip::writer(params).map_err(|e| wrap("native gzip", "new-writer", e))?,
            "native gzip",
        )),
        "brotli" => Box::new(Native(
            statesnap_plugin_brotli::Brotli::writer(params).map_err(|e| wrap("native brotli", "new-writer", e))?,
            "native brotli",
        )),
        other => return Err(unknown(other)),
    })
}

/// The native decoder for a built-in plugin (matches [`crate::snapshot::DecoderChoice`]).
pub fn decoder(plugin: &Plugin, params: &[(String, String)]) -> Result<Box<dyn ChunkDecoder>, PluginError> {
    let name = plugin.description().name.as_str();
    let not_built_in = || PluginError::Rejected {
        plugin: plugin.label().to_string(),
        call: "native",
        kind: RejectKind::NotBuiltIn,
        message: unknown(name).to_string(),
    };
    Ok(match name {
        "zstd" => Box::new(Native(
            statesnap_plugin_zstd::Zstd::reader(params).map_err(|e| wrap("native zstd", "new-reader", e))?,
            "native zstd",
        )),
        "gzip" => Box::new(Native(
            statesnap_plugin_gzip::Gzip::reader(params).map_err(|e| wrap("native gzip", "new-reader", e))?,
            "native gzip",
        )),
        "brotli" => Box::new(Native(
            statesnap_plugin_brotli::Brotli::reader(params).map_err(|e| wrap("native brotli", "new-reader", e))?,
            "native brotli",
        )),
        _ => return Err(not_built_in()),
    })
}
