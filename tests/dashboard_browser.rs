//! The dashboard in headless Chromium, against the real control plane, the operator and the
//! Salesforce simulator: every state on the list, Details, Check now, Update Token through
//! the simulator's login with the row turning Token Valid without a reload, user data
//! rendered as text, RBAC of the person who runs it, and refusals of requests without the
//! per-run secret or from another origin. Screenshots go to `target/screenshots/`.

// A test (or benchmark) fails by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::browser::Browser;
use common::operator::{CONVERGE, Operator};
use common::{TEST_MANAGER, client, eventually, namespace, service_account_client};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::Kubeconfig;
use serde_json::{Value, json};
use sforg_operator::crd::{SalesforceOrg, TokenState};
use sforg_operator::dashboard::{self, Options, Scope};

async fn start_dashboard(client: kube::Client, scope: Scope) -> dashboard::Running {
    dashboard::start(
        Options {
            client,
            scope,
            context: Some("test".into()),
            listen: "127.0.0.1:0".parse().expect("address"),
        },
        std::future::pending(),
    )
    .await
    .expect("start the dashboard")
}

fn row(key: &str) -> String {
    format!("tr[id=\"org/{key}\"]")
}

/// Opens the row's menu and clicks one of its items.
async fn menu(browser: &Browser, key: &str, item: &str) {
    let row = row(key);
    browser.click(&format!("{row} details.menu summary")).await;
    browser.click(&format!("{row} .items .{item}")).await;
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// The per-run secret's cookie, as the browser gets it from the opening URL.
async fn cookie(d: &dashboard::Running) -> String {
    let response = http().get(&d.url).send().await.expect("open");
    assert_eq!(response.status(), 303);
    let set = response
        .headers()
        .get("set-cookie")
        .expect("set-cookie")
        .to_str()
        .expect("ascii");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    set.split(';').next().expect("cookie").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organizations_page_in_chromium() {
    let op = Operator::start_with_reauth("dash").await;
    let ns = op.ns.clone();
    // Valid, with a backup.
    op.create_web_org_with(
        "acme",
        json!({"cronJobSelector": {"matchLabels": {"orgtokens.dev/org": "acme"}}}),
    )
    .await;
    op.create_cronjob("acme-nightly", &[("orgtokens.dev/org", "acme")], false)
        .await;
    op.seed_tokens("acme-token", "acme").await;
    // Expired, holding its backup, with a re-auth link.
    op.create_web_org_with(
        "globex",
        json!({"cronJobSelector": {"matchLabels": {"orgtokens.dev/org": "globex"}}}),
    )
    .await;
    op.create_cronjob("globex-nightly", &[("orgtokens.dev/org", "globex")], false)
        .await;
    let globex = op.seed_tokens("globex-token", "globex").await;
    // Pending: nobody logged in yet.
    op.create_web_org("initech").await;
    // Unknown: its Connected App's secret is missing, a configuration problem.
    op.create_org(
        "umbrella",
        json!({
            "loginUrl": "https://login.salesforce.com",
            "auth": {"webServer": {"clientId": op.demo.app.client_id,
                "clientSecretRef": {"name": "no-such-secret", "key": "client-secret"}}},
            "tokenSecretRef": {"name": "umbrella-token"},
        }),
    )
    .await;
    op.seed_tokens("umbrella-token", "umbrella").await;
    op.wait_state("acme", TokenState::Valid, None).await;
    op.wait_state("globex", TokenState::Valid, None).await;
    op.sim
        .control()
        .revoke_refresh_token(globex.refresh_token.as_deref().expect("refresh token"))
        .expect("revoke");
    op.expire_sessions_and_check("globex").await;
    op.wait_state("globex", TokenState::Expired, None).await;
    op.wait_state("umbrella", TokenState::Unknown, None).await;
    eventually("globex's link and held backup", CONVERGE, || async {
        let status = op.orgs().get("globex").await.ok()?.status?;
        (status.reauth.is_some() && !status.suspended_cron_jobs.is_empty()).then_some(())
    })
    .await;
    eventually("initech's link", CONVERGE, || async {
        op.orgs()
            .get("initech")
            .await
            .ok()?
            .status?
            .reauth
            .map(|_| ())
    })
    .await;

    let d = start_dashboard(op.client.clone(), Scope::Namespace(ns.clone())).await;
    let browser = Browser::start(Some(op.sim.proxy_url())).await;
    browser.open(&d.url).await;
    // The secret left the address bar.
    assert_eq!(browser.current_url().await, format!("{}/", d.base));
    browser.wait_text("#live", "live").await;

    // Every state, in words.
    for (name, badge) in [
        ("acme", "Token Valid"),
        ("globex", "Token Expired"),
        ("initech", "Pending"),
        ("umbrella", "Unknown"),
    ] {
        let key = format!("{ns}/{name}");
        browser
            .wait_text(&format!("{} td.token", row(&key)), badge)
            .await;
    }
    let acme = format!("{ns}/acme");
    let globex_key = format!("{ns}/globex");
    browser
        .wait_text(
            &format!("{} td.username", row(&acme)),
            &op.demo.user.username,
        )
        .await;
    browser
        .wait_text(&format!("{} td.org-id", row(&acme)), &op.demo.org.id)
        .await;
    browser
        .wait_text(
            &format!("{} td.held", row(&globex_key)),
            "1: globex-nightly",
        )
        .await;
    let expired_reason = op
        .orgs()
        .get("globex")
        .await
        .expect("globex")
        .status
        .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Ready"))
        .expect("Ready")
        .reason;
    browser
        .wait_text(&format!("{} td.reason", row(&globex_key)), &expired_reason)
        .await;
    browser.resize(1500, 1000).await;
    let list = browser.screenshot("dashboard-list").await;

    // Details: conditions, Events in order, the held CronJob with its schedule.
    browser.open(&format!("{}/orgs/{ns}/globex", d.base)).await;
    browser.wait_text("#conditions", "TokenExpired").await;
    browser.wait_text("#cronjobs", "globex-nightly").await;
    browser.wait_text("#cronjobs", "0 2 * * *").await;
    assert_eq!(
        browser
            .text("#cronjobs tr[data-cronjob=\"globex-nightly\"] td.suspend")
            .await,
        "yes"
    );
    let reasons = browser
        .execute(
            "return Array.from(document.querySelectorAll('#events td.event-reason')).map(e => e.textContent)",
            json!([]),
        )
        .await;
    let reasons: Vec<&str> = reasons
        .as_array()
        .expect("reasons")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let valid_at = reasons.iter().position(|r| *r == "TokenValid");
    let expired_at = reasons.iter().position(|r| *r == "TokenExpired");
    assert!(
        valid_at.is_some() && expired_at.is_some() && valid_at < expired_at,
        "Events in order: {reasons:?}"
    );
    browser.resize(1500, 1700).await;
    let details = browser.screenshot("dashboard-details").await;
    browser.resize(1500, 1000).await;
    browser.click("#back").await;
    browser.wait_text("#live", "live").await;

    // Update Token on a Valid org: there is no link, and the page says why.
    menu(&browser, &acme, "update-token").await;
    browser
        .wait_text(&format!("{} .notice", row(&acme)), "is Valid")
        .await;

    // Check now: the annotation, then the operator's Checked Event on the row.
    menu(&browser, &acme, "check-now").await;
    browser
        .wait_text(
            &format!("{} .notice", row(&acme)),
            "Checked just now: Checked on request: Valid (TokenValid)",
        )
        .await;
    let acme_org = op.orgs().get("acme").await.expect("acme");
    assert!(
        acme_org
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key(sforg_operator::reconcile::CHECK_ANNOTATION)
    );

    // Update Token: the link opens the operator's confirmation page in a new tab, then
    // Salesforce's login; after the login the row
    // turns Token Valid in the first tab, which never reloaded.
    browser
        .execute("window.sforgMarker = 'same page'; return null", json!([]))
        .await;
    let (dashboard_tab, before) = browser.windows().await;
    menu(&browser, &globex_key, "update-token").await;
    let login_tab = eventually("the login tab", CONVERGE, || async {
        let (_, now) = browser.windows().await;
        now.into_iter().find(|h| !before.contains(h))
    })
    .await;
    browser.switch_to(&login_tab).await;
    // The operator's confirmation page first: which org, which login host; then Salesforce.
    browser.click("#continue").await;
    browser.type_into("#username", &op.demo.user.username).await;
    browser.type_into("#password", &op.demo.password).await;
    browser.click("#Login").await;
    browser.click("#allow").await;
    browser.wait_text("#message", "Token valid").await;
    browser.switch_to(&dashboard_tab).await;
    browser
        .wait_text(&format!("{} td.token", row(&globex_key)), "Token Valid")
        .await;
    browser
        .wait_text(&format!("{} td.held", row(&globex_key)), "0")
        .await;
    assert_eq!(
        browser
            .execute("return window.sforgMarker || null", json!([]))
            .await,
        json!("same page"),
        "the page reloaded"
    );
    let after = browser
        .screenshot("dashboard-list-after-update-token")
        .await;

    // Refusals, outside the browser.
    let http = http();
    let page = http.get(format!("{}/", d.base)).send().await.expect("get");
    assert_eq!(page.status(), 403, "no secret");
    assert!(page.text().await.expect("body").contains("per-run secret"));
    let wrong = http
        .get(format!("{}/?s=guess", d.base))
        .send()
        .await
        .expect("get");
    assert_eq!(wrong.status(), 403, "wrong secret");
    let cookie = cookie(&d).await;
    let csrf = {
        let page = http
            .get(format!("{}/", d.base))
            .header("cookie", &cookie)
            .send()
            .await
            .expect("page");
        assert_eq!(page.status(), 200);
        let csp = page
            .headers()
            .get("content-security-policy")
            .expect("csp")
            .to_str()
            .expect("ascii")
            .to_owned();
        assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
        let body = page.text().await.expect("body");
        let at = body
            .find("name=\"csrf-token\" content=\"")
            .expect("csrf meta")
            + 27;
        body[at..at + body[at..].find('"').expect("end")].to_owned()
    };
    let check = format!("{}/orgs/{ns}/acme/check", d.base);
    let foreign = http
        .post(&check)
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect("post");
    assert_eq!(foreign.status(), 403, "foreign Origin");
    let no_csrf = http
        .post(&check)
        .header("cookie", &cookie)
        .header("origin", &d.base)
        .send()
        .await
        .expect("post");
    assert_eq!(no_csrf.status(), 403, "no CSRF token");
    let no_secret = http
        .post(&check)
        .header("x-csrf-token", &csrf)
        .header("origin", &d.base)
        .send()
        .await
        .expect("post");
    assert_eq!(no_secret.status(), 403, "no secret");
    let rebound = http
        .get(format!("{}/", d.base))
        .header("cookie", &cookie)
        .header("host", "evil.example")
        .send()
        .await
        .expect("get");
    assert_eq!(rebound.status(), 403, "another Host");
    let allowed = http
        .post(&check)
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .header("origin", &d.base)
        .send()
        .await
        .expect("post");
    assert_eq!(allowed.status(), 202, "the page's own request");
    // The page and its API never carry a token.
    let rows = http
        .get(format!("{}/rows", d.base))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("rows")
        .text()
        .await
        .expect("body");
    let secret = op.secret_data("acme-token").await;
    for key in ["access_token", "refresh_token"] {
        let token = &secret[key];
        assert!(!rows.contains(token.as_str()), "{key} in the page");
    }
    browser.quit().await;
    for path in [list, details, after] {
        assert!(std::fs::metadata(&path).expect("screenshot").len() > 10_000);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_data_renders_as_text() {
    let admin = client().await;
    let ns = namespace(&admin, "dash-xss").await;
    let orgs: Api<SalesforceOrg> = Api::namespaced(admin.clone(), &ns);
    let org: SalesforceOrg = serde_json::from_value(json!({
        "apiVersion": "orgtokens.dev/v1alpha1", "kind": "SalesforceOrg",
        "metadata": {"name": "evil", "labels": {"team": "script"},
            "annotations": {"note": "<script>window.sforgPwned = 1</script>"}},
        "spec": {"loginUrl": "https://login.salesforce.com",
            "auth": {"webServer": {"clientId": "x"}}, "tokenSecretRef": {"name": "evil-token"}}
    }))
    .expect("org");
    orgs.create(&PostParams::default(), &org)
        .await
        .expect("create");
    // Whoever may write status could write anything; no operator watches this namespace.
    let script = "<script>window.sforgPwned = 1</script>";
    let img = "<img src=x onerror=\"window.sforgPwned = 2\">";
    let status = json!({"status": {
        "state": "Expired",
        "username": script,
        "orgId": "00D000000000001AAA",
        "conditions": [{"type": "Ready", "status": "False", "reason": "RefreshTokenRevoked",
            "message": img, "lastTransitionTime": "2026-01-01T00:00:00Z"}],
        "reauth": {"url": "javascript:window.sforgPwned = 3",
            "expiresAt": "2099-01-01T00:00:00Z"},
        "suspendedCronJobs": [script],
    }});
    orgs.patch_status(
        "evil",
        &PatchParams::apply(TEST_MANAGER),
        &Patch::Merge(&status),
    )
    .await
    .expect("status");

    let d = start_dashboard(admin.clone(), Scope::Namespace(ns.clone())).await;
    let browser = Browser::start(None).await;
    browser.open(&d.url).await;
    let key = format!("{ns}/evil");
    let shown = browser
        .wait_text(&format!("{} td.username", row(&key)), "<script>")
        .await;
    assert_eq!(shown, script);
    browser
        .wait_text(&format!("{} td.reason", row(&key)), img)
        .await;
    menu(&browser, &key, "update-token").await;
    browser
        .wait_text(&format!("{} .notice", row(&key)), "not an http(s) link")
        .await;
    browser.open(&format!("{}/orgs/{ns}/evil", d.base)).await;
    browser.wait_text("#conditions", img).await;
    let injected = browser
        .execute(
            "return [document.querySelectorAll('main script, tbody script, tbody img, section img').length, window.sforgPwned || 0]",
            json!([]),
        )
        .await;
    assert_eq!(injected, json!([0, 0]));
    browser.quit().await;
}

/// A child process stopped when the test ends, also when it fails.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A kubeconfig for the same cluster that authenticates with `token` only.
fn token_kubeconfig(token: &str, path: &std::path::Path) {
    let admin = std::env::var("SFORG_TEST_KUBECONFIG").expect("SFORG_TEST_KUBECONFIG");
    let mut config = Kubeconfig::read_from(&admin).expect("read kubeconfig");
    for user in &mut config.auth_infos {
        user.auth_info = Some(serde_json::from_value(json!({ "token": token })).expect("auth"));
    }
    // JSON is YAML: kubectl and kube read it alike.
    std::fs::write(path, serde_json::to_vec(&config).expect("json")).expect("write kubeconfig");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_sees_and_does_what_their_rbac_allows() {
    let admin = client().await;
    let mine = namespace(&admin, "dash-mine").await;
    let other = namespace(&admin, "dash-other").await;
    let jwt = |name: &str| -> SalesforceOrg {
        serde_json::from_value(json!({
            "apiVersion": "orgtokens.dev/v1alpha1", "kind": "SalesforceOrg",
            "metadata": {"name": name},
            "spec": {"loginUrl": "https://login.salesforce.com",
                "auth": {"jwtBearer": {"clientId": "x", "username": "a@b.c",
                    "privateKeyRef": {"name": "k", "key": "tls.key"}}},
                "tokenSecretRef": {"name": format!("{name}-token")}}
        }))
        .expect("org")
    };
    for (ns, name) in [(&mine, "visible"), (&other, "hidden")] {
        Api::<SalesforceOrg>::namespaced(admin.clone(), ns)
            .create(&PostParams::default(), &jwt(name))
            .await
            .expect("create org");
    }
    // A viewer of one namespace: read orgs, Events and CronJobs there; no patch.
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "viewer"}})).expect("sa");
    Api::<ServiceAccount>::namespaced(admin.clone(), &mine)
        .create(&PostParams::default(), &sa)
        .await
        .expect("create sa");
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "org-viewer"},
        "rules": [
            {"apiGroups": ["orgtokens.dev"], "resources": ["salesforceorgs"],
             "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["list", "watch"]},
            {"apiGroups": ["batch"], "resources": ["cronjobs"], "verbs": ["list"]},
        ]
    }))
    .expect("role");
    Api::<Role>::namespaced(admin.clone(), &mine)
        .create(&PostParams::default(), &role)
        .await
        .expect("create role");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "org-viewer"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "org-viewer"},
        "subjects": [{"kind": "ServiceAccount", "name": "viewer", "namespace": mine}]
    }))
    .expect("binding");
    Api::<RoleBinding>::namespaced(admin.clone(), &mine)
        .create(&PostParams::default(), &binding)
        .await
        .expect("create binding");
    let viewer = service_account_client(&admin, &mine, "viewer").await;
    // RBAC caches take a moment to see a new binding.
    eventually("the viewer's Role to apply", CONVERGE, || async {
        Api::<SalesforceOrg>::namespaced(viewer.clone(), &mine)
            .get("visible")
            .await
            .ok()
    })
    .await;

    // The binary, as a person runs it: their kubeconfig, -n, no browser opened.
    use k8s_openapi::api::authentication::v1::TokenRequest;
    let request: TokenRequest =
        serde_json::from_value(json!({"spec": {"expirationSeconds": 3600}})).expect("request");
    let token = Api::<ServiceAccount>::namespaced(admin.clone(), &mine)
        .create_token_request("viewer", &PostParams::default(), &request)
        .await
        .expect("token")
        .status
        .expect("status")
        .token;
    let dir = std::env::temp_dir().join(format!("sforg-dash-{mine}"));
    std::fs::create_dir_all(&dir).expect("dir");
    let kubeconfig = dir.join("kubeconfig");
    token_kubeconfig(&token, &kubeconfig);
    let mut child = Killed(
        std::process::Command::new(env!("CARGO_BIN_EXE_sforg-operator"))
            .args(["dashboard", "--no-open", "-n", &mine])
            .env("KUBECONFIG", &kubeconfig)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("run the dashboard"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let url = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
                .expect("read the URL");
            line.trim().to_owned()
        }),
    )
    .await
    .expect("the URL in time")
    .expect("join");
    assert!(
        url.starts_with("http://127.0.0.1:") && url.contains("/?s="),
        "{url}"
    );

    let browser = Browser::start(None).await;
    browser.open(&url).await;
    let visible = format!("{mine}/visible");
    browser
        .wait_text(&format!("{} td.name", row(&visible)), "visible")
        .await;
    let names = browser
        .execute(
            "return Array.from(document.querySelectorAll('#rows tr')).map(r => r.dataset.key)",
            json!([]),
        )
        .await;
    assert_eq!(
        names,
        json!([visible]),
        "only the namespace the user may read"
    );
    menu(&browser, &visible, "check-now").await;
    let refused = browser
        .wait_text(&format!("{} .notice", row(&visible)), "Not allowed")
        .await;
    assert!(refused.contains("patch SalesforceOrg"), "{refused}");
    let annotations = Api::<SalesforceOrg>::namespaced(admin.clone(), &mine)
        .get("visible")
        .await
        .expect("org")
        .metadata
        .annotations
        .unwrap_or_default();
    assert!(!annotations.contains_key(sforg_operator::reconcile::CHECK_ANNOTATION));
    browser.screenshot("dashboard-rbac-refused").await;

    // All namespaces: the page says the user may not, and what to do.
    let all = start_dashboard(viewer.clone(), Scope::All).await;
    browser.open(&all.url).await;
    browser
        .wait_text("#banner", "may not list SalesforceOrgs in all namespaces")
        .await;
    browser.quit().await;
    drop(child);
    let _ = std::fs::remove_dir_all(&dir);
}
