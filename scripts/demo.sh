#!/usr/bin/env bash
# The main job: sets the machine up (Debian packages, the wasm target,
# CometBFT, h5py), builds statesnap, and runs the network demo: three
# CometBFT validators running statesnap under load vote in a new snapshot
# format (no restart), then a brand-new node without built-in plugins joins by
# state sync from a snapshot in that format and is checked against the
# validators' app hash.
# Options go to `statesnap demo-network` (--keys N, --load-seconds S, --dir DIR --keep, …).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --quiet
exec target/release/statesnap demo-network "$@"
