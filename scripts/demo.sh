#!/usr/bin/env bash
# The main job, on this machine with no cluster and no internet: a real local control plane,
# the Salesforce simulator (answering as login.salesforce.com through a local proxy), the
# operator, and an example org with its nightly backup CronJob. It walks the whole story:
# first login through the re-auth link -> Valid -> token revoked -> Expired, backup suspended,
# a new link, sent to the team's webhook -> a person logs in again through the link in that
# message -> Valid, backup resumed.
# Everything it starts is stopped at the end.
#
#   scripts/demo.sh          the story on a control plane alone (CronJobs are suspended, no pod runs)
#   scripts/demo.sh --node   the same with a real node (root; scripts/node.sh): a backup CronJob
#                            runs every minute as real Jobs, and their log lines show it succeed,
#                            stop while the token is expired, and succeed again after the login
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
ns=backups
with_node=false
case ${1:-} in
  --node) with_node=true ;;
  "") ;;
  *) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac

work=$(mktemp -d "${TMPDIR:-/tmp}/sforg-demo.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  scripts/control-plane.sh stop "$work/cp" || true
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

step "Building the operator and the Salesforce simulator"
cargo build --locked --quiet --bin sforg-operator
cargo build --locked --quiet -p sforg-simulator --bin sforg-simulator
if $with_node; then
  step "Building the operator and backup job images (static musl binaries, no container engine)"
  scripts/build-images.sh "$work/images" >/dev/null
  step "Starting a local control plane with a node (etcd, kube-apiserver, controllers, scheduler, kubelet, containerd)"
  scripts/control-plane.sh start --with-node "$work/cp"
  scripts/node.sh import "$work/cp" "$work"/images/*.tar
  kubectl --kubeconfig "$work/cp/kubeconfig" get nodes -o wide
else
  step "Starting a local control plane (etcd + kube-apiserver, built once from the Go modules, then cached)"
  scripts/control-plane.sh start "$work/cp"
fi
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
# The team's chat webhook, here a local receiver: the operator tells it when the org needs a
# person, with the link.
hook_port=$(free_port)
python3 scripts/lib/webhook-receiver.py "$hook_port" "$work/messages.jsonl" &
pids+=($!)
kubectl -n "$ns" create secret generic sforg-notification-channels --from-literal=channels.yaml="
team-hook:
  kind: webhook
  url: http://127.0.0.1:$hook_port/sforg
"
RUST_LOG=info target/debug/sforg-operator run --namespace "$ns" \
  --salesforce-proxy "$proxy" --extra-ca-file "$work/sim-ca.pem" \
  --public-url "$public_url" --callback-listen "127.0.0.1:$callback_port" \
  --metrics-listen "127.0.0.1:$metrics_port" --lease-namespace "$ns" \
  --notification-channels-secret "$ns/sforg-notification-channels" \
  --notification-default-channels team-hook >"$work/operator.log" 2>&1 &
pids+=($!)

step "Applying the example org and its nightly backup CronJob"
kubectl -n "$ns" create secret generic acme-app --from-literal=client-secret="$client_secret"
sed "s/3MVG9demoConsumerKey/$client_id/" examples/acme-prod.yaml | kubectl -n "$ns" apply -f -
kubectl -n "$ns" wait --for=jsonpath='{.status.state}'=Pending sforg/acme-prod --timeout=60s
kubectl -n "$ns" get sforg -o wide

backup_jobs() { kubectl -n "$ns" get jobs -l app=acme-prod-backup "$@"; }
# Waits for the next backup Job created after the given number of Jobs, then for its end,
# and prints its log.
next_backup() { # jobs-before
  local before=$1 job=""
  for _ in $(seq 180); do
    job=$(backup_jobs -o name --sort-by=.metadata.creationTimestamp | sed -n "$((before + 1))p")
    [ -n "$job" ] && break
    sleep 1
  done
  [ -n "$job" ] || { echo "error: no backup Job started" >&2; return 1; }
  kubectl -n "$ns" wait --for=condition=Complete "$job" --timeout=180s >/dev/null \
    || { kubectl -n "$ns" logs "$job" >&2 || true; return 1; }
  echo "  $job:"
  kubectl -n "$ns" logs "$job" | sed 's/^/    /'
}
job_count() { backup_jobs -o name | wc -l; }

open_link() { # what a person does with a link (by default the one in status): open it, log in, allow
  local link=${1:-}
  [ -n "$link" ] || link=$(kubectl -n "$ns" get sforg acme-prod -o jsonpath='{.status.reauth.url}')
  echo "  re-auth link: $link"
  python3 scripts/lib/open-link.py "$link" "$proxy" "$work/sim-ca.pem" "$user" "$password"
}
# Waits for the webhook message of this event and prints it; sets $message_link.
message() { # event
  for _ in $(seq 60); do
    grep -q "\"event\": \"$1\"" "$work/messages.jsonl" 2>/dev/null && break
    sleep 1
  done
  python3 - "$work/messages.jsonl" "$1" <<'PY' || { echo "error: no $1 message arrived" >&2; return 1; }
import json, sys
found = [json.loads(l) for l in open(sys.argv[1]) if json.loads(l)["event"] == sys.argv[2]]
for key in ["event", "namespace", "name", "state", "reason", "message", "reauthUrl", "orgId",
            "username", "authorizedBy", "authorizedAt", "since", "idempotencyKey"]:
    if found[-1].get(key) is not None:
        print(f"  {key}: {found[-1][key]}")
PY
  message_link=$(python3 -c 'import json,sys; m=[json.loads(l) for l in open(sys.argv[1])]; print([x for x in m if x["event"]==sys.argv[2]][-1].get("reauthUrl") or "")' "$work/messages.jsonl" "$1")
}

step "A person opens the link in status and logs into Salesforce for the first time"
kubectl -n "$ns" wait --for=jsonpath='{.status.reauth.url}' sforg/acme-prod --timeout=60s >/dev/null
target/debug/sforg-operator status -n "$ns"
open_link
kubectl -n "$ns" wait --for=jsonpath='{.status.state}'=Valid sforg/acme-prod --timeout=60s
kubectl -n "$ns" get sforg -o wide
kubectl -n "$ns" get cronjobs
if $with_node; then
  step "Adding a backup CronJob that really runs every minute on the node, with the org's token"
  kubectl -n "$ns" create configmap salesforce-ca --from-file=ca.crt="$work/sim-ca.pem"
  kubectl -n "$ns" apply -f - <<YAML
apiVersion: batch/v1
kind: CronJob
metadata:
  name: acme-prod-backup
  labels: {orgtokens.dev/org: acme-prod}
spec:
  schedule: "* * * * *"
  concurrencyPolicy: Forbid
  startingDeadlineSeconds: 20
  successfulJobsHistoryLimit: 10
  jobTemplate:
    metadata:
      labels: {app: acme-prod-backup}
    spec:
      backoffLimit: 0
      template:
        metadata:
          labels: {app: acme-prod-backup}
        spec:
          hostNetwork: true   # the demo node has no pod network; everything is on loopback
          restartPolicy: Never
          securityContext: {runAsNonRoot: true, runAsUser: 65532, seccompProfile: {type: RuntimeDefault}}
          containers:
          - name: backup
            image: localhost/sforg/backup-job:dev
            imagePullPolicy: Never
            env:
            - {name: HTTPS_PROXY, value: "$proxy"}
            - {name: SALESFORCE_CA_FILE, value: /etc/salesforce-ca/ca.crt}
            securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
            volumeMounts:
            - {name: token, mountPath: /var/run/secrets/salesforce, readOnly: true}
            - {name: ca, mountPath: /etc/salesforce-ca, readOnly: true}
          volumes:
          - {name: token, secret: {secretName: acme-prod-token}}
          - {name: ca, configMap: {name: salesforce-ca}}
YAML
  step "The backup runs at the next minute with the token the operator keeps"
  next_backup "$(job_count)"
fi

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
if $with_node; then
  step "While the token is expired, the minute passes and no backup Job starts"
  paused_jobs=$(job_count)
  sleep $(( 65 - $(date +%-S) ))
  kubectl -n "$ns" get cronjob acme-prod-backup
  backup_jobs
  [ "$(job_count)" = "$paused_jobs" ] || { echo "error: a backup Job started while the token was expired" >&2; exit 1; }
  echo "  no new backup Job at $(date -u +%H:%M:%S): the CronJob is held"
  resume_from=$paused_jobs
fi

step "The team's webhook receives the expiry message, with the link (nobody had to notice)"
message Expired

step "The person opens the link from the message and logs in again; the operator resumes the backup"
open_link "$message_link"
kubectl -n "$ns" wait --for=jsonpath='{.status.state}'=Valid sforg/acme-prod --timeout=60s
kubectl -n "$ns" wait --for=jsonpath='{.spec.suspend}'=false cronjob/acme-prod-nightly-backup --timeout=60s
kubectl -n "$ns" get sforg -o wide
kubectl -n "$ns" get cronjobs
if $with_node; then
  step "The backup runs again at the next minute, with the new token"
  next_backup "$resume_from"
  backup_jobs
fi
step "The team is told that the org is valid again, and who logged in"
message Recovered

step "What Prometheus would scrape"
curl -fsS "http://127.0.0.1:$metrics_port/metrics" | grep -E '^sforg_(orgs|salesforce_requests_total|notifications_total)' || true

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
