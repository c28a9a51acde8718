#!/usr/bin/env bash
# Seeds each fuzz target's corpus with the golden vectors of its version (raw
# bytes from the hex files), so libFuzzer starts from valid frames.
set -euo pipefail
cd "$(dirname "$0")"
for v in 1 2 3 4 5 6; do
  mkdir -p "corpus/fuzz_v$v"
  for f in ../tests/vectors/v$v/*/*.hex; do
    top=$(basename "$(dirname "$f")")
    perl -ne 'chomp; print pack("H*", $_)' "$f" > "corpus/fuzz_v$v/${top}_$(basename "$f" .hex)"
  done
done
echo "seeded: $(ls corpus/*/ | grep -vc '^corpus\|^$') files"
