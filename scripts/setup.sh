#!/usr/bin/env bash
# Installs what building and testing statesnap needs on a fresh Debian machine:
# libhdf5 (Debian's), pkg-config, strace, the wasm32-wasip2 Rust target, the Python
# packages the compatibility tests use (h5py, lmdb), the C plugin's toolchain
# (clang, lld, wasi-libc, wit-bindgen, wasm-tools), the Python plugin's
# componentize-py and CometBFT. Safe to run again: it only
# installs what is missing.
set -euo pipefail

say() { printf 'setup: %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        say "need root to run: $*"; exit 1
    fi
}

if ! pkg-config --exists hdf5 2>/dev/null; then
    say "installing libhdf5-dev and pkg-config (Debian packages)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libhdf5-dev pkg-config >/dev/null
fi
if ! command -v strace >/dev/null; then
    say "installing strace (Debian package; a test observes the restore's fsyncs with it)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq strace >/dev/null
fi

if ! command -v cargo >/dev/null; then
    say "cargo not found: install Rust with rustup (https://rustup.rs) and run this again"
    exit 1
fi
# The toolchain of rust-toolchain.toml (the built-in plugins' bytes depend on it).
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! rustup toolchain list | grep -q "^$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)-"; then
    say "installing the Rust toolchain pinned by rust-toolchain.toml"
    rustup toolchain install
fi
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    say "adding the wasm32-wasip2 Rust target"
    rustup target add wasm32-wasip2
fi

if ! python3 -c 'import h5py' 2>/dev/null; then
    say "installing h5py (Python) for the HDF5 compatibility tests"
    python3 -m pip install -q h5py || python3 -m pip install -q --break-system-packages h5py
fi
if ! python3 -c 'import lmdb' 2>/dev/null; then
    say "installing lmdb (Python, the binding Xian's node uses) for the LMDB compatibility tests"
    python3 -m pip install -q lmdb || python3 -m pip install -q --break-system-packages lmdb
fi
# The C plugin example (examples/plugin-c): Debian's clang, lld and wasi-libc
# (with compiler-rt's wasm32 builtins), and from crates.io wit-bindgen's C
# generator and wasm-tools, at the versions examples/plugin-c/build.sh expects.
if ! dpkg -s clang lld wasi-libc libclang-rt-14-dev-wasm32 >/dev/null 2>&1; then
    say "installing clang, lld, wasi-libc and libclang-rt-14-dev-wasm32 (Debian packages, for the C plugin example)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang lld wasi-libc libclang-rt-14-dev-wasm32 >/dev/null
fi
WIT_BINDGEN_VERSION=0.63.0
WASM_TOOLS_VERSION=1.263.0
if ! wit-bindgen --version 2>/dev/null | grep -q "^wit-bindgen-cli $WIT_BINDGEN_VERSION"; then
    say "installing wit-bindgen-cli $WIT_BINDGEN_VERSION (crates.io, the C plugin's bindings)"
    # Only the C generator, and below only what build.sh uses: both build in
    # about 3.5 minutes on 2 cores (about 7 with every feature).
    cargo install --locked --quiet wit-bindgen-cli --version "$WIT_BINDGEN_VERSION" --no-default-features --features c
fi
if ! wasm-tools --version 2>/dev/null | grep -q "^wasm-tools $WASM_TOOLS_VERSION"; then
    say "installing wasm-tools $WASM_TOOLS_VERSION (crates.io, makes the C plugin a component)"
    cargo install --locked --quiet wasm-tools --version "$WASM_TOOLS_VERSION" --no-default-features --features component,strip
fi
# The Python plugin example (examples/plugin-python): componentize-py, which
# bundles CPython for wasm32-wasi and needs nothing else.
COMPONENTIZE_PY_VERSION=0.25.1
if ! componentize-py --version 2>/dev/null | grep -q "$COMPONENTIZE_PY_VERSION"; then
    say "installing componentize-py $COMPONENTIZE_PY_VERSION (PyPI, builds the Python plugin example)"
    python3 -m pip install -q "componentize-py==$COMPONENTIZE_PY_VERSION" || \
        python3 -m pip install -q --break-system-packages "componentize-py==$COMPONENTIZE_PY_VERSION"
fi
scripts/install-cometbft.sh
scripts/install-xian.sh
scripts/install-cometbft-bootstrap.sh
scripts/install-seaweedfs.sh
say "ready"
