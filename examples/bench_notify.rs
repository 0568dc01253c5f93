//! Benchmark: how soon the person is told. The time from a failing check (the token revoked,
//! a check requested) to the webhook delivery and to the SMTP delivery, p50 / p99 over 100
//! orgs expiring at once; and the messages sent over a simulated week of an org left expired
//! with two restarts of the operator in between (reminders every 3 s stand for every day).
//!
//! Run with `scripts/bench.sh notify` (it starts the control plane and sets
//! SFORG_TEST_KUBECONFIG). Prints figures; asserts nothing. `SFORG_BENCH_ORGS` changes 100.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "../tests/notify/support.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{BenchResult, client, install_crd};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use sforg_operator::controller::{self, Scope};
use sforg_operator::crd::{SalesforceOrg, TokenState};
use sforg_operator::notify::{self, Notifier, config};
use sforg_operator::reconcile::{CHECK_ANNOTATION, Settings};
use sforg_operator::salesforce::{HttpSalesforce, HttpSettings};
use sforg_simulator::{DemoSeed, Simulator, UserSpec};
use support::{Receiver, Smtp, indent};

struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

fn start(client: &Client, sim: &Simulator, ns: &str, notifier: Notifier) -> Running {
    let salesforce = HttpSalesforce::new(HttpSettings {
        proxy: Some(sim.proxy_url().to_owned()),
        extra_ca_pem: Some(sim.ca_pem().as_bytes().to_vec()),
        ..HttpSettings::default()
    })
    .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(controller::run(
        client.clone(),
        salesforce,
        Settings {
            notify: Some(notifier),
            ..Settings::default()
        },
        Scope {
            namespaces: vec![ns.to_owned()],
        },
        "bench".into(),
        async move {
            let _ = stopped.await;
        },
    ));
    Running { stop, task }
}

async fn namespace(client: &Client, prefix: &str) -> BenchResult<String> {
    let ns = format!("{prefix}-{}", std::process::id());
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
    )
    .await?;
    Ok(ns)
}

async fn create_orgs(
    client: &Client,
    sim: &Simulator,
    demo: &DemoSeed,
    ns: &str,
    names: &[String],
    notifications: serde_json::Value,
) -> BenchResult<()> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    secrets
        .create(&PostParams::default(), &serde_json::from_value(json!({
            "metadata": {"name": "app"}, "stringData": {"client-secret": demo.app.client_secret}}))?)
        .await?;
    let orgs: Api<SalesforceOrg> = Api::namespaced(client.clone(), ns);
    for name in names {
        // One user per org: Salesforce keeps at most 5 grants per user and app.
        let user = format!("{name}@acme.example");
        sim.create_user(UserSpec::new(&demo.org.label, &user, "Bench-Passw0rd!"))?;
        let tokens = sim.mint_tokens(&demo.app.client_id, &user)?;
        secrets
            .create(&PostParams::default(), &serde_json::from_value(json!({
                "metadata": {"name": format!("{name}-token"), "labels": {
                    "app.kubernetes.io/managed-by": "sforg-operator", "orgtokens.dev/org": name}},
                "stringData": {"access_token": tokens.access_token, "refresh_token": tokens.refresh_token,
                    "instance_url": tokens.instance_url, "issued_at": tokens.issued_at}}))?)
            .await?;
        orgs.create(&PostParams::default(), &serde_json::from_value(json!({
            "apiVersion": "orgtokens.dev/v1alpha1", "kind": "SalesforceOrg", "metadata": {"name": name},
            "spec": {"loginUrl": "https://login.salesforce.com",
                "auth": {"webServer": {"clientId": demo.app.client_id, "clientSecretRef": {"name": "app", "key": "client-secret"}}},
                "tokenSecretRef": {"name": format!("{name}-token")},
                "notifications": notifications}}))?)
            .await?;
    }
    Ok(())
}

async fn wait_until<F, Fut>(what: &str, limit: Duration, mut f: F) -> BenchResult<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        if start.elapsed() > limit {
            return Err(format!("timed out waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn all_in(orgs: &Api<SalesforceOrg>, n: usize, state: TokenState) -> bool {
    orgs.list(&Default::default()).await.is_ok_and(|l| {
        l.items
            .iter()
            .filter(|o| o.status.as_ref().and_then(|s| s.state) == Some(state))
            .count()
            == n
    })
}

async fn request_checks(
    orgs: &Api<SalesforceOrg>,
    names: &[String],
) -> BenchResult<BTreeMap<String, SystemTime>> {
    let mut t0 = BTreeMap::new();
    for name in names {
        let stamp = format!("{:?}", SystemTime::now());
        t0.insert(name.clone(), SystemTime::now());
        let patch = json!({"metadata": {"annotations": {CHECK_ANNOTATION: stamp}}});
        orgs.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    Ok(t0)
}

fn percentiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.99), v[v.len() - 1])
}

async fn channels_store(client: &Client, ns: &str, yaml: &str) -> BenchResult<config::Store> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
            "metadata": {"name": "channels"}, "stringData": {config::CHANNELS_KEY: yaml}}))?,
        )
        .await?;
    let store = config::Store::default();
    tokio::spawn(config::watch(
        secrets,
        "channels".into(),
        store.clone(),
        None,
    ));
    let probe = store.clone();
    let first = config::parse(yaml)?
        .0
        .into_keys()
        .next()
        .unwrap_or_default();
    wait_until("the channels", Duration::from_secs(30), || {
        let ok = probe.get(&first).is_some();
        async move { ok }
    })
    .await?;
    Ok(store)
}

async fn latency(client: &Client, sim: &Simulator, demo: &DemoSeed, n: usize) -> BenchResult<()> {
    let hooks = Receiver::start().await;
    let smtp = Smtp::start().await;
    let ns = namespace(client, "bench-notify").await?;
    let yaml = format!(
        "hook:\n  kind: webhook\n  url: {url}/ok/hook\n\
         mail:\n  kind: email\n  host: localhost\n  port: {port}\n  tls: starttls\n  username: {user}\n  password: {pw}\n  from: sforg@ops.example\n  ca: |\n{ca}\n",
        url = hooks.url,
        port = smtp.port,
        user = smtp.user,
        pw = smtp.password,
        ca = indent(&smtp.ca_pem),
    );
    let store = channels_store(client, &ns, &yaml).await?;
    let settings = notify::Settings {
        recipient_domains: vec!["acme.example".into()],
        ..notify::Settings::default()
    };
    let names: Vec<String> = (0..n).map(|i| format!("org{i:03}")).collect();
    create_orgs(
        client,
        sim,
        demo,
        &ns,
        &names,
        json!({"channels": ["hook", "mail"], "recipients": ["admin@acme.example"]}),
    )
    .await?;
    let running = start(client, sim, &ns, Notifier::new(settings.clone(), store));
    let orgs: Api<SalesforceOrg> = Api::namespaced(client.clone(), &ns);
    wait_until("every org Valid", Duration::from_secs(300), || {
        all_in(&orgs, n, TokenState::Valid)
    })
    .await?;

    for name in &names {
        sim.control()
            .revoke_user_tokens(&format!("{name}@acme.example"), None)?;
    }
    let started = Instant::now();
    let t0 = request_checks(&orgs, &names).await?;
    let delivered = wait_until("every message", Duration::from_secs(300), || {
        let done = hooks.delivered().len() >= n && smtp.mails().len() >= n;
        async move { done }
    })
    .await;
    if let Err(e) = delivered {
        let expired = orgs
            .list(&Default::default())
            .await?
            .items
            .iter()
            .filter(|o| o.status.as_ref().and_then(|s| s.state) == Some(TokenState::Expired))
            .count();
        let first = orgs.get(&names[0]).await?;
        return Err(format!(
            "{e}: {} webhook, {} mail, {expired} orgs Expired; {}: {:?} {:?}",
            hooks.delivered().len(),
            smtp.mails().len(),
            names[0],
            first.metadata.annotations,
            first.status
        )
        .into());
    }
    let all_done = started.elapsed();
    let uids: BTreeMap<String, String> = orgs
        .list(&Default::default())
        .await?
        .items
        .iter()
        .map(|o| (o.uid().unwrap_or_default(), o.name_any()))
        .collect();
    let since = |name: &str, at: SystemTime| {
        at.duration_since(t0[name])
            .unwrap_or_default()
            .as_secs_f64()
            * 1000.0
    };
    let web: Vec<f64> = hooks
        .delivered()
        .iter()
        .map(|r| since(r.body["name"].as_str().unwrap_or_default(), r.at))
        .collect();
    let mail: Vec<f64> = smtp
        .mails()
        .iter()
        .filter_map(|m| {
            let id = m
                .data
                .lines()
                .find(|l| l.to_ascii_lowercase().starts_with("message-id:"))?;
            let name = uids.iter().find(|(uid, _)| id.contains(uid.as_str()))?.1;
            let at = UNIX_EPOCH + Duration::from_secs_f64(m.at);
            Some(since(name, at))
        })
        .collect();
    let (w50, w99, wmax) = percentiles(web.clone());
    let (m50, m99, mmax) = percentiles(mail.clone());
    println!(
        "| {n} orgs expiring at once, concurrency {} | p50 | p99 | max | messages |",
        settings.concurrency
    );
    println!("|---|---|---|---|---|");
    println!(
        "| failing check → webhook delivered | {w50:.0} ms | {w99:.0} ms | {wmax:.0} ms | {} |",
        web.len()
    );
    println!(
        "| failing check → SMTP accepted (STARTTLS + AUTH) | {m50:.0} ms | {m99:.0} ms | {mmax:.0} ms | {} |",
        mail.len()
    );
    println!(
        "all {} messages delivered {:.1} s after the first check request",
        web.len() + mail.len(),
        all_done.as_secs_f64()
    );
    let _ = running.stop.send(());
    let _ = running.task.await;
    Ok(())
}

async fn week(client: &Client, sim: &Simulator, demo: &DemoSeed) -> BenchResult<()> {
    let hooks = Receiver::start().await;
    let ns = namespace(client, "bench-notify-week").await?;
    let store = channels_store(
        client,
        &ns,
        &format!("hook:\n  kind: webhook\n  url: {}/ok/week\n", hooks.url),
    )
    .await?;
    let day = Duration::from_secs(3);
    let settings = notify::Settings {
        reminder_interval: day,
        reminder_max: 3,
        ..notify::Settings::default()
    };
    let names = vec!["lapsed".to_owned()];
    create_orgs(
        client,
        sim,
        demo,
        &ns,
        &names,
        json!({"channels": ["hook"]}),
    )
    .await?;
    let mut running = start(
        client,
        sim,
        &ns,
        Notifier::new(settings.clone(), store.clone()),
    );
    let orgs: Api<SalesforceOrg> = Api::namespaced(client.clone(), &ns);
    wait_until("the org Valid", Duration::from_secs(60), || {
        all_in(&orgs, 1, TokenState::Valid)
    })
    .await?;
    sim.control()
        .revoke_user_tokens("lapsed@acme.example", None)?;
    request_checks(&orgs, &names).await?;
    let start_at = Instant::now();
    // Two restarts (the process killed, a new one started) during the week.
    for restart_at in [day * 2 + day / 3, day * 4 + day / 2] {
        tokio::time::sleep(restart_at.saturating_sub(start_at.elapsed())).await;
        running.task.abort();
        let _ = running.task.await;
        running = start(
            client,
            sim,
            &ns,
            Notifier::new(settings.clone(), store.clone()),
        );
    }
    tokio::time::sleep((day * 7).saturating_sub(start_at.elapsed())).await;
    let got = hooks.delivered();
    let kinds: Vec<String> = got
        .iter()
        .map(|r| match r.body["reminder"].as_u64() {
            Some(n) => format!("Reminder {n}"),
            None => r.body["event"].as_str().unwrap_or_default().to_owned(),
        })
        .collect();
    println!();
    println!(
        "simulated week (a day = {day:?}), org left expired, two restarts: {} messages sent: {} (expected: Expired + {} reminders = {})",
        got.len(),
        kinds.join(", "),
        settings.reminder_max,
        1 + settings.reminder_max
    );
    let _ = running.stop.send(());
    let _ = running.task.await;
    Ok(())
}

#[tokio::main]
async fn main() -> BenchResult<()> {
    let client = client().await?;
    install_crd(&client).await?;
    let sim = Simulator::start().await?;
    let demo = sim.seed_demo()?;
    let n: usize = std::env::var("SFORG_BENCH_ORGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    latency(&client, &sim, &demo, n).await?;
    let sim = Simulator::start().await?;
    let demo = sim.seed_demo()?;
    week(&client, &sim, &demo).await?;
    Ok(())
}
