#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kube-controller-manager and kubectl from the Go module proxy,
# once per pinned version set, into a cache outside the checkout, and prints the directory.
# The cache key is a hash of the wrapper modules (go.mod + go.sum) and the Go version, so a
# version bump rebuilds and everything else reuses.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export GOTOOLCHAIN=local
export CGO_ENABLED=0

k8s_version=$(awk '$1=="require" && $2=="k8s.io/kubernetes" {print $3}' "$root/tools/k8s/go.mod")
key=$( (cat "$root"/tools/k8s/go.mod "$root"/tools/k8s/go.sum "$root"/tools/etcd/go.mod "$root"/tools/etcd/go.sum; go version) | sha256sum | cut -c1-16)
cache=${SFORG_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sforg-operator}
out="$cache/control-plane/$k8s_version-$key"

if [ -x "$out/kube-apiserver" ] && [ -x "$out/etcd" ] && [ -x "$out/kubectl" ] && [ -x "$out/kube-controller-manager" ]; then
  echo "$out"
  exit 0
fi

mkdir -p "$out.tmp"
minor=$(echo "$k8s_version" | cut -d. -f2)
ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

start=$(date +%s)
echo "building control plane $k8s_version into $out (a cold build takes several minutes)" >&2
(cd "$root/tools/etcd" && go build -trimpath -ldflags "-s -w" -o "$out.tmp/etcd" go.etcd.io/etcd/server/v3) >&2
for cmd in kube-apiserver kube-controller-manager kubectl; do
  (cd "$root/tools/k8s" && go build -trimpath -ldflags "-s -w $ldflags" -o "$out.tmp/$cmd" "k8s.io/kubernetes/cmd/$cmd") >&2
done
rm -rf "$out"
mv "$out.tmp" "$out"
echo "built in $(( $(date +%s) - start ))s" >&2
echo "$out"
