#!/usr/bin/env bash
# Builds the C format plugin: bindings from wit/plugin.wit by wit-bindgen's C
# generator, compiled by clang for wasm32-wasi against wasi-libc (a reactor:
# no main), made a component by wasm-tools. The core module imports nothing
# (no WASI calls), so no WASI adapter is needed. scripts/setup.sh installs
# every tool.
#
#   examples/plugin-c/build.sh [OUT.wasm]    (default target/plugin-c/raw-c.wasm)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-target/plugin-c/raw-c.wasm}
work=target/plugin-c
mkdir -p "$work/gen" "$(dirname "$out")"
wit-bindgen c wit --world format-plugin --out-dir "$work/gen" >/dev/null 2>&1 || wit-bindgen c wit --world format-plugin --out-dir "$work/gen"
clang --target=wasm32-wasi -O2 -mexec-model=reactor -Wall -Wextra -Werror \
    -I"$work/gen" -o "$work/raw-c.core.wasm" \
    examples/plugin-c/raw.c "$work/gen/format_plugin.c" "$work/gen/format_plugin_component_type.o"
wasm-tools component new "$work/raw-c.core.wasm" -o "$out"
wasm-tools strip --all "$out" -o "$out"
echo "$out"
