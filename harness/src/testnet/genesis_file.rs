//! The testnet's one genesis: every validator's key with power 10, the chain
//! id, and statesnap's `app_state` (inline entries and an HDF5 home to import).

use std::path::Path;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use statesnap::store::{generate, StateStore, XianHdf5Store};

/// Voting power of each validator.
pub const VALIDATOR_POWER: u64 = 10;
/// Seed of the generated genesis state (fixed, so a testnet is reproducible).
pub const GENESIS_STATE_SEED: u64 = 1;

/// One entry of `app_state.entries`: a key and its stored (Xian JSON) value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenesisEntry {
    pub key: String,
    pub stored: String,
}

/// statesnap's `app_state`: `{"entries": […], "import_home": "/abs/path"}`,
/// `import_home` only when there is a home to import.
pub fn app_state(entries: &[GenesisEntry], import_home: Option<&Path>) -> anyhow::Result<Value> {
    let mut state = json!({ "entries": entries });
    if let Some(home) = import_home {
        if !home.is_absolute() {
            bail!("the genesis import home {} must be an absolute path", home.display());
        }
        state["import_home"] = json!(home.to_str().context("the genesis import home is not UTF-8")?);
    }
    Ok(state)
}

/// A genesis document: `template`'s consensus parameters (what `cometbft init`
/// wrote) with the chain id, validators (`(name, generated validator entry)`),
/// genesis time and app state replaced.
pub fn build(
    template: &Value,
    chain_id: &str,
    genesis_time: &str,
    validators: &[(String, Value)],
    app_state: Value,
) -> anyhow::Result<Value> {
    let mut genesis = template.clone();
    if !genesis.is_object() || genesis.get("consensus_params").is_none() {
        bail!("the genesis template is not a CometBFT genesis (no consensus_params)");
    }
    let validators = validators
        .iter()
        .map(|(name, generated)| {
            let (Some(address), Some(pub_key)) = (generated.get("address"), generated.get("pub_key")) else {
                bail!("the generated validator of {name} has no address or pub_key");
            };
            Ok(json!({
                "address": address,
                "pub_key": pub_key,
                "power": VALIDATOR_POWER.to_string(),
                "name": name,
            }))
        })
        .collect::<anyhow::Result<Vec<Value>>>()?;
    genesis["genesis_time"] = json!(genesis_time);
    genesis["chain_id"] = json!(chain_id);
    genesis["validators"] = json!(validators);
    genesis["app_hash"] = json!("");
    genesis["app_state"] = app_state;
    Ok(genesis)
}

/// Writes `keys` generated Xian-like keys into a new HDF5 home at `home`.
pub fn generate_state(home: &Path, keys: u64) -> anyhow::Result<()> {
    let mut store = XianHdf5Store::create(home)?;
    generate::generate(&mut store, keys, GENESIS_STATE_SEED, |_| {})
        .with_context(|| format!("generating the genesis state in {}", home.display()))?;
    store.flush()
}

/// Checks a chain id as CometBFT does (non-empty, at most 50 bytes).
pub fn check_chain_id(chain_id: &str) -> anyhow::Result<()> {
    if chain_id.trim().is_empty() || chain_id.len() > 50 || chain_id.chars().any(char::is_whitespace) {
        bail!("`{chain_id}` is not a usable chain id: use 1 to 50 characters without spaces");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn genesis_takes_every_validator_with_power_ten() {
        let template = json!({"genesis_time": "x", "chain_id": "random", "consensus_params": {"block": {}},
            "validators": [{"address": "A", "pub_key": {"type": "t", "value": "k0"}, "power": "10", "name": ""}],
            "app_hash": ""});
        let v = |a: &str| json!({"address": a, "pub_key": {"type": "t", "value": a}, "power": "10", "name": ""});
        let state = app_state(
            &[GenesisEntry {
                key: "a.b".into(),
                stored: "1".into(),
            }],
            Some(Path::new("/abs/genesis-state")),
        )
        .unwrap();
        let g = build(
            &template,
            "c1",
            "2025-01-01T00:00:00Z",
            &[("node0".into(), v("A")), ("node1".into(), v("B"))],
            state,
        )
        .unwrap();
        assert_eq!(g["chain_id"], "c1");
        assert_eq!(g["validators"].as_array().unwrap().len(), 2);
        assert_eq!(g["validators"][1]["pub_key"]["value"], "B");
        assert_eq!(g["validators"][1]["power"], "10");
        assert_eq!(g["validators"][1]["name"], "node1");
        assert_eq!(g["app_state"]["entries"][0]["key"], "a.b");
        assert_eq!(g["app_state"]["import_home"], "/abs/genesis-state");
        assert!(build(&json!([]), "c", "t", &[], json!({})).is_err());
        assert!(app_state(&[], Some(Path::new("relative"))).is_err());
        assert_eq!(app_state(&[], None).unwrap(), json!({"entries": []}));
    }

    #[test]
    fn chain_ids_are_checked() {
        assert!(check_chain_id("statesnap-testnet").is_ok());
        for bad in ["", " ", "a b", &"x".repeat(51)] {
            assert!(check_chain_id(bad).is_err(), "{bad}");
        }
    }
}
