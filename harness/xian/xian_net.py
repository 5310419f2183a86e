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
  load --rpc URL[,URL...] --key HEX --rate R --duration S [--senders N] [--seed K]
                        a steady stream of signed currency.transfer from N
                        accounts the founder (--key) funds first, each to a
                        new account (the state grows by a key per transfer);
                        progress lines on stderr, the totals on stdout; SIGTERM
                        or SIGINT ends it early with the totals

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
import time
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


def load_wallet(seed, index):
    """Sender `index` of a load: a key derived from the seed, so a rerun
    with the same seed uses the same accounts."""
    import xian_py

    secret = hashlib.sha256(f"statesnap-xian-load-{seed}-sender-{index}".encode()).hexdigest()
    return xian_py.Wallet(secret)


def load_recipient(seed, sender, count):
    return hashlib.sha256(f"statesnap-xian-load-{seed}-to-{sender}-{count}".encode()).hexdigest()


class LoadStats:
    def __init__(self):
        self.started = time.monotonic()
        self.sent = 0
        self.accepted = 0
        self.refused = 0
        self.errors = 0
        self.funded = 0
        self.last_problem = None

    def as_dict(self):
        seconds = time.monotonic() - self.started
        return {
            "seconds": round(seconds, 3),
            "sent": self.sent,
            "accepted": self.accepted,
            "refused": self.refused,
            "errors": self.errors,
            "funded_senders": self.funded,
            "rate": round(self.accepted / seconds, 3) if seconds > 0 else 0.0,
            "last_problem": self.last_problem,
        }


async def load_async(args):
    import asyncio
    import signal

    import aiohttp
    import xian_py
    from xian_py import transaction as tr

    rpcs = [u.rstrip("/") for u in args.rpc.split(",") if u]
    if not rpcs:
        fail("give at least one --rpc URL")
    if args.rate <= 0 or args.senders < 1 or args.duration < 0:
        fail("--rate must be positive, --senders at least 1, --duration not negative")
    stats = LoadStats()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    founder = xian_py.Wallet(args.key)
    senders = [load_wallet(args.seed, i) for i in range(args.senders)]
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        status = await tr.get_status_async(rpcs[0], session=session)
        chain_id = status["result"]["node_info"]["network"]
        async with xian_py.XianAsync(rpcs[0], wallet=founder) as client:
            estimate = await client.estimate_chi("currency", "transfer", {"amount": 1, "to": "0" * 64})
        chi = int(estimate["suggested"]) * 2

        async def broadcast(rpc, wallet, nonce, kwargs):
            payload = {
                "chain_id": chain_id,
                "contract": "currency",
                "function": "transfer",
                "kwargs": kwargs,
                "nonce": nonce,
                "sender": wallet.public_key,
                "chi_supplied": chi,
            }
            prepared = tr.prepare_transaction(tr.create_tx(payload, wallet))
            stats.sent += 1
            try:
                answer = await tr.broadcast_tx_wait_async(rpc, prepared, session=session)
            except Exception as exc:  # a node down or restarting: counted, retried later
                stats.errors += 1
                stats.last_problem = f"{rpc}: {exc}"
                return False
            result = answer.get("result") or {}
            if result.get("code", 1) == 0:
                stats.accepted += 1
                return True
            stats.refused += 1
            stats.last_problem = f"{rpc}: {result.get('log') or answer.get('error')}"
            return False

        async def next_nonce(rpc, wallet):
            return await tr.get_nonce_async(rpc, wallet.public_key, session=session)

        # Fund the senders (those still without a balance) from the founder,
        # nonces in a row, then wait until each one's balance is final.
        async def balance_of(address):
            value = await tr.abci_query_async(rpcs[0], f"/get/currency.balances:{address}", session=session)
            return value["result"]["response"]["value"] not in (None, "AA==")

        unfunded = [w for w in senders if not await balance_of(w.public_key)]
        nonce = await next_nonce(rpcs[0], founder)
        for wallet in unfunded:
            if await broadcast(rpcs[0], founder, nonce, {"amount": 1_000_000, "to": wallet.public_key}):
                nonce += 1
        deadline = time.monotonic() + 120
        for wallet in senders:
            while not await balance_of(wallet.public_key):
                if time.monotonic() > deadline or stop.is_set():
                    fail(f"sender {wallet.public_key} was not funded within 120 s; last problem: {stats.last_problem}")
                await asyncio.sleep(0.25)
            stats.funded += 1
        stats.sent = stats.accepted = stats.refused = stats.errors = 0
        stats.started = time.monotonic()
        if args.duration > 0:
            loop.call_later(args.duration, stop.set)

        period = args.senders / args.rate

        async def sender_task(index, wallet):
            rpc = rpcs[index % len(rpcs)]
            count = 0
            nonce = None
            start = time.monotonic() + period * index / args.senders
            while not stop.is_set():
                due = start + count * period
                delay = due - time.monotonic()
                if delay > 0:
                    try:
                        await asyncio.wait_for(stop.wait(), delay)
                        break
                    except TimeoutError:
                        pass
                count += 1
                try:
                    if nonce is None:
                        nonce = await next_nonce(rpc, wallet)
                except Exception as exc:
                    stats.errors += 1
                    stats.last_problem = f"{rpc}: reading a nonce: {exc}"
                    continue
                to = load_recipient(args.seed, index, count)
                if await broadcast(rpc, wallet, nonce, {"amount": 1, "to": to}):
                    nonce += 1
                else:
                    nonce = None  # read it again: a refused or lost transfer leaves a gap

        async def progress():
            while not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), 5)
                except TimeoutError:
                    now = stats.as_dict()
                    line = (
                        f"load: {now['seconds']:.0f}s sent {now['sent']} accepted {now['accepted']} "
                        f"refused {now['refused']} errors {now['errors']} ({now['rate']:.1f} tx/s)"
                    )
                    if now["last_problem"]:
                        line += f"; last problem: {now['last_problem']}"
                    print(line, file=sys.stderr, flush=True)

        await asyncio.gather(progress(), *(sender_task(i, w) for i, w in enumerate(senders)))
    print(json.dumps(stats.as_dict()), flush=True)


def load(args):
    import asyncio

    asyncio.run(load_async(args))


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
    p_load = sub.add_parser("load")
    p_load.add_argument("--rpc", required=True)
    p_load.add_argument("--key", required=True)
    p_load.add_argument("--rate", type=float, required=True)
    p_load.add_argument("--duration", type=float, required=True)
    p_load.add_argument("--senders", type=int, default=8)
    p_load.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.command == "init":
        init(args.spec)
    elif args.command == "join":
        join(args.spec)
    elif args.command == "read-home":
        read_home(args)
    elif args.command == "transfer":
        transfer(args)
    elif args.command == "load":
        load(args)
    else:
        balance(args)


if __name__ == "__main__":
    main()
