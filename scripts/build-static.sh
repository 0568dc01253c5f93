#!/usr/bin/env bash
# Builds the operator (and the example backup job) as static musl binaries, as the Dockerfile
# does, and proves they link statically (no interpreter, no shared libraries).
# scripts/build-images.sh packs them into images. Needs the rustup target, which comes from
# the Rust distribution server; when that cannot be reached the script says so and skips,
# exiting 0 with no output.
#
#   scripts/build-static.sh            build and check; prints the operator binary's path
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

# musl-gcc and file come from Debian's packages; install them when missing and allowed to.
if ! command -v musl-gcc >/dev/null || ! command -v file >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends musl-tools file >&2 \
      || { apt-get -o DPkg::Lock::Timeout=600 update >&2 \
        && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends musl-tools file >&2; } \
      || echo "note: could not install musl-tools and file" >&2
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
cargo build --release --locked --target "$target" -p sforg-operator -p sforg-backup-job --bins
out=${CARGO_TARGET_DIR:-$root/target}/$target/release
echo "built in $(( $(date +%s) - start ))s" >&2

for bin in "$out/sforg-operator" "$out/sforg-backup-job"; do
  description=$(file -b "$bin")
  echo "$(basename "$bin") ($(du -h "$bin" | cut -f1)): $description" >&2
  case $description in
    *"statically linked"* | *"static-pie linked"*) ;;
    *) echo "error: $bin is not statically linked" >&2; exit 1 ;;
  esac
  ldd_out=$(ldd "$bin" 2>&1 || true)
  case $ldd_out in
    *"not a dynamic executable"* | *"statically linked"*) ;;
    *) echo "error: ldd lists shared libraries for $bin: $ldd_out" >&2; exit 1 ;;
  esac
done
"$out/sforg-operator" --version >&2
echo "$out/sforg-operator"
