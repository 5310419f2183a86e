#!/usr/bin/env bash
# Builds tools/cometbft-bootstrap (node.BootstrapState of CometBFT: a new
# home starts at a snapshot's height without p2p state sync) once per
# CometBFT release statesnap uses, pinned to that release's module, and
# installs each as `cometbft-bootstrap` beside its `cometbft`:
#
#   * v0.39.3 (go.mod) into $STATESNAP_COMETBFT_039_DIR, by default
#     /var/lib/statesnap/cometbft-0.39.3 (scripts/install-xian.sh puts
#     cometbft there);
#   * v0.38.26 (go.v0.38.mod) beside the cometbft 0.38.26 that
#     scripts/install-cometbft.sh installed (PATH, then Go's bin directory).
#
# Each binary carries a hash of the sources it was built from (its
# `--version`); a rerun with unchanged sources does nothing and prints
# nothing. Run scripts/install-cometbft.sh and scripts/install-xian.sh
# first (scripts/setup.sh does). The Go module proxy is the only network
# used (and only when a module is missing from Go's module cache).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC="$HERE/../tools/cometbft-bootstrap"
NAME=cometbft-bootstrap
CMT_039_DIR=${STATESNAP_COMETBFT_039_DIR:-/var/lib/statesnap/cometbft-0.39.3}

say() { printf 'install-cometbft-bootstrap: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        die "need root to run: $*"
    fi
}

# Where scripts/install-cometbft.sh looks for cometbft.
cometbft_candidates() {
    local gobin gopath dir
    command -v cometbft 2>/dev/null || true
    if command -v go >/dev/null; then
        gobin=$(go env GOBIN 2>/dev/null || true)
        gopath=$(go env GOPATH 2>/dev/null || true)
        [ -n "$gobin" ] && echo "$gobin/cometbft"
        local IFS=:
        for dir in $gopath; do echo "$dir/bin/cometbft"; done
    fi
    [ -n "${HOME:-}" ] && echo "$HOME/go/bin/cometbft"
    return 0
}

# The directory of the first candidate cometbft that reports version $1, or nothing.
dir_of_cometbft() {
    local candidate
    while read -r candidate; do
        if [ -n "$candidate" ] && [ -x "$candidate" ] && [ "$("$candidate" version 2>/dev/null)" = "$1" ]; then
            dirname "$candidate"
            return 0
        fi
    done < <(cometbft_candidates)
}

# The hash of what a variant is built from: the program, its module files
# and this script's way of building it.
source_hash() {
    local modfile=$1 sumfile=${1%.mod}.sum
    {
        echo "cometbft-bootstrap build 1: go build -trimpath -modfile=$modfile"
        cat "$SRC/main.go" "$SRC/$modfile" "$SRC/$sumfile"
    } | sha256sum | cut -c1-16
}

# install VERSION MODFILE DIR: builds with MODFILE and installs DIR/cometbft-bootstrap,
# unless the one there was built from the same sources.
install_variant() {
    local version=$1 modfile=$2 dir=$3 hash want start tmp
    hash=$(source_hash "$modfile")
    want="cometbft-bootstrap cometbft v$version source $hash"
    if [ -x "$dir/$NAME" ] && [ "$("$dir/$NAME" --version 2>/dev/null)" = "$want" ]; then
        return 0
    fi
    command -v go >/dev/null || die "Go is needed to build $NAME (see scripts/install-cometbft.sh)"
    start=$(date +%s)
    say "building $NAME for cometbft $version (go build: about 80 s for 0.39.3 and 30 s more for 0.38.26 with an empty Go build cache, seconds with a warm one)"
    tmp=$(mktemp -d)
    # shellcheck disable=SC2064
    trap "rm -rf '$tmp'" EXIT
    if ! (cd "$SRC" && go build -trimpath -modfile="$modfile" -ldflags "-X main.sourceHash=$hash" -o "$tmp/$NAME" .); then
        die "go build of $SRC with $modfile failed (see above)"
    fi
    [ "$("$tmp/$NAME" --version)" = "$want" ] \
        || die "the built $NAME reports \`$("$tmp/$NAME" --version)\`, not \`$want\`"
    # Into place by rename, so a running or half-copied binary is never seen.
    as_root install -m 0755 "$tmp/$NAME" "$dir/.$NAME.partial"
    as_root mv -f "$dir/.$NAME.partial" "$dir/$NAME"
    rm -rf "$tmp"
    trap - EXIT
    say "installed $dir/$NAME in $(( $(date +%s) - start )) s"
}

[ -x "$CMT_039_DIR/cometbft" ] && [ "$(cat "$CMT_039_DIR/.version" 2>/dev/null)" = 0.39.3 ] \
    || die "no cometbft 0.39.3 in $CMT_039_DIR: run scripts/install-xian.sh first"
install_variant 0.39.3 go.mod "$CMT_039_DIR"

dir_038=$(dir_of_cometbft 0.38.26)
[ -n "$dir_038" ] || die "no cometbft 0.38.26 on PATH or in Go's bin directory: run scripts/install-cometbft.sh first"
install_variant 0.38.26 go.v0.38.mod "$dir_038"
