#!/usr/bin/env python3
"""Write a Xian-layout HDF5 state home the way Xian's HDF5 driver did, with h5py.

    scripts/xian-h5py-home.py --home DIR --keys N --seed S [--bytes-fraction F]
    scripts/xian-h5py-home.py --home DIR --from-jsonl ENTRIES [--libver latest]   (tests)

DIR must be missing or empty. Exactly N keys get a value; the state resembles
host/src/store/generate.rs (about 40% `currency.balances:<64-hex>`, 20%
`__n.<64-hex>` nonces, token contract balances, nested
`approvals:<owner>:<spender>` and metadata, DAO proposal records, masternode
votes, three `__latest_block.*` keys), with values in every stored form of
docs/XIAN.md §2 except `__delta__`. It is not the same state as
`generate.rs` for the same seed: this is a separate, deterministic generator
(same N and S give the same home, byte for byte in content).

What makes the files look like a real Xian node's (docs/XIAN.md §1):

* h5py's DEFAULT file format (no `libver`: "earliest", i.e. symbol-table
  groups with a B-tree and a local name heap each), which is what Xian's
  driver got, so one group with hundreds of thousands of children has a
  name heap of tens of MiB;
* one file per contract in contract_state/, `__*` files in run_state/, one
  group per key with `:` segments as nested groups;
* `value` in both string forms Xian wrote, as in the fixture
  tests/fixtures/xian-hdf5-small: a variable-length UTF-8 `str` for most keys, a fixed-length
  NUL-padded byte string `S<n>` (numpy.bytes_) for about --bytes-fraction of
  them (default 0.3); `block` a signed 64-bit integer;
* a few groups left behind without `value` (deleted keys), as Xian's driver
  leaves them; they are not counted in N.

Speed: keys are sorted and each file is written in one pass with the groups
of the previous key kept open (h5py writes roughly 7-10k keys/s here, so 3M
keys take several minutes). Progress goes to stderr. Needs h5py and numpy.
"""
import argparse
import hashlib
import json
import os
import random
import sys
import time

import h5py
from h5py import h5a, h5g, h5p, h5s, h5t
import numpy as np

WORDS = ["upgrade", "treasury", "grant", "réseau", "投票", "🚀 launch", 'fee "cut"', "path/to\\x"]
FIELDS = ["title", "state", "votes", "created", "payload", "author"]


def account(seed: int, i: int) -> str:
    return hashlib.sha256(seed.to_bytes(8, "big") + i.to_bytes(8, "big")).hexdigest()


def fixed(r: random.Random) -> str:
    return '{"__fixed__":"%d.%08d"}' % (r.randrange(10_000_000), r.randrange(100_000_000))


def big_int(r: random.Random) -> str:
    hi = r.randrange(10_000_000_000, 99_999_999_999)
    lo = r.randrange(1_000_000_000_000)
    sign = "-" if r.random() < 0.2 else ""
    return '{"__big_int__":"%s%d%012d"}' % (sign, hi, lo)


def dtime(r: random.Random) -> str:
    us = r.randrange(1, 1_000_000) if r.random() < 0.5 else 0
    parts = [r.randrange(2019, 2027), r.randrange(1, 13), r.randrange(1, 29), r.randrange(24), r.randrange(60), r.randrange(60), us]
    return '{"__time__":[%s]}' % ",".join(map(str, parts))


def bool_text(r: random.Random) -> str:
    return "true" if r.random() < 0.5 else "false"


def json_str(s: str) -> str:
    # Compact JSON string as Xian's encoder writes it (non-ASCII kept as is).
    out = s.replace("\\", "\\\\").replace('"', '\\"')
    return '"%s"' % out


def text(r: random.Random) -> str:
    return json_str(" ".join(r.choice(WORDS) for _ in range(r.randrange(1, 5))))


def proposal_value(r: random.Random) -> str:
    k = r.randrange(6)
    if k == 0:
        return text(r)
    if k == 1:
        return dtime(r)
    if k == 2:
        return '{"__bytes__":"%s"}' % ("payload-%d" % r.getrandbits(32)).encode().hex()
    if k == 3:
        return '{"yes":%d,"no":%d,"voters":[%s,%s],"weight":%s}' % (
            r.randrange(1000), r.randrange(1000), text(r), text(r), fixed(r))
    if k == 4:
        return big_int(r)
    return "[%s,%d,null]" % (bool_text(r), r.randrange(-1000, 1000))


def metadata(r: random.Random) -> str:
    return '{"name":%s,"decimals":%d,"created":%s,"supply":%s}' % (
        text(r), r.randrange(19), dtime(r), big_int(r))


def members(r: random.Random, seed: int) -> str:
    return "[%s]" % ",".join('"%s"' % account(seed ^ 0xABC, j) for j in range(r.randrange(3, 8)))


def entry(r: random.Random, seed: int, i: int, tokens: int):
    """The i-th key and its stored value."""
    fixed_keys = {
        0: lambda: ("__latest_block.height", str(r.randrange(1, 50_000_000))),
        1: lambda: ("__latest_block.hash", '{"__bytes__":"%s"}' % account(seed, i).encode().hex()),
        2: lambda: ("__latest_block.nanos", big_int(r)),
        3: lambda: ("currency.metadata:token_name", '"Xian"'),
        4: lambda: ("currency.metadata:token_symbol", '"XIAN"'),
        5: lambda: ("masternodes.S:members", members(r, seed)),
    }
    if i in fixed_keys:
        return fixed_keys[i]()
    acct = account(seed, i)
    p = r.randrange(100)
    if p < 40:
        return "currency.balances:" + acct, fixed(r)
    if p < 60:
        return "__n." + acct, str(r.randrange(100_000))
    if p < 80:
        return "con_token_%d.balances:%s" % (r.randrange(tokens), acct), fixed(r)
    if p < 88:
        spender = account(seed ^ 0x5EED, i)[:40]
        return "con_token_%d.approvals:%s:%s" % (r.randrange(tokens), acct, spender), fixed(r)
    if p < 96:
        return "con_dao.proposals:%s:%s" % (acct[:16], r.choice(FIELDS)), proposal_value(r)
    if p < 98:
        n = r.randrange(64)
        if r.random() < 0.05:
            # A vote round's own count: a key with both a value and children.
            return "masternodes.votes:%d" % n, str(r.randrange(1000))
        return "masternodes.votes:%d:%s" % (n, acct), bool_text(r)
    return "con_token_%d.metadata:%s" % (r.randrange(tokens), acct[:12]), metadata(r)


def encode_group(seg: str) -> str:
    """host/src/store/key_layout.rs's escape for a segment the layout cannot hold (never hit here)."""
    if seg in ("", ".", "..") or "/" in seg:
        return ":" + seg.replace("/", ":")
    return seg


def encode_file(name: str) -> str:
    """host/src/store/key_layout.rs's escape for a file name the layout cannot hold."""
    if name == "" or "/" in name:
        return "%." + name.replace("/", ".")
    return name


def location(key: str):
    file, dot, var = key.partition(".")
    sub = "run_state" if file.startswith("__") else "contract_state"
    groups = tuple(encode_group(s) for s in var.split(":")) if dot else ()
    return sub, encode_file(file), groups


class Writer:
    """h5py's low-level calls with the exact types its high-level API uses
    (`grp.create_group(name)`, `grp.attrs["value"] = str | numpy.bytes_`,
    `grp.attrs["block"] = numpy.int64`), without its per-call overhead."""

    def __init__(self):
        # As h5py's Group._e: ASCII names as ASCII links, others as UTF-8. (A
        # UTF-8 link cannot be a symbol-table entry, so HDF5 stores a group
        # holding one in the new link format, even in an "earliest" file.)
        self.lcpl = {}
        for cset in (h5t.CSET_ASCII, h5t.CSET_UTF8):
            self.lcpl[cset] = h5p.create(h5p.LINK_CREATE)
            self.lcpl[cset].set_char_encoding(cset)
        self.scalar = h5s.create(h5s.SCALAR)
        self.vlen = h5t.py_create(h5py.string_dtype("utf-8"), logical=True)
        self.vlen_dt = h5py.string_dtype("utf-8")
        self.i64 = h5t.py_create(np.dtype("<i8"))

    def group(self, parent, name: str):
        try:
            return h5g.create(parent, name.encode("ascii"), lcpl=self.lcpl[h5t.CSET_ASCII])
        except UnicodeEncodeError:
            return h5g.create(parent, name.encode("utf-8"), lcpl=self.lcpl[h5t.CSET_UTF8])

    def attrs(self, gid, value: str, block: int, as_bytes: bool):
        if as_bytes:
            data = np.array(np.bytes_(value.encode("utf-8")))
            tid = h5t.py_create(data.dtype)
        else:
            data = np.array(value, dtype=self.vlen_dt)
            tid = self.vlen
        h5a.create(gid, b"value", tid, self.scalar).write(data)
        h5a.create(gid, b"block", self.i64, self.scalar).write(np.array(block, dtype="<i8"))


def big_metadata_cache(f) -> None:
    """Room for a large group's name heap in HDF5's metadata cache (it does not
    change the file). With h5py's default 32 MiB ceiling, each insert into a
    symbol-table group with a few hundred thousand children re-reads its
    tens-of-MiB name heap, and writing one takes hours."""
    config = f.id.get_mdc_config()
    config.max_size = 128 << 20
    f.id.set_mdc_config(config)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", required=True)
    ap.add_argument("--keys", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--bytes-fraction", type=float, default=0.3)
    ap.add_argument("--from-jsonl", help="write these entries ({key, stored} lines) instead of generated ones")
    ap.add_argument("--libver", choices=["default", "latest"], default="default",
                    help="file format; `latest` (new-style compact/dense groups) only for tests")
    a = ap.parse_args()
    if a.from_jsonl:
        a.keys = 0
    if os.path.exists(a.home) and os.listdir(a.home):
        sys.exit(f"{a.home} is not empty")
    r = random.Random(a.seed)
    tokens = max(1, min(40, a.keys // 20_000))
    started = time.time()

    # (location, value, block, as bytes); locations sort file by file, parents first.
    items = {}
    i = 0
    if a.from_jsonl:
        with open(a.from_jsonl, encoding="utf-8") as src:
            for line in src:
                e = json.loads(line)
                items[location(e["key"])] = (e["stored"], r.randrange(1, 50_000_000), r.random() < a.bytes_fraction)
    while len(items) < a.keys:
        key, value = entry(r, a.seed, i, tokens)
        i += 1
        items.setdefault(location(key), (value, r.randrange(1, 50_000_000), r.random() < a.bytes_fraction))
    deleted = []
    # About 0.1% deleted keys: groups left behind without `value`.
    for j in range(a.keys // 1000):
        deleted.append(("contract_state", "currency", ("balances", "deleted" + account(a.seed ^ 0xDE1, j))))
    print(f"generated {len(items)} keys in {time.time() - started:.1f}s", file=sys.stderr)

    rows = sorted([(loc, v) for loc, v in items.items()] + [(loc, None) for loc in deleted])
    for sub in ("contract_state", "run_state"):
        os.makedirs(os.path.join(a.home, sub), exist_ok=True)

    w = Writer()
    f = None
    chain = []  # [(name, GroupID)] of the previous key, from the file's root down
    current = None
    done = 0
    for (sub, file, groups), v in rows:
        if (sub, file) != current:
            if f is not None:
                f.close()
            path = os.path.join(a.home, sub, file)
            # The default format, as Xian's driver used.
            f = h5py.File(path, "w") if a.libver == "default" else h5py.File(path, "w", libver="latest")
            big_metadata_cache(f)
            current = (sub, file)
            chain = []
        keep = 0
        while keep < len(chain) and keep < len(groups) and chain[keep][0] == groups[keep]:
            keep += 1
        del chain[keep:]
        # Rows are sorted, so every group past the shared prefix is new.
        for name in groups[keep:]:  # a key with no "." has its value on the root group
            parent = chain[-1][1] if chain else f.id
            chain.append((name, w.group(parent, name)))
        if v is None:
            continue
        value, block, as_bytes = v
        w.attrs(chain[-1][1] if chain else f.id, value, block, as_bytes)
        done += 1
        if done % 100_000 == 0:
            el = time.time() - started
            print(f"{done}/{a.keys} keys written, {el:.0f}s, {done / el:.0f} keys/s", file=sys.stderr)
    if f is not None:
        f.close()
    print(f"wrote {done} keys to {a.home} in {time.time() - started:.1f}s", file=sys.stderr)


if __name__ == "__main__":
    main()
