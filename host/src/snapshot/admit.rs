//! Admitting a snapshot: the one place that decides, for every restore
//! ([`RestoreSession::begin`](super::RestoreSession::begin)), whether
//! a manifest may be restored against the app hash the caller trusts, and
//! with which plugin.
//!
//! A manifest is admitted when it claims the trusted app hash, its shipped
//! plugin's approval (if any) is proven against that hash, and its plugin is
//! known here (by SHA-256) or arrives as chunk 0 of a self-describing
//! snapshot ([`AwaitingPlugin`]). Only an [`Admitted`] snapshot starts
//! decoding: the type carries the proof that these checks ran, so they run once.

use std::sync::Arc;

use super::manifest::Manifest;
use super::restore_error::RestoreError;
use crate::plugin::{Plugin, PluginEngine, PluginRegistry};

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
            claimed: manifest.app_hash,
            trusted,
        });
    }
    // A shipped plugin's approval is checked whether or not the plugin is
    // local: a snapshot with a forged proof is bad either way.
    if let Some(approval) = &manifest.approval {
        manifest.verify_approval(approval, &trusted)?;
    }
    let local = registry
        .by_sha256(&manifest.plugin.sha256)
        .map_err(RestoreError::PluginLoad)?;
    match local {
        Some(plugin) => Admitted::new(manifest, plugin).map(Admission::Ready),
        None if manifest.approval.is_some() => Ok(Admission::AwaitingPlugin(AwaitingPlugin { manifest })),
        None => Err(RestoreError::PluginUnavailable {
            name: manifest.plugin.name.clone(),
            version: manifest.plugin.version.clone(),
            sha256: manifest.plugin.sha256,
            format: manifest.format,
        }),
    }
}

impl Admitted {
    fn new(manifest: Manifest, plugin: Arc<Plugin>) -> Result<Self, RestoreError> {
        if plugin.description().format != manifest.format {
            return Err(RestoreError::FormatMismatch {
                manifest: manifest.format,
                plugin: plugin.label().to_string(),
                plugin_format: plugin.description().format,
            });
        }
        Ok(Admitted { manifest, plugin })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }
}

impl AwaitingPlugin {
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Admits the snapshot with the shipped plugin (its chunks, joined): its
    /// bytes must hash to the approved SHA-256 before they are compiled.
    pub fn with_plugin(&self, engine: &PluginEngine, wasm: &[u8]) -> Result<Admitted, RestoreError> {
        let got = crate::plugin::sha256(wasm);
        if got != self.manifest.plugin.sha256 {
            return Err(RestoreError::ShippedPlugin {
                expected: self.manifest.plugin.sha256,
                got,
            });
        }
        let label = format!("shipped:{}", self.manifest.plugin.name);
        let plugin = engine.load(wasm, &label)?;
        Admitted::new(self.manifest.clone(), plugin)
    }
}
