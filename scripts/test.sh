#!/usr/bin/env bash
# The test command: sets the machine up, then checks formatting and lints,
# checks that a release build carries no test hooks, and runs every test of
# the workspace (host, plugins, examples). Every test binary runs even when
# one fails (--no-fail-fast); the last line sums them all:
# "tests: N passed, M failed (T test targets ran; F failed or did not build)".
# Arguments go to `cargo test` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The built-in plugins the host embeds (plugins/dist/) are what their source
# builds, byte for byte, with the pinned toolchain.
scripts/build-plugins.sh --check
cargo fmt --all -- --check
# The faults a node can be told to commit (forging, corrupting, stalling) are
# compiled only with the `test-hooks` features, which the tests need and a
# release build never has.
hooks=(--features statesnap/test-hooks,statesnap-cli/test-hooks)
cargo clippy --workspace --all-targets --release -- -D warnings
cargo clippy --workspace --all-targets --release "${hooks[@]}" -- -D warnings
# The benchmark's native baseline is behind a feature the default build leaves off.
cargo clippy -p statesnap-cli --features native-codecs --release -- -D warnings
scripts/check-release-build.sh

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --release --no-fail-fast "${hooks[@]}" "$@" 2>&1 | tee "$log" || status=$?
# The summary (grep finding nothing is no error here).
sum() { { grep -E '^test result:' "$log" || true; } | { grep -oE "[0-9]+ $1" || true; } | awk '{s += $1} END {print s + 0}'; }
binaries=$({ grep -E '^test result:' "$log" || true; } | wc -l)
broken=$({ grep -oE 'error: [0-9]+ targets? failed' "$log" || true; } | { grep -oE '[0-9]+' || true; } | tail -1)
if [ -z "$broken" ] && grep -qE '^error(\[|:)' "$log"; then broken=1; fi
echo
echo "tests: $(sum passed) passed, $(sum failed) failed ($binaries test targets ran; ${broken:-0} failed or did not build)"
exit "$status"
