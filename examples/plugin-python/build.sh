#!/usr/bin/env bash
# Builds the Python format plugin: componentize-py bundles CPython (built for
# wasm32-wasi), the standard-library modules app.py imports and app.py itself
# into one component, initialised ahead of time (the interpreter's heap after
# `import app` is stored in the component, so a call does not start Python).
# scripts/setup.sh installs componentize-py; nothing here needs the network.
#
#   examples/plugin-python/build.sh [OUT.wasm]    (default target/plugin-python/jsonl-py.wasm)
#
# The bytes are not reproducible: two builds of the same app.py differ
# (componentize-py issue #247: the pre-initialised heap depends on the build's
# randomness and allocator). A network approves one build by its SHA-256, so
# publish the built .wasm itself; its behaviour, not its bytes, is what a
# rebuild can confirm (`statesnap plugin check` on both).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-target/plugin-python/jsonl-py.wasm}
mkdir -p "$(dirname "$out")"
# Bytecode caches would land in the source tree; the component holds its own.
export PYTHONDONTWRITEBYTECODE=1
componentize-py -d wit -w format-plugin componentize -p examples/plugin-python app -o "$out" >/dev/null
echo "$out"
