#!/usr/bin/env python3
"""Export a Xian LMDB home with Python's `lmdb`, the binding Xian's node uses.

    lmdb_export.py HOME            JSON lines {"key":..,"stored":..} in LMDB's key order
    lmdb_export.py --version       the bundled LMDB version, e.g. 0.9.31

Opens <home>/lmdb read-only as a reader would (max_dbs=1, the unnamed
database), so the compatibility tests can compare what statesnap wrote with
what Xian reads.
"""
import json
import os
import sys

import lmdb


def main() -> None:
    if sys.argv[1] == "--version":
        print(".".join(map(str, lmdb.version())))
        return
    env = lmdb.open(os.path.join(sys.argv[1], "lmdb"), readonly=True, max_dbs=1, lock=True)
    out = sys.stdout
    with env.begin() as txn:
        for k, v in txn.cursor():
            out.write(json.dumps({"key": k.decode("utf-8"), "stored": v.decode("utf-8")}, ensure_ascii=False) + "\n")
    env.close()


if __name__ == "__main__":
    main()
