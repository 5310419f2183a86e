//! What can go wrong with a plugin, each case naming the plugin.

/// An error from loading or calling a format plugin.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error(
        "plugin {plugin}: not a WebAssembly component ({reason}); build it with `cargo build --target wasm32-wasip2`"
    )]
    NotAComponent { plugin: String, reason: String },
    #[error("plugin {plugin} was built against plugin contract {found}, but this host supports {supported}; rebuild the plugin against wit/plugin.wit of this host")]
    IncompatibleContract {
        plugin: String,
        found: String,
        supported: String,
    },
    #[error("plugin {plugin} does not export the statesnap format interface (it exports: {exports}); it must target the `format-plugin` world of wit/plugin.wit")]
    NotAFormatPlugin { plugin: String, exports: String },
    #[error("plugin {plugin} cannot be instantiated: {reason}")]
    Instantiate { plugin: String, reason: String },
    #[error("plugin {plugin} trapped in `{call}`: {message}")]
    Trap {
        plugin: String,
        call: &'static str,
        message: String,
    },
    #[error(
        "plugin {plugin} ran out of fuel in `{call}` (limit {limit} per call): it loops or does far too much work"
    )]
    OutOfFuel {
        plugin: String,
        call: &'static str,
        limit: u64,
    },
    #[error("plugin {plugin} exceeded its memory limit of {limit} bytes in `{call}`")]
    MemoryLimit {
        plugin: String,
        call: &'static str,
        limit: usize,
    },
    #[error("plugin {plugin} returned {size} bytes from `{call}`, over the limit of {limit}: refusing its output (a decompression bomb or a broken plugin)")]
    OutputLimit {
        plugin: String,
        call: &'static str,
        size: usize,
        limit: usize,
    },
    #[error("plugin {plugin} returned a chunk of {size} bytes from `{call}`, over the chunk limit of {limit}")]
    ChunkTooLarge {
        plugin: String,
        call: &'static str,
        size: usize,
        limit: usize,
    },
    #[error("plugin {plugin} rejected `{call}`: {kind}: {message}")]
    Rejected {
        plugin: String,
        call: &'static str,
        kind: &'static str,
        message: String,
    },
    #[error("plugin {plugin} describes itself badly: {reason}")]
    BadDescription { plugin: String, reason: String },
}
