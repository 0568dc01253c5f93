//! The token lifecycle on the real control plane, with the Salesforce simulator: each
//! scenario runs its own operator in its own namespace.

mod common;

use std::time::Duration;

use common::eventually;
use common::operator::{CONVERGE, Operator};
use serde_json::json;
use sforg_operator::crd::TokenState;
use sforg_simulator::{Endpoint, Fault, FaultKind};

fn reason_of(org: &sforg_operator::crd::SalesforceOrg, type_: &str) -> (String, String) {
    let c = org
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .expect("condition present");
    (c.status.clone(), c.reason.clone())
}

/// The Ready condition's message.
fn ready_message(org: &sforg_operator::crd::SalesforceOrg) -> String {
    org.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn first_tokens_make_the_org_valid() {
    let op = Operator::start("first").await;
    op.create_web_org("acme").await;
    let pending = op
        .wait_state("acme", TokenState::Pending, Some("AwaitingAuthorization"))
        .await;
    assert_eq!(reason_of(&pending, "TokenValid").0, "False");

    op.seed_tokens("acme-token", "acme").await;
    let org = op
        .wait_state("acme", TokenState::Valid, Some("TokenValid"))
        .await;
    let status = org.status.clone().unwrap_or_default();
    assert_eq!(status.org_id.as_deref(), Some(op.demo.org.id.as_str()));
    assert_eq!(
        status.username.as_deref(),
        Some(op.demo.user.username.as_str())
    );
    assert_eq!(status.observed_generation, org.metadata.generation);
    assert_eq!(reason_of(&org, "TokenValid").0, "True");
    assert_eq!(reason_of(&org, "TokenExpired").0, "False");
    assert_eq!(reason_of(&org, "Ready").0, "True");
}

#[tokio::test]
async fn steady_state_check_writes_nothing() {
    let op = Operator::start("steady").await;
    op.create_web_org("acme").await;
    op.seed_tokens("acme-token", "acme").await;
    let before = op.wait_state("acme", TokenState::Valid, None).await;
    let secret_before = op.secrets().get("acme-token").await.expect("secret");
    let calls_before = op.sim.control().call_counts();

    op.request_check("acme").await;
    // The check is done when Salesforce has seen one more userinfo call.
    eventually("a check", CONVERGE, || async {
        (op.sim.control().call_counts().endpoint(Endpoint::Userinfo)
            > calls_before.endpoint(Endpoint::Userinfo))
        .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = op.orgs().get("acme").await.expect("org");
    let calls = op.sim.control().call_counts();
    assert_eq!(
        after.status, before.status,
        "a steady check changes no status"
    );
    let secret_after = op.secrets().get("acme-token").await.expect("secret");
    assert_eq!(
        secret_after.metadata.resource_version,
        secret_before.metadata.resource_version
    );
    assert_eq!(
        calls.endpoint(Endpoint::Userinfo) - calls_before.endpoint(Endpoint::Userinfo),
        1
    );
    assert_eq!(
        calls.endpoint(Endpoint::Token),
        calls_before.endpoint(Endpoint::Token)
    );
}

#[tokio::test]
async fn expired_access_token_is_refreshed() {
    let (op, seeded) = Operator::with_valid_org("refresh", false).await;
    op.expire_sessions_and_check("acme").await;
    let data = eventually("a new access token in the Secret", CONVERGE, || async {
        let data = op.secret_data("acme-token").await;
        (data.get("access_token") != Some(&seeded.access_token)).then_some(data)
    })
    .await;
    assert_eq!(
        data.get("refresh_token"),
        seeded.refresh_token.as_ref(),
        "no rotation: kept"
    );
    assert!(
        data.get("sfdx-url")
            .is_some_and(|u| u.starts_with("force://"))
    );
    eventually("lastRefreshedAt in status", CONVERGE, || async {
        let org = op.orgs().get("acme").await.ok()?;
        let status = org.status?;
        (status.state == Some(TokenState::Valid) && status.last_refreshed_at.is_some())
            .then_some(())
    })
    .await;
    assert_eq!(
        op.sim.control().call_counts().grant_type("refresh_token"),
        1
    );
}

#[tokio::test]
async fn rotated_refresh_token_is_persisted_and_the_old_one_never_reused() {
    let (op, seeded) = Operator::with_valid_org("rotate", true).await;
    op.expire_sessions_and_check("acme").await;
    let data = eventually(
        "a rotated refresh token in the Secret",
        CONVERGE,
        || async {
            let data = op.secret_data("acme-token").await;
            (data.get("refresh_token") != seeded.refresh_token.as_ref()).then_some(data)
        },
    )
    .await;
    let valid = op
        .sim
        .control()
        .valid_refresh_tokens(&op.demo.user.username, Some(&op.demo.app.client_id))
        .expect("list");
    assert_eq!(
        valid,
        vec![data["refresh_token"].clone()],
        "exactly the stored token survives"
    );
    // More checks never present the rotated-out token (which would revoke the grant).
    for _ in 0..3 {
        op.sim.control().expire_all_sessions();
        op.request_check("acme").await;
        op.wait_state("acme", TokenState::Valid, None).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let org = op.wait_state("acme", TokenState::Valid, None).await;
    assert_eq!(reason_of(&org, "Ready").1, "TokenValid");
}

#[tokio::test]
async fn revoked_refresh_token_expires_the_org_with_one_event() {
    let op = Operator::start("revoke").await;
    op.create_web_org("acme").await;
    op.seed_tokens("acme-token", "acme").await;
    op.wait_state("acme", TokenState::Valid, None).await;

    op.sim
        .control()
        .revoke_user_tokens(&op.demo.user.username, None)
        .expect("revoke");
    op.request_check("acme").await;
    let org = op
        .wait_state("acme", TokenState::Expired, Some("RefreshTokenRevoked"))
        .await;
    assert_eq!(
        reason_of(&org, "TokenExpired"),
        ("True".into(), "RefreshTokenRevoked".into())
    );
    assert_eq!(reason_of(&org, "TokenValid").0, "False");
    // Further checks keep it Expired without repeating the Event.
    op.request_check("acme").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let events = op.events_for("acme").await;
    let expired: Vec<_> = events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("TokenExpired"))
        .collect();
    assert_eq!(expired.len(), 1, "{events:#?}");
    assert_eq!(expired[0].type_.as_deref(), Some("Warning"));
}

#[tokio::test]
async fn lost_authorization_reasons_are_distinct() {
    let op = Operator::start("reasons").await;
    op.create_web_org("uninstalled").await;
    op.seed_tokens("uninstalled-token", "uninstalled").await;
    op.create_web_org("inactive").await;
    op.wait_state("uninstalled", TokenState::Valid, None).await;

    let ctl = op.sim.control();
    // App not installed.
    ctl.uninstall_app(&op.demo.app.client_id, &op.demo.org.label)
        .expect("uninstall");
    ctl.expire_all_sessions();
    op.request_check("uninstalled").await;
    op.wait_state(
        "uninstalled",
        TokenState::Expired,
        Some("ConnectedAppNotInstalled"),
    )
    .await;
    ctl.install_app(&op.demo.app.client_id, &op.demo.org.label)
        .expect("install");

    // App blocked.
    op.seed_tokens("inactive-token", "inactive").await;
    op.wait_state("inactive", TokenState::Valid, None).await;
    ctl.block_app(&op.demo.app.client_id).expect("block");
    ctl.expire_all_sessions();
    op.request_check("inactive").await;
    op.wait_state("inactive", TokenState::Expired, Some("ConnectedAppBlocked"))
        .await;
    ctl.unblock_app(&op.demo.app.client_id).expect("unblock");

    // User deactivated.
    ctl.deactivate_user(&op.demo.user.username)
        .expect("deactivate");
    ctl.expire_all_sessions();
    op.request_check("inactive").await;
    op.wait_state("inactive", TokenState::Expired, Some("UserInactive"))
        .await;
}

#[tokio::test]
async fn outages_never_expire_the_org() {
    let op = Operator::start("outage").await;
    op.create_web_org("acme").await;
    op.seed_tokens("acme-token", "acme").await;
    op.wait_state("acme", TokenState::Valid, None).await;

    let ctl = op.sim.control();
    ctl.expire_all_sessions();
    for kind in [
        FaultKind::ServerError,
        FaultKind::Maintenance,
        FaultKind::delay(Duration::from_secs(5)),
        FaultKind::ConnectionReset,
    ] {
        ctl.clear_faults();
        ctl.inject_fault(Fault::new(kind.clone()));
        for _ in 0..3 {
            op.request_check("acme").await;
            let org = op
                .wait_state("acme", TokenState::Unknown, Some("SalesforceUnavailable"))
                .await;
            assert_eq!(reason_of(&org, "TokenValid").0, "Unknown", "{kind:?}");
            assert_ne!(reason_of(&org, "TokenExpired").0, "True", "{kind:?}");
        }
    }
    ctl.clear_faults();
    op.request_check("acme").await;
    op.wait_state("acme", TokenState::Valid, Some("TokenValid"))
        .await;
    let events = op.events_for("acme").await;
    assert!(
        events
            .iter()
            .all(|e| e.reason.as_deref() != Some("TokenExpired")),
        "{events:#?}"
    );
}

#[tokio::test]
async fn concurrent_refresh_error_is_retried_and_stays_valid() {
    let op = Operator::start("concurrent").await;
    op.create_web_org("acme").await;
    let seeded = op.seed_tokens("acme-token", "acme").await;
    op.wait_state("acme", TokenState::Valid, None).await;

    let ctl = op.sim.control();
    ctl.inject_fault(Fault {
        kind: FaultKind::AlreadyProcessing,
        endpoint: Some(Endpoint::Token),
        times: Some(2),
    });
    ctl.expire_all_sessions();
    op.request_check("acme").await;
    eventually("the refresh to succeed after retries", CONVERGE, || async {
        let data = op.secret_data("acme-token").await;
        (data.get("access_token") != Some(&seeded.access_token)).then_some(())
    })
    .await;
    let org = op.wait_state("acme", TokenState::Valid, None).await;
    assert_eq!(reason_of(&org, "Ready").0, "True");
    assert!(ctl.call_counts().grant_type("refresh_token") >= 3);
}

#[tokio::test]
async fn headless_flows_stay_valid_without_a_person() {
    let op = Operator::start("headless").await;
    let ctl = op.sim.control();
    let key = ctl
        .enable_jwt(&op.demo.app.client_id, &op.demo.user.username)
        .expect("jwt");
    let jwt_secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "jwt-key"}, "stringData": {"tls.key": key.private_key_pem},
    }))
    .expect("secret");
    op.secrets()
        .create(&Default::default(), &jwt_secret)
        .await
        .expect("jwt secret");
    op.create_org("jwt", json!({
        "loginUrl": "https://login.salesforce.com",
        "auth": {"jwtBearer": {"clientId": op.demo.app.client_id,
            "username": op.demo.user.username, "privateKeyRef": {"name": "jwt-key", "key": "tls.key"}}},
        "tokenSecretRef": {"name": "jwt-token"},
    }))
    .await;
    ctl.set_run_as(&op.demo.app.client_id, Some(&op.demo.user.username))
        .expect("run as");
    op.ensure_app_secret().await;
    op.create_org(
        "cc",
        json!({
            "loginUrl": op.demo.org.instance_url,
            "auth": {"clientCredentials": {"clientId": op.demo.app.client_id,
                "clientSecretRef": {"name": "demo-app", "key": "client-secret"}}},
            "tokenSecretRef": {"name": "cc-token"},
        }),
    )
    .await;
    for name in ["jwt", "cc"] {
        let org = op.wait_state(name, TokenState::Valid, None).await;
        assert_eq!(
            org.status.and_then(|s| s.org_id),
            Some(op.demo.org.id.clone()),
            "{name}"
        );
        let data = op.secret_data(&format!("{name}-token")).await;
        assert!(data.contains_key("access_token") && !data.contains_key("refresh_token"));
    }
    // Sessions die: both mint new tokens with nobody involved.
    ctl.expire_all_sessions();
    op.request_check("jwt").await;
    op.request_check("cc").await;
    eventually("both to mint again", CONVERGE, || async {
        let c = ctl.call_counts();
        (c.grant_type("urn:ietf:params:oauth:grant-type:jwt-bearer") >= 2
            && c.grant_type("client_credentials") >= 2)
            .then_some(())
    })
    .await;
    op.wait_state("jwt", TokenState::Valid, None).await;
    op.wait_state("cc", TokenState::Valid, None).await;
}

#[tokio::test]
async fn bad_secret_contents_give_a_clear_condition() {
    let op = Operator::start("badsecret").await;
    type Case<'a> = (&'a str, Vec<(&'a str, Vec<u8>)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "garbage",
            vec![("refresh_token", vec![0xff, 0x00, 0xfe])],
            "not UTF-8",
        ),
        (
            "huge",
            vec![("refresh_token", vec![b'x'; 1024 * 1024 - 1024])],
            "more than any Salesforce token",
        ),
        (
            "noinstance",
            vec![("access_token", b"00Dabc!AQ".to_vec())],
            "instance_url is missing",
        ),
    ];
    for (name, data, _) in &cases {
        op.put_raw_secret(
            &format!("{name}-token"),
            name,
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        )
        .await;
        op.create_web_org(name).await;
    }
    let versions: Vec<_> = {
        let mut v = Vec::new();
        for (name, _, _) in &cases {
            v.push(
                op.secrets()
                    .get(&format!("{name}-token"))
                    .await
                    .expect("secret")
                    .metadata
                    .resource_version,
            );
        }
        v
    };
    for ((name, _, want), version) in cases.iter().zip(versions) {
        let org = op
            .wait_state(name, TokenState::Unknown, Some("TokenSecretMalformed"))
            .await;
        let ready = org
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
            .cloned()
            .expect("ready");
        assert!(ready.message.contains(want), "{name}: {}", ready.message);
        // Untouched: nothing was written to a Secret the operator cannot read.
        let secret = op
            .secrets()
            .get(&format!("{name}-token"))
            .await
            .expect("secret");
        assert_eq!(secret.metadata.resource_version, version, "{name}");
    }
    // A missing consumer secret is named, with the command that fixes it.
    op.create_org("nosecret", json!({
        "loginUrl": "https://login.salesforce.com",
        "auth": {"webServer": {"clientId": "x", "clientSecretRef": {"name": "absent", "key": "client-secret"}}},
        "tokenSecretRef": {"name": "nosecret-token"},
    }))
    .await;
    let org = op
        .wait_state(
            "nosecret",
            TokenState::Unknown,
            Some("CredentialsSecretMissing"),
        )
        .await;
    let msg = ready_message(&org);
    assert!(
        msg.contains("kubectl create secret generic absent"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_login_host_outside_the_allowlist_receives_nothing() {
    let op = Operator::start("allowlist").await;
    op.ensure_app_secret().await;
    op.sim.control().clear_proxy_connects();
    // The schema accepts any https host; the cluster admin's allowlist decides.
    op.create_org(
        "evil",
        json!({
            "loginUrl": "https://login.salesforce.com.evil.example",
            "auth": {"webServer": {"clientId": op.demo.app.client_id,
                "clientSecretRef": {"name": "demo-app", "key": "client-secret"}}},
            "tokenSecretRef": {"name": "evil-token"},
        }),
    )
    .await;
    let seeded = op.seed_tokens("evil-token", "evil").await;
    let org = op
        .wait_state("evil", TokenState::Unknown, Some("HostNotAllowed"))
        .await;
    let msg = ready_message(&org);
    assert!(msg.contains("--allowed-login-domain"), "{msg}");
    op.request_check("evil").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        op.sim.control().proxy_connects().is_empty(),
        "nothing was sent anywhere"
    );
    let data = op.secret_data("evil-token").await;
    assert_eq!(
        data.get("refresh_token"),
        seeded.refresh_token.as_ref(),
        "tokens untouched"
    );
}

/// The client credentials flow pointed at a host that is not the org's My Domain (here an
/// instance host, which the schema cannot tell apart): Salesforce answers "request not
/// supported on this domain", a spec fix. The org is Unknown with a reason that says to use
/// the My Domain URL, never Expired, and its CronJob keeps running.
#[tokio::test]
async fn client_credentials_off_my_domain_is_a_configuration_error() {
    let op = Operator::start("not-my-domain").await;
    op.ensure_app_secret().await;
    op.create_cronjob("backup", &[("backup-of", "cc")], false)
        .await;
    op.create_org(
        "cc",
        json!({
            "loginUrl": "https://na1.salesforce.com",
            "auth": {"clientCredentials": {"clientId": op.demo.app.client_id,
                "clientSecretRef": {"name": "demo-app", "key": "client-secret"}}},
            "tokenSecretRef": {"name": "cc-token"},
            "dependents": {"cronJobSelector": {"matchLabels": {"backup-of": "cc"}}},
        }),
    )
    .await;
    let org = op
        .wait_state("cc", TokenState::Unknown, Some("LoginUrlNotMyDomain"))
        .await;
    let msg = ready_message(&org);
    assert!(msg.contains("my.salesforce.com"), "{msg}");
    assert!(msg.contains("spec.loginUrl"), "{msg}");
    assert!(
        op.sim
            .control()
            .call_counts()
            .grant_type("client_credentials")
            >= 1,
        "Salesforce was asked"
    );
    // Asked again: still a configuration error, and the backup was never paused.
    op.request_check("cc").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    op.wait_state("cc", TokenState::Unknown, Some("LoginUrlNotMyDomain"))
        .await;
    assert_eq!(op.cronjob_hold("backup").await, (false, None));
    let expired = op
        .events_for("cc")
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("TokenExpired"))
        .count();
    assert_eq!(expired, 0);
}
