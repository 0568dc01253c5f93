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
