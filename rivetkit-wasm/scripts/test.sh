#!/usr/bin/env bash
# Everything rivetkit-wasm tests, from a clean checkout:
#   1. native unit tests of the value/error rules (cargo test -p rivetkit-wasm),
#   2. the package build (scripts/build.sh: installs its tools on first use),
#   3. the TypeScript check of a typed usage file against the generated .d.ts,
#   4. the conformance suite in Node 20, Deno and workerd against a real engine, and the crawler
#      example in workerd (tests/run.mjs starts the engines, proxy and fixture server).
# Prints the .wasm size and the time the suite takes in each host.
set -euo pipefail
cd "$(dirname "$0")/.."
repo_dir=$(cd .. && pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo_dir/target}"

echo "[rivetkit-wasm test] native unit tests"
cargo test --locked -p rivetkit-wasm

echo "[rivetkit-wasm test] build the package"
bash scripts/build.sh

echo "[rivetkit-wasm test] type check"
bash scripts/check-types.sh

echo "[rivetkit-wasm test] engine binary"
cargo build --locked -p envoy-engine
engine_bin="$CARGO_TARGET_DIR/debug/envoy-engine"

echo "[rivetkit-wasm test] conformance (node, deno, workerd) + crawler (workerd)"
# --experimental-websocket: Node 20 has no global WebSocket without it (the driver itself may
# read rows back through the package).
node --experimental-websocket tests/run.mjs --engine-bin "$engine_bin" "$@"
