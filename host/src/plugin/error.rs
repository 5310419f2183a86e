//! What can go wrong with a plugin, each case naming the plugin.

/// Why a plugin refused a call: the WIT contract's `plugin-error` cases,
/// plus the host's own refusal to run a codec natively it does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectKind {
    /// The chunks or entries it was given are not valid for its format.
    InvalidInput,
    /// A parameter is unknown or out of range.
    InvalidParams,
    /// The plugin failed on its own (a bug it caught).
    Internal,
    /// The host has no native build of this codec (benchmarks only).
    NotBuiltIn,
}

impl std::fmt::Display for RejectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RejectKind::InvalidInput => "invalid input",
            RejectKind::InvalidParams => "invalid parameters",
            RejectKind::Internal => "internal error",
            RejectKind::NotBuiltIn => "not built in",
        })
    }
}

/// An error from loading or calling a format plugin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
        kind: RejectKind,
        message: String,
    },
    #[error("plugin {plugin} describes itself badly: {reason}")]
    BadDescription { plugin: String, reason: String },
    /// The plugin is valid WebAssembly, but this host could not compile it.
    #[error("this host failed to compile plugin {plugin} (valid WebAssembly): {reason}")]
    Compile { plugin: String, reason: String },
    /// This host ran out of a resource (memory, file descriptors) while
    /// running the plugin: the host's failure, not the plugin's.
    #[error("this host failed while running plugin {plugin} in `{call}`: {reason}")]
    Host {
        plugin: String,
        call: &'static str,
        reason: String,
    },
}

impl PluginError {
    /// The plugin it is about, as messages name it ([`Plugin::label`](super::Plugin::label)).
    pub fn plugin(&self) -> &str {
        use PluginError::*;
        match self {
            NotAComponent { plugin, .. }
            | IncompatibleContract { plugin, .. }
            | NotAFormatPlugin { plugin, .. }
            | Instantiate { plugin, .. }
            | Trap { plugin, .. }
            | OutOfFuel { plugin, .. }
            | MemoryLimit { plugin, .. }
            | OutputLimit { plugin, .. }
            | ChunkTooLarge { plugin, .. }
            | Rejected { plugin, .. }
            | BadDescription { plugin, .. }
            | Compile { plugin, .. }
            | Host { plugin, .. } => plugin,
        }
    }

    /// Whether this is the host failing rather than the plugin: another node
    /// would not fail the same way, so it is never a verdict on the plugin
    /// (governance must not record it; the node reports it as its own error).
    /// Everything else is decided by the plugin's bytes and the host's fixed
    /// limits alone, the same on every node.
    pub(crate) fn is_host_failure(&self) -> bool {
        matches!(self, PluginError::Compile { .. } | PluginError::Host { .. })
    }
}
