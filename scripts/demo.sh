#!/usr/bin/env bash
# The main job: sets the machine up, builds statesnap, and runs the embedded
# demo (generate a state, snapshot it with each built-in plugin, verify,
# restore, check the restored state, print sizes and speeds).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo run --release --quiet -- demo "$@"
