"""statesnap's helper for Xian test networks, run with the Python of the
Xian root file system (/opt/xian-venv/bin/python, see scripts/install-xian.sh).

It uses Xian's own published helpers (xian-tech-abci, xian-tech-py) where they
fit and prints one JSON object on stdout:

  init SPEC.json        node homes, keys and one genesis for every validator
  join SPEC.json        the home of a full node joining an existing network
  read-home --home DIR  a storage home read by Xian's own LMDBStore: key count,
                        consensus entries and state root (Xian's code), marker
  transfer --rpc URL --key HEX --to ADDRESS --amount A
                        a signed currency.transfer, waiting until it is final
  balance --rpc URL --address ADDRESS
                        currency.balances:<address> through the node's RPC

SPEC.json (written by harness/src/xian/network.rs):
  {"chain_id": str, "network": str, "configs_dir": str, "genesis_keys": int,
   "block_time": "500ms",
   "nodes": [{"name": str, "home": str, "p2p_port": int, "rpc_port": int,
              "prometheus_port": int, "app_socket": str}]}
"""

import argparse
import hashlib
import json
import sys
from pathlib import Path


def fail(message):
    print(json.dumps({"error": message}))
    sys.exit(1)


def extra_genesis_entries(count):
    """`count` made-up accounts with balances: deterministic, so two runs
    with the same count make the same state."""
    entries = []
    for i in range(count):
        address = hashlib.sha256(f"statesnap-genesis-account-{i}".encode()).hexdigest()
        entries.append({"key": f"currency.balances:{address}", "value": 1000 + i % 9000})
    return entries


def init(spec_path):
    from xian.genesis_builder import build_local_network_genesis, hash_state_changes
    from xian.node_setup import build_node_key, generate_validator_material, materialize_cometbft_home
    from xian.state_root import merkle_root_from_items
    from xian_accounts import Ed25519Account

    spec = json.loads(Path(spec_path).read_text())
    nodes = spec["nodes"]
    if not nodes:
        fail("a network needs at least one validator")

    # The validator's consensus key is also its account key: Xian's
    # validators contract lists the ed25519 public keys CometBFT validates with.
    materials = [generate_validator_material() for _ in nodes]
    node_keys = [build_node_key() for _ in nodes]
    founder = materials[0]["validator_private_key_hex"]
    genesis = build_local_network_genesis(
        chain_id=spec["chain_id"],
        founder_private_key=founder,
        validators=[
            {
                "account_public_key": m["validator_public_key_hex"],
                "name": node["name"],
                "power": 10,
                "priv_validator_key": m["priv_validator_key"],
            }
            for node, m in zip(nodes, materials)
        ],
        network=spec["network"],
        contracts_dir=Path(spec["configs_dir"]) / "contracts",
    )
    block = genesis["abci_genesis"]
    extra = extra_genesis_entries(int(spec.get("genesis_keys", 0)))
    if extra:
        taken = {entry["key"] for entry in block["genesis"]}
        block["genesis"] = sorted(
            block["genesis"] + [e for e in extra if e["key"] not in taken],
            key=lambda e: e["key"],
        )
        block["hash"] = merkle_root_from_items((e["key"], e["value"]) for e in block["genesis"]).hex()
        block["origin"]["signature"] = Ed25519Account(founder).sign_msg(hash_state_changes(block["genesis"]))
        genesis["app_hash"] = block["hash"]

    out_nodes = []
    for i, node in enumerate(nodes):
        peers = tuple(
            f"{node_keys[j]['node_id'].lower()}@127.0.0.1:{other['p2p_port']}"
            for j, other in enumerate(nodes)
            if j != i
        )
        cmt, xian_config = node_configs(node, peers, spec.get("block_time", "500ms"))
        materialize_cometbft_home(
            home=Path(node["home"]),
            config=cmt,
            xian_config=xian_config,
            genesis=genesis,
            priv_validator_key=materials[i]["priv_validator_key"],
            node_key=node_keys[i],
        )
        out_nodes.append(
            {
                "name": node["name"],
                "node_id": node_keys[i]["node_id"].lower(),
                "validator_public_key": materials[i]["validator_public_key_hex"],
                "validator_private_key": materials[i]["validator_private_key_hex"],
            }
        )
    print(
        json.dumps(
            {
                "founder_private_key": founder,
                "app_hash": genesis["app_hash"],
                "genesis_entries": len(block["genesis"]),
                "nodes": out_nodes,
            }
        )
    )


def node_configs(node, peers, block_time):
    """CometBFT's and Xian's configuration of one loopback node."""
    from xian.node_setup import MetricsOptions, NodeConfigOptions, render_node_configs

    configs = render_node_configs(
        options=NodeConfigOptions(
            moniker=node["name"],
            p2p_persistent_peers=peers,
            proxy_app=node["app_socket"],
            metrics=MetricsOptions(enabled=False),
            prometheus=True,
        )
    )
    cmt = configs["cometbft"]
    cmt["p2p"]["laddr"] = f"tcp://127.0.0.1:{node['p2p_port']}"
    cmt["p2p"]["addr_book_strict"] = False
    cmt["p2p"]["allow_duplicate_ip"] = True
    cmt["p2p"]["pex"] = False
    cmt["rpc"]["laddr"] = f"tcp://127.0.0.1:{node['rpc_port']}"
    cmt["instrumentation"]["prometheus_listen_addr"] = f"127.0.0.1:{node['prometheus_port']}"
    # A block every block_time, with or without transactions, so the app
    # hash of height H shows in header H+1 soon.
    cmt["consensus"]["create_empty_blocks"] = True
    cmt["consensus"]["create_empty_blocks_interval"] = "0s"
    cmt["consensus"]["timeout_commit"] = block_time
    cmt["consensus"]["timeout_propose"] = "2s"
    return cmt, configs["xian"]


def join(spec_path):
    """A full node (not a validator) of an existing network: its own keys,
    the network's genesis.json, the given peers. SPEC.json: one node object
    as in init, plus "genesis" (a path) and "peers" (id@host:port)."""
    from xian.node_setup import build_node_key, generate_validator_material, materialize_cometbft_home

    spec = json.loads(Path(spec_path).read_text())
    genesis = json.loads(Path(spec["genesis"]).read_text())
    material = generate_validator_material()
    node_key = build_node_key()
    cmt, xian_config = node_configs(spec, tuple(spec["peers"]), spec.get("block_time", "500ms"))
    materialize_cometbft_home(
        home=Path(spec["home"]),
        config=cmt,
        xian_config=xian_config,
        genesis=genesis,
        priv_validator_key=material["priv_validator_key"],
        node_key=node_key,
    )
    print(
        json.dumps(
            {
                "name": spec["name"],
                "node_id": node_key["node_id"].lower(),
                "validator_public_key": material["validator_public_key_hex"],
                "validator_private_key": material["validator_private_key_hex"],
            }
        )
    )


def transfer(args):
    import xian_py

    wallet = xian_py.Wallet(args.key)
    with xian_py.Xian(args.rpc, wallet=wallet) as client:
        result = client.send(
            amount=args.amount,
            to_address=args.to,
            mode="checktx",
            wait_for_tx=True,
            timeout_seconds=args.timeout,
        )
    receipt = result.receipt
    height = None
    if receipt is not None:
        raw = receipt.raw or {}
        for source in (raw, raw.get("result") or {}, raw.get("execution") or {}):
            if isinstance(source, dict) and source.get("height") is not None:
                height = int(source["height"])
                break
    print(
        json.dumps(
            {
                "sender": wallet.public_key,
                "tx_hash": result.tx_hash,
                "accepted": result.accepted,
                "finalized": result.finalized,
                "success": bool(receipt and receipt.success),
                "height": height,
                "message": str(result.message) if result.message is not None else None,
            }
        )
    )
    if not (receipt and receipt.success):
        sys.exit(1)


def balance(args):
    import xian_py

    with xian_py.Xian(args.rpc) as client:
        value = client.get_balance(args.address)
    print(json.dumps({"address": args.address, "balance": str(value)}))


def read_home(args):
    """What Xian's own code reads in a storage home (DIR/lmdb)."""
    from contracting.storage.lmdb_store import LMDBStore
    from xian.state_root import StateRootCache

    store = LMDBStore(Path(args.home) / "lmdb")
    try:
        items = list(store.iter_items())
        marker = store.get("__latest_block")
    finally:
        store.close()
    cache = StateRootCache(items)
    print(
        json.dumps(
            {
                "keys": len(items),
                "consensus_entries": cache.leaf_count,
                "root": cache.root_hash.hex(),
                "marker": json.loads(json.dumps(marker, default=str)) if marker is not None else None,
            }
        )
    )


def main():
    parser = argparse.ArgumentParser(prog="xian_net.py")
    sub = parser.add_subparsers(dest="command", required=True)
    p_init = sub.add_parser("init")
    p_init.add_argument("spec")
    p_join = sub.add_parser("join")
    p_join.add_argument("spec")
    p_tx = sub.add_parser("transfer")
    p_tx.add_argument("--rpc", required=True)
    p_tx.add_argument("--key", required=True)
    p_tx.add_argument("--to", required=True)
    p_tx.add_argument("--amount", required=True)
    p_tx.add_argument("--timeout", type=float, default=30.0)
    p_read = sub.add_parser("read-home")
    p_read.add_argument("--home", required=True)
    p_bal = sub.add_parser("balance")
    p_bal.add_argument("--rpc", required=True)
    p_bal.add_argument("--address", required=True)
    args = parser.parse_args()
    if args.command == "init":
        init(args.spec)
    elif args.command == "join":
        join(args.spec)
    elif args.command == "read-home":
        read_home(args)
    elif args.command == "transfer":
        transfer(args)
    else:
        balance(args)


if __name__ == "__main__":
    main()
