#!/usr/bin/env bash
# Runs every test: formatting, clippy, unit tests, and the integration tests against a real
# etcd + kube-apiserver started here (built from the Go modules on first use, then cached).
# The node tests (tests/node.rs) get a second control plane with a real node (kubelet +
# containerd, root needed) and the images from scripts/build-images.sh; they run next to the
# other tests, and afterwards the machine must be as it was before the node started.
# Extra arguments go to `cargo test` (for example a test name filter).
# SFORG_SKIP_NODE_TESTS=1 leaves the node out (for machines without root; CI never sets it).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

for tool in go cargo openssl curl python3; do
  command -v "$tool" >/dev/null || { echo "error: $tool is required (see README.md)" >&2; exit 1; }
done
if command -v rustup >/dev/null; then
  rustup component add rustfmt clippy >/dev/null 2>&1 || true
fi

# Browser tests (tests/*_browser.rs) drive Debian's Chromium through chromedriver.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  echo "installing Debian's chromium and chromium-driver for the browser tests" >&2
  sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null && sudo="sudo -n"
  fi
  apt() { $sudo env DEBIAN_FRONTEND=noninteractive apt-get -q "$@" >/dev/null; }
  install_chromium() { apt install -y --no-install-recommends chromium chromium-driver; }
  if ! command -v apt-get >/dev/null || ! { install_chromium || { apt update && install_chromium; }; }; then
    echo "error: the browser tests need Chromium and ChromeDriver (/usr/bin/chromium and" >&2
    echo "/usr/bin/chromedriver), and installing the Debian packages chromium and chromium-driver" >&2
    echo "with apt-get failed; install them as root and run scripts/test.sh again" >&2
    exit 1
  fi
fi

# Notification tests (tests/notify.rs) speak real SMTP to aiosmtpd (Debian's python3-aiosmtpd).
if ! /usr/bin/python3 -c 'import aiosmtpd' 2>/dev/null; then
  echo "installing Debian's python3-aiosmtpd for the notification tests" >&2
  sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null && sudo="sudo -n"
  fi
  apt() { $sudo env DEBIAN_FRONTEND=noninteractive apt-get -q "$@" >/dev/null; }
  install_smtpd() { apt install -y --no-install-recommends python3-aiosmtpd; }
  if ! command -v apt-get >/dev/null || ! { install_smtpd || { apt update && install_smtpd; }; }; then
    echo "error: the notification tests need aiosmtpd for /usr/bin/python3; installing the" >&2
    echo "Debian package python3-aiosmtpd with apt-get failed; install it as root and run" >&2
    echo "scripts/test.sh again" >&2
    exit 1
  fi
fi

started=$(date +%s)
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# Dependency audit (advisories, licenses, duplicate versions, sources; see deny.toml), against
# the dated advisory database copy in deny/advisory-db: the test machines cannot reach GitHub.
# cargo-deny is built once from crates.io and kept in ~/.cargo/bin.
cargo_deny_version=0.20.2
if [ "$(cargo deny --version 2>/dev/null)" != "cargo-deny $cargo_deny_version" ]; then
  cargo install --locked cargo-deny --version "$cargo_deny_version"
fi
cargo deny --offline --locked check --hide-inclusion-graph
# Build everything before the control plane starts, so its clock does not include compilation.
cargo test --workspace --locked --no-run

node=true
[ "${SFORG_SKIP_NODE_TESTS:-}" = 1 ] && node=false
# etcd, kube-apiserver, kube-controller-manager, kubectl and helm (tests/chart.rs uses helm),
# and for the node kubelet and kube-scheduler.
if $node; then
  scripts/build-control-plane.sh --with-node >/dev/null
else
  scripts/build-control-plane.sh >/dev/null
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/sforg-test.XXXXXX")
cleanup() {
  if [ -f "$work/node-cp/pids" ]; then
    scripts/control-plane.sh stop "$work/node-cp" || true
    scripts/node.sh check-clean "$work/machine-before" || true
  fi
  scripts/control-plane.sh stop "$work/cp" || true
  # --one-file-system: never follow a mount a failed stop might have left.
  if [ "${SFORG_KEEP_TEST_DIR:-}" = "" ]; then rm -rf --one-file-system "$work"; else echo "kept $work" >&2; fi
}
trap cleanup EXIT

node_tests=""
if $node; then
  # The images the node runs: the same static build the Dockerfile makes.
  scripts/build-images.sh "$work/images" >/dev/null
  node_tests=$(cargo test --locked --test node --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "node" and m.get("executable"):
        print(m["executable"])')
  scripts/node.sh snapshot >"$work/machine-before"
  node_started=$(date +%s)
  scripts/control-plane.sh start --with-node "$work/node-cp"
  scripts/node.sh import "$work/node-cp" "$work"/images/*.tar
fi
scripts/control-plane.sh start "$work/cp"
# shellcheck disable=SC1091
source "$work/cp/env"

node_pid=""
if $node; then
  # The node tests wait on CronJob minute boundaries, mostly idle: run them alongside.
  (
    export SFORG_NODE_DIR=$work/node-cp
    # shellcheck disable=SC1091
    source "$work/node-cp/env"
    cd "$root" && "$node_tests" --test-threads=2 >"$work/node-tests.log" 2>&1
  ) &
  node_pid=$!
fi
status=0
SFORG_SKIP_NODE_TESTS=1 cargo test --workspace --locked "$@" || status=$?
if [ -n "$node_pid" ]; then
  node_status=0
  wait "$node_pid" || node_status=$?
  echo "---- node tests (tests/node.rs) ----"
  cat "$work/node-tests.log"
  [ "$node_status" = 0 ] || { echo "error: the node tests failed" >&2; status=1; }
  scripts/control-plane.sh stop "$work/node-cp"
  echo "node: up and tested for $(( $(date +%s) - node_started ))s"
  scripts/node.sh check-clean "$work/machine-before" || status=1
fi
[ "$status" = 0 ] || exit "$status"
echo "all tests passed in $(( $(date +%s) - started ))s"
