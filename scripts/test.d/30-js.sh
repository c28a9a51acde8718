#!/usr/bin/env bash
# The JS package (rivetkit-wasm): builds it from the checkout (installing the wasm target,
# wasm-bindgen-cli and its npm packages on first use), type-checks it, and runs the conformance
# suite against a real engine in Node 20, Deno and workerd, plus the crawler Worker in workerd.
set -euo pipefail
bash rivetkit-wasm/scripts/test.sh
