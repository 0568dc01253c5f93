//! Benchmark: the dashboard at 10 and 1,000 orgs, in headless Chromium against the real
//! control plane: time to first render of the Organizations page, and from a status change
//! (a status write to the API server) to the row showing it in the open page.
//!
//! Run with `scripts/bench.sh dashboard` (it starts the control plane; Chromium and
//! chromedriver come from Debian's chromium and chromium-driver, as for the tests).
//! Prints figures; asserts nothing.

// A test (or benchmark) fails by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[path = "../tests/common/browser.rs"]
#[allow(dead_code)]
mod browser;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use browser::Browser;
use common::{BenchResult, client, install_crd};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use sforg_operator::crd::SalesforceOrg;
use sforg_operator::dashboard::{self, Options, Scope};

const CHANGES: usize = 20;
const RENDERS: usize = 5;

fn org(name: &str) -> BenchResult<SalesforceOrg> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "orgtokens.dev/v1alpha1", "kind": "SalesforceOrg",
        "metadata": {"name": name},
        "spec": {"loginUrl": "https://login.salesforce.com",
            "auth": {"webServer": {"clientId": "3MVG9bench"}},
            "tokenSecretRef": {"name": format!("{name}-token")}}
    }))?)
}

fn status(state: &str, n: usize) -> serde_json::Value {
    let (ok, reason) = if state == "Valid" {
        ("True", "TokenValid")
    } else {
        ("False", "RefreshTokenRevoked")
    };
    json!({"status": {
        "state": state,
        "orgId": format!("00D{n:015}"),
        "username": format!("backup{n}@acme.example"),
        "lastCheckedAt": "2026-01-01T00:00:00Z",
        "conditions": [
            {"type": "TokenValid", "status": ok, "reason": reason,
             "message": "Salesforce accepts the token.", "lastTransitionTime": "2026-01-01T00:00:00Z"},
            {"type": "Ready", "status": ok, "reason": reason,
             "message": "What to do next, in a sentence or two.",
             "lastTransitionTime": "2026-01-01T00:00:00Z"}],
    }})
}

async fn set_state(api: &Api<SalesforceOrg>, n: usize, state: &str) -> BenchResult<()> {
    api.patch_status(
        &format!("org-{n:04}"),
        &PatchParams::apply("bench"),
        &Patch::Merge(&status(state, n)),
    )
    .await?;
    Ok(())
}

async fn populate(client: &Client, ns: &str, count: usize) -> BenchResult<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _ = namespaces.delete(ns, &DeleteParams::default()).await;
    // A namespace being deleted refuses new objects: wait until it is gone.
    while namespaces.get_opt(ns).await?.is_some() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
        )
        .await?;
    let api: Api<SalesforceOrg> = Api::namespaced(client.clone(), ns);
    stream::iter(0..count)
        .map(|n| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &org(&format!("org-{n:04}"))?)
                    .await?;
                set_state(&api, n, "Valid").await
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

fn epoch_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or_default()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

struct Figures {
    orgs: usize,
    server_ms: Vec<f64>,
    fcp_ms: Vec<f64>,
    loaded_ms: Vec<f64>,
    change_ms: Vec<f64>,
}

async fn measure(client: &Client, browser: &Browser, count: usize) -> BenchResult<Figures> {
    let ns = format!("bench-dashboard-{count}");
    populate(client, &ns, count).await?;
    let api: Api<SalesforceOrg> = Api::namespaced(client.clone(), &ns);
    let d = dashboard::start(
        Options {
            client: client.clone(),
            scope: Scope::Namespace(ns.clone()),
            context: None,
            listen: "127.0.0.1:0".parse()?,
        },
        std::future::pending(),
    )
    .await?;

    // First render: the whole page from the server, then in Chromium (opening URL, redirect,
    // HTML, style, script, the live connection).
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let opened = http.get(&d.url).send().await?;
    let cookie = opened
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or_default()
        .to_owned();
    let mut server_ms = Vec::new();
    for _ in 0..RENDERS {
        let started = Instant::now();
        let body = http
            .get(format!("{}/", d.base))
            .header("cookie", &cookie)
            .send()
            .await?
            .text()
            .await?;
        server_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        let rows = body.matches("<tr id=\"org/").count();
        if rows != count {
            return Err(format!("the page showed {rows} rows, not {count}").into());
        }
    }
    let mut fcp_ms = Vec::new();
    let mut loaded_ms = Vec::new();
    for _ in 0..RENDERS {
        browser.open("about:blank").await;
        browser.open(&d.url).await;
        browser.wait_text("#live", "live").await;
        let timing = browser
            .execute(
                "const n = performance.getEntriesByType('navigation')[0];
                 const p = performance.getEntriesByName('first-contentful-paint')[0];
                 return [p ? p.startTime : null, n.domContentLoadedEventEnd,
                         document.querySelectorAll('#rows tr').length];",
                json!([]),
            )
            .await;
        if let Some(v) = timing[0].as_f64() {
            fcp_ms.push(v);
        }
        loaded_ms.push(timing[1].as_f64().unwrap_or(f64::NAN));
        if timing[2].as_u64() != Some(count as u64) {
            return Err(format!("Chromium showed {} rows, not {count}", timing[2]).into());
        }
    }

    // Status change -> row updated, seen by a MutationObserver in the page.
    let mut change_ms = Vec::new();
    for i in 0..CHANGES {
        let n = (i * 7919) % count;
        let key = format!("{ns}/org-{n:04}");
        let current = browser
            .execute(
                "return document.getElementById('org/' + arguments[0]).dataset.state",
                json!([key]),
            )
            .await;
        let (state, class) = if current == json!("valid") {
            ("Expired", "expired")
        } else {
            ("Valid", "valid")
        };
        browser
            .execute(
                "const [key, want] = arguments;
                 window.benchSeen = null;
                 if (window.benchObserver) window.benchObserver.disconnect();
                 window.benchObserver = new MutationObserver(() => {
                   const r = document.getElementById('org/' + key);
                   if (r && r.dataset.state === want && window.benchSeen === null)
                     window.benchSeen = performance.timeOrigin + performance.now();
                 });
                 window.benchObserver.observe(document.getElementById('rows'),
                   {childList: true, subtree: true, attributes: true});
                 return null;",
                json!([key, class]),
            )
            .await;
        let before = epoch_ms();
        set_state(&api, n, state).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let seen = browser.execute("return window.benchSeen", json!([])).await;
            if let Some(at) = seen.as_f64() {
                change_ms.push(at - before);
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("{key} never turned {state} in the page").into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    drop(d);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
    Ok(Figures {
        orgs: count,
        server_ms: sorted(server_ms),
        fcp_ms: sorted(fcp_ms),
        loaded_ms: sorted(loaded_ms),
        change_ms: sorted(change_ms),
    })
}

#[tokio::main]
async fn main() -> BenchResult<()> {
    let client = client().await?;
    install_crd(&client).await?;
    let browser = Browser::start(None).await;
    let mut all = Vec::new();
    for count in [10, 1000] {
        all.push(measure(&client, &browser, count).await?);
    }
    browser.quit().await;
    println!(
        "\ndashboard ({} build), headless Chromium; medians of {RENDERS} renders, {CHANGES} status changes",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    println!(
        "{:>6}  {:>16}  {:>22}  {:>22}  {:>30}",
        "orgs",
        "server page ms",
        "first paint ms (FCP)",
        "DOMContentLoaded ms",
        "status change -> row p50/p99/max ms"
    );
    for f in &all {
        println!(
            "{:>6}  {:>16.1}  {:>22.1}  {:>22.1}  {:>30}",
            f.orgs,
            percentile(&f.server_ms, 0.5),
            percentile(&f.fcp_ms, 0.5),
            percentile(&f.loaded_ms, 0.5),
            format!(
                "{:.1} / {:.1} / {:.1}",
                percentile(&f.change_ms, 0.5),
                percentile(&f.change_ms, 0.99),
                f.change_ms.last().copied().unwrap_or(f64::NAN)
            )
        );
    }
    Ok(())
}
