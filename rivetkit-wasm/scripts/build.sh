#!/usr/bin/env bash
# Builds the rivetkit-wasm npm package into rivetkit-wasm/dist/ (what `npm pack` ships, with
# package.json and README.md), installing what it needs from the registries on first use:
#   - the wasm32-unknown-unknown target (rustup),
#   - wasm-bindgen-cli at EXACTLY the version the crate pins (cargo install, ~5 min once;
#     no --locked: its lockfile pins a webpki-roots release the registry lacks),
#   - npm packages pinned in package.json/package-lock.json (typescript, binaryen's wasm-opt,
#     plus workerd and deno for the tests).
# We drive cargo + wasm-bindgen directly instead of wasm-pack: wasm-pack would add a ~3 min
# install and a network fallback, and does nothing here that these few lines do not.
#
# Size: the release profile is tuned for size through CARGO_PROFILE_RELEASE_* variables (a
# workspace member cannot set profiles, and these apply to this cargo invocation only), then
# wasm-opt -Os --converge from npm binaryen (never Debian's binaryen v108, whose output fails to load).
# Prints the .wasm size raw and gzip.
#
# Env: RIVETKIT_WASM_OPT_LEVEL (default z), RIVETKIT_WASM_SKIP_WASM_OPT=1 to skip wasm-opt.
set -euo pipefail
cd "$(dirname "$0")/.."
crate_dir=$PWD
repo_dir=$(cd .. && pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo_dir/target}"

log() { echo "[rivetkit-wasm build] $*"; }

# ---- toolchain -------------------------------------------------------------------------------
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  log "installing rustup target wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown
fi

bindgen_version=$(sed -n 's/^wasm-bindgen = "=\([0-9.]*\)".*/\1/p' Cargo.toml)
[ -n "$bindgen_version" ] || { echo "Cargo.toml must pin wasm-bindgen with =X.Y.Z" >&2; exit 1; }
have_bindgen=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
if [ "$have_bindgen" != "$bindgen_version" ]; then
  log "installing wasm-bindgen-cli $bindgen_version (have: ${have_bindgen:-none}); takes ~5 min once"
  # Its own target dir: the CLI's dependencies have nothing to share with the workspace's.
  env -u CARGO_TARGET_DIR cargo install wasm-bindgen-cli --version "$bindgen_version"
fi
# cargo install puts it in ~/.cargo/bin, which may not be on PATH in CI shells.
export PATH="$HOME/.cargo/bin:$PATH"

if [ ! -x node_modules/.bin/tsc ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  log "installing npm packages (package-lock.json)"
  # `npm install`, not `npm ci`: the registry reachable here lacks the other platforms' optional
  # binaries of deno/workerd, so the lock cannot list them and `npm ci` refuses it as out of
  # sync. `npm install` follows the lock for every entry it has and leaves it unchanged.
  npm install --no-audit --no-fund
fi

# ---- compile ---------------------------------------------------------------------------------
opt_level="${RIVETKIT_WASM_OPT_LEVEL:-z}"
log "cargo build (release, opt-level=$opt_level, lto, codegen-units=1, panic=abort)"
CARGO_PROFILE_RELEASE_OPT_LEVEL="$opt_level" \
CARGO_PROFILE_RELEASE_LTO=true \
CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 \
CARGO_PROFILE_RELEASE_PANIC=abort \
CARGO_PROFILE_RELEASE_DEBUG=false \
  cargo build --release --locked -p rivetkit-wasm --target wasm32-unknown-unknown
wasm_in="$CARGO_TARGET_DIR/wasm32-unknown-unknown/release/rivetkit_wasm.wasm"

wasm_opt=""
if [ "${RIVETKIT_WASM_SKIP_WASM_OPT:-0}" != 1 ] && [ -x node_modules/.bin/wasm-opt ]; then
  wasm_opt="$crate_dir/node_modules/.bin/wasm-opt"
fi

# One wasm-bindgen glue (`--target web`: plain ESM, the .wasm loaded by whoever imports it) and
# one .wasm serve every host; small per-host entries (js/node.ts, deno.ts, workerd.ts, index.ts)
# load it the host's way, and package.json's `exports` conditions pick the entry.
out=dist
rm -rf "$out" pkg
mkdir -p "$out"
wasm-bindgen --target web --out-dir "$out" --out-name rivetkit_wasm "$wasm_in"
if [ -n "$wasm_opt" ]; then
  # Features the Rust wasm32 target emits by default (and every host we test supports).
  # -Os --converge, not -Oz: measured smaller after gzip (116 621 vs 117 359 B when chosen;
  # -Oz gives fewer raw bytes, but they compress worse).
  "$wasm_opt" -Os --converge --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
    --enable-mutable-globals --enable-reference-types --enable-multivalue --strip-producers --strip-target-features \
    "$out/rivetkit_wasm_bg.wasm" -o "$out/rivetkit_wasm_bg.wasm"
fi
# wasm-bindgen's rivetkit_wasm_bg.wasm.d.ts describes the raw exports for bundlers that link the
# .wasm as ESM; this package's `.wasm` export is a compiled WebAssembly.Module, typed as such.
cp js/rivetkit_wasm_bg.wasm.d.ts "$out/"
# The typed JS layer, compiled next to the glue so it type-checks against the very .d.ts
# wasm-bindgen generated.
sources=(index envoy errors state node deno workerd v5)
for name in "${sources[@]}"; do cp "js/$name.ts" "$out/$name.ts"; done
node_modules/.bin/tsc --strict --declaration --target es2022 --module es2022 --moduleResolution bundler \
  --lib esnext,dom --skipLibCheck false --rootDir "$out" --outDir "$out" \
  js/ambient.d.ts "${sources[@]/#/$out/}" 2>&1 | sed "s#^#tsc: #" ; [ "${PIPESTATUS[0]}" = 0 ]
for name in "${sources[@]}"; do rm -f "$out/$name.ts"; done
rm -f "$out/.gitignore" "$out/package.json"

raw=$(stat -c %s "$out/rivetkit_wasm_bg.wasm")
gz=$(gzip -9 -c "$out/rivetkit_wasm_bg.wasm" | wc -c)
log "built dist/ (wasm-opt: ${wasm_opt:-not found, skipped})"
echo "rivetkit_wasm_bg.wasm size: ${raw} bytes raw, ${gz} bytes gzip -9"
