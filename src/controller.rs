//! Wiring the reconciler into a kube-runtime controller: what is watched and how errors
//! are retried.
//!
//! Watched: SalesforceOrgs, and only the Secrets labelled as managed by this operator (mapped
//! to their org by label), so the cache holds nothing else of the cluster's Secrets.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::events::Recorder;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::utils::{Backoff, ResetTimerBackoff};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, ResourceExt};
use tracing::{debug, info, warn};

use crate::crd::SalesforceOrg;
use crate::metrics::{Metrics, OrgSource};
use crate::namespaces;
use crate::reconcile::{self, Context, Settings};
use crate::salesforce::Salesforce;
use crate::telemetry::Health;
use crate::token_secret::{MANAGED_BY, MANAGED_BY_LABEL, ORG_LABEL};

/// Orgs reconciled at the same time. Each reconcile makes a few API calls and at most one
/// Salesforce call, so this bounds both.
pub const RECONCILE_CONCURRENCY: u16 = 32;

/// The longest wait between attempts to restore a broken watch. kube-runtime's default
/// (30 s, doubled by jitter) keeps the caches stale for up to a minute after an API server
/// outage, and a reconcile acting on a stale org skips status and CronJob writes it believes
/// done; a few watches retrying every few seconds cost the API server nothing.
const WATCH_RETRY_MAX: Duration = Duration::from_secs(5);

/// Backoff of the controller's watches: 0.8 s, doubling up to [`WATCH_RETRY_MAX`].
#[derive(Clone, Debug, Default)]
struct WatchBackoff {
    step: u32,
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let wait =
            crate::backoff::exponential(Duration::from_millis(800), self.step, WATCH_RETRY_MAX);
        self.step = self.step.saturating_add(1);
        Some(wait)
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        *self = Self::default();
    }
}

/// [`WatchBackoff`], starting over after two quiet minutes (client-go's shape).
fn watch_backoff() -> ResetTimerBackoff<WatchBackoff> {
    ResetTimerBackoff::new(WatchBackoff::default(), Duration::from_secs(120))
}

/// Where the controller looks.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// Only these namespaces, each watched on its own (so a Role in each is enough); all
    /// namespaces when empty.
    pub namespaces: Vec<String>,
}

/// One API per watched namespace, or one for the whole cluster.
fn apis<K>(client: &Client, scope: &Scope) -> Vec<Api<K>>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    if scope.namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        scope
            .namespaces
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect()
    }
}

/// Optional observers of a controller run.
#[derive(Clone, Debug, Default)]
pub struct Hooks {
    /// Records reconciles and reports per-org series from the controller's cache.
    pub metrics: Option<Arc<Metrics>>,
    /// Marked synced once the SalesforceOrg cache has its first full list, unsynced on stop.
    pub health: Option<Health>,
}

/// Runs the controller until `shutdown` resolves.
pub async fn run<S: Salesforce>(
    client: Client,
    salesforce: S,
    settings: Settings,
    scope: Scope,
    instance: String,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    run_with(
        client,
        salesforce,
        settings,
        scope,
        instance,
        shutdown,
        Hooks::default(),
    )
    .await;
}

/// Unmarks readiness when the controller stops, however it stops.
struct Unsync(Option<Health>);

impl Drop for Unsync {
    fn drop(&mut self) {
        if let Some(health) = &self.0 {
            health.set_synced(false);
        }
    }
}

/// Stops a task when the controller stops, however it stops.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// [`run`] with metrics and readiness.
pub async fn run_with<S: Salesforce>(
    client: Client,
    salesforce: S,
    settings: Settings,
    scope: Scope,
    instance: String,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    hooks: Hooks,
) {
    let reporter = Reporter {
        controller: "sforg-operator".into(),
        instance: Some(instance),
    };
    let recorder = Recorder::new(client.clone(), reporter);
    // The delivery worker runs while this controller runs (while leading), beside it.
    let _notify = settings.notify.clone().map(|notifier| {
        let worker = crate::notify::deliver::Worker {
            notifier,
            client: client.clone(),
            recorder: recorder.clone(),
            metrics: hooks.metrics.clone(),
        };
        AbortOnDrop(tokio::spawn(worker.run()))
    });
    let ctx = Arc::new(Context::new(client.clone(), salesforce, settings, recorder));
    let (store, writer) = reflector::store();
    let org_events = org_events(&client, &scope, store.clone(), writer);
    let secret_events = secret_events(&client, &scope);
    // Bounded concurrency: a cold start with thousands of orgs must not flood the API server
    // (and starve the leader lease renewals) with thousands of requests at once.
    let controller = Controller::for_stream(org_events, store.clone())
        .with_config(
            kube::runtime::controller::Config::default().concurrency(RECONCILE_CONCURRENCY),
        )
        // The controller backs off the merged watch streams once more after any error; with
        // its default a restarted API server leaves the caches stale for up to a minute.
        .trigger_backoff(watch_backoff())
        .watches_stream(secret_events, |secret: PartialObjectMeta<Secret>| {
            let ns = secret.namespace()?;
            let org = secret.labels().get(ORG_LABEL)?.clone();
            Some(ObjectRef::<SalesforceOrg>::new(&org).within(&ns))
        })
        .graceful_shutdown_on(shutdown);
    let _unsync = Unsync(hooks.health.clone());
    let _per_org = hooks.metrics.as_ref().map(|metrics| {
        let ctx = ctx.clone();
        metrics.watch_orgs(OrgSource {
            store: store.clone(),
            last_checks: Box::new(move || ctx.last_checks()),
        })
    });
    let metrics = hooks.metrics.clone();
    let reconciler = move |org: Arc<SalesforceOrg>, ctx: Arc<Context<S>>| {
        let metrics = metrics.clone();
        async move {
            let started = Instant::now();
            let result = reconcile::reconcile(org, ctx).await;
            if let Some(m) = &metrics {
                m.reconciled(
                    started.elapsed(),
                    result.as_ref().err().map(reconcile::Error::metric_label),
                );
            }
            result
        }
    };
    let running = controller
        .run(reconciler, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => debug!(org = %obj.name, namespace = ?obj.namespace, "reconciled"),
                Err(e) => warn!(error = %e, "reconcile failed"),
            }
        });
    let mut running = pin!(running);
    let synced = async {
        if store.wait_until_ready().await.is_ok() {
            info!("caches synced");
            if let Some(health) = &hooks.health {
                health.set_synced(true);
            }
        }
    };
    tokio::select! {
        () = &mut running => return,
        () = synced => {}
    }
    running.await;
}

/// The orgs of every watched namespace, merged into one cache. The cache drops managedFields
/// (nothing reads them; they are most of an object's size).
fn org_events(
    client: &Client,
    scope: &Scope,
    store: reflector::Store<SalesforceOrg>,
    writer: reflector::store::Writer<SalesforceOrg>,
) -> impl futures::Stream<Item = Result<SalesforceOrg, watcher::Error>> + Send + 'static {
    let org_watches: Vec<_> = apis::<SalesforceOrg>(client, scope)
        .into_iter()
        .zip(
            scope
                .namespaces
                .iter()
                .cloned()
                .chain(std::iter::repeat_with(String::new)),
        )
        .map(|(orgs, ns)| {
            let watch = watcher(orgs, watcher::Config::default())
                .backoff(watch_backoff())
                .boxed();
            (ns, watch)
        })
        .collect();
    namespaces::merge(org_watches, store)
        .modify(|org| org.managed_fields_mut().clear())
        .reflect(writer)
        .applied_objects()
}

/// The operator's token Secrets, as metadata only: their events just trigger a reconcile,
/// which reads the one Secret it needs.
fn secret_events(
    client: &Client,
    scope: &Scope,
) -> impl futures::Stream<Item = Result<PartialObjectMeta<Secret>, watcher::Error>> + Send + 'static
{
    let managed = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));
    futures::stream::select_all(
        apis::<PartialObjectMeta<Secret>>(client, scope)
            .into_iter()
            .map(move |secrets| {
                watcher(secrets, managed.clone())
                    .backoff(watch_backoff())
                    .touched_objects()
                    .boxed()
            }),
    )
}

fn error_policy<S: Salesforce>(
    _org: Arc<SalesforceOrg>,
    error: &reconcile::Error,
    _ctx: Arc<Context<S>>,
) -> Action {
    if error.is_stale_read() {
        // The cache had not yet seen our own last write (a finalizer added a moment ago):
        // nothing is wrong, look again as soon as the watch catches up.
        debug!(error = %error, "stale cache, retrying shortly");
        return Action::requeue(Duration::from_millis(500));
    }
    warn!(error = %error, kind = error.metric_label(), "will retry");
    Action::requeue(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watches_retry_within_seconds() {
        let mut backoff = WatchBackoff::default();
        let waits: Vec<u64> = backoff
            .by_ref()
            .take(6)
            .map(|d| d.as_millis() as u64)
            .collect();
        assert_eq!(waits, [800, 1600, 3200, 5000, 5000, 5000]);
        backoff.reset();
        assert_eq!(backoff.next(), Some(Duration::from_millis(800)));
    }
}
