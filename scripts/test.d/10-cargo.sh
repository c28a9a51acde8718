#!/usr/bin/env bash
# Rust tests of every crate (native transport).
set -euo pipefail
cargo test --workspace --locked
