//! Faults on the real control plane, with the Salesforce simulator. Each test says what
//! "nothing lost" means for its fault and asserts exactly that.
//!
//! Covered elsewhere: the operator killed mid-suspend and mid-resume
//! (`dependents::restart_halfway_through_converges`), a ~1 MiB garbage Secret
//! (`token_lifecycle::bad_secret_contents_give_a_clear_condition`), a login URL outside the
//! allowlist (`token_lifecycle::a_login_host_outside_the_allowlist_receives_nothing`) and leader
//! take-over (`leader::only_the_leader_reconciles_and_a_standby_takes_over`).

// A test (or benchmark) fails by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use common::eventually;
use common::operator::{CONVERGE, Operator, condition, http_settings};
use common::replica::{Replica, leads};
use futures::StreamExt;
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use sforg_operator::clock::Clock;
use sforg_operator::controller::{self, Hooks, Scope};
use sforg_operator::crd::{SalesforceOrg, TokenState};
use sforg_operator::dependents::HOLDERS_ANNOTATION;
use sforg_operator::leader::{Elector, LeaseConfig};
use sforg_operator::metrics::Metrics;
use sforg_operator::reconcile::{CHECK_ANNOTATION, PERSISTED_EVENT, Settings};
use sforg_operator::salesforce::{
    AppCredentials, HttpSalesforce, HttpSettings, LostReason, Salesforce, SfError,
};
use sforg_operator::secret::SecretString;
use sforg_simulator::{DemoOptions, Endpoint, Fault, FaultKind, GRANT_JWT_BEARER};

// ----- shared helpers -----

/// The operator's logs on stderr when `SFORG_TEST_LOG` is set (a tracing filter such as
/// `sforg_operator=debug`), for looking into a failure.
fn logs() {
    if let Ok(filter) = std::env::var("SFORG_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
}

/// A web org selecting the CronJobs labelled `backup-of=<name>`, connected and Valid.
async fn org_with_dependents(op: &Operator, name: &str) -> sforg_simulator::TokenResponse {
    op.create_web_org_with(
        name,
        json!({"cronJobSelector": {"matchLabels": {"backup-of": name}}}),
    )
    .await;
    let seeded = op.seed_tokens(&format!("{name}-token"), name).await;
    op.wait_state(name, TokenState::Valid, None).await;
    seeded
}

/// The refresh tokens Salesforce would accept now for the demo user and app.
fn valid_refresh_tokens(op: &Operator) -> Vec<String> {
    op.sim
        .control()
        .valid_refresh_tokens(&op.demo.user.username, Some(&op.demo.app.client_id))
        .expect("list refresh tokens")
}

fn refresh_calls(op: &Operator) -> u64 {
    op.sim.control().call_counts().grant_type("refresh_token")
}

/// Panics when an org ever reported TokenExpired (an Event is written on every transition).
async fn assert_never_expired(op: &Operator, name: &str) {
    let events = op.events_for(name).await;
    let expired: Vec<_> = events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("TokenExpired"))
        .collect();
    assert!(
        expired.is_empty(),
        "{name} was reported expired: {expired:#?}"
    );
}

/// Asks for a check, returning `None` while the API server refuses (during an outage).
async fn try_request_check(op: &Operator, name: &str) -> Option<()> {
    let stamp = format!("{:?}", std::time::SystemTime::now());
    let patch = json!({"metadata": {"annotations": {CHECK_ANNOTATION: stamp}}});
    op.orgs()
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .ok()
        .map(|_| ())
}

// ----- 1. the API server and etcd go away -----

/// A control plane of the test's own (the shared one serves the tests running in parallel),
/// stopped with everything in it when dropped, also when the test panics.
struct OwnControlPlane {
    dir: PathBuf,
}

fn control_plane_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/control-plane.sh")
}

fn run_script(args: &[&str]) {
    let output = std::process::Command::new(control_plane_script())
        .args(args)
        .output()
        .expect("run scripts/control-plane.sh");
    assert!(
        output.status.success(),
        "scripts/control-plane.sh {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

impl OwnControlPlane {
    async fn start() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let dir = std::env::temp_dir().join(format!(
            "sforg-faults-cp-{}-{nanos:08x}",
            std::process::id()
        ));
        let cp = OwnControlPlane { dir };
        cp.script("start", None).await;
        cp
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// Runs the script off the async runtime, which also runs the operator under test.
    async fn script(&self, command: &'static str, component: Option<&'static str>) {
        let dir = self.dir.display().to_string();
        tokio::task::spawn_blocking(move || {
            let mut args = vec![command, dir.as_str()];
            args.extend(component);
            run_script(&args);
        })
        .await
        .expect("join the script");
    }

    async fn stop_component(&self, name: &'static str) {
        self.script("stop-component", Some(name)).await;
    }

    async fn start_component(&self, name: &'static str) {
        self.script("start-component", Some(name)).await;
    }
}

impl Drop for OwnControlPlane {
    fn drop(&mut self) {
        let dir = self.dir.display().to_string();
        let _ = std::process::Command::new(control_plane_script())
            .args(["stop", dir.as_str()])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The API server stops for a minute (a refresh that Salesforce completed meanwhile has
/// nowhere to be written, then Salesforce revokes the authorization), then etcd restarts for
/// 15 s. The operator runs as in production: one replica with leader election, which steps
/// down when it cannot renew its Lease during the long outage and leads again afterwards,
/// and keeps leading (its watches reconnect) through the short one.
///
/// Nothing lost means: the operator recovers in the same process (no restart, no panic, no
/// reconcile stuck: it answers later checks and re-authorizations); the refresh token
/// Salesforce issued while the API server was down waits in memory across the step-down and
/// reaches the token Secret; the revocation is reported (Expired, CronJob suspended) once the
/// API server is back; and the Secret's tokens are never wiped by the outages.
#[tokio::test]
async fn api_server_and_etcd_outages_lose_nothing() {
    logs();
    let cp = OwnControlPlane::start().await;
    let op = Operator::prepare_in(&cp.kubeconfig(), "outage", DemoOptions::default()).await;
    // A Salesforce timeout longer than the slow refresh below, so its answer arrives.
    let http = HttpSettings {
        timeout: Duration::from_secs(30),
        ..http_settings(&op.sim)
    };
    let salesforce = HttpSalesforce::new(http).expect("http client");
    let settings = Settings::default();
    let held = settings.held.clone();
    let metrics = Metrics::new();
    // Leadership survives renewals failing for 25 s: the etcd restart, not the minute.
    let lease = LeaseConfig {
        lease_duration: Duration::from_secs(30),
        ..LeaseConfig::new("sforg-outage-leader", op.ns.clone(), "outage-replica")
    };
    let elector = Elector::new(op.client.clone(), lease)
        .expect("elector")
        .with_metrics(metrics.clone());
    let (client, scope) = (
        op.client.clone(),
        Scope {
            namespaces: vec![op.ns.clone()],
        },
    );
    let replica = tokio::spawn(elector.run(std::future::pending(), move |stop| {
        controller::run_with(
            client.clone(),
            salesforce.clone(),
            settings.clone(),
            scope.clone(),
            "outage-replica".into(),
            stop,
            Hooks::default(),
        )
    }));
    let running = || !replica.is_finished();
    let ctl = op.sim.control();
    op.create_cronjob("nightly", &[("backup-of", "acme")], false)
        .await;
    let seeded = org_with_dependents(&op, "acme").await;
    assert!(leads(&metrics));

    // A refresh reaches Salesforce (rotation is on), which answers only after the API server
    // is gone: the new refresh token exists nowhere but in the operator's memory.
    ctl.inject_fault(
        Fault::new(FaultKind::delay(Duration::from_secs(12)))
            .on(Endpoint::Token)
            .times(1),
    );
    let before = refresh_calls(&op);
    op.expire_sessions_and_check("acme").await;
    eventually("the refresh to reach Salesforce", CONVERGE, || async {
        (refresh_calls(&op) > before).then_some(())
    })
    .await;
    let secret_before = op.secret_data("acme-token").await;
    let stopped = Instant::now();
    cp.stop_component("kube-apiserver").await;
    println!("kube-apiserver stopped in {:?}", stopped.elapsed());
    let issued = eventually(
        "Salesforce to rotate the refresh token",
        Duration::from_secs(30),
        || async {
            let valid = valid_refresh_tokens(&op);
            (valid.len() == 1 && Some(&valid[0]) != seeded.refresh_token.as_ref())
                .then(|| valid[0].clone())
        },
    )
    .await;
    eventually("the new tokens held in memory", CONVERGE, || async {
        (held.orgs().len() == 1).then_some(())
    })
    .await;
    // Then Salesforce revokes the authorization while the API server is still down.
    ctl.revoke_user_tokens(&op.demo.user.username, None)
        .expect("revoke");
    eventually(
        "the leader to step down",
        Duration::from_secs(50),
        || async { (!leads(&metrics)).then_some(()) },
    )
    .await;
    println!("stepped down {:?} into the outage", stopped.elapsed());
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(stopped.elapsed())).await;
    assert!(running(), "the replica survived the outage");
    assert_eq!(held.orgs().len(), 1, "the tokens outlived the step-down");
    let restarting = Instant::now();
    cp.start_component("kube-apiserver").await;
    let restarted = Instant::now();
    println!(
        "kube-apiserver ready {:?} after its start",
        restarting.elapsed()
    );
    eventually(
        "the API server to take a check request",
        Duration::from_secs(60),
        || try_request_check(&op, "acme"),
    )
    .await;
    let org = eventually(
        "the revocation to be reported after the outage",
        Duration::from_secs(120),
        || async {
            let org = op.orgs().get("acme").await.ok()?;
            let status = org.status.as_ref()?;
            (status.state == Some(TokenState::Expired) && status.suspended_cron_jobs == ["nightly"])
                .then_some(org)
        },
    )
    .await;
    println!(
        "after a {:?} API server outage: leading again and Expired with its CronJob suspended {:?} after the API server started ({:?} after it was ready)",
        restarting.duration_since(stopped),
        restarting.elapsed(),
        restarted.elapsed(),
    );
    assert!(leads(&metrics));
    assert!(held.orgs().is_empty(), "nothing left in memory");
    assert_eq!(condition(&org, "Ready").1, "RefreshTokenRevoked");
    assert_eq!(
        op.cronjob_hold("nightly").await,
        (true, Some("acme".into()))
    );
    let secret = op.secret_data("acme-token").await;
    assert_eq!(
        secret.get("refresh_token"),
        Some(&issued),
        "the refresh token issued during the outage reached the Secret"
    );
    assert_ne!(secret_before.get("refresh_token"), Some(&issued));
    assert!(
        op.events_for("acme")
            .await
            .iter()
            .any(|e| e.reason.as_deref() == Some(PERSISTED_EVENT))
    );

    // Not stuck: a re-authorization makes it Valid and resumes the backup.
    let reauthorized = Instant::now();
    let fresh = op.store_new_tokens("acme").await;
    eventually(
        "Valid with nightly resumed",
        Duration::from_secs(60),
        || async {
            let org = op.orgs().get("acme").await.ok()?;
            let valid = org.status?.state == Some(TokenState::Valid);
            (valid && op.cronjob_hold("nightly").await == (false, None)).then_some(())
        },
    )
    .await;
    println!(
        "re-authorized {:?} after the API server was ready: Valid and resumed in {:?}",
        reauthorized.duration_since(restarted),
        reauthorized.elapsed()
    );

    // etcd restarts; Salesforce revokes meanwhile. The replica keeps leading, so its watches
    // (not a fresh controller) must see the check request afterwards.
    let secret_before = op.secret_data("acme-token").await;
    assert_eq!(
        secret_before.get("refresh_token"),
        fresh.refresh_token.as_ref()
    );
    let stopped = Instant::now();
    cp.stop_component("etcd").await;
    ctl.revoke_user_tokens(&op.demo.user.username, None)
        .expect("revoke");
    while stopped.elapsed() < Duration::from_secs(15) {
        assert!(leads(&metrics), "still leading while etcd is down");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cp.start_component("etcd").await;
    let restarted = Instant::now();
    eventually(
        "the API server to take a check request",
        Duration::from_secs(60),
        || try_request_check(&op, "acme"),
    )
    .await;
    eventually(
        "the revocation to be reported after the etcd restart",
        Duration::from_secs(90),
        || async {
            let org = op.orgs().get("acme").await.ok()?;
            let status = org.status.as_ref()?;
            (status.state == Some(TokenState::Expired) && status.suspended_cron_jobs == ["nightly"])
                .then_some(())
        },
    )
    .await;
    println!(
        "after a 15 s etcd outage: Expired with its CronJob suspended {:?} after etcd was back",
        restarted.elapsed()
    );
    assert!(leads(&metrics), "led throughout");
    assert_eq!(
        op.cronjob_hold("nightly").await,
        (true, Some("acme".into()))
    );
    assert_eq!(
        op.secret_data("acme-token").await,
        secret_before,
        "the Secret's tokens are intact"
    );
    assert!(running(), "no panic, no restart");
    replica.abort();
    drop(op);
    drop(cp);
}

/// The API server restarts while an org holds its CronJobs, and a CronJob is relabelled into
/// the org's selector the moment it is back, before the operator's CronJob watch has
/// reconnected. Nothing lost means: the watch comes back on its own (same process, no
/// periodic list to fall back on) and the relabelled CronJob is suspended and held.
#[tokio::test]
async fn a_cronjob_relabelled_while_the_watch_is_broken_is_still_suspended() {
    logs();
    let cp = OwnControlPlane::start().await;
    let op = Operator::prepare_in(&cp.kubeconfig(), "cjwatch", DemoOptions::default()).await;
    let salesforce = HttpSalesforce::new(http_settings(&op.sim)).expect("http client");
    let scope = Scope {
        namespaces: vec![op.ns.clone()],
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(controller::run(
        op.client.clone(),
        salesforce,
        Settings::default(),
        scope,
        "cjwatch".into(),
        async move {
            let _ = stop_rx.await;
        },
    ));
    op.create_cronjob("nightly", &[("backup-of", "acme")], false)
        .await;
    op.create_cronjob("moved", &[("backup-of", "other")], false)
        .await;
    org_with_dependents(&op, "acme").await;
    op.sim
        .control()
        .revoke_user_tokens(&op.demo.user.username, None)
        .expect("revoke");
    op.request_check("acme").await;
    op.wait_suspended("nightly", true).await;

    cp.stop_component("kube-apiserver").await;
    cp.start_component("kube-apiserver").await;
    let relabel = json!({"metadata": {"labels": {"backup-of": "acme"}}});
    eventually(
        "the API server to take the relabel",
        Duration::from_secs(60),
        || async {
            op.cronjobs()
                .patch("moved", &PatchParams::default(), &Patch::Merge(&relabel))
                .await
                .ok()
        },
    )
    .await;
    let relabelled = Instant::now();
    op.wait_suspended("moved", true).await;
    println!(
        "relabelled after the restart, suspended {:?} later",
        relabelled.elapsed()
    );
    assert_eq!(op.cronjob_hold("moved").await, (true, Some("acme".into())));
    assert!(!controller.is_finished(), "the controller kept running");
    let _ = stop_tx.send(());
    controller.await.expect("controller stops");
}

// ----- 2. Salesforce renewed, the Secret refuses -----

/// Denies every update of one Secret with a ValidatingAdmissionPolicy (real API server
/// behaviour, no webhook), until [`Denial::lift`].
struct Denial {
    client: Client,
    name: String,
}

impl Denial {
    async fn deny_updates(op: &Operator, secret: &str) -> Self {
        let name = format!("deny-{}", op.ns);
        let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                    "operations": ["UPDATE"], "resources": ["secrets"]}]},
                "validations": [{
                    "expression": format!("object.metadata.name != '{secret}'"),
                    "message": "updates of this Secret are denied by the fault test",
                }],
            }
        }))
        .expect("policy");
        let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "policyName": name,
                "validationActions": ["Deny"],
                "matchResources": {"namespaceSelector": {"matchLabels": {
                    "kubernetes.io/metadata.name": op.ns}}},
            }
        }))
        .expect("binding");
        Api::<ValidatingAdmissionPolicy>::all(op.client.clone())
            .create(&PostParams::default(), &policy)
            .await
            .expect("create the policy");
        Api::<ValidatingAdmissionPolicyBinding>::all(op.client.clone())
            .create(&PostParams::default(), &binding)
            .await
            .expect("create the binding");
        let denial = Denial {
            client: op.client.clone(),
            name,
        };
        // Policies take effect once the API server has loaded them.
        eventually("the denial to take effect", CONVERGE, || async {
            (!update_allowed(op, secret).await).then_some(())
        })
        .await;
        denial
    }

    async fn lift(&self, op: &Operator, secret: &str) {
        let _ = Api::<ValidatingAdmissionPolicyBinding>::all(self.client.clone())
            .delete(&self.name, &DeleteParams::default())
            .await;
        let _ = Api::<ValidatingAdmissionPolicy>::all(self.client.clone())
            .delete(&self.name, &DeleteParams::default())
            .await;
        eventually("the denial to be lifted", CONVERGE, || async {
            update_allowed(op, secret).await.then_some(())
        })
        .await;
    }
}

/// Whether the API server would accept an update of the Secret (a dry run: nothing changes).
async fn update_allowed(op: &Operator, secret: &str) -> bool {
    let patch = json!({"metadata": {"annotations": {"faults.test/probe": "x"}}});
    let params = PatchParams {
        dry_run: true,
        ..PatchParams::default()
    };
    op.secrets()
        .patch(secret, &params, &Patch::Merge(&patch))
        .await
        .is_ok()
}

/// Salesforce rotated the refresh token, but the token Secret refuses the write.
///
/// Nothing lost means: the new refresh token (the only one Salesforce still accepts) stays
/// in the operator's memory while the Secret refuses it, the status says so
/// (`TokenNotPersisted`), no second refresh is made meanwhile (it would present the
/// rotated-out token and revoke the grant), and once the Secret accepts writes the token
/// lands there, the org is Valid, and Salesforce saw exactly one refresh.
#[tokio::test]
async fn a_refresh_the_secret_refuses_is_held_until_it_can_be_written() {
    logs();
    let (op, seeded) = Operator::with_valid_org("held", true).await;
    let denial = Denial::deny_updates(&op, "acme-token").await;
    let before = refresh_calls(&op);
    op.expire_sessions_and_check("acme").await;
    let org = op
        .wait_state("acme", TokenState::Unknown, Some("TokenNotPersisted"))
        .await;
    let (status, reason, message) = condition(&org, "TokenValid");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("Unknown", "TokenNotPersisted")
    );
    assert!(
        message.contains("denied by the fault test"),
        "the API server's reason is shown: {message}"
    );
    assert_ne!(condition(&org, "TokenExpired").0, "True");
    let valid = valid_refresh_tokens(&op);
    assert_eq!(valid.len(), 1);
    let issued = valid[0].clone();
    assert_ne!(Some(&issued), seeded.refresh_token.as_ref(), "rotated");
    assert_eq!(
        op.secret_data("acme-token").await.get("refresh_token"),
        seeded.refresh_token.as_ref(),
        "the Secret still holds the old token"
    );
    assert_eq!(refresh_calls(&op), before + 1);

    // More checks, with the access token in the Secret dead (a refresh with the Secret's
    // refresh token would be a replay that revokes the grant): none while tokens are held.
    for _ in 0..3 {
        op.request_check("acme").await;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    assert_eq!(refresh_calls(&op), before + 1, "never refreshed again");
    assert_eq!(valid_refresh_tokens(&op), vec![issued.clone()]);
    op.wait_state("acme", TokenState::Unknown, Some("TokenNotPersisted"))
        .await;

    denial.lift(&op, "acme-token").await;
    // The next reconcile writes them first (a check request just makes it come sooner).
    op.request_check("acme").await;
    eventually("the held token in the Secret", CONVERGE, || async {
        let data = op.secret_data("acme-token").await;
        (data.get("refresh_token") == Some(&issued)).then_some(())
    })
    .await;
    let org = op
        .wait_state("acme", TokenState::Valid, Some("TokenValid"))
        .await;
    assert!(org.status.and_then(|s| s.last_refreshed_at).is_some());
    assert_eq!(refresh_calls(&op), before + 1, "exactly one refresh");
    assert_eq!(valid_refresh_tokens(&op), vec![issued]);
    let events = op.events_for("acme").await;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some(PERSISTED_EVENT)),
        "{events:#?}"
    );
    assert_never_expired(&op, "acme").await;
}

// ----- 3. conflicts on every write path -----

/// Which write of the operator to race.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Target {
    /// `secrets`, `cronjobs` or `salesforceorgs`.
    resource: &'static str,
    namespace: String,
    name: String,
}

impl Target {
    /// The operator's resourceVersion-guarded writes: PUT of a Secret, PATCH of a CronJob,
    /// PATCH of an org (its finalizer; the status is a subresource, not raced here).
    fn of(method: &http::Method, path: &str) -> Option<Self> {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (resource, namespace, name) = match (method.as_str(), parts.as_slice()) {
            ("PUT", ["api", "v1", "namespaces", ns, "secrets", name]) => ("secrets", ns, name),
            ("PATCH", ["apis", "batch", "v1", "namespaces", ns, "cronjobs", name]) => {
                ("cronjobs", ns, name)
            }
            (
                "PATCH",
                [
                    "apis",
                    "orgtokens.dev",
                    _,
                    "namespaces",
                    ns,
                    "salesforceorgs",
                    name,
                ],
            ) => ("salesforceorgs", ns, name),
            _ => return None,
        };
        Some(Target {
            resource,
            namespace: (*namespace).to_owned(),
            name: (*name).to_owned(),
        })
    }
}

/// Another writer that changes an object just before the operator's write of it reaches the
/// API server, so the operator's resourceVersion precondition fails with a genuine 409.
struct Races {
    admin: Client,
    /// How many more writes of each object to race.
    armed: Mutex<HashMap<Target, u32>>,
    /// 409 answers the operator received, by resource.
    conflicts: Mutex<HashMap<&'static str, u32>>,
    bumps: std::sync::atomic::AtomicU64,
}

impl Races {
    fn arm(&self, resource: &'static str, namespace: &str, name: &str, times: u32) {
        let target = Target {
            resource,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        if let Ok(mut armed) = self.armed.lock() {
            armed.insert(target, times);
        }
    }

    fn take(&self, target: &Target) -> bool {
        let Ok(mut armed) = self.armed.lock() else {
            return false;
        };
        match armed.get_mut(target) {
            Some(left) if *left > 0 => {
                *left -= 1;
                true
            }
            _ => false,
        }
    }

    fn conflicts(&self, resource: &str) -> u32 {
        self.conflicts
            .lock()
            .map(|c| c.get(resource).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Changes the object (an annotation only: never the tokens, `spec.suspend` or the holders).
    async fn bump(&self, target: &Target) {
        let n = self.bumps.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let patch = json!({"metadata": {"annotations": {"faults.test/bump": n.to_string()}}});
        let params = PatchParams::apply("faults-test-racer");
        let result = match target.resource {
            "secrets" => Api::<Secret>::namespaced(self.admin.clone(), &target.namespace)
                .patch(&target.name, &params, &Patch::Merge(&patch))
                .await
                .map(|_| ()),
            "salesforceorgs" => {
                Api::<SalesforceOrg>::namespaced(self.admin.clone(), &target.namespace)
                    .patch(&target.name, &params, &Patch::Merge(&patch))
                    .await
                    .map(|_| ())
            }
            _ => Api::<CronJob>::namespaced(self.admin.clone(), &target.namespace)
                .patch(&target.name, &params, &Patch::Merge(&patch))
                .await
                .map(|_| ()),
        };
        result.expect("the racing write");
    }
}

#[derive(Clone)]
struct RaceLayer(Arc<Races>);

impl<S> tower::Layer<S> for RaceLayer {
    type Service = Racing<S>;

    fn layer(&self, inner: S) -> Racing<S> {
        Racing {
            inner,
            races: self.0.clone(),
        }
    }
}

struct Racing<S> {
    inner: S,
    races: Arc<Races>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> tower::Service<http::Request<B>> for Racing<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let target = Target::of(request.method(), request.uri().path());
        let race = target.clone().filter(|t| self.races.take(t));
        // The inner future sends nothing until it is polled, so the racing write lands first.
        let sent = self.inner.call(request);
        let races = self.races.clone();
        Box::pin(async move {
            if let Some(target) = &race {
                races.bump(target).await;
            }
            let response = sent.await?;
            if let Some(target) = &target
                && response.status() == http::StatusCode::CONFLICT
                && let Ok(mut conflicts) = races.conflicts.lock()
            {
                *conflicts.entry(target.resource).or_default() += 1;
            }
            Ok(response)
        })
    }
}

/// Every resourceVersion-guarded write of the operator loses a race against another writer:
/// the token Secret during a refresh (more often than the three writes a refresh tries, so the
/// renewed tokens must wait in memory), the org's finalizer added before its first hold, and
/// each CronJob while suspending and resuming. Status writes carry no resourceVersion unless
/// notifications are recorded (status has one writer, the leader); the leader Lease's races
/// are `leader`'s subject.
///
/// Nothing lost means: exactly one refresh at Salesforce and its rotated token in the Secret
/// (the only one Salesforce accepts), never TokenExpired before the real revocation, every
/// selected CronJob suspended while Expired and every one resumed after, a person's own
/// suspension and unselected CronJobs untouched.
#[tokio::test]
async fn conflicts_on_every_write_path_converge() {
    logs();
    let mut op = Operator::prepare("conflicts").await;
    op.sim
        .control()
        .set_rotation(&op.demo.app.client_id, true)
        .expect("rotation");
    let races = Arc::new(Races {
        admin: op.client.clone(),
        armed: Mutex::default(),
        conflicts: Mutex::default(),
        bumps: Default::default(),
    });
    let path = common::kubeconfig_path();
    let config = common::config_from(&path).await;
    let racing = kube::client::ClientBuilder::try_from(config)
        .expect("client builder")
        .with_layer(&RaceLayer(races.clone()))
        .build();
    op.start_controller_as(racing);
    let jobs: Vec<String> = (0..5).map(|i| format!("job-{i}")).collect();
    for job in &jobs {
        op.create_cronjob(job, &[("backup-of", "acme")], false)
            .await;
    }
    op.create_cronjob("paused-by-person", &[("backup-of", "acme")], true)
        .await;
    op.create_cronjob("unrelated", &[("backup-of", "other")], false)
        .await;
    let seeded = org_with_dependents(&op, "acme").await;

    // A refresh whose Secret write loses four races in a row.
    races.arm("secrets", &op.ns, "acme-token", 4);
    let before = refresh_calls(&op);
    op.expire_sessions_and_check("acme").await;
    let stored = eventually(
        "the rotated token in the Secret",
        Duration::from_secs(60),
        || async {
            let rt = op.secret_data("acme-token").await.remove("refresh_token")?;
            (Some(&rt) != seeded.refresh_token.as_ref()).then_some(rt)
        },
    )
    .await;
    op.wait_state("acme", TokenState::Valid, Some("TokenValid"))
        .await;
    assert!(races.conflicts("secrets") >= 4, "the Secret writes raced");
    let events = op.events_for("acme").await;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some(PERSISTED_EVENT)),
        "the tokens waited in memory between refresh and write: {events:#?}"
    );
    assert_eq!(refresh_calls(&op), before + 1, "exactly one refresh");
    assert_eq!(valid_refresh_tokens(&op), vec![stored]);
    assert_never_expired(&op, "acme").await;

    // Expiry: the finalizer patch and every CronJob patch lose two races.
    races.arm("salesforceorgs", &op.ns, "acme", 2);
    for job in &jobs {
        races.arm("cronjobs", &op.ns, job, 2);
    }
    op.sim
        .control()
        .revoke_user_tokens(&op.demo.user.username, None)
        .expect("revoke");
    op.request_check("acme").await;
    op.wait_state("acme", TokenState::Expired, Some("RefreshTokenRevoked"))
        .await;
    eventually(
        "every selected CronJob suspended",
        Duration::from_secs(60),
        || async {
            for job in &jobs {
                if op.cronjob_hold(job).await != (true, Some("acme".into())) {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    assert!(
        races.conflicts("salesforceorgs") >= 2,
        "the finalizer raced"
    );
    assert_eq!(
        op.orgs().get("acme").await.expect("org").finalizers(),
        [sforg_operator::reconcile::FINALIZER]
    );
    let suspend_conflicts = races.conflicts("cronjobs");
    assert!(
        suspend_conflicts >= jobs.len() as u32,
        "the CronJob patches raced ({suspend_conflicts})"
    );
    assert_eq!(op.cronjob_hold("paused-by-person").await, (true, None));
    assert_eq!(op.cronjob_hold("unrelated").await, (false, None));

    // Recovery: every resume loses a race too.
    for job in &jobs {
        races.arm("cronjobs", &op.ns, job, 2);
    }
    op.store_new_tokens("acme").await;
    op.wait_state("acme", TokenState::Valid, None).await;
    eventually(
        "every CronJob resumed and released",
        Duration::from_secs(60),
        || async {
            for job in &jobs {
                if op.cronjob_hold(job).await != (false, None) {
                    return None;
                }
            }
            let org = op.orgs().get("acme").await.ok()?;
            org.status?.suspended_cron_jobs.is_empty().then_some(())
        },
    )
    .await;
    assert!(races.conflicts("cronjobs") >= suspend_conflicts + jobs.len() as u32);
    assert_eq!(
        op.cronjob_hold("paused-by-person").await,
        (true, None),
        "a person's pause stays"
    );
    assert_eq!(op.cronjob_hold("unrelated").await, (false, None));
    println!(
        "409 conflicts answered to the operator: {} on the token Secret, {} on CronJobs",
        races.conflicts("secrets"),
        races.conflicts("cronjobs")
    );
}

// ----- 4. Salesforce rate limits -----

/// Salesforce answers every token request with `REQUEST_LIMIT_EXCEEDED` while the access
/// token is dead.
///
/// Nothing lost means: the org is Unknown with reason RateLimited, never Expired (the
/// authorization is intact, and no backup is paused for it); the operator backs off (5 s,
/// 10 s ...) instead of spending the org's API limit; and the next retry after the limit
/// lifts makes it Valid without anyone asking.
#[tokio::test]
async fn rate_limits_are_honoured_with_backoff() {
    logs();
    let (op, _) = Operator::with_valid_org("ratelimit", false).await;
    let ctl = op.sim.control();
    ctl.inject_fault(Fault::new(FaultKind::RequestLimitExceeded).on(Endpoint::Token));
    ctl.expire_all_sessions();
    let token_calls = || ctl.call_counts().endpoint(Endpoint::Token);
    let before = token_calls();
    op.request_check("acme").await;
    let org = op
        .wait_state("acme", TokenState::Unknown, Some("RateLimited"))
        .await;
    let (status, _, message) = condition(&org, "TokenValid");
    assert_eq!(status, "Unknown");
    assert!(message.contains("REQUEST_LIMIT_EXCEEDED"), "{message}");

    // Record when each token request arrives for ~16 s.
    let watched = Instant::now();
    let mut arrivals = vec![Duration::ZERO];
    let mut seen = token_calls();
    assert_eq!(seen, before + 1);
    while watched.elapsed() < Duration::from_secs(16) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = token_calls();
        if now > seen {
            arrivals.extend(std::iter::repeat_n(
                watched.elapsed(),
                (now - seen) as usize,
            ));
            seen = now;
        }
        let org = op.orgs().get("acme").await.expect("org");
        assert_ne!(
            org.status.and_then(|s| s.state),
            Some(TokenState::Expired),
            "a rate limit never expires an org"
        );
    }
    println!("token requests while rate limited, seconds after the first: {arrivals:?}");
    // The schedule is 0, 5, 15 (then 35): at most three in the window, spaced by the backoff.
    assert!(
        (2..=3).contains(&arrivals.len()),
        "within the backoff schedule: {arrivals:?}"
    );
    for (i, pair) in arrivals.windows(2).enumerate() {
        let gap = pair[1] - pair[0];
        let floor = sforg_operator::reconcile::decide::backoff(i as u32 + 1);
        assert!(
            gap + Duration::from_millis(500) >= floor,
            "retry {} came after {gap:?}, before its backoff {floor:?}",
            i + 1
        );
    }
    // The limit lifts; the next scheduled retry (at most 20 s away) recovers on its own.
    ctl.clear_faults();
    let org = eventually(
        "the org to recover at its next retry",
        Duration::from_secs(40),
        || async {
            let org = op.orgs().get("acme").await.ok()?;
            (org.status.as_ref()?.state == Some(TokenState::Valid)).then_some(org)
        },
    )
    .await;
    assert_eq!(condition(&org, "Ready").1, "TokenValid");
    assert_never_expired(&op, "acme").await;
}

/// A Salesforce that hangs: the operator gives up after its timeout (3 s here) and asks again
/// only after the backoff step counted from the end of that attempt, never because its own
/// status write came back through the watch.
#[tokio::test]
async fn a_hanging_salesforce_is_asked_again_only_after_backoff() {
    logs();
    let (op, _) = Operator::with_valid_org("hang", false).await;
    let ctl = op.sim.control();
    ctl.inject_fault(Fault::new(FaultKind::delay(Duration::from_secs(30))).on(Endpoint::Userinfo));
    let userinfo_calls = || ctl.call_counts().endpoint(Endpoint::Userinfo);
    let before = userinfo_calls();
    op.request_check("acme").await;
    eventually("the first attempt", CONVERGE, || async {
        (userinfo_calls() > before).then_some(())
    })
    .await;
    let watched = Instant::now();
    let mut arrivals = vec![Duration::ZERO];
    let mut seen = userinfo_calls();
    while watched.elapsed() < Duration::from_secs(14) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = userinfo_calls();
        if now > seen {
            arrivals.extend(std::iter::repeat_n(
                watched.elapsed(),
                (now - seen) as usize,
            ));
            seen = now;
        }
    }
    println!("userinfo requests while Salesforce hangs, seconds after the first: {arrivals:?}");
    // Timeout 3 s, then backoff 5 s: the second attempt 8 s after the first, the third 21 s.
    assert_eq!(arrivals.len(), 2, "one retry in 14 s: {arrivals:?}");
    let floor = Duration::from_secs(3) + sforg_operator::reconcile::decide::backoff(1);
    assert!(
        arrivals[1] + Duration::from_millis(500) >= floor,
        "retried {:?} after the first attempt, before timeout + backoff {floor:?}",
        arrivals[1]
    );
    let org = op.orgs().get("acme").await.expect("org");
    assert_eq!(
        org.status.and_then(|s| s.state),
        Some(TokenState::Unknown),
        "a hang is an outage, never Expired"
    );
    ctl.clear_faults();
}

// ----- 5. two replicas race a refresh -----

const LEASE: &str = "sforg-faults-leader";

fn replica(op: &Operator, id: &str) -> Replica {
    let salesforce = HttpSalesforce::new(http_settings(&op.sim)).expect("http client");
    Replica::start(op, LEASE, id, salesforce)
}

async fn lease_holder(op: &Operator) -> Option<String> {
    Api::<Lease>::namespaced(op.client.clone(), &op.ns)
        .get(LEASE)
        .await
        .ok()?
        .spec?
        .holder_identity
        .filter(|h| !h.is_empty())
}

/// Two replicas see the same dead access token at the same moment, with rotation on, and the
/// leader hands over in the middle of a refresh.
///
/// Nothing lost means: each round makes exactly one refresh at Salesforce, exactly one refresh
/// token survives there and it is the one in the Secret, and the org is never Expired.
///
/// Leader election is what makes this hold. Without it both replicas would refresh the same
/// refresh token: Salesforce rotates it for the first, and takes the second presentation for
/// a replay of a rotated-out token, revoking the whole grant (both new tokens die, the org is
/// Expired and its backups are paused until a person logs in). The end of this test shows
/// that revocation happening at Salesforce when one token is refreshed twice.
#[tokio::test]
async fn two_replicas_racing_a_refresh_keep_one_token() {
    logs();
    let op = Operator::prepare("replicas").await;
    let ctl = op.sim.control();
    ctl.set_rotation(&op.demo.app.client_id, true)
        .expect("rotation");
    let mut replicas: HashMap<String, Replica> = ["replica-a", "replica-b"]
        .into_iter()
        .map(|id| (id.to_owned(), replica(&op, id)))
        .collect();
    op.create_web_org("acme").await;
    let seeded = op.seed_tokens("acme-token", "acme").await;
    op.wait_state("acme", TokenState::Valid, None).await;
    let mut current = seeded.refresh_token.clone().expect("refresh token");
    let initial = refresh_calls(&op);
    for round in 0..3 {
        let leader = eventually("a leader", CONVERGE, || lease_holder(&op)).await;
        let before = refresh_calls(&op);
        // Slow refreshes, so that a handover can fall in the middle of one.
        ctl.inject_fault(
            Fault::new(FaultKind::delay(Duration::from_secs(2)))
                .on(Endpoint::Token)
                .times(1),
        );
        op.expire_sessions_and_check("acme").await;
        if round == 1 {
            eventually(
                "the leader's refresh to reach Salesforce",
                CONVERGE,
                || async { (refresh_calls(&op) > before).then_some(()) },
            )
            .await;
            let mut stopped = replicas.remove(&leader).expect("the leader");
            stopped.stop().await;
            let taken = eventually("the standby to take over", CONVERGE, || async {
                lease_holder(&op).await.filter(|h| *h != leader)
            })
            .await;
            println!("round {round}: {leader} handed over to {taken} during a refresh");
            replicas.insert(leader.clone(), replica(&op, &leader));
        }
        let rotated = eventually("the rotated token in the Secret", CONVERGE, || async {
            let rt = op.secret_data("acme-token").await.remove("refresh_token")?;
            (rt != current).then_some(rt)
        })
        .await;
        op.wait_state("acme", TokenState::Valid, Some("TokenValid"))
            .await;
        assert_eq!(refresh_calls(&op), before + 1, "round {round}: one refresh");
        assert_eq!(
            valid_refresh_tokens(&op),
            vec![rotated.clone()],
            "round {round}: exactly the stored token survives"
        );
        current = rotated;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(refresh_calls(&op), initial + 3, "no late refresh");
    assert_never_expired(&op, "acme").await;
    assert_eq!(
        op.orgs()
            .get("acme")
            .await
            .expect("org")
            .status
            .and_then(|s| s.state),
        Some(TokenState::Valid)
    );
    drop(replicas);

    // What leader election prevents: one refresh token presented twice.
    let other = ctl
        .mint_tokens(&op.demo.app.client_id, &op.demo.user.username)
        .expect("mint");
    let token = SecretString::new(other.refresh_token.clone().expect("refresh token"));
    let app = AppCredentials {
        client_id: op.demo.app.client_id.clone(),
        client_secret: op.demo.app.client_secret.clone().map(SecretString::new),
    };
    let sf = HttpSalesforce::new(http_settings(&op.sim)).expect("http client");
    let first = sf
        .refresh("https://login.salesforce.com", &app, &token)
        .await
        .expect("the first replica's refresh");
    let second = sf
        .refresh("https://login.salesforce.com", &app, &token)
        .await;
    assert!(
        matches!(
            second,
            Err(SfError::AuthorizationLost {
                reason: LostReason::RefreshTokenRevoked,
                ..
            })
        ),
        "{second:?}"
    );
    let survivors = valid_refresh_tokens(&op);
    let first_rt = first.refresh_token.map(|t| t.expose().to_owned());
    assert!(
        first_rt.is_some_and(|rt| !survivors.contains(&rt)),
        "the replay revoked the grant, including the first replica's new token"
    );
    assert_eq!(
        survivors,
        vec![current],
        "the elected org's grant is unaffected"
    );
}

// ----- 6. the operator's clock is off -----

/// The operator's clock is `offset` away from Salesforce's (and the real time).
///
/// Nothing lost means: no org is reported expired because of the skew alone; a web server
/// org validates and refreshes (keeping exactly one refresh token with rotation); a JWT
/// bearer org still gets tokens (a clock behind Salesforce's makes the first assertion look
/// expired, and the operator dates a second one by Salesforce's clock); backoff after an
/// outage still retries on time; re-auth links expire a day after issue by the operator's
/// clock and are not rewritten on every reconcile.
async fn skewed_clock_loses_nothing(prefix: &str, offset: SignedDuration) {
    let mut op = Operator::start_with_reauth(prefix).await;
    op.kill_controller().await;
    op.clock = Clock::skewed(offset);
    op.start_controller();
    let ctl = op.sim.control();

    // Web server flow with rotation.
    op.create_web_org("web").await;
    let seeded = op.seed_tokens("web-token", "web").await;
    op.wait_state("web", TokenState::Valid, None).await;
    let before = refresh_calls(&op);
    op.expire_sessions_and_check("web").await;
    let rotated = eventually("a refresh", CONVERGE, || async {
        let rt = op.secret_data("web-token").await.remove("refresh_token")?;
        (Some(&rt) != seeded.refresh_token.as_ref()).then_some(rt)
    })
    .await;
    op.wait_state("web", TokenState::Valid, Some("TokenValid"))
        .await;
    assert_eq!(refresh_calls(&op), before + 1);
    assert_eq!(valid_refresh_tokens(&op), vec![rotated]);

    // JWT bearer flow.
    op.create_jwt_key("jwt-key").await;
    let jwt_calls = || ctl.call_counts().grant_type(GRANT_JWT_BEARER);
    let jwt_before = jwt_calls();
    op.create_org(
        "jwt",
        json!({
            "loginUrl": "https://login.salesforce.com",
            "auth": {"jwtBearer": {"clientId": op.demo.app.client_id,
                "username": op.demo.user.username,
                "privateKeyRef": {"name": "jwt-key", "key": "tls.key"}}},
            "tokenSecretRef": {"name": "jwt-token"},
        }),
    )
    .await;
    op.wait_state("jwt", TokenState::Valid, Some("TokenValid"))
        .await;
    let first_mint = op.secret_data("jwt-token").await.remove("access_token");
    op.expire_sessions_and_check("jwt").await;
    eventually("a second mint", CONVERGE, || async {
        let at = op.secret_data("jwt-token").await.remove("access_token");
        (at != first_mint).then_some(())
    })
    .await;
    op.wait_state("jwt", TokenState::Valid, Some("TokenValid"))
        .await;
    println!(
        "clock {offset:?}: {} JWT assertions for 2 mints",
        jwt_calls() - jwt_before
    );

    // Backoff after an outage retries on schedule (5 s) without anyone asking.
    ctl.inject_fault(
        Fault::new(FaultKind::ServerError)
            .on(Endpoint::Userinfo)
            .times(1),
    );
    op.request_check("web").await;
    op.wait_state("web", TokenState::Unknown, Some("SalesforceUnavailable"))
        .await;
    let failed = Instant::now();
    eventually(
        "the retry after backoff",
        Duration::from_secs(20),
        || async {
            let org = op.orgs().get("web").await.ok()?;
            (org.status?.state == Some(TokenState::Valid)).then_some(())
        },
    )
    .await;
    let retried = failed.elapsed();
    assert!(
        retried >= Duration::from_secs(3) && retried <= Duration::from_secs(12),
        "retried after {retried:?}"
    );

    // A re-auth link, once a person is needed, lasts a day by the operator's clock.
    ctl.revoke_user_tokens(&op.demo.user.username, None)
        .expect("revoke");
    op.request_check("web").await;
    op.wait_state("web", TokenState::Expired, Some("RefreshTokenRevoked"))
        .await;
    let org = eventually("a re-auth link", CONVERGE, || async {
        let org = op.orgs().get("web").await.ok()?;
        org.status.as_ref()?.reauth.is_some().then_some(org)
    })
    .await;
    let status = org.status.clone().unwrap_or_default();
    let expires = status.reauth.as_ref().expect("link").expires_at.0;
    let want = Timestamp::now() + offset + SignedDuration::from_hours(24);
    let off = expires.duration_since(want).abs();
    assert!(
        off < SignedDuration::from_mins(1),
        "link expiry off by {off:?}"
    );
    op.request_check("web").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    op.request_check("web").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let again = op.orgs().get("web").await.expect("org").status;
    assert_eq!(
        again.as_ref().and_then(|s| s.reauth.clone()),
        status.reauth,
        "link kept"
    );
    for name in ["jwt"] {
        assert_never_expired(&op, name).await;
    }
    // The web org's only TokenExpired is the real revocation.
    let expired = op
        .events_for("web")
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("TokenExpired"))
        .count();
    assert_eq!(expired, 1);
}

#[tokio::test]
async fn clock_ten_minutes_ahead_loses_nothing() {
    logs();
    skewed_clock_loses_nothing("skew-ahead", SignedDuration::from_mins(10)).await;
}

#[tokio::test]
async fn clock_ten_minutes_behind_loses_nothing() {
    logs();
    skewed_clock_loses_nothing("skew-behind", SignedDuration::from_mins(-10)).await;
}

/// A token endpoint whose `Date` is an hour ahead (a hostile endpoint, or a node clock that
/// needs fixing): the operator signs no assertion with that date; the org is Unknown with
/// ClockSkew, never Expired, and its CronJob is not paused.
#[tokio::test]
async fn a_date_beyond_ten_minutes_is_never_signed() {
    logs();
    let op = Operator::start("skew-far").await;
    let ctl = op.sim.control();
    op.create_jwt_key("jwt-key").await;
    ctl.inject_fault(Fault::new(FaultKind::SkewedClock { seconds: 3600 }).on(Endpoint::Token));
    op.create_cronjob("backup", &[("backup-of", "jwt")], false)
        .await;
    op.create_org(
        "jwt",
        json!({
            "loginUrl": "https://login.salesforce.com",
            "auth": {"jwtBearer": {"clientId": op.demo.app.client_id,
                "username": op.demo.user.username,
                "privateKeyRef": {"name": "jwt-key", "key": "tls.key"}}},
            "tokenSecretRef": {"name": "jwt-token"},
            "dependents": {"cronJobSelector": {"matchLabels": {"backup-of": "jwt"}}},
        }),
    )
    .await;
    op.wait_state("jwt", TokenState::Unknown, Some("ClockSkew"))
        .await;
    let org = op.orgs().get("jwt").await.expect("org");
    let message = org
        .status
        .and_then(|s| s.conditions.into_iter().find(|c| c.reason == "ClockSkew"))
        .map(|c| c.message)
        .unwrap_or_default();
    // About an hour: the Date header counts whole seconds.
    let ahead: i64 = message
        .split(" s ahead")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no skew in {message:?}"));
    assert!((3599..=3605).contains(&ahead), "{message}");
    // An assertion re-signed with the endpoint's date would have been accepted (and stored).
    assert!(ctl.call_counts().grant_type(GRANT_JWT_BEARER) >= 1);
    let stored = op.secrets().get_opt("jwt-token").await.expect("get secret");
    assert!(
        stored
            .and_then(|s| s.data)
            .is_none_or(|d| !d.contains_key("access_token")),
        "no token was obtained"
    );
    assert_eq!(op.cronjob_hold("backup").await, (false, None));
    assert_never_expired(&op, "jwt").await;
}

// ----- 7. one org, 2,000 CronJobs -----

const MANY: usize = 2000;

/// How many of the namespace's CronJobs labelled `backup-of=acme` are suspended.
async fn suspended_count(op: &Operator) -> usize {
    let list = op
        .cronjobs()
        .list(&ListParams::default().labels("backup-of=acme"))
        .await
        .expect("list cronjobs");
    list.items
        .iter()
        .filter(|c| c.spec.as_ref().and_then(|s| s.suspend).unwrap_or(false))
        .count()
}

/// A selector matching 2,000 CronJobs.
///
/// Nothing lost means: expiry suspends every one of them and recovery resumes every one (none
/// left paused, none forgotten in status), within a generous deadline.
#[tokio::test]
async fn a_selector_matching_two_thousand_cronjobs() {
    logs();
    let op = Operator::start("many").await;
    let created = Instant::now();
    let op_ref = &op;
    futures::stream::iter(0..MANY)
        .map(|i| async move {
            op_ref
                .create_cronjob(&format!("backup-{i:04}"), &[("backup-of", "acme")], false)
                .await;
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    println!("created {MANY} CronJobs in {:?}", created.elapsed());
    org_with_dependents(&op, "acme").await;

    op.sim
        .control()
        .revoke_user_tokens(&op.demo.user.username, None)
        .expect("revoke");
    let revoked = Instant::now();
    op.request_check("acme").await;
    eventually(
        &format!("all {MANY} CronJobs suspended"),
        Duration::from_secs(300),
        || async {
            tokio::time::sleep(Duration::from_millis(400)).await;
            (suspended_count(&op).await == MANY).then_some(())
        },
    )
    .await;
    let suspend_took = revoked.elapsed();
    let org = eventually(
        "status to list them all",
        Duration::from_secs(60),
        || async {
            let org = op.orgs().get("acme").await.ok()?;
            (org.status.as_ref()?.suspended_cron_jobs.len() == MANY).then_some(org)
        },
    )
    .await;
    // People read a bounded list (Event notes may not exceed 1 KiB); status has them all.
    let (_, _, message) = condition(&org, "DependentsSuspended");
    assert!(
        message.len() < 1024 && message.ends_with(" more"),
        "{message}"
    );
    assert_eq!(org.status.and_then(|s| s.state), Some(TokenState::Expired));
    let events = op.events_for("acme").await;
    let note = events
        .iter()
        .find(|e| e.reason.as_deref() == Some("CronJobsSuspended"))
        .and_then(|e| e.note.clone())
        .expect("a CronJobsSuspended event");
    assert!(note.len() <= 1024 && note.ends_with(" more"), "{note}");

    let reauthorized = Instant::now();
    op.store_new_tokens("acme").await;
    eventually(
        &format!("all {MANY} CronJobs resumed"),
        Duration::from_secs(300),
        || async {
            tokio::time::sleep(Duration::from_millis(400)).await;
            (suspended_count(&op).await == 0).then_some(())
        },
    )
    .await;
    let resume_took = reauthorized.elapsed();
    eventually(
        "status to hold nothing",
        Duration::from_secs(60),
        || async {
            let org = op.orgs().get("acme").await.ok()?;
            let status = org.status?;
            (status.state == Some(TokenState::Valid) && status.suspended_cron_jobs.is_empty())
                .then_some(())
        },
    )
    .await;
    let list = op
        .cronjobs()
        .list(&ListParams::default().labels("backup-of=acme"))
        .await
        .expect("list");
    assert!(
        list.items
            .iter()
            .all(|c| !c.annotations().contains_key(HOLDERS_ANNOTATION)),
        "every hold released"
    );
    println!(
        "{MANY} CronJobs: all suspended {suspend_took:?} after the check was requested, all resumed {resume_took:?} after the re-authorization"
    );
}
