#!/usr/bin/env bash
# The benchmark suite's short form: every workload (W1–W8 and the baselines) runs with tiny
# counts against debug-built engines, and the JSON it writes is checked to be complete.
# Asserts nothing about speed. W8 runs if the JS package is already built (30-js builds it).
# Then the v5 result-stream bench in its default small form (8 MB, well under a second).
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --locked -p envoy-engine -p envoy-bench --bin envoy-engine --bin envoy-bench
bench="$CARGO_TARGET_DIR/debug/envoy-bench"
out="$CARGO_TARGET_DIR/bench/smoke.json"
"$bench" --short --json "$out" --data-dir "$CARGO_TARGET_DIR/bench/smoke-run" > /dev/null
"$bench" check-json "$out"
"$bench" stream --data-dir "$CARGO_TARGET_DIR/bench/smoke-stream" > /dev/null
