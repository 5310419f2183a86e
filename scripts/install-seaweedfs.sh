#!/usr/bin/env bash
# Installs SeaweedFS's `weed` (Apache-2.0), the real S3-compatible server the
# object-storage transport tests run (harness/src/object_server.rs), into a
# directory of its own: $STATESNAP_WEED_DIR, by default
# /var/lib/statesnap/seaweedfs-4.53/weed.
#
# `go install …/weed@VERSION` is refused (SeaweedFS's go.mod has replace
# directives), so this downloads the pinned module with `go mod download` and
# builds ./weed inside it with `GOFLAGS=-mod=mod go build` (about 3.5 minutes
# on 2 cores; the binary is stripped). The module cache is read-only: the build
# runs there and writes its output elsewhere.
#
# The harness finds the binary through $STATESNAP_WEED, then this install
# path, then PATH. Safe to run again: a stamp file records the pinned module
# version, so a rerun with the same pin does nothing and prints nothing. The
# binary is built under a temporary directory and renamed into place only when
# complete, so an interrupted run never looks done.
set -euo pipefail

RELEASE=4.53
MODULE=github.com/seaweedfs/seaweedfs
MODULE_VERSION=v0.0.0-20261109003541-7506e5f91cd6
COMMIT=7506e5f91cd6

DIR=${STATESNAP_WEED_DIR:-/var/lib/statesnap/seaweedfs-$RELEASE}
BIN="$DIR/weed"

say() { printf 'install-seaweedfs: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        die "need root to run: $*"
    fi
}

# Runs without root when the parent directory is writable, with it otherwise.
maybe_root() {
    local parent
    parent=$(dirname "$DIR")
    if mkdir -p "$parent" 2>/dev/null && [ -w "$parent" ]; then "$@"; else as_root "$@"; fi
}

is_installed() {
    [ -x "$BIN" ] && [ "$(cat "$DIR/.version" 2>/dev/null)" = "$MODULE_VERSION" ] \
        && "$BIN" version 2>/dev/null | grep -q " $RELEASE "
}

is_installed && exit 0

if ! command -v go >/dev/null; then
    say "Go is not installed, and it is needed to build SeaweedFS's weed $RELEASE (the S3 server of the transport tests)."
    say "Install Go 1.21 or newer (https://go.dev/doc/install; it fetches the Go 1.26 toolchain SeaweedFS asks for), then run $0 again."
    exit 1
fi

start=$(date +%s)
say "building SeaweedFS weed $RELEASE ($MODULE@$MODULE_VERSION) into $DIR (about 4 minutes on 2 cores)"
json=$(go mod download -json "$MODULE@$MODULE_VERSION") \
    || die "go mod download $MODULE@$MODULE_VERSION failed (see above): check the network and Go's version ($(go version))"
src=$(printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
[ -n "$src" ] && [ -d "$src/weed" ] || die "go mod download did not say where $MODULE is (got: $json)"

# Built as the calling user (its Go caches), into a temporary directory; only
# the copy into place may need root. go build writes nothing in the read-only
# module directory: -mod=mod lets it accept the module's go.mod (replace
# directives) as it is.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! (cd "$src" && GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod" \
        go build -ldflags "-s -w -X $MODULE/weed/util/version.COMMIT=$COMMIT" -o "$tmp/weed" ./weed); then
    die "go build of $MODULE@$MODULE_VERSION ./weed failed (see above; Go is $(go version))"
fi
"$tmp/weed" version 2>/dev/null | grep -q " $RELEASE " \
    || die "the weed built from $MODULE_VERSION reports '$("$tmp/weed" version 2>&1 | head -n1)', not $RELEASE"
echo "$MODULE_VERSION" >"$tmp/.version"
partial="$DIR.partial"
maybe_root rm -rf "$partial"
maybe_root mkdir -p "$partial"
maybe_root cp "$tmp/weed" "$tmp/.version" "$partial/"
maybe_root rm -rf "$DIR"
maybe_root mv "$partial" "$DIR"
say "installed $BIN in $(( $(date +%s) - start )) s ($(du -h "$BIN" | cut -f1))"
