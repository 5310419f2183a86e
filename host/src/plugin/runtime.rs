//! The wasmtime engine that compiles and runs format plugins.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use wasmtime::component::{Component, Linker, ResourceAny};
use wasmtime::{Config, Engine, Store, Trap};

use super::error::{PluginError, RejectKind};
use super::limits::Limits;
use super::sandbox::Sandbox;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "format-plugin",
    });
}

use bindings::exports::statesnap::plugin::format as wit;
use bindings::{FormatPlugin, FormatPluginPre};

/// The version of `wit/plugin.wit` this host implements. Plugins built against
/// the same major version are accepted.
pub const CONTRACT_VERSION: &str = "1.0.0";
const CONTRACT_PACKAGE: &str = "statesnap:plugin";

/// What a plugin says it is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Description {
    pub name: String,
    pub version: String,
    pub format: u32,
    /// Parameters with their default values.
    pub params: Vec<(String, String)>,
    pub summary: String,
}

/// Compiles plugins once per process and instantiates them in sandboxes.
#[derive(Clone)]
pub struct PluginEngine {
    engine: Engine,
    linker: Arc<Linker<Sandbox>>,
    limits: Limits,
    compiled: Arc<Mutex<HashMap<[u8; 32], Arc<Plugin>>>>,
}

impl PluginEngine {
    /// An engine configured for deterministic, bounded execution.
    pub fn new(limits: Limits) -> anyhow::Result<Self> {
        Self::build(limits, None)
    }

    /// The same engine, keeping the native code it compiles in `dir` (made if
    /// missing; must be absolute) so that the next process loading the same
    /// plugin skips compiling it: seconds for a large plugin, such as a
    /// componentize-py one. wasmtime keys each entry by the plugin's bytes,
    /// its own version and the compiler settings, so a cached entry is the
    /// code this engine would compile. The directory must be as trusted as
    /// the binary: its files are loaded as native code. The chain's
    /// conformance check never uses a cache.
    pub fn with_compile_cache(limits: Limits, dir: &std::path::Path) -> anyhow::Result<Self> {
        Self::build(limits, Some(dir))
    }

    fn build(limits: Limits, cache_dir: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let mut config = Config::new();
        if let Some(dir) = cache_dir {
            anyhow::ensure!(
                dir.is_absolute(),
                "the compile cache directory must be an absolute path, not {}",
                dir.display()
            );
            // Private to this user: its files are loaded as native code.
            let mut mkdir = std::fs::DirBuilder::new();
            mkdir.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut mkdir, 0o700);
            mkdir
                .create(dir)
                .map_err(|e| anyhow::anyhow!("creating the compile cache directory {}: {e}", dir.display()))?;
            let mut cache = wasmtime::CacheConfig::new();
            cache.with_directory(dir);
            let cache = wasmtime::Cache::new(cache)
                .map_err(|e| anyhow::anyhow!("opening the compile cache in {}: {e:#}", dir.display()))?;
            config.cache(Some(cache));
        }
        config
            .wasm_component_model(true)
            .consume_fuel(true)
            // Determinism: canonical NaNs, no relaxed SIMD. (Threads are not
            // compiled into this wasmtime build at all.)
            .wasm_relaxed_simd(false)
            .cranelift_nan_canonicalization(true);
        let engine = Engine::new(&config).map_err(|e| anyhow::anyhow!("configuring wasmtime: {e}"))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| anyhow::anyhow!("linking WASI: {e}"))?;
        Ok(PluginEngine {
            engine,
            linker: Arc::new(linker),
            limits,
            compiled: Arc::default(),
        })
    }

    /// The limits every call runs under.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Compiles (once per process, keyed by SHA-256) and describes a plugin.
    /// `label` names it in errors until its own description is known.
    pub(crate) fn load(&self, bytes: &[u8], label: &str) -> Result<Arc<Plugin>, PluginError> {
        let sha256 = super::sha256(bytes);
        if let Some(p) = self.compiled.lock().unwrap().get(&sha256) {
            return Ok(p.clone());
        }
        let component = Component::new(&self.engine, bytes).map_err(|e| {
            let reason = first_line(&format!("{e:#}"));
            // wasmtime validates and translates first (under the engine's
            // fixed features: the same answer on every node), then compiles;
            // a failure after translation is this host's.
            if is_invalid_wasm(&e) {
                PluginError::NotAComponent {
                    plugin: label.to_string(),
                    reason,
                }
            } else {
                PluginError::Compile {
                    plugin: label.to_string(),
                    reason,
                }
            }
        })?;
        self.check_contract(&component, label)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .and_then(FormatPluginPre::new)
            .map_err(|e| PluginError::Instantiate {
                plugin: label.to_string(),
                reason: format!("{e:#}"),
            })?;
        let mut plugin = Plugin {
            sha256,
            label: format!("{label} ({})", &hex::encode(sha256)[..12]),
            description: Description {
                name: String::new(),
                version: String::new(),
                format: 0,
                params: Vec::new(),
                summary: String::new(),
            },
            pre,
            engine: self.clone(),
            size: bytes.len(),
        };
        let described = plugin.instantiate()?.describe()?;
        validate_description(&described, &plugin.label)?;
        plugin.label = format!(
            "{} {} ({})",
            described.name,
            described.version,
            &hex::encode(sha256)[..12]
        );
        plugin.description = described;
        let plugin = Arc::new(plugin);
        self.compiled.lock().unwrap().insert(sha256, plugin.clone());
        Ok(plugin)
    }

    /// Refuses a component built against another major version of the contract,
    /// before anything of it runs.
    fn check_contract(&self, component: &Component, label: &str) -> Result<(), PluginError> {
        let ty = component.component_type();
        let exports: Vec<String> = ty.exports(&self.engine).map(|(name, _)| name.to_string()).collect();
        let ours = format!("{CONTRACT_PACKAGE}/format@");
        let Some(found) = exports.iter().find_map(|e| e.strip_prefix(&ours)) else {
            return Err(PluginError::NotAFormatPlugin {
                plugin: label.to_string(),
                exports: if exports.is_empty() {
                    "nothing".into()
                } else {
                    exports.join(", ")
                },
            });
        };
        let supported = semver::Version::parse(CONTRACT_VERSION).expect("valid contract version");
        let compatible = semver::Version::parse(found)
            .map(|v| v.major == supported.major && (v.major > 0 || v.minor == supported.minor))
            .unwrap_or(false);
        if !compatible {
            return Err(PluginError::IncompatibleContract {
                plugin: label.to_string(),
                found: found.to_string(),
                supported: format!("{}.x", supported.major),
            });
        }
        Ok(())
    }
}

/// A compiled plugin. Cheap to share; each snapshot operation gets a fresh
/// instance so no state leaks from one to the next.
pub struct Plugin {
    sha256: [u8; 32],
    label: String,
    description: Description,
    pre: FormatPluginPre<Sandbox>,
    engine: PluginEngine,
    size: usize,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin").field("label", &self.label).finish()
    }
}

impl Plugin {
    pub fn sha256(&self) -> [u8; 32] {
        self.sha256
    }
    pub fn description(&self) -> &Description {
        &self.description
    }
    /// Where it came from and its SHA-256's prefix ("origin (sha256 prefix)"),
    /// for messages: what [`PluginError::plugin`] names.
    pub fn label(&self) -> &str {
        &self.label
    }
    /// The limits its calls run under.
    pub(crate) fn limits(&self) -> Limits {
        self.engine.limits
    }
    /// Size of the plugin's wasm in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The description's parameters with `overrides` applied; unknown names are refused.
    pub fn resolve_params(&self, overrides: &[(String, String)]) -> Result<Vec<(String, String)>, PluginError> {
        let mut params = self.description.params.clone();
        for (name, value) in overrides {
            match params.iter_mut().find(|(n, _)| n == name) {
                Some(p) => p.1 = value.clone(),
                None => {
                    return Err(PluginError::Rejected {
                        plugin: self.label.clone(),
                        call: "params",
                        kind: RejectKind::InvalidParams,
                        message: format!(
                            "unknown parameter `{name}` (known: {})",
                            params.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
                        ),
                    })
                }
            }
        }
        Ok(params)
    }

    fn instantiate(&self) -> Result<Instance, PluginError> {
        let limits = self.engine.limits;
        let mut store = Store::new(&self.engine.engine, Sandbox::new(limits.memory_bytes));
        store.limiter(|s| &mut s.limiter);
        store
            .set_fuel(limits.fuel_per_call)
            .expect("fuel is enabled on the engine");
        let bindings = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| classify(e, &mut store, &self.label, "instantiate", limits))?;
        Ok(Instance {
            store,
            bindings,
            label: self.label.clone(),
            limits,
            fuel_used: 0,
        })
    }

    /// Starts encoding a snapshot in a fresh instance.
    pub fn writer(&self, params: &[(String, String)]) -> Result<PluginWriter, PluginError> {
        let mut inst = self.instantiate()?;
        let params = to_wit_params(params);
        let handle = inst.call("new-writer", |s, b| {
            b.statesnap_plugin_format().call_new_writer(s, &params)
        })?;
        let handle = inst.plugin_result("new-writer", handle)?;
        Ok(PluginWriter {
            inst,
            handle,
            finished: false,
        })
    }

    /// Starts decoding a snapshot in a fresh instance.
    pub(crate) fn reader(&self, params: &[(String, String)]) -> Result<PluginReader, PluginError> {
        let mut inst = self.instantiate()?;
        let params = to_wit_params(params);
        let handle = inst.call("new-reader", |s, b| {
            b.statesnap_plugin_format().call_new_reader(s, &params)
        })?;
        let handle = inst.plugin_result("new-reader", handle)?;
        Ok(PluginReader { inst, handle })
    }
}

/// One sandboxed instance of a plugin, with its fuel account.
struct Instance {
    store: Store<Sandbox>,
    bindings: FormatPlugin,
    label: String,
    limits: Limits,
    fuel_used: u64,
}

impl Instance {
    /// Runs one call under a fresh fuel budget and turns any failure into a
    /// `PluginError`.
    fn call<R>(
        &mut self,
        call: &'static str,
        f: impl FnOnce(&mut Store<Sandbox>, &FormatPlugin) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        self.store.set_fuel(self.limits.fuel_per_call).expect("fuel is enabled");
        self.store.data_mut().limiter.hit = false;
        let result = f(&mut self.store, &self.bindings);
        let left = self.store.get_fuel().unwrap_or(0);
        self.fuel_used += self.limits.fuel_per_call - left;
        result.map_err(|e| classify(e, &mut self.store, &self.label, call, self.limits))
    }

    fn plugin_result<T>(&self, call: &'static str, r: Result<T, wit::PluginError>) -> Result<T, PluginError> {
        r.map_err(|e| {
            let (kind, message) = match e {
                wit::PluginError::InvalidInput(m) => (RejectKind::InvalidInput, m),
                wit::PluginError::InvalidParams(m) => (RejectKind::InvalidParams, m),
                wit::PluginError::Internal(m) => (RejectKind::Internal, m),
            };
            PluginError::Rejected {
                plugin: self.label.clone(),
                call,
                kind,
                message,
            }
        })
    }

    fn describe(&mut self) -> Result<Description, PluginError> {
        let d = self.call("describe", |s, b| b.statesnap_plugin_format().call_describe(s))?;
        Ok(Description {
            name: d.name,
            version: d.version,
            format: d.format,
            params: d.params.into_iter().map(|p| (p.name, p.value)).collect(),
            summary: d.summary,
        })
    }

    /// Checks a call's chunks against the chunk and output limits.
    fn check_chunks(&self, call: &'static str, chunks: &[Vec<u8>]) -> Result<(), PluginError> {
        let total: usize = chunks.iter().map(Vec::len).sum();
        if total > self.limits.output_bytes_per_call {
            return Err(PluginError::OutputLimit {
                plugin: self.label.clone(),
                call,
                size: total,
                limit: self.limits.output_bytes_per_call,
            });
        }
        if let Some(big) = chunks.iter().find(|c| c.len() > self.limits.max_chunk_bytes) {
            return Err(PluginError::ChunkTooLarge {
                plugin: self.label.clone(),
                call,
                size: big.len(),
                limit: self.limits.max_chunk_bytes,
            });
        }
        Ok(())
    }
}

/// Entries in, chunks out, in one sandboxed instance.
pub struct PluginWriter {
    inst: Instance,
    handle: ResourceAny,
    finished: bool,
}

impl PluginWriter {
    /// Adds a batch of framed entries (see `statesnap_plugin_sdk`); returns the
    /// chunks it completed.
    pub fn write(&mut self, batch: &[u8]) -> Result<Vec<Vec<u8>>, PluginError> {
        let h = self.handle;
        let r = self.inst.call("write", |s, b| {
            b.statesnap_plugin_format().writer().call_write(s, h, batch)
        })?;
        let chunks = self.inst.plugin_result("write", r)?;
        self.inst.check_chunks("write", &chunks)?;
        Ok(chunks)
    }

    /// Ends the stream; returns the remaining chunks.
    pub(crate) fn finish(&mut self) -> Result<Vec<Vec<u8>>, PluginError> {
        assert!(!self.finished, "writer finished twice");
        self.finished = true;
        let h = self.handle;
        let r = self
            .inst
            .call("finish", |s, b| b.statesnap_plugin_format().writer().call_finish(s, h))?;
        let chunks = self.inst.plugin_result("finish", r)?;
        self.inst.check_chunks("finish", &chunks)?;
        Ok(chunks)
    }

    /// Fuel used by this instance so far.
    pub(crate) fn fuel_used(&self) -> u64 {
        self.inst.fuel_used
    }

    /// A new writer in the same instance. Production never does this (each
    /// snapshot gets a fresh instance); the conformance check does, to catch
    /// plugins whose output depends on state left over from earlier calls.
    pub(crate) fn another(mut self, params: &[(String, String)]) -> Result<PluginWriter, PluginError> {
        let params = to_wit_params(params);
        let r = self.inst.call("new-writer", |s, b| {
            b.statesnap_plugin_format().call_new_writer(s, &params)
        })?;
        let handle = self.inst.plugin_result("new-writer", r)?;
        Ok(PluginWriter {
            inst: self.inst,
            handle,
            finished: false,
        })
    }
}

/// Chunks in, entries out, in one sandboxed instance.
pub struct PluginReader {
    inst: Instance,
    handle: ResourceAny,
}

impl PluginReader {
    /// Gives the next chunk (already hash-checked) to the plugin.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), PluginError> {
        let h = self.handle;
        let r = self.inst.call("feed", |s, b| {
            b.statesnap_plugin_format().reader().call_feed(s, h, chunk)
        })?;
        self.inst.plugin_result("feed", r)
    }

    /// The next batch of framed entries, or `None` when the fed chunks are used up.
    pub(crate) fn next_batch(&mut self, max_bytes: u32) -> Result<Option<Vec<u8>>, PluginError> {
        let h = self.handle;
        let r = self.inst.call("next", |s, b| {
            b.statesnap_plugin_format().reader().call_next(s, h, max_bytes)
        })?;
        let batch = self.inst.plugin_result("next", r)?;
        if let Some(b) = &batch {
            if b.len() > self.inst.limits.output_bytes_per_call {
                return Err(PluginError::OutputLimit {
                    plugin: self.inst.label.clone(),
                    call: "next",
                    size: b.len(),
                    limit: self.inst.limits.output_bytes_per_call,
                });
            }
        }
        Ok(batch)
    }

    /// Ends the stream after the last chunk.
    pub(crate) fn finish(&mut self) -> Result<(), PluginError> {
        let h = self.handle;
        let r = self
            .inst
            .call("finish", |s, b| b.statesnap_plugin_format().reader().call_finish(s, h))?;
        self.inst.plugin_result("finish", r)
    }

    /// Fuel used by this instance so far.
    pub(crate) fn fuel_used(&self) -> u64 {
        self.inst.fuel_used
    }
}

fn to_wit_params(params: &[(String, String)]) -> Vec<wit::Param> {
    params
        .iter()
        .map(|(name, value)| wit::Param {
            name: name.clone(),
            value: value.clone(),
        })
        .collect()
}

/// Turns a wasmtime error from a call into the limit it hit, or a trap with
/// the plugin's own last words (a panic message) when it left any.
fn classify(
    e: wasmtime::Error,
    store: &mut Store<Sandbox>,
    plugin: &str,
    call: &'static str,
    limits: Limits,
) -> PluginError {
    let plugin = plugin.to_string();
    if e.downcast_ref::<Trap>() == Some(&Trap::OutOfFuel) {
        return PluginError::OutOfFuel {
            plugin,
            call,
            limit: limits.fuel_per_call,
        };
    }
    if store.data().limiter.hit {
        return PluginError::MemoryLimit {
            plugin,
            call,
            limit: limits.memory_bytes,
        };
    }
    let os_refused = e
        .chain()
        .any(|c| c.is::<std::io::Error>() || c.to_string().contains("(os error "));
    if e.downcast_ref::<Trap>().is_none() && (call == "instantiate" || os_refused) {
        // Not the plugin's doing: instantiating a plugin that passed linking
        // fails only when the OS refuses the host memory (mmap), and an OS
        // error is the host's anywhere.
        return PluginError::Host {
            plugin,
            call,
            reason: first_line(&format!("{e:#}")),
        };
    }
    let mut message = match e.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        None => first_line(&format!("{e:#}")),
    };
    if let Some(line) = store.data().last_stderr_line() {
        message = format!("{message} (plugin said: {line})");
    }
    PluginError::Trap { plugin, call, message }
}

/// Whether `Component::new` refused the bytes themselves (not valid
/// WebAssembly for this engine's features), as opposed to failing to compile
/// valid ones. wasmtime reports validation and translation errors
/// under the context "failed to parse WebAssembly module" (pinned by
/// the test `plugin_errors_tell_the_host_failing_from_the_plugin`).
fn is_invalid_wasm(e: &wasmtime::Error) -> bool {
    e.chain()
        .any(|c| c.to_string().starts_with("failed to parse WebAssembly module"))
}

fn validate_description(d: &Description, plugin: &str) -> Result<(), PluginError> {
    let bad = |reason: String| PluginError::BadDescription {
        plugin: plugin.to_string(),
        reason,
    };
    if d.name.is_empty() || d.name.len() > 64 || !d.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(bad(format!(
            "name {:?} must be 1-64 characters of [A-Za-z0-9-_.]",
            d.name
        )));
    }
    if semver::Version::parse(&d.version).is_err() {
        return Err(bad(format!("version {:?} is not a semantic version", d.version)));
    }
    if d.format == 0 {
        return Err(bad("format number 0 is reserved".into()));
    }
    Ok(())
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compile_cache_is_private_and_its_code_is_the_compiled_code() {
        let tmp = tempfile::tempdir().unwrap();
        let err = PluginEngine::with_compile_cache(Limits::default(), std::path::Path::new("relative"))
            .err()
            .unwrap();
        assert!(err.to_string().contains("absolute path"), "{err:#}");

        let dir = tmp.path().join("a/cache");
        let (name, wasm) = super::super::BUILT_IN[0];
        let describe = |engine: PluginEngine| {
            let p = engine.load(wasm, name).unwrap();
            (p.sha256(), p.description().clone())
        };
        let cold = describe(PluginEngine::with_compile_cache(Limits::default(), &dir).unwrap());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        assert!(std::fs::read_dir(dir.join("modules")).unwrap().next().is_some());
        let warm = describe(PluginEngine::with_compile_cache(Limits::default(), &dir).unwrap());
        let fresh = describe(PluginEngine::new(Limits::default()).unwrap());
        assert_eq!((&cold, &warm), (&fresh, &fresh));
    }
}
