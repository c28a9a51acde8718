#!/usr/bin/env bash
# Formatting (one rustfmt.toml at the root) and clippy with warnings as errors, for every crate and test.
set -euo pipefail
cargo fmt --all --check
cargo clippy --workspace --tests --locked -- -D warnings
