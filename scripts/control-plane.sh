#!/usr/bin/env bash
# Starts and stops a real Kubernetes control plane on loopback: etcd, kube-apiserver and
# kube-controller-manager (garbage collection and namespace deletion only), the same programs
# envtest runs. No kubelet, no scheduler: pods never run, which the operator does not need.
# With --with-node, pods do run: the apiserver keeps the ServiceAccount admission plugin (pods
# get tokens), the controller manager runs every controller (Deployments, Jobs, CronJobs,
# ServiceAccounts...), and scripts/node.sh adds containerd, kube-scheduler and a kubelet.
# The apiserver also enforces OwnerReferencesPermissionEnforcement (on in OpenShift), so tests
# that run the operator under the chart's RBAC prove its owner references are allowed there.
#
#   scripts/control-plane.sh start DIR                  build (cached) and start; writes DIR/kubeconfig, DIR/env
#   scripts/control-plane.sh start --with-node DIR      the same plus a node that runs pods (root only)
#   scripts/control-plane.sh stop DIR                   stop everything started in DIR (the node too)
#   scripts/control-plane.sh stop-component DIR NAME    stop etcd or kube-apiserver (fault tests)
#   scripts/control-plane.sh start-component DIR NAME   start it again: same ports, flags and data
#
# DIR/env holds KUBECONFIG, the binaries' directory and the ports, for `source`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

usage() {
  sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_for() { # url deadline-seconds what [curl args...]
  local url=$1 deadline=$(( $(date +%s) + $2 )) what=$3
  shift 3
  until curl -fsS --max-time 2 "$@" "$url" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "error: $what did not become ready at $url; its log follows" >&2
      return 1
    fi
    sleep 0.2
  done
}

make_certs() {
  local d=$1/pki
  mkdir -p "$d"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=sforg-test-ca \
    -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj /CN=kube-apiserver \
    -keyout "$d/apiserver.key" -out "$d/apiserver.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n' >"$d/apiserver.ext"
  openssl x509 -req -in "$d/apiserver.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
    -days 2 -extfile "$d/apiserver.ext" -out "$d/apiserver.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/O=system:masters/CN=sforg-test-admin" \
    -keyout "$d/admin.key" -out "$d/admin.csr" 2>/dev/null
  printf 'extendedKeyUsage=clientAuth\n' >"$d/admin.ext"
  openssl x509 -req -in "$d/admin.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
    -days 2 -extfile "$d/admin.ext" -out "$d/admin.crt" 2>/dev/null
  openssl genrsa -out "$d/sa.key" 2048 2>/dev/null
  openssl rsa -in "$d/sa.key" -pubout -out "$d/sa.pub" 2>/dev/null
}

write_kubeconfig() { # dir port
  local d=$1 port=$2
  cat >"$d/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:$port
    certificate-authority-data: $(base64 -w0 <"$d/pki/ca.crt")
users:
- name: admin
  user:
    client-certificate-data: $(base64 -w0 <"$d/pki/admin.crt")
    client-key-data: $(base64 -w0 <"$d/pki/admin.key")
contexts:
- name: local
  context: {cluster: local, user: admin, namespace: default}
current-context: local
EOF
  chmod 600 "$d/kubeconfig"
}

# The command line of each component lives here, so a restart runs exactly what start ran.
# Reads the ports and the binaries' directory from DIR/components (written by start).
launch() { # dir name
  local d=$1 name=$2 bin etcd_port etcd_peer api_port with_node=false
  # shellcheck disable=SC1091
  source "$d/components"
  # Without a node no pod runs, so no pod needs a ServiceAccount token, and two controllers
  # are enough; with one, pods get tokens and every controller runs.
  local admission=--disable-admission-plugins=ServiceAccount controllers=garbage-collector-controller,namespace-controller
  if $with_node; then
    admission=--enable-admission-plugins=ServiceAccount
    controllers='*'
  fi
  case $name in
    etcd)
      "$bin/etcd" --name=sforg-test --data-dir="$d/etcd" \
        --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
        --listen-peer-urls="http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer" \
        --initial-cluster="sforg-test=http://127.0.0.1:$etcd_peer" \
        --unsafe-no-fsync=true --quota-backend-bytes=4294967296 --log-level=warn \
        >>"$d/etcd.log" 2>&1 &
      echo "$! etcd" >>"$d/pids"
      wait_for "http://127.0.0.1:$etcd_port/health" 60 etcd || { tail -20 "$d/etcd.log" >&2; return 1; }
      ;;
    kube-apiserver)
      "$bin/kube-apiserver" --etcd-servers="http://127.0.0.1:$etcd_port" \
        --bind-address=127.0.0.1 --secure-port="$api_port" --cert-dir="$d/pki" \
        --tls-cert-file="$d/pki/apiserver.crt" --tls-private-key-file="$d/pki/apiserver.key" \
        --client-ca-file="$d/pki/ca.crt" --authorization-mode=RBAC \
        --service-cluster-ip-range=10.0.0.0/24 "$admission" \
        --enable-admission-plugins=OwnerReferencesPermissionEnforcement \
        --service-account-issuer="https://127.0.0.1:$api_port/" \
        --service-account-key-file="$d/pki/sa.pub" --service-account-signing-key-file="$d/pki/sa.key" \
        --api-audiences="https://127.0.0.1:$api_port/" \
        >>"$d/apiserver.log" 2>&1 &
      echo "$! kube-apiserver" >>"$d/pids"
      wait_for "https://127.0.0.1:$api_port/readyz" 120 kube-apiserver \
        --cacert "$d/pki/ca.crt" --cert "$d/pki/admin.crt" --key "$d/pki/admin.key" \
        || { tail -30 "$d/apiserver.log" >&2; return 1; }
      ;;
    kube-controller-manager)
      "$bin/kube-controller-manager" --kubeconfig="$d/kubeconfig" \
        --authentication-kubeconfig="$d/kubeconfig" --authorization-kubeconfig="$d/kubeconfig" \
        --leader-elect=false --controllers="$controllers" \
        --secure-port=0 --use-service-account-credentials=false \
        --root-ca-file="$d/pki/ca.crt" --service-account-private-key-file="$d/pki/sa.key" \
        >>"$d/controller-manager.log" 2>&1 &
      echo "$! kube-controller-manager" >>"$d/pids"
      ;;
    *)
      echo "error: unknown component $name (etcd, kube-apiserver or kube-controller-manager)" >&2
      return 2
      ;;
  esac
}

start() {
  local d=$1 with_node=${2:-false}
  mkdir -p "$d"
  d=$(cd "$d" && pwd)
  if [ -f "$d/pids" ]; then
    echo "error: $d already holds a running control plane; run: $0 stop $d" >&2
    exit 1
  fi
  local bin started
  local build_args=()
  $with_node && build_args=(--with-node)
  bin=$("$root/scripts/build-control-plane.sh" "${build_args[@]}")
  started=$(date +%s.%N)
  make_certs "$d"
  : >"$d/pids"

  local etcd_port etcd_peer api_port
  etcd_port=$(free_port)
  etcd_peer=$(free_port)
  api_port=$(free_port)
  printf 'bin=%q\netcd_port=%s\netcd_peer=%s\napi_port=%s\nwith_node=%s\n' \
    "$bin" "$etcd_port" "$etcd_peer" "$api_port" "$with_node" >"$d/components"
  write_kubeconfig "$d" "$api_port"
  for name in etcd kube-apiserver kube-controller-manager; do
    launch "$d" "$name" || { stop "$d"; exit 1; }
  done

  cat >"$d/env" <<EOF
export KUBECONFIG=$d/kubeconfig
export SFORG_TEST_KUBECONFIG=$d/kubeconfig
export SFORG_CONTROL_PLANE_BIN=$bin
export SFORG_APISERVER_PORT=$api_port
export SFORG_ETCD_PORT=$etcd_port
export PATH=$bin:\$PATH
EOF
  local took
  took=$(python3 -c "import time; print(f'{time.time() - $started:.1f}')")
  echo "control plane ready in ${took}s: https://127.0.0.1:$api_port (kubeconfig $d/kubeconfig)" >&2
  if $with_node; then
    "$root/scripts/node.sh" start "$d" || { stop "$d"; exit 1; }
  fi
}

# Stops one process and waits for it: SIGTERM, then SIGKILL after five seconds.
terminate() { # pid
  local pid=$1
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
}

stop() {
  local d=$1
  [ -f "$d/node/pids" ] && "$root/scripts/node.sh" stop "$d"
  [ -f "$d/pids" ] || return 0
  # Reverse order: controller-manager, apiserver, then etcd (by name: a restarted component
  # is listed after the others).
  local name pid
  for name in kube-controller-manager kube-apiserver etcd; do
    for pid in $(awk -v n="$name" '$2 == n {print $1}' "$d/pids"); do terminate "$pid"; done
  done
  rm -f "$d/pids"
}

# Fault tests stop and restart single components of their own control plane.
check_component() { # dir name
  [ -f "$1/components" ] || { echo "error: $1 holds no control plane started by $0" >&2; exit 1; }
  case $2 in
    etcd | kube-apiserver | kube-controller-manager) ;;
    *) echo "error: unknown component $2 (etcd, kube-apiserver or kube-controller-manager)" >&2; exit 2 ;;
  esac
}

stop_component() { # dir name
  local d=$1 name=$2 pid
  check_component "$d" "$name"
  pid=$(awk -v n="$name" '$2 == n {print $1}' "$d/pids" 2>/dev/null | tail -1)
  if [ -z "$pid" ]; then
    echo "error: $name is not running in $d (already stopped?)" >&2
    exit 1
  fi
  terminate "$pid"
  awk -v n="$name" '$2 != n' "$d/pids" >"$d/pids.tmp" && mv "$d/pids.tmp" "$d/pids"
}

start_component() { # dir name
  local d=$1 name=$2
  check_component "$d" "$name"
  if awk -v n="$name" '$2 == n {found=1} END {exit !found}' "$d/pids" 2>/dev/null; then
    echo "error: $name is already running in $d; stop it first: $0 stop-component $d $name" >&2
    exit 1
  fi
  launch "$d" "$name" || exit 1
}

case ${1:-} in
  start)
    if [ $# -eq 3 ] && [ "$2" = --with-node ]; then start "$3" true
    elif [ $# -eq 2 ]; then start "$2"
    else usage
    fi
    ;;
  stop) [ $# -eq 2 ] || usage; stop "$2" ;;
  stop-component) [ $# -eq 3 ] || usage; stop_component "$2" "$3" ;;
  start-component) [ $# -eq 3 ] || usage; start_component "$2" "$3" ;;
  *) usage ;;
esac
