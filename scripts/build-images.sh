#!/usr/bin/env bash
# Builds the container images without a container engine, as `docker save` tarballs that
# `ctr images import` (scripts/node.sh import), `docker load` and `podman load` accept:
#   sforg-operator.tar     localhost/sforg/sforg-operator:dev   the operator, user 65532, nothing else
#   sforg-backup-job.tar   localhost/sforg/backup-job:dev       the example backup job (backup-job/)
# The binaries come from scripts/build-static.sh, the same static musl build the Dockerfile
# runs. Where the musl target cannot be installed, the glibc release build is packed with the
# shared libraries it needs (ldd) instead, and the script says so.
#
#   scripts/build-images.sh [OUT_DIR]    default OUT_DIR: target/images; prints OUT_DIR
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/target/images}
mkdir -p "$out"
out=$(cd "$out" && pwd)
started=$(date +%s)

operator=$("$root/scripts/build-static.sh")
libs=()
if [ -z "$operator" ]; then
  echo "note: no static musl build here; packing the glibc release build with its libraries" >&2
  (cd "$root" && cargo build --release --locked -p sforg-operator -p sforg-backup-job --bins >&2)
  operator=${CARGO_TARGET_DIR:-$root/target}/release/sforg-operator
  for lib in $(ldd "$operator" "$(dirname "$operator")/sforg-backup-job" | grep -o '/[^ ]*' | sort -u); do
    libs+=(--add "$(readlink -f "$lib"):$lib")
  done
fi
# Symbols are of no use in the image: strip copies (the build's own binaries stay as they are).
bindir=$(mktemp -d)
trap 'rm -rf "$bindir"' EXIT
for name in sforg-operator sforg-backup-job; do
  strip -o "$bindir/$name" "$(dirname "$operator")/$name"
done

python3 "$root/images/mkimage.py" "$out/sforg-operator.tar" localhost/sforg/sforg-operator:dev \
  --user 65532:65532 --entrypoint '["/sforg-operator"]' --cmd '["run"]' \
  --add "$bindir/sforg-operator:/sforg-operator" "${libs[@]}" >&2
python3 "$root/images/mkimage.py" "$out/sforg-backup-job.tar" localhost/sforg/backup-job:dev \
  --user 65532:65532 --entrypoint '["/sforg-backup-job"]' \
  --add "$bindir/sforg-backup-job:/sforg-backup-job" "${libs[@]}" >&2
echo "images built in $(( $(date +%s) - started ))s: $(du -h "$out/sforg-operator.tar" | cut -f1) operator, $(du -h "$out/sforg-backup-job.tar" | cut -f1) backup job" >&2
echo "$out"
