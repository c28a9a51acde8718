#!/usr/bin/env bash
# Builds the rivetkit-wasm JS package for the `web`, `deno` and `nodejs` targets into
# rivetkit-wasm/pkg/<target>/, installing what it needs from the registries on first use:
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
# wasm-opt -Oz from npm binaryen (never Debian's binaryen v108, whose output fails to load).
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

for target in web deno nodejs; do
  out="pkg/$target"
  rm -rf "$out"
  mkdir -p "$out"
  wasm-bindgen --target "$target" --out-dir "$out" --out-name rivetkit_wasm "$wasm_in"
  if [ -n "$wasm_opt" ]; then
    # Features the Rust wasm32 target emits by default (and every host we test supports).
    "$wasm_opt" -Oz --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
      --enable-mutable-globals --enable-reference-types --enable-multivalue \
      "$out/rivetkit_wasm_bg.wasm" -o "$out/rivetkit_wasm_bg.wasm"
  fi
  # The typed JS layer (js/*.ts), compiled next to this target's glue so it type-checks against
  # the very .d.ts wasm-bindgen generated for it. nodejs: the glue is CommonJS, so our ESM layer
  # is emitted as .mjs (sources copied as .mts with their relative imports renamed).
  ext=ts
  [ "$target" = nodejs ] && ext=mts
  index_src=js/index.ts
  [ "$target" = web ] && index_src=js/index.web.ts
  for pair in "$index_src:index" "js/envoy.ts:envoy" "js/errors.ts:errors"; do
    src=${pair%%:*} name=${pair##*:}
    if [ "$ext" = mts ]; then
      sed -e 's#"\./envoy\.js"#"./envoy.mjs"#; s#"\./errors\.js"#"./errors.mjs"#' "$src" > "$out/$name.mts"
    else
      cp "$src" "$out/$name.ts"
    fi
  done
  node_modules/.bin/tsc --strict --declaration --target es2022 --module es2022 --moduleResolution bundler \
    --lib esnext,dom --skipLibCheck false --rootDir "$out" --outDir "$out" \
    "$out/index.$ext" "$out/envoy.$ext" "$out/errors.$ext"
  rm -f "$out/index.$ext" "$out/envoy.$ext" "$out/errors.$ext" "$out/.gitignore"
  bash scripts/package-json.sh "$target" > "$out/package.json"
done

raw=$(stat -c %s pkg/web/rivetkit_wasm_bg.wasm)
gz=$(gzip -9 -c pkg/web/rivetkit_wasm_bg.wasm | wc -c)
log "built pkg/{web,deno,nodejs} (wasm-opt: ${wasm_opt:-not found, skipped})"
echo "rivetkit_wasm_bg.wasm size: ${raw} bytes raw, ${gz} bytes gzip -9"
