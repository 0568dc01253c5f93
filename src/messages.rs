//! What the operator tells people: every what-to-do message of a condition or a re-auth page,
//! in one catalogue.
//!
//! Messages are written for the person who must act, and say what to do next in the way that
//! works for this org: open the link, store tokens by hand, or wait for the next check.

use crate::reasons::Reason;
use crate::salesforce::LostReason;

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
    /// How an org gets new tokens: links only for web server orgs of an operator that serves
    /// them.
    pub fn for_org(web_server: bool, links_served: bool) -> Self {
        match (web_server, links_served) {
            (true, true) => Relogin::Link,
            (true, false) => Relogin::Manual,
            (false, _) => Relogin::Headless,
        }
    }

    /// What to do to get new tokens, as a clause ("open the re-auth link ... and log in").
    pub fn then(self) -> &'static str {
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

/// Why authorization is lost, and what to do about it. `org` names the org for people
/// ("the org" before one is known); `description` is what Salesforce said.
pub fn lost(reason: LostReason, org: &str, description: &str, relogin: Relogin) -> String {
    let what = lost_what(reason, org, relogin);
    if description.is_empty() {
        what
    } else {
        format!("{what} (Salesforce said: {description})")
    }
}

/// What is wrong and what to do, without Salesforce's own words.
fn lost_what(reason: LostReason, org: &str, relogin: Relogin) -> String {
    let then = relogin.then();
    match reason {
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
    }
}

/// Tokens of another org than the pinned one, found by a check.
pub fn wrong_org(got: &str, want: &str, expected_set: bool, relogin: Relogin) -> String {
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

/// A login through the link that reached another org than the pinned one: nothing stored.
pub fn wrong_org_login(username: &str, got: &str, org: &str, want: &str) -> String {
    format!(
        "You logged in as {username} to org {got}, but SalesforceOrg {org} is for org {want}. \
         Nothing was changed. Log in to the right org: open the re-auth link again and sign in \
         as a user of org {want}. If this org is intended (a sandbox refreshed from production \
         gets a new org id), set spec.expectedOrgId of {org} to {got} to accept it \
         deliberately, then open the re-auth link again."
    )
}

/// The org while renewed tokens wait in memory because the token Secret refused them.
pub fn not_persisted(error: &str) -> String {
    format!(
        "Salesforce issued new tokens but the token Secret could not be written ({error}). \
         The operator keeps them in memory and writes them before it talks to Salesforce \
         again. Let the operator update the Secret (check admission policies, RBAC and \
         immutable: true; an immutable Secret can be deleted, the operator then writes a new \
         one). Do not restart the operator meanwhile: with refresh token rotation the new \
         refresh token exists only in its memory."
    )
}

/// A token Secret the operator reads but must not rewrite.
pub fn malformed_token_secret(problem: &str) -> String {
    format!(
        "The token Secret is unusable ({problem}); the operator leaves it untouched. Fix or \
         delete it; a web server org then asks for re-authorization."
    )
}

/// A token Secret that belongs to something else.
pub fn token_secret_not_owned(secret: &str, org: &str) -> String {
    format!(
        "The Secret {secret} named by spec.tokenSecretRef exists but does not belong to this \
         SalesforceOrg (no owner reference to it and no label orgtokens.dev/org={org}), so the \
         operator neither reads nor writes it. Point spec.tokenSecretRef at a name that is not \
         taken (the operator creates that Secret), or hand this Secret over deliberately: \
         kubectl label secret {secret} orgtokens.dev/org={org} app.kubernetes.io/managed-by=sforg-operator"
    )
}

/// A Secret named by the spec that cannot be read.
pub fn credentials_missing(what: &str, detail: &str, name: &str, key: &str) -> String {
    format!(
        "The {what} is not available: {detail}. Create it with: kubectl create secret generic \
         {name} --from-literal={key}=..."
    )
}

/// Salesforce could not answer.
pub fn unavailable(detail: &str) -> String {
    format!(
        "Salesforce could not be reached or did not answer ({detail}); retrying with backoff. \
         Dependent CronJobs are not paused for this."
    )
}

/// Salesforce refused a fresh access token it had just issued.
pub const JUST_ISSUED_TOKEN_REFUSED: &str =
    "Salesforce refused an access token it had just issued; retrying.";

/// The clocks of the node and of Salesforce disagree.
pub fn clock_skew(detail: &str) -> String {
    format!(
        "{detail}. Fix the time synchronization (NTP) of the node the operator runs on; the \
         authorization is not lost and dependent CronJobs are not paused for this."
    )
}

/// A login host outside the allowlist.
pub fn host_not_allowed(error: &str) -> String {
    format!("{error}. Nothing was sent to that host.")
}

/// Salesforce serves the flow only on the org's My Domain.
pub fn not_my_domain(description: &str) -> String {
    format!(
        "Salesforce answered {description:?} at spec.loginUrl: this flow works only on the \
         org's My Domain. Set spec.loginUrl to the My Domain URL \
         (https://<mydomain>.my.salesforce.com, shown in Setup > My Domain). The authorization \
         is not lost and dependent CronJobs are not paused for this."
    )
}

/// An unusable JWT private key.
pub fn bad_private_key(error: &str) -> String {
    format!(
        "The JWT bearer private key is unusable ({error}): store a PEM RSA private key in the \
         Secret named by spec.auth.jwtBearer.privateKeyRef."
    )
}

/// A web server org without tokens. `link`: a link is in status.
pub fn awaiting_authorization(link: bool) -> &'static str {
    if link {
        "No tokens yet: open the re-auth link in status.reauth.url and log into Salesforce; the \
         operator stores the tokens in the Secret named by spec.tokenSecretRef."
    } else {
        "No tokens yet: a person has to log into Salesforce for this org; the tokens of that \
         login go into the Secret named by spec.tokenSecretRef."
    }
}

/// Salesforce accepts the tokens.
pub fn valid(username: &str, org_id: &str) -> String {
    format!("Salesforce accepts the token for {username} in org {org_id}.")
}

/// The condition reason and message of a failed login through the link; `None` for a reason
/// a login cannot fail with.
pub fn failed_login(reason: Reason, description: &str, org: &str) -> Option<(Reason, String)> {
    let said = if description.is_empty() {
        String::new()
    } else {
        format!(" (Salesforce said: {description})")
    };
    match reason {
        Reason::AuthorizationDenied => Some((
            reason,
            format!(
                "The last login through the re-auth link for {org} was denied at Salesforce: \
                 open the link again and choose Allow.{said}"
            ),
        )),
        Reason::AuthorizationFailed => Some((
            reason,
            format!(
                "The last login through the re-auth link for {org} failed at Salesforce{said}: \
                 fix what it says, then open the link again."
            ),
        )),
        other => {
            let lost_reason = other.lost()?;
            Some((other, lost(lost_reason, org, description, Relogin::Link)))
        }
    }
}

/// The longest list of names in a message: Event notes may not exceed 1 KiB, and the longest
/// prefix is under 100 characters.
pub const MAX_NAMES_CHARS: usize = 900;

/// Names for people to read, at most `max_chars` long: as many as fit, then how many more.
/// Event notes are limited to 1 KiB, and a condition naming thousands of CronJobs helps
/// nobody; `status.suspendedCronJobs` keeps the full list.
pub fn name_list(names: &[String], max_chars: usize) -> String {
    let all = names.join(", ");
    if all.len() <= max_chars {
        return all;
    }
    let mut shown = String::new();
    let mut count = 0;
    for name in names {
        let separator = if count == 0 { "" } else { ", " };
        let more = format!(" and {} more", names.len() - count - 1);
        if shown.len() + separator.len() + name.len() + more.len() > max_chars {
            break;
        }
        shown.push_str(separator);
        shown.push_str(name);
        count += 1;
    }
    if count == 0 {
        return format!("{} CronJobs", names.len());
    }
    format!("{shown} and {} more", names.len() - count)
}

/// CronJobs someone resumed while the org holds them.
pub fn resumed_by_another_writer(names: &[String]) -> String {
    format!(
        "Someone resumed {} while the token is expired; the operator suspends them again with \
         backoff. Make GitOps tools ignore spec.suspend of CronJobs (see the README).",
        name_list(names, MAX_NAMES_CHARS)
    )
}

/// CronJobs the org holds.
pub fn held(names: &[String]) -> String {
    format!(
        "Suspended until the token is valid: {}",
        name_list(names, MAX_NAMES_CHARS)
    )
}

/// Nothing held any more.
pub const NONE_HELD: &str = "No CronJob is suspended by this org.";

/// `TokenExpiringSoon` messages. Each names absolute times only (never "in 3 days"), so
/// re-rendering the same forecast writes nothing.
pub mod expiry {
    use super::Relogin;
    use crate::duration::format;
    use k8s_openapi::jiff::Timestamp;
    use std::time::Duration;

    /// Who authorized and when, as a phrase ("the login of ann@acme.com at T").
    fn login(by: Option<&str>, at: Timestamp) -> String {
        match by {
            Some(by) => format!("the login of {by} at {at}"),
            None => format!("the authorization at {at}"),
        }
    }

    /// The authorization expires within the lead time `lead`.
    pub fn soon(
        expires: Timestamp,
        policy: &str,
        by: Option<&str>,
        at: Timestamp,
        lead: Duration,
        relogin: Relogin,
    ) -> String {
        format!(
            "The refresh token of {} expires at {expires} ({policy}); the {} notice time is \
             reached. To keep backups running, {} before then: the new login starts the policy's \
             time again.",
            login(by, at),
            format(lead),
            relogin.then()
        )
    }

    /// The authorization expires later than the longest lead time.
    pub fn later(expires: Timestamp, policy: &str, longest_lead: Option<Duration>) -> String {
        match longest_lead {
            Some(lead) => format!(
                "The refresh token expires at {expires} ({policy}). This condition turns True {} \
                 before then, with a re-auth link ready.",
                format(lead)
            ),
            None => format!("The refresh token expires at {expires} ({policy})."),
        }
    }

    /// "Valid until revoked".
    pub const UNTIL_REVOKED: &str = "The app's refresh token policy is \"valid until revoked\" \
        (spec.refreshTokenPolicy): the token expires only when revoked. Nothing to do.";

    /// "Expire if not used for" `limit`, outrun by the keep-alive.
    pub fn kept_alive(limit: Duration, keepalive: Duration) -> String {
        format!(
            "The app expires refresh tokens not used for {}, and the operator refreshes this one \
             at least every {} (--refresh-keepalive, at the next check after that), so it never \
             goes unused that long. Nothing to do.",
            format(limit),
            format(keepalive)
        )
    }

    /// "Expire if not used for" `limit`, and the keep-alive is too rare to outrun it.
    pub fn keepalive_too_long(
        limit: Duration,
        keepalive: Duration,
        expires: Option<Timestamp>,
        relogin: Relogin,
    ) -> String {
        let when = match expires {
            Some(t) => format!("the token expires at {t} unless a backup uses it"),
            None => "the token can expire between two refreshes".to_owned(),
        };
        format!(
            "The app expires refresh tokens not used for {}, but the operator refreshes only every \
             {} (--refresh-keepalive) plus up to one check interval: {when}. Set \
             --refresh-keepalive (the chart's refreshKeepalive) well below {}, or ask the \
             Salesforce admin for a longer limit; meanwhile {} in time.",
            format(limit),
            format(keepalive),
            format(limit),
            relogin.then()
        )
    }

    /// The policy expires the token, but the login time is unknown.
    pub fn unknown(policy: &str) -> String {
        format!(
            "The refresh token expires by policy ({policy}), but when it was authorized is not \
             known: the tokens were stored by hand. Set the annotation \
             orgtokens.dev/authorized-at on the token Secret to that login's time (RFC 3339, for \
             example 2026-01-31T09:00:00Z), or log in through a re-auth link once."
        )
    }

    /// A flow that needs no person.
    pub const NO_REFRESH_TOKEN: &str = "This org's flow (JWT bearer or client credentials) \
        gets new tokens without a person; no refresh token expires.";

    /// The org waits for its first login.
    pub const PENDING: &str = "No tokens yet: nothing can expire before the first login.";

    /// The org is already expired.
    pub const EXPIRED: &str =
        "The authorization has already ended: see the TokenExpired condition for what to do.";

    /// The spec's policy is invalid.
    pub const INVALID: &str =
        "spec.refreshTokenPolicy is invalid: see the Ready condition for what to fix.";

    /// The policy in words.
    pub fn policy(expire_after: bool, n: Duration) -> String {
        if expire_after {
            format!("policy: expire after {} from login", format(n))
        } else {
            format!("policy: expire if not used for {}", format(n))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_lists_are_bounded() {
        let names: Vec<String> = (0..2000).map(|i| format!("backup-{i:04}")).collect();
        assert_eq!(
            name_list(&names[..3], 100),
            "backup-0000, backup-0001, backup-0002"
        );
        let long = name_list(&names, 100);
        assert!(long.len() <= 100, "{long}");
        assert!(long.starts_with("backup-0000, backup-0001"), "{long}");
        let shown = long.matches("backup-").count();
        assert!(
            long.ends_with(&format!(" and {} more", 2000 - shown)),
            "{long}"
        );
        assert_eq!(name_list(&names, 5), "2000 CronJobs");
        assert_eq!(name_list(&[], 10), "");
    }

    #[test]
    fn every_login_failure_has_a_message() {
        for reason in [
            Reason::AuthorizationDenied,
            Reason::AuthorizationFailed,
            Reason::ConnectedAppNotInstalled,
            Reason::ConnectedAppBlocked,
            Reason::UserNotApproved,
            Reason::AuthorizationRefused,
        ] {
            let (got, message) =
                failed_login(reason, "said", "00D").unwrap_or((Reason::NoneHeld, String::new()));
            assert_eq!(got, reason);
            assert!(
                message.contains("00D") || message.contains("said"),
                "{message}"
            );
        }
        assert_eq!(failed_login(Reason::TokenValid, "", "00D"), None);
        assert!(
            failed_login(Reason::ConnectedAppNotInstalled, "", "00D")
                .is_some_and(|(_, m)| m.contains("install it") && m.contains("status.reauth.url"))
        );
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
            let message = lost(*reason, "00D000000000001AAA", "", Relogin::Link);
            for want in *wants {
                assert!(message.contains(want), "{reason:?}: {message}");
            }
            // Every reason the reconciler writes can come back from a failed re-auth.
            let back = failed_login(Reason::from(*reason), "", "the org").map(|(r, _)| r);
            assert_eq!(back, Some(Reason::from(*reason)));
        }
    }

    #[test]
    fn messages_promise_a_link_only_when_there_is_one() {
        for (relogin, want, not) in [
            (Relogin::Link, "status.reauth.url", "--public-url"),
            (Relogin::Manual, "--public-url", "status.reauth.url"),
            (Relogin::Headless, "next check", "status.reauth.url"),
        ] {
            for message in [
                lost(LostReason::RefreshTokenRevoked, "00D", "", relogin),
                lost(LostReason::ConnectedAppNotInstalled, "00D", "", relogin),
            ] {
                assert!(message.contains(want), "{relogin:?}: {message}");
                assert!(!message.contains(not), "{relogin:?}: {message}");
            }
        }
        assert!(wrong_org("a", "b", false, Relogin::Headless).contains("spec.auth"));
        assert!(wrong_org("a", "b", true, Relogin::Link).contains("spec.expectedOrgId"));
    }
}
