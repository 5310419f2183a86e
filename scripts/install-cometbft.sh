#!/usr/bin/env bash
# Installs CometBFT v0.38.26 (the release statesnap's ABCI 2.0 node and its
# testnets use) with `go install`, unless `cometbft version` already says
# 0.38.26, on PATH or in Go's bin directory. Quiet when it is already there;
# safe to run again. statesnap finds the binary through $COMETBFT, PATH, then
# $(go env GOPATH)/bin.
set -euo pipefail

VERSION=0.38.26
MODULE=github.com/cometbft/cometbft/cmd/cometbft

say() { printf 'install-cometbft: %s\n' "$*" >&2; }

# Directories `go install` may have put cometbft in.
go_bin_dirs() {
    command -v go >/dev/null || return 0
    local gobin gopath dir
    gobin=$(go env GOBIN 2>/dev/null || true)
    gopath=$(go env GOPATH 2>/dev/null || true)
    [ -n "$gobin" ] && echo "$gobin"
    local IFS=:
    for dir in $gopath; do echo "$dir/bin"; done
}

is_wanted() { [ -x "$1" ] && [ "$("$1" version 2>/dev/null)" = "$VERSION" ]; }

candidates() {
    command -v cometbft 2>/dev/null || true
    go_bin_dirs | sed 's|$|/cometbft|'
    [ -n "${HOME:-}" ] && echo "$HOME/go/bin/cometbft"
}

first_on_path=$(command -v cometbft 2>/dev/null || true)
while read -r candidate; do
    if [ -n "$candidate" ] && is_wanted "$candidate"; then
        if [ -n "$first_on_path" ] && [ "$first_on_path" != "$candidate" ] && ! is_wanted "$first_on_path"; then
            say "note: $first_on_path (first on PATH) is version $("$first_on_path" version 2>/dev/null || echo unknown);" \
                "set COMETBFT=$candidate to make statesnap use $VERSION"
        fi
        exit 0
    fi
done < <(candidates)

if ! command -v go >/dev/null; then
    say "Go is not installed, and it is needed to build cometbft $VERSION."
    say "Install Go 1.22 or newer (https://go.dev/doc/install, or 'apt-get install golang-go' on a recent Debian),"
    say "then run $0 again."
    exit 1
fi

say "installing cometbft $VERSION with go install (a minute or two the first time)"
if ! go install "$MODULE@v$VERSION"; then
    say "go install $MODULE@v$VERSION failed (see above): check the network and Go's version ($(go version))"
    exit 1
fi

while read -r dir; do
    if is_wanted "$dir/cometbft"; then
        say "installed $dir/cometbft ($VERSION)"
        exit 0
    fi
done < <(go_bin_dirs)
say "go install succeeded but no cometbft $VERSION was found in $(go_bin_dirs | tr '\n' ' ')"
exit 1
