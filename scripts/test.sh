#!/usr/bin/env bash
# Runs every test: formatting, clippy, unit tests, and the integration tests against a real
# etcd + kube-apiserver started here (built from the Go modules on first use, then cached).
# Extra arguments go to `cargo test` (for example a test name filter).
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

started=$(date +%s)
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# Build everything before the control plane starts, so its clock does not include compilation.
cargo test --workspace --locked --no-run

# etcd, kube-apiserver, kube-controller-manager, kubectl and helm (tests/chart.rs uses helm).
scripts/build-control-plane.sh >/dev/null
work=$(mktemp -d "${TMPDIR:-/tmp}/sforg-test.XXXXXX")
cleanup() {
  scripts/control-plane.sh stop "$work/cp" || true
  if [ "${SFORG_KEEP_TEST_DIR:-}" = "" ]; then rm -rf "$work"; else echo "kept $work" >&2; fi
}
trap cleanup EXIT
scripts/control-plane.sh start "$work/cp"
# shellcheck disable=SC1091
source "$work/cp/env"

cargo test --workspace --locked "$@"
echo "all tests passed in $(( $(date +%s) - started ))s"
