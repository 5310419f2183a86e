#!/usr/bin/env bash
# The h5py-home comparison of docs/BENCHMARKS.md §7: for each key count, an
# HDF5 home written by h5py the way Xian's driver did (scripts/xian-h5py-home.py,
# seed 7) and the same state in a home statesnap writes (`state copy --store
# hdf5`), then `state root` and `snapshot create` on each, one after the
# other, with seconds and peak RSS (KB) from /usr/bin/time.
#
#   scripts/bench-h5py-homes.sh DIR [KEYS...]     (default: 100000 1000000 3000000)
#
# Homes are kept in DIR and reused by later runs (3M keys: about 5 GB, 6 min to
# write). Uses target/release/statesnap (cargo build --release first), or
# $STATESNAP.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:?usage: scripts/bench-h5py-homes.sh DIR [KEYS...]}
shift
keys=("$@")
[ $# -eq 0 ] && keys=(100000 1000000 3000000)
bin=${STATESNAP:-$here/target/release/statesnap}
[ -x "$bin" ] || { echo "no $bin: run cargo build --release first" >&2; exit 1; }
command -v /usr/bin/time >/dev/null || { echo "needs /usr/bin/time (Debian package time)" >&2; exit 1; }
mkdir -p "$dir"
cd "$dir"
for k in "${keys[@]}"; do
    [ -d "h5py-$k" ] || python3 "$here/scripts/xian-h5py-home.py" --home "h5py-$k" --keys "$k" --seed 7 >&2
    [ -d "ours-$k" ] || "$bin" state copy --from "h5py-$k" --to "ours-$k" --store hdf5 >/dev/null
done
printf '%-8s %-5s %10s %10s %10s %10s\n' keys home root_s root_kb create_s create_kb
for k in "${keys[@]}"; do
    for home in h5py ours; do
        read -r rs rk < <({ /usr/bin/time -f '%e %M' "$bin" state root --home "$home-$k" >/dev/null; } 2>&1 | tail -1)
        rm -rf "snap-$home-$k"
        read -r cs ck < <({ /usr/bin/time -f '%e %M' "$bin" snapshot create --home "$home-$k" --height 1 \
            --out "snap-$home-$k" >/dev/null; } 2>&1 | tail -1)
        printf '%-8s %-5s %10s %10s %10s %10s\n' "$k" "$home" "$rs" "$rk" "$cs" "$ck"
    done
done
