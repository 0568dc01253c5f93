//! When the app's refresh token policy ends an org's authorization, and the
//! `TokenExpiringSoon` condition that warns a lead time ahead.
//!
//! - *Valid until revoked*: nothing to forecast (`ValidUntilRevoked`).
//! - *Expire after* N: `authorizationExpiresAt` is `authorizedAt` + N. The condition turns True
//!   (`ExpiringSoon`) at the longest lead time before it and moves to each shorter lead time
//!   in turn (`status.expiryLeadTime`), so a notifier can send one notice per lead time.
//! - *Expire if not used for* N: the keep-alive refresh uses the token at least every
//!   keep-alive plus one check interval. Shorter than N, it never lapses (`KeptAlive`, False);
//!   otherwise it lapses N after its last use, and the condition warns (`KeepAliveTooLong`).
//!
//! The next time the condition would change is returned, so the org is requeued for that
//! moment instead of being rewritten on every reconcile; at the forecast expiry itself the
//! org is checked (see `schedule::plan`), so it turns Expired when Salesforce agrees.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::Gathered;
use super::verdict::relogin;
use crate::conditions::{self, Desired, Status};
use crate::crd::{SalesforceOrgStatus, TokenPolicy, TokenState};
use crate::messages::{Relogin, expiry};
use crate::reasons::Reason;
use crate::token_secret::TokenFile;

/// What the forecast depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    /// A person logs in for this org (web server flow).
    pub web_server: bool,
    /// The state the status is about to have.
    pub state: Option<TokenState>,
    /// `spec.refreshTokenPolicy`, checked (`None` when invalid).
    pub policy: Option<TokenPolicy>,
    /// The last login (`status.authorizedAt`).
    pub authorized_at: Option<Timestamp>,
    /// Who logged in (`status.authorizedBy`).
    pub authorized_by: Option<String>,
    /// The last use of the refresh token known: the last refresh (`status.lastRefreshedAt`)
    /// or the issue time of the stored tokens (a login or a refresh), whichever is later.
    pub last_refreshed_at: Option<Timestamp>,
    /// `--refresh-keepalive`.
    pub keepalive: Duration,
    /// The org's check interval: a keep-alive refresh happens at the first check after the
    /// keep-alive is due.
    pub interval: Duration,
    /// The lead times, longest first.
    pub lead_times: Vec<Duration>,
    /// How a person logs in again.
    pub relogin: Relogin,
}

impl Facts {
    /// The facts of `g`, with `status` the status about to be written.
    pub fn of(g: &Gathered, status: &SalesforceOrgStatus) -> Self {
        Self {
            web_server: g.web_server,
            state: status.state,
            policy: g.policy,
            authorized_at: status.authorized_at.as_ref().map(|t| t.0),
            authorized_by: status.authorized_by.clone(),
            last_refreshed_at: status
                .last_refreshed_at
                .as_ref()
                .map(|t| t.0)
                .max(issued_at(&g.tokens)),
            keepalive: g.keepalive,
            interval: g.interval,
            lead_times: g.lead_times.clone(),
            relogin: relogin(g),
        }
    }
}

/// When the stored tokens were issued, in whole seconds.
fn issued_at(tokens: &TokenFile) -> Option<Timestamp> {
    match tokens {
        TokenFile::Present(t) => t
            .issued_at_ms
            .and_then(|ms| Timestamp::from_second(ms.div_euclid(1000)).ok()),
        _ => None,
    }
}

/// The forecast: `authorizationExpiresAt`, the condition, the lead time reached, and when
/// any of it changes next with nothing else happening.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forecast {
    /// When the policy ends the authorization, if known and ever.
    pub expires_at: Option<Timestamp>,
    /// `TokenExpiringSoon`'s status.
    pub status: Status,
    /// Its reason.
    pub reason: Reason,
    /// Its message.
    pub message: String,
    /// The shortest lead time reached, while True.
    pub lead_time: Option<Duration>,
    /// When the forecast changes next (a lead time, or the expiry itself).
    pub next_change: Option<Timestamp>,
}

impl Forecast {
    fn of(status: Status, reason: Reason, message: impl Into<String>) -> Self {
        Self {
            expires_at: None,
            status,
            reason,
            message: message.into(),
            lead_time: None,
            next_change: None,
        }
    }

    /// Writes the forecast into `status`.
    pub fn apply(&self, status: &mut SalesforceOrgStatus, generation: Option<i64>, now: Timestamp) {
        status.authorization_expires_at = self.expires_at.map(Time);
        status.expiry_lead_time = self.lead_time.map(crate::duration::format);
        let desired = Desired {
            type_: conditions::TOKEN_EXPIRING_SOON,
            status: self.status,
            reason: self.reason,
            message: self.message.clone(),
        };
        conditions::set(&mut status.conditions, desired, generation, &Time(now));
    }

    /// Whether the condition is True (a link must be ready).
    pub fn expiring_soon(&self) -> bool {
        self.status == Status::True
    }
}

/// Whether `status` says the authorization expires soon (`TokenExpiringSoon` True).
pub fn expiring_soon(status: &SalesforceOrgStatus) -> bool {
    conditions::get(&status.conditions, conditions::TOKEN_EXPIRING_SOON)
        .is_some_and(|c| c.status == Status::True.as_str())
}

/// How long from `now` until `at`, at least a second (never a busy loop).
pub fn until(at: Timestamp, now: Timestamp) -> Duration {
    let wait = Duration::try_from(at.duration_since(now)).unwrap_or_default();
    wait.max(Duration::from_secs(1))
}

/// `t` + `d`, in whole seconds (status times carry seconds only: a fraction would make every
/// reconcile see a change), or `None` past the last representable time.
fn plus(t: Timestamp, d: Duration) -> Option<Timestamp> {
    let t = Timestamp::from_second(t.as_second()).ok()?;
    t.checked_add(SignedDuration::try_from(d).ok()?).ok()
}

/// The forecast at `now`.
pub fn of(f: &Facts, now: Timestamp) -> Forecast {
    use Status::{False, True, Unknown};
    if !f.web_server {
        return Forecast::of(False, Reason::NoRefreshToken, expiry::NO_REFRESH_TOKEN);
    }
    let Some(policy) = f.policy else {
        return Forecast::of(Unknown, Reason::InvalidSpec, expiry::INVALID);
    };
    let (limit, expire_after) = match policy {
        TokenPolicy::ValidUntilRevoked => {
            return Forecast::of(False, Reason::ValidUntilRevoked, expiry::UNTIL_REVOKED);
        }
        TokenPolicy::ExpireAfter(n) => (n, true),
        TokenPolicy::ExpireIfNotUsedFor(n) => (n, false),
    };
    match f.state {
        None | Some(TokenState::Pending) => {
            return Forecast::of(False, Reason::AwaitingAuthorization, expiry::PENDING);
        }
        Some(TokenState::Expired) => {
            return Forecast::of(False, Reason::TokenExpired, expiry::EXPIRED);
        }
        Some(TokenState::Valid | TokenState::Unknown) => {}
    }
    let policy_text = expiry::policy(expire_after, limit);
    if !expire_after {
        // The keep-alive refreshes at the first check after it is due: the longest gap
        // between two uses is the keep-alive plus one check interval.
        if f.keepalive + f.interval < limit {
            return Forecast::of(
                False,
                Reason::KeptAlive,
                expiry::kept_alive(limit, f.keepalive),
            );
        }
        let last_use = f.authorized_at.max(f.last_refreshed_at);
        let expires_at = last_use.and_then(|t| plus(t, limit));
        let stages = stages(&f.lead_times, expires_at, now);
        return Forecast {
            expires_at,
            status: True,
            reason: Reason::KeepAliveTooLong,
            message: expiry::keepalive_too_long(limit, f.keepalive, expires_at, f.relogin),
            lead_time: stages.reached,
            next_change: stages.next,
        };
    }
    let Some(at) = f.authorized_at else {
        return Forecast::of(
            Unknown,
            Reason::ExpiryUnknown,
            expiry::unknown(&policy_text),
        );
    };
    let Some(expires_at) = plus(at, limit) else {
        return Forecast::of(False, Reason::ValidUntilRevoked, expiry::UNTIL_REVOKED);
    };
    let stages = stages(&f.lead_times, Some(expires_at), now);
    let (status, reason, message) = match stages.reached {
        Some(lead) => (
            True,
            Reason::ExpiringSoon,
            expiry::soon(
                expires_at,
                &policy_text,
                f.authorized_by.as_deref(),
                at,
                lead,
                f.relogin,
            ),
        ),
        None => (
            False,
            Reason::ExpiresLater,
            expiry::later(expires_at, &policy_text, f.lead_times.iter().max().copied()),
        ),
    };
    Forecast {
        expires_at: Some(expires_at),
        status,
        reason,
        message,
        lead_time: stages.reached,
        next_change: stages.next,
    }
}

/// Where `now` stands among the lead times before `expires_at`.
struct Stages {
    /// The shortest lead time reached (the expiry itself counts as all of them reached).
    reached: Option<Duration>,
    /// The next lead time or the expiry, after `now`.
    next: Option<Timestamp>,
}

fn stages(lead_times: &[Duration], expires_at: Option<Timestamp>, now: Timestamp) -> Stages {
    let Some(expires_at) = expires_at else {
        return Stages {
            reached: None,
            next: None,
        };
    };
    let mut reached = None;
    let mut next = (expires_at > now).then_some(expires_at);
    for &lead in lead_times {
        let Some(starts) = SignedDuration::try_from(lead)
            .ok()
            .and_then(|d| expires_at.checked_sub(d).ok())
        else {
            // Longer than all time before the expiry: reached since forever.
            reached = Some(reached.map_or(lead, |r: Duration| r.min(lead)));
            continue;
        };
        if starts <= now {
            reached = Some(reached.map_or(lead, |r: Duration| r.min(lead)));
        } else {
            next = Some(next.map_or(starts, |n: Timestamp| n.min(starts)));
        }
    }
    Stages { reached, next }
}
