#!/usr/bin/env bash
# The test command: sets the machine up, then checks formatting and lints and
# runs every test of the workspace (host and plugins).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --release -- -D warnings
cargo test --workspace --release "$@"
