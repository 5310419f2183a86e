#!/usr/bin/env bash
# Refreshes vendor/lmdb-sys/lmdb/ from the LMDB 0.9 tree that Python's `lmdb`
# package bundles, with py-lmdb's own patches applied in the order its
# setup.py applies them. Usage: scripts/vendor-lmdb.sh [PY_LMDB_VERSION]
# (default 3.0.0). Review the diff, then run the LMDB compatibility tests
# (cargo test --release -p statesnap-cli --test lmdb_compat).
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:-3.0.0}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip download -q --no-binary :all: --no-deps "lmdb==$version" -d "$work"
tar -xzf "$work/lmdb-$version.tar.gz" -C "$work"
src="$work/lmdb-$version"
# The 0.9 engine's patch list, in order, from setup.py's ENGINES table.
patches=$(python3 - "$src/setup.py" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
block = re.search(r"name='v09'.*?patch_names=\[(.*?)\]", text, re.S).group(1)
block = re.sub(r"#.*", "", block)  # comments hold apostrophes
print("\n".join(re.findall(r"'([^']+)'", block)))
PY
)
tree="$work/tree"
cp -r "$src/lib" "$tree"
for name in $patches; do
    patch -N -p3 -s -d "$tree" < "$src/lib/py-lmdb/$name.patch"
done
dest=vendor/lmdb-sys/lmdb
for f in lmdb.h mdb.c midl.c midl.h; do cp "$tree/$f" "$dest/$f"; done
cp "$src/LICENSE" "$dest/LICENSE"
{
    echo "py-lmdb $version, LMDB $(sed -n 's/^#define MDB_VERSION_\(MAJOR\|MINOR\|PATCH\)\s*\([0-9]*\).*/\2/p' "$dest/lmdb.h" | paste -sd.)"
    echo "patches applied, in order:"
    printf '  %s\n' $patches
} > "$dest/SOURCE"
echo "vendor-lmdb: $(head -1 "$dest/SOURCE"), $(echo "$patches" | wc -l) patches -> $dest"
