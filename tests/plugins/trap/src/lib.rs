//! Test fixture plugin `trap`: traps (panics) in `write` and in `feed`.
//! Otherwise the trivial identity format of `statesnap_plugin_sdk::identity`.

use statesnap_plugin_sdk::{Description, Format, FormatReader, FormatWriter, PluginError};

pub struct Plugin;

fn describe() -> Description {
    Description {
        name: "trap".into(),
        version: "0.1.0".into(),
        format: 901,
        params: Vec::new(),
        summary: "test fixture: traps".into(),
    }
}

pub struct W;
pub struct R;

impl FormatWriter for W {
    fn write(&mut self, _batch: &[u8]) -> Result<Vec<Vec<u8>>, PluginError> {
        panic!("trap plugin: deliberate panic in write");
    }
    fn finish(&mut self) -> Result<Vec<Vec<u8>>, PluginError> {
        Ok(vec![Vec::new()])
    }
}

impl FormatReader for R {
    fn feed(&mut self, _chunk: &[u8]) -> Result<(), PluginError> {
        panic!("trap plugin: deliberate panic in feed");
    }
    fn next(&mut self, _max: u32) -> Result<Option<Vec<u8>>, PluginError> {
        Ok(None)
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
        Ok(W)
    }
    fn reader(_: &[(String, String)]) -> Result<R, PluginError> {
        Ok(R)
    }
}

#[cfg(target_arch = "wasm32")]
statesnap_plugin_sdk::export_format!(crate::Plugin, "../../../wit");
