#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build and test Keelson:
# clang + libclang-dev (RocksDB's bindgen), protoc (also vendored by the
# build), and etcd's server and etcdctl (end-to-end tests and benchmarks).
# Sourced by the other scripts; does nothing when everything is present.
set -euo pipefail

keelson_missing=()
command -v clang >/dev/null 2>&1 || keelson_missing+=(clang)
ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || keelson_missing+=(libclang-dev)
command -v protoc >/dev/null 2>&1 || keelson_missing+=(protobuf-compiler)
command -v etcd >/dev/null 2>&1 || keelson_missing+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || keelson_missing+=(etcd-client)

if [ ${#keelson_missing[@]} -gt 0 ]; then
  echo "installing: ${keelson_missing[*]}" >&2
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${keelson_missing[@]}" >/dev/null
fi

# One target dir outside the clone, shared by every checkout and by CI, so
# RocksDB's C++ is compiled once.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/keelson-target}"
