#!/usr/bin/env bash
# The main job, on this machine with no cluster and no internet: a real local control plane,
# the Salesforce simulator (answering as login.salesforce.com through a local proxy), the
# operator, and an example org with its nightly backup CronJob. It walks the whole story:
# first login through the re-auth link -> Valid -> token revoked -> Expired, backup suspended,
# a new link -> a person logs in again through it -> Valid, backup resumed.
# Everything it starts is stopped at the end.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
ns=backups

work=$(mktemp -d "${TMPDIR:-/tmp}/sforg-demo.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  scripts/control-plane.sh stop "$work/cp" || true
  rm -rf "$work"
}
trap cleanup EXIT

step "Building the operator and the Salesforce simulator"
cargo build --locked --quiet --bin sforg-operator
cargo build --locked --quiet -p sforg-simulator --bin sforg-simulator
step "Starting a local control plane (etcd + kube-apiserver, built once from the Go modules, then cached)"
scripts/control-plane.sh start "$work/cp"
# shellcheck disable=SC1091
source "$work/cp/env"

step "Starting the Salesforce simulator (org acme, a Connected App, refresh token rotation on)"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
callback_port=$(free_port)
metrics_port=$(free_port)
public_url="http://127.0.0.1:$callback_port"
target/debug/sforg-simulator --seed-demo --ca-out "$work/sim-ca.pem" \
  --demo-redirect-uri "$public_url/oauth/callback" >"$work/sim.json" 2>"$work/sim.log" &
pids+=($!)
for _ in $(seq 100); do [ -s "$work/sim.json" ] && break; sleep 0.1; done
sim() { python3 -c "import json,sys; d=json.load(open('$work/sim.json')); print(eval(sys.argv[1]))" "$1"; }
control=$(sim "d['control_url']")
proxy=$(sim "d['proxy_url']")
client_id=$(sim "d['demo']['app']['client_id']")
client_secret=$(sim "d['demo']['app']['client_secret']")
user=$(sim "d['demo']['user']['username']")
password=$(sim "d['demo']['password']")
echo "simulator: proxy $proxy, control $control, user $user"
post() { curl -fsS -X POST -H 'content-type: application/json' -d "${2:-{\}}" "$control/_sim/$1"; }

step "Installing the SalesforceOrg CRD and starting the operator (namespace $ns)"
target/debug/sforg-operator crd | kubectl apply --server-side -f -
kubectl wait --for=condition=Established crd/salesforceorgs.orgtokens.dev --timeout=60s
kubectl create namespace "$ns"
RUST_LOG=info target/debug/sforg-operator run --namespace "$ns" \
  --salesforce-proxy "$proxy" --extra-ca-file "$work/sim-ca.pem" \
  --public-url "$public_url" --callback-listen "127.0.0.1:$callback_port" \
  --metrics-listen "127.0.0.1:$metrics_port" --lease-namespace "$ns" >"$work/operator.log" 2>&1 &
pids+=($!)

step "Applying the example org and its nightly backup CronJob"
kubectl -n "$ns" create secret generic acme-app --from-literal=client-secret="$client_secret"
sed "s/3MVG9demoConsumerKey/$client_id/" examples/acme-prod.yaml | kubectl -n "$ns" apply -f -
kubectl -n "$ns" wait --for=jsonpath='{.status.state}'=Pending sforg/acme-prod --timeout=60s
kubectl -n "$ns" get sforg -o wide

open_link() { # what a person does with the link in status: open it, log in, allow
  local link
  link=$(kubectl -n "$ns" get sforg acme-prod -o jsonpath='{.status.reauth.url}')
  echo "  re-auth link: $link"
  python3 scripts/lib/open-link.py "$link" "$proxy" "$work/sim-ca.pem" "$user" "$password"
}

step "A person opens the link in status and logs into Salesforce for the first time"
kubectl -n "$ns" wait --for=jsonpath='{.status.reauth.url}' sforg/acme-prod --timeout=60s >/dev/null
target/debug/sforg-operator status -n "$ns"
open_link
kubectl -n "$ns" wait --for=jsonpath='{.status.state}'=Valid sforg/acme-prod --timeout=60s
kubectl -n "$ns" get sforg -o wide
kubectl -n "$ns" get cronjobs

step "An admin revokes the token in Salesforce; someone asks for a check now"
post "users/$user/revoke-tokens" >/dev/null
kubectl -n "$ns" annotate sforg acme-prod --overwrite orgtokens.dev/check-requested-at="$(date +%s)"
kubectl -n "$ns" wait --for=jsonpath='{.status.state}'=Expired sforg/acme-prod --timeout=60s
kubectl -n "$ns" wait --for=jsonpath='{.spec.suspend}'=true cronjob/acme-prod-nightly-backup --timeout=60s
kubectl -n "$ns" get sforg -o wide
kubectl -n "$ns" get cronjobs
kubectl -n "$ns" get sforg acme-prod -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}'
kubectl -n "$ns" get events --field-selector involvedObject.name=acme-prod --sort-by=.lastTimestamp | tail -5
target/debug/sforg-operator status -n "$ns"

step "The person opens the new link and logs in again; the operator resumes the backup"
open_link
kubectl -n "$ns" wait --for=jsonpath='{.status.state}'=Valid sforg/acme-prod --timeout=60s
kubectl -n "$ns" wait --for=jsonpath='{.spec.suspend}'=false cronjob/acme-prod-nightly-backup --timeout=60s
kubectl -n "$ns" get sforg -o wide
kubectl -n "$ns" get cronjobs
step "What Prometheus would scrape"
curl -fsS "http://127.0.0.1:$metrics_port/metrics" | grep -E '^sforg_(orgs|salesforce_requests_total)' || true

step "The schema refuses a bad spec before any controller sees it"
kubectl -n "$ns" apply -f - <<'YAML' || true
apiVersion: orgtokens.dev/v1alpha1
kind: SalesforceOrg
metadata: {name: broken}
spec:
  loginUrl: http://login.salesforce.com
  auth: {}
  tokenSecretRef: {name: broken-token}
YAML
refresh_token=$(kubectl -n "$ns" get secret acme-prod-token -o jsonpath='{.data.refresh_token}' | base64 -d)
if grep -qF -e "$refresh_token" "$work/operator.log"; then
  echo "error: a token appeared in the operator's log" >&2; exit 1
fi
step "Done: the operator's log had no token in it; stopping everything"
