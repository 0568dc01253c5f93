#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kube-controller-manager, kubectl and helm from the Go module
# proxy, once per pinned version set, into a cache outside the checkout, and prints the directory.
# With --with-node it also builds kubelet and kube-scheduler (scripts/node.sh runs them), from
# the same wrapper module and into the same directory.
# The cache key is a hash of the wrapper modules (go.mod + go.sum) and the Go version, so a
# version bump rebuilds and everything else reuses. helm (tools/helm) has its own key, kept in
# DIR/helm.key, so bumping helm rebuilds only helm and bumping Kubernetes only the control plane.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export GOTOOLCHAIN=local
export CGO_ENABLED=0
with_node=false
case ${1:-} in
  --with-node) with_node=true ;;
  "") ;;
  *) echo "usage: $0 [--with-node]" >&2; exit 2 ;;
esac

k8s_version=$(awk '$1=="require" && $2=="k8s.io/kubernetes" {print $3}' "$root/tools/k8s/go.mod")
key=$( (cat "$root"/tools/k8s/go.mod "$root"/tools/k8s/go.sum "$root"/tools/etcd/go.mod "$root"/tools/etcd/go.sum; go version) | sha256sum | cut -c1-16)
cache=${SFORG_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sforg-operator}
out="$cache/control-plane/$k8s_version-$key"
helm_module=$(awk '$1=="tool" && $2 ~ /^helm.sh\/helm\// {print $2}' "$root/tools/helm/go.mod")
helm_major=$(echo "$helm_module" | cut -d/ -f1-3)  # helm.sh/helm/vN
helm_version=$(awk -v m="$helm_major" '$1==m {print $2}' "$root/tools/helm/go.mod")
helm_key=$( (cat "$root"/tools/helm/go.mod "$root"/tools/helm/go.sum; go version) | sha256sum | cut -c1-16)

control_plane_built() {
  [ -x "$out/kube-apiserver" ] && [ -x "$out/etcd" ] && [ -x "$out/kubectl" ] && [ -x "$out/kube-controller-manager" ]
}
helm_built() {
  [ -x "$out/helm" ] && [ "$(cat "$out/helm.key" 2>/dev/null)" = "$helm_version-$helm_key" ]
}
node_built() {
  ! $with_node || { [ -x "$out/kubelet" ] && [ -x "$out/kube-scheduler" ]; }
}
if control_plane_built && helm_built && node_built; then
  echo "$out"
  exit 0
fi
# One build at a time (parallel test runs share the cache); whoever waited finds it built.
mkdir -p "$cache/control-plane"
exec 9>"$cache/control-plane/.build.lock"
flock 9

mkdir -p "$out.tmp"
minor=$(echo "$k8s_version" | cut -d. -f2)
ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

if ! control_plane_built; then
  start=$(date +%s)
  echo "building control plane $k8s_version into $out (a cold build takes several minutes)" >&2
  (cd "$root/tools/etcd" && go build -trimpath -ldflags "-s -w" -o "$out.tmp/etcd" go.etcd.io/etcd/server/v3) >&2
  for cmd in kube-apiserver kube-controller-manager kubectl; do
    (cd "$root/tools/k8s" && go build -trimpath -ldflags "-s -w $ldflags" -o "$out.tmp/$cmd" "k8s.io/kubernetes/cmd/$cmd") >&2
  done
  rm -rf "$out"
  mv "$out.tmp" "$out"
  echo "built in $(( $(date +%s) - start ))s" >&2
fi

if ! node_built; then
  start=$(date +%s)
  echo "building kubelet and kube-scheduler $k8s_version into $out (a few minutes cold)" >&2
  for cmd in kubelet kube-scheduler; do
    (cd "$root/tools/k8s" && go build -trimpath -ldflags "-s -w $ldflags" -o "$out/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd") >&2
    mv -f "$out/$cmd.tmp" "$out/$cmd"
  done
  echo "built kubelet and kube-scheduler in $(( $(date +%s) - start ))s" >&2
fi

if ! helm_built; then
  start=$(date +%s)
  echo "building helm $helm_version into $out (a cold build takes a few minutes)" >&2
  # The same version stamps helm's Makefile sets: its own version, and the Kubernetes version
  # its client libraries speak (the default .Capabilities.KubeVersion of `helm template`).
  client_go=$(awk '$1=="k8s.io/client-go" {print $2}' "$root/tools/helm/go.mod")
  kube_minor=$(echo "$client_go" | cut -d. -f2)
  pkg=$helm_major
  helm_ldflags="-s -w -X $pkg/internal/version.version=$helm_version -X $pkg/internal/version.gitTreeState=clean"
  for p in pkg/lint/rules pkg/chartutil; do
    helm_ldflags+=" -X $pkg/$p.k8sVersionMajor=1 -X $pkg/$p.k8sVersionMinor=$kube_minor"
  done
  (cd "$root/tools/helm" && go build -trimpath -ldflags "$helm_ldflags" -o "$out/helm.tmp" "$helm_module") >&2
  mv -f "$out/helm.tmp" "$out/helm"
  echo "$helm_version-$helm_key" >"$out/helm.key"
  echo "built helm in $(( $(date +%s) - start ))s" >&2
fi
echo "$out"
