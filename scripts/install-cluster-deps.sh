#!/usr/bin/env bash
# What cluster mode needs on the machine, from Debian's packages, when missing:
#   protoc (protobuf-compiler): etcd-client generates its gRPC code with it when envoy-engine is built
#     with the `cluster` feature (the tests crate enables it);
#   etcd (etcd-server): the real etcd the cluster tests start on free loopback ports (tests/src/etcd.rs).
# On a host running systemd, Debian's etcd-server also starts a system etcd on 2379; the tests do not use it.
set -euo pipefail
missing=()
command -v "${PROTOC:-protoc}" >/dev/null 2>&1 || missing+=(protobuf-compiler)
command -v "${ETCD_BIN:-etcd}" >/dev/null 2>&1 || missing+=(etcd-server)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "[cluster deps] installing Debian's ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
