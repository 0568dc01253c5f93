//! What an org is, from what Salesforce answered: Valid (and pinned to its org), Expired (a
//! person must act), Unavailable (try later, nothing paused), or Misconfigured.

use super::Gathered;
use crate::messages::{self, Relogin};
use crate::pinning;
use crate::reasons::{Misconfiguration, Reason};
use crate::salesforce::{Identity, SfError, TransientReason};

/// The flow of an org, without its settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowKind {
    /// A person authorizes; the operator refreshes.
    WebServer,
    /// The operator mints with a signed assertion.
    JwtBearer,
    /// The operator mints with the app's secret.
    ClientCredentials,
}

/// What a check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckResult {
    /// Whose token it is, or why not.
    pub outcome: Result<Identity, SfError>,
    /// A new access token was obtained and stored.
    pub renewed: bool,
    /// The instance URL in use.
    pub instance_url: Option<String>,
}

/// What the org is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Salesforce accepts the tokens.
    Valid {
        /// Whose they are.
        identity: Identity,
        /// The API host.
        instance_url: Option<String>,
        /// A new access token was stored.
        renewed: bool,
    },
    /// A person (or an admin) must act.
    Expired {
        /// Why.
        reason: Reason,
        /// What to do.
        message: String,
    },
    /// Salesforce could not answer; nothing is paused for this.
    Unavailable {
        /// Why.
        reason: Reason,
        /// What happened.
        message: String,
    },
    /// Fix the configuration.
    Misconfigured(Misconfiguration),
    /// A web server org with no tokens yet.
    AwaitingAuthorization,
    /// Another refresh of the same token is running at Salesforce: keep the status, retry soon.
    RetrySoon,
}

impl Verdict {
    /// The verdict as re-applied later: a renewal is reported once, so re-applying it writes
    /// nothing new.
    pub fn settled(&self) -> Verdict {
        match self {
            Verdict::Valid {
                identity,
                instance_url,
                ..
            } => Verdict::Valid {
                identity: identity.clone(),
                instance_url: instance_url.clone(),
                renewed: false,
            },
            other => other.clone(),
        }
    }

    /// What an org is while renewed tokens wait in memory: not known to work from the Secret
    /// (backups reading it may fail), not lost, nothing paused. `error` says why the write
    /// failed.
    pub fn not_persisted(error: &str) -> Verdict {
        Verdict::Unavailable {
            reason: Reason::TokenNotPersisted,
            message: messages::not_persisted(error),
        }
    }
}

/// How this org gets new tokens, as its messages say it.
pub fn relogin(g: &Gathered) -> Relogin {
    // A misconfigured org is not Expired; the wording of its messages matters little.
    let web_server = matches!(g.flow, Ok(FlowKind::WebServer) | Err(_));
    Relogin::for_org(web_server, g.link.served)
}

/// Turns a check's result into what the org is.
pub fn of(g: &Gathered, result: &CheckResult) -> Verdict {
    match &result.outcome {
        Ok(identity) => {
            let expected = g.expected_org_id.as_deref();
            let seen = g.status.org_id.as_deref();
            if let Err(wrong) = pinning::check(expected, seen, &identity.org_id) {
                return Verdict::Expired {
                    reason: Reason::WrongOrg,
                    message: messages::wrong_org(
                        &wrong.got,
                        &wrong.want,
                        wrong.expected_set,
                        relogin(g),
                    ),
                };
            }
            Verdict::Valid {
                identity: identity.clone(),
                instance_url: result.instance_url.clone(),
                renewed: result.renewed,
            }
        }
        Err(SfError::AuthorizationLost {
            reason,
            description,
        }) => {
            let org = g.status.org_id.as_deref().unwrap_or("the org");
            Verdict::Expired {
                reason: Reason::from(*reason),
                message: messages::lost(*reason, org, description, relogin(g)),
            }
        }
        Err(SfError::Transient {
            reason: TransientReason::ConcurrentRefresh,
            ..
        }) => Verdict::RetrySoon,
        Err(SfError::Transient {
            reason: TransientReason::ClockSkew,
            detail,
        }) => Verdict::Unavailable {
            reason: Reason::ClockSkew,
            message: messages::clock_skew(detail),
        },
        Err(SfError::Transient { reason, detail }) => Verdict::Unavailable {
            reason: if *reason == TransientReason::RateLimited {
                Reason::RateLimited
            } else {
                Reason::SalesforceUnavailable
            },
            message: messages::unavailable(detail),
        },
        Err(SfError::AccessTokenInvalid) => Verdict::Unavailable {
            reason: Reason::SalesforceUnavailable,
            message: messages::JUST_ISSUED_TOKEN_REFUSED.into(),
        },
        Err(SfError::HostNotAllowed(e)) => Verdict::Misconfigured(Misconfiguration::new(
            Reason::HostNotAllowed,
            messages::host_not_allowed(&e.to_string()),
        )),
        Err(SfError::NotMyDomain { description }) => Verdict::Misconfigured(Misconfiguration::new(
            Reason::LoginUrlNotMyDomain,
            messages::not_my_domain(description),
        )),
        Err(SfError::BadPrivateKey(e)) => Verdict::Misconfigured(Misconfiguration::new(
            Reason::InvalidPrivateKey,
            messages::bad_private_key(&e.to_string()),
        )),
    }
}
