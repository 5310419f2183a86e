//! Test fixture plugin `v2`: built against plugin contract 2.0.0 (its own copy of the WIT), which this host must refuse.
//! Otherwise the trivial identity format of `statesnap_plugin_sdk::identity`.

use statesnap_plugin_sdk::identity::{IdentityReader, IdentityWriter};
use statesnap_plugin_sdk::{Description, Format, PluginError};

pub struct Plugin;

fn describe() -> Description {
    Description {
        name: "v2".into(),
        version: "0.1.0".into(),
        format: 907,
        params: Vec::new(),
        summary: "test fixture: contract version 2".into(),
    }
}

impl Format for Plugin {
    type Writer = IdentityWriter;
    type Reader = IdentityReader;
    fn describe() -> Description {
        describe()
    }
    fn writer(_: &[(String, String)]) -> Result<IdentityWriter, PluginError> {
        Ok(IdentityWriter::default())
    }
    fn reader(_: &[(String, String)]) -> Result<IdentityReader, PluginError> {
        Ok(IdentityReader::default())
    }
}

#[cfg(target_arch = "wasm32")]
statesnap_plugin_sdk::export_format!(crate::Plugin, "wit");
