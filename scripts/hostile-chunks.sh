#!/usr/bin/env bash
# Bounded reads of snapshot files, measured: a snapshot whose chunk is a link
# to /dev/zero (a file that never ends) and one whose chunk is a 3 GB sparse
# file must each be refused by `snapshot verify` and `snapshot restore` with a
# peak RSS under 64 MiB (before the fix: 16 GB and the OOM killer, and 3.1 GB).
# Prints each case's verdict and peak RSS (from /usr/bin/time) and exits 1 if
# any case was accepted or went over the bound.
#
#   scripts/hostile-chunks.sh [DIR]     (default: a temporary directory)
#
# Uses target/release/statesnap (cargo build --release first), or $STATESNAP.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${STATESNAP:-$here/target/release/statesnap}
[ -x "$bin" ] || { echo "no $bin: run cargo build --release first" >&2; exit 1; }
command -v /usr/bin/time >/dev/null || { echo "needs /usr/bin/time (Debian package time)" >&2; exit 1; }
limit_kb=$((64 * 1024))
if [ $# -ge 1 ]; then dir=$1; mkdir -p "$dir"; else
    dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
fi
cd "$dir"
rm -rf home snaps zero sparse restored-*
"$bin" state generate --home home --keys 20000 >/dev/null
"$bin" snapshot create --home home --height 1 --out snaps >/dev/null
snap=$(dirname "$(ls snaps/*/manifest.bin)")
root=$("$bin" state root --home home | tail -1)
cp -r "$snap" zero
cp -r "$snap" sparse
rm zero/chunk-000000 && ln -s /dev/zero zero/chunk-000000
truncate -s 3000000000 sparse/chunk-000000

bad=0
printf '%-8s %-8s %-9s %9s  %s\n' case command verdict rss_kib error
for case in zero sparse; do
    for cmd in verify restore; do
        if [ "$cmd" = verify ]; then args=(snapshot verify "$case"); else
            args=(snapshot restore --from "$case" --home "restored-$case" --app-hash "$root"); fi
        set +e
        out=$({ /usr/bin/time -f 'RSS %M' "$bin" "${args[@]}" >/dev/null; } 2>&1)
        status=$?
        set -e
        rss=$(sed -n 's/^RSS //p' <<<"$out" | tail -1)
        err=$(grep '^error' <<<"$out" | head -1 | cut -c1-110)
        verdict=refused
        [ "$status" = 0 ] && { verdict=ACCEPTED; bad=1; }
        [ "$rss" -ge "$limit_kb" ] && { verdict="$verdict,OVER"; bad=1; }
        printf '%-8s %-8s %-9s %9s  %s\n' "$case" "$cmd" "$verdict" "$rss" "$err"
    done
done
exit "$bad"
