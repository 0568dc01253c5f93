//! Re-authorization through the link in status, on the real control plane with the
//! Salesforce simulator: an HTTP client plays the browser (redirects followed one by one,
//! the simulator's login form and consent page filled in, cookies kept), and every abuse of
//! the callback is refused with a page and a 4xx, writing no token.

// A test (or benchmark) fails by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use common::eventually;
use common::operator::http_settings;
use common::operator::{CONVERGE, Operator};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use sforg_operator::callback::state::{self, LinkClaims, Purpose, StateClaims};
use sforg_operator::callback::{
    self, AUTHORIZED_AT_ANNOTATION, AUTHORIZED_BY_ANNOTATION, AUTHORIZED_USER_CHANGED,
    CALLBACK_PATH, CallbackState, DEFAULT_LINK_LIFETIME, KEY_SECRET_KEY, Links,
    PREVIOUS_KEY_SECRET_KEY, REAUTH_ERROR_ANNOTATION, StateKey, USED_LINKS_ANNOTATION,
    USED_STATES_ANNOTATION,
};
use sforg_operator::crd::{SalesforceOrg, TokenState};
use sforg_operator::salesforce::HttpSalesforce;
use sforg_operator::salesforce::allowlist::HostAllowlist;
use sforg_simulator::UserSpec;
use sforg_simulator::html_form::HtmlForm;
use sforg_simulator::{AppKind, DEMO_PERMISSION_SET, PermittedUsers};
use url::Url;

/// A response as a browser sees it.
#[derive(Debug)]
struct Page {
    status: u16,
    url: Url,
    location: Option<Url>,
    body: String,
}

impl Page {
    fn outcome(&self) -> &str {
        let marker = "data-outcome=\"";
        self.body
            .find(marker)
            .and_then(|i| self.body[i + marker.len()..].split('"').next())
            .unwrap_or_default()
    }
}

/// An HTTP client that behaves like a browser for these pages: no automatic redirects, a
/// cookie jar per host, Salesforce's hosts reached through the simulator's proxy.
struct Browser {
    http: reqwest::Client,
    jar: HashMap<String, BTreeMap<String, String>>,
}

fn host_key(url: &Url) -> String {
    format!(
        "{}:{}",
        url.host_str().unwrap_or_default(),
        url.port_or_known_default().unwrap_or_default()
    )
}

impl Browser {
    fn new(op: &Operator) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .proxy(reqwest::Proxy::https(op.sim.proxy_url()).expect("proxy"))
            .add_root_certificate(
                reqwest::Certificate::from_pem(op.sim.ca_pem().as_bytes()).expect("ca"),
            )
            .timeout(Duration::from_secs(10))
            .build()
            .expect("browser");
        Self {
            http,
            jar: HashMap::new(),
        }
    }

    fn set_cookie(&mut self, url: &Url, name: &str, value: &str) {
        self.jar
            .entry(host_key(url))
            .or_default()
            .insert(name.to_owned(), value.to_owned());
    }

    async fn send(&mut self, url: Url, form: Option<String>) -> Page {
        let mut request = match &form {
            Some(_) => self.http.post(url.clone()).header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            ),
            None => self.http.get(url.clone()),
        };
        if let Some(cookies) = self.jar.get(&host_key(&url)).filter(|c| !c.is_empty()) {
            let header = cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ");
            request = request.header(reqwest::header::COOKIE, header);
        }
        if let Some(body) = form {
            request = request.body(body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        for value in response.headers().get_all(reqwest::header::SET_COOKIE) {
            let text = value.to_str().unwrap_or_default();
            let pair = text.split(';').next().unwrap_or_default();
            if let Some((name, value)) = pair.split_once('=') {
                let jar = self.jar.entry(host_key(&url)).or_default();
                if text.to_ascii_lowercase().contains("max-age=0") {
                    jar.remove(name.trim());
                } else {
                    jar.insert(name.trim().to_owned(), value.trim().to_owned());
                }
            }
        }
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|l| url.join(l).ok());
        let body = response.text().await.unwrap_or_default();
        Page {
            status,
            url,
            location,
            body,
        }
    }

    async fn get(&mut self, url: &str) -> Page {
        self.send(Url::parse(url).expect("url"), None).await
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Consent {
    Allow,
    Deny,
}

/// Who logs in at Salesforce and what they answer.
struct Person<'a> {
    username: &'a str,
    password: &'a str,
    consent: Consent,
}

/// Opens `link`, continues on the operator's confirmation page and goes through
/// Salesforce's pages like a person, up to (not into) the operator's callback: returns the
/// callback URL, or the page where the journey ended.
async fn to_callback(
    browser: &mut Browser,
    op: &Operator,
    link: &str,
    person: &Person<'_>,
) -> Result<Url, Page> {
    let page = browser.get(link).await;
    follow(browser, op, page, person).await
}

/// Goes on from `page` like a person (continue on the operator's confirmation pages, log in
/// and answer at Salesforce) up to (not into) the operator's callback.
async fn follow(
    browser: &mut Browser,
    op: &Operator,
    mut page: Page,
    person: &Person<'_>,
) -> Result<Url, Page> {
    let callback = format!("{}{CALLBACK_PATH}", public_url(op));
    for _ in 0..12 {
        if let Some(next) = page.location.clone() {
            if next.as_str().starts_with(&callback) {
                return Ok(next);
            }
            page = browser.send(next, None).await;
            continue;
        }
        if page.outcome() == "confirm"
            && let Some(form) = HtmlForm::find(&page.body, "confirm_form")
        {
            let action = page.url.join(&form.action).expect("form action");
            page = browser
                .send(action, Some(form.encoded(Some("continue"))))
                .await;
            continue;
        }
        if let Some(mut form) = HtmlForm::find(&page.body, "login_form") {
            form.set("username", person.username)
                .set("pw", person.password);
            let action = page.url.join(&form.action).expect("form action");
            page = browser
                .send(action, Some(form.encoded(Some("Login"))))
                .await;
            continue;
        }
        if let Some(form) = HtmlForm::find(&page.body, "consent_form") {
            let button = match person.consent {
                Consent::Allow => "allow",
                Consent::Deny => "deny",
            };
            let action = page.url.join(&form.action).expect("form action");
            page = browser.send(action, Some(form.encoded(Some(button)))).await;
            continue;
        }
        return Err(page);
    }
    Err(page)
}

fn public_url(op: &Operator) -> &str {
    &op.reauth.as_ref().expect("started with re-auth").public_url
}

fn query(url: &Url, name: &str) -> String {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn admin<'a>(op: &'a Operator) -> Person<'a> {
    Person {
        username: &op.demo.user.username,
        password: &op.demo.password,
        consent: Consent::Allow,
    }
}

/// A web server org for the demo app, with the CronJobs labelled `orgtokens.dev/org=<name>`
/// as dependents.
async fn create_org(op: &Operator, name: &str, login_url: &str) {
    op.ensure_app_secret().await;
    op.create_org(
        name,
        json!({
            "loginUrl": login_url,
            "auth": {"webServer": {"clientId": op.demo.app.client_id,
                "clientSecretRef": {"name": "demo-app", "key": "client-secret"},
                "scopes": ["api", "refresh_token"]}},
            "tokenSecretRef": {"name": format!("{name}-token")},
            "dependents": {"cronJobSelector": {"matchLabels": {"orgtokens.dev/org": name}}},
        }),
    )
    .await;
}

async fn secret(op: &Operator, name: &str) -> Option<Secret> {
    op.secrets().get_opt(name).await.expect("get secret")
}

async fn secret_version(op: &Operator, name: &str) -> Option<String> {
    secret(op, name)
        .await
        .and_then(|s| s.metadata.resource_version)
}

fn ready(org: &SalesforceOrg) -> (String, String) {
    org.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| (c.reason.to_string(), c.message.to_string()))
        .unwrap_or_default()
}

/// Waits for the org's re-auth link in status.
async fn link_of(op: &Operator, name: &str) -> String {
    eventually(&format!("a re-auth link for {name}"), CONVERGE, || async {
        let org = op.orgs().get(name).await.ok()?;
        org.status?.reauth.map(|r| r.url)
    })
    .await
}

/// A connected org `name`, then its tokens revoked at Salesforce and a check: Expired.
async fn expired_org(op: &Operator, name: &str) -> SalesforceOrg {
    create_org(op, name, "https://login.salesforce.com").await;
    op.seed_tokens(&format!("{name}-token"), name).await;
    let valid = op.wait_state(name, TokenState::Valid, None).await;
    assert_eq!(
        valid.status.as_ref().and_then(|s| s.reauth.clone()),
        None,
        "a Valid org has no link"
    );
    op.sim
        .control()
        .revoke_user_tokens(&op.demo.user.username, None)
        .expect("revoke");
    op.request_check(name).await;
    op.wait_state(name, TokenState::Expired, Some("RefreshTokenRevoked"))
        .await
}

/// Follows `link` through Salesforce and into the callback, which must answer "Token valid".
async fn log_in(browser: &mut Browser, op: &Operator, link: &str, person: &Person<'_>) -> Url {
    let callback = to_callback(browser, op, link, person)
        .await
        .unwrap_or_else(|page| panic!("did not reach the callback: {page:?}"));
    let done = browser.send(callback.clone(), None).await;
    assert_eq!(
        (done.status, done.outcome()),
        (200, "token-valid"),
        "{}",
        done.body
    );
    callback
}

for_both_kinds!(a_person_reauthorizes_an_expired_org_through_the_link);
async fn a_person_reauthorizes_an_expired_org_through_the_link(kind: AppKind) {
    let prefix = match kind {
        AppKind::ConnectedApp => "reauth-e2e",
        AppKind::ExternalClientApp => "reauth-e2e-eca",
    };
    let op = Operator::start_with_reauth_kind(prefix, kind).await;
    let mut browser = Browser::new(&op);

    // A new org: Pending, with a link to connect it for the first time.
    create_org(&op, "acme", "https://login.salesforce.com").await;
    op.wait_state("acme", TokenState::Pending, Some("AwaitingAuthorization"))
        .await;
    let first_link = link_of(&op, "acme").await;
    assert!(first_link.starts_with(&format!("{}/reauth/{}/acme?t=", public_url(&op), op.ns)));
    let pending = op.orgs().get("acme").await.expect("org");
    assert!(
        ready(&pending).1.contains("status.reauth.url"),
        "{:?}",
        ready(&pending)
    );
    log_in(&mut browser, &op, &first_link, &admin(&op)).await;
    let org = op
        .wait_state("acme", TokenState::Valid, Some("TokenValid"))
        .await;
    assert_eq!(
        org.status.as_ref().and_then(|s| s.reauth.clone()),
        None,
        "link removed"
    );
    let created = secret(&op, "acme-token").await.expect("token Secret");
    assert_eq!(
        created.owner_references().first().map(|o| o.name.as_str()),
        Some("acme"),
        "the operator created the Secret, owned by the org"
    );
    assert_eq!(
        created
            .labels()
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("sforg-operator")
    );
    let first = op.secret_data("acme-token").await;
    op.create_cronjob("nightly", &[("orgtokens.dev/org", "acme")], false)
        .await;

    // An admin revokes the connection in Salesforce; the next check finds out.
    op.sim
        .control()
        .revoke_user_tokens(&op.demo.user.username, None)
        .expect("revoke");
    op.request_check("acme").await;
    let expired = op
        .wait_state("acme", TokenState::Expired, Some("RefreshTokenRevoked"))
        .await;
    assert!(
        ready(&expired).1.contains("status.reauth.url"),
        "{:?}",
        ready(&expired)
    );
    eventually("nightly suspended", CONVERGE, || async {
        op.cronjob_hold("nightly").await.0.then_some(())
    })
    .await;
    let link = link_of(&op, "acme").await;
    let org = op.orgs().get("acme").await.expect("org");
    let expires_at = org
        .status
        .and_then(|s| s.reauth)
        .map(|r| r.expires_at.0)
        .expect("link in status");
    let hours = expires_at.duration_since(Timestamp::now()).as_hours();
    assert!((23..=24).contains(&hours), "{hours}h");

    // A person opens the link in a browser: a page says what it is for, the button leads on.
    let authorize = started(&mut browser, &link).await;
    assert_eq!(authorize.host_str(), Some("login.salesforce.com"));
    assert_eq!(query(&authorize, "code_challenge_method"), "S256");
    assert_eq!(
        query(&authorize, "redirect_uri"),
        format!("{}{CALLBACK_PATH}", public_url(&op))
    );
    assert!(!authorize.as_str().contains("code_verifier"));
    let callback = to_callback(&mut browser, &op, &link, &admin(&op))
        .await
        .unwrap_or_else(|page| panic!("did not reach the callback: {page:?}"));
    let done = browser.send(callback.clone(), None).await;
    let answered = Instant::now();
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(done.outcome(), "token-valid");
    let want = format!(
        "Token valid for {} as {}",
        op.demo.org.id, op.demo.user.username
    );
    assert!(done.body.contains(&want), "{}", done.body);

    // The watch on the Secret does the rest: Valid, CronJob resumed, link gone.
    while op.cronjob_hold("nightly").await.0 {
        assert!(answered.elapsed() < CONVERGE, "nightly never resumed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "callback answered -> CronJob resumed: {:?}",
        answered.elapsed()
    );
    let org = op
        .wait_state("acme", TokenState::Valid, Some("TokenValid"))
        .await;
    println!(
        "callback answered -> org Valid in status: {:?}",
        answered.elapsed()
    );
    let status = org.status.clone().unwrap_or_default();
    assert_eq!(status.reauth, None, "link removed once Valid");
    assert_eq!(status.org_id.as_deref(), Some(op.demo.org.id.as_str()));
    assert!(status.suspended_cron_jobs.is_empty());
    // Who logged in, and when, for `kubectl get sforg -o wide`.
    let org = eventually("authorizedBy in status", CONVERGE, || async {
        let org = op.orgs().get("acme").await.ok()?;
        org.status.as_ref()?.authorized_by.is_some().then_some(org)
    })
    .await;
    let status = org.status.clone().unwrap_or_default();
    assert_eq!(
        status.authorized_by.as_deref(),
        Some(op.demo.user.username.as_str())
    );
    assert!(status.authorized_at.is_some());

    let data = op.secret_data("acme-token").await;
    let new_refresh = data.get("refresh_token").cloned().unwrap_or_default();
    assert_ne!(data.get("refresh_token"), first.get("refresh_token"));
    assert_ne!(data.get("access_token"), first.get("access_token"));
    assert!(
        data.get("sfdx-url")
            .is_some_and(|u| u.starts_with("force://"))
    );
    let valid = op
        .sim
        .control()
        .valid_refresh_tokens(&op.demo.user.username, Some(&op.demo.app.client_id))
        .expect("valid tokens");
    assert_eq!(valid, vec![new_refresh], "only the new refresh token works");
    let stored = secret(&op, "acme-token").await.expect("secret");
    assert!(stored.annotations().contains_key(USED_STATES_ANNOTATION));

    // The callback URL works once.
    let version = secret_version(&op, "acme-token").await;
    let again = browser.send(callback, None).await;
    assert_eq!(
        (again.status, again.outcome()),
        (409, "replayed"),
        "{}",
        again.body
    );
    assert_eq!(secret_version(&op, "acme-token").await, version);
}

#[tokio::test]
async fn a_link_works_only_while_its_org_needs_a_person_and_only_once() {
    let op = Operator::start_with_reauth("reauth-link-life").await;
    let mut browser = Browser::new(&op);
    create_org(&op, "acme", "https://login.salesforce.com").await;
    op.wait_state("acme", TokenState::Pending, Some("AwaitingAuthorization"))
        .await;
    let first = link_of(&op, "acme").await;
    log_in(&mut browser, &op, &first, &admin(&op)).await;
    let org = op
        .wait_state("acme", TokenState::Valid, Some("TokenValid"))
        .await;

    // Who authorized and when, written with the tokens; the link recorded as used.
    let stored = secret(&op, "acme-token").await.expect("token Secret");
    let annotations = stored.annotations();
    assert_eq!(
        annotations.get(AUTHORIZED_BY_ANNOTATION),
        Some(&op.demo.user.username)
    );
    let at: Timestamp = annotations
        .get(AUTHORIZED_AT_ANNOTATION)
        .expect("authorized-at")
        .parse()
        .expect("RFC 3339");
    assert!(Timestamp::now().duration_since(at).as_secs() < 120, "{at}");
    let key = op.reauth.as_ref().expect("reauth").links.keys().clone();
    let first_claims: LinkClaims = state::verify(
        &key,
        Purpose::Link,
        first.split("?t=").nth(1).unwrap_or_default(),
        Timestamp::now().as_second(),
    )
    .expect("link claims");
    assert!(
        annotations
            .get(USED_LINKS_ANNOTATION)
            .is_some_and(|v| v.contains(&first_claims.id)),
        "{annotations:?}"
    );

    // Valid again: the link (and any other link of this org) starts nothing, revokes nothing.
    let seeded = op.secret_data("acme-token").await;
    let version = secret_version(&op, "acme-token").await;
    let page = browser.get(&first).await;
    assert_eq!(
        (page.status, page.outcome()),
        (409, "not-needed"),
        "{}",
        page.body
    );
    let links = &op.reauth.as_ref().expect("reauth").links;
    let generation = org.metadata.generation.unwrap_or_default();
    let minted = links.issue(
        &op.ns,
        "acme",
        &org.uid().unwrap_or_default(),
        generation,
        Timestamp::now(),
    );
    let page = browser.get(&minted.url).await;
    assert_eq!(
        (page.status, page.outcome()),
        (409, "not-needed"),
        "{}",
        page.body
    );
    assert_eq!(secret_version(&op, "acme-token").await, version);
    let valid = op
        .sim
        .control()
        .valid_refresh_tokens(&op.demo.user.username, Some(&op.demo.app.client_id))
        .expect("valid tokens");
    assert_eq!(
        valid,
        vec![seeded["refresh_token"].clone()],
        "the good token is not revoked"
    );

    // Expired again: a new link in status; the used one stays dead.
    op.sim
        .control()
        .revoke_user_tokens(&op.demo.user.username, None)
        .expect("revoke");
    op.request_check("acme").await;
    op.wait_state("acme", TokenState::Expired, Some("RefreshTokenRevoked"))
        .await;
    let second = link_of(&op, "acme").await;
    assert_ne!(second, first);
    let page = browser.get(&first).await;
    assert_eq!(
        (page.status, page.outcome()),
        (410, "link-used"),
        "{}",
        page.body
    );
    let page = browser.get(&second).await;
    assert_eq!(
        (page.status, page.outcome()),
        (200, "confirm"),
        "{}",
        page.body
    );

    // A spec change: the link of the old generation is outdated, status gets a new one.
    let patch = json!({"spec": {"checkInterval": "20m"}});
    op.orgs()
        .patch("acme", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("edit the spec");
    let third = eventually("a link for the new spec", CONVERGE, || async {
        let current = link_of(&op, "acme").await;
        (current != second).then_some(current)
    })
    .await;
    let page = browser.get(&second).await;
    assert_eq!(
        (page.status, page.outcome()),
        (410, "link-outdated"),
        "{}",
        page.body
    );
    // A login started before the change cannot finish after it either.
    let callback = to_callback(&mut browser, &op, &third, &admin(&op))
        .await
        .unwrap_or_else(|page| panic!("did not reach the callback: {page:?}"));
    let patch = json!({"spec": {"checkInterval": "25m"}});
    op.orgs()
        .patch("acme", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("edit the spec");
    let version = secret_version(&op, "acme-token").await;
    refused(&op, &mut browser, callback, 410, "link-outdated", &version).await;
    let fourth = eventually("a link for the newest spec", CONVERGE, || async {
        let current = link_of(&op, "acme").await;
        (current != third).then_some(current)
    })
    .await;
    log_in(&mut browser, &op, &fourth, &admin(&op)).await;
    op.wait_state("acme", TokenState::Valid, Some("TokenValid"))
        .await;
}

#[tokio::test]
async fn a_get_of_the_link_changes_nothing_and_the_post_needs_its_csrf_token() {
    let op = Operator::start_with_reauth("reauth-confirm").await;
    let org = expired_org(&op, "acme").await;
    let link = link_of(&op, "acme").await;
    let version = secret_version(&op, "acme-token").await;
    let org_version = Operator::resource_version(&org);
    let mut browser = Browser::new(&op);

    // A mail scanner opens the link: a page, no redirect, no login started, nothing written.
    let page = browser.get(&link).await;
    assert_eq!(
        (page.status, page.outcome()),
        (200, "confirm"),
        "{}",
        page.body
    );
    assert_eq!(page.location, None);
    for fact in [
        format!("{}/acme", op.ns),
        op.demo.org.id.clone(),
        "login.salesforce.com".to_owned(),
        op.demo.user.username.clone(),
    ] {
        assert!(page.body.contains(&fact), "{fact} on {}", page.body);
    }
    let jar = browser.jar.values().flat_map(|c| c.keys()).cloned();
    assert!(
        jar.clone().all(|name| name == "sforg_csrf"),
        "only the CSRF cookie: {:?}",
        jar.collect::<Vec<_>>()
    );
    assert_eq!(secret_version(&op, "acme-token").await, version);
    let again = op.orgs().get("acme").await.expect("org");
    assert_eq!(Operator::resource_version(&again), org_version);
    assert_eq!(
        op.sim
            .control()
            .valid_refresh_tokens(&op.demo.user.username, None)
            .expect("tokens"),
        Vec::<String>::new(),
        "no login happened"
    );

    // The form's POST needs the CSRF token of this page, in this browser.
    let form = HtmlForm::find(&page.body, "confirm_form").expect("confirmation form");
    let action = page.url.join(&form.action).expect("form action");
    let mut without = form.clone();
    without.set("csrf", "");
    let refused_page = browser
        .send(action.clone(), Some(without.encoded(Some("continue"))))
        .await;
    assert_eq!(
        (refused_page.status, refused_page.outcome()),
        (403, "csrf"),
        "{}",
        refused_page.body
    );
    let mut forged = form.clone();
    let token = form.value("csrf").unwrap_or_default().to_owned();
    forged.set("csrf", &format!("{token}x"));
    let refused_page = browser
        .send(action.clone(), Some(forged.encoded(Some("continue"))))
        .await;
    assert_eq!((refused_page.status, refused_page.outcome()), (403, "csrf"));
    let mut elsewhere = Browser::new(&op);
    let refused_page = elsewhere
        .send(action.clone(), Some(form.encoded(Some("continue"))))
        .await;
    assert_eq!(
        (refused_page.status, refused_page.outcome()),
        (403, "csrf"),
        "another browser's form"
    );
    assert_eq!(secret_version(&op, "acme-token").await, version);

    // The person's click: off to Salesforce, with a state bound to a fresh random cookie.
    let started = browser
        .send(action, Some(form.encoded(Some("continue"))))
        .await;
    assert_eq!(started.status, 303, "{}", started.body);
    let authorize = started.location.clone().expect("authorize URL");
    assert_eq!(authorize.host_str(), Some("login.salesforce.com"));
    assert_eq!(query(&authorize, "login_hint"), op.demo.user.username);
    let callback = follow(&mut browser, &op, started, &admin(&op))
        .await
        .unwrap_or_else(|page| panic!("did not reach the callback: {page:?}"));
    let done = browser.send(callback, None).await;
    assert_eq!(
        (done.status, done.outcome()),
        (200, "token-valid"),
        "{}",
        done.body
    );
    op.wait_state("acme", TokenState::Valid, Some("TokenValid"))
        .await;
}

#[tokio::test]
async fn a_login_as_another_user_is_confirmed_before_anything_is_stored() {
    let op = Operator::start_with_reauth("reauth-other-user").await;
    let ops_user = "ops@acme.example";
    op.sim
        .control()
        .create_user(UserSpec::new(
            &op.demo.org.label,
            ops_user,
            &op.demo.password,
        ))
        .expect("second user");
    expired_org(&op, "acme").await;
    let link = link_of(&op, "acme").await;
    let version = secret_version(&op, "acme-token").await;
    let mut browser = Browser::new(&op);
    let ops = Person {
        username: ops_user,
        password: &op.demo.password,
        consent: Consent::Allow,
    };

    // Logged in as another user: a page says so, and nothing is stored.
    let callback = to_callback(&mut browser, &op, &link, &ops)
        .await
        .unwrap_or_else(|page| panic!("did not reach the callback: {page:?}"));
    let page = browser.send(callback, None).await;
    assert_eq!(
        (page.status, page.outcome()),
        (200, "confirm-user"),
        "{}",
        page.body
    );
    assert!(page.body.contains(ops_user), "{}", page.body);
    assert!(page.body.contains(&op.demo.user.username), "{}", page.body);
    assert_eq!(
        secret_version(&op, "acme-token").await,
        version,
        "nothing stored"
    );
    let live = op
        .sim
        .control()
        .valid_refresh_tokens(ops_user, None)
        .expect("tokens");
    assert!(
        live.is_empty(),
        "the unconfirmed login's tokens were revoked"
    );
    let org = op.orgs().get("acme").await.expect("org");
    assert_eq!(
        org.status.as_ref().and_then(|s| s.state),
        Some(TokenState::Expired)
    );

    // The confirmation works only in the browser that logged in.
    let form = HtmlForm::find(&page.body, "confirm_form").expect("confirm form");
    let action = page.url.join(&form.action).expect("form action");
    let mut elsewhere = Browser::new(&op);
    let other = elsewhere
        .send(action.clone(), Some(form.encoded(Some("continue"))))
        .await;
    assert_eq!((other.status, other.outcome()), (403, "other-browser"));

    // Confirmed: log in once more as that user, and the tokens are stored.
    let confirmed = browser
        .send(action, Some(form.encoded(Some("continue"))))
        .await;
    assert_eq!(confirmed.status, 303, "{}", confirmed.body);
    let authorize = confirmed.location.clone().expect("authorize URL");
    assert_eq!(query(&authorize, "login_hint"), ops_user);
    let callback = follow(&mut browser, &op, confirmed, &ops)
        .await
        .unwrap_or_else(|page| panic!("did not reach the callback: {page:?}"));
    let done = browser.send(callback, None).await;
    assert_eq!(
        (done.status, done.outcome()),
        (200, "token-valid"),
        "{}",
        done.body
    );
    let org = op
        .wait_state("acme", TokenState::Valid, Some("TokenValid"))
        .await;
    assert_eq!(
        org.status.and_then(|s| s.username).as_deref(),
        Some(ops_user)
    );
    let stored = secret(&op, "acme-token").await.expect("secret");
    assert_eq!(
        stored
            .annotations()
            .get(AUTHORIZED_BY_ANNOTATION)
            .map(String::as_str),
        Some(ops_user)
    );
    let event = eventually("the user-change Event", CONVERGE, || async {
        op.events_for("acme")
            .await
            .into_iter()
            .find(|e| e.reason.as_deref() == Some(AUTHORIZED_USER_CHANGED))
    })
    .await;
    let note = event.note.unwrap_or_default();
    assert!(
        note.contains(ops_user) && note.contains(&op.demo.user.username),
        "{note}"
    );
}

#[tokio::test]
async fn https_cookies_are_host_prefixed_random_and_bound_to_the_state() {
    let op = Operator::start_with_reauth("reauth-cookies").await;
    let org = expired_org(&op, "acme").await;
    // The same namespace served as if behind https (TLS ends at an ingress).
    let keys = op.reauth.as_ref().expect("reauth").links.keys().clone();
    let links = Links::new(
        "https://sforg.example.test",
        keys.clone(),
        DEFAULT_LINK_LIFETIME,
    )
    .expect("links");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let router = callback::router(CallbackState {
        client: op.client.clone(),
        salesforce: HttpSalesforce::new(http_settings(&op.sim)).expect("client"),
        links: links.clone(),
        allowlist: HostAllowlist::default(),
        revoke_superseded: true,
        clock: sforg_operator::clock::Clock::system(),
    });
    let server = tokio::spawn(callback::serve(listener, router, std::future::pending()));
    let link = links.issue(
        &op.ns,
        "acme",
        &org.uid().unwrap_or_default(),
        org.metadata.generation.unwrap_or_default(),
        Timestamp::now(),
    );
    let url = link.url.replace("https://sforg.example.test", &base);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .expect("client");
    let page = http.get(&url).send().await.expect("GET link");
    assert_eq!(page.status(), 200);
    let set = set_cookies(&page);
    assert_eq!(set.len(), 1, "{set:?}");
    let csrf_cookie = &set[0];
    for part in [
        "__Host-sforg_csrf=",
        "HttpOnly",
        "Secure",
        "SameSite=Lax",
        "Path=/",
    ] {
        assert!(csrf_cookie.contains(part), "{part} in {csrf_cookie}");
    }
    let csrf_value = cookie_pair(csrf_cookie).1;
    let body = page.text().await.expect("body");
    let form = HtmlForm::find(&body, "confirm_form").expect("form");
    let started = http
        .post(format!("{base}{}", form.action))
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .header(
            reqwest::header::COOKIE,
            format!("__Host-sforg_csrf={csrf_value}"),
        )
        .body(form.encoded(Some("continue")))
        .send()
        .await
        .expect("POST");
    assert_eq!(started.status(), 303);
    let set = set_cookies(&started);
    assert_eq!(set.len(), 1, "{set:?}");
    for part in [
        "__Host-sforg_reauth_",
        "HttpOnly",
        "Secure",
        "SameSite=Lax",
        "Path=/",
        "Max-Age=600",
    ] {
        assert!(set[0].contains(part), "{part} in {}", set[0]);
    }
    let (name, value) = cookie_pair(&set[0]);
    assert_ne!(value, "1", "not a constant");
    assert!(value.len() >= 22, "random: {value}");
    let location = Url::parse(
        started
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .expect("location"),
    )
    .expect("url");
    let signed = query(&location, "state");
    let claims: StateClaims =
        state::verify(&keys, Purpose::State, &signed, Timestamp::now().as_second()).expect("state");
    assert_eq!(name, format!("__Host-sforg_reauth_{}", claims.nonce));
    assert_eq!(
        claims.bind,
        state::binding(&value),
        "the state carries the cookie's hash"
    );
    assert!(
        !signed.contains(&value),
        "the state never carries the cookie itself"
    );

    // The cookie's name with another value (a cookie planted by someone else) is refused.
    let version = secret_version(&op, "acme-token").await;
    let callback = format!("{base}{CALLBACK_PATH}?code=x&state={signed}");
    let planted = http
        .get(&callback)
        .header(reqwest::header::COOKIE, format!("{name}=1"))
        .send()
        .await
        .expect("callback");
    assert_eq!(planted.status(), 403);
    assert!(
        planted
            .text()
            .await
            .unwrap_or_default()
            .contains("other-browser")
    );
    // With the real value the callback goes on (and refuses the made-up code).
    let genuine = http
        .get(&callback)
        .header(reqwest::header::COOKIE, format!("{name}={value}"))
        .send()
        .await
        .expect("callback");
    assert_eq!(genuine.status(), 400);
    assert!(
        genuine
            .text()
            .await
            .unwrap_or_default()
            .contains("code-refused")
    );
    assert_eq!(secret_version(&op, "acme-token").await, version);
    server.abort();
}

#[tokio::test]
async fn links_of_the_previous_key_work_during_a_rollover() {
    let op = Operator::prepare("reauth-rollover").await;
    let admin_client = op.client.clone();
    let secrets = op.secrets();
    let (old, new, retired) = (
        StateKey::generate(),
        StateKey::generate(),
        StateKey::generate(),
    );
    let body: Secret = serde_json::from_value(json!({
        "metadata": {"name": "rollover-key"},
        "data": {
            KEY_SECRET_KEY: base64_encode(new.as_bytes()),
            PREVIOUS_KEY_SECRET_KEY: base64_encode(old.as_bytes()),
        }
    }))
    .expect("secret");
    secrets
        .create(&kube::api::PostParams::default(), &body)
        .await
        .expect("create key Secret");
    let keys = callback::load_or_create_key(&admin_client, &op.ns, "rollover-key")
        .await
        .expect("keys");
    assert_eq!(keys.current(), &new);
    assert_eq!(keys.previous(), Some(&old));
    let now = Timestamp::now();
    let url = "https://sforg.example.test";
    let rolled = Links::new(url, keys, DEFAULT_LINK_LIFETIME).expect("links");
    let by_old = Links::new(url, old, DEFAULT_LINK_LIFETIME)
        .expect("links")
        .issue(&op.ns, "acme", "uid", 1, now);
    let by_retired = Links::new(url, retired, DEFAULT_LINK_LIFETIME)
        .expect("links")
        .issue(&op.ns, "acme", "uid", 1, now);
    let token = |link: &sforg_operator::crd::ReauthLink| {
        link.url.split("?t=").nth(1).unwrap_or_default().to_owned()
    };
    assert!(
        state::verify::<LinkClaims>(
            rolled.keys(),
            Purpose::Link,
            &token(&by_old),
            now.as_second()
        )
        .is_ok(),
        "a link mailed out before the rollover still works"
    );
    assert!(
        state::verify::<LinkClaims>(
            rolled.keys(),
            Purpose::Link,
            &token(&by_retired),
            now.as_second()
        )
        .is_err()
    );
    assert!(
        !rolled.verifies(&by_old, &op.ns, "acme", "uid", 1, now),
        "status gets a link of the new key"
    );
    let fresh = rolled.issue(&op.ns, "acme", "uid", 1, now);
    assert!(rolled.verifies(&fresh, &op.ns, "acme", "uid", 1, now));
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn set_cookies(response: &reqwest::Response) -> Vec<String> {
    response
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect()
}

/// The name and value of a `Set-Cookie` header.
fn cookie_pair(set_cookie: &str) -> (String, String) {
    let pair = set_cookie.split(';').next().unwrap_or_default();
    let (name, value) = pair.split_once('=').unwrap_or_default();
    (name.to_owned(), value.to_owned())
}

/// Starts a login from `link` in `browser` (the confirmation page, then its button): the
/// Salesforce authorize URL with its state.
async fn started(browser: &mut Browser, link: &str) -> Url {
    let page = browser.get(link).await;
    assert_eq!(
        (page.status, page.outcome()),
        (200, "confirm"),
        "{}",
        page.body
    );
    let form = HtmlForm::find(&page.body, "confirm_form").expect("confirmation form");
    let action = page.url.join(&form.action).expect("form action");
    let page = browser
        .send(action, Some(form.encoded(Some("continue"))))
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    page.location.expect("authorize URL")
}

fn callback_url(op: &Operator, params: &[(&str, &str)]) -> Url {
    let mut url = Url::parse(&format!("{}{CALLBACK_PATH}", public_url(op))).expect("url");
    url.query_pairs_mut().extend_pairs(params);
    url
}

/// Asserts a refusal: the status, the page's outcome, and no write to the token Secret.
async fn refused(
    op: &Operator,
    browser: &mut Browser,
    url: Url,
    status: u16,
    outcome: &str,
    version: &Option<String>,
) -> Page {
    let page = browser.send(url, None).await;
    assert_eq!(
        (page.status, page.outcome()),
        (status, outcome),
        "{}",
        page.body
    );
    assert!(page.body.contains("<h1"), "an HTML page");
    assert_eq!(
        &secret_version(op, "acme-token").await,
        version,
        "{outcome}: the token Secret is untouched"
    );
    page
}

#[tokio::test]
async fn forged_expired_replayed_and_foreign_states_are_refused() {
    let op = Operator::start_with_reauth("reauth-abuse").await;
    let org = expired_org(&op, "acme").await;
    let uid = org.uid().unwrap_or_default();
    let link = link_of(&op, "acme").await;
    let version = secret_version(&op, "acme-token").await;
    let key = op.reauth.as_ref().expect("reauth").links.key().clone();
    let mut browser = Browser::new(&op);
    let operator_url = Url::parse(public_url(&op)).expect("public url");

    // The link itself: altered, or for another org's path.
    let page = browser.get(&format!("{link}x")).await;
    assert_eq!((page.status, page.outcome()), (400, "bad-link"));
    let page = browser.get(&link.replace("/acme?", "/other?")).await;
    assert_eq!((page.status, page.outcome()), (400, "bad-link"));

    // A state altered on the way.
    let authorize = started(&mut browser, &link).await;
    let good_state = query(&authorize, "state");
    let (payload, signature) = good_state.split_once('.').expect("signed state");
    let mut chars: Vec<char> = payload.chars().collect();
    chars[5] = if chars[5] == 'A' { 'B' } else { 'A' };
    let tampered = format!("{}.{signature}", chars.into_iter().collect::<String>());
    let url = callback_url(&op, &[("code", "x"), ("state", &tampered)]);
    refused(&op, &mut browser, url, 400, "bad-state", &version).await;
    let url = callback_url(&op, &[("code", "x"), ("state", "made-up")]);
    refused(&op, &mut browser, url, 400, "bad-state", &version).await;
    let url = callback_url(&op, &[("code", "x")]);
    refused(&op, &mut browser, url, 400, "missing-state", &version).await;

    // A state whose ten minutes are over.
    let link_claims: LinkClaims = state::verify(
        &key,
        Purpose::Link,
        link.split("?t=").nth(1).unwrap_or_default(),
        Timestamp::now().as_second(),
    )
    .expect("link claims");
    let expired = StateClaims {
        ns: op.ns.clone(),
        name: "acme".into(),
        uid: uid.clone(),
        link: link_claims.reference(),
        nonce: "expired-nonce".into(),
        bind: state::binding("b1nd"),
        accept_user: None,
        exp: Timestamp::now().as_second() - 1,
    };
    browser.set_cookie(&operator_url, "sforg_reauth_expired-nonce", "b1nd");
    let signed = state::sign(&key, Purpose::State, &expired);
    let url = callback_url(&op, &[("code", "x"), ("state", &signed)]);
    refused(&op, &mut browser, url, 400, "state-expired", &version).await;

    // A state for another SalesforceOrg: one that replaced acme (another uid) ...
    let foreign = StateClaims {
        uid: "6b2f1c9e-0000-4000-8000-000000000000".into(),
        nonce: "foreign-nonce".into(),
        exp: Timestamp::now().as_second() + 600,
        ..expired.clone()
    };
    browser.set_cookie(&operator_url, "sforg_reauth_foreign-nonce", "b1nd");
    let signed = state::sign(&key, Purpose::State, &foreign);
    let url = callback_url(&op, &[("code", "x"), ("state", &signed)]);
    refused(&op, &mut browser, url, 410, "org-replaced", &version).await;
    // ... and beta's state carrying a code from acme's login: the PKCE verifier derived
    // from beta's state does not match acme's code.
    create_org(&op, "beta", "https://login.salesforce.com").await;
    let beta_link = link_of(&op, "beta").await;
    let beta_state = query(&started(&mut browser, &beta_link).await, "state");
    let acme_callback = to_callback(&mut browser, &op, &link, &admin(&op))
        .await
        .unwrap_or_else(|page| panic!("did not reach the callback: {page:?}"));
    let acme_code = query(&acme_callback, "code");
    let url = callback_url(&op, &[("code", &acme_code), ("state", &beta_state)]);
    refused(&op, &mut browser, url, 400, "code-refused", &version).await;
    assert!(
        secret(&op, "beta-token").await.is_none(),
        "beta got nothing"
    );

    // The callback opened in a browser that did not open the link (login CSRF).
    let mut other_browser = Browser::new(&op);
    refused(
        &op,
        &mut other_browser,
        acme_callback.clone(),
        403,
        "other-browser",
        &version,
    )
    .await;

    // A state with no code.
    let state_only = query(&acme_callback, "state");
    let url = callback_url(&op, &[("state", &state_only)]);
    refused(&op, &mut browser, url, 400, "missing-code", &version).await;

    // The genuine callback succeeds once; its URL replayed is refused.
    let done = browser.send(acme_callback.clone(), None).await;
    assert_eq!(done.status, 200, "{}", done.body);
    let version = secret_version(&op, "acme-token").await;
    refused(&op, &mut browser, acme_callback, 409, "replayed", &version).await;

    // The link itself is used up: it starts no new login.
    let page = browser.get(&link).await;
    assert!(
        matches!(page.outcome(), "link-used" | "not-needed"),
        "{}",
        page.body
    );
    op.wait_state("acme", TokenState::Valid, Some("TokenValid"))
        .await;
}

#[tokio::test]
async fn a_login_to_the_wrong_org_changes_nothing() {
    let op = Operator::start_with_reauth("reauth-wrong-org").await;
    let sandbox_user = op.demo.sandbox_user.username.clone();
    create_org(&op, "acme", "https://test.salesforce.com").await;
    let tokens = op
        .sim
        .control()
        .mint_tokens(&op.demo.app.client_id, &sandbox_user)
        .expect("mint");
    let mut data = BTreeMap::new();
    data.insert("access_token".to_owned(), tokens.access_token.clone());
    data.insert(
        "refresh_token".to_owned(),
        tokens.refresh_token.clone().unwrap_or_default(),
    );
    data.insert("instance_url".to_owned(), tokens.instance_url.clone());
    op.put_secret("acme-token", "acme", data).await;
    let valid = op.wait_state("acme", TokenState::Valid, None).await;
    let pinned = op.demo.sandbox.id.clone();
    assert_eq!(
        valid.status.as_ref().and_then(|s| s.org_id.clone()),
        Some(pinned.clone())
    );

    // The sandbox is refreshed from production: new org id, every grant gone.
    let refreshed = op
        .sim
        .control()
        .refresh_sandbox(&op.demo.sandbox.label)
        .expect("refresh sandbox");
    op.request_check("acme").await;
    op.wait_state("acme", TokenState::Expired, Some("RefreshTokenRevoked"))
        .await;
    let link = link_of(&op, "acme").await;
    let version = secret_version(&op, "acme-token").await;

    let person = Person {
        username: &sandbox_user,
        password: &op.demo.password,
        consent: Consent::Allow,
    };
    let mut browser = Browser::new(&op);
    let callback = to_callback(&mut browser, &op, &link, &person)
        .await
        .unwrap_or_else(|page| panic!("did not reach the callback: {page:?}"));
    let page = refused(&op, &mut browser, callback, 403, "wrong-org", &version).await;
    assert!(page.body.contains(&refreshed.id), "{}", page.body);
    assert!(page.body.contains(&pinned), "{}", page.body);
    assert!(page.body.contains("spec.expectedOrgId"), "{}", page.body);
    let org = op.orgs().get("acme").await.expect("org");
    let status = org.status.clone().unwrap_or_default();
    assert_eq!(status.state, Some(TokenState::Expired));
    assert_eq!(status.org_id, Some(pinned.clone()), "still pinned");
    let live = op
        .sim
        .control()
        .valid_refresh_tokens(&sandbox_user, None)
        .expect("valid tokens");
    assert!(live.is_empty(), "the refused login's tokens were revoked");

    // Accepting the refreshed sandbox deliberately, then logging in again, connects it.
    let patch = json!({"spec": {"expectedOrgId": refreshed.id}});
    op.orgs()
        .patch("acme", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("set expectedOrgId");
    // The spec changed: the link issued before is outdated, status has a new one.
    let link = eventually("a link for the new spec", CONVERGE, || async {
        let current = link_of(&op, "acme").await;
        (current != link).then_some(current)
    })
    .await;
    let callback = to_callback(&mut browser, &op, &link, &person)
        .await
        .unwrap_or_else(|page| panic!("did not reach the callback: {page:?}"));
    let done = browser.send(callback, None).await;
    assert_eq!(done.status, 200, "{}", done.body);
    let org = op
        .wait_state("acme", TokenState::Valid, Some("TokenValid"))
        .await;
    assert_eq!(
        org.status.and_then(|s| s.org_id),
        Some(refreshed.id.clone())
    );
}

#[tokio::test]
async fn salesforce_refusals_are_reported_on_the_org() {
    let op = Operator::start_with_reauth("reauth-refusals").await;
    expired_org(&op, "acme").await;
    let link = link_of(&op, "acme").await;
    let version = secret_version(&op, "acme-token").await;
    let app = op.demo.app.client_id.clone();
    let user = op.demo.user.username.clone();
    let mut browser = Browser::new(&op);

    // (what, set up Salesforce, person's answer, undo, outcome, reason on the org, advice)
    type Setup = fn(&Operator, &str, &str);
    let cases: Vec<(&str, Setup, Consent, Setup, &str, &str, &str)> = vec![
        (
            "the person chooses Deny",
            |_, _, _| {},
            Consent::Deny,
            |_, _, _| {},
            "denied",
            "AuthorizationDenied",
            "choose Allow",
        ),
        (
            "the app is not installed",
            |op, app, user| {
                op.sim
                    .control()
                    .uninstall_app(app, "acme")
                    .expect("uninstall");
                op.sim
                    .control()
                    .set_approve_uninstalled(user, false)
                    .expect("permission");
            },
            Consent::Allow,
            |op, app, _| op.sim.control().install_app(app, "acme").expect("install"),
            "salesforce-refused",
            "ConnectedAppNotInstalled",
            "install it",
        ),
        (
            "the app is blocked",
            |op, app, _| op.sim.control().block_app(app).expect("block"),
            Consent::Allow,
            |op, app, _| op.sim.control().unblock_app(app).expect("unblock"),
            "salesforce-refused",
            "ConnectedAppBlocked",
            "unblock it",
        ),
    ];
    for (what, setup, consent, undo, outcome, reason, advice) in cases {
        setup(&op, &app, &user);
        let person = Person {
            username: &user,
            password: &op.demo.password,
            consent,
        };
        let callback = to_callback(&mut browser, &op, &link, &person)
            .await
            .unwrap_or_else(|page| panic!("{what}: did not reach the callback: {page:?}"));
        assert!(!query(&callback, "error").is_empty(), "{what}: {callback}");
        let page = refused(&op, &mut browser, callback, 403, outcome, &version).await;
        assert!(page.body.contains(advice), "{what}: {}", page.body);
        let org = op
            .wait_state("acme", TokenState::Expired, Some(reason))
            .await;
        assert!(ready(&org).1.contains(advice), "{what}: {:?}", ready(&org));
        assert!(org.annotations().contains_key(REAUTH_ERROR_ANNOTATION));
        assert!(
            org.status
                .as_ref()
                .and_then(|s| s.reauth.as_ref())
                .is_some(),
            "{what}: the link stays"
        );
        undo(&op, &app, &user);
    }

    // Once fixed, the link works and the recorded failure is cleared.
    let callback = to_callback(&mut browser, &op, &link, &admin(&op))
        .await
        .unwrap_or_else(|page| panic!("did not reach the callback: {page:?}"));
    let done = browser.send(callback, None).await;
    assert_eq!(done.status, 200, "{}", done.body);
    let org = op
        .wait_state("acme", TokenState::Valid, Some("TokenValid"))
        .await;
    assert!(!org.annotations().contains_key(REAUTH_ERROR_ANNOTATION));
}

/// Refusals that only an External Client App's settings and policies cause, reported on the
/// page and the org with the setting to change: "Require secret for Web Server Flow" with
/// no secret in the spec, then "Admin approved users are pre-authorized" with the user
/// outside the app's permission sets. Fixing each lets the same link work.
#[tokio::test]
async fn external_client_app_refusals_name_the_setting_to_change() {
    let op = Operator::start_with_reauth_kind("reauth-eca", AppKind::ExternalClientApp).await;
    let ctl = op.sim.control();
    let app = op.demo.app.client_id.clone();
    let user = op.demo.user.username.clone();
    // A PKCE-only org: no clientSecretRef.
    op.create_org(
        "acme",
        json!({
            "loginUrl": "https://login.salesforce.com",
            "auth": {"webServer": {"clientId": app}},
            "tokenSecretRef": {"name": "acme-token"},
        }),
    )
    .await;
    op.wait_state("acme", TokenState::Pending, Some("AwaitingAuthorization"))
        .await;
    let link = link_of(&op, "acme").await;
    let mut browser = Browser::new(&op);

    // The app still requires its secret for the web server flow (the default).
    let callback = to_callback(&mut browser, &op, &link, &admin(&op))
        .await
        .unwrap_or_else(|page| panic!("did not reach the callback: {page:?}"));
    let page = refused(
        &op,
        &mut browser,
        callback,
        403,
        "salesforce-refused",
        &None,
    )
    .await;
    assert!(
        page.body.contains("Require secret for Web Server Flow"),
        "{}",
        page.body
    );
    let org = op
        .wait_state("acme", TokenState::Pending, Some("WebServerSecretRequired"))
        .await;
    assert!(
        ready(&org).1.contains("clientSecretRef"),
        "{:?}",
        ready(&org)
    );

    // Both secret settings cleared; the Permitted Users policy now admits only the
    // permission set, which the user no longer holds.
    ctl.set_require_secret(&app, false, false)
        .expect("settings");
    ctl.set_permitted_users(&app, PermittedUsers::AdminApprovedPreAuthorized)
        .expect("policy");
    ctl.set_user_permission_set(&user, DEMO_PERMISSION_SET, false)
        .expect("remove permission set");
    let callback = to_callback(&mut browser, &op, &link, &admin(&op))
        .await
        .unwrap_or_else(|page| panic!("did not reach the callback: {page:?}"));
    assert!(!query(&callback, "error").is_empty(), "{callback}");
    let page = refused(
        &op,
        &mut browser,
        callback,
        403,
        "salesforce-refused",
        &None,
    )
    .await;
    assert!(
        page.body.contains("Policies tab &gt; OAuth Policies"),
        "{}",
        page.body
    );
    op.wait_state("acme", TokenState::Pending, Some("UserNotApproved"))
        .await;

    // The permission set assigned again: the same link connects the org.
    ctl.set_user_permission_set(&user, DEMO_PERMISSION_SET, true)
        .expect("assign");
    log_in(&mut browser, &op, &link, &admin(&op)).await;
    let org = op
        .wait_state("acme", TokenState::Valid, Some("TokenValid"))
        .await;
    assert!(!org.annotations().contains_key(REAUTH_ERROR_ANNOTATION));
}

#[derive(Clone, Default)]
struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn codes_states_verifiers_and_tokens_never_reach_the_logs() {
    let capture = Capture::default();
    let writer = capture.clone();
    // This binary's only subscriber: it also sees the other tests of this file.
    tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    let op = Operator::start_with_reauth("reauth-leaks").await;
    create_org(&op, "acme", "https://login.salesforce.com").await;
    let link = link_of(&op, "acme").await;
    let mut browser = Browser::new(&op);
    let callback = log_in(&mut browser, &op, &link, &admin(&op)).await;
    let org = op.wait_state("acme", TokenState::Valid, None).await;
    let code = query(&callback, "code");
    let signed_state = query(&callback, "state");
    let key = op.reauth.as_ref().expect("reauth").links.key().clone();
    let claims: StateClaims = state::verify(
        &key,
        Purpose::State,
        &signed_state,
        Timestamp::now().as_second(),
    )
    .expect("state");
    let verifier = state::pkce_verifier(&key, &claims.nonce)
        .expose()
        .to_owned();
    let link_token = link.split("?t=").nth(1).unwrap_or_default().to_owned();
    let data = op.secret_data("acme-token").await;
    let mut secrets = vec![code, signed_state, verifier, link_token, claims.nonce];
    secrets.extend(data.get("access_token").cloned());
    secrets.extend(data.get("refresh_token").cloned());

    let status = serde_json::to_string(&org.status).expect("status json");
    let events = serde_json::to_string(&op.events_for("acme").await).expect("events json");
    let logs = String::from_utf8_lossy(&capture.0.lock().expect("logs")).into_owned();
    assert!(logs.contains("re-authorized"), "the capture works: {logs}");
    for secret in &secrets {
        assert!(secret.len() >= 20, "a real value");
        for (what, text) in [("logs", &logs), ("events", &events), ("status", &status)] {
            assert!(
                !text.contains(secret.as_str()),
                "a secret appeared in the {what}"
            );
        }
    }
}

/// The TokenExpiringSoon condition of an org (status, reason), if set.
fn expiring_soon(org: &SalesforceOrg) -> Option<(String, String)> {
    org.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "TokenExpiringSoon")
        .map(|c| (c.status.to_string(), c.reason.to_string()))
}

/// Waits until `check` holds for the org, for at most `timeout`.
async fn wait_org(
    op: &Operator,
    name: &str,
    what: &str,
    timeout: Duration,
    check: impl Fn(&SalesforceOrg) -> bool,
) -> SalesforceOrg {
    eventually(what, timeout, || async {
        let org = op.orgs().get(name).await.ok()?;
        check(&org).then_some(org)
    })
    .await
}

/// The app expires refresh tokens 45 s after login, and the operator's lead times are 30 s and
/// 15 s: the org warns (TokenExpiringSoon True) with a link ready at each lead time, by
/// requeue alone (no check is asked for and the check interval is 15 minutes), a login through
/// the link renews the authorization, and when the policy really ends it at Salesforce the org
/// turns Expired at the forecast time without anyone asking.
#[tokio::test]
async fn an_expiring_authorization_warns_in_time_and_a_login_through_the_link_renews_it() {
    use sforg_operator::crd::RefreshTokenPolicyType;
    use sforg_simulator::RefreshTokenPolicy;
    let mut op = Operator::prepare_with_reauth("reauth-expiry", AppKind::ConnectedApp).await;
    op.expiry_lead_times = vec![Duration::from_secs(30), Duration::from_secs(15)];
    op.start_controller();
    let policy = Duration::from_secs(45);
    op.sim
        .control()
        .set_refresh_token_policy(
            &op.demo.app.client_id,
            RefreshTokenPolicy::ExpireAfter { after: policy },
        )
        .expect("policy");
    op.ensure_app_secret().await;
    let spec = op
        .web_org("acme")
        .refresh_token_policy(RefreshTokenPolicyType::ExpireAfter, Some("45s"))
        .json();
    op.create_org("acme", spec).await;

    // Tokens brought in by hand, with the time of their login set by the person.
    op.seed_tokens("acme-token", "acme").await;
    let seeded = Timestamp::now();
    let authorized = Timestamp::from_second(seeded.as_second() + 1).expect("time");
    let patch =
        json!({"metadata": {"annotations": {AUTHORIZED_AT_ANNOTATION: authorized.to_string()}}});
    op.secrets()
        .patch("acme-token", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("annotate");
    let expires = authorized + k8s_openapi::jiff::SignedDuration::from_secs(45);
    let org = wait_org(&op, "acme", "a forecast", CONVERGE, |o| {
        o.status
            .as_ref()
            .and_then(|s| s.authorization_expires_at.clone())
            .map(|t| t.0)
            == Some(expires)
    })
    .await;
    let status = org.status.clone().unwrap_or_default();
    assert_eq!(status.state, Some(TokenState::Valid));
    assert_eq!(
        expiring_soon(&org),
        Some(("False".into(), "ExpiresLater".into()))
    );
    assert_eq!(status.reauth, None, "no link before the lead time");
    assert_eq!(status.authorized_at.map(|t| t.0), Some(authorized));

    // The first lead time: True, with its stage and a link.
    let org = wait_org(
        &op,
        "acme",
        "TokenExpiringSoon at 30s",
        CONVERGE + CONVERGE,
        |o| expiring_soon(o).is_some_and(|(s, _)| s == "True"),
    )
    .await;
    let flipped = Timestamp::now();
    println!(
        "TokenExpiringSoon seen True {:?} after the 30s lead time began",
        flipped.duration_since(expires - k8s_openapi::jiff::SignedDuration::from_secs(30))
    );
    let status = org.status.clone().unwrap_or_default();
    assert_eq!(
        expiring_soon(&org),
        Some(("True".into(), "ExpiringSoon".into()))
    );
    assert!(
        flipped >= expires - k8s_openapi::jiff::SignedDuration::from_secs(30),
        "not before the lead time"
    );
    assert_eq!(status.state, Some(TokenState::Valid));
    assert!(
        status.reauth.is_some(),
        "a link is ready while expiring soon"
    );
    let message = org
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "TokenExpiringSoon"))
        .map(|c| c.message.to_string())
        .unwrap_or_default();
    assert!(message.contains(&expires.to_string()), "{message}");
    assert!(message.contains("status.reauth.url"), "{message}");
    if status.expiry_lead_time.as_deref() == Some("30s") {
        // The second lead time, by requeue again.
        wait_org(&op, "acme", "the 15s stage", CONVERGE, |o| {
            o.status
                .as_ref()
                .and_then(|s| s.expiry_lead_time.as_deref())
                == Some("15s")
        })
        .await;
    }

    // A person logs in through the link while the org is still Valid.
    let link = link_of(&op, "acme").await;
    let mut browser = Browser::new(&op);
    log_in(&mut browser, &op, &link, &admin(&op)).await;
    let renewed = wait_org(&op, "acme", "a renewed authorization", CONVERGE, |o| {
        o.status
            .as_ref()
            .and_then(|s| s.authorized_at.clone())
            .is_some_and(|t| t.0 > authorized)
    })
    .await;
    let status = renewed.status.clone().unwrap_or_default();
    let new_at = status.authorized_at.clone().expect("authorizedAt").0;
    let renewed = wait_org(&op, "acme", "no longer expiring soon", CONVERGE, |o| {
        expiring_soon(o).is_some_and(|(s, _)| s == "False")
            && o.status.as_ref().is_some_and(|s| s.reauth.is_none())
    })
    .await;
    let status = renewed.status.clone().unwrap_or_default();
    assert_eq!(status.state, Some(TokenState::Valid));
    assert_eq!(
        expiring_soon(&renewed),
        Some(("False".into(), "ExpiresLater".into()))
    );
    assert_eq!(
        status.authorized_by.as_deref(),
        Some(op.demo.user.username.as_str())
    );
    let new_expiry = new_at + k8s_openapi::jiff::SignedDuration::from_secs(45);
    assert_eq!(
        status.authorization_expires_at.map(|t| t.0),
        Some(new_expiry)
    );
    assert_eq!(status.expiry_lead_time, None);
    // The Event of the login says who, when and which org.
    let events = op.events_for("acme").await;
    let want = format!(
        "Re-authorized by {} at {new_at} ({})",
        op.demo.user.username, op.demo.org.id
    );
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("Reauthorized")
                && e.note.as_deref() == Some(want.as_str())),
        "{want} in {:?}",
        events
            .iter()
            .map(|e| (&e.reason, &e.note))
            .collect::<Vec<_>>()
    );
    // The warning was told as an Event too, once per lead time reached.
    let warnings: Vec<_> = events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("TokenExpiringSoon"))
        .collect();
    assert!(
        (1..=2).contains(&warnings.len()),
        "{:?}",
        warnings.iter().map(|e| &e.note).collect::<Vec<_>>()
    );
    // `kubectl get sforg -o wide` shows who and until when.
    let kubeconfig = std::env::var("SFORG_TEST_KUBECONFIG").expect("SFORG_TEST_KUBECONFIG");
    let wide = std::process::Command::new("kubectl")
        .args(["get", "sforg", "acme", "-n", &op.ns, "-o", "wide"])
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .expect("kubectl (scripts/control-plane.sh puts it on the PATH)");
    let table = String::from_utf8_lossy(&wide.stdout);
    for column in ["AUTHORIZED BY", "AUTHORIZED", "EXPIRES"] {
        assert!(table.contains(column), "{table}");
    }
    assert!(table.contains(&op.demo.user.username), "{table}");
    assert!(table.contains(&new_expiry.to_string()), "{table}");

    // Nobody logs in again: when the policy ends the grant at Salesforce, the org is checked
    // at the forecast expiry and turns Expired, nothing asked.
    let expired = wait_org(
        &op,
        "acme",
        "Expired by the policy",
        Duration::from_secs(45) + CONVERGE,
        |o| o.status.as_ref().and_then(|s| s.state) == Some(TokenState::Expired),
    )
    .await;
    println!(
        "Expired seen {:?} after the forecast expiry",
        Timestamp::now().duration_since(new_expiry)
    );
    assert_eq!(ready(&expired).0, "RefreshTokenRevoked");
    assert_eq!(
        expiring_soon(&expired),
        Some(("False".into(), "TokenExpired".into()))
    );
    assert!(
        expired
            .status
            .as_ref()
            .and_then(|s| s.reauth.clone())
            .is_some(),
        "an Expired org has a link"
    );
    let valid = op
        .sim
        .control()
        .valid_refresh_tokens(&op.demo.user.username, Some(&op.demo.app.client_id))
        .expect("valid tokens");
    assert!(valid.is_empty(), "the policy ended the grant at Salesforce");
}
