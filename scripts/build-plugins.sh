#!/usr/bin/env bash
# Builds the built-in format plugins (zstd, gzip, brotli) reproducibly and
# writes them to plugins/dist/ with their SHA-256 in plugins/dist/plugins.lock.
# The host embeds those committed bytes, so every build of the host (any
# profile, features or compiler) advertises the same plugin hashes.
#
#   scripts/build-plugins.sh           refresh plugins/dist/ from source
#   scripts/build-plugins.sh --check   rebuild in a scratch directory and fail
#                                      on any byte of difference (the test
#                                      command runs this)
#
# Reproducible means: the toolchain of rust-toolchain.toml, Cargo.lock
# (--locked), every profile setting given here rather than inherited, no
# RUSTFLAGS from the caller, and the paths that panic messages embed (the
# cargo home, the checkout) remapped to fixed names.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

check=false
case "${1:-}" in
    --check) check=true ;;
    "") ;;
    *) echo "usage: scripts/build-plugins.sh [--check]" >&2; exit 2 ;;
esac

plugins=(zstd gzip brotli)
toolchain=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
if [ "$(rustc --version | awk '{print $2}')" != "$toolchain" ]; then
    echo "build-plugins: rustc is $(rustc --version), but rust-toolchain.toml pins $toolchain;" \
        "run this through rustup (rustup toolchain install $toolchain)" >&2
    exit 1
fi

if $check; then
    target=$(mktemp -d "${TMPDIR:-/tmp}/statesnap-plugins.XXXXXX")
    trap 'rm -rf "$target"' EXIT
else
    target="$root/target/dist-plugins"
fi

cargo_home=${CARGO_HOME:-$HOME/.cargo}
flags=(
    "--remap-path-prefix=$cargo_home=/cargo"
    "--remap-path-prefix=$root=/statesnap"
)
packages=()
for p in "${plugins[@]}"; do packages+=(-p "statesnap-plugin-$p"); done

(
    # Nothing of the caller's environment may reach the compiler.
    unset RUSTFLAGS RUSTC_WRAPPER RUSTC_WORKSPACE_WRAPPER CARGO_BUILD_RUSTFLAGS CARGO_TARGET_DIR CARGO_BUILD_TARGET
    for v in $(env | sed -n 's/^\(CARGO_PROFILE_[A-Z_]*\)=.*/\1/p'); do unset "$v"; done
    CARGO_ENCODED_RUSTFLAGS=$(IFS=$'\x1f'; echo "${flags[*]}") \
    CARGO_PROFILE_RELEASE_OPT_LEVEL=3 \
    CARGO_PROFILE_RELEASE_DEBUG=false \
    CARGO_PROFILE_RELEASE_STRIP=true \
    CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=false \
    CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=false \
    CARGO_PROFILE_RELEASE_LTO=true \
    CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 \
    CARGO_PROFILE_RELEASE_PANIC=unwind \
    CARGO_PROFILE_RELEASE_INCREMENTAL=false \
    cargo build --locked --release --target wasm32-wasip2 --target-dir "$target" "${packages[@]}"
)

built="$target/wasm32-wasip2/release"
lock() {
    echo "# Built-in plugins embedded by the host: SHA-256, file, package."
    echo "# Made by scripts/build-plugins.sh with rustc $toolchain; do not edit."
    for p in "${plugins[@]}"; do
        sum=$(sha256sum "$1/$2$p.wasm" | awk '{print $1}')
        echo "$sum  $p.wasm  statesnap-plugin-$p"
    done
}

if $check; then
    mkdir -p "$target/named"
    for p in "${plugins[@]}"; do cp "$built/statesnap_plugin_$p.wasm" "$target/named/$p.wasm"; done
    bad=0
    for p in "${plugins[@]}"; do
        if ! cmp -s "$target/named/$p.wasm" "plugins/dist/$p.wasm"; then
            echo "build-plugins: plugins/dist/$p.wasm differs from what its source builds" \
                "($(sha256sum "$target/named/$p.wasm" | awk '{print $1}'))" >&2
            bad=1
        fi
    done
    if ! diff -u plugins/dist/plugins.lock <(lock "$target/named" "") >&2; then bad=1; fi
    if [ "$bad" != 0 ]; then
        echo "build-plugins: the committed built-in plugins are not what their source builds;" \
            "run scripts/build-plugins.sh and commit plugins/dist/ (a plugin's SHA-256 names its" \
            "format in every manifest, so say so in the commit message)" >&2
        exit 1
    fi
    echo "build-plugins: plugins/dist/ matches its source (${plugins[*]})"
else
    mkdir -p plugins/dist
    for p in "${plugins[@]}"; do cp "$built/statesnap_plugin_$p.wasm" "plugins/dist/$p.wasm"; done
    lock plugins/dist "" > plugins/dist/plugins.lock
    cat plugins/dist/plugins.lock
fi
