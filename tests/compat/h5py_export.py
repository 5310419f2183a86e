#!/usr/bin/env python3
"""Export a Xian-layout HDF5 home with h5py, the library Xian nodes used.

Prints JSON lines {"key":..., "stored":...} sorted by key, like
`statesnap state export`. The compatibility test compares the two, which shows
that what statesnap writes is what a Xian node reads. Escaped names (statesnap's
rule for keys the layout cannot express) are decoded the same way as
host/src/store/key_layout.rs documents: a group name starting with ':' stands for
the rest with ':' read as '/', a file name starting with '%.' for the rest with
'.' read as '/'.
"""
import json
import os
import sys
import h5py


def decode_group(name: str) -> str:
    if name.startswith(":"):
        return name[1:].replace(":", "/")
    return name


def decode_file(name: str) -> str:
    if name.startswith("%."):
        return name[2:].replace(".", "/")
    return name


def stored_text(attr) -> str:
    if isinstance(attr, bytes):
        return attr.decode("utf-8")
    if hasattr(attr, "tobytes"):  # numpy fixed-length bytes
        return attr.tobytes().rstrip(b"\0").decode("utf-8")
    return str(attr)


def main(home: str) -> None:
    out = []
    for sub in ("contract_state", "run_state"):
        d = os.path.join(home, sub)
        if not os.path.isdir(d):
            continue
        for fname in sorted(os.listdir(d)):
            path = os.path.join(d, fname)
            if not os.path.isfile(path):
                continue
            file_part = decode_file(fname)
            with h5py.File(path, "r") as f:
                if "value" in f.attrs:
                    out.append((file_part, stored_text(f.attrs["value"])))

                def visit(name, obj):
                    if isinstance(obj, h5py.Group) and "value" in obj.attrs:
                        var = ":".join(decode_group(seg) for seg in name.split("/"))
                        out.append((file_part + "." + var, stored_text(obj.attrs["value"])))

                f.visititems(visit)
    out.sort(key=lambda kv: kv[0].encode("utf-8"))
    w = sys.stdout
    for k, v in out:
        w.write(json.dumps({"key": k, "stored": v}, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
