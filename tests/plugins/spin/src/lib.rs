//! Test fixture plugin `spin`: loops forever in `write` and in `next`.
//! Otherwise the trivial identity format of `statesnap_plugin_sdk::identity`.

use statesnap_plugin_sdk::identity::IdentityReader;
use statesnap_plugin_sdk::{Description, Format, FormatReader, FormatWriter, PluginError};

pub struct Plugin;

fn describe() -> Description {
    Description {
        name: "spin".into(),
        version: "0.1.0".into(),
        format: 902,
        params: Vec::new(),
        summary: "test fixture: loops forever".into(),
    }
}

pub struct W;
#[derive(Default)]
pub struct R(IdentityReader);

fn spin() -> u64 {
    let mut x = 1u64;
    loop {
        x = std::hint::black_box(x.wrapping_mul(3).wrapping_add(1));
        if x == 0 {
            return x;
        }
    }
}

impl FormatWriter for W {
    fn write(&mut self, _batch: &[u8]) -> Result<Vec<Vec<u8>>, PluginError> {
        spin();
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
        spin();
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
