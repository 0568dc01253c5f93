//! `/metrics`, `/healthz` and `/readyz` scraped over HTTP from an operator running against
//! the real control plane and the Salesforce simulator, through a renewal, an expiry with a
//! held CronJob, a re-auth and a deletion.

// A test (or benchmark) fails by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::eventually;
use common::operator::{CONVERGE, Operator, http_settings};
use k8s_openapi::api::batch::v1::CronJob;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use sforg_operator::controller::{self, Hooks, Scope};
use sforg_operator::crd::TokenState;
use sforg_operator::metrics::{Instrumented, Metrics};
use sforg_operator::reconcile::Settings;
use sforg_operator::salesforce::HttpSalesforce;
use sforg_operator::telemetry::{self, Health};

/// Starts the controller with metrics and health, and their server on a free port.
async fn start(op: &Operator) -> (SocketAddr, Health, tokio::task::JoinHandle<()>) {
    let metrics = Metrics::new();
    let health = Health::default();
    let listener = telemetry::bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = telemetry::router(metrics.clone(), health.clone());
    tokio::spawn(telemetry::serve(listener, router, std::future::pending()));
    let salesforce = Instrumented::new(
        HttpSalesforce::new(http_settings(&op.sim)).expect("http client"),
        metrics.clone(),
    );
    metrics.set_leader(true);
    let task = tokio::spawn(controller::run_with(
        op.client.clone(),
        salesforce,
        Settings::default(),
        Scope {
            namespaces: vec![op.ns.clone()],
        },
        "metrics-test".into(),
        std::future::pending(),
        Hooks {
            metrics: Some(metrics),
            health: Some(health.clone()),
        },
    ));
    (addr, health, task)
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("http client")
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let response = http()
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

/// Sample values by their full series name (`name{labels}`).
async fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn org_series(name: &str, ns: &str, org: &str) -> String {
    format!("{name}{{namespace=\"{ns}\",org=\"{org}\"}}")
}

async fn wait_for(addr: SocketAddr, what: &str, check: impl Fn(&BTreeMap<String, f64>) -> bool) {
    let check = &check;
    eventually(what, CONVERGE, || async move {
        let samples = scrape(addr).await;
        check(&samples).then_some(())
    })
    .await;
}

fn value(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_follow_expiry_and_reauth() {
    let op = Operator::prepare("metrics").await;
    let (addr, _health, task) = start(&op).await;
    let ns = op.ns.clone();

    assert_eq!(get(addr, "/healthz").await.0, 200);
    eventually("/readyz after the caches synced", CONVERGE, || async {
        (get(addr, "/readyz").await.0 == 200).then_some(())
    })
    .await;

    // A backup that depends on the org.
    let cronjobs: Api<CronJob> = Api::namespaced(op.client.clone(), &ns);
    let cj: CronJob = serde_json::from_value(json!({
        "metadata": {"name": "nightly", "labels": {"orgtokens.dev/org": "acme"}},
        "spec": {"schedule": "0 2 * * *", "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "backup", "image": "example.com/backup:1"}]}}}}}
    }))
    .expect("cronjob");
    cronjobs
        .create(&PostParams::default(), &cj)
        .await
        .expect("create cronjob");
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

    // A dead session makes the operator refresh: a renewal timestamp appears.
    op.expire_sessions_and_check("acme").await;
    let refresh = org_series("sforg_token_last_refresh_timestamp_seconds", &ns, "acme");
    wait_for(addr, "a refresh timestamp", |s| s.contains_key(&refresh)).await;
    let samples = scrape(addr).await;
    assert_eq!(value(&samples, "sforg_orgs{state=\"Valid\"}"), 1.0);
    assert_eq!(value(&samples, "sforg_orgs{state=\"Expired\"}"), 0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!(
        (now - value(&samples, &refresh)).abs() < 60.0,
        "{samples:#?}"
    );
    assert!(samples.contains_key(&org_series(
        "sforg_org_last_check_timestamp_seconds",
        &ns,
        "acme"
    )));
    assert!(
        value(
            &samples,
            "sforg_salesforce_requests_total{endpoint=\"userinfo\",outcome=\"ok\"}"
        ) >= 1.0
    );
    assert!(
        value(
            &samples,
            "sforg_salesforce_requests_total{endpoint=\"userinfo\",outcome=\"access_token_invalid\"}"
        ) >= 1.0
    );
    assert!(
        value(
            &samples,
            "sforg_salesforce_requests_total{endpoint=\"refresh\",outcome=\"ok\"}"
        ) >= 1.0
    );
    assert!(value(&samples, "sforg_reconcile_total{result=\"success\"}") >= 1.0);
    assert!(value(&samples, "sforg_reconcile_duration_seconds_count") >= 1.0);
    assert_eq!(value(&samples, "sforg_leader"), 1.0);
    let waiting = org_series("sforg_org_waiting_for_person_seconds", &ns, "acme");
    let held = org_series("sforg_cronjobs_held", &ns, "acme");
    assert!(!samples.contains_key(&waiting) && !samples.contains_key(&held));

    // Revoked: Expired, the backup held, a person awaited.
    op.sim
        .control()
        .revoke_user_tokens(&op.demo.user.username, None)
        .expect("revoke");
    op.expire_sessions_and_check("acme").await;
    op.wait_state("acme", TokenState::Expired, None).await;
    wait_for(addr, "the held CronJob", |s| value(s, &held) == 1.0).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let samples = scrape(addr).await;
    assert_eq!(value(&samples, "sforg_orgs{state=\"Expired\"}"), 1.0);
    assert_eq!(value(&samples, "sforg_orgs{state=\"Valid\"}"), 0.0);
    assert!(value(&samples, &waiting) > 0.0, "{samples:#?}");
    assert!(
        value(
            &samples,
            "sforg_salesforce_requests_total{endpoint=\"refresh\",outcome=\"authorization_lost\"}"
        ) >= 1.0,
        "{samples:#?}"
    );

    // Re-auth: a person's login stores new tokens; the org is Valid, nothing held or awaited.
    let tokens = op
        .sim
        .control()
        .mint_tokens(&op.demo.app.client_id, &op.demo.user.username)
        .expect("mint");
    let patch = json!({"stringData": {"access_token": tokens.access_token,
        "refresh_token": tokens.refresh_token, "instance_url": tokens.instance_url,
        "issued_at": tokens.issued_at}});
    op.secrets()
        .patch("acme-token", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("store new tokens");
    op.wait_state("acme", TokenState::Valid, None).await;
    wait_for(addr, "the hold released", |s| !s.contains_key(&held)).await;
    let samples = scrape(addr).await;
    assert_eq!(value(&samples, "sforg_orgs{state=\"Valid\"}"), 1.0);
    assert_eq!(value(&samples, "sforg_orgs{state=\"Expired\"}"), 0.0);
    assert!(!samples.contains_key(&waiting), "{samples:#?}");

    // Deleted: its series go with it.
    op.orgs()
        .delete("acme", &DeleteParams::default())
        .await
        .expect("delete");
    wait_for(addr, "per-org series to disappear", |s| {
        !s.keys().any(|k| k.contains("org=\"acme\""))
            && value(s, "sforg_orgs{state=\"Valid\"}") == 0.0
    })
    .await;
    task.abort();
}

/// A real reconcile failure (an admission policy denies the CronJob patch an expiry needs)
/// is counted under the step that failed, retried, and converges once the denial is lifted.
#[tokio::test]
async fn reconcile_errors_are_counted_by_the_step_that_failed() {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    use kube::api::DeleteParams;
    let op = Operator::prepare("errors").await;
    let (addr, _health, task) = start(&op).await;
    let ns = op.ns.clone();
    op.create_cronjob("nightly", &[("orgtokens.dev/org", "acme")], false)
        .await;
    op.ensure_app_secret().await;
    let spec = op
        .web_org("acme")
        .selecting(&[("orgtokens.dev/org", "acme")]);
    op.create_org("acme", spec.json()).await;
    op.seed_tokens("acme-token", "acme").await;
    op.wait_state("acme", TokenState::Valid, None).await;

    let name = format!("deny-cronjobs-{ns}");
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{"apiGroups": ["batch"], "apiVersions": ["v1"],
                "operations": ["UPDATE"], "resources": ["cronjobs"]}]},
            "validations": [{"expression": "false", "message": "CronJob updates are denied by the test"}],
        }
    }))
    .unwrap();
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {
                "kubernetes.io/metadata.name": ns}}}},
    }))
    .unwrap();
    let policies = Api::<ValidatingAdmissionPolicy>::all(op.client.clone());
    let bindings = Api::<ValidatingAdmissionPolicyBinding>::all(op.client.clone());
    policies
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    // Policies take effect once the API server has loaded them: probe with dry runs.
    let cronjobs = op.cronjobs();
    eventually("the denial to take effect", CONVERGE, || async {
        let probe = json!({"metadata": {"annotations": {"probe": "x"}}});
        let params = kube::api::PatchParams {
            dry_run: true,
            ..Default::default()
        };
        cronjobs
            .patch("nightly", &params, &kube::api::Patch::Merge(&probe))
            .await
            .is_err()
            .then_some(())
    })
    .await;

    // A finalizer patch racing the org's creation is a stale read, counted as such; what
    // follows must not add to it.
    let finalizer_before = value(
        &scrape(addr).await,
        "sforg_reconcile_errors_total{reason=\"finalizer\"}",
    );
    // The token is revoked: the org must suspend its CronJob, and the API server refuses.
    op.sim
        .control()
        .revoke_user_tokens(&op.demo.user.username, None)
        .unwrap();
    op.request_check("acme").await;
    wait_for(addr, "a sync_cronjobs reconcile error", |s| {
        value(s, "sforg_reconcile_errors_total{reason=\"sync_cronjobs\"}") >= 1.0
    })
    .await;
    let samples = scrape(addr).await;
    assert_eq!(
        value(
            &samples,
            "sforg_reconcile_errors_total{reason=\"finalizer\"}"
        ),
        finalizer_before,
        "failures are named by their step, not by the finalizer around them"
    );
    assert_eq!(op.cronjob_hold("nightly").await, (false, None));

    bindings
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    policies
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    op.wait_suspended("nightly", true).await;
    op.wait_state("acme", TokenState::Expired, Some("RefreshTokenRevoked"))
        .await;
    task.abort();
}

/// Ports the kernel lists as listening (TCP, IPv4), with their local address, from
/// /proc/net/tcp.
fn listening(port: u16) -> Vec<std::net::Ipv4Addr> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (addr, p) = fields.get(1)?.split_once(':')?;
            // 0A: LISTEN.
            if *fields.get(3)? != "0A" || u16::from_str_radix(p, 16).ok()? != port {
                return None;
            }
            // Little-endian hex of the address.
            let raw = u32::from_str_radix(addr, 16).ok()?;
            Some(std::net::Ipv4Addr::from(raw.swap_bytes()))
        })
        .collect()
}

/// This machine's address on its default route, if it has one.
fn non_loopback_address() -> Option<std::net::IpAddr> {
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    // No packet is sent: connecting a UDP socket only picks the route and source address.
    probe.connect("192.0.2.1:9").ok()?;
    let ip = probe.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `sforg-operator run --metrics-listen 127.0.0.1:PORT`: the kernel's socket is bound to
/// loopback alone (nothing on another address reaches /metrics), while /healthz and /readyz
/// answer on --health-listen.
#[tokio::test]
async fn metrics_on_loopback_bind_loopback_only() {
    let client = common::client().await;
    common::install_crd(&client).await;
    let ns = common::namespace(&client, "metrics-lo").await;
    let kubeconfig = std::env::var("SFORG_TEST_KUBECONFIG").expect("SFORG_TEST_KUBECONFIG");
    let (metrics_port, health_port) = (free_port(), free_port());
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_sforg-operator"))
        .args([
            "run",
            "--no-leader-election",
            "--namespace",
            &ns,
            "--metrics-listen",
            &format!("127.0.0.1:{metrics_port}"),
            "--health-listen",
            &format!("0.0.0.0:{health_port}"),
            "--callback-listen",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .env("KUBECONFIG", kubeconfig)
        .env_remove("SFORG_PUBLIC_URL")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start sforg-operator");
    let _stop = Kill(child);
    let metrics: SocketAddr = ([127, 0, 0, 1], metrics_port).into();
    eventually("/metrics on loopback", CONVERGE, || async {
        let (code, body) = try_get(metrics, "/metrics").await?;
        (code == 200 && body.contains("sforg_")).then_some(())
    })
    .await;
    let health: SocketAddr = ([127, 0, 0, 1], health_port).into();
    eventually("/readyz on the health address", CONVERGE, || async {
        (try_get(health, "/readyz").await?.0 == 200).then_some(())
    })
    .await;
    let (code, body) = get(health, "/metrics").await;
    assert_eq!(code, 404, "the health address serves no metrics: {body}");

    assert_eq!(
        listening(metrics_port),
        [std::net::Ipv4Addr::LOCALHOST],
        "the metrics socket"
    );
    assert_eq!(
        listening(health_port),
        [std::net::Ipv4Addr::UNSPECIFIED],
        "the health socket (the test can tell the difference)"
    );
    if let Some(ip) = non_loopback_address() {
        let refused = tokio::net::TcpStream::connect((ip, metrics_port)).await;
        assert!(refused.is_err(), "/metrics reachable on {ip}");
        let served = tokio::net::TcpStream::connect((ip, health_port)).await;
        assert!(served.is_ok(), "health not reachable on {ip}: {served:?}");
    } else {
        println!("no non-loopback address: checked the kernel's socket table only");
    }
}

/// Stops the operator process when the test ends, however it ends.
struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// [`get`], or `None` while nothing answers.
async fn try_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let response = http()
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}
