#!/usr/bin/env bash
# The wasm gate of envoy-client:
#  1. `cargo check` for wasm32-unknown-unknown with only `wasm-transport` passes;
#  2. the wasm dependency graph holds none of the native-only crates;
#  3. enabling both transport features, or neither, fails with our compile_error text.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
TARGET=wasm32-unknown-unknown
WASM_FLAGS=(-p envoy-client --target "$TARGET" --no-default-features --features wasm-transport)

rustup target add "$TARGET" >/dev/null 2>&1 || rustup target list --installed | grep -qx "$TARGET"

echo "wasm gate: cargo check ${WASM_FLAGS[*]}"
cargo check --locked "${WASM_FLAGS[@]}"

echo "wasm gate: dependency graph"
tree=$(cargo tree --locked "${WASM_FLAGS[@]}" -e normal --prefix none --format '{p}')
forbidden=(tokio-tungstenite tungstenite mio socket2 rusqlite libsqlite3-sys)
bad=0
for crate in "${forbidden[@]}"; do
  if grep -qE "^${crate} v" <<<"$tree"; then
    echo "  FORBIDDEN in the wasm graph: $crate" >&2
    cargo tree --locked "${WASM_FLAGS[@]}" -e normal -i "$crate" >&2 || true
    bad=1
  fi
done
if grep -qE '^tokio v' <<<"$tree"; then
  echo "  note: tokio is in the wasm graph (allowed only without net/rt; check)" >&2
fi
[ "$bad" = 0 ] || { echo "wasm gate: FAILED (forbidden crates)" >&2; exit 1; }
echo "  ok: none of ${forbidden[*]}"

echo "wasm gate: both features must fail"
out=$(cargo check --locked -p envoy-client --features native-transport,wasm-transport 2>&1) && {
  echo "wasm gate: FAILED: a build with both transports compiled" >&2; exit 1; }
grep -q "features \`native-transport\` and \`wasm-transport\` are mutually exclusive" <<<"$out" || {
  echo "$out" | tail -20 >&2; echo "wasm gate: FAILED: both-features error text missing" >&2; exit 1; }
echo "  ok: mutually exclusive error"

echo "wasm gate: no feature must fail"
out=$(cargo check --locked -p envoy-client --no-default-features 2>&1) && {
  echo "wasm gate: FAILED: a build without a transport compiled" >&2; exit 1; }
grep -q "enable exactly one transport feature" <<<"$out" || {
  echo "$out" | tail -20 >&2; echo "wasm gate: FAILED: no-feature error text missing" >&2; exit 1; }
echo "  ok: exactly-one error"
echo "wasm gate: passed"
