//! Where plugins come from: the ones built into the binary and plugin files,
//! each identified by the SHA-256 of its bytes.

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};

use super::runtime::{Plugin, PluginEngine};

/// The plugins shipped inside the binary, by name. The first is the default.
///
/// They come from `statesnap-builtins`, which embeds the committed artifacts
/// of `plugins/dist/` (reproducible builds, see `scripts/build-plugins.sh`),
/// not whatever the local compiler makes of the source: a plugin's SHA-256
/// names its format in every manifest, so every host must embed the same bytes.
pub use statesnap_builtins::BUILT_IN;

/// A known plugin's bytes, compiled only when first used.
struct Source {
    origin: String,
    bytes: Cow<'static, [u8]>,
    sha256: [u8; 32],
}

/// The plugins a host knows: built-ins (unless disabled) and added files.
pub struct PluginRegistry {
    engine: PluginEngine,
    sources: Vec<Source>,
}

impl PluginRegistry {
    /// A registry with the built-in plugins when `built_ins` is true.
    pub fn new(engine: PluginEngine, built_ins: bool) -> Self {
        let mut reg = PluginRegistry {
            engine,
            sources: Vec::new(),
        };
        if built_ins {
            for (name, bytes) in BUILT_IN {
                reg.sources.push(Source {
                    origin: format!("built-in:{name}"),
                    bytes: Cow::Borrowed(bytes),
                    sha256: super::sha256(bytes),
                });
            }
        }
        reg
    }

    pub(crate) fn engine(&self) -> &PluginEngine {
        &self.engine
    }

    /// Adds a plugin file; returns it compiled and described.
    pub fn add_file(&mut self, path: &Path) -> anyhow::Result<Arc<Plugin>> {
        let bytes = std::fs::read(path).with_context(|| format!("reading plugin file {}", path.display()))?;
        self.add_bytes(bytes, &path.display().to_string())
    }

    /// Adds a plugin's wasm from `origin` (a label for messages and lists);
    /// returns it compiled and described.
    pub fn add_bytes(&mut self, bytes: Vec<u8>, origin: &str) -> anyhow::Result<Arc<Plugin>> {
        let sha256 = super::sha256(&bytes);
        let plugin = self.engine.load(&bytes, origin)?;
        if !self.sources.iter().any(|s| s.sha256 == sha256) {
            self.sources.push(Source {
                origin: origin.to_string(),
                bytes: Cow::Owned(bytes),
                sha256,
            });
        }
        Ok(plugin)
    }

    /// Adds every `*.wasm` file of a directory, in name order.
    pub fn add_dir(&mut self, dir: &Path) -> anyhow::Result<()> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .with_context(|| format!("reading plugin directory {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
            .collect();
        files.sort();
        for f in files {
            self.add_file(&f)?;
        }
        Ok(())
    }

    /// A plugin by built-in name, by the name a loaded plugin describes, or by
    /// a path to a `.wasm` file.
    pub fn resolve(&mut self, spec: &str) -> anyhow::Result<Arc<Plugin>> {
        if spec.ends_with(".wasm") || spec.contains('/') {
            return self.add_file(Path::new(spec));
        }
        if let Some(i) = self.sources.iter().position(|s| s.origin == format!("built-in:{spec}")) {
            return self.compile(i);
        }
        for i in 0..self.sources.len() {
            let p = self.compile(i)?;
            if p.description().name == spec {
                return Ok(p);
            }
        }
        bail!(
            "no plugin named `{spec}`: known plugins are {}; or pass a path to a .wasm file",
            self.list()?
                .iter()
                .map(|p| p.description().name.clone())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    /// The plugin whose bytes hash to `sha256`, if known.
    pub fn by_sha256(&self, sha256: &[u8; 32]) -> anyhow::Result<Option<Arc<Plugin>>> {
        match self.sources.iter().position(|s| &s.sha256 == sha256) {
            Some(i) => self.compile(i).map(Some),
            None => Ok(None),
        }
    }

    /// The wasm bytes of the known plugin whose SHA-256 is `sha256`.
    pub fn wasm(&self, sha256: &[u8; 32]) -> Option<&[u8]> {
        self.sources
            .iter()
            .find(|s| &s.sha256 == sha256)
            .map(|s| s.bytes.as_ref())
    }

    /// Every known plugin, compiled, with its origin.
    pub fn list(&self) -> anyhow::Result<Vec<Arc<Plugin>>> {
        (0..self.sources.len()).map(|i| self.compile(i)).collect()
    }

    /// Where each known plugin came from, in the order of [`list`](Self::list).
    pub fn origins(&self) -> Vec<String> {
        self.sources.iter().map(|s| s.origin.clone()).collect()
    }

    fn compile(&self, i: usize) -> anyhow::Result<Arc<Plugin>> {
        let s = &self.sources[i];
        Ok(self.engine.load(&s.bytes, &s.origin)?)
    }
}

#[cfg(test)]
mod tests {
    use super::BUILT_IN;

    /// The pins: what the binary embeds is exactly what `plugins.lock` names,
    /// plugin for plugin (the lock is checked against a rebuild from source
    /// by `scripts/build-plugins.sh --check` in the test command).
    #[test]
    fn the_embedded_plugins_are_the_locked_artifacts() {
        let locked = statesnap_builtins::locked();
        assert_eq!(locked.len(), BUILT_IN.len(), "{}", statesnap_builtins::LOCK);
        for ((name, bytes), (file, sum)) in BUILT_IN.iter().zip(&locked) {
            assert_eq!(*file, format!("{name}.wasm"));
            assert_eq!(hex::encode(crate::plugin::sha256(bytes)), *sum, "built-in {name}");
        }
    }
}
