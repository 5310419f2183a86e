#!/usr/bin/env bash
# Checks that the release binary a validator runs carries none of the test
# hooks (feature `test-hooks`): no hidden `--test-*` flag on `statesnap start`
# or `statesnap proxy`, and none of the forging code's log lines or panics in the binary. Builds
# target/release/statesnap with default features (the test command then
# rebuilds it with the hooks for the tests).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p statesnap-cli
bin=target/release/statesnap
fail() { echo "check-release-build: $*" >&2; exit 1; }
for command in start proxy; do
    help=$("$bin" "$command" --help)
    if grep -q -- '--test-' <<<"$help"; then
        fail "statesnap $command --help lists a --test-* flag in a release build"
    fi
done
refused=$("$bin" start --home /nonexistent --test-forge-states 2>&1 || true)
if ! grep -q "unexpected argument '--test-forge-states'" <<<"$refused"; then
    fail "a release build accepts --test-forge-states: $refused"
fi
refused=$("$bin" proxy --listen unix:///nonexistent/a --app unix:///nonexistent/b --test-forge-states 2>&1 || true)
if ! grep -q "unexpected argument '--test-forge-states'" <<<"$refused"; then
    fail "a release build of the proxy accepts --test-forge-states: $refused"
fi
# Strings only the test hooks have (node/test_hooks): their log lines and panic.
for s in "TEST MODE" "test hook: the snapshot encoder panics" "activation_height\":1"; do
    if grep -qaF "$s" "$bin"; then
        fail "the release binary contains \"$s\" from the test hooks"
    fi
done
# And no symbol of the module (node::test_hooks, with ForgedState).
if nm -C "$bin" | grep -q 'node::test_hooks'; then
    fail "the release binary contains symbols of statesnap::node::test_hooks"
fi
echo "check-release-build: $bin has no test hooks (no --test-* flag on start or proxy, no forging code)"
