#!/usr/bin/env bash
# Refreshes the dated copy of the RustSec advisory database that `cargo deny` reads offline
# (deny/advisory-db), from a machine that can reach GitHub. Keeps only the crates/ directory
# and the license, and records the commit and its date in deny.toml's comment by hand.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# cargo-deny looks for the database of https://github.com/rustsec/advisory-db in this
# directory name (derived from that URL).
dest="$root/deny/advisory-db/advisory-db-3157b0e258782691"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git clone --depth 1 https://github.com/rustsec/advisory-db "$tmp/db"
rm -rf "$dest"
mkdir -p "$dest"
cp -r "$tmp/db/crates" "$tmp/db/LICENSE.txt" "$dest/"
git -C "$tmp/db" log -1 --format='advisory-db commit %H of %cs: update the comment in deny.toml'
