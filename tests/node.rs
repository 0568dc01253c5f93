//! On a real node (kubelet + containerd, `scripts/control-plane.sh start --with-node`): the
//! chart runs the operator image as a pod, and real backup Jobs run from a CronJob, stop while
//! the org's token is expired, and run again after a person logs in through the link.
//!
//! `scripts/test.sh` starts that node cluster (`SFORG_NODE_DIR`) and imports the images built by
//! `scripts/build-images.sh`. Every address is loopback: the pods use host networking and reach
//! the API server at 127.0.0.1 (`KUBERNETES_SERVICE_HOST`/`PORT`) and the simulator through its
//! proxy on 127.0.0.1. These tests wait on minute boundaries (CronJob schedules), so each
//! deadline is generous; they poll, never sleep for a fixed time. The simulator runs in the
//! test process: the runtime has worker threads so it keeps answering while a test blocks on
//! helm, kubectl or the scripted browser.

// A test (or benchmark) fails by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::eventually;
use common::operator::Operator;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use sforg_operator::crd::{SalesforceOrg, TokenState};
use sforg_simulator::{DemoOptions, Endpoint};

const OPERATOR_IMAGE: &str = "localhost/sforg/sforg-operator";
const BACKUP_IMAGE: &str = "localhost/sforg/backup-job:dev";
/// A pod start, a rollout, a leader election: slow on a busy 2-core machine, never this slow.
const POD: Duration = Duration::from_secs(180);
/// Long enough for a minute boundary, the Job it starts and a busy machine.
const MINUTE: Duration = Duration::from_secs(150);

// ---- the node cluster -----------------------------------------------------------------------

/// True when these tests are to be left out: `SFORG_SKIP_NODE_TESTS=1`, which scripts/test.sh
/// sets for its main run (it runs this file on its own, next to it, against the node) and a
/// person sets on a machine without root.
fn skipped() -> bool {
    let skip = std::env::var("SFORG_SKIP_NODE_TESTS").as_deref() == Ok("1");
    if skip {
        eprintln!("node tests skipped (SFORG_SKIP_NODE_TESTS=1)");
    }
    skip
}

/// The control plane with a node, started by scripts/test.sh.
fn node_dir() -> PathBuf {
    let dir = std::env::var("SFORG_NODE_DIR").unwrap_or_else(|_| {
        panic!(
            "SFORG_NODE_DIR is not set: run the tests with scripts/test.sh, which starts a \
             control plane with a real node (scripts/control-plane.sh start --with-node DIR)"
        )
    });
    PathBuf::from(dir)
}

fn kubeconfig() -> PathBuf {
    node_dir().join("kubeconfig")
}

/// The API server's loopback port (what in-cluster clients are pointed at).
fn apiserver_port() -> String {
    let components = std::fs::read_to_string(node_dir().join("components")).expect("components");
    components
        .lines()
        .find_map(|l| l.strip_prefix("api_port="))
        .expect("api_port in components")
        .to_owned()
}

fn tool(name: &str) -> PathBuf {
    let dir = std::env::var("SFORG_CONTROL_PLANE_BIN").expect("SFORG_CONTROL_PLANE_BIN");
    PathBuf::from(dir).join(name)
}

/// Runs helm or kubectl against the node cluster; panics with its output on failure.
fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(tool(program))
        .args(args)
        .env("KUBECONFIG", kubeconfig())
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{program} {args:?} failed:\n{out}\n{err}"
    );
    out
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// An operator installed from the chart into the test's namespace (watching only it), with
/// the simulator seeded for its callback URL, and the simulator's CA in a ConfigMap.
struct Release {
    op: Operator,
    name: String,
    metrics_port: u16,
    ca_file: PathBuf,
}

impl Release {
    async fn install(prefix: &str) -> Release {
        let callback_port = free_port();
        let metrics_port = free_port();
        let public_url = format!("http://127.0.0.1:{callback_port}");
        let options = DemoOptions {
            redirect_uris: vec![format!("{public_url}/oauth/callback")],
            rotation: true,
            ..DemoOptions::default()
        };
        let op = Operator::prepare_in(&kubeconfig(), prefix, options).await;
        let dir = std::env::temp_dir().join(format!("sforg-node-{}", op.ns));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let ca_file = dir.join("sim-ca.pem");
        std::fs::write(&ca_file, op.sim.ca_pem()).expect("write the CA");
        let configmaps: Api<ConfigMap> = Api::namespaced(op.client.clone(), &op.ns);
        let ca: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "salesforce-ca"},
            "data": {"ca.crt": op.sim.ca_pem()},
        }))
        .expect("configmap");
        configmaps
            .create(&PostParams::default(), &ca)
            .await
            .expect("create the CA ConfigMap");

        let values = json!({
            "image": {"repository": OPERATOR_IMAGE, "tag": "dev", "pullPolicy": "Never"},
            "crds": {"install": false},
            "watchNamespaces": [op.ns],
            "hostNetwork": true,
            "callback": {"port": callback_port},
            "metrics": {"port": metrics_port},
            // Loopback over plain http: the chart's publicUrl insists on https.
            "extraArgs": [format!("--public-url={public_url}")],
            "logFormat": "text",
            "salesforce": {
                "proxy": op.sim.proxy_url(),
                "timeout": "10s",
                "extraCA": {"configMap": "salesforce-ca", "key": "ca.crt"},
            },
            // No pod network here: in-cluster clients go to the API server's loopback address.
            "extraEnv": [
                {"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
                {"name": "KUBERNETES_SERVICE_PORT", "value": apiserver_port()},
            ],
        });
        let values_file = dir.join("values.json");
        std::fs::write(&values_file, values.to_string()).expect("values");
        let name = "sforg".to_owned();
        run(
            "helm",
            &[
                "install",
                &name,
                &format!("{}/charts/sforg-operator", env!("CARGO_MANIFEST_DIR")),
                "-n",
                &op.ns,
                "-f",
                values_file.to_str().expect("path"),
            ],
        );
        let release = Release {
            op,
            name,
            metrics_port,
            ca_file,
        };
        release.wait_available().await;
        release
    }

    fn deployment_name(&self) -> String {
        format!("{}-sforg-operator", self.name)
    }

    fn client(&self) -> &Client {
        &self.op.client
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client().clone(), &self.op.ns)
    }

    /// Waits for the Deployment to be rolled out and available (its readiness probe passed),
    /// and returns its one Ready pod.
    async fn wait_available(&self) -> Pod {
        let deployments: Api<Deployment> = Api::namespaced(self.client().clone(), &self.op.ns);
        let name = self.deployment_name();
        eventually("the operator Deployment to be available", POD, || {
            let deployments = deployments.clone();
            let name = name.clone();
            async move {
                let d = deployments.get(&name).await.ok()?;
                let status = d.status?;
                let want = d.spec?.replicas.unwrap_or(1);
                let done = status.observed_generation == d.metadata.generation
                    && status.updated_replicas == Some(want)
                    && status.available_replicas == Some(want)
                    && status.replicas == Some(want);
                done.then_some(())
            }
        })
        .await;
        let pods = self.pods();
        eventually("one Ready operator pod", POD, || {
            let pods = pods.clone();
            async move {
                let list = pods
                    .list(&ListParams::default().labels("app.kubernetes.io/name=sforg-operator"))
                    .await
                    .ok()?;
                let ready: Vec<Pod> = list
                    .items
                    .into_iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none() && pod_ready(p))
                    .collect();
                (ready.len() == 1).then(|| ready[0].clone())
            }
        })
        .await
    }

    /// Waits until `pod` holds the leader Lease (its identity is `<pod>_<pid>`).
    async fn wait_leader(&self, pod: &str) {
        let leases: Api<Lease> = Api::namespaced(self.client().clone(), &self.op.ns);
        let lease = format!("{}-leader", self.deployment_name());
        eventually(&format!("{pod} to lead ({lease})"), POD, || {
            let leases = leases.clone();
            let lease = lease.clone();
            async move {
                let l = leases.get(&lease).await.ok()?;
                let holder = l.spec?.holder_identity?;
                holder.starts_with(&format!("{pod}_")).then_some(())
            }
        })
        .await;
    }

    /// The operator's own log, through the API server and the kubelet.
    fn logs(&self, pod: &str) -> String {
        run("kubectl", &["-n", &self.op.ns, "logs", pod, "--tail=-1"])
    }

    async fn wait_state(&self, org: &str, state: TokenState, timeout: Duration) -> SalesforceOrg {
        let orgs = self.op.orgs();
        eventually(&format!("{org} to be {state:?}"), timeout, || {
            let orgs = orgs.clone();
            async move {
                let o = orgs.get(org).await.ok()?;
                (o.status.as_ref()?.state == Some(state)).then_some(o)
            }
        })
        .await
    }

    /// The web org `name` with tokens seeded in its Secret and CronJobs labelled with its
    /// name as dependents.
    async fn connected_org(&self, name: &str) {
        self.op
            .create_web_org_with(
                name,
                json!({"cronJobSelector": {"matchLabels": {"orgtokens.dev/org": name}}}),
            )
            .await;
        self.op.seed_tokens(&format!("{name}-token"), name).await;
    }

    /// An admin revokes the demo user's tokens in Salesforce; a check is asked for, and the
    /// org turns Expired.
    async fn revoke_and_wait_expired(&self, org: &str) -> SalesforceOrg {
        self.op
            .sim
            .control()
            .revoke_user_tokens(&self.op.demo.user.username, None)
            .expect("revoke");
        self.op.request_check(org).await;
        self.wait_state(org, TokenState::Expired, POD).await
    }

    fn uninstall(&self) {
        run(
            "helm",
            &[
                "uninstall",
                &self.name,
                "-n",
                &self.op.ns,
                "--wait",
                "--timeout",
                "120s",
            ],
        );
    }
}

impl Drop for Release {
    /// A failed test still removes its pods (the namespace goes too), so the node is clean.
    fn drop(&mut self) {
        let _ = Command::new(tool("kubectl"))
            .args(["delete", "namespace", &self.op.ns, "--wait=false"])
            .env("KUBECONFIG", kubeconfig())
            .output();
        if let Some(dir) = self.ca_file.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

// ---- the chart ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_runs_the_operator_image_as_a_restricted_pod_that_leads_and_reconciles() {
    if skipped() {
        return;
    }
    let release = Release::install("node-chart").await;
    let pod = release.wait_available().await;
    let pod_name = pod.name_any();

    // The container runs as the chart says: non-root 65532, seccomp, no privilege, no
    // capabilities, read-only root; seen from inside the running process.
    let status = run(
        "kubectl",
        &[
            "-n",
            &release.op.ns,
            "exec",
            &pod_name,
            "--",
            "/sforg-operator",
            "--version",
        ],
    );
    assert!(status.contains("sforg-operator"), "{status}");
    let spec = pod.spec.as_ref().expect("pod spec");
    let container = &spec.containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some("localhost/sforg/sforg-operator:dev")
    );
    let sc = container
        .security_context
        .as_ref()
        .expect("securityContext");
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
        Some(vec!["ALL".to_owned()])
    );
    let proc_status = node_process_status(&release, &pod_name);
    assert!(
        proc_status.contains("Uid:\t65532\t65532\t65532\t65532"),
        "{proc_status}"
    );
    assert!(
        proc_status.contains("CapEff:\t0000000000000000"),
        "{proc_status}"
    );
    assert!(proc_status.contains("NoNewPrivs:\t1"), "{proc_status}");
    assert!(proc_status.contains("Seccomp:\t2"), "{proc_status}");

    // Pod Security "restricted" admits this very pod spec, but for host networking (the one
    // thing this loopback-only test node adds); and refuses it with host networking, so the
    // check is live.
    pod_security_restricted_admits(release.client(), spec).await;

    // Its probes pass (the Deployment is available), from the node too.
    let readyz = reqwest::get(format!("http://127.0.0.1:{}/readyz", release.metrics_port))
        .await
        .expect("readyz");
    assert!(readyz.status().is_success(), "{}", readyz.status());

    // It leads, and reconciles as its ServiceAccount: an org becomes Valid and its backup
    // CronJob is held when the token is revoked, with no other operator running.
    release.wait_leader(&pod_name).await;
    release.connected_org("acme").await;
    release.wait_state("acme", TokenState::Valid, POD).await;
    release
        .op
        .create_cronjob("acme-nightly", &[("orgtokens.dev/org", "acme")], false)
        .await;
    release.revoke_and_wait_expired("acme").await;
    eventually("the CronJob to be held", POD, || async {
        let (suspended, holders) = release.op.cronjob_hold("acme-nightly").await;
        (suspended && holders.is_some()).then_some(())
    })
    .await;

    let log = release.logs(&pod_name);
    assert!(log.contains("became the leader"), "{log}");
    let tokens = release.op.secret_data("acme-token").await;
    for key in ["access_token", "refresh_token"] {
        let token = tokens.get(key).unwrap_or_else(|| panic!("no {key}"));
        assert!(!log.contains(token.as_str()), "the {key} reached the log");
    }
    release.uninstall();
}

/// /proc/PID/status of the operator's process, read on the node (the image has no shell).
fn node_process_status(release: &Release, pod: &str) -> String {
    let pods = run(
        "kubectl",
        &[
            "-n",
            &release.op.ns,
            "get",
            "pod",
            pod,
            "-o",
            "jsonpath={.status.containerStatuses[0].containerID}",
        ],
    );
    let id = pods.trim().trim_start_matches("containerd://").to_owned();
    let sock = std::env::var("SFORG_NODE_CONTAINERD").unwrap_or_else(|_| {
        node_dir()
            .join("node/containerd/containerd.sock")
            .display()
            .to_string()
    });
    let output = Command::new("ctr")
        .args(["--address", &sock, "-n", "k8s.io", "tasks", "ls"])
        .output()
        .expect("ctr tasks ls");
    let tasks = String::from_utf8_lossy(&output.stdout);
    let pid = tasks
        .lines()
        .find(|l| l.starts_with(&id))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("no task {id} in:\n{tasks}"))
        .to_owned();
    std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read the process status")
}

async fn pod_security_restricted_admits(
    client: &Client,
    spec: &k8s_openapi::api::core::v1::PodSpec,
) {
    let ns = common::namespace(client, "node-psa").await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let label = json!({"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest"}}});
    namespaces
        .patch(&ns, &PatchParams::default(), &Patch::Merge(&label))
        .await
        .expect("label the namespace");
    let mut spec = serde_json::to_value(spec).expect("spec");
    // The node binding and the token volume are filled in by the scheduler and admission;
    // the ServiceAccount lives in the release namespace.
    for field in [
        "nodeName",
        "volumes",
        "serviceAccountName",
        "serviceAccount",
    ] {
        spec.as_object_mut().expect("spec").remove(field);
    }
    if let Some(containers) = spec["containers"].as_array_mut() {
        for c in containers {
            c.as_object_mut().expect("container").remove("volumeMounts");
        }
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let with_host_network: Pod =
        serde_json::from_value(json!({"metadata": {"name": "operator"}, "spec": spec}))
            .expect("pod");
    let refused = pods.create(&dry, &with_host_network).await;
    let message = format!("{refused:?}");
    assert!(
        refused.is_err() && message.contains("host namespaces"),
        "restricted must refuse host networking: {message}"
    );
    let obj = spec.as_object_mut().expect("spec");
    obj.remove("hostNetwork");
    obj.remove("dnsPolicy");
    // Host networking defaulted each hostPort to its containerPort.
    for c in obj["containers"].as_array_mut().expect("containers") {
        for port in c["ports"].as_array_mut().into_iter().flatten() {
            port.as_object_mut().expect("port").remove("hostPort");
        }
    }
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "operator"}, "spec": spec}))
        .expect("pod");
    if let Err(e) = pods.create(&dry, &pod).await {
        panic!("Pod Security restricted refused the chart's pod: {e}");
    }
    let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
}

// ---- backups that really run and really stop -------------------------------------------------

/// A backup CronJob every minute: the example backup job reads the org's token Secret and
/// queries the org through the simulator's proxy, then takes `write_seconds` to write out.
async fn create_backup_cronjob(release: &Release, name: &str, org: &str, write_seconds: u32) {
    let op = &release.op;
    let cj: CronJob = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"orgtokens.dev/org": org}},
        "spec": {
            "schedule": "* * * * *",
            "concurrencyPolicy": "Forbid",
            // A resumed CronJob catches up on at most a run missed in the last 20 s.
            "startingDeadlineSeconds": 20,
            "successfulJobsHistoryLimit": 10,
            "failedJobsHistoryLimit": 10,
            "jobTemplate": {"spec": {
                "backoffLimit": 0,
                "activeDeadlineSeconds": 240,
                "template": {"spec": {
                    "hostNetwork": true,
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 5,
                    "securityContext": {"runAsNonRoot": true, "runAsUser": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": "backup",
                        "image": BACKUP_IMAGE,
                        "imagePullPolicy": "Never",
                        "env": [
                            {"name": "HTTPS_PROXY", "value": op.sim.proxy_url()},
                            {"name": "SALESFORCE_CA_FILE", "value": "/etc/salesforce-ca/ca.crt"},
                            {"name": "BACKUP_WRITE_SECONDS", "value": write_seconds.to_string()},
                        ],
                        "securityContext": {"allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}},
                        "volumeMounts": [
                            {"name": "token", "mountPath": "/var/run/secrets/salesforce", "readOnly": true},
                            {"name": "ca", "mountPath": "/etc/salesforce-ca", "readOnly": true},
                        ],
                    }],
                    "volumes": [
                        {"name": "token", "secret": {"secretName": format!("{org}-token")}},
                        {"name": "ca", "configMap": {"name": "salesforce-ca"}},
                    ],
                }},
            }},
        }
    }))
    .expect("cronjob");
    op.cronjobs()
        .create(&PostParams::default(), &cj)
        .await
        .expect("create the backup CronJob");
}

fn jobs(release: &Release) -> Api<Job> {
    Api::namespaced(release.client().clone(), &release.op.ns)
}

/// The CronJob's Jobs, oldest first.
async fn backup_jobs(release: &Release, cronjob: &str) -> Vec<Job> {
    let mut list: Vec<Job> = jobs(release)
        .list(&ListParams::default())
        .await
        .expect("list jobs")
        .items
        .into_iter()
        .filter(|j| {
            j.owner_references()
                .iter()
                .any(|o| o.kind == "CronJob" && o.name == cronjob)
        })
        .collect();
    list.sort_by_key(|j| j.creation_timestamp().map(|t| t.0));
    list
}

fn job_condition(job: &Job, type_: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

fn created(job: &Job) -> Timestamp {
    job.creation_timestamp().expect("creationTimestamp").0
}

/// Waits for a Job of `cronjob` created after `after` and returns it once it has a pod.
async fn next_job(release: &Release, cronjob: &str, after: Timestamp) -> Job {
    eventually(
        &format!("a Job of {cronjob} created after {after}"),
        MINUTE,
        || async {
            backup_jobs(release, cronjob)
                .await
                .into_iter()
                .find(|j| created(j) > after)
        },
    )
    .await
}

async fn wait_job(release: &Release, name: &str, condition: &str) -> Job {
    let jobs = jobs(release);
    eventually(&format!("Job {name} to be {condition}"), MINUTE, || {
        let jobs = jobs.clone();
        async move {
            let job = jobs.get(name).await.ok()?;
            if job_condition(&job, "Failed") && condition != "Failed" {
                panic!("Job {name} failed: {:?}", job.status);
            }
            job_condition(&job, condition).then_some(job)
        }
    })
    .await
}

fn job_log(release: &Release, job: &str) -> String {
    run(
        "kubectl",
        &["-n", &release.op.ns, "logs", &format!("job/{job}")],
    )
}

fn queries(release: &Release) -> u64 {
    release
        .op
        .sim
        .control()
        .call_counts()
        .endpoint(Endpoint::Query)
}

fn transition_time(org: &SalesforceOrg, type_: &str) -> Timestamp {
    org.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .map(|c| c.last_transition_time.0)
        .unwrap_or_else(|| panic!("no {type_} condition"))
}

/// Follows the re-auth link in status the way a person's browser does (scripts/lib/open-link.py).
fn log_in_through_link(release: &Release, link: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/lib/open-link.py");
    let output = Command::new("python3")
        .arg(script)
        .args([
            link,
            release.op.sim.proxy_url(),
            release.ca_file.to_str().expect("path"),
            &release.op.demo.user.username,
            &release.op.demo.password,
        ])
        .output()
        .expect("run open-link.py");
    assert!(
        output.status.success(),
        "the login through the link failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_jobs_stop_while_the_token_is_expired_and_run_again_after_a_login() {
    if skipped() {
        return;
    }
    let release = Release::install("node-backup").await;
    let first_pod = release.wait_available().await.name_any();
    release.wait_leader(&first_pod).await;
    release.connected_org("acme").await;
    release.wait_state("acme", TokenState::Valid, POD).await;
    let mut timeline = Vec::new();

    // 1. Every minute a backup Job runs with the token the operator keeps, and succeeds.
    //    This one takes 25 s to write its backup out: the token expires while it runs.
    let start = Timestamp::now();
    create_backup_cronjob(&release, "acme-backup", "acme", 25).await;
    let running = next_job(
        &release,
        "acme-backup",
        start - SignedDuration::from_secs(1),
    )
    .await;
    let running_name = running.name_any();
    eventually("the first backup to query the org", MINUTE, || async {
        (queries(&release) >= 1).then_some(())
    })
    .await;

    // 2. An admin revokes the token; the operator sees it and the org turns Expired.
    let expired = release.revoke_and_wait_expired("acme").await;
    let expired_at = transition_time(&expired, "TokenValid");
    let queries_at_expiry = queries(&release);
    eventually("the CronJob to be suspended", POD, || async {
        release.op.cronjob_hold("acme-backup").await.0.then_some(())
    })
    .await;

    // 3. The Job that was already running is left alone: it finishes (its query was made
    //    before the revocation) and is not deleted.
    let done = wait_job(&release, &running_name, "Complete").await;
    let log = job_log(&release, &running_name);
    assert!(log.contains("backup: done, 3 records"), "{log}");
    timeline.push(format!(
        "running Job {} left alone, completed {}",
        running_name,
        done.status
            .as_ref()
            .and_then(|s| s.completion_time.as_ref())
            .map(|t| t.0.to_string())
            .unwrap_or_default()
    ));

    // 4. From the Expired transition on: no new Job and no backup call, across a minute
    //    boundary and then some. Meanwhile the operator pod is killed; its Deployment
    //    restarts it and the new pod keeps the hold.
    let pods = release.pods();
    pods.delete(&first_pod, &DeleteParams::default().grace_period(0))
        .await
        .expect("kill the operator pod");
    let quiet_until = Instant::now() + Duration::from_secs(75);
    let second_pod = release.wait_available().await.name_any();
    assert_ne!(
        second_pod, first_pod,
        "the Deployment replaced the killed pod"
    );
    release.wait_leader(&second_pod).await;
    while Instant::now() < quiet_until {
        let late: Vec<String> = backup_jobs(&release, "acme-backup")
            .await
            .iter()
            .filter(|j| created(j) > expired_at)
            .map(|j| j.name_any())
            .collect();
        assert!(
            late.is_empty(),
            "Jobs created while the token was expired: {late:?}"
        );
        assert_eq!(
            queries(&release),
            queries_at_expiry,
            "a backup called Salesforce while the token was expired"
        );
        let (suspended, holders) = release.op.cronjob_hold("acme-backup").await;
        assert!(suspended && holders.is_some(), "the hold was lost");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let last_job_before = backup_jobs(&release, "acme-backup")
        .await
        .last()
        .map(created)
        .expect("a Job");
    let org = release.wait_state("acme", TokenState::Expired, POD).await;
    let link = org
        .status
        .as_ref()
        .and_then(|s| s.reauth.as_ref())
        .map(|r| r.url.clone())
        .expect("a re-auth link in status");

    // 5. A person logs in through the link (served by the restarted pod); the CronJob is
    //    resumed and the next minute's Job runs with the new token and succeeds.
    log_in_through_link(&release, &link);
    let valid = release.wait_state("acme", TokenState::Valid, POD).await;
    let valid_at = transition_time(&valid, "TokenValid");
    eventually("the CronJob to be resumed", POD, || async {
        let (suspended, holders) = release.op.cronjob_hold("acme-backup").await;
        (!suspended && holders.is_none()).then_some(())
    })
    .await;
    let next = next_job(&release, "acme-backup", expired_at).await;
    let next_name = next.name_any();
    wait_job(&release, &next_name, "Complete").await;
    let log = job_log(&release, &next_name);
    assert!(log.contains("backup: done, 3 records"), "{log}");
    assert!(queries(&release) > queries_at_expiry);

    timeline.push(format!(
        "expiry {expired_at} -> last Job created before it {last_job_before} ({}s earlier)",
        expired_at.duration_since(last_job_before).as_secs()
    ));
    timeline.push(format!(
        "re-login {valid_at} -> first Job {} ({}s later)",
        created(&next),
        created(&next).duration_since(valid_at).as_secs()
    ));
    // The figures the README quotes; visible with --nocapture.
    println!("backup Job timeline:\n  {}", timeline.join("\n  "));
    release.uninstall();
}
