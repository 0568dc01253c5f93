//! The re-auth flow in a real browser: headless Chromium, driven through chromedriver's
//! WebDriver API, opens the link in status, continues on the operator's confirmation page,
//! logs in on the simulator's Salesforce pages,
//! approves, and lands on the operator's "Token valid" page; the org is Valid again and its
//! CronJob resumed. This proves the pages, redirects and the SameSite cookie work in a
//! browser, beyond the HTTP client of `tests/reauth.rs`.
//!
//! Needs `chromium` and `chromium-driver` (Debian packages), which scripts/test.sh installs.

// A test (or benchmark) fails by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::browser::Browser;
use common::eventually;
use common::operator::{CONVERGE, Operator};
use k8s_openapi::api::batch::v1::CronJob;
use kube::api::{Api, PostParams};
use serde_json::json;
use sforg_operator::crd::TokenState;

#[tokio::test]
async fn chromium_reauthorizes_an_expired_org() {
    let op = Operator::start_with_reauth("reauth-chromium").await;
    op.ensure_app_secret().await;
    op.create_org(
        "acme",
        json!({
            "loginUrl": "https://login.salesforce.com",
            "auth": {"webServer": {"clientId": op.demo.app.client_id,
                "clientSecretRef": {"name": "demo-app", "key": "client-secret"}}},
            "tokenSecretRef": {"name": "acme-token"},
            "dependents": {"cronJobSelector": {"matchLabels": {"orgtokens.dev/org": "acme"}}},
        }),
    )
    .await;
    op.seed_tokens("acme-token", "acme").await;
    op.wait_state("acme", TokenState::Valid, None).await;
    let cronjobs: Api<CronJob> = Api::namespaced(op.client.clone(), &op.ns);
    let cj: CronJob = serde_json::from_value(json!({
        "metadata": {"name": "nightly", "labels": {"orgtokens.dev/org": "acme"}},
        "spec": {"schedule": "0 2 * * *",
            "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "backup", "image": "example.com/backup:1"}]}}}}}
    }))
    .expect("cronjob");
    cronjobs
        .create(&PostParams::default(), &cj)
        .await
        .expect("create cronjob");
    let suspended = || async {
        let cj = cronjobs.get("nightly").await.expect("cronjob");
        cj.spec.and_then(|s| s.suspend).unwrap_or(false)
    };

    op.sim
        .control()
        .revoke_user_tokens(&op.demo.user.username, None)
        .expect("revoke");
    op.request_check("acme").await;
    op.wait_state("acme", TokenState::Expired, Some("RefreshTokenRevoked"))
        .await;
    eventually("nightly suspended", CONVERGE, || async {
        suspended().await.then_some(())
    })
    .await;
    let link = eventually("the re-auth link", CONVERGE, || async {
        op.orgs()
            .get("acme")
            .await
            .ok()?
            .status?
            .reauth
            .map(|r| r.url)
    })
    .await;

    let browser = Browser::start(Some(op.sim.proxy_url())).await;
    browser.open(&link).await;
    // The operator's page says which org and where the login happens; its button goes on.
    let facts = browser.text("#facts").await;
    assert!(facts.contains(&format!("{}/acme", op.ns)), "{facts}");
    assert!(facts.contains("login.salesforce.com"), "{facts}");
    assert!(facts.contains(&op.demo.user.username), "{facts}");
    browser.click("#continue").await;
    // The click starts a navigation; the address changes once it commits.
    eventually("the link to lead to Salesforce", CONVERGE, || async {
        browser
            .current_url()
            .await
            .starts_with("https://login.salesforce.com/")
            .then_some(())
    })
    .await;
    browser.type_into("#username", &op.demo.user.username).await;
    browser.type_into("#password", &op.demo.password).await;
    browser.click("#Login").await;
    browser.click("#allow").await;
    let message = browser.text("#message").await;
    let want = format!(
        "Token valid for {} as {}",
        op.demo.org.id, op.demo.user.username
    );
    assert!(message.contains(&want), "{message}");
    assert!(browser.current_url().await.starts_with(&format!(
        "{}/oauth/callback?",
        op.reauth.as_ref().expect("reauth").public_url
    )));
    let shown = Instant::now();
    while suspended().await {
        assert!(shown.elapsed() < CONVERGE, "nightly never resumed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "Chromium showed the page -> CronJob resumed: {:?}",
        shown.elapsed()
    );
    let org = op
        .wait_state("acme", TokenState::Valid, Some("TokenValid"))
        .await;
    assert_eq!(org.status.and_then(|s| s.reauth), None);
    browser.quit().await;
}
