#!/usr/bin/env python3
"""Write a Xian state home the way Xian's own LMDB storage driver does.

    scripts/xian-lmdb-home.py --home DIR --keys N [--seed S]   # a realistic generated state
    scripts/xian-lmdb-home.py --home DIR --jsonl FILE          # given {"key":..,"stored":..} lines

The environment is <home>/lmdb, opened as xian-contracting's driver opens it
(docs/XIAN.md §6): lmdb.open(path, map_size=4 GiB, max_dbs=1,
readahead=True, writemap=False, sync=True, metasync=True); the unnamed
database; key = the state key's UTF-8 bytes, value = the stored JSON text;
one write transaction per batch; on lmdb.MapFullError the map is doubled and
the batch retried. Generated keys are written in generation order (not
sorted), as a node writes them.

The generated state is Xian-like, in the proportions of statesnap's own
generator (host/src/store/generate.rs), not byte-identical to it: about 40%
currency.balances:<64 hex>, 20% __n.<64 hex>, token balances, approvals and
metadata, DAO proposal records, masternode votes, __latest_block.*, with
values in every stored form except __delta__. Deterministic for a seed.

Prints one JSON line: {"keys":..,"seconds":..,"map_size":..,"lmdb_version":..}.
"""
import argparse
import hashlib
import json
import os
import random
import sys
import time

import lmdb

GIB = 1 << 30


def enc(value) -> str:
    """Xian's stored text: compact JSON (non-ASCII as \\u escapes)."""
    return json.dumps(value, separators=(",", ":"))


def account(seed: int, i: int) -> str:
    return hashlib.sha256(seed.to_bytes(8, "big") + i.to_bytes(8, "big")).hexdigest()


def fixed(r: random.Random) -> dict:
    return {"__fixed__": "%d.%08d" % (r.randrange(10_000_000), r.randrange(100_000_000))}


def big_int(r: random.Random) -> dict:
    n = r.randrange(10**22, 10**23)
    return {"__big_int__": str(-n if r.random() < 0.2 else n)}


def when(r: random.Random) -> dict:
    us = r.randrange(1, 1_000_000) if r.random() < 0.5 else 0
    return {"__time__": [r.randrange(2019, 2027), r.randrange(1, 13), r.randrange(1, 29),
                         r.randrange(24), r.randrange(60), r.randrange(60), us]}


WORDS = ["upgrade", "treasury", "grant", "réseau", "投票", "🚀 launch", 'fee "cut"', "path/to\\x"]


def text(r: random.Random) -> str:
    return " ".join(r.choice(WORDS) for _ in range(r.randrange(1, 5)))


def proposal(r: random.Random):
    k = r.randrange(6)
    if k == 0:
        return text(r)
    if k == 1:
        return when(r)
    if k == 2:
        return {"__bytes__": ("payload-%d" % r.randrange(2**32)).encode().hex()}
    if k == 3:
        return {"yes": r.randrange(1000), "no": r.randrange(1000), "voters": [text(r), text(r)], "weight": fixed(r)}
    if k == 4:
        return big_int(r)
    return [r.random() < 0.5, r.randrange(-1000, 1000), None]


def generate(n: int, seed: int):
    """Yields (key, stored) pairs, `n` distinct keys."""
    r = random.Random(seed)
    tokens = max(1, min(40, n // 20_000))
    fixed_keys = [
        ("__latest_block.height", enc(r.randrange(1, 50_000_000))),
        ("__latest_block.hash", enc({"__bytes__": account(seed, 1)})),
        ("__latest_block.nanos", enc(big_int(r))),
        ("currency.metadata:token_name", enc("Xian")),
        ("currency.metadata:token_symbol", enc("XIAN")),
        ("masternodes.S:members", enc([account(seed ^ 0xABC, j) for j in range(r.randrange(3, 8))])),
    ]
    seen = set()
    count = 0
    for k, v in fixed_keys[:n]:
        seen.add(k)
        count += 1
        yield k, v
    i = len(fixed_keys)
    while count < n:
        acct = account(seed, i)
        i += 1
        p = r.randrange(100)
        if p < 40:
            kv = ("currency.balances:" + acct, enc(fixed(r)))
        elif p < 60:
            kv = ("__n." + acct, enc(r.randrange(100_000)))
        elif p < 80:
            kv = ("con_token_%d.balances:%s" % (r.randrange(tokens), acct), enc(fixed(r)))
        elif p < 88:
            spender = account(seed ^ 0x5EED, i)[:40]
            kv = ("con_token_%d.approvals:%s:%s" % (r.randrange(tokens), acct, spender), enc(fixed(r)))
        elif p < 96:
            field = r.choice(["title", "state", "votes", "created", "payload", "author"])
            kv = ("con_dao.proposals:%s:%s" % (acct[:16], field), enc(proposal(r)))
        elif p < 98:
            kv = ("masternodes.votes:%d:%s" % (r.randrange(64), acct), enc(r.random() < 0.5))
        else:
            meta = {"name": text(r), "decimals": r.randrange(19), "created": when(r), "supply": big_int(r)}
            kv = ("con_token_%d.metadata:%s" % (r.randrange(tokens), acct[:12]), enc(meta))
        if kv[0] in seen:
            continue
        seen.add(kv[0])
        count += 1
        yield kv


def from_jsonl(path: str):
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                e = json.loads(line)
                yield e["key"], e["stored"]


def open_env(home: str, map_size: int) -> lmdb.Environment:
    path = os.path.join(home, "lmdb")
    os.makedirs(path, exist_ok=True)
    return lmdb.open(path, map_size=map_size, max_dbs=1, readahead=True, writemap=False, sync=True, metasync=True)


def write_batch(env: lmdb.Environment, batch) -> None:
    """One write transaction; the map doubled and the batch retried when full."""
    while True:
        try:
            with env.begin(write=True) as txn:
                for k, v in batch:
                    txn.put(k.encode("utf-8"), v.encode("utf-8"))
            return
        except lmdb.MapFullError:
            env.set_mapsize(env.info()["map_size"] * 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", required=True)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--keys", type=int, help="generate this many keys")
    src.add_argument("--jsonl", help="write the entries of this JSON-lines file")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--batch", type=int, default=10_000, help="entries per write transaction")
    ap.add_argument("--map-size", type=int, default=4 * GIB,
                    help="initial map size in bytes (Xian: 4 GiB; small values exercise map growth)")
    a = ap.parse_args()
    if os.path.isdir(a.home) and os.listdir(a.home):
        sys.exit("xian-lmdb-home: %s is not empty; give a missing or empty directory" % a.home)
    started = time.time()
    env = open_env(a.home, a.map_size)
    entries = generate(a.keys, a.seed) if a.keys is not None else from_jsonl(a.jsonl)
    n = 0
    batch = []
    for kv in entries:
        batch.append(kv)
        if len(batch) == a.batch:
            write_batch(env, batch)
            n += len(batch)
            batch = []
    if batch:
        write_batch(env, batch)
        n += len(batch)
    info = env.info()
    env.close()
    print(json.dumps({"keys": n, "seconds": time.time() - started, "map_size": info["map_size"],
                      "lmdb_version": ".".join(map(str, lmdb.version()))}))


if __name__ == "__main__":
    main()
