#!/usr/bin/env bash
# The test command: sets the machine up, then checks formatting and lints and
# runs every test of the workspace (host, plugins, examples). Ends with one
# summary line "tests: N passed, M failed".
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The built-in plugins the host embeds (plugins/dist/) are what their source
# builds, byte for byte, with the pinned toolchain.
scripts/build-plugins.sh --check
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --release -- -D warnings
# The benchmark's native baseline is behind a feature the default build leaves off.
cargo clippy -p statesnap-cli --features native-codecs --release -- -D warnings
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --release "$@" 2>&1 | tee "$log" || status=$?
passed=$(grep -o '[0-9]* passed' "$log" | awk '{s += $1} END {print s + 0}')
failed=$(grep -o '[0-9]* failed' "$log" | awk '{s += $1} END {print s + 0}')
echo
echo "tests: $passed passed, $failed failed"
exit "$status"
