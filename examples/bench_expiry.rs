//! Benchmark: API writes and latency of an expiry and a recovery with N dependent CronJobs,
//! and of a steady-state check, counted from the kube-apiserver's own metrics.
//!
//! Run with `scripts/bench.sh` (it starts the control plane and sets SFORG_TEST_KUBECONFIG).
//! Prints a table; it asserts nothing, so a busy machine gives slower figures, not failures.

// A test (or benchmark) fails by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{BenchResult, client, delta, install_crd, writes};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use sforg_operator::controller::{self, Scope};
use sforg_operator::crd::{SalesforceOrg, TokenState};
use sforg_operator::reconcile::{CHECK_ANNOTATION, Settings};
use sforg_operator::salesforce::{HttpSalesforce, HttpSettings};
use sforg_simulator::{DemoSeed, Endpoint, Simulator};

/// Creates namespace `ns` and runs a controller scoped to it until the sender is used.
async fn operator_in(
    client: &Client,
    sim: &Simulator,
    ns: &str,
) -> BenchResult<(
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
)> {
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
    )
    .await?;
    let salesforce = HttpSalesforce::new(HttpSettings {
        proxy: Some(sim.proxy_url().to_owned()),
        extra_ca_pem: Some(sim.ca_pem().as_bytes().to_vec()),
        ..HttpSettings::default()
    })?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(controller::run(
        client.clone(),
        salesforce,
        Settings::default(),
        Scope {
            namespaces: vec![ns.to_owned()],
        },
        "bench".into(),
        async move {
            let _ = stopped.await;
        },
    ));
    Ok((stop, task))
}

async fn wait<F, Fut>(what: &str, mut f: F) -> BenchResult<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        if start.elapsed() > Duration::from_secs(60) {
            return Err(format!("timed out waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(start.elapsed())
}

async fn state(orgs: &Api<SalesforceOrg>) -> Option<TokenState> {
    orgs.get("acme").await.ok()?.status?.state
}

async fn all_suspended(cjs: &Api<CronJob>, n: usize, want: bool) -> bool {
    let Ok(list) = cjs.list(&Default::default()).await else {
        return false;
    };
    list.items
        .iter()
        .filter(|c| c.spec.as_ref().and_then(|s| s.suspend).unwrap_or(false) == want)
        .count()
        == n
}

struct Case {
    row: String,
    to_suspended: Duration,
    to_resumed: Duration,
}

async fn run_case(
    rep: usize,
    client: &Client,
    sim: &Simulator,
    demo: &DemoSeed,
    n: usize,
) -> BenchResult<Case> {
    let ns = format!("bench-{n}-{rep}-{}", std::process::id());
    let (stop, task) = operator_in(client, sim, &ns).await?;
    let cjs: Api<CronJob> = Api::namespaced(client.clone(), &ns);
    for i in 0..n {
        let cj: CronJob = serde_json::from_value(json!({
            "metadata": {"name": format!("backup-{i}"), "labels": {"orgtokens.dev/org": "acme"}},
            "spec": {"schedule": "0 2 * * *", "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "Never", "containers": [{"name": "b", "image": "example.com/b:1"}]}}}}}
        }))?;
        cjs.create(&PostParams::default(), &cj).await?;
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    secrets
        .create(&PostParams::default(), &serde_json::from_value(json!({
            "metadata": {"name": "app"}, "stringData": {"client-secret": demo.app.client_secret}}))?)
        .await?;
    let mint = |sim: &Simulator| sim.mint_tokens(&demo.app.client_id, &demo.user.username);
    let tokens = mint(sim)?;
    secrets
        .create(&PostParams::default(), &serde_json::from_value(json!({
            "metadata": {"name": "acme-token", "labels": {
                "app.kubernetes.io/managed-by": "sforg-operator", "orgtokens.dev/org": "acme"}},
            "stringData": {"access_token": tokens.access_token, "refresh_token": tokens.refresh_token,
                "instance_url": tokens.instance_url, "issued_at": tokens.issued_at}}))?)
        .await?;
    let orgs: Api<SalesforceOrg> = Api::namespaced(client.clone(), &ns);
    orgs.create(&PostParams::default(), &serde_json::from_value(json!({
        "apiVersion": "orgtokens.dev/v1alpha1", "kind": "SalesforceOrg", "metadata": {"name": "acme"},
        "spec": {"loginUrl": "https://login.salesforce.com",
            "auth": {"webServer": {"clientId": demo.app.client_id, "clientSecretRef": {"name": "app", "key": "client-secret"}}},
            "tokenSecretRef": {"name": "acme-token"},
            "dependents": {"cronJobSelector": {"matchLabels": {"orgtokens.dev/org": "acme"}}}}}))?)
        .await?;
    wait("Valid", || async {
        state(&orgs).await == Some(TokenState::Valid)
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let check = |orgs: Api<SalesforceOrg>| async move {
        let patch = json!({"metadata": {"annotations": {CHECK_ANNOTATION: format!("{:?}", Instant::now())}}});
        orgs.patch("acme", &PatchParams::default(), &Patch::Merge(&patch))
            .await
    };

    // Steady state: one forced check that finds the token valid.
    let calls = sim.call_counts();
    let before = writes(client).await?;
    check(orgs.clone()).await?;
    wait("a check", || async {
        sim.call_counts().endpoint(Endpoint::Userinfo) > calls.endpoint(Endpoint::Userinfo)
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let steady = delta(&before, &writes(client).await?);
    let steady_calls = sim.call_counts().endpoint(Endpoint::Userinfo)
        - calls.endpoint(Endpoint::Userinfo)
        + sim.call_counts().endpoint(Endpoint::Token)
        - calls.endpoint(Endpoint::Token);

    // Expiry.
    sim.revoke_user_tokens(&demo.user.username, None)?;
    let before = writes(client).await?;
    check(orgs.clone()).await?;
    let to_suspended = wait("all suspended", || all_suspended(&cjs, n, true)).await?;
    wait("Expired", || async {
        state(&orgs).await == Some(TokenState::Expired)
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let expiry = delta(&before, &writes(client).await?);

    // Recovery: new tokens arrive (as the callback stores them).
    let tokens = mint(sim)?;
    let before = writes(client).await?;
    let patch = json!({"stringData": {"access_token": tokens.access_token, "refresh_token": tokens.refresh_token}});
    secrets
        .patch("acme-token", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let to_resumed = wait("all resumed", || all_suspended(&cjs, n, false)).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let recovery = delta(&before, &writes(client).await?);

    let _ = stop.send(());
    let _ = task.await;
    let fmt = |d: &BTreeMap<String, f64>, drop: &[&str]| {
        d.iter()
            .filter(|(k, _)| {
                !drop.contains(&k.as_str()) && !k.contains("events") && !k.contains("leases")
            })
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let steady = fmt(&steady, &["PATCH salesforceorgs"]);
    Ok(Case {
        row: format!(
            "| {n} | {steady_calls} calls; writes: {} | {} | {} |",
            if steady.is_empty() {
                "0".into()
            } else {
                steady
            },
            fmt(&expiry, &["PATCH salesforceorgs"]),
            fmt(&recovery, &["PATCH secrets"]),
        ),
        to_suspended,
        to_resumed,
    })
}

/// Requests the apiserver has served for one verb and resource (all scopes and codes).
async fn served(client: &Client, verb: &str, resource: &str) -> BenchResult<f64> {
    let req = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(req).await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
        .filter(|l| l.contains(&format!("verb=\"{verb}\"")))
        .filter(|l| l.contains(&format!("resource=\"{resource}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

fn cronjob(name: &str, label: &str) -> BenchResult<CronJob> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"orgtokens.dev/org": label}},
        "spec": {"schedule": "0 2 * * *", "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "b", "image": "example.com/b:1"}]}}}}}
    }))?)
}

/// An org holds its CronJobs (Expired); CronJobs are then created into its selector, or
/// relabelled into it, one at a time: the time from the write to `spec.suspend: true`, and the
/// CronJob lists the operator makes while it holds and nothing changes.
async fn held_selector(
    client: &Client,
    sim: &Simulator,
    demo: &DemoSeed,
    tries: usize,
) -> BenchResult<()> {
    let ns = format!("bench-held-{}", std::process::id());
    let (stop, task) = operator_in(client, sim, &ns).await?;
    let cjs: Api<CronJob> = Api::namespaced(client.clone(), &ns);
    cjs.create(&PostParams::default(), &cronjob("first", "acme")?)
        .await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    secrets
        .create(&PostParams::default(), &serde_json::from_value(json!({
            "metadata": {"name": "app"}, "stringData": {"client-secret": demo.app.client_secret}}))?)
        .await?;
    let tokens = sim.mint_tokens(&demo.app.client_id, &demo.user.username)?;
    secrets
        .create(&PostParams::default(), &serde_json::from_value(json!({
            "metadata": {"name": "acme-token", "labels": {
                "app.kubernetes.io/managed-by": "sforg-operator", "orgtokens.dev/org": "acme"}},
            "stringData": {"access_token": tokens.access_token, "refresh_token": tokens.refresh_token,
                "instance_url": tokens.instance_url, "issued_at": tokens.issued_at}}))?)
        .await?;
    let orgs: Api<SalesforceOrg> = Api::namespaced(client.clone(), &ns);
    orgs.create(&PostParams::default(), &serde_json::from_value(json!({
        "apiVersion": "orgtokens.dev/v1alpha1", "kind": "SalesforceOrg", "metadata": {"name": "acme"},
        "spec": {"loginUrl": "https://login.salesforce.com",
            "auth": {"webServer": {"clientId": demo.app.client_id, "clientSecretRef": {"name": "app", "key": "client-secret"}}},
            "tokenSecretRef": {"name": "acme-token"},
            "dependents": {"cronJobSelector": {"matchLabels": {"orgtokens.dev/org": "acme"}}}}}))?)
        .await?;
    wait("Valid", || async {
        state(&orgs).await == Some(TokenState::Valid)
    })
    .await?;
    sim.revoke_user_tokens(&demo.user.username, None)?;
    let patch = json!({"metadata": {"annotations": {CHECK_ANNOTATION: "expire"}}});
    orgs.patch("acme", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    wait("Expired", || async {
        state(&orgs).await == Some(TokenState::Expired)
    })
    .await?;
    wait("first suspended", || all_suspended(&cjs, 1, true)).await?;

    // Holding, nothing changing: how often the operator lists CronJobs.
    let quiet = Duration::from_secs(
        std::env::var("SFORG_BENCH_QUIET_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(45),
    );
    let lists = served(client, "LIST", "cronjobs").await?;
    tokio::time::sleep(quiet).await;
    let lists = served(client, "LIST", "cronjobs").await? - lists;

    let suspended = |name: String| {
        let cjs = cjs.clone();
        async move {
            cjs.get(&name)
                .await
                .ok()
                .and_then(|c| c.spec?.suspend)
                .unwrap_or(false)
        }
    };
    let (mut created, mut relabelled) = (Vec::new(), Vec::new());
    for i in 0..tries {
        let name = format!("late-{i}");
        if i % 2 == 0 {
            let started = Instant::now();
            cjs.create(&PostParams::default(), &cronjob(&name, "acme")?)
                .await?;
            wait("created suspended", || suspended(name.clone())).await?;
            created.push(started.elapsed());
        } else {
            cjs.create(&PostParams::default(), &cronjob(&name, "other")?)
                .await?;
            let relabel = json!({"metadata": {"labels": {"orgtokens.dev/org": "acme"}}});
            let started = Instant::now();
            cjs.patch(&name, &PatchParams::default(), &Patch::Merge(&relabel))
                .await?;
            wait("relabelled suspended", || suspended(name.clone())).await?;
            relabelled.push(started.elapsed());
        }
    }
    let _ = stop.send(());
    let _ = task.await;
    let pct = |v: &[Duration], p: f64| {
        let mut v = v.to_vec();
        v.sort();
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let all: Vec<Duration> = created.iter().chain(&relabelled).copied().collect();
    println!();
    println!("An org holding its CronJobs (Expired), {tries} tries, write -> spec.suspend true:");
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| created into the held selector, p50 / p99 ({} tries) | {:.0} / {:.0} ms |",
        created.len(),
        pct(&created, 0.5),
        pct(&created, 0.99)
    );
    println!(
        "| relabelled into the held selector, p50 / p99 ({} tries) | {:.0} / {:.0} ms |",
        relabelled.len(),
        pct(&relabelled, 0.5),
        pct(&relabelled, 0.99)
    );
    println!(
        "| both, p50 / p99 / max ({} tries) | {:.0} / {:.0} / {:.0} ms |",
        all.len(),
        pct(&all, 0.5),
        pct(&all, 0.99),
        pct(&all, 1.0)
    );
    println!(
        "| CronJob LISTs by all clients while holding, {} s with nothing changing | {lists} |",
        quiet.as_secs()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> BenchResult<()> {
    let client = client().await?;
    install_crd(&client).await?;
    let sim = Simulator::start().await?;
    let demo = sim.seed_demo()?;
    let reps: usize = std::env::var("SFORG_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    println!(
        "Writes are counted from kube-apiserver's apiserver_request_total (Events and the bench's own patches left out)."
    );
    println!(
        "Latencies over {reps} orgs per N: check request (annotation) -> all N suspended; new tokens stored -> all N resumed."
    );
    println!(
        "| N CronJobs | steady-state check | writes per expiry | writes per recovery | to suspended p50 / p99 | to resumed p50 / p99 |"
    );
    println!("|---|---|---|---|---|---|");
    let tries: usize = std::env::var("SFORG_BENCH_TRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let only_held = std::env::var("SFORG_BENCH_ONLY_HELD").is_ok_and(|v| v == "1");
    for n in [1usize, 10, 50].into_iter().filter(|_| !only_held) {
        let mut cases = Vec::new();
        for rep in 0..reps {
            cases.push(run_case(rep, &client, &sim, &demo, n).await?);
        }
        let pct = |mut v: Vec<Duration>, p: f64| {
            v.sort();
            let i = ((v.len() as f64 - 1.0) * p).round() as usize;
            v.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        let sus: Vec<_> = cases.iter().map(|c| c.to_suspended).collect();
        let res: Vec<_> = cases.iter().map(|c| c.to_resumed).collect();
        println!(
            "{} {:.0} / {:.0} ms | {:.0} / {:.0} ms |",
            cases[0].row,
            pct(sus.clone(), 0.5),
            pct(sus, 0.99),
            pct(res.clone(), 0.5),
            pct(res, 0.99)
        );
    }
    held_selector(&client, &sim, &demo, tries).await?;
    Ok(())
}
