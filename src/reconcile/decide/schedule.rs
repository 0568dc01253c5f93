//! When to ask Salesforce: at the org's interval (jittered per org), at once when its spec,
//! tokens or a person's request changed, with backoff after failures, and never while renewed
//! tokens wait in memory.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use super::verdict::{FlowKind, Verdict};
use super::{Gathered, HeldTokensState};
use crate::crd::TokenState;
use crate::messages;
use crate::reasons::{Misconfiguration, Reason};
use crate::token_secret::TokenFile;

/// What makes a new check due before its interval: a spec change, new tokens, or a person
/// asking for one.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Fingerprint {
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// The token Secret's resourceVersion.
    pub secret_version: Option<String>,
    /// The check-request annotation's value.
    pub check_request: Option<String>,
}

/// What the operator remembers (in memory) of its last check of an org.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Memo {
    /// When the check ended.
    pub at: Timestamp,
    /// What it was checked against.
    pub fingerprint: Fingerprint,
    /// Consecutive transient failures, for backoff.
    pub failures: u32,
    /// What the check found, so that a reconcile retried after a failed write (a conflict on
    /// a CronJob, an API hiccup) still acts on it without asking Salesforce again.
    pub verdict: Option<Verdict>,
}

/// What to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Nothing to ask Salesforce; this is what the org is.
    Settle(Verdict),
    /// Ask Salesforce.
    Check(CheckKind),
    /// Nothing changed and no check is due for this long.
    Wait(Duration),
    /// Renewed tokens wait in memory because the token Secret refused them: this is what the
    /// org is, Salesforce is not asked, and the write is tried again after this long.
    Held(Verdict, Duration),
    /// This process has not checked the org yet, but its status is [`current`]: the status
    /// stands, and the first check waits this long, for the org's slot.
    Slot(Duration),
}

/// Which Salesforce conversation a check is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// Validate the access token; refresh (web server) or mint (headless) when it is dead.
    /// With `renew_first`, get a new access token before validating (none stored, or the
    /// refresh token needs exercising).
    Validate {
        /// Renew before validating.
        renew_first: bool,
    },
}

/// The longest wait between writes of tokens held in memory: they are the only copy, and a
/// write is cheap.
const HELD_RETRY_MAX: Duration = Duration::from_secs(60);

/// Decides whether to ask Salesforce.
pub fn plan(g: &Gathered, now: Timestamp) -> Plan {
    if let HeldTokensState::StillRefused { error, attempts } = &g.held {
        let wait = backoff(*attempts).min(HELD_RETRY_MAX);
        return Plan::Held(Verdict::not_persisted(error), wait);
    }
    let flow = match &g.flow {
        Ok(flow) => *flow,
        Err(m) => return Plan::Settle(Verdict::Misconfigured(m.clone())),
    };
    let tokens = match &g.tokens {
        TokenFile::Malformed(problem) => {
            return Plan::Settle(Verdict::Misconfigured(Misconfiguration::new(
                Reason::TokenSecretMalformed,
                messages::malformed_token_secret(problem),
            )));
        }
        TokenFile::Missing if flow == FlowKind::WebServer => {
            return Plan::Settle(Verdict::AwaitingAuthorization);
        }
        TokenFile::Missing => None,
        TokenFile::Present(t) => Some(t),
    };
    if g.memo.is_none() && current(g, now) {
        return Plan::Slot(until_slot(g.interval, g.phase, now));
    }
    if let Some(memo) = &g.memo
        && memo.fingerprint == g.fingerprint
    {
        let wait = if memo.failures > 0 {
            backoff(memo.failures)
        } else {
            g.interval
        };
        let elapsed = Duration::try_from(now.duration_since(memo.at)).unwrap_or_default();
        if elapsed < wait && !expiry_due(g, memo, now) {
            return Plan::Wait(wait - elapsed);
        }
    }
    let has_access = tokens.is_some_and(|t| t.access_token.is_some());
    let stale = tokens.and_then(|t| t.issued_at_ms).is_some_and(|ms| {
        let age_ms = now.as_millisecond().saturating_sub(ms);
        age_ms > 0 && (age_ms as u128) > g.keepalive.as_millis()
    });
    let can_refresh = tokens.is_some_and(|t| t.refresh_token.is_some());
    // Without a memo (a new leader, a restart) a forecast expiry already passed counts too.
    let at_expiry = match &g.memo {
        Some(m) => expiry_due(g, m, now),
        None => g
            .status
            .authorization_expires_at
            .as_ref()
            .is_some_and(|t| t.0 <= now),
    };
    let renew_first =
        !has_access || (flow == FlowKind::WebServer && (stale || at_expiry) && can_refresh);
    Plan::Check(CheckKind::Validate { renew_first })
}

/// Whether the status still says what a check would: it describes this generation, a
/// settled state (Valid or Expired), the token Secret as it is now, and no check request
/// waits ([`unanswered_request`]); and no tokens wait in memory, and no CronJob carries a
/// hold the status does not record. Then a restarted operator
/// (or a new leader) needs no check before the org's slot: the status was written when it
/// last changed, and steady checks write nothing, so this rule costs no write. A status whose
/// forecast expiry (`authorizationExpiresAt`) has passed is not current: the refresh token is
/// tried at once.
pub fn current(g: &Gathered, now: Timestamp) -> bool {
    let s = &g.status;
    let past_expiry = s
        .authorization_expires_at
        .as_ref()
        .is_some_and(|t| t.0 <= now);
    !past_expiry
        && s.observed_generation.is_some()
        && s.observed_generation == g.generation
        && matches!(s.state, Some(TokenState::Valid | TokenState::Expired))
        && g.fingerprint.secret_version.is_some()
        && s.token_secret_version == g.fingerprint.secret_version
        && !unanswered_request(g, now)
        && g.held == HeldTokensState::None
        && !g.unrecorded_holds
}

/// Whether the forecast expiry (`status.authorizationExpiresAt`) has come since the last
/// check: the refresh token is then tried at once, so the org turns Expired when the policy
/// ends it rather than when its access token happens to lapse.
fn expiry_due(g: &Gathered, memo: &Memo, now: Timestamp) -> bool {
    g.status
        .authorization_expires_at
        .as_ref()
        .is_some_and(|t| memo.at < t.0 && t.0 <= now)
}

/// Whether a person asked for this check: a new check-request annotation value since the
/// last check this process made; or, before this process checked the org, a request
/// [`unanswered_request`] counts as waiting.
pub fn requested(g: &Gathered, now: Timestamp) -> bool {
    match &g.memo {
        Some(m) => {
            g.fingerprint.check_request.is_some()
                && m.fingerprint.check_request != g.fingerprint.check_request
        }
        None => unanswered_request(g, now),
    }
}

/// Whether a check request may still wait for its answer, as a process that has not checked
/// the org yet can tell without a record: one younger than the check interval (or whose
/// value is not a timestamp) may have come while no operator ran. An older one was answered,
/// or the org was checked since at its slot. Recording answers in status instead would cost
/// a write per request.
fn unanswered_request(g: &Gathered, now: Timestamp) -> bool {
    let Some(value) = &g.fingerprint.check_request else {
        return false;
    };
    // RFC 3339 (what `sforg-operator check` and the dashboard write) or Unix seconds.
    let at = value.parse::<Timestamp>().ok().or_else(|| {
        let secs = value.trim().parse::<i64>().ok()?;
        Timestamp::from_second(secs).ok()
    });
    match at {
        Some(at) => {
            let age = Duration::try_from(now.duration_since(at)).unwrap_or_default();
            age < g.interval
        }
        None => true,
    }
}

/// Where in each interval an org's checks fall after a restart: a stable per-org offset,
/// so a restarted operator checks at the steady rate rather than all orgs at once.
pub fn phase(interval: Duration, uid: &str) -> Duration {
    let interval_ms = interval.as_millis() as u64;
    if interval_ms == 0 {
        return Duration::ZERO;
    }
    // The high bits: the low ones already pick the jitter.
    Duration::from_millis((fnv1a(uid) >> 20) % interval_ms)
}

/// How long from `now` until the org's next slot: the next instant whose offset within
/// `interval` (counted from the Unix epoch) is `phase`.
pub fn until_slot(interval: Duration, phase: Duration, now: Timestamp) -> Duration {
    let interval_ms = interval.as_millis() as i64;
    if interval_ms == 0 {
        return Duration::ZERO;
    }
    let into = now.as_millisecond().rem_euclid(interval_ms);
    let wait = (phase.as_millis() as i64 - into).rem_euclid(interval_ms);
    Duration::from_millis(wait as u64)
}

/// FNV-1a: tiny, stable across releases and platforms, and good enough to spread orgs.
fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// Backoff after consecutive transient failures: 5s, 10s, 20s ... at most 5 minutes.
pub fn backoff(failures: u32) -> Duration {
    crate::backoff::exponential(
        Duration::from_secs(5),
        failures.saturating_sub(1),
        Duration::from_secs(300),
    )
}

/// A per-org jitter of up to a tenth of the interval, stable across restarts, so thousands
/// of orgs created together do not check together.
pub fn jittered(interval: Duration, uid: &str) -> Duration {
    let h = fnv1a(uid);
    let tenth = interval.as_millis() as u64 / 10;
    let extra = if tenth == 0 { 0 } else { h % tenth };
    interval.saturating_sub(Duration::from_millis(tenth / 2)) + Duration::from_millis(extra)
}

/// How long until the next reconcile of an org after a verdict.
pub fn requeue_after(verdict: &Verdict, failures: u32, interval: Duration) -> Duration {
    match verdict {
        Verdict::Unavailable { .. } => backoff(failures.max(1)),
        Verdict::RetrySoon => Duration::from_secs(2),
        _ => interval,
    }
}
