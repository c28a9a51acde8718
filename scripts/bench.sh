#!/usr/bin/env bash
# The benchmark suite: builds the engine and envoy-bench in release, starts its own engines
# (separate processes, loopback, temporary data under target/bench/run), runs W1–W8 next to
# their baselines, prints the table and writes target/bench/latest.json (+ latest.md).
#
#   bash scripts/bench.sh                 # full run, ~3–4 min on 2 cores
#   bash scripts/bench.sh --short         # every workload with tiny counts, seconds
#   bash scripts/bench.sh --secs 5 --rounds 5 --with-js   # longer rounds; build the JS package for W8
#   bash scripts/bench.sh stream --stream-bytes 1000000000  # one v5 result stream of 1 GB: rows/s, MB/s, engine peak RSS
#
# Every other flag goes to envoy-bench (`target/release/envoy-bench --help`). Figures only:
# the run never fails because something is slow.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --locked -p envoy-engine -p envoy-bench --bin envoy-engine --bin envoy-bench
if [ "${1:-}" = stream ]; then
  shift
  exec "$CARGO_TARGET_DIR/release/envoy-bench" stream --data-dir "$CARGO_TARGET_DIR/bench/stream-run" "$@"
fi
exec "$CARGO_TARGET_DIR/release/envoy-bench" --json "$CARGO_TARGET_DIR/bench/latest.json" \
  --data-dir "$CARGO_TARGET_DIR/bench/run" "$@"
