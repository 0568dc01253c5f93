//! `HttpSalesforce` against the Salesforce simulator, reached through its CONNECT proxy with
//! its CA trusted, so the client talks to the real host names exactly as in production.

// A test (or benchmark) fails by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use sforg_operator::salesforce::allowlist::HostAllowlist;
use sforg_operator::salesforce::{
    AppCredentials, HttpSalesforce, HttpSettings, LostReason, Salesforce, SfError, TransientReason,
};
use sforg_operator::secret::SecretString;
use sforg_simulator::html_form::HtmlForm;
use sforg_simulator::{
    DemoOptions, DemoSeed, Endpoint, Fault, FaultKind, GRANT_CLIENT_CREDENTIALS, GRANT_JWT_BEARER,
    JwtKeyPair, Simulator,
};

const LOGIN: &str = "https://login.salesforce.com";
const TEST: &str = "https://test.salesforce.com";
const CALLBACK: &str = "http://localhost:8080/oauth/callback";

async fn start_with(rotation: bool) -> (Simulator, DemoSeed) {
    let sim = Simulator::start().await.expect("start simulator");
    let demo = sim
        .seed_demo_with(DemoOptions {
            rotation,
            ..DemoOptions::default()
        })
        .expect("seed demo");
    (sim, demo)
}

async fn start() -> (Simulator, DemoSeed) {
    start_with(false).await
}

fn settings(sim: &Simulator) -> HttpSettings {
    HttpSettings {
        connect_timeout: Duration::from_secs(5),
        timeout: Duration::from_secs(10),
        proxy: Some(sim.proxy_url().to_owned()),
        extra_ca_pem: Some(sim.ca_pem().as_bytes().to_vec()),
        ..HttpSettings::default()
    }
}

fn client(sim: &Simulator) -> HttpSalesforce {
    HttpSalesforce::new(settings(sim)).expect("client")
}

fn app(demo: &DemoSeed) -> AppCredentials {
    AppCredentials {
        client_id: demo.app.client_id.clone(),
        client_secret: demo.app.client_secret.clone().map(SecretString::new),
    }
}

/// A fresh refresh token for the demo user.
fn refresh_token(sim: &Simulator, demo: &DemoSeed) -> SecretString {
    let tokens = sim
        .mint_tokens(&demo.app.client_id, &demo.user.username)
        .expect("mint");
    SecretString::new(tokens.refresh_token.expect("refresh token"))
}

fn lost<T: std::fmt::Debug>(result: Result<T, SfError>) -> LostReason {
    match result {
        Err(SfError::AuthorizationLost { reason, .. }) => reason,
        other => panic!("expected AuthorizationLost, got {other:?}"),
    }
}

fn transient<T: std::fmt::Debug>(result: Result<T, SfError>) -> TransientReason {
    match result {
        Err(SfError::Transient { reason, .. }) => reason,
        other => panic!("expected Transient, got {other:?}"),
    }
}

#[tokio::test]
async fn refresh_without_rotation_keeps_the_refresh_token() {
    let (sim, demo) = start_with(false).await;
    let sf = client(&sim);
    let token = refresh_token(&sim, &demo);

    let response = sf
        .refresh(LOGIN, &app(&demo), &token)
        .await
        .expect("refresh");
    assert_eq!(response.refresh_token, None);
    assert_eq!(response.instance_url, demo.org.instance_url);
    let (org, user) = response.org_and_user().expect("identity url");
    assert_eq!(
        (org.as_str(), user.as_str()),
        (demo.org.id.as_str(), demo.user.id.as_str())
    );
    assert!(response.issued_at.is_some());
    assert!(sim.access_token_valid(response.access_token.expose()));

    // Without rotation the same token keeps working.
    sf.refresh(LOGIN, &app(&demo), &token)
        .await
        .expect("second refresh");
}

#[tokio::test]
async fn refresh_with_rotation_returns_a_new_refresh_token() {
    let (sim, demo) = start_with(true).await;
    let sf = client(&sim);
    let old = refresh_token(&sim, &demo);

    let response = sf.refresh(LOGIN, &app(&demo), &old).await.expect("refresh");
    let new = response.refresh_token.expect("rotated refresh token");
    assert_ne!(new, old);
    sf.refresh(LOGIN, &app(&demo), &new)
        .await
        .expect("refresh with the new token");

    // Reusing a rotated-out token kills the grant.
    let reuse = sf.refresh(LOGIN, &app(&demo), &old).await;
    assert_eq!(lost(reuse), LostReason::RefreshTokenRevoked);
}

#[tokio::test]
async fn refresh_refusals_are_classified() {
    let (sim, demo) = start().await;
    let sf = client(&sim);
    let org = demo.org.label.clone();
    let app_name = demo.app.client_id.clone();

    let revoked = refresh_token(&sim, &demo);
    sim.revoke_refresh_token(revoked.expose()).expect("revoke");
    let result = sf.refresh(LOGIN, &app(&demo), &revoked).await;
    assert_eq!(lost(result), LostReason::RefreshTokenRevoked);

    let token = refresh_token(&sim, &demo);
    let wrong_secret = AppCredentials {
        client_secret: Some(SecretString::new("not-the-secret")),
        ..app(&demo)
    };
    let result = sf.refresh(LOGIN, &wrong_secret, &token).await;
    assert_eq!(lost(result), LostReason::InvalidClientSecret);

    let unknown_app = AppCredentials {
        client_id: "3MVG9unknownConsumerKey".into(),
        ..app(&demo)
    };
    let result = sf.refresh(LOGIN, &unknown_app, &token).await;
    assert_eq!(lost(result), LostReason::InvalidClientId);

    sim.uninstall_app(&app_name, &org).expect("uninstall");
    let result = sf.refresh(LOGIN, &app(&demo), &token).await;
    assert_eq!(lost(result), LostReason::ConnectedAppNotInstalled);
    sim.install_app(&app_name, &org).expect("install");

    sim.block_app(&app_name).expect("block");
    let result = sf.refresh(LOGIN, &app(&demo), &token).await;
    assert_eq!(lost(result), LostReason::ConnectedAppBlocked);
    sim.unblock_app(&app_name).expect("unblock");

    sim.deactivate_user(&demo.user.username)
        .expect("deactivate");
    let result = sf.refresh(LOGIN, &app(&demo), &token).await;
    assert_eq!(lost(result), LostReason::UserInactive);
    sim.reactivate_user(&demo.user.username)
        .expect("reactivate");

    sf.refresh(LOGIN, &app(&demo), &token)
        .await
        .expect("refresh works again once everything is restored");
}

#[tokio::test]
async fn outages_are_transient() {
    let (sim, demo) = start().await;
    let sf = client(&sim);
    let token = refresh_token(&sim, &demo);
    let once = |kind| Fault::new(kind).on(Endpoint::Token).times(1);

    sim.inject_fault(once(FaultKind::AlreadyProcessing));
    let result = sf.refresh(LOGIN, &app(&demo), &token).await;
    assert_eq!(transient(result), TransientReason::ConcurrentRefresh);

    sim.inject_fault(once(FaultKind::ServerError));
    let result = sf.refresh(LOGIN, &app(&demo), &token).await;
    assert_eq!(transient(result), TransientReason::ServerError);

    sim.inject_fault(once(FaultKind::Maintenance));
    let result = sf.refresh(LOGIN, &app(&demo), &token).await;
    assert_eq!(transient(result), TransientReason::MaintenancePage);

    sim.inject_fault(once(FaultKind::RequestLimitExceeded));
    let result = sf.refresh(LOGIN, &app(&demo), &token).await;
    assert_eq!(transient(result), TransientReason::RateLimited);

    sim.inject_fault(once(FaultKind::ConnectionReset));
    let result = sf.refresh(LOGIN, &app(&demo), &token).await;
    assert_eq!(transient(result), TransientReason::Connection);

    // None of this cost the refresh token.
    sf.refresh(LOGIN, &app(&demo), &token)
        .await
        .expect("refresh after outages");
}

#[tokio::test]
async fn racing_refreshes_of_one_token_are_transient() {
    let (sim, demo) = start().await;
    let sf = client(&sim);
    let token = refresh_token(&sim, &demo);
    let app = app(&demo);

    // The first refresh is held "in process" for a while; the second arrives meanwhile.
    sim.inject_fault(
        Fault::new(FaultKind::delay(Duration::from_millis(800)))
            .on(Endpoint::Token)
            .times(1),
    );
    let first = sf.refresh(LOGIN, &app, &token);
    let second = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        sf.refresh(LOGIN, &app, &token).await
    };
    let (first, second) = tokio::join!(first, second);
    first.expect("the first refresh succeeds");
    assert_eq!(transient(second), TransientReason::ConcurrentRefresh);
}

#[tokio::test]
async fn slow_answers_time_out() {
    let (sim, demo) = start().await;
    let sf = HttpSalesforce::new(HttpSettings {
        timeout: Duration::from_secs(1),
        ..settings(&sim)
    })
    .expect("client");
    let token = refresh_token(&sim, &demo);

    sim.inject_fault(
        Fault::new(FaultKind::delay(Duration::from_secs(5)))
            .on(Endpoint::Token)
            .times(1),
    );
    let result = sf.refresh(LOGIN, &app(&demo), &token).await;
    assert_eq!(transient(result), TransientReason::Timeout);
}

#[tokio::test]
async fn userinfo_identifies_and_detects_dead_tokens() {
    let (sim, demo) = start().await;
    let sf = client(&sim);
    let tokens = sim
        .mint_tokens(&demo.app.client_id, &demo.user.username)
        .expect("mint");
    let access = SecretString::new(tokens.access_token);

    let identity = sf
        .userinfo(&tokens.instance_url, &access)
        .await
        .expect("userinfo");
    assert_eq!(identity.org_id, demo.org.id);
    assert_eq!(identity.user_id, demo.user.id);
    assert_eq!(identity.username, demo.user.username);

    sim.inject_fault(
        Fault::new(FaultKind::RequestLimitExceeded)
            .on(Endpoint::Userinfo)
            .times(1),
    );
    let result = sf.userinfo(&tokens.instance_url, &access).await;
    assert_eq!(transient(result), TransientReason::RateLimited);

    sim.expire_all_sessions();
    let result = sf.userinfo(&tokens.instance_url, &access).await;
    assert!(
        matches!(result, Err(SfError::AccessTokenInvalid)),
        "{result:?}"
    );
}

#[tokio::test]
async fn jwt_bearer_signs_for_the_right_audience() {
    let (sim, demo) = start().await;
    let sf = client(&sim);
    let key = SecretString::new(JwtKeyPair::test_key().private_key_pem);

    let response = sf
        .jwt_bearer(LOGIN, &demo.app.client_id, &demo.user.username, &key)
        .await
        .expect("jwt bearer");
    assert_eq!(response.refresh_token, None);
    assert!(sim.access_token_valid(response.access_token.expose()));

    // Sandbox users authenticate at test.salesforce.com with the sandbox audience...
    let response = sf
        .jwt_bearer(TEST, &demo.app.client_id, &demo.sandbox_user.username, &key)
        .await
        .expect("sandbox jwt bearer");
    assert_eq!(response.instance_url, demo.sandbox.instance_url);

    // ...and are refused the production audience.
    let result = sf
        .jwt_bearer(
            LOGIN,
            &demo.app.client_id,
            &demo.sandbox_user.username,
            &key,
        )
        .await;
    assert_eq!(lost(result), LostReason::InvalidAudience);

    let result = sf
        .jwt_bearer(LOGIN, &demo.app.client_id, "nobody@acme.example", &key)
        .await;
    assert_eq!(lost(result), LostReason::UserNotApproved);

    let result = sf
        .jwt_bearer(
            LOGIN,
            &demo.app.client_id,
            &demo.user.username,
            &SecretString::new("not a key"),
        )
        .await;
    assert!(
        matches!(result, Err(SfError::BadPrivateKey(_))),
        "{result:?}"
    );
}

/// A token endpoint whose clock (and `Date` header) is `seconds` ahead: the operator's first
/// assertion looks expired there. Returns the result and how many assertions were sent.
async fn jwt_against_clock_ahead(seconds: i64) -> (Result<(), SfError>, u64) {
    let (sim, demo) = start().await;
    let sf = client(&sim);
    let key = SecretString::new(JwtKeyPair::test_key().private_key_pem);
    sim.inject_fault(Fault::new(FaultKind::SkewedClock { seconds }).on(Endpoint::Token));
    let result = sf
        .jwt_bearer(LOGIN, &demo.app.client_id, &demo.user.username, &key)
        .await
        .map(|response| assert!(sim.access_token_valid(response.access_token.expose())));
    let sent = sim.call_counts().grant_type(GRANT_JWT_BEARER);
    (result, sent)
}

#[tokio::test]
async fn jwt_clock_skew_is_corrected_only_up_to_ten_minutes() {
    // Seven and ten minutes behind (beyond the 3 minutes an assertion lives plus Salesforce's
    // 3 minutes of leeway): one refused assertion, one dated by Salesforce's clock.
    for seconds in [420, 600] {
        let (result, sent) = jwt_against_clock_ahead(seconds).await;
        assert!(result.is_ok(), "{seconds} s: {result:?}");
        assert_eq!(sent, 2, "{seconds} s");
    }
    // Beyond ten minutes (a hostile endpoint's date, or a clock that needs fixing): nothing
    // is signed with that date.
    for seconds in [11 * 60, 3600, 10 * 365 * 86_400] {
        let (result, sent) = jwt_against_clock_ahead(seconds).await;
        let detail = match &result {
            Err(SfError::Transient {
                reason: TransientReason::ClockSkew,
                detail,
            }) => detail.clone(),
            other => panic!("{seconds} s: expected ClockSkew, got {other:?}"),
        };
        assert!(detail.contains("no assertion was signed"), "{detail}");
        assert_eq!(sent, 1, "{seconds} s: only the first assertion is sent");
    }
}

#[tokio::test]
async fn client_credentials_on_my_domain_only() {
    let (sim, demo) = start().await;
    let sf = client(&sim);

    let response = sf
        .client_credentials(&demo.org.instance_url, &app(&demo))
        .await
        .expect("client credentials");
    assert_eq!(response.refresh_token, None);
    let (_, user) = response.org_and_user().expect("identity url");
    assert_eq!(user, demo.user.id);

    // Not the My Domain: a configuration error, never a lost authorization. The shared login
    // hosts are known without asking; an instance host is what Salesforce answers for.
    for url in [LOGIN, "https://LOGIN.salesforce.com.:443", TEST] {
        let result = sf.client_credentials(url, &app(&demo)).await;
        assert!(
            matches!(result, Err(SfError::NotMyDomain { .. })),
            "{url}: {result:?}"
        );
    }
    let asked = sim.call_counts().grant_type(GRANT_CLIENT_CREDENTIALS);
    let result = sf
        .client_credentials("https://na1.salesforce.com", &app(&demo))
        .await;
    match result {
        Err(SfError::NotMyDomain { description }) => {
            assert_eq!(description, "request not supported on this domain")
        }
        other => panic!("expected NotMyDomain, got {other:?}"),
    }
    assert_eq!(
        sim.call_counts().grant_type(GRANT_CLIENT_CREDENTIALS),
        asked + 1
    );

    sim.set_run_as(&demo.app.client_id, None)
        .expect("clear run-as");
    let result = sf
        .client_credentials(&demo.org.instance_url, &app(&demo))
        .await;
    assert_eq!(lost(result), LostReason::NoClientCredentialsUser);
}

#[tokio::test]
async fn authorization_code_with_pkce_then_revoke() {
    let (sim, demo) = start().await;
    let sf = client(&sim);
    let link = sf
        .authorize_link(
            LOGIN,
            &demo.app.client_id,
            CALLBACK,
            &["api", "refresh_token"],
            "state-42",
            Some(&demo.user.username),
        )
        .expect("link");
    let code = browse(&sim, &link.url, &demo.user.username, &demo.password).await;

    let wrong = SecretString::new("w".repeat(50));
    let result = sf
        .exchange_code(LOGIN, &app(&demo), &code, &wrong, CALLBACK)
        .await;
    // A wrong verifier is Salesforce's `invalid_request`: not an org-level refusal.
    assert_eq!(transient(result), TransientReason::UnexpectedResponse);

    let code = browse(&sim, &link.url, &demo.user.username, &demo.password).await;
    let response = sf
        .exchange_code(LOGIN, &app(&demo), &code, &link.pkce_verifier, CALLBACK)
        .await
        .expect("code exchange");
    let refresh = response.refresh_token.expect("refresh token");

    // Codes are single use.
    let result = sf
        .exchange_code(LOGIN, &app(&demo), &code, &link.pkce_verifier, CALLBACK)
        .await;
    assert_eq!(lost(result), LostReason::Refused);

    sf.revoke(LOGIN, &refresh).await.expect("revoke");
    assert!(!sim.access_token_valid(response.access_token.expose()));
    let result = sf.refresh(LOGIN, &app(&demo), &refresh).await;
    assert_eq!(lost(result), LostReason::RefreshTokenRevoked);
    // Revoking a dead token is not an error.
    sf.revoke(LOGIN, &refresh).await.expect("revoke again");
}

#[tokio::test]
async fn refused_hosts_receive_nothing() {
    let (sim, demo) = start().await;
    let token = refresh_token(&sim, &demo);
    let tokens = sim
        .mint_tokens(&demo.app.client_id, &demo.user.username)
        .expect("mint");
    let access = SecretString::new(tokens.access_token);
    sim.reset_call_counts();
    sim.clear_proxy_connects();

    // The simulator would answer for these hosts; the allowlist must stop us first.
    let sf = HttpSalesforce::new(HttpSettings {
        allowlist: HostAllowlist::new(["login.salesforce.com"]),
        ..settings(&sim)
    })
    .expect("client");
    let result = sf.userinfo(&tokens.instance_url, &access).await;
    assert!(
        matches!(result, Err(SfError::HostNotAllowed(_))),
        "{result:?}"
    );
    let result = sf.refresh(TEST, &app(&demo), &token).await;
    assert!(
        matches!(result, Err(SfError::HostNotAllowed(_))),
        "{result:?}"
    );
    let result = sf
        .client_credentials(&demo.org.instance_url, &app(&demo))
        .await;
    assert!(
        matches!(result, Err(SfError::HostNotAllowed(_))),
        "{result:?}"
    );

    let sf = client(&sim);
    for url in [
        "https://login.salesforce.com.evil.example",
        "http://login.salesforce.com",
        "https://127.0.0.1",
    ] {
        let result = sf.refresh(url, &app(&demo), &token).await;
        assert!(
            matches!(result, Err(SfError::HostNotAllowed(_))),
            "{url}: {result:?}"
        );
        let key = SecretString::new(JwtKeyPair::test_key().private_key_pem);
        let result = sf
            .jwt_bearer(url, &demo.app.client_id, &demo.user.username, &key)
            .await;
        assert!(
            matches!(result, Err(SfError::HostNotAllowed(_))),
            "{url}: {result:?}"
        );
        let result = sf.revoke(url, &token).await;
        assert!(
            matches!(result, Err(SfError::HostNotAllowed(_))),
            "{url}: {result:?}"
        );
    }

    assert_eq!(sim.proxy_connects(), Vec::<String>::new());
    assert_eq!(sim.call_counts(), Default::default());
}

/// Logs in through the simulator's authorize pages like a browser and returns the code.
async fn browse(sim: &Simulator, url: &str, username: &str, password: &str) -> SecretString {
    let browser = reqwest::Client::builder()
        .proxy(reqwest::Proxy::https(sim.proxy_url()).expect("proxy"))
        .add_root_certificate(reqwest::Certificate::from_pem(sim.ca_pem().as_bytes()).expect("ca"))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("browser");
    let page = browser.get(url).send().await.expect("authorize page");
    let html = page.text().await.expect("html");
    let mut login = HtmlForm::find(&html, "login_form").expect("login form");
    login.set("username", username).set("pw", password);
    let mut response = browser
        .post(format!("{LOGIN}{}", login.action))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(login.encoded(Some("Login")))
        .send()
        .await
        .expect("login");
    if response.status() != reqwest::StatusCode::FOUND {
        let html = response.text().await.expect("consent page");
        let consent = HtmlForm::find(&html, "consent_form").expect("consent form");
        response = browser
            .post(format!("{LOGIN}{}", consent.action))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(consent.encoded(Some("allow")))
            .send()
            .await
            .expect("consent");
    }
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("redirect")
        .to_owned();
    assert!(location.starts_with(CALLBACK), "{location}");
    let location = url::Url::parse(&location).expect("callback url");
    let query = |name: &str| {
        location
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    assert_eq!(query("state").as_deref(), Some("state-42"));
    SecretString::new(query("code").expect("code"))
}
