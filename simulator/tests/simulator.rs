//! End-to-end tests: a reqwest 0.12 client configured exactly as the operator's will be
//! (HTTPS proxy + extra trusted CA) talks to the real Salesforce host names.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::redirect::Policy;
use serde_json::Value;
use sforg_simulator::html_form::HtmlForm;
use sforg_simulator::{
    AppSpec, DemoSeed, Endpoint, Fault, FaultKind, GRANT_JWT_BEARER, JwtKeyPair, OrgSpec,
    RefreshTokenPolicy, Simulator, UserSpec, pkce_challenge,
};

const LOGIN: &str = "https://login.salesforce.com";
const TEST: &str = "https://test.salesforce.com";
const CALLBACK: &str = "http://localhost:8080/oauth/callback";
const VERIFIER: &str = "k4nU1cY2s7Tq9rVb0Xw3Zp5Lm8Hd6Jf2Ga1Se4Rt7Yu9Io0Pl";

async fn start() -> (Simulator, DemoSeed) {
    let sim = Simulator::start().await.expect("start simulator");
    let demo = sim.seed_demo().expect("seed demo");
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

async fn post_form(
    client: &reqwest::Client,
    url: &str,
    form: &[(&str, &str)],
) -> (StatusCode, String) {
    let response = client.post(url).form(form).send().await.expect("send");
    let status = response.status();
    (status, response.text().await.expect("body"))
}

async fn token(client: &reqwest::Client, host: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let (status, body) = post_form(client, &format!("{host}/services/oauth2/token"), form).await;
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

async fn refresh(
    client: &reqwest::Client,
    demo: &DemoSeed,
    refresh_token: &str,
) -> (StatusCode, Value) {
    let secret = demo.app.client_secret.clone().unwrap_or_default();
    token(
        client,
        LOGIN,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", &demo.app.client_id),
            ("client_secret", &secret),
            ("refresh_token", refresh_token),
        ],
    )
    .await
}

fn error_body(error: &str, description: &str) -> Value {
    serde_json::json!({ "error": error, "error_description": description })
}

fn authorize_url(host: &str, client_id: &str, extra: &[(&str, &str)]) -> String {
    let challenge = pkce_challenge(VERIFIER);
    let mut pairs = vec![
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", CALLBACK),
        ("scope", "api refresh_token"),
        ("state", "st&te 1"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    pairs.extend_from_slice(extra);
    format!(
        "{host}/services/oauth2/authorize?{}",
        serde_urlencoded::to_string(&pairs).expect("query")
    )
}

/// Follows the login form (and the consent form with `decision`, when shown) like a
/// browser; returns the final `Location`.
async fn browse(
    client: &reqwest::Client,
    host: &str,
    url: &str,
    username: &str,
    password: &str,
    decision: &str,
) -> String {
    let page = client.get(url).send().await.expect("authorize page");
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.expect("html");
    let mut login = HtmlForm::find(&html, "login_form").expect("login form");
    login.set("username", username).set("pw", password);
    let response = client
        .post(format!("{host}{}", login.action))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(login.encoded(Some("Login")))
        .send()
        .await
        .expect("login post");
    if response.status() == StatusCode::FOUND {
        return location(&response);
    }
    let html = response.text().await.expect("consent html");
    let consent =
        HtmlForm::find(&html, "consent_form").unwrap_or_else(|| panic!("consent form in {html}"));
    let response = client
        .post(format!("{host}{}", consent.action))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(consent.encoded(Some(decision)))
        .send()
        .await
        .expect("consent post");
    assert_eq!(response.status(), StatusCode::FOUND);
    location(&response)
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

#[tokio::test]
async fn web_server_flow_with_pkce_end_to_end() {
    let (sim, demo) = start().await;
    let client = client(&sim);
    let secret = demo.app.client_secret.clone().expect("secret");
    let url = authorize_url(LOGIN, &demo.app.client_id, &[]);

    let location = browse(
        &client,
        LOGIN,
        &url,
        &demo.user.username,
        &demo.password,
        "allow",
    )
    .await;
    assert!(location.starts_with(CALLBACK), "{location}");
    assert_eq!(query_param(&location, "state").as_deref(), Some("st&te 1"));
    let code = query_param(&location, "code").expect("code");

    let base = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("client_id", demo.app.client_id.as_str()),
        ("client_secret", secret.as_str()),
        ("redirect_uri", CALLBACK),
    ];
    let (status, body) = token(&client, LOGIN, &base).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body, error_body("invalid_grant", "invalid code verifier"));

    let wrong = "x".repeat(50);
    let mut with_wrong = base.to_vec();
    with_wrong.push(("code_verifier", &wrong));
    let (status, body) = token(&client, LOGIN, &with_wrong).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_request");

    let mut public_secret = base.to_vec();
    public_secret.retain(|(k, _)| *k != "client_secret");
    public_secret.push(("code_verifier", VERIFIER));
    let (status, body) = token(&client, LOGIN, &public_secret).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_client");

    let mut good = base.to_vec();
    good.push(("code_verifier", VERIFIER));
    let (status, body) = token(&client, LOGIN, &good).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body["access_token"]
            .as_str()
            .expect("at")
            .starts_with(&demo.org.id[..15])
    );
    assert!(body["refresh_token"].is_string());
    assert!(body["issued_at"].is_string());
    assert!(
        body["issued_at"]
            .as_str()
            .expect("issued_at")
            .parse::<u64>()
            .is_ok()
    );
    assert!(body.get("expires_in").is_none());
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "api refresh_token");
    assert_eq!(body["instance_url"], "https://acme.my.salesforce.com");
    assert_eq!(
        body["id"],
        format!(
            "https://login.salesforce.com/id/{}/{}",
            demo.org.id, demo.user.id
        )
    );

    let (status, again) = token(&client, LOGIN, &good).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        again,
        error_body("invalid_grant", "invalid authorization code")
    );

    let access = body["access_token"].as_str().expect("at");
    let info: Value = client
        .get(format!("{LOGIN}/services/oauth2/userinfo"))
        .bearer_auth(access)
        .send()
        .await
        .expect("userinfo")
        .json()
        .await
        .expect("json");
    assert_eq!(info["preferred_username"], demo.user.username);
    assert_eq!(info["organization_id"], demo.org.id);
    assert_eq!(info["user_id"], demo.user.id);
    assert_eq!(info["active"], true);

    let identity = client
        .get(body["id"].as_str().expect("id"))
        .bearer_auth(access)
        .send()
        .await
        .expect("id");
    assert_eq!(identity.status(), StatusCode::OK);

    // Already approved: no consent page the second time.
    let location = browse(
        &client,
        LOGIN,
        &url,
        &demo.user.username,
        &demo.password,
        "allow",
    )
    .await;
    assert!(query_param(&location, "code").is_some());
}

#[tokio::test]
async fn authorize_errors_follow_salesforce() {
    let (sim, demo) = start().await;
    let client = client(&sim);

    let page = client
        .get(authorize_url(LOGIN, "3MVG9unknown", &[]))
        .send()
        .await
        .expect("page");
    assert_eq!(page.status(), StatusCode::BAD_REQUEST);
    assert!(
        page.text()
            .await
            .expect("html")
            .contains("invalid_client_id")
    );

    let bad_redirect = authorize_url(LOGIN, &demo.app.client_id, &[]).replace("8080", "9999");
    let page = client.get(bad_redirect).send().await.expect("page");
    assert_eq!(page.status(), StatusCode::BAD_REQUEST);
    assert!(
        page.text()
            .await
            .expect("html")
            .contains("redirect_uri_mismatch")
    );

    // Wrong password: the login form again, with an error.
    let html = client
        .get(authorize_url(LOGIN, &demo.app.client_id, &[]))
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    let mut form = HtmlForm::find(&html, "login_form").expect("form");
    form.set("username", &demo.user.username).set("pw", "nope");
    let html = client
        .post(format!("{LOGIN}{}", form.action))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.encoded(Some("Login")))
        .send()
        .await
        .expect("post")
        .text()
        .await
        .expect("html");
    assert!(html.contains("id=\"error\""));

    // A sandbox user cannot log in on login.salesforce.com, only on test.salesforce.com.
    let prod_url = authorize_url(LOGIN, &demo.app.client_id, &[]);
    let page = client
        .get(&prod_url)
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    let mut form = HtmlForm::find(&page, "login_form").expect("form");
    form.set("username", &demo.sandbox_user.username)
        .set("pw", &demo.password);
    let response = client
        .post(format!("{LOGIN}{}", form.action))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.encoded(Some("Login")))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), StatusCode::OK);

    // Deny.
    let url = authorize_url(TEST, &demo.app.client_id, &[("prompt", "login consent")]);
    let location = browse(
        &client,
        TEST,
        &url,
        &demo.sandbox_user.username,
        &demo.password,
        "deny",
    )
    .await;
    assert_eq!(
        query_param(&location, "error").as_deref(),
        Some("access_denied")
    );
    assert!(location.contains("error_description=end-user+denied+authorization"));
    assert_eq!(query_param(&location, "state").as_deref(), Some("st&te 1"));

    // Not installed in the org, user lacks "Approve Uninstalled Connected Apps".
    sim.uninstall_app("sforg-operator", "acme")
        .expect("uninstall");
    let url = authorize_url(LOGIN, &demo.app.client_id, &[]);
    let location = browse(
        &client,
        LOGIN,
        &url,
        &demo.user.username,
        &demo.password,
        "allow",
    )
    .await;
    assert!(
        location.contains("error=invalid_client&error_description=app+must+be+installed+into+org")
    );
    sim.set_approve_uninstalled(&demo.user.username, true)
        .expect("perm");
    let location = browse(
        &client,
        LOGIN,
        &url,
        &demo.user.username,
        &demo.password,
        "allow",
    )
    .await;
    assert!(query_param(&location, "code").is_some(), "{location}");

    sim.block_app("sforg-operator").expect("block");
    let response = client.get(&url).send().await.expect("blocked");
    assert_eq!(response.status(), StatusCode::FOUND);
    assert!(
        location_of(&response)
            .contains("error=OAUTH_APP_BLOCKED&error_description=this+app+is+blocked+by+admin")
    );
}

fn location_of(response: &reqwest::Response) -> String {
    location(response)
}

#[tokio::test]
async fn refresh_without_rotation_keeps_the_token() {
    let sim = Simulator::start().await.expect("start");
    let demo = sim
        .seed_demo_with(sforg_simulator::DemoOptions {
            rotation: false,
            ..Default::default()
        })
        .expect("seed");
    let client = client(&sim);
    let minted = sim
        .mint_tokens("sforg-operator", &demo.user.username)
        .expect("mint");
    let refresh_token = minted.refresh_token.expect("refresh token");

    let (status, body) = refresh(&client, &demo, &refresh_token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.get("refresh_token").is_none(),
        "no rotation: no refresh_token field"
    );
    assert!(body["access_token"].is_string());

    // HTTP Basic works too, and the same refresh token keeps working.
    let response = client
        .post(format!("{LOGIN}/services/oauth2/token"))
        .basic_auth(&demo.app.client_id, demo.app.client_secret.as_deref())
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.as_str()),
        ])
        .send()
        .await
        .expect("basic");
    assert_eq!(response.status(), StatusCode::OK);

    // Wrong secret.
    let (status, body) = token(
        &client,
        LOGIN,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", &demo.app.client_id),
            ("client_secret", "WRONG"),
            ("refresh_token", &refresh_token),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body, error_body("invalid_grant", "authentication failure"));

    // Unknown consumer key.
    let (_, body) = token(
        &client,
        LOGIN,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "3MVG9nope"),
            ("refresh_token", &refresh_token),
        ],
    )
    .await;
    assert_eq!(
        body,
        error_body("invalid_client_id", "client identifier invalid")
    );

    // Inactive user, then back.
    sim.deactivate_user(&demo.user.username)
        .expect("deactivate");
    let (_, body) = refresh(&client, &demo, &refresh_token).await;
    assert_eq!(body, error_body("invalid_grant", "inactive user"));
    sim.reactivate_user(&demo.user.username)
        .expect("reactivate");
    let (status, _) = refresh(&client, &demo, &refresh_token).await;
    assert_eq!(status, StatusCode::OK);

    // A production token is not known on test.salesforce.com.
    let secret = demo.app.client_secret.clone().unwrap_or_default();
    let (_, body) = token(
        &client,
        TEST,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", &demo.app.client_id),
            ("client_secret", &secret),
            ("refresh_token", &refresh_token),
        ],
    )
    .await;
    assert_eq!(
        body,
        error_body("invalid_grant", "expired access/refresh token")
    );
}

#[tokio::test]
async fn refresh_with_rotation_and_reuse_revokes_the_grant() {
    let (sim, demo) = start().await;
    let client = client(&sim);
    let first = sim
        .mint_tokens("sforg-operator", &demo.user.username)
        .expect("mint")
        .refresh_token
        .expect("rt");

    let (status, body) = refresh(&client, &demo, &first).await;
    assert_eq!(status, StatusCode::OK);
    let second = body["refresh_token"]
        .as_str()
        .expect("rotated token")
        .to_string();
    assert_ne!(first, second);
    let access = body["access_token"].as_str().expect("at").to_string();
    assert_eq!(
        sim.valid_refresh_tokens(&demo.user.username, Some("sforg-operator"))
            .expect("list"),
        vec![second.clone()]
    );

    // Presenting the rotated-out token kills the whole grant.
    let (status, body) = refresh(&client, &demo, &first).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        error_body("invalid_grant", "expired access/refresh token")
    );
    let (_, body) = refresh(&client, &demo, &second).await;
    assert_eq!(
        body,
        error_body("invalid_grant", "expired access/refresh token")
    );
    assert!(!sim.access_token_valid(&access));
    assert!(
        sim.valid_refresh_tokens(&demo.user.username, None)
            .expect("list")
            .is_empty()
    );
}

#[tokio::test]
async fn revocation_gives_the_documented_errors() {
    let (sim, demo) = start().await;
    let client = client(&sim);
    let minted = sim
        .mint_tokens("sforg-operator", &demo.user.username)
        .expect("mint");
    let refresh_token = minted.refresh_token.clone().expect("rt");

    let (status, _) = post_form(
        &client,
        &format!("{LOGIN}/services/oauth2/revoke"),
        &[("token", refresh_token.as_str())],
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    let (status, body) = refresh(&client, &demo, &refresh_token).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        serde_json::to_string(&body).expect("json"),
        r#"{"error":"invalid_grant","error_description":"expired access/refresh token"}"#
    );

    let response = client
        .get(format!("{LOGIN}/services/oauth2/userinfo"))
        .bearer_auth(&minted.access_token)
        .send()
        .await
        .expect("userinfo");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    let (status, body) = post_form(
        &client,
        &format!("{LOGIN}/services/oauth2/revoke"),
        &[("token", refresh_token.as_str())],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("invalid_token"));

    // Control surface: revoke everything of the user for the app.
    let a = sim
        .mint_tokens("sforg-operator", &demo.user.username)
        .expect("mint");
    let b = sim
        .mint_tokens("sforg-operator", &demo.user.username)
        .expect("mint");
    assert_eq!(
        sim.revoke_user_tokens(&demo.user.username, Some("sforg-operator"))
            .expect("revoke"),
        2
    );
    for t in [a, b] {
        let (_, body) = refresh(&client, &demo, t.refresh_token.as_deref().expect("rt")).await;
        assert_eq!(
            body,
            error_body("invalid_grant", "expired access/refresh token")
        );
    }

    // One refresh token via the control surface.
    let c = sim
        .mint_tokens("sforg-operator", &demo.user.username)
        .expect("mint");
    sim.revoke_refresh_token(c.refresh_token.as_deref().expect("rt"))
        .expect("revoke one");
    let (_, body) = refresh(&client, &demo, c.refresh_token.as_deref().expect("rt")).await;
    assert_eq!(body["error"], "invalid_grant");
}

#[tokio::test]
async fn approvals_are_capped_at_five_per_user_and_app() {
    let (sim, demo) = start().await;
    let tokens: Vec<String> = (0..6)
        .map(|_| {
            sim.mint_tokens("sforg-operator", &demo.user.username)
                .expect("mint")
                .refresh_token
                .expect("rt")
        })
        .collect();
    let valid = sim
        .valid_refresh_tokens(&demo.user.username, Some("sforg-operator"))
        .expect("list");
    assert_eq!(valid.len(), 5);
    assert!(!valid.contains(&tokens[0]));
    assert_eq!(valid, tokens[1..].to_vec());
}

#[tokio::test]
async fn jwt_bearer_flow() {
    let (sim, demo) = start().await;
    let client = client(&sim);
    let key = JwtKeyPair::test_key();
    let assertion = key
        .assertion(
            &demo.app.client_id,
            &demo.user.username,
            LOGIN,
            Duration::from_secs(180),
        )
        .expect("sign");
    let (status, body) = token(
        &client,
        LOGIN,
        &[("grant_type", GRANT_JWT_BEARER), ("assertion", &assertion)],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.get("refresh_token").is_none());
    assert_eq!(body["instance_url"], "https://acme.my.salesforce.com");

    let wrong_aud = key
        .assertion(
            &demo.app.client_id,
            &demo.user.username,
            TEST,
            Duration::from_secs(180),
        )
        .expect("sign");
    let (status, body) = token(
        &client,
        LOGIN,
        &[("grant_type", GRANT_JWT_BEARER), ("assertion", &wrong_aud)],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body, error_body("invalid_grant", "audience is invalid"));

    let other_key = JwtKeyPair::other_test_key()
        .assertion(
            &demo.app.client_id,
            &demo.user.username,
            LOGIN,
            Duration::from_secs(180),
        )
        .expect("sign");
    let (_, body) = token(
        &client,
        LOGIN,
        &[("grant_type", GRANT_JWT_BEARER), ("assertion", &other_key)],
    )
    .await;
    assert_eq!(body, error_body("invalid_grant", "invalid assertion"));

    let unknown_client = key
        .assertion(
            "3MVG9nope",
            &demo.user.username,
            LOGIN,
            Duration::from_secs(180),
        )
        .expect("sign");
    let (_, body) = token(
        &client,
        LOGIN,
        &[
            ("grant_type", GRANT_JWT_BEARER),
            ("assertion", &unknown_client),
        ],
    )
    .await;
    assert_eq!(
        body,
        error_body("invalid_client_id", "client identifier invalid")
    );

    // A user that is neither pre-authorized nor has approved the app.
    sim.create_user(UserSpec::new("acme", "new@acme.example", "pw"))
        .expect("user");
    let unapproved = key
        .assertion(
            &demo.app.client_id,
            "new@acme.example",
            LOGIN,
            Duration::from_secs(180),
        )
        .expect("sign");
    let (_, body) = token(
        &client,
        LOGIN,
        &[("grant_type", GRANT_JWT_BEARER), ("assertion", &unapproved)],
    )
    .await;
    assert_eq!(
        body,
        error_body("invalid_grant", "user hasn't approved this consumer")
    );

    // Sandbox user at test.salesforce.com with the test audience.
    let sandbox = key
        .assertion(
            &demo.app.client_id,
            &demo.sandbox_user.username,
            TEST,
            Duration::from_secs(180),
        )
        .expect("sign");
    let (status, body) = token(
        &client,
        TEST,
        &[("grant_type", GRANT_JWT_BEARER), ("assertion", &sandbox)],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body["id"]
            .as_str()
            .expect("id")
            .starts_with("https://test.salesforce.com/id/")
    );
    assert_eq!(
        body["instance_url"],
        "https://acme--uat.sandbox.my.salesforce.com"
    );

    // The certificate of the key works as the registered credential too.
    sim.set_jwt_public_key(
        "sforg-operator",
        Some(&key.certificate_pem().expect("cert")),
    )
    .expect("register cert");
    let (status, _) = token(
        &client,
        LOGIN,
        &[("grant_type", GRANT_JWT_BEARER), ("assertion", &assertion)],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn client_credentials_only_on_my_domain() {
    let (sim, demo) = start().await;
    let client = client(&sim);
    let secret = demo.app.client_secret.clone().expect("secret");
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", demo.app.client_id.as_str()),
        ("client_secret", secret.as_str()),
    ];
    let (status, body) = token(&client, "https://acme.my.salesforce.com", &form).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.get("refresh_token").is_none());

    let (status, body) = token(&client, LOGIN, &form).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant");

    sim.set_run_as("sforg-operator", None)
        .expect("clear run-as");
    let (_, body) = token(&client, "https://acme.my.salesforce.com", &form).await;
    assert_eq!(
        body,
        error_body("invalid_grant", "no client credentials user enabled")
    );
}

#[tokio::test]
async fn the_query_resource_answers_a_backup_and_counts_its_calls() {
    let (sim, demo) = start().await;
    let client = client(&sim);
    let minted = sim
        .mint_tokens("sforg-operator", &demo.user.username)
        .expect("mint");
    let query = format!(
        "{}/services/data/v62.0/query?q=SELECT+Id,Name+FROM+Account",
        minted.instance_url
    );
    let response = client
        .get(&query)
        .bearer_auth(&minted.access_token)
        .send()
        .await
        .expect("query");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["done"], true);
    assert_eq!(body["totalSize"], 3);
    assert_eq!(body["records"][0]["attributes"]["type"], "Account");

    let no_query = format!("{}/services/data/v62.0/query", minted.instance_url);
    let response = client
        .get(&no_query)
        .bearer_auth(&minted.access_token)
        .send()
        .await
        .expect("query");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    sim.revoke_user_tokens(&demo.user.username, None)
        .expect("revoke");
    let response = client
        .get(&query)
        .bearer_auth(&minted.access_token)
        .send()
        .await
        .expect("query");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(sim.call_counts().endpoint(Endpoint::Query), 3);
    assert_eq!(sim.call_counts().endpoint(Endpoint::Limits), 0);
}

#[tokio::test]
async fn dead_tokens_get_401_and_403() {
    let (sim, demo) = start().await;
    let client = client(&sim);
    let minted = sim
        .mint_tokens("sforg-operator", &demo.user.username)
        .expect("mint");
    let limits = format!("{}/services/data/v62.0/limits", minted.instance_url);

    let response = client
        .get(&limits)
        .bearer_auth(&minted.access_token)
        .send()
        .await
        .expect("limits");
    assert_eq!(response.status(), StatusCode::OK);

    assert_eq!(sim.expire_all_sessions(), 1);
    let response = client
        .get(&limits)
        .bearer_auth(&minted.access_token)
        .send()
        .await
        .expect("limits");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.text().await.expect("body"),
        r#"[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]"#
    );
    let response = client
        .get(&minted.id)
        .bearer_auth(&minted.access_token)
        .send()
        .await
        .expect("id");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(response.text().await.expect("body"), "Bad_OAuth_Token");
    let response = client
        .get(format!("{LOGIN}/services/oauth2/userinfo"))
        .bearer_auth(&minted.access_token)
        .send()
        .await
        .expect("userinfo");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    // Refresh tokens survive an expiry of sessions.
    let (status, _) = refresh(&client, &demo, minted.refresh_token.as_deref().expect("rt")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn clock_advance_expires_sessions_and_policies() {
    let (sim, demo) = start().await;
    let client = client(&sim);
    let minted = sim
        .mint_tokens("sforg-operator", &demo.user.username)
        .expect("mint");
    let limits = format!("{}/services/data/v60.0/limits", minted.instance_url);

    // Activity extends the session.
    sim.advance_clock(Duration::from_secs(110 * 60));
    let ok = client
        .get(&limits)
        .bearer_auth(&minted.access_token)
        .send()
        .await
        .expect("limits");
    assert_eq!(ok.status(), StatusCode::OK);
    sim.advance_clock(Duration::from_secs(110 * 60));
    assert!(sim.access_token_valid(&minted.access_token));
    sim.advance_clock(Duration::from_secs(11 * 60));
    let dead = client
        .get(&limits)
        .bearer_auth(&minted.access_token)
        .send()
        .await
        .expect("limits");
    assert_eq!(dead.status(), StatusCode::UNAUTHORIZED);

    // Refresh token policy: expire if unused for 1 hour.
    sim.set_refresh_token_policy(
        "sforg-operator",
        RefreshTokenPolicy::ExpireIfUnused {
            unused_for: Duration::from_secs(3600),
        },
    )
    .expect("policy");
    let (status, body) =
        refresh(&client, &demo, minted.refresh_token.as_deref().expect("rt")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        error_body("invalid_grant", "expired access/refresh token")
    );

    // Authorization codes are short-lived.
    let url = authorize_url(LOGIN, &demo.app.client_id, &[]);
    let location = browse(
        &client,
        LOGIN,
        &url,
        &demo.user.username,
        &demo.password,
        "allow",
    )
    .await;
    let code = query_param(&location, "code").expect("code");
    sim.advance_clock(Duration::from_secs(16 * 60));
    let secret = demo.app.client_secret.clone().unwrap_or_default();
    let (_, body) = token(
        &client,
        LOGIN,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", &demo.app.client_id),
            ("client_secret", &secret),
            ("redirect_uri", CALLBACK),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(
        body,
        error_body("invalid_grant", "expired authorization code")
    );
}

#[tokio::test]
async fn fault_injection() {
    let (sim, demo) = start().await;
    let client = client(&sim);
    let rt = sim
        .mint_tokens("sforg-operator", &demo.user.username)
        .expect("mint")
        .refresh_token
        .expect("rt");

    sim.inject_fault(
        Fault::new(FaultKind::ServerError)
            .on(Endpoint::Token)
            .times(1),
    );
    let (status, body) = refresh(&client, &demo, &rt).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["error"], "unknown_error");

    sim.inject_fault(Fault::new(FaultKind::Maintenance).times(1));
    let response = client
        .post(format!("{LOGIN}/services/oauth2/token"))
        .form(&[("grant_type", "refresh_token")])
        .send()
        .await
        .expect("maintenance");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/html"))
    );
    assert!(response.text().await.expect("html").contains("Maintenance"));

    sim.inject_fault(
        Fault::new(FaultKind::ConnectionReset)
            .on(Endpoint::Token)
            .times(1),
    );
    let error = client
        .post(format!("{LOGIN}/services/oauth2/token"))
        .form(&[("grant_type", "refresh_token")])
        .send()
        .await
        .expect_err("connection reset");
    assert!(!error.is_status());

    sim.inject_fault(
        Fault::new(FaultKind::AlreadyProcessing)
            .on(Endpoint::Token)
            .times(1),
    );
    let (status, body) = refresh(&client, &demo, &rt).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        error_body("invalid_grant", "token request is already being processed")
    );

    // Faults were consumed: the token still works (rotation on: a new one comes back).
    let (status, body) = refresh(&client, &demo, &rt).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let access = body["access_token"].as_str().expect("at").to_string();

    let id = sim.inject_fault(Fault::new(FaultKind::RequestLimitExceeded).on(Endpoint::Limits));
    let limits = format!("{}/services/data/v62.0/limits", demo.org.instance_url);
    for _ in 0..2 {
        let response = client
            .get(&limits)
            .bearer_auth(&access)
            .send()
            .await
            .expect("limits");
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            response.text().await.expect("body"),
            r#"[{"message":"TotalRequests Limit exceeded.","errorCode":"REQUEST_LIMIT_EXCEEDED"}]"#
        );
    }
    assert!(sim.remove_fault(id));
    let response = client
        .get(&limits)
        .bearer_auth(&access)
        .send()
        .await
        .expect("limits");
    assert_eq!(response.status(), StatusCode::OK);

    sim.inject_fault(
        Fault::new(FaultKind::delay(Duration::from_millis(300)))
            .on(Endpoint::Userinfo)
            .times(1),
    );
    let started = Instant::now();
    let response = client
        .get(format!("{LOGIN}/services/oauth2/userinfo"))
        .bearer_auth(&access)
        .send()
        .await
        .expect("slow");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(sim.faults().is_empty());
}

#[tokio::test]
async fn counts_calls_and_records_proxy_hosts() {
    let (sim, demo) = start().await;
    let client = client(&sim);
    let minted = sim
        .mint_tokens("sforg-operator", &demo.user.username)
        .expect("mint");
    refresh(&client, &demo, minted.refresh_token.as_deref().expect("rt")).await;
    token(&client, LOGIN, &[("grant_type", "password")]).await;
    client
        .get(format!(
            "{}/services/data/v62.0/limits",
            minted.instance_url
        ))
        .bearer_auth(&minted.access_token)
        .send()
        .await
        .expect("limits");

    let counts = sim.call_counts();
    assert_eq!(counts.endpoint(Endpoint::Token), 2);
    assert_eq!(counts.grant_type("refresh_token"), 1);
    assert_eq!(counts.grant_type("password"), 1);
    assert_eq!(counts.endpoint(Endpoint::Limits), 1);
    sim.reset_call_counts();
    assert_eq!(sim.call_counts().endpoint(Endpoint::Token), 0);

    let hosts = sim.proxy_connects();
    assert!(hosts.iter().any(|h| h == "login.salesforce.com"));
    assert!(hosts.iter().any(|h| h == "acme.my.salesforce.com"));

    // Non-Salesforce hosts are refused by the proxy.
    assert!(client.get("https://example.com/").send().await.is_err());
    assert_eq!(
        sim.proxy_connects().last().map(String::as_str),
        Some("example.com")
    );
}

#[tokio::test]
async fn sandbox_refresh_changes_org_id_and_kills_grants() {
    let (sim, demo) = start().await;
    let client = client(&sim);
    let minted = sim
        .mint_tokens("sforg-operator", &demo.sandbox_user.username)
        .expect("mint");
    let secret = demo.app.client_secret.clone().unwrap_or_default();
    let form = |rt: &str| {
        vec![
            ("grant_type".to_string(), "refresh_token".to_string()),
            ("client_id".to_string(), demo.app.client_id.clone()),
            ("client_secret".to_string(), secret.clone()),
            ("refresh_token".to_string(), rt.to_string()),
        ]
    };
    let rt = minted.refresh_token.clone().expect("rt");
    let response = client
        .post(format!("{TEST}/services/oauth2/token"))
        .form(&form(&rt))
        .send()
        .await
        .expect("refresh");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    let rotated = body["refresh_token"].as_str().expect("rt").to_string();

    let refreshed = sim.refresh_sandbox("acme--uat").expect("refresh sandbox");
    assert_ne!(refreshed.id, demo.sandbox.id);
    assert!(refreshed.id.starts_with("00D") && refreshed.id.len() == 18);
    let response = client
        .post(format!("{TEST}/services/oauth2/token"))
        .form(&form(&rotated))
        .send()
        .await
        .expect("refresh");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let fresh = sim
        .mint_tokens("sforg-operator", &demo.sandbox_user.username)
        .expect("mint");
    assert!(fresh.id.contains(&refreshed.id));
    assert!(fresh.id.starts_with("https://test.salesforce.com/id/"));
}

#[tokio::test]
async fn introspection() {
    let (sim, demo) = start().await;
    let client = client(&sim);
    let minted = sim
        .mint_tokens("sforg-operator", &demo.user.username)
        .expect("mint");
    let secret = demo.app.client_secret.clone().unwrap_or_default();
    let introspect = |token: String| {
        let client = client.clone();
        let id = demo.app.client_id.clone();
        let secret = secret.clone();
        async move {
            let (_, body) = post_form(
                &client,
                &format!("{LOGIN}/services/oauth2/introspect"),
                &[
                    ("token", token.as_str()),
                    ("client_id", id.as_str()),
                    ("client_secret", secret.as_str()),
                ],
            )
            .await;
            serde_json::from_str::<Value>(&body).expect("json")
        }
    };
    let body = introspect(minted.access_token.clone()).await;
    assert_eq!(body["active"], true);
    assert_eq!(body["username"], demo.user.username);
    assert_eq!(body["token_type"], "access_token");
    assert!(body["exp"].is_u64());
    let body = introspect(minted.refresh_token.clone().expect("rt")).await;
    assert_eq!(body["active"], true);
    assert_eq!(body["token_type"], "refresh_token");
    sim.expire_all_sessions();
    assert_eq!(
        introspect(minted.access_token.clone()).await,
        serde_json::json!({"active": false})
    );
}

#[tokio::test]
async fn plain_http_port_and_custom_apps() {
    let sim = Simulator::start().await.expect("start");
    sim.create_org(OrgSpec::developer_edition("widgets"))
        .expect("org");
    sim.create_user(UserSpec::new("widgets", "dev@widgets.example", "secret-pw"))
        .expect("user");
    let app = sim
        .create_app(
            AppSpec::public("cli")
                .redirect_uri(CALLBACK)
                .install_in("widgets")
                .require_pkce(true),
        )
        .expect("app");
    assert!(app.client_secret.is_none());

    let plain = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("client");
    let http = sim.http_url().to_string();

    // PKCE required: no challenge is an error redirect.
    let response = plain
        .get(format!(
            "{http}/services/oauth2/authorize?response_type=code&client_id={}&redirect_uri={}",
            app.client_id,
            serde_urlencoded::to_string([("x", CALLBACK)])
                .expect("enc")
                .trim_start_matches("x=")
        ))
        .send()
        .await
        .expect("authorize");
    assert_eq!(response.status(), StatusCode::FOUND);
    assert!(location(&response).contains("error=invalid_request"));

    let url = authorize_url(&http, &app.client_id, &[]);
    let location = browse(
        &plain,
        &http,
        &url,
        "dev@widgets.example",
        "secret-pw",
        "allow",
    )
    .await;
    let code = query_param(&location, "code").expect("code");

    // Public client exchanges the code over HTTPS at login.salesforce.com with PKCE only.
    let client = client(&sim);
    let (status, body) = token(
        &client,
        LOGIN,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", &app.client_id),
            ("redirect_uri", CALLBACK),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["instance_url"],
        "https://widgets-dev-ed.develop.my.salesforce.com"
    );
    assert!(
        body["id"]
            .as_str()
            .expect("id")
            .starts_with("https://login.salesforce.com/id/00D")
    );
}

#[tokio::test]
async fn control_http_routes() {
    let sim = Simulator::start().await.expect("start");
    let control = sim.control_url().expect("control url").to_string();
    let http = reqwest::Client::new();

    let demo: Value = http
        .post(format!("{control}/_sim/seed-demo"))
        .json(&serde_json::json!({ "rotation": false }))
        .send()
        .await
        .expect("seed")
        .json()
        .await
        .expect("json");
    assert_eq!(demo["app"]["rotation"], false);

    let minted: Value = http
        .post(format!("{control}/_sim/tokens/mint"))
        .json(&serde_json::json!({ "app": "sforg-operator", "user": "admin@acme.example" }))
        .send()
        .await
        .expect("mint")
        .json()
        .await
        .expect("json");
    assert!(minted["refresh_token"].is_string());

    let tokens: Vec<String> = http
        .get(format!(
            "{control}/_sim/users/admin@acme.example/refresh-tokens?app=sforg-operator"
        ))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(tokens.len(), 1);

    let fault: Value = http
        .post(format!("{control}/_sim/faults"))
        .json(
            &serde_json::json!({ "kind": "delay", "millis": 10, "endpoint": "token", "times": 3 }),
        )
        .send()
        .await
        .expect("fault")
        .json()
        .await
        .expect("json");
    assert!(fault["id"].is_u64());
    assert_eq!(sim.faults().len(), 1);

    let clock: Value = http
        .post(format!("{control}/_sim/clock/advance"))
        .json(&serde_json::json!({ "seconds": 7200 }))
        .send()
        .await
        .expect("advance")
        .json()
        .await
        .expect("json");
    assert_eq!(clock["offset_secs"], 7200);
    let check: Value = http
        .post(format!("{control}/_sim/tokens/check"))
        .json(&serde_json::json!({ "token": minted["access_token"] }))
        .send()
        .await
        .expect("check")
        .json()
        .await
        .expect("json");
    assert_eq!(check["valid"], false);

    let missing = http
        .post(format!(
            "{control}/_sim/users/nobody@example.com/deactivate"
        ))
        .send()
        .await
        .expect("404");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    let ca = http
        .get(format!("{control}/_sim/ca.pem"))
        .send()
        .await
        .expect("ca")
        .text()
        .await
        .expect("pem");
    assert_eq!(ca, sim.ca_pem());
    sim.shutdown().await;
}

#[tokio::test]
async fn concurrent_refresh_of_one_token_is_refused_not_revoked() {
    let (sim, demo) = start().await;
    let client = client(&sim);
    let rt = sim
        .mint_tokens("sforg-operator", &demo.user.username)
        .expect("mint")
        .refresh_token
        .expect("rt");
    sim.inject_fault(
        Fault::new(FaultKind::delay(Duration::from_millis(300)))
            .on(Endpoint::Token)
            .times(1),
    );
    let first = refresh(&client, &demo, &rt);
    let second = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        refresh(&client, &demo, &rt).await
    };
    let ((s1, b1), (s2, b2)) = tokio::join!(first, second);
    assert_eq!(s1, StatusCode::OK, "{b1}");
    assert_eq!(s2, StatusCode::BAD_REQUEST);
    assert_eq!(
        b2,
        error_body("invalid_grant", "token request is already being processed")
    );
    // The grant survives: the rotated token works.
    let (status, _) = refresh(&client, &demo, b1["refresh_token"].as_str().expect("rt")).await;
    assert_eq!(status, StatusCode::OK);
}
