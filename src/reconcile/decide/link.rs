//! The re-auth link in `status.reauth`: written while a web server org needs a person or its
//! authorization expires soon (`TokenExpiringSoon`), renewed before it expires or when it no
//! longer verifies, removed once the org is Valid and not expiring soon.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use super::Gathered;
use super::status::{self, needs_person};
use crate::crd::{ReauthLink, SalesforceOrgStatus, TokenState};

/// Renew the link in status when less than this remains of it.
pub const LINK_RENEW_BEFORE: Duration = Duration::from_secs(3600);

/// What to do with `status.reauth`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkPlan {
    /// Leave it as it is, present or absent.
    Keep,
    /// Write a new link.
    Issue,
    /// Remove it.
    Remove,
}

fn renew_due(link: &ReauthLink, now: Timestamp) -> bool {
    let remaining = link.expires_at.0.duration_since(now);
    remaining.as_secs() < LINK_RENEW_BEFORE.as_secs() as i64
}

/// How long until a link in status must be renewed.
pub fn renew_in(link: &ReauthLink, now: Timestamp) -> Duration {
    let remaining = link.expires_at.0.duration_since(now).as_secs();
    Duration::from_secs(
        remaining
            .saturating_sub(LINK_RENEW_BEFORE.as_secs() as i64)
            .max(0) as u64,
    )
}

/// Decides `status.reauth` from the state the status is about to have and whether its
/// authorization expires soon. An Unknown org (an outage) keeps a link it has but gets no new
/// one, unless it expires soon. Writing only on these changes keeps steady reconciles from
/// writing status.
pub fn plan(
    web_server: bool,
    links: bool,
    state: Option<TokenState>,
    expiring_soon: bool,
    current: Option<&ReauthLink>,
    current_verifies: bool,
    now: Timestamp,
) -> LinkPlan {
    let usable = current.is_some_and(|l| current_verifies && !renew_due(l, now));
    let wanted = needs_person(web_server, state) || (web_server && expiring_soon);
    if !web_server || !links || (state == Some(TokenState::Valid) && !wanted) {
        return if current.is_some() {
            LinkPlan::Remove
        } else {
            LinkPlan::Keep
        };
    }
    if !wanted && current.is_none() {
        return LinkPlan::Keep;
    }
    if usable {
        LinkPlan::Keep
    } else {
        LinkPlan::Issue
    }
}

/// The person-facing part of the status about to be written: the link, why the last login
/// through it failed, and a Pending message that points to it. Returns how long until the
/// link must be renewed.
pub fn settle(g: &Gathered, status: &mut SalesforceOrgStatus, now: Timestamp) -> Option<Duration> {
    // Rendering never changes the link, so what was verified is what is in `status`.
    let verifies = g.link.verifies;
    let decision = plan(
        g.web_server,
        g.link.served,
        status.state,
        super::forecast::expiring_soon(status),
        status.reauth.as_ref(),
        verifies,
        now,
    );
    match decision {
        LinkPlan::Issue => status.reauth = g.link.fresh.clone(),
        LinkPlan::Remove => status.reauth = None,
        LinkPlan::Keep => {}
    }
    if let Some(failure) = &g.reauth_failure {
        let version = g
            .token_secret
            .as_ref()
            .and_then(|s| s.metadata.resource_version.as_deref());
        status::report_failure(status, failure, g.web_server, version, g.generation, now);
    }
    status::awaiting_with_link(status, g.generation, now);
    status.reauth.as_ref().map(|link| renew_in(link, now))
}
