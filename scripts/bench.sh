#!/usr/bin/env bash
# Benchmarks: starts a real local control plane (built once, then cached) and prints figures.
#
#   scripts/bench.sh          API writes and latency per steady-state check, expiry and recovery
#                             with N = 1, 10, 50 CronJobs; CronJobs created or relabelled into a
#                             held selector -> suspended (SFORG_BENCH_TRIES=50)
#   scripts/bench.sh scale    the release operator process at 0, 1k and 10k orgs (each with its
#                             Secret and 2 CronJobs, created as kubectl apply + Argo CD leave
#                             them): RSS, cold start, the API server's status-write ceiling, a
#                             restart, failing check -> CronJob suspended (SFORG_BENCH_ORGS=N
#                             changes 10k; SFORG_BENCH_HUGE=100000 adds a 100k step, about 25
#                             minutes: each org with its Secret and 1 CronJob, interval 15m;
#                             SFORG_OPERATOR_BIN measures another build, for example the image's
#                             static musl binary from scripts/build-static.sh;
#                             SFORG_BENCH_VARIANTS="label|binary|ENV=V;..." compares builds on the
#                             same orgs, SFORG_BENCH_VARIANTS_COLD=1 clearing statuses first)
#   scripts/bench.sh dashboard the dashboard in headless Chromium at 10 and 1,000 orgs: first
#                             render, and status change -> row updated in the open page
#   scripts/bench.sh notify   failing check -> webhook and SMTP delivery, p50/p99 over 100 orgs;
#                             messages over a simulated week of an org left expired, two restarts
#
# Figures, not pass/fail: run on a quiet machine and read the table.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
what=${1:-expiry}
case $what in
  expiry) cargo build --locked --quiet --example bench_expiry ;;
  scale)
    cargo build --locked --quiet --release --bin sforg-operator
    cargo build --locked --quiet --example bench_scale
    ;;
  dashboard) cargo build --locked --quiet --example bench_dashboard ;;
  notify) cargo build --locked --quiet --example bench_notify ;;
  *) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
work=$(mktemp -d "${TMPDIR:-/tmp}/sforg-bench.XXXXXX")
trap 'scripts/control-plane.sh stop "$work/cp" || true; rm -rf "$work"' EXIT
scripts/control-plane.sh start "$work/cp"
# shellcheck disable=SC1091
source "$work/cp/env"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB RAM, $(uname -sr), control plane $(kube-apiserver --version 2>/dev/null | awk '{print $2}')"
"target/debug/examples/bench_$what"
