#!/usr/bin/env bash
# Runs every test of the project: the README's test command.
# Each step lives in scripts/test.d/NN-name.sh and runs in order; a step that
# fails stops the run. Steps install what they need (targets, tools, npm).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
start=$(date +%s)
for step in scripts/test.d/*.sh; do
  echo "=== ${step#scripts/test.d/} ($(( $(date +%s) - start ))s)"
  bash "$step"
done
echo "=== all tests passed in $(( $(date +%s) - start ))s"
