//! Reconciling one SalesforceOrg: observe → decide → act → status.
//!
//! Only the ends touch the network: [`observe`] reads the spec's Secrets, the decision is
//! [`decide`] (pure), [`check`] holds the Salesforce conversation and the token Secret write,
//! and [`reconcile`] writes status only when it changed. The controller runs at most one
//! reconcile per org at a time, which keeps one Salesforce request in flight per org.

pub mod check;
pub mod decide;
pub mod observe;
pub mod reauth;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::events::Recorder;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::{Client, Resource, ResourceExt};
use tracing::{debug, info, warn};

use crate::clock::Clock;
use crate::crd::{SalesforceOrg, SalesforceOrgStatus, TokenState};
use crate::dependents::{self, Mode, Synced};
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
    /// Re-auth links for status, when the operator has a public URL for its callback server.
    pub reauth: Option<crate::callback::Links>,
    /// The clock decisions are made with (the system clock; shifted only to rehearse skew).
    pub clock: Clock,
    /// Renewed tokens the token Secret refused. Clones share them, so they outlive a
    /// controller: a leader that steps down during an API server outage and leads again
    /// still writes them before it talks to Salesforce.
    pub held: HeldTokens,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            keepalive: Duration::from_secs(24 * 3600),
            allowlist: HostAllowlist::default(),
            reauth: None,
            clock: Clock::system(),
            held: HeldTokens::default(),
        }
    }
}

/// Tokens Salesforce issued that the token Secret refused, by org uid (see
/// [`check::Unpersisted`]), for as long as the process lives. Cheap to clone; clones share.
#[derive(Clone, Default)]
pub struct HeldTokens(Arc<Mutex<HashMap<String, check::Unpersisted>>>);

impl HeldTokens {
    /// The uids of the orgs whose tokens are held.
    pub fn orgs(&self) -> Vec<String> {
        self.0
            .lock()
            .map(|held| held.keys().cloned().collect())
            .unwrap_or_default()
    }
}

impl std::fmt::Debug for HeldTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the tokens: how many orgs wait is all there is to say.
        let held = self.0.lock().map(|held| held.len()).unwrap_or_default();
        write!(f, "HeldTokens({held} orgs)")
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
    /// Re-assertions of holds against other writers, for their backoff.
    pub dependents: dependents::Tracker,
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
            dependents: dependents::Tracker::default(),
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
        self.release_held(uid);
    }

    fn held(&self, uid: &str) -> Option<check::Unpersisted> {
        self.settings.held.0.lock().ok()?.get(uid).cloned()
    }

    fn hold(&self, uid: &str, tokens: check::Unpersisted) {
        if let Ok(mut held) = self.settings.held.0.lock() {
            held.insert(uid.to_owned(), tokens);
        }
    }

    fn release_held(&self, uid: &str) {
        if let Ok(mut held) = self.settings.held.0.lock() {
            held.remove(uid);
        }
    }

    /// Records another failed write of held tokens; returns how many writes have failed.
    fn held_write_failed(&self, uid: &str, error: &str) -> u32 {
        let Ok(mut held) = self.settings.held.0.lock() else {
            return 1;
        };
        match held.get_mut(uid) {
            Some(tokens) => {
                tokens.attempts = tokens.attempts.saturating_add(1);
                tokens.error = error.to_owned();
                tokens.attempts
            }
            None => 1,
        }
    }

    /// When this process last checked each org against Salesforce, by uid (for metrics).
    pub fn last_checks(&self) -> HashMap<String, Timestamp> {
        self.memos
            .lock()
            .map(|memos| memos.iter().map(|(uid, m)| (uid.clone(), m.at)).collect())
            .unwrap_or_default()
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
    /// Adding or removing the finalizer, or the work inside it, failed.
    #[error("{0}")]
    Finalizer(Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// Whether the failure only means the object in the cache was older than the API server's
    /// (a JSON-patch `test` of the finalizer list failing, or a 409 conflict).
    pub fn is_stale_read(&self) -> bool {
        use kube::runtime::finalizer::Error as F;
        let api_code =
            |e: &kube::Error| matches!(e, kube::Error::Api(s) if s.code == 409 || s.code == 422);
        match self {
            Error::Finalizer(f) => match f.as_ref() {
                F::AddFinalizer(e) | F::RemoveFinalizer(e) => api_code(e),
                _ => false,
            },
            Error::Kube(e) => matches!(e, kube::Error::Api(s) if s.code == 409),
            _ => false,
        }
    }

    /// A stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::MissingMetadata(_) => "metadata",
            Error::Finalizer(_) => "finalizer",
        }
    }
}

/// The finalizer that releases an org's CronJobs before it goes away.
pub const FINALIZER: &str = "orgtokens.dev/release-cronjobs";

/// While an org holds CronJobs, look again this often, so a CronJob created or relabelled
/// into the selector is paused soon without watching every CronJob of the cluster.
const HOLDING_RECHECK: Duration = Duration::from_secs(15);

/// The longest wait between writes of tokens held in memory: they are the only copy, and a
/// write is cheap.
const HELD_RETRY_MAX: Duration = Duration::from_secs(60);

/// Reconciles one org (with its deletion through the finalizer).
pub async fn reconcile<S: Salesforce>(
    org: Arc<SalesforceOrg>,
    ctx: Arc<Context<S>>,
) -> Result<Action, Error> {
    let ns = org.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let api: Api<SalesforceOrg> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, org, |event| async {
        match event {
            FinalizerEvent::Apply(org) => apply(org, ctx.clone()).await,
            FinalizerEvent::Cleanup(org) => cleanup(org, ctx.clone()).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

async fn cleanup<S: Salesforce>(
    org: Arc<SalesforceOrg>,
    ctx: Arc<Context<S>>,
) -> Result<Action, Error> {
    let ns = org.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let synced =
        dependents::sync(&ctx.client, &ctx.dependents, &org, &ns, Mode::Release, true).await?;
    announce_dependents(&ctx, &org, &synced).await;
    if let Some(uid) = org.uid() {
        ctx.forget(&uid);
    }
    Ok(Action::await_change())
}

async fn apply<S: Salesforce>(
    org: Arc<SalesforceOrg>,
    ctx: Arc<Context<S>>,
) -> Result<Action, Error> {
    let ns = org.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let uid = org.uid().ok_or(Error::MissingMetadata("uid"))?;
    let name = org.name_any();
    let now = ctx.settings.clock.now();

    let mut seen = observe::observe(&ctx, &org, &ns).await?;
    // Tokens Salesforce issued earlier that the Secret refused go in first: with rotation they
    // hold the only working refresh token, and a refresh with the one in the Secret would be
    // a reuse that revokes the grant. Nothing talks to Salesforce while they wait.
    let mut persisted_late = false;
    let mut still_held = None;
    if let Some(held) = ctx.held(&uid) {
        match check::persist_held(&ctx, &org, &ns, &seen, &held).await {
            check::Held::Stored => {
                ctx.release_held(&uid);
                persisted_late = true;
                info!(org = %name, namespace = %ns, failed_writes = held.attempts, "stored tokens the token Secret had refused");
                announce_persisted(&ctx, &org, held.attempts).await;
                seen = observe::observe(&ctx, &org, &ns).await?;
            }
            check::Held::Superseded => {
                ctx.release_held(&uid);
                info!(org = %name, namespace = %ns, "newer tokens were stored while ours waited; dropping ours");
            }
            check::Held::Failed(error) => {
                let attempts = ctx.held_write_failed(&uid, &error);
                warn!(org = %name, namespace = %ns, %error, attempts, "the token Secret still refuses the renewed tokens; keeping them in memory");
                still_held = Some((error, attempts));
            }
        }
    }
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
        reauth_links: ctx.settings.reauth.is_some(),
    };

    // A person asked for a check (a new annotation value since the last check): the check
    // is announced even when it changes nothing, so `sforg-operator check --wait` can tell.
    let requested = memo.as_ref().is_some_and(|m| {
        seen.fingerprint.check_request.is_some()
            && m.fingerprint.check_request != seen.fingerprint.check_request
    });
    let plan = match &still_held {
        Some((error, attempts)) => {
            let wait = decide::backoff(*attempts).min(HELD_RETRY_MAX);
            Plan::Held(decide::not_persisted(error), wait)
        }
        None => decide::plan(&observed, now),
    };
    let checked = matches!(plan, Plan::Check(_));
    let (verdict, requeue) = match plan {
        Plan::Wait(after) => (memo.as_ref().and_then(|m| m.verdict.clone()), after),
        Plan::Held(verdict, after) => (Some(verdict), after),
        Plan::Settle(verdict) => {
            let requeue = decide::requeue_after(&verdict, 0, interval);
            (Some(verdict), requeue)
        }
        Plan::Check(kind) => {
            let run = check::run(&ctx, &org, &ns, &seen, kind).await?;
            let mut verdict = match &run.not_persisted {
                Some(error) => decide::not_persisted(error),
                None => decide::verdict(&observed, &run.result),
            };
            if persisted_late && let Verdict::Valid { renewed, .. } = &mut verdict {
                // The renewal happened earlier; its tokens only now reached the Secret.
                *renewed = true;
            }
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
                    verdict: Some(verdict.settled()),
                },
            );
            debug!(org = %name, namespace = %ns, ?verdict, "checked");
            let requeue = decide::requeue_after(&verdict, failures, interval);
            (Some(verdict), requeue)
        }
    };

    let mut desired = match &verdict {
        Some(v) => decide::desired_status(&status, v, org.metadata.generation, now),
        None => status.clone(),
    };
    let mode = match desired.state {
        Some(TokenState::Expired) => Mode::Hold,
        Some(TokenState::Valid) => Mode::Release,
        _ => Mode::Keep,
    };
    let mut requeue = requeue;
    if let Some(renew) = reauth::settle(&ctx.settings, &org, &seen, &mut desired, now) {
        requeue = requeue.min(renew.max(Duration::from_secs(60)));
    }
    if mode == Mode::Hold || !status.suspended_cron_jobs.is_empty() {
        let synced = dependents::sync(&ctx.client, &ctx.dependents, &org, &ns, mode, false).await?;
        announce_dependents(&ctx, &org, &synced).await;
        dependents_condition(&mut desired, &synced, org.metadata.generation, now);
        desired.suspended_cron_jobs = synced.held;
        if !desired.suspended_cron_jobs.is_empty() || mode == Mode::Hold {
            requeue = requeue.min(HOLDING_RECHECK);
        }
    }
    if desired != status {
        write_status(&ctx, &org, &ns, &desired).await?;
        if let Some(v) = &verdict {
            announce(&ctx, &org, &status, &desired, v).await;
        }
    }
    if checked && requested {
        announce_requested_check(&ctx, &org, &desired).await;
    }
    Ok(Action::requeue(requeue))
}

/// The reason of the Event that answers a requested check.
pub const CHECKED_EVENT: &str = "Checked";
/// The reason of the Event saying that tokens held in memory finally reached the Secret.
pub const PERSISTED_EVENT: &str = "TokenPersisted";

/// One Event when tokens the Secret refused are finally stored.
async fn announce_persisted<S: Salesforce>(ctx: &Context<S>, org: &SalesforceOrg, failed: u32) {
    let event = Event {
        type_: EventType::Normal,
        reason: PERSISTED_EVENT.into(),
        note: Some(format!(
            "Stored the tokens Salesforce issued earlier, after {failed} refused write(s) of \
             the token Secret"
        )),
        action: "StoreTokens".into(),
        secondary: None,
    };
    ctx.recorder.publish(&event, &org.object_ref(&())).await;
}

/// One Event answering a person's check request with what the org is now.
async fn announce_requested_check<S: Salesforce>(
    ctx: &Context<S>,
    org: &SalesforceOrg,
    status: &SalesforceOrgStatus,
) {
    let state = status.state.unwrap_or_default();
    let reason = crate::conditions::get(&status.conditions, crate::conditions::READY)
        .map(|c| c.reason.clone())
        .unwrap_or_default();
    let event = Event {
        type_: EventType::Normal,
        reason: CHECKED_EVENT.into(),
        note: Some(format!("Checked on request: {state:?} ({reason})")),
        action: "Check".into(),
        secondary: None,
    };
    ctx.recorder.publish(&event, &org.object_ref(&())).await;
}

async fn write_status<S: Salesforce>(
    ctx: &Context<S>,
    org: &SalesforceOrg,
    ns: &str,
    desired: &SalesforceOrgStatus,
) -> Result<(), Error> {
    let api: Api<SalesforceOrg> = Api::namespaced(ctx.client.clone(), ns);
    // A merge patch of the whole status: conditions are replaced as a list, which is what we
    // computed; no resourceVersion, because status has one writer (the leader). Fields that
    // are now empty are sent as null, since a merge patch keeps whatever it does not mention.
    let mut body = serde_json::to_value(desired).unwrap_or_default();
    let current = serde_json::to_value(org.status.clone().unwrap_or_default()).unwrap_or_default();
    if let (Some(body), Some(current)) = (body.as_object_mut(), current.as_object()) {
        for key in current.keys() {
            body.entry(key.clone()).or_insert(serde_json::Value::Null);
        }
    }
    let patch = serde_json::json!({ "status": body });
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
    ctx.recorder.publish(&event, &org.object_ref(&())).await;
}

/// The longest list of CronJob names in a message: Event notes may not exceed 1 KiB, and the
/// longest prefix is under 100 characters.
const MAX_NAMES_CHARS: usize = 900;

/// The `DependentsSuspended` condition: what the org holds, and whether someone else keeps
/// resuming it.
fn dependents_condition(
    status: &mut SalesforceOrgStatus,
    synced: &Synced,
    generation: Option<i64>,
    now: Timestamp,
) {
    use crate::conditions::{DEPENDENTS_SUSPENDED, Desired, Status};
    let desired = if !synced.overridden.is_empty() {
        Desired {
            type_: DEPENDENTS_SUSPENDED,
            status: Status::False,
            reason: "ResumedByAnotherWriter".into(),
            message: format!(
                "Someone resumed {} while the token is expired; the operator suspends them \
                 again with backoff. Make GitOps tools ignore spec.suspend of CronJobs (see the \
                 README).",
                dependents::name_list(&synced.overridden, MAX_NAMES_CHARS)
            ),
        }
    } else if !synced.held.is_empty() {
        Desired {
            type_: DEPENDENTS_SUSPENDED,
            status: Status::True,
            reason: "TokenExpired".into(),
            message: format!(
                "Suspended until the token is valid: {}",
                dependents::name_list(&synced.held, MAX_NAMES_CHARS)
            ),
        }
    } else if crate::conditions::get(&status.conditions, DEPENDENTS_SUSPENDED).is_some() {
        Desired {
            type_: DEPENDENTS_SUSPENDED,
            status: Status::False,
            reason: "NoneHeld".into(),
            message: "No CronJob is suspended by this org.".into(),
        }
    } else {
        return;
    };
    crate::conditions::set(&mut status.conditions, desired, generation, &Time(now));
}

/// Events naming the CronJobs a sync suspended or resumed.
async fn announce_dependents<S: Salesforce>(
    ctx: &Context<S>,
    org: &SalesforceOrg,
    synced: &Synced,
) {
    for (names, reason, type_, what) in [
        (
            &synced.suspended,
            "CronJobsSuspended",
            EventType::Warning,
            "Suspended while the token is expired",
        ),
        (
            &synced.resumed,
            "CronJobsResumed",
            EventType::Normal,
            "Resumed now that the token is valid again",
        ),
        (
            &synced.overridden,
            "CronJobsResumedByAnotherWriter",
            EventType::Warning,
            "Resumed by someone else while the token is expired (suspended again with backoff)",
        ),
    ] {
        if names.is_empty() {
            continue;
        }
        info!(org = %org.name_any(), cronjobs = ?names, reason, "dependents changed");
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(format!(
                "{what}: {}",
                dependents::name_list(names, MAX_NAMES_CHARS)
            )),
            action: "UpdateDependents".into(),
            secondary: None,
        };
        ctx.recorder.publish(&event, &org.object_ref(&())).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::observe::Credentials;
    use crate::salesforce::{AppCredentials, TokenResponse};
    use crate::secret::SecretString;

    #[test]
    fn held_tokens_are_shared_by_clones_and_never_printed() {
        let settings = Settings::default();
        let later_term = settings.clone();
        let tokens = check::Unpersisted {
            response: TokenResponse {
                access_token: SecretString::new("00Dxx!AQ.access"),
                refresh_token: Some(SecretString::new("5Aep861.refresh")),
                instance_url: "https://acme.my.salesforce.com".into(),
                id: "https://login.salesforce.com/id/00D000000000001AAA/005000000000001AAA".into(),
                issued_at: None,
            },
            replaced: Some(SecretString::new("5Aep861.old")),
            credentials: Credentials::WebServer(AppCredentials {
                client_id: "cid".into(),
                client_secret: Some(SecretString::new("app-secret")),
            }),
            attempts: 1,
            error: "HTTP 503".into(),
        };
        if let Ok(mut held) = settings.held.0.lock() {
            held.insert("uid-1".into(), tokens.clone());
        }
        assert_eq!(later_term.held.orgs(), vec!["uid-1".to_owned()]);
        let printed = format!("{settings:?} {tokens:?}");
        for secret in [
            "00Dxx!AQ.access",
            "5Aep861.refresh",
            "5Aep861.old",
            "app-secret",
        ] {
            assert!(!printed.contains(secret), "{printed}");
        }
        assert!(printed.contains("HeldTokens(1 orgs)"), "{printed}");
    }
}
