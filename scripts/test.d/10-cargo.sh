#!/usr/bin/env bash
# Rust tests of every crate (native transport).
set -euo pipefail
# The cluster tests fail instead of skipping when etcd is missing (01-cluster-deps.sh installed it).
export ENVOY_REQUIRE_ETCD=1
cargo test --workspace --locked
