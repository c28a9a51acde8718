#!/usr/bin/env bash
# wasm-pack: builds the crate with `wasm-pack build rivetkit-wasm --target web|nodejs|deno` into a
# temp dir and checks that each yields the bindings scripts/build.sh ships in dist/ (the same
# classes and members in the wasm-bindgen .d.ts), and that the nodejs output loads its .wasm in
# Node. Installs wasm-pack when missing (`cargo install wasm-pack --locked`, ≈ 3 min once);
# RIVETKIT_SKIP_WASM_PACK=1 skips the whole check (the package itself never needs wasm-pack).
# Its cargo builds use their own target dir (<target>/wasm-pack): wasm-pack builds with the
# workspace's release profile, and sharing the dir would make each tool rebuild the other's .wasm.
# Needs dist/ (scripts/build.sh) for the comparison.
set -euo pipefail
cd "$(dirname "$0")/.."
repo_dir=$(cd .. && pwd)
export PATH="$HOME/.cargo/bin:$PATH"
if [ "${RIVETKIT_SKIP_WASM_PACK:-0}" = 1 ]; then
  echo "wasm-pack: check skipped (RIVETKIT_SKIP_WASM_PACK=1)"
  exit 0
fi
if ! command -v wasm-pack >/dev/null 2>&1; then
  echo "wasm-pack: installing (cargo install wasm-pack --locked; ≈ 3 min once)"
  env -u CARGO_TARGET_DIR cargo install wasm-pack --locked
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# The classes and their members, as wasm-bindgen declares them (order-independent).
api() { sed -n '/^export class/,/^}/p' "$1" | grep -E '^export class|^ +(static |readonly )?[a-zA-Z_]+[(:]' | sed 's/(.*//; s/:.*//; s/^ *//' | sort; }
api dist/rivetkit_wasm.d.ts > "$out/want"
[ -s "$out/want" ] || { echo "wasm-pack: dist/rivetkit_wasm.d.ts has no classes (run scripts/build.sh)" >&2; exit 1; }
for target in web nodejs deno; do
  (cd "$repo_dir" && CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo_dir/target}/wasm-pack" \
    wasm-pack build rivetkit-wasm --release --target "$target" --out-dir "$out/$target" --out-name rivetkit_wasm >"$out/$target.log" 2>&1) \
    || { cat "$out/$target.log" >&2; echo "wasm-pack build --target $target failed" >&2; exit 1; }
  api "$out/$target/rivetkit_wasm.d.ts" > "$out/got-$target"
  if ! diff -u "$out/want" "$out/got-$target"; then
    echo "wasm-pack --target $target: bindings differ from dist/" >&2
    exit 1
  fi
  echo "wasm-pack --target $target: same bindings as dist/ ($(wc -l < "$out/want") declarations), .wasm $(stat -c %s "$out/$target/rivetkit_wasm_bg.wasm") bytes (no wasm-opt)"
done
node -e 'const m = require(process.argv[1]); if (typeof m.RawEnvoy?.connect !== "function") throw new Error("no RawEnvoy.connect"); console.log("wasm-pack --target nodejs: loads in Node, RawEnvoy.connect present")' "$out/nodejs/rivetkit_wasm.js"
