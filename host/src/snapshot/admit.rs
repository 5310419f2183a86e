//! Admitting a snapshot: the one place that decides, for the network
//! (`node::statesync`) and the offline restore (`restore_dir`) alike, whether
//! a manifest may be restored against the app hash the caller trusts, and
//! with which plugin.
//!
//! A manifest is admitted when it claims the trusted app hash, its shipped
//! plugin's approval (if any) is proven against that hash, and its plugin is
//! known here (by SHA-256) or arrives as chunk 0 of a self-describing
//! snapshot ([`AwaitingPlugin`]). Only an [`Admitted`] snapshot can start a
//! [`Restorer`](super::Restorer): the type carries the proof that these
//! checks ran, so they run once.

use std::sync::Arc;

use super::manifest::Manifest;
use super::restore::RestoreError;
use crate::plugin::{Plugin, PluginRegistry};

/// A snapshot cleared for restoring, with the plugin that reads it.
pub struct Admitted {
    manifest: Manifest,
    plugin: Arc<Plugin>,
}

/// A self-describing snapshot whose plugin is not local: its approval is
/// proven; chunk 0, the plugin itself, must come before anything runs.
pub struct AwaitingPlugin {
    manifest: Manifest,
}

/// What [`admit`] decided.
pub enum Admission {
    Ready(Admitted),
    AwaitingPlugin(AwaitingPlugin),
}

/// Admits `manifest` against `trusted`, the app hash of its height.
pub fn admit(manifest: Manifest, trusted: [u8; 32], registry: &PluginRegistry) -> Result<Admission, RestoreError> {
    if manifest.app_hash != trusted {
        return Err(RestoreError::AppHashMismatch {
            claimed: hex::encode(manifest.app_hash),
            trusted: hex::encode(trusted),
        });
    }
    // A shipped plugin's approval is checked whether or not the plugin is
    // local: a snapshot with a forged proof is bad either way.
    if let Some(approval) = &manifest.approval {
        manifest.verify_approval(approval, &trusted)?;
    }
    let local = registry
        .by_sha256(&manifest.plugin.sha256)
        .map_err(|e| RestoreError::PluginUnavailable(format!("its plugin cannot be loaded here: {e:#}")))?;
    match local {
        Some(plugin) => Admitted::new(manifest, plugin).map(Admission::Ready),
        None if manifest.approval.is_some() => Ok(Admission::AwaitingPlugin(AwaitingPlugin { manifest })),
        None => Err(RestoreError::PluginUnavailable(format!(
            "it was made by plugin {} {} (SHA-256 {}) for format {}, which this host does not have and the \
             snapshot does not ship with an approval; give the plugin's .wasm (--plugin FILE.wasm, or plugin_dir \
             for a node)",
            manifest.plugin.name,
            manifest.plugin.version,
            hex::encode(manifest.plugin.sha256),
            manifest.format
        ))),
    }
}

impl Admitted {
    fn new(manifest: Manifest, plugin: Arc<Plugin>) -> Result<Self, RestoreError> {
        if plugin.description().format != manifest.format {
            return Err(RestoreError::Manifest(format!(
                "the manifest says format {}, but its plugin {} makes format {}",
                manifest.format,
                plugin.label(),
                plugin.description().format
            )));
        }
        Ok(Admitted { manifest, plugin })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    pub(crate) fn into_manifest(self) -> Manifest {
        self.manifest
    }
}

impl AwaitingPlugin {
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Admits the snapshot with the shipped plugin (its chunks, joined): its
    /// bytes must hash to the approved SHA-256 before they are compiled.
    pub fn with_plugin(&self, registry: &PluginRegistry, wasm: &[u8]) -> Result<Admitted, RestoreError> {
        let got = crate::plugin::sha256(wasm);
        if got != self.manifest.plugin.sha256 {
            return Err(RestoreError::ChunkHash {
                index: 0,
                expected: hex::encode(self.manifest.plugin.sha256),
                got: hex::encode(got),
            });
        }
        let label = format!("shipped:{}", self.manifest.plugin.name);
        let plugin = registry.engine().load(wasm, &label)?;
        Admitted::new(self.manifest.clone(), plugin)
    }
}
