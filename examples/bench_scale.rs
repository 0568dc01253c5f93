//! Benchmark: the operator process (release build) at 0, 1k and 10k orgs, each with its token
//! Secret and two CronJobs: resident memory, cold-start convergence, and Salesforce calls.
//!
//! Run with `scripts/bench.sh scale` (it builds the release binary and starts the control plane).
//! Prints figures; asserts nothing.

// A test (or benchmark) fails by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{BenchResult, client, delta, install_crd, writes};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Client;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use sforg_operator::crd::{SalesforceOrg, TokenState};
use sforg_simulator::{DemoSeed, Endpoint, Simulator, UserSpec};

const NS: &str = "bench-scale";

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

async fn valid_count(orgs: &Api<SalesforceOrg>) -> usize {
    // Served from the API server's watch cache, so polling does not load etcd.
    let Ok(list) = orgs.list(&ListParams::default().match_any()).await else {
        return 0;
    };
    list.items
        .iter()
        .filter(|o| o.status.as_ref().and_then(|s| s.state) == Some(TokenState::Valid))
        .count()
}

async fn converge(orgs: &Api<SalesforceOrg>, n: usize) -> BenchResult<Duration> {
    let start = Instant::now();
    while valid_count(orgs).await < n {
        if start.elapsed() > Duration::from_secs(900) {
            return Err(format!("{n} orgs did not converge in 15 minutes").into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(start.elapsed())
}

async fn create_orgs(
    client: &Client,
    sim: &Simulator,
    demo: &DemoSeed,
    from: usize,
    to: usize,
) -> BenchResult<()> {
    let orgs: Api<SalesforceOrg> = Api::namespaced(client.clone(), NS);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let cjs: Api<CronJob> = Api::namespaced(client.clone(), NS);
    stream::iter(from..to)
        .map(|i| {
            let (orgs, secrets, cjs) = (orgs.clone(), secrets.clone(), cjs.clone());
            async move {
                let name = format!("org-{i:05}");
                // One user per org: Salesforce keeps at most 5 grants per user and app.
                let user = format!("backup{i}@acme.example");
                sim.create_user(UserSpec::new(&demo.org.label, &user, "Bench-Passw0rd!"))?;
                let t = sim.mint_tokens(&demo.app.client_id, &user)?;
                secrets
                    .create(&PostParams::default(), &serde_json::from_value(json!({
                        "metadata": {"name": format!("{name}-token"), "labels": {
                            "app.kubernetes.io/managed-by": "sforg-operator", "orgtokens.dev/org": name}},
                        "stringData": {"access_token": t.access_token, "refresh_token": t.refresh_token,
                            "instance_url": t.instance_url, "issued_at": t.issued_at}}))?)
                    .await?;
                for j in 0..2 {
                    cjs.create(&PostParams::default(), &serde_json::from_value(json!({
                        "metadata": {"name": format!("{name}-backup-{j}"), "labels": {"orgtokens.dev/org": name}},
                        "spec": {"schedule": "0 2 * * *", "jobTemplate": {"spec": {"template": {"spec": {
                            "restartPolicy": "Never", "containers": [{"name": "b", "image": "example.com/b:1"}]}}}}}}))?)
                        .await?;
                }
                orgs.create(&PostParams::default(), &serde_json::from_value(json!({
                    "apiVersion": "orgtokens.dev/v1alpha1", "kind": "SalesforceOrg", "metadata": {"name": name},
                    "spec": {"loginUrl": "https://login.salesforce.com",
                        "auth": {"webServer": {"clientId": demo.app.client_id,
                            "clientSecretRef": {"name": "app", "key": "client-secret"}}},
                        "tokenSecretRef": {"name": format!("{name}-token")},
                        "checkInterval": "1h",
                        "dependents": {"cronJobSelector": {"matchLabels": {"orgtokens.dev/org": name}}}}}))?)
                    .await?;
                Ok::<_, Box<dyn std::error::Error>>(())
            }
        })
        .buffer_unordered(24)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> BenchResult<()> {
    let client = client().await?;
    install_crd(&client).await?;
    let sim = Simulator::start().await?;
    let demo = sim.seed_demo()?;
    sim.set_rotation(&demo.app.client_id, false)?;
    let ca = std::env::temp_dir().join(format!("sforg-bench-ca-{}.pem", std::process::id()));
    sim.write_ca_pem(&ca)?;
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": NS}}))?,
    )
    .await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    secrets
        .create(&PostParams::default(), &serde_json::from_value(json!({
            "metadata": {"name": "app"}, "stringData": {"client-secret": demo.app.client_secret}}))?)
        .await?;
    let orgs: Api<SalesforceOrg> = Api::namespaced(client.clone(), NS);
    let big: usize = std::env::var("SFORG_BENCH_ORGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let small = big.min(1000);

    println!("| figure | value |");
    println!("|---|---|");
    let op = start_operator(&sim, &ca)?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (idle, _) = rss(op.id());
    println!("| RSS idle (caches synced, 0 orgs) | {idle:.1} MiB |");
    stop(op)?;

    let started = Instant::now();
    create_orgs(&client, &sim, &demo, 0, small).await?;
    println!(
        "| creating {small} orgs + Secrets + {} CronJobs (bench client) | {:.1} s |",
        2 * small,
        started.elapsed().as_secs_f64()
    );
    let calls = sim.call_counts();
    let op = start_operator(&sim, &ca)?;
    let took = converge(&orgs, small).await?;
    let (now, peak) = rss(op.id());
    let sf = sim.call_counts();
    let per_org = (sf.endpoint(Endpoint::Userinfo) + sf.endpoint(Endpoint::Token)
        - calls.endpoint(Endpoint::Userinfo)
        - calls.endpoint(Endpoint::Token)) as f64
        / small as f64;
    println!(
        "| cold start: {small} orgs Valid after the operator starts | {:.1} s |",
        took.as_secs_f64()
    );
    println!("| Salesforce calls per org in that first check | {per_org:.2} |");
    println!("| RSS at {small} orgs (peak during the cold start) | {now:.1} MiB ({peak:.1} MiB) |");
    stop(op)?;

    if big > small {
        let started = Instant::now();
        create_orgs(&client, &sim, &demo, small, big).await?;
        println!(
            "| creating {} more orgs (bench client) | {:.1} s |",
            big - small,
            started.elapsed().as_secs_f64()
        );
        let op = start_operator(&sim, &ca)?;
        let took = converge(&orgs, big).await?;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (now, peak) = rss(op.id());
        println!(
            "| cold start: {big} orgs Valid after the operator starts | {:.1} s |",
            took.as_secs_f64()
        );
        println!(
            "| RSS at {big} orgs, steady (peak during the initial list and checks) | {now:.1} MiB ({peak:.1} MiB) |"
        );
        stop(op)?;
        restart(&client, &sim, &ca, big, Duration::from_secs(3600)).await?;
    }
    let _ = std::fs::remove_file(&ca);
    Ok(())
}

/// The operator's reconciles so far, from its `/metrics` (0 until it serves them).
async fn reconciles() -> f64 {
    let Ok(resp) = reqwest::get("http://127.0.0.1:9090/metrics").await else {
        return 0.0;
    };
    let text = resp.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("sforg_reconcile_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A restart with every org Valid and its status current: how long until every org has been
/// reconciled once (scheduled), and the Salesforce calls and API writes of the first minute,
/// against the steady rate of `n` orgs checked once per `interval`.
async fn restart(
    client: &Client,
    sim: &Simulator,
    ca: &PathBuf,
    n: usize,
    interval: Duration,
) -> BenchResult<()> {
    let writes_before = writes(client).await?;
    let calls_before = sim.call_counts();
    let started = Instant::now();
    let op = start_operator(sim, ca)?;
    while reconciles().await < n as f64 {
        if started.elapsed() > Duration::from_secs(300) {
            return Err(format!("{n} orgs were not all reconciled within 5 minutes").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let scheduled = started.elapsed();
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(started.elapsed())).await;
    let calls = sim.call_counts();
    let writes = delta(&writes_before, &writes(client).await?);
    let sf = calls.endpoint(Endpoint::Userinfo) + calls.endpoint(Endpoint::Token)
        - calls_before.endpoint(Endpoint::Userinfo)
        - calls_before.endpoint(Endpoint::Token);
    let steady = n as f64 * 60.0 / interval.as_secs_f64();
    println!(
        "| restart at {n} Valid orgs: every org reconciled (scheduled) after start | {:.1} s |",
        scheduled.as_secs_f64()
    );
    println!(
        "| restart: Salesforce calls in the first 60 s (steady rate {steady:.0}, bound 1.2x = {:.0}) | {sf} |",
        steady * 1.2
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
    stop(op)?;
    Ok(())
}
