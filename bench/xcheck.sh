#!/usr/bin/env bash
# Cross-checks `keelson bench run` against clients that share none of its
# code, on servers started here (127.0.0.1 only):
#   - by default, xcheck (bench/examples/xcheck.rs): the etcd-client crate
#     with its own work queue, clock and exact percentiles, on the bench's
#     put, range-l and range-s workloads;
#   - with --perf LOAD, `etcdctl check perf --load LOAD` (etcd's own Go
#     client: 60 s of puts at a fixed rate, 256-byte keys, 1 KiB values,
#     one connection per client) beside `keelson bench run` given the same
#     shape.
# For each repeat, a fresh etcd and then a fresh `keelson server` (the same
# etcd flags), each loaded by both clients in turn, the order swapped every
# repeat. Prints every table (and keeps them in --out); docs/benchmarks.md
# reads the medians off them.
#
#   bench/xcheck.sh [--repeats N] [--perf s|m|l|xl] [--out DIR]
#
# --out defaults to $TMPDIR/keelson-xcheck; KEELSON=PATH and XCHECK=PATH
# pick other builds (copy them first when others rebuild the target dir).
# Needs etcd and etcdctl on PATH and a release build of keelson and of the
# example (`cargo build --release --bin keelson` and
# `cargo build --release -p keelson-bench --example xcheck`).
set -euo pipefail
cd "$(dirname "$0")/.."

repeats=3
perf=""
out=${TMPDIR:-/tmp}/keelson-xcheck
while [ $# -gt 0 ]; do
  case "$1" in
    --repeats) repeats=$2; shift 2 ;;
    --perf) perf=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

target=${CARGO_TARGET_DIR:-$HOME/.cache/keelson-target}
keelson=${KEELSON:-$target/release/keelson}
xcheck=${XCHECK:-$target/release/examples/xcheck}
for bin in "$keelson" "$xcheck"; do
  [ -x "$bin" ] || { echo "$bin not built" >&2; exit 1; }
done
command -v etcd >/dev/null || { echo "etcd not on PATH: apt-get install etcd-server" >&2; exit 1; }

mkdir -p "$out"
base=$(mktemp -d -p "$PWD" .xcheck.XXXXXX)
pid=""
stop() {
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=""
  fi
}
trap 'stop; rm -rf "$base"' EXIT
trap 'exit 130' INT TERM

# A free loopback port.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() { # system
  local system=$1 cport pport
  cport=$(free_port)
  pport=$(free_port)
  endpoint=http://127.0.0.1:$cport
  local flags=(--name m1 --data-dir "$base/$system.etcd"
    --listen-client-urls "$endpoint" --advertise-client-urls "$endpoint"
    --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport"
    --initial-cluster "m1=http://127.0.0.1:$pport" --initial-cluster-state new
    --initial-cluster-token xcheck --log-level warn)
  if [ "$system" = etcd ]; then
    etcd "${flags[@]}" >"$base/$system.log" 2>&1 &
  else
    "$keelson" server "${flags[@]}" >"$base/$system.log" 2>&1 &
  fi
  pid=$!
  for _ in $(seq 100); do
    if curl -sf "$endpoint/health" | grep -q true; then return 0; fi
    sleep 0.1
  done
  echo "$system did not become healthy:" >&2
  tail "$base/$system.log" >&2
  exit 1
}

bench_run() {
  if [ -n "$perf" ]; then
    # check perf's shape: its rate and clients (one connection each), 60 s,
    # 256-byte keys and 1 KiB values, keys new at random.
    local rate clients
    case "$perf" in
      s) rate=150 clients=50 ;;
      m) rate=1000 clients=200 ;;
      l) rate=8000 clients=500 ;;
      xl) rate=15000 clients=1000 ;;
      *) echo "unknown load $perf" >&2; exit 2 ;;
    esac
    "$keelson" bench run --endpoints "$endpoint" --pids "$pid" --workloads put --rate "$rate" \
      --clients "$clients" --conns "$clients" --total $((rate * 60)) --key-size 256 --val-size 1024 \
      --key-space-size 10000000 --json "${f%.txt}.json" 2>/dev/null
  else
    "$keelson" bench run --endpoints "$endpoint" --pids "$pid" --workloads put,range-l,range-s \
      --json "${f%.txt}.json" 2>/dev/null
  fi
}
xcheck_run() {
  "$xcheck" --endpoint "$endpoint" --pid "$pid"
}
etcdctl_run() {
  # Its verdict lines (it exits 1 on FAIL, which is a result here), and the
  # server's CPU over the run, from /proc as the bench reads it.
  local cpu0 cpu1
  cpu0=$(cpu_ticks)
  ETCDCTL_API=3 etcdctl --endpoints "$endpoint" check perf --load "$perf" 2>&1 |
    tr '\r' '\n' | grep -E 'PASS|FAIL|Slowest|Stddev|Error' || true
  cpu1=$(cpu_ticks)
  echo "server cpu: $(( (cpu1 - cpu0) / 100 )) s"
}
cpu_ticks() {
  sed 's/.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}'
}

echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$repeats"); do
  for system in etcd keelson; do
    start "$system"
    other=xcheck
    [ -z "$perf" ] || other=etcdctl
    if [ $((r % 2)) -eq 1 ]; then order="bench $other"; else order="$other bench"; fi
    for client in $order; do
      f="$out/$system-$r-$client${perf:+-perf-$perf}.txt"
      echo "== repeat $r, $system, $client${perf:+ (check perf --load $perf)} (load $(cut -d' ' -f1 /proc/loadavg))"
      "${client}_run" | tee "$f"
    done
    stop
    rm -rf "${base:?}/$system.etcd"
  done
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
