//! A Xian network's files: the genesis bundle, keys, one genesis with every
//! validator, and every node's home.
//!
//! The work is done by the project's `harness/xian/xian_net.py init`, run
//! with the root file system's Python, through Xian's own helpers:
//! `generate_validator_material` (each validator's ed25519 key, which is
//! also its Xian account), `build_local_network_genesis` (runs the bundle's
//! constructors in Xian's VM and records the resulting state as
//! `abci_genesis`, whose root is genesis.json's `app_hash`; it passes the
//! validators contract `genesis_nodes` = the validators' public keys and
//! `genesis_registration_fee`, `genesis_powers` when its seed arguments name
//! it, and the currency contract `vk` = the founder, validator 0),
//! `render_node_configs` and `materialize_cometbft_home`. Extra genesis
//! accounts (`genesis_keys`) are added to `abci_genesis` afterwards, with
//! its root recomputed by Xian's state-root code.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context};
use serde::Deserialize;
use serde_json::json;

use super::install::{write_chroot_script, XianTools, VENV_PYTHON};
use super::node::{XianNode, MAX_SOCKET_PATH};
use super::XianNetOptions;
use crate::testnet::paths::node_name;
use crate::testnet::Ports;

/// The helper's file name in a network directory.
pub const TOOL: &str = "xian_net.py";
/// The wrapper's file name in a network directory.
pub const CHROOT_SCRIPT: &str = "xian-chroot.sh";
const TOOL_SOURCE: &str = include_str!("../../xian/xian_net.py");
/// The project's genesis bundle (harness/xian/configs/contracts/).
const BUNDLE: [(&str, &str); 4] = [
    (
        "contracts_statesnap.json",
        include_str!("../../xian/configs/contracts/contracts_statesnap.json"),
    ),
    (
        "currency.s.py",
        include_str!("../../xian/configs/contracts/currency.s.py"),
    ),
    (
        "validators.s.py",
        include_str!("../../xian/configs/contracts/validators.s.py"),
    ),
    (
        "chi_cost.s.py",
        include_str!("../../xian/configs/contracts/chi_cost.s.py"),
    ),
];

/// What [`init`] made.
pub struct Made {
    pub dir: PathBuf,
    pub founder_private_key: String,
    pub genesis_app_hash: String,
    pub nodes: Vec<XianNode>,
}

#[derive(Deserialize)]
struct ToolNode {
    name: String,
    node_id: String,
    validator_public_key: String,
    validator_private_key: String,
}

#[derive(Deserialize)]
struct ToolOutput {
    founder_private_key: String,
    app_hash: String,
    nodes: Vec<ToolNode>,
}

/// Writes a network into `dir` (missing or empty). On failure the directory is removed.
pub fn init(dir: &Path, opts: &XianNetOptions, tools: &XianTools) -> anyhow::Result<Made> {
    if opts.validators == 0 {
        bail!("a Xian network needs at least one validator");
    }
    Ports::for_node(opts.base_port, opts.validators - 1)?;
    if !statesnap::store::home::is_vacant(dir) {
        bail!(
            "{} is not empty: pick a new (or empty) directory for the Xian network",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    let made = write(&dir, opts, tools);
    if made.is_err() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    made
}

fn write(dir: &Path, opts: &XianNetOptions, tools: &XianTools) -> anyhow::Result<Made> {
    let longest = dir.join(node_name(opts.validators - 1)).join("proxy.sock");
    if longest.as_os_str().len() > MAX_SOCKET_PATH {
        bail!(
            "{} is too long for a unix socket ({} bytes, at most {MAX_SOCKET_PATH}): use a shorter directory",
            longest.display(),
            longest.as_os_str().len()
        );
    }
    write_chroot_script(&dir.join(CHROOT_SCRIPT))?;
    std::fs::write(dir.join(TOOL), TOOL_SOURCE).with_context(|| format!("writing {}", dir.join(TOOL).display()))?;
    let configs = dir.join("configs");
    match &opts.configs {
        Some(from) => copy_dir(from, &configs)
            .with_context(|| format!("copying the configs directory {} into the network", from.display()))?,
        None => {
            let contracts = configs.join("contracts");
            std::fs::create_dir_all(&contracts)?;
            for (name, text) in BUNDLE {
                std::fs::write(contracts.join(name), text)?;
            }
        }
    }
    let bundle = configs
        .join("contracts")
        .join(format!("contracts_{}.json", opts.network));
    if !bundle.is_file() {
        bail!("the configs directory has no contracts/contracts_{}.json", opts.network);
    }

    let mut nodes = Vec::new();
    let mut spec_nodes = Vec::new();
    for index in 0..opts.validators {
        let name = node_name(index);
        let node = new_node(dir, &name, index, Ports::for_node(opts.base_port, index)?, false);
        std::fs::create_dir_all(&node.dir)?;
        spec_nodes.push(node_spec(&node));
        nodes.push(node);
    }
    let spec = json!({
        "chain_id": opts.chain_id,
        "network": opts.network,
        "configs_dir": configs,
        "genesis_keys": opts.genesis_keys,
        "block_time": format!("{}ms", opts.block_time_ms),
        "nodes": spec_nodes,
    });
    let out: ToolOutput = run_with_spec(tools, dir, "init", &dir.join("spec.json"), &spec)?;
    if out.nodes.len() != nodes.len() {
        bail!("xian_net.py init made {} nodes, not {}", out.nodes.len(), nodes.len());
    }
    for (node, made) in nodes.iter_mut().zip(out.nodes) {
        debug_assert_eq!(node.name, made.name);
        node.node_id = made.node_id;
        node.validator_public_key = made.validator_public_key;
        node.validator_private_key = made.validator_private_key;
    }
    Ok(Made {
        dir: dir.to_path_buf(),
        founder_private_key: out.founder_private_key,
        genesis_app_hash: out.app_hash,
        nodes,
    })
}

/// Node `name` of the network in `dir`, before xian_net.py has made its keys.
fn new_node(dir: &Path, name: &str, index: usize, ports: Ports, joined: bool) -> XianNode {
    XianNode {
        name: name.to_string(),
        index,
        ports,
        node_id: String::new(),
        validator_public_key: String::new(),
        validator_private_key: String::new(),
        dir: dir.join(name),
        joined,
    }
}

/// What xian_net.py needs to know of a node (its part of a spec file).
fn node_spec(node: &XianNode) -> serde_json::Value {
    json!({
        "name": node.name,
        "home": node.cometbft_home(),
        "p2p_port": node.ports.p2p,
        "rpc_port": node.ports.rpc,
        "prometheus_port": node.ports.prometheus,
        "app_socket": format!("unix://{}", node.app_socket().display()),
    })
}

/// Writes `spec` to `spec_path` and runs `xian_net.py COMMAND SPEC_PATH`;
/// its output read as `T`.
fn run_with_spec<T: serde::de::DeserializeOwned>(
    tools: &XianTools,
    dir: &Path,
    command: &str,
    spec_path: &Path,
    spec: &serde_json::Value,
) -> anyhow::Result<T> {
    std::fs::write(spec_path, serde_json::to_string_pretty(spec)?)
        .with_context(|| format!("writing {}", spec_path.display()))?;
    let out = run_tool(
        tools,
        dir,
        &[command.to_string(), spec_path.to_string_lossy().into_owned()],
    )?;
    serde_json::from_value(out).with_context(|| format!("xian_net.py {command}: unexpected output"))
}

/// The command that runs `xian_net.py ARGS…` of the network in `dir` with
/// the root file system's Python (its pid is Python's).
pub fn tool_command(tools: &XianTools, dir: &Path, args: &[String]) -> Command {
    let mut all = vec![dir.join(TOOL).to_string_lossy().into_owned()];
    all.extend_from_slice(args);
    tools.chroot_command(&dir.join(CHROOT_SCRIPT), &[dir], &[], VENV_PYTHON, &all)
}

/// The last line of `xian_net.py`'s output that is a JSON object (its
/// answer: progress and Python's own messages may come before it).
pub fn last_json_object(stdout: &str) -> Option<serde_json::Value> {
    let last = stdout.lines().rev().find(|l| l.trim_start().starts_with('{'))?;
    serde_json::from_str(last).ok()
}

/// Runs `xian_net.py ARGS…` of the network in `dir` with the root file
/// system's Python and returns the JSON object it prints last.
pub fn run_tool(tools: &XianTools, dir: &Path, args: &[String]) -> anyhow::Result<serde_json::Value> {
    let out = tool_command(tools, dir, args)
        .output()
        .context("running xian_net.py in the Xian root file system")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    match last_json_object(&stdout) {
        Some(v) if out.status.success() => Ok(v),
        _ => Err(anyhow!(
            "xian_net.py {} failed ({}):\n{}\n{}",
            args.first().map(String::as_str).unwrap_or(""),
            out.status,
            tail(&stdout, 20),
            tail(&stderr, 30)
        )),
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Writes the home of a full node `name` (index `index`) joining the
/// network in `dir`: its own keys, the network's genesis.json (from
/// `genesis_from`), `peers` (`id@host:port`). Its CometBFT state sync is
/// configured by the caller.
pub fn join(
    dir: &Path,
    tools: &XianTools,
    opts: &XianNetOptions,
    name: &str,
    index: usize,
    genesis_from: &Path,
    peers: &[String],
) -> anyhow::Result<XianNode> {
    let mut node = new_node(dir, name, index, Ports::for_node(opts.base_port, index)?, true);
    if node.dir.exists() {
        bail!("{} exists: a node of that name was added before", node.dir.display());
    }
    std::fs::create_dir_all(&node.dir)?;
    let mut spec = node_spec(&node);
    spec["genesis"] = json!(genesis_from);
    spec["peers"] = json!(peers);
    spec["block_time"] = json!(format!("{}ms", opts.block_time_ms));
    let made: ToolNode = run_with_spec(tools, dir, "join", &node.dir.join("join.json"), &spec)?;
    node.node_id = made.node_id;
    node.validator_public_key = made.validator_public_key;
    node.validator_private_key = made.validator_private_key;
    Ok(node)
}
