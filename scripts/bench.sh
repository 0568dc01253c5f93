#!/usr/bin/env bash
# Benchmarks: starts a real local control plane (built once, then cached) and prints the API
# writes and latencies of steady-state checks, expiries and recoveries with N CronJobs.
# Figures, not pass/fail: run it on a quiet machine and read the table.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo build --locked --quiet --example bench_expiry
work=$(mktemp -d "${TMPDIR:-/tmp}/sforg-bench.XXXXXX")
trap 'scripts/control-plane.sh stop "$work/cp" || true; rm -rf "$work"' EXIT
scripts/control-plane.sh start "$work/cp"
# shellcheck disable=SC1091
source "$work/cp/env"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr)"
target/debug/examples/bench_expiry
