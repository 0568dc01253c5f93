//! The reconcile decision, as plain functions of what was gathered, what Salesforce said, and
//! `now`. Nothing here does I/O, so every rule is a row in a table test.
//!
//! - [`schedule`]: whether to ask Salesforce now ([`plan`]).
//! - [`verdict`]: what the org is from Salesforce's answer, and the org-pinning rule.
//! - [`status`]: that verdict as status and conditions.
//! - [`forecast`]: when the authorization expires by policy, and `TokenExpiringSoon`.
//! - [`link`]: the re-auth link in status.
//! - [`held`]: tokens held in memory because the Secret refused them.
//! - [`events`]: the Events of a reconcile.
//!
//! [`outcome`] puts them together into one [`Outcome`]; [`dependents`] adds the CronJob
//! changes once the CronJobs are read (only when the outcome touches them).

pub mod events;
pub mod forecast;
pub mod held;
pub mod link;
pub mod notices;
pub mod schedule;
pub mod status;
pub mod verdict;

#[cfg(test)]
mod tests;

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::Event;

pub use schedule::{CheckKind, Fingerprint, Memo, Plan, backoff, jittered, plan};
pub use verdict::{CheckResult, FlowKind, Verdict};

use crate::crd::{ReauthLink, SalesforceOrgStatus, TokenPolicy, TokenState};
use crate::credentials::Credentials;
use crate::dependents::{self, Change, CronJobView, Mode};
use crate::reasons::Misconfiguration;
use crate::reauth_record::ReauthFailure;
use crate::token_secret::TokenFile;

/// The shortest wait before renewing a link, so a link that cannot be issued does not spin.
const LINK_RENEW_MIN: Duration = Duration::from_secs(60);

/// Everything one reconcile read of an org, in one pass, for the decision.
#[derive(Clone)]
pub struct Gathered {
    /// The org's name.
    pub name: String,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// `spec.expectedOrgId`.
    pub expected_org_id: Option<String>,
    /// The spec names the web server flow (a person logs in), whether or not its Secrets
    /// could be read.
    pub web_server: bool,
    /// The current status.
    pub status: SalesforceOrgStatus,
    /// The org's flow, or why it cannot run.
    pub flow: Result<FlowKind, Misconfiguration>,
    /// The credentials, when the flow can run.
    pub credentials: Option<Credentials>,
    /// The token Secret as read (its data and resourceVersion).
    pub token_secret: Option<Secret>,
    /// Its contents, checked.
    pub tokens: TokenFile,
    /// What makes a check due early.
    pub fingerprint: Fingerprint,
    /// `spec.checkInterval`, jitter applied.
    pub interval: Duration,
    /// Where in each interval the org's first check after a restart falls ([`schedule::phase`]).
    pub phase: Duration,
    /// Refresh at least this often, so an idle-expiry policy never kills the refresh token.
    pub keepalive: Duration,
    /// The last failed login through the re-auth link, as the callback recorded it.
    pub reauth_failure: Option<ReauthFailure>,
    /// This process's last check of the org.
    pub memo: Option<Memo>,
    /// Tokens held in memory, as this reconcile found them.
    pub held: HeldTokensState,
    /// The re-auth link's facts.
    pub link: LinkFacts,
    /// Who last logged in through the re-auth link, as the callback recorded it on the token
    /// Secret.
    pub authorized_by: Option<String>,
    /// When: the callback's record, or the annotation a person set on tokens stored by hand.
    pub authorized_at: Option<Time>,
    /// `spec.refreshTokenPolicy`, checked (`None` when the spec is invalid).
    pub policy: Option<TokenPolicy>,
    /// The operator's expiry lead times, longest first.
    pub lead_times: Vec<Duration>,
    /// A CronJob carried this org's hold when the controller started, though the status
    /// (Valid) records none: a process stopped in the middle of an expiry.
    pub unrecorded_holds: bool,
}

impl std::fmt::Debug for Gathered {
    // The token Secret's data holds the tokens: only its name and version are printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = self.token_secret.as_ref().map(|s| {
            (
                s.metadata.name.clone().unwrap_or_default(),
                s.metadata.resource_version.clone().unwrap_or_default(),
            )
        });
        f.debug_struct("Gathered")
            .field("name", &self.name)
            .field("generation", &self.generation)
            .field("web_server", &self.web_server)
            .field("state", &self.status.state)
            .field("flow", &self.flow)
            .field("credentials", &self.credentials)
            .field("token_secret", &secret)
            .field("tokens", &self.tokens)
            .field("fingerprint", &self.fingerprint)
            .field("interval", &self.interval)
            .field("memo", &self.memo)
            .field("held", &self.held)
            .field("link", &self.link)
            .finish_non_exhaustive()
    }
}

/// Tokens held in memory because the token Secret refused them, after this reconcile tried
/// to write them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum HeldTokensState {
    /// Nothing was held.
    #[default]
    None,
    /// They reached the Secret now, after this many refused writes.
    Stored {
        /// Refused writes before this one.
        failed_writes: u32,
    },
    /// Other tokens were stored meanwhile; ours were dropped unused.
    Superseded,
    /// The Secret still refuses them.
    StillRefused {
        /// The API server's words.
        error: String,
        /// Writes failed so far.
        attempts: u32,
    },
}

/// What the link policy needs to know.
#[derive(Clone, Debug, Default)]
pub struct LinkFacts {
    /// The operator serves re-auth links (it has a public URL).
    pub served: bool,
    /// The link in status is one the operator would accept now.
    pub verifies: bool,
    /// The link to write if a new one is due.
    pub fresh: Option<ReauthLink>,
}

/// What a conversation with Salesforce came to.
#[derive(Clone, Debug)]
pub struct Exchanged {
    /// What the check found.
    pub result: CheckResult,
    /// The token Secret's resourceVersion after a renewal wrote it.
    pub secret_version: Option<String>,
    /// Salesforce renewed the tokens but the Secret refused them (why): they are held in
    /// memory, and `result` says nothing about them.
    pub not_persisted: Option<String>,
}

/// Everything a reconcile must do.
pub struct Outcome {
    /// The status to have.
    pub status: SalesforceOrgStatus,
    /// What the org wants of its CronJobs.
    pub mode: Mode,
    /// CronJob changes (filled by [`dependents`]).
    pub cronjob_changes: Vec<Change>,
    /// CronJobs the org holds that someone else resumed.
    pub overridden: Vec<String>,
    /// Events to publish once the status is written.
    pub events: Vec<Event>,
    /// What to remember of this check (when one was made).
    pub memo: Option<Memo>,
    /// When to look again.
    pub requeue: Duration,
}

/// What the org wants of its CronJobs in `state`: an Unknown org (an outage while expired, a
/// configuration problem) keeps its holds and takes no new ones.
pub fn mode(state: Option<TokenState>) -> Mode {
    match state {
        Some(TokenState::Expired) => Mode::Hold,
        Some(TokenState::Valid) => Mode::Release,
        _ => Mode::Keep,
    }
}

/// Decides everything but the CronJob changes from what was gathered and, when the plan
/// asked Salesforce, what it said. `now` is the time after the exchange, so backoff counts
/// from the end of an attempt.
pub fn outcome(
    g: &Gathered,
    plan: &Plan,
    exchanged: Option<&Exchanged>,
    now: Timestamp,
) -> Outcome {
    let mut memo = None;
    let (verdict, mut requeue) = match (plan, exchanged) {
        (Plan::Wait(after), _) => (g.memo.as_ref().and_then(|m| m.verdict.clone()), *after),
        (Plan::Slot(after), _) => {
            // As if the org had been checked one interval before its slot, so the memo's
            // schedule takes over; the status stands, so no verdict is re-applied.
            let back = g.interval.saturating_sub(*after);
            memo = Some(Memo {
                at: now.checked_sub(back).unwrap_or(now),
                fingerprint: g.fingerprint.clone(),
                failures: 0,
                verdict: None,
            });
            (None, *after)
        }
        (Plan::Held(verdict, after), _) => (Some(verdict.clone()), *after),
        (Plan::Settle(verdict), _) => (
            Some(verdict.clone()),
            schedule::requeue_after(verdict, 0, g.interval),
        ),
        // A check whose exchange did not run: nothing new is known; look again soon.
        (Plan::Check(_), None) => (None, Duration::from_secs(2)),
        (Plan::Check(_), Some(ex)) => {
            let mut verdict = match &ex.not_persisted {
                Some(error) => Verdict::not_persisted(error),
                None => verdict::of(g, &ex.result),
            };
            if matches!(g.held, HeldTokensState::Stored { .. })
                && let Verdict::Valid { renewed, .. } = &mut verdict
            {
                // The renewal happened earlier; its tokens only now reached the Secret.
                *renewed = true;
            }
            let failures = match &verdict {
                Verdict::Unavailable { .. } | Verdict::RetrySoon => {
                    g.memo.as_ref().map_or(0, |m| m.failures) + 1
                }
                _ => 0,
            };
            // A renewal rewrote the Secret: remember its new version so the watch echo of our
            // own write does not trigger another check.
            let mut fingerprint = g.fingerprint.clone();
            if let Some(version) = &ex.secret_version {
                fingerprint.secret_version = Some(version.clone());
            }
            memo = Some(Memo {
                at: now,
                fingerprint,
                failures,
                verdict: Some(verdict.settled()),
            });
            let requeue = schedule::requeue_after(&verdict, failures, g.interval);
            (Some(verdict), requeue)
        }
    };
    let mut status = match &verdict {
        Some(v) => {
            let mut status = status::render(&g.status, v, g.generation, now);
            // What the verdict was decided on, so a restarted operator can tell that this
            // status is still current (see `schedule::current`).
            let basis = memo.as_ref().map_or(&g.fingerprint, |m| &m.fingerprint);
            status.token_secret_version = basis.secret_version.clone();
            status
        }
        None => g.status.clone(),
    };
    if let Some(by) = &g.authorized_by {
        status.authorized_by = Some(by.clone());
    }
    if let Some(at) = &g.authorized_at {
        status.authorized_at = Some(at.clone());
    }
    let forecast = forecast::of(&forecast::Facts::of(g, &status), now);
    if let Some(next) = forecast.next_change {
        requeue = requeue.min(forecast::until(next, now));
    }
    forecast.apply(&mut status, g.generation, now);
    if let Some(renew) = link::settle(g, &mut status, now) {
        requeue = requeue.min(renew.max(LINK_RENEW_MIN));
    }
    let mut events: Vec<Event> = Vec::new();
    if let HeldTokensState::Stored { failed_writes } = g.held {
        events.push(events::persisted(failed_writes));
    }
    events.extend(events::transition(&g.status, &status));
    events.extend(events::expiring(&g.status, &status));
    if matches!(plan, Plan::Check(_)) && schedule::requested(g, now) {
        events.push(events::checked(&status));
    }
    Outcome {
        mode: mode(status.state),
        status,
        cronjob_changes: Vec::new(),
        overridden: Vec::new(),
        events,
        memo,
        requeue,
    }
}

/// Whether the outcome concerns the org's CronJobs: it must hold them, or it holds some.
pub fn touches_dependents(g: &Gathered, outcome: &Outcome) -> bool {
    outcome.mode == Mode::Hold || !g.status.suspended_cron_jobs.is_empty() || g.unrecorded_holds
}

/// Whether the org must get its finalizer before the outcome's CronJob changes: it is about
/// to appear among a CronJob's holders and has none, so its deletion could not release it.
pub fn needs_finalizer(g: &Gathered, outcome: &Outcome, has_finalizer: bool) -> bool {
    !has_finalizer
        && outcome
            .cronjob_changes
            .iter()
            .any(|c| c.holders.contains(&g.name))
}

/// Whether the org still holds CronJobs, or must, after the outcome (its CronJobs' changes
/// then concern it).
pub fn still_holding(outcome: &Outcome) -> bool {
    outcome.mode == Mode::Hold || !outcome.status.suspended_cron_jobs.is_empty()
}

/// Adds what the org does to its CronJobs (`cronjobs` as read) to the outcome.
pub fn dependents(outcome: &mut Outcome, g: &Gathered, cronjobs: &[CronJobView], now: Timestamp) {
    let changes = dependents::plan(&g.name, outcome.mode, cronjobs);
    let held = dependents::held_after(&g.name, cronjobs, &changes);
    let overridden = dependents::overridden(&g.name, outcome.mode, cronjobs);
    // CronJobs created, relabelled or resumed by someone arrive through the CronJob watch; the
    // one thing no event announces is the end of a re-assertion backoff.
    if let Some(wait) = cronjobs
        .iter()
        .filter(|v| overridden.contains(&v.name) && !v.may_reassert)
        .map(|v| v.reassert_in)
        .min()
    {
        outcome.requeue = outcome.requeue.min(wait.max(Duration::from_secs(1)));
    }
    status::dependents(&mut outcome.status, held, &overridden, g.generation, now);
    outcome.cronjob_changes = changes;
    outcome.overridden = overridden;
}
