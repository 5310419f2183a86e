//! A format as plain Rust: what a plugin implements once, and what both its
//! component (through [`export_format!`](crate::export_format)) and the host's
//! native benchmark baseline run.

/// What a plugin is (mirrors the WIT `description`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description {
    pub name: String,
    pub version: String,
    pub format: u32,
    /// Parameters and their default values.
    pub params: Vec<(String, String)>,
    pub summary: String,
}

/// A plugin's errors (mirrors the WIT `plugin-error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginError {
    InvalidInput(String),
    InvalidParams(String),
    Internal(String),
}

impl core::fmt::Display for PluginError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PluginError::InvalidInput(m) => write!(f, "invalid input: {m}"),
            PluginError::InvalidParams(m) => write!(f, "invalid parameters: {m}"),
            PluginError::Internal(m) => write!(f, "internal error: {m}"),
        }
    }
}

impl std::error::Error for PluginError {}

/// Entries in, chunks out (see the WIT `writer`).
pub trait FormatWriter {
    fn write(&mut self, batch: &[u8]) -> Result<Vec<Vec<u8>>, PluginError>;
    fn finish(&mut self) -> Result<Vec<Vec<u8>>, PluginError>;
}

/// Chunks in, entries out (see the WIT `reader`).
pub trait FormatReader {
    fn feed(&mut self, chunk: &[u8]) -> Result<(), PluginError>;
    fn next(&mut self, max_bytes: u32) -> Result<Option<Vec<u8>>, PluginError>;
    fn finish(&mut self) -> Result<(), PluginError>;
}

/// A snapshot format.
pub trait Format {
    type Writer: FormatWriter;
    type Reader: FormatReader;
    fn describe() -> Description;
    fn writer(params: &[(String, String)]) -> Result<Self::Writer, PluginError>;
    fn reader(params: &[(String, String)]) -> Result<Self::Reader, PluginError>;
}

/// Reads an integer parameter within `range`, or `default` when absent.
/// Unknown parameter names are refused so typos do not pass silently.
pub fn param_u64(
    params: &[(String, String)],
    known: &[&str],
    name: &str,
    default: u64,
    range: core::ops::RangeInclusive<u64>,
) -> Result<u64, PluginError> {
    if let Some((unknown, _)) = params.iter().find(|(n, _)| !known.contains(&n.as_str())) {
        return Err(PluginError::InvalidParams(format!(
            "unknown parameter `{unknown}` (known: {})",
            known.join(", ")
        )));
    }
    let Some((_, v)) = params.iter().rev().find(|(n, _)| n == name) else {
        return Ok(default);
    };
    let n: u64 = v
        .trim()
        .parse()
        .map_err(|_| PluginError::InvalidParams(format!("`{name}` must be an integer, got {v:?}")))?;
    if !range.contains(&n) {
        return Err(PluginError::InvalidParams(format!(
            "`{name}` must be between {} and {}, got {n}",
            range.start(),
            range.end()
        )));
    }
    Ok(n)
}

/// Exports a [`Format`] type as the `format-plugin` component.
///
/// ```ignore
/// #[cfg(target_arch = "wasm32")]
/// statesnap_plugin_sdk::export_format!(MyFormat, "../../wit");
/// ```
/// The plugin crate must depend on `wit-bindgen` (for wasm32 only) and give
/// the path of the `wit/` directory relative to its own manifest.
#[macro_export]
macro_rules! export_format {
    ($format:ty, $wit:literal) => {
        mod __statesnap_component {
            wit_bindgen::generate!({ path: $wit, world: "format-plugin" });

            use exports::statesnap::plugin::format as wit;
            use std::cell::RefCell;
            use $crate::{Format, FormatReader, FormatWriter};

            type F = super::__StatesnapFormat;

            fn err(e: $crate::PluginError) -> wit::PluginError {
                match e {
                    $crate::PluginError::InvalidInput(m) => wit::PluginError::InvalidInput(m),
                    $crate::PluginError::InvalidParams(m) => wit::PluginError::InvalidParams(m),
                    $crate::PluginError::Internal(m) => wit::PluginError::Internal(m),
                }
            }

            fn params(p: Vec<wit::Param>) -> Vec<(String, String)> {
                p.into_iter().map(|p| (p.name, p.value)).collect()
            }

            struct Component;

            impl wit::Guest for Component {
                type Writer = WriterRes;
                type Reader = ReaderRes;

                fn describe() -> wit::Description {
                    let d = F::describe();
                    wit::Description {
                        name: d.name,
                        version: d.version,
                        format: d.format,
                        params: d.params.into_iter().map(|(name, value)| wit::Param { name, value }).collect(),
                        summary: d.summary,
                    }
                }

                fn new_writer(p: Vec<wit::Param>) -> Result<wit::Writer, wit::PluginError> {
                    let w = F::writer(&params(p)).map_err(err)?;
                    Ok(wit::Writer::new(WriterRes(RefCell::new(w))))
                }

                fn new_reader(p: Vec<wit::Param>) -> Result<wit::Reader, wit::PluginError> {
                    let r = F::reader(&params(p)).map_err(err)?;
                    Ok(wit::Reader::new(ReaderRes(RefCell::new(r))))
                }
            }

            struct WriterRes(RefCell<<F as Format>::Writer>);

            impl wit::GuestWriter for WriterRes {
                fn write(&self, batch: Vec<u8>) -> Result<Vec<Vec<u8>>, wit::PluginError> {
                    self.0.borrow_mut().write(&batch).map_err(err)
                }
                fn finish(&self) -> Result<Vec<Vec<u8>>, wit::PluginError> {
                    self.0.borrow_mut().finish().map_err(err)
                }
            }

            struct ReaderRes(RefCell<<F as Format>::Reader>);

            impl wit::GuestReader for ReaderRes {
                fn feed(&self, chunk: Vec<u8>) -> Result<(), wit::PluginError> {
                    self.0.borrow_mut().feed(&chunk).map_err(err)
                }
                fn next(&self, max_bytes: u32) -> Result<Option<Vec<u8>>, wit::PluginError> {
                    self.0.borrow_mut().next(max_bytes).map_err(err)
                }
                fn finish(&self) -> Result<(), wit::PluginError> {
                    self.0.borrow_mut().finish().map_err(err)
                }
            }

            export!(Component);
        }
        type __StatesnapFormat = $format;
    };
}
