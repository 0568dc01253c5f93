//! The shape of a reconcile's requests, in milliseconds: a scripted API server (a tower
//! service standing in for the transport, answering only what these tests ask) and a fake
//! Salesforce share one log, so the order of writes and Salesforce calls can be asserted.
//! Behaviour is judged by the integration tests against a real API server; these pin down
//! what a reconcile sends and in which order.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::client::Body;
use kube::runtime::events::Reporter;
use serde_json::{Value, json};

use super::*;
use crate::crd::TokenState;
use crate::events::Recorder;
use crate::salesforce::{AppCredentials, Identity, SfError, TokenResponse};
use crate::secret::SecretString;
use crate::token_secret;

type Log = Arc<Mutex<Vec<String>>>;

fn note(log: &Log, entry: impl Into<String>) {
    if let Ok(mut log) = log.lock() {
        log.push(entry.into());
    }
}

/// The API server's side: one org's token Secret, and the last status written.
#[derive(Default)]
struct ApiState {
    secret: Option<Secret>,
    version: u64,
    status: Option<Value>,
}

fn api_client(state: Arc<Mutex<ApiState>>, log: Log) -> Client {
    let service = tower::service_fn(move |req: Request<Body>| {
        let state = state.clone();
        let log = log.clone();
        async move {
            let method = req.method().clone();
            let path = req.uri().path().to_owned();
            let body = http_body_util::BodyExt::collect(req.into_body())
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let (code, reply) = answer(&state, &log, &method, &path, &body);
            let response = Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Body::from(reply.to_string().into_bytes()));
            response.map_err(|e| e.to_string())
        }
    });
    Client::new(service, "ns")
}

fn answer(
    state: &Mutex<ApiState>,
    log: &Log,
    method: &Method,
    path: &str,
    body: &[u8],
) -> (StatusCode, Value) {
    let Ok(mut state) = state.lock() else {
        return (StatusCode::INTERNAL_SERVER_ERROR, json!({}));
    };
    let not_found = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "reason": "NotFound", "code": 404, "message": "not found"});
    match (method.as_str(), path) {
        ("GET", "/api/v1/namespaces/ns/secrets/acme-token") => {
            note(log, "GET token Secret");
            match &state.secret {
                Some(s) => (StatusCode::OK, serde_json::to_value(s).unwrap_or_default()),
                None => (StatusCode::NOT_FOUND, not_found),
            }
        }
        ("PUT", "/api/v1/namespaces/ns/secrets/acme-token") => {
            note(log, "PUT token Secret");
            let mut secret: Secret = serde_json::from_slice(body).unwrap_or_default();
            state.version += 1;
            secret.metadata.resource_version = Some(state.version.to_string());
            state.secret = Some(secret.clone());
            (
                StatusCode::OK,
                serde_json::to_value(secret).unwrap_or_default(),
            )
        }
        ("PATCH", "/apis/orgtokens.dev/v1alpha1/namespaces/ns/salesforceorgs/acme/status") => {
            note(log, "PATCH status");
            let applied: Value = serde_json::from_slice(body).unwrap_or_default();
            state.status = applied.get("status").cloned();
            let mut org = serde_json::to_value(org(None)).unwrap_or_default();
            org["status"] = applied["status"].clone();
            (StatusCode::OK, org)
        }
        ("GET", "/apis/batch/v1/namespaces/ns/cronjobs") => {
            note(log, "LIST CronJobs");
            (
                StatusCode::OK,
                json!({"apiVersion": "batch/v1", "kind": "CronJobList", "metadata": {}, "items": []}),
            )
        }
        ("POST", "/apis/events.k8s.io/v1/namespaces/ns/events") => {
            note(log, "POST Event");
            (
                StatusCode::CREATED,
                serde_json::from_slice(body).unwrap_or_default(),
            )
        }
        _ => {
            note(log, format!("unexpected {method} {path}"));
            (StatusCode::NOT_FOUND, not_found)
        }
    }
}

/// Salesforce's side: a refresh returns `new-at`; userinfo accepts any token but `dead-at`.
struct FakeSalesforce {
    log: Log,
    /// The API host a refresh names.
    instance_url: &'static str,
}

fn identity() -> Identity {
    Identity {
        org_id: "00D000000000001AAA".into(),
        user_id: "005000000000001AAA".into(),
        username: "backup@acme.example".into(),
    }
}

impl Salesforce for FakeSalesforce {
    async fn userinfo(&self, _: &str, token: &SecretString) -> Result<Identity, SfError> {
        note(&self.log, format!("userinfo with {}", token.expose()));
        if token.expose() == "dead-at" {
            return Err(SfError::AccessTokenInvalid);
        }
        Ok(identity())
    }

    async fn refresh(
        &self,
        _: &str,
        _: &AppCredentials,
        _: &SecretString,
    ) -> Result<TokenResponse, SfError> {
        note(&self.log, "refresh");
        Ok(TokenResponse {
            access_token: SecretString::new("new-at"),
            refresh_token: None,
            instance_url: self.instance_url.into(),
            id: "https://login.salesforce.com/id/00D000000000001AAA/005000000000001AAA".into(),
            issued_at: Some("1800000000000".into()),
        })
    }

    async fn jwt_bearer(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: &SecretString,
    ) -> Result<TokenResponse, SfError> {
        unreachable!("web server orgs only")
    }

    async fn client_credentials(
        &self,
        _: &str,
        _: &AppCredentials,
    ) -> Result<TokenResponse, SfError> {
        unreachable!("web server orgs only")
    }

    async fn exchange_code(
        &self,
        _: &str,
        _: &AppCredentials,
        _: &SecretString,
        _: &SecretString,
        _: &str,
    ) -> Result<TokenResponse, SfError> {
        unreachable!("no callback here")
    }

    async fn revoke(&self, _: &str, _: &SecretString) -> Result<(), SfError> {
        unreachable!("no callback here")
    }
}

fn org(status: Option<Value>) -> SalesforceOrg {
    let mut org = json!({
        "apiVersion": "orgtokens.dev/v1alpha1",
        "kind": "SalesforceOrg",
        "metadata": {"name": "acme", "namespace": "ns", "uid": "uid-1", "generation": 1,
            "resourceVersion": "1"},
        "spec": {
            "loginUrl": "https://login.salesforce.com",
            "auth": {"webServer": {"clientId": "cid", "scopes": ["api", "refresh_token"]}},
            "tokenSecretRef": {"name": "acme-token"},
        },
    });
    if let Some(status) = status {
        org["status"] = status;
    }
    serde_json::from_value(org).unwrap_or_else(|e| panic!("org: {e}"))
}

fn token_secret(access: &str) -> Secret {
    let data = |v: &str| ByteString(v.as_bytes().to_vec());
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("acme-token".into()),
            namespace: Some("ns".into()),
            resource_version: Some("1".into()),
            labels: Some(BTreeMap::from([(
                token_secret::ORG_LABEL.to_owned(),
                "acme".to_owned(),
            )])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([
            (token_secret::ACCESS_TOKEN.to_owned(), data(access)),
            (token_secret::REFRESH_TOKEN.to_owned(), data("rt")),
            (
                token_secret::INSTANCE_URL.to_owned(),
                data("https://acme.my.salesforce.com"),
            ),
        ])),
        ..Default::default()
    }
}

fn context(api: Arc<Mutex<ApiState>>, log: &Log) -> Context<FakeSalesforce> {
    let client = api_client(api, log.clone());
    let reporter = Reporter {
        controller: "sforg-operator".into(),
        instance: None,
    };
    let recorder = Recorder::new(client.clone(), reporter);
    let salesforce = FakeSalesforce {
        log: log.clone(),
        instance_url: "https://acme.my.salesforce.com",
    };
    Context::new(client, salesforce, Settings::default(), recorder)
}

/// An API server holding the org's token Secret, and nothing written yet.
fn api_with(secret: Secret) -> Arc<Mutex<ApiState>> {
    Arc::new(Mutex::new(ApiState {
        secret: Some(secret),
        version: 1,
        ..Default::default()
    }))
}

/// The status the reconcile last wrote, if any.
fn written_status(api: &Mutex<ApiState>) -> Option<Value> {
    api.lock().ok().and_then(|s| s.status.clone())
}

fn entries(log: &Log) -> Vec<String> {
    log.lock().map(|l| l.clone()).unwrap_or_default()
}

#[tokio::test]
async fn a_renewed_token_is_stored_before_it_is_used() {
    let log = Log::default();
    let api = api_with(token_secret("dead-at"));
    let ctx = context(api.clone(), &log);
    let action = apply(&org(None), &ctx).await;
    assert!(action.is_ok(), "{action:?}");
    assert_eq!(
        entries(&log),
        vec![
            "GET token Secret",
            "userinfo with dead-at",
            "refresh",
            "PUT token Secret",
            "userinfo with new-at",
            "PATCH status",
            "POST Event",
        ]
    );
    let state = written_status(&api);
    assert_eq!(
        state.as_ref().and_then(|s| s["state"].as_str()),
        Some("Valid"),
        "{state:?}"
    );
}

#[tokio::test]
async fn an_instance_url_outside_the_allowlist_is_never_stored() {
    let log = Log::default();
    let api = api_with(token_secret("dead-at"));
    let mut ctx = context(api.clone(), &log);
    ctx.salesforce.instance_url = "https://collector.example.net";
    assert!(apply(&org(None), &ctx).await.is_ok());
    assert_eq!(
        entries(&log),
        vec![
            "GET token Secret",
            "userinfo with dead-at",
            "refresh",
            "PATCH status",
            "POST Event",
        ],
        "the token Secret is not written"
    );
    let (status, secret) = api
        .lock()
        .map(|s| (s.status.clone(), s.secret.clone()))
        .unwrap_or_default();
    let reason = status
        .as_ref()
        .and_then(|s| s["conditions"].as_array().cloned())
        .and_then(|c| c.into_iter().find(|c| c["type"] == "Ready"))
        .map(|c| c["reason"].clone());
    assert_eq!(reason, Some(json!("HostNotAllowed")), "{status:?}");
    assert_eq!(secret, Some(token_secret("dead-at")), "the old tokens stay");
}

#[tokio::test]
async fn an_unchanged_status_writes_nothing() {
    let log = Log::default();
    let api = api_with(token_secret("live-at"));
    // First pass: Pending → Valid writes the status once.
    let first = context(api.clone(), &log);
    assert!(apply(&org(None), &first).await.is_ok());
    let written = written_status(&api);
    assert!(written.is_some());
    // A restarted process finds the status current: no check before the org's slot.
    let log_restarted = Log::default();
    let restarted = context(api.clone(), &log_restarted);
    assert!(apply(&org(written.clone()), &restarted).await.is_ok());
    // It reads the namespace's CronJob holds once, for a hold a killed process left behind.
    assert_eq!(
        entries(&log_restarted),
        vec!["GET token Secret", "LIST CronJobs"]
    );
    assert!(restarted.memo("uid-1").is_some_and(|m| m.verdict.is_none()));
    // A person asks a fresh process for a check: the same answer writes no status.
    let log_again = Log::default();
    let again = context(api.clone(), &log_again);
    let mut requested = org(written);
    requested
        .annotations_mut()
        .insert(super::CHECK_ANNOTATION.into(), "now".into());
    assert!(apply(&requested, &again).await.is_ok());
    assert_eq!(
        entries(&log_again),
        vec![
            "GET token Secret",
            "LIST CronJobs",
            "userinfo with live-at",
            "POST Event"
        ],
        "one read, one Salesforce call and the answer's Event; no status write"
    );
    let memo = again.memo("uid-1").and_then(|m| m.verdict);
    assert!(
        matches!(memo, Some(decide::Verdict::Valid { .. })),
        "{memo:?}"
    );
}

#[tokio::test]
async fn a_status_echo_asks_nothing() {
    let log = Log::default();
    let api = api_with(token_secret("live-at"));
    let ctx = context(api.clone(), &log);
    assert!(apply(&org(None), &ctx).await.is_ok());
    let written = written_status(&api);
    if let Ok(mut log) = log.lock() {
        log.clear();
    }
    // The watch echo of our own status write: same generation, same Secret.
    assert!(apply(&org(written), &ctx).await.is_ok());
    assert_eq!(entries(&log), vec!["GET token Secret"]);
    let status: Option<crate::crd::SalesforceOrgStatus> = api
        .lock()
        .ok()
        .and_then(|s| s.status.clone())
        .and_then(|s| serde_json::from_value(s).ok());
    assert_eq!(status.and_then(|s| s.state), Some(TokenState::Valid));
}

#[test]
fn errors_name_their_step() {
    let api = |code, reason| {
        kube::Error::Api(
            kube::core::Status::failure("refused", reason)
                .with_code(code)
                .boxed(),
        )
    };
    let conflict = || api(409, "Conflict");
    let forbidden = || api(403, "Forbidden");
    // (what, error, metric label, retried at once)
    let cases = [
        (
            "CronJob conflict",
            Error::SyncCronJobs(conflict()),
            "sync_cronjobs",
            true,
        ),
        (
            "status conflict",
            Error::WriteStatus(conflict()),
            "write_status",
            true,
        ),
        (
            "Secret read refused",
            Error::ReadSecrets(forbidden()),
            "read_secrets",
            false,
        ),
        (
            "CronJob list refused",
            Error::ReadCronJobs(forbidden()),
            "read_cronjobs",
            false,
        ),
        (
            "finalizer raced",
            Error::Finalizer(conflict()),
            "finalizer",
            true,
        ),
        (
            "finalizer refused",
            Error::Finalizer(forbidden()),
            "finalizer",
            false,
        ),
    ];
    for (what, error, label, stale) in cases {
        assert_eq!(error.metric_label(), label, "{what}");
        assert_eq!(error.is_stale_read(), stale, "{what}");
    }
}

#[test]
fn no_type_that_holds_a_token_prints_it() {
    use crate::credentials::Credentials;
    use crate::token_store::Stored;
    const SECRETS: [&str; 5] = [
        "ACCESS-0001",
        "REFRESH-0002",
        "CONSUMER-SECRET-0003",
        "PRIVATE-KEY-0004",
        "NEW-ACCESS-0005",
    ];
    let mut secret = token_secret(SECRETS[0]);
    if let Some(data) = secret.data.as_mut() {
        data.insert(
            token_secret::REFRESH_TOKEN.into(),
            ByteString(SECRETS[1].as_bytes().to_vec()),
        );
    }
    let app = AppCredentials {
        client_id: "cid".into(),
        client_secret: Some(SecretString::new(SECRETS[2])),
    };
    let jwt = Credentials::JwtBearer {
        client_id: "cid".into(),
        username: "u".into(),
        private_key: SecretString::new(SECRETS[3]),
    };
    let response = TokenResponse {
        access_token: SecretString::new(SECRETS[4]),
        refresh_token: Some(SecretString::new(SECRETS[1])),
        instance_url: "https://acme.my.salesforce.com".into(),
        id: "https://login.salesforce.com/id/00D000000000001AAA/005000000000001AAA".into(),
        issued_at: None,
    };
    let unpersisted = super::exchange::Unpersisted {
        response: response.clone(),
        replaced: Some(SecretString::new(SECRETS[1])),
        credentials: Credentials::WebServer(app.clone()),
        attempts: 1,
        error: "HTTP 503".into(),
    };
    let settings = Settings::default();
    settings.held.hold("uid-1", unpersisted.clone());
    let gathered = decide::Gathered {
        name: "acme".into(),
        generation: Some(1),
        expected_org_id: None,
        web_server: true,
        status: Default::default(),
        flow: Ok(decide::FlowKind::WebServer),
        credentials: Some(Credentials::WebServer(app.clone())),
        tokens: token_secret::read(Some(&secret)),
        token_secret: Some(secret),
        fingerprint: Default::default(),
        interval: std::time::Duration::from_secs(900),
        phase: std::time::Duration::ZERO,
        keepalive: std::time::Duration::from_secs(3600),
        reauth_failure: None,
        memo: None,
        held: decide::HeldTokensState::None,
        link: Default::default(),
        authorized_by: None,
        authorized_at: None,
        policy: None,
        lead_times: Vec::new(),
        unrecorded_holds: false,
    };
    let stored = Stored::Written {
        version: Some("2".into()),
        replaced: Some(SecretString::new(SECRETS[1])),
    };
    let printed = format!(
        "{gathered:?} {unpersisted:?} {settings:?} {jwt:?} {stored:?} {response:?} {:?}",
        gathered.tokens
    );
    for secret in SECRETS {
        assert!(!printed.contains(secret), "{secret} in {printed}");
        // Secret data prints as bytes.
        let bytes = format!("{:?}", secret.as_bytes());
        let bytes = bytes.trim_matches(|c| c == '[' || c == ']');
        assert!(!printed.contains(bytes), "{secret} as bytes in {printed}");
    }
    assert!(printed.contains("acme-token"), "{printed}");
}
