//! The CRD against a real kube-apiserver: it installs, the README's and the setup guide's
//! examples apply, bad specs are refused with messages that say what to write, and status is
//! only written through the status subresource.

// A test (or benchmark) fails by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

fn set(doc: &mut Value, path: &[&str], value: Value) {
    let mut cur = doc;
    for key in &path[..path.len() - 1] {
        cur = cur.get_mut(*key).expect("path exists");
    }
    let last = path[path.len() - 1];
    if value.is_null() {
        cur.as_object_mut().expect("object").remove(last);
    } else {
        cur[last] = value;
    }
}

#[tokio::test]
async fn crd_becomes_established() {
    let client = client().await;
    install_crd(&client).await;
}

#[tokio::test]
async fn readme_examples_apply() {
    let client = client().await;
    let ns = namespace(&client, "readme").await;
    // The README and the Salesforce setup guide: every SalesforceOrg they show must apply.
    for file in ["README.md", "docs/salesforce-setup.md"] {
        let path = format!("{}/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {file}: {e}"));
        let mut applied = 0;
        for block in text.split("```yaml").skip(1) {
            let body = block.split("```").next().unwrap_or_default();
            for doc in body.split("\n---") {
                if !doc.contains("kind: SalesforceOrg") {
                    continue;
                }
                let mut value: Value = serde_saphyr::from_str(doc)
                    .unwrap_or_else(|e| panic!("{file} example is not YAML: {e}"));
                // Snippets that only mention the kind (a Flux health check, say) are not examples.
                if value["kind"] != "SalesforceOrg" {
                    continue;
                }
                value["metadata"]["namespace"] = json!(ns);
                let name = value["metadata"]["name"].as_str().expect("name").to_owned();
                let obj: DynamicObject = serde_json::from_value(value).expect("object");
                raw_orgs(&client, &ns)
                    .patch(
                        &name,
                        &PatchParams::apply(TEST_MANAGER),
                        &Patch::Apply(&obj),
                    )
                    .await
                    .unwrap_or_else(|e| panic!("{file} example {name} was refused: {e}"));
                applied += 1;
            }
        }
        assert!(
            applied >= 3,
            "expected at least 3 SalesforceOrg examples in {file}, found {applied}"
        );
    }
}

#[tokio::test]
async fn invalid_specs_are_rejected_with_guidance() {
    let client = client().await;
    let ns = namespace(&client, "invalid").await;
    let api = raw_orgs(&client, &ns);
    let jwt = json!({"clientId": "3MVG9x", "username": "ops@acme.com",
                     "privateKeyRef": {"name": "jwt", "key": "tls.key"}});
    let cc = json!({"clientId": "3MVG9x", "clientSecretRef": {"name": "cc", "key": "secret"}});
    // (what is wrong, the path to change, the new value (null removes it), expected message part)
    let cases: Vec<(&str, Vec<&str>, Value, &str)> = vec![
        (
            "no auth flow",
            vec!["spec", "auth"],
            json!({}),
            "set exactly one of auth.webServer",
        ),
        (
            "two auth flows",
            vec!["spec", "auth", "jwtBearer"],
            jwt.clone(),
            "set exactly one of auth.webServer",
        ),
        (
            "http login url",
            vec!["spec", "loginUrl"],
            json!("http://login.salesforce.com"),
            "must be an https:// URL",
        ),
        (
            "login url with a path",
            vec!["spec", "loginUrl"],
            json!("https://login.salesforce.com/services/oauth2"),
            "bare host with no path",
        ),
        (
            "login url with a query",
            vec!["spec", "loginUrl"],
            json!("https://login.salesforce.com/?next=x"),
            "bare host with no path",
        ),
        (
            "login url not a url",
            vec!["spec", "loginUrl"],
            json!("login.salesforce.com"),
            "must be an https:// URL",
        ),
        (
            "org id without 00D",
            vec!["spec", "expectedOrgId"],
            json!("001000000000001AAA"),
            "spec.expectedOrgId",
        ),
        (
            "org id of 16 chars",
            vec!["spec", "expectedOrgId"],
            json!("00D0000000000001"),
            "spec.expectedOrgId",
        ),
        (
            "check interval too short",
            vec!["spec", "checkInterval"],
            json!("30s"),
            "between 1m and 24h",
        ),
        (
            "check interval too long",
            vec!["spec", "checkInterval"],
            json!("48h"),
            "between 1m and 24h",
        ),
        (
            "check interval not a duration",
            vec!["spec", "checkInterval"],
            json!("daily"),
            "between 1m and 24h",
        ),
        (
            "no refresh_token scope",
            vec!["spec", "auth", "webServer", "scopes"],
            json!(["api"]),
            "must include refresh_token",
        ),
        (
            "secret ref without key",
            vec!["spec", "auth", "webServer", "clientSecretRef"],
            json!({"name": "app"}),
            "key: Required value",
        ),
        (
            "secret ref bad key",
            vec!["spec", "auth", "webServer", "clientSecretRef"],
            json!({"name": "app", "key": "a/b"}),
            "clientSecretRef.key",
        ),
        (
            "token secret bad name",
            vec!["spec", "tokenSecretRef", "name"],
            json!("Not_A_Name"),
            "tokenSecretRef.name",
        ),
        (
            "missing token secret ref",
            vec!["spec", "tokenSecretRef"],
            Value::Null,
            "tokenSecretRef: Required value",
        ),
        (
            "empty dependents",
            vec!["spec", "dependents"],
            json!({}),
            "dependents needs cronJobSelector",
        ),
        (
            "huge client id",
            vec!["spec", "auth", "webServer", "clientId"],
            json!("x".repeat(300)),
            "Too long",
        ),
        (
            "too many dependents names",
            vec!["spec", "dependents"],
            json!({"cronJobNames": (0..300).map(|i| format!("job-{i}")).collect::<Vec<_>>()}),
            "Too many",
        ),
        (
            "jwt username not an email",
            vec!["spec", "auth"],
            json!({"jwtBearer": {"clientId": "c", "username": "ops", "privateKeyRef": {"name": "k", "key": "k"}}}),
            "username",
        ),
        (
            "client credentials on login host",
            vec!["spec", "auth"],
            json!({"clientCredentials": cc}),
            "works only on the org's My Domain",
        ),
        (
            "expire after without a duration",
            vec!["spec", "refreshTokenPolicy"],
            json!({"type": "ExpireAfter"}),
            "refreshTokenPolicy.duration is required with ExpireAfter",
        ),
        (
            "valid until revoked with a duration",
            vec!["spec", "refreshTokenPolicy"],
            json!({"type": "ValidUntilRevoked", "duration": "90d"}),
            "not allowed with ValidUntilRevoked",
        ),
        (
            "unknown policy",
            vec!["spec", "refreshTokenPolicy"],
            json!({"type": "ExpireSometimes", "duration": "90d"}),
            "Unsupported value: \"ExpireSometimes\"",
        ),
        (
            "policy duration in words",
            vec!["spec", "refreshTokenPolicy"],
            json!({"type": "ExpireIfNotUsedFor", "duration": "30 days"}),
            "whole days, hours, minutes and seconds",
        ),
        (
            "policy duration of zero",
            vec!["spec", "refreshTokenPolicy"],
            json!({"type": "ExpireAfter", "duration": "0d0h"}),
            "above zero",
        ),
        (
            "policy duration smallest unit first",
            vec!["spec", "refreshTokenPolicy"],
            json!({"type": "ExpireAfter", "duration": "12h1d"}),
            "largest first",
        ),
    ];
    assert!(cases.len() >= 10);
    for (i, (what, path, value, want)) in cases.into_iter().enumerate() {
        let mut doc = valid_org_json(&format!("bad-{i}"));
        set(&mut doc, &path, value);
        let obj: DynamicObject = serde_json::from_value(doc).expect("object");
        let err = api
            .create(&PostParams::default(), &obj)
            .await
            .err()
            .unwrap_or_else(|| panic!("{what}: the apiserver accepted an invalid spec"));
        let text = err.to_string();
        assert!(
            text.contains(want),
            "{what}: expected {want:?} in the refusal, got: {text}"
        );
    }
    // The unmodified spec is accepted, so the refusals above are about the one change each.
    let ok: DynamicObject = serde_json::from_value(valid_org_json("good")).expect("object");
    api.create(&PostParams::default(), &ok)
        .await
        .expect("a valid spec is accepted");
    // Each policy in its right form is accepted, and the operator reads every accepted
    // duration the same way.
    for (i, policy) in [
        json!({"type": "ValidUntilRevoked"}),
        json!({"type": "ExpireAfter", "duration": "90d"}),
        json!({"type": "ExpireAfter", "duration": "1d12h30m15s"}),
        json!({"type": "ExpireIfNotUsedFor", "duration": "99999d"}),
        json!({"type": "ExpireIfNotUsedFor", "duration": "45s"}),
    ]
    .into_iter()
    .enumerate()
    {
        let mut doc = valid_org_json(&format!("policy-{i}"));
        set(&mut doc, &["spec", "refreshTokenPolicy"], policy.clone());
        let obj: DynamicObject = serde_json::from_value(doc).expect("object");
        let created = api
            .create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("{policy} was refused: {e}"));
        let org: sforg_operator::crd::SalesforceOrg =
            serde_json::from_value(serde_json::to_value(created).expect("json")).expect("org");
        assert!(
            org.spec.refresh_token_policy().is_ok(),
            "{policy}: accepted by the schema, refused by the operator"
        );
    }
}

/// The client credentials flow is refused on Salesforce's shared login hosts however the URL
/// spells them (case, explicit :443, trailing dot), and accepted on a My Domain however that
/// is spelled.
#[tokio::test]
async fn client_credentials_login_hosts_are_refused_in_every_spelling() {
    let client = client().await;
    let ns = namespace(&client, "cc-spelling").await;
    let api = raw_orgs(&client, &ns);
    let cc = json!({"clientCredentials": {"clientId": "3MVG9x",
        "clientSecretRef": {"name": "cc", "key": "secret"}}});
    let cases: &[(&str, bool)] = &[
        ("https://login.salesforce.com", false),
        ("https://login.salesforce.com/", false),
        ("https://LOGIN.SALESFORCE.COM", false),
        ("https://Login.Salesforce.com/", false),
        ("https://login.salesforce.com:443", false),
        ("https://login.salesforce.com:443/", false),
        ("https://login.salesforce.com.", false),
        ("https://login.salesforce.com.:443/", false),
        ("HTTPS://TEST.salesforce.com", false),
        ("https://test.salesforce.com.:443", false),
        ("https://acme.my.salesforce.com", true),
        ("https://ACME.my.salesforce.com:443/", true),
        ("https://acme--dev.sandbox.my.salesforce.com.", true),
    ];
    for (i, (url, accepted)) in cases.iter().enumerate() {
        let mut doc = valid_org_json(&format!("cc-{i}"));
        set(&mut doc, &["spec", "auth"], cc.clone());
        set(&mut doc, &["spec", "loginUrl"], json!(url));
        let obj: DynamicObject = serde_json::from_value(doc).expect("object");
        let result = api.create(&PostParams::default(), &obj).await;
        match (accepted, result) {
            (true, Ok(_)) => {}
            (false, Err(e)) => assert!(
                e.to_string().contains("works only on the org's My Domain"),
                "{url}: {e}"
            ),
            (true, Err(e)) => panic!("{url} was refused: {e}"),
            (false, Ok(_)) => panic!("{url} was accepted for the client credentials flow"),
        }
    }
}

#[tokio::test]
async fn status_is_written_only_through_the_subresource() {
    let client = client().await;
    let ns = namespace(&client, "status").await;
    let api = raw_orgs(&client, &ns);
    let mut doc = valid_org_json("acme");
    doc["status"] = json!({"state": "Valid", "orgId": "00D000000000001AAA"});
    let obj: DynamicObject = serde_json::from_value(doc).expect("object");
    let created = api
        .create(&PostParams::default(), &obj)
        .await
        .expect("create");
    assert!(
        created.data.get("status").is_none(),
        "status set on create: {:?}",
        created.data
    );

    // A merge patch of the main resource cannot change status either.
    let patched = api
        .patch(
            "acme",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"state": "Valid"}})),
        )
        .await
        .expect("patch main resource");
    assert!(patched.data.get("status").is_none());

    // The status subresource can, and it cannot change the spec.
    let patched = api
        .patch_status(
            "acme",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"state": "Valid"}, "spec": {"checkInterval": "1h"}})),
        )
        .await
        .expect("patch status");
    assert_eq!(patched.data["status"]["state"], "Valid");
    assert_eq!(patched.data["spec"]["checkInterval"], "15m");

    // The schema guards status too.
    let err = api
        .patch_status(
            "acme",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"state": "Happy"}})),
        )
        .await
        .expect_err("unknown state refused");
    assert!(err.to_string().contains("Unsupported value"), "{err}");
}
