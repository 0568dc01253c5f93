//! Table tests of the decision.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::held::{self, HeldPlan};
use super::link::{self, LinkPlan};
use super::schedule::requeue_after;
use super::*;
use crate::conditions;
use crate::crd::{ReauthLink, SalesforceOrgStatus, TokenState};
use crate::pinning::same_org_id;
use crate::reasons::Reason;
use crate::reauth_record::ReauthFailure;
use crate::salesforce::{Identity, LostReason, SfError, TransientReason};
use crate::secret::SecretString;
use crate::token_secret::{StoredTokens, TokenFile};

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

fn observed(
    flow: FlowKind,
    tokens: &TokenFile,
    status: &SalesforceOrgStatus,
    memo: Option<&Memo>,
) -> Gathered {
    Gathered {
        name: "acme".into(),
        generation: Some(1),
        expected_org_id: None,
        web_server: flow == FlowKind::WebServer,
        status: status.clone(),
        flow: Ok(flow),
        credentials: None,
        token_secret: None,
        tokens: tokens.clone(),
        fingerprint: Fingerprint::default(),
        interval: 15 * MIN,
        phase: std::time::Duration::ZERO,
        keepalive: 24 * 60 * MIN,
        reauth_failure: None,
        memo: memo.cloned(),
        held: HeldTokensState::None,
        link: LinkFacts::default(),
        authorized: None,
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
        matches!(got, Plan::Settle(Verdict::Misconfigured(ref m)) if m.reason == Reason::TokenSecretMalformed),
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
        let v = verdict::of(
            &o,
            &CheckResult {
                outcome,
                renewed: false,
                instance_url: None,
            },
        );
        let got = match &v {
            Verdict::Valid { .. } => "Valid",
            Verdict::Expired { reason, .. } | Verdict::Unavailable { reason, .. } => {
                reason.as_str()
            }
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
    let first = status::render(&SalesforceOrgStatus::default(), &v, Some(1), now());
    assert_eq!(first.state, Some(TokenState::Valid));
    assert_eq!(first.conditions.len(), 3);
    let later = now() + SignedDuration::from_mins(15);
    assert_eq!(
        status::render(&first, &v, Some(1), later),
        first,
        "a steady check changes nothing"
    );
    let expired = Verdict::Expired {
        reason: Reason::RefreshTokenRevoked,
        message: "m".into(),
    };
    let after = status::render(&first, &expired, Some(1), later);
    assert_eq!(after.state, Some(TokenState::Expired));
    let ready = conditions::get(&after.conditions, conditions::READY).map(|c| c.status.as_str());
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
            link::plan(web, links, state, current, verifies, now()),
            want,
            "{what}"
        );
    }
    assert_eq!(link::renew_in(&fresh, now()), 22 * 60 * MIN);
    assert_eq!(link::renew_in(&expiring, now()), Duration::ZERO);
}

fn expired_status() -> SalesforceOrgStatus {
    let v = Verdict::Expired {
        reason: Reason::RefreshTokenRevoked,
        message: "m".into(),
    };
    let mut s = SalesforceOrgStatus {
        org_id: Some("00D000000000001AAA".into()),
        ..Default::default()
    };
    s = status::render(&s, &v, Some(1), now());
    s
}

fn ready(s: &SalesforceOrgStatus) -> (String, String, String) {
    let c = conditions::get(&s.conditions, conditions::READY).expect("Ready");
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

#[test]
fn failed_reauth_is_reported_while_a_person_is_needed() {
    let failure = |reason: Reason, tokens: &str| ReauthFailure {
        reason,
        description: "app must be installed into org".into(),
        tokens: tokens.into(),
    };
    // (what, failure, web server, token Secret version now, expected Ready reason)
    let cases = [
        (
            "not installed",
            failure(Reason::ConnectedAppNotInstalled, "7"),
            true,
            Some("7"),
            "ConnectedAppNotInstalled",
        ),
        (
            "blocked",
            failure(Reason::ConnectedAppBlocked, "7"),
            true,
            Some("7"),
            "ConnectedAppBlocked",
        ),
        (
            "denied",
            failure(Reason::AuthorizationDenied, "7"),
            true,
            Some("7"),
            "AuthorizationDenied",
        ),
        (
            "unnamed",
            failure(Reason::AuthorizationFailed, "7"),
            true,
            Some("7"),
            "AuthorizationFailed",
        ),
        (
            "tokens changed since",
            failure(Reason::ConnectedAppNotInstalled, "7"),
            true,
            Some("8"),
            "RefreshTokenRevoked",
        ),
        (
            "no Secret then, one now",
            failure(Reason::ConnectedAppNotInstalled, ""),
            true,
            Some("8"),
            "RefreshTokenRevoked",
        ),
        (
            "headless",
            failure(Reason::ConnectedAppNotInstalled, "7"),
            false,
            Some("7"),
            "RefreshTokenRevoked",
        ),
    ];
    for (what, f, web, version, want) in cases {
        let mut s = expired_status();
        status::report_failure(&mut s, &f, web, version, Some(1), now());
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
    let mut s = status::render(&SalesforceOrgStatus::default(), &valid, Some(1), now());
    let before = s.clone();
    status::report_failure(
        &mut s,
        &failure(Reason::ConnectedAppBlocked, ""),
        true,
        None,
        Some(1),
        now(),
    );
    assert_eq!(s, before);
    // Re-applying is idempotent, so a steady reconcile writes nothing.
    let mut once = expired_status();
    let f = failure(Reason::ConnectedAppBlocked, "7");
    status::report_failure(&mut once, &f, true, Some("7"), Some(1), now());
    let mut again = status::render(
        &once,
        &Verdict::Expired {
            reason: Reason::RefreshTokenRevoked,
            message: "m".into(),
        },
        Some(1),
        now(),
    );
    status::report_failure(&mut again, &f, true, Some("7"), Some(1), now());
    assert_eq!(again, once);
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
        o.link.served = links;
        for outcome in [
            lost(LostReason::RefreshTokenRevoked),
            lost(LostReason::ConnectedAppNotInstalled),
            Ok(identity("00D000000000002AAA")),
        ] {
            let Verdict::Expired { message, .. } = verdict::of(&o, &result(outcome)) else {
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
    let mut s = status::render(
        &SalesforceOrgStatus::default(),
        &Verdict::AwaitingAuthorization,
        Some(1),
        now(),
    );
    let plain = ready(&s).2;
    assert!(!plain.contains("status.reauth.url"), "{plain}");
    status::awaiting_with_link(&mut s, Some(1), now());
    assert_eq!(ready(&s).2, plain, "no link, no promise");
    s.reauth = Some(link(600));
    status::awaiting_with_link(&mut s, Some(1), now());
    assert!(ready(&s).2.contains("status.reauth.url"));
    assert_eq!(ready(&s).1, "AwaitingAuthorization");
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
            held::plan(&stored, replaced, held_refresh, &new_at),
            want,
            "{what}"
        );
    }
}

#[test]
fn unpersisted_tokens_are_unknown_never_expired() {
    let valid = status::render(
        &SalesforceOrgStatus::default(),
        &Verdict::Valid {
            identity: identity("00D000000000001AAA"),
            instance_url: None,
            renewed: false,
        },
        Some(1),
        now(),
    );
    let v = Verdict::not_persisted("HTTP 403 Forbidden: denied by policy");
    assert_eq!(requeue_after(&v, 1, 15 * MIN), backoff(1));
    let s = status::render(&valid, &v, Some(1), now());
    assert_eq!(s.state, Some(TokenState::Unknown));
    let c = conditions::get(&s.conditions, conditions::TOKEN_VALID).expect("TokenValid");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("Unknown", "TokenNotPersisted")
    );
    assert!(c.message.contains("denied by policy"), "{}", c.message);
    assert!(c.message.contains("restart"), "{}", c.message);
    let expired = conditions::get(&s.conditions, conditions::TOKEN_EXPIRED).expect("TokenExpired");
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
    let Verdict::Unavailable { reason, message } = verdict::of(&o, &skew) else {
        panic!("a clock problem is not a lost authorization");
    };
    assert_eq!(reason, Reason::ClockSkew);
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
    assert_eq!(link::renew_in(&gone, now()), Duration::ZERO);
}

fn check_validate(renew_first: bool) -> Plan {
    Plan::Check(CheckKind::Validate { renew_first })
}

/// A status written after a check of generation 1 against token Secret version "7".
fn current_status(state: TokenState) -> SalesforceOrgStatus {
    let v = match state {
        TokenState::Expired => Verdict::Expired {
            reason: Reason::RefreshTokenRevoked,
            message: "m".into(),
        },
        _ => Verdict::Valid {
            identity: identity("00D000000000001AAA"),
            instance_url: None,
            renewed: false,
        },
    };
    let mut s = status::render(&SalesforceOrgStatus::default(), &v, Some(1), now());
    s.state = Some(state);
    s.token_secret_version = Some("7".into());
    s
}

fn on_secret(version: &str) -> Fingerprint {
    Fingerprint {
        generation: Some(1),
        secret_version: Some(version.into()),
        check_request: None,
    }
}

#[test]
fn a_current_status_needs_no_check_before_the_slot() {
    let fresh = tokens(true, true, MIN);
    let valid = current_status(TokenState::Valid);
    let case = |status: &SalesforceOrgStatus, fingerprint: Fingerprint| {
        let mut g = observed(FlowKind::WebServer, &fresh, status, None);
        g.fingerprint = fingerprint;
        g
    };
    let with = |f: &dyn Fn(&mut SalesforceOrgStatus)| {
        let mut s = valid.clone();
        f(&mut s);
        s
    };
    let request = |value: String| Fingerprint {
        check_request: Some(value),
        ..on_secret("7")
    };
    let ago = |d: Duration| (now() - SignedDuration::try_from(d).unwrap_or_default()).to_string();
    let cases: Vec<(&str, Gathered, bool)> = vec![
        ("valid, same secret", case(&valid, on_secret("7")), true),
        (
            "expired, same secret",
            case(&current_status(TokenState::Expired), on_secret("7")),
            true,
        ),
        ("the secret changed", case(&valid, on_secret("8")), false),
        (
            "a status from before the version was recorded",
            case(&with(&|s| s.token_secret_version = None), on_secret("7")),
            false,
        ),
        (
            "a spec change",
            case(&with(&|s| s.observed_generation = Some(0)), on_secret("7")),
            false,
        ),
        (
            "pending",
            case(
                &with(&|s| s.state = Some(TokenState::Pending)),
                on_secret("7"),
            ),
            false,
        ),
        (
            "unknown",
            case(
                &with(&|s| s.state = Some(TokenState::Unknown)),
                on_secret("7"),
            ),
            false,
        ),
        (
            "a check request younger than the interval",
            case(&valid, request(ago(MIN))),
            false,
        ),
        (
            "a check request older than the interval",
            case(&valid, request(ago(16 * MIN))),
            true,
        ),
        (
            "an old check request in Unix seconds",
            case(&valid, request((now().as_second() - 3600).to_string())),
            true,
        ),
        (
            "a recent check request in Unix seconds",
            case(&valid, request(now().as_second().to_string())),
            false,
        ),
        (
            "a check request that is not a timestamp",
            case(&valid, request("now please".into())),
            false,
        ),
        (
            "tokens held in memory",
            Gathered {
                held: HeldTokensState::Stored { failed_writes: 1 },
                ..case(&valid, on_secret("7"))
            },
            false,
        ),
    ];
    for (what, g, current) in cases {
        assert_eq!(schedule::current(&g, now()), current, "{what}");
        let planned = plan(&g, now());
        assert_eq!(
            matches!(planned, Plan::Slot(_)),
            current,
            "{what}: {planned:?}"
        );
    }
    // A memo of this process wins over the status: the normal schedule.
    let g = observed(
        FlowKind::WebServer,
        &fresh,
        &valid,
        Some(&memo(MIN, 0, on_secret("7"))),
    );
    let g = Gathered {
        fingerprint: on_secret("7"),
        ..g
    };
    assert_eq!(plan(&g, now()), Plan::Wait(14 * MIN));
}

#[test]
fn slots_are_stable_per_org_and_spread_over_the_interval() {
    let interval = 15 * MIN;
    let p = schedule::phase(interval, "uid-1");
    assert_eq!(
        p,
        schedule::phase(interval, "uid-1"),
        "stable across restarts"
    );
    assert!(p < interval);
    // The wait lands on the slot, whatever the time now.
    for offset_s in [0u64, 1, 299, 899, 900, 12_345] {
        let at = now() + SignedDuration::from_secs(offset_s as i64);
        let wait = schedule::until_slot(interval, p, at);
        assert!(wait < interval, "{offset_s}");
        let slot_ms = at.as_millisecond() + wait.as_millis() as i64;
        assert_eq!(
            slot_ms.rem_euclid(interval.as_millis() as i64),
            p.as_millis() as i64,
            "{offset_s}"
        );
    }
    // 10,000 orgs after a restart: at most about 1.2x the steady rate in any minute.
    let per_minute = (0..10_000)
        .map(|i| {
            schedule::until_slot(
                interval,
                schedule::phase(interval, &format!("{i:08x}-4b2c-11ef")),
                now(),
            )
        })
        .fold([0u32; 15], |mut counts, wait| {
            counts[(wait.as_secs() / 60) as usize] += 1;
            counts
        });
    let steady = 10_000 / 15;
    for (minute, n) in per_minute.iter().enumerate() {
        assert!(
            *n <= steady * 12 / 10,
            "minute {minute}: {n} checks, steady {steady}"
        );
    }
    assert_eq!(
        schedule::until_slot(Duration::ZERO, Duration::ZERO, now()),
        Duration::ZERO
    );
}

#[test]
fn a_slot_keeps_the_status_and_hands_over_to_the_memo() {
    let fresh = tokens(true, true, MIN);
    let valid = current_status(TokenState::Valid);
    let g = Gathered {
        fingerprint: on_secret("7"),
        ..observed(FlowKind::WebServer, &fresh, &valid, None)
    };
    let wait = 5 * MIN;
    let out = outcome(&g, &Plan::Slot(wait), None, now());
    assert_eq!(out.status, valid, "nothing is written");
    assert_eq!(out.requeue, wait);
    assert!(out.events.is_empty());
    let m = out.memo.expect("a memo");
    assert_eq!(m.verdict, None);
    // At the slot, the memo's schedule asks for the check; before it, it waits.
    let g = Gathered { memo: Some(m), ..g };
    assert_eq!(
        plan(&g, now() + SignedDuration::from_mins(1)),
        Plan::Wait(4 * MIN)
    );
    assert_eq!(
        plan(&g, now() + SignedDuration::from_mins(5)),
        check_validate(false)
    );
}

#[test]
fn a_check_records_the_secret_version_it_was_decided_on() {
    let fresh = tokens(true, true, MIN);
    let g = Gathered {
        fingerprint: on_secret("7"),
        ..observed(
            FlowKind::WebServer,
            &fresh,
            &SalesforceOrgStatus::default(),
            None,
        )
    };
    let renewed = Exchanged {
        result: CheckResult {
            outcome: Ok(identity("00D000000000001AAA")),
            renewed: true,
            instance_url: None,
        },
        secret_version: Some("8".into()),
        not_persisted: None,
    };
    let out = outcome(&g, &check_validate(true), Some(&renewed), now());
    assert_eq!(
        out.status.token_secret_version.as_deref(),
        Some("8"),
        "the version after the renewal's write"
    );
    // After a restart, that status is current.
    let g = Gathered {
        status: out.status,
        fingerprint: on_secret("8"),
        memo: None,
        ..g
    };
    assert!(schedule::current(&g, now()));
}

#[test]
fn a_request_before_the_first_check_of_this_process_is_answered() {
    let fresh = tokens(true, true, MIN);
    let valid = current_status(TokenState::Valid);
    let recent = Fingerprint {
        check_request: Some(now().to_string()),
        ..on_secret("7")
    };
    let g = Gathered {
        fingerprint: recent.clone(),
        ..observed(FlowKind::WebServer, &fresh, &valid, None)
    };
    assert!(schedule::requested(&g, now()));
    // Once this process checked it, only a new value is a new request.
    let g = Gathered {
        memo: Some(memo(MIN, 0, recent)),
        ..g
    };
    assert!(!schedule::requested(&g, now()));
}

#[test]
fn holding_waits_for_cronjob_events_not_a_timer() {
    let status = expired_status();
    let o = observed(FlowKind::WebServer, &tokens(true, true, MIN), &status, None);
    let view = |name: &str, suspended: bool, held: bool, may: bool, wait: u64| CronJobView {
        name: name.into(),
        suspended,
        holders: if held {
            ["acme".to_owned()].into()
        } else {
            Default::default()
        },
        selected: true,
        may_reassert: may,
        reassert_in: Duration::from_secs(wait),
        version: None,
    };
    let outcome_with = |cronjobs: &[CronJobView]| {
        let mut out = outcome(&o, &Plan::Wait(15 * MIN), None, now());
        out.requeue = 15 * MIN;
        dependents(&mut out, &o, cronjobs, now());
        out
    };
    // Holding quietly: the next look is the next check; changes come through the watch.
    let quiet = outcome_with(&[view("a", true, true, false, 0)]);
    assert_eq!(quiet.mode, Mode::Hold);
    assert_eq!(quiet.requeue, 15 * MIN);
    assert!(still_holding(&quiet));
    // Resumed by another writer within the re-assertion backoff: look again when it ends.
    let fought = outcome_with(&[view("a", false, true, false, 42)]);
    assert_eq!(fought.requeue, Duration::from_secs(42));
    assert!(fought.cronjob_changes.is_empty());
    // Re-asserted now: the next override arrives as an event.
    let reasserted = outcome_with(&[view("a", false, true, true, 0)]);
    assert_eq!(reasserted.requeue, 15 * MIN);
    assert_eq!(reasserted.cronjob_changes.len(), 1);
}
