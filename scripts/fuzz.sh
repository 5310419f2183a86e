#!/usr/bin/env bash
# Fuzzes every parser of untrusted bytes (fuzz/fuzz_targets: manifest, tx,
# value, batch, and each built-in format's reader) for SECONDS each with
# cargo-fuzz (libFuzzer, nightly Rust; installed here when missing).
#
#   scripts/fuzz.sh SECONDS [TARGET...]     (default: every target)
#   FUZZ_JOBS=2 scripts/fuzz.sh 600         (targets run two at a time)
#
# New inputs go to a scratch corpus (fuzz/work/TARGET); at the end each run's
# finds are merged, minimised, into the committed corpus fuzz/corpus/TARGET,
# which the default test run replays on stable (tests/fuzz/tests/corpora.rs).
# A crash leaves its input in fuzz/artifacts/TARGET/ and fails the run: copy
# it into fuzz/corpus/TARGET/ once fixed, so the test keeps it fixed.
# Prints, per target, the executions, the corpus size and whether it crashed.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:?usage: scripts/fuzz.sh SECONDS [TARGET...]}
shift
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(manifest tx value batch range_proof reader_zstd reader_gzip reader_brotli)
jobs=${FUZZ_JOBS:-1}

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz: installing the nightly Rust toolchain (cargo-fuzz needs it)" >&2
    rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz" >&2
    cargo +nightly install cargo-fuzz --locked
fi
# The fuzzed code is built from the crate versions the project ships.
cp Cargo.lock fuzz/Cargo.lock
cd fuzz
echo "fuzz: building the targets (cargo +nightly fuzz build, no sanitizer: the fuzzed code is safe Rust)" >&2
cargo +nightly fuzz build -s none >&2
mkdir -p work artifacts logs

# The binaries built once above run directly: `cargo fuzz run` would rebuild
# from whatever the tree holds by then.
bin=target/x86_64-unknown-linux-gnu/release

run() {
    local t=$1
    mkdir -p "work/$t" "corpus/$t" "artifacts/$t"
    local status=0
    "$bin/$t" "work/$t" "corpus/$t" \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=20 -print_final_stats=1 \
        -artifact_prefix="artifacts/$t/" >"logs/$t.log" 2>&1 || status=$?
    "$bin/$t" -merge=1 "corpus/$t" "work/$t" >"logs/$t.merge.log" 2>&1 || true
    local execs
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "logs/$t.log" | tail -1)
    local verdict=clean
    [ "$status" != 0 ] && verdict="CRASH (see fuzz/logs/$t.log, fuzz/artifacts/$t/)"
    printf '%-14s %12s executions in %ss, corpus %5s inputs: %s\n' \
        "$t" "${execs:-?}" "$seconds" "$(ls "corpus/$t" | wc -l)" "$verdict"
    [ "$status" = 0 ]
}

failed=0
pids=()
for t in "${targets[@]}"; do
    run "$t" &
    pids+=($!)
    if [ ${#pids[@]} -ge "$jobs" ]; then
        wait "${pids[0]}" || failed=1
        pids=("${pids[@]:1}")
    fi
done
for p in "${pids[@]}"; do wait "$p" || failed=1; done
exit "$failed"
