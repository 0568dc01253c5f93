//! What an External Client App changes, over the wire as the operator sees it: no
//! installation, users pre-authorized through permission sets, PKCE required, the consumer
//! secret required per flow, the refresh token policies (with the 30-day idle limit), and
//! revocation from the External Client Apps OAuth Usage page.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::redirect::Policy;
use serde_json::Value;
use sforg_simulator::html_form::HtmlForm;
use sforg_simulator::{
    AppKind, DEMO_PERMISSION_SET, DemoOptions, DemoSeed, GRANT_JWT_BEARER, JwtKeyPair,
    PermittedUsers, RefreshTokenPolicy, Simulator, pkce_challenge,
};

const LOGIN: &str = "https://login.salesforce.com";
const TEST: &str = "https://test.salesforce.com";
const CALLBACK: &str = "http://localhost:8080/oauth/callback";
const VERIFIER: &str = "k4nU1cY2s7Tq9rVb0Xw3Zp5Lm8Hd6Jf2Ga1Se4Rt7Yu9Io0Pl";

async fn start() -> (Simulator, DemoSeed) {
    let sim = Simulator::start().await.expect("start simulator");
    let demo = sim
        .seed_demo_with(DemoOptions {
            kind: AppKind::ExternalClientApp,
            rotation: false,
            ..DemoOptions::default()
        })
        .expect("seed demo");
    (sim, demo)
}

fn client(sim: &Simulator) -> reqwest::Client {
    reqwest::Client::builder()
        .proxy(reqwest::Proxy::https(sim.proxy_url()).expect("proxy"))
        .add_root_certificate(reqwest::Certificate::from_pem(sim.ca_pem().as_bytes()).expect("ca"))
        .redirect(Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

async fn token(client: &reqwest::Client, host: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let response = client
        .post(format!("{host}/services/oauth2/token"))
        .form(form)
        .send()
        .await
        .expect("send");
    let status = response.status();
    let body = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

fn error_body(error: &str, description: &str) -> Value {
    serde_json::json!({ "error": error, "error_description": description })
}

fn authorize_url(client_id: &str, pkce: bool) -> String {
    let challenge = pkce_challenge(VERIFIER);
    let mut pairs = vec![
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", CALLBACK),
        ("scope", "api refresh_token"),
        ("state", "s1"),
    ];
    if pkce {
        pairs.push(("code_challenge", challenge.as_str()));
        pairs.push(("code_challenge_method", "S256"));
    }
    format!(
        "{LOGIN}/services/oauth2/authorize?{}",
        serde_urlencoded::to_string(&pairs).expect("query")
    )
}

fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("location")
        .to_string()
}

fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .ok()?
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// Logs in (and allows, when asked) like a browser; returns the final `Location`.
async fn browse(client: &reqwest::Client, url: &str, demo: &DemoSeed) -> String {
    let page = client.get(url).send().await.expect("authorize page");
    if page.status() == StatusCode::FOUND {
        return location(&page);
    }
    let html = page.text().await.expect("html");
    let mut login = HtmlForm::find(&html, "login_form").expect("login form");
    login
        .set("username", &demo.user.username)
        .set("pw", &demo.password);
    let response = client
        .post(format!("{LOGIN}{}", login.action))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(login.encoded(Some("Login")))
        .send()
        .await
        .expect("login post");
    if response.status() == StatusCode::FOUND {
        return location(&response);
    }
    let html = response.text().await.expect("consent html");
    let consent = HtmlForm::find(&html, "consent_form").expect("consent form");
    let response = client
        .post(format!("{LOGIN}{}", consent.action))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(consent.encoded(Some("allow")))
        .send()
        .await
        .expect("consent post");
    location(&response)
}

/// A code through the browser, exchanged with or without the consumer secret.
async fn authorize_and_exchange(
    client: &reqwest::Client,
    demo: &DemoSeed,
    with_secret: bool,
) -> (StatusCode, Value) {
    let location = browse(client, &authorize_url(&demo.app.client_id, true), demo).await;
    let code = query_param(&location, "code").unwrap_or_else(|| panic!("code in {location}"));
    let secret = demo.app.client_secret.clone().unwrap_or_default();
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("client_id", demo.app.client_id.as_str()),
        ("redirect_uri", CALLBACK),
        ("code_verifier", VERIFIER),
    ];
    if with_secret {
        form.push(("client_secret", secret.as_str()));
    }
    token(client, LOGIN, &form).await
}

async fn refresh(
    client: &reqwest::Client,
    demo: &DemoSeed,
    refresh_token: &str,
    secret: Option<&str>,
) -> (StatusCode, Value) {
    let mut form = vec![
        ("grant_type", "refresh_token"),
        ("client_id", demo.app.client_id.as_str()),
        ("refresh_token", refresh_token),
    ];
    if let Some(secret) = secret {
        form.push(("client_secret", secret));
    }
    token(client, LOGIN, &form).await
}

async fn jwt(client: &reqwest::Client, demo: &DemoSeed) -> (StatusCode, Value) {
    let assertion = JwtKeyPair::test_key()
        .assertion(
            &demo.app.client_id,
            &demo.sandbox_user.username,
            TEST,
            Duration::from_secs(180),
        )
        .expect("sign");
    token(
        client,
        TEST,
        &[("grant_type", GRANT_JWT_BEARER), ("assertion", &assertion)],
    )
    .await
}

#[tokio::test]
async fn an_external_client_app_needs_no_installation_and_admits_by_permission_set() {
    let (sim, demo) = start().await;
    let client = client(&sim);
    assert_eq!(demo.app.kind, AppKind::ExternalClientApp);
    assert!(demo.app.installed_in.is_empty(), "{:?}", demo.app);
    assert!(demo.app.require_pkce);

    // No installation, yet the web server flow works (the Connected App rule does not apply).
    let (status, body) = authorize_and_exchange(&client, &demo, true).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // JWT bearer: the sandbox user is pre-authorized only through the permission set.
    let (status, body) = jwt(&client, &demo).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    sim.set_user_permission_set(&demo.sandbox_user.username, DEMO_PERMISSION_SET, false)
        .expect("remove permission set");
    let (status, body) = jwt(&client, &demo).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        error_body("invalid_grant", "user hasn't approved this consumer")
    );
    // Selecting another permission set the user holds admits them again.
    sim.set_user_permission_set(&demo.sandbox_user.username, "Backup_Operators", true)
        .expect("assign");
    sim.set_app_permission_set(&demo.app.client_id, "Backup_Operators", true)
        .expect("select");
    let (status, body) = jwt(&client, &demo).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // "Admin approved users are pre-authorized": a user without the permission set is
    // refused at login, on the redirect.
    sim.set_permitted_users(
        &demo.app.client_id,
        PermittedUsers::AdminApprovedPreAuthorized,
    )
    .expect("policy");
    sim.set_user_permission_set(&demo.user.username, DEMO_PERMISSION_SET, false)
        .expect("remove");
    let location = browse(&client, &authorize_url(&demo.app.client_id, true), &demo).await;
    assert_eq!(
        query_param(&location, "error").as_deref(),
        Some("OAUTH_APP_ACCESS_DENIED"),
        "{location}"
    );
    sim.set_user_permission_set(&demo.user.username, DEMO_PERMISSION_SET, true)
        .expect("assign");
    let location = browse(&client, &authorize_url(&demo.app.client_id, true), &demo).await;
    assert!(query_param(&location, "code").is_some(), "{location}");
}

#[tokio::test]
async fn an_external_client_app_requires_pkce_by_default() {
    let (sim, demo) = start().await;
    let client = client(&sim);
    let page = client
        .get(authorize_url(&demo.app.client_id, false))
        .send()
        .await
        .expect("authorize");
    assert_eq!(page.status(), StatusCode::FOUND);
    let location = location(&page);
    assert_eq!(
        query_param(&location, "error").as_deref(),
        Some("invalid_request")
    );
    assert_eq!(
        query_param(&location, "error_description").as_deref(),
        Some("missing required code challenge")
    );
    sim.set_require_pkce(&demo.app.client_id, false)
        .expect("pkce off");
    let page = client
        .get(authorize_url(&demo.app.client_id, false))
        .send()
        .await
        .expect("authorize");
    assert_eq!(page.status(), StatusCode::OK, "the login page");
}

#[tokio::test]
async fn the_secret_is_required_per_flow_as_the_settings_say() {
    let (sim, demo) = start().await;
    let client = client(&sim);
    let secret = demo.app.client_secret.clone().expect("secret");

    // Both required (the defaults): a code exchange without the secret is refused.
    let (status, body) = authorize_and_exchange(&client, &demo, false).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        error_body("invalid_client", "invalid client credentials")
    );

    // The common trap: the secret off for the web server flow (PKCE only) but still on
    // for the refresh token flow. The login works; the first refresh fails.
    sim.set_require_secret(&demo.app.client_id, false, true)
        .expect("settings");
    let (status, body) = authorize_and_exchange(&client, &demo, false).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let refresh_token = body["refresh_token"].as_str().expect("refresh token");
    let (status, body) = refresh(&client, &demo, refresh_token, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        error_body("invalid_client", "invalid client credentials")
    );
    let (status, body) = refresh(&client, &demo, refresh_token, Some(&secret)).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Off for the refresh token flow too: no secret needed, but a wrong one still fails.
    sim.set_require_secret(&demo.app.client_id, false, false)
        .expect("settings");
    let (status, body) = refresh(&client, &demo, refresh_token, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = refresh(&client, &demo, refresh_token, Some("wrong")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body, error_body("invalid_grant", "authentication failure"));
}

#[tokio::test]
async fn refresh_token_policies_include_immediate_expiry_and_the_idle_limit() {
    let (sim, demo) = start().await;
    let client = client(&sim);
    let secret = demo.app.client_secret.clone().expect("secret");
    let minted = sim
        .mint_tokens(&demo.app.client_id, &demo.user.username)
        .expect("mint");
    let rt = minted.refresh_token.clone().expect("refresh token");

    // The 30-day idle limit: each use resets the window.
    sim.set_idle_refresh_limit(&demo.app.client_id, true)
        .expect("idle limit");
    sim.advance_clock(Duration::from_secs(29 * 24 * 3600));
    let (status, body) = refresh(&client, &demo, &rt, Some(&secret)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    sim.advance_clock(Duration::from_secs(29 * 24 * 3600));
    let (status, body) = refresh(&client, &demo, &rt, Some(&secret)).await;
    assert_eq!(status, StatusCode::OK, "used within 30 days: {body}");
    sim.advance_clock(Duration::from_secs(31 * 24 * 3600));
    let (status, body) = refresh(&client, &demo, &rt, Some(&secret)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        error_body("invalid_grant", "expired access/refresh token")
    );

    // "Immediately expire refresh token": a refresh token is issued and never accepted.
    sim.set_refresh_token_policy(&demo.app.client_id, RefreshTokenPolicy::ImmediatelyExpire)
        .expect("policy");
    let minted = sim
        .mint_tokens(&demo.app.client_id, &demo.user.username)
        .expect("mint");
    let (status, body) = refresh(
        &client,
        &demo,
        minted.refresh_token.as_deref().expect("rt"),
        Some(&secret),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        error_body("invalid_grant", "expired access/refresh token")
    );
}

#[tokio::test]
async fn the_oauth_usage_page_revokes_one_user_or_the_whole_app() {
    let (sim, demo) = start().await;
    let client = client(&sim);
    let secret = demo.app.client_secret.clone().expect("secret");
    let a = sim
        .mint_tokens(&demo.app.client_id, &demo.user.username)
        .expect("mint");
    let b = sim
        .mint_tokens(&demo.app.client_id, &demo.sandbox_user.username)
        .expect("mint");

    // "All tokens for a user of a specific external client app".
    let revoked = sim
        .revoke_user_tokens(&demo.user.username, Some(&demo.app.client_id))
        .expect("revoke user");
    assert_eq!(revoked, 1);
    assert!(!sim.access_token_valid(&a.access_token));
    assert!(sim.access_token_valid(&b.access_token));

    // "All tokens of a specific external client app".
    let revoked = sim
        .revoke_app_tokens(&demo.app.client_id)
        .expect("revoke app");
    assert_eq!(revoked, 1);
    assert!(!sim.access_token_valid(&b.access_token));
    let (status, body) = token(
        &client,
        TEST,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", demo.app.client_id.as_str()),
            ("client_secret", secret.as_str()),
            ("refresh_token", b.refresh_token.as_deref().expect("rt")),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        error_body("invalid_grant", "expired access/refresh token")
    );
}

#[tokio::test]
async fn a_connected_app_still_needs_installing() {
    let sim = Simulator::start().await.expect("start simulator");
    let demo = sim.seed_demo().expect("seed");
    assert_eq!(demo.app.kind, AppKind::ConnectedApp);
    let client = client(&sim);
    sim.uninstall_app(&demo.app.client_id, &demo.org.label)
        .expect("uninstall");
    let location = browse(&client, &authorize_url(&demo.app.client_id, true), &demo).await;
    assert_eq!(
        query_param(&location, "error_description").as_deref(),
        Some("app must be installed into org"),
        "{location}"
    );
}
