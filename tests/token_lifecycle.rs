//! The token lifecycle on the real control plane, with the Salesforce simulator: each
//! scenario runs its own operator in its own namespace. The key scenarios run twice, once
//! against a Connected App and once against an External Client App.

// A test (or benchmark) fails by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use std::time::Duration;

use common::eventually;
use common::operator::{CONVERGE, Operator};
use common::org::OrgSpec;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use sforg_operator::crd::{SecretKeyRef, TokenState};
use sforg_operator::reconcile::CHECK_ANNOTATION;
use sforg_simulator::{
    AppKind, DEMO_PERMISSION_SET, Endpoint, Fault, FaultKind, JwtKeyPair, PermittedUsers,
    RefreshTokenPolicy,
};

fn prefix(base: &str, kind: AppKind) -> String {
    match kind {
        AppKind::ConnectedApp => base.to_owned(),
        AppKind::ExternalClientApp => format!("{base}-eca"),
    }
}

fn reason_of(org: &sforg_operator::crd::SalesforceOrg, type_: &str) -> (String, String) {
    let c = org
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .expect("condition present");
    (c.status.to_string(), c.reason.to_string())
}

/// The Ready condition's message.
fn ready_message(org: &sforg_operator::crd::SalesforceOrg) -> String {
    org.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.message.to_string())
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

for_both_kinds!(expired_access_token_is_refreshed);
async fn expired_access_token_is_refreshed(kind: AppKind) {
    let (op, seeded) = Operator::with_valid_org_kind(&prefix("refresh", kind), false, kind).await;
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

for_both_kinds!(rotated_refresh_token_is_persisted_and_the_old_one_never_reused);
async fn rotated_refresh_token_is_persisted_and_the_old_one_never_reused(kind: AppKind) {
    let (op, seeded) = Operator::with_valid_org_kind(&prefix("rotate", kind), true, kind).await;
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

for_both_kinds!(revoked_refresh_token_expires_the_org_with_one_event);
async fn revoked_refresh_token_expires_the_org_with_one_event(kind: AppKind) {
    let op = Operator::start_kind(&prefix("revoke", kind), kind).await;
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

for_both_kinds!(headless_flows_stay_valid_without_a_person);
async fn headless_flows_stay_valid_without_a_person(kind: AppKind) {
    let op = Operator::start_kind(&prefix("headless", kind), kind).await;
    let ctl = op.sim.control();
    // The demo app holds the test key's certificate; the user is pre-authorized by name
    // (Connected App) or through a permission set (External Client App).
    let key = JwtKeyPair::test_key();
    let jwt_secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "jwt-key"}, "stringData": {"tls.key": key.private_key_pem},
    }))
    .expect("secret");
    op.secrets()
        .create(&Default::default(), &jwt_secret)
        .await
        .expect("jwt secret");
    let key = SecretKeyRef {
        name: "jwt-key".into(),
        key: "tls.key".into(),
    };
    let jwt = OrgSpec::jwt("jwt", &op.demo.app.client_id, &op.demo.user.username, key);
    op.create_org("jwt", jwt.json()).await;
    ctl.set_run_as(&op.demo.app.client_id, Some(&op.demo.user.username))
        .expect("run as");
    op.ensure_app_secret().await;
    let cc = OrgSpec::client_credentials("cc", &op.demo.app.client_id, &op.demo.org.instance_url);
    op.create_org("cc", cc.json()).await;
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
    let absent = SecretKeyRef {
        name: "absent".into(),
        key: "client-secret".into(),
    };
    let nosecret = OrgSpec::web("nosecret", "x").client_secret(Some(absent));
    op.create_org("nosecret", nosecret.json()).await;
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
    let evil = op
        .web_org("evil")
        .login_url("https://login.salesforce.com.evil.example");
    op.create_org("evil", evil.json()).await;
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

#[tokio::test]
async fn a_secret_that_is_not_ours_is_neither_read_nor_written() {
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::PostParams;
    let op = Operator::start("notours").await;
    // Someone else's Secret, with a refresh token of its own, named by the org.
    let theirs = op.seed_tokens("unused", "nobody").await;
    let precious: Secret = serde_json::from_value(json!({
        "metadata": {"name": "precious"},
        "stringData": {
            "refresh_token": theirs.refresh_token.clone().unwrap_or_default(),
            "note": "belongs to another team",
        },
    }))
    .unwrap();
    let created = op
        .secrets()
        .create(&PostParams::default(), &precious)
        .await
        .unwrap();
    op.ensure_app_secret().await;
    op.create_org("acme", op.web_org("acme").token_secret("precious").json())
        .await;
    let calls = op.sim.control().call_counts();
    let org = op
        .wait_state("acme", TokenState::Unknown, Some("TokenSecretNotOwned"))
        .await;
    let ready = org
        .status
        .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Ready"))
        .unwrap();
    assert!(
        ready
            .message
            .contains("kubectl label secret precious orgtokens.dev/org=acme"),
        "{}",
        ready.message
    );
    op.request_check("acme").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = op.secrets().get("precious").await.unwrap();
    assert_eq!(
        after.metadata.resource_version, created.metadata.resource_version,
        "nothing written"
    );
    assert!(after.metadata.labels.is_none(), "not relabelled");
    assert_eq!(
        op.sim.control().call_counts().endpoint(Endpoint::Token),
        calls.endpoint(Endpoint::Token),
        "its refresh token was never used"
    );
    // Handed over deliberately: the org takes it from there.
    let label = json!({"metadata": {"labels": {
        "orgtokens.dev/org": "acme", "app.kubernetes.io/managed-by": "sforg-operator"}}});
    op.secrets()
        .patch(
            "precious",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&label),
        )
        .await
        .unwrap();
    op.wait_state("acme", TokenState::Valid, None).await;
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

/// The External Client App trap: "Require secret for Web Server Flow" cleared for a PKCE-only
/// login, "Require secret for Refresh Token Flow" left on, and no secret in the spec. The
/// first refresh fails with a reason that names the setting; clearing it brings the org back
/// with the same refresh token and nobody logging in.
#[tokio::test]
async fn a_refresh_refused_for_want_of_a_secret_names_the_setting() {
    let op = Operator::start_kind("eca-secret", AppKind::ExternalClientApp).await;
    let ctl = op.sim.control();
    ctl.set_require_secret(&op.demo.app.client_id, false, true)
        .expect("settings");
    ctl.set_rotation(&op.demo.app.client_id, false)
        .expect("rotation off, to compare refresh tokens");
    op.create_org(
        "acme",
        json!({
            "loginUrl": "https://login.salesforce.com",
            "auth": {"webServer": {"clientId": op.demo.app.client_id}},
            "tokenSecretRef": {"name": "acme-token"},
        }),
    )
    .await;
    let seeded = op.seed_tokens("acme-token", "acme").await;
    op.wait_state("acme", TokenState::Valid, None).await;

    op.expire_sessions_and_check("acme").await;
    let org = op
        .wait_state("acme", TokenState::Expired, Some("RefreshSecretRequired"))
        .await;
    let message = org
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.message.to_string())
        .unwrap_or_default();
    assert!(
        message.contains("Require secret for Refresh Token Flow")
            && message.contains("clientSecretRef"),
        "{message}"
    );

    ctl.set_require_secret(&op.demo.app.client_id, false, false)
        .expect("settings");
    op.request_check("acme").await;
    op.wait_state("acme", TokenState::Valid, None).await;
    assert_eq!(
        op.secret_data("acme-token").await.get("refresh_token"),
        seeded.refresh_token.as_ref(),
        "the same refresh token, no new login"
    );
}

/// External Client App policies: a permission set taken away ends a JWT bearer connection
/// with a reason naming the policy; revoking every token of the app from the OAuth Usage
/// page, and the 30-day idle limit, expire a web server connection.
#[tokio::test]
async fn external_client_app_policies_end_connections_with_their_reasons() {
    let op = Operator::start_kind("eca-policies", AppKind::ExternalClientApp).await;
    let ctl = op.sim.control();
    let jwt_secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "jwt-key"},
        "stringData": {"tls.key": JwtKeyPair::test_key().private_key_pem},
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
    op.create_web_org("web").await;
    op.seed_tokens("web-token", "web").await;
    op.wait_state("jwt", TokenState::Valid, None).await;
    op.wait_state("web", TokenState::Valid, None).await;

    // "Admin approved users are pre-authorized", as the guide sets it up for JWT bearer;
    // then the user loses the permission set the policy selects.
    ctl.set_permitted_users(
        &op.demo.app.client_id,
        PermittedUsers::AdminApprovedPreAuthorized,
    )
    .expect("policy");
    ctl.set_user_permission_set(&op.demo.user.username, DEMO_PERMISSION_SET, false)
        .expect("remove permission set");
    op.expire_sessions_and_check("jwt").await;
    let org = op
        .wait_state("jwt", TokenState::Expired, Some("UserNotApproved"))
        .await;
    let message = org
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.message.to_string())
        .unwrap_or_default();
    assert!(
        message.contains("External Client App") && message.contains("permission set"),
        "{message}"
    );
    ctl.set_user_permission_set(&op.demo.user.username, DEMO_PERMISSION_SET, true)
        .expect("assign again");
    op.request_check("jwt").await;
    op.wait_state("jwt", TokenState::Valid, None).await;

    // "Revoke all tokens of the app" on the External Client Apps OAuth Usage page.
    assert!(
        ctl.revoke_app_tokens(&op.demo.app.client_id)
            .expect("revoke")
            >= 1
    );
    op.request_check("web").await;
    op.wait_state("web", TokenState::Expired, Some("RefreshTokenRevoked"))
        .await;

    // A new login, then the 30-day idle limit on a "valid until revoked" policy.
    op.store_new_tokens("web").await;
    op.wait_state("web", TokenState::Valid, None).await;
    ctl.set_refresh_token_policy(&op.demo.app.client_id, RefreshTokenPolicy::UntilRevoked)
        .expect("policy");
    ctl.set_idle_refresh_limit(&op.demo.app.client_id, true)
        .expect("idle limit");
    ctl.advance_clock(Duration::from_secs(31 * 24 * 3600));
    op.expire_sessions_and_check("web").await;
    op.wait_state("web", TokenState::Expired, Some("RefreshTokenRevoked"))
        .await;
}

#[tokio::test]
async fn a_restart_checks_only_the_orgs_whose_status_is_not_current() {
    let mut op = Operator::start("restart").await;
    op.ensure_app_secret().await;
    let daily = |name: &str| op.web_org(name).check_interval("24h");
    let labels = [("backup-of", "acme")];
    op.create_org("acme", daily("acme").selecting(&labels).json())
        .await;
    op.create_org("beta", daily("beta").json()).await;
    op.create_cronjob("nightly", &labels, false).await;
    let acme_tokens = op.seed_tokens("acme-token", "acme").await;
    op.seed_tokens("beta-token", "beta").await;
    op.wait_state("acme", TokenState::Valid, None).await;
    op.wait_state("beta", TokenState::Valid, None).await;
    // acme expires (its grant alone is revoked) and holds its CronJob.
    op.sim
        .control()
        .revoke_refresh_token(&acme_tokens.refresh_token.expect("refresh token"))
        .expect("revoke");
    op.request_check("acme").await;
    op.wait_state("acme", TokenState::Expired, None).await;
    op.wait_suspended("nightly", true).await;

    op.kill_controller().await;
    // A check request just made would be answered at start: this one is taken back.
    let forget = json!({"metadata": {"annotations": {CHECK_ANNOTATION: null}}});
    op.orgs()
        .patch("acme", &PatchParams::default(), &Patch::Merge(&forget))
        .await
        .expect("remove the check request");
    // While the operator is down: a CronJob joins acme's selector, and beta gets new tokens.
    op.create_cronjob("weekly", &labels, false).await;
    op.store_new_tokens("beta").await;
    let beta_version = op
        .secrets()
        .get("beta-token")
        .await
        .expect("secret")
        .metadata
        .resource_version;
    let calls_before = op.sim.control().call_counts();
    op.start_controller();

    // acme was reconciled (it holds the new CronJob) and beta was checked (its status names
    // the new Secret version).
    op.wait_suspended("weekly", true).await;
    eventually("beta checked against its new tokens", CONVERGE, || async {
        let beta = op.orgs().get("beta").await.ok()?;
        let status = beta.status?;
        (status.token_secret_version == beta_version && status.state == Some(TokenState::Valid))
            .then_some(())
    })
    .await;
    let calls = op.sim.control().call_counts();
    assert_eq!(
        calls.endpoint(Endpoint::Token),
        calls_before.endpoint(Endpoint::Token),
        "acme's status is current: its refresh token is not tried again at start"
    );
    assert_eq!(
        calls.endpoint(Endpoint::Userinfo) - calls_before.endpoint(Endpoint::Userinfo),
        1,
        "only beta, whose Secret changed, is checked"
    );
    let acme = op.orgs().get("acme").await.expect("org");
    assert_eq!(
        acme.status.map(|s| s.state),
        Some(Some(TokenState::Expired))
    );
}

/// "Expire if not used for" N: the keep-alive refresh (24h by default) outruns a 30-day limit,
/// and the org says so (`KeptAlive`) instead of warning; a 12-hour limit it cannot outrun, and
/// the org warns (`KeepAliveTooLong`) with the forecast expiry and a re-auth link ready.
#[tokio::test]
async fn the_keepalive_outruns_an_idle_limit_and_a_shorter_one_warns() {
    use sforg_operator::crd::RefreshTokenPolicyType::ExpireIfNotUsedFor;
    let op =
        Operator::start_with_reauth_kind("keepalive-forecast", AppKind::ExternalClientApp).await;
    op.ensure_app_secret().await;
    for (name, limit) in [("monthly", "30d"), ("daily", "12h")] {
        let spec = op
            .web_org(name)
            .refresh_token_policy(ExpireIfNotUsedFor, Some(limit))
            .json();
        op.create_org(name, spec).await;
        op.seed_tokens(&format!("{name}-token"), name).await;
    }
    let wait_condition = |name: &'static str, want: &'static str| {
        let orgs = op.orgs();
        async move {
            eventually(
                &format!("{name} TokenExpiringSoon {want}"),
                CONVERGE,
                || {
                    let orgs = orgs.clone();
                    async move {
                        let org = orgs.get(name).await.ok()?;
                        let c = org
                            .status
                            .as_ref()?
                            .conditions
                            .iter()
                            .find(|c| c.type_ == "TokenExpiringSoon")?;
                        (c.reason == want).then_some(org.clone())
                    }
                },
            )
            .await
        }
    };
    let monthly = wait_condition("monthly", "KeptAlive").await;
    assert_eq!(reason_of(&monthly, "TokenExpiringSoon").0, "False");
    let status = monthly.status.clone().unwrap_or_default();
    assert_eq!(status.state, Some(TokenState::Valid));
    assert_eq!(status.authorization_expires_at, None, "never expires");
    assert_eq!(status.reauth, None, "no link: nothing to do");

    let daily = wait_condition("daily", "KeepAliveTooLong").await;
    assert_eq!(reason_of(&daily, "TokenExpiringSoon").0, "True");
    let status = daily.status.clone().unwrap_or_default();
    assert_eq!(status.state, Some(TokenState::Valid));
    let issued = op.secret_data("daily-token").await["issued_at"]
        .parse::<i64>()
        .expect("issued_at");
    let expires = status
        .authorization_expires_at
        .clone()
        .expect("a forecast from the tokens' issue time")
        .0;
    assert_eq!(expires.as_second(), issued / 1000 + 12 * 3600);
    let link = eventually("a link for daily", CONVERGE, || async {
        op.orgs().get("daily").await.ok()?.status?.reauth
    })
    .await;
    assert!(link.url.contains("/reauth/"), "{}", link.url);
    let message = daily
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "TokenExpiringSoon"))
        .map(|c| c.message.to_string())
        .unwrap_or_default();
    assert!(message.contains("--refresh-keepalive"), "{message}");
}
