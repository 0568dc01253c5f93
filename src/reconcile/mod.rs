//! Reconciling one SalesforceOrg: observe → decide → act → status.
//!
//! Only the ends touch the network: [`observe`] reads the spec's Secrets, the decision is
//! [`decide`] (pure), [`check`] holds the Salesforce conversation and the token Secret write,
//! and [`reconcile`] writes status only when it changed. The controller runs at most one
//! reconcile per org at a time, which keeps one Salesforce request in flight per org.

pub mod check;
pub mod decide;
pub mod observe;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};
use tracing::{debug, info, warn};

use crate::crd::{SalesforceOrg, SalesforceOrgStatus, TokenState};
use crate::salesforce::Salesforce;
use crate::salesforce::allowlist::HostAllowlist;
use decide::{Memo, Plan, Verdict};

/// Annotation a person sets (any new value) to ask for an immediate check.
pub const CHECK_ANNOTATION: &str = "orgtokens.dev/check-requested-at";
/// The field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "sforg-operator";

/// Operator-wide settings for reconciling.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Refresh a web server org's token at least this often, even when the access token still
    /// works, so that an "expire if unused" policy never kills the refresh token.
    pub keepalive: Duration,
    /// Hosts that may receive credentials.
    pub allowlist: HostAllowlist,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            keepalive: Duration::from_secs(24 * 3600),
            allowlist: HostAllowlist::default(),
        }
    }
}

/// Shared state of the reconciler.
pub struct Context<S> {
    /// The Kubernetes client.
    pub client: Client,
    /// The Salesforce client.
    pub salesforce: S,
    /// Settings.
    pub settings: Settings,
    /// Event recorder.
    pub recorder: Recorder,
    /// The last check of each org (by uid), so status writes and watch echoes do not cause
    /// extra Salesforce calls.
    memos: Mutex<HashMap<String, Memo>>,
}

impl<S: Salesforce> Context<S> {
    /// A context for the controller.
    pub fn new(client: Client, salesforce: S, settings: Settings, recorder: Recorder) -> Self {
        Self {
            client,
            salesforce,
            settings,
            recorder,
            memos: Mutex::default(),
        }
    }

    fn memo(&self, uid: &str) -> Option<Memo> {
        self.memos.lock().ok()?.get(uid).cloned()
    }

    fn remember(&self, uid: &str, memo: Memo) {
        if let Ok(mut memos) = self.memos.lock() {
            memos.insert(uid.to_owned(), memo);
        }
    }

    /// Forgets a deleted org.
    pub fn forget(&self, uid: &str) {
        if let Ok(mut memos) = self.memos.lock() {
            memos.remove(uid);
        }
    }
}

/// Failures of a reconcile that the controller retries.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a request.
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),
    /// The object lacks a namespace or uid (never for objects read from the API server).
    #[error("the SalesforceOrg has no {0}")]
    MissingMetadata(&'static str),
}

impl Error {
    /// A stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::MissingMetadata(_) => "metadata",
        }
    }
}

/// Reconciles one org.
pub async fn reconcile<S: Salesforce>(
    org: Arc<SalesforceOrg>,
    ctx: Arc<Context<S>>,
) -> Result<Action, Error> {
    let ns = org.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let uid = org.uid().ok_or(Error::MissingMetadata("uid"))?;
    let name = org.name_any();
    let now = Timestamp::now();

    let seen = observe::observe(&ctx, &org, &ns).await?;
    let status = org.status.clone().unwrap_or_default();
    let interval = decide::jittered(seen.interval, &uid);
    let memo = ctx.memo(&uid);
    let observed = decide::Observed {
        flow: seen.flow.clone(),
        tokens: &seen.tokens,
        status: &status,
        expected_org_id: org.spec.expected_org_id.as_deref(),
        memo: memo.as_ref(),
        fingerprint: seen.fingerprint.clone(),
        interval,
        keepalive: ctx.settings.keepalive,
    };

    let (verdict, failures) = match decide::plan(&observed, now) {
        Plan::Wait(after) => return Ok(Action::requeue(after)),
        Plan::Settle(verdict) => (verdict, 0),
        Plan::Check(kind) => {
            let run = check::run(&ctx, &org, &ns, &seen, kind).await?;
            let verdict = decide::verdict(&observed, &run.result);
            let failures = match &verdict {
                Verdict::Unavailable { .. } | Verdict::RetrySoon => {
                    memo.as_ref().map_or(0, |m| m.failures) + 1
                }
                _ => 0,
            };
            // A renewal rewrote the Secret: remember its new version so the watch echo of our
            // own write does not trigger another check.
            let mut fingerprint = seen.fingerprint.clone();
            if let Some(version) = run.secret_version {
                fingerprint.secret_version = Some(version);
            }
            ctx.remember(
                &uid,
                Memo {
                    at: now,
                    fingerprint,
                    failures,
                },
            );
            debug!(org = %name, namespace = %ns, ?verdict, "checked");
            (verdict, failures)
        }
    };

    let desired = decide::desired_status(&status, &verdict, org.metadata.generation, now);
    if desired != status {
        write_status(&ctx, &org, &ns, &desired).await?;
        announce(&ctx, &org, &status, &desired, &verdict).await;
    }
    Ok(Action::requeue(decide::requeue_after(
        &verdict, failures, interval,
    )))
}

async fn write_status<S: Salesforce>(
    ctx: &Context<S>,
    org: &SalesforceOrg,
    ns: &str,
    desired: &SalesforceOrgStatus,
) -> Result<(), Error> {
    let api: Api<SalesforceOrg> = Api::namespaced(ctx.client.clone(), ns);
    // A merge patch of the whole status: conditions are replaced as a list, which is what we
    // computed; no resourceVersion, because status has one writer (the leader).
    let patch = serde_json::json!({ "status": desired });
    api.patch_status(
        &org.name_any(),
        &PatchParams::apply(FIELD_MANAGER).validation_strict(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

/// One Event per state transition, with the reason and what to do.
async fn announce<S: Salesforce>(
    ctx: &Context<S>,
    org: &SalesforceOrg,
    before: &SalesforceOrgStatus,
    after: &SalesforceOrgStatus,
    verdict: &Verdict,
) {
    if before.state == after.state {
        return;
    }
    let ready = crate::conditions::get(&after.conditions, crate::conditions::READY);
    let reason = ready.map(|c| c.reason.clone()).unwrap_or_default();
    let note = ready.map(|c| c.message.clone());
    let type_ = match after.state {
        Some(TokenState::Valid) | Some(TokenState::Pending) => EventType::Normal,
        _ => EventType::Warning,
    };
    let state = after.state.map(|s| format!("{s:?}")).unwrap_or_default();
    info!(org = %org.name_any(), namespace = ?org.namespace(), %state, %reason, "state changed");
    if matches!(verdict, Verdict::Expired { .. }) {
        warn!(org = %org.name_any(), %reason, "authorization lost");
    }
    let event = Event {
        type_,
        reason: format!("Token{state}"),
        note,
        action: "Check".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &org.object_ref(&())).await {
        warn!(error = %e, "could not publish an event");
    }
}
