#!/usr/bin/env bash
# Everything rivetkit-wasm tests, from a clean checkout:
#   1. native unit tests of the value/error rules (cargo test -p rivetkit-wasm),
#   2. the package build (scripts/build.sh: installs its tools on first use), and the wasm-pack
#      builds (web, nodejs, deno) compared with it (scripts/wasm-pack-check.sh; installs wasm-pack),
#   3. tests/run.mjs: `npm pack` installed into an empty temp project (metadata, exports, the
#      shipped .wasm's gzip size, a type check importing it by name), then the conformance suite
#      against real engines in Node 20, Deno, workerd (an esbuild bundle) and headless Chromium
#      (a dedicated Web Worker), workerd serving several requests (lifetimes, init), the crawler.
# Installs Debian's chromium when missing. Prints the .wasm size and the time of each host.
set -euo pipefail
cd "$(dirname "$0")/.."
repo_dir=$(cd .. && pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo_dir/target}"

echo "[rivetkit-wasm test] native unit tests"
cargo test --locked -p rivetkit-wasm

echo "[rivetkit-wasm test] build the package"
bash scripts/build.sh

echo "[rivetkit-wasm test] wasm-pack builds"
bash scripts/wasm-pack-check.sh

if ! command -v "${CHROMIUM_BIN:-/usr/bin/chromium}" >/dev/null 2>&1; then
  echo "[rivetkit-wasm test] installing Debian's chromium (the browser host)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

echo "[rivetkit-wasm test] engine binary"
cargo build --locked -p envoy-engine
engine_bin="$CARGO_TARGET_DIR/debug/envoy-engine"

echo "[rivetkit-wasm test] package + conformance (node, deno, workerd, chromium) + lifetimes + crawler"
# --experimental-websocket: Node 20 has no global WebSocket without it (the driver itself may
# read rows back through the package).
node --experimental-websocket tests/run.mjs --engine-bin "$engine_bin" "$@"
