#!/usr/bin/env bash
# The main job, on this machine with no cluster and no internet: starts a real local control
# plane, installs the SalesforceOrg CRD, applies an example org with its backup CronJob, shows
# them as kubectl users see them, then cleans up.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

work=$(mktemp -d "${TMPDIR:-/tmp}/sforg-demo.XXXXXX")
cleanup() { scripts/control-plane.sh stop "$work/cp" || true; rm -rf "$work"; }
trap cleanup EXIT

step "Building the operator"
cargo build --locked --quiet --bin sforg-operator
step "Starting a local control plane (etcd + kube-apiserver; built once, then cached)"
scripts/control-plane.sh start "$work/cp"
# shellcheck disable=SC1091
source "$work/cp/env"

step "Installing the SalesforceOrg CRD (generated from the Rust types)"
target/debug/sforg-operator crd | kubectl apply --server-side -f -
kubectl wait --for=condition=Established crd/salesforceorgs.orgtokens.dev --timeout=60s

step "Applying an example org and its nightly backup CronJob"
kubectl create namespace backups
kubectl -n backups apply -f examples/acme-prod.yaml

step "kubectl get salesforceorgs -o wide"
kubectl -n backups get sforg -o wide
step "kubectl get cronjobs"
kubectl -n backups get cronjobs

step "The schema refuses a bad spec before any controller sees it"
kubectl -n backups apply -f - <<'YAML' || true
apiVersion: orgtokens.dev/v1alpha1
kind: SalesforceOrg
metadata: {name: broken}
spec:
  loginUrl: http://login.salesforce.com
  auth: {}
  tokenSecretRef: {name: broken-token}
YAML
step "Done; stopping the control plane"
