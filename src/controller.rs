//! Wiring the reconciler into a kube-runtime controller: what is watched and how errors
//! are retried.
//!
//! Watched: SalesforceOrgs, and only the Secrets labelled as managed by this operator (mapped
//! to their org by label), so the cache holds nothing else of the cluster's Secrets.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tracing::{debug, warn};

use crate::crd::SalesforceOrg;
use crate::reconcile::{self, Context, Settings};
use crate::salesforce::Salesforce;
use crate::token_secret::{MANAGED_BY, MANAGED_BY_LABEL, ORG_LABEL};

/// Where the controller looks.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// Only this namespace; all namespaces when `None`.
    pub namespace: Option<String>,
}

fn api<K>(client: &Client, scope: &Scope) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match &scope.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
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
    let reporter = Reporter {
        controller: "sforg-operator".into(),
        instance: Some(instance),
    };
    let recorder = Recorder::new(client.clone(), reporter);
    let ctx = Arc::new(Context::new(client.clone(), salesforce, settings, recorder));
    let orgs: Api<SalesforceOrg> = api(&client, &scope);
    let secrets: Api<Secret> = api(&client, &scope);
    let managed = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));
    Controller::new(orgs, watcher::Config::default())
        .watches(secrets, managed, |secret: Secret| {
            let ns = secret.namespace()?;
            let org = secret.labels().get(ORG_LABEL)?.clone();
            Some(ObjectRef::<SalesforceOrg>::new(&org).within(&ns))
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => debug!(org = %obj.name, namespace = ?obj.namespace, "reconciled"),
                Err(e) => warn!(error = %e, "reconcile failed"),
            }
        })
        .await;
}

fn error_policy<S: Salesforce>(
    _org: Arc<SalesforceOrg>,
    error: &reconcile::Error,
    _ctx: Arc<Context<S>>,
) -> Action {
    warn!(error = %error, kind = error.metric_label(), "will retry");
    Action::requeue(Duration::from_secs(5))
}
