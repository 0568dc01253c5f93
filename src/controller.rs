//! Wiring the reconciler into a kube-runtime controller: what is watched and how errors
//! are retried.
//!
//! Watched: SalesforceOrgs, and only the Secrets labelled as managed by this operator (mapped
//! to their org by label), so the cache holds nothing else of the cluster's Secrets; and the
//! metadata of CronJobs, without a cache, mapped to the orgs that hold CronJobs in their
//! namespace (a CronJob created or relabelled into a held selector is suspended at once).
//! When each org is looked at again without a change is kept by [`Requeues`], which also
//! hands a (re-)list's orgs to the controller a few at a time.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::events::Recorder;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::CronJob;
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
use crate::requeue::Requeues;
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

/// The controller's pause after an error of its merged watches: short and constant, since
/// the error's own watch backs off with [`watch_backoff`] before it is polled again.
#[derive(Clone, Copy, Debug, Default)]
struct MergedBackoff;

impl Iterator for MergedBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(Duration::from_millis(50))
    }
}

impl Backoff for MergedBackoff {
    fn reset(&mut self) {}
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
    let requeues = Arc::new(Requeues::new(2 * usize::from(RECONCILE_CONCURRENCY)));
    let (store, writer) = reflector::store();
    let org_events = org_events(
        &client,
        &scope,
        store.clone(),
        writer,
        gone(&ctx, &requeues, &store),
        requeues.clone(),
    );
    let controller = controller(
        &client,
        &scope,
        (org_events, store.clone()),
        ctx.holding.clone(),
        &requeues,
    )
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
    let reconciler =
        move |org, ctx| reconcile_and_schedule(org, ctx, metrics.clone(), requeues.clone());
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

/// The controller over the org stream and its cache: triggered by the operator's token
/// Secrets, by CronJob changes that concern a holding org, and by the requeue schedule.
fn controller(
    client: &Client,
    scope: &Scope,
    (org_events, store): (
        impl futures::Stream<Item = Result<SalesforceOrg, watcher::Error>> + Send + 'static,
        reflector::Store<SalesforceOrg>,
    ),
    holding: Arc<crate::dependents::Holding>,
    requeues: &Arc<Requeues>,
) -> Controller<SalesforceOrg> {
    // Bounded concurrency: a cold start with thousands of orgs must not flood the API server
    // (and starve the leader lease renewals) with thousands of requests at once.
    Controller::for_stream(org_events, store)
        .with_config(
            kube::runtime::controller::Config::default().concurrency(RECONCILE_CONCURRENCY),
        )
        // The controller backs off the merged watch streams once more after any error. Each
        // watch already backs off on its own, and one shared backoff makes every watch wait
        // for the errors of the others (after an API server restart each watch fails once
        // with 410 Gone, at its own time): only a short pause here.
        .trigger_backoff(MergedBackoff)
        .watches_stream(
            secret_events(client, scope),
            |secret: PartialObjectMeta<Secret>| {
                let ns = secret.namespace()?;
                let org = secret.labels().get(ORG_LABEL)?.clone();
                Some(ObjectRef::<SalesforceOrg>::new(&org).within(&ns))
            },
        )
        .watches_stream(
            cronjob_events(client, scope),
            move |cj: PartialObjectMeta<CronJob>| {
                let ns = cj.namespace().unwrap_or_default();
                holding
                    .concerned(&ns, &cj.name_any(), cj.labels(), cj.annotations())
                    .into_iter()
                    .map(move |org| ObjectRef::<SalesforceOrg>::new(&org).within(&ns))
                    .collect::<Vec<_>>()
            },
        )
        .reconcile_on(
            requeues
                .clone()
                .due()
                .map(|(ns, name)| ObjectRef::<SalesforceOrg>::new(&name).within(&ns)),
        )
}

/// One reconcile, counted in the metrics, with its next look put on the requeue schedule
/// (errors keep the controller's own retry, [`error_policy`]).
async fn reconcile_and_schedule<S: Salesforce>(
    org: Arc<SalesforceOrg>,
    ctx: Arc<Context<S>>,
    metrics: Option<Arc<Metrics>>,
    requeues: Arc<Requeues>,
) -> Result<Action, reconcile::Error> {
    let started = Instant::now();
    let (ns, name) = (org.namespace().unwrap_or_default(), org.name_any());
    let result = reconcile::reconcile(org, ctx).await;
    if let Some(m) = &metrics {
        m.reconciled(
            started.elapsed(),
            result.as_ref().err().map(reconcile::Error::metric_label),
        );
    }
    match &result {
        Ok(Some(after)) => requeues.schedule(&ns, &name, *after),
        Ok(None) => requeues.cancel(&ns, &name),
        Err(_) => {}
    }
    requeues.done(&ns, &name);
    result.map(|_| Action::await_change())
}

/// What the controller does when orgs are gone: an org without the finalizer (one that never
/// held a CronJob) is deleted at once, with no reconcile to see it go, so the process forgets
/// it when the watch reports the deletion, or, for deletions missed while the watch was down,
/// when a re-list completes.
fn gone<S: Salesforce>(
    ctx: &Arc<Context<S>>,
    requeues: &Arc<Requeues>,
    store: &reflector::Store<SalesforceOrg>,
) -> impl Fn(&watcher::Event<SalesforceOrg>) + Send + 'static {
    let ctx = ctx.clone();
    let requeues = requeues.clone();
    let store = store.clone();
    move |event| match event {
        watcher::Event::Delete(org) => {
            let (ns, name) = (org.namespace().unwrap_or_default(), org.name_any());
            ctx.holding.unmark(&ns, &name);
            requeues.cancel(&ns, &name);
            ctx.forget(&org.uid().unwrap_or_default());
        }
        watcher::Event::InitDone => {
            let orgs = store.state();
            ctx.forget_all_but(orgs.iter().filter_map(|o| o.metadata.uid.as_deref()));
            requeues.retain(orgs.iter().map(|o| {
                (
                    o.metadata.namespace.as_deref().unwrap_or_default(),
                    o.metadata.name.as_deref().unwrap_or_default(),
                )
            }));
        }
        _ => {}
    }
}

/// The orgs of every watched namespace, merged into one cache, trimmed by [`trim_cached`];
/// every event, once in the cache, goes to `on_event`. Changes trigger a reconcile at once;
/// the orgs of a (re-)list are put on the `requeues` schedule, due now, which hands them to
/// the controller a few at a time.
fn org_events(
    client: &Client,
    scope: &Scope,
    store: reflector::Store<SalesforceOrg>,
    writer: reflector::store::Writer<SalesforceOrg>,
    on_event: impl Fn(&watcher::Event<SalesforceOrg>) + Send + 'static,
    requeues: Arc<Requeues>,
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
    let mut writer = writer;
    let cache = store.clone();
    namespaces::merge(org_watches, store)
        .modify(trim_cached)
        .map_ok(move |event| {
            // Judged against the cached version before the cache takes the new one.
            let echo = match &event {
                watcher::Event::Apply(org) => cache
                    .get(&ObjectRef::from_obj(org))
                    .is_some_and(|cached| only_status_changed(&cached, org)),
                _ => false,
            };
            writer.apply_watcher_event(&event);
            on_event(&event);
            (event, echo)
        })
        .try_filter_map(move |(event, echo)| {
            futures::future::ready(Ok(match event {
                watcher::Event::Apply(org) if !echo => Some(org),
                watcher::Event::InitApply(org) => {
                    let ns = org.namespace().unwrap_or_default();
                    requeues.schedule(&ns, &org.name_any(), Duration::ZERO);
                    None
                }
                _ => None,
            }))
        })
}

/// Whether `new` differs from `cached` only in its status (and resourceVersion): the echo of
/// a status write (the reconcile's own, or the delivery worker marking a notification sent).
/// Such a change triggers no reconcile: the status is what a reconcile writes, not what it
/// acts on, and the next look at the org is already scheduled. The cache still takes it.
fn only_status_changed(cached: &SalesforceOrg, new: &SalesforceOrg) -> bool {
    let (a, b) = (&cached.metadata, &new.metadata);
    a.uid == b.uid
        && a.generation == b.generation
        && a.annotations == b.annotations
        && a.finalizers == b.finalizers
        && a.deletion_timestamp == b.deletion_timestamp
}

/// Drops from a cached org what neither the reconciler nor the metrics read: managedFields,
/// labels, and every annotation but the operator's own (`orgtokens.dev/...`: the check request
/// and the callback's record). Client-side `kubectl apply` stores the whole object again in
/// `kubectl.kubernetes.io/last-applied-configuration` and GitOps tools add their own tracking
/// annotations and labels: kept, they would double each cached org.
pub fn trim_cached(org: &mut SalesforceOrg) {
    let meta = &mut org.metadata;
    meta.managed_fields = None;
    meta.labels = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|key, _| key.starts_with(OWN_ANNOTATIONS));
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
    // Lists read from JSON keep the spare room they grew into (eight conditions' worth for five).
    if let Some(status) = org.status.as_mut() {
        status.conditions.shrink_to_fit();
        crate::conditions::share_messages(&mut status.conditions);
        status.notifications.shrink_to_fit();
    }
}

/// The prefix of the annotations the operator reads on an org.
const OWN_ANNOTATIONS: &str = "orgtokens.dev/";

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

/// The CronJobs of every watched namespace, as metadata only (name, labels and the holders
/// annotation are all the matching needs) and without a cache: each event is matched against
/// the orgs that hold CronJobs in its namespace ([`crate::dependents::Holding`]) and dropped,
/// so memory does not grow with the number of CronJobs. A re-list after a broken watch
/// replays every CronJob, so a relabel made while the watch was down is not missed.
fn cronjob_events(
    client: &Client,
    scope: &Scope,
) -> impl futures::Stream<Item = Result<PartialObjectMeta<CronJob>, watcher::Error>> + Send + 'static
{
    futures::stream::select_all(
        apis::<PartialObjectMeta<CronJob>>(client, scope)
            .into_iter()
            .map(|cronjobs| {
                watcher(cronjobs, watcher::Config::default())
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
    fn the_cache_keeps_only_what_reconcile_reads() {
        let mut org: SalesforceOrg = serde_json::from_value(serde_json::json!({
            "apiVersion": "orgtokens.dev/v1alpha1", "kind": "SalesforceOrg",
            "metadata": {"name": "acme", "namespace": "backups", "uid": "u1", "generation": 3,
                "finalizers": [crate::reconcile::FINALIZER],
                "labels": {"argocd.argoproj.io/instance": "backups"},
                "annotations": {
                    "kubectl.kubernetes.io/last-applied-configuration": "{\"big\": true}",
                    "argocd.argoproj.io/tracking-id": "backups:orgtokens.dev/SalesforceOrg:backups/acme",
                    crate::reconcile::CHECK_ANNOTATION: "now",
                    crate::reauth_record::REAUTH_ERROR_ANNOTATION: "{}"},
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}]},
            "spec": {"loginUrl": "https://login.salesforce.com",
                "auth": {"jwtBearer": {"clientId": "c", "username": "u@x", "privateKeyRef": {"name": "k", "key": "tls.key"}}},
                "tokenSecretRef": {"name": "t"}}
        }))
        .expect("org");
        trim_cached(&mut org);
        let annotations: Vec<&str> = org.annotations().keys().map(String::as_str).collect();
        assert_eq!(
            annotations,
            [
                crate::reconcile::CHECK_ANNOTATION,
                crate::reauth_record::REAUTH_ERROR_ANNOTATION
            ]
        );
        assert!(org.metadata.labels.is_none());
        assert!(org.metadata.managed_fields.is_none());
        assert_eq!(org.metadata.finalizers.as_deref().map(<[_]>::len), Some(1));
        assert_eq!(org.metadata.generation, Some(3));
        assert_eq!(org.uid().as_deref(), Some("u1"));
    }

    #[test]
    fn only_changes_beyond_the_status_trigger_a_reconcile() {
        let org: SalesforceOrg = serde_json::from_value(serde_json::json!({
            "apiVersion": "orgtokens.dev/v1alpha1", "kind": "SalesforceOrg",
            "metadata": {"name": "acme", "namespace": "backups", "uid": "u1", "generation": 3,
                "resourceVersion": "10"},
            "spec": {"loginUrl": "https://login.salesforce.com",
                "auth": {"jwtBearer": {"clientId": "c", "username": "u@x", "privateKeyRef": {"name": "k", "key": "tls.key"}}},
                "tokenSecretRef": {"name": "t"}}
        }))
        .expect("org");
        let changed = |f: &dyn Fn(&mut SalesforceOrg)| {
            let mut new = org.clone();
            new.metadata.resource_version = Some("11".into());
            f(&mut new);
            !only_status_changed(&org, &new)
        };
        assert!(!changed(&|o| {
            o.status = Some(crate::crd::SalesforceOrgStatus {
                observed_generation: Some(3),
                ..Default::default()
            })
        }));
        assert!(changed(&|o| o.metadata.generation = Some(4)));
        assert!(changed(&|o| {
            o.annotations_mut()
                .insert(crate::reconcile::CHECK_ANNOTATION.into(), "now".into());
        }));
        assert!(changed(&|o| o.metadata.finalizers = Some(vec!["x".into()])));
        assert!(changed(&|o| {
            o.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ))
        }));
        assert!(changed(&|o| o.metadata.uid = Some("u2".into())));
    }

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
