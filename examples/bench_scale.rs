//! Benchmark: the operator process (release build) at 0, 1k and 10k orgs (each with its token
//! Secret and two CronJobs, one namespace, `checkInterval: 1h`), and optionally at 100k (each
//! with its token Secret and one CronJob, 1,000 orgs per namespace, `checkInterval: 15m`):
//! resident memory, cold-start convergence, the API server's own ceiling for status writes,
//! the requests a cold start makes per org, a restart (Salesforce calls and API writes of its
//! first minute), and the time from a failing check to the CronJob suspended while the rest of
//! the fleet is being checked.
//!
//! Orgs are created the way users create them: through `kubectl apply` (client-side) as run by
//! a GitOps tool, so each carries `kubectl.kubernetes.io/last-applied-configuration` (the whole
//! object again) and Argo CD's tracking label and annotation.
//!
//! Run with `scripts/bench.sh scale` (it builds the release binary and starts the control plane).
//! `SFORG_BENCH_ORGS=N` changes 10k; `SFORG_BENCH_HUGE=N` (for example 100000) adds the large
//! step. Prints figures; asserts nothing.

// A test (or benchmark) fails by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{BenchResult, client, delta, install_crd, requests, writes};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use sforg_operator::crd::{SalesforceOrg, TokenState};
use sforg_operator::reconcile::CHECK_ANNOTATION;
use sforg_simulator::{DemoSeed, Endpoint, Simulator, UserSpec};

/// The namespace of the 1k and 10k orgs.
const NS: &str = "bench-scale";
/// The Argo CD Application that "deploys" the orgs.
const ARGO_APP: &str = "salesforce-backups";

/// (current RSS, peak RSS) of a process, in MiB.
fn rss(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Where the operator serves /metrics (`SFORG_BENCH_METRICS_PORT`, 9090 by default).
fn metrics_addr() -> String {
    format!(
        "127.0.0.1:{}",
        env_usize("SFORG_BENCH_METRICS_PORT").unwrap_or(9090)
    )
}

fn start_operator(sim: &Simulator, ca: &PathBuf) -> BenchResult<Child> {
    let bin = std::env::var("SFORG_OPERATOR_BIN")
        .unwrap_or_else(|_| "target/release/sforg-operator".into());
    Ok(Command::new(bin)
        .args([
            "run",
            "--salesforce-proxy",
            sim.proxy_url(),
            "--extra-ca-file",
        ])
        .arg(ca)
        .env("RUST_LOG", "warn")
        .env("SFORG_METRICS_LISTEN", metrics_addr())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?)
}

/// Stops the operator as Kubernetes does (SIGTERM), so it releases its leader lease.
fn stop(mut op: Child) -> BenchResult<()> {
    Command::new("kill")
        .args(["-TERM", &op.id().to_string()])
        .status()?;
    op.wait()?;
    Ok(())
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name and state.
    (ticks(11) + ticks(12)) / 100.0
}

/// The control plane's processes (from the `pids` file next to the kubeconfig, written by
/// `scripts/control-plane.sh`), with this bench and the operator: name and pid.
fn processes(operator: u32) -> Vec<(String, String)> {
    let mut out = vec![
        ("operator".to_owned(), operator.to_string()),
        ("bench client + simulator".to_owned(), "self".to_owned()),
    ];
    let pids = std::env::var("SFORG_TEST_KUBECONFIG")
        .ok()
        .map(PathBuf::from)
        .and_then(|k| std::fs::read_to_string(k.with_file_name("pids")).ok())
        .unwrap_or_default();
    for line in pids.lines() {
        if let Some((pid, name)) = line.split_once(' ') {
            out.push((name.trim().to_owned(), pid.trim().to_owned()));
        }
    }
    out
}

/// A set of orgs created alike.
#[derive(Clone, Copy)]
struct Fleet {
    /// Namespace prefix; with `per_ns == 0` the one namespace [`NS`].
    prefix: &'static str,
    per_ns: usize,
    cronjobs: usize,
    interval: &'static str,
}

impl Fleet {
    fn ns(&self, i: usize) -> String {
        match i.checked_div(self.per_ns) {
            None => NS.into(),
            Some(group) => format!("{}-{group:03}", self.prefix),
        }
    }

    fn name(i: usize) -> String {
        format!("org-{i:06}")
    }

    /// Its own Salesforce user: Salesforce keeps at most 5 grants per user and app.
    fn user(&self, i: usize) -> String {
        format!("{}-{i}@acme.example", self.prefix)
    }

    /// The prefix of "namespace/name" keys of this fleet's orgs.
    fn key_prefix(&self) -> String {
        if self.per_ns == 0 {
            format!("{NS}/")
        } else {
            format!("{}-", self.prefix)
        }
    }
}

/// The org as `kubectl apply` (client-side), run by Argo CD, leaves it: the manifest with
/// Argo CD's tracking label and annotation, and the whole manifest again in
/// `last-applied-configuration`.
fn applied_org(ns: &str, name: &str, client_id: &str, interval: &str) -> Value {
    let mut manifest = json!({
        "apiVersion": "orgtokens.dev/v1alpha1", "kind": "SalesforceOrg",
        "metadata": {"name": name, "namespace": ns,
            "labels": {"app.kubernetes.io/instance": ARGO_APP},
            "annotations": {"argocd.argoproj.io/tracking-id":
                format!("{ARGO_APP}:orgtokens.dev/SalesforceOrg:{ns}/{name}")}},
        "spec": {"loginUrl": "https://login.salesforce.com",
            "auth": {"webServer": {"clientId": client_id,
                "clientSecretRef": {"name": "app", "key": "client-secret"}}},
            "tokenSecretRef": {"name": format!("{name}-token")},
            "checkInterval": interval,
            "dependents": {"cronJobSelector": {"matchLabels": {"orgtokens.dev/org": name}}}}});
    let last = format!("{manifest}\n");
    manifest["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] =
        json!(last);
    manifest
}

/// Creates a namespace (if missing) with the app's client secret in it.
async fn namespace(client: &Client, ns: &str, demo: &DemoSeed) -> BenchResult<()> {
    let nss: Api<Namespace> = Api::all(client.clone());
    fn ignore_exists<T>(r: Result<T, kube::Error>) -> Result<(), kube::Error> {
        match r {
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(e),
            Ok(_) => Ok(()),
        }
    }
    ignore_exists(
        nss.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
        )
        .await,
    )?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    ignore_exists(
        secrets
            .create(&PostParams::default(), &serde_json::from_value(json!({
                "metadata": {"name": "app"}, "stringData": {"client-secret": demo.app.client_secret}}))?)
            .await,
    )?;
    Ok(())
}

/// Creates orgs `from..to` of `fleet`, each with its own Salesforce user, token Secret and
/// CronJobs, `parallel` at a time, straight into the API server.
async fn create_orgs(
    client: &Client,
    sim: &Simulator,
    demo: &DemoSeed,
    fleet: Fleet,
    (from, to): (usize, usize),
    parallel: usize,
) -> BenchResult<()> {
    let namespaces: BTreeSet<String> = (from..to).map(|i| fleet.ns(i)).collect();
    for ns in &namespaces {
        namespace(client, ns, demo).await?;
    }
    stream::iter(from..to)
        .map(|i| {
            let ns = fleet.ns(i);
            let orgs: Api<SalesforceOrg> = Api::namespaced(client.clone(), &ns);
            let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
            let cjs: Api<CronJob> = Api::namespaced(client.clone(), &ns);
            async move {
                let name = Fleet::name(i);
                let user = fleet.user(i);
                sim.create_user(UserSpec::new(&demo.org.label, &user, "Bench-Passw0rd!"))?;
                let t = sim.mint_tokens(&demo.app.client_id, &user)?;
                secrets
                    .create(&PostParams::default(), &serde_json::from_value(json!({
                        "metadata": {"name": format!("{name}-token"), "labels": {
                            "app.kubernetes.io/managed-by": "sforg-operator", "orgtokens.dev/org": name}},
                        "stringData": {"access_token": t.access_token, "refresh_token": t.refresh_token,
                            "instance_url": t.instance_url, "issued_at": t.issued_at}}))?)
                    .await?;
                for j in 0..fleet.cronjobs {
                    cjs.create(&PostParams::default(), &serde_json::from_value(json!({
                        "metadata": {"name": format!("{name}-backup-{j}"), "labels": {"orgtokens.dev/org": name}},
                        "spec": {"schedule": "0 2 * * *", "jobTemplate": {"spec": {"template": {"spec": {
                            "restartPolicy": "Never", "containers": [{"name": "b", "image": "example.com/b:1"}]}}}}}}))?)
                        .await?;
                }
                let org = applied_org(&ns, &name, &demo.app.client_id, fleet.interval);
                orgs.create(&PostParams::default(), &serde_json::from_value(org)?)
                    .await?;
                Ok::<_, Box<dyn std::error::Error>>(())
            }
        })
        .buffer_unordered(parallel)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// The state of every org, by "namespace/name", kept by one watch (polling lists of 100k
/// objects would load the API server more than the operator does).
#[derive(Clone, Default)]
struct Tally(Arc<Mutex<HashMap<String, Option<TokenState>>>>);

impl Tally {
    fn spawn(client: &Client) -> Self {
        let tally = Tally::default();
        let states = tally.0.clone();
        let api: Api<SalesforceOrg> = Api::all(client.clone());
        tokio::spawn(async move {
            let mut events = watcher(api, watcher::Config::default()).boxed();
            while let Some(event) = events.next().await {
                let mut states = states.lock().unwrap();
                let key = |o: &SalesforceOrg| {
                    format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any())
                };
                match event {
                    Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                        states.insert(key(&o), o.status.and_then(|s| s.state));
                    }
                    Ok(watcher::Event::Delete(o)) => {
                        states.remove(&key(&o));
                    }
                    Ok(_) => {}
                    Err(_) => {
                        drop(states);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        tally
    }

    fn count(&self, prefix: &str, state: TokenState) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, s)| k.starts_with(prefix) && **s == Some(state))
            .count()
    }
}

async fn converge(tally: &Tally, prefix: &str, n: usize) -> BenchResult<Duration> {
    let start = Instant::now();
    while tally.count(prefix, TokenState::Valid) < n {
        if start.elapsed() > Duration::from_secs(3600) {
            return Err(format!("{n} orgs did not converge in an hour").into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(start.elapsed())
}

fn per_org(d: &BTreeMap<String, f64>, n: usize) -> String {
    d.iter()
        .filter(|(k, v)| **v >= n as f64 * 0.05 && !k.contains("leases"))
        .map(|(k, v)| format!("{k} {:.2}", v / n as f64))
        .collect::<Vec<_>>()
        .join(", ")
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn pct(v: &[Duration], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// Clears the status of the fleet's first `n` orgs, as if the operator had never seen them.
async fn clear_statuses(
    client: &Client,
    tally: &Tally,
    fleet: &Fleet,
    n: usize,
) -> BenchResult<()> {
    stream::iter(0..n)
        .map(|i| {
            let orgs: Api<SalesforceOrg> = Api::namespaced(client.clone(), &fleet.ns(i));
            async move {
                let patch = json!({"status": null});
                orgs.patch_status(
                    &Fleet::name(i),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
                .map(|_| ())
            }
        })
        .buffer_unordered(64)
        .try_collect::<Vec<_>>()
        .await?;
    while tally.count(&fleet.key_prefix(), TokenState::Valid) > 0 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// The API server's own ceiling: a bare client applying `n` status writes (the status the
/// operator writes for a Valid org) as fast as it can, on `n` orgs made for it and deleted
/// afterwards. Returns the best time over the concurrencies tried.
async fn ceiling(
    client: &Client,
    demo: &DemoSeed,
    status: &Value,
    n: usize,
) -> BenchResult<Duration> {
    let ns = "bench-ceiling";
    namespace(client, ns, demo).await?;
    let orgs: Api<SalesforceOrg> = Api::namespaced(client.clone(), ns);
    let started = Instant::now();
    stream::iter(0..n)
        .map(|i| {
            let orgs = orgs.clone();
            async move {
                let org = applied_org(ns, &Fleet::name(i), &demo.app.client_id, "1h");
                orgs.create(&PostParams::default(), &serde_json::from_value(org)?)
                    .await?;
                Ok::<_, Box<dyn std::error::Error>>(())
            }
        })
        .buffer_unordered(64)
        .try_collect::<Vec<_>>()
        .await?;
    println!(
        "| ceiling: creating {n} orgs for it (bench client) | {:.1} s |",
        secs(started.elapsed())
    );
    let mut best = Duration::MAX;
    for (round, parallel) in [32usize, 128].into_iter().enumerate() {
        let started = Instant::now();
        stream::iter(0..n)
            .map(|i| {
                let orgs = orgs.clone();
                let mut status = status.clone();
                // A different value each round, so each apply is a real write.
                status["lastCheckedAt"] = json!(format!("2030-01-01T00:00:{round:02}Z"));
                async move {
                    let body = json!({"apiVersion": "orgtokens.dev/v1alpha1", "kind": "SalesforceOrg",
                        "status": status});
                    orgs.patch_status(
                        &Fleet::name(i),
                        &PatchParams::apply("bench-ceiling").force(),
                        &Patch::Apply(&body),
                    )
                    .await?;
                    Ok::<_, Box<dyn std::error::Error>>(())
                }
            })
            .buffer_unordered(parallel)
            .try_collect::<Vec<_>>()
            .await?;
        let took = started.elapsed();
        println!(
            "| ceiling: a bare client applying {n} org statuses, {parallel} in flight | {:.1} s ({:.0}/s) |",
            secs(took),
            n as f64 / secs(took)
        );
        best = best.min(took);
    }
    orgs.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await?;
    Ok(best)
}

/// The operator's reconciles so far, from its `/metrics` (0 until it serves them).
async fn reconciles() -> f64 {
    let Ok(resp) = reqwest::get(format!("http://{}/metrics", metrics_addr())).await else {
        return 0.0;
    };
    let text = resp.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("sforg_reconcile_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A restart with every org Valid and its status current: how long until every org has been
/// reconciled once (scheduled), and the Salesforce calls (checks per second) and API writes of
/// the first minute, against the steady rate of `n` orgs checked once per `interval` (of
/// `all` orgs in the cluster). Returns the running operator.
async fn restart(
    client: &Client,
    sim: &Simulator,
    ca: &PathBuf,
    (n, all): (usize, usize),
    interval: Duration,
) -> BenchResult<Child> {
    let writes_before = writes(client).await?;
    let calls_before = sim.call_counts();
    let started = Instant::now();
    let op = start_operator(sim, ca)?;
    while reconciles().await < all as f64 {
        if started.elapsed() > Duration::from_secs(600) {
            return Err(format!("{all} orgs were not all reconciled within 10 minutes").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let scheduled = started.elapsed();
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(started.elapsed())).await;
    let window = started.elapsed();
    let calls = sim.call_counts();
    let writes = delta(&writes_before, &writes(client).await?);
    let sf = calls.endpoint(Endpoint::Userinfo) + calls.endpoint(Endpoint::Token)
        - calls_before.endpoint(Endpoint::Userinfo)
        - calls_before.endpoint(Endpoint::Token);
    let steady = n as f64 * 60.0 / interval.as_secs_f64();
    println!(
        "| restart at {all} Valid orgs: every org reconciled (scheduled) after start | {:.1} s |",
        secs(scheduled)
    );
    println!(
        "| restart: Salesforce calls in the first 60 s (steady rate {steady:.0}, bound 1.2x = {:.0}) | {sf} ({:.1} checks/s; needed {:.1}/s) |",
        steady * 1.2,
        sf as f64 / secs(window),
        n as f64 / interval.as_secs_f64()
    );
    let leases = |k: &String| k.contains("leases");
    let org_writes: Vec<String> = writes
        .iter()
        .filter(|(k, _)| !leases(k))
        .map(|(k, v)| format!("{v:.0} {k}"))
        .collect();
    println!(
        "| restart: API writes in the first 60 s (leader lease renewals aside) | {} |",
        if org_writes.is_empty() {
            "0".to_owned()
        } else {
            org_writes.join(", ")
        }
    );
    Ok(op)
}

/// While the operator checks the fleet at its steady rate: `tries` orgs spread over the fleet
/// lose their authorization one after the other and are asked for a check; the time from the
/// check request to the org's first CronJob suspended.
async fn failing_checks(
    client: &Client,
    sim: &Simulator,
    fleet: Fleet,
    n: usize,
    tries: usize,
) -> BenchResult<()> {
    let mut took = Vec::new();
    for t in 0..tries {
        let i = (t * n / tries + t) % n;
        let (ns, name) = (fleet.ns(i), Fleet::name(i));
        let orgs: Api<SalesforceOrg> = Api::namespaced(client.clone(), &ns);
        let cjs: Api<CronJob> = Api::namespaced(client.clone(), &ns);
        sim.revoke_user_tokens(&fleet.user(i), None)?;
        let started = Instant::now();
        let patch = json!({"metadata": {"annotations": {CHECK_ANNOTATION: format!("fail-{t}")}}});
        orgs.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        let cj = format!("{name}-backup-0");
        loop {
            let suspended = cjs
                .get(&cj)
                .await
                .ok()
                .and_then(|c| c.spec?.suspend)
                .unwrap_or(false);
            if suspended {
                break;
            }
            if started.elapsed() > Duration::from_secs(120) {
                return Err(format!("{cj} was not suspended within 2 minutes").into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        took.push(started.elapsed());
    }
    println!(
        "| failing check -> CronJob suspended while the fleet is checked, p50 / p99 / max ({tries} tries) | {:.0} / {:.0} / {:.0} ms |",
        pct(&took, 0.5),
        pct(&took, 0.99),
        pct(&took, 1.0)
    );
    Ok(())
}

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// One measured step: the operator started over `n` orgs of `fleet` that it has never seen.
async fn cold_start(
    client: &Client,
    sim: &Simulator,
    ca: &PathBuf,
    tally: &Tally,
    fleet: Fleet,
    n: usize,
    idle: f64,
) -> BenchResult<Duration> {
    let calls = sim.call_counts();
    let before = requests(client).await?;
    let op = start_operator(sim, ca)?;
    let procs = processes(op.id());
    let cpu_before: Vec<f64> = procs.iter().map(|(_, pid)| cpu_seconds(pid)).collect();
    let took = converge(tally, &fleet.key_prefix(), n).await?;
    let cpu: Vec<String> = procs
        .iter()
        .zip(&cpu_before)
        .map(|((name, pid), before)| format!("{name} {:.0} s", cpu_seconds(pid) - before))
        .collect();
    let requests = delta(&before, &requests(client).await?);
    let sf = sim.call_counts();
    let calls_per_org = (sf.endpoint(Endpoint::Userinfo) + sf.endpoint(Endpoint::Token)
        - calls.endpoint(Endpoint::Userinfo)
        - calls.endpoint(Endpoint::Token)) as f64
        / n as f64;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (now, peak) = rss(op.id());
    let orgs = tally.0.lock().unwrap().len();
    println!(
        "| cold start: {n} orgs Valid after the operator starts | {:.1} s ({:.0} orgs/s) |",
        secs(took),
        n as f64 / secs(took)
    );
    println!("| Salesforce calls per org in that first check | {calls_per_org:.2} |");
    println!(
        "| CPU used during the cold start ({:.0} s on 2 cores) | {} |",
        secs(took),
        cpu.join(", ")
    );
    println!(
        "| API requests per org during the cold start (all clients, >= 0.05/org) | {} |",
        per_org(&requests, n)
    );
    println!(
        "| RSS with {orgs} orgs in the cluster, steady (peak during the initial list and checks) | {now:.1} MiB ({peak:.1} MiB) |"
    );
    println!(
        "| RSS per org above idle | {:.2} KiB |",
        (now - idle) * 1024.0 / orgs as f64
    );
    stop(op)?;
    Ok(took)
}

#[tokio::main]
async fn main() -> BenchResult<()> {
    let bench_started = Instant::now();
    let client = client().await?;
    install_crd(&client).await?;
    let sim = Simulator::start().await?;
    let demo = sim.seed_demo()?;
    sim.set_rotation(&demo.app.client_id, false)?;
    let ca = std::env::temp_dir().join(format!("sforg-bench-ca-{}.pem", std::process::id()));
    sim.write_ca_pem(&ca)?;
    let tally = Tally::spawn(&client);
    let big = env_usize("SFORG_BENCH_ORGS").unwrap_or(10_000);
    let huge = env_usize("SFORG_BENCH_HUGE").unwrap_or(0);
    let small = big.min(1000);
    let fleet = Fleet {
        prefix: NS,
        per_ns: 0,
        cronjobs: 2,
        interval: "1h",
    };
    let step = |what: &str, started: Instant| {
        println!("| (step: {what}) | {:.0} s |", secs(started.elapsed()));
    };

    println!("| figure | value |");
    println!("|---|---|");
    let started = Instant::now();
    let op = start_operator(&sim, &ca)?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (idle, _) = rss(op.id());
    println!("| RSS idle (caches synced, 0 orgs) | {idle:.1} MiB |");
    stop(op)?;

    if let Ok(variants) = std::env::var("SFORG_BENCH_VARIANTS") {
        // Compares builds or settings of the operator (`label|binary|ENV=VALUE ...`, separated
        // by `;`) on the same orgs: after one cold start, each variant is restarted and its
        // RSS read once every org is reconciled. With `SFORG_BENCH_VARIANTS_COLD=1` every
        // status is cleared first, so each variant makes a whole cold start.
        let cold = std::env::var("SFORG_BENCH_VARIANTS_COLD").is_ok_and(|v| v == "1");
        let n = big;
        let spawn = |variant: &str| -> BenchResult<(String, Child)> {
            let mut parts = variant.split('|');
            let label = parts.next().unwrap_or_default().to_owned();
            let bin = parts.next().unwrap_or("target/release/sforg-operator");
            let envs: Vec<(&str, &str)> = parts
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .collect();
            let op = Command::new(bin)
                .args([
                    "run",
                    "--salesforce-proxy",
                    sim.proxy_url(),
                    "--extra-ca-file",
                ])
                .arg(&ca)
                .env("RUST_LOG", "warn")
                .env("SFORG_METRICS_LISTEN", metrics_addr())
                .envs(envs)
                .stdout(Stdio::null())
                .spawn()?;
            Ok((label, op))
        };
        // Each variant's own idle RSS (binaries differ in their allocator), with no orgs.
        let mut idles = HashMap::new();
        for variant in variants.split(';') {
            let (label, op) = spawn(variant)?;
            tokio::time::sleep(Duration::from_secs(3)).await;
            let (now, _) = rss(op.id());
            println!("| {label}: RSS idle | {now:.1} MiB |");
            idles.insert(label, now);
            stop(op)?;
        }
        create_orgs(&client, &sim, &demo, fleet, (0, n), 64).await?;
        let op = start_operator(&sim, &ca)?;
        converge(&tally, &fleet.key_prefix(), n).await?;
        stop(op)?;
        for variant in variants.split(';') {
            if cold {
                clear_statuses(&client, &tally, &fleet, n).await?;
            }
            let (label, mut op) = spawn(variant)?;
            let idle = idles.get(&label).copied().unwrap_or(idle);
            if cold {
                let took = converge(&tally, &fleet.key_prefix(), n).await?;
                println!(
                    "| {label}: cold start, {n} orgs Valid | {:.1} s |",
                    secs(took)
                );
                tokio::time::sleep(Duration::from_secs(5)).await;
            } else {
                let started = Instant::now();
                let base = reconciles().await;
                while reconciles().await < base + n as f64
                    && started.elapsed() < Duration::from_secs(300)
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
            let (now, peak) = rss(op.id());
            println!(
                "| {label}: RSS at {n} orgs after a restart (peak) | {now:.1} MiB ({peak:.1} MiB), {:.2} KiB per org above idle |",
                (now - idle) * 1024.0 / n as f64
            );
            Command::new("kill")
                .args(["-TERM", &op.id().to_string()])
                .status()?;
            op.wait()?;
        }
        return Ok(());
    }

    let created = Instant::now();
    create_orgs(&client, &sim, &demo, fleet, (0, small), 32).await?;
    println!(
        "| creating {small} orgs + Secrets + {} CronJobs (bench client) | {:.1} s |",
        2 * small,
        secs(created.elapsed())
    );
    cold_start(&client, &sim, &ca, &tally, fleet, small, idle).await?;
    step(&format!("idle and {small}"), started);

    if big > small {
        let started = Instant::now();
        // The API server's ceiling, with the status the operator wrote for a Valid org.
        let orgs: Api<SalesforceOrg> = Api::namespaced(client.clone(), NS);
        let status = serde_json::to_value(orgs.get(&Fleet::name(0)).await?.status)?;
        let ceiling = ceiling(&client, &demo, &status, big).await?;

        let created = Instant::now();
        create_orgs(&client, &sim, &demo, fleet, (small, big), 32).await?;
        println!(
            "| creating {} more orgs (bench client) | {:.1} s |",
            big - small,
            secs(created.elapsed())
        );
        let took = cold_start(&client, &sim, &ca, &tally, fleet, big, idle).await?;
        println!(
            "| cold start {big} / the ceiling's {big} status writes | {:.2}x |",
            secs(took) / secs(ceiling)
        );
        let op = restart(&client, &sim, &ca, (big, big), Duration::from_secs(3600)).await?;
        failing_checks(&client, &sim, fleet, big, 50).await?;
        stop(op)?;
        step(&format!("{big}"), started);
    }

    if huge > 0 {
        let started = Instant::now();
        let fleet = Fleet {
            prefix: "bench-huge",
            per_ns: 1000,
            cronjobs: 1,
            interval: "15m",
        };
        let created = Instant::now();
        let parallel = env_usize("SFORG_BENCH_CREATE_PARALLEL").unwrap_or(96);
        create_orgs(&client, &sim, &demo, fleet, (0, huge), parallel).await?;
        println!(
            "| creating {huge} orgs + Secrets + {huge} CronJobs in {} namespaces ({parallel} in flight) | {:.1} s |",
            huge.div_ceil(fleet.per_ns),
            secs(created.elapsed())
        );
        cold_start(&client, &sim, &ca, &tally, fleet, huge, idle).await?;
        let total = tally.0.lock().unwrap().len();
        let op = restart(&client, &sim, &ca, (huge, total), Duration::from_secs(900)).await?;
        let (now, peak) = rss(op.id());
        println!(
            "| RSS at {total} orgs after the restart's first minute (peak) | {now:.1} MiB ({peak:.1} MiB) |"
        );
        failing_checks(&client, &sim, fleet, huge, 50).await?;
        stop(op)?;
        step(&format!("{huge}"), started);
    }
    println!("| (whole bench) | {:.0} s |", secs(bench_started.elapsed()));
    let _ = std::fs::remove_file(&ca);
    Ok(())
}
