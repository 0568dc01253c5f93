//! Reconciling one SalesforceOrg, in one forward pass:
//!
//! ```text
//! flush held tokens → gather → decide::plan → exchange (only if due) → decide::outcome
//!   → [read CronJobs → decide::dependents, only if the outcome touches them; such an org
//!      is marked in `Context::holding`, so the CronJob watch brings it back on a change]
//!   → act: CronJob patches, status, Events
//! ```
//!
//! [`gather`] reads, [`decide`] is pure, [`exchange`] holds the Salesforce conversation with
//! the token Secret write it needs (they stay together for rotation safety), and [`act`]
//! writes. [`apply`] is the whole path; read it first. The controller runs at most one
//! reconcile per org at a time, which keeps one Salesforce request in flight per org.

pub mod act;
pub mod context;
pub mod decide;
pub mod exchange;
pub mod gather;

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use tracing::debug;

pub use context::{Context, HeldTokens, Settings};
use decide::Plan;
pub use decide::events::{CHECKED_EVENT, PERSISTED_EVENT};

use crate::crd::SalesforceOrg;
use crate::dependents::Mode;
use crate::salesforce::Salesforce;

/// Annotation a person sets (any new value) to ask for an immediate check.
pub const CHECK_ANNOTATION: &str = "orgtokens.dev/check-requested-at";
/// The field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = crate::FIELD_MANAGER;
/// The finalizer that releases an org's CronJobs before it goes away. It is added just
/// before an org first holds a CronJob, in the same reconcile, so an org that never holds
/// anything is written once (its status) and not twice.
pub const FINALIZER: &str = "orgtokens.dev/release-cronjobs";

/// Failures of a reconcile that the controller retries, by the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the token or credentials Secrets failed.
    #[error("reading the org's Secrets failed: {0}")]
    ReadSecrets(#[source] kube::Error),
    /// Listing the namespace's CronJobs failed.
    #[error("listing the org's CronJobs failed: {0}")]
    ReadCronJobs(#[source] kube::Error),
    /// Suspending or resuming a CronJob failed.
    #[error("suspending or resuming a dependent CronJob failed: {0}")]
    SyncCronJobs(#[source] kube::Error),
    /// Writing the status failed.
    #[error("writing the org's status failed: {0}")]
    WriteStatus(#[source] kube::Error),
    /// The object lacks a namespace or uid (never for objects read from the API server).
    #[error("the SalesforceOrg has no {0}")]
    MissingMetadata(&'static str),
    /// Adding or removing the org's finalizer failed.
    #[error("adding or removing the org's finalizer failed: {0}")]
    Finalizer(#[source] kube::Error),
}

impl Error {
    /// Whether the failure only means the object read was older than the API server's (a
    /// 409 conflict on a write made under the version read): retry at once.
    pub fn is_stale_read(&self) -> bool {
        match self {
            Error::Finalizer(e) | Error::SyncCronJobs(e) | Error::WriteStatus(e) => {
                matches!(e, kube::Error::Api(s) if s.code == 409)
            }
            _ => false,
        }
    }

    /// A stable label for metrics: the step that failed.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::ReadSecrets(_) => "read_secrets",
            Error::ReadCronJobs(_) => "read_cronjobs",
            Error::SyncCronJobs(_) => "sync_cronjobs",
            Error::WriteStatus(_) => "write_status",
            Error::MissingMetadata(_) => "metadata",
            Error::Finalizer(_) => "finalizer",
        }
    }
}

/// When to reconcile an org again if nothing changes: after a while, or only on a change.
pub type Next = Option<std::time::Duration>;

/// Reconciles one org: a live one with [`apply`], one being deleted with [`cleanup`].
pub async fn reconcile<S: Salesforce>(
    org: Arc<SalesforceOrg>,
    ctx: Arc<Context<S>>,
) -> Result<Next, Error> {
    org.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    if org.metadata.deletion_timestamp.is_some() {
        return cleanup(&org, &ctx).await;
    }
    apply(&org, &ctx).await
}

/// Whether the org carries the operator's finalizer.
fn has_finalizer(org: &SalesforceOrg) -> bool {
    org.finalizers().iter().any(|f| f == FINALIZER)
}

/// The whole reconcile of a live org.
async fn apply<S: Salesforce>(org: &SalesforceOrg, ctx: &Context<S>) -> Result<Next, Error> {
    let uid = org.uid().ok_or(Error::MissingMetadata("uid"))?;
    let secrets: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &org.namespace().unwrap_or_default());
    let settings = &ctx.settings;

    let sink = exchange::TokenSink {
        secrets: &secrets,
        held: &settings.held,
        allowlist: &settings.allowlist,
    };
    // Tokens the Secret refused earlier go in first (see `exchange::flush_held`).
    let held = exchange::flush_held(&sink, org, &uid).await?;
    let now = settings.clock.now();
    let gathered = gather::org(&secrets, settings, org, &uid, ctx.memo(&uid), held, now).await?;
    let mut gathered =
        gather::holds_at_start(&ctx.client, &ctx.holds_at_start, org, gathered).await?;
    let mut plan = decide::plan(&gathered, now);
    if matches!(plan, Plan::Check(_) | Plan::Settle(_)) {
        // Credentials are read only when the verdict may depend on them: a conversation with
        // Salesforce, or a web server org awaiting its first login (whose app must be usable).
        gathered = gather::credentials(&secrets, org, gathered).await?;
        plan = decide::plan(&gathered, now);
    }
    let exchanged = match plan {
        Plan::Check(kind) => {
            Some(exchange::run(&ctx.salesforce, &sink, org, &gathered, kind).await)
        }
        _ => None,
    };
    // Backoff counts from the end of the exchange, however long Salesforce took.
    let now = settings.clock.now();
    let mut outcome = decide::outcome(&gathered, &plan, exchanged.as_ref(), now);
    if let Some(memo) = outcome.memo.take() {
        // Remembered before any write, so a retried reconcile acts on this verdict without
        // asking Salesforce again.
        ctx.remember(&uid, memo);
    }
    let ns = org.namespace().unwrap_or_default();
    if decide::touches_dependents(&gathered, &outcome) {
        // Marked before the list: a CronJob created or relabelled after it reaches this org
        // through the CronJob watch.
        ctx.holding
            .mark(&ns, &gathered.name, org.spec.dependents.as_ref());
        let cronjobs = gather::cronjobs(&ctx.client, &ctx.dependents, org, &uid, false).await?;
        decide::dependents(&mut outcome, &gathered, &cronjobs, now);
    }
    if !decide::still_holding(&outcome) {
        ctx.holding.unmark(&ns, &gathered.name);
    }

    if let Some(notifier) = &settings.notify {
        notices(notifier, org, &uid, &gathered, &mut outcome, now);
    }

    // The org's version, moved on by a finalizer added here (which is made under the version
    // read, so nothing else came in between).
    let mut version = org.resource_version();
    if decide::needs_finalizer(&gathered, &outcome, has_finalizer(org)) {
        version = Some(act::finalizer(&ctx.client, org, true).await?);
    }
    let (applied, synced) = act::cronjobs(
        &ctx.client,
        &ctx.dependents,
        org,
        &uid,
        &outcome.cronjob_changes,
    )
    .await;
    let cronjob_events = decide::events::dependents(&applied, &outcome.overridden);
    act::publish(&ctx.recorder, org, &cronjob_events).await;
    synced?;
    if outcome.status != gathered.status {
        // With notifications recorded, the write is conditional on the version read: the
        // delivery worker marks records with its own patches, never to be overwritten by a
        // reconcile that read the org before them (a conflict re-reads and decides again).
        let guard = (!outcome.status.notifications.is_empty()
            || !gathered.status.notifications.is_empty())
        .then_some(version)
        .flatten();
        act::status(&ctx.client, org, &outcome.status, guard.as_deref()).await?;
    }
    act::publish(&ctx.recorder, org, &outcome.events).await;
    if let Some(notifier) = &settings.notify {
        // Recorded as Pending first, so a crash from here on loses nothing.
        notifier.submit(org, &outcome.status);
    }
    debug!(org = %gathered.name, ?outcome.status.state, requeue = ?outcome.requeue, "reconciled");
    Ok(Some(outcome.requeue))
}

/// Adds the notifications due to the outcome (pure; see [`decide::notices`]), and the
/// recipients refused by the administrator's domain allowlist.
fn notices(
    notifier: &crate::notify::Notifier,
    org: &SalesforceOrg,
    uid: &str,
    gathered: &decide::Gathered,
    outcome: &mut decide::Outcome,
    now: k8s_openapi::jiff::Timestamp,
) {
    let (policy, recipients) = notifier.policy(org.spec.notifications.as_deref());
    if recipients.refused != gathered.status.refused_recipients && !recipients.refused.is_empty() {
        outcome
            .events
            .push(decide::events::recipients_refused(&recipients.refused));
    }
    outcome.status.refused_recipients = recipients.refused;
    // A refused login is news only while the tokens it was refused for are current.
    let version = gathered
        .token_secret
        .as_ref()
        .and_then(|s| s.metadata.resource_version.clone())
        .unwrap_or_default();
    let failure = gathered
        .reauth_failure
        .as_ref()
        .filter(|f| f.tokens == version);
    if let Some(next) = decide::notices::settle(
        uid,
        &gathered.status,
        &mut outcome.status,
        failure,
        &gathered.name,
        &policy,
        now,
    ) {
        outcome.requeue = outcome.requeue.min(next);
    }
}

/// Before an org goes away: resume what it holds, forget what this process remembers, and
/// let it go. (An org that never held a CronJob has no finalizer and is gone at once; the
/// controller forgets it when its deletion is seen, see `controller::org_events`.)
async fn cleanup<S: Salesforce>(org: &SalesforceOrg, ctx: &Context<S>) -> Result<Next, Error> {
    let uid = org.uid().unwrap_or_default();
    let cronjobs = gather::cronjobs(&ctx.client, &ctx.dependents, org, &uid, true).await?;
    let changes = crate::dependents::plan(&org.name_any(), Mode::Release, &cronjobs);
    let (applied, synced) = act::cronjobs(&ctx.client, &ctx.dependents, org, &uid, &changes).await;
    act::publish(
        &ctx.recorder,
        org,
        &decide::events::dependents(&applied, &[]),
    )
    .await;
    synced?;
    ctx.holding
        .unmark(&org.namespace().unwrap_or_default(), &org.name_any());
    ctx.forget(&uid);
    if has_finalizer(org) {
        act::finalizer(&ctx.client, org, false).await?;
    }
    Ok(None)
}

#[cfg(test)]
mod tests;
