//! The reconcile decision, as plain functions of what was observed and `now`.
//!
//! [`plan`] says whether Salesforce must be asked at all; [`verdict`] turns the answer into
//! what the org is; [`desired_status`] renders that as status. No I/O happens here, so every
//! rule is a row in a table test.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::conditions::{self, Desired, Status};
use crate::crd::{ReauthLink, SalesforceOrgStatus, TokenState};
use crate::salesforce::{Identity, LostReason, SfError, TransientReason};
use crate::secret::SecretString;
use crate::token_secret::TokenFile;

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
    /// When it was checked.
    pub at: Timestamp,
    /// What it was checked against.
    pub fingerprint: Fingerprint,
    /// Consecutive transient failures, for backoff.
    pub failures: u32,
    /// What the check found, so that a reconcile retried after a failed write (a conflict on
    /// a CronJob, an API hiccup) still acts on it without asking Salesforce again.
    pub verdict: Option<Verdict>,
}

/// A problem the schema or the cluster admin's settings should fix, found before any call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Misconfiguration {
    /// CamelCase reason.
    pub reason: &'static str,
    /// What to do.
    pub message: String,
}

/// Everything the decision needs.
#[derive(Clone, Debug)]
pub struct Observed<'a> {
    /// The org's flow, or why it cannot be used.
    pub flow: Result<FlowKind, Misconfiguration>,
    /// The token Secret's contents.
    pub tokens: &'a TokenFile,
    /// The current status.
    pub status: &'a SalesforceOrgStatus,
    /// `spec.expectedOrgId`.
    pub expected_org_id: Option<&'a str>,
    /// The last check, if this process made one.
    pub memo: Option<&'a Memo>,
    /// The current fingerprint.
    pub fingerprint: Fingerprint,
    /// `spec.checkInterval`, jitter applied.
    pub interval: Duration,
    /// Refresh at least this often, so an idle-expiry policy never kills the refresh token.
    pub keepalive: Duration,
    /// The operator serves re-auth links (it has a public URL), so messages may point to one.
    pub reauth_links: bool,
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
        /// CamelCase reason.
        reason: &'static str,
        /// What to do.
        message: String,
    },
    /// Salesforce could not answer; nothing is paused for this.
    Unavailable {
        /// CamelCase reason.
        reason: &'static str,
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
}

/// Decides whether to ask Salesforce.
pub fn plan(o: &Observed<'_>, now: Timestamp) -> Plan {
    let flow = match &o.flow {
        Ok(flow) => *flow,
        Err(m) => return Plan::Settle(Verdict::Misconfigured(m.clone())),
    };
    let tokens = match o.tokens {
        TokenFile::Malformed(problem) => {
            return Plan::Settle(Verdict::Misconfigured(Misconfiguration {
                reason: "TokenSecretMalformed",
                message: format!(
                    "The token Secret is unusable ({problem}); the operator leaves it untouched. \
                     Fix or delete it; a web server org then asks for re-authorization."
                ),
            }));
        }
        TokenFile::Missing if flow == FlowKind::WebServer => {
            return Plan::Settle(Verdict::AwaitingAuthorization);
        }
        TokenFile::Missing => None,
        TokenFile::Present(t) => Some(t),
    };
    if let Some(memo) = o.memo
        && memo.fingerprint == o.fingerprint
    {
        let wait = if memo.failures > 0 {
            backoff(memo.failures)
        } else {
            o.interval
        };
        let elapsed =
            std::time::Duration::try_from(now.duration_since(memo.at)).unwrap_or_default();
        if elapsed < wait {
            return Plan::Wait(wait - elapsed);
        }
    }
    let has_access = tokens.is_some_and(|t| t.access_token.is_some());
    let stale = tokens.and_then(|t| t.issued_at_ms).is_some_and(|ms| {
        let age_ms = now.as_millisecond().saturating_sub(ms);
        age_ms > 0 && (age_ms as u128) > o.keepalive.as_millis()
    });
    let can_refresh = tokens.is_some_and(|t| t.refresh_token.is_some());
    let renew_first = !has_access || (flow == FlowKind::WebServer && stale && can_refresh);
    Plan::Check(CheckKind::Validate { renew_first })
}

/// Backoff after consecutive transient failures: 5s, 10s, 20s ... at most 5 minutes.
pub fn backoff(failures: u32) -> Duration {
    let secs = 5u64.saturating_mul(1u64 << failures.saturating_sub(1).min(6));
    Duration::from_secs(secs.min(300))
}

/// A per-org jitter of up to a tenth of the interval, stable across restarts, so thousands
/// of orgs created together do not check together.
pub fn jittered(interval: Duration, uid: &str) -> Duration {
    // FNV-1a: tiny, stable, and good enough to spread orgs.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in uid.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    let tenth = interval.as_millis() as u64 / 10;
    let extra = if tenth == 0 { 0 } else { h % tenth };
    interval.saturating_sub(Duration::from_millis(tenth / 2)) + Duration::from_millis(extra)
}

/// Turns a check's result into what the org is.
pub fn verdict(o: &Observed<'_>, result: &CheckResult) -> Verdict {
    match &result.outcome {
        Ok(identity) => {
            let pinned = o.expected_org_id.or(o.status.org_id.as_deref());
            if let Some(want) = pinned
                && !same_org_id(want, &identity.org_id)
            {
                return Verdict::Expired {
                    reason: "WrongOrg",
                    message: wrong_org_message(
                        &identity.org_id,
                        want,
                        o.expected_org_id.is_some(),
                        relogin(o),
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
            let org = o.status.org_id.as_deref().unwrap_or("the org");
            Verdict::Expired {
                reason: lost_reason_name(*reason),
                message: lost_message(*reason, org, description, relogin(o)),
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
            reason: CLOCK_SKEW,
            message: format!(
                "{detail}. Fix the time synchronization (NTP) of the node the operator runs on; \
                 the authorization is not lost and dependent CronJobs are not paused for this."
            ),
        },
        Err(SfError::Transient { reason, detail }) => Verdict::Unavailable {
            reason: if *reason == TransientReason::RateLimited {
                "RateLimited"
            } else {
                "SalesforceUnavailable"
            },
            message: format!(
                "Salesforce could not be reached or did not answer ({detail}); retrying with \
                 backoff. Dependent CronJobs are not paused for this."
            ),
        },
        Err(SfError::AccessTokenInvalid) => Verdict::Unavailable {
            reason: "SalesforceUnavailable",
            message: "Salesforce refused an access token it had just issued; retrying.".into(),
        },
        Err(SfError::HostNotAllowed(e)) => Verdict::Misconfigured(Misconfiguration {
            reason: "HostNotAllowed",
            message: format!("{e}. Nothing was sent to that host."),
        }),
        Err(SfError::BadPrivateKey(e)) => Verdict::Misconfigured(Misconfiguration {
            reason: "InvalidPrivateKey",
            message: format!(
                "The JWT bearer private key is unusable ({e}): store a PEM RSA private key in \
                 the Secret named by spec.auth.jwtBearer.privateKeyRef."
            ),
        }),
    }
}

/// The reason while renewed tokens wait in memory because the token Secret refused them.
pub const TOKEN_NOT_PERSISTED: &str = "TokenNotPersisted";
/// The reason when Salesforce refuses a JWT assertion as expired because of the node's clock.
pub const CLOCK_SKEW: &str = "ClockSkew";

/// What an org is while renewed tokens wait in memory: not known to work from the Secret
/// (backups reading it may fail), not lost, nothing paused. `error` says why the write failed.
pub fn not_persisted(error: &str) -> Verdict {
    Verdict::Unavailable {
        reason: TOKEN_NOT_PERSISTED,
        message: format!(
            "Salesforce issued new tokens but the token Secret could not be written ({error}). \
             The operator keeps them in memory and writes them before it talks to Salesforce \
             again. Let the operator update the Secret (check admission policies, RBAC and \
             immutable: true; an immutable Secret can be deleted, the operator then writes a new \
             one). Do not restart the operator meanwhile: with refresh token rotation the new \
             refresh token exists only in its memory."
        ),
    }
}

/// What to do with tokens held in memory because the token Secret refused them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeldPlan {
    /// Write them: the Secret still holds what they replace, is gone, or is unreadable.
    Write,
    /// The Secret already holds them (a write that looked failed went through).
    AlreadyStored,
    /// Someone stored other tokens since (a person logged in again): ours are dropped unused.
    Superseded,
}

/// Decides what to do with held tokens (`held_refresh` / `held_access`, replacing
/// `replaced`, the refresh token that was in the Secret; `None` for headless flows) given what
/// the Secret holds now.
pub fn held_plan(
    stored: &TokenFile,
    replaced: Option<&SecretString>,
    held_refresh: Option<&SecretString>,
    held_access: &SecretString,
) -> HeldPlan {
    let TokenFile::Present(t) = stored else {
        return HeldPlan::Write;
    };
    let ours = match held_refresh {
        Some(rt) => t.refresh_token.as_ref() == Some(rt),
        None => t.access_token.as_ref() == Some(held_access),
    };
    if ours {
        HeldPlan::AlreadyStored
    } else if replaced.is_some() && t.refresh_token.as_ref() != replaced {
        HeldPlan::Superseded
    } else {
        HeldPlan::Write
    }
}

/// 15- and 18-character ids name the same org when the first 15 characters match.
pub fn same_org_id(a: &str, b: &str) -> bool {
    a.get(..15).unwrap_or(a) == b.get(..15).unwrap_or(b)
}

/// The condition reason for a lost authorization.
pub fn lost_reason_name(reason: LostReason) -> &'static str {
    match reason {
        LostReason::RefreshTokenRevoked => "RefreshTokenRevoked",
        LostReason::UserInactive => "UserInactive",
        LostReason::UserLocked => "UserLocked",
        LostReason::ConnectedAppNotInstalled => "ConnectedAppNotInstalled",
        LostReason::ConnectedAppBlocked => "ConnectedAppBlocked",
        LostReason::InvalidClientId => "InvalidClientId",
        LostReason::InvalidClientSecret => "InvalidClientSecret",
        LostReason::UserNotApproved => "UserNotApproved",
        LostReason::IpRestricted => "IpRestricted",
        LostReason::InvalidAudience => "InvalidAudience",
        LostReason::NoClientCredentialsUser => "NoClientCredentialsUser",
        LostReason::RefreshSecretRequired => "RefreshSecretRequired",
        LostReason::WebServerSecretRequired => "WebServerSecretRequired",
        LostReason::Refused => "AuthorizationRefused",
    }
}

/// How new tokens get in place once the cause is fixed, as messages say it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relogin {
    /// A person opens the link in `status.reauth.url`.
    Link,
    /// A web server org, but the operator serves no links (it has no public URL).
    Manual,
    /// A headless flow: the operator gets a token itself.
    Headless,
}

impl Relogin {
    fn then(self) -> &'static str {
        match self {
            Relogin::Link => "open the re-auth link in status.reauth.url and log in",
            Relogin::Manual => {
                "log in again and store the new tokens in the Secret named by \
                 spec.tokenSecretRef (this operator serves no re-auth links: it runs without \
                 --public-url)"
            }
            Relogin::Headless => {
                "the operator gets a new token at its next check (annotate the org with \
                 orgtokens.dev/check-requested-at to check now)"
            }
        }
    }
}

/// How an org gets new tokens: links only for web server orgs of an operator that serves them.
pub fn relogin(o: &Observed<'_>) -> Relogin {
    match (&o.flow, o.reauth_links) {
        (Ok(FlowKind::WebServer), true) => Relogin::Link,
        (Ok(FlowKind::WebServer), false) => Relogin::Manual,
        (Ok(_), _) => Relogin::Headless,
        // A misconfigured org is not Expired; the wording matters little.
        (Err(_), links) => {
            if links {
                Relogin::Link
            } else {
                Relogin::Manual
            }
        }
    }
}

/// The message for tokens of another org than the pinned one.
pub fn wrong_org_message(got: &str, want: &str, expected_set: bool, relogin: Relogin) -> String {
    let how = if expected_set {
        "change spec.expectedOrgId if the new org is intended"
    } else {
        "if this is a refreshed sandbox or an intended move, set spec.expectedOrgId to the new \
         org id to accept it deliberately"
    };
    let right_org = match relogin {
        Relogin::Headless => "connect the right org (check spec.auth and spec.loginUrl)".to_owned(),
        r => format!("log in to the right org ({})", r.then()),
    };
    format!(
        "The tokens belong to org {got} but this resource is pinned to org {want}: {right_org}, or {how}."
    )
}

fn lost_message(reason: LostReason, org: &str, description: &str, relogin: Relogin) -> String {
    let then = relogin.then();
    let what = match reason {
        LostReason::RefreshTokenRevoked => format!(
            "Salesforce no longer accepts the refresh token for {org} (expired by the refresh \
             token policy of the Connected App or External Client App, revoked from its OAuth \
             Usage page, or reused after rotation): {then}."
        ),
        LostReason::UserInactive => format!(
            "The Salesforce user is deactivated in {org}: reactivate it (or use another user), \
             then {then}."
        ),
        LostReason::UserLocked => {
            format!("The Salesforce user is locked out of {org}: unlock it in Setup, then {then}.")
        }
        LostReason::ConnectedAppNotInstalled => format!(
            "The Connected App is not installed in {org}: install it (Setup > Connected Apps \
             OAuth Usage > Install) or give the user the permission \"Approve Uninstalled \
             Connected Apps\", then {then}. (An External Client App needs no installation: \
             create it in {org} itself.)"
        ),
        LostReason::ConnectedAppBlocked => format!(
            "An administrator blocked the Connected App or External Client App in {org}: \
             unblock it (Setup > Connected Apps OAuth Usage), then {then}."
        ),
        LostReason::InvalidClientId => "Salesforce does not know this consumer key: check the \
             client id in spec.auth against the Connected App or External Client App (for an \
             External Client App: External Client App Manager > the app > Settings > OAuth \
             Settings > Consumer Key and Secret). A new app can take minutes to propagate."
            .to_owned(),
        LostReason::InvalidClientSecret => "Salesforce refused the consumer secret: update the \
             Secret named by clientSecretRef with the current consumer secret of the Connected \
             App or External Client App (for an External Client App: Settings > OAuth Settings \
             > Consumer Key and Secret)."
            .to_owned(),
        LostReason::UserNotApproved => format!(
            "The user is not approved for the Connected App or External Client App in {org}: \
             with Permitted Users \"Admin approved users are pre-authorized\", add the user's \
             profile or one of the user's permission sets to the app (Connected App: Manage > \
             Profiles or Permission Sets; External Client App: Policies tab > OAuth Policies, \
             then assign that permission set to the user), then {then}."
        ),
        LostReason::IpRestricted => format!(
            "Salesforce refuses logins from the operator's network for {org}: relax IP \
             restrictions in the OAuth policies of the Connected App or External Client App \
             (IP Relaxation), or add the operator's egress IPs to the org's trusted ranges."
        ),
        LostReason::InvalidAudience => "The JWT audience does not match the org type: use \
             loginUrl https://test.salesforce.com for sandboxes and https://login.salesforce.com \
             for production."
            .to_owned(),
        LostReason::NoClientCredentialsUser => "The Connected App or External Client App has \
             no run-as user for the client credentials flow: set Run As in its OAuth policies \
             (External Client App: Settings > OAuth Settings > Flow Enablement > Enable Client \
             Credentials Flow, then Policies tab > OAuth Policies > Run As)."
            .to_owned(),
        LostReason::RefreshSecretRequired => format!(
            "Salesforce requires the consumer secret to refresh the token for {org}, and \
             spec.auth.webServer has no clientSecretRef: add clientSecretRef (a Secret holding \
             the app's consumer secret), or clear \"Require secret for Refresh Token Flow\" \
             (External Client App: Settings > OAuth Settings > Security; Connected App: API \
             (Enable OAuth Settings)). The refresh token itself is still good: the next check \
             uses it again."
        ),
        LostReason::WebServerSecretRequired => format!(
            "Salesforce requires the consumer secret to finish a login for {org}, and \
             spec.auth.webServer has no clientSecretRef: add clientSecretRef (a Secret holding \
             the app's consumer secret), or clear \"Require secret for Web Server Flow\" \
             (External Client App: Settings > OAuth Settings > Security; Connected App: API \
             (Enable OAuth Settings)), then {then}."
        ),
        LostReason::Refused => format!(
            "Salesforce refused the authorization for {org}: check the settings and policies \
             of the Connected App or External Client App, then {then}."
        ),
    };
    if description.is_empty() {
        what
    } else {
        format!("{what} (Salesforce said: {description})")
    }
}

/// Renders a verdict as the status it implies, keeping what it does not change.
pub fn desired_status(
    current: &SalesforceOrgStatus,
    verdict: &Verdict,
    generation: Option<i64>,
    now: Timestamp,
) -> SalesforceOrgStatus {
    let t = Time(now);
    let mut s = current.clone();
    s.observed_generation = generation;
    let (state, valid, expired, ready, reason, message) = match verdict {
        Verdict::Valid { identity, .. } => (
            TokenState::Valid,
            Status::True,
            Status::False,
            Status::True,
            "TokenValid",
            format!(
                "Salesforce accepts the token for {} in org {}.",
                identity.username, identity.org_id
            ),
        ),
        Verdict::Expired { reason, message } => (
            TokenState::Expired,
            Status::False,
            Status::True,
            Status::False,
            *reason,
            message.clone(),
        ),
        Verdict::Unavailable { reason, message } => (
            TokenState::Unknown,
            Status::Unknown,
            Status::Unknown,
            Status::Unknown,
            *reason,
            message.clone(),
        ),
        Verdict::Misconfigured(m) => (
            TokenState::Unknown,
            Status::False,
            Status::False,
            Status::False,
            m.reason,
            m.message.clone(),
        ),
        Verdict::AwaitingAuthorization => (
            TokenState::Pending,
            Status::False,
            Status::False,
            Status::False,
            AWAITING_AUTHORIZATION,
            "No tokens yet: a person has to log into Salesforce for this org; the tokens of \
             that login go into the Secret named by spec.tokenSecretRef."
                .to_owned(),
        ),
        Verdict::RetrySoon => return s,
    };
    if s.state != Some(state) {
        s.last_checked_at = Some(t.clone());
    }
    s.state = Some(state);
    let cond = |type_, status| Desired {
        type_,
        status,
        reason: reason.to_owned(),
        message: message.clone(),
    };
    conditions::set(
        &mut s.conditions,
        cond(conditions::TOKEN_VALID, valid),
        generation,
        &t,
    );
    conditions::set(
        &mut s.conditions,
        cond(conditions::TOKEN_EXPIRED, expired),
        generation,
        &t,
    );
    conditions::set(
        &mut s.conditions,
        cond(conditions::READY, ready),
        generation,
        &t,
    );
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

/// How long until the next reconcile of an org after a verdict.
pub fn requeue_after(verdict: &Verdict, failures: u32, interval: Duration) -> Duration {
    match verdict {
        Verdict::Unavailable { .. } => backoff(failures.max(1)),
        Verdict::RetrySoon => Duration::from_secs(2),
        _ => interval,
    }
}

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

/// Whether an org waits for a person: a web server org with no tokens yet, or expired.
pub fn needs_person(web_server: bool, state: Option<TokenState>) -> bool {
    web_server && matches!(state, Some(TokenState::Pending | TokenState::Expired))
}

fn renew_due(link: &ReauthLink, now: Timestamp) -> bool {
    let remaining = link.expires_at.0.duration_since(now);
    remaining.as_secs() < LINK_RENEW_BEFORE.as_secs() as i64
}

/// How long until a link in status must be renewed.
pub fn link_renew_in(link: &ReauthLink, now: Timestamp) -> Duration {
    let remaining = link.expires_at.0.duration_since(now).as_secs();
    Duration::from_secs(
        remaining
            .saturating_sub(LINK_RENEW_BEFORE.as_secs() as i64)
            .max(0) as u64,
    )
}

/// Decides `status.reauth` from the state the status is about to have. A link is written while
/// a web server org needs a person, renewed when under an hour of it remains or when it no
/// longer verifies (new key or public URL), and removed once the org is Valid. An Unknown org
/// (an outage) keeps a link it has but gets no new one. Writing only on these changes keeps
/// steady reconciles from writing status.
pub fn link_plan(
    web_server: bool,
    links: bool,
    state: Option<TokenState>,
    current: Option<&ReauthLink>,
    current_verifies: bool,
    now: Timestamp,
) -> LinkPlan {
    let usable = current.is_some_and(|l| current_verifies && !renew_due(l, now));
    if !web_server || !links || state == Some(TokenState::Valid) {
        return if current.is_some() {
            LinkPlan::Remove
        } else {
            LinkPlan::Keep
        };
    }
    if !needs_person(web_server, state) && current.is_none() {
        return LinkPlan::Keep;
    }
    if usable {
        LinkPlan::Keep
    } else {
        LinkPlan::Issue
    }
}

/// Reason of a failed login in which the person chose Deny.
pub const AUTHORIZATION_DENIED: &str = "AuthorizationDenied";
/// Reason of a failed login that Salesforce refused for a reason we cannot name.
pub const AUTHORIZATION_FAILED: &str = "AuthorizationFailed";
/// Reason while a web server org has no tokens yet.
pub const AWAITING_AUTHORIZATION: &str = "AwaitingAuthorization";

/// A failed login through the re-auth link, as the callback records it on the org (the
/// callback never writes status), for the reconciler to report while the org still needs a
/// person.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReauthFailure {
    /// The condition reason: a lost-authorization reason such as `ConnectedAppNotInstalled`,
    /// or [`AUTHORIZATION_DENIED`] or [`AUTHORIZATION_FAILED`].
    pub reason: String,
    /// What Salesforce said (sanitized and bounded).
    #[serde(default)]
    pub description: String,
    /// The token Secret's resourceVersion at the time ("" without a Secret): once the tokens
    /// change, the failure is history.
    #[serde(default)]
    pub tokens: String,
}

const LOST_REASONS: [LostReason; 14] = [
    LostReason::RefreshTokenRevoked,
    LostReason::UserInactive,
    LostReason::UserLocked,
    LostReason::ConnectedAppNotInstalled,
    LostReason::ConnectedAppBlocked,
    LostReason::InvalidClientId,
    LostReason::InvalidClientSecret,
    LostReason::UserNotApproved,
    LostReason::IpRestricted,
    LostReason::InvalidAudience,
    LostReason::NoClientCredentialsUser,
    LostReason::RefreshSecretRequired,
    LostReason::WebServerSecretRequired,
    LostReason::Refused,
];

/// The condition reason and message of a failed re-auth; `None` for a reason this operator
/// does not write (a hand-edited annotation).
pub fn failure_condition(f: &ReauthFailure, org: &str) -> Option<(&'static str, String)> {
    let said = if f.description.is_empty() {
        String::new()
    } else {
        format!(" (Salesforce said: {})", f.description)
    };
    match f.reason.as_str() {
        AUTHORIZATION_DENIED => Some((
            AUTHORIZATION_DENIED,
            format!(
                "The last login through the re-auth link for {org} was denied at Salesforce: \
                 open the link again and choose Allow.{said}"
            ),
        )),
        AUTHORIZATION_FAILED => Some((
            AUTHORIZATION_FAILED,
            format!(
                "The last login through the re-auth link for {org} failed at Salesforce{said}: \
                 fix what it says, then open the link again."
            ),
        )),
        name => {
            let reason = LOST_REASONS
                .into_iter()
                .find(|r| lost_reason_name(*r) == name)?;
            Some((
                lost_reason_name(reason),
                lost_message(reason, org, &f.description, Relogin::Link),
            ))
        }
    }
}

/// Sets the reason and message of the token conditions, keeping their statuses.
fn explain(
    status: &mut SalesforceOrgStatus,
    reason: &str,
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
        let status_now = match current.status.as_str() {
            "True" => Status::True,
            "False" => Status::False,
            _ => Status::Unknown,
        };
        let desired = Desired {
            type_,
            status: status_now,
            reason: reason.to_owned(),
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
    if let Some((reason, message)) = failure_condition(failure, &org) {
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
        .is_some_and(|c| c.reason == AWAITING_AUTHORIZATION);
    if status.state == Some(TokenState::Pending) && status.reauth.is_some() && awaiting {
        explain(
            status,
            AWAITING_AUTHORIZATION,
            "No tokens yet: open the re-auth link in status.reauth.url and log into \
             Salesforce; the operator stores the tokens in the Secret named by \
             spec.tokenSecretRef.",
            generation,
            now,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SecretString;
    use crate::token_secret::StoredTokens;
    use k8s_openapi::jiff::SignedDuration;

    const MIN: Duration = Duration::from_secs(60);

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap_or_default()
    }

    fn tokens(access: bool, refresh: bool, issued_ago: Duration) -> TokenFile {
        TokenFile::Present(StoredTokens {
            access_token: access.then(|| SecretString::new("at")),
            refresh_token: refresh.then(|| SecretString::new("rt")),
            instance_url: Some("https://acme.my.salesforce.com".into()),
            issued_at_ms: Some(now().as_millisecond() - issued_ago.as_millis() as i64),
        })
    }

    fn observed<'a>(
        flow: FlowKind,
        tokens: &'a TokenFile,
        status: &'a SalesforceOrgStatus,
        memo: Option<&'a Memo>,
    ) -> Observed<'a> {
        Observed {
            flow: Ok(flow),
            tokens,
            status,
            expected_org_id: None,
            memo,
            fingerprint: Fingerprint::default(),
            interval: 15 * MIN,
            keepalive: 24 * 60 * MIN,
            reauth_links: false,
        }
    }

    fn memo(ago: Duration, failures: u32, fingerprint: Fingerprint) -> Memo {
        Memo {
            at: now() - SignedDuration::try_from(ago).unwrap_or_default(),
            fingerprint,
            failures,
            verdict: None,
        }
    }

    #[test]
    fn plan_table() {
        use FlowKind::*;
        let status = SalesforceOrgStatus::default();
        let fresh = tokens(true, true, MIN);
        let stale = tokens(true, true, 25 * 60 * MIN);
        let refresh_only = tokens(false, true, MIN);
        let headless_fresh = tokens(true, false, 25 * 60 * MIN);
        let missing = TokenFile::Missing;
        let garbage = TokenFile::Malformed("key refresh_token is not UTF-8 text".into());
        let recent = memo(MIN, 0, Fingerprint::default());
        let old = memo(16 * MIN, 0, Fingerprint::default());
        let failed = memo(MIN, 3, Fingerprint::default());
        let changed = memo(
            MIN,
            0,
            Fingerprint {
                secret_version: Some("1".into()),
                ..Default::default()
            },
        );
        let check = |renew_first| Plan::Check(CheckKind::Validate { renew_first });
        let cases: Vec<(&str, FlowKind, &TokenFile, Option<&Memo>, Plan)> = vec![
            (
                "web, no tokens",
                WebServer,
                &missing,
                None,
                Plan::Settle(Verdict::AwaitingAuthorization),
            ),
            (
                "jwt, no tokens: mint",
                JwtBearer,
                &missing,
                None,
                check(true),
            ),
            (
                "cc, no tokens: mint",
                ClientCredentials,
                &missing,
                None,
                check(true),
            ),
            ("first check", WebServer, &fresh, None, check(false)),
            (
                "checked recently",
                WebServer,
                &fresh,
                Some(&recent),
                Plan::Wait(14 * MIN),
            ),
            (
                "interval passed",
                WebServer,
                &fresh,
                Some(&old),
                check(false),
            ),
            (
                "secret changed",
                WebServer,
                &fresh,
                Some(&changed),
                check(false),
            ),
            (
                "backoff after failures",
                WebServer,
                &fresh,
                Some(&failed),
                check(false),
            ),
            (
                "refresh token idle too long",
                WebServer,
                &stale,
                None,
                check(true),
            ),
            (
                "only a refresh token",
                WebServer,
                &refresh_only,
                None,
                check(true),
            ),
            (
                "headless tokens never kept warm",
                JwtBearer,
                &headless_fresh,
                None,
                check(false),
            ),
        ];
        for (what, flow, toks, m, want) in cases {
            let got = plan(&observed(flow, toks, &status, m), now());
            assert_eq!(got, want, "{what}");
        }
        let got = plan(&observed(WebServer, &garbage, &status, None), now());
        assert!(
            matches!(got, Plan::Settle(Verdict::Misconfigured(ref m)) if m.reason == "TokenSecretMalformed"),
            "{got:?}"
        );
    }

    #[test]
    fn backoff_grows_and_caps() {
        let got: Vec<u64> = (1..=9).map(|f| backoff(f).as_secs()).collect();
        assert_eq!(got, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
    }

    #[test]
    fn jitter_is_stable_and_bounded() {
        let i = 15 * MIN;
        let a = jittered(i, "uid-a");
        assert_eq!(a, jittered(i, "uid-a"));
        for uid in ["a", "b", "c", "0f3c-11", "ffff"] {
            let j = jittered(i, uid);
            assert!(j >= i - i / 20 && j <= i + i / 20, "{uid}: {j:?}");
        }
    }

    fn identity(org: &str) -> Identity {
        Identity {
            org_id: org.into(),
            user_id: "005000000000001AAA".into(),
            username: "backup@acme.com".into(),
        }
    }

    fn lost(reason: LostReason) -> Result<Identity, SfError> {
        Err(SfError::AuthorizationLost {
            reason,
            description: "expired access/refresh token".into(),
        })
    }

    fn transient(reason: TransientReason) -> Result<Identity, SfError> {
        Err(SfError::Transient {
            reason,
            detail: "HTTP 503".into(),
        })
    }

    #[test]
    fn verdict_table() {
        let org = "00D000000000001AAA";
        let other = "00D000000000002AAA";
        let pinned = SalesforceOrgStatus {
            org_id: Some(org.into()),
            ..Default::default()
        };
        let t = tokens(true, true, MIN);
        let cases: Vec<(&str, Result<Identity, SfError>, &str)> = vec![
            ("valid", Ok(identity(org)), "Valid"),
            ("15-char pin matches 18-char id", Ok(identity(org)), "Valid"),
            ("wrong org", Ok(identity(other)), "WrongOrg"),
            (
                "revoked",
                lost(LostReason::RefreshTokenRevoked),
                "RefreshTokenRevoked",
            ),
            (
                "not installed",
                lost(LostReason::ConnectedAppNotInstalled),
                "ConnectedAppNotInstalled",
            ),
            (
                "blocked",
                lost(LostReason::ConnectedAppBlocked),
                "ConnectedAppBlocked",
            ),
            ("inactive", lost(LostReason::UserInactive), "UserInactive"),
            (
                "refresh needs a secret",
                lost(LostReason::RefreshSecretRequired),
                "RefreshSecretRequired",
            ),
            (
                "login needs a secret",
                lost(LostReason::WebServerSecretRequired),
                "WebServerSecretRequired",
            ),
            (
                "outage",
                transient(TransientReason::ServerError),
                "SalesforceUnavailable",
            ),
            (
                "maintenance",
                transient(TransientReason::MaintenancePage),
                "SalesforceUnavailable",
            ),
            (
                "timeout",
                transient(TransientReason::Timeout),
                "SalesforceUnavailable",
            ),
            (
                "rate limited",
                transient(TransientReason::RateLimited),
                "RateLimited",
            ),
            (
                "concurrent refresh",
                transient(TransientReason::ConcurrentRefresh),
                "RetrySoon",
            ),
        ];
        for (what, outcome, want) in cases {
            let o = observed(FlowKind::WebServer, &t, &pinned, None);
            let v = verdict(
                &o,
                &CheckResult {
                    outcome,
                    renewed: false,
                    instance_url: None,
                },
            );
            let got = match &v {
                Verdict::Valid { .. } => "Valid",
                Verdict::Expired { reason, .. } | Verdict::Unavailable { reason, .. } => reason,
                Verdict::RetrySoon => "RetrySoon",
                other => panic!("{what}: {other:?}"),
            };
            assert_eq!(got, want, "{what}");
            // Only a lost authorization or a wrong org may make an org Expired.
            if matches!(v, Verdict::Expired { .. }) {
                assert!(what != "outage" && what != "timeout" && what != "maintenance");
            }
        }
        assert!(same_org_id("00D000000000001", org));
        assert!(!same_org_id("00D000000000002", org));
    }

    #[test]
    fn status_is_unchanged_when_nothing_changed() {
        let v = Verdict::Valid {
            identity: identity("00D000000000001AAA"),
            instance_url: Some("https://acme.my.salesforce.com".into()),
            renewed: false,
        };
        let first = desired_status(&SalesforceOrgStatus::default(), &v, Some(1), now());
        assert_eq!(first.state, Some(TokenState::Valid));
        assert_eq!(first.conditions.len(), 3);
        let later = now() + SignedDuration::from_mins(15);
        assert_eq!(
            desired_status(&first, &v, Some(1), later),
            first,
            "a steady check changes nothing"
        );
        let expired = Verdict::Expired {
            reason: "RefreshTokenRevoked",
            message: "m".into(),
        };
        let after = desired_status(&first, &expired, Some(1), later);
        assert_eq!(after.state, Some(TokenState::Expired));
        let ready =
            conditions::get(&after.conditions, conditions::READY).map(|c| c.status.as_str());
        assert_eq!(ready, Some("False"));
        assert_eq!(after.org_id, first.org_id, "the pinned org survives expiry");
    }

    fn link(expires_in_mins: i64) -> ReauthLink {
        ReauthLink {
            url: "https://sforg.example.com/reauth/ns/acme?t=x".into(),
            expires_at: Time(now() + SignedDuration::from_mins(expires_in_mins)),
        }
    }

    #[test]
    fn link_plan_table() {
        use LinkPlan::*;
        use TokenState::*;
        let fresh = link(23 * 60);
        let expiring = link(59);
        let gone = link(-5);
        // (what, web server, links served, state, current link, it verifies, plan)
        type Case<'a> = (
            &'a str,
            bool,
            bool,
            Option<TokenState>,
            Option<&'a ReauthLink>,
            bool,
            LinkPlan,
        );
        let cases: Vec<Case> = vec![
            (
                "pending web org gets a link",
                true,
                true,
                Some(Pending),
                None,
                false,
                Issue,
            ),
            (
                "expired web org gets a link",
                true,
                true,
                Some(Expired),
                None,
                false,
                Issue,
            ),
            (
                "a good link is kept",
                true,
                true,
                Some(Expired),
                Some(&fresh),
                true,
                Keep,
            ),
            (
                "renewed under an hour",
                true,
                true,
                Some(Expired),
                Some(&expiring),
                true,
                Issue,
            ),
            (
                "renewed once expired",
                true,
                true,
                Some(Pending),
                Some(&gone),
                true,
                Issue,
            ),
            (
                "renewed when it no longer verifies",
                true,
                true,
                Some(Expired),
                Some(&fresh),
                false,
                Issue,
            ),
            (
                "removed once valid",
                true,
                true,
                Some(Valid),
                Some(&fresh),
                true,
                Remove,
            ),
            (
                "valid without link",
                true,
                true,
                Some(Valid),
                None,
                false,
                Keep,
            ),
            (
                "unknown keeps a good link",
                true,
                true,
                Some(Unknown),
                Some(&fresh),
                true,
                Keep,
            ),
            (
                "unknown renews an expiring link",
                true,
                true,
                Some(Unknown),
                Some(&expiring),
                true,
                Issue,
            ),
            (
                "unknown starts none",
                true,
                true,
                Some(Unknown),
                None,
                false,
                Keep,
            ),
            (
                "headless never",
                false,
                true,
                Some(Expired),
                None,
                false,
                Keep,
            ),
            (
                "headless loses a stray link",
                false,
                true,
                Some(Expired),
                Some(&fresh),
                true,
                Remove,
            ),
            (
                "no public URL: none",
                true,
                false,
                Some(Expired),
                None,
                false,
                Keep,
            ),
            (
                "no public URL: removed",
                true,
                false,
                Some(Pending),
                Some(&fresh),
                true,
                Remove,
            ),
            ("no status yet", true, true, None, None, false, Keep),
        ];
        for (what, web, links, state, current, verifies, want) in cases {
            assert_eq!(
                link_plan(web, links, state, current, verifies, now()),
                want,
                "{what}"
            );
        }
        assert_eq!(link_renew_in(&fresh, now()), 22 * 60 * MIN);
        assert_eq!(link_renew_in(&expiring, now()), Duration::ZERO);
    }

    fn expired_status() -> SalesforceOrgStatus {
        let v = Verdict::Expired {
            reason: "RefreshTokenRevoked",
            message: "m".into(),
        };
        let mut s = SalesforceOrgStatus {
            org_id: Some("00D000000000001AAA".into()),
            ..Default::default()
        };
        s = desired_status(&s, &v, Some(1), now());
        s
    }

    fn ready(s: &SalesforceOrgStatus) -> (String, String, String) {
        let c = conditions::get(&s.conditions, conditions::READY).expect("Ready");
        (c.status.clone(), c.reason.clone(), c.message.clone())
    }

    #[test]
    fn failed_reauth_is_reported_while_a_person_is_needed() {
        let failure = |reason: &str, tokens: &str| ReauthFailure {
            reason: reason.into(),
            description: "app must be installed into org".into(),
            tokens: tokens.into(),
        };
        // (what, failure, web server, token Secret version now, expected Ready reason)
        let cases = [
            (
                "not installed",
                failure("ConnectedAppNotInstalled", "7"),
                true,
                Some("7"),
                "ConnectedAppNotInstalled",
            ),
            (
                "blocked",
                failure("ConnectedAppBlocked", "7"),
                true,
                Some("7"),
                "ConnectedAppBlocked",
            ),
            (
                "denied",
                failure(AUTHORIZATION_DENIED, "7"),
                true,
                Some("7"),
                AUTHORIZATION_DENIED,
            ),
            (
                "unnamed",
                failure(AUTHORIZATION_FAILED, "7"),
                true,
                Some("7"),
                AUTHORIZATION_FAILED,
            ),
            (
                "tokens changed since",
                failure("ConnectedAppNotInstalled", "7"),
                true,
                Some("8"),
                "RefreshTokenRevoked",
            ),
            (
                "no Secret then, one now",
                failure("ConnectedAppNotInstalled", ""),
                true,
                Some("8"),
                "RefreshTokenRevoked",
            ),
            (
                "headless",
                failure("ConnectedAppNotInstalled", "7"),
                false,
                Some("7"),
                "RefreshTokenRevoked",
            ),
            (
                "unknown reason",
                failure("MadeUp", "7"),
                true,
                Some("7"),
                "RefreshTokenRevoked",
            ),
        ];
        for (what, f, web, version, want) in cases {
            let mut s = expired_status();
            report_failure(&mut s, &f, web, version, Some(1), now());
            let (status, reason, message) = ready(&s);
            assert_eq!(status, "False", "{what}");
            assert_eq!(reason, want, "{what}");
            if want == "ConnectedAppNotInstalled" {
                assert!(message.contains("install it"), "{message}");
                assert!(message.contains("status.reauth.url"), "{message}");
            }
            let expired =
                conditions::get(&s.conditions, conditions::TOKEN_EXPIRED).map(|c| c.status.clone());
            assert_eq!(expired.as_deref(), Some("True"), "{what}: statuses kept");
        }
        // A Valid org ignores an old failure.
        let valid = Verdict::Valid {
            identity: identity("00D000000000001AAA"),
            instance_url: None,
            renewed: false,
        };
        let mut s = desired_status(&SalesforceOrgStatus::default(), &valid, Some(1), now());
        let before = s.clone();
        report_failure(
            &mut s,
            &failure("ConnectedAppBlocked", ""),
            true,
            None,
            Some(1),
            now(),
        );
        assert_eq!(s, before);
        // Re-applying is idempotent, so a steady reconcile writes nothing.
        let mut once = expired_status();
        let f = failure("ConnectedAppBlocked", "7");
        report_failure(&mut once, &f, true, Some("7"), Some(1), now());
        let mut again = desired_status(
            &once,
            &Verdict::Expired {
                reason: "RefreshTokenRevoked",
                message: "m".into(),
            },
            Some(1),
            now(),
        );
        report_failure(&mut again, &f, true, Some("7"), Some(1), now());
        assert_eq!(again, once);
    }

    #[test]
    fn lost_messages_name_both_kinds_of_app_and_the_setting_to_change() {
        use LostReason as L;
        // Where either kind of app can be meant, both are named; where the fix is an ECA
        // setting or policy, the message names it.
        #[rustfmt::skip]
        let cases: &[(L, &[&str])] = &[
            (L::RefreshTokenRevoked, &["Connected App or External Client App", "refresh token policy", "OAuth Usage"]),
            (L::ConnectedAppNotInstalled, &["Connected App is not installed", "Approve Uninstalled Connected Apps", "External Client App needs no installation"]),
            (L::ConnectedAppBlocked, &["Connected App or External Client App"]),
            (L::InvalidClientId, &["Connected App or External Client App", "Consumer Key and Secret"]),
            (L::InvalidClientSecret, &["Connected App or External Client App", "Consumer Key and Secret"]),
            (L::UserNotApproved, &["Connected App or External Client App", "Admin approved users are pre-authorized", "Policies tab > OAuth Policies", "permission set"]),
            (L::IpRestricted, &["Connected App or External Client App", "IP Relaxation"]),
            (L::NoClientCredentialsUser, &["Connected App or External Client App", "Enable Client Credentials Flow", "Run As"]),
            (L::RefreshSecretRequired, &["clientSecretRef", "Require secret for Refresh Token Flow", "Settings > OAuth Settings > Security"]),
            (L::WebServerSecretRequired, &["clientSecretRef", "Require secret for Web Server Flow", "Settings > OAuth Settings > Security"]),
            (L::Refused, &["Connected App or External Client App"]),
        ];
        for (reason, wants) in cases {
            let message = lost_message(*reason, "00D000000000001AAA", "", Relogin::Link);
            for want in *wants {
                assert!(message.contains(want), "{reason:?}: {message}");
            }
        }
        // Every reason the reconciler writes can come back from a failed re-auth.
        for reason in LOST_REASONS {
            let f = ReauthFailure {
                reason: lost_reason_name(reason).to_owned(),
                description: String::new(),
                tokens: String::new(),
            };
            let (name, _) = failure_condition(&f, "the org").expect("known reason");
            assert_eq!(name, lost_reason_name(reason));
        }
    }

    #[test]
    fn messages_promise_a_link_only_when_there_is_one() {
        let pinned = SalesforceOrgStatus {
            org_id: Some("00D000000000001AAA".into()),
            ..Default::default()
        };
        let t = tokens(true, true, MIN);
        let result = |outcome| CheckResult {
            outcome,
            renewed: false,
            instance_url: None,
        };
        for (flow, links, want, not) in [
            (
                FlowKind::WebServer,
                true,
                "status.reauth.url",
                "--public-url",
            ),
            (
                FlowKind::WebServer,
                false,
                "--public-url",
                "status.reauth.url",
            ),
            (FlowKind::JwtBearer, true, "next check", "status.reauth.url"),
        ] {
            let mut o = observed(flow, &t, &pinned, None);
            o.reauth_links = links;
            for outcome in [
                lost(LostReason::RefreshTokenRevoked),
                lost(LostReason::ConnectedAppNotInstalled),
                Ok(identity("00D000000000002AAA")),
            ] {
                let Verdict::Expired { message, .. } = verdict(&o, &result(outcome)) else {
                    panic!("expired");
                };
                if flow == FlowKind::JwtBearer && message.contains("pinned") {
                    assert!(message.contains("spec.auth"), "{message}");
                } else {
                    assert!(message.contains(want), "{flow:?} {links}: {message}");
                }
                assert!(!message.contains(not), "{flow:?} {links}: {message}");
            }
        }
        // Pending points to its link once there is one.
        let mut s = desired_status(
            &SalesforceOrgStatus::default(),
            &Verdict::AwaitingAuthorization,
            Some(1),
            now(),
        );
        let plain = ready(&s).2;
        assert!(!plain.contains("status.reauth.url"), "{plain}");
        awaiting_with_link(&mut s, Some(1), now());
        assert_eq!(ready(&s).2, plain, "no link, no promise");
        s.reauth = Some(link(600));
        awaiting_with_link(&mut s, Some(1), now());
        assert!(ready(&s).2.contains("status.reauth.url"));
        assert_eq!(ready(&s).1, AWAITING_AUTHORIZATION);
    }

    #[test]
    fn held_tokens_plan_table() {
        let secret = |access: &str, refresh: Option<&str>| {
            TokenFile::Present(StoredTokens {
                access_token: Some(SecretString::new(access)),
                refresh_token: refresh.map(SecretString::new),
                instance_url: Some("https://acme.my.salesforce.com".into()),
                issued_at_ms: None,
            })
        };
        let s = SecretString::new;
        let (old_rt, new_rt, new_at) = (s("rt-1"), s("rt-2"), s("at-2"));
        // (what, Secret now, replaced, held refresh, plan)
        type Case<'a> = (
            &'a str,
            TokenFile,
            Option<&'a SecretString>,
            Option<&'a SecretString>,
            HeldPlan,
        );
        let cases: Vec<Case> = vec![
            (
                "still the old tokens",
                secret("at-1", Some("rt-1")),
                Some(&old_rt),
                Some(&new_rt),
                HeldPlan::Write,
            ),
            (
                "ours went through",
                secret("at-2", Some("rt-2")),
                Some(&old_rt),
                Some(&new_rt),
                HeldPlan::AlreadyStored,
            ),
            (
                "a person logged in again",
                secret("at-9", Some("rt-9")),
                Some(&old_rt),
                Some(&new_rt),
                HeldPlan::Superseded,
            ),
            (
                "Secret deleted: written anew",
                TokenFile::Missing,
                Some(&old_rt),
                Some(&new_rt),
                HeldPlan::Write,
            ),
            (
                "Secret garbled: overwritten",
                TokenFile::Malformed("x".into()),
                Some(&old_rt),
                Some(&new_rt),
                HeldPlan::Write,
            ),
            (
                "no rotation, old tokens",
                secret("at-1", Some("rt-1")),
                Some(&old_rt),
                None,
                HeldPlan::Write,
            ),
            (
                "no rotation, ours went through",
                secret("at-2", Some("rt-1")),
                Some(&old_rt),
                None,
                HeldPlan::AlreadyStored,
            ),
            (
                "headless",
                secret("at-1", None),
                None,
                None,
                HeldPlan::Write,
            ),
            (
                "headless, ours went through",
                secret("at-2", None),
                None,
                None,
                HeldPlan::AlreadyStored,
            ),
        ];
        for (what, stored, replaced, held_refresh, want) in cases {
            assert_eq!(
                held_plan(&stored, replaced, held_refresh, &new_at),
                want,
                "{what}"
            );
        }
    }

    #[test]
    fn unpersisted_tokens_are_unknown_never_expired() {
        let valid = desired_status(
            &SalesforceOrgStatus::default(),
            &Verdict::Valid {
                identity: identity("00D000000000001AAA"),
                instance_url: None,
                renewed: false,
            },
            Some(1),
            now(),
        );
        let v = not_persisted("HTTP 403 Forbidden: denied by policy");
        assert_eq!(requeue_after(&v, 1, 15 * MIN), backoff(1));
        let s = desired_status(&valid, &v, Some(1), now());
        assert_eq!(s.state, Some(TokenState::Unknown));
        let c = conditions::get(&s.conditions, conditions::TOKEN_VALID).expect("TokenValid");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("Unknown", TOKEN_NOT_PERSISTED)
        );
        assert!(c.message.contains("denied by policy"), "{}", c.message);
        assert!(c.message.contains("restart"), "{}", c.message);
        let expired =
            conditions::get(&s.conditions, conditions::TOKEN_EXPIRED).expect("TokenExpired");
        assert_ne!(expired.status, "True");
        assert_eq!(s.org_id, valid.org_id, "what was known stays");
    }

    #[test]
    fn a_skewed_clock_expires_nothing() {
        let status = SalesforceOrgStatus::default();
        let o = observed(FlowKind::JwtBearer, &TokenFile::Missing, &status, None);
        let skew = CheckResult {
            outcome: transient(TransientReason::ClockSkew),
            renewed: false,
            instance_url: None,
        };
        let Verdict::Unavailable { reason, message } = verdict(&o, &skew) else {
            panic!("a clock problem is not a lost authorization");
        };
        assert_eq!(reason, CLOCK_SKEW);
        assert!(message.contains("NTP"), "{message}");
        // A clock set back after a check (memo in the future) waits, it does not underflow.
        let ahead = Memo {
            at: now() + SignedDuration::from_mins(10),
            fingerprint: Fingerprint::default(),
            failures: 2,
            verdict: None,
        };
        let fresh = tokens(true, true, MIN);
        let o = observed(FlowKind::WebServer, &fresh, &status, Some(&ahead));
        assert_eq!(plan(&o, now()), Plan::Wait(backoff(2)));
        // Tokens issued "in the future" by a clock behind Salesforce's are not stale.
        let future = TokenFile::Present(StoredTokens {
            access_token: Some(SecretString::new("at")),
            refresh_token: Some(SecretString::new("rt")),
            instance_url: Some("https://acme.my.salesforce.com".into()),
            issued_at_ms: Some(now().as_millisecond() + 600_000),
        });
        let o = observed(FlowKind::WebServer, &future, &status, None);
        assert_eq!(plan(&o, now()), check_validate(false));
        // A link that expired long ago is due now, without underflow.
        let gone = link(-24 * 60);
        assert_eq!(link_renew_in(&gone, now()), Duration::ZERO);
    }

    fn check_validate(renew_first: bool) -> Plan {
        Plan::Check(CheckKind::Validate { renew_first })
    }
}
