#!/usr/bin/env bash
# Builds the operator as a static musl binary, as the Dockerfile does, and proves it links
# statically (no interpreter, no shared libraries). Not part of scripts/test.sh: a cold release
# build takes minutes. Needs the rustup target, which comes from the Rust distribution server;
# when that cannot be reached the script says so and skips, exiting 0.
#
#   scripts/build-static.sh            build and check; prints the binary's path
#   CARGO_TARGET_DIR=... scripts/build-static.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
target=x86_64-unknown-linux-musl

if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  if ! err=$(rustup target add "$target" 2>&1); then
    echo "skipped: cannot install the Rust target $target; rustup said:" >&2
    echo "$err" >&2
    exit 0
  fi
fi

# ring compiles a little C and assembly, and the cc crate looks for x86_64-linux-musl-gcc.
# Use musl-gcc (Debian's musl-tools, as the Dockerfile does) when present; else the system
# gcc, which compiles ring's self-contained C for x86_64 musl just as well.
if [ -z "${CC_x86_64_unknown_linux_musl:-}" ]; then
  if command -v musl-gcc >/dev/null; then
    export CC_x86_64_unknown_linux_musl=musl-gcc
  elif command -v gcc >/dev/null; then
    echo "note: musl-gcc not found (apt-get install musl-tools); compiling ring's C with gcc" >&2
    export CC_x86_64_unknown_linux_musl=gcc
  fi
fi

start=$(date +%s)
cargo build --release --locked --target "$target" --bin sforg-operator
bin=${CARGO_TARGET_DIR:-$root/target}/$target/release/sforg-operator
echo "built in $(( $(date +%s) - start ))s: $bin ($(du -h "$bin" | cut -f1))" >&2

description=$(file -b "$bin")
echo "file: $description" >&2
case $description in
  *"statically linked"* | *"static-pie linked"*) ;;
  *) echo "error: $bin is not statically linked" >&2; exit 1 ;;
esac
ldd_out=$(ldd "$bin" 2>&1 || true)
echo "ldd: $(echo "$ldd_out" | tr -s '[:space:]' ' ')" >&2
case $ldd_out in
  *"not a dynamic executable"* | *"statically linked"*) ;;
  *) echo "error: ldd lists shared libraries" >&2; exit 1 ;;
esac
"$bin" --version
echo "$bin"
