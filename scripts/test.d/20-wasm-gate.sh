#!/usr/bin/env bash
# envoy-client compiles for wasm32-unknown-unknown without native-only crates.
set -euo pipefail
bash "$(dirname "$0")/../check-wasm-gate.sh"
