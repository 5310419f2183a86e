//! Test fixture plugin `hog`: allocates without bound in `write` and in `next`.
//! Otherwise the trivial identity format of `statesnap_plugin_sdk::identity`.

use statesnap_plugin_sdk::identity::IdentityReader;
use statesnap_plugin_sdk::{Description, Format, FormatReader, FormatWriter, PluginError};

pub struct Plugin;

fn describe() -> Description {
    Description {
        name: "hog".into(),
        version: "0.1.0".into(),
        format: 903,
        params: Vec::new(),
        summary: "test fixture: allocates without bound".into(),
    }
}

pub struct W;
#[derive(Default)]
pub struct R(IdentityReader);

fn hog() -> usize {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![7u8; 1 << 20]);
        if std::hint::black_box(hoard.len()) == usize::MAX {
            return hoard.len();
        }
    }
}

impl FormatWriter for W {
    fn write(&mut self, _batch: &[u8]) -> Result<Vec<Vec<u8>>, PluginError> {
        hog();
        Ok(Vec::new())
    }
    fn finish(&mut self) -> Result<Vec<Vec<u8>>, PluginError> {
        Ok(vec![Vec::new()])
    }
}

impl FormatReader for R {
    fn feed(&mut self, chunk: &[u8]) -> Result<(), PluginError> {
        self.0.feed(chunk)
    }
    fn next(&mut self, _max: u32) -> Result<Option<Vec<u8>>, PluginError> {
        hog();
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
        Ok(R::default())
    }
}

#[cfg(target_arch = "wasm32")]
statesnap_plugin_sdk::export_format!(crate::Plugin, "../../../wit");
