#!/usr/bin/env bash
# A real Kubernetes node on this machine, joined to a control plane that
# `scripts/control-plane.sh start --with-node DIR` started (which calls `node.sh start DIR`):
# containerd and runc from Debian's packages (installed here when missing), and kubelet and
# kube-scheduler built from the same Go modules as the control plane (cached). The node is
# named 127.0.0.1 and listens on loopback only. Pods use host networking: there is no pod
# network (a loopback-only CNI keeps the runtime's network Ready), no kube-proxy and no DNS.
# Images come from tarballs (`node.sh import`), never from a registry.
#
#   scripts/node.sh start DIR              start containerd, kube-scheduler and kubelet; wait until Ready
#   scripts/node.sh import DIR IMAGE.tar.. import images into the node's containerd
#   scripts/node.sh stop DIR               stop them and undo what they did to the machine
#   scripts/node.sh snapshot               print the machine state a node changes (for check-clean)
#   scripts/node.sh check-clean BEFORE     fail when the machine differs from a snapshot
#
# Needs root (containerd and kubelet manage cgroups and mounts). One node runs per machine at a
# time: start waits for a machine-wide lock that stop releases. kubelet changes six host sysctls
# (it insists on them); stop restores them. Versions: Debian 12's containerd 1.6 works with
# kubelet 1.36; Kubernetes 1.37 drops containerd 1.x, so that bump needs containerd 2.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
lock_file=${SFORG_NODE_LOCK:-/run/lock/sforg-node.lock}
sysctls="vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops kernel/keys/root_maxkeys kernel/keys/root_maxbytes"
pause_image=localhost/sforg/pause:1
# Fixed paths containerd, runc and kubelet may create whatever their configuration says.
fixed_paths="/run/containerd /opt/containerd /var/lib/containerd /var/lib/kubelet /var/log/pods /var/log/containers /etc/cni /var/lib/cni /var/run/netns /etc/kubernetes"

usage() {
  sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
}

log() { echo "node: $*" >&2; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

ensure_packages() {
  local missing=()
  command -v containerd >/dev/null || missing+=(containerd)
  command -v runc >/dev/null || missing+=(runc)
  [ -x /usr/lib/cni/loopback ] || missing+=(containernetworking-plugins)
  command -v iptables-save >/dev/null || missing+=(iptables)
  command -v gcc >/dev/null || missing+=(gcc libc6-dev)
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${missing[@]}" >&2; then
    apt-get -o DPkg::Lock::Timeout=600 update >&2
    apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${missing[@]}" >&2
  fi
}

# The state a node changes, one line per item, sorted: mounts, cgroups, iptables rules and
# chains, the sysctls kubelet sets, containerd's runtime directory, and running node programs.
snapshot() {
  awk '{print "mount " $5}' /proc/self/mountinfo | sort -u
  # Only the cgroups a node makes: this machine's own tooling creates and removes others.
  find /sys/fs/cgroup -mindepth 1 -type d 2>/dev/null \
    | grep -E '/(kubepods|k8s\.io|kubelet|containerd|runc|podruntime|system\.slice)' | sed 's/^/cgroup /' | sort || true
  local save
  for save in iptables-save ip6tables-save; do
    if command -v "$save" >/dev/null; then
      { "$save" 2>/dev/null || true; } | { grep -v '^#' || true; } \
        | sed -e 's/\[[0-9]*:[0-9]*\]//' -e "s/^/$save /" | sort
    fi
  done
  local s
  for s in $sysctls; do echo "sysctl $s=$(cat "/proc/sys/$s")"; done
  local p
  for p in $fixed_paths; do [ -e "$p" ] && echo "path $p"; done
  ps -eo comm= | grep -xE 'containerd|containerd-shim(-runc-v2)?|kubelet|kube-scheduler|runc|pause' \
    | sed 's/^/process /' | sort || true
}

check_clean() { # before-file
  local diff
  if diff=$(diff <(sort "$1") <(snapshot | sort)); then
    log "the machine is as it was before the node started"
    return 0
  fi
  echo "error: the node left the machine changed (< before, > now):" >&2
  echo "$diff" >&2
  return 1
}

# The pause image: a static program of a few KB, built once per machine.
build_pause() { # out.tar
  local out=$1 cc=gcc
  command -v musl-gcc >/dev/null && cc=musl-gcc
  local tmp
  tmp=$(mktemp -d)
  "$cc" -Os -static -s -o "$tmp/pause" "$root/images/pause.c"
  python3 "$root/images/mkimage.py" "$out" "$pause_image" --user 65535:65535 \
    --entrypoint '["/pause"]' --add "$tmp/pause:/pause" >/dev/null
  rm -rf "$tmp"
}

wait_until() { # deadline-seconds what command...
  local deadline=$(( $(date +%s) + $1 )) what=$2
  shift 2
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "error: $what" >&2
      return 1
    fi
    sleep 0.2
  done
}

node_ready() { # kubeconfig
  [ "$("$bin/kubectl" --kubeconfig "$1" get node 127.0.0.1 \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

start() {
  local cp=$1 n
  cp=$(cd "$cp" && pwd)
  n=$cp/node
  [ "$(id -u)" = 0 ] || { echo "error: a node needs root (containerd and kubelet manage cgroups and mounts)" >&2; exit 1; }
  [ -f "$cp/components" ] || { echo "error: $cp holds no control plane; run: scripts/control-plane.sh start --with-node $cp" >&2; exit 1; }
  grep -q '^with_node=true' "$cp/components" || {
    echo "error: the control plane in $cp was started without --with-node (pods would get no ServiceAccount token)" >&2; exit 1; }
  [ -f "$n/pids" ] && { echo "error: $cp already runs a node; run: $0 stop $cp" >&2; exit 1; }
  # (start runs under `||`, where set -e does not apply: each step checks its own failure.)
  ensure_packages || return 1
  bin=$("$root/scripts/build-control-plane.sh" --with-node) || return 1
  mkdir -p "$n"
  : >"$n/pids"

  # One node per machine: kubelet's cgroups, sysctls and containerd's shim directory are global.
  mkdir -p "$(dirname "$lock_file")"
  exec 9>>"$lock_file"
  if ! flock -n 9; then
    log "another node runs on this machine; waiting for it to stop (up to 30 min)"
    flock -w 1800 9 || { echo "error: the node lock $lock_file is still held after 30 min" >&2; exit 1; }
  fi
  # The lock lives as long as this keeper; stop kills it. Nothing else inherits fd 9.
  sleep infinity </dev/null >/dev/null 2>&1 &
  echo "$! lock-keeper" >>"$n/pids"
  exec 9>&-

  local started
  started=$(date +%s.%N)
  snapshot >"$n/before"
  local s
  for s in $sysctls; do echo "$s $(cat "/proc/sys/$s")"; done >"$n/sysctls"

  mkdir -p "$n/containerd" "$n/cni/net.d" "$n/kubelet" "$n/pod-logs" "$n/images"
  cat >"$n/cni/net.d/10-loopback.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "sforg-loopback", "plugins": [{"type": "loopback"}]}
EOF
  # restrict_oom_score_adj: root here may lack CAP_SYS_RESOURCE, and runc then fails every
  # sandbox that asks for a negative oom_score_adj ("can't get final child's PID from pipe").
  cat >"$n/containerd/config.toml" <<EOF
version = 2
root = "$n/containerd/root"
state = "$n/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$n/containerd/containerd.sock"
[ttrpc]
  address = "$n/containerd/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$n/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$pause_image"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$n/cni/net.d"
EOF
  containerd --config "$n/containerd/config.toml" >>"$n/containerd.log" 2>&1 &
  echo "$! containerd" >>"$n/pids"
  wait_until 60 "containerd did not start (log: $n/containerd.log)" \
    ctr --address "$n/containerd/containerd.sock" version || { tail -20 "$n/containerd.log" >&2; return 1; }

  local cache=${SFORG_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sforg-operator}
  local pause_tar=$cache/images/pause-$(sha256sum "$root/images/pause.c" "$root/images/mkimage.py" | sha256sum | cut -c1-12).tar
  if [ ! -f "$pause_tar" ]; then
    mkdir -p "$cache/images"
    build_pause "$pause_tar.tmp" && mv "$pause_tar.tmp" "$pause_tar" || return 1
  fi
  import "$cp" "$pause_tar" || return 1

  # shellcheck disable=SC1091
  source "$cp/components"
  local kubelet_port healthz_port
  kubelet_port=$(free_port)
  healthz_port=$(free_port)
  cat >"$n/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine runs cgroup v1, which kubelet 1.35+ refuses unless told otherwise.
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$n/containerd/containerd.sock
address: 127.0.0.1
port: $kubelet_port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $healthz_port
# The apiserver (no client certificate for kubelets here) fetches logs and exec through it.
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
failSwapOn: false
podLogsDir: $n/pod-logs
# No KUBE-IPTABLES-HINT / KUBE-FIREWALL chains: nothing here uses them.
makeIPTablesUtilChains: false
# Absolute floors: the disk here is shared and often nearly full, and a percentage would put
# the node under disk pressure (pods Pending) long before space actually runs out.
evictionHard: {memory.available: 100Mi, nodefs.available: 100Mi, imagefs.available: 100Mi, nodefs.inodesFree: 1%}
# Imported images cannot be pulled again: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
registerNode: true
EOF
  "$bin/kube-scheduler" --kubeconfig="$cp/kubeconfig" --authentication-kubeconfig="$cp/kubeconfig" \
    --authorization-kubeconfig="$cp/kubeconfig" --leader-elect=false --secure-port=0 \
    >>"$n/scheduler.log" 2>&1 &
  echo "$! kube-scheduler" >>"$n/pids"
  # --hostname-override=127.0.0.1 makes the node's address loopback, so the apiserver reaches
  # the kubelet there for logs and exec.
  "$bin/kubelet" --config="$n/kubelet.yaml" --kubeconfig="$cp/kubeconfig" --root-dir="$n/kubelet" \
    --cert-dir="$n/kubelet/pki" --hostname-override=127.0.0.1 --v=1 \
    >>"$n/kubelet.log" 2>&1 &
  echo "$! kubelet" >>"$n/pids"
  printf 'export SFORG_NODE=127.0.0.1\nexport SFORG_NODE_CONTAINERD=%s\n' "$n/containerd/containerd.sock" >>"$cp/env"

  wait_until 180 "the node did not become Ready (log: $n/kubelet.log)" node_ready "$cp/kubeconfig" \
    || { tail -30 "$n/kubelet.log" >&2; return 1; }
  local took
  took=$(python3 -c "import time; print(f'{time.time() - $started:.1f}')")
  log "node 127.0.0.1 Ready in ${took}s (containerd $(containerd --version | awk '{print $3}'), kubelet $("$bin/kubelet" --version | awk '{print $2}'))"
}

import() { # dir tar...
  local n=$1/node sock
  sock=$n/containerd/containerd.sock
  [ -S "$sock" ] || { echo "error: no node runs in $1" >&2; exit 1; }
  shift
  local tar
  for tar in "$@"; do
    ctr --address "$sock" -n k8s.io images import --no-unpack "$tar" >/dev/null
    log "imported $(basename "$tar")"
  done
}

terminate() { # pid [seconds]
  local pid=$1 tries=$(( ${2:-10} * 10 ))
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq "$tries"); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  fi
}

pid_of() { awk -v n="$2" '$2 == n {print $1}' "$1/pids" 2>/dev/null; }

# Mount points under a directory, deepest first.
mounts_under() { # dir
  awk -v d="$1" '$5 == d || index($5, d "/") == 1 {print $5}' /proc/self/mountinfo | sort -r | uniq
}

stop() {
  local cp=$1 n pid sock
  n=$cp/node
  [ -f "$n/pids" ] || return 0
  sock=$n/containerd/containerd.sock
  bin=$(sed -n 's/^bin=//p' "$cp/components" 2>/dev/null || true)

  # kubelet first, so it restarts nothing; then every container, while containerd still runs.
  for pid in $(pid_of "$n" kubelet); do terminate "$pid" 10; done
  for pid in $(pid_of "$n" kube-scheduler); do terminate "$pid" 5; done
  if [ -S "$sock" ]; then
    local c
    for c in $(ctr --address "$sock" -n k8s.io tasks ls -q 2>/dev/null); do
      ctr --address "$sock" -n k8s.io tasks kill -s SIGKILL "$c" >/dev/null 2>&1 || true
    done
    for c in $(ctr --address "$sock" -n k8s.io tasks ls -q 2>/dev/null); do
      for _ in $(seq 50); do
        ctr --address "$sock" -n k8s.io tasks delete "$c" >/dev/null 2>&1 && break
        sleep 0.1
      done
    done
  fi
  for pid in $(pid_of "$n" containerd); do terminate "$pid" 10; done
  # Shims of this containerd (their command line names its socket) outlive it by design.
  for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $sock" || true); do terminate "$pid" 5; done
  # Anything still in the cgroups the node created (a container whose shim was killed).
  local before_cgroups="" new_cgroups=""
  [ -f "$n/before" ] && before_cgroups=$(grep '^cgroup ' "$n/before" 2>/dev/null | cut -d' ' -f2- || true)
  [ -f "$n/before" ] && new_cgroups=$(comm -13 <(echo "$before_cgroups" | sort) \
    <(find /sys/fs/cgroup -mindepth 1 -type d 2>/dev/null | sort) | grep -E '/(kubepods|k8s\.io)(/|$)' \
    | awk '{print length, $0}' | sort -rn | cut -d' ' -f2- || true)
  local cg
  for cg in $new_cgroups; do
    [ -f "$cg/cgroup.procs" ] && xargs -r kill -9 <"$cg/cgroup.procs" 2>/dev/null || true
  done

  # Mounts: overlay root filesystems, shm, the kubelet's volumes (tmpfs, binds).
  local m
  for m in $(mounts_under "$n") $(mounts_under /run/containerd); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
  for cg in $new_cgroups; do
    for _ in $(seq 20); do rmdir "$cg" 2>/dev/null && break; [ -d "$cg" ] || break; sleep 0.1; done
  done
  if [ -f "$n/sysctls" ]; then
    local name value
    while read -r name value; do
      [ "$(cat "/proc/sys/$name")" = "$value" ] || echo "$value" >"/proc/sys/$name" || true
    done <"$n/sysctls"
  fi
  local p
  [ -f "$n/before" ] && for p in $fixed_paths; do
    if grep -qx "path $p" "$n/before" 2>/dev/null; then
      # It was there before: remove only what points into this node (kubelet's log symlinks).
      [ -d "$p" ] && find "$p" -maxdepth 1 -lname "$n/*" -delete 2>/dev/null || true
    else
      rm -rf --one-file-system "$p"
    fi
  done
  for pid in $(pid_of "$n" lock-keeper); do terminate "$pid" 2; done
  rm -f "$n/pids"
  if [ -n "$(mounts_under "$n")" ]; then
    echo "error: mounts remain under $n:" >&2
    mounts_under "$n" >&2
    return 1
  fi
  log "stopped"
}

case ${1:-} in
  start) [ $# -eq 2 ] || usage; start "$2" || { stop "$(cd "$2" && pwd)"; exit 1; } ;;
  stop) [ $# -eq 2 ] || usage; stop "$(cd "$2" && pwd)" ;;
  import) [ $# -ge 3 ] || usage; d=$(cd "$2" && pwd); shift 2; import "$d" "$@" ;;
  snapshot) [ $# -eq 1 ] || usage; snapshot ;;
  check-clean) [ $# -eq 2 ] || usage; check_clean "$2" ;;
  *) usage ;;
esac
