//! Rendering what the org is as its status: state, the three token conditions (`TokenValid`,
//! its complement `TokenExpired`, and `Ready` for GitOps tools), what is known of the org, a
//! failed login's reason while a person is needed, and `DependentsSuspended`.
//!
//! Every function keeps what it does not change, and re-applying the same facts gives the same
//! status, so a steady org writes nothing.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::verdict::Verdict;
use crate::conditions::{self, Desired, Status};
use crate::crd::{SalesforceOrgStatus, TokenState};
use crate::messages;
use crate::reasons::Reason;
use crate::reauth_record::ReauthFailure;

/// Whether an org waits for a person: a web server org with no tokens yet, or expired.
pub fn needs_person(web_server: bool, state: Option<TokenState>) -> bool {
    web_server && matches!(state, Some(TokenState::Pending | TokenState::Expired))
}

/// What a verdict says of the token conditions: state, the three statuses, reason, message.
struct Rendering {
    state: TokenState,
    valid: Status,
    expired: Status,
    ready: Status,
    reason: Reason,
    message: String,
}

/// How a verdict reads as conditions; `None` for a verdict that changes nothing.
fn rendering(verdict: &Verdict) -> Option<Rendering> {
    use Status::{False, True, Unknown};
    let (state, valid, expired, ready, reason, message) = match verdict {
        Verdict::Valid { identity, .. } => (
            TokenState::Valid,
            True,
            False,
            True,
            Reason::TokenValid,
            messages::valid(&identity.username, &identity.org_id),
        ),
        Verdict::Expired { reason, message } => (
            TokenState::Expired,
            False,
            True,
            False,
            *reason,
            message.clone(),
        ),
        Verdict::Unavailable { reason, message } => (
            TokenState::Unknown,
            Unknown,
            Unknown,
            Unknown,
            *reason,
            message.clone(),
        ),
        Verdict::Misconfigured(m) => (
            TokenState::Unknown,
            False,
            False,
            False,
            m.reason,
            m.message.clone(),
        ),
        Verdict::AwaitingAuthorization => (
            TokenState::Pending,
            False,
            False,
            False,
            Reason::AwaitingAuthorization,
            messages::awaiting_authorization(false).to_owned(),
        ),
        Verdict::RetrySoon => return None,
    };
    Some(Rendering {
        state,
        valid,
        expired,
        ready,
        reason,
        message,
    })
}

/// Renders a verdict as the status it implies, keeping what it does not change.
pub fn render(
    current: &SalesforceOrgStatus,
    verdict: &Verdict,
    generation: Option<i64>,
    now: Timestamp,
) -> SalesforceOrgStatus {
    let t = Time(now);
    let mut s = current.clone();
    s.observed_generation = generation;
    let Some(Rendering {
        state,
        valid,
        expired,
        ready,
        reason,
        message,
    }) = rendering(verdict)
    else {
        return s;
    };
    if s.state != Some(state) {
        s.last_checked_at = Some(t.clone());
    }
    s.state = Some(state);
    for (type_, status) in [
        (conditions::TOKEN_VALID, valid),
        (conditions::TOKEN_EXPIRED, expired),
        (conditions::READY, ready),
    ] {
        let desired = Desired {
            type_,
            status,
            reason,
            message: message.clone(),
        };
        conditions::set(&mut s.conditions, desired, generation, &t);
    }
    if let Verdict::Valid {
        identity,
        instance_url,
        renewed,
    } = verdict
    {
        s.org_id = Some(identity.org_id.clone());
        s.username = Some(identity.username.clone());
        if let Some(url) = instance_url {
            s.instance_url = Some(url.clone());
        }
        if *renewed {
            s.last_refreshed_at = Some(t.clone());
            s.last_checked_at = Some(t);
        }
    }
    s
}

/// Sets the reason and message of the token conditions, keeping their statuses.
fn explain(
    status: &mut SalesforceOrgStatus,
    reason: Reason,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    let t = Time(now);
    for type_ in [
        conditions::TOKEN_VALID,
        conditions::TOKEN_EXPIRED,
        conditions::READY,
    ] {
        let Some(current) = conditions::get(&status.conditions, type_) else {
            continue;
        };
        let desired = Desired {
            type_,
            status: Status::parse(&current.status),
            reason,
            message: message.to_owned(),
        };
        conditions::set(&mut status.conditions, desired, generation, &t);
    }
}

/// Reports a failed re-auth on the conditions while the org needs a person and its tokens are
/// still those the failure saw (`tokens_version`: the token Secret's resourceVersion now).
pub fn report_failure(
    status: &mut SalesforceOrgStatus,
    failure: &ReauthFailure,
    web_server: bool,
    tokens_version: Option<&str>,
    generation: Option<i64>,
    now: Timestamp,
) {
    if !needs_person(web_server, status.state) || failure.tokens != tokens_version.unwrap_or("") {
        return;
    }
    let org = status.org_id.clone().unwrap_or_else(|| "the org".into());
    if let Some((reason, message)) =
        messages::failed_login(failure.reason, &failure.description, &org)
    {
        explain(status, reason, &message, generation, now);
    }
}

/// Points a Pending org's message to its link once there is one.
pub fn awaiting_with_link(
    status: &mut SalesforceOrgStatus,
    generation: Option<i64>,
    now: Timestamp,
) {
    let awaiting = conditions::get(&status.conditions, conditions::READY)
        .is_some_and(|c| c.reason == Reason::AwaitingAuthorization.as_str());
    if status.state == Some(TokenState::Pending) && status.reauth.is_some() && awaiting {
        explain(
            status,
            Reason::AwaitingAuthorization,
            messages::awaiting_authorization(true),
            generation,
            now,
        );
    }
}

/// The `DependentsSuspended` condition and `suspendedCronJobs`: what the org holds, and
/// whether someone else keeps resuming it.
pub fn dependents(
    status: &mut SalesforceOrgStatus,
    held: Vec<String>,
    overridden: &[String],
    generation: Option<i64>,
    now: Timestamp,
) {
    use crate::conditions::DEPENDENTS_SUSPENDED;
    let desired = |status, reason, message| Desired {
        type_: DEPENDENTS_SUSPENDED,
        status,
        reason,
        message,
    };
    let condition = if !overridden.is_empty() {
        Some(desired(
            Status::False,
            Reason::ResumedByAnotherWriter,
            messages::resumed_by_another_writer(overridden),
        ))
    } else if !held.is_empty() {
        Some(desired(
            Status::True,
            Reason::TokenExpired,
            messages::held(&held),
        ))
    } else if conditions::get(&status.conditions, DEPENDENTS_SUSPENDED).is_some() {
        Some(desired(
            Status::False,
            Reason::NoneHeld,
            messages::NONE_HELD.into(),
        ))
    } else {
        None
    };
    if let Some(condition) = condition {
        conditions::set(&mut status.conditions, condition, generation, &Time(now));
    }
    status.suspended_cron_jobs = held;
}
