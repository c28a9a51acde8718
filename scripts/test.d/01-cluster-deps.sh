#!/usr/bin/env bash
# protoc and etcd for cluster mode (envoy-engine's `cluster` feature and tests/tests/cluster_directory.rs),
# installed before the first step that builds the workspace.
set -euo pipefail
bash scripts/install-cluster-deps.sh
