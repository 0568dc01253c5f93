//! Leader election on the real control plane: two replicas (in-process, each with its own
//! Salesforce client that counts calls) share one Lease; only the leader talks to Salesforce;
//! a crashed leader is replaced within the lease duration, a stopped one at once.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::eventually;
use common::operator::{CONVERGE, Operator, http_settings};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use sforg_operator::controller::{self, Hooks, Scope};
use sforg_operator::crd::TokenState;
use sforg_operator::leader::{Elector, LeaderError, LeaseConfig};
use sforg_operator::metrics::Metrics;
use sforg_operator::reconcile::Settings;
use sforg_operator::salesforce::{
    AppCredentials, HttpSalesforce, Identity, Salesforce, SfError, TokenResponse,
};
use sforg_operator::secret::SecretString;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const LEASE: &str = "sforg-test-leader";

/// A Salesforce client that counts every call, one per replica.
#[derive(Clone)]
struct Counting {
    inner: HttpSalesforce,
    calls: Arc<AtomicU64>,
}

impl Counting {
    fn count(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
    }
}

impl Salesforce for Counting {
    async fn userinfo(&self, url: &str, token: &SecretString) -> Result<Identity, SfError> {
        self.count();
        self.inner.userinfo(url, token).await
    }
    async fn refresh(
        &self,
        login: &str,
        app: &AppCredentials,
        rt: &SecretString,
    ) -> Result<TokenResponse, SfError> {
        self.count();
        self.inner.refresh(login, app, rt).await
    }
    async fn jwt_bearer(
        &self,
        login: &str,
        client_id: &str,
        user: &str,
        key: &SecretString,
    ) -> Result<TokenResponse, SfError> {
        self.count();
        self.inner.jwt_bearer(login, client_id, user, key).await
    }
    async fn client_credentials(
        &self,
        login: &str,
        app: &AppCredentials,
    ) -> Result<TokenResponse, SfError> {
        self.count();
        self.inner.client_credentials(login, app).await
    }
    async fn exchange_code(
        &self,
        login: &str,
        app: &AppCredentials,
        code: &SecretString,
        verifier: &SecretString,
        redirect: &str,
    ) -> Result<TokenResponse, SfError> {
        self.count();
        self.inner
            .exchange_code(login, app, code, verifier, redirect)
            .await
    }
    async fn revoke(&self, login: &str, token: &SecretString) -> Result<(), SfError> {
        self.count();
        self.inner.revoke(login, token).await
    }
}

/// One replica: leader election on, the controller scoped to the test namespace.
struct Replica {
    id: String,
    calls: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), LeaderError>>,
}

impl Replica {
    fn start(op: &Operator, id: &str) -> Self {
        let calls = Arc::new(AtomicU64::new(0));
        let salesforce = Counting {
            inner: HttpSalesforce::new(http_settings(&op.sim)).expect("http client"),
            calls: calls.clone(),
        };
        let metrics = Metrics::new();
        let config = LeaseConfig::new(LEASE, op.ns.clone(), id);
        let elector = Elector::new(op.client.clone(), config)
            .expect("elector")
            .with_metrics(metrics.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let client = op.client.clone();
        let ns = op.ns.clone();
        let hooks = Hooks {
            metrics: Some(metrics.clone()),
            health: None,
        };
        let instance = id.to_owned();
        let task = tokio::spawn(async move {
            elector
                .run(
                    async move {
                        let _ = stopped.await;
                    },
                    |stop| {
                        controller::run_with(
                            client.clone(),
                            salesforce.clone(),
                            Settings::default(),
                            Scope {
                                namespaces: vec![ns.clone()],
                            },
                            instance.clone(),
                            stop,
                            hooks.clone(),
                        )
                    },
                )
                .await
        });
        Replica {
            id: id.to_owned(),
            calls,
            metrics,
            stop: Some(stop),
            task,
        }
    }

    fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    fn leads(&self) -> bool {
        self.metrics
            .encode()
            .unwrap_or_default()
            .lines()
            .any(|l| l == "sforg_leader 1")
    }
}

async fn holder(op: &Operator) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(op.client.clone(), &op.ns);
    leases
        .get(LEASE)
        .await
        .ok()?
        .spec?
        .holder_identity
        .filter(|h| !h.is_empty())
}

/// Asks for checks until `replica` has made Salesforce calls.
async fn reconciles(op: &Operator, replica: &Replica) {
    let before = replica.calls();
    eventually(
        &format!("{} to call Salesforce", replica.id),
        CONVERGE,
        || async {
            op.request_check("acme").await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            (replica.calls() > before).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn only_the_leader_reconciles_and_a_standby_takes_over() {
    let op = Operator::prepare("leader").await;
    let a = Replica::start(&op, "replica-a");
    let b = Replica::start(&op, "replica-b");
    op.create_web_org("acme").await;
    op.seed_tokens("acme-token", "acme").await;
    op.wait_state("acme", TokenState::Valid, None).await;

    let first = eventually("a leader", CONVERGE, || async { holder(&op).await }).await;
    let (leader, standby) = if first == a.id { (a, b) } else { (b, a) };
    assert!(leader.leads() && !standby.leads());
    for _ in 0..3 {
        reconciles(&op, &leader).await;
    }
    assert!(leader.calls() > 0);
    assert_eq!(standby.calls(), 0, "the standby never talks to Salesforce");

    // Crash: the leader's task is aborted, the Lease is not released.
    let crashed = Instant::now();
    leader.task.abort();
    let _ = leader.task.await;
    eventually(
        "the standby to take over",
        Duration::from_secs(30),
        || async {
            (holder(&op).await.as_deref() == Some(standby.id.as_str()) && standby.leads())
                .then_some(())
        },
    )
    .await;
    let crash_takeover = crashed.elapsed();
    println!("take-over after a crash: {crash_takeover:?} (lease duration 15s)");
    assert!(
        crash_takeover <= Duration::from_secs(20),
        "{crash_takeover:?}"
    );
    reconciles(&op, &standby).await;

    // Graceful stop: the new leader releases the Lease and a fresh standby takes over at once.
    let c = Replica::start(&op, "replica-c");
    eventually("replica-c to stand by", CONVERGE, || async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        (!c.leads()).then_some(())
    })
    .await;
    // Let replica-c see the current holder before the handover.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut standby = standby;
    let stopped = Instant::now();
    let _ = standby.stop.take().map(|s| s.send(()));
    let result = (&mut standby.task).await.expect("join");
    assert!(result.is_ok(), "{result:?}");
    let released = stopped.elapsed();
    eventually("replica-c to take over", CONVERGE, || async {
        (holder(&op).await.as_deref() == Some("replica-c") && c.leads()).then_some(())
    })
    .await;
    let graceful_takeover = stopped.elapsed();
    println!(
        "take-over after a graceful stop: {graceful_takeover:?} (the old leader stopped and released in {released:?})"
    );
    assert!(
        graceful_takeover < Duration::from_secs(3),
        "{graceful_takeover:?}"
    );
    assert!(!standby.leads());
    let c_calls = c.calls();
    reconciles(&op, &c).await;
    assert!(c.calls() > c_calls);
    c.task.abort();
}
