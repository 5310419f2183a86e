//! Which formats a snapshot job makes, and with which plugin code.
//!
//! The state decides, not the binary: each job reads the formats governance
//! approved (`protocol::gov_records`) from the frozen view of its height. The
//! formats in force form eras: the configured `snapshot_plugin` from the
//! start (if set), then each approved format from its activation height. A
//! job makes the current era's format and, for `format_overlap` intervals
//! after an activation, the previous era's too, so nodes that only know the
//! old format can still sync. An approved plugin's code is read from the
//! state and compiled here: no restart, no rebuild. A snapshot made with a
//! plugin the state approves is self-describing (`snapshot::approval`).

use std::sync::Arc;

use anyhow::Context;

use super::governance::approved_formats;
use super::metrics::Metrics;
use super::view::StateView;
use crate::plugin::{Plugin, PluginEngine};
use crate::protocol::gov_records::{format_key, read_plugin, FormatApproval};
use crate::snapshot::Approval;
use crate::store::treap::MembershipProof;
use crate::store::StateStore;

/// The configured plugin and its resolved parameters.
pub(crate) type Configured = (Arc<Plugin>, Vec<(String, String)>);

/// A plugin and what a snapshot made with it needs.
#[derive(Clone)]
pub(crate) struct Producer {
    pub plugin: Arc<Plugin>,
    pub params: Vec<(String, String)>,
    /// The plugin wasm and its approval proof, for a self-describing snapshot.
    pub ship: Option<(Arc<Vec<u8>>, Approval)>,
}

/// Chooses the formats of each snapshot job from the state of its height.
pub(crate) struct FormatPlanner {
    /// The configured `snapshot_plugin` (`None`: only approved formats).
    pub configured: Option<Configured>,
    /// Compiles approved plugins read from state.
    pub engine: PluginEngine,
    /// Intervals during which the previous format is still made after an activation.
    pub overlap: u64,
    pub interval: u64,
    pub metrics: Arc<Metrics>,
}

/// Where a format in force comes from.
#[derive(Clone)]
enum Era {
    Configured,
    Approved(u32, FormatApproval),
}

impl FormatPlanner {
    /// The formats to make at the view's height (current first), from the
    /// approvals in the view's state.
    pub(crate) fn plan(&self, view: &StateView) -> anyhow::Result<Vec<Producer>> {
        let height = view.height;
        let approved = approved_formats(view.treap(), |k| view.get(k))?;
        self.metrics.approved_formats.set(approved.len() as i64);
        let mut eras: Vec<(u64, Era)> = Vec::new();
        if self.configured.is_some() {
            eras.push((0, Era::Configured));
        }
        let mut active: Vec<_> = approved
            .iter()
            .filter(|(_, a)| a.activation_height <= height)
            .cloned()
            .collect();
        active.sort_by_key(|(format, a)| (a.activation_height, *format));
        eras.extend(
            active
                .into_iter()
                .map(|(f, a)| (a.activation_height, Era::Approved(f, a))),
        );
        let Some((start, current)) = eras.last().cloned() else {
            tracing::warn!(
                height,
                "snapshot: no format to make: snapshot_plugin is empty and governance has approved none yet"
            );
            return Ok(Vec::new());
        };
        let mut chosen = vec![current];
        let overlap_end = start.saturating_add(self.overlap.saturating_mul(self.interval));
        if eras.len() >= 2 && height < overlap_end {
            chosen.push(eras[eras.len() - 2].1.clone());
        }
        let mut producers: Vec<Producer> = Vec::new();
        for era in chosen {
            // One format failing (its code cannot be read or compiled) must
            // not stop the other from being made.
            let p = match self.producer(view, &era) {
                Ok(p) => p,
                Err(e) => {
                    self.metrics.snapshots_failed.inc();
                    tracing::error!(height, "snapshot: cannot prepare a format's plugin: {e:#}");
                    continue;
                }
            };
            let format = p.plugin.description().format;
            // One snapshot per format: an approved (self-describing) one wins.
            if let Some(i) = producers.iter().position(|q| q.plugin.description().format == format) {
                if producers[i].ship.is_none() && p.ship.is_some() {
                    producers[i] = p;
                }
            } else {
                producers.push(p);
            }
        }
        let Some(current) = producers.first() else {
            return Ok(Vec::new());
        };
        let current_format = current.plugin.description().format;
        if self.metrics.snapshot_last_format.get() != i64::from(current_format) {
            tracing::info!(
                height,
                format = current_format,
                plugin = current.plugin.label(),
                from_state = current.ship.is_some(),
                also = ?producers.iter().skip(1).map(|p| p.plugin.description().format).collect::<Vec<_>>(),
                overlap_until = (producers.len() > 1).then_some(overlap_end),
                "snapshot: format in force"
            );
        }
        self.metrics.snapshot_last_format.set(i64::from(current_format));
        Ok(producers)
    }

    fn producer(&self, view: &StateView, era: &Era) -> anyhow::Result<Producer> {
        let (plugin, params, wasm) = match era {
            Era::Configured => {
                let (plugin, params) = self.configured.clone().expect("a configured era has a plugin");
                (plugin, params, None)
            }
            Era::Approved(format, a) => {
                let sha = a
                    .sha256_bytes()
                    .with_context(|| format!("format {format}'s approval names a malformed SHA-256"))?;
                let wasm = read_plugin(&sha, |k| view.get(k))?;
                let plugin = self
                    .engine
                    .load(&wasm, &format!("state:format-{format}"))
                    .with_context(|| format!("compiling format {format}'s plugin from state"))?;
                if plugin.description().format != *format {
                    anyhow::bail!(
                        "the plugin approved for format {format} makes format {}",
                        plugin.description().format
                    );
                }
                let params = plugin.resolve_params(&[])?;
                (plugin, params, Some(Arc::new(wasm)))
            }
        };
        let ship = match approval(view, &plugin)? {
            None => None,
            Some((key, stored, proof)) => {
                let wasm = match wasm {
                    Some(w) => w,
                    None => Arc::new(read_plugin(&plugin.sha256(), |k| view.get(k))?),
                };
                let plugin_bytes = wasm.len() as u64;
                Some((
                    wasm,
                    Approval {
                        key,
                        stored,
                        proof,
                        plugin_bytes,
                    },
                ))
            }
        };
        Ok(Producer { plugin, params, ship })
    }
}

/// The proof that the view's state approves `plugin` for its format, if it
/// does (and the format is active at the view's height): the registry key,
/// its stored value and its membership proof.
fn approval(view: &StateView, plugin: &Plugin) -> anyhow::Result<Option<(String, String, MembershipProof)>> {
    let format = plugin.description().format;
    let key = format_key(format);
    let Some(stored) = view.get(&key)? else {
        return Ok(None);
    };
    let record = FormatApproval::parse(&key, &stored)?;
    if record.sha256_bytes() != Some(plugin.sha256()) || record.activation_height > view.height {
        return Ok(None);
    }
    let proof = view
        .treap()
        .prove(&key)
        .with_context(|| format!("{key} has a value but no proof (a bug)"))?;
    Ok(Some((key, stored, proof)))
}
