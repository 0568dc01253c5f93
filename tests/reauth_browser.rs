//! The re-auth flow in a real browser: headless Chromium, driven through chromedriver's
//! WebDriver API, opens the link in status, continues on the operator's confirmation page,
//! logs in on the simulator's Salesforce pages,
//! approves, and lands on the operator's "Token valid" page; the org is Valid again and its
//! CronJob resumed. This proves the pages, redirects and the SameSite cookie work in a
//! browser, beyond the HTTP client of `tests/reauth.rs`.
//!
//! Needs `chromium` and `chromium-driver` (Debian packages), so it runs only when asked:
//! `cargo test --test reauth_browser -- --ignored` (with the control plane, as scripts/test.sh
//! sets up).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::eventually;
use common::operator::{CONVERGE, Operator};
use k8s_openapi::api::batch::v1::CronJob;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use sforg_operator::crd::TokenState;

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process and one headless Chromium session.
struct Browser {
    http: reqwest::Client,
    base: String,
    session: String,
    driver: Child,
    profile: std::path::PathBuf,
}

impl Browser {
    async fn start(proxy: &str) -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "chromedriver not found: install the Debian packages chromium and chromium-driver",
            );
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        let base = format!("http://127.0.0.1:{port}");
        eventually("chromedriver to answer", CONVERGE, || {
            let http = http.clone();
            let url = format!("{base}/status");
            async move { http.get(url).send().await.ok().map(|_| ()) }
        })
        .await;
        let profile = std::env::temp_dir().join(format!("sforg-chromium-{port}"));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            // The simulator's CA is not in Chromium's store; its certificates are for the
            // real Salesforce host names, reached through its proxy.
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    format!("--proxy-server={proxy}"),
                    format!("--user-data-dir={}", profile.display()),
                ]
            }
        }}});
        let response: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .expect("session json");
        let session = response["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {response}"))
            .to_owned();
        Browser {
            http,
            base,
            session,
            driver,
            profile,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut request = self.http.request(method.clone(), url);
        if method == reqwest::Method::POST {
            request = request.json(&body);
        }
        let response: Value = request
            .send()
            .await
            .expect("webdriver call")
            .json()
            .await
            .expect("webdriver json");
        response["value"].clone()
    }

    async fn open(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", json!({"url": url}))
            .await;
    }

    async fn current_url(&self) -> String {
        let value = self.call(reqwest::Method::GET, "/url", Value::Null).await;
        value.as_str().unwrap_or_default().to_owned()
    }

    /// Waits for an element matching `css` and returns its id.
    async fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + CONVERGE;
        loop {
            let value = self
                .call(
                    reqwest::Method::POST,
                    "/element",
                    json!({"using": "css selector", "value": css}),
                )
                .await;
            if let Some(id) = value[ELEMENT].as_str() {
                return id.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no {css} on {}: {value}",
                self.current_url().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/clear"),
            json!({}),
        )
        .await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            json!({"text": text}),
        )
        .await;
    }

    async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            json!({}),
        )
        .await;
    }

    async fn text(&self, css: &str) -> String {
        let id = self.find(css).await;
        let value = self
            .call(
                reqwest::Method::GET,
                &format!("/element/{id}/text"),
                Value::Null,
            )
            .await;
        value.as_str().unwrap_or_default().to_owned()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

#[tokio::test]
#[ignore = "needs chromium and chromium-driver: cargo test --test reauth_browser -- --ignored"]
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

    let browser = Browser::start(op.sim.proxy_url()).await;
    browser.open(&link).await;
    // The operator's page says which org and where the login happens; its button goes on.
    let facts = browser.text("#facts").await;
    assert!(facts.contains(&format!("{}/acme", op.ns)), "{facts}");
    assert!(facts.contains("login.salesforce.com"), "{facts}");
    assert!(facts.contains(&op.demo.user.username), "{facts}");
    browser.click("#continue").await;
    assert!(
        browser
            .current_url()
            .await
            .starts_with("https://login.salesforce.com/"),
        "the link leads to Salesforce"
    );
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
    let _ = browser.call(reqwest::Method::DELETE, "", Value::Null).await;
}
