#!/usr/bin/env bash
# Prints the package.json of one built target directory (pkg/<target>/): $1 = web | deno | nodejs.
set -euo pipefail
target=$1
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$(dirname "$0")/../../Cargo.toml" | head -1)
case "$target" in
  nodejs) main=index.mjs types=index.d.mts files='"index.mjs", "index.d.mts", "envoy.mjs", "envoy.d.mts", "errors.mjs", "errors.d.mts", "rivetkit_wasm.js", "rivetkit_wasm.d.ts", "rivetkit_wasm_bg.wasm", "rivetkit_wasm_bg.wasm.d.ts"' ;;
  web|deno) main=index.js types=index.d.ts files='"index.js", "index.d.ts", "envoy.js", "envoy.d.ts", "errors.js", "errors.d.ts", "rivetkit_wasm.js", "rivetkit_wasm.d.ts", "rivetkit_wasm_bg.wasm", "rivetkit_wasm_bg.wasm.d.ts"' ;;
  *) echo "unknown target $target" >&2; exit 1 ;;
esac
# nodejs: the wasm-bindgen glue is CommonJS, so the package stays "commonjs" and our ESM layer uses .mjs.
type=module
[ "$target" = nodejs ] && type=commonjs
cat <<JSON
{
  "name": "rivetkit-wasm",
  "version": "${version:-0.1.0}",
  "description": "Remote SQLite and KV for actors, over the envoy protocol (build for target: $target)",
  "license": "Apache-2.0",
  "type": "$type",
  "main": "./$main",
  "types": "./$types",
  "exports": { ".": { "types": "./$types", "default": "./$main" } },
  "files": [$files],
  "sideEffects": ["./rivetkit_wasm.js"]
}
JSON
